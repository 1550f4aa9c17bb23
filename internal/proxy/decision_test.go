package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// watchedNode is a node whose engine registers its metrics on reg and
// hands its denials to the test.
type watchedNode struct {
	*node
	reg *prometheus.Registry

	mu      sync.Mutex
	denials []proxy.Denial
}

func newWatchedNode(t testing.TB, a *authority, svc identity.ServiceRef, appAddr string) *watchedNode {
	t.Helper()
	w := &watchedNode{reg: prometheus.NewRegistry()}
	n := &node{svc: svc, src: a.svid(t, workloadID(t, svc.Namespace, svc.Name)), log: newLogBuffer(), plog: newLogBuffer()}
	e, err := proxy.New(proxy.Config{
		Service: svc, App: appAddr, SVID: n.src, Bundle: n.src,
		Logger:    slog.New(slog.NewJSONHandler(n.plog, &slog.HandlerOptions{Level: slog.LevelInfo})),
		AccessLog: slog.New(slog.NewJSONHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:   w.reg,
		OnDeny: func(d proxy.Denial) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.denials = append(w.denials, d)
		},
	})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(e.Close)
	n.engine = e
	w.node = n
	return w
}

func (w *watchedNode) takeDenials() []proxy.Denial {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.denials
	w.denials = nil
	return d
}

// counter returns the value of the counter name with labels on reg (0 when
// absent).
func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// The request model fixture: default/api allows shop/web on port 8080 of
// host api.default under /port/, and anywhere under /public/ except
// /public/local from a loopback address. shop/web's view allows both
// prefixes, so the callee decides on host, port and address.
const (
	apiPortsPolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-ports, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
    to: {hosts: [api.default], ports: [8080], paths: ["/port/*"]}
  - from: {services: [shop/web]}
    to: {paths: ["/public/*"]}
`
	apiDenyLoopback = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-loopback, namespace: default}
spec:
  selector: {service: api}
  action: DENY
  rules:
  - from: {ipBlocks: ["127.0.0.0/8"]}
    to: {paths: ["/public/local"]}
`
	apiPortsView = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-ports, namespace: default}
spec:
  selector: {service: api}
  rules:
  - to: {paths: ["/port/*", "/public/*"]}
`
)

// requestModelMesh is shop/web calling default/api with the request model
// fixture, both engines watched.
type requestModelMesh struct {
	auth     *authority
	api, web *watchedNode
	apiApp   *app
	apiAddr  string
	outbound string
}

func newRequestModelMesh(t *testing.T, apiPolicies ...string) *requestModelMesh {
	t.Helper()
	a := newAuthority(t)
	m := &requestModelMesh{auth: a, apiApp: newApp(t, "default/api")}
	m.api = newWatchedNode(t, a, apiSvc, m.apiApp.addr())
	m.apiAddr = m.api.serveInbound(t)
	var docs [][]byte
	for _, p := range apiPolicies {
		docs = append(docs, policyDoc(t, p))
	}
	m.api.apply(t, &apiv1.Snapshot{
		Version: 1, TrustBundle: a.rootDER(), Services: []string{"default/api", "shop/web"},
		Inbound: &apiv1.Inbound{Policies: docs, Peers: []*apiv1.PeerIdentity{
			{SpiffeId: workloadID(t, "shop", "web").String(), Services: []string{"shop/web"}},
		}},
	})
	m.web = newWatchedNode(t, a, webSvc, "")
	m.web.apply(t, &apiv1.Snapshot{
		Version: 1, TrustBundle: a.rootDER(), Inbound: &apiv1.Inbound{}, Services: []string{"default/api", "shop/web"},
		Destinations: []*apiv1.Destination{{
			Service: "default/api", Policies: [][]byte{policyDoc(t, apiPortsView)},
			Endpoints: []*apiv1.Endpoint{{Address: m.apiAddr, SpiffeId: m.api.id().String()}},
		}},
	})
	m.outbound = servePlain(t, m.web.engine.Outbound())
	return m
}

// TestRequestModel: the callee decides on the host and port the app
// addressed (forwarded by the caller's proxy), in lower case without a
// trailing dot, and on the caller's address; the caller's view decides on
// what it knows.
func TestRequestModel(t *testing.T) {
	m := newRequestModelMesh(t, apiPortsPolicy, apiDenyLoopback)
	webID := m.web.id().String()
	tests := []struct {
		name     string
		req      string
		wantCode int
	}{
		{name: "port_named", req: "GET /port/a HTTP/1.1\r\nHost: api.default:8080", wantCode: 200},
		{name: "default_port_not_allowed", req: "GET /port/a HTTP/1.1\r\nHost: api.default", wantCode: 403},
		{name: "upper_case_trailing_dot", req: "GET /port/b HTTP/1.1\r\nHost: API.Default.:8080", wantCode: 200},
		{name: "absolute_form_port", req: "GET http://api.default:8080/port/c HTTP/1.1\r\nHost: api.default:8080", wantCode: 200},
		{name: "short_form_port", req: "GET /port/d HTTP/1.1\r\nHost: api.default.svc.cluster.local:8080", wantCode: 200},
		{name: "caller_address_denied", req: "GET /public/local HTTP/1.1\r\nHost: api.default", wantCode: 403},
		{name: "public", req: "GET /public/ok HTTP/1.1\r\nHost: api.default", wantCode: 200},
		{name: "caller_view_denies", req: "GET /nope HTTP/1.1\r\nHost: api.default", wantCode: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := plainRaw(t, m.outbound, tt.req+"\r\nConnection: close\r\n\r\n")
			if got.status != tt.wantCode {
				t.Errorf("got %d %q, want %d", got.status, got.body, tt.wantCode)
			}
		})
	}
	for _, r := range m.apiApp.requests() {
		if r.Host != "api.default" {
			t.Errorf("app got Host %q for %s, want api.default (the port is the proxies' business)", r.Host, r.RequestURI)
		}
	}

	t.Run("denials", func(t *testing.T) {
		wantAPI := []proxy.Denial{
			{Direction: "inbound", Source: webID, Destination: "default/api", Method: "GET", Path: "/port/a",
				Rule: -1, Reason: "no ALLOW rule matched", Status: 403},
			{Direction: "inbound", Source: webID, Destination: "default/api", Method: "GET", Path: "/public/local",
				Policy: "default/deny-loopback", Rule: 0, Reason: "denied by policy", Status: 403},
		}
		if diff := cmp.Diff(wantAPI, m.api.takeDenials()); diff != "" {
			t.Errorf("callee's denials (-want +got):\n%s", diff)
		}
		wantWeb := []proxy.Denial{{Direction: "outbound", Source: webID, Destination: "default/api", Method: "GET", Path: "/nope",
			Rule: -1, Reason: "no ALLOW rule matched", Status: 403}}
		if diff := cmp.Diff(wantWeb, m.web.takeDenials()); diff != "" {
			t.Errorf("caller's denials (-want +got):\n%s", diff)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		tests := []struct {
			name   string
			reg    *prometheus.Registry
			metric string
			labels map[string]string
			want   float64
		}{
			{"inbound_allowed", m.api.reg, "bulwark_authz_decisions_total", map[string]string{"direction": "inbound", "decision": "allow", "reason": "allowed"}, 5},
			{"inbound_deny_rule", m.api.reg, "bulwark_authz_decisions_total", map[string]string{"direction": "inbound", "decision": "deny", "reason": "deny_rule"}, 1},
			{"inbound_no_allow_match", m.api.reg, "bulwark_authz_decisions_total", map[string]string{"direction": "inbound", "decision": "deny", "reason": "no_allow_match"}, 1},
			{"inbound_unauthenticated_exists_at_zero", m.api.reg, "bulwark_authz_decisions_total", map[string]string{"direction": "inbound", "decision": "deny", "reason": "unauthenticated"}, 0},
			{"inbound_2xx", m.api.reg, "bulwark_requests_total", map[string]string{"direction": "inbound", "code_class": "2xx"}, 5},
			{"inbound_4xx", m.api.reg, "bulwark_requests_total", map[string]string{"direction": "inbound", "code_class": "4xx"}, 2},
			{"outbound_allowed", m.web.reg, "bulwark_authz_decisions_total", map[string]string{"direction": "outbound", "decision": "allow", "reason": "allowed"}, 7},
			{"outbound_no_allow_match", m.web.reg, "bulwark_authz_decisions_total", map[string]string{"direction": "outbound", "decision": "deny", "reason": "no_allow_match"}, 1},
			{"outbound_4xx", m.web.reg, "bulwark_requests_total", map[string]string{"direction": "outbound", "code_class": "4xx"}, 3},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := counter(t, tt.reg, tt.metric, tt.labels); got != tt.want {
					t.Errorf("%s%v: got %v, want %v", tt.metric, tt.labels, got, tt.want)
				}
			})
		}
		// Every series exists from the start.
		mfs, err := m.api.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "bulwark_authz_decisions_total" && len(mf.GetMetric()) != 18 {
				t.Errorf("bulwark_authz_decisions_total: got %d series, want 18 (2 directions x 9 reasons)", len(mf.GetMetric()))
			}
		}
	})
}

// TestRequestModelInboundAuthority: a SPIFFE-aware client calling the
// inbound listener directly (over HTTP/2) is decided on its :authority the
// same way as on Host; one with a bad port is a bad request.
func TestRequestModelInboundAuthority(t *testing.T) {
	m := newRequestModelMesh(t, apiPortsPolicy)
	for _, tt := range []struct {
		host     string
		wantCode int
	}{
		{"api.default:8080", 200},
		{"API.DEFAULT.:8080", 200},
		{"api.default", 403},
		{"other.default:8080", 403},
		{"api.default:99999", 400},
		{"api.default:0", 400},
	} {
		t.Run(strings.NewReplacer(":", "_", ".", "_").Replace(tt.host), func(t *testing.T) {
			got := mtlsH2(t, m.apiAddr, m.web.src, m.api.id(), rawH2{fields: [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", tt.host}, {":path", "/port/x"}}})
			if got.status != tt.wantCode {
				t.Errorf("got %d %q, want %d", got.status, got.body, tt.wantCode)
			}
		})
	}
}

// TestDecisionVisibility: an AUDIT policy that matched and a dry-run policy
// that would change the decision are in the access log line and counted.
func TestDecisionVisibility(t *testing.T) {
	const (
		audit = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: audit-public, namespace: default}
spec:
  selector: {service: api}
  action: AUDIT
  rules:
  - to: {paths: ["/public/*"]}
`
		dryDeny = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: dry-deny, namespace: default}
spec:
  selector: {service: api}
  action: DENY
  dryRun: true
  rules:
  - to: {paths: ["/public/other"]}
  - to: {paths: ["/public/dry"]}
`
	)
	m := newRequestModelMesh(t, apiPortsPolicy, audit, dryDeny)
	if got := get(t, m.outbound, "api.default", "/public/dry?secret=1"); got.status != http.StatusOK {
		t.Fatalf("got %d %q, want 200 (a dry-run DENY does not deny)", got.status, got.body)
	}
	line := m.api.log.waitFor(t, "the access log line of /public/dry", func(l map[string]any) bool { return l["path"] == "/public/dry" })
	for k, want := range map[string]any{"audit": true, "audit_policy": "default/audit-public", "dry_run": "would deny by default/dry-deny#rule1", "status": 200.0} {
		if line[k] != want {
			t.Errorf("access log %s: got %v, want %v", k, line[k], want)
		}
	}
	if got := get(t, m.outbound, "api.default", "/public/plain"); got.status != http.StatusOK {
		t.Fatalf("got %d, want 200", got.status)
	}
	line = m.api.log.waitFor(t, "the access log line of /public/plain", func(l map[string]any) bool { return l["path"] == "/public/plain" })
	if _, ok := line["dry_run"]; ok {
		t.Errorf("access log of a request no dry-run policy changes: got dry_run %v, want none", line["dry_run"])
	}
	for name, want := range map[string]float64{"bulwark_authz_audited_total": 2, "bulwark_authz_dry_run_differs_total": 1} {
		if got := counter(t, m.api.reg, name, map[string]string{"direction": "inbound"}); got != want {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
}

// TestDenialsCarryNoQueryOrHeaders: neither the process log lines of
// denials nor the reported denials hold the query or a header value.
func TestDenialsCarryNoQueryOrHeaders(t *testing.T) {
	m := newRequestModelMesh(t, apiPortsPolicy, apiDenyLoopback)
	const secret = "hunter2-s3cr3t"
	got := plainRaw(t, m.outbound, "GET /public/local?token="+secret+" HTTP/1.1\r\nHost: api.default\r\nX-Api-Key: "+secret+
		"\r\nCookie: session="+secret+"\r\nConnection: close\r\n\r\n")
	if got.status != http.StatusForbidden {
		t.Fatalf("got %d, want 403", got.status)
	}
	line := m.api.plog.waitFor(t, "the process log line of the denial", func(l map[string]any) bool { return l["msg"] == "request denied" })
	if line["path"] != "/public/local" || line["policy"] != "default/deny-loopback#rule0" || line["level"] != "WARN" {
		t.Errorf("process log line: got %v, want path /public/local, policy default/deny-loopback#rule0 at WARN", line)
	}
	for name, logs := range map[string]string{"callee process log": m.api.plog.String(), "callee access log": m.api.log.String()} {
		if strings.Contains(logs, secret) {
			t.Errorf("%s holds the secret:\n%s", name, logs)
		}
	}
	for _, d := range m.api.takeDenials() {
		if strings.Contains(strings.Join([]string{d.Path, d.Reason, d.Method, d.Source}, " "), secret) {
			t.Errorf("reported denial holds the secret: %+v", d)
		}
	}
}

// requiredJWT is a JWTProvider that requires a token of its issuer on
// default/api.
const requiredJWT = `
apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: default}
spec:
  selector: {service: api}
  issuer: https://idp.example.com
  jwks: '%s'
  required: true
`

// jwksOf returns a JWKS document holding the public key of k.
func jwksOf(t testing.TB, k *ecdsa.PrivateKey) string {
	t.Helper()
	pub, err := k.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	return `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig","x":"` + b64(pub[1:33]) + `","y":"` + b64(pub[33:]) + `"}]}`
}

// TestUnauthenticatedIsADenial: a 401 of the JWT providers is a denial
// like a 403: reported, counted with reason unauthenticated, logged.
func TestUnauthenticatedIsADenial(t *testing.T) {
	m := newRequestModelMesh(t, apiPortsPolicy)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := config.Decode([]byte(fmt.Sprintf(requiredJWT, jwksOf(t, key))))
	if err != nil {
		t.Fatalf("decode JWTProvider: %v", err)
	}
	provider, err := config.Marshal(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	snap := apiSnapshot(t, m.auth, 2)
	snap.Inbound.Policies = [][]byte{policyDoc(t, apiPortsPolicy)}
	snap.JwtProviders = []*apiv1.JWTProvider{{Resource: provider, Jwks: []byte(jwksOf(t, key))}}
	m.api.apply(t, snap)

	got := get(t, m.outbound, "api.default", "/public/x")
	if got.status != http.StatusUnauthorized || got.header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("without a token: got %d %q (WWW-Authenticate %q), want 401 with Bearer", got.status, got.body, got.header.Get("WWW-Authenticate"))
	}
	got = plainRaw(t, m.outbound, "GET /public/y HTTP/1.1\r\nHost: api.default\r\nAuthorization: Bearer not-a-jwt\r\nConnection: close\r\n\r\n")
	if got.status != http.StatusUnauthorized {
		t.Fatalf("with a garbage token: got %d %q, want 401", got.status, got.body)
	}
	denials := m.api.takeDenials()
	if len(denials) != 2 {
		t.Fatalf("got denials %+v, want 2", denials)
	}
	for _, d := range denials {
		if d.Status != http.StatusUnauthorized || d.Direction != "inbound" || d.Policy != "" || d.Rule != -1 ||
			!strings.HasPrefix(d.Reason, "unauthenticated: ") || strings.Contains(d.Reason, "not-a-jwt") {
			t.Errorf("got %+v, want an inbound 401 with an unauthenticated reason that does not quote the token", d)
		}
	}
	if got := counter(t, m.api.reg, "bulwark_authz_decisions_total", map[string]string{"direction": "inbound", "decision": "deny", "reason": "unauthenticated"}); got != 2 {
		t.Errorf("unauthenticated decisions: got %v, want 2", got)
	}
	line := m.api.plog.waitFor(t, "the process log line of the 401", func(l map[string]any) bool {
		return l["msg"] == "request denied" && l["status"] == 401.0
	})
	if line["level"] != "INFO" {
		t.Errorf("401 logged at %v, want INFO", line["level"])
	}
}
