package sidecar_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
	"github.com/bulwarkmesh/bulwark/internal/svid"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// scrape serves /metrics for status and returns the lines of the proxy's
// own (bulwark_) series.
func scrape(t *testing.T, status svid.Status, bundleVersion int64, now time.Time) []string {
	t.Helper()
	h := sidecar.MetricsHandler(func() svid.Status { return status }, func() int64 { return bundleVersion }, func() time.Time { return now })
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: got %d %q, want 200", resp.StatusCode, body)
	}
	if !strings.Contains(string(body), "go_goroutines ") || !strings.Contains(string(body), "process_") {
		t.Errorf("/metrics: want the Go and process collectors' series, got:\n%s", body)
	}
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "bulwark_") {
			out = append(out, line)
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name          string
		status        svid.Status
		bundleVersion int64
		want          []string
	}{
		{
			name: "before_first_svid",
			want: []string{
				"bulwark_svid_renewal_overdue 0",
				`bulwark_svid_renewals_total{result="error"} 0`,
				`bulwark_svid_renewals_total{result="ok"} 0`,
				"bulwark_trust_bundle_roots 0",
				"bulwark_trust_bundle_version 0",
			},
		},
		{
			name:          "healthy",
			status:        svid.Status{Expiry: now.Add(30 * time.Minute), RenewalsOK: 3, RenewalsFailed: 1, BundleRoots: 2},
			bundleVersion: 4,
			want: []string{
				"bulwark_svid_expiry_seconds 1800",
				"bulwark_svid_renewal_overdue 0",
				`bulwark_svid_renewals_total{result="error"} 1`,
				`bulwark_svid_renewals_total{result="ok"} 3`,
				"bulwark_trust_bundle_roots 2",
				"bulwark_trust_bundle_version 4",
			},
		},
		{
			name:          "overdue",
			status:        svid.Status{Expiry: now.Add(90 * time.Second), RenewalsOK: 1, RenewalsFailed: 12, Overdue: true, BundleRoots: 1},
			bundleVersion: 1,
			want: []string{
				"bulwark_svid_expiry_seconds 90",
				"bulwark_svid_renewal_overdue 1",
				`bulwark_svid_renewals_total{result="error"} 12`,
				`bulwark_svid_renewals_total{result="ok"} 1`,
				"bulwark_trust_bundle_roots 1",
				"bulwark_trust_bundle_version 1",
			},
		},
		{
			name:          "expired",
			status:        svid.Status{Expiry: now.Add(-5 * time.Second), RenewalsFailed: 40, Overdue: true, BundleRoots: 1},
			bundleVersion: 1,
			want: []string{
				"bulwark_svid_expiry_seconds -5",
				"bulwark_svid_renewal_overdue 1",
				`bulwark_svid_renewals_total{result="error"} 40`,
				`bulwark_svid_renewals_total{result="ok"} 0`,
				"bulwark_trust_bundle_roots 1",
				"bulwark_trust_bundle_version 1",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := scrape(t, tt.status, tt.bundleVersion, now)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("bulwark_ series (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMetricsOnlyServesMetrics: the listener serves /metrics and nothing
// else.
func TestMetricsOnlyServesMetrics(t *testing.T) {
	h := sidecar.MetricsHandler(func() svid.Status { return svid.Status{} }, func() int64 { return 0 }, time.Now)
	tests := []struct {
		name   string
		method string
		path   string
		want   int
	}{
		{name: "get_metrics", method: http.MethodGet, path: "/metrics", want: http.StatusOK},
		{name: "root", method: http.MethodGet, path: "/", want: http.StatusNotFound},
		{name: "post_metrics", method: http.MethodPost, path: "/metrics", want: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.want {
				t.Errorf("%s %s: got %d, want %d", tt.method, tt.path, rec.Code, tt.want)
			}
		})
	}
}

// TestSnapshotMetrics: the version in force, and each snapshot from the
// control plane counted as applied or rejected, with when the last was
// applied.
func TestSnapshotMetrics(t *testing.T) {
	c := newCA(t)
	n := newProxyNode(t, c)
	sub := sidecar.NewSubscriber(n.mgr, n.engine, apiSvc, "", telemetry.Discard())
	reg := prometheus.NewRegistry()
	fake := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	if err := sub.CountSnapshots(reg, fake); err != nil {
		t.Fatal(err)
	}
	gather := func() []string {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				name := mf.GetName()
				for _, lp := range m.GetLabel() {
					name += "{" + lp.GetName() + "=" + strconv.Quote(lp.GetValue()) + "}"
				}
				v := m.GetGauge().GetValue()
				if c := m.GetCounter(); c != nil {
					v = c.GetValue()
				}
				out = append(out, name+" "+strconv.FormatFloat(v, 'f', -1, 64))
			}
		}
		return out
	}
	before := []string{
		"bulwark_snapshot_last_applied_timestamp_seconds 0",
		`bulwark_snapshot_updates_total{result="applied"} 0`,
		`bulwark_snapshot_updates_total{result="rejected"} 0`,
		"bulwark_snapshot_version 0",
	}
	if diff := cmp.Diff(before, gather()); diff != "" {
		t.Errorf("before the first snapshot (-want +got):\n%s", diff)
	}
	good := &apiv1.Snapshot{Version: 7, BundleVersion: 1, TrustBundle: derOf(c.Roots())}
	if err := sub.Apply(good); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	fake.Advance(time.Minute)
	bad := &apiv1.Snapshot{Version: 8, BundleVersion: 1, TrustBundle: [][]byte{[]byte("not a certificate")}}
	if err := sub.Apply(bad); err == nil {
		t.Fatal("Apply(bad): got nil, want an error")
	}
	want := []string{
		"bulwark_snapshot_last_applied_timestamp_seconds 1772366400",
		`bulwark_snapshot_updates_total{result="applied"} 1`,
		`bulwark_snapshot_updates_total{result="rejected"} 1`,
		"bulwark_snapshot_version 7",
	}
	if diff := cmp.Diff(want, gather()); diff != "" {
		t.Errorf("after one applied and one rejected (-want +got):\n%s", diff)
	}
}

// TestEngineMetricsOffWithoutFlag: without --metrics the engine gets no
// registry (its per-request series are skipped), with it the proxy's.
func TestEngineMetricsOffWithoutFlag(t *testing.T) {
	reg := prometheus.NewRegistry()
	if got := sidecar.EngineMetrics(reg, ""); got != nil {
		t.Errorf("without --metrics: got %v, want nil", got)
	}
	if got := sidecar.EngineMetrics(reg, "127.0.0.1:0"); got != prometheus.Registerer(reg) {
		t.Errorf("with --metrics: got %v, want the proxy's registry", got)
	}
}
