package control

// Attacks on the control plane's gRPC handlers, from a security review.
// Every test here pins an attack that fails as it should.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

var attackTD = spiffeid.RequireTrustDomainFromString("bulwark.test")

// attackService is a controlService with a real CA on a fake clock.
func attackService(t *testing.T) (*controlService, *clock.Fake) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clock.NewFake(time.Now())
	c, err := ca.New(context.Background(), ca.Config{TrustDomain: attackTD, Store: st, Keys: keymanager.NewMemory(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.Config{Store: st, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return &controlService{td: attackTD, ca: c, registry: reg, clock: clk, logger: slog.New(slog.DiscardHandler)}, clk
}

// attackPeerCtx is the context of an RPC whose TLS peer presented leaf.
func attackPeerCtx(leaf *x509.Certificate) context.Context {
	st := tls.ConnectionState{}
	if leaf != nil {
		st.PeerCertificates = []*x509.Certificate{leaf}
	}
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1},
		AuthInfo: credentials.TLSInfo{State: st},
	})
}

func attackSVID(t *testing.T, s *controlService, id spiffeid.ID) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := s.ca.SignSVID(&key.PublicKey, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	return chain[0]
}

// attackCSR is a CSR for a fresh key that asks for names the CA must
// ignore: another workload's SPIFFE ID, the control plane's, a DNS name, and
// a CA basic constraint.
func attackCSR(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := url.Parse("spiffe://bulwark.test/ns/kube-system/sa/admin")
	control, _ := url.Parse(identity.ControlPlaneID(attackTD).String())
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "admin", Organization: []string{ca.OperatorOrganization}},
		URIs:     []*url.URL{other, control},
		DNSNames: []string{"api.default", "localhost"},
		ExtraExtensions: []pkix.Extension{{
			Id: []int{2, 5, 29, 19}, Critical: true, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}, // basicConstraints CA:TRUE
		}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestAttackSignSVIDWithExpiredSVIDHolds: a connection outlives the
// certificate it was opened with; renewal over it after the SVID expired is
// refused, and so is a new Subscribe.
func TestAttackSignSVIDWithExpiredSVIDHolds(t *testing.T) {
	s, clk := attackService(t)
	id := spiffeid.RequireFromString("spiffe://bulwark.test/ns/default/sa/web")
	leaf := attackSVID(t, s, id)
	ctx := attackPeerCtx(leaf)
	if _, err := s.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: attackCSR(t)}); err != nil {
		t.Fatalf("SignSVID with a valid SVID: %v", err)
	}
	clk.Advance(leaf.NotAfter.Sub(clk.Now()) + time.Second)
	_, err := s.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: attackCSR(t)})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("SignSVID after expiry on the same connection: got %v, want Unauthenticated", err)
	}
	err = s.Subscribe(&attackStream{ctx: ctx})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("Subscribe after expiry: got %v, want Unauthenticated", err)
	}
}

// TestAttackSignSVIDIgnoresCSRNamesHolds: the renewed SVID names the
// caller's identity only, whatever the CSR asks for.
func TestAttackSignSVIDIgnoresCSRNamesHolds(t *testing.T) {
	s, _ := attackService(t)
	id := spiffeid.RequireFromString("spiffe://bulwark.test/ns/default/sa/web")
	resp, err := s.SignSVID(attackPeerCtx(attackSVID(t, s, id)), &apiv1.SignSVIDRequest{Csr: attackCSR(t)})
	if err != nil {
		t.Fatalf("SignSVID: %v", err)
	}
	if resp.GetSvid().GetSpiffeId() != id.String() {
		t.Errorf("SVID for %q, want %q", resp.GetSvid().GetSpiffeId(), id)
	}
	leaf, err := x509.ParseCertificate(resp.GetSvid().GetCertChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames) != 0 || leaf.IsCA ||
		leaf.Subject.CommonName != "" || len(leaf.Subject.Organization) != 1 || leaf.Subject.Organization[0] == ca.OperatorOrganization {
		t.Errorf("issued leaf carries names from the CSR: URIs %v DNS %v CA %v subject %v", leaf.URIs, leaf.DNSNames, leaf.IsCA, leaf.Subject)
	}
}

// TestAttackUnauthenticatedRPCsHolds: only Attest works without a
// workload SVID of the trust domain; the control plane's own identity is not
// a workload.
func TestAttackUnauthenticatedRPCsHolds(t *testing.T) {
	s, _ := attackService(t)
	// A certificate of another trust domain (the TLS layer would refuse it
	// too; the handler checks on its own).
	foreign := &x509.Certificate{NotAfter: time.Now().Add(time.Hour)}
	u, _ := url.Parse("spiffe://evil.test/ns/default/sa/web")
	foreign.URIs = []*url.URL{u}
	controlLeaf := attackSVID(t, s, identity.ControlPlaneID(attackTD))

	for name, ctx := range map[string]context.Context{
		"no peer":      context.Background(),
		"no cert":      attackPeerCtx(nil),
		"other domain": attackPeerCtx(foreign),
	} {
		if _, err := s.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: attackCSR(t)}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: SignSVID got %v, want Unauthenticated", name, err)
		}
		if err := s.Subscribe(&attackStream{ctx: ctx}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: Subscribe got %v, want Unauthenticated", name, err)
		}
	}
	if err := s.Subscribe(&attackStream{ctx: attackPeerCtx(controlLeaf)}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("control plane identity: Subscribe got %v, want PermissionDenied", err)
	}
}

// attackStream is a Subscribe stream that only has a context; the tests
// above never get as far as reading from it.
type attackStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *attackStream) Context() context.Context               { return s.ctx }
func (s *attackStream) Send(*apiv1.Snapshot) error             { return nil }
func (s *attackStream) SetHeader(metadata.MD) error            { return nil }
func (s *attackStream) SendHeader(metadata.MD) error           { return nil }
func (s *attackStream) SetTrailer(metadata.MD)                 {}
func (s *attackStream) SendMsg(any) error                      { return nil }
func (s *attackStream) RecvMsg(any) error                      { return context.Canceled }
func (s *attackStream) Recv() (*apiv1.SubscribeRequest, error) { return nil, context.Canceled }
