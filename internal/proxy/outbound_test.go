package proxy_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOutbound(t *testing.T) {
	m := newMesh(t)
	const fromApp = "default/api: GET %s\n"
	tests := []struct {
		name     string
		req      string // request line and headers, without the final CRLF
		wantCode int
		wantBody string
	}{
		{
			name:     "absolute_form",
			req:      "GET http://api.default/public/hello?q=1 HTTP/1.1\r\nHost: api.default",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/hello?q=1"),
		},
		{
			name:     "absolute_form_wins_over_host",
			req:      "GET http://api.default/public/a HTTP/1.1\r\nHost: secret.default",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/a"),
		},
		{
			name:     "absolute_form_with_port",
			req:      "GET http://api.default:80/public/b HTTP/1.1\r\nHost: api.default:80",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/b"),
		},
		{
			name:     "absolute_form_without_path_is_root",
			req:      "GET http://api.default HTTP/1.1\r\nHost: api.default",
			wantCode: 403, wantBody: "forbidden\n", // the caller's view allows only /public/* and /private
		},
		{
			name:     "origin_form_with_host",
			req:      "GET /public/c HTTP/1.1\r\nHost: api.default",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/c"),
		},
		{
			name:     "origin_form_path_normalized",
			req:      "GET /public/./d//e/../f?x=%2F HTTP/1.1\r\nHost: api.default",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/d/f?x=%2F"),
		},
		{
			// shop/web's own namespace is shop: "api" is shop/api, which
			// has no endpoints (default/api would answer 200).
			name:     "bare_name_is_caller_namespace",
			req:      "GET /public/g HTTP/1.1\r\nHost: api",
			wantCode: 503, wantBody: "no healthy upstream\n",
		},
		{
			name:     "svc_form",
			req:      "GET /public/h HTTP/1.1\r\nHost: api.default.svc",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/h"),
		},
		{
			name:     "svc_cluster_local_form",
			req:      "GET /public/i HTTP/1.1\r\nHost: api.default.svc.cluster.local",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/i"),
		},
		{
			name:     "absolute_form_svc_cluster_local_with_port",
			req:      "GET http://api.default.svc.cluster.local:8080/public/j HTTP/1.1\r\nHost: api.default.svc.cluster.local:8080",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/j"),
		},
		{
			name:     "host_case_insensitive",
			req:      "GET /public/k HTTP/1.1\r\nHost: API.Default",
			wantCode: 200, wantBody: fmt.Sprintf(fromApp, "/public/k"),
		},
		{
			name:     "https_absolute_form",
			req:      "GET https://api.default/public/x HTTP/1.1\r\nHost: api.default",
			wantCode: 400, wantBody: "use http:// through the mesh: the sidecar encrypts\n",
		},
		{
			// CONNECT needs a port (tunnels: tunnel_test.go).
			name:     "connect_without_port",
			req:      "CONNECT api.default HTTP/1.1\r\nHost: api.default",
			wantCode: 400, wantBody: "bad request: CONNECT needs host:port\n",
		},
		{
			name:     "unknown_service",
			req:      "GET /public/x HTTP/1.1\r\nHost: nope.default",
			wantCode: 503, wantBody: "no such service\n",
		},
		{
			// Not a mesh service and not declared: egress is denied.
			name:     "ip_address_host",
			req:      "GET /public/x HTTP/1.1\r\nHost: 127.0.0.1",
			wantCode: 403, wantBody: "forbidden\n",
		},
		{
			name:     "existing_but_not_callable",
			req:      "GET /public/x HTTP/1.1\r\nHost: secret.default",
			wantCode: 403, wantBody: "forbidden\n",
		},
		{
			name:     "callable_but_method_denied_by_caller_view",
			req:      "POST /public/x HTTP/1.1\r\nHost: api.default\r\nContent-Length: 0",
			wantCode: 403, wantBody: "forbidden\n",
		},
		{
			name:     "callable_but_path_denied_by_caller_view",
			req:      "GET /admin HTTP/1.1\r\nHost: api.default",
			wantCode: 403, wantBody: "forbidden\n",
		},
		{
			name:     "callable_without_endpoints",
			req:      "GET /anything HTTP/1.1\r\nHost: api.shop",
			wantCode: 503, wantBody: "no healthy upstream\n",
		},
		{
			// The caller's view allows /private; the callee's own policy
			// does not, and the callee enforces independently.
			name:     "allowed_by_caller_denied_by_callee",
			req:      "GET /private HTTP/1.1\r\nHost: api.default",
			wantCode: 403, wantBody: "forbidden\n",
		},
		{
			name:     "encoded_slash",
			req:      "GET /public/a%2Fb HTTP/1.1\r\nHost: api.default",
			wantCode: 400, wantBody: "bad request\n",
		},
		{
			name:     "absolute_form_backslash",
			req:      "GET http://api.default/public/a\\b HTTP/1.1\r\nHost: api.default",
			wantCode: 400, wantBody: "bad request\n",
		},
		{
			name:     "asterisk_form",
			req:      "OPTIONS * HTTP/1.1\r\nHost: api.default",
			wantCode: 400, wantBody: "use http:// through the mesh: the sidecar encrypts\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(m.apiApp.requests())
			got := plainRaw(t, m.outbound, tt.req+"\r\nConnection: close\r\n\r\n")
			if got.status != tt.wantCode || got.body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", got.status, got.body, tt.wantCode, tt.wantBody)
			}
			wantCalls := 0
			if tt.wantCode == http.StatusOK {
				wantCalls = 1
			}
			if n := len(m.apiApp.requests()) - before; n != wantCalls {
				t.Errorf("app got %d requests, want %d", n, wantCalls)
			}
		})
	}
}

// TestOutboundUserinfoDoesNotRedirect: in "http://api.default:x@secret.default/",
// every HTTP parser (net/http's included) reads the host as secret.default
// and "api.default:x" as userinfo. The sidecar must not route such a request
// to default/api.
func TestOutboundUserinfoDoesNotRedirect(t *testing.T) {
	m := newMesh(t)
	got := plainRaw(t, m.outbound, "GET http://api.default:x@secret.default/public/x HTTP/1.1\r\nHost: secret.default\r\nConnection: close\r\n\r\n")
	if n := len(m.apiApp.requests()); n != 0 || got.status == http.StatusOK {
		t.Errorf("got %d %q and %d request(s) at default/api, want a refusal (400, or 403 for secret.default) and none",
			got.status, got.body, n)
	}
}

func TestOutboundForwardsOverMTLSHTTP2(t *testing.T) {
	m := newMesh(t)
	req := "GET http://api.default/public/hdr HTTP/1.1\r\nHost: api.default\r\n" +
		"X-Forwarded-For: 203.0.113.9\r\n" +
		"X-Forwarded-Client-Cert: By=x;URI=spiffe://bulwark.test/ns/kube-system/sa/admin\r\n" +
		"Forwarded: for=203.0.113.9\r\n" +
		"X-Bulwark-Identity: spiffe://bulwark.test/ns/kube-system/sa/admin\r\n" +
		"Proxy-Authorization: Basic c2VjcmV0\r\n" +
		"X-Custom: kept\r\nConnection: close\r\n\r\n"
	got := plainRaw(t, m.outbound, req)
	if got.status != http.StatusOK || got.header.Get("X-App") != "default/api" {
		t.Fatalf("got %d %q (X-App %q), want 200 from default/api", got.status, got.body, got.header.Get("X-App"))
	}
	reqs := m.apiApp.requests()
	if len(reqs) != 1 {
		t.Fatalf("app got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Host != "api.default" {
		t.Errorf("app Host: got %q, want %q", r.Host, "api.default")
	}
	want := []string{"By=spiffe://bulwark.test/ns/default/sa/api;URI=spiffe://bulwark.test/ns/shop/sa/web"}
	if diff := cmp.Diff(want, r.Header.Values("X-Forwarded-Client-Cert")); diff != "" {
		t.Errorf("X-Forwarded-Client-Cert (-want +got):\n%s", diff)
	}
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "X-Bulwark-Identity", "Proxy-Authorization"} {
		if v := r.Header.Values(h); len(v) != 0 {
			t.Errorf("app got %s: %q, want none", h, v)
		}
	}
	if got := r.Header.Get("X-Custom"); got != "kept" {
		t.Errorf("X-Custom: got %q, want %q", got, "kept")
	}
	if diff := cmp.Diff([]string{"HTTP/2.0"}, m.api.inProtos.get()); diff != "" {
		t.Errorf("protocol between the sidecars (-want +got):\n%s", diff)
	}
}

func TestOutboundRefusesPeerWithOtherIdentity(t *testing.T) {
	m := newMesh(t)
	// The snapshot says the endpoint at the callee's address is
	// default/impostor; the callee presents default/api.
	m.web.apply(t, webSnapshot(t, m.auth, 2, m.apiAddr, workloadID(t, "default", "impostor")))
	got := get(t, m.outbound, "api.default", "/public/x")
	if got.status != http.StatusServiceUnavailable || got.body != "upstream unavailable\n" {
		t.Errorf("got %d %q, want 503 %q", got.status, got.body, "upstream unavailable\n")
	}
	if n := len(m.apiApp.requests()); n != 0 {
		t.Errorf("app got %d requests, want 0", n)
	}
	if n := len(m.api.inProtos.get()); n != 0 {
		t.Errorf("callee's inbound handler got %d requests, want 0", n)
	}
	line := m.web.log.waitFor(t, "the refused request", func(l map[string]any) bool { return l["path"] == "/public/x" })
	if e, _ := line["err"].(string); !strings.Contains(e, "mtls handshake") {
		t.Errorf("logged err: got %q, want it to name the mtls handshake", e)
	}
}

func TestUpstreamSendsEverythingToItsService(t *testing.T) {
	m := newMesh(t)
	upstream := servePlain(t, m.web.engine.Upstream(apiSvc))
	secretUp := servePlain(t, m.web.engine.Upstream(secretSvc))
	tests := []struct {
		name     string
		addr     string
		req      string
		wantCode int
		wantBody string
	}{
		{name: "any_host", addr: upstream, req: "GET /public/u?v=1 HTTP/1.1\r\nHost: secret.default", wantCode: 200, wantBody: "default/api: GET /public/u?v=1\n"},
		{name: "no_host_rules", addr: upstream, req: "GET /public/w HTTP/1.1\r\nHost: 127.0.0.1", wantCode: 200, wantBody: "default/api: GET /public/w\n"},
		{name: "absolute_form_rejected", addr: upstream, req: "GET http://secret.default/public/x HTTP/1.1\r\nHost: secret.default", wantCode: 400, wantBody: "bad request\n"},
		{name: "bad_path", addr: upstream, req: "GET /public/%00 HTTP/1.1\r\nHost: x", wantCode: 400, wantBody: "bad request\n"},
		{name: "denied_by_caller_view", addr: upstream, req: "DELETE /public/x HTTP/1.1\r\nHost: x", wantCode: 403, wantBody: "forbidden\n"},
		{name: "not_callable_service", addr: secretUp, req: "GET /public/x HTTP/1.1\r\nHost: api.default", wantCode: 403, wantBody: "forbidden\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(m.apiApp.requests())
			got := plainRaw(t, tt.addr, tt.req+"\r\nConnection: close\r\n\r\n")
			if got.status != tt.wantCode || got.body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", got.status, got.body, tt.wantCode, tt.wantBody)
			}
			reqs := m.apiApp.requests()
			if tt.wantCode == http.StatusOK {
				if len(reqs) != before+1 {
					t.Fatalf("app got %d requests, want 1", len(reqs)-before)
				}
				if h := reqs[len(reqs)-1].Host; h != "api.default" {
					t.Errorf("app Host: got %q, want %q", h, "api.default")
				}
			} else if len(reqs) != before {
				t.Errorf("app got %d requests, want 0", len(reqs)-before)
			}
		})
	}
}

func TestPoolReusesOneConnection(t *testing.T) {
	tests := []struct {
		name       string
		concurrent bool
	}{
		{name: "sequential"},
		{name: "concurrent", concurrent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMesh(t)
			const n = 50
			statuses := make([]int, n)
			send := func(i int) { statuses[i] = get(t, m.outbound, "api.default", fmt.Sprintf("/public/%d", i)).status }
			if tt.concurrent {
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() { send(i) })
				}
				wg.Wait()
			} else {
				for i := range n {
					send(i)
				}
			}
			for i, s := range statuses {
				if s != http.StatusOK {
					t.Errorf("request %d: got %d, want 200", i, s)
				}
			}
			if got := m.api.inbound.accepted.Load(); got != 1 {
				t.Errorf("connections accepted by the callee: got %d, want 1", got)
			}
		})
	}
}

func TestPoolClosesConnectionsOfRemovedEndpoints(t *testing.T) {
	tests := []struct {
		name string
		// next returns the snapshot that replaces the first one.
		next func(m *mesh) (snapVersion int64, apiAddr, apiID string)
		// wantClosed says whether the pooled connection must be closed.
		wantClosed bool
	}{
		{name: "endpoint_removed", next: func(m *mesh) (int64, string, string) { return 2, "", "" }, wantClosed: true},
		{name: "endpoint_identity_changed", next: func(m *mesh) (int64, string, string) {
			return 2, m.apiAddr, "spiffe://bulwark.test/ns/default/sa/api-v2"
		}, wantClosed: true},
		{name: "endpoint_kept", next: func(m *mesh) (int64, string, string) { return 2, m.apiAddr, m.api.id().String() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMesh(t)
			if got := get(t, m.outbound, "api.default", "/public/1"); got.status != http.StatusOK {
				t.Fatalf("first request: got %d %q, want 200", got.status, got.body)
			}
			v, addr, id := tt.next(m)
			snap := webSnapshot(t, m.auth, v, addr, m.api.id())
			if addr != "" {
				snap.Destinations[0].Endpoints[0].SpiffeId = id
			}
			m.web.apply(t, snap)
			if tt.wantClosed {
				m.api.inbound.waitClosed(t, 1)
				return
			}
			if got := get(t, m.outbound, "api.default", "/public/2"); got.status != http.StatusOK {
				t.Fatalf("second request: got %d %q, want 200", got.status, got.body)
			}
			if got := m.api.inbound.accepted.Load(); got != 1 {
				t.Errorf("connections accepted by the callee: got %d, want 1 (the pooled one kept)", got)
			}
		})
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	m := newMesh(t)
	if got := get(t, m.outbound, "api.default", "/public/1"); got.status != http.StatusOK {
		t.Fatalf("request: got %d %q, want 200", got.status, got.body)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(m.web.engine.Close)
	}
	wg.Wait()
	m.web.engine.Close()
	m.api.inbound.waitClosed(t, 1)
}

// TestQueryForwardedAsSent: the query reaches the app as sent (package
// doc: "the original query"), through both sidecars.
func TestQueryForwardedAsSent(t *testing.T) {
	m := newMesh(t)
	tests := []struct {
		name  string
		query string
	}{
		{name: "plain", query: "a=1&b=2"},
		{name: "encoded_slash_and_empty_value", query: "x=%2F&y"},
		{name: "repeated_keys", query: "k=1&k=2"},
		{name: "semicolon", query: "a=1;b=2&d=4"},
		{name: "malformed_escape", query: "c=%zz&d=4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := get(t, m.outbound, "api.default", "/public/q?"+tt.query)
			if want := "default/api: GET /public/q?" + tt.query + "\n"; got.status != http.StatusOK || got.body != want {
				t.Errorf("got %d %q, want 200 %q", got.status, got.body, want)
			}
		})
	}
}
