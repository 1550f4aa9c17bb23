package up_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/up"
)

var issuerSpec = config.DemoIssuer{Provider: "edge/shop-users", Issuer: "bulwark-up-demo", Listen: "127.0.0.1:0"}

// newTestIssuer returns an issuer on a fake clock, its HTTP server on
// loopback, and its log.
func newTestIssuer(t *testing.T) (*up.Issuer, *clock.Fake, *httptest.Server, *bytes.Buffer) {
	t.Helper()
	clk := clock.NewFake(time.Now())
	var log bytes.Buffer
	is, err := up.NewIssuer(issuerSpec, clk, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(is.Handler())
	t.Cleanup(srv.Close)
	return is, clk, srv, &log
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// TestIssuerTokenVerifies: a token of the issuer passes the JWTProvider it
// makes (through the same authn package the gateway uses), with the
// principal "<iss>/<sub>" and the scope claim; an hour later it is
// expired; the token never appears in the issuer's log.
func TestIssuerTokenVerifies(t *testing.T) {
	is, clk, srv, log := newTestIssuer(t)
	p := is.Provider()
	if p.Metadata.Namespace != "edge" || p.Metadata.Name != "shop-users" || p.Spec.Issuer != "bulwark-up-demo" {
		t.Fatalf("provider: got %s/%s issuer %q, want edge/shop-users issuer bulwark-up-demo", p.Metadata.Namespace, p.Metadata.Name, p.Spec.Issuer)
	}
	if strings.Contains(p.Spec.JWKS, `"d"`) {
		t.Fatalf("the provider's JWKS holds a private key: %s", p.Spec.JWKS)
	}
	// The provider is a valid resource as the control plane will see it.
	doc, err := config.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := config.Decode(doc)
	if err != nil {
		t.Fatalf("the provider does not validate: %v", err)
	}
	a, err := authn.New([]authn.Provider{{Spec: objs[0].(*config.JWTProvider), JWKS: []byte(p.Spec.JWKS)}}, clk)
	if err != nil {
		t.Fatal(err)
	}

	code, body := get(t, srv.URL+"/token?sub=alice&scope=orders+read:all")
	if code != http.StatusOK {
		t.Fatalf("GET /token: got %d %q, want 200", code, body)
	}
	tok := strings.TrimSpace(body)
	r := httptest.NewRequest(http.MethodGet, "/api/orders", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	res, err := a.Authenticate(r)
	if err != nil {
		t.Fatalf("authenticate the demo token: %v", err)
	}
	if res.Principal != "bulwark-up-demo/alice" {
		t.Errorf("principal: got %q, want bulwark-up-demo/alice", res.Principal)
	}
	if got := res.Claims["scope"]; got != "orders read:all" {
		t.Errorf("scope claim: got %v, want \"orders read:all\"", got)
	}
	if strings.Contains(log.String(), tok) || strings.Contains(log.String(), strings.Split(tok, ".")[2]) {
		t.Errorf("the issuer logged the token:\n%s", log.String())
	}
	if !strings.Contains(log.String(), "subject=alice") {
		t.Errorf("the issuer did not log whom it issued a token to:\n%s", log.String())
	}

	clk.Advance(time.Hour + 2*time.Minute) // past exp and the default 60s skew
	r = httptest.NewRequest(http.MethodGet, "/api/orders", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	var ae *authn.Error
	if _, err := a.Authenticate(r); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("a token older than an hour: got %v, want a 401 error", err)
	}

	// Another issuer (another key) signs tokens this provider refuses.
	_, _, osrv, _ := newTestIssuer(t)
	_, body = get(t, osrv.URL+"/token?sub=alice")
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(body))
	clk.Advance(-time.Hour - 2*time.Minute)
	if _, err := a.Authenticate(r); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("a token of another issuer's key: got %v, want a 401 error", err)
	}
}

// TestIssuerRefuses: every bad request gets a clear 4xx, never a token.
func TestIssuerRefuses(t *testing.T) {
	_, _, srv, _ := newTestIssuer(t)
	for _, tc := range []struct {
		name, method, target string
		code                 int
		want                 string
	}{
		{"no_sub", "GET", "/token", 400, "sub is required"},
		{"empty_sub", "GET", "/token?sub=", 400, "sub is required"},
		{"unknown_parameter", "GET", "/token?sub=a&exp=99999999999", 400, `unknown parameter "exp"`},
		{"repeated_sub", "GET", "/token?sub=a&sub=b", 400, "parameter sub given 2 times"},
		{"sub_with_slash", "GET", "/token?sub=a/b", 400, "sub may contain"},
		{"sub_with_newline", "GET", "/token?sub=a%0Ab", 400, "sub may contain"},
		{"long_sub", "GET", "/token?sub=" + strings.Repeat("a", 65), 400, "sub is longer than 64 bytes"},
		{"bad_scope", "GET", "/token?sub=a&scope=%22x%22", 400, "scopes may contain"},
		{"too_many_scopes", "GET", "/token?sub=a&scope=" + strings.Repeat("s+", 17), 400, "more than 16 scopes"},
		{"long_scope", "GET", "/token?sub=a&scope=" + strings.Repeat("s", 65), 400, "a scope is longer than 64 bytes"},
		{"bad_escape", "GET", "/token?sub=%zz", 400, "not valid URL encoding"},
		{"empty_name", "GET", "/token?=a&sub=b", 400, "empty parameter name"},
		{"post", "POST", "/token?sub=a", 405, "use GET"},
		{"other_path", "GET", "/jwks?sub=a", 404, "GET /token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
				t.Errorf("got %d %q, want %d with %q", res.StatusCode, b, tc.code, tc.want)
			}
			if strings.Count(string(b), ".") >= 2 && res.StatusCode == 200 {
				t.Errorf("got a token")
			}
		})
	}
}

// TestIssuerLoopbackOnly: a client that is not on loopback gets 403 even
// if the issuer was bound to another address.
func TestIssuerLoopbackOnly(t *testing.T) {
	is, _, _, _ := newTestIssuer(t)
	for _, remote := range []string{"192.0.2.1:4000", "[2001:db8::1]:4000", "garbage"} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/token?sub=alice", nil)
		r.RemoteAddr = remote
		is.Handler().ServeHTTP(w, r)
		if w.Code != http.StatusForbidden {
			t.Errorf("from %s: got %d %q, want 403", remote, w.Code, w.Body.String())
		}
	}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{{"127.0.0.1:8079", true}, {"[::1]:0", true}, {"0.0.0.0:8079", false}, {"192.0.2.1:8079", false}, {"localhost:8079", false}, {"127.0.0.1", false}} {
		if err := up.CheckLoopback(tc.addr); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q): got %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}

// TestSelfSigned: the certificate is ECDSA P-256, valid 30 days, for
// localhost, 127.0.0.1 and ::1 only, server auth only, its key matches, and
// a TLS client that trusts it (curl --cacert) completes a real handshake
// for each name.
func TestSelfSigned(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	certPEM, keyPEM, err := up.SelfSigned(now)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key: got %T, want ECDSA P-256", cert.PublicKey)
	}
	if got := cert.NotAfter.Sub(now); got != up.SelfSignedTTL || got != 30*24*time.Hour {
		t.Errorf("lifetime: got %s, want 720h", got)
	}
	if cert.IsCA || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("got IsCA %v, ext key usage %v, want a server certificate only", cert.IsCA, cert.ExtKeyUsage)
	}
	if got := strings.Join(cert.DNSNames, ","); got != "localhost" {
		t.Errorf("DNS names: got %q, want localhost", got)
	}
	if len(cert.IPAddresses) != 2 || !cert.IPAddresses[0].Equal([]byte{127, 0, 0, 1}) || cert.IPAddresses[1].String() != "::1" {
		t.Errorf("IP addresses: got %v, want 127.0.0.1 and ::1", cert.IPAddresses)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("key does not match the certificate: %v", err)
	}
	if strings.Contains(string(keyPEM), "EC PRIVATE KEY") || !strings.Contains(string(keyPEM), "BEGIN PRIVATE KEY") {
		t.Errorf("key: want PKCS#8 PEM")
	}

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	for _, name := range []string{"localhost", "127.0.0.1"} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name}}}
		res, err := c.Get("https://127.0.0.1:" + port + "/")
		if err != nil {
			t.Errorf("a client trusting the certificate, name %s: %v", name, err)
			continue
		}
		res.Body.Close()
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "shop.example"}}}
	if res, err := c.Get("https://127.0.0.1:" + port + "/"); err == nil {
		res.Body.Close()
		t.Errorf("name shop.example: got a verified connection, want a name mismatch")
	}
}
