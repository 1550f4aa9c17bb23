package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
)

func ptr[T any](v T) *T { return &v }

// rawRequest sends req on a new connection to addr and returns the
// response.
func rawRequest(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", req, err)
	}
	return resp
}

func TestRedirect(t *testing.T) {
	f := startServer(t, nil, "http", "http-std")
	addrs := f.apply(t, gw(
		httpsListener("https", 8443, secretCert("a")),
		config.GatewayListener{Name: "http", Port: 8080, Protocol: config.ListenerHTTP},
		config.GatewayListener{Name: "http-std", Port: 80, Protocol: config.ListenerHTTP, HTTPSPort: 443},
	), map[string]*apiv1.TLSSecret{"a": secretOf("a", newPair(t, "a.example.com"))})
	for _, tc := range []struct {
		name, listener, target, host string
		wantCode                     int
		wantLocation                 string
	}{
		{"path_and_query", "http", "/a/b?c=d&e", "example.com", 308, "https://example.com:8443/a/b?c=d&e"},
		{"port_dropped", "http", "/", "Example.COM:8080", 308, "https://example.com:8443/"},
		{"https_port_443_omitted", "http-std", "/x", "example.com", 308, "https://example.com/x"},
		{"ipv4", "http", "/", "192.0.2.1:80", 308, "https://192.0.2.1:8443/"},
		{"ipv6", "http", "/", "[2001:db8::1]:80", 308, "https://[2001:db8::1]:8443/"},
		{"absolute_form", "http", "http://example.com/abs?q", "example.com", 308, "https://example.com:8443/abs?q"},
		{"encoded_crlf_stays_encoded", "http", "/a%0d%0aSet-Cookie:x", "example.com", 308, "https://example.com:8443/a%0d%0aSet-Cookie:x"},
		{"double_slash_path", "http", "//evil.example/", "example.com", 308, "https://example.com:8443//evil.example/"},
		{"host_with_user", "http", "/", "user@evil.example", 400, ""},
		{"host_with_path", "http", "/", "evil.example/x", 400, ""},
		{"host_with_bad_port", "http", "/", "example.com:99999", 400, ""},
		{"host_with_letters_port", "http", "/", "example.com:http", 400, ""},
		{"host_with_underscore", "http", "/", "a_b.example.com", 400, ""},
		{"host_with_backslash", "http", "/", `evil.example\x`, 400, ""},
		{"host_ipv6_zone", "http", "/", "[fe80::1%25eth0]", 400, ""},
		{"host_leading_hyphen", "http", "/", "-a.example.com", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawRequest(t, addrs[tc.listener], "GET "+tc.target+" HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if got := resp.Header.Get("Location"); got != tc.wantLocation {
				t.Errorf("Location: got %q, want %q", got, tc.wantLocation)
			}
		})
	}
	// A Host with CR LF never makes it to a handler: net/http or the
	// framing guard answers 400 on its own.
	t.Run("host_with_crlf", func(t *testing.T) {
		resp := rawRequest(t, addrs["http"], "GET / HTTP/1.1\r\nHost: evil.example\rSet-Cookie: x\r\n\r\n")
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("got %d Location %q Set-Cookie %q, want 400 without them", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Set-Cookie"))
		}
	})
}

func TestPlainHTTPServesRoutes(t *testing.T) {
	f := startServer(t, nil, "http")
	addrs := f.apply(t, gw(config.GatewayListener{Name: "http", Port: 80, Protocol: config.ListenerHTTP, RedirectToHTTPS: ptr(false)}), nil)
	code, body, err := get(client(false), "http://"+addrs["http"]+"/x")
	if err != nil || code != http.StatusOK || body != "http false HTTP/1.1 0 false" {
		t.Errorf("got %d %q %v, want 200 from the edge (plain)", code, body, err)
	}
	// Ambiguous framing is refused before the edge sees it.
	resp := rawRequest(t, addrs["http"], "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("duplicate Content-Length: got %d, want 400", resp.StatusCode)
	}
}

func TestHTTPSServesHTTP2AndHTTP1(t *testing.T) {
	f := startServer(t, nil, "https")
	l := httpsListener("https", 443, secretCert("a"))
	l.TLS.HSTS = &config.HSTS{MaxAge: "1h", IncludeSubdomains: true, Preload: true}
	addrs := f.apply(t, gw(l), map[string]*apiv1.TLSSecret{"a": secretOf("a", newPair(t, "a.example.com"))})
	for _, tc := range []struct {
		name  string
		h2    bool
		proto string
	}{
		{"http2", true, "HTTP/2.0"},
		{"http1", false, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := client(tc.h2)
			defer c.CloseIdleConnections()
			resp, err := c.Get("https://" + addrs["https"] + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// The edge sees the TLS state (r.TLS) on both protocols.
			if want := "https true " + tc.proto + " 0 true"; string(b) != want {
				t.Errorf("body: got %q, want %q", b, want)
			}
			if got, want := resp.Header.Get("Strict-Transport-Security"), "max-age=3600; includeSubDomains; preload"; got != want {
				t.Errorf("HSTS: got %q, want %q", got, want)
			}
		})
	}
}

func TestTLSPolicy(t *testing.T) {
	f := startServer(t, nil, "tls12", "tls13")
	l13 := httpsListener("tls13", 444, secretCert("a"))
	l13.TLS.MinVersion = config.TLSVersion13
	rsa := newPair(t, "a.example.com")
	addrs := f.apply(t, gw(httpsListener("tls12", 443, secretCert("a")), l13),
		map[string]*apiv1.TLSSecret{"a": secretOf("a", rsa)})
	for _, tc := range []struct {
		name, listener string
		cfg            *tls.Config
		wantOK         bool
	}{
		{"tls13_accepted", "tls12", &tls.Config{MinVersion: tls.VersionTLS13}, true},
		{"tls12_aead_accepted", "tls12", &tls.Config{MaxVersion: tls.VersionTLS12}, true},
		{"tls12_chacha_accepted", "tls12", &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, true},
		{"tls11_refused", "tls12", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false},
		{"cbc_only_refused", "tls12", &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}, false},
		{"tls12_refused_by_min_13", "tls13", &tls.Config{MaxVersion: tls.VersionTLS12}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.InsecureSkipVerify = true //nolint:gosec // self-signed
			tc.cfg.ServerName = "a.example.com"
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addrs[tc.listener], tc.cfg)
			if err == nil {
				c.Close()
			}
			if got := err == nil; got != tc.wantOK {
				t.Errorf("handshake ok: got %v (%v), want %v", got, err, tc.wantOK)
			}
		})
	}
}

func TestReconcileListeners(t *testing.T) {
	f := startServer(t, nil, "keep", "gone", "moved", "new")
	secrets := map[string]*apiv1.TLSSecret{"a": secretOf("a", newPair(t, "a.example.com"))}
	first := f.apply(t, gw(
		httpsListener("keep", 443, secretCert("a")),
		config.GatewayListener{Name: "gone", Port: 80, Protocol: config.ListenerHTTP, RedirectToHTTPS: ptr(false)},
		config.GatewayListener{Name: "moved", Port: 81, Protocol: config.ListenerHTTP, RedirectToHTTPS: ptr(false)},
	), secrets)
	select {
	case got := <-f.ready:
		if diff := cmp.Diff(first, got); diff != "" {
			t.Errorf("Ready addresses (-status +ready):\n%s", diff)
		}
	case <-time.After(hangGuard):
		t.Fatal("Ready not called")
	}
	c := client(true)
	defer c.CloseIdleConnections()
	if code, _, err := get(c, "https://"+first["keep"]+"/"); err != nil || code != 200 {
		t.Fatalf("keep: %d %v", code, err)
	}
	// "moved" changes protocol (re-opened), "gone" goes, "new" comes, and
	// "keep" changes its HSTS (new server, same socket).
	keep := httpsListener("keep", 443, secretCert("a"))
	keep.TLS.HSTS = &config.HSTS{MaxAge: "2s"}
	second := f.apply(t, gw(keep,
		httpsListener("moved", 81, secretCert("a")),
		config.GatewayListener{Name: "new", Port: 82, Protocol: config.ListenerHTTP},
	), secrets)
	if got, want := sortedKeys(second), []string{"keep", "moved", "new"}; !cmp.Equal(got, want) {
		t.Errorf("listeners: got %v, want %v", got, want)
	}
	if second["keep"] != first["keep"] {
		t.Errorf("keep re-bound: got %s, want %s", second["keep"], first["keep"])
	}
	// The HTTP/2 connection made before goes on.
	resp, err := c.Get("https://" + first["keep"] + "/")
	if err != nil {
		t.Fatalf("keep after the change: %v", err)
	}
	drain(resp)
	if resp.StatusCode != 200 {
		t.Errorf("keep after the change: got %d, want 200", resp.StatusCode)
	}
	// A new connection gets the new settings.
	c2 := client(false)
	defer c2.CloseIdleConnections()
	resp, err = c2.Get("https://" + first["keep"] + "/")
	if err != nil {
		t.Fatal(err)
	}
	drain(resp)
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=2" {
		t.Errorf("HSTS on a new connection: got %q, want max-age=2", got)
	}
	if c, err := net.DialTimeout("tcp", first["gone"], hangGuard); err == nil {
		c.Close()
		t.Errorf("the removed listener %s still accepts", first["gone"])
	}
	if got := handshake(t, second["moved"], "a.example.com"); got == nil {
		t.Error("the re-opened listener serves no TLS")
	}
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestBindRetry(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Now())
	reg := prometheus.NewRegistry()
	ready := make(chan map[string]string, 1)
	srv, err := gateway.NewServer(gateway.ServerConfig{
		Edge: fakeEdge{}, Listen: map[string]string{"http": busy.Addr().String()}, Clock: clk, Registry: reg,
		Ready: func(a map[string]string) { ready <- a },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	if err := srv.Apply(gw(config.GatewayListener{Name: "http", Port: 80, Protocol: config.ListenerHTTP}), nil); err != nil {
		t.Fatal(err)
	}
	st := srv.Status()
	if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "listener http: cannot bind") {
		t.Fatalf("problems: got %q, want listener http cannot bind", st.Problems)
	}
	select {
	case <-ready:
		t.Fatal("Ready called before the listener bound")
	default:
	}
	busy.Close()
	deadline := time.Now().Add(hangGuard)
	for len(srv.Status().Problems) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("never bound: %q", srv.Status().Problems)
		}
		polled := clk.TimerCreated()
		clk.Advance(time.Second)
		<-polled
	}
	select {
	case a := <-ready:
		if a["http"] != busy.Addr().String() {
			t.Errorf("Ready: got %v, want http at %s", a, busy.Addr())
		}
	case <-time.After(hangGuard):
		t.Fatal("Ready not called")
	}
}

func TestPassthrough(t *testing.T) {
	f := startServer(t, nil, "tls")
	addrs := f.apply(t, gw(config.GatewayListener{Name: "tls", Port: 8443, Protocol: config.ListenerTLS}), nil)
	c, err := net.DialTimeout("tcp", addrs["tls"], hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo: got %q %v, want ping", buf, err)
	}
	// Removing the listener ends its tunnels (within the shutdown
	// timeout) and stops accepting.
	f.apply(t, gw(), nil)
	if !waitClosed(c, hangGuard, 1) {
		t.Error("the tunnel of a removed listener stayed open")
	}
}

func TestNoGatewayNotReady(t *testing.T) {
	f := startServer(t, nil)
	if st := f.srv.Status(); len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "no gateway configuration") {
		t.Errorf("before: got %q", st.Problems)
	}
	f.apply(t, nil, nil)
	if st := f.srv.Status(); len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "no Gateway") {
		t.Errorf("after nil: got %q", st.Problems)
	}
}

func TestApplyAfterStop(t *testing.T) {
	srv, err := gateway.NewServer(gateway.ServerConfig{Edge: fakeEdge{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 2 { // Run after Run: stopping is idempotent
		if err := srv.Run(ctx); err != nil {
			t.Fatalf("Run %d: %v", i, err)
		}
	}
	if err := srv.Apply(gw(), nil); err == nil {
		t.Error("Apply after Run returned: got nil, want an error")
	}
}

func TestBadLimitsRefused(t *testing.T) {
	f := startServer(t, nil)
	g := gw()
	g.Spec.Limits = &config.GatewayLimits{IdleTimeout: "soon"}
	err := f.srv.Apply(g, nil)
	if err == nil || !strings.Contains(err.Error(), "spec.limits.idleTimeout") {
		t.Errorf("got %v, want an error naming spec.limits.idleTimeout", err)
	}
}

// rawTLS sends req over TLS (ALPN proto) to addr and returns what the
// server answered until it closed the connection (bounded).
func rawTLS(t *testing.T, addr, proto, req string) (string, bool) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addr, &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{proto}, //nolint:gosec // self-signed
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().NegotiatedProtocol; got != proto {
		t.Fatalf("ALPN: got %q, want %q", got, proto)
	}
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	return string(b), err == nil
}

func TestHTTPSFraming(t *testing.T) {
	f, addrs := limitedGateway(t, &config.GatewayLimits{MaxRequestHeaderBytes: 4096})
	for _, tc := range []struct {
		name, proto, req string
		wantPrefix       string
	}{
		{"duplicate_content_length", "http/1.1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc", "HTTP/1.1 400 "},
		{"cl_and_te", "http/1.1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 "},
		{"h2_preface_without_alpn", "http/1.1", http2.ClientPreface, "HTTP/1.1 400 "},
		{"header_over_limit_431", "http/1.1", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 10000) + "\r\n\r\n", "HTTP/1.1 431 "},
		{"http1_after_alpn_h2", "h2", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := rawTLS(t, addrs["https"], tc.proto, tc.req)
			if !strings.HasPrefix(got, tc.wantPrefix) || tc.wantPrefix == "" && got != "" {
				t.Errorf("got %.80q, want %q and the connection closed", got, tc.wantPrefix)
			}
			if strings.Count(got, "HTTP/1.1 ") > 1 {
				t.Errorf("got several answers: %.200q", got)
			}
		})
	}
	if got := f.closedCount("https", "bad_framing"); got < 4 {
		t.Errorf("bad_framing closes: got %v, want at least 4", got)
	}
}
