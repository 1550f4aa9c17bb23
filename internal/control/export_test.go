package control

// This file exports unexported pieces of the package to its external tests
// (package control_test). It builds nothing Run does not build: StartPlane
// wires the same parts as Run (store, workload CA, registry, join tokens,
// state builder, hub, the Control gRPC service behind
// mtls.ControlServerConfig with a serving certificate from
// ca.SignServing), but hands them to the test, so that a test can read the
// store directly or put a gRPC interceptor or a store wrapper in between.

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Unexported functions and constants under test.
var (
	Sans              = sans
	Dialable          = dialable
	BootstrapOperator = bootstrapOperator
	CheckAdvertise    = checkAdvertise
	InputsHash        = inputsHash
)

// MaxNack is maxNack.
const MaxNack = maxNack

// ServingCert is servingCert.
type ServingCert = servingCert

// NewServingCert calls newServingCert with a discarding logger.
func NewServingCert(c clock.Clock, issue func(*ecdsa.PublicKey) ([]*x509.Certificate, error)) (*ServingCert, error) {
	return newServingCert(c, telemetry.OrDiscard(nil), issue)
}

// StateBuilder wraps stateBuilder.
type StateBuilder struct{ b *stateBuilder }

// NewStateBuilder returns the state builder Run would build over st.
func NewStateBuilder(t testing.TB, st store.Store, reg *registry.Registry, c *ca.CA, hub *push.Hub, td spiffeid.TrustDomain) *StateBuilder {
	t.Helper()
	jwtAuthority, err := ca.NewJWTAuthority(context.Background(), ca.Config{TrustDomain: td, Store: st, Keys: keymanager.NewMemory()})
	if err != nil {
		t.Fatalf("ca.NewJWTAuthority: %v", err)
	}
	return &StateBuilder{b: &stateBuilder{
		store: st, resources: resource.New(st, nil).WithSealer(keymanager.NewMemory()), registry: reg, ca: c, jwt: jwtAuthority, hub: hub, td: td,
		logger: telemetry.OrDiscard(nil),
	}}
}

// GatewayNotes returns gatewayNotes(st), each as "service: msg: detail".
func GatewayNotes(st *push.State) []string {
	var out []string
	for _, n := range gatewayNotes(st) {
		out = append(out, n.service+": "+n.msg+": "+n.detail)
	}
	return out
}

// WithSealer makes the builder open Secrets with sl: the sealer of the
// resource store the test applies them with.
func (s *StateBuilder) WithSealer(sl keymanager.Sealer) *StateBuilder {
	s.b.resources = s.b.resources.WithSealer(sl)
	return s
}

// Rebuild runs one rebuild.
func (s *StateBuilder) Rebuild(ctx context.Context) (int64, error) { return s.b.rebuild(ctx) }

// Run runs the builder's loop.
func (s *StateBuilder) Run(ctx context.Context) error { return s.b.Run(ctx) }

// PlaneConfig configures StartPlane.
type PlaneConfig struct {
	// TrustDomain; default bulwark.test.
	TrustDomain spiffeid.TrustDomain
	// Clock; default the wall clock.
	Clock clock.Clock
	// WrapStore, if set, wraps the real bbolt store for every part of
	// the control plane (the test keeps the unwrapped one).
	WrapStore func(store.Store) store.Store
	// StreamInterceptor, if set, is installed on the gRPC server.
	StreamInterceptor grpc.StreamServerInterceptor
}

// Plane is a control plane's proxy-facing half, running on loopback.
type Plane struct {
	// Addr is the gRPC address.
	Addr        string
	TrustDomain spiffeid.TrustDomain
	// Store is the real store, unwrapped.
	Store     store.Store
	CA        *ca.CA
	Registry  *registry.Registry
	Tokens    *jointoken.JoinTokens
	Resources *resource.Store
	Hub       *push.Hub
}

// StartPlane starts the state builder and the Control service on a loopback
// port; both stop when the test ends.
func StartPlane(t testing.TB, cfg PlaneConfig) *Plane {
	t.Helper()
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("bulwark.test")
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	td := cfg.TrustDomain
	logger := telemetry.OrDiscard(nil)
	ctx, cancel := context.WithCancel(context.Background())

	raw, err := bolt.Open(filepath.Join(t.TempDir(), storeFile), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	var st store.Store = raw
	if cfg.WrapStore != nil {
		st = cfg.WrapStore(raw)
	}
	keys := keymanager.NewMemory()
	workloadCA, err := ca.New(ctx, ca.Config{TrustDomain: td, Store: st, Keys: keys, Clock: cfg.Clock})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	jwtAuthority, err := ca.NewJWTAuthority(ctx, ca.Config{TrustDomain: td, Store: st, Keys: keys, Clock: cfg.Clock})
	if err != nil {
		t.Fatalf("ca.NewJWTAuthority: %v", err)
	}
	reg, err := registry.New(registry.Config{Store: st, Clock: cfg.Clock})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	tokens, err := jointoken.New(jointoken.Config{Store: st, Clock: cfg.Clock})
	if err != nil {
		t.Fatalf("jointoken.New: %v", err)
	}
	resources := resource.New(st, cfg.Clock).WithSealer(keys)
	hub := push.NewHub(logger)
	builder := &stateBuilder{store: st, resources: resources, registry: reg, ca: workloadCA, jwt: jwtAuthority, hub: hub, td: td, logger: logger}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	dns, ips := sans(ln.Addr())
	cert, err := newServingCert(cfg.Clock, logger, func(pub *ecdsa.PublicKey) ([]*x509.Certificate, error) {
		return workloadCA.SignServing(pub, identity.ControlPlaneID(td), dns, ips, 24*time.Hour)
	})
	if err != nil {
		t.Fatalf("serving certificate: %v", err)
	}
	opts := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(mtls.ControlServerConfig(cert.GetCertificate, workloadCA.Bundle(), td))),
		grpc.MaxRecvMsgSize(256 << 10),
	}
	if cfg.StreamInterceptor != nil {
		opts = append(opts, grpc.StreamInterceptor(cfg.StreamInterceptor))
	}
	srv := grpc.NewServer(opts...)
	apiv1.RegisterControlServer(srv, &controlService{
		td: td, ca: workloadCA, jwt: jwtAuthority, attestor: tokens, registry: reg, hub: hub, clock: cfg.Clock, logger: logger,
	})

	var builderErr error
	builderDone := make(chan struct{})
	go func() { builderErr = builder.Run(ctx); close(builderDone) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- serveGRPC(srv, ln)(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-serveDone; err != nil {
			t.Errorf("serve grpc: %v", err)
		}
		<-builderDone
		if builderErr != nil {
			t.Errorf("state builder: %v", builderErr)
		}
		raw.Close()
	})
	select {
	case <-hub.Ready():
	case <-builderDone:
		t.Fatalf("state builder ended before the first state: %v", builderErr)
	}
	return &Plane{
		Addr: ln.Addr().String(), TrustDomain: td, Store: raw, CA: workloadCA,
		Registry: reg, Tokens: tokens, Resources: resources, Hub: hub,
	}
}
