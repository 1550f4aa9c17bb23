package dashboard_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/dashboard"
)

// fakeAPI stands for the admin API: it records who asked what and answers
// from a table.
type fakeAPI struct {
	mu      sync.Mutex
	calls   []string
	answers map[string]string // "METHOD /path?query" or "METHOD /path" -> JSON
	denied  map[string]bool   // paths answered 403
}

func (f *fakeAPI) ServeOperator(w http.ResponseWriter, r *http.Request, op string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.Method + " " + r.URL.RequestURI()
	f.calls = append(f.calls, op+" "+key)
	if f.denied[r.URL.Path] {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":"forbidden"}`)
		return
	}
	body, ok := f.answers[key]
	if !ok {
		body, ok = f.answers[r.Method+" "+r.URL.Path]
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":"no such route"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, body)
}

func (f *fakeAPI) set(key, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[key] = body
}

func (f *fakeAPI) callsSoFar() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

const meAll = `{"operator":"alice","rights":{"Denial":{"everywhere":true,"namespaces":[]},"Edge":{"everywhere":true,"namespaces":[]},"Proxy":{"everywhere":false,"namespaces":["a","b"]}}}`

func newAPI() *fakeAPI {
	return &fakeAPI{answers: map[string]string{
		"GET /v1/me":                    meAll,
		"GET /v1/denials?since=1h":      `{"items":[]}`,
		"GET /v1/edges?since=15m":       `{"items":[{"n":1}]}`,
		"GET /v1/proxies?namespace=a":   `{"items":[{"p":"a"}]}`,
		"GET /v1/proxies?namespace=b":   `{"items":[{"p":"b"}]}`,
		"GET /v1/edges":                 `{"items":[]}`,
		"POST /v1/policy/explain":       `{"decision":"allow"}`,
		"GET /v1/authorizationpolicies": `{"items":[]}`,
	}, denied: map[string]bool{}}
}

var t0 = time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)

type fixture struct {
	api   *fakeAPI
	clock *clock.Fake
	srv   *dashboard.Server
	fails []string
	mu    sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{api: newAPI(), clock: clock.NewFake(t0)}
	srv, err := dashboard.New(dashboard.Config{
		API: f.api,
		CertOperator: func(r *http.Request) (string, error) {
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				return "", errors.New("no certificate")
			}
			return r.TLS.PeerCertificates[0].Subject.CommonName, nil
		},
		Hosts:   []string{"localhost", "127.0.0.1"},
		Failure: func(addr, reason string) { f.mu.Lock(); f.fails = append(f.fails, reason); f.mu.Unlock() },
		Assets:  fstest.MapFS{"index.html": {Data: []byte("<!doctype html><script src=app.js></script>")}, "app.js": {Data: []byte("main()")}},
		Clock:   f.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	return f
}

// request serves one request from a loopback peer with the cookie, if any.
func (f *fixture) request(method, target, cookie string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "https://127.0.0.1:8444"+target, nil)
	r.RemoteAddr = "127.0.0.1:40000"
	if method == http.MethodPost {
		r.Header.Set("Origin", "https://127.0.0.1:8444")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	if cookie != "" {
		r.AddCookie(&http.Cookie{Name: dashboard.CookieName, Value: cookie})
	}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	return w
}

// login issues a link for op and redeems it; it returns the cookie value.
func (f *fixture) login(t *testing.T, op string) string {
	t.Helper()
	tok, _, err := f.srv.IssueLogin(op, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := f.request(http.MethodGet, "/ui/login?token="+url.QueryEscape(tok), "")
	if w.Code != http.StatusSeeOther {
		t.Fatalf("redeem: got %d %q, want 303", w.Code, w.Body)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == dashboard.CookieName {
			return c.Value
		}
	}
	t.Fatal("redeem: no session cookie")
	return ""
}

func TestUnauthenticatedGetsNothing(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/api/me", "/ui/api/events", "/ui/api/v1/edges", "/ui/missing"} {
		w := f.request(http.MethodGet, p, "")
		if w.Code != http.StatusUnauthorized || strings.Contains(w.Body.String(), "<") || strings.Contains(w.Body.String(), "main()") {
			t.Errorf("GET %s: got %d %q, want 401 and no content", p, w.Code, w.Body)
		}
		if w.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", p)
		}
	}
	if w := f.request(http.MethodGet, "/ui/", "bogus-session"); w.Code != http.StatusUnauthorized {
		t.Errorf("forged cookie: got %d, want 401", w.Code)
	}
	if len(f.api.callsSoFar()) != 0 {
		t.Errorf("the API was called for unauthenticated requests: %v", f.api.callsSoFar())
	}
}

func TestLoginLink(t *testing.T) {
	f := newFixture(t)
	tok, exp, err := f.srv.IssueLogin("alice", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("expiry: got %v, want %v", exp, t0.Add(2*time.Minute))
	}
	w := f.request(http.MethodGet, "/ui/login?token="+tok, "")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/" {
		t.Fatalf("redeem: got %d to %q, want 303 to /ui/", w.Code, w.Header().Get("Location"))
	}
	sc := w.Header().Get("Set-Cookie")
	for _, want := range []string{dashboard.CookieName + "=", "Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=28800"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q: want %s", sc, want)
		}
	}
	if w := f.request(http.MethodGet, "/ui/login?token="+tok, ""); w.Code != http.StatusUnauthorized {
		t.Errorf("second use: got %d, want 401", w.Code)
	}

	// Expired.
	tok2, _, _ := f.srv.IssueLogin("alice", time.Minute)
	f.clock.Advance(time.Minute)
	if w := f.request(http.MethodGet, "/ui/login?token="+tok2, ""); w.Code != http.StatusUnauthorized {
		t.Errorf("expired link: got %d, want 401", w.Code)
	}
	// Longer than the maximum: capped.
	_, exp3, _ := f.srv.IssueLogin("alice", time.Hour)
	if want := f.clock.Now().Add(dashboard.DefaultLoginTTL); !exp3.Equal(want) {
		t.Errorf("ttl above the maximum: expires %v, want %v", exp3, want)
	}
	if _, _, err := f.srv.IssueLogin("alice", -time.Second); err == nil {
		t.Errorf("negative ttl: no error")
	}
	// From another machine: refused, and the link is spent.
	tok4, _, _ := f.srv.IssueLogin("alice", 0)
	r := httptest.NewRequest(http.MethodGet, "https://127.0.0.1:8444/ui/login?token="+tok4, nil)
	r.RemoteAddr = "192.0.2.7:5000"
	rw := httptest.NewRecorder()
	f.srv.ServeHTTP(rw, r)
	if rw.Code != http.StatusUnauthorized {
		t.Errorf("non-loopback redeem: got %d, want 401", rw.Code)
	}
	if w := f.request(http.MethodGet, "/ui/login?token="+tok4, ""); w.Code != http.StatusUnauthorized {
		t.Errorf("a link tried from another machine still works from loopback: got %d", w.Code)
	}
	// A login link opened from another site (login CSRF) is refused.
	tok5, _, _ := f.srv.IssueLogin("alice", 0)
	if w := f.request(http.MethodGet, "/ui/login?token="+tok5, "", "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"); w.Code != http.StatusForbidden {
		t.Errorf("login link from another site: got %d, want 403", w.Code)
	}
	for _, bad := range []string{"", "x", strings.Repeat("A", 43), strings.Repeat("A", 500)} {
		if w := f.request(http.MethodGet, "/ui/login?token="+bad, ""); w.Code != http.StatusUnauthorized {
			t.Errorf("token %.10q: got %d, want 401", bad, w.Code)
		}
	}
	if len(f.fails) < 5 {
		t.Errorf("failures recorded: got %d (%v), want every refused link", len(f.fails), f.fails)
	}
}

func TestSessionExpires(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []time.Duration // advance, then use the session
		want  int
	}{
		{"used within idle", []time.Duration{50 * time.Minute, 50 * time.Minute}, http.StatusOK},
		{"idle for an hour", []time.Duration{time.Hour}, http.StatusUnauthorized},
		{"absolute lifetime", []time.Duration{50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute,
			50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute}, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			c := f.login(t, "alice")
			var got int
			for _, d := range tc.steps {
				f.clock.Advance(d)
				got = f.request(http.MethodGet, "/ui/", c).Code
			}
			if got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestLogout(t *testing.T) {
	f := newFixture(t)
	c := f.login(t, "alice")
	if w := f.request(http.MethodPost, "/ui/logout", c); w.Code != http.StatusNoContent {
		t.Fatalf("logout: got %d, want 204", w.Code)
	}
	if w := f.request(http.MethodGet, "/ui/", c); w.Code != http.StatusUnauthorized {
		t.Errorf("after logout: got %d, want 401", w.Code)
	}
}

func TestBrowserGuards(t *testing.T) {
	f := newFixture(t)
	c := f.login(t, "alice")
	for _, tc := range []struct {
		name   string
		method string
		target string
		hdr    []string
		want   int
	}{
		{"page", http.MethodGet, "/ui/", nil, http.StatusOK},
		{"foreign host", http.MethodGet, "/ui/", []string{"Host", "evil.example"}, http.StatusMisdirectedRequest},
		{"rebinding host with port", http.MethodGet, "/ui/api/me", []string{"Host", "attacker.test:8444"}, http.StatusMisdirectedRequest},
		{"cross-site fetch", http.MethodGet, "/ui/api/v1/edges", []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"same-site fetch", http.MethodGet, "/ui/api/v1/edges", []string{"Sec-Fetch-Site", "same-site"}, http.StatusForbidden},
		{"cross-site navigation to the API", http.MethodGet, "/ui/api/v1/edges", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"}, http.StatusForbidden},
		{"cross-site navigation to a page", http.MethodGet, "/ui/", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"}, http.StatusOK},
		{"cross-site script load", http.MethodGet, "/ui/app.js", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "no-cors"}, http.StatusForbidden},
		{"foreign origin GET", http.MethodGet, "/ui/api/v1/edges", []string{"Origin", "https://evil.example"}, http.StatusForbidden},
		{"POST without origin", http.MethodPost, "/ui/api/v1/policy/explain", []string{"Origin", ""}, http.StatusForbidden},
		{"POST foreign origin", http.MethodPost, "/ui/api/v1/policy/explain", []string{"Origin", "https://evil.example"}, http.StatusForbidden},
		{"POST explain", http.MethodPost, "/ui/api/v1/policy/explain", nil, http.StatusOK},
		{"POST apply", http.MethodPost, "/ui/api/v1/apply", nil, http.StatusMethodNotAllowed},
		{"POST delete", http.MethodPost, "/ui/api/v1/delete", nil, http.StatusMethodNotAllowed},
		{"PUT", http.MethodPut, "/ui/api/v1/edges", nil, http.StatusMethodNotAllowed},
		{"DELETE", http.MethodDelete, "/ui/api/v1/namespaces/a/authorizationpolicies/x", nil, http.StatusMethodNotAllowed},
		{"audit export", http.MethodGet, "/ui/api/v1/audit/export", nil, http.StatusForbidden},
		{"mint a link", http.MethodPost, "/ui/api/v1/dashboard/login", nil, http.StatusForbidden},
		{"traversal", http.MethodGet, "/ui/../v1/apply", nil, http.StatusNotFound},
		{"dot segments", http.MethodGet, "/ui/a/../app.js", nil, http.StatusNotFound},
		{"asset", http.MethodGet, "/ui/app.js", nil, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "https://127.0.0.1:8444/", nil)
			r.URL.Path, r.RequestURI = tc.target, tc.target
			r.RemoteAddr = "127.0.0.1:40000"
			if tc.method == http.MethodPost {
				r.Header.Set("Origin", "https://127.0.0.1:8444")
			}
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				if tc.hdr[i] == "Host" {
					r.Host = tc.hdr[i+1]
					continue
				}
				r.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			r.AddCookie(&http.Cookie{Name: dashboard.CookieName, Value: c})
			w := httptest.NewRecorder()
			f.srv.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("%s %s: got %d %q, want %d", tc.method, tc.target, w.Code, w.Body, tc.want)
			}
		})
	}
	// The bridge calls the API as the session's operator, with the query.
	f.request(http.MethodGet, "/ui/api/v1/edges?since=5m&namespace=a", c)
	calls := f.api.callsSoFar()
	if got, want := calls[len(calls)-1], "alice GET /v1/edges?since=5m&namespace=a"; got != want {
		t.Errorf("bridged call: got %q, want %q", got, want)
	}
	for _, call := range calls {
		if strings.Contains(call, "apply") || strings.Contains(call, "export") || strings.Contains(call, "dashboard/login") {
			t.Errorf("a refused route reached the API: %q", call)
		}
	}
}

func TestMe(t *testing.T) {
	f := newFixture(t)
	c := f.login(t, "alice")
	w := f.request(http.MethodGet, "/ui/api/me", c)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"session":true`) || !strings.Contains(w.Body.String(), `"expiresAt":"2026-11-24T08:00:00Z"`) {
		t.Errorf("me: got %d %s", w.Code, w.Body)
	}
}

// TestEvents reads the event stream over a real TLS connection: the views
// the operator may read come at once, a change comes at the next tick, a
// view the operator may not read never comes.
func TestEvents(t *testing.T) {
	f := newFixture(t)
	f.api.denied["/v1/denials"] = true // the rights say yes, the route says no: dropped
	c := f.login(t, "alice")
	ts := httptest.NewTLSServer(f.srv)
	defer ts.Close()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/ui/api/events", nil)
	req.Host = "127.0.0.1"
	req.AddCookie(&http.Cookie{Name: dashboard.CookieName, Value: c})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	created := f.clock.TimerCreated()
	resp, err := ts.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("events: got %d %s", resp.StatusCode, ct)
	}
	rd := bufio.NewReader(resp.Body)
	events := func(n int) map[string]string {
		got := map[string]string{}
		var name string
		for len(got) < n {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("read events: %v (got %v)", err, got)
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				got[name] = strings.TrimPrefix(line, "data: ")
			}
		}
		return got
	}
	first := events(2)
	if first["edges"] != `{"items":[{"n":1}]}` || first["proxies"] == "" {
		t.Errorf("first events: got %v", first)
	}
	if !strings.Contains(first["proxies"], `{"p":"a"}`) || !strings.Contains(first["proxies"], `{"p":"b"}`) {
		t.Errorf("proxies of namespaces a and b merged: got %s", first["proxies"])
	}
	if _, ok := first["denials"]; ok {
		t.Errorf("a view answered 403 was sent")
	}
	<-created
	f.api.set("GET /v1/edges?since=15m", `{"items":[{"n":2}]}`)
	for range 5 {
		created = f.clock.TimerCreated()
		f.clock.Advance(time.Second)
		<-created
	}
	if got := events(1); got["edges"] != `{"items":[{"n":2}]}` {
		t.Errorf("after the change: got %v", got)
	}
}

func TestStreamsPerOperatorBounded(t *testing.T) {
	f := newFixture(t)
	c := f.login(t, "alice")
	ts := httptest.NewTLSServer(f.srv)
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var codes []int
	for range 9 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/ui/api/events", nil)
		req.Host = "127.0.0.1"
		req.AddCookie(&http.Cookie{Name: dashboard.CookieName, Value: c})
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode != http.StatusOK {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	if codes[7] != http.StatusOK || codes[8] != http.StatusTooManyRequests {
		t.Errorf("streams: got %v, want 8 x 200 then 429", codes)
	}
}

// TestClientCertificate authenticates with a verified client certificate
// over real TLS, without any session.
func TestClientCertificate(t *testing.T) {
	f := newFixture(t)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bob"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, &key.PublicKey, caKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	ts := httptest.NewUnstartedServer(f.srv)
	ts.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	ts.StartTLS()
	defer ts.Close()
	cl := ts.Client()
	cl.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/ui/api/v1/edges", nil)
	req.Host = "127.0.0.1"
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	calls := f.api.callsSoFar()
	if resp.StatusCode != http.StatusOK || len(calls) == 0 || calls[len(calls)-1] != "bob GET /v1/edges" {
		t.Errorf("with a certificate: got %d, calls %v", resp.StatusCode, calls)
	}
}
