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
			return mtlsH2(t, apiAddr, web.src, api.id(), rawH2{fields: apiFields("GET", "/public/x")})
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
// remove the identity header the proxy asserts by naming it in Connection
// (hop-by-hop headers are removed before the proxy sets it). Connection is
// an HTTP/1.1 header: the app-facing listener takes it, and the callee's
// app still gets its proxy's XFCC; the inbound speaks HTTP/2 only, which
// forbids it, and net/http's HTTP/2 server refuses the request.
func TestInboundConnectionHeaderCannotDropXFCC(t *testing.T) {
	m := newMesh(t)
	got := plainRaw(t, m.outbound, "GET /public/x HTTP/1.1\r\nHost: api.default\r\nConnection: X-Forwarded-Client-Cert\r\n\r\n")
	if got.status != http.StatusOK {
		t.Fatalf("outbound: got %d %q, want 200", got.status, got.body)
	}
	reqs := m.apiApp.requests()
	if len(reqs) != 1 {
		t.Fatalf("app got %d requests, want 1", len(reqs))
	}
	want := "By=spiffe://bulwark.test/ns/default/sa/api;URI=spiffe://bulwark.test/ns/shop/sa/web"
	if got := reqs[0].Header.Values("X-Forwarded-Client-Cert"); len(got) != 1 || got[0] != want {
		t.Errorf("X-Forwarded-Client-Cert: got %q, want only %q", got, want)
	}

	got = mtlsH2(t, m.apiAddr, m.web.src, m.api.id(), rawH2{fields: apiFields("GET", "/public/x", [2]string{"connection", "x-forwarded-client-cert"})})
	if got.status != http.StatusBadRequest && got.refused != "RST" {
		t.Errorf("inbound with a connection field: got %d %q %s, want it refused (400 or the stream reset)", got.status, got.body, got.refused)
	}
	if n := len(m.apiApp.requests()); n != 1 {
		t.Errorf("app got %d requests, want 1 (the outbound one)", n)
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
			got := mtlsH2(t, m.apiAddr, tt.src, m.api.id(), rawH2{fields: apiFields(tt.method, tt.target)})
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
		name   string
		fields [][2]string
		// byEngine: the request reaches the engine, which answers "bad
		// request"; otherwise net/http's HTTP/2 server resets the stream.
		byEngine bool
	}{
		{name: "encoded_slash", fields: apiFields("GET", "/public/a%2Fb"), byEngine: true},
		{name: "encoded_slash_lower", fields: apiFields("GET", "/public/a%2fb"), byEngine: true},
		{name: "encoded_backslash", fields: apiFields("GET", "/public/a%5Cb"), byEngine: true},
		{name: "raw_backslash", fields: apiFields("GET", "/public/a\\b"), byEngine: true},
		{name: "backslash_dot_dot", fields: apiFields("GET", "/public/..\\private"), byEngine: true},
		{name: "encoded_nul", fields: apiFields("GET", "/public/a%00b"), byEngine: true},
		{name: "raw_nul", fields: apiFields("GET", "/public/a\x00b")},
		{name: "encoded_control", fields: apiFields("GET", "/public/a%0Ab"), byEngine: true},
		{name: "fragment", fields: apiFields("GET", "/public/a#frag"), byEngine: true},
		{name: "absolute_form", fields: apiFields("GET", "http://api.default/public/a"), byEngine: true},
		{name: "asterisk_form", fields: apiFields("OPTIONS", "*"), byEngine: true},
		// CONNECT (authority form) is a TCP tunnel: 405 for an HTTP app
		// (TestInboundConnectByAppProtocol).
		{name: "lowercase_method", fields: apiFields("get", "/public/x"), byEngine: true},
		{name: "mixed_case_method", fields: apiFields("Get", "/public/x"), byEngine: true},
		{name: "dot_dot_with_params", fields: apiFields("GET", "/public/..;/private"), byEngine: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(m.apiApp.requests())
			got := mtlsH2(t, m.apiAddr, m.web.src, m.api.id(), rawH2{fields: tt.fields})
			switch {
			case !tt.byEngine:
				if got.refused != "RST" {
					t.Errorf("got %d %q %s, want the stream reset", got.status, got.body, got.refused)
				}
			case got.status != http.StatusBadRequest || got.body != "bad request\n":
				t.Errorf("got %d %q %s, want 400 %q", got.status, got.body, got.refused, "bad request\n")
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
			got := mtlsH2(t, m.apiAddr, m.web.src, m.api.id(), rawH2{fields: apiFields("GET", tt.target)})
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
			got := mtlsH2(t, addr, web, api.id(), rawH2{fields: apiFields("GET", "/public/x?token=s3cr3t")})
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
