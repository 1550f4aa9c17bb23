package up_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/up"
)

// gatewayDoc is a Gateway edge/NAME with an HTTPS listener on httpsPort
// (certificate from secret) and an HTTP one on httpPort.
func gatewayDoc(name string, httpsPort, httpPort int, secret string) string {
	return `---
apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: ` + name + `, namespace: edge}
spec:
  listeners:
  - {name: https, port: ` + itoa(httpsPort) + `, protocol: HTTPS, tls: {certificates: [{secret: ` + secret + `}]}}
  - {name: http, port: ` + itoa(httpPort) + `, protocol: HTTP}
  routes:
  - {name: all, service: default/web}
`
}

func itoa(n int) string { return strconv.Itoa(n) }

// loadDoc writes doc to a mesh file and loads it.
func loadDoc(t *testing.T, doc string) (*config.Mesh, []config.Object, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return up.Load(p)
}

// TestShopExample: the demo's file loads; its gateway binds 127.0.0.1 on
// its ports; bulwark up must make the certificate of edge/shop-tls; the
// banner's token example is for /api/orders.
func TestShopExample(t *testing.T) {
	mesh, resources, err := up.Load("../../examples/shop/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := up.PlanGateways(resources, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]up.Bind{"edge/shop-gateway": {
		{Listener: "https", Protocol: config.ListenerHTTPS, Addr: "127.0.0.1:9443"},
		{Listener: "http", Protocol: config.ListenerHTTP, Addr: "127.0.0.1:9080"},
	}}
	if diff := cmp.Diff(want, plan); diff != "" {
		t.Errorf("gateways (-want +got):\n%s", diff)
	}
	if got, want := up.MissingSecrets(resources), []up.ServiceRef{{Namespace: "edge", Name: "shop-tls"}}; !cmp.Equal(got, want) {
		t.Errorf("missing secrets: got %v, want %v", got, want)
	}
	var gw *config.Gateway
	for _, o := range resources {
		if g, ok := o.(*config.Gateway); ok {
			gw = g
		}
	}
	d := mesh.Spec.DemoIssuer
	if d == nil || d.Provider != "edge/shop-users" || d.Scope != "orders" {
		t.Fatalf("demoIssuer: got %+v, want edge/shop-users with scope orders", d)
	}
	if got := up.DemoRoutePath(gw, d); got != "/api/orders" {
		t.Errorf("route of the demo token: got %q, want /api/orders", got)
	}
}

func TestPlanGatewaysOverrides(t *testing.T) {
	two := meshHead + gatewayDoc("a", 9443, 9080, "a-tls") + gatewayDoc("b", 9444, 9081, "b-tls")
	one := meshHead + gatewayDoc("a", 9443, 9080, "a-tls")
	tests := []struct {
		name, doc string
		overrides map[string]string
		want      map[string]string // "ns/gw/listener" -> addr, for the listeners checked
		wantErr   string
	}{
		{name: "listener_name", doc: one, overrides: map[string]string{"https": "127.0.0.1:0"},
			want: map[string]string{"edge/a/https": "127.0.0.1:0", "edge/a/http": "127.0.0.1:9080"}},
		{name: "full_name", doc: two, overrides: map[string]string{"edge/b/http": "127.0.0.2:80"},
			want: map[string]string{"edge/b/http": "127.0.0.2:80", "edge/a/http": "127.0.0.1:9080"}},
		{name: "ambiguous", doc: two, overrides: map[string]string{"https": "127.0.0.1:0"},
			wantErr: "--gateway-listen https: several Gateways have that listener: name it namespace/gateway/listener (known: edge/a/https, edge/a/http, edge/b/https, edge/b/http)"},
		{name: "unknown", doc: one, overrides: map[string]string{"admin": "127.0.0.1:0"},
			wantErr: "--gateway-listen admin: no Gateway of the file has that listener (known: edge/a/https, edge/a/http)"},
		{name: "bad_address", doc: one, overrides: map[string]string{"https": "localhost"},
			wantErr: "--gateway-listen https=localhost: want LISTENER=HOST:PORT"},
		{name: "same_port_twice", doc: two, overrides: map[string]string{"edge/b/https": "127.0.0.1:9443"},
			wantErr: "gateway edge/b listener https: address 127.0.0.1:9443 is also that of edge/a listener https (pick another with --gateway-listen)"},
		{name: "free_ports_may_repeat", doc: two, overrides: map[string]string{"edge/a/https": "127.0.0.1:0", "edge/b/https": "127.0.0.1:0"},
			want: map[string]string{"edge/a/https": "127.0.0.1:0", "edge/b/https": "127.0.0.1:0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, resources, err := loadDoc(t, tt.doc)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := up.PlanGateways(resources, tt.overrides)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("got error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for gw, binds := range plan {
				for _, b := range binds {
					if _, checked := tt.want[gw+"/"+b.Listener]; checked {
						got[gw+"/"+b.Listener] = b.Addr
					}
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("addresses (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMissingSecrets: only the Secrets that the file does not define are
// made, once each.
func TestMissingSecrets(t *testing.T) {
	doc := meshHead + gatewayDoc("a", 9443, 9080, "shared-tls") + gatewayDoc("b", 9444, 9081, "shared-tls") +
		gatewayDoc("c", 9445, 9082, "b-tls")
	_, resources, err := loadDoc(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	// The file's own Secret, as decoded (its data does not matter here).
	resources = append(resources, &config.Secret{Metadata: config.ObjectMeta{Name: "b-tls", Namespace: "edge"}})
	got := up.MissingSecrets(resources)
	if want := []up.ServiceRef{{Namespace: "edge", Name: "shared-tls"}}; !cmp.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestLoadDemoIssuerProviderDefinedTwice: bulwark up creates the demo
// issuer's provider, so the file must not define it.
func TestLoadDemoIssuerProviderDefinedTwice(t *testing.T) {
	doc := meshHead + "  demoIssuer: {provider: edge/users}\n" + `---
apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: users, namespace: edge}
spec:
  issuer: https://idp.example
  jwksURI: https://idp.example/jwks
`
	_, _, err := loadDoc(t, doc)
	want := "spec.demoIssuer.provider: the file also defines JWTProvider edge/users"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an error containing %q", err, want)
	}
}

func TestURLHost(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:9443", "localhost:9443"},
		{"127.0.0.1:443", "localhost"},
		{"0.0.0.0:8443", "localhost:8443"},
		{"[::1]:8443", "localhost:8443"},
		{"[::]:443", "localhost"},
		{"192.0.2.7:8443", "192.0.2.7:8443"},
		{"[2001:db8::1]:443", "[2001:db8::1]"},
		{"[2001:db8::1]:8443", "[2001:db8::1]:8443"},
		{"shop.example:443", "shop.example"},
	} {
		if got := up.URLHost(tc.addr, 443); got != tc.want {
			t.Errorf("urlHost(%q): got %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestJSONLogWriter: a gateway's JSON log reads like the rest of the
// combined log, its "gateway listening" records are seen, other lines pass
// through, and a line without an end is bounded.
func TestJSONLogWriter(t *testing.T) {
	var out bytes.Buffer
	var seen []string
	w := up.JSONLogWriter(&out, "gw", func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "listener" {
				seen = append(seen, r.Message+" "+a.Value.String())
			}
			return true
		})
	})
	lines := `{"time":"2026-11-23T20:00:00.123Z","level":"INFO","msg":"gateway listening","listener":"https","address":"127.0.0.1:9443"}
{"time":"2026-11-23T20:00:00.5Z","level":"WARN","msg":"certificate skipped","count":2,"ok":false,"detail":{"a":1}}
{"time":"2026-11-23T20:00:00.6Z","level":"DEBUG","msg":"hidden"}
not json at all
{"no":"message"}
`
	// In pieces, as a pipe delivers them.
	for i := 0; i < len(lines); i += 7 {
		if _, err := w.Write([]byte(lines[i:min(i+7, len(lines))])); err != nil {
			t.Fatal(err)
		}
	}
	got := out.String()
	for _, want := range []string{
		"gw               gateway listening listener=https address=127.0.0.1:9443\n",
		"gw               WARN certificate skipped count=2 ok=false detail=\"{\\\"a\\\":1}\"\n",
		"gw               not json at all\n",
		"gw               {\"no\":\"message\"}\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "hidden") {
		t.Errorf("a debug record was written at level info:\n%s", got)
	}
	if want := []string{"gateway listening https"}; !cmp.Equal(seen, want) {
		t.Errorf("records seen: got %v, want %v", seen, want)
	}

	out.Reset()
	if _, err := w.Write(bytes.Repeat([]byte("x"), 200<<10)); err != nil {
		t.Fatal(err)
	}
	if out.Len() == 0 {
		t.Errorf("a 200 KiB line without a newline is still held, want it written once it is over 64 KiB")
	}
	out.Reset()
	if _, err := w.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if !strings.Contains(out.String(), "tail\n") {
		t.Errorf("Flush: got %q, want the last line", out.String())
	}
}

func TestParseJSONRecordRejects(t *testing.T) {
	for _, line := range []string{``, `[]`, `{"msg":`, `{"msg":1}`, `"msg"`} {
		if _, ok := up.ParseJSONRecord([]byte(line)); ok {
			t.Errorf("parseJSONRecord(%q): got a record, want none", line)
		}
	}
}

// TestFollowHTTPSPort: when --gateway-listen moves the HTTPS listener, the
// HTTP listener's redirects follow it; not when it is not moved, when it
// moves to a free port (unknown until bound), or when the HTTP listener
// does not redirect or redirects elsewhere.
func TestFollowHTTPSPort(t *testing.T) {
	gw := func(httpExtra string) string {
		return meshHead + `---
apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: a, namespace: edge}
spec:
  listeners:
  - {name: https, port: 9443, protocol: HTTPS, tls: {certificates: [{secret: t}]}}
  - {name: http, port: 9080, protocol: HTTP` + httpExtra + `}
  routes:
  - {name: all, service: default/web}
`
	}
	tests := []struct {
		name, doc string
		overrides map[string]string
		wantPort  int
		wantMoved string
	}{
		{name: "moved", doc: gw(""), overrides: map[string]string{"https": "127.0.0.1:10443"}, wantPort: 10443, wantMoved: "127.0.0.1:10443"},
		{name: "not_moved", doc: gw(""), overrides: map[string]string{"http": "127.0.0.1:10080"}, wantPort: 9443},
		{name: "free_port", doc: gw(""), overrides: map[string]string{"https": "127.0.0.1:0"}, wantPort: 9443},
		{name: "explicit_other_port", doc: gw(", httpsPort: 443"), overrides: map[string]string{"https": "127.0.0.1:10443"}, wantPort: 443},
		{name: "no_redirect", doc: gw(", redirectToHTTPS: false"), overrides: map[string]string{"https": "127.0.0.1:10443"}, wantPort: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, resources, err := loadDoc(t, tt.doc)
			if err != nil {
				t.Fatal(err)
			}
			ports, moved, err := up.FollowHTTPSPort(resources, tt.overrides)
			if err != nil {
				t.Fatal(err)
			}
			if got := ports["edge/a/http"]; got != tt.wantPort {
				t.Errorf("httpsPort: got %d, want %d", got, tt.wantPort)
			}
			if moved[0] != tt.wantMoved {
				t.Errorf("moved: got %q, want %q", moved[0], tt.wantMoved)
			}
		})
	}
}

// TestBannerFrontDoor: the banner tells how to reach each gateway, with
// --cacert when bulwark up made the certificate, and how to get a token
// for the route that needs one; an issuer without such a route still
// shows its URL.
func TestBannerFrontDoor(t *testing.T) {
	mesh, _, err := up.Load("../../examples/shop/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	entry, visitor := up.ServiceRef{Namespace: "default", Name: "web"}, up.ServiceRef{Namespace: "default", Name: "visitor"}
	info := up.Info{URL: "http://127.0.0.1:8080", CredentialPath: "/d/operator/admin.yaml", TokenURL: "http://127.0.0.1:8079/token",
		Gateways: []up.GatewayInfo{{Gateway: "edge/shop-gateway", URL: "https://localhost:9443", CACert: "/d/up/edge_shop-tls.crt", JWTPath: "/api/orders",
			Listeners: map[string]string{"https": "127.0.0.1:9443", "http": "127.0.0.1:9080"}}}}
	var b strings.Builder
	up.Banner(&b, mesh, entry, visitor, info, mesh.Spec.DemoIssuer)
	for _, want := range []string{
		"  Open the shop:   http://127.0.0.1:8080\n",
		"  Front door:      https://localhost:9443/   (gateway edge/shop-gateway: TLS, routes into the mesh)\n",
		"                   curl --cacert /d/up/edge_shop-tls.crt https://localhost:9443/\n",
		"(its certificate is self-signed by bulwark up, for local use only: or curl -k)",
		"  Get a token:     TOKEN=$(curl -s 'http://127.0.0.1:8079/token?sub=alice&scope=orders')",
		`curl --cacert /d/up/edge_shop-tls.crt -H "Authorization: Bearer $TOKEN" https://localhost:9443/api/orders` + "\n",
		"  Operate it:      export BULWARK_CONFIG=/d/operator/admin.yaml\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}

	// A certificate of the file's own, an HTTP-only gateway, no JWT route.
	info.Gateways = []up.GatewayInfo{
		{Gateway: "edge/a", URL: "https://localhost:9443"},
		{Gateway: "edge/b", Listeners: map[string]string{"http": "127.0.0.1:9080"}},
	}
	b.Reset()
	up.Banner(&b, mesh, entry, visitor, info, mesh.Spec.DemoIssuer)
	for _, want := range []string{
		"                   curl https://localhost:9443/\n",
		"  Gateway edge/b:   listening on http=127.0.0.1:9080\n",
		"  Get a token:     curl -s 'http://127.0.0.1:8079/token?sub=alice&scope=orders'",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "self-signed") {
		t.Errorf("banner calls the file's own certificate self-signed:\n%s", b.String())
	}
}
