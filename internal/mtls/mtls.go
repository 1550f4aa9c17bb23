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
//
// SVIDs and bundles are read through go-spiffe sources on every handshake,
// so a rotated SVID or bundle is used by the next connection at once.
package mtls

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// ALPN protocols spoken between sidecars.
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

// ServerConfig is the inbound listener's config: TLS 1.3, the proxy's SVID,
// and a required client SVID of a workload of td that chains to bundle.
// Authorization of the request happens later, at L7.
func ServerConfig(svid x509svid.Source, bundle x509bundle.Source, td spiffeid.TrustDomain) *tls.Config {
	authorize := AuthorizeWorkload(td)
	cfg := tlsconfig.MTLSServerConfig(svid, bundle, authorize)
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ProtoH2, ProtoHTTP1}
	cfg.VerifyConnection = verifyResumed(bundle, authorize, true)
	return cfg
}

// verifyResumed checks the peer again on a resumed session: crypto/tls skips
// VerifyPeerCertificate when it resumes, so without this a session ticket
// would outlive a trust bundle change (a removed root). required says
// whether a peer certificate must be there.
func verifyResumed(bundle x509bundle.Source, authorize tlsconfig.Authorizer, required bool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if !cs.DidResume {
			return nil
		}
		if len(cs.PeerCertificates) == 0 {
			if required {
				return errors.New("resumed session without a peer certificate")
			}
			return nil
		}
		id, chains, err := x509svid.Verify(cs.PeerCertificates, bundle)
		if err != nil {
			return err
		}
		return authorize(id, chains)
	}
}

// ClientConfig is the config for a connection to a peer sidecar that must
// present exactly want, which serves the destination service.
func ClientConfig(svid x509svid.Source, bundle x509bundle.Source, want spiffeid.ID) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(want))
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ProtoH2}
	return cfg
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
		VerifyConnection: verifyResumed(bundle, authorize, false),
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
// returned listener with the returned config.
func ExpireConnections(ln net.Listener, cfg *tls.Config) (net.Listener, *tls.Config) {
	outer := &tls.Config{
		MinVersion:     cfg.MinVersion,
		NextProtos:     cfg.NextProtos,
		GetCertificate: cfg.GetCertificate,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c := cfg.Clone()
			ec, _ := hello.Conn.(*expiringConn)
			verify := c.VerifyConnection
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if verify != nil {
					if err := verify(cs); err != nil {
						return err
					}
				}
				if ec != nil && len(cs.PeerCertificates) > 0 {
					ec.expireAt(cs.PeerCertificates[0].NotAfter)
				}
				return nil
			}
			return c, nil
		},
	}
	return expiringListener{ln}, outer
}

type expiringListener struct{ net.Listener }

func (l expiringListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &expiringConn{Conn: c}, nil
}

// expiringConn closes itself at a deadline set after the handshake.
type expiringConn struct {
	net.Conn
	mu    sync.Mutex
	timer *time.Timer
}

func (c *expiringConn) expireAt(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer = time.AfterFunc(time.Until(t), func() { c.Conn.Close() })
}

// Close closes the connection and stops its expiry timer.
func (c *expiringConn) Close() error {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
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
