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
