package authn_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// TestAuthenticateClaimHeaderSpellings: the claims' headers are removed
// from what the client sent under any spelling ('_' read as '-', any
// case): CGI-style apps read X_User as X-User.
func TestAuthenticateClaimHeaderSpellings(t *testing.T) {
	p := provider(t, "idp", jwksOf(t, false, rsaSigner("r1")), func(s *config.JWTProviderSpec) {
		s.ClaimsToHeaders = []config.ClaimToHeader{{Claim: "sub", Header: "X-User-Name"}}
	})
	a := newAuthenticator(t, p)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, k := range []string{"X-User-Name", "X_User_Name", "x_user-name", "X_USER_NAME"} {
		r.Header[k] = []string{"spoofed"}
	}
	r.Header["X_Other"] = []string{"kept"}
	if _, err := a.Authenticate(r); err != nil {
		t.Fatal(err)
	}
	for k, v := range r.Header {
		if k != "X_Other" {
			t.Errorf("got %s %q, want it removed", k, v)
		}
	}
	if len(r.Header["X_Other"]) != 1 {
		t.Errorf("X_Other: got %q, want it kept", r.Header["X_Other"])
	}
}
