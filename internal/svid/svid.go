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
// backoff capped at MaxBackoff. When a snapshot names another signing
// authority than the one of the current SVID (a CA rotation), RenewSoon
// renews early, within min(30s, 10% of the lifetime), jittered. Keys never
// leave the process: the control plane receives CSRs.
//
// The Manager also holds the trust domain's JWT bundle (pushed in
// snapshots) and mints JWT-SVIDs through the control plane, so it is the
// Source of the proxy's SPIFFE Workload API; Changed tells that server when
// to send new answers.
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
	"encoding/hex"
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
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
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
	// SignJWT returns a JWT-SVID (compact JWS) of the identity of the
	// current SVID (presented in TLS) for audience.
	SignJWT(ctx context.Context, audience []string) (string, error)
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
	// wake tells Run that an early renewal was scheduled or cancelled.
	// It holds at most one signal and is never closed.
	wake chan struct{}

	renewalsOK, renewalsFailed atomic.Uint64

	mu        sync.RWMutex
	svid      *x509svid.SVID
	bundle    *x509bundle.Bundle
	jwtBundle *jwtbundle.Bundle
	instance  string
	listeners []func()
	ready     chan struct{}
	readyOnce sync.Once
	// changed is closed and replaced at every change of the SVID or a
	// bundle.
	changed chan struct{}
	// soon is a pending early renewal; nil when none is.
	soon *earlyRenewal
	// tried is the signing authority an early renewal was made for that
	// still did not yield an SVID of it: it does not trigger another one.
	tried []byte
	// lastRenewalFailed says whether the last renewal attempt failed.
	lastRenewalFailed bool
	// overdueLogged is the serial of the SVID whose near-expiry error has
	// been logged.
	overdueLogged string
}

// earlyRenewal is a renewal scheduled by RenewSoon.
type earlyRenewal struct {
	// authority is the signing authority the new SVID should have.
	authority []byte
	at        time.Time
}

var (
	_ x509svid.Source   = (*Manager)(nil)
	_ x509bundle.Source = (*Manager)(nil)
	_ jwtbundle.Source  = (*Manager)(nil)
)

// Early renewal and overdue renewal, as fractions and bounds of an SVID's
// lifetime.
const (
	// maxEarlyDelay bounds the jittered delay of an early renewal.
	maxEarlyDelay = 30 * time.Second
	// earlyFraction is the share of the lifetime that bounds it too.
	earlyFraction = 0.1
	// overdueFraction: with less than this share of its lifetime left and
	// the last renewal failed, a renewal is overdue.
	overdueFraction = 0.1
)

// Log messages.
const (
	msgNearExpiry    = "svid near expiry without a successful renewal"
	msgRenewSoon     = "svid signed by another authority than the current one, renewing early"
	msgStillOldAuth  = "svid renewed early but not signed by the announced authority; renewing on schedule"
	msgRenewalFailed = "svid renewal failed, retrying"
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
		cfg:     cfg,
		clock:   clock.OrReal(cfg.Clock),
		logger:  telemetry.OrDiscard(cfg.Logger),
		ready:   make(chan struct{}),
		changed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
	}, nil
}

// Changed returns a channel that is closed at the next change of the SVID,
// the X.509 bundle or the JWT bundle. Call it again after it is closed for
// the change after that.
func (m *Manager) Changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changed
}

// notifyLocked closes the current Changed channel; m.mu must be held for
// writing.
func (m *Manager) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
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

// GetJWTBundleForTrustDomain returns the JWT bundle (the JWT-SVID signing
// keys) of td, as pushed in snapshots.
func (m *Manager) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.jwtBundle == nil || m.jwtBundle.TrustDomain() != td {
		return nil, fmt.Errorf("no jwt bundle for trust domain %q", td)
	}
	return m.jwtBundle, nil
}

// MintJWTSVID asks the control plane for a JWT-SVID of the proxy's identity
// for audience (at least one). The token is not cached here.
func (m *Manager) MintJWTSVID(ctx context.Context, audience []string) (string, error) {
	if len(audience) == 0 {
		return "", errors.New("mint jwt-svid: audience required")
	}
	if m.current() == nil {
		return "", errors.New("mint jwt-svid: no svid yet")
	}
	token, err := m.cfg.Issuer.SignJWT(ctx, audience)
	if err != nil {
		return "", fmt.Errorf("mint jwt-svid: %w", err)
	}
	if token == "" {
		return "", errors.New("mint jwt-svid: control plane sent an empty token")
	}
	return token, nil
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
	m.notifyLocked()
	m.mu.Unlock()
	return m.persist()
}

// SetJWTBundle replaces the JWT bundle with jwks, a JWKS document of the
// trust domain's JWT-SVID signing keys as pushed in snapshots. Empty input
// is ignored (the current bundle stays); a document that does not parse is
// an error and changes nothing.
func (m *Manager) SetJWTBundle(jwks []byte) error {
	if len(jwks) == 0 {
		return nil
	}
	td, err := m.trustDomain()
	if err != nil {
		return fmt.Errorf("jwt bundle: %w", err)
	}
	b, err := jwtbundle.Parse(td, jwks)
	if err != nil {
		return fmt.Errorf("jwt bundle: %w", err)
	}
	m.mu.Lock()
	if m.jwtBundle != nil && m.jwtBundle.Equal(b) {
		m.mu.Unlock()
		return nil
	}
	m.jwtBundle = b
	m.notifyLocked()
	m.mu.Unlock()
	return m.persist()
}

func (m *Manager) trustDomain() (spiffeid.TrustDomain, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.bundle == nil {
		return spiffeid.TrustDomain{}, errors.New("no trust domain yet")
	}
	return m.bundle.TrustDomain(), nil
}

// RenewSoon schedules an early renewal when authority (the subject key ID
// of the CA that signs SVIDs now, from a snapshot) is not the authority key
// ID of the current SVID: after a jittered delay below min(30s, 10% of the
// SVID's lifetime) instead of at 50% of it. Empty authority is ignored.
// It is idempotent while a renewal is pending, and an authority the
// current SVID matches cancels a pending one. If an early renewal for an
// authority yields an SVID of another one, that authority does not trigger
// another: the SVID is renewed on schedule.
func (m *Manager) RenewSoon(authority []byte) {
	if len(authority) == 0 {
		return
	}
	m.mu.Lock()
	if m.svid == nil {
		m.mu.Unlock()
		return
	}
	leaf := m.svid.Certificates[0]
	switch {
	case bytes.Equal(leaf.AuthorityKeyId, authority):
		cancelled := m.soon != nil
		m.soon, m.tried = nil, nil
		m.mu.Unlock()
		if cancelled {
			m.signalWake()
		}
		return
	case m.soon != nil:
		m.soon.authority = bytes.Clone(authority)
		m.mu.Unlock()
		return
	case bytes.Equal(m.tried, authority):
		m.mu.Unlock()
		return
	}
	window := min(maxEarlyDelay, time.Duration(float64(leaf.NotAfter.Sub(leaf.NotBefore))*earlyFraction))
	delay := time.Duration(m.cfg.Jitter() * float64(window))
	m.soon = &earlyRenewal{authority: bytes.Clone(authority), at: m.clock.Now().Add(delay)}
	m.mu.Unlock()
	m.logger.Info(msgRenewSoon, telemetry.KeySerial, leaf.SerialNumber.Text(16),
		telemetry.KeyAuthority, hex.EncodeToString(authority), telemetry.KeyDelay, delay.String())
	m.signalWake()
}

func (m *Manager) signalWake() {
	select {
	case m.wake <- struct{}{}:
	default: // a signal is already pending
	}
}

// Status is a point-in-time view of a Manager, for health and metrics.
type Status struct {
	// Expiry is the NotAfter of the current SVID; zero before the first.
	Expiry time.Time
	// RenewalsOK and RenewalsFailed count renewal attempts since New.
	RenewalsOK, RenewalsFailed uint64
	// Overdue is true when the SVID has 10% or less of its lifetime left
	// (or has expired) and the last renewal attempt failed.
	Overdue bool
	// BundleRoots is the number of roots in the X.509 trust bundle.
	BundleRoots int
	// EarlyRenewal is when the renewal scheduled by RenewSoon is due; zero
	// when none is pending.
	EarlyRenewal time.Time
}

// Status returns the Manager's status at the Manager's clock's now.
func (m *Manager) Status() Status {
	now := m.clock.Now()
	st := Status{RenewalsOK: m.renewalsOK.Load(), RenewalsFailed: m.renewalsFailed.Load()}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.svid != nil {
		leaf := m.svid.Certificates[0]
		st.Expiry = leaf.NotAfter
		st.Overdue = m.lastRenewalFailed && nearExpiry(leaf, now)
	}
	if m.bundle != nil {
		st.BundleRoots = len(m.bundle.X509Authorities())
	}
	if m.soon != nil {
		st.EarlyRenewal = m.soon.at
	}
	return st
}

// nearExpiry reports whether leaf has at most overdueFraction of its
// lifetime left at now.
func nearExpiry(leaf *x509.Certificate, now time.Time) bool {
	return !now.Before(nearExpiryStart(leaf))
}

// nearExpiryStart is when leaf has overdueFraction of its lifetime left.
func nearExpiryStart(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotAfter.Add(-time.Duration(float64(life) * overdueFraction))
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
	var (
		leaf    *x509.Certificate
		regular time.Time
	)
	for {
		// The regular renewal time is drawn once per SVID.
		if cur := m.current().Certificates[0]; cur != leaf {
			leaf, regular = cur, m.renewAt(cur)
		}
		at := regular
		if early, ok := m.earlyAt(); ok && early.Before(at) {
			at = early
		}
		woken, err := m.sleepUntil(ctx, at, m.wake)
		if err != nil {
			return nil
		}
		if woken {
			continue // an early renewal was scheduled or cancelled
		}
		due := m.dueEarly()
		if err := m.renew(ctx); err != nil {
			return nil // only ctx ends renewal
		}
		m.afterRenewal(due)
	}
}

// earlyAt returns when a pending early renewal is due.
func (m *Manager) earlyAt() (time.Time, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.soon == nil {
		return time.Time{}, false
	}
	return m.soon.at, true
}

// dueEarly returns the authority of the early renewal that is due, if any.
func (m *Manager) dueEarly() []byte {
	now := m.clock.Now()
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.soon == nil || m.soon.at.After(now) {
		return nil
	}
	return m.soon.authority
}

// afterRenewal settles a pending early renewal after a successful renewal:
// done when the new SVID has the announced authority; given up (until
// another authority is announced) when this renewal was the early one
// (due) and the SVID still has another authority.
func (m *Manager) afterRenewal(due []byte) {
	m.mu.Lock()
	if m.soon == nil {
		m.mu.Unlock()
		return
	}
	leaf := m.svid.Certificates[0]
	if bytes.Equal(leaf.AuthorityKeyId, m.soon.authority) {
		m.soon, m.tried = nil, nil
		m.mu.Unlock()
		return
	}
	if due == nil || !bytes.Equal(due, m.soon.authority) {
		m.mu.Unlock()
		return // announced during a regular renewal: still pending
	}
	m.tried, m.soon = due, nil
	m.mu.Unlock()
	m.logger.Warn(msgStillOldAuth, telemetry.KeySerial, leaf.SerialNumber.Text(16),
		telemetry.KeyAuthority, hex.EncodeToString(due))
}

func (m *Manager) current() *x509svid.SVID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.svid
}

// renewAt is when renewal of leaf starts: 50% of its lifetime plus up to
// 10% jitter.
func (m *Manager) renewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(time.Duration(float64(life) * (0.5 + 0.1*m.cfg.Jitter())))
}

// sleepUntil waits until t or ctx is done, or (woken true) until wake
// delivers; a nil wake never does. A signal already pending on wake is
// taken before any timer is armed.
func (m *Manager) sleepUntil(ctx context.Context, t time.Time, wake <-chan struct{}) (woken bool, err error) {
	select {
	case <-wake:
		return true, nil
	default:
	}
	d := t.Sub(m.clock.Now())
	if d <= 0 {
		return false, ctx.Err()
	}
	timer := m.clock.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-timer.C():
		return false, nil
	case <-wake:
		return true, nil
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
		if _, err := m.sleepUntil(ctx, m.clock.Now().Add(backoff), nil); err != nil {
			return err
		}
		backoff = min(backoff*2, m.cfg.MaxBackoff)
	}
}

// renew renews the SVID, retrying with backoff until it succeeds or ctx is
// done. The current SVID stays in use meanwhile. A failure with 10% or less
// of the SVID's lifetime left is logged as an error once per SVID; an
// attempt is made as that window opens.
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
				m.renewalsOK.Add(1)
				m.logger.Info("svid renewed", telemetry.KeyIdentity, m.ID().String(), telemetry.KeyExpiry, m.Expiry(),
					telemetry.KeySerial, m.current().Certificates[0].SerialNumber.Text(16))
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.renewalsFailed.Add(1)
		leaf, firstNearExpiry := m.renewalFailed()
		level := slog.LevelWarn
		if !m.clock.Now().Before(leaf.NotAfter) {
			level = slog.LevelError
		}
		m.logger.Log(ctx, level, msgRenewalFailed, telemetry.KeyAttempt, attempt,
			telemetry.KeyBackoff, backoff.String(), telemetry.KeyExpiry, leaf.NotAfter, telemetry.KeyErr, err)
		if firstNearExpiry {
			m.logger.Error(msgNearExpiry, telemetry.KeyIdentity, m.ID().String(), telemetry.KeySerial, leaf.SerialNumber.Text(16),
				telemetry.KeyExpiry, leaf.NotAfter, telemetry.KeyAttempt, attempt, telemetry.KeyErr, err)
		}
		// One attempt is made as the last 10% of the lifetime begins, so
		// a failure there is reported then, not up to MaxBackoff later.
		now := m.clock.Now()
		next := now.Add(backoff)
		if ws := nearExpiryStart(leaf); now.Before(ws) && ws.Before(next) {
			next = ws
		}
		if _, err := m.sleepUntil(ctx, next, nil); err != nil {
			return err
		}
		backoff = min(backoff*2, m.cfg.MaxBackoff)
	}
}

// renewalFailed records a failed renewal attempt. It returns the current
// SVID's leaf, and whether this is the first failure of that SVID with less
// than 10% of its lifetime left (to be logged as an error).
func (m *Manager) renewalFailed() (leaf *x509.Certificate, firstNearExpiry bool) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastRenewalFailed = true
	leaf = m.svid.Certificates[0]
	if !nearExpiry(leaf, now) {
		return leaf, false
	}
	serial := leaf.SerialNumber.Text(16)
	if m.overdueLogged == serial {
		return leaf, false
	}
	m.overdueLogged = serial
	return leaf, true
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
	m.lastRenewalFailed = false
	m.notifyLocked()
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
	svidFile      = "svid.pem"
	bundleFile    = "bundle.pem"
	jwtBundleFile = "jwt_bundle.json"
	stateFile     = "state.json"
)

func (m *Manager) persist() error {
	dir := m.cfg.DataDir
	if dir == "" {
		return nil
	}
	m.mu.RLock()
	s, bundle, jwtBundle, instance := m.svid, m.bundle, m.jwtBundle, m.instance
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
	if jwtBundle != nil {
		jb, err := jwtBundle.Marshal()
		if err != nil {
			return fmt.Errorf("marshal jwt bundle: %w", err)
		}
		if err := fileutil.WriteAtomic(filepath.Join(dir, jwtBundleFile), jb, 0o644); err != nil {
			return err
		}
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
	jwtBundle := m.loadJWTBundle(s.ID.TrustDomain())
	m.mu.Lock()
	m.svid, m.bundle, m.instance = s, bundle, st.Instance
	if jwtBundle != nil {
		m.jwtBundle = jwtBundle
	}
	m.notifyLocked()
	m.mu.Unlock()
	m.readyOnce.Do(func() { close(m.ready) })
	m.logger.Info("using stored svid", telemetry.KeyIdentity, s.ID.String(), telemetry.KeyInstance, st.Instance,
		telemetry.KeyExpiry, s.Certificates[0].NotAfter)
	return nil
}

// loadJWTBundle returns the JWT bundle kept in the data dir, or nil. A bad
// one is only logged: the next snapshot brings the current one.
func (m *Manager) loadJWTBundle(td spiffeid.TrustDomain) *jwtbundle.Bundle {
	b, err := os.ReadFile(filepath.Join(m.cfg.DataDir, jwtBundleFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		var jb *jwtbundle.Bundle
		if jb, err = jwtbundle.Parse(td, b); err == nil {
			return jb
		}
	}
	m.logger.Warn("stored jwt bundle unusable, waiting for a snapshot", telemetry.KeyErr, err)
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
