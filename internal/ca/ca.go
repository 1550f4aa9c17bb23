// Package ca owns certificate issuance: the workload CA (a self-generated
// root -> an intermediate held by the control plane -> X509-SVIDs) and the
// separate operator CA (operator client certificates and the admin API
// serving certificate), so that a workload SVID can never act as an
// operator.
//
// Both CAs keep their certificates, with the ids of their keys, in the
// store (so every control-plane replica sees the same CA) and their private
// keys in a keymanager.KeyManager only. The first start creates them;
// later starts load them and fail, rather than regenerate, when a record is
// corrupted or its key is missing or does not match: new CA material would
// silently invalidate every credential issued before. CA keys are ECDSA
// P-256.
//
// Certificate profiles follow SPIRE's: the root has a URI SAN of the trust
// domain and MaxPathLen 1; the intermediate has MaxPathLen 0 and a critical
// name constraint limiting URI SANs to the trust domain; X509-SVIDs have
// exactly one URI SAN, no DNS SANs, and are usable as client and server.
// The operator CA has no URI SAN, and operator certificates have none, so
// neither CA's certificates verify under the other.
//
// The workload CA changes only through rotation (rotate.go): root rotation
// in phases (prepared, activated, retired) with every phase one
// compare-and-swap write, and intermediate rotation; package ca/rotation
// decides when. A CA reloads its records (Reload) to follow another
// replica's rotation. The JWT-SVID signing key (jwt.go) is kept the same
// way.
//
// Caveats: crypto/x509 matches the intermediate's URI name constraint like
// a DNS one, so it lets subdomains of the trust domain through; SPIFFE
// verification still refuses them, because it picks the bundle by the exact
// trust domain. Several control planes share one CA only if they share its
// keys (one KeyManager, such as a KMS): with a Disk each, a replica that
// loads another's records fails for the missing key.
package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Lifetimes.
const (
	// DefaultSVIDTTL is the lifetime of an X509-SVID when Config.SVIDTTL
	// is zero.
	DefaultSVIDTTL = time.Hour
	// MinSVIDTTL is the shortest Config.SVIDTTL accepted.
	MinSVIDTTL = time.Minute
	// DefaultRootTTL is the lifetime of a new root when Config.RootTTL is
	// zero: 10 years.
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
	// DefaultIntermediateTTL is the lifetime of a new workload
	// intermediate when Config.IntermediateTTL is zero: 1 year.
	DefaultIntermediateTTL = 365 * 24 * time.Hour
)

// renewBelow is the fraction of its lifetime an intermediate may have left
// before New replaces it.
const renewBelow = 1.0 / 3

// Config configures the workload CA (New) and the operator CA
// (NewOperatorCA).
type Config struct {
	// TrustDomain is the trust domain of the workload CA; the operator
	// CA uses it only in its name. Required.
	TrustDomain spiffeid.TrustDomain
	// Store keeps the CA certificates and the ids of their keys.
	// Required.
	Store store.Store
	// Keys keeps the CA private keys; they never leave it. Required.
	Keys keymanager.KeyManager
	// Clock is the time of issuance and renewal. Default: clock.Real().
	Clock clock.Clock
	// Logger receives CA creation and renewal events; never keys.
	// Default: discard.
	Logger *slog.Logger
	// SVIDTTL is the lifetime of an X509-SVID signed with ttl 0.
	// Default: 1h (DefaultSVIDTTL). Minimum: 1m (MinSVIDTTL); at most
	// IntermediateTTL.
	SVIDTTL time.Duration
	// RootTTL is the lifetime of a new root, workload or operator.
	// Default: 10 years (DefaultRootTTL).
	RootTTL time.Duration
	// IntermediateTTL is the lifetime of a new workload intermediate,
	// capped at its root's expiry. Default: 1 year
	// (DefaultIntermediateTTL); at most RootTTL.
	IntermediateTTL time.Duration
	// Signed, if set, is told of every signature the workload CA and the
	// JWT authority attempt: its kind (SignatureX509SVID, ...) and its
	// error (nil: signed), on the signing goroutine; it must not block.
	// Default: none.
	Signed func(kind string, err error)
}

// withDefaults checks the fields both CAs use and fills in their defaults.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.TrustDomain.IsZero():
		return c, errors.New("trust domain is required")
	case c.Store == nil:
		return c, errors.New("store is required")
	case c.Keys == nil:
		return c, errors.New("key manager is required")
	case c.RootTTL < 0:
		return c, fmt.Errorf("root ttl %s is negative", c.RootTTL)
	}
	if c.RootTTL == 0 {
		c.RootTTL = DefaultRootTTL
	}
	c.Clock = clock.OrReal(c.Clock)
	c.Logger = telemetry.OrDiscard(c.Logger)
	return c, nil
}

// withWorkloadDefaults also checks and defaults the workload CA's fields.
func (c Config) withWorkloadDefaults() (Config, error) {
	c, err := c.withDefaults()
	if err != nil {
		return c, err
	}
	if c.SVIDTTL == 0 {
		c.SVIDTTL = DefaultSVIDTTL
	}
	if c.IntermediateTTL == 0 {
		c.IntermediateTTL = DefaultIntermediateTTL
	}
	switch {
	case c.SVIDTTL < MinSVIDTTL:
		return c, fmt.Errorf("svid ttl %s is below the minimum %s", c.SVIDTTL, MinSVIDTTL)
	case c.IntermediateTTL < 0:
		return c, fmt.Errorf("intermediate ttl %s is negative", c.IntermediateTTL)
	case c.IntermediateTTL > c.RootTTL:
		return c, fmt.Errorf("intermediate ttl %s exceeds the root ttl %s", c.IntermediateTTL, c.RootTTL)
	case c.SVIDTTL > c.IntermediateTTL:
		return c, fmt.Errorf("svid ttl %s exceeds the intermediate ttl %s", c.SVIDTTL, c.IntermediateTTL)
	}
	return c, nil
}

// CA is the workload CA: it signs X509-SVIDs and the control plane's
// serving certificates with the intermediate, under the root. It is safe for
// concurrent use. Its material changes only through rotation (rotate.go)
// and Reload; every method reads one consistent generation of it.
type CA struct {
	td       spiffeid.TrustDomain
	clock    clock.Clock
	svidTTL  time.Duration
	rootTTL  time.Duration
	interTTL time.Duration
	custody  *custody
	logger   *slog.Logger
	// signed is Config.Signed.
	signed func(kind string, err error)

	cur atomic.Pointer[generation]
	// mu serializes this process's rotation operations; other control
	// planes are kept out by compare-and-swap.
	mu sync.Mutex
}

// generation is one consistent view of the workload CA's records.
type generation struct {
	// root signs intermediate; intermediate signs SVIDs.
	root, intermediate *authority
	// rotation is the rotation record (zero when none was ever written)
	// and its ModRevision (0: absent).
	rotation    rotationRecord
	rotationRev int64
	// other is the second root of the bundle during a root rotation: the
	// new root while prepared, the old one while activated.
	other *x509.Certificate
}

// bundle returns the roots proxies trust: the signing root and, during a
// root rotation, the other one, oldest first.
func (g *generation) bundle() []*x509.Certificate {
	roots := []*x509.Certificate{g.root.cert}
	if g.other != nil {
		roots = append(roots, g.other)
		if g.other.NotBefore.Before(g.root.cert.NotBefore) {
			roots[0], roots[1] = roots[1], roots[0]
		}
	}
	return roots
}

// New starts the workload CA of cfg.TrustDomain. It loads the root and the
// intermediate from the store, and creates them on the first start (when
// several control planes start at once, one creation wins and the others
// load it). It issues a new intermediate under the root when the stored one
// has less than a third of its lifetime left, and resumes a root rotation
// left in the store.
//
// It fails, and writes nothing, when a record is corrupted, belongs to
// another trust domain, or its key is missing from cfg.Keys or does not
// match its certificate, and when the root has expired.
func New(ctx context.Context, cfg Config) (*CA, error) {
	cfg, err := cfg.withWorkloadDefaults()
	if err != nil {
		return nil, fmt.Errorf("workload ca config: %w", err)
	}
	td := cfg.TrustDomain
	logger := cfg.Logger.With(telemetry.KeyComponent, "ca", telemetry.KeyTrustDomain, td.Name())
	c := &CA{
		td: td, clock: cfg.Clock, svidTTL: cfg.SVIDTTL, rootTTL: cfg.RootTTL, interTTL: cfg.IntermediateTTL,
		custody: &custody{store: cfg.Store, keys: cfg.Keys, logger: logger},
		logger:  logger, signed: cfg.Signed,
	}
	now := cfg.Clock.Now()

	root, err := c.custody.loadOrCreate(ctx, c.rootSpec(now))
	if err != nil {
		return nil, fmt.Errorf("start workload ca: %w", err)
	}
	if lifetimeLeft(root.cert, now) < renewBelow {
		logger.Warn("workload root nears expiry, rotate it", telemetry.KeyExpiry, root.cert.NotAfter)
	}
	inter, err := c.custody.loadOrCreate(ctx, c.intermediateSpec(root, now))
	if err != nil {
		return nil, fmt.Errorf("start workload ca: %w", err)
	}
	if err := c.Reload(ctx); err != nil {
		return nil, fmt.Errorf("start workload ca: %w", err)
	}
	if g := c.cur.Load(); g.intermediate.cert.SerialNumber.Cmp(inter.cert.SerialNumber) != 0 {
		// Another control plane rotated between the reads: Reload's
		// view is the newer one.
		logger.Info("ca changed during start, using the newer records")
	}
	return c, nil
}

// rootSpec is how the workload root record is checked and created.
func (c *CA) rootSpec(now time.Time) spec {
	td := c.td
	return spec{
		key:        keyWorkloadRoot,
		keyPrefix:  keyPrefixWorkloadRoot,
		what:       "workload root",
		dependents: []string{keyWorkloadIntermediate, keyWorkloadRotation},
		check: func(cert *x509.Certificate) error {
			if err := checkWorkloadRoot(cert, td); err != nil {
				return err
			}
			if !now.Before(cert.NotAfter) {
				return fmt.Errorf("%w: root expired at %s", ErrExpired, cert.NotAfter.Format(time.RFC3339))
			}
			return nil
		},
		create: func(signer crypto.Signer) (*x509.Certificate, error) {
			tmpl, err := workloadRootTemplate(signer.Public(), td, now, c.rootTTL)
			if err != nil {
				return nil, err
			}
			cert, err := sign(tmpl, tmpl, signer.Public(), signer)
			signed(c.signed, SignatureRoot, err)
			return cert, err
		},
	}
}

// checkWorkloadRoot checks a workload root of td beyond its key.
func checkWorkloadRoot(cert *x509.Certificate, td spiffeid.TrustDomain) error {
	if err := checkWorkloadCA(cert, td); err != nil {
		return err
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return fmt.Errorf("%w: root is not self-signed: %v", ErrCorruptRecord, err)
	}
	return nil
}

// intermediateSpec is how the workload intermediate record under root is
// checked, created and renewed.
func (c *CA) intermediateSpec(root *authority, now time.Time) spec {
	td := c.td
	return spec{
		key:       keyWorkloadIntermediate,
		keyPrefix: keyPrefixWorkloadIntermediate,
		what:      "workload intermediate",
		check:     func(cert *x509.Certificate) error { return checkIntermediate(cert, root.cert, td) },
		create: func(signer crypto.Signer) (*x509.Certificate, error) {
			return c.newIntermediate(signer, root, now)
		},
		renew: func(cert *x509.Certificate) bool { return lifetimeLeft(cert, now) < renewBelow },
		// The intermediate is written only under the root it was
		// signed by.
		guard: []store.Cmp{{Key: keyWorkloadRoot, ModRevision: root.rev}},
	}
}

// checkIntermediate checks a workload intermediate of td under root.
func checkIntermediate(cert, root *x509.Certificate, td spiffeid.TrustDomain) error {
	if err := checkWorkloadCA(cert, td); err != nil {
		return err
	}
	if publicKeysEqual(cert.PublicKey, root.PublicKey) {
		return fmt.Errorf("%w: intermediate has the root's key", ErrCorruptRecord)
	}
	if err := cert.CheckSignatureFrom(root); err != nil {
		return fmt.Errorf("%w: intermediate is not signed by the workload root: %v", ErrCorruptRecord, err)
	}
	return nil
}

// newIntermediate signs an intermediate for signer's key under root.
func (c *CA) newIntermediate(signer crypto.Signer, root *authority, now time.Time) (*x509.Certificate, error) {
	tmpl, err := intermediateTemplate(signer.Public(), c.td, now, c.interTTL, root.cert)
	if err != nil {
		return nil, err
	}
	cert, err := sign(tmpl, root.cert, signer.Public(), root.signer)
	signed(c.signed, SignatureIntermediate, err)
	return cert, err
}

// checkWorkloadCA checks that cert is a CA of trust domain td: its only URI
// SAN is the trust domain's ID.
func checkWorkloadCA(cert *x509.Certificate, td spiffeid.TrustDomain) error {
	if len(cert.URIs) != 1 {
		return fmt.Errorf("%w: %d URI SANs, want 1", ErrCorruptRecord, len(cert.URIs))
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return fmt.Errorf("%w: URI SAN: %v", ErrCorruptRecord, err)
	}
	if id != td.ID() {
		return fmt.Errorf("%w: stored %s, configured %s", ErrTrustDomainMismatch, id, td.ID())
	}
	return nil
}

// Roots returns the trust anchors of X509-SVIDs: the root that signs now
// and, during a root rotation, the other one. The slice is the caller's;
// the certificates must not be modified.
func (c *CA) Roots() []*x509.Certificate {
	return c.cur.Load().bundle()
}

// SigningRoot returns the root the current intermediate chains to.
func (c *CA) SigningRoot() *x509.Certificate { return c.cur.Load().root.cert }

// SigningAuthority returns the subject key ID of the intermediate that
// signs X509-SVIDs now. A proxy whose SVID has another authority key ID
// renews early.
func (c *CA) SigningAuthority() []byte { return c.cur.Load().intermediate.cert.SubjectKeyId }

// BundleVersion returns the version of Roots: it grows whenever the set of
// roots changes.
func (c *CA) BundleVersion() int64 { return c.cur.Load().rotation.bundleVersion() }

// Bundle returns a new X.509 bundle of the trust domain holding Roots.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.td, c.Roots())
}

// GetX509BundleForTrustDomain implements x509bundle.Source with the current
// roots, so TLS configs built on the CA follow rotations.
func (c *CA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.td {
		return nil, fmt.Errorf("no trust bundle for trust domain %q", td)
	}
	return c.Bundle(), nil
}

// SVIDTTL returns the lifetime of an X509-SVID signed with ttl 0.
func (c *CA) SVIDTTL() time.Duration { return c.svidTTL }

// SignSVID issues an X509-SVID for pub with the SPIFFE ID id and returns
// the chain [leaf, intermediate]. The leaf is valid from 30s ago (clock
// skew) for ttl (SVIDTTL when 0), capped at the intermediate's expiry. id
// must be a member of the trust domain with a path (ErrNotMember); pub must
// be a key ParseCSR accepts (ErrUnsupportedKey).
func (c *CA) SignSVID(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	g := c.cur.Load()
	leaf, err := c.signLeaf(g, pub, id, ttl, func(now time.Time, ttl time.Duration) (*x509.Certificate, error) {
		return svidTemplate(pub, id, now, ttl, g.intermediate.cert)
	})
	signed(c.signed, SignatureX509SVID, err)
	if err != nil {
		return nil, fmt.Errorf("sign svid %s: %w", id, err)
	}
	return []*x509.Certificate{leaf, g.intermediate.cert}, nil
}

// SignServing issues the control plane's serving certificate: an X509-SVID
// for id that also has dnsNames and ips as SANs, usable only to serve
// (ExtKeyUsage ServerAuth). ttl works as for SignSVID. It returns
// [leaf, intermediate, root]: the root is included on purpose, so that a
// proxy holding only a CA pin (mtls.SPKIPin of the root) can find the anchor
// in the chain on first contact (mtls.PinnedAnchor) and verify the chain
// against it.
func (c *CA) SignServing(pub crypto.PublicKey, id spiffeid.ID, dnsNames []string, ips []net.IP, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := checkSANs(dnsNames, ips); err != nil {
		return nil, fmt.Errorf("sign serving certificate %s: %w", id, err)
	}
	g := c.cur.Load()
	leaf, err := c.signLeaf(g, pub, id, ttl, func(now time.Time, ttl time.Duration) (*x509.Certificate, error) {
		return servingTemplate(pub, id, dnsNames, ips, now, ttl, g.intermediate.cert)
	})
	signed(c.signed, SignatureX509SVID, err)
	if err != nil {
		return nil, fmt.Errorf("sign serving certificate %s: %w", id, err)
	}
	return []*x509.Certificate{leaf, g.intermediate.cert, g.root.cert}, nil
}

// signLeaf checks id, pub and ttl and signs the template tmpl returns with
// the intermediate.
func (c *CA) signLeaf(g *generation, pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration, tmpl func(now time.Time, ttl time.Duration) (*x509.Certificate, error)) (*x509.Certificate, error) {
	if err := checkMember(id, c.td); err != nil {
		return nil, err
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	ttl, err := leafTTL(ttl, c.svidTTL)
	if err != nil {
		return nil, err
	}
	now := c.clock.Now()
	if !now.Before(g.intermediate.cert.NotAfter) {
		return nil, fmt.Errorf("%w: intermediate expired at %s", ErrExpired, g.intermediate.cert.NotAfter.Format(time.RFC3339))
	}
	t, err := tmpl(now, ttl)
	if err != nil {
		return nil, err
	}
	return sign(t, g.intermediate.cert, pub, g.intermediate.signer)
}

// checkMember accepts SPIFFE IDs of td that have a path: the trust
// domain's own ID names the CA, never a workload.
func checkMember(id spiffeid.ID, td spiffeid.TrustDomain) error {
	switch {
	case id.IsZero():
		return fmt.Errorf("%w: empty id", ErrNotMember)
	case !id.MemberOf(td):
		return fmt.Errorf("%w: %s is not in trust domain %s", ErrNotMember, id, td)
	case id.Path() == "":
		return fmt.Errorf("%w: %s has no path", ErrNotMember, id)
	}
	return nil
}

// leafTTL returns ttl, or def when it is zero.
func leafTTL(ttl, def time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("ttl %s is negative", ttl)
	case ttl == 0:
		return def, nil
	}
	return ttl, nil
}

// checkSANs rejects empty DNS names and nil IPs.
func checkSANs(dnsNames []string, ips []net.IP) error {
	for _, n := range dnsNames {
		if n == "" {
			return errors.New("empty dns name")
		}
	}
	for _, ip := range ips {
		if ip == nil {
			return errors.New("nil ip address")
		}
	}
	return nil
}
