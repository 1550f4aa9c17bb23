package proxy_test

// Tests of the fixes of the edge attack review (edge_attack_test.go):
// certificate coverage (421), CORS headers of a CORS route, the
// listener's port for policies, and the per-client-IP limit before the
// JWT.

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// TestEdgeServedNames: over TLS, a host the certificate served on the
// connection does not cover gets 421 and is never forwarded; an IP
// literal and a certificate without DNS names are not checked.
func TestEdgeServedNames(t *testing.T) {
	f := newEdgeFixture(t)
	for _, tt := range []struct {
		name  string
		names []string // nil: not set
		host  string
		path  string
		want  int
	}{
		{name: "exact", names: []string{"shop.example.com"}, host: "shop.example.com", path: "/api/a", want: 200},
		{name: "exact_with_port", names: []string{"shop.example.com"}, host: "SHOP.example.com:443", path: "/api/a", want: 200},
		{name: "wildcard", names: []string{"*.example.com"}, host: "shop.example.com", path: "/api/a", want: 200},
		{name: "wildcard_one_label", names: []string{"*.example.com"}, host: "a.shop.example.com", path: "/jwt/x", want: 421},
		{name: "other_host", names: []string{"*.example.com", "example.com"}, host: "x.example.net", path: "/per-route", want: 421},
		{name: "ip_literal", names: []string{"shop.example.com"}, host: "127.0.0.1", path: "/optjwt", want: 200},
		{name: "no_dns_names", names: []string{}, host: "x.example.net", path: "/per-route", want: 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			edge := f.gw.engine.Edge("web", true)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.names != nil {
					r = r.WithContext(proxy.WithServedNames(r.Context(), tt.names))
				}
				edge.ServeHTTP(w, r)
			}))
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			c := srv.Client()
			c.Timeout = hangGuard
			req, err := http.NewRequest(http.MethodGet, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host
			before := f.app.count()
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("Host %s, names %q: got %d, want %d", tt.host, tt.names, resp.StatusCode, tt.want)
			}
			if tt.want == 421 && f.app.count() != before {
				t.Errorf("Host %s: a misdirected request was forwarded", tt.host)
			}
		})
	}
}

// TestEdgeCORSRouteHeaders: every answer of a CORS route varies on Origin
// and carries the gateway's CORS headers only; a preflight with an Origin
// list gets 403 and is never forwarded.
func TestEdgeCORSRouteHeaders(t *testing.T) {
	f := newEdgeFixture(t)
	for _, tt := range []struct {
		name     string
		headers  []string
		wantACAO string
	}{
		{name: "no_origin", wantACAO: ""},
		{name: "other_origin", headers: []string{"Origin: https://evil.example"}, wantACAO: ""},
		{name: "origin_list", headers: []string{"Origin: https://app.example.com, https://evil.example"}, wantACAO: ""},
		{name: "allowed", headers: []string{"Origin: https://app.example.com"}, wantACAO: "https://app.example.com"},
	} {
		got := edgeGet(t, f.web, "app.example.com", "/cors/y", tt.headers...)
		if got.status != 200 {
			t.Errorf("%s: status: got %d, want 200", tt.name, got.status)
		}
		if v := got.header.Get("Access-Control-Allow-Origin"); v != tt.wantACAO {
			t.Errorf("%s: Access-Control-Allow-Origin: got %q, want %q", tt.name, v, tt.wantACAO)
		}
		if !strings.Contains(strings.Join(got.header.Values("Vary"), ","), "Origin") {
			t.Errorf("%s: Vary: got %q, want Origin in it", tt.name, got.header.Values("Vary"))
		}
	}
	// A route without CORS keeps the service's own headers.
	if got := edgeGet(t, f.web, "shop.example.com", "/api/a"); got.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("route without cors: Access-Control-Allow-Origin: got %q, want the app's \"*\"", got.header.Get("Access-Control-Allow-Origin"))
	}
	before := f.app.count()
	got := edgeRaw(t, f.web, "", "OPTIONS /cors/x HTTP/1.1\r\nHost: app.example.com\r\nOrigin: https://app.example.com, https://evil.example\r\n"+
		"Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n")
	if got.status != http.StatusForbidden || got.header.Get("Access-Control-Allow-Origin") != "" || f.app.count() != before {
		t.Errorf("preflight with an Origin list: got %d, ACAO %q, want 403 without ACAO, not forwarded", got.status, got.header.Get("Access-Control-Allow-Origin"))
	}
}

// TestEdgePolicyPortIsListeners: the gateway's policies see the port the
// Gateway declares for the listener, whatever the Host header names.
func TestEdgePolicyPortIsListeners(t *testing.T) {
	f := newAttackFixture(t)
	admin := servePlain(t, f.gw.engine.Edge("admin", false))
	for _, host := range []string{"shop.example.com", "shop.example.com:8080", "shop.example.com:9443"} {
		if got := edgeGet(t, admin, host, "/admin/users"); got.status != 200 {
			t.Errorf("GET /admin/users on the 9443 listener with Host %q: got %d, want 200", host, got.status)
		}
		if got := edgeGet(t, f.web, host, "/admin/users"); got.status != http.StatusForbidden {
			t.Errorf("GET /admin/users on the 8080 listener with Host %q: got %d, want 403", host, got.status)
		}
	}
}

// TestEdgeClientIPLimitBeforeJWT: the spec's per-client-IP rate limit
// applies before the JWT, so token guessing (401s) is limited too.
func TestEdgeClientIPLimitBeforeJWT(t *testing.T) {
	f := newEdgeFixture(t)
	doc := strings.Replace(edgeGateway, "rateLimits: [{requestsPerSecond: 1000, burst: 1000, per: route}]",
		"rateLimits: [{requestsPerSecond: 0.001, burst: 1}]", 1)
	f.gw.apply(t, f.gwSnapshot(t, gatewayDoc(t, doc), "", ""))
	bad := "Authorization: Bearer not.a.token"
	for i, want := range []int{http.StatusUnauthorized, http.StatusTooManyRequests} {
		got := edgeGet(t, f.web, "shop.example.com", "/jwt/x", bad)
		if got.status != want {
			t.Errorf("request %d with a bad token: got %d, want %d", i+1, got.status, want)
		}
	}
	// Another client has its own bucket.
	if got := edgeRaw(t, f.web, "127.0.0.2", "GET /jwt/x HTTP/1.1\r\nHost: shop.example.com\r\n"+bad+"\r\nConnection: close\r\n\r\n"); got.status != http.StatusUnauthorized {
		t.Errorf("another client: got %d, want 401", got.status)
	}
}
