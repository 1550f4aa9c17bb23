// Package attest owns how a workload proves who it is before it gets an
// identity: the Attestor seam and the join token format. The store-backed
// join token attestor is in attest/jointoken, so proxies can parse a token
// (and its CA pin) without linking control-plane storage.
//
// A join token may carry the SPKI pin of the mesh's root CA so a new proxy
// can authenticate the control plane on first contact without a CA file (as
// kubeadm does). Later methods (Kubernetes projected service-account
// tokens, cloud instance identity, Unix peer credentials) implement the same
// Attestor interface.
package attest

import (
	"context"
	"errors"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// Evidence is what a workload presents to attest.
type Evidence struct {
	// JoinToken is the one-time token, for the join token method.
	JoinToken string
	// Service is the service the workload says it fronts.
	Service identity.ServiceRef
}

// Result is what an Attestor proved.
type Result struct {
	// Service the workload may serve.
	Service identity.ServiceRef
	// Account is the identity's account in the service's namespace.
	Account string
	// Labels are bound to the attested workload instance.
	Labels map[string]string
}

// Attestor verifies evidence and returns the identity it proves. An
// Attestor that consumes its evidence (a one-time token) does so before it
// returns a Result.
type Attestor interface {
	Attest(ctx context.Context, ev Evidence) (Result, error)
}

// ErrRejected is returned for any evidence that does not prove an identity.
// Callers must not tell the workload more than this.
var ErrRejected = errors.New("attestation rejected")
