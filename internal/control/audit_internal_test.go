package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// auditSwitchStore fails Txns that write under /audit/ while failing.
type auditSwitchStore struct {
	store.Store
	mu      sync.Mutex
	failing bool
}

func (s *auditSwitchStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	s.mu.Lock()
	failing := s.failing
	s.mu.Unlock()
	for _, op := range ops {
		if failing && strings.HasPrefix(op.Key, audit.Prefix) {
			return 0, errors.New("injected: disk full")
		}
	}
	return s.Store.Txn(ctx, cmps, ops)
}

// auditedService is a controlService with an audit log, called directly
// (the gRPC and TLS layers are covered by the package's other tests).
type auditedService struct {
	svc    *controlService
	st     *auditSwitchStore
	log    *audit.Log
	agg    *audit.Aggregator
	tokens *jointoken.JoinTokens
	peer   context.Context
}

func newAuditedService(t *testing.T) *auditedService {
	t.Helper()
	ctx := context.Background()
	raw, err := bolt.Open(filepath.Join(t.TempDir(), storeFile), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	st := &auditSwitchStore{Store: raw}
	td := spiffeid.RequireTrustDomainFromString("bulwark.test")
	keys := keymanager.NewMemory()
	wca, err := ca.New(ctx, ca.Config{TrustDomain: td, Store: st, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := jointoken.New(jointoken.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(ctx, audit.Config{Store: st, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := audit.NewAggregator(audit.AggregatorConfig{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	a := &auditedService{
		svc: &controlService{td: td, ca: wca, attestor: tokens, registry: reg, clock: clock.Real(),
			logger: telemetry.OrDiscard(nil), auditLog: log, auditAgg: agg},
		st: st, log: log, agg: agg, tokens: tokens,
		peer: peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4242}}),
	}
	return a
}

func (a *auditedService) attest(t *testing.T, token string) (*apiv1.AttestResponse, error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return a.svc.Attest(a.peer, &apiv1.AttestRequest{JoinToken: token, Service: "shop/api", Csr: csr})
}

func (a *auditedService) token(t *testing.T) string {
	t.Helper()
	tok, _, err := a.tokens.Create(context.Background(), jointoken.CreateRequest{Service: identity.ServiceRef{Namespace: "shop", Name: "api"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAttestIsAudited(t *testing.T) {
	a := newAuditedService(t)
	if _, err := a.attest(t, a.token(t)); err != nil {
		t.Fatal(err)
	}
	_, err := a.attest(t, "bwjt.not-a-token")
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("bad token: got %v, want PermissionDenied", err)
	}
	if err := a.agg.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries, _, err := a.log.Tail(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("got %d entries, want an attest and an auth.failure: %+v", len(entries), entries)
	}
	at, fail := entries[0], entries[1]
	if at.Action != audit.ActionAttest || at.Actor != "spiffe://bulwark.test/ns/shop/sa/api" || at.Source != "192.0.2.7" ||
		at.Namespace != "shop" || at.Name == "" {
		t.Errorf("got attest entry %+v", at)
	}
	if fail.Action != audit.ActionAuthFailure || fail.Source != "192.0.2.7" || fail.Actor != "shop/api" ||
		fail.Detail != audit.FailureJoinToken+": join token rejected" || fail.Count != 1 {
		t.Errorf("got failure entry %+v", fail)
	}
	if strings.Contains(fail.Detail+fail.Actor, "not-a-token") {
		t.Errorf("the presented token is in the log: %+v", fail)
	}
}

func TestAttestRefusedWhenAuditUnavailable(t *testing.T) {
	a := newAuditedService(t)
	tok := a.token(t)
	a.st.mu.Lock()
	a.st.failing = true
	a.st.mu.Unlock()
	resp, err := a.attest(t, tok)
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "audit log unavailable") {
		t.Fatalf("got %v, want Unavailable saying the audit log is", err)
	}
	if resp != nil {
		t.Errorf("got an SVID without an audit entry")
	}
}
