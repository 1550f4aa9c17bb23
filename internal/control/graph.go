package control

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Bounds of the edges and authentication failures of a Report.
const (
	// maxReportEdges is the most edges one Report may carry (proxies send
	// at most 200 entries per call).
	maxReportEdges = 500
	// maxReportAuthFailures is the most authentication failures one Report
	// may carry (proxies hold at most 256 kinds).
	maxReportAuthFailures = 256
	// maxEdgeCount bounds every count of an entry, so that sums cannot
	// overflow.
	maxEdgeCount = 1 << 40
)

// checkGraph validates the edges and authentication failures of a Report
// from the proxy of reporter, as checkReport does its denials: an outbound
// edge must have the reporter as its source, and an inbound one a
// destination the reporter's identity serves. served caches serves. The
// error names the first bad entry.
func checkGraph(ctx context.Context, req *apiv1.ReportRequest, reporter spiffeid.ID, now time.Time,
	served map[identity.ServiceRef]bool, serves func(ctx context.Context, svc identity.ServiceRef) (bool, error)) error {
	es, as := req.GetEdges(), req.GetAuthFailures()
	if len(es) > maxReportEdges {
		return fmt.Errorf("edges: %d entries, at most %d per report", len(es), maxReportEdges)
	}
	if len(as) > maxReportAuthFailures {
		return fmt.Errorf("auth_failures: %d entries, at most %d per report", len(as), maxReportAuthFailures)
	}
	buckets := len(telemetry.LatencyBucketsMS()) + 1
	for i, e := range es {
		if err := checkEdge(e, now, buckets); err != nil {
			return fmt.Errorf("edges[%d].%w", i, err)
		}
		if err := checkReporterSaw(ctx, e.GetDirection(), e.GetSource(), e.GetDestination(), reporter, served, serves); err != nil {
			return fmt.Errorf("edges[%d].%w", i, err)
		}
	}
	for i, a := range as {
		if err := checkAuthFailure(a, now); err != nil {
			return fmt.Errorf("auth_failures[%d].%w", i, err)
		}
	}
	return nil
}

// checkEdge validates one edge; the error starts with the field name.
func checkEdge(e *apiv1.Edge, now time.Time, buckets int) error {
	p := e.GetPath()
	if err := checkRequestKind(e.GetDirection(), e.GetSource(), e.GetDestination(), e.GetMethod(), p, graph.MaxPath); err != nil {
		return err
	}
	for _, c := range []byte{'?', '#'} {
		if slices.Contains([]byte(p), c) {
			return fmt.Errorf("path: %q holds a query or fragment", clip(p))
		}
	}
	req := e.GetRequests()
	if req < 1 || req > maxEdgeCount {
		return fmt.Errorf("requests: %d is not between 1 and %d", req, int64(maxEdgeCount))
	}
	for _, c := range []struct {
		field string
		n     int64
	}{{"errors", e.GetErrors()}, {"denied", e.GetDenied()}, {"dry_run_denied", e.GetDryRunDenied()}} {
		if c.n < 0 || c.n > req {
			return fmt.Errorf("%s: %d is not between 0 and requests (%d)", c.field, c.n, req)
		}
	}
	hist := e.GetLatencyBuckets()
	if len(hist) != buckets {
		return fmt.Errorf("latency_buckets: %d buckets, want %d", len(hist), buckets)
	}
	var sum int64
	for j, c := range hist {
		if c < 0 || c > req {
			return fmt.Errorf("latency_buckets[%d]: %d is not between 0 and requests (%d)", j, c, req)
		}
		sum += c
	}
	if sum != req {
		return fmt.Errorf("latency_buckets: they count %d requests, not requests (%d)", sum, req)
	}
	return checkTimes(e.GetFirstSeenUnixNano(), e.GetLastSeenUnixNano(), now)
}

// checkAuthFailure validates one authentication failure.
func checkAuthFailure(a *apiv1.AuthFailure, now time.Time) error {
	addr, err := netip.ParseAddr(a.GetAddress())
	if err != nil || addr.Zone() != "" || addr.String() != a.GetAddress() {
		return fmt.Errorf("address: %q is not an IP address (without a port)", clip(a.GetAddress()))
	}
	if s := a.GetSource(); s != "" {
		if err := checkText("source", s, maxDenialID); err != nil {
			return err
		}
		if _, err := spiffeid.FromString(s); err != nil {
			return fmt.Errorf("source: %v", err)
		}
	}
	if !slices.Contains(graph.AuthFailureReasons(), a.GetReason()) {
		return fmt.Errorf("reason: %q is not one of %v", clip(a.GetReason()), graph.AuthFailureReasons())
	}
	if c := a.GetCount(); c < 1 || c > maxEdgeCount {
		return fmt.Errorf("count: %d is not between 1 and %d", c, int64(maxEdgeCount))
	}
	return checkTimes(a.GetFirstSeenUnixNano(), a.GetLastSeenUnixNano(), now)
}

// checkTimes validates the first and last seen times of an entry.
func checkTimes(first, last int64, now time.Time) error {
	switch {
	case first <= 0 || last <= 0:
		return fmt.Errorf("first_seen_unix_nano, last_seen_unix_nano: required")
	case first > last:
		return fmt.Errorf("first_seen_unix_nano: after last_seen_unix_nano")
	case last > now.Add(maxClockSkew).UnixNano():
		return fmt.Errorf("last_seen_unix_nano: %s is in the future", time.Unix(0, last).UTC().Format(time.RFC3339))
	}
	return nil
}
