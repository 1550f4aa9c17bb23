package control

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// JWKSPrefix is jwksPrefix.
const JWKSPrefix = jwksPrefix

// WithJWKS gives the builder the JWKS keeper Run gives it, fetching on c
// with its metrics on reg (may be nil), and returns the keeper's Run.
func (s *StateBuilder) WithJWKS(t testing.TB, c clock.Clock, reg prometheus.Registerer) func(context.Context) error {
	t.Helper()
	k, err := newJWKSKeeper(s.b.store, reg, c, telemetry.OrDiscard(nil))
	if err != nil {
		t.Fatalf("newJWKSKeeper: %v", err)
	}
	s.b.jwks = k
	return k.Run
}
