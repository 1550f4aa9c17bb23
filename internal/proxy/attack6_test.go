package proxy_test

// Attacks on the data path of issue 6 (tunnels, upgrades, egress, routes):
// each test tries to get past a check with real sockets, and pins that it
// cannot.

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"sigs.k8s.io/yaml"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// switchApp is a careless callee app: it switches to whatever protocol an
// upgrade request names first (as an h2c-capable server does for "h2c"),
// then echoes bytes, except on paths ending in /refuse, where it answers
// 400, and /fake, where it answers 200 with the sidecars' X-Bulwark-Upgrade. It records every request it receives as "METHOD path upgrade=<v>".
type switchApp struct {
	mu   sync.Mutex
	seen []string
}

func (s *switchApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := ""
	if httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		up = r.Header.Get("Upgrade")
	}
	s.mu.Lock()
	s.seen = append(s.seen, fmt.Sprintf("%s %s upgrade=%s", r.Method, r.URL.Path, up))
	s.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, "/fake") {
		// Not a switch, dressed as the callee's tunnel answer.
		w.Header().Set("X-Bulwark-Upgrade", "websocket")
		fmt.Fprintf(w, "not switched\n")
		return
	}
	if up == "" || strings.HasSuffix(r.URL.Path, "/refuse") {
		if up != "" {
			http.Error(w, "no upgrade here", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "plain %s\n", r.URL.Path)
		return
	}
	first, _, _ := strings.Cut(up, ",")
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", strings.TrimSpace(first))
	_ = brw.Flush()
	_, _ = io.Copy(c, brw)
}

func (s *switchApp) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// upgradeMesh is shop/web calling default/api, whose app is a switchApp,
// with the callee's inbound policies and the caller's (wide) view.
type upgradeMesh struct {
	app      *switchApp
	api, web *node
	apiAddr  string
	outbound string
}

func newUpgradeMesh(t *testing.T, inbound ...string) *upgradeMesh {
	t.Helper()
	a := newAuthority(t)
	m := &upgradeMesh{app: &switchApp{}}
	m.api = newNode(t, a, apiSvc, servePlain(t, m.app))
	m.apiAddr = m.api.serveInbound(t)
	snap := apiSnapshot(t, a, 1)
	snap.Inbound.Policies = nil
	for _, p := range inbound {
		snap.Inbound.Policies = append(snap.Inbound.Policies, policyDoc(t, p))
	}
	m.api.apply(t, snap)
	m.web = newNode(t, a, webSvc, "")
	ws := webSnapshot(t, a, 1, m.apiAddr, m.api.id())
	ws.Destinations[0].Policies = [][]byte{policyDoc(t, tunOpenView)}
	m.web.apply(t, ws)
	m.outbound = serveApp(t, m.web.engine.Outbound())
	return m
}

// apiAllowPublic lets shop/web use any method on /public/* of default/api.
const apiAllowPublic = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow-web, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
    to: {paths: ["/public/*"]}
`

// apiDenyUpgrades forbids protocol upgrades on default/api, by header (a
// condition the caller's view leaves out: only the callee decides it).
const apiDenyUpgrades = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-deny-upgrades, namespace: default}
spec:
  selector: {service: api}
  action: DENY
  rules:
  - when: ["'upgrade' in request.headers"]
`

// wsUpgrade is the head of a WebSocket upgrade request to api.default.
func wsUpgrade(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: api.default\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
}

// TestAttack6UpgradeSeenByCalleePolicy: the callee decides a tunnelled
// upgrade as the request the client sent, Upgrade header included, so a
// policy that forbids upgrades holds whether the upgrade comes through the
// caller's sidecar or from a peer speaking the tunnel protocol itself.
func TestAttack6UpgradeSeenByCalleePolicy(t *testing.T) {
	m := newUpgradeMesh(t, apiAllowPublic, apiDenyUpgrades)

	if got := plainRaw(t, m.outbound, "GET /public/x HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"); got.status != 200 {
		t.Fatalf("plain request: got %d %q, want 200", got.status, got.body)
	}
	if got := plainRaw(t, m.outbound, wsUpgrade("/public/x")); got.status != http.StatusForbidden {
		t.Errorf("upgrade through the caller: got %d %q (Upgrade %q), want 403", got.status, got.body, got.header.Get("Upgrade"))
	}
	got := mtlsH2(t, m.apiAddr, m.web.src, m.api.id(), rawH2{fields: apiFields("GET", "/public/x", [2]string{"x-bulwark-upgrade", "websocket"})})
	if got.status != http.StatusForbidden {
		t.Errorf("tunnelled upgrade from a raw peer: got %d %q (%s), want 403", got.status, got.body, got.refused)
	}
	for _, r := range m.app.requests() {
		if !strings.HasSuffix(r, "upgrade=") {
			t.Errorf("the app received %q, want no upgrade", r)
		}
	}
}

// TestAttack6H2CUpgradeNotTunnelled: an "Upgrade: h2c" would turn the
// tunnel into an HTTP/2 connection to the callee's app, whose later
// requests no sidecar sees (h2c smuggling). The app listeners refuse it
// (400, the framing guard), and so does the callee when a peer sends the
// tunnelled form itself.
func TestAttack6H2CUpgradeNotTunnelled(t *testing.T) {
	m := newUpgradeMesh(t, apiAllowPublic)
	for _, up := range []string{"h2c", "H2C", "websocket, h2c"} {
		t.Run(up, func(t *testing.T) {
			got := plainRaw(t, m.outbound, "GET /public/h2c HTTP/1.1\r\nHost: api.default\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
				"Upgrade: "+up+"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
			if got.status != http.StatusBadRequest {
				t.Errorf("h2c upgrade through the caller: got %d %q, want 400 (the framing guard)", got.status, got.body)
			}
			got = mtlsH2(t, m.apiAddr, m.web.src, m.api.id(), rawH2{fields: apiFields("GET", "/public/h2c", [2]string{"x-bulwark-upgrade", up})})
			if got.status != http.StatusBadRequest {
				t.Errorf("tunnelled h2c upgrade from a raw peer: got %d %q (%s), want 400", got.status, got.body, got.refused)
			}
		})
	}
	for _, r := range m.app.requests() {
		t.Errorf("the app received %q, want nothing", r)
	}
}

// TestAttack6UpgradeHeaderFromApp: X-Bulwark-Upgrade is the sidecars'
// own; an app that sends it (in any spelling, through any app listener)
// does not make the callee's app see an upgrade.
func TestAttack6UpgradeHeaderFromApp(t *testing.T) {
	m := newUpgradeMesh(t, apiAllowPublic)
	for _, name := range []string{"X-Bulwark-Upgrade", "x-bulwark-upgrade", "X_Bulwark_Upgrade"} {
		got := plainRaw(t, m.outbound, "GET /public/inject HTTP/1.1\r\nHost: api.default\r\n"+name+": websocket\r\nConnection: close\r\n\r\n")
		if got.status != 200 || got.body != "plain /public/inject\n" || got.header.Get("Upgrade") != "" {
			t.Errorf("%s from the app: got %d %q, want the app's plain 200", name, got.status, got.body)
		}
	}
	// Through HTTP served in a CONNECT tunnel.
	conn, br, status := connectThrough(t, m.outbound, "api.default:80")
	if status != 200 {
		t.Fatalf("CONNECT api.default:80: got %d, want 200", status)
	}
	got := rawExchange(t, &bufferedConn{Conn: conn, r: br}, "GET /public/inject HTTP/1.1\r\nHost: api.default\r\nX-Bulwark-Upgrade: websocket\r\n\r\n")
	if got.status != 200 || got.body != "plain /public/inject\n" {
		t.Errorf("X-Bulwark-Upgrade in a CONNECT tunnel: got %d %q, want the app's plain 200", got.status, got.body)
	}
	for _, r := range m.app.requests() {
		if r != "GET /public/inject upgrade=" {
			t.Errorf("the app received %q, want only plain requests", r)
		}
	}
}

// TestAttack6NoSmuggleAfterRefusedUpgrade: after an upgrade the callee's
// app refuses (or the callee denies), bytes the client sends are HTTP
// requests again, each checked: one to a path the callee denies never
// reaches its app, whether pipelined after the upgrade or sent as its body.
func TestAttack6NoSmuggleAfterRefusedUpgrade(t *testing.T) {
	m := newUpgradeMesh(t, apiAllowPublic)
	smuggled := "GET /private HTTP/1.1\r\nHost: api.default\r\n\r\n"
	for _, tt := range []struct {
		name, path string
		want       int
	}{
		{name: "app refuses", path: "/public/refuse", want: http.StatusBadRequest},
		{name: "callee denies", path: "/denied", want: http.StatusForbidden},
	} {
		t.Run(tt.name+" pipelined", func(t *testing.T) {
			conn, err := net.Dial("tcp", m.outbound)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(hangGuard))
			if _, err := io.WriteString(conn, wsUpgrade(tt.path)+smuggled); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			for i, want := range []int{tt.want, http.StatusForbidden} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("response %d: got %d, want %d", i, resp.StatusCode, want)
				}
			}
		})
		t.Run(tt.name+" as the body", func(t *testing.T) {
			head := strings.TrimSuffix(wsUpgrade(tt.path), "\r\n")
			got := plainRaw(t, m.outbound, head+fmt.Sprintf("Content-Length: %d\r\n\r\n", len(smuggled))+smuggled)
			if got.status != tt.want {
				t.Errorf("got %d %q, want %d", got.status, got.body, tt.want)
			}
		})
	}
	for _, r := range m.app.requests() {
		if strings.Contains(r, "/private") {
			t.Errorf("the app received %q", r)
		}
	}
}

// TestAttack6TCPTunnelIdentityOnly: a TCP tunnel is authorized on identity
// alone: a rule naming methods or paths never allows one, and a peer that
// no rule names gets nothing, even speaking the tunnel protocol itself.
func TestAttack6TCPTunnelIdentityOnly(t *testing.T) {
	const httpOnly = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-http-only, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
    to: {methods: [CONNECT, GET], paths: ["*"]}
`
	a := newAuthority(t)
	web := a.svid(t, workloadID(t, "shop", "web"))
	other := a.svid(t, workloadID(t, "shop", "other"))
	connect := rawH2{fields: [][2]string{{":method", "CONNECT"}, {":authority", "api.default:5432"}}}
	for _, tt := range []struct {
		name   string
		policy string
		peer   *source
	}{
		{name: "http_only_rule", policy: httpOnly, peer: web},
		{name: "peer_without_policy", policy: tunAllowWeb, peer: other},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := newProtoNode(t, a, apiSvc, echoServer(t), proxy.ProtocolTCP, nil)
			addr := api.serveInbound(t)
			snap := apiSnapshot(t, a, 1)
			snap.Inbound.Policies = [][]byte{policyDoc(t, tt.policy)}
			snap.Inbound.Peers = append(snap.Inbound.Peers, &apiv1.PeerIdentity{SpiffeId: other.svid.ID.String(), Services: []string{"shop/other"}})
			api.apply(t, snap)
			if got := mtlsH2(t, addr, tt.peer, api.id(), connect); got.status != http.StatusForbidden {
				t.Errorf("got %d %q (%s), want 403", got.status, got.body, got.refused)
			}
		})
	}
}

// TestAttack6EgressHostTricks: spellings of a host that parsers read
// differently never reach a host no ExternalService declares, and the
// Host header cannot redirect an absolute-form request.
func TestAttack6EgressHostTricks(t *testing.T) {
	a := newAuthority(t)
	up := newExternalApp(t, "example")
	web := newWatchedNode(t, a, webSvc, "")
	web.apply(t, egressSnapshot(t, a, 1, externalDest(t, "example", fmt.Sprintf(`
  hosts: [api.example.test, "*.wild.test"]
  ports: [{port: 80, protocol: http}, {port: 7000, protocol: tcp}]
  addresses: ["%s"]`, up.addr()), egressAllowWeb)))
	outbound := serveApp(t, web.engine.Outbound())
	long := strings.Repeat("a", 63) + "."
	tests := []struct {
		name     string
		req      string
		wantCode int
		wantHost string // the Host the external server received; "" for none
	}{
		// A Host that disagrees with the absolute form is refused outright.
		{name: "absolute_form_and_other_host", req: "GET http://api.example.test/x HTTP/1.1\r\nHost: evil.example.org", wantCode: 400},
		{name: "absolute_form_undeclared_host_declared", req: "GET http://evil.example.org/x HTTP/1.1\r\nHost: api.example.test", wantCode: 400},
		{name: "absolute_form_undeclared", req: "GET http://evil.example.org/x HTTP/1.1\r\nHost: evil.example.org", wantCode: 403},
		{name: "percent_encoded_dot", req: "GET http://api%2eexample.test/x HTTP/1.1\r\nHost: api.example.test", wantCode: 400},
		{name: "percent_encoded_dot_origin_form", req: "GET /x HTTP/1.1\r\nHost: api%2eexample.test", wantCode: 403},
		{name: "two_trailing_dots", req: "GET /x HTTP/1.1\r\nHost: api.example.test..", wantCode: 403},
		{name: "empty_label", req: "GET /x HTTP/1.1\r\nHost: a..wild.test", wantCode: 403},
		{name: "suffix_of_other_domain", req: "GET /x HTTP/1.1\r\nHost: a.wild.test.evil.org", wantCode: 403},
		{name: "wildcard_upper_case", req: "GET /x HTTP/1.1\r\nHost: A.WILD.TEST", wantCode: 200, wantHost: "a.wild.test"},
		{name: "userinfo", req: "GET http://api.example.test@evil.example.org/x HTTP/1.1\r\nHost: api.example.test", wantCode: 400},
		{name: "backslash", req: "GET http://evil.example.org\\@api.example.test/x HTTP/1.1\r\nHost: api.example.test", wantCode: 400},
		{name: "idna_unicode", req: "GET /x HTTP/1.1\r\nHost: b\xc3\xbccher.wild.test", wantCode: 400},
		{name: "ipv4_literal", req: "GET /x HTTP/1.1\r\nHost: 127.0.0.1", wantCode: 403},
		{name: "ipv6_literal", req: "GET /x HTTP/1.1\r\nHost: [::1]", wantCode: 403},
		{name: "ipv4_mapped_literal", req: "GET /x HTTP/1.1\r\nHost: [::ffff:169.254.169.254]", wantCode: 403},
		{name: "decimal_ip", req: "GET /x HTTP/1.1\r\nHost: 2852039166", wantCode: 403},
		{name: "very_long_host", req: "GET /x HTTP/1.1\r\nHost: " + strings.Repeat(long, 70) + "wild.test", wantCode: 403},
		{name: "tcp_port_by_http", req: "GET /x HTTP/1.1\r\nHost: api.example.test:7000", wantCode: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.requests())
			got := plainRaw(t, outbound, tt.req+"\r\nConnection: close\r\n\r\n")
			if got.status != tt.wantCode {
				t.Errorf("got %d %q, want %d", got.status, got.body, tt.wantCode)
			}
			reqs := up.requests()[before:]
			switch {
			case tt.wantHost == "" && len(reqs) != 0:
				t.Errorf("the external server received %+v, want nothing", reqs)
			case tt.wantHost != "" && (len(reqs) != 1 || reqs[0].Host != tt.wantHost):
				t.Errorf("the external server received %+v, want one request with Host %q", reqs, tt.wantHost)
			}
		})
	}
	for _, authority := range []string{"api.example.test:7001", "api.example.test:80", "evil.example.org:7000", "[::ffff:127.0.0.1]:7000", "API.EXAMPLE.TEST.:7001"} {
		t.Run("connect_"+authority, func(t *testing.T) {
			if _, _, status := connectThrough(t, outbound, authority); status != http.StatusForbidden {
				t.Errorf("CONNECT %s: got %d, want 403", authority, status)
			}
		})
	}
	for _, l := range web.takeDenials() {
		if len(l.Destination) > 253 {
			t.Errorf("denial destination of %d bytes, want at most 253", len(l.Destination))
		}
	}
}

// TestAttack6TCPTunnelRateLimited: a TCP tunnel counts against the
// service's rate limit as a request does, so a caller cannot get past the
// limit by tunnelling.
func TestAttack6TCPTunnelRateLimited(t *testing.T) {
	a := newAuthority(t)
	web := a.svid(t, workloadID(t, "shop", "web"))
	reg := prometheus.NewRegistry()
	api := newProtoNode(t, a, apiSvc, echoServer(t), proxy.ProtocolTCP, reg)
	addr := api.serveInbound(t)
	snap := apiSnapshot(t, a, 1)
	snap.Inbound.Policies = [][]byte{policyDoc(t, tunAllowWeb)}
	// One token, refilled in about 17 minutes: the second tunnel is over.
	snap.Inbound.TrafficPolicy = trafficPolicyDoc(t, "rateLimit: {requestsPerSecond: 0.001, burst: 1, per: source}")
	api.apply(t, snap)
	connect := rawH2{fields: [][2]string{{":method", "CONNECT"}, {":authority", "api.default:5432"}}, body: "ping"}
	if got := mtlsH2(t, addr, web, api.id(), connect); got.status != 200 || got.body != "ping" {
		t.Fatalf("first tunnel: got %d %q (%s), want 200 echoing", got.status, got.body, got.refused)
	}
	got := mtlsH2(t, addr, web, api.id(), connect)
	if got.status != http.StatusTooManyRequests || got.header.Get("Retry-After") == "" {
		t.Errorf("second tunnel: got %d %q (%s), want 429 with Retry-After", got.status, got.body, got.refused)
	}
	if got := counterValue(t, reg, "bulwark_rate_limited_total"); got != 1 {
		t.Errorf("bulwark_rate_limited_total: got %v, want 1", got)
	}
}

// TestAttack6RedirectHostFromRequest: a redirect's Location takes its host
// from the authority the app used, which must name the service: an app
// cannot make it point elsewhere.
func TestAttack6RedirectHostFromRequest(t *testing.T) {
	f := newFleet(t, 1, balancer.Locality{})
	f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, `
- name: moved
  matches: [{path: {prefix: /old}}]
  redirect: {path: /new}
`)}, f.apis[0].endpoint("", ""))
	for _, tt := range []struct {
		name, req string
		want      int
		location  string
	}{
		{name: "service_host", req: "GET /old HTTP/1.1\r\nHost: api.default:8080", want: 302, location: "http://api.default:8080/new"},
		{name: "long_form", req: "GET /old?a=1 HTTP/1.1\r\nHost: API.default.svc.cluster.local", want: 302, location: "http://API.default.svc.cluster.local/new?a=1"},
		{name: "other_host", req: "GET /old HTTP/1.1\r\nHost: evil.example.org", want: 403},
		{name: "userinfo", req: "GET http://api.default@evil.example.org/old HTTP/1.1\r\nHost: api.default@evil.example.org", want: 400},
		{name: "slashes_in_path", req: "GET //evil.example.org/old HTTP/1.1\r\nHost: api.default", want: 200},
		{name: "absolute_form_other_host", req: "GET http://evil.example.org/old HTTP/1.1\r\nHost: api.default", want: 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := plainRaw(t, f.web.out, tt.req+"\r\nConnection: close\r\n\r\n")
			if got.status != tt.want || got.header.Get("Location") != tt.location {
				t.Errorf("got %d Location %q, want %d %q", got.status, got.header.Get("Location"), tt.want, tt.location)
			}
		})
	}
}

// TestAttack6RouteCannotEditIdentityHeaders: a Route editing identity,
// hop-by-hop or framing headers (in any spelling) is refused when the
// snapshot is applied; the proxy keeps its current one.
func TestAttack6RouteCannotEditIdentityHeaders(t *testing.T) {
	f := newFleet(t, 1, balancer.Locality{})
	f.applyWeb(t, 1, nil, nil, f.apis[0].endpoint("", ""))
	for i, edit := range []string{
		"set: {x-forwarded-client-cert: 'By=spiffe://evil'}",
		"add: {X_Forwarded_Client_Cert: 'By=spiffe://evil'}",
		"set: {x-bulwark-upgrade: websocket}",
		"set: {X_Bulwark_Upgrade: websocket}",
		"add: {forwarded: 'for=1.2.3.4'}",
		"set: {upgrade: h2c}",
		"set: {connection: upgrade}",
		"set: {host: evil.example.org}",
		"set: {content-length: '0'}",
		"set: {transfer-encoding: chunked}",
		"remove: [x-forwarded-client-cert]",
		"set: {proxy-authorization: 'Basic eA=='}",
	} {
		t.Run(edit, func(t *testing.T) {
			doc := "apiVersion: bulwark.dev/v1alpha1\nkind: Route\nmetadata: {name: api, namespace: default}\nspec:\n  service: api\n" +
				"  rules:\n  - name: edits\n    requestHeaders: {" + edit + "}\n"
			snap := f.callerSnapshot(t, int64(2+i), nil, [][]byte{[]byte(mustJSON(t, doc))}, f.apis[0].endpoint("", ""))
			if err := f.web.node.engine.Apply(snap); err == nil {
				t.Errorf("Apply: got nil, want an error refusing the edit")
			}
		})
	}
	if got := f.web.get(t, "/x"); got.status != 200 {
		t.Errorf("after the refused snapshots: got %d %q, want 200", got.status, got.body)
	}
}

// mustJSON converts one YAML document to JSON without validating it, as a
// control plane that skipped validation would send it.
func mustJSON(t testing.TB, yamlDoc string) string {
	t.Helper()
	b, err := yaml.YAMLToJSON([]byte(yamlDoc))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAttack6MirrorBounded: a caller cannot amplify through a mirror: with
// the shadow holding every copy, at most 64 are in flight and the rest are
// dropped (counted), while the real requests are all answered.
func TestAttack6MirrorBounded(t *testing.T) {
	f := newFleet(t, 2, balancer.Locality{})
	release := f.apis[1].hold()
	defer release()
	f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, `
- name: shadow
  backends: [{version: v1, weight: 100}]
  mirror: {version: v2}
`)}, f.apis[0].endpoint("v1", ""), f.apis[1].endpoint("v2", ""))
	const n = 100
	for i := range n {
		if got := f.web.get(t, fmt.Sprintf("/m%d", i)); got.status != 200 || got.body != "api-0" {
			t.Fatalf("request %d: got %d %q, want 200 from v1", i, got.status, got.body)
		}
	}
	if got := counterValue(t, f.web.metrics, "bulwark_mirror_dropped_total"); got != n-64 {
		t.Errorf("bulwark_mirror_dropped_total: got %v, want %d", got, n-64)
	}
	for range 64 {
		f.apis[1].waitArrived(t)
	}
	if got := f.apis[1].count(); got != 64 {
		t.Errorf("the shadow received %d copies, want 64", got)
	}
}

// TestAttack6BigBodyNotReplayed: a body over 64 KiB is streamed, never
// buffered for a retry: a try that fails after sending it is not retried
// (the body cannot be sent again), and a body within the limit is sent
// whole on every try.
func TestAttack6BigBodyNotReplayed(t *testing.T) {
	f := newFleet(t, 1, balancer.Locality{})
	f.applyWeb(t, 1, trafficPolicyDoc(t, "retries: {attempts: 3, retryOn: [5xx], nonIdempotent: true}"), nil, f.apis[0].endpoint("", ""))
	api := f.apis[0]
	big := strings.Repeat("b", 64<<10+1)
	api.failTimes(http.StatusInternalServerError, 1)
	if got := f.web.send(t, http.MethodPost, "/big", big, nil); got.status != http.StatusInternalServerError {
		t.Errorf("big body, failing try: got %d %q, want the 500 relayed (no retry)", got.status, got.body)
	}
	small := strings.Repeat("s", 64<<10)
	api.failTimes(http.StatusInternalServerError, 1)
	if got := f.web.send(t, http.MethodPost, "/small", small, nil); got.status != 200 {
		t.Errorf("small body, failing try: got %d %q, want 200 after a retry", got.status, got.body)
	}
	hits := api.received()
	if len(hits) != 3 {
		t.Fatalf("the app received %d requests, want 3 (big once, small twice)", len(hits))
	}
	for i, h := range hits {
		want := map[bool]string{true: big, false: small}[i == 0]
		if h.body != want {
			t.Errorf("request %d (%s): body of %d bytes, want %d", i, h.uri, len(h.body), len(want))
		}
	}
}

// TestAttack6AppCannotFakeASwitch: only the callee's sidecar says that an
// upgrade switched: an app answering 200 with X-Bulwark-Upgrade does not
// make the caller answer 101 (and tunnel) for a request its peer never
// switched.
func TestAttack6AppCannotFakeASwitch(t *testing.T) {
	m := newUpgradeMesh(t, apiAllowPublic)
	got := plainRaw(t, m.outbound, wsUpgrade("/public/fake"))
	if got.status != 200 || got.body != "not switched\n" || got.header.Get("X-Bulwark-Upgrade") != "" {
		t.Errorf("got %d %q (X-Bulwark-Upgrade %q), want the app's 200 without the header", got.status, got.body, got.header.Get("X-Bulwark-Upgrade"))
	}
}

// echConfigList is a serialized ECHConfigList (draft-ietf-tls-esni) with
// one X25519 / HKDF-SHA256 / AES-128-GCM config whose public name is
// publicName: enough for a Go client to send an encrypted ClientHello.
func echConfigList(t testing.TB, publicName string) []byte {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var c cryptobyte.Builder
	c.AddUint16(0xfe0d) // version
	c.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(1)       // config_id
		b.AddUint16(0x0020) // DHKEM(X25519, HKDF-SHA256)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(key.PublicKey().Bytes()) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(0x0001) // HKDF-SHA256
			b.AddUint16(0x0001) // AES-128-GCM
		})
		b.AddUint8(0) // maximum_name_length
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(publicName)) })
		b.AddUint16(0) // extensions
	})
	config, err := c.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var l cryptobyte.Builder
	l.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(config) })
	return l.BytesOrPanic()
}

// TestAttack6EgressEncryptedClientHello: with Encrypted Client Hello the
// server name the app checks in the clear (the outer one) is not the one a
// shared front end routes by: a tunnel to a "tls" port carrying ECH is
// closed, as one naming another server is.
func TestAttack6EgressEncryptedClientHello(t *testing.T) {
	a := newAuthority(t)
	up := newExternalTLSApp(t, "tunneled")
	web := newWatchedNode(t, a, webSvc, "")
	web.apply(t, egressSnapshot(t, a, 1, externalDest(t, "tunnel", fmt.Sprintf(`
  hosts: [example.com]
  ports: [{port: 443, protocol: tls}]
  addresses: ["%s"]`, up.addr()), egressAllowWeb)))
	outbound := servePlain(t, web.engine.Outbound())
	conn, br, status := connectThrough(t, outbound, "example.com:443")
	if status != 200 {
		t.Fatalf("CONNECT: got %d, want 200", status)
	}
	// The server knows no ECH key: were the hello to reach it, it would
	// answer the outer one, for example.com, and the client would report
	// the rejection.
	roots := x509.NewCertPool()
	roots.AddCert(up.srv.Certificate())
	tc := tls.Client(&bufferedConn{Conn: conn, r: br}, &tls.Config{
		ServerName: "hidden.example.net", MinVersion: tls.VersionTLS13, RootCAs: roots,
		EncryptedClientHelloConfigList: echConfigList(t, "example.com"),
	})
	err := tc.Handshake()
	conn.Close()
	var rej *tls.ECHRejectionError
	if err == nil || errors.As(err, &rej) {
		t.Fatalf("handshake with ECH: got %v, want the tunnel closed before the server answers", err)
	}
	web.log.waitFor(t, "denial of the encrypted client hello", func(l map[string]any) bool {
		d, _ := l["detail"].(string)
		return l["method"] == "CONNECT" && l["decision"] == "deny" && strings.Contains(d, "encrypted client hello")
	})
}

// plainH2 sends req as the only stream of a new cleartext HTTP/2
// connection with prior knowledge (as an h2c app client does) and returns
// the response or how the server refused it.
func plainH2(t testing.TB, addr string, req rawH2) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(hangGuard))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range req.fields {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		t.Fatal(err)
	}
	resp := response{header: http.Header{}}
	var body strings.Builder
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return response{refused: "closed: " + err.Error()}
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" {
				fmt.Sscan(s, &resp.status)
			}
			for _, hf := range f.RegularFields() {
				resp.header.Add(hf.Name, hf.Value)
			}
			if f.StreamEnded() {
				resp.body = body.String()
				return resp
			}
		case *http2.DataFrame:
			body.Write(f.Data())
			if f.StreamEnded() {
				resp.body = body.String()
				return resp
			}
		case *http2.RSTStreamFrame:
			return response{refused: "RST"}
		case *http2.GoAwayFrame:
			return response{refused: "GOAWAY"}
		}
	}
}

// TestAttack6H2CAuthority: an h2c client of the outbound cannot make the
// sidecar decide on one host and send to another: a host field that
// disagrees with :authority is refused, and the identity and tunnel
// headers it sends are stripped.
func TestAttack6H2CAuthority(t *testing.T) {
	m := newUpgradeMesh(t, apiAllowPublic)
	fields := func(authority string, extra ...[2]string) [][2]string {
		f := [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/public/h2"}}
		if authority != "" {
			f = append(f, [2]string{":authority", authority})
		}
		return append(f, extra...)
	}
	for _, tt := range []struct {
		name   string
		fields [][2]string
		want   int
	}{
		{name: "authority", fields: fields("api.default"), want: 200},
		{name: "host_disagrees", fields: fields("api.default", [2]string{"host", "evil.example.org"}), want: 400},
		{name: "host_disagrees_other_way", fields: fields("evil.example.org", [2]string{"host", "api.default"}), want: 400},
		{name: "host_only", fields: fields("", [2]string{"host", "api.default"}), want: 200},
		{name: "tunnel_header", fields: fields("api.default", [2]string{"x-bulwark-upgrade", "websocket"}), want: 200},
		{name: "xfcc", fields: fields("api.default", [2]string{"x-forwarded-client-cert", "By=spiffe://evil"}), want: 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := plainH2(t, m.outbound, rawH2{fields: tt.fields})
			if got.status != tt.want {
				t.Errorf("got %d %q (%s), want %d", got.status, got.body, got.refused, tt.want)
			}
		})
	}
	for _, r := range m.app.requests() {
		if r != "GET /public/h2 upgrade=" {
			t.Errorf("the app received %q, want only plain requests", r)
		}
	}
}
