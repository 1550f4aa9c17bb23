// Package rotation runs the workload CA's rotations: it moves a root
// rotation through its phases when the fleet of proxies is ready for the
// next one, and rotates the intermediate (and starts a root rotation) before
// expiry. Package ca keeps the records consistent; this package decides when.
//
// What each phase waits for:
//
//   - prepared -> activated: every connected proxy has ACKed a snapshot whose
//     trust bundle holds the new root (its bundle version is the prepared
//     one or later). Until then a proxy would refuse peers under the new
//     root.
//   - activated -> retired: every connected proxy presents an SVID signed by
//     the new intermediate (proxies renew early when a snapshot names a new
//     signing authority), and the longest lifetime of an SVID issued under
//     the old root has passed (ca.Rotation.RetireAfter), so no valid
//     credential chains to the old root any more. A connected proxy still
//     on the old chain after that cannot hold a valid old SVID; after a
//     further grace period it no longer holds up the retirement.
//
// Disconnected proxies are not waited for: they receive the complete bundle
// when they reconnect. Every step is one compare-and-swap write in the
// store, so a control plane that restarts mid-rotation resumes it.
package rotation

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Proxy is what rotation needs to know of one connected proxy.
type Proxy struct {
	// Name identifies the proxy in logs and status, "namespace/instance".
	Name string
	// BundleVersion is the trust bundle version the proxy has ACKed.
	BundleVersion int64
	// SVIDAuthority is the authority key ID of the proxy's SVID, hex.
	SVIDAuthority string
}

// Fleet lists the connected proxies.
type Fleet interface {
	Connected(ctx context.Context) ([]Proxy, error)
}

// Defaults.
const (
	// DefaultInterval is how often the Manager checks the fleet.
	DefaultInterval = 2 * time.Second
	// lagGrace is how long after RetireAfter proxies still reported on
	// the old chain hold up retirement.
	lagGrace = time.Minute
)

// Config configures a Manager.
type Config struct {
	CA    *ca.CA
	Fleet Fleet
	// Clock, default the wall clock.
	Clock clock.Clock
	// Logger, default discard.
	Logger *slog.Logger
	// Interval between checks; default DefaultInterval.
	Interval time.Duration
	// Audit, if set, is called before every step the Manager takes by
	// itself (action "ca.root.prepare", "ca.root.activate",
	// "ca.root.retire" or "ca.intermediate.renew", and a detail); when it
	// fails the step is not taken and is tried again at the next check, so
	// no CA change goes unrecorded.
	Audit func(ctx context.Context, action, detail string) error
}

// Manager moves rotations forward.
type Manager struct {
	ca       *ca.CA
	fleet    Fleet
	clock    clock.Clock
	logger   *slog.Logger
	interval time.Duration
	nudge    chan struct{}
	audit    func(ctx context.Context, action, detail string) error

	lastWait string
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.CA == nil || cfg.Fleet == nil {
		return nil, errors.New("rotation: ca and fleet are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	return &Manager{
		ca: cfg.CA, fleet: cfg.Fleet, clock: clock.OrReal(cfg.Clock),
		logger:   telemetry.OrDiscard(cfg.Logger).With(telemetry.KeyComponent, "ca-rotation"),
		interval: cfg.Interval, nudge: make(chan struct{}, 1), audit: cfg.Audit,
	}, nil
}

// Nudge makes Run check now, e.g. after a proxy ACKed a snapshot.
func (m *Manager) Nudge() {
	select {
	case m.nudge <- struct{}{}:
	default:
	}
}

// Run checks the fleet every interval (or when nudged) and takes the next
// step of a rotation when it is due, until ctx is done. Failed steps are
// logged and tried again at the next check.
func (m *Manager) Run(ctx context.Context) error {
	for {
		if err := m.Step(ctx); err != nil && ctx.Err() == nil {
			m.logger.Warn("ca rotation step failed, will retry", telemetry.KeyErr, err)
		}
		t := m.clock.NewTimer(m.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-m.nudge:
			t.Stop()
		case <-t.C():
		}
	}
}

// StartRoot starts a root rotation (phase prepared); Run carries it on.
func (m *Manager) StartRoot(ctx context.Context) error {
	if err := m.ca.PrepareRoot(ctx); err != nil {
		return err
	}
	m.Nudge()
	return nil
}

// StartRootFrom starts a root rotation to an operator's own root.
func (m *Manager) StartRootFrom(ctx context.Context, cert *x509.Certificate, key crypto.Signer) error {
	if err := m.ca.PrepareRootFrom(ctx, cert, key); err != nil {
		return err
	}
	m.Nudge()
	return nil
}

// RotateIntermediate replaces the intermediate now.
func (m *Manager) RotateIntermediate(ctx context.Context) error {
	return m.ca.RotateIntermediate(ctx)
}

// Step takes the next step of a rotation if it is due, and reports what it
// did or waits for in the log.
func (m *Manager) Step(ctx context.Context) error {
	r := m.ca.Rotation()
	now := m.clock.Now()
	switch r.Phase {
	case ca.PhaseNone:
		m.lastWait = ""
		if m.ca.RootDue() {
			m.logger.Info("workload root nears expiry, starting a root rotation", telemetry.KeyExpiry, r.SigningRoot.NotAfter)
			if err := m.record(ctx, "ca.root.prepare", "root nears expiry"); err != nil {
				return err
			}
			return m.ca.PrepareRoot(ctx)
		}
		if m.ca.IntermediateDue() {
			m.logger.Info("intermediate nears expiry, rotating it", telemetry.KeyExpiry, r.Intermediate.NotAfter)
			if err := m.record(ctx, "ca.intermediate.renew", "intermediate nears expiry"); err != nil {
				return err
			}
			return m.ca.RotateIntermediate(ctx)
		}
		return nil
	case ca.PhasePrepared:
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		if len(st.Waiting) > 0 {
			m.waiting(fmt.Sprintf("%d proxies have not ACKed bundle version %d", len(st.Waiting), r.BundleVersion), st.Waiting)
			return nil
		}
		if err := m.record(ctx, "ca.root.activate", fmt.Sprintf("every proxy ACKed bundle version %d", r.BundleVersion)); err != nil {
			return err
		}
		return m.ca.ActivateRoot(ctx)
	case ca.PhaseActivated:
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		if now.Before(r.RetireAfter) {
			m.waiting("old root's SVIDs may be valid until "+r.RetireAfter.Format(time.RFC3339), st.Waiting)
			return nil
		}
		if len(st.Waiting) > 0 && now.Before(r.RetireAfter.Add(lagGrace)) {
			m.waiting(fmt.Sprintf("%d proxies have not renewed under the new root", len(st.Waiting)), st.Waiting)
			return nil
		}
		if len(st.Waiting) > 0 {
			m.logger.Warn("retiring the old root although proxies report old-chain svids; they cannot be valid any more",
				telemetry.KeyCount, len(st.Waiting), telemetry.KeyDetail, preview(st.Waiting))
		}
		if err := m.record(ctx, "ca.root.retire", fmt.Sprintf("%d proxies still on the old chain", len(st.Waiting))); err != nil {
			return err
		}
		return m.ca.RetireRoot(ctx)
	}
	return fmt.Errorf("unknown rotation phase %q", r.Phase)
}

// record calls the Audit hook, if any, before a step.
func (m *Manager) record(ctx context.Context, action, detail string) error {
	if m.audit == nil {
		return nil
	}
	if err := m.audit(ctx, action, detail); err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}

// waiting logs what the rotation waits for, once per change.
func (m *Manager) waiting(what string, names []string) {
	if what == m.lastWait {
		return
	}
	m.lastWait = what
	m.logger.Info("ca rotation waiting", telemetry.KeyReason, what, telemetry.KeyDetail, preview(names))
}

// preview names up to 5 proxies.
func preview(names []string) string {
	if len(names) > 5 {
		return fmt.Sprintf("%v and %d more", names[:5], len(names)-5)
	}
	return fmt.Sprint(names)
}

// Status is the fleet's view of the CA, for `bulwark ca status`.
type Status struct {
	Rotation ca.Rotation
	// Connected is how many proxies are connected.
	Connected int
	// BundleVersions counts connected proxies by the bundle version they
	// ACKed; Authorities counts them by the authority key ID of their
	// SVID.
	BundleVersions map[int64]int
	Authorities    map[string]int
	// Waiting names the proxies the current phase waits for, sorted.
	Waiting []string
}

// Status returns the rotation state and the fleet's view of it.
func (m *Manager) Status(ctx context.Context) (Status, error) {
	r := m.ca.Rotation()
	proxies, err := m.fleet.Connected(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("list connected proxies: %w", err)
	}
	st := Status{Rotation: r, Connected: len(proxies), BundleVersions: map[int64]int{}, Authorities: map[string]int{}}
	signing := ca.KeyID(r.Intermediate.SubjectKeyId)
	for _, p := range proxies {
		st.BundleVersions[p.BundleVersion]++
		st.Authorities[p.SVIDAuthority]++
		switch r.Phase {
		case ca.PhasePrepared:
			if p.BundleVersion < r.BundleVersion {
				st.Waiting = append(st.Waiting, p.Name)
			}
		case ca.PhaseActivated:
			if p.SVIDAuthority != signing {
				st.Waiting = append(st.Waiting, p.Name)
			}
		}
	}
	slices.Sort(st.Waiting)
	return st, nil
}
