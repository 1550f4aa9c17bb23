package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// OperatorOrganization is the subject organization of operator client
// certificates, and of nothing else the CAs issue.
const OperatorOrganization = "bulwark-operators"

// Operator certificate lifetimes.
const (
	// DefaultOperatorClientTTL is the lifetime of an operator client
	// certificate signed with ttl 0: 1 year.
	DefaultOperatorClientTTL = 365 * 24 * time.Hour
	// DefaultOperatorServerTTL is the lifetime of an admin API serving
	// certificate signed with ttl 0: 90 days.
	DefaultOperatorServerTTL = 90 * 24 * time.Hour
)

// maxOperatorName is the longest operator name: the upper bound of a
// certificate's CommonName (RFC 5280 ub-common-name).
const maxOperatorName = 64

// OperatorCA is the operator CA: a root, separate from the workload CA,
// that signs operator client certificates and the admin API's serving
// certificate directly. The admin API trusts only this root, and the
// workload bundle never contains it, so neither kind of certificate
// authenticates where the other is expected. It is immutable after
// NewOperatorCA and safe for concurrent use.
type OperatorCA struct {
	clock  clock.Clock
	root   *x509.Certificate
	signer crypto.Signer
}

// NewOperatorCA starts the operator CA. It uses cfg's Store, Keys, Clock,
// Logger and RootTTL; TrustDomain only names the CA. Like New it creates
// the root on the first start and loads it afterwards, and fails, writing
// nothing, when the record is corrupted, its key is missing or does not
// match, or the root has expired.
func NewOperatorCA(ctx context.Context, cfg Config) (*OperatorCA, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("operator ca config: %w", err)
	}
	logger := cfg.Logger.With(telemetry.KeyComponent, "operator-ca")
	c := &custody{store: cfg.Store, keys: cfg.Keys, logger: logger}
	now := cfg.Clock.Now()
	root, err := c.loadOrCreate(ctx, spec{
		key:       keyOperatorRoot,
		keyPrefix: keyPrefixOperatorRoot,
		what:      "operator root",
		check: func(cert *x509.Certificate) error {
			if len(cert.URIs) != 0 {
				return fmt.Errorf("%w: operator root has URI SANs", ErrCorruptRecord)
			}
			if err := cert.CheckSignatureFrom(cert); err != nil {
				return fmt.Errorf("%w: operator root is not self-signed: %v", ErrCorruptRecord, err)
			}
			if !now.Before(cert.NotAfter) {
				return fmt.Errorf("%w: operator root expired at %s", ErrExpired, cert.NotAfter.Format(time.RFC3339))
			}
			return nil
		},
		create: func(signer crypto.Signer) (*x509.Certificate, error) {
			tmpl, err := operatorRootTemplate(signer.Public(), cfg.TrustDomain, now, cfg.RootTTL)
			if err != nil {
				return nil, err
			}
			return sign(tmpl, tmpl, signer.Public(), signer)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("start operator ca: %w", err)
	}
	if lifetimeLeft(root.cert, now) < renewBelow {
		logger.Warn("operator root nears expiry, rotate it", telemetry.KeyExpiry, root.cert.NotAfter)
	}
	return &OperatorCA{clock: cfg.Clock, root: root.cert, signer: root.signer}, nil
}

// Root returns the operator CA certificate, the only anchor of the admin
// API's client authentication and of operators' view of its serving
// certificate. It must not be modified.
func (o *OperatorCA) Root() *x509.Certificate { return o.root }

// SignClient issues the client certificate of operator for pub: subject
// CN=operator, O=bulwark-operators (OperatorOrganization), ExtKeyUsage
// ClientAuth only, no SANs. It is valid for ttl (1 year when 0), capped at
// the root's expiry. An operator name is 1 to 64 characters of letters,
// digits and ".-_@", starting with a letter or digit.
func (o *OperatorCA) SignClient(pub crypto.PublicKey, operator string, ttl time.Duration) (*x509.Certificate, error) {
	if err := validateOperatorName(operator); err != nil {
		return nil, fmt.Errorf("sign operator certificate: %w", err)
	}
	subject := pkix.Name{Organization: []string{OperatorOrganization}, CommonName: operator}
	cert, err := o.signLeaf(pub, ttl, DefaultOperatorClientTTL, func(now time.Time, ttl time.Duration) (*x509.Certificate, error) {
		return leafTemplate(pub, subject, now, ttl, o.root, x509.ExtKeyUsageClientAuth)
	})
	if err != nil {
		return nil, fmt.Errorf("sign operator certificate %q: %w", operator, err)
	}
	return cert, nil
}

// SignServer issues the admin API's serving certificate for pub with
// dnsNames and ips as SANs (at least one), ExtKeyUsage ServerAuth only. It
// is valid for ttl (90 days when 0), capped at the root's expiry.
func (o *OperatorCA) SignServer(pub crypto.PublicKey, dnsNames []string, ips []net.IP, ttl time.Duration) (*x509.Certificate, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, errors.New("sign admin serving certificate: no dns name or ip address")
	}
	if err := checkSANs(dnsNames, ips); err != nil {
		return nil, fmt.Errorf("sign admin serving certificate: %w", err)
	}
	subject := pkix.Name{Organization: []string{organization}, CommonName: "Bulwark admin API"}
	cert, err := o.signLeaf(pub, ttl, DefaultOperatorServerTTL, func(now time.Time, ttl time.Duration) (*x509.Certificate, error) {
		tmpl, err := leafTemplate(pub, subject, now, ttl, o.root, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return nil, err
		}
		tmpl.DNSNames = dnsNames
		tmpl.IPAddresses = ips
		return tmpl, nil
	})
	if err != nil {
		return nil, fmt.Errorf("sign admin serving certificate: %w", err)
	}
	return cert, nil
}

// signLeaf checks pub and ttl and signs the template tmpl returns with the
// root.
func (o *OperatorCA) signLeaf(pub crypto.PublicKey, ttl, def time.Duration, tmpl func(now time.Time, ttl time.Duration) (*x509.Certificate, error)) (*x509.Certificate, error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	ttl, err := leafTTL(ttl, def)
	if err != nil {
		return nil, err
	}
	now := o.clock.Now()
	if !now.Before(o.root.NotAfter) {
		return nil, fmt.Errorf("%w: operator root expired at %s", ErrExpired, o.root.NotAfter.Format(time.RFC3339))
	}
	t, err := tmpl(now, ttl)
	if err != nil {
		return nil, err
	}
	return sign(t, o.root, pub, o.signer)
}

// OperatorName returns the operator a client certificate names: its
// CommonName, when its only subject organization is OperatorOrganization,
// it allows ClientAuth, is not a CA and has no URI SAN (so never a SPIFFE
// ID). Anything else is an error wrapping ErrNotOperator.
//
// It does not verify the certificate: call it only with the leaf of a
// chain the TLS layer verified against the operator root (OperatorCA.Root).
func OperatorName(cert *x509.Certificate) (string, error) {
	switch {
	case cert == nil:
		return "", fmt.Errorf("operator name: %w: no certificate", ErrNotOperator)
	case cert.IsCA:
		return "", fmt.Errorf("operator name: %w: a ca certificate", ErrNotOperator)
	case len(cert.URIs) != 0:
		return "", fmt.Errorf("operator name: %w: has a URI SAN", ErrNotOperator)
	case !slices.Equal(cert.Subject.Organization, []string{OperatorOrganization}):
		return "", fmt.Errorf("operator name: %w: subject organization %q, want [%q]", ErrNotOperator, cert.Subject.Organization, OperatorOrganization)
	case !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		return "", fmt.Errorf("operator name: %w: no ClientAuth usage", ErrNotOperator)
	}
	name := cert.Subject.CommonName
	if err := validateOperatorName(name); err != nil {
		return "", fmt.Errorf("operator name: %w: %v", ErrNotOperator, err)
	}
	return name, nil
}

// validateOperatorName accepts 1 to 64 characters of letters, digits and
// ".-_@", starting with a letter or digit.
func validateOperatorName(name string) error {
	if name == "" || len(name) > maxOperatorName {
		return fmt.Errorf("operator name %q: must be 1 to %d characters", name, maxOperatorName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '-' && c != '_' && c != '@') {
			return fmt.Errorf("operator name %q: only letters, digits and \".-_@\" allowed, starting with a letter or digit", name)
		}
	}
	return nil
}
