package proxy_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

// FuzzInboundRequest sends random requests (method, request-target,
// :authority, a header, a host field) to the inbound handler as net/http's
// HTTP/2 server would hand them over (inputs that server refuses are
// skipped), from shop/web's verified certificate, with the request's
// r.TLS set as the server sets it. The handler never answers 5xx (but 503
// without a snapshot), and the app only ever receives an allowed GET for a
// normalized /public/ path, with the proxy's identity header alone.
func FuzzInboundRequest(f *testing.F) {
	a := newAuthority(f)
	app := newApp(f, "default/api")
	api := newNode(f, a, apiSvc, app.addr())
	api.apply(f, apiSnapshot(f, a, 1))
	cold := newNode(f, a, apiSvc, app.addr()) // no snapshot
	web := a.svid(f, workloadID(f, "shop", "web"))
	peer := &tls.ConnectionState{
		Version: tls.VersionTLS13, HandshakeComplete: true, NegotiatedProtocol: "h2", ServerName: "api.default",
		PeerCertificates: web.svid.Certificates,
	}
	wantXFCC := "By=" + api.id().String() + ";URI=" + web.svid.ID.String()

	for _, s := range [][5]string{
		{"GET", "/public/x", "api.default", "x-a", "b"},
		{"GET", "/public/%2e%2e/private", "api.default", "", ""},
		{"GET", "/public/..;/private", "api.default", "", ""},
		{"GET", "/public/%2F..%2Fprivate", "api.default", "", ""},
		{"GET", "/public/%5c../private", "api.default", "", ""},
		{"GET", "//public//./x/", "api.default", "", ""},
		{"GET", "/public/%00", "api.default", "", ""},
		{"GET", "/public/x?a=b&c=%00", "API.DEFAULT", "", ""},
		{"GET", "/public/x#frag", "api.default", "", ""},
		{"get", "/public/x", "api.default", "", ""},
		{"OPTIONS", "*", "api.default", "", ""},
		{"CONNECT", "", "api.default:443", "", ""},
		{"GET", "http://api.default/public/x", "api.default", "", ""},
		{"GET", "/public/x", "api.default", "x-forwarded-client-cert", "By=x;URI=spiffe://bulwark.test/ns/kube-system/sa/admin"},
		{"GET", "/public/x", "api.default", "x_bulwark_identity", "admin"},
		{"GET", "/public/x", "api.default", "host", "secret.default"},
		{"GET", "/public/x", "", "host", "api.default"},
		{"POST", "/public/x", "api.default", "content-length", "0"},
		{"GET", "/public/\xc3\xa9", "[::1]:8443", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, method, target, authority, name, value string) {
		r, ok := h2Request(method, target, authority, name, value)
		if !ok {
			t.Skip("net/http's HTTP/2 server refuses this request")
		}
		r.TLS = peer

		before := len(app.requests())
		rec := httptest.NewRecorder()
		cold.engine.Inbound().ServeHTTP(rec, r.Clone(context.Background()))
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("without a snapshot: got %d %q, want 4xx or 503", rec.Code, rec.Body)
		}

		rec = httptest.NewRecorder()
		api.engine.Inbound().ServeHTTP(rec, r)
		if rec.Code >= 500 {
			t.Fatalf("got %d %q for %s %q (authority %q, %s: %q), want no 5xx", rec.Code, rec.Body, method, target, authority, name, value)
		}
		got := app.requests()[before:]
		if rec.Code != http.StatusOK {
			if len(got) != 0 {
				t.Fatalf("answered %d but the app received %+v", rec.Code, got)
			}
			return
		}
		if len(got) != 1 {
			t.Fatalf("answered 200 but the app received %d requests", len(got))
		}
		seen := got[0]
		path, _, _ := strings.Cut(seen.RequestURI, "?")
		if norm, err := pathnorm.Normalize(path); err != nil || norm != path {
			t.Errorf("the app received the path %q, not normalized (Normalize: %q, %v)", path, norm, err)
		}
		if seen.Method != http.MethodGet || !strings.HasPrefix(path, "/public/") {
			t.Errorf("the app received %s %q, which the policy does not allow", seen.Method, seen.RequestURI)
		}
		if v := seen.Header.Values("X-Forwarded-Client-Cert"); len(v) != 1 || v[0] != wantXFCC {
			t.Errorf("the app received X-Forwarded-Client-Cert %q, want only %q", v, wantXFCC)
		}
	})
}

// h2Request builds the request net/http's HTTP/2 server hands to a handler
// for a HEADERS frame with these fields, and reports false for one it
// refuses (a stream error before any handler runs).
func h2Request(method, target, authority, name, value string) (*http.Request, bool) {
	if method == "" || !isToken(method) {
		return nil, false
	}
	h := http.Header{}
	if name != "" {
		if name != strings.ToLower(name) || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return nil, false
		}
		switch name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te":
			return nil, false
		}
		h.Add(name, value)
	}
	if authority == "" {
		authority = h.Get("Host")
	}
	if strings.IndexByte(authority, '@') >= 0 || !httpguts.ValidHostHeader(authority) {
		return nil, false
	}
	r := &http.Request{
		Method: method, Proto: "HTTP/2.0", ProtoMajor: 2, Header: h, Host: authority,
		RemoteAddr: "127.0.0.1:40000", Body: http.NoBody,
	}
	if method == http.MethodConnect {
		if target != "" || authority == "" {
			return nil, false
		}
		r.URL, r.RequestURI = &url.URL{Host: authority}, authority
		return r.WithContext(context.Background()), true
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, false
	}
	r.URL, r.RequestURI = u, target
	return r.WithContext(context.Background()), true
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return true
}
