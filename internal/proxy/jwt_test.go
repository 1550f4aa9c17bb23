package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

const jwtIssuer = "https://issuer.example"

// jwtKey signs the tests' tokens; jwtJWKS is its public JWKS.
var jwtKey = func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

func jwtJWKS(t testing.TB) string {
	t.Helper()
	pub, err := jwk.Import(jwtKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Set(jwk.KeyIDKey, "k1"); err != nil {
		t.Fatal(err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// jwtToken signs a token of jwtIssuer for sub, valid for an hour.
func jwtToken(t testing.TB, sub string) string {
	t.Helper()
	payload, err := json.Marshal(map[string]any{
		"iss": jwtIssuer, "sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "team": "blue",
	})
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, "k1"); err != nil {
		t.Fatal(err)
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), jwtKey, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// jwtProviderDoc returns the JSON of a JWTProvider of jwtIssuer with inline
// keys, as the control plane puts it in snapshots; mutate edits its spec.
func jwtProviderDoc(t testing.TB, name string, mutate func(s *config.JWTProviderSpec)) []byte {
	t.Helper()
	p := &config.JWTProvider{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindJWTProvider},
		Metadata: config.ObjectMeta{Namespace: "default", Name: name},
		Spec: config.JWTProviderSpec{
			Issuer: jwtIssuer, JWKS: jwtJWKS(t),
			ClaimsToHeaders: []config.ClaimToHeader{{Claim: "team", Header: "X-Team"}},
		},
	}
	if mutate != nil {
		mutate(&p.Spec)
	}
	if errs := p.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	b, err := config.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApplyJWTProviders(t *testing.T) {
	a := newAuthority(t)
	good := jwtProviderDoc(t, "idp", nil)
	tests := []struct {
		name      string
		providers []*apiv1.JWTProvider
		wantErr   string // "" when the snapshot applies
	}{
		{name: "none"},
		{name: "inline_keys", providers: []*apiv1.JWTProvider{{Resource: good, Jwks: []byte(jwtJWKS(t))}}},
		{name: "no_keys_yet", providers: []*apiv1.JWTProvider{{Resource: good}}},
		{
			name:      "invalid_resource",
			providers: []*apiv1.JWTProvider{{Resource: []byte(strings.Replace(string(good), `"issuer":"https://issuer.example",`, "", 1))}},
			wantErr:   "jwt_providers[0]: document 1 (JWTProvider default/idp): spec.issuer: required",
		},
		{
			name:      "unknown_field",
			providers: []*apiv1.JWTProvider{{Resource: []byte(strings.Replace(string(good), `"spec":{`, `"spec":{"bogus":1,`, 1))}},
			wantErr:   "spec.bogus: unknown field",
		},
		{name: "not_a_provider", providers: []*apiv1.JWTProvider{{Resource: policyDoc(t, apiInboundPolicy)}}, wantErr: "jwt_providers[0]: kind AuthorizationPolicy is not a JWTProvider"},
		{name: "garbage_keys", providers: []*apiv1.JWTProvider{{Resource: good, Jwks: []byte("garbage")}}, wantErr: "jwt provider default/idp: jwks"},
		{name: "secret_keys", providers: []*apiv1.JWTProvider{{Resource: good, Jwks: []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)}}, wantErr: "symmetric"},
		{
			name:      "same_issuer_twice",
			providers: []*apiv1.JWTProvider{{Resource: good}, {Resource: jwtProviderDoc(t, "idp2", nil)}},
			wantErr:   "both have issuer",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, a, apiSvc, "")
			snap := apiSnapshot(t, a, 1)
			snap.JwtProviders = tt.providers
			err := n.engine.Apply(snap)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want the snapshot applied", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if n.engine.Version() != 0 {
				t.Errorf("got version %d, want the rejected snapshot not applied", n.engine.Version())
			}
		})
	}
}

// apiJWTPolicy lets shop/web call /public/* on default/api only for the
// request principal <jwtIssuer>/alice.
const apiJWTPolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-alice, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web], requestPrincipals: ["https://issuer.example/alice"]}
    to: {methods: [GET], paths: ["/public/*"]}
`

// TestInboundJWT runs requests through a caller and a callee whose inbound
// authenticates with a required JWT provider: 401 without or with a bad
// token (with the RFC 6750 challenge and an opaque body), 403 for a valid
// token that no policy allows, and for alice the app gets the claim header,
// never the token nor a client-set claim header.
func TestInboundJWT(t *testing.T) {
	m := newMesh(t)
	snap := apiSnapshot(t, m.auth, 2)
	snap.Inbound.Policies = [][]byte{policyDoc(t, apiJWTPolicy)}
	snap.JwtProviders = []*apiv1.JWTProvider{{
		Resource: jwtProviderDoc(t, "idp", func(s *config.JWTProviderSpec) { s.Required = true }),
		Jwks:     []byte(jwtJWKS(t)),
	}}
	m.api.apply(t, snap)

	send := func(t *testing.T, headers string) response {
		t.Helper()
		return plainRaw(t, m.outbound, "GET /public/x HTTP/1.1\r\nHost: api.default\r\nX-Team: spoofed\r\n"+headers+"Connection: close\r\n\r\n")
	}
	tests := []struct {
		name          string
		headers       string
		wantStatus    int
		wantChallenge string
	}{
		{name: "no_token", wantStatus: 401, wantChallenge: "Bearer"},
		{name: "garbage_token", headers: "Authorization: Bearer garbage\r\n", wantStatus: 401, wantChallenge: `Bearer error="invalid_token"`},
		{name: "other_subject", headers: "Authorization: Bearer " + jwtToken(t, "bob") + "\r\n", wantStatus: 403},
		{name: "alice", headers: "Authorization: Bearer " + jwtToken(t, "alice") + "\r\n", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(m.apiApp.requests())
			resp := send(t, tt.headers)
			if resp.status != tt.wantStatus {
				t.Fatalf("got status %d (%q), want %d", resp.status, resp.body, tt.wantStatus)
			}
			if got := resp.header.Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("got WWW-Authenticate %q, want %q", got, tt.wantChallenge)
			}
			if tt.wantStatus == 401 && resp.body != "unauthorized\n" {
				t.Errorf("got body %q, want an opaque one", resp.body)
			}
			reqs := m.apiApp.requests()
			if tt.wantStatus != 200 {
				if len(reqs) != before {
					t.Errorf("the app got a request that was denied")
				}
				return
			}
			if len(reqs) != before+1 {
				t.Fatalf("got %d requests at the app, want %d", len(reqs), before+1)
			}
			h := reqs[len(reqs)-1].Header
			if got := h.Values("X-Team"); len(got) != 1 || got[0] != "blue" {
				t.Errorf("got X-Team %q, want the claim only", got)
			}
			if got := h.Get("Authorization"); got != "" {
				t.Errorf("the app got the token: %q", got)
			}
		})
	}
}
