package sidecar_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/sidecar"
	"github.com/bulwarkmesh/bulwark/internal/svid"
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
