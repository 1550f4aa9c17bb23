package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// The egress fixtures live in namespace ext: ExternalServices and the
// policies that select them by name. shop/web (the caller) may GET and
// CONNECT; a DENY rule forbids /forbidden.
const egressAllowWeb = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %[1]s-allow-web, namespace: ext}
spec:
  selector: {service: %[1]s}
  rules:
  - from: {services: [shop/web]}
    to: {methods: [GET, CONNECT]}
`

const egressDenyForbidden = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %[1]s-deny, namespace: ext}
spec:
  selector: {service: %[1]s}
  action: DENY
  rules:
  - to: {paths: [/forbidden]}
`

// egressAllowOther lets only shop/other reach an ExternalService.
const egressAllowOther = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %[1]s-allow-other, namespace: ext}
spec:
  selector: {service: %[1]s}
  rules:
  - from: {services: [shop/other]}
`

// externalDest is the Destination of ExternalService ext/name with spec
// specYAML (indented by two spaces), selected by the given policy
// templates (%[1]s is the name), as the control plane sends it.
func externalDest(t testing.TB, name, specYAML string, policies ...string) *apiv1.Destination {
	t.Helper()
	d := &apiv1.Destination{
		Service: "ext/" + name,
		External: policyDoc(t, fmt.Sprintf(`
apiVersion: bulwark.dev/v1alpha1
kind: ExternalService
metadata: {name: %s, namespace: ext}
spec:
%s`, name, specYAML)),
	}
	for _, p := range policies {
		d.Policies = append(d.Policies, policyDoc(t, fmt.Sprintf(p, name)))
	}
	return d
}

// egressSnapshot is shop/web's snapshot: the mesh services of the other
// fixtures (shop/api callable without endpoints), plus dests.
func egressSnapshot(t testing.TB, a *authority, version int64, dests ...*apiv1.Destination) *apiv1.Snapshot {
	t.Helper()
	snap := &apiv1.Snapshot{
		Version:     version,
		TrustBundle: a.rootDER(),
		Inbound:     &apiv1.Inbound{},
		Services:    []string{"default/api", "default/secret", "shop/api", "shop/web"},
		Destinations: []*apiv1.Destination{
			{Service: "shop/api", Policies: [][]byte{policyDoc(t, shopAPIView)}},
		},
	}
	for _, d := range dests {
		snap.Services = append(snap.Services, d.GetService())
		snap.Destinations = append(snap.Destinations, d)
	}
	return snap
}

// externalApp is a plain HTTP server outside the mesh that records what it
// receives.
type externalApp struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []seenRequest
	tls []bool
}

func (x *externalApp) handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x.mu.Lock()
		x.got = append(x.got, seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone()})
		x.tls = append(x.tls, r.TLS != nil)
		x.mu.Unlock()
		fmt.Fprintf(w, "%s: %s %s %s\n", name, r.Method, r.Host, r.RequestURI)
	})
}

func newExternalApp(t testing.TB, name string) *externalApp {
	t.Helper()
	x := &externalApp{}
	x.srv = httptest.NewServer(x.handler(name))
	t.Cleanup(x.srv.Close)
	return x
}

func newExternalTLSApp(t testing.TB, name string) *externalApp {
	t.Helper()
	x := &externalApp{}
	x.srv = httptest.NewUnstartedServer(x.handler(name))
	x.srv.EnableHTTP2 = true
	// Failed handshakes are what some tests expect.
	x.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	x.srv.StartTLS()
	t.Cleanup(x.srv.Close)
	return x
}

func (x *externalApp) addr() string { return x.srv.Listener.Addr().String() }

func (x *externalApp) port() int {
	return x.srv.Listener.Addr().(*net.TCPAddr).Port
}

func (x *externalApp) requests() []seenRequest {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]seenRequest(nil), x.got...)
}

// caPEM is the PEM of the test server's certificate (self-signed by
// httptest; its names are example.com, 127.0.0.1 and ::1).
func (x *externalApp) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.srv.Certificate().Raw}))
}

// indentPEM indents a PEM block for a YAML literal under a key at depth 4.
func indentPEM(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n      ")
}

// TestEgressHTTP: the outbound reaches only hosts that an ExternalService
// the caller may reach declares, on a declared http port, for requests its
// policies allow; the rest is denied (403) or, for a typo of a mesh
// service, 503.
func TestEgressHTTP(t *testing.T) {
	a := newAuthority(t)
	up := newExternalApp(t, "example")
	web := newWatchedNode(t, a, webSvc, "")
	web.apply(t, egressSnapshot(t, a, 1,
		externalDest(t, "example", fmt.Sprintf(`
  hosts: [api.example.test, shared.example.test, "*.wild.test"]
  ports: [{port: 80, protocol: http}, {port: 8443, protocol: tls}]
  addresses: ["%s"]`, up.addr()), egressAllowWeb, egressDenyForbidden),
		// Tried first (by name) for shared.example.test, and denies.
		externalDest(t, "aaa-shared", fmt.Sprintf(`
  hosts: [shared.example.test]
  ports: [{port: 80, protocol: http}]
  addresses: ["%s"]`, up.addr()), egressAllowOther),
		externalDest(t, "locked", fmt.Sprintf(`
  hosts: [locked.example.test]
  ports: [{port: 80, protocol: http}]
  addresses: ["%s"]`, up.addr()), egressAllowOther),
		externalDest(t, "nopolicy", fmt.Sprintf(`
  hosts: [nopolicy.example.test]
  ports: [{port: 80, protocol: http}]
  addresses: ["%s"]`, up.addr())),
	))
	outbound := servePlain(t, web.engine.Outbound())
	webID := web.id().String()

	tests := []struct {
		name     string
		req      string // request line and headers, without the final CRLF
		wantCode int
		wantBody string
		// wantHost is the Host the external server received; "" when it
		// must receive nothing.
		wantHost   string
		wantDenial *proxy.Denial
		wantReason string
	}{
		{
			name:     "absolute_form",
			req:      "GET http://api.example.test/hello?q=1 HTTP/1.1\r\nHost: api.example.test",
			wantCode: 200, wantBody: "example: GET api.example.test /hello?q=1\n", wantHost: "api.example.test",
		},
		{
			name:     "origin_form_case_and_trailing_dot",
			req:      "GET /a//b/../c HTTP/1.1\r\nHost: API.Example.Test.",
			wantCode: 200, wantBody: "example: GET api.example.test /a/c\n", wantHost: "api.example.test",
		},
		{
			name:     "explicit_default_port",
			req:      "GET http://api.example.test:80/p HTTP/1.1\r\nHost: api.example.test:80",
			wantCode: 200, wantBody: "example: GET api.example.test /p\n", wantHost: "api.example.test",
		},
		{
			name:     "declared_twice_first_allowing_carries",
			req:      "GET /s HTTP/1.1\r\nHost: shared.example.test",
			wantCode: 200, wantBody: "example: GET shared.example.test /s\n", wantHost: "shared.example.test",
		},
		{
			name:     "wildcard_one_label",
			req:      "GET /w HTTP/1.1\r\nHost: a.wild.test",
			wantCode: 200, wantBody: "example: GET a.wild.test /w\n", wantHost: "a.wild.test",
		},
		{
			name:     "wildcard_two_labels",
			req:      "GET /w HTTP/1.1\r\nHost: a.b.wild.test",
			wantCode: 200, wantBody: "example: GET a.b.wild.test /w\n", wantHost: "a.b.wild.test",
		},
		{
			name:     "wildcard_does_not_match_its_apex",
			req:      "GET /w HTTP/1.1\r\nHost: wild.test",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "wild.test", Method: "GET", Path: "/w", Reason: "egress to an undeclared host"},
			wantReason: "undeclared_host",
		},
		{
			name:     "wildcard_suffix_without_dot",
			req:      "GET /w HTTP/1.1\r\nHost: evilwild.test",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "evilwild.test", Method: "GET", Path: "/w", Reason: "egress to an undeclared host"},
			wantReason: "undeclared_host",
		},
		{
			name:     "undeclared_host",
			req:      "GET http://exfil.example.org/upload HTTP/1.1\r\nHost: exfil.example.org",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "exfil.example.org", Method: "GET", Path: "/upload", Reason: "egress to an undeclared host"},
			wantReason: "undeclared_host",
		},
		{
			name:     "undeclared_port",
			req:      "GET /p HTTP/1.1\r\nHost: api.example.test:8080",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "api.example.test", Method: "GET", Path: "/p", Reason: "egress to an undeclared host"},
			wantReason: "undeclared_host",
		},
		{
			name:     "tls_port_needs_connect",
			req:      "GET /p HTTP/1.1\r\nHost: api.example.test:8443",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "api.example.test", Method: "GET", Path: "/p", Reason: "egress port is declared for tls or tcp: use CONNECT"},
			wantReason: "undeclared_host",
		},
		{
			name:     "ip_literal",
			req:      "GET /p HTTP/1.1\r\nHost: " + up.addr(),
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "127.0.0.1", Method: "GET", Path: "/p", Reason: "egress to an undeclared host"},
			wantReason: "undeclared_host",
		},
		{
			name:     "bare_name_not_a_service",
			req:      "GET /p HTTP/1.1\r\nHost: metadata",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "metadata", Method: "GET", Path: "/p", Reason: "egress to an undeclared host"},
			wantReason: "undeclared_host",
		},
		{
			name:     "name_namespace_typo_is_503",
			req:      "GET /p HTTP/1.1\r\nHost: nope.default",
			wantCode: 503, wantBody: "no such service\n",
		},
		{
			name:     "name_of_namespace_without_services_is_egress",
			req:      "GET /p HTTP/1.1\r\nHost: example.com",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "example.com", Method: "GET", Path: "/p", Reason: "egress to an undeclared host"},
			wantReason: "undeclared_host",
		},
		{
			name:     "external_service_name_is_not_a_host",
			req:      "GET /p HTTP/1.1\r\nHost: example.ext",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "example.ext", Method: "GET", Path: "/p", Reason: "egress to an undeclared host"},
			wantReason: "undeclared_host",
		},
		{
			name:     "mesh_service_still_forwarded",
			req:      "GET /p HTTP/1.1\r\nHost: api.shop",
			wantCode: 503, wantBody: "no healthy upstream\n",
		},
		{
			name:     "method_not_allowed_by_policy",
			req:      "POST /p HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 0",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "ext/example", Method: "POST", Path: "/p", Reason: "no ALLOW rule matched"},
			wantReason: "no_allow_match",
		},
		{
			name:     "deny_rule",
			req:      "GET /forbidden HTTP/1.1\r\nHost: api.example.test",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "ext/example", Method: "GET", Path: "/forbidden", Policy: "ext/example-deny", Rule: 0, Reason: "denied by policy"},
			wantReason: "deny_rule",
		},
		{
			name:     "caller_not_allowed",
			req:      "GET /p HTTP/1.1\r\nHost: locked.example.test",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "ext/locked", Method: "GET", Path: "/p", Reason: "no ALLOW rule matched"},
			wantReason: "no_allow_match",
		},
		{
			name:     "no_policy_fails_closed",
			req:      "GET /p HTTP/1.1\r\nHost: nopolicy.example.test",
			wantCode: 403, wantBody: "forbidden\n",
			wantDenial: &proxy.Denial{Destination: "ext/nopolicy", Method: "GET", Path: "/p", Reason: "no ALLOW policy selects the service"},
			wantReason: "no_allow_policy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.requests())
			labels := map[string]string{"direction": "outbound", "decision": "deny", "reason": tt.wantReason}
			countBefore := counter(t, web.reg, "bulwark_authz_decisions_total", labels)
			got := plainRaw(t, outbound, tt.req+"\r\nConnection: close\r\n\r\n")
			if got.status != tt.wantCode || got.body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", got.status, got.body, tt.wantCode, tt.wantBody)
			}
			reqs := up.requests()[before:]
			switch {
			case tt.wantHost == "" && len(reqs) != 0:
				t.Errorf("the external server received %d request(s), want none", len(reqs))
			case tt.wantHost != "" && (len(reqs) != 1 || reqs[0].Host != tt.wantHost):
				t.Errorf("the external server received %+v, want one request with Host %q", reqs, tt.wantHost)
			}
			denials := web.takeDenials()
			if tt.wantDenial == nil {
				if len(denials) != 0 {
					t.Errorf("got denials %+v, want none", denials)
				}
				return
			}
			want := *tt.wantDenial
			want.Direction, want.Source, want.Status = "outbound", webID, 403
			if want.Policy == "" {
				want.Rule = -1
			}
			if diff := cmp.Diff([]proxy.Denial{want}, denials); diff != "" {
				t.Errorf("denials (-want +got):\n%s", diff)
			}
			if got := counter(t, web.reg, "bulwark_authz_decisions_total", labels) - countBefore; got != 1 {
				t.Errorf("bulwark_authz_decisions_total%v grew by %v, want 1", labels, got)
			}
		})
	}

	// The undeclared host is in the access log and in the rate-limited
	// denial log.
	web.log.waitFor(t, "access log of the undeclared host", func(l map[string]any) bool {
		return l["destination"] == "exfil.example.org" && l["status"] == float64(403) && l["reason"] == "egress to an undeclared host"
	})
	web.plog.waitFor(t, "denial log of the undeclared host", func(l map[string]any) bool {
		return l["msg"] == "request denied" && l["destination"] == "exfil.example.org"
	})
	web.log.waitFor(t, "access log of an allowed egress request", func(l map[string]any) bool {
		return l["destination"] == "ext/example" && l["status"] == float64(200) && l["upstream"] == "api.example.test:80"
	})
}

// TestEgressStripsIdentityHeaders: what the app sends to an external host
// carries no identity or proxy headers, and a request's query goes as sent.
func TestEgressStripsIdentityHeaders(t *testing.T) {
	a := newAuthority(t)
	up := newExternalApp(t, "example")
	web := newWatchedNode(t, a, webSvc, "")
	web.apply(t, egressSnapshot(t, a, 1, externalDest(t, "example", fmt.Sprintf(`
  hosts: [api.example.test]
  ports: [{port: 80, protocol: http}]
  addresses: ["%s"]`, up.addr()), egressAllowWeb)))
	outbound := servePlain(t, web.engine.Outbound())
	got := plainRaw(t, outbound, "GET http://api.example.test/q?a=%2F&b HTTP/1.1\r\nHost: api.example.test\r\n"+
		"X-Forwarded-Client-Cert: By=spiffe://evil\r\nX-Bulwark-Source: evil\r\nX-Forwarded-For: 6.6.6.6\r\n"+
		"Forwarded: for=6.6.6.6\r\nProxy-Authorization: Basic c2VjcmV0\r\nConnection: close, X-Keep\r\nX-Keep: 1\r\nX-App: yes\r\n\r\n")
	if got.status != 200 {
		t.Fatalf("got %d %q, want 200", got.status, got.body)
	}
	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	if reqs[0].RequestURI != "/q?a=%2F&b" {
		t.Errorf("got request-target %q, want /q?a=%%2F&b", reqs[0].RequestURI)
	}
	for _, h := range []string{"X-Forwarded-Client-Cert", "X-Bulwark-Source", "X-Forwarded-For", "Forwarded", "Proxy-Authorization", "X-Keep"} {
		if v, ok := reqs[0].Header[h]; ok {
			t.Errorf("the external server received %s: %q, want it removed", h, v)
		}
	}
	if got := reqs[0].Header.Get("X-App"); got != "yes" {
		t.Errorf("got X-App %q, want yes", got)
	}
}

// TestEgressTLSOrigination: with spec.tls the app sends plain HTTP and the
// sidecar connects with TLS, verifying the server with caCertificates and
// serverName (default: the host).
func TestEgressTLSOrigination(t *testing.T) {
	a := newAuthority(t)
	up := newExternalTLSApp(t, "secure")
	// The mesh's own CA did not sign the server's certificate.
	var meshCA strings.Builder
	for _, der := range a.rootDER() {
		_ = pem.Encode(&meshCA, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	web := newWatchedNode(t, a, webSvc, "")
	spec := func(host, ca, serverName string) string {
		s := fmt.Sprintf(`
  hosts: [%s]
  ports: [{port: 443, protocol: http}, {port: 8443, protocol: http}]
  addresses: ["%s"]
  tls:
    caCertificates: |
%s`, host, up.addr(), indentPEM(ca))
		if serverName != "" {
			s += "\n    serverName: " + serverName
		}
		return s
	}
	web.apply(t, egressSnapshot(t, a, 1,
		externalDest(t, "named", spec("secure.example.test", up.caPEM(), "example.com"), egressAllowWeb),
		externalDest(t, "default-name", spec("example.com", up.caPEM(), ""), egressAllowWeb),
		externalDest(t, "wrong-name", spec("wrong.example.test", up.caPEM(), ""), egressAllowWeb),
		externalDest(t, "wrong-ca", spec("untrusted.example.test", meshCA.String(), "example.com"), egressAllowWeb),
	))
	outbound := servePlain(t, web.engine.Outbound())
	tests := []struct {
		name      string
		authority string
		wantCode  int
		wantHost  string
	}{
		{name: "server_name_set", authority: "secure.example.test:443", wantCode: 200, wantHost: "secure.example.test"},
		{name: "server_name_is_host", authority: "example.com:443", wantCode: 200, wantHost: "example.com"},
		{name: "other_port_in_host", authority: "example.com:8443", wantCode: 200, wantHost: "example.com:8443"},
		{name: "name_not_in_certificate", authority: "wrong.example.test:443", wantCode: 502},
		{name: "untrusted_certificate", authority: "untrusted.example.test:443", wantCode: 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.requests())
			got := plainRaw(t, outbound, "GET http://"+tt.authority+"/s HTTP/1.1\r\nHost: "+tt.authority+"\r\nConnection: close\r\n\r\n")
			if got.status != tt.wantCode {
				t.Fatalf("got %d %q, want %d", got.status, got.body, tt.wantCode)
			}
			reqs := up.requests()[before:]
			if tt.wantHost == "" {
				if len(reqs) != 0 {
					t.Errorf("the server received %+v, want nothing (the handshake must fail)", reqs)
				}
				return
			}
			if len(reqs) != 1 || reqs[0].Host != tt.wantHost {
				t.Fatalf("the server received %+v, want one request with Host %q", reqs, tt.wantHost)
			}
			up.mu.Lock()
			overTLS := up.tls[len(up.tls)-1]
			up.mu.Unlock()
			if !overTLS {
				t.Errorf("the request reached the server without TLS")
			}
		})
	}
	web.log.waitFor(t, "access log of a failed verification", func(l map[string]any) bool {
		err, _ := l["err"].(string)
		return l["destination"] == "ext/wrong-ca" && l["status"] == float64(502) && strings.Contains(err, "certificate")
	})
}

// connectThrough opens a CONNECT tunnel to authority through the outbound
// at proxyAddr and returns the connection, or the status of the refusal.
func connectThrough(t testing.TB, proxyAddr, authority string) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("read CONNECT response: %v", err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		conn.Close()
		return nil, nil, resp.StatusCode
	}
	return conn, br, 200
}

// TestEgressConnect: CONNECT reaches declared tls and tcp ports (the app
// speaks TLS through the tunnel, or anything; half-close is passed on);
// undeclared hosts and http ports are refused.
func TestEgressConnect(t *testing.T) {
	a := newAuthority(t)
	up := newExternalTLSApp(t, "tunneled")
	echo := newReverseEchoServer(t)
	web := newWatchedNode(t, a, webSvc, "")
	web.apply(t, egressSnapshot(t, a, 1,
		externalDest(t, "tunnel", fmt.Sprintf(`
  hosts: [example.com]
  ports: [{port: 443, protocol: tls}, {port: 80, protocol: http}]
  addresses: ["%s"]`, up.addr()), egressAllowWeb),
		externalDest(t, "raw", fmt.Sprintf(`
  hosts: [raw.example.test]
  ports: [{port: 7000, protocol: tcp}]
  addresses: ["%s"]`, echo), egressAllowWeb),
		externalDest(t, "locked", fmt.Sprintf(`
  hosts: [locked.example.test]
  ports: [{port: 443, protocol: tls}]
  addresses: ["%s"]`, up.addr()), egressAllowOther),
	))
	outbound := servePlain(t, web.engine.Outbound())

	t.Run("https_through_tunnel", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(up.srv.Certificate())
		proxyURL := &url.URL{Scheme: "http", Host: outbound}
		tr := &http.Transport{
			Proxy:           http.ProxyURL(proxyURL),
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
		}
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr, Timeout: hangGuard}
		got := do(t, c, mustRequest(t, "GET", "https://example.com/through"))
		if got.status != 200 || got.body != "tunneled: GET example.com /through\n" {
			t.Errorf("got %d %q, want 200 from the server through the tunnel", got.status, got.body)
		}
		tr.CloseIdleConnections()
		web.log.waitFor(t, "access log of the tunnel", func(l map[string]any) bool {
			d, _ := l["detail"].(string)
			return l["method"] == "CONNECT" && l["destination"] == "ext/tunnel" && l["status"] == float64(200) &&
				strings.HasPrefix(d, "tunnel: ") && !strings.Contains(d, " 0 bytes")
		})
	})

	t.Run("tcp_half_close", func(t *testing.T) {
		conn, br, status := connectThrough(t, outbound, "raw.example.test:7000")
		if status != 200 {
			t.Fatalf("got %d, want 200", status)
		}
		if _, err := io.WriteString(conn, "hello tunnel"); err != nil {
			t.Fatal(err)
		}
		// The server answers only after it reads EOF: the half-close must
		// travel through the tunnel, and the answer come back.
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if got, want := string(b), "lennut olleh"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	t.Run("bytes_sent_with_the_request", func(t *testing.T) {
		// A client that does not wait for the 200 before sending.
		conn, err := net.Dial("tcp", outbound)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(hangGuard))
		if _, err := io.WriteString(conn, "CONNECT raw.example.test:7000 HTTP/1.1\r\nHost: raw.example.test:7000\r\n\r\neager"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("got %v %v, want 200", resp, err)
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(br)
		if got, want := string(b), "regae"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	pool := x509.NewCertPool()
	pool.AddCert(up.srv.Certificate())
	serverNames := []struct {
		name       string
		serverName string
		wantOK     bool
	}{
		{name: "server_name_is_host", serverName: "example.com", wantOK: true},
		{name: "server_name_upper_case", serverName: "EXAMPLE.COM", wantOK: true},
		{name: "no_server_name", serverName: "", wantOK: true},
		{name: "other_server_name", serverName: "evil.example.com", wantOK: false},
	}
	for _, tt := range serverNames {
		t.Run("tls_"+tt.name, func(t *testing.T) {
			conn, br, status := connectThrough(t, outbound, "example.com:443")
			if status != 200 {
				t.Fatalf("got %d, want 200", status)
			}
			cfg := &tls.Config{RootCAs: pool, ServerName: tt.serverName}
			if tt.serverName == "" {
				// Without a server name, Go's client sends no SNI; it
				// then checks the certificate itself.
				cfg = &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error { //nolint:gosec // verified below
					_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: "example.com"})
					return err
				}}
			}
			tc := tls.Client(&bufferedConn{Conn: conn, r: br}, cfg)
			err := tc.Handshake()
			if tt.wantOK && err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if !tt.wantOK {
				if err == nil {
					t.Fatalf("handshake with server name %q succeeded, want the tunnel closed", tt.serverName)
				}
				web.log.waitFor(t, "denial of the server name", func(l map[string]any) bool {
					d, _ := l["detail"].(string)
					return l["method"] == "CONNECT" && l["decision"] == "deny" && l["reason"] == "tls server name is not the CONNECT host" &&
						strings.Contains(d, tt.serverName)
				})
				return
			}
			tc.Close()
		})
	}

	t.Run("tls_port_not_tls", func(t *testing.T) {
		conn, br, status := connectThrough(t, outbound, "example.com:443")
		if status != 200 {
			t.Fatalf("got %d, want 200", status)
		}
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(br); len(b) != 0 {
			t.Errorf("got %q through the tunnel, want it closed", b)
		}
	})

	refused := []struct {
		name       string
		authority  string
		wantCode   int
		wantReason string
	}{
		{name: "undeclared_host", authority: "exfil.example.org:443", wantCode: 403, wantReason: "egress to an undeclared host"},
		{name: "undeclared_port", authority: "example.com:8443", wantCode: 403, wantReason: "egress to an undeclared host"},
		{name: "http_port", authority: "example.com:80", wantCode: 403, wantReason: "egress port is declared for http: send http:// requests, not CONNECT"},
		{name: "caller_not_allowed", authority: "locked.example.test:443", wantCode: 403, wantReason: "no ALLOW rule matched"},
		{name: "ip_literal", authority: up.addr(), wantCode: 403, wantReason: "egress to an undeclared host"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, _, status := connectThrough(t, outbound, tt.authority)
			if status != tt.wantCode {
				t.Fatalf("got %d, want %d", status, tt.wantCode)
			}
			host, _, _ := net.SplitHostPort(tt.authority)
			web.log.waitFor(t, "access log of the refused tunnel", func(l map[string]any) bool {
				d, _ := l["destination"].(string)
				return l["method"] == "CONNECT" && l["status"] == float64(tt.wantCode) && l["reason"] == tt.wantReason &&
					(d == host || strings.HasPrefix(d, "ext/"))
			})
		})
	}
}

// bufferedConn reads through r, which holds what was read past a CONNECT
// response.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// newReverseEchoServer serves TCP on loopback: it reads until EOF, then
// writes what it read reversed and closes. It returns its address.
func newReverseEchoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(hangGuard))
				b, err := io.ReadAll(c)
				if err != nil {
					return
				}
				r := []byte(string(b))
				for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
					r[i], r[j] = r[j], r[i]
				}
				_, _ = c.Write(r)
			}()
		}
	}()
	return ln.Addr().String()
}

func mustRequest(t testing.TB, method, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestEgressDNSToLoopbackRefused: a declared name whose DNS gives a
// loopback address (an attacker controlling the name's DNS aiming at the
// sidecar's own admin port) is not dialed; an IP literal in
// spec.addresses is, since the operator wrote it.
func TestEgressDNSToLoopbackRefused(t *testing.T) {
	a := newAuthority(t)
	up := newExternalApp(t, "loopback")
	port := strconv.Itoa(up.port())
	web := newWatchedNode(t, a, webSvc, "")
	web.apply(t, egressSnapshot(t, a, 1,
		// "localhost" resolves to loopback (from /etc/hosts), as a
		// rebound public name would.
		externalDest(t, "by-dns", `
  hosts: [localhost]
  ports: [{port: `+port+`, protocol: http}]`, egressAllowWeb),
		externalDest(t, "by-address-name", `
  hosts: [named.example.test]
  ports: [{port: `+port+`, protocol: http}]
  addresses: ["localhost:`+port+`"]`, egressAllowWeb),
		externalDest(t, "by-address-ip", `
  hosts: [literal.example.test]
  ports: [{port: `+port+`, protocol: http}]
  addresses: ["127.0.0.1:`+port+`"]`, egressAllowWeb),
	))
	outbound := servePlain(t, web.engine.Outbound())
	tests := []struct {
		name     string
		host     string
		wantCode int
	}{
		{name: "dns_of_host", host: "localhost", wantCode: 503},
		{name: "dns_of_address_name", host: "named.example.test", wantCode: 503},
		{name: "ip_literal_address", host: "literal.example.test", wantCode: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.requests())
			authority := tt.host + ":" + port
			got := plainRaw(t, outbound, "GET http://"+authority+"/x HTTP/1.1\r\nHost: "+authority+"\r\nConnection: close\r\n\r\n")
			if got.status != tt.wantCode {
				t.Fatalf("got %d %q, want %d", got.status, got.body, tt.wantCode)
			}
			if n := len(up.requests()) - before; (n == 1) != (tt.wantCode == 200) {
				t.Errorf("the loopback server received %d request(s)", n)
			}
		})
	}
	web.log.waitFor(t, "access log of the refused address", func(l map[string]any) bool {
		err, _ := l["err"].(string)
		return l["destination"] == "ext/by-dns" && strings.Contains(err, "refused")
	})

	// CONNECT resolves the same way.
	web.apply(t, egressSnapshot(t, a, 2, externalDest(t, "tunnel-dns", `
  hosts: [localhost]
  ports: [{port: `+port+`, protocol: tcp}]`, egressAllowWeb)))
	if _, _, status := connectThrough(t, outbound, "localhost:"+port); status != 503 {
		t.Errorf("CONNECT to a name resolving to loopback: got %d, want 503", status)
	}
}

// TestEgressTransportSurvivesSnapshots: pooled connections to an external
// host survive a snapshot that keeps its ExternalService as it was, and are
// closed when a snapshot drops it.
func TestEgressTransportSurvivesSnapshots(t *testing.T) {
	a := newAuthority(t)
	x := &externalApp{}
	ln := newTrackingListener(t)
	x.srv = httptest.NewUnstartedServer(x.handler("pooled"))
	x.srv.Listener.Close()
	x.srv.Listener = ln
	x.srv.Start()
	t.Cleanup(x.srv.Close)
	dest := func() *apiv1.Destination {
		return externalDest(t, "pooled", fmt.Sprintf(`
  hosts: [pooled.example.test]
  ports: [{port: 80, protocol: http}]
  addresses: ["%s"]`, x.addr()), egressAllowWeb)
	}
	web := newWatchedNode(t, a, webSvc, "")
	web.apply(t, egressSnapshot(t, a, 1, dest()))
	outbound := servePlain(t, web.engine.Outbound())
	send := func() {
		t.Helper()
		// Keep-alive on the app's side does not matter: the sidecar pools
		// its own connections to the external host.
		if got := plainRaw(t, outbound, "GET /p HTTP/1.1\r\nHost: pooled.example.test\r\nConnection: close\r\n\r\n"); got.status != 200 {
			t.Fatalf("got %d %q, want 200", got.status, got.body)
		}
	}
	send()
	web.apply(t, egressSnapshot(t, a, 2, dest()))
	send()
	if got := ln.accepted.Load(); got != 1 {
		t.Errorf("the external server accepted %d connections, want 1 (reused across snapshots)", got)
	}
	web.apply(t, egressSnapshot(t, a, 3))
	ln.waitClosed(t, 1)
	if got := plainRaw(t, outbound, "GET /p HTTP/1.1\r\nHost: pooled.example.test\r\nConnection: close\r\n\r\n"); got.status != 403 {
		t.Errorf("after the ExternalService was dropped: got %d, want 403", got.status)
	}
}

// TestEgressBadExternalRejected: a snapshot whose ExternalService the proxy
// cannot apply is refused whole, with the field named.
func TestEgressBadExternalRejected(t *testing.T) {
	a := newAuthority(t)
	web := newWatchedNode(t, a, webSvc, "")
	tests := []struct {
		name    string
		doc     string
		wantErr string
	}{
		{
			name:    "unknown_protocol",
			doc:     `{"apiVersion":"bulwark.dev/v1alpha1","kind":"ExternalService","metadata":{"name":"x","namespace":"ext"},"spec":{"hosts":["a.example.test"],"ports":[{"port":80,"protocol":"udp"}]}}`,
			wantErr: "spec.ports[0].protocol",
		},
		{
			name:    "not_an_external_service",
			doc:     string(policyDoc(t, fmt.Sprintf(egressAllowOther, "x"))),
			wantErr: "is not an ExternalService",
		},
		{
			name:    "bad_address",
			doc:     `{"apiVersion":"bulwark.dev/v1alpha1","kind":"ExternalService","metadata":{"name":"x","namespace":"ext"},"spec":{"hosts":["a.example.test"],"ports":[{"port":80,"protocol":"http"}],"addresses":["nope"]}}`,
			wantErr: "spec.addresses[0]",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := egressSnapshot(t, a, int64(i+1), &apiv1.Destination{Service: "ext/x", External: []byte(tt.doc)})
			err := web.engine.Apply(snap)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "ext/x") {
				t.Errorf("got %v, want an error naming ext/x and %s", err, tt.wantErr)
			}
		})
	}
}
