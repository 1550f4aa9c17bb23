package mtls_test

// Attacks on the mesh TLS configs, from a security review. Tests whose name
// ends in "Holds" pin attacks that fail as they should; the others reproduce
// defects and fail until the defect is fixed.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
)

// mutableBundle is a trust bundle source whose roots can be replaced, as
// the proxy's is when a snapshot carries a new bundle.
type mutableBundle struct {
	mu    sync.Mutex
	td    spiffeid.TrustDomain
	roots []*x509.Certificate
}

func (b *mutableBundle) set(roots ...*x509.Certificate) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.roots = roots
}

func (b *mutableBundle) GetX509BundleForTrustDomain(d spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d != b.td {
		return nil, fmt.Errorf("no bundle for %s", d)
	}
	return x509bundle.FromX509Authorities(b.td, b.roots), nil
}

func rootsOf(cs ...*ca.CA) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range cs {
		out = append(out, c.Roots()...)
	}
	return out
}

// TestAttackResumptionSkipsBundleCheck: the inbound (and the control plane's
// gRPC listener) verify the client's chain in VerifyPeerCertificate, which
// crypto/tls does not call for a resumed TLS 1.3 session, and session
// tickets are on by default. A client that once completed a full handshake
// keeps getting in by resumption (for up to 7 days, as long as its leaf has
// not expired) after the root that signed its certificate was removed from
// the trust bundle: a CA root removed after a compromise, or (once root
// rotation and revocation exist) a retired root, is still trusted by
// every inbound that issued a ticket.
// Fixed defect, guarded here: the server configs must disable session tickets
// (SessionTicketsDisabled) or re-verify the chain in VerifyConnection,
// which runs on resumption too.
func TestAttackResumptionSkipsBundleCheck(t *testing.T) {
	oldCA, newCA := newWorkloadCA(t, td), newWorkloadCA(t, td)
	serverBundle := &mutableBundle{td: td}
	serverBundle.set(rootsOf(oldCA, newCA)...)
	serverID := workloadID(t, td, "default", "api")
	serverCfg := mtls.ServerConfig(newSVID(t, newCA, serverID), serverBundle, td)

	// The client's certificate chains to the old root.
	client := newSVID(t, oldCA, workloadID(t, td, "default", "web"))
	clientBundle := &mutableBundle{td: td}
	clientBundle.set(rootsOf(oldCA, newCA)...)
	clientCfg := mtls.ClientConfig(client, clientBundle, serverID)
	clientCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	// The session cache is keyed by server name (else by address, which
	// each exchange changes); the server does not check it.
	clientCfg.ServerName = "api.default"

	exchange(t, serverCfg, clientCfg).check(t, true)

	// The old root leaves the server's bundle.
	serverBundle.set(rootsOf(newCA)...)

	// A fresh handshake with the same certificate is refused.
	fresh := mtls.ClientConfig(client, clientBundle, serverID)
	exchange(t, serverCfg, fresh).check(t, false)

	// A resumed session is not.
	res := exchange(t, serverCfg, clientCfg)
	if res.client == nil && res.server == nil && res.serverState.DidResume {
		t.Errorf("resumed session (DidResume=%v) with a certificate whose root left the bundle was accepted; want it refused",
			res.serverState.DidResume)
	}
}

// TestAttackNonWorkloadPeersHolds: certificates that are valid in the trust
// domain but are not workload SVIDs are refused at an inbound: the control
// plane's own serving certificate, and an SVID of another trust domain's CA
// that names this trust domain.
func TestAttackNonWorkloadPeersHolds(t *testing.T) {
	c := newWorkloadCA(t, td)
	serverID := workloadID(t, td, "default", "api")
	bundle := &mutableBundle{td: td}
	bundle.set(c.Roots()...)
	serverCfg := mtls.ServerConfig(newSVID(t, c, serverID), bundle, td)

	controlCert, _ := servingCert(t, c, mustID(t, "spiffe://bulwark.test/bulwark/control"))
	cfg := &tls.Config{Certificates: []tls.Certificate{controlCert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{mtls.ProtoH2}} //nolint:gosec // inspecting the server
	exchange(t, serverCfg, cfg).check(t, false)

	other := newWorkloadCA(t, otherTD)
	foreign := newSVID(t, other, workloadID(t, otherTD, "default", "web"))
	cfg = mtls.ClientConfig(foreign, bundle, serverID)
	exchange(t, serverCfg, cfg).check(t, false)

	// A sibling CA of the same trust domain name (another mesh's).
	sibling := newWorkloadCA(t, td)
	cfg = mtls.ClientConfig(newSVID(t, sibling, workloadID(t, td, "default", "web")), bundle, serverID)
	exchange(t, serverCfg, cfg).check(t, false)
}
