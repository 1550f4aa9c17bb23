package proxy_test

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNotReadyBeforeFirstSnapshot(t *testing.T) {
	a := newAuthority(t)
	apiApp := newApp(t, "default/api")
	api := newNode(t, a, apiSvc, apiApp.addr())
	apiAddr := api.serveInbound(t)
	web := newNode(t, a, webSvc, "")
	outbound := servePlain(t, web.engine.Outbound())
	upstream := servePlain(t, web.engine.Upstream(apiSvc))

	tests := []struct {
		name string
		send func(t *testing.T) response
	}{
		{name: "inbound", send: func(t *testing.T) response {
			return mtlsRaw(t, apiAddr, web.src, api.id(), "GET /public/x HTTP/1.1\r\nHost: api.default\r\n\r\n")
		}},
		{name: "outbound", send: func(t *testing.T) response { return get(t, outbound, "api.default", "/public/x") }},
		{name: "upstream", send: func(t *testing.T) response { return get(t, upstream, "anything", "/public/x") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.send(t)
			if got.status != http.StatusServiceUnavailable || got.body != "proxy not ready\n" {
				t.Errorf("got %d %q, want 503 %q", got.status, got.body, "proxy not ready\n")
			}
		})
	}
	if n := len(apiApp.requests()); n != 0 {
		t.Errorf("app got %d requests, want 0", n)
	}
}

func TestInboundAllowedRequest(t *testing.T) {
	m := newMesh(t)
	c := h2Client(t, m.web.src, m.api.id())
	req, err := http.NewRequest(http.MethodGet, "https://"+m.apiAddr+"/public/./a//b/../c%7e?x=1&y=%2F&secret=s", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{
		"X-Forwarded-For":         {"203.0.113.9"},
		"X-Forwarded-Host":        {"evil.example"},
		"X-Forwarded-Proto":       {"http"},
		"X-Forwarded-Client-Cert": {"By=spiffe://bulwark.test/ns/default/sa/api;URI=spiffe://bulwark.test/ns/kube-system/sa/admin"},
		"Forwarded":               {"for=203.0.113.9;proto=http"},
		"X-Bulwark-Identity":      {"spiffe://bulwark.test/ns/kube-system/sa/admin"},
		"X-Bulwark-Anything":      {"x"},
		"X-Custom":                {"kept"},
	}
	got := do(t, c, req)
	if got.status != http.StatusOK {
		t.Fatalf("status: got %d %q, want 200", got.status, got.body)
	}
	reqs := m.apiApp.requests()
	if len(reqs) != 1 {
		t.Fatalf("app got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if want := "/public/a/c~?x=1&y=%2F&secret=s"; r.RequestURI != want {
		t.Errorf("app request-target: got %q, want %q (normalized path, query as sent)", r.RequestURI, want)
	}
	if r.Host != "api.default" {
		t.Errorf("app Host: got %q, want %q", r.Host, "api.default")
	}
	wantXFCC := []string{"By=spiffe://bulwark.test/ns/default/sa/api;URI=spiffe://bulwark.test/ns/shop/sa/web"}
	if diff := cmp.Diff(wantXFCC, r.Header.Values("X-Forwarded-Client-Cert")); diff != "" {
		t.Errorf("X-Forwarded-Client-Cert (-want +got):\n%s", diff)
	}
	for k := range r.Header {
		lk := strings.ToLower(k)
		if lk == "x-forwarded-client-cert" {
			continue
		}
		if strings.HasPrefix(lk, "x-forwarded-") || lk == "forwarded" || strings.HasPrefix(lk, "x-bulwark-") {
			t.Errorf("app got client-supplied identity header %s: %q", k, r.Header.Values(k))
		}
	}
	if got := r.Header.Get("X-Custom"); got != "kept" {
		t.Errorf("X-Custom: got %q, want %q", got, "kept")
	}
	if diff := cmp.Diff([]string{"HTTP/2.0"}, m.api.inProtos.get()); diff != "" {
		t.Errorf("inbound protocols (-want +got):\n%s", diff)
	}
}

// TestInboundConnectionHeaderCannotDropXFCC: a client must not be able to
// remove the identity header the proxy asserts by naming it in
// Connection (hop-by-hop headers are removed after the proxy sets it).
func TestInboundConnectionHeaderCannotDropXFCC(t *testing.T) {
	m := newMesh(t)
	got := mtlsRaw(t, m.apiAddr, m.web.src, m.api.id(),
		"GET /public/x HTTP/1.1\r\nHost: api.default\r\nConnection: X-Forwarded-Client-Cert\r\n\r\n")
	if got.status != http.StatusOK {
		t.Fatalf("status: got %d %q, want 200", got.status, got.body)
	}
	reqs := m.apiApp.requests()
	if len(reqs) != 1 {
		t.Fatalf("app got %d requests, want 1", len(reqs))
	}
	want := "By=spiffe://bulwark.test/ns/default/sa/api;URI=spiffe://bulwark.test/ns/shop/sa/web"
	if got := reqs[0].Header.Get("X-Forwarded-Client-Cert"); got != want {
		t.Errorf("X-Forwarded-Client-Cert: got %q, want %q", got, want)
	}
}

func TestInboundDenied(t *testing.T) {
	m := newMesh(t)
	stranger := m.auth.svid(t, workloadID(t, "shop", "stranger"))
	tests := []struct {
		name   string
		src    *source
		method string
		target string
	}{
		{name: "path_not_allowed", src: m.web.src, method: "GET", target: "/private"},
		{name: "method_not_allowed", src: m.web.src, method: "POST", target: "/public/x"},
		{name: "dot_segments_resolve_to_denied_path", src: m.web.src, method: "GET", target: "/public/../private"},
		{name: "encoded_dot_segments_resolve_to_denied_path", src: m.web.src, method: "GET", target: "/public/%2e%2e/private"},
		{name: "prefix_without_slash_is_another_path", src: m.web.src, method: "GET", target: "/publicity"},
		{name: "caller_not_in_policy", src: stranger, method: "GET", target: "/public/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(m.apiApp.requests())
			got := mtlsRaw(t, m.apiAddr, tt.src, m.api.id(), tt.method+" "+tt.target+" HTTP/1.1\r\nHost: api.default\r\n\r\n")
			if got.status != http.StatusForbidden || got.body != "forbidden\n" {
				t.Errorf("got %d %q, want 403 %q", got.status, got.body, "forbidden\n")
			}
			if n := len(m.apiApp.requests()) - before; n != 0 {
				t.Errorf("app got %d requests, want 0", n)
			}
		})
	}
}

func TestInboundBadRequestTarget(t *testing.T) {
	m := newMesh(t)
	tests := []struct {
		name    string
		reqLine string
		// byEngine: the request reaches the engine (rather than being
		// refused by net/http's parser), which answers "bad request".
		byEngine bool
	}{
		{name: "encoded_slash", reqLine: "GET /public/a%2Fb HTTP/1.1", byEngine: true},
		{name: "encoded_slash_lower", reqLine: "GET /public/a%2fb HTTP/1.1", byEngine: true},
		{name: "encoded_backslash", reqLine: "GET /public/a%5Cb HTTP/1.1", byEngine: true},
		{name: "raw_backslash", reqLine: "GET /public/a\\b HTTP/1.1", byEngine: true},
		{name: "backslash_dot_dot", reqLine: "GET /public/..\\private HTTP/1.1", byEngine: true},
		{name: "encoded_nul", reqLine: "GET /public/a%00b HTTP/1.1", byEngine: true},
		{name: "raw_nul", reqLine: "GET /public/a\x00b HTTP/1.1"},
		{name: "encoded_control", reqLine: "GET /public/a%0Ab HTTP/1.1", byEngine: true},
		{name: "fragment", reqLine: "GET /public/a#frag HTTP/1.1", byEngine: true},
		{name: "absolute_form", reqLine: "GET http://api.default/public/a HTTP/1.1", byEngine: true},
		{name: "asterisk_form", reqLine: "OPTIONS * HTTP/1.1", byEngine: true},
		{name: "authority_form", reqLine: "CONNECT api.default:443 HTTP/1.1", byEngine: true},
		{name: "lowercase_method", reqLine: "get /public/x HTTP/1.1", byEngine: true},
		{name: "mixed_case_method", reqLine: "Get /public/x HTTP/1.1", byEngine: true},
		{name: "dot_dot_with_params", reqLine: "GET /public/..;/private HTTP/1.1", byEngine: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(m.apiApp.requests())
			got := mtlsRaw(t, m.apiAddr, m.web.src, m.api.id(), tt.reqLine+"\r\nHost: api.default\r\nConnection: close\r\n\r\n")
			if got.status != http.StatusBadRequest {
				t.Errorf("status: got %d %q, want 400", got.status, got.body)
			}
			if tt.byEngine && got.body != "bad request\n" {
				t.Errorf("body: got %q, want %q", got.body, "bad request\n")
			}
			if n := len(m.apiApp.requests()) - before; n != 0 {
				t.Errorf("app got %d requests, want 0", n)
			}
		})
	}
}

// TestInboundDotSegmentsNeverClimbAboveRoot: ".." is resolved (DESIGN §3),
// not rejected; it never climbs above the root, and the app receives the
// resolved path that was authorized.
func TestInboundDotSegmentsNeverClimbAboveRoot(t *testing.T) {
	m := newMesh(t)
	tests := []struct {
		name   string
		target string
		want   string
	}{
		{name: "climb_above_root", target: "/../../public/x", want: "/public/x"},
		{name: "climb_out_and_back", target: "/private/../public/x", want: "/public/x"},
		{name: "encoded_dots", target: "/x/%2E%2E/public/y", want: "/public/y"},
		{name: "merged_slashes", target: "//public///z", want: "/public/z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(m.apiApp.requests())
			got := mtlsRaw(t, m.apiAddr, m.web.src, m.api.id(), "GET "+tt.target+" HTTP/1.1\r\nHost: api.default\r\n\r\n")
			if got.status != http.StatusOK {
				t.Fatalf("status: got %d %q, want 200", got.status, got.body)
			}
			reqs := m.apiApp.requests()
			if len(reqs) != before+1 {
				t.Fatalf("app got %d requests, want 1", len(reqs)-before)
			}
			if got := reqs[len(reqs)-1].RequestURI; got != tt.want {
				t.Errorf("app request-target: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInboundWithoutUsableApp(t *testing.T) {
	a := newAuthority(t)
	web := a.svid(t, workloadID(t, "shop", "web"))

	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name     string
		app      string
		wantCode int
		wantBody string
	}{
		{name: "client_only_proxy", app: "", wantCode: http.StatusServiceUnavailable, wantBody: "no such service\n"},
		{name: "app_down", app: closedPort, wantCode: http.StatusServiceUnavailable, wantBody: "upstream unavailable\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newNode(t, a, apiSvc, tt.app)
			addr := api.serveInbound(t)
			api.apply(t, apiSnapshot(t, a, 1))
			got := mtlsRaw(t, addr, web, api.id(), "GET /public/x?token=s3cr3t HTTP/1.1\r\nHost: api.default\r\n\r\n")
			if got.status != tt.wantCode || got.body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", got.status, got.body, tt.wantCode, tt.wantBody)
			}
			line := api.log.waitFor(t, "the request", func(l map[string]any) bool { return l["direction"] == "inbound" })
			if got, want := line["status"], float64(tt.wantCode); got != want {
				t.Errorf("logged status: got %v, want %v", got, want)
			}
			if strings.Contains(api.log.String(), "s3cr3t") {
				t.Errorf("access log contains the query string:\n%s", api.log.String())
			}
		})
	}
}
