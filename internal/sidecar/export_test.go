package sidecar

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/svid"
)

// Exported for the external tests of this package.
var (
	ParseProcAddr    = parseProcAddr
	ListenersFrom    = listenersFrom
	ExposedListeners = exposedListeners
)

// Validate exposes Config.validate.
func (c *Config) Validate() (spiffeid.TrustDomain, error) { return c.validate() }

// WorkloadSocket exposes the socket path validate parsed.
func (c *Config) WorkloadSocket() string { return c.workloadSocket }

// MetricsHandler exposes metricsHandler.
func MetricsHandler(status func() svid.Status, bundleVersion func() int64, now func() time.Time) http.Handler {
	return metricsHandler(status, bundleVersion, now)
}

// Subscriber is the part of a subscriber that installs snapshots.
type Subscriber struct{ s *subscriber }

// NewSubscriber returns a subscriber of mgr and engine that keeps the last
// snapshot in dataDir ("" for none).
func NewSubscriber(mgr *svid.Manager, engine *proxy.Engine, svc identity.ServiceRef, dataDir string, logger *slog.Logger) *Subscriber {
	return &Subscriber{&subscriber{
		mgr: mgr, engine: engine, service: svc, dataDir: dataDir,
		clock: clock.Real(), logger: logger, applied: make(chan struct{}),
	}}
}

// Apply applies a snapshot as one from the control plane.
func (s *Subscriber) Apply(snap *apiv1.Snapshot) error { return s.s.apply(snap) }

// LoadLastKnownGood applies the snapshot kept in the data dir.
func (s *Subscriber) LoadLastKnownGood() { s.s.loadLastKnownGood() }

// Status reports connected, lkg and the last error.
func (s *Subscriber) Status() (connected, lkg bool, lastErr string) { return s.s.status() }
