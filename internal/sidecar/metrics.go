package sidecar

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/framing"
	"github.com/bulwarkmesh/bulwark/internal/svid"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// metricsHandler serves /metrics: every metric registered on reg (the Go
// and process collectors, the engine's request and authorization counters,
// the denial reporter's) and the proxy's identity metrics, read at scrape
// time from status (the SVID manager), bundleVersion (the engine's
// snapshot) and now.
func metricsHandler(reg *prometheus.Registry, status func() svid.Status, bundleVersion func() int64, now func() time.Time) http.Handler {
	reg.MustRegister(newIdentityCollector(status, bundleVersion, now))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", telemetry.MetricsHandler(reg))
	return mux
}

// newFramingCounter registers bulwark_http_framing_rejected_total on reg and
// returns the framing listeners' OnReject, which counts a rejected
// connection by reason (a fixed set of labels).
func newFramingCounter(reg prometheus.Registerer) (func(framing.Reason), error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_http_framing_rejected_total",
		Help: "Connections of the app's listeners answered 400 and closed for a malformed or ambiguous HTTP/1.1 request (request smuggling), by reason.",
	}, []string{"reason"})
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return func(r framing.Reason) { c.WithLabelValues(r.String()).Inc() }, nil
}

// Values of the result label of bulwark_svid_renewals_total.
const (
	resultOK    = "ok"
	resultError = "error"
)

// identityCollector exports the proxy's SVID and trust bundle state. Every
// label set is fixed, so the series are bounded.
type identityCollector struct {
	status        func() svid.Status
	bundleVersion func() int64
	now           func() time.Time

	expiry, renewals, overdue, version, roots *prometheus.Desc
}

func newIdentityCollector(status func() svid.Status, bundleVersion func() int64, now func() time.Time) *identityCollector {
	return &identityCollector{
		status: status, bundleVersion: bundleVersion, now: now,
		expiry: prometheus.NewDesc("bulwark_svid_expiry_seconds",
			"Seconds until the proxy's X509-SVID expires (negative once expired). Absent before the first SVID.", nil, nil),
		renewals: prometheus.NewDesc("bulwark_svid_renewals_total",
			"X509-SVID renewal attempts, by result.", []string{"result"}, nil),
		overdue: prometheus.NewDesc("bulwark_svid_renewal_overdue",
			"1 when the X509-SVID has 10% or less of its lifetime left and the last renewal attempt failed, else 0.", nil, nil),
		version: prometheus.NewDesc("bulwark_trust_bundle_version",
			"Trust bundle version of the snapshot in force (0 before the first).", nil, nil),
		roots: prometheus.NewDesc("bulwark_trust_bundle_roots",
			"Number of root certificates in the trust bundle.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *identityCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	ch <- c.renewals
	ch <- c.overdue
	ch <- c.version
	ch <- c.roots
}

// Collect implements prometheus.Collector.
func (c *identityCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	if !st.Expiry.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, st.Expiry.Sub(c.now()).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(c.renewals, prometheus.CounterValue, float64(st.RenewalsOK), resultOK)
	ch <- prometheus.MustNewConstMetric(c.renewals, prometheus.CounterValue, float64(st.RenewalsFailed), resultError)
	overdue := 0.0
	if st.Overdue {
		overdue = 1
	}
	ch <- prometheus.MustNewConstMetric(c.overdue, prometheus.GaugeValue, overdue)
	ch <- prometheus.MustNewConstMetric(c.version, prometheus.GaugeValue, float64(c.bundleVersion()))
	ch <- prometheus.MustNewConstMetric(c.roots, prometheus.GaugeValue, float64(st.BundleRoots))
}

// Values of the result label of bulwark_snapshot_updates_total.
const (
	resultApplied  = "applied"
	resultRejected = "rejected"
)

// snapshotMetrics count the snapshots the control plane sends: applied or
// rejected (NACKed), and when one was last applied. The version in force
// is read from the engine at scrape time. A nil *snapshotMetrics records
// nothing.
type snapshotMetrics struct {
	applied, rejected prometheus.Counter
	lastApplied       prometheus.Gauge
}

// newSnapshotMetrics registers the snapshot metrics on reg; version
// returns the version of the snapshot in force (0 before the first).
func newSnapshotMetrics(reg prometheus.Registerer, version func() int64) (*snapshotMetrics, error) {
	updates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_snapshot_updates_total",
		Help: "Snapshots received from the control plane, by result: applied (ACKed) or rejected (NACKed; the proxy keeps the one in force).",
	}, []string{"result"})
	last := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "bulwark_snapshot_last_applied_timestamp_seconds",
		Help: "When the proxy last applied a snapshot from the control plane (Unix seconds); 0 before the first.",
	})
	inForce := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bulwark_snapshot_version",
		Help: "Version of the snapshot in force (0 before the first; a last-known-good snapshot from disk counts).",
	}, func() float64 { return float64(version()) })
	for _, c := range []prometheus.Collector{updates, last, inForce} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return &snapshotMetrics{
		applied: updates.WithLabelValues(resultApplied), rejected: updates.WithLabelValues(resultRejected), lastApplied: last,
	}, nil
}

// record counts a snapshot from the control plane applied at now (err
// nil) or rejected.
func (m *snapshotMetrics) record(err error, now time.Time) {
	if m == nil {
		return
	}
	if err != nil {
		m.rejected.Inc()
		return
	}
	m.applied.Inc()
	m.lastApplied.Set(float64(now.UnixNano()) / 1e9)
}

// engineMetrics is where the engine registers its metrics: reg when the
// proxy serves them (addr, its --metrics, is set), else nowhere, so that
// the data path skips what nobody can read (the per-service series).
func engineMetrics(reg prometheus.Registerer, addr string) prometheus.Registerer {
	if addr == "" {
		return nil
	}
	return reg
}
