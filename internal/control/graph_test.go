package control_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// reportedEdge returns a valid outbound edge of shop/web calling
// default/api, requests of them all in the first latency bucket, seen
// between t0+first and t0+last, with edits applied.
func reportedEdge(requests int64, first, last time.Duration, edits ...func(*apiv1.Edge)) *apiv1.Edge {
	h := make([]int64, len(telemetry.LatencyBucketsMS())+1)
	h[0] = requests
	e := &apiv1.Edge{
		Direction: "outbound", Source: webID, Destination: "default/api", Method: "GET", Path: "/items/*",
		Requests: requests, LatencyBuckets: h, Mtls: true,
		FirstSeenUnixNano: t0.Add(first).UnixNano(), LastSeenUnixNano: t0.Add(last).UnixNano(),
	}
	for _, ed := range edits {
		ed(e)
	}
	return e
}

func authFailure(edits ...func(*apiv1.AuthFailure)) *apiv1.AuthFailure {
	a := &apiv1.AuthFailure{Address: "10.1.2.3", Reason: "no_svid", Count: 3,
		FirstSeenUnixNano: t0.UnixNano(), LastSeenUnixNano: t0.Add(time.Second).UnixNano()}
	for _, e := range edits {
		e(a)
	}
	return a
}

// TestCheckReportGraph: edges and authentication failures are validated
// like denials, and bound to the reporter.
func TestCheckReportGraph(t *testing.T) {
	reporter := spiffeid.RequireFromString(webID)
	now := t0.Add(time.Hour)
	serves := func(_ context.Context, svc identity.ServiceRef) (bool, error) {
		return svc.String() == "shop/web", nil
	}
	inbound := func(e *apiv1.Edge) { e.Direction, e.Source, e.Destination = "inbound", apiID, "shop/web" }
	manyEdges := make([]*apiv1.Edge, 501)
	for i := range manyEdges {
		manyEdges[i] = reportedEdge(1, 0, 0)
	}
	manyAuth := make([]*apiv1.AuthFailure, 257)
	for i := range manyAuth {
		manyAuth[i] = authFailure()
	}
	tests := []struct {
		name    string
		edges   []*apiv1.Edge
		auth    []*apiv1.AuthFailure
		wantErr string
	}{
		{name: "outbound", edges: []*apiv1.Edge{reportedEdge(3, 0, time.Second)}},
		{name: "inbound", edges: []*apiv1.Edge{reportedEdge(3, 0, 0, inbound)}},
		{name: "egress", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Destination, e.Mtls = "example.com", false })}},
		{name: "tunnel", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Method, e.Path = "CONNECT", "" })}},
		{name: "auth_failures", auth: []*apiv1.AuthFailure{authFailure(), authFailure(func(a *apiv1.AuthFailure) {
			a.Address, a.Source, a.Reason = "::1", apiID, "revoked"
		})}},
		{name: "too_many_edges", edges: manyEdges, wantErr: "edges: 501 entries, at most 500 per report"},
		{name: "too_many_auth", auth: manyAuth, wantErr: "auth_failures: 257 entries, at most 256 per report"},
		{name: "forged_outbound_source", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Source = apiID })},
			wantErr: "edges[0].source: an outbound request's source must be the reporter, " + webID},
		{name: "forged_inbound_service", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, inbound, func(e *apiv1.Edge) { e.Destination = "default/api" })},
			wantErr: "edges[0].destination: default/api is not a service of the reporter, " + webID},
		{name: "direction", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Direction = "up" })},
			wantErr: `edges[0].direction: "up" is not inbound or outbound`},
		{name: "source_not_spiffe", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Source = "web" })},
			wantErr: "edges[0].source: "},
		{name: "source_too_long", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Source = "spiffe://a/" + strings.Repeat("a", 2048) })},
			wantErr: "edges[0].source: 2059 bytes, at most 2048"},
		{name: "destination", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, inbound, func(e *apiv1.Edge) { e.Destination = "api" })},
			wantErr: `edges[0].destination: "api" is not namespace/name`},
		{name: "method_missing", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Method = "" })},
			wantErr: "edges[0].method: required"},
		{name: "method_too_long", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Method = strings.Repeat("X", 33) })},
			wantErr: "edges[0].method: 33 bytes, at most 32"},
		{name: "path_too_long", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Path = "/" + strings.Repeat("a", 256) })},
			wantErr: "edges[0].path: 257 bytes, at most 256"},
		{name: "path_with_query", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Path = "/a?token=x" })},
			wantErr: `edges[0].path: "/a?token=x" holds a query or fragment`},
		{name: "path_control_character", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Path = "/a\x1b[2J" })},
			wantErr: "edges[0].path: control character U+001B"},
		{name: "path_empty", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Path = "" })},
			wantErr: `edges[0].path: "" does not start with /`},
		{name: "requests_zero", edges: []*apiv1.Edge{reportedEdge(0, 0, 0)},
			wantErr: "edges[0].requests: 0 is not between 1 and"},
		{name: "negative_errors", edges: []*apiv1.Edge{reportedEdge(2, 0, 0, func(e *apiv1.Edge) { e.Errors = -1 })},
			wantErr: "edges[0].errors: -1 is not between 0 and requests (2)"},
		{name: "denied_above_requests", edges: []*apiv1.Edge{reportedEdge(2, 0, 0, func(e *apiv1.Edge) { e.Denied = 3 })},
			wantErr: "edges[0].denied: 3 is not between 0 and requests (2)"},
		{name: "dry_run_negative", edges: []*apiv1.Edge{reportedEdge(2, 0, 0, func(e *apiv1.Edge) { e.DryRunDenied = -5 })},
			wantErr: "edges[0].dry_run_denied: -5 is not between 0 and requests (2)"},
		{name: "too_many_buckets", edges: []*apiv1.Edge{reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.LatencyBuckets = append(e.LatencyBuckets, 0) })},
			wantErr: "edges[0].latency_buckets: 16 buckets, want 15"},
		{name: "negative_bucket", edges: []*apiv1.Edge{reportedEdge(2, 0, 0, func(e *apiv1.Edge) { e.LatencyBuckets[0], e.LatencyBuckets[1] = 2, -1 })},
			wantErr: "edges[0].latency_buckets[1]: -1 is not between 0 and requests (2)"},
		{name: "buckets_do_not_add_up", edges: []*apiv1.Edge{reportedEdge(2, 0, 0, func(e *apiv1.Edge) { e.LatencyBuckets[0] = 1 })},
			wantErr: "edges[0].latency_buckets: they count 1 requests, not requests (2)"},
		{name: "future", edges: []*apiv1.Edge{reportedEdge(1, 0, 2*time.Hour)},
			wantErr: "edges[0].last_seen_unix_nano: 2026-03-01T14:00:00Z is in the future"},
		{name: "first_after_last", edges: []*apiv1.Edge{reportedEdge(1, time.Second, 0)},
			wantErr: "edges[0].first_seen_unix_nano: after last_seen_unix_nano"},
		{name: "auth_address_with_port", auth: []*apiv1.AuthFailure{authFailure(func(a *apiv1.AuthFailure) { a.Address = "10.1.2.3:443" })},
			wantErr: `auth_failures[0].address: "10.1.2.3:443" is not an IP address`},
		{name: "auth_reason", auth: []*apiv1.AuthFailure{authFailure(func(a *apiv1.AuthFailure) { a.Reason = "because" })},
			wantErr: `auth_failures[0].reason: "because" is not one of`},
		{name: "auth_source", auth: []*apiv1.AuthFailure{authFailure(func(a *apiv1.AuthFailure) { a.Source = "nobody" })},
			wantErr: "auth_failures[0].source: "},
		{name: "auth_count", auth: []*apiv1.AuthFailure{authFailure(func(a *apiv1.AuthFailure) { a.Count = -1 })},
			wantErr: "auth_failures[0].count: -1 is not between 1 and"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &apiv1.ReportRequest{Edges: tt.edges, AuthFailures: tt.auth}
			err := control.CheckReport(context.Background(), req, reporter, now, serves)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got error %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Errorf("got error %v, want one starting %q", err, tt.wantErr)
			}
		})
	}
}

// TestReportEdges: edges reported by both ends of a request are kept once
// and served on GET /v1/edges; a forged edge is refused whole.
func TestReportEdges(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	api := p.attest(t, "default/api", "")
	now := p.clock.Now()
	stamp := func(es ...*apiv1.Edge) *apiv1.ReportRequest {
		for _, e := range es {
			e.Source = web.svid.ID.String()
			e.FirstSeenUnixNano, e.LastSeenUnixNano = now.Add(-time.Second).UnixNano(), now.UnixNano()
		}
		return &apiv1.ReportRequest{Edges: es}
	}
	report := func(c apiv1.ControlClient, req *apiv1.ReportRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		_, err := c.Report(ctx, req)
		return err
	}
	if err := report(web.client, stamp(reportedEdge(3, 0, 0))); err != nil {
		t.Fatalf("outbound Report: %v", err)
	}
	if err := report(api.client, stamp(reportedEdge(3, 0, 0, func(e *apiv1.Edge) { e.Direction = "inbound" }))); err != nil {
		t.Fatalf("inbound Report: %v", err)
	}
	wantCode(t, report(api.client, stamp(reportedEdge(1, 0, 0))), codes.InvalidArgument)
	wantCode(t, report(web.client, stamp(reportedEdge(1, 0, 0, func(e *apiv1.Edge) { e.Direction = "inbound" }))), codes.InvalidArgument)

	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	list := func(ns string, since time.Duration) []*config.Edge {
		t.Helper()
		b, err := p.admin.Edges(ctx, ns, since)
		if err != nil {
			t.Fatalf("Edges(%q, %s): %v", ns, since, err)
		}
		objs, err := config.UnmarshalList(b)
		if err != nil {
			t.Fatalf("decode edges: %v", err)
		}
		var out []*config.Edge
		for _, o := range objs {
			out = append(out, o.(*config.Edge))
		}
		return out
	}
	got := list("default", 0)
	if len(got) != 1 || got[0].Status.Requests != 3 || got[0].Status.Path != "/items/*" || got[0].Status.SourceService != "shop/web" {
		t.Fatalf("edges of default: got %+v, want web's 3 GETs of /items/* counted once", got)
	}
	if n := len(list("shop", 0)); n != 0 {
		t.Errorf("edges of namespace shop: got %d, want 0", n)
	}
	p.clock.Advance(time.Hour)
	if n := len(list("", 30*time.Minute)); n != 0 {
		t.Errorf("edges of the last 30 minutes, an hour later: got %d, want 0", n)
	}
	if _, err := p.admin.Edges(ctx, "", 48*time.Hour); err == nil || !strings.Contains(err.Error(), "since") {
		t.Errorf("since 48h: got %v, want an error naming since", err)
	}
}
