package authn_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// FuzzAuthenticate feeds arbitrary tokens, in a header and in the query,
// to an Authenticator: it must never panic, must answer every failure with
// a 401 *authn.Error, and must never let a client-set claim header through.
func FuzzAuthenticate(f *testing.F) {
	r1, e1 := rsaSigner("r1"), ecSigner("e1")
	p := provider(f, "idp", jwksOf(f, false, r1, e1), func(s *config.JWTProviderSpec) {
		locations(s)
		s.ClaimsToHeaders = []config.ClaimToHeader{{Claim: "sub", Header: "X-User"}}
	})
	a := newAuthenticator(f, p)
	f.Add(sign(f, r1, claims("alice"), nil), "")
	f.Add(sign(f, e1, claims("alice"), map[string]any{"crit": []string{"x-ext"}, "x-ext": 1}), "")
	f.Add(rawToken(f, map[string]any{"alg": "none"}, claims("alice"), nil), "")
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.", "access_token=x")
	f.Add("a.b.c.d.e", "access_token=%zz")
	f.Add(`{"payload":""}`, "")
	f.Fuzz(func(t *testing.T, token, query string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL.RawQuery = query
		r.RequestURI = "/?" + query
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("X-User", "spoofed")
		res, err := a.Authenticate(r)
		if err != nil {
			var ae *authn.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
				t.Fatalf("got error %v, want a 401 *authn.Error", err)
			}
			if len(token) > 64 && strings.Contains(ae.Reason, token) {
				t.Fatalf("the reason quotes the token")
			}
		} else if res.Principal != "" && !strings.HasPrefix(res.Principal, testIssuer+"/") {
			t.Fatalf("got principal %q of an unknown issuer", res.Principal)
		}
		if got := r.Header.Get("X-User"); got == "spoofed" {
			t.Fatal("a client-set claim header went through")
		}
	})
}
