package ca_test

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/ca"
)

// signatures records what Config.Signed is told.
type signatures struct {
	mu  sync.Mutex
	got map[string]int
}

func (s *signatures) signed(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	result := "ok"
	if err != nil {
		result = "error"
	}
	s.got[kind+"/"+result]++
}

func (s *signatures) take() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	got := s.got
	s.got = map[string]int{}
	return got
}

// TestSigned: every signature the workload CA and the JWT authority make,
// or fail to make, is told to Config.Signed by kind.
func TestSigned(t *testing.T) {
	f := newFixture(t)
	sigs := &signatures{got: map[string]int{}}
	cfg := f.config()
	cfg.Signed = sigs.signed
	ctx := context.Background()
	c, err := ca.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"root/ok": 1, "intermediate/ok": 1}, sigs.take()); diff != "" {
		t.Errorf("first start (-want +got):\n%s", diff)
	}
	jwtAuth, err := ca.NewJWTAuthority(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := workloadID(t, "default", "api")
	key := newKey(t)
	if _, err := c.SignSVID(key.Public(), id, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SignSVID(key.Public(), c.Bundle().TrustDomain().ID(), 0); err == nil {
		t.Fatal("SignSVID of the trust domain's own ID: got nil, want an error")
	}
	if _, err := jwtAuth.SignJWTSVID(id, []string{"aud"}); err != nil {
		t.Fatal(err)
	}
	if err := c.RotateIntermediate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.PrepareRoot(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"x509_svid/ok": 1, "x509_svid/error": 1, "jwt_svid/ok": 1, "intermediate/ok": 1, "root/ok": 1}
	if diff := cmp.Diff(want, sigs.take()); diff != "" {
		t.Errorf("signatures (-want +got):\n%s", diff)
	}
	// A restart loads the stored CA: nothing is signed.
	if _, err := ca.New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{}, sigs.take()); diff != "" {
		t.Errorf("restart (-want +got):\n%s", diff)
	}
	if got := ca.SignatureKinds(); len(got) != 4 {
		t.Errorf("SignatureKinds: got %v, want 4 kinds", got)
	}
}
