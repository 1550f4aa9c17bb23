// Package mtls is the only place that builds tls.Config for Bulwark traffic:
// sidecar to sidecar (mesh mTLS with X509-SVIDs), proxy to control plane, and
// operator to admin API. Keeping them here keeps the rules in one place:
//
//   - Mesh traffic is TLS 1.3 only, both ends present X509-SVIDs, the peer's
//     chain must verify against the current trust bundle, and the peer's
//     SPIFFE ID must be a workload identity of the trust domain.
//   - A client always checks the exact identity it expects (AuthorizeID),
//     never just "some member of the trust domain".
//   - The control plane presents spiffe://<td>/bulwark/control, which no
//     workload can be issued.
//   - The admin API trusts only the operator CA, so a workload SVID can never
//     authenticate as an operator.
//   - Between sidecars, a peer whose certificate is revoked (Mesh.Revoked)
//     fails the handshake, full or resumed, in both directions.
//   - The inbound listener speaks HTTP/2 only (ALPN h2): a client that
//     offers only http/1.1, or no ALPN, fails the handshake, so HTTP/1.1
//     framing ambiguities (request smuggling) never reach it. Sidecars
//     always talk to each other over HTTP/2.
//
// SVIDs and bundles are read through go-spiffe sources on every handshake,
// so a rotated SVID or bundle is used by the next connection at once: a peer
// is accepted when its chain verifies against any root of the current
// bundle, and a root removed from it fails the next handshake of its peers.
package mtls

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// ALPN protocols. Sidecars speak only ProtoH2 to each other; ProtoHTTP1 is
// also offered by the admin API.
const (
	ProtoH2    = "h2"
	ProtoHTTP1 = "http/1.1"
)

// AuthorizeWorkload accepts only workload identities
// (spiffe://<td>/ns/<ns>/sa/<account>) of the trust domain td.
func AuthorizeWorkload(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if !id.MemberOf(td) {
			return fmt.Errorf("peer %s is not a member of trust domain %s", id, td)
		}
		if _, err := identity.ParseWorkloadID(id); err != nil {
			return err
		}
		return nil
	}
}

// Revoked reports whether a peer's certificate (its leaf, already verified
// against the trust bundle) has been revoked. It runs in every mesh
// handshake, so it must be fast and must not block; SerialSet.Contains is
// one.
type Revoked func(leaf *x509.Certificate) bool

// Mesh is what sidecar-to-sidecar configs are built from.
type Mesh struct {
	// SVID is the proxy's own identity. Required.
	SVID x509svid.Source
	// Bundle is the trust bundle peers must chain to (any of its roots).
	// Required.
	Bundle x509bundle.Source
	// TrustDomain is the trust domain of inbound peers; ServerConfig only.
	TrustDomain spiffeid.TrustDomain
	// Revoked, if set, fails the handshake (full or resumed) with a peer
	// whose certificate it reports. nil: no certificate is revoked.
	Revoked Revoked
}

// ServerConfig is the inbound listener's config: TLS 1.3, HTTP/2 only
// (ALPN h2), the proxy's SVID, and a required client SVID of a workload of
// m.TrustDomain that chains to m.Bundle and is not revoked. Authorization of
// the request happens later, at L7.
//
// A client that does not negotiate h2 (it offers only http/1.1, or no ALPN)
// fails the handshake: crypto/tls would complete it without a protocol, and
// net/http would then serve HTTP/1.1, whose framing it resolves leniently
// (duplicate Content-Length, Transfer-Encoding with Content-Length) where
// it should refuse. With TLS 1.3 such a client learns of it on its first
// read.
func (m Mesh) ServerConfig() *tls.Config {
	authorize := AuthorizeWorkload(m.TrustDomain)
	cfg := tlsconfig.MTLSServerConfig(m.SVID, m.Bundle, authorize)
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ProtoH2}
	verify := verifyConnection(m.Bundle, authorize, true, m.Revoked)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol != ProtoH2 {
			return errors.New("inbound speaks HTTP/2 only (ALPN h2)")
		}
		return verify(cs)
	}
	return cfg
}

// ClientConfig is the config for a connection to a peer sidecar that must
// present exactly want, which serves the destination service, with a
// certificate that is not revoked.
func (m Mesh) ClientConfig(want spiffeid.ID) *tls.Config {
	authorize := tlsconfig.AuthorizeID(want)
	cfg := tlsconfig.MTLSClientConfig(m.SVID, m.Bundle, authorize)
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ProtoH2}
	cfg.VerifyConnection = verifyConnection(m.Bundle, authorize, true, m.Revoked)
	return cfg
}

// ServerConfig is Mesh{SVID: svid, Bundle: bundle, TrustDomain: td}.ServerConfig():
// the inbound config without a revocation check.
func ServerConfig(svid x509svid.Source, bundle x509bundle.Source, td spiffeid.TrustDomain) *tls.Config {
	return Mesh{SVID: svid, Bundle: bundle, TrustDomain: td}.ServerConfig()
}

// ClientConfig is Mesh{SVID: svid, Bundle: bundle}.ClientConfig(want): the
// config for a peer sidecar without a revocation check.
func ClientConfig(svid x509svid.Source, bundle x509bundle.Source, want spiffeid.ID) *tls.Config {
	return Mesh{SVID: svid, Bundle: bundle}.ClientConfig(want)
}

// verifyConnection runs on every handshake, after VerifyPeerCertificate on
// a full one. On a resumed session it checks the peer's chain again:
// crypto/tls skips VerifyPeerCertificate when it resumes, so without this a
// session ticket would outlive a trust bundle change (a removed root).
// required says whether a peer certificate must be there. Then, on every
// handshake, the peer must not be revoked.
func verifyConnection(bundle x509bundle.Source, authorize tlsconfig.Authorizer, required bool, revoked Revoked) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			if required && cs.DidResume {
				return errors.New("resumed session without a peer certificate")
			}
			return nil
		}
		if cs.DidResume {
			id, chains, err := x509svid.Verify(cs.PeerCertificates, bundle)
			if err != nil {
				return err
			}
			if err := authorize(id, chains); err != nil {
				return err
			}
		}
		if leaf := cs.PeerCertificates[0]; revoked != nil && revoked(leaf) {
			return fmt.Errorf("peer certificate %s is revoked", leaf.SerialNumber.Text(16))
		}
		return nil
	}
}

// SerialSet is an immutable set of certificate serial numbers, such as the
// revoked SVIDs a snapshot lists. The zero value is empty. Contains does not
// allocate.
type SerialSet struct {
	// m is keyed by the big-endian bytes of each serial, without leading
	// zeros (big.Int.Bytes).
	m map[string]struct{}
}

// NewSerialSet returns the set of serials, each in hex as
// big.Int.Text(16) writes them (lowercase, no leading zeros; other cases
// and leading zeros are read the same). A serial that is not positive hex
// is an error naming its index.
func NewSerialSet(serials []string) (SerialSet, error) {
	if len(serials) == 0 {
		return SerialSet{}, nil
	}
	m := make(map[string]struct{}, len(serials))
	for i, s := range serials {
		n, ok := new(big.Int).SetString(s, 16)
		if !ok || n.Sign() <= 0 || strings.HasPrefix(s, "+") {
			return SerialSet{}, fmt.Errorf("serial %d: %q is not a positive hex number", i, s)
		}
		m[string(n.Bytes())] = struct{}{}
	}
	return SerialSet{m: m}, nil
}

// Len returns the number of serials in the set.
func (s SerialSet) Len() int { return len(s.m) }

// Contains reports whether leaf's serial number is in the set.
func (s SerialSet) Contains(leaf *x509.Certificate) bool {
	if len(s.m) == 0 || leaf == nil || leaf.SerialNumber == nil || leaf.SerialNumber.Sign() <= 0 {
		return false
	}
	n := leaf.SerialNumber
	// RFC 5280 serials are at most 20 octets: those fit on the stack.
	var buf [20]byte
	size := (n.BitLen() + 7) / 8
	if size > len(buf) {
		_, ok := s.m[string(n.Bytes())]
		return ok
	}
	n.FillBytes(buf[:])
	_, ok := s.m[string(buf[len(buf)-size:])]
	return ok
}

// ControlClientConfig is a proxy's config for the control plane once it
// knows the trust bundle. svid may be nil: then no client certificate is
// sent, which only Attest accepts.
func ControlClientConfig(svid x509svid.Source, bundle x509bundle.Source, td spiffeid.TrustDomain) *tls.Config {
	var cfg *tls.Config
	if svid == nil {
		cfg = tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(identity.ControlPlaneID(td)))
	} else {
		cfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(identity.ControlPlaneID(td)))
	}
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ProtoH2}
	return cfg
}

// ErrPinMismatch is returned when no certificate of the control plane's
// chain matches the CA pin of a join token.
var ErrPinMismatch = errors.New("control plane certificate chain does not match the CA pin of the join token")

// SPKIPin returns the pin of a CA certificate as carried in join tokens:
// "sha256:" and the unpadded base64url SHA-256 of its SubjectPublicKeyInfo.
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + base64.RawURLEncoding.EncodeToString(sum[:])
}

// pinPrefix starts every SPKI pin and names its hash.
const pinPrefix = "sha256:"

// PinnedAnchor returns the CA certificate of chain whose SPKIPin is pin,
// comparing in constant time. It only finds the anchor: the caller must
// still verify chain against it. It fails with ErrPinMismatch when no CA
// certificate matches, and for a malformed pin.
func PinnedAnchor(chain []*x509.Certificate, pin string) (*x509.Certificate, error) {
	if !strings.HasPrefix(pin, pinPrefix) {
		return nil, fmt.Errorf("%w: pin does not start with %q", ErrPinMismatch, pinPrefix)
	}
	var found *x509.Certificate
	for _, c := range chain {
		if c == nil || !c.IsCA || !c.BasicConstraintsValid {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(SPKIPin(c)), []byte(pin)) == 1 && found == nil {
			found = c
		}
	}
	if found == nil {
		return nil, ErrPinMismatch
	}
	return found, nil
}

// BootstrapControlConfig is a proxy's config for its first contact with the
// control plane, before it has an SVID or knows the trust domain for sure.
// anchors returns the roots to verify the control plane's chain with: the
// roots of a --ca-bundle file, or the root of the chain that matches a join
// token's pin (PinnedAnchor; the control plane sends its root in its chain
// for this). The chain must verify against them and name the control plane's
// identity; its trust domain must be wantTD unless wantTD is zero.
// onVerified is called with the verified trust domain.
func BootstrapControlConfig(anchors func(chain []*x509.Certificate) ([]*x509.Certificate, error), wantTD spiffeid.TrustDomain, onVerified func(td spiffeid.TrustDomain)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ProtoH2},
		// Verification is done below, against the anchors, not the
		// system roots or host names.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("control plane sent no certificate")
			}
			chain := make([]*x509.Certificate, 0, len(raw))
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return fmt.Errorf("parse control plane certificate: %w", err)
				}
				chain = append(chain, c)
			}
			roots, err := anchors(chain)
			if err != nil {
				return err
			}
			id, err := x509svid.IDFromCert(chain[0])
			if err != nil {
				return fmt.Errorf("control plane certificate: %w", err)
			}
			td := id.TrustDomain()
			if !wantTD.IsZero() && td != wantTD {
				return fmt.Errorf("control plane is in trust domain %q, want %q", td, wantTD)
			}
			if id != identity.ControlPlaneID(td) {
				return fmt.Errorf("unexpected control plane identity %s", id)
			}
			if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots)); err != nil {
				return fmt.Errorf("verify control plane certificate: %w", err)
			}
			if onVerified != nil {
				onVerified(td)
			}
			return nil
		},
	}
}

// ControlServerConfig is the control plane's gRPC listener config: it
// presents the control plane's certificate from getCert, asks for a client
// certificate and, when one is sent, requires it to be a workload SVID that
// chains to bundle. Callers without a certificate can only reach Attest
// (enforced per RPC by the control plane).
func ControlServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), bundle x509bundle.Source, td spiffeid.TrustDomain) *tls.Config {
	authorize := AuthorizeWorkload(td)
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		NextProtos:       []string{ProtoH2},
		GetCertificate:   getCert,
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: verifyConnection(bundle, authorize, false, nil),
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			id, chains, err := x509svid.ParseAndVerify(raw, bundle)
			if err != nil {
				return err
			}
			return authorize(id, chains)
		},
	}
}

// AdminServerConfig is the admin API's listener config: TLS 1.2+ with
// modern suites, the admin serving certificate from getCert, and client
// certificates verified against the operator CA only. A client without a
// certificate completes the handshake (so probes can reach /healthz) and is
// refused by the HTTP layer with 401; a certificate from any other CA,
// including a workload SVID, fails the handshake.
func AdminServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), operatorRoots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   modernSuites(),
		GetCertificate: getCert,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      operatorRoots,
		NextProtos:     []string{ProtoH2, ProtoHTTP1},
	}
}

// AdminClientConfig is an operator's config for the admin API: the server
// must chain to serverCA (the operator CA from the credential file), and
// cert is the operator's client certificate.
func AdminClientConfig(serverCA *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: modernSuites(),
		RootCAs:      serverCA,
		Certificates: []tls.Certificate{cert},
	}
}

// modernSuites are the TLS 1.2 suites allowed where TLS 1.2 is accepted
// (TLS 1.3 suites are not configurable and all modern).
func modernSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
	}
}

// ExpireConnections makes a TLS server close each connection when the client
// certificate it was authenticated with expires: a certificate is checked at
// the handshake, and without this a long-lived connection (HTTP/2 between
// sidecars) would let a stolen SVID outlive its expiry. Serve TLS on the
// returned listener with the returned config. The listener also closes, on
// demand, the connections of peers that were revoked after their handshake
// (ClosePeers).
func ExpireConnections(ln net.Listener, cfg *tls.Config) (*ExpiringListener, *tls.Config) {
	outer := &tls.Config{
		MinVersion:     cfg.MinVersion,
		NextProtos:     cfg.NextProtos,
		GetCertificate: cfg.GetCertificate,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c := cfg.Clone()
			ec, _ := hello.Conn.(*expiringConn)
			verify := c.VerifyConnection
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				// The peer is recorded before it is checked: a ClosePeers
				// that runs meanwhile either sees it or has already
				// changed what verify checks.
				if ec != nil && len(cs.PeerCertificates) > 0 {
					ec.setPeer(cs.PeerCertificates[0])
				}
				if verify != nil {
					return verify(cs)
				}
				return nil
			}
			return c, nil
		},
	}
	return &ExpiringListener{Listener: ln, conns: map[*expiringConn]struct{}{}}, outer
}

// ExpiringListener is the listener ExpireConnections returns. It keeps the
// connections it accepted until they are closed.
type ExpiringListener struct {
	net.Listener

	mu    sync.Mutex
	conns map[*expiringConn]struct{}
}

// Accept waits for and returns the next connection.
func (l *ExpiringListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ec := &expiringConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[ec] = struct{}{}
	l.mu.Unlock()
	return ec, nil
}

// ClosePeers closes every open connection whose peer certificate (as
// presented at its handshake) match reports, and returns how many it
// closed. In-flight requests on them fail.
func (l *ExpiringListener) ClosePeers(match func(leaf *x509.Certificate) bool) int {
	var doomed []*expiringConn
	l.mu.Lock()
	for c := range l.conns {
		if leaf := c.leaf.Load(); leaf != nil && match(leaf) {
			doomed = append(doomed, c)
		}
	}
	l.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
	return len(doomed)
}

func (l *ExpiringListener) forget(c *expiringConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// expiringConn closes itself when its peer's certificate expires.
type expiringConn struct {
	net.Conn
	l *ExpiringListener
	// leaf is the peer's certificate, once presented.
	leaf atomic.Pointer[x509.Certificate]

	mu    sync.Mutex
	timer *time.Timer
}

// setPeer records the peer's certificate and closes the connection when it
// expires.
func (c *expiringConn) setPeer(leaf *x509.Certificate) {
	c.leaf.Store(leaf)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer = time.AfterFunc(time.Until(leaf.NotAfter), func() { c.Close() })
}

// Close closes the connection and stops its expiry timer.
func (c *expiringConn) Close() error {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	c.l.forget(c)
	return c.Conn.Close()
}

// ProbeConfig is the control plane's config for checking that the proxy
// answering at an advertised address is the one that advertised it: the
// server must present an SVID of exactly want, chaining to bundle. No client
// certificate is sent, so the probe learns who listens and nothing more.
func ProbeConfig(bundle x509bundle.Source, want spiffeid.ID) *tls.Config {
	cfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(want))
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ProtoH2}
	return cfg
}
