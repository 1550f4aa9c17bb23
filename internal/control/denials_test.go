package control_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// t0 is the time of the denial fixtures.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	webID = "spiffe://bulwark.test/ns/shop/sa/web"
	apiID = "spiffe://bulwark.test/ns/default/sa/api"
)

// denial returns a valid outbound denial of shop/web calling default/api,
// seen count times between t0+first and t0+last, with edits applied.
func denial(count int64, first, last time.Duration, edits ...func(*apiv1.Denial)) *apiv1.Denial {
	d := &apiv1.Denial{
		Direction: "outbound", Source: webID, Destination: "default/api", Method: "DELETE", Path: "/admin",
		Policy: "default/deny-admin", Rule: 0, Reason: "denied by policy", Status: 403, Count: count,
		FirstSeenUnixNano: t0.Add(first).UnixNano(), LastSeenUnixNano: t0.Add(last).UnixNano(),
	}
	for _, e := range edits {
		e(d)
	}
	return d
}

func withPath(p string) func(*apiv1.Denial) { return func(d *apiv1.Denial) { d.Path = p } }

func withDestination(s string) func(*apiv1.Denial) {
	return func(d *apiv1.Denial) { d.Destination = s }
}

// summary is what the tests compare of a listed Denial.
type summary struct {
	Namespace, Path string
	Count           int64
	First, Last     string
	Reporters       []string
}

func summarize(ds []*config.Denial) []summary {
	out := []summary{}
	for _, d := range ds {
		out = append(out, summary{Namespace: d.Metadata.Namespace, Path: d.Status.Path, Count: d.Status.Count,
			First: d.Status.FirstSeen, Last: d.Status.LastSeen, Reporters: d.Status.Reporters})
	}
	return out
}

func at(d time.Duration) string { return t0.Add(d).Format(time.RFC3339Nano) }

func TestDenialLogMergesByKey(t *testing.T) {
	l := control.NewDenialLog(10)
	l.Add(webID, denial(3, 5*time.Second, 9*time.Second))
	l.Add(webID, denial(2, time.Second, 7*time.Second))
	l.Add("spiffe://bulwark.test/ns/shop/sa/web2", denial(1, 10*time.Second, 10*time.Second))
	got := l.List(nil, time.Time{})
	want := []summary{{Namespace: "default", Path: "/admin", Count: 6, First: at(time.Second), Last: at(10 * time.Second),
		Reporters: []string{webID, "spiffe://bulwark.test/ns/shop/sa/web2"}}}
	if diff := cmp.Diff(want, summarize(got)); diff != "" {
		t.Errorf("merged denials (-want +got):\n%s", diff)
	}
	d := got[0]
	if d.Kind != config.KindDenial || d.APIVersion != config.APIVersion {
		t.Errorf("type: got %s %s, want %s %s", d.APIVersion, d.Kind, config.APIVersion, config.KindDenial)
	}
	if err := identity.ValidateName(d.Metadata.Name); err != nil || !strings.HasPrefix(d.Metadata.Name, "d-") {
		t.Errorf("name: got %q (%v), want a valid name starting d-", d.Metadata.Name, err)
	}
	if d.Status.Rule == nil || *d.Status.Rule != 0 || d.Status.Policy != "default/deny-admin" || d.Status.HTTPStatus != 403 {
		t.Errorf("decision: got policy %q rule %v status %d, want default/deny-admin rule 0 status 403", d.Status.Policy, d.Status.Rule, d.Status.HTTPStatus)
	}
	// The name is stable: the same key has the same name in a new log.
	again := control.NewDenialLog(10)
	again.Add(webID, denial(1, 0, 0))
	if got2 := again.List(nil, time.Time{}); got2[0].Metadata.Name != d.Metadata.Name {
		t.Errorf("name of the same key in another log: got %q, want %q", got2[0].Metadata.Name, d.Metadata.Name)
	}
}

func TestDenialLogNoRule(t *testing.T) {
	l := control.NewDenialLog(10)
	l.Add(webID, denial(1, 0, 0, func(d *apiv1.Denial) { d.Policy, d.Rule, d.Reason = "", -1, "no ALLOW rule matched" }))
	got := l.List(nil, time.Time{})
	if len(got) != 1 || got[0].Status.Rule != nil || got[0].Status.Policy != "" {
		t.Fatalf("got %+v, want one denial without policy and rule", got)
	}
}

// TestDenialLogEvictsLeastRecentlyReported: the log is bounded; a kind of
// denial reported again stays.
func TestDenialLogEvictsLeastRecentlyReported(t *testing.T) {
	l := control.NewDenialLog(4) // one kind per reporter
	reporter := func(i int) string { return fmt.Sprintf("spiffe://bulwark.test/ns/default/sa/api%d", i) }
	l.Add(reporter(1), denial(1, 0, 0, withPath("/a")))
	l.Add(reporter(2), denial(1, time.Second, time.Second, withPath("/b")))
	l.Add(reporter(3), denial(1, 2*time.Second, 2*time.Second, withPath("/c")))
	l.Add(reporter(4), denial(1, 3*time.Second, 3*time.Second, withPath("/d")))
	l.Add(reporter(2), denial(1, 4*time.Second, 4*time.Second, withPath("/a"))) // /a reported again
	l.Add(reporter(5), denial(1, 5*time.Second, 5*time.Second, withPath("/e"))) // evicts /b
	if diff := cmp.Diff([]string{"/e", "/a", "/d", "/c"}, paths(l.List(nil, time.Time{}))); diff != "" {
		t.Errorf("kept denials, most recent first (-want +got):\n%s", diff)
	}
}

// TestDenialLogBoundsEachReporter: a reporter owns at most a quarter of
// the log, so one flooding it with made-up kinds evicts its own and keeps
// everyone else's.
func TestDenialLogBoundsEachReporter(t *testing.T) {
	l := control.NewDenialLog(8) // two kinds per reporter
	l.Add(apiID, denial(1, 0, 0, withPath("/a")))
	l.Add(apiID, denial(1, 0, 0, withPath("/b")))
	for i := range 2 * control.DefaultMaxDenials {
		l.Add(webID, denial(1, time.Second, time.Second, withPath(fmt.Sprintf("/flood%d", i))))
	}
	want := []string{fmt.Sprintf("/flood%d", 2*control.DefaultMaxDenials-1), fmt.Sprintf("/flood%d", 2*control.DefaultMaxDenials-2), "/a", "/b"}
	got := paths(l.List(nil, time.Time{}))
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kept denials (-want +got):\n%s", diff)
	}
}

// paths returns the paths of ds.
func paths(ds []*config.Denial) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Status.Path)
	}
	return out
}

func TestDenialLogReportersBounded(t *testing.T) {
	l := control.NewDenialLog(10)
	for i := range control.MaxDenialReporters + 5 {
		l.Add(fmt.Sprintf("spiffe://bulwark.test/ns/default/sa/api%d", i), denial(1, 0, 0))
	}
	got := l.List(nil, time.Time{})
	if n := len(got[0].Status.Reporters); n != control.MaxDenialReporters {
		t.Errorf("reporters: got %d, want the bound %d", n, control.MaxDenialReporters)
	}
	if got[0].Status.Count != int64(control.MaxDenialReporters+5) {
		t.Errorf("count: got %d, want %d (every report counts)", got[0].Status.Count, control.MaxDenialReporters+5)
	}
}

func TestDenialLogListFilters(t *testing.T) {
	l := control.NewDenialLog(40)
	l.Add(webID, denial(1, 0, 0, withPath("/old")))
	l.Add(webID, denial(1, time.Minute, time.Minute, withPath("/new")))
	l.Add(webID, denial(1, 2*time.Minute, 2*time.Minute, withPath("/other"), withDestination("team-b/db")))
	tests := []struct {
		name      string
		include   func(string) bool
		since     time.Time
		wantPaths []string
	}{
		{name: "all", wantPaths: []string{"/other", "/new", "/old"}},
		{name: "namespace", include: func(ns string) bool { return ns == "default" }, wantPaths: []string{"/new", "/old"}},
		{name: "since", since: t0.Add(30 * time.Second), wantPaths: []string{"/other", "/new"}},
		{name: "since_inclusive", since: t0.Add(time.Minute), wantPaths: []string{"/other", "/new"}},
		{name: "namespace_and_since", include: func(ns string) bool { return ns == "default" }, since: t0.Add(time.Second), wantPaths: []string{"/new"}},
		{name: "none", include: func(string) bool { return false }, wantPaths: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var paths []string
			for _, d := range l.List(tt.include, tt.since) {
				paths = append(paths, d.Status.Path)
			}
			if diff := cmp.Diff(tt.wantPaths, paths); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCheckReport: a report is refused whole at its first bad entry, with
// an error naming the entry and the field; the reporter is bound to what it
// may report.
func TestCheckReport(t *testing.T) {
	reporter := spiffeid.RequireFromString(webID)
	now := t0.Add(time.Hour)
	serves := func(_ context.Context, svc identity.ServiceRef) (bool, error) {
		return svc.String() == "shop/web", nil
	}
	inbound := func(d *apiv1.Denial) {
		d.Direction, d.Source, d.Destination = "inbound", apiID, "shop/web"
	}
	many := make([]*apiv1.Denial, control.MaxReportDenials+1)
	for i := range many {
		many[i] = denial(1, 0, 0)
	}
	tests := []struct {
		name    string
		denials []*apiv1.Denial
		wantErr string
	}{
		{name: "outbound", denials: []*apiv1.Denial{denial(1, 0, 0)}},
		{name: "inbound", denials: []*apiv1.Denial{denial(4, 0, time.Second, inbound)}},
		{name: "empty", denials: nil},
		{name: "unauthenticated_no_policy", denials: []*apiv1.Denial{denial(1, 0, 0, func(d *apiv1.Denial) {
			d.Status, d.Policy, d.Rule, d.Reason = 401, "", -1, "token required"
		})}},
		{name: "path_of_256_bytes", denials: []*apiv1.Denial{denial(1, 0, 0, withPath("/"+strings.Repeat("a", 255)))}},
		{name: "too_many", denials: many, wantErr: "denials: 501 entries, at most 500 per report"},
		{name: "direction", denials: []*apiv1.Denial{denial(1, 0, 0), denial(1, 0, 0, func(d *apiv1.Denial) { d.Direction = "sideways" })},
			wantErr: `denials[1].direction: "sideways" is not inbound or outbound`},
		{name: "source_not_spiffe", denials: []*apiv1.Denial{denial(1, 0, 0, func(d *apiv1.Denial) { d.Source = "web" })},
			wantErr: "denials[0].source: "},
		{name: "destination", denials: []*apiv1.Denial{denial(1, 0, 0, inbound, withDestination("api"))},
			wantErr: `denials[0].destination: "api" is not namespace/name`},
		// A denied egress request names the host the app asked for.
		{name: "outbound_egress_host", denials: []*apiv1.Denial{denial(1, 0, 0, withDestination("exfil.example.org"))}},
		{name: "outbound_egress_host_bad", denials: []*apiv1.Denial{denial(1, 0, 0, withDestination("Exfil.example.org/x"))},
			wantErr: `denials[0].destination: "Exfil.example.org/x" is not namespace/name (or, outbound, a host name)`},
		{name: "method_missing", denials: []*apiv1.Denial{denial(1, 0, 0, func(d *apiv1.Denial) { d.Method = "" })},
			wantErr: "denials[0].method: required"},
		{name: "path_too_long", denials: []*apiv1.Denial{denial(1, 0, 0, withPath("/"+strings.Repeat("a", 256)))},
			wantErr: "denials[0].path: 257 bytes, at most 256"},
		{name: "connect_without_path", denials: []*apiv1.Denial{denial(1, 0, 0, withPath(""), func(d *apiv1.Denial) { d.Method = "CONNECT" })}},
		{name: "path_empty", denials: []*apiv1.Denial{denial(1, 0, 0, withPath(""))},
			wantErr: `denials[0].path: "" does not start with /`},
		{name: "path_relative", denials: []*apiv1.Denial{denial(1, 0, 0, withPath("admin"))},
			wantErr: `denials[0].path: "admin" does not start with /`},
		{name: "path_control_character", denials: []*apiv1.Denial{denial(1, 0, 0, withPath("/a\x1b[2J"))},
			wantErr: "denials[0].path: control character U+001B"},
		{name: "reason_not_utf8", denials: []*apiv1.Denial{denial(1, 0, 0, func(d *apiv1.Denial) { d.Reason = "\xff" })},
			wantErr: "denials[0].reason: not UTF-8"},
		{name: "policy", denials: []*apiv1.Denial{denial(1, 0, 0, func(d *apiv1.Denial) { d.Policy = "deny-admin" })},
			wantErr: `denials[0].policy: "deny-admin" is not namespace/name`},
		{name: "rule_without_policy", denials: []*apiv1.Denial{denial(1, 0, 0, func(d *apiv1.Denial) { d.Policy = "" })},
			wantErr: "denials[0].rule: 0 with policy"},
		{name: "status", denials: []*apiv1.Denial{denial(1, 0, 0, func(d *apiv1.Denial) { d.Status = 200 })},
			wantErr: "denials[0].status: 200 is not 401 or 403"},
		{name: "count", denials: []*apiv1.Denial{denial(0, 0, 0)},
			wantErr: "denials[0].count: 0 is not between 1 and"},
		{name: "first_after_last", denials: []*apiv1.Denial{denial(1, time.Second, 0)},
			wantErr: "denials[0].first_seen_unix_nano: after last_seen_unix_nano"},
		{name: "future", denials: []*apiv1.Denial{denial(1, 0, 2*time.Hour)},
			wantErr: "denials[0].last_seen_unix_nano: 2026-03-01T14:00:00Z is in the future"},
		{name: "outbound_of_another_source", denials: []*apiv1.Denial{denial(1, 0, 0, func(d *apiv1.Denial) { d.Source = apiID })},
			wantErr: "denials[0].source: an outbound request's source must be the reporter, " + webID},
		{name: "inbound_of_another_service", denials: []*apiv1.Denial{denial(1, 0, 0, inbound, withDestination("default/api"))},
			wantErr: "denials[0].destination: default/api is not a service of the reporter, " + webID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := control.CheckReport(context.Background(), &apiv1.ReportRequest{Denials: tt.denials}, reporter, now, serves)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got error %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Errorf("got error %v, want one starting %q", err, tt.wantErr)
			}
		})
	}

	t.Run("registry_failure", func(t *testing.T) {
		boom := errors.New("store down")
		err := control.CheckReport(context.Background(), &apiv1.ReportRequest{Denials: []*apiv1.Denial{denial(1, 0, 0, inbound)}}, reporter, now,
			func(context.Context, identity.ServiceRef) (bool, error) { return false, boom })
		if !errors.Is(err, boom) {
			t.Errorf("got error %v, want it to wrap %v", err, boom)
		}
	})
}

// TestReport: proxies report denials over their mTLS connection; the
// reporter is the SVID's identity, bound to what it may report; the
// control plane serves what it keeps on GET /v1/denials.
func TestReport(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	api := p.attest(t, "default/api", "")
	now := p.clock.Now()
	at := func(ds ...*apiv1.Denial) *apiv1.ReportRequest {
		for _, d := range ds {
			d.FirstSeenUnixNano, d.LastSeenUnixNano = now.Add(-time.Minute).UnixNano(), now.UnixNano()
		}
		return &apiv1.ReportRequest{Denials: ds}
	}
	report := func(c apiv1.ControlClient, req *apiv1.ReportRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		_, err := c.Report(ctx, req)
		return err
	}
	outbound := func() *apiv1.Denial { return denial(2, 0, 0) }
	inbound := func() *apiv1.Denial {
		return denial(3, 0, 0, func(d *apiv1.Denial) { d.Direction, d.Path = "inbound", "/inbound" })
	}

	t.Run("NoClientCertificate", func(t *testing.T) {
		wantCode(t, report(p.dial(t, nil), at(outbound())), codes.Unauthenticated)
	})
	t.Run("OutboundByItsSource", func(t *testing.T) {
		if err := report(web.client, at(outbound())); err != nil {
			t.Fatalf("Report: %v", err)
		}
	})
	t.Run("InboundByTheDestination", func(t *testing.T) {
		if err := report(api.client, at(inbound())); err != nil {
			t.Fatalf("Report: %v", err)
		}
	})
	t.Run("OutboundOfAnotherSource", func(t *testing.T) {
		wantCode(t, report(api.client, at(outbound())), codes.InvalidArgument)
	})
	t.Run("InboundOfAnotherService", func(t *testing.T) {
		wantCode(t, report(web.client, at(inbound())), codes.InvalidArgument)
	})
	t.Run("TooManyEntries", func(t *testing.T) {
		many := make([]*apiv1.Denial, control.MaxReportDenials+1)
		for i := range many {
			many[i] = outbound()
		}
		wantCode(t, report(web.client, at(many...)), codes.InvalidArgument)
	})
	t.Run("TooLarge", func(t *testing.T) {
		big := outbound()
		big.Reason = strings.Repeat("x", 300<<10)
		if err := report(web.client, at(big)); err == nil {
			t.Fatal("Report of a 300 KiB message: got nil, want an error")
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	list := func(t *testing.T, ns string, since time.Duration) []*config.Denial {
		t.Helper()
		b, err := p.admin.Denials(ctx, ns, since)
		if err != nil {
			t.Fatalf("Denials(%q, %s): %v", ns, since, err)
		}
		objs, err := config.UnmarshalList(b)
		if err != nil {
			t.Fatalf("decode denials: %v", err)
		}
		var out []*config.Denial
		for _, o := range objs {
			out = append(out, o.(*config.Denial))
		}
		return out
	}
	got := list(t, "", 0)
	type row struct {
		Direction, Source, Path string
		Count                   int64
		Reporters               []string
	}
	var rows []row
	for _, d := range got {
		rows = append(rows, row{d.Status.Direction, d.Status.Source, d.Status.Path, d.Status.Count, d.Status.Reporters})
	}
	want := []row{
		{"outbound", webID, "/admin", 2, []string{web.svid.ID.String()}},
		{"inbound", webID, "/inbound", 3, []string{api.svid.ID.String()}},
	}
	if diff := cmp.Diff(want, rows, cmpopts.SortSlices(func(a, b row) bool { return a.Path < b.Path })); diff != "" {
		t.Errorf("denials kept (-want +got):\n%s", diff)
	}
	if n := len(list(t, "shop", 0)); n != 0 {
		t.Errorf("denials of namespace shop: got %d, want 0 (both were denied at default/api)", n)
	}
	if n := len(list(t, "default", 0)); n != 2 {
		t.Errorf("denials of namespace default: got %d, want 2", n)
	}
	p.clock.Advance(time.Hour)
	if n := len(list(t, "", 30*time.Minute)); n != 0 {
		t.Errorf("denials of the last 30 minutes, an hour later: got %d, want 0", n)
	}
}
