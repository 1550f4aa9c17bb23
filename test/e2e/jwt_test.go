package e2e_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

const jwtTestIssuer = "https://idp.example"

// jwksIdP is a real HTTPS JWKS endpoint whose published keys the test
// rotates, and the private keys that sign the test's tokens.
type jwksIdP struct {
	srv  *httptest.Server
	keys map[string]*ecdsa.PrivateKey

	mu        sync.Mutex
	published []string // kids
}

func newJWKSIdP(t *testing.T, kids ...string) *jwksIdP {
	t.Helper()
	idp := &jwksIdP{keys: map[string]*ecdsa.PrivateKey{}}
	for _, kid := range kids {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		idp.keys[kid] = k
	}
	idp.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(idp.jwks(t))
	}))
	t.Cleanup(idp.srv.Close)
	return idp
}

// publish sets the kids the endpoint serves.
func (idp *jwksIdP) publish(kids ...string) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.published = kids
}

func (idp *jwksIdP) jwks(t *testing.T) []byte {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	set := jwk.NewSet()
	for _, kid := range idp.published {
		pub, err := jwk.Import(idp.keys[kid].Public())
		if err != nil {
			t.Error(err)
			return nil
		}
		_ = pub.Set(jwk.KeyIDKey, kid)
		_ = set.AddKey(pub)
	}
	b, _ := json.Marshal(set)
	return b
}

// caPEM is the PEM of the endpoint's certificate, its own CA.
func (idp *jwksIdP) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: idp.srv.Certificate().Raw}))
}

// token signs a token for sub with the key kid, valid for ten minutes.
func (idp *jwksIdP) token(t *testing.T, kid, sub string) string {
	t.Helper()
	payload, err := json.Marshal(map[string]any{
		"iss": jwtTestIssuer, "sub": sub, "aud": "api", "team": "blue",
		"iat": time.Now().Unix(), "exp": time.Now().Add(10 * time.Minute).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), idp.keys[kid], jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// jwtResources: the JWT provider of api (fetching the test's endpoint
// every second, a token required, the team claim for the app) and a policy
// letting client call api only for alice.
func jwtResources(idp *jwksIdP) string {
	indented := "      " + strings.ReplaceAll(strings.TrimSpace(idp.caPEM()), "\n", "\n      ")
	return `apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: default}
spec:
  selector: {service: api}
  issuer: ` + jwtTestIssuer + `
  jwksURI: ` + idp.srv.URL + `/.well-known/jwks.json
  jwksCA: |
` + indented + `
  audiences: [api]
  required: true
  refreshInterval: 1s
  claimsToHeaders:
  - {claim: team, header: X-Team}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: alice-to-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/client], requestPrincipals: ["` + jwtTestIssuer + `/alice"]}
`
}

// jwtEchoApp answers with the headers and query it received.
func jwtEchoApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"headers": r.Header, "query": r.URL.RawQuery})
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// jwtSeen is what jwtEchoApp answers.
type jwtSeen struct {
	Headers http.Header `json:"headers"`
	Query   string      `json:"query"`
}

// TestJWT: JWT authentication at the callee's sidecar with keys a real
// HTTPS JWKS endpoint publishes, fetched by the control plane: 401 without
// a token or with a bad one, 403 for a valid token no policy allows, 200
// for alice with the claim header and without the token; keys rotated by
// kid on the endpoint take effect without a restart; when the endpoint goes
// down the last good keys keep working and the control plane counts the
// failed fetches; a 1 MB token is refused without harm.
func TestJWT(t *testing.T) {
	t.Parallel()
	idp := newJWKSIdP(t, "k1", "k2")
	idp.publish("k1")
	controlMetrics := freeAddr(t)
	m := startControl(t, "--metrics", controlMetrics)
	api := m.startProxy("default/api", jwtEchoApp(t))
	client := m.startClientProxy("default/client")
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "jwt.yaml", jwtResources(idp)))

	c := client.client()
	send := func(headers map[string]string) (int, http.Header, string, error) {
		req, err := http.NewRequest(http.MethodGet, "http://api.default/data?x=1", nil)
		if err != nil {
			return 0, nil, "", err
		}
		req.Header.Set("X-Team", "spoofed")
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b), nil
	}
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	wantStatus := func(t *testing.T, what string, headers map[string]string, want int) string {
		t.Helper()
		code, _, body, err := send(headers)
		if err != nil || code != want {
			t.Fatalf("%s: got %d %q %v, want %d", what, code, body, err, want)
		}
		return body
	}
	statusIs := func(headers map[string]string, want int) func() error {
		return func() error {
			code, _, body, err := send(headers)
			if err != nil || code != want {
				return fmt.Errorf("got %d %q %v, want %d", code, body, err, want)
			}
			return nil
		}
	}

	// The provider and its fetched keys reach api's sidecar.
	alice1 := idp.token(t, "k1", "alice")
	eventually(t, 20*time.Second, "alice allowed with a k1 token", statusIs(bearer(alice1), http.StatusOK))

	t.Run("no_token_is_401", func(t *testing.T) {
		code, h, body, err := send(nil)
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("got %d %q %v, want 401", code, body, err)
		}
		if got := h.Get("WWW-Authenticate"); got != "Bearer" {
			t.Errorf("got WWW-Authenticate %q, want Bearer", got)
		}
	})
	t.Run("garbage_token_is_401", func(t *testing.T) {
		code, h, body, err := send(bearer("garbage.garbage.garbage"))
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("got %d %q %v, want 401", code, body, err)
		}
		if got := h.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
			t.Errorf("got WWW-Authenticate %q", got)
		}
		if strings.Contains(body, "garbage") || strings.Contains(body, "malformed") {
			t.Errorf("the 401 body %q is not opaque", body)
		}
	})
	t.Run("bob_is_403", func(t *testing.T) {
		wantStatus(t, "bob", bearer(idp.token(t, "k1", "bob")), http.StatusForbidden)
	})
	t.Run("alice_app_sees_claims_not_the_token", func(t *testing.T) {
		var s jwtSeen
		if err := json.Unmarshal([]byte(wantStatus(t, "alice", bearer(alice1), http.StatusOK)), &s); err != nil {
			t.Fatal(err)
		}
		if got := s.Headers.Values("X-Team"); len(got) != 1 || got[0] != "blue" {
			t.Errorf("got X-Team %q at the app, want [blue] (the claim, not the client's)", got)
		}
		if got := s.Headers.Get("Authorization"); got != "" {
			t.Errorf("the app got the token: %q", got)
		}
		if s.Query != "x=1" {
			t.Errorf("got query %q, want x=1", s.Query)
		}
	})
	t.Run("token_over_16KiB_is_401", func(t *testing.T) {
		wantStatus(t, "20 KiB token", bearer(alice1+strings.Repeat("A", 20<<10)), http.StatusUnauthorized)
	})
	t.Run("one_megabyte_token", func(t *testing.T) {
		code, _, _, err := send(bearer(strings.Repeat("A", 1<<20)))
		if err == nil && (code < 400 || code > 499) {
			t.Errorf("got %d, want 4xx", code)
		}
		t.Logf("1 MB token: status %d, error %v", code, err)
		wantStatus(t, "alice after the 1 MB token", bearer(alice1), http.StatusOK)
	})

	t.Run("rotation", func(t *testing.T) {
		alice2 := idp.token(t, "k2", "alice")
		wantStatus(t, "a k2 token before k2 is published", bearer(alice2), http.StatusUnauthorized)
		idp.publish("k1", "k2")
		eventually(t, 20*time.Second, "a k2 token accepted", statusIs(bearer(alice2), http.StatusOK))
		wantStatus(t, "a k1 token while k1 is published", bearer(alice1), http.StatusOK)
		idp.publish("k2")
		eventually(t, 20*time.Second, "a k1 token refused", statusIs(bearer(alice1), http.StatusUnauthorized))
		wantStatus(t, "a k2 token", bearer(alice2), http.StatusOK)
	})

	t.Run("endpoint_down_keeps_last_good_keys", func(t *testing.T) {
		alice2 := idp.token(t, "k2", "alice")
		before := fetchErrors(t, controlMetrics)
		idp.srv.Close()
		eventually(t, 20*time.Second, "failed fetches counted", func() error {
			if n := fetchErrors(t, controlMetrics); n < before+2 {
				return fmt.Errorf("%v error fetches, want at least %v", n, before+2)
			}
			return nil
		})
		wantStatus(t, "a k2 token with the endpoint down", bearer(alice2), http.StatusOK)
		if m.control.hasExited() || api.proc.hasExited() || client.proc.hasExited() {
			t.Fatal("a process exited")
		}
	})
}

// fetchErrors reads bulwark_jwks_fetch_total{result="error"} of default/idp
// from the control plane's /metrics.
func fetchErrors(t *testing.T, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "bulwark_jwks_fetch_total{") || !strings.Contains(line, `provider="default/idp"`) || !strings.Contains(line, `result="error"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		return v
	}
	return 0
}
