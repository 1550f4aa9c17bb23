package up

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// selfSignedTTL is the lifetime of the certificates bulwark up makes.
const selfSignedTTL = 30 * 24 * time.Hour

// selfSignedNames are the names of a local gateway: what a browser or curl
// on this machine dials.
var selfSignedNames = struct {
	dns []string
	ips []net.IP
}{dns: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}

// selfSigned returns a self-signed certificate and its private key, PEM, for
// localhost, 127.0.0.1 and ::1: ECDSA P-256, valid selfSignedTTL from now,
// for TLS servers only. It is for local use: nothing vouches for it, so
// clients must be told to trust it (curl --cacert).
func selfSigned(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   "localhost",
			Organization: []string{"bulwark up (self-signed, for local use only)"},
		},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(selfSignedTTL),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              selfSignedNames.dns,
		IPAddresses:           selfSignedNames.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), nil
}

// tlsSecret returns the kubernetes.io/tls Secret ns/name holding the pair.
func tlsSecret(ns, name string, certPEM, keyPEM []byte) *config.Secret {
	return &config.Secret{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindSecret},
		Metadata: config.ObjectMeta{Name: name, Namespace: ns},
		Type:     config.SecretTypeTLS,
		Data:     map[string][]byte{config.SecretKeyTLSCert: certPEM, config.SecretKeyTLSKey: keyPEM},
	}
}
