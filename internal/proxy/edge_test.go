package proxy_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/net/websocket"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// gwSvc is the gateway of the edge fixtures: its identity is
// spiffe://bulwark.test/ns/gw/sa/edge.
var gwSvc = identity.ServiceRef{Namespace: "gw", Name: "edge"}

// edgeGateway is the Gateway of the edge fixtures.
const edgeGateway = `
apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: gw}
spec:
  listeners:
  - {name: web, port: 8080, protocol: HTTP, redirectToHTTPS: false}
  - {name: other, port: 8081, protocol: HTTP, redirectToHTTPS: false}
  - {name: pass, port: 8443, protocol: TLS}
  limits: {maxURLLength: 200, maxRequestHeaders: 20, maxRequestBodyBytes: 1000}
  rateLimits: [{requestsPerSecond: 1000, burst: 1000, per: route}]
  routes:
  - name: strip
    hosts: [shop.example.com]
    matches: [{path: {prefix: /api}}]
    service: default/api
    rewrite: {stripPrefix: /api}
  - name: replace
    hosts: [shop.example.com]
    matches: [{path: {prefix: /v1/}}]
    service: default/api
    rewrite: {replacePrefix: /v2}
  - name: full
    hosts: [shop.example.com]
    matches: [{path: {exact: /old}}]
    service: default/api
    rewrite: {replaceFullPath: /new/place}
  - name: jwt
    hosts: ["*.example.com"]
    matches: [{path: {prefix: /jwt}}]
    service: default/api
    jwt: {providers: [idp], claimsToHeaders: [{claim: team, header: X-Team}]}
  - name: optional-jwt
    matches: [{path: {prefix: /optjwt}}]
    service: default/api
    jwt: {providers: [idp], required: false}
    rateLimits: [{requestsPerSecond: 0.001, burst: 1, per: subject}]
  - name: nokey
    matches: [{path: {prefix: /nokey}}]
    service: default/api
    jwt: {providers: [missing]}
  - name: cors
    hosts: [app.example.com]
    matches: [{path: {prefix: /cors}}]
    service: default/api
    cors:
      allowOrigins: ["https://app.example.com"]
      allowMethods: [GET, PUT]
      allowHeaders: [X-Custom]
      exposeHeaders: [X-App]
      allowCredentials: true
      maxAge: 5m
  - name: per-ip
    matches: [{path: {prefix: /per-ip}}]
    service: default/api
    rateLimits: [{requestsPerSecond: 0.001, burst: 1}]
  - name: per-route
    matches: [{path: {prefix: /per-route}}]
    service: default/api
    rateLimits: [{requestsPerSecond: 0.001, burst: 1, per: route}]
  - name: other-only
    listeners: [other]
    matches: [{path: {prefix: /other}}]
    service: default/api
  - name: slow
    matches: [{path: {exact: /slow}}]
    service: default/api
    timeout: 100ms
  - name: shop
    hosts: [shop.example.com]
    service: default/api
    port: 8080
    maxRequestBodyBytes: 100
    requestHeaders: {set: {X-Added: "1"}}
    responseHeaders: {set: {X-Edge: "yes"}}
  tlsRoutes:
  - name: tls
    hosts: [example.com, denied.example.com]
    service: default/tlsapp
`

// edgePolicy selects the gateway: it lets every client in, but /jwt only
// with a token of team blue, and TLS connections only to example.com.
const edgePolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: edge-in, namespace: gw}
spec:
  selector: {service: edge}
  rules:
  - to: {methods: ["*"], notPaths: ["/jwt/*"]}
  - to: {paths: ["/jwt/*"]}
    when: ["jwt.claims.?team.orValue('') == 'blue'"]
  - to: {hosts: [example.com]}
`

// edgeAPIPolicy lets the gateway (and shop/web) call default/api: both the
// callee's policy and the gateway's view of it.
const edgeAPIPolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-in, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [gw/edge, shop/web]}
    to: {methods: ["*"]}
`

// edgeTLSAppPolicy lets the gateway open tunnels to default/tlsapp.
const edgeTLSAppPolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: tlsapp-in, namespace: default}
spec:
  selector: {service: tlsapp}
  rules:
  - from: {services: [gw/edge]}
`

// bodyApp is a recording app that reads each request's body before it
// answers.
type bodyApp struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []seenRequest
}

func newBodyApp(t testing.TB) *bodyApp {
	t.Helper()
	a := &bodyApp{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-r.Context().Done() // until the gateway gives up
			return
		}
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.got = append(a.got, seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone()})
		a.mu.Unlock()
		w.Header().Set("X-App", "default/api")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		fmt.Fprintf(w, "%s %s %d\n", r.Method, r.RequestURI, len(b))
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *bodyApp) last(t testing.TB) seenRequest {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.got) == 0 {
		t.Fatal("the app received nothing")
	}
	return a.got[len(a.got)-1]
}

func (a *bodyApp) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got)
}

// edgeFixture is a gateway (gw/edge) serving its "web" listener in plain
// HTTP, in front of default/api (a sidecar and a recording app).
type edgeFixture struct {
	auth    *authority
	app     *bodyApp
	api     *node
	apiAddr string
	gw      *node
	web     string // the "web" listener
	version int64
}

// edgeProviderDoc is the JSON of the JWTProvider gw/idp of jwtIssuer.
func edgeProviderDoc(t testing.TB, ns string) []byte {
	t.Helper()
	p := &config.JWTProvider{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindJWTProvider},
		Metadata: config.ObjectMeta{Namespace: ns, Name: "idp"},
		Spec:     config.JWTProviderSpec{Issuer: jwtIssuer, JWKS: jwtJWKS(t)},
	}
	if errs := p.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	b, err := config.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edgeToken signs a token of jwtIssuer for sub with the claim team.
func edgeToken(t testing.TB, sub, team string) string {
	t.Helper()
	payload, err := json.Marshal(map[string]any{"iss": jwtIssuer, "sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "team": team})
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, "k1"); err != nil {
		t.Fatal(err)
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), jwtKey, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// gatewayDoc decodes a YAML Gateway (validating it) and returns its JSON.
func gatewayDoc(t testing.TB, yamlDoc string) []byte {
	t.Helper()
	objs, err := config.Decode([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("decode gateway: %v", err)
	}
	b, err := config.Marshal(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gwSnapshot is the gateway's snapshot: its Gateway, the policies that
// select it, and default/api (and default/tlsapp when tlsAddr is set) as
// destinations.
func (f *edgeFixture) gwSnapshot(t testing.TB, gateway []byte, tlsAddr string, tlsID string) *apiv1.Snapshot {
	t.Helper()
	f.version++
	dests := []*apiv1.Destination{{
		Service: "default/api", Policies: [][]byte{policyDoc(t, edgeAPIPolicy)},
		Endpoints: []*apiv1.Endpoint{{Address: f.apiAddr, SpiffeId: f.api.id().String()}},
	}}
	if tlsAddr != "" {
		dests = append(dests, &apiv1.Destination{
			Service: "default/tlsapp", Protocol: "tcp", Policies: [][]byte{policyDoc(t, edgeTLSAppPolicy)},
			Endpoints: []*apiv1.Endpoint{{Address: tlsAddr, SpiffeId: tlsID}},
		})
	}
	return &apiv1.Snapshot{
		Version:      f.version,
		TrustBundle:  f.auth.rootDER(),
		Inbound:      &apiv1.Inbound{Policies: [][]byte{policyDoc(t, edgePolicy)}},
		Services:     []string{"default/api", "default/tlsapp", "gw/edge", "shop/web"},
		Destinations: dests,
		Gateway: &apiv1.GatewayConfig{
			Resource:     gateway,
			JwtProviders: []*apiv1.JWTProvider{{Resource: edgeProviderDoc(t, "gw"), Jwks: []byte(jwtJWKS(t))}},
		},
	}
}

func newEdgeFixture(t testing.TB) *edgeFixture {
	t.Helper()
	return newEdgeFixtureApp(t, "")
}

// newEdgeFixtureApp is newEdgeFixture with default/api's app at appAddr
// ("": the recording bodyApp).
func newEdgeFixtureApp(t testing.TB, appAddr string) *edgeFixture {
	t.Helper()
	f := &edgeFixture{auth: newAuthority(t)}
	f.app = newBodyApp(t)
	if appAddr == "" {
		appAddr = f.app.srv.Listener.Addr().String()
	}
	f.api = newNode(t, f.auth, apiSvc, appAddr)
	f.apiAddr = f.api.serveInbound(t)
	gwID := workloadID(t, "gw", "edge").String()
	f.api.apply(t, &apiv1.Snapshot{
		Version:     1,
		TrustBundle: f.auth.rootDER(),
		Inbound: &apiv1.Inbound{
			Policies: [][]byte{policyDoc(t, edgeAPIPolicy)},
			Peers: []*apiv1.PeerIdentity{
				{SpiffeId: gwID, Services: []string{"gw/edge"}},
				{SpiffeId: workloadID(t, "shop", "web").String(), Services: []string{"shop/web"}},
			},
			Gateways: []string{gwID},
		},
		Services: []string{"default/api", "gw/edge", "shop/web"},
	})
	f.gw = newNode(t, f.auth, gwSvc, "")
	f.gw.apply(t, f.gwSnapshot(t, gatewayDoc(t, edgeGateway), "", ""))
	f.web = servePlain(t, f.gw.engine.Edge("web", false))
	return f
}

// edgeRaw sends a raw HTTP/1.1 request from the local address from
// ("" for the default).
func edgeRaw(t testing.TB, addr, from, req string) response {
	t.Helper()
	d := net.Dialer{Timeout: hangGuard}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return rawExchange(t, conn, req)
}

// edgeGet sends a GET of target with host and the extra header lines.
func edgeGet(t testing.TB, addr, host, target string, headers ...string) response {
	t.Helper()
	h := ""
	for _, l := range headers {
		h += l + "\r\n"
	}
	return edgeRaw(t, addr, "", "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n"+h+"Connection: close\r\n\r\n")
}

func TestEdgeRouting(t *testing.T) {
	f := newEdgeFixture(t)
	tests := []struct {
		name, host, target string
		wantStatus         int
		wantURI            string // what the app receives
		wantHost           string
	}{
		{name: "strip_prefix", host: "shop.example.com", target: "/api/orders?x=1", wantStatus: 200, wantURI: "/orders?x=1", wantHost: "api.default"},
		{name: "route_port", host: "shop.example.com", target: "/elsewhere", wantStatus: 200, wantURI: "/elsewhere", wantHost: "api.default"},
		{name: "strip_prefix_alone", host: "shop.example.com", target: "/api", wantStatus: 200, wantURI: "/"},
		{name: "strip_not_at_boundary", host: "shop.example.com", target: "/apix", wantStatus: 200, wantURI: "/apix"},
		{name: "replace_prefix", host: "shop.example.com", target: "/v1/items/3", wantStatus: 200, wantURI: "/v2/items/3"},
		{name: "replace_full_path", host: "shop.example.com", target: "/old?q=2", wantStatus: 200, wantURI: "/new/place?q=2"},
		{name: "normalized_before_routing", host: "shop.example.com", target: "/x/../api/a", wantStatus: 200, wantURI: "/a"},
		{name: "host_case_and_dot", host: "SHOP.example.com.", target: "/api/a", wantStatus: 200, wantURI: "/a"},
		{name: "host_with_port", host: "shop.example.com:8080", target: "/api/a", wantStatus: 200, wantURI: "/a"},
		{name: "unknown_host", host: "evil.example.net", target: "/api/a", wantStatus: 404},
		{name: "wildcard_is_not_apex", host: "example.com", target: "/jwt/a", wantStatus: 404},
		{name: "other_listener_only", host: "shop.example.com", target: "/other", wantStatus: 200, wantURI: "/other"},
		{name: "other_listener_only_elsewhere", host: "x.example.net", target: "/other", wantStatus: 404},
		{name: "route_timeout", host: "x.example.net", target: "/slow", wantStatus: 504},
		{name: "bad_path", host: "shop.example.com", target: "*", wantStatus: 400},
		{name: "absolute_form", host: "shop.example.com", target: "http://shop.example.com/api/a", wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.app.count()
			got := edgeGet(t, f.web, tt.host, tt.target)
			if got.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d (body %q)", got.status, tt.wantStatus, got.body)
			}
			if tt.wantURI == "" {
				if f.app.count() != before {
					t.Fatalf("the app received a request answered %d", got.status)
				}
				return
			}
			seen := f.app.last(t)
			if seen.RequestURI != tt.wantURI {
				t.Errorf("app's request-target: got %q, want %q", seen.RequestURI, tt.wantURI)
			}
			if tt.wantHost != "" && seen.Host != tt.wantHost {
				t.Errorf("app's Host: got %q, want %q", seen.Host, tt.wantHost)
			}
		})
	}
}

func TestEdgeLimits(t *testing.T) {
	f := newEdgeFixture(t)
	many := ""
	for i := range 21 {
		many += fmt.Sprintf("X-H%d: v\r\n", i)
	}
	tests := []struct {
		name string
		req  string
		want int
	}{
		{name: "uri_too_long", req: "GET /api/" + strings.Repeat("a", 200) + " HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n", want: 414},
		{name: "too_many_headers", req: "GET /api/a HTTP/1.1\r\nHost: shop.example.com\r\n" + many + "Connection: close\r\n\r\n", want: 431},
		{name: "declared_body_too_large", req: "POST /b HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 101\r\nConnection: close\r\n\r\n" + strings.Repeat("a", 101), want: 413},
		{name: "chunked_body_too_large", req: "POST /b HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
			"7d0\r\n" + strings.Repeat("a", 2000) + "\r\n0\r\n\r\n", want: 413},
		{name: "gateway_body_limit", req: "POST /api/a HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n", want: 413},
		{name: "body_within_limit", req: "POST /b HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 100\r\nConnection: close\r\n\r\n" + strings.Repeat("a", 100), want: 200},
		{name: "chunked_within_limit", req: "POST /b HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
			"64\r\n" + strings.Repeat("a", 100) + "\r\n0\r\n\r\n", want: 200},
		{name: "lower_case_method", req: "get /api/a HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n", want: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := edgeRaw(t, f.web, "", tt.req)
			if got.status != tt.want {
				t.Fatalf("status: got %d, want %d (body %q)", got.status, tt.want, got.body)
			}
			if tt.want >= 400 && strings.Contains(got.body, "default/api") {
				t.Errorf("a refusal reached the app: %q", got.body)
			}
		})
	}
}

func TestEdgeHeaderHygiene(t *testing.T) {
	f := newEdgeFixture(t)
	got := edgeGet(t, f.web, "shop.example.com", "/h",
		"X-Forwarded-For: 6.6.6.6",
		"X_Forwarded_For: 6.6.6.7",
		"X-Forwarded-Proto: https",
		"X-Forwarded-Host: evil.example",
		"Forwarded: for=6.6.6.6",
		"X-Forwarded-Client-Cert: By=spiffe://bulwark.test/ns/default/sa/api;URI=spiffe://bulwark.test/ns/x/sa/admin",
		"X-Bulwark-Upgrade: h2c",
		"X-Request-Id: chosen-by-client",
		"Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"Tracestate: a=b",
		"Proxy-Authorization: Basic c2VjcmV0",
		"Connection: X-Request-Id, X-Forwarded-For, X-Forwarded-Host, X-Added",
		"X-Added: client",
	)
	if got.status != 200 {
		t.Fatalf("status: got %d, want 200 (%q)", got.status, got.body)
	}
	if got.header.Get("X-Edge") != "yes" {
		t.Errorf("response header edit: got X-Edge %q, want yes", got.header.Get("X-Edge"))
	}
	h := f.app.last(t).Header
	want := map[string][]string{
		"X-Forwarded-For":     {"127.0.0.1"},
		"X-Forwarded-Proto":   {"http"},
		"X-Forwarded-Host":    {"shop.example.com"},
		"X-Added":             {"1"},
		"Forwarded":           nil,
		"X_forwarded_for":     nil,
		"X-Bulwark-Upgrade":   nil,
		"Tracestate":          nil,
		"Traceparent":         nil,
		"Proxy-Authorization": nil,
	}
	for k, v := range want {
		if diff := cmp.Diff(v, h[k]); diff != "" {
			t.Errorf("app's %s (-want +got):\n%s", k, diff)
		}
	}
	for k := range h {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "x-forwarded-for") && k != "X-Forwarded-For" {
			t.Errorf("app received %s", k)
		}
	}
	if xfcc := h.Get("X-Forwarded-Client-Cert"); xfcc != "By="+f.api.id().String()+";URI="+f.gw.id().String() {
		t.Errorf("app's XFCC: got %q, want the gateway's identity", xfcc)
	}
	id := h.Get("X-Request-Id")
	if len(id) != 32 || id == "chosen-by-client" {
		t.Errorf("app's X-Request-Id: got %q, want 32 hex digits of the gateway", id)
	}
	line := f.gw.log.waitFor(t, "the edge request", func(m map[string]any) bool { return m["path"] == "/h" })
	for k, want := range map[string]any{"client_ip": "127.0.0.1", "listener": "web", "gateway_route": "shop", "destination": "default/api",
		"source": f.gw.id().String(), "request_id": id, "status": float64(200)} {
		if line[k] != want {
			t.Errorf("access log %s: got %v, want %v", k, line[k], want)
		}
	}
	if strings.Contains(f.gw.log.String(), "c2VjcmV0") {
		t.Error("the access log holds the client's Proxy-Authorization")
	}
}

// TestEdgeForwardedOnlyFromGateways checks that the sidecar keeps
// X-Forwarded-For, -Proto and -Host from a gateway peer only.
func TestEdgeForwardedOnlyFromGateways(t *testing.T) {
	f := newEdgeFixture(t)
	fields := func(path string) [][2]string {
		return apiFields("GET", path, [2]string{"x-forwarded-for", "6.6.6.6"}, [2]string{"x-forwarded-proto", "https"},
			[2]string{"x-forwarded-host", "h.example"}, [2]string{"x-forwarded-client-cert", "spoof"}, [2]string{"forwarded", "for=1"})
	}
	tests := []struct {
		name string
		src  *source
		want http.Header
	}{
		{name: "gateway_peer", src: f.gw.src, want: http.Header{"X-Forwarded-For": {"6.6.6.6"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"h.example"}}},
		{name: "other_peer", src: f.auth.svid(t, workloadID(t, "shop", "web")), want: http.Header{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mtlsH2(t, f.apiAddr, tt.src, f.api.id(), rawH2{fields: fields("/" + tt.name)})
			if got.status != 200 {
				t.Fatalf("status: got %d (%s), want 200", got.status, got.refused)
			}
			h := f.app.last(t).Header
			gotH := http.Header{}
			for k, v := range h {
				if strings.HasPrefix(k, "X-Forwarded-") && k != "X-Forwarded-Client-Cert" || k == "Forwarded" {
					gotH[k] = v
				}
			}
			if diff := cmp.Diff(tt.want, gotH); diff != "" {
				t.Errorf("forwarding headers the app received (-want +got):\n%s", diff)
			}
			if xfcc := h.Get("X-Forwarded-Client-Cert"); xfcc != "By="+f.api.id().String()+";URI="+tt.src.svid.ID.String() {
				t.Errorf("XFCC: got %q", xfcc)
			}
		})
	}
}

func TestEdgeJWT(t *testing.T) {
	f := newEdgeFixture(t)
	tests := []struct {
		name       string
		headers    []string
		wantStatus int
		wantAuth   string // WWW-Authenticate
	}{
		{name: "no_token", wantStatus: 401, wantAuth: "Bearer"},
		{name: "bad_token", headers: []string{"Authorization: Bearer not.a.token"}, wantStatus: 401, wantAuth: `Bearer error="invalid_token"`},
		{name: "team_blue", headers: []string{"Authorization: Bearer " + edgeToken(t, "alice", "blue"), "X-Team: forged"}, wantStatus: 200},
		{name: "team_red", headers: []string{"Authorization: Bearer " + edgeToken(t, "bob", "red")}, wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.app.count()
			got := edgeGet(t, f.web, "shop.example.com", "/jwt/"+tt.name, tt.headers...)
			if got.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d (%q)", got.status, tt.wantStatus, got.body)
			}
			if a := got.header.Get("WWW-Authenticate"); a != tt.wantAuth {
				t.Errorf("WWW-Authenticate: got %q, want %q", a, tt.wantAuth)
			}
			if tt.wantStatus != 200 {
				if f.app.count() != before {
					t.Error("a refused request reached the app")
				}
				return
			}
			h := f.app.last(t).Header
			if h.Get("Authorization") != "" {
				t.Error("the token was forwarded")
			}
			if diff := cmp.Diff([]string{"blue"}, h["X-Team"]); diff != "" {
				t.Errorf("X-Team (-want +got):\n%s", diff)
			}
		})
	}
	// A route naming a provider the snapshot lacks fails closed.
	got := edgeGet(t, f.web, "x.example.net", "/nokey", "Authorization: Bearer "+edgeToken(t, "alice", "blue"))
	if got.status != 503 {
		t.Errorf("route with a missing provider: got %d, want 503", got.status)
	}
	f.gw.plog.waitFor(t, "the unavailable route", func(m map[string]any) bool {
		return m["msg"] == "gateway route unavailable" && m["route"] == "nokey"
	})
	d := f.gw.engine.Dump()
	if d.Gateway == nil || !cmp.Equal(d.Gateway.UnavailableRoutes, []string{"nokey"}) {
		t.Errorf("dump: got gateway %+v, want nokey unavailable", d.Gateway)
	}
}

func TestEdgeCORS(t *testing.T) {
	f := newEdgeFixture(t)
	const origin = "Origin: https://app.example.com"
	preflight := func(headers ...string) response {
		return edgeRaw(t, f.web, "", "OPTIONS /cors/x HTTP/1.1\r\nHost: app.example.com\r\n"+strings.Join(headers, "\r\n")+"\r\nConnection: close\r\n\r\n")
	}
	before := f.app.count()
	tests := []struct {
		name    string
		headers []string
		want    int
	}{
		{name: "allowed", headers: []string{origin, "Access-Control-Request-Method: PUT", "Access-Control-Request-Headers: x-custom, content-type"}, want: 204},
		{name: "other_origin", headers: []string{"Origin: https://evil.example", "Access-Control-Request-Method: GET"}, want: 403},
		{name: "method", headers: []string{origin, "Access-Control-Request-Method: DELETE"}, want: 403},
		{name: "header", headers: []string{origin, "Access-Control-Request-Method: GET", "Access-Control-Request-Headers: x-other"}, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := preflight(tt.headers...)
			if got.status != tt.want {
				t.Fatalf("status: got %d, want %d", got.status, tt.want)
			}
			if tt.want != 204 {
				if v := got.header.Get("Access-Control-Allow-Origin"); v != "" {
					t.Errorf("refused preflight has Access-Control-Allow-Origin %q", v)
				}
				return
			}
			want := map[string]string{
				"Access-Control-Allow-Origin":      "https://app.example.com",
				"Access-Control-Allow-Methods":     "GET, PUT",
				"Access-Control-Allow-Headers":     "x-custom, content-type",
				"Access-Control-Max-Age":           "300",
				"Access-Control-Allow-Credentials": "true",
			}
			for k, v := range want {
				if got.header.Get(k) != v {
					t.Errorf("%s: got %q, want %q", k, got.header.Get(k), v)
				}
			}
		})
	}
	if f.app.count() != before {
		t.Error("a preflight was forwarded")
	}
	// A request from an allowed origin gets the CORS headers, replacing
	// the app's; one from another origin gets none of the gateway's.
	got := edgeGet(t, f.web, "app.example.com", "/cors/y", origin)
	if got.status != 200 || got.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		got.header.Get("Access-Control-Allow-Credentials") != "true" || got.header.Get("Access-Control-Expose-Headers") != "X-App" ||
		!strings.Contains(strings.Join(got.header.Values("Vary"), ","), "Origin") {
		t.Errorf("allowed origin: got %d %v", got.status, got.header)
	}
	got = edgeGet(t, f.web, "app.example.com", "/cors/y", "Origin: https://evil.example")
	if got.status != 200 || got.header.Get("Access-Control-Allow-Credentials") != "" || got.header.Get("Access-Control-Expose-Headers") != "" {
		t.Errorf("other origin: got %d %v", got.status, got.header)
	}
}

func TestEdgeRateLimits(t *testing.T) {
	f := newEdgeFixture(t)
	send := func(from, path string, headers ...string) response {
		h := ""
		for _, l := range headers {
			h += l + "\r\n"
		}
		return edgeRaw(t, f.web, from, "GET "+path+" HTTP/1.1\r\nHost: x.example.net\r\n"+h+"Connection: close\r\n\r\n")
	}
	alice := "Authorization: Bearer " + edgeToken(t, "alice", "blue")
	bob := "Authorization: Bearer " + edgeToken(t, "bob", "blue")
	steps := []struct {
		name    string
		from    string
		path    string
		headers []string
		want    int
	}{
		{name: "ip_first", from: "127.0.0.1", path: "/per-ip", want: 200},
		{name: "ip_again", from: "127.0.0.1", path: "/per-ip/2", want: 429},
		{name: "ip_other_client", from: "127.0.0.2", path: "/per-ip", want: 200},
		{name: "route_first", from: "127.0.0.1", path: "/per-route", want: 200},
		{name: "route_other_client", from: "127.0.0.2", path: "/per-route", want: 429},
		{name: "subject_alice", path: "/optjwt", headers: []string{alice}, want: 200},
		{name: "subject_alice_again", path: "/optjwt", headers: []string{alice}, want: 429},
		{name: "subject_bob", path: "/optjwt", headers: []string{bob}, want: 200},
		{name: "subject_anonymous_by_ip", from: "127.0.0.1", path: "/optjwt", want: 200},
		{name: "subject_anonymous_again", from: "127.0.0.1", path: "/optjwt", want: 429},
	}
	for i, s := range steps {
		if i == 3 {
			// An identical snapshot keeps the buckets.
			f.gw.apply(t, f.gwSnapshot(t, gatewayDoc(t, edgeGateway), "", ""))
		}
		got := send(s.from, s.path, s.headers...)
		if got.status != s.want {
			t.Fatalf("%s: got %d, want %d (%q)", s.name, got.status, s.want, got.body)
		}
		if s.want == 429 && got.header.Get("Retry-After") == "" {
			t.Errorf("%s: 429 without Retry-After", s.name)
		}
	}
}

func TestEdgeApplyRefusesBadGateway(t *testing.T) {
	f := newEdgeFixture(t)
	other := strings.Replace(edgeGateway, "name: edge, namespace: gw", "name: other, namespace: gw", 1)
	tests := []struct {
		name     string
		resource []byte
		wantErr  string
	}{
		{name: "not_json", resource: []byte("{"), wantErr: "gateway: resource:"},
		{name: "other_gateway", resource: gatewayDoc(t, other), wantErr: "Gateway gw/other is not this gateway's (gw/edge)"},
		{name: "not_a_gateway", resource: policyDoc(t, edgePolicy), wantErr: "is not a Gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := f.gwSnapshot(t, tt.resource, "", "")
			err := f.gw.engine.Apply(snap)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Apply: got %v, want an error with %q", err, tt.wantErr)
			}
			if gw, _, _ := f.gw.engine.Gateway(); gw == nil || gw.Metadata.Name != "edge" {
				t.Fatalf("the old Gateway is gone: %v", gw)
			}
		})
	}
}

func TestEdgeNoGateway(t *testing.T) {
	a := newAuthority(t)
	gw := newNode(t, a, gwSvc, "")
	addr := servePlain(t, gw.engine.Edge("web", false))
	if got := edgeGet(t, addr, "shop.example.com", "/"); got.status != 503 {
		t.Errorf("before any snapshot: got %d, want 503", got.status)
	}
	gw.apply(t, &apiv1.Snapshot{Version: 1, TrustBundle: a.rootDER(), Inbound: &apiv1.Inbound{}})
	if got := edgeGet(t, addr, "shop.example.com", "/"); got.status != 503 {
		t.Errorf("snapshot without a gateway: got %d, want 503", got.status)
	}
	if g, s, v := gw.engine.Gateway(); g != nil || s != nil || v != 1 {
		t.Errorf("Gateway(): got %v, %v, %d; want nil, nil, 1", g, s, v)
	}
}

// TestEdgeTLSListener checks what a TLS-terminating listener tells the
// service: https, and the port 443 policies see by default.
func TestEdgeTLSListener(t *testing.T) {
	f := newEdgeFixture(t)
	srv := httptest.NewUnstartedServer(f.gw.engine.Edge("web", true))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/api/tls", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.example.com"
	got := do(t, srv.Client(), req)
	if got.status != 200 {
		t.Fatalf("status: got %d, want 200 (%q)", got.status, got.body)
	}
	if p := f.app.last(t).Header.Get("X-Forwarded-Proto"); p != "https" {
		t.Errorf("X-Forwarded-Proto: got %q, want https", p)
	}
}

// TestEdgePassthrough tunnels TLS connections by SNI to a service whose
// app terminates TLS behind a tcp sidecar.
func TestEdgePassthrough(t *testing.T) {
	f := newEdgeFixture(t)
	tlsApp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tlsapp %s %s", r.TLS.ServerName, r.URL.Path)
	}))
	tlsApp.StartTLS()
	t.Cleanup(tlsApp.Close)
	tlsSvc := identity.ServiceRef{Namespace: "default", Name: "tlsapp"}
	side := newProtoNode(t, f.auth, tlsSvc, tlsApp.Listener.Addr().String(), "tcp", nil)
	sideAddr := side.serveInbound(t)
	side.apply(t, &apiv1.Snapshot{
		Version: 1, TrustBundle: f.auth.rootDER(),
		Inbound: &apiv1.Inbound{
			Policies: [][]byte{policyDoc(t, edgeTLSAppPolicy)},
			Peers:    []*apiv1.PeerIdentity{{SpiffeId: f.gw.id().String(), Services: []string{"gw/edge"}}},
		},
		Services: []string{"default/tlsapp", "gw/edge"},
	})
	f.gw.apply(t, f.gwSnapshot(t, gatewayDoc(t, edgeGateway), sideAddr, side.id().String()))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { f.gw.engine.ServePassthrough(ctx, c, "pass") })
		}
	})

	client := tlsApp.Client()
	tr := client.Transport.(*http.Transport)
	tr.DisableKeepAlives = true // the tunnel ends with the request
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
	}
	client.Timeout = hangGuard
	resp, err := client.Get("https://example.com/through")
	if err != nil {
		t.Fatalf("through the passthrough listener: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "tlsapp example.com /through"; string(body) != want {
		t.Errorf("body: got %q, want %q", body, want)
	}
	f.gw.log.waitFor(t, "the tunnel", func(m map[string]any) bool {
		return m["gateway_route"] == "tls" && m["status"] == float64(200) && m["listener"] == "pass"
	})

	refused := []struct {
		name, sni, wantDetail string
	}{
		{name: "no_sni", sni: "", wantDetail: "client hello without a server name"},
		{name: "denied_sni", sni: "denied.example.com"},
		{name: "unrouted_sni", sni: "nowhere.example.org", wantDetail: "no tls route for nowhere.example.org"},
		{name: "sni_not_dns", sni: "a_b,example.com", wantDetail: "client hello: the server name is not a dns name"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", ln.Addr().String(), hangGuard)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := conn.SetDeadline(time.Now().Add(hangGuard)); err != nil {
				t.Fatal(err)
			}
			tc := tls.Client(conn, &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true}) //nolint:gosec // the handshake must fail before any certificate
			err = tc.Handshake()
			if err == nil {
				t.Fatal("handshake succeeded; want the connection closed")
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("handshake timed out; want the connection closed: %v", err)
			}
		})
	}
	t.Run("not_tls", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(hangGuard)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		// Closed (EOF, or a reset when bytes were left unread), with
		// nothing written.
		b, err := io.ReadAll(conn)
		var ne net.Error
		if len(b) != 0 || errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("plain HTTP on the passthrough listener: got %q, %v; want the connection closed", b, err)
		}
	})
	f.gw.log.waitFor(t, "the denied server name", func(m map[string]any) bool {
		return m["decision"] == "deny" && m["status"] == float64(403) && m["gateway_route"] == "tls"
	})
	f.gw.log.waitFor(t, "the connection without a server name", func(m map[string]any) bool {
		return m["detail"] == "client hello without a server name"
	})
	f.gw.log.waitFor(t, "the server name that is no dns name", func(m map[string]any) bool {
		return m["detail"] == "client hello: the server name is not a dns name"
	})
}

// TestEdgeStartsTrace checks that the gateway starts a trace for every
// request rather than continuing the client's.
func TestEdgeStartsTrace(t *testing.T) {
	f := newEdgeFixture(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	gw := tracedNode(t, f.auth, gwSvc, "", func(c *proxy.Config) { c.Tracer = tp })
	gw.apply(t, f.gwSnapshot(t, gatewayDoc(t, edgeGateway), "", ""))
	addr := servePlain(t, gw.engine.Edge("web", false))

	const clientTrace = "0af7651916cd43dd8448eb211c80319c"
	got := edgeGet(t, addr, "shop.example.com", "/traced", "Traceparent: 00-"+clientTrace+"-b7ad6b7169203331-01", "Tracestate: k=v")
	if got.status != 200 {
		t.Fatalf("status: got %d, want 200", got.status)
	}
	h := f.app.last(t).Header
	tp0 := h.Get("Traceparent")
	if tp0 == "" || strings.Contains(tp0, clientTrace) {
		t.Errorf("app's traceparent: got %q, want a new trace of the gateway", tp0)
	}
	if ts := h.Get("Tracestate"); ts != "" {
		t.Errorf("app's tracestate: got %q, want none", ts)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("spans: got %d, want 1", len(spans))
	}
	if sp := spans[0]; sp.Parent.IsValid() || sp.SpanContext.TraceID().String() == clientTrace ||
		!strings.Contains(tp0, sp.SpanContext.TraceID().String()) {
		t.Errorf("gateway span: parent %v, trace %s; app's traceparent %q", sp.Parent, sp.SpanContext.TraceID(), tp0)
	}
}

func TestEdgeMetrics(t *testing.T) {
	f := newEdgeFixture(t)
	reg := prometheus.NewRegistry()
	gw := newProtoNode(t, f.auth, gwSvc, "", "", reg)
	gw.apply(t, f.gwSnapshot(t, gatewayDoc(t, edgeGateway), "", ""))
	addr := servePlain(t, gw.engine.Edge("web", false))
	for _, target := range []string{"/m1", "/m2"} {
		if got := edgeGet(t, addr, "shop.example.com", target); got.status != 200 {
			t.Fatalf("%s: got %d, want 200", target, got.status)
		}
	}
	if got := edgeGet(t, addr, "nowhere.example.net", "/m"); got.status != 404 {
		t.Fatalf("unrouted: got %d, want 404", got.status)
	}
	want := map[string]float64{
		"code_class=2xx,listener=web,route=shop": 2,
		"code_class=4xx,listener=web,route=":     1,
	}
	if diff := cmp.Diff(want, series(t, reg, "bulwark_gateway_requests_total")); diff != "" {
		t.Errorf("bulwark_gateway_requests_total (-want +got):\n%s", diff)
	}
	// A route that leaves the Gateway takes its series along.
	gone := strings.Replace(edgeGateway, "  - name: shop\n    hosts: [shop.example.com]", "  - name: shop2\n    hosts: [shop.example.com]", 1)
	gw.apply(t, f.gwSnapshot(t, gatewayDoc(t, gone), "", ""))
	want = map[string]float64{"code_class=4xx,listener=web,route=": 1}
	if diff := cmp.Diff(want, series(t, reg, "bulwark_gateway_requests_total")); diff != "" {
		t.Errorf("after the route left (-want +got):\n%s", diff)
	}
}

// TestEdgeWebSocket tunnels a WebSocket from a client outside to the
// service's app.
func TestEdgeWebSocket(t *testing.T) {
	appAddr, ended := wsApp(t)
	f := newEdgeFixtureApp(t, appAddr)
	cfg, err := websocket.NewConfig("ws://shop.example.com/public/echo", "http://shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", f.web, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	ws, err := websocket.NewClient(cfg, c)
	if err != nil {
		t.Fatalf("websocket through the gateway: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "bye"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if want := "echo: " + msg + " (xfcc By=" + f.api.id().String() + ";URI=" + f.gw.id().String() + ")"; got != want {
			t.Fatalf("echo: got %q, want %q", got, want)
		}
	}
	select {
	case <-ended:
	case <-time.After(hangGuard):
		t.Fatal("the app's session did not end")
	}
	ws.Close()
	f.gw.log.waitFor(t, "the upgrade", func(m map[string]any) bool {
		return m["gateway_route"] == "shop" && m["status"] == float64(101)
	})
}

// TestEdgeDumpHidesSecrets checks that Gateway hands the TLS secrets to
// the composition root and that /config_dump names them only.
func TestEdgeDumpHidesSecrets(t *testing.T) {
	f := newEdgeFixture(t)
	snap := f.gwSnapshot(t, gatewayDoc(t, edgeGateway), "", "")
	snap.Gateway.Secrets = []*apiv1.TLSSecret{{Name: "shop-tls", CertPem: []byte("CERT-PEM"), KeyPem: []byte("KEY-PEM-SECRET")}}
	f.gw.apply(t, snap)
	gw, secrets, version := f.gw.engine.Gateway()
	if gw == nil || gw.Metadata.Name != "edge" || version != snap.Version {
		t.Fatalf("Gateway(): got %v, version %d; want gw/edge, version %d", gw, version, snap.Version)
	}
	if s := secrets["shop-tls"]; s == nil || string(s.GetKeyPem()) != "KEY-PEM-SECRET" {
		t.Errorf("Gateway() secrets: got %v, want shop-tls with its key", secrets)
	}
	b, err := json.Marshal(f.gw.engine.Dump())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "KEY-PEM-SECRET") || strings.Contains(string(b), "CERT-PEM") {
		t.Errorf("the dump holds secret material: %s", b)
	}
	if !strings.Contains(string(b), `"secrets":["shop-tls"]`) || !strings.Contains(string(b), `"name":"edge"`) {
		t.Errorf("the dump lacks the gateway: %s", b)
	}
	// A secret without a name is refused with the snapshot.
	bad := f.gwSnapshot(t, gatewayDoc(t, edgeGateway), "", "")
	bad.Gateway.Secrets = []*apiv1.TLSSecret{{CertPem: []byte("x")}}
	if err := f.gw.engine.Apply(bad); err == nil || !strings.Contains(err.Error(), "gateway: secrets[0].name: required") {
		t.Errorf("Apply(secret without a name): got %v", err)
	}
}
