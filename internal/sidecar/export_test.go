package sidecar

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/svid"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
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
	return metricsHandler(telemetry.NewRegistry(), status, bundleVersion, now)
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

// Reporter wraps the denial reporter.
type Reporter struct{ r *reporter }

// NewReporter returns a reporter holding at most maxKinds kinds of denial.
func NewReporter(send, sendFinal func(context.Context, *apiv1.ReportRequest) error, c clock.Clock, maxKinds int, reg prometheus.Registerer) (*Reporter, error) {
	r, err := newReporter(send, sendFinal, c, telemetry.Discard(), reg)
	if err != nil {
		return nil, err
	}
	r.maxKinds = maxKinds
	return &Reporter{r}, nil
}

// Record records a denial, as the engine's OnDeny.
func (r *Reporter) Record(d proxy.Denial) { r.r.record(d) }

// Observe records a request, as the engine's OnRequest.
func (r *Reporter) Observe(o graph.Observation) { r.r.observe(o) }

// AuthFailure records a failed authentication, as the engine's
// OnAuthFailure.
func (r *Reporter) AuthFailure(addr, source, reason string) { r.r.authFailure(addr, source, reason) }

// Run runs the reporter.
func (r *Reporter) Run(ctx context.Context) error { return r.r.run(ctx) }

// Flush reports what is pending now.
func (r *Reporter) Flush(ctx context.Context) { r.r.flush(ctx, r.r.send) }

// Report constants under test.
const (
	ReportEvery      = reportEvery
	ReportEarly      = reportEarly
	ReportBatch      = reportBatch
	ReportBatchBytes = reportBatchBytes
)

// ErrNotConnected is errNotConnected.
var ErrNotConnected = errNotConnected

// NewFramingCounter is newFramingCounter.
var NewFramingCounter = newFramingCounter

// ShutdownServers runs the graceful stop of the data-path servers srvs.
func ShutdownServers(ctx context.Context, srvs []*http.Server, c clock.Clock, timeout time.Duration) error {
	ss := &serverSet{}
	for _, srv := range srvs {
		ss.add(srv)
	}
	err := ss.shutdown(ctx, c, timeout)
	if ss.add(&http.Server{}) {
		panic("a server was added after the shutdown began")
	}
	return err
}
