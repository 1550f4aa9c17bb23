package admin_test

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
)

// denialsServer serves a second admin API on a's stores and operator CA,
// whose denials come from source, and returns its URL.
func denialsServer(t *testing.T, a *api, source admin.DenialSource) string {
	return viewsServer(t, a, func(c *admin.Config) { c.Denials = source })
}

// viewsServer serves a second admin API on a's stores and operator CA,
// with the views (denials, edges, alerts) set configures, and returns its
// URL.
func viewsServer(t *testing.T, a *api, set func(*admin.Config)) string {
	t.Helper()
	cfg := admin.Config{Resources: a.resources, Registry: a.registry, Tokens: a.tokens, TrustDomain: testTD}
	set(&cfg)
	handler, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serverKey := newKey(t)
	leaf, err := a.op.SignServer(&serverKey.PublicKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	serving := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: serverKey, Leaf: leaf}
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = mtls.AdminServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serving, nil }, a.roots)
	srv.TLS.Certificates = []tls.Certificate{serving}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func denialIn(ns, path string) *config.Denial {
	return &config.Denial{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindDenial},
		Metadata: config.ObjectMeta{Name: "d-" + strings.Repeat("0", 11) + path[1:2], Namespace: ns},
		Status: config.DenialStatus{Direction: "inbound", Source: "spiffe://bulwark.test/ns/shop/sa/web", Destination: ns + "/api",
			Method: "GET", Path: path, Reason: "no ALLOW rule matched", HTTPStatus: 403, Count: 1,
			FirstSeen: start.Format(time.RFC3339Nano), LastSeen: start.Format(time.RFC3339Nano)},
	}
}

// TestDenialsRoute: GET /v1/denials lists what the source holds, filtered
// by the namespaces where the operator may list denials, and passes since
// on.
func TestDenialsRoute(t *testing.T) {
	a := newAPI(t)
	var within []time.Duration
	url := denialsServer(t, a, func(include func(string) bool, d time.Duration) []*config.Denial {
		within = append(within, d)
		var out []*config.Denial
		for _, den := range []*config.Denial{denialIn("team-a", "/a"), denialIn("team-b", "/b"), denialIn(config.RootNamespace, "/r")} {
			if include == nil || include(den.Metadata.Namespace) {
				out = append(out, den)
			}
		}
		return out
	})
	a.namespaceAdmins(t)
	a.mustApply(t,
		roleJSON("team-a", "denial-reader", `[{"verbs":["list"],"kinds":["Denial"]}]`),
		bindingJSON("team-a", "alice-reads-denials", "denial-reader", "alice"),
	)
	root, alice, bob := a.operator, a.as(t, "alice"), a.as(t, "bob")
	tests := []struct {
		name       string
		client     *http.Client
		query      string
		wantStatus int
		wantPaths  []string
		wantErr    string
	}{
		{name: "admin_all", client: root, wantStatus: 200, wantPaths: []string{"/a", "/b", "/r"}},
		{name: "admin_namespace", client: root, query: "?namespace=team-b", wantStatus: 200, wantPaths: []string{"/b"}},
		{name: "namespace_reader_all_is_its_namespaces", client: alice, wantStatus: 200, wantPaths: []string{"/a"}},
		{name: "namespace_reader_its_namespace", client: alice, query: "?namespace=team-a", wantStatus: 200, wantPaths: []string{"/a"}},
		{name: "namespace_reader_other_namespace", client: alice, query: "?namespace=team-b", wantStatus: 403,
			wantErr: "operator alice may not list Denial in namespace team-b"},
		{name: "no_rights", client: bob, wantStatus: 403, wantErr: "operator bob may not list Denial in any namespace"},
		{name: "bad_namespace", client: root, query: "?namespace=Team_A", wantStatus: 400, wantErr: "namespace: "},
		{name: "bad_since", client: root, query: "?since=yesterday", wantStatus: 400, wantErr: `since: "yesterday": want a positive duration`},
		{name: "negative_since", client: root, query: "?since=-5m", wantStatus: 400, wantErr: "since: "},
		{name: "since", client: root, query: "?since=15m", wantStatus: 200, wantPaths: []string{"/a", "/b", "/r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			within = nil
			got := send(t, tt.client, "GET", url+"/v1/denials"+tt.query, "", nil)
			if got.status != tt.wantStatus {
				t.Fatalf("status: got %d %s, want %d", got.status, got.body, tt.wantStatus)
			}
			if tt.wantErr != "" {
				if eb := got.errorBody(t); !strings.HasPrefix(eb.Error, tt.wantErr) {
					t.Errorf("error: got %q, want it to start with %q", eb.Error, tt.wantErr)
				}
				if len(within) != 0 {
					t.Error("the source was asked for a refused request")
				}
				return
			}
			if diff := cmp.Diff(tt.wantPaths, listed(t, got.body, func(o config.Object) string { return o.(*config.Denial).Status.Path })); diff != "" {
				t.Errorf("denials (-want +got):\n%s", diff)
			}
		})
	}
	if len(within) != 1 || within[0] != 15*time.Minute {
		t.Errorf("since passed to the source: got %v, want [15m]", within)
	}

	t.Run("client", func(t *testing.T) {
		cred := a.credential(t, "admin")
		cred.Server = url
		c, err := admin.NewClient(cred)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Denials(t.Context(), "team-a", 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(b, &list); err != nil || list.Kind != "List" || len(list.Items) != 1 {
			t.Errorf("got %s (%v), want a List of one item", b, err)
		}
	})
}

// TestDenialsWithoutSource: a server that keeps no denials says so (after
// authorizing the request).
func TestDenialsWithoutSource(t *testing.T) {
	a := newAPI(t)
	got := send(t, a.operator, "GET", a.srv.URL+"/v1/denials", "", nil)
	if got.status != http.StatusNotImplemented {
		t.Errorf("got %d %s, want 501", got.status, got.body)
	}
	got = send(t, a.as(t, "nobody"), "GET", a.srv.URL+"/v1/denials", "", nil)
	if got.status != http.StatusForbidden {
		t.Errorf("an operator without rights: got %d %s, want 403", got.status, got.body)
	}
}

// listed decodes a list answer and returns field of each object, sorted.
func listed(t *testing.T, body []byte, field func(config.Object) string) []string {
	t.Helper()
	objs, err := config.UnmarshalList(body)
	if err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, field(o))
	}
	slices.Sort(out)
	return out
}
