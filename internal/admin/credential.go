package admin

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/fileutil"
)

// CredentialKind is the kind of an operator credential file.
const CredentialKind = "OperatorCredential"

// Credential is an operator credential file, self-contained like a
// kubeconfig: the admin API address, the CA that signs its serving
// certificate, and the operator's client certificate and key, all embedded
// as PEM. It is written with mode 0600.
type Credential struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Operator is the operator's name (informational; the certificate is
	// what counts).
	Operator string `json:"operator"`
	// Server is the admin API URL, "https://host:port".
	Server string `json:"server"`
	// CA is the PEM certificate of the operator CA, which signs the admin
	// API's serving certificate.
	CA string `json:"ca"`
	// Certificate is the operator's PEM client certificate.
	Certificate string `json:"certificate"`
	// Key is the operator's PEM private key.
	Key string `json:"key"`
}

// LoadCredential reads and checks a credential file.
func LoadCredential(path string) (*Credential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read operator credential: %w", err)
	}
	var c Credential
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("operator credential %s: %w", path, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("operator credential %s: %w", path, err)
	}
	return &c, nil
}

func (c *Credential) validate() error {
	if c.APIVersion != config.APIVersion || c.Kind != CredentialKind {
		return fmt.Errorf("apiVersion/kind: want %s %s", config.APIVersion, CredentialKind)
	}
	u, err := url.Parse(c.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("server: must be an https:// URL, got %q", c.Server)
	}
	if _, err := c.rootPool(); err != nil {
		return err
	}
	if _, err := c.tlsCertificate(); err != nil {
		return err
	}
	return nil
}

func (c *Credential) rootPool() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CA)) {
		return nil, errors.New("ca: no PEM certificate")
	}
	return pool, nil
}

func (c *Credential) tlsCertificate() (tls.Certificate, error) {
	cert, err := tls.X509KeyPair([]byte(c.Certificate), []byte(c.Key))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate/key: %w", err)
	}
	return cert, nil
}

// Write writes the credential to path with mode 0600, atomically.
func (c *Credential) Write(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write operator credential: %w", err)
	}
	if err := fileutil.WriteAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("write operator credential: %w", err)
	}
	return nil
}
