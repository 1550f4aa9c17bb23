// Package svid owns a proxy's identity: its private key and X509-SVID, the
// trust bundle it verifies peers with, attestation with a join token,
// renewal before expiry, and the optional on-disk copy that lets a
// restarted proxy renew instead of attesting again.
//
// The Manager is a go-spiffe x509svid.Source and x509bundle.Source: every
// TLS handshake reads the current SVID and bundle, so a renewed SVID is used
// by the next connection at once while established connections keep
// working. The old SVID stays in use until the new one is installed.
//
// Renewal happens at 50% of the SVID's lifetime plus up to 10% jitter (so a
// fleet does not renew in lockstep); failures are retried with exponential
// backoff capped at MaxBackoff. Keys never leave the process: the control
// plane receives CSRs.
package svid

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/fileutil"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Issued is what the control plane returns for an attestation or renewal.
type Issued struct {
	// Chain is the SVID, leaf first.
	Chain []*x509.Certificate
	// Bundle is the trust bundle's roots.
	Bundle []*x509.Certificate
	// Instance is the proxy's instance name (attestation only).
	Instance string
}

// Issuer is how the Manager reaches the control plane. At attestation an
// error wrapping ErrRejected is permanent (Run returns it); any other error
// is retried. Renewal retries every error, ErrRejected included, with
// capped backoff: the current SVID keeps serving until it expires, and the
// control plane may come back to its senses (a restored store, a fixed
// clock) before then; each failure is logged, as an error once expired.
type Issuer interface {
	// Attest redeems a join token for a first SVID.
	Attest(ctx context.Context, token string, csr []byte, service identity.ServiceRef) (*Issued, error)
	// Renew exchanges the current SVID (presented in TLS) for a new one.
	Renew(ctx context.Context, csr []byte) (*Issued, error)
}

// ErrRejected marks an answer of the control plane that retrying cannot
// change, such as a rejected join token.
var ErrRejected = errors.New("rejected by the control plane")

// ErrNoIdentity is returned when the proxy has neither a usable stored SVID
// nor a join token.
var ErrNoIdentity = errors.New("no join token and no usable stored SVID")

// Config configures a Manager.
type Config struct {
	// Service the proxy fronts. Required.
	Service identity.ServiceRef
	// Token is the join token; may be empty when DataDir holds an
	// unexpired SVID of this service.
	Token string
	// DataDir, if set, keeps the SVID, its key (0600), the bundle and the
	// instance name across restarts.
	DataDir string
	// Issuer is required.
	Issuer Issuer
	// Clock, default the wall clock.
	Clock clock.Clock
	// Logger, default discard.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound retry delays. Default: 1s and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Jitter returns a number in [0,1) that spreads renewals; default
	// math/rand/v2.
	Jitter func() float64
}

// Manager holds and renews a proxy's SVID.
type Manager struct {
	cfg    Config
	clock  clock.Clock
	logger *slog.Logger

	mu        sync.RWMutex
	svid      *x509svid.SVID
	bundle    *x509bundle.Bundle
	instance  string
	listeners []func()
	ready     chan struct{}
	readyOnce sync.Once
}

var (
	_ x509svid.Source   = (*Manager)(nil)
	_ x509bundle.Source = (*Manager)(nil)
)

// New returns a Manager; Run obtains the first SVID.
func New(cfg Config) (*Manager, error) {
	if cfg.Issuer == nil {
		return nil, errors.New("svid: issuer is required")
	}
	if cfg.Service.IsZero() {
		return nil, errors.New("svid: service is required")
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Jitter == nil {
		cfg.Jitter = mrand.Float64
	}
	return &Manager{
		cfg:    cfg,
		clock:  clock.OrReal(cfg.Clock),
		logger: telemetry.OrDiscard(cfg.Logger),
		ready:  make(chan struct{}),
	}, nil
}

// Ready is closed once the Manager holds an SVID.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// GetX509SVID returns the current SVID.
func (m *Manager) GetX509SVID() (*x509svid.SVID, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.svid == nil {
		return nil, errors.New("no svid yet")
	}
	return m.svid, nil
}

// GetX509BundleForTrustDomain returns the current trust bundle.
func (m *Manager) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.bundle == nil || m.bundle.TrustDomain() != td {
		return nil, fmt.Errorf("no trust bundle for trust domain %q", td)
	}
	return m.bundle, nil
}

// ID returns the SPIFFE ID of the current SVID (zero before the first).
func (m *Manager) ID() spiffeid.ID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.svid == nil {
		return spiffeid.ID{}
	}
	return m.svid.ID
}

// Instance returns the proxy's instance name.
func (m *Manager) Instance() string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.instance
}

// Expiry returns the NotAfter of the current SVID.
func (m *Manager) Expiry() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.svid == nil {
		return time.Time{}
	}
	return m.svid.Certificates[0].NotAfter
}

// OnRotate registers fn to be called (on the Manager's goroutine) after each
// new SVID is installed.
func (m *Manager) OnRotate(fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.listeners = append(m.listeners, fn)
}

// SetBundle replaces the trust bundle's roots, as pushed in snapshots. An
// empty set is ignored: a proxy never ends up trusting nothing.
func (m *Manager) SetBundle(roots []*x509.Certificate) error {
	if len(roots) == 0 {
		return errors.New("empty trust bundle")
	}
	m.mu.Lock()
	if m.bundle == nil {
		m.mu.Unlock()
		return errors.New("no trust domain yet")
	}
	if sameCerts(m.bundle.X509Authorities(), roots) {
		m.mu.Unlock()
		return nil
	}
	m.bundle = x509bundle.FromX509Authorities(m.bundle.TrustDomain(), roots)
	m.mu.Unlock()
	return m.persist()
}

// Run obtains the first SVID (from the data dir, else by attesting) and
// renews it until ctx is done. It returns an error only for a permanent
// failure: a rejected token, or no way to get an identity.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.load(); err != nil {
		return err
	}
	if m.current() == nil {
		if err := m.attest(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	for {
		if err := m.sleepUntil(ctx, m.renewAt()); err != nil {
			return nil
		}
		if err := m.renew(ctx); err != nil {
			return nil // only ctx ends renewal
		}
	}
}

func (m *Manager) current() *x509svid.SVID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.svid
}

// renewAt is when renewal of the current SVID starts: 50% of its lifetime
// plus up to 10% jitter.
func (m *Manager) renewAt() time.Time {
	leaf := m.current().Certificates[0]
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(time.Duration(float64(life) * (0.5 + 0.1*m.cfg.Jitter())))
}

func (m *Manager) sleepUntil(ctx context.Context, t time.Time) error {
	d := t.Sub(m.clock.Now())
	if d <= 0 {
		return ctx.Err()
	}
	timer := m.clock.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C():
		return nil
	}
}

// attest redeems the join token, retrying while the control plane is
// unreachable.
func (m *Manager) attest(ctx context.Context) error {
	if m.cfg.Token == "" {
		return ErrNoIdentity
	}
	backoff := m.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		key, csr, err := newKeyAndCSR()
		if err != nil {
			return err
		}
		issued, err := m.cfg.Issuer.Attest(ctx, m.cfg.Token, csr, m.cfg.Service)
		if err == nil {
			err = m.install(key, issued, spiffeid.ID{})
			if err == nil {
				m.logger.Info("attested", telemetry.KeyIdentity, m.ID().String(), telemetry.KeyInstance, m.Instance(),
					telemetry.KeyExpiry, m.Expiry())
				return nil
			}
			// A bad answer is not something to retry blindly.
			return fmt.Errorf("attest: %w", err)
		}
		if errors.Is(err, ErrRejected) {
			return fmt.Errorf("attest: %w", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.logger.Warn("control plane unreachable, retrying attestation", telemetry.KeyAttempt, attempt,
			telemetry.KeyBackoff, backoff.String(), telemetry.KeyErr, err)
		if err := m.sleepUntil(ctx, m.clock.Now().Add(backoff)); err != nil {
			return err
		}
		backoff = min(backoff*2, m.cfg.MaxBackoff)
	}
}

// renew renews the SVID, retrying with backoff until it succeeds or ctx is
// done. The current SVID stays in use meanwhile.
func (m *Manager) renew(ctx context.Context) error {
	backoff := m.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		key, csr, err := newKeyAndCSR()
		if err != nil {
			return err
		}
		issued, err := m.cfg.Issuer.Renew(ctx, csr)
		if err == nil {
			if err = m.install(key, issued, m.ID()); err == nil {
				m.logger.Info("svid renewed", telemetry.KeyIdentity, m.ID().String(), telemetry.KeyExpiry, m.Expiry(),
					telemetry.KeySerial, m.current().Certificates[0].SerialNumber.Text(16))
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		left := m.Expiry().Sub(m.clock.Now())
		level := slog.LevelWarn
		if left <= 0 {
			level = slog.LevelError
		}
		m.logger.Log(ctx, level, "svid renewal failed, retrying", telemetry.KeyAttempt, attempt,
			telemetry.KeyBackoff, backoff.String(), telemetry.KeyExpiry, m.Expiry(), telemetry.KeyErr, err)
		if err := m.sleepUntil(ctx, m.clock.Now().Add(backoff)); err != nil {
			return err
		}
		backoff = min(backoff*2, m.cfg.MaxBackoff)
	}
}

// install checks an issued SVID against the key it was requested for and
// the bundle that came with it, and makes it current. want is the identity
// the SVID must have (zero: any workload identity, at attestation).
func (m *Manager) install(key crypto.Signer, issued *Issued, want spiffeid.ID) error {
	if len(issued.Chain) == 0 || len(issued.Bundle) == 0 {
		return errors.New("control plane sent an empty svid or bundle")
	}
	var chainDER []byte
	for _, c := range issued.Chain {
		chainDER = append(chainDER, c.Raw...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	s, err := x509svid.ParseRaw(chainDER, keyDER)
	if err != nil {
		return fmt.Errorf("issued svid: %w", err)
	}
	if !want.IsZero() && s.ID != want {
		return fmt.Errorf("issued svid is for %s, want %s", s.ID, want)
	}
	if _, err := identity.ParseWorkloadID(s.ID); err != nil {
		return fmt.Errorf("issued svid: %w", err)
	}
	bundle := x509bundle.FromX509Authorities(s.ID.TrustDomain(), issued.Bundle)
	if _, _, err := x509svid.Verify(s.Certificates, bundle, x509svid.WithTime(m.clock.Now())); err != nil {
		return fmt.Errorf("issued svid does not verify against the bundle: %w", err)
	}
	m.mu.Lock()
	m.svid = s
	m.bundle = bundle
	if issued.Instance != "" {
		m.instance = issued.Instance
	}
	listeners := append([]func(){}, m.listeners...)
	m.mu.Unlock()
	if err := m.persist(); err != nil {
		m.logger.Warn("persist svid", telemetry.KeyErr, err)
	}
	m.readyOnce.Do(func() { close(m.ready) })
	for _, fn := range listeners {
		fn()
	}
	return nil
}

// state is the non-secret part of what a proxy keeps in its data dir.
type state struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	SPIFFEID string `json:"spiffeID"`
}

// Files in the data dir. svid.pem holds the chain and the key together so
// one atomic write keeps them consistent; it is 0600.
const (
	svidFile   = "svid.pem"
	bundleFile = "bundle.pem"
	stateFile  = "state.json"
)

func (m *Manager) persist() error {
	dir := m.cfg.DataDir
	if dir == "" {
		return nil
	}
	m.mu.RLock()
	s, bundle, instance := m.svid, m.bundle, m.instance
	m.mu.RUnlock()
	if s == nil {
		return nil
	}
	certPEM, keyPEM, err := s.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := fileutil.WriteAtomic(filepath.Join(dir, svidFile), append(certPEM, keyPEM...), 0o600); err != nil {
		return err
	}
	var b []byte
	for _, c := range bundle.X509Authorities() {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := fileutil.WriteAtomic(filepath.Join(dir, bundleFile), b, 0o644); err != nil {
		return err
	}
	st, err := json.Marshal(state{Service: m.cfg.Service.String(), Instance: instance, SPIFFEID: s.ID.String()})
	if err != nil {
		return err
	}
	return fileutil.WriteAtomic(filepath.Join(dir, stateFile), st, 0o600)
}

// load installs the SVID kept in the data dir, if it is for this service
// and unexpired.
func (m *Manager) load() error {
	dir := m.cfg.DataDir
	if dir == "" {
		return nil
	}
	stb, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read proxy state: %w", err)
	}
	var st state
	if err := json.Unmarshal(stb, &st); err != nil {
		return fmt.Errorf("read proxy state %s: %w", filepath.Join(dir, stateFile), err)
	}
	if st.Service != m.cfg.Service.String() {
		return fmt.Errorf("data dir %s belongs to service %s, not %s", dir, st.Service, m.cfg.Service)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, svidFile))
	if err != nil {
		return m.discardStored(fmt.Errorf("read stored svid: %w", err))
	}
	s, err := x509svid.Parse(pemBytes, pemBytes)
	if err != nil {
		return m.discardStored(fmt.Errorf("parse stored svid: %w", err))
	}
	bundleBytes, err := os.ReadFile(filepath.Join(dir, bundleFile))
	if err != nil {
		return m.discardStored(fmt.Errorf("read stored bundle: %w", err))
	}
	bundle, err := x509bundle.Parse(s.ID.TrustDomain(), bundleBytes)
	if err != nil {
		return m.discardStored(fmt.Errorf("parse stored bundle: %w", err))
	}
	if _, _, err := x509svid.Verify(s.Certificates, bundle, x509svid.WithTime(m.clock.Now())); err != nil {
		return m.discardStored(fmt.Errorf("stored svid: %w", err))
	}
	m.mu.Lock()
	m.svid, m.bundle, m.instance = s, bundle, st.Instance
	m.mu.Unlock()
	m.readyOnce.Do(func() { close(m.ready) })
	m.logger.Info("using stored svid", telemetry.KeyIdentity, s.ID.String(), telemetry.KeyInstance, st.Instance,
		telemetry.KeyExpiry, s.Certificates[0].NotAfter)
	return nil
}

// discardStored reports an unusable stored SVID: with a token the proxy
// attests again; without one it cannot start.
func (m *Manager) discardStored(err error) error {
	if m.cfg.Token == "" {
		return fmt.Errorf("%w: %v", ErrNoIdentity, err)
	}
	m.logger.Warn("stored svid unusable, attesting with the join token", telemetry.KeyErr, err)
	return nil
}

func newKeyAndCSR() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{Organization: []string{"Bulwark"}}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create csr: %w", err)
	}
	return key, csr, nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}
