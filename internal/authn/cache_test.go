package authn_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/authn"
)

// TestCachedTokenStillExpires: a token verified once is remembered, but its
// time claims are checked on every use, so it stops working at exp (plus
// the skew) like one that was never seen.
func TestCachedTokenStillExpires(t *testing.T) {
	r1 := rsaSigner("r1")
	p := provider(t, "idp", jwksOf(t, false, r1), nil)
	c := fakeClock()
	a, err := authn.New([]authn.Provider{{Spec: p, JWKS: []byte(p.Spec.JWKS)}}, c)
	if err != nil {
		t.Fatal(err)
	}
	cl := claims("alice")
	cl["exp"] = now.Add(2 * time.Minute).Unix()
	tok := sign(t, r1, cl, nil)
	for i := range 3 {
		res, err := a.Authenticate(bearer(tok))
		if err != nil || res.Principal != testIssuer+"/alice" {
			t.Fatalf("use %d: got %+v, %v, want alice", i, res, err)
		}
	}
	c.Advance(2*time.Minute + p.Spec.Skew() + time.Second)
	if _, err := a.Authenticate(bearer(tok)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("after exp: got %v, want token expired", err)
	}
}

// TestCacheNeverRemembersFailures: a token that failed verification fails
// again (nothing about it is cached), and a token that differs from a
// verified one by one byte of its signature is verified on its own.
func TestCacheNeverRemembersFailures(t *testing.T) {
	r1 := rsaSigner("r1")
	a := newAuthenticator(t, provider(t, "idp", jwksOf(t, false, r1), nil))
	tok := sign(t, r1, claims("alice"), nil)
	if _, err := a.Authenticate(bearer(tok)); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	last := tok[len(tok)-2]
	flipped := tok[:len(tok)-2] + string("AB"[(strings.IndexByte("AB", last)+1)%2]) + tok[len(tok)-1:]
	if flipped == tok {
		t.Fatal("test token unchanged")
	}
	for i := range 2 {
		if _, err := a.Authenticate(bearer(flipped)); err == nil {
			t.Errorf("tampered token, use %d: got nil error, want 401", i)
		}
	}
}

// TestCacheIsBounded: more distinct valid tokens than the cache holds all
// verify, and the cache never grows past its bound.
func TestCacheIsBounded(t *testing.T) {
	e1 := ecSigner("e1")
	a := newAuthenticator(t, provider(t, "idp", jwksOf(t, false, e1), nil))
	for i := range authn.MaxVerified + 10 {
		cl := claims("user")
		cl["jti"] = i
		if _, err := a.Authenticate(bearer(sign(t, e1, cl, nil))); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		if n := authn.CacheLen(a); n > authn.MaxVerified {
			t.Fatalf("after %d tokens: cache holds %d, want at most %d", i+1, n, authn.MaxVerified)
		}
	}
}
