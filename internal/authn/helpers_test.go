package authn_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// now is the fake time every test starts at.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testIssuer = "https://issuer.example"

// signingKey is a key a test issuer signs with.
type signingKey struct {
	kid  string
	alg  jwa.SignatureAlgorithm
	priv crypto.Signer
}

// Keys are generated once: RSA generation is slow.
var (
	rsaKey1, rsaKey2 = mustRSA(2048), mustRSA(2048)
	ecKey1, ecKey2   = mustEC(), mustEC()
)

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func rsaSigner(kid string) signingKey { return signingKey{kid: kid, alg: jwa.RS256(), priv: rsaKey1} }
func ecSigner(kid string) signingKey  { return signingKey{kid: kid, alg: jwa.ES256(), priv: ecKey1} }

// jwksOf returns the public JWKS of keys; withAlg writes each key's alg.
func jwksOf(t testing.TB, withAlg bool, keys ...signingKey) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := jwk.Import(k.priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		if k.kid != "" {
			if err := pub.Set(jwk.KeyIDKey, k.kid); err != nil {
				t.Fatal(err)
			}
		}
		if withAlg {
			if err := pub.Set(jwk.AlgorithmKey, k.alg); err != nil {
				t.Fatal(err)
			}
		}
		if err := set.AddKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claims returns valid claims of testIssuer for sub at now.
func claims(sub string) map[string]any {
	return map[string]any{
		"iss": testIssuer,
		"sub": sub,
		"aud": []string{"api"},
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Add(-time.Minute).Unix(),
		"nbf": now.Add(-time.Minute).Unix(),
	}
}

// sign signs claims with k, the kid header set when k has one, and any
// extra protected headers.
func sign(t testing.TB, k signingKey, c map[string]any, extra map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	if k.kid != "" {
		if err := hdr.Set(jws.KeyIDKey, k.kid); err != nil {
			t.Fatal(err)
		}
	}
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		t.Fatal(err)
	}
	for name, v := range extra {
		if err := hdr.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := jws.Sign(payload, jws.WithKey(k.alg, k.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// rawToken assembles a compact JWS by hand, as an attacker would.
func rawToken(t testing.TB, header, c map[string]any, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(p) + "." + enc.EncodeToString(sig)
}

// hmacToken signs header and claims with HS256 under secret.
func hmacToken(t testing.TB, header, c map[string]any, secret []byte) string {
	t.Helper()
	unsigned := rawToken(t, header, c, nil)
	unsigned = unsigned[:len(unsigned)-1] // drop the trailing '.'
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(unsigned))
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// provider returns a validated JWTProvider of testIssuer with inline keys.
func provider(t testing.TB, name string, jwks []byte, mutate func(s *config.JWTProviderSpec)) *config.JWTProvider {
	t.Helper()
	p := &config.JWTProvider{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindJWTProvider},
		Metadata: config.ObjectMeta{Namespace: "default", Name: name},
		Spec:     config.JWTProviderSpec{Issuer: testIssuer, JWKS: string(jwks)},
	}
	if mutate != nil {
		mutate(&p.Spec)
	}
	if errs := p.Validate(); len(errs) > 0 {
		t.Fatalf("provider %s: %v", name, errs)
	}
	return p
}

// newAuthenticator returns an Authenticator over providers with their
// inline keys, on a fake clock at now.
func newAuthenticator(t testing.TB, providers ...*config.JWTProvider) *authn.Authenticator {
	t.Helper()
	var ps []authn.Provider
	for _, p := range providers {
		ps = append(ps, authn.Provider{Spec: p, JWKS: []byte(p.Spec.JWKS)})
	}
	a, err := authn.New(ps, clock.NewFake(now))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// bearer returns a request with the token in Authorization.
func bearer(token string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/api?x=1", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

// edKey is an Ed25519 key for the EdDSA cases.
func edKey(t testing.TB) signingKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: "ed", alg: jwa.EdDSA(), priv: priv}
}

// fakeClock returns a fake clock at now.
func fakeClock() *clock.Fake { return clock.NewFake(now) }
