package control

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// servingCert issues a serving certificate with a fresh in-memory key and
// re-issues it once half of its lifetime has passed. The key never touches
// the disk.
type servingCert struct {
	clock  clock.Clock
	logger *slog.Logger
	issue  func(pub *ecdsa.PublicKey) ([]*x509.Certificate, error)
	// current, if set, reports whether a certificate is still issued by
	// the current CA; one that is not is re-issued at once.
	current func(leaf *x509.Certificate) bool

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

func newServingCert(c clock.Clock, logger *slog.Logger, issue func(*ecdsa.PublicKey) ([]*x509.Certificate, error)) (*servingCert, error) {
	s := &servingCert{clock: c, logger: logger, issue: issue}
	if _, err := s.get(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is the tls.Config callback.
func (s *servingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.get() }

func (s *servingCert) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if s.cert != nil && now.Before(s.renewAt) && (s.current == nil || s.current(s.cert.Leaf)) {
		return s.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return s.fallback(now, fmt.Errorf("generate serving key: %w", err))
	}
	chain, err := s.issue(&key.PublicKey)
	if err != nil {
		return s.fallback(now, fmt.Errorf("issue serving certificate: %w", err))
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	life := chain[0].NotAfter.Sub(now)
	s.cert, s.renewAt = c, now.Add(life/2)
	return c, nil
}

// fallback keeps serving the old certificate while it is valid.
func (s *servingCert) fallback(now time.Time, err error) (*tls.Certificate, error) {
	if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
		s.logger.Warn("renew serving certificate", telemetry.KeyErr, err)
		s.renewAt = now.Add(time.Minute)
		return s.cert, nil
	}
	return nil, err
}

// sans returns the names a serving certificate for a listener bound at addr
// must carry: its IP, and for loopback or wildcard binds, localhost, the
// loopback addresses, the host name and (wildcard only) every interface
// address.
func sans(addr net.Addr) (dns []string, ips []net.IP) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	add := func(ip net.IP) {
		for _, o := range ips {
			if o.Equal(ip) {
				return
			}
		}
		ips = append(ips, ip)
	}
	if !tcp.IP.IsUnspecified() {
		add(tcp.IP)
	}
	if tcp.IP.IsLoopback() || tcp.IP.IsUnspecified() {
		dns = append(dns, "localhost")
		add(net.IPv4(127, 0, 0, 1))
		add(net.IPv6loopback)
	}
	if tcp.IP.IsUnspecified() {
		if h, err := os.Hostname(); err == nil && h != "" {
			dns = append(dns, h)
		}
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					add(n.IP)
				}
			}
		}
	}
	return dns, ips
}

// dialable returns the address a local client should dial for a listener
// bound at addr: the bound address, or loopback for a wildcard bind.
func dialable(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	if tcp.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
	}
	return tcp.String()
}

// operatorCredentialTTL is the lifetime of the bootstrap admin credential.
const operatorCredentialTTL = 365 * 24 * time.Hour

// bootstrapOperator makes sure path holds a working credential of the
// built-in admin operator for server: it keeps an existing one that chains
// to the operator CA and is valid for 30 more days (updating its server
// address), and issues a new one otherwise.
func bootstrapOperator(path string, op *ca.OperatorCA, server string, now time.Time, logger *slog.Logger) error {
	root := op.Root()
	rootPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}))
	if cred, err := admin.LoadCredential(path); err == nil && credentialUsable(cred, root, now) {
		if cred.Server == server && cred.CA == rootPEM {
			return nil
		}
		cred.Server, cred.CA = server, rootPEM
		return cred.Write(path)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		logger.Warn("operator credential unusable, issuing a new one", telemetry.KeyErr, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("bootstrap operator: %w", err)
	}
	cert, err := op.SignClient(&key.PublicKey, "admin", operatorCredentialTTL)
	if err != nil {
		return fmt.Errorf("bootstrap operator: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("bootstrap operator: %w", err)
	}
	cred := &admin.Credential{
		APIVersion:  config.APIVersion,
		Kind:        admin.CredentialKind,
		Operator:    "admin",
		Server:      server,
		CA:          rootPEM,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		Key:         string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	}
	if err := cred.Write(path); err != nil {
		return err
	}
	logger.Info("operator credential written", telemetry.KeyOperator, "admin", telemetry.KeyDetail, path)
	return nil
}

func credentialUsable(cred *admin.Credential, root *x509.Certificate, now time.Time) bool {
	block, _ := pem.Decode([]byte(cred.Certificate))
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil && now.Add(30*24*time.Hour).Before(cert.NotAfter)
}
