package authn_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// locations makes a provider read the token from a header, a cookie and a
// query parameter.
func locations(s *config.JWTProviderSpec) {
	s.FromHeaders = []config.TokenHeader{{Name: "Authorization", Prefix: "Bearer "}}
	s.FromCookies = []string{"jwt"}
	s.FromParams = []string{"access_token"}
	s.Audiences = []string{"api"}
}

func TestAuthenticateAccepts(t *testing.T) {
	r1, e1 := rsaSigner("r1"), ecSigner("e1")
	ed := edKey(t)
	p := provider(t, "idp", jwksOf(t, false, r1, e1, ed), locations)
	a := newAuthenticator(t, p)
	with := func(mutate func(c map[string]any)) map[string]any {
		c := claims("alice")
		mutate(c)
		return c
	}
	tests := []struct {
		name  string
		token string
	}{
		{name: "rs256", token: sign(t, r1, claims("alice"), nil)},
		{name: "es256", token: sign(t, e1, claims("alice"), nil)},
		{name: "eddsa", token: sign(t, ed, claims("alice"), nil)},
		{name: "no_kid_one_key_of_the_alg", token: sign(t, rsaSigner(""), claims("alice"), nil)},
		{name: "aud_as_string", token: sign(t, r1, with(func(c map[string]any) { c["aud"] = "api" }), nil)},
		{name: "aud_among_several", token: sign(t, r1, with(func(c map[string]any) { c["aud"] = []string{"x", "api"} }), nil)},
		{name: "expired_within_skew", token: sign(t, r1, with(func(c map[string]any) { c["exp"] = now.Add(-30 * time.Second).Unix() }), nil)},
		{name: "nbf_within_skew", token: sign(t, r1, with(func(c map[string]any) { c["nbf"] = now.Add(30 * time.Second).Unix() }), nil)},
		{name: "no_iat_no_nbf", token: sign(t, r1, with(func(c map[string]any) { delete(c, "iat"); delete(c, "nbf") }), nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := a.Authenticate(bearer(tt.token))
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got, want := res.Principal, testIssuer+"/alice"; got != want {
				t.Errorf("got principal %q, want %q", got, want)
			}
			if got, want := res.Provider, "default/idp"; got != want {
				t.Errorf("got provider %q, want %q", got, want)
			}
			if got := res.Claims["sub"]; got != "alice" {
				t.Errorf("got claims[sub] %v, want alice", got)
			}
		})
	}
}

func TestAuthenticateRejects(t *testing.T) {
	r1, e1 := rsaSigner("r1"), ecSigner("e1")
	r2 := signingKey{kid: "r2", alg: jwa.RS256(), priv: rsaKey2}
	base := provider(t, "idp", jwksOf(t, false, r1, e1), locations)
	twoRSA := provider(t, "idp", jwksOf(t, false, r1, r2), locations)
	noKeys := authn.Provider{Spec: provider(t, "idp", nil, func(s *config.JWTProviderSpec) {
		s.JWKSURI = "https://issuer.example/jwks"
	})}
	otherLocation := provider(t, "other", jwksOf(t, false, r2), func(s *config.JWTProviderSpec) {
		s.Issuer = "https://other.example"
		s.FromHeaders = []config.TokenHeader{{Name: "X-Other-Token"}}
	})

	pubDER, err := x509.MarshalPKIXPublicKey(rsaKey1.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	with := func(mutate func(c map[string]any)) map[string]any {
		c := claims("alice")
		mutate(c)
		return c
	}
	valid := sign(t, r1, claims("alice"), nil)
	big := func(n int) string { return valid + strings.Repeat("A", n-len(valid)) }

	tests := []struct {
		name      string
		providers []authn.Provider // default: base
		req       *http.Request
		want      string // part of the reason
	}{
		{name: "alg_none", req: bearer(rawToken(t, map[string]any{"alg": "none", "kid": "r1"}, claims("alice"), nil)), want: `alg "none" is not the alg RS256`},
		{name: "alg_none_without_kid", req: bearer(rawToken(t, map[string]any{"alg": "none"}, claims("alice"), nil)), want: `no key of provider default/idp has alg "none"`},
		{name: "hs256_with_rsa_public_key_pem", req: bearer(hmacToken(t, map[string]any{"alg": "HS256", "kid": "r1"}, claims("alice"), pubPEM)), want: `alg "HS256" is not the alg RS256`},
		{name: "hs256_with_rsa_public_key_der_no_kid", req: bearer(hmacToken(t, map[string]any{"alg": "HS256"}, claims("alice"), pubDER)), want: `has alg "HS256"`},
		{name: "token_alg_differs_from_key_alg", req: bearer(sign(t, signingKey{kid: "r1", alg: jwa.PS256(), priv: rsaKey1}, claims("alice"), nil)), want: `alg "PS256" is not the alg RS256`},
		{name: "rs_token_for_ec_key", req: bearer(sign(t, signingKey{kid: "e1", alg: jwa.RS256(), priv: rsaKey1}, claims("alice"), nil)), want: `alg "RS256" is not the alg ES256`},
		{name: "missing_kid_with_several_keys", providers: []authn.Provider{{Spec: twoRSA, JWKS: []byte(twoRSA.Spec.JWKS)}}, req: bearer(sign(t, rsaSigner(""), claims("alice"), nil)), want: "no kid and 2 keys"},
		{name: "unknown_kid", req: bearer(sign(t, rsaSigner("r9"), claims("alice"), nil)), want: `unknown kid "r9"`},
		{name: "signed_by_another_key", req: bearer(sign(t, signingKey{kid: "r1", alg: jwa.RS256(), priv: rsaKey2}, claims("alice"), nil)), want: "signature verification failed"},
		// The attacker's key travels in the token (jwk) or behind a URL
		// it names (jku, x5u): keys come from the provider only.
		{name: "embedded_jwk_and_jku_ignored", req: bearer(sign(t, signingKey{kid: "r1", alg: jwa.RS256(), priv: rsaKey2}, claims("alice"),
			map[string]any{"jwk": attackerJWK(t), "jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert"})), want: "signature verification failed"},
		{name: "expired", req: bearer(sign(t, r1, with(func(c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() }), nil)), want: "token expired"},
		{name: "no_exp", req: bearer(sign(t, r1, with(func(c map[string]any) { delete(c, "exp") }), nil)), want: "no exp"},
		{name: "nbf_in_future_beyond_skew", req: bearer(sign(t, r1, with(func(c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() }), nil)), want: "not yet valid"},
		{name: "iat_in_future_beyond_skew", req: bearer(sign(t, r1, with(func(c map[string]any) { c["iat"] = now.Add(5 * time.Minute).Unix() }), nil)), want: "issued in the future"},
		{name: "wrong_issuer", req: bearer(sign(t, r1, with(func(c map[string]any) { c["iss"] = "https://evil.example" }), nil)), want: `unknown issuer "https://evil.example"`},
		{name: "issuer_differs_in_case", req: bearer(sign(t, r1, with(func(c map[string]any) { c["iss"] = "https://ISSUER.example" }), nil)), want: "unknown issuer"},
		{name: "no_issuer", req: bearer(sign(t, r1, with(func(c map[string]any) { delete(c, "iss") }), nil)), want: `unknown issuer ""`},
		{name: "wrong_audience", req: bearer(sign(t, r1, with(func(c map[string]any) { c["aud"] = []string{"other"} }), nil)), want: "audience not accepted"},
		{name: "no_audience", req: bearer(sign(t, r1, with(func(c map[string]any) { delete(c, "aud") }), nil)), want: "audience not accepted"},
		{name: "unknown_crit", req: bearer(sign(t, r1, claims("alice"), map[string]any{"crit": []string{"x-ext"}, "x-ext": 1})), want: "crit"},
		{name: "jwe", req: bearer("eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d"), want: "JWE"},
		{name: "json_serialization", req: bearer(`{"payload":"e30","signatures":[]}`), want: "JSON serialization"},
		{name: "garbage", req: bearer("not-a-token"), want: "malformed token"},
		{name: "garbage_three_parts", req: bearer("a.b.c"), want: "malformed"},
		{name: "payload_not_an_object", req: bearer(sign(t, r1, nil, nil)), want: "malformed claims"},
		{name: "exp_not_a_number", req: bearer(sign(t, r1, with(func(c map[string]any) { c["exp"] = "tomorrow" }), nil)), want: "malformed claim exp"},
		{name: "iss_not_a_string", req: bearer(sign(t, r1, with(func(c map[string]any) { c["iss"] = 7 }), nil)), want: "malformed claim iss"},
		{name: "aud_not_strings", req: bearer(sign(t, r1, with(func(c map[string]any) { c["aud"] = []any{1} }), nil)), want: "malformed claim aud"},
		{name: "sub_not_a_string", req: bearer(sign(t, r1, with(func(c map[string]any) { c["sub"] = map[string]any{} }), nil)), want: "malformed claim sub"},
		{name: "empty_bearer", req: bearer(""), want: "empty token"},
		{name: "oversized_token", req: bearer(big(authn.MaxTokenSize + 1)), want: "over the limit of 16384"},
		{name: "one_megabyte_token", req: bearer(big(1 << 20)), want: "over the limit"},
		{name: "two_tokens", req: func() *http.Request {
			r := bearer(valid)
			r.URL.RawQuery = "access_token=" + sign(t, e1, claims("bob"), nil)
			return r
		}(), want: "more than one token"},
		{name: "two_authorization_headers", req: func() *http.Request {
			r := bearer(valid)
			r.Header.Add("Authorization", "Bearer "+sign(t, e1, claims("bob"), nil))
			return r
		}(), want: "more than one token"},
		{name: "no_keys_yet", providers: []authn.Provider{noKeys}, req: bearer(valid), want: "has no keys yet"},
		{
			name:      "token_in_a_location_of_another_provider",
			providers: []authn.Provider{{Spec: base, JWKS: []byte(base.Spec.JWKS)}, {Spec: otherLocation, JWKS: []byte(otherLocation.Spec.JWKS)}},
			req: func() *http.Request {
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.Header.Set("X-Other-Token", valid)
				return r
			}(),
			want: "does not read",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			providers := tt.providers
			if providers == nil {
				providers = []authn.Provider{{Spec: base, JWKS: []byte(base.Spec.JWKS)}}
			}
			a, err := authn.New(providers, fakeClock())
			if err != nil {
				t.Fatal(err)
			}
			before := tt.req.Header.Get("Authorization")
			res, err := a.Authenticate(tt.req)
			var ae *authn.Error
			if !errors.As(err, &ae) {
				t.Fatalf("got result %+v and error %v, want an *authn.Error", res, err)
			}
			if ae.Status != http.StatusUnauthorized {
				t.Errorf("got status %d, want 401", ae.Status)
			}
			if !strings.Contains(ae.Reason, tt.want) {
				t.Errorf("got reason %q, want it to contain %q", ae.Reason, tt.want)
			}
			if got, want := ae.Challenge(), `Bearer error="invalid_token"`; got != want {
				t.Errorf("got challenge %q, want %q", got, want)
			}
			if tok := strings.TrimPrefix(before, "Bearer "); len(tok) > 40 && strings.Contains(ae.Error(), tok[len(tok)-40:]) {
				t.Errorf("the reason quotes the token: %q", ae.Reason)
			}
		})
	}
}

func TestAuthenticateWithoutToken(t *testing.T) {
	r1 := rsaSigner("r1")
	optional := provider(t, "optional", jwksOf(t, false, r1), nil)
	required := provider(t, "required", jwksOf(t, false, r1), func(s *config.JWTProviderSpec) {
		s.Issuer = "https://required.example"
		s.Required = true
	})
	t.Run("optional_passes_unauthenticated", func(t *testing.T) {
		res, err := newAuthenticator(t, optional).Authenticate(httptest.NewRequest(http.MethodGet, "/", nil))
		if err != nil {
			t.Fatalf("got error %v, want none", err)
		}
		if diff := cmp.Diff(authn.Result{}, res); diff != "" {
			t.Errorf("result (-want +got):\n%s", diff)
		}
	})
	t.Run("required_is_401", func(t *testing.T) {
		_, err := newAuthenticator(t, optional, required).Authenticate(httptest.NewRequest(http.MethodGet, "/", nil))
		var ae *authn.Error
		if !errors.As(err, &ae) || ae.Reason != "token required" || !ae.Missing {
			t.Fatalf("got %#v, want a missing-token *authn.Error", err)
		}
		if got, want := ae.Challenge(), "Bearer"; got != want {
			t.Errorf("got challenge %q, want %q", got, want)
		}
	})
	t.Run("other_authorization_scheme_is_no_token", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
		res, err := newAuthenticator(t, optional).Authenticate(r)
		if err != nil || res.Principal != "" {
			t.Fatalf("got %+v, %v, want an unauthenticated pass", res, err)
		}
		if got := r.Header.Get("Authorization"); got == "" {
			t.Errorf("a non-bearer Authorization header was removed")
		}
	})
	t.Run("nil_authenticator", func(t *testing.T) {
		var a *authn.Authenticator
		res, err := a.Authenticate(bearer("x"))
		if err != nil || res.Principal != "" {
			t.Fatalf("got %+v, %v, want an unauthenticated pass", res, err)
		}
	})
}

func TestAuthenticateClaimHeaders(t *testing.T) {
	r1 := rsaSigner("r1")
	p := provider(t, "idp", jwksOf(t, false, r1), func(s *config.JWTProviderSpec) {
		s.ClaimsToHeaders = []config.ClaimToHeader{
			{Claim: "sub", Header: "x-user"},
			{Claim: "groups", Header: "X-Groups"},
			{Claim: "level", Header: "X-Level"},
			{Claim: "admin", Header: "X-Admin"},
			{Claim: "address", Header: "X-Address"},
			{Claim: "absent", Header: "X-Absent"},
			{Claim: "evil", Header: "X-Evil"},
		}
	})
	a := newAuthenticator(t, p)
	spoof := func(r *http.Request) *http.Request {
		for _, h := range []string{"X-User", "X-Groups", "X-Level", "X-Admin", "X-Address", "X-Absent", "X-Evil"} {
			r.Header.Add(h, "spoofed")
		}
		return r
	}
	t.Run("removed_without_token", func(t *testing.T) {
		r := spoof(httptest.NewRequest(http.MethodGet, "/", nil))
		if _, err := a.Authenticate(r); err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"X-User", "X-Groups", "X-Level", "X-Admin", "X-Address", "X-Absent", "X-Evil"} {
			if got := r.Header.Values(h); len(got) > 0 {
				t.Errorf("got %s %q, want it removed", h, got)
			}
		}
	})
	t.Run("removed_with_invalid_token", func(t *testing.T) {
		r := spoof(bearer("garbage"))
		if _, err := a.Authenticate(r); err == nil {
			t.Fatal("got no error, want 401")
		}
		if got := r.Header.Values("X-User"); len(got) > 0 {
			t.Errorf("got X-User %q, want it removed", got)
		}
	})
	t.Run("set_from_claims", func(t *testing.T) {
		c := claims("alice")
		c["groups"] = []any{"dev", "ops"}
		c["level"] = 3
		c["admin"] = true
		c["address"] = map[string]any{"city": "x"}
		c["evil"] = "a\r\nX-Injected: 1"
		r := spoof(bearer(sign(t, r1, c, nil)))
		if _, err := a.Authenticate(r); err != nil {
			t.Fatal(err)
		}
		want := http.Header{"X-User": {"alice"}, "X-Groups": {"dev,ops"}, "X-Level": {"3"}, "X-Admin": {"true"}}
		got := http.Header{}
		for _, h := range []string{"X-User", "X-Groups", "X-Level", "X-Admin", "X-Address", "X-Absent", "X-Evil", "Authorization"} {
			if v := r.Header.Values(h); len(v) > 0 {
				got[h] = v
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("headers (-want +got):\n%s", diff)
		}
	})
}

func TestAuthenticateStripsOrForwards(t *testing.T) {
	r1 := rsaSigner("r1")
	tok := sign(t, r1, claims("alice"), nil)
	tests := []struct {
		name        string
		target      string
		header      http.Header
		wantHeader  http.Header // Authorization and Cookie after
		wantTarget  string      // RequestURI after
		wantRawQ    string
		forward     bool
		skipForward bool
	}{
		{
			name:       "header",
			target:     "/a?x=1",
			header:     http.Header{"Authorization": {"Bearer " + tok}, "Cookie": {"a=1"}},
			wantHeader: http.Header{"Cookie": {"a=1"}},
			wantTarget: "/a?x=1", wantRawQ: "x=1",
		},
		{
			name:       "header_scheme_case_insensitive",
			target:     "/a",
			header:     http.Header{"Authorization": {"bearer " + tok}},
			wantHeader: http.Header{},
			wantTarget: "/a",
		},
		{
			name:       "cookie",
			target:     "/a",
			header:     http.Header{"Cookie": {"a=1; jwt=" + tok + "; b=2", "c=3"}},
			wantHeader: http.Header{"Cookie": {"a=1; b=2", "c=3"}},
			wantTarget: "/a",
		},
		{
			name:       "only_cookie",
			target:     "/a",
			header:     http.Header{"Cookie": {"jwt=" + tok}},
			wantHeader: http.Header{},
			wantTarget: "/a",
		},
		{
			name:       "param",
			target:     "/a%2Fb?x=1&access_token=" + tok + "&y=%20z",
			header:     http.Header{},
			wantHeader: http.Header{},
			wantTarget: "/a%2Fb?x=1&y=%20z", wantRawQ: "x=1&y=%20z",
		},
		{
			name:       "only_param",
			target:     "/a?access_token=" + tok,
			header:     http.Header{},
			wantHeader: http.Header{},
			wantTarget: "/a",
		},
		{
			name:       "same_token_twice",
			target:     "/a?access_token=" + tok,
			header:     http.Header{"Authorization": {"Bearer " + tok}},
			wantHeader: http.Header{},
			wantTarget: "/a",
		},
	}
	for _, tt := range tests {
		for _, forward := range []bool{false, true} {
			name := tt.name + "_strip"
			if forward {
				name = tt.name + "_forward"
			}
			t.Run(name, func(t *testing.T) {
				p := provider(t, "idp", jwksOf(t, false, r1), func(s *config.JWTProviderSpec) {
					locations(s)
					s.Audiences = nil
					s.ForwardToken = forward
				})
				r := httptest.NewRequest(http.MethodGet, tt.target, nil)
				for k, v := range tt.header {
					r.Header[k] = v
				}
				origHeader := r.Header.Clone()
				origURI, origQ := r.RequestURI, r.URL.RawQuery
				res, err := newAuthenticator(t, p).Authenticate(r)
				if err != nil {
					t.Fatal(err)
				}
				if res.Principal != testIssuer+"/alice" {
					t.Fatalf("got principal %q", res.Principal)
				}
				wantHeader, wantTarget, wantQ := tt.wantHeader, tt.wantTarget, tt.wantRawQ
				if forward {
					wantHeader, wantTarget, wantQ = origHeader, origURI, origQ
				}
				got := http.Header{}
				for _, h := range []string{"Authorization", "Cookie"} {
					if v := r.Header.Values(h); len(v) > 0 {
						got[h] = v
					}
				}
				if diff := cmp.Diff(wantHeader, got); diff != "" {
					t.Errorf("headers (-want +got):\n%s", diff)
				}
				if r.RequestURI != wantTarget {
					t.Errorf("got RequestURI %q, want %q", r.RequestURI, wantTarget)
				}
				if r.URL.RawQuery != wantQ {
					t.Errorf("got RawQuery %q, want %q", r.URL.RawQuery, wantQ)
				}
			})
		}
	}
}

func TestNew(t *testing.T) {
	r1 := rsaSigner("r1")
	a := provider(t, "a", jwksOf(t, false, r1), nil)
	b := provider(t, "b", jwksOf(t, false, r1), nil)
	t.Run("no_providers_is_nil", func(t *testing.T) {
		got, err := authn.New(nil, nil)
		if err != nil || got != nil {
			t.Fatalf("got %v, %v, want nil, nil", got, err)
		}
	})
	t.Run("duplicate_issuer", func(t *testing.T) {
		_, err := authn.New([]authn.Provider{{Spec: a, JWKS: []byte(a.Spec.JWKS)}, {Spec: b, JWKS: []byte(b.Spec.JWKS)}}, nil)
		if err == nil || !strings.Contains(err.Error(), "both have issuer") {
			t.Fatalf("got %v, want a duplicate issuer error", err)
		}
	})
	t.Run("bad_jwks", func(t *testing.T) {
		_, err := authn.New([]authn.Provider{{Spec: a, JWKS: []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)}}, nil)
		if err == nil || !strings.Contains(err.Error(), "default/a") {
			t.Fatalf("got %v, want an error naming the provider", err)
		}
	})
}

// attackerJWK is the public key of rsaKey2 as a JWK, for tokens that carry
// their own key.
func attackerJWK(t testing.TB) jwk.Key {
	t.Helper()
	k, err := jwk.Import(rsaKey2.Public())
	if err != nil {
		t.Fatal(err)
	}
	return k
}
