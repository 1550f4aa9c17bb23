package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/framing"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
)

// fakeControl records the reports it gets and answers with err.
type fakeControl struct {
	mu      sync.Mutex
	reports []*apiv1.ReportRequest
	err     error
	got     chan struct{}
}

func newFakeControl() *fakeControl { return &fakeControl{got: make(chan struct{}, 100)} }

func (f *fakeControl) send(_ context.Context, req *apiv1.ReportRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, req)
	f.got <- struct{}{}
	return f.err
}

func (f *fakeControl) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// take returns the reports received so far and forgets them.
func (f *fakeControl) take() []*apiv1.ReportRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reports
	f.reports = nil
	return r
}

func (f *fakeControl) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.got:
	case <-time.After(hangGuard):
		t.Fatal("no report was sent")
	}
}

// entry is a reported denial without its times.
type entry struct {
	Direction, Path, Reason string
	Count                   int64
}

func entries(reports []*apiv1.ReportRequest) []entry {
	var out []entry
	for _, r := range reports {
		for _, d := range r.GetDenials() {
			out = append(out, entry{Direction: d.GetDirection(), Path: d.GetPath(), Reason: d.GetReason(), Count: d.GetCount()})
		}
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.Direction+a.Path, b.Direction+b.Path) })
	return out
}

func deny(direction, path string) proxy.Denial {
	return proxy.Denial{Direction: direction, Source: "spiffe://bulwark.test/ns/shop/sa/web", Destination: "default/api",
		Method: "GET", Path: path, Rule: -1, Reason: "no ALLOW rule matched", Status: 403}
}

func newReporter(t *testing.T, c clock.Clock, maxKinds int, send, sendFinal func(context.Context, *apiv1.ReportRequest) error) (*sidecar.Reporter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := sidecar.NewReporter(send, sendFinal, c, maxKinds, reg)
	if err != nil {
		t.Fatal(err)
	}
	return r, reg
}

func gauge(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetName() == label && m.GetLabel()[0].GetValue() == value) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestReporterAggregatesEveryInterval: requests of one kind are one edge
// with counts and their first and last times, and denials of one kind one
// entry with a count, reported every interval on the running reporter's
// clock (with the authentication failures); nothing is sent when nothing
// happened.
func TestReporterAggregatesEveryInterval(t *testing.T) {
	fake := clock.NewFake(start)
	ctl := newFakeControl()
	r, reg := newReporter(t, fake, 1000, ctl.send, ctl.send)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	armed := fake.TimerCreated()
	go func() { done <- r.Run(ctx) }()
	<-armed

	r.Observe(observed("/items/1", 200))
	fake.Advance(time.Second)
	r.Observe(observed("/items/2", 503))
	r.AuthFailure("10.0.0.9:4444", "", graph.ReasonNoSVID)
	fake.Advance(2 * time.Second)
	r.Observe(observed("/items/3", 200))
	armed = fake.TimerCreated()
	fake.Advance(sidecar.ReportEvery - 3*time.Second)
	ctl.wait(t)
	<-armed // the next interval started

	reports := ctl.take()
	if len(reports) != 1 || len(reports[0].GetEdges()) != 1 || len(reports[0].GetAuthFailures()) != 1 {
		t.Fatalf("got %v, want one report of one edge and one authentication failure", reports)
	}
	e := reports[0].GetEdges()[0]
	if e.GetPath() != "/items/*" || e.GetRequests() != 3 || e.GetErrors() != 1 || e.GetDirection() != "outbound" || !e.GetMtls() {
		t.Errorf("edge: got %v, want 3 outbound GETs of /items/*, 1 error, mTLS", e)
	}
	if first, last := time.Unix(0, e.GetFirstSeenUnixNano()), time.Unix(0, e.GetLastSeenUnixNano()); !first.Equal(start) || !last.Equal(start.Add(3*time.Second)) {
		t.Errorf("first, last: got %s, %s, want %s, %s", first, last, start, start.Add(3*time.Second))
	}
	if a := reports[0].GetAuthFailures()[0]; a.GetAddress() != "10.0.0.9" || a.GetReason() != graph.ReasonNoSVID || a.GetCount() != 1 {
		t.Errorf("auth failure: got %v, want one no_svid from 10.0.0.9", a)
	}

	// An interval without traffic sends nothing.
	armed = fake.TimerCreated()
	fake.Advance(sidecar.ReportEvery)
	<-armed
	if got := ctl.take(); len(got) != 0 {
		t.Errorf("quiet interval: got %d reports, want none", len(got))
	}
	if got := gauge(t, reg, "bulwark_denial_reports_total", "result", "ok"); got != 1 {
		t.Errorf("bulwark_denial_reports_total{result=ok}: got %v, want 1", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
}

func observed(path string, status int) graph.Observation {
	return graph.Observation{Direction: "outbound", Source: "spiffe://bulwark.test/ns/shop/sa/web", Destination: "default/api",
		Method: "GET", Path: path, Status: status, MTLS: true, Latency: time.Millisecond}
}

// TestReporterEarlyReport: a denial makes the reporter report one
// ReportEarly later, with the denials of the burst in one entry, and then
// at most once per ReportEarly; the interval goes on.
func TestReporterEarlyReport(t *testing.T) {
	fake := clock.NewFake(start)
	ctl := newFakeControl()
	r, _ := newReporter(t, fake, 1000, ctl.send, ctl.send)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	armed := fake.TimerCreated()
	go func() { done <- r.Run(ctx) }()
	<-armed // the interval

	armed = fake.TimerCreated()
	r.Record(deny("outbound", "/a"))
	<-armed // the early report
	r.Record(deny("outbound", "/a"))
	r.Observe(observed("/a", 403))
	fake.Advance(sidecar.ReportEarly / 2)
	r.Record(deny("outbound", "/a"))
	if n := fake.Timers(); n != 2 {
		t.Errorf("timers during a burst: got %d, want 2 (the interval and one early report)", n)
	}
	fake.Advance(sidecar.ReportEarly / 2)
	ctl.wait(t)
	reports := ctl.take()
	if diff := cmp.Diff([]entry{{"outbound", "/a", "no ALLOW rule matched", 3}}, entries(reports)); diff != "" {
		t.Errorf("early report (-want +got):\n%s", diff)
	}
	if len(reports) != 1 || len(reports[0].GetEdges()) != 1 {
		t.Errorf("early report: got %v, want the pending edge with it", reports)
	}

	// The next denial, right after: reported a full ReportEarly later.
	armed = fake.TimerCreated()
	r.Record(deny("inbound", "/b"))
	<-armed
	fake.Advance(sidecar.ReportEarly - time.Millisecond)
	select {
	case <-ctl.got:
		t.Fatal("a second early report within ReportEarly of the first")
	default:
	}
	fake.Advance(time.Millisecond)
	ctl.wait(t)
	if diff := cmp.Diff([]entry{{"inbound", "/b", "no ALLOW rule matched", 1}}, entries(ctl.take())); diff != "" {
		t.Errorf("second early report (-want +got):\n%s", diff)
	}

	// The interval still fires on time, with nothing to send.
	armed = fake.TimerCreated()
	fake.Advance(sidecar.ReportEvery - 2*sidecar.ReportEarly)
	<-armed
	if n := fake.Timers(); n != 1 {
		t.Errorf("timers after the interval: got %d, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
}

// TestReporterBatchesBySize: a report of large entries is cut into calls
// the control plane takes (at most ReportBatchBytes each), and nothing is
// lost.
func TestReporterBatchesBySize(t *testing.T) {
	ctl := newFakeControl()
	r, _ := newReporter(t, clock.NewFake(start), 1000, ctl.send, ctl.send)
	long := "spiffe://bulwark.test/ns/shop/sa/" + strings.Repeat("w", 2000)
	for i := range 300 {
		o := observed(fmt.Sprintf("/p%d/%s", i, strings.Repeat("x", 200)), 200)
		o.Direction, o.Source = "inbound", long
		r.Observe(o)
	}
	r.Flush(context.Background())
	var edges int
	for _, rep := range ctl.take() {
		if size := proto.Size(rep); size > sidecar.ReportBatchBytes+1024 || len(rep.GetEdges()) > sidecar.ReportBatch {
			t.Errorf("a report of %d bytes and %d edges, want at most %d bytes and %d", size, len(rep.GetEdges()), sidecar.ReportBatchBytes, sidecar.ReportBatch)
		}
		edges += len(rep.GetEdges())
	}
	if edges != 300 {
		t.Errorf("edges reported: got %d, want 300", edges)
	}
}

// TestReporterShutdownFlush: what is pending at shutdown is sent with the
// final sender.
func TestReporterShutdownFlush(t *testing.T) {
	fake := clock.NewFake(start)
	ctl, final := newFakeControl(), newFakeControl()
	r, _ := newReporter(t, fake, 1000, ctl.send, final.send)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	armed := fake.TimerCreated()
	go func() { done <- r.Run(ctx) }()
	<-armed
	r.Record(deny("outbound", "/bye"))
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
	if diff := cmp.Diff([]entry{{"outbound", "/bye", "no ALLOW rule matched", 1}}, entries(final.take())); diff != "" {
		t.Errorf("final report (-want +got):\n%s", diff)
	}
	if got := ctl.take(); len(got) != 0 {
		t.Errorf("got %d reports on the stream's connection at shutdown, want none", len(got))
	}
}

// TestReporterBounds: at most maxKinds kinds are held; the denials of
// further kinds are dropped and counted, and a report is cut in batches.
func TestReporterBounds(t *testing.T) {
	ctl := newFakeControl()
	kinds := sidecar.ReportBatch + 50
	r, reg := newReporter(t, clock.NewFake(start), kinds, ctl.send, ctl.send)
	for i := range kinds + 10 {
		r.Record(deny("outbound", fmt.Sprintf("/p%d", i)))
	}
	r.Record(deny("outbound", "/p0")) // a held kind still counts
	r.Flush(context.Background())
	reports := ctl.take()
	if len(reports) != 2 || len(reports[0].GetDenials()) != sidecar.ReportBatch || len(reports[1].GetDenials()) != 50 {
		var sizes []int
		for _, rep := range reports {
			sizes = append(sizes, len(rep.GetDenials()))
		}
		t.Errorf("batches: got sizes %v, want [%d 50]", sizes, sidecar.ReportBatch)
	}
	var total int64
	for _, e := range entries(reports) {
		total += e.Count
	}
	if total != int64(kinds)+1 {
		t.Errorf("reported denials: got %d, want %d", total, kinds+1)
	}
	if got := gauge(t, reg, "bulwark_denials_dropped_total", "", ""); got != 10 {
		t.Errorf("bulwark_denials_dropped_total: got %v, want 10", got)
	}
}

// TestReporterKeepsUnsentReports: a report that fails for want of a
// connection (or any error retrying can fix) is merged into the next; one
// the control plane refuses is dropped.
func TestReporterKeepsUnsentReports(t *testing.T) {
	ctl := newFakeControl()
	r, reg := newReporter(t, clock.NewFake(start), 1000, ctl.send, ctl.send)
	ctx := context.Background()

	ctl.setErr(sidecar.ErrNotConnected)
	r.Record(deny("outbound", "/a"))
	r.Observe(observed("/a", 200))
	r.Flush(ctx)
	ctl.setErr(status.Error(codes.Unavailable, "control plane restarting"))
	r.Record(deny("outbound", "/a"))
	r.Flush(ctx)
	ctl.setErr(nil)
	r.Record(deny("outbound", "/a"))
	ctl.take()
	r.Flush(ctx)
	sent := ctl.take()
	if diff := cmp.Diff([]entry{{"outbound", "/a", "no ALLOW rule matched", 3}}, entries(sent)); diff != "" {
		t.Errorf("report after two failures (-want +got):\n%s", diff)
	}
	if len(sent) != 1 || len(sent[0].GetEdges()) != 1 || sent[0].GetEdges()[0].GetRequests() != 1 {
		t.Errorf("edges after two failures: got %v, want the one request kept", sent)
	}

	ctl.setErr(status.Error(codes.InvalidArgument, "report: denials[0].path: too long"))
	r.Record(deny("outbound", "/b"))
	r.Observe(observed("/b", 200))
	r.Observe(observed("/b", 200))
	r.Flush(ctx)
	ctl.setErr(nil)
	ctl.take()
	r.Flush(ctx)
	if got := ctl.take(); len(got) != 0 {
		t.Errorf("after a refused report: got %v, want nothing sent again", got)
	}
	for _, c := range []struct {
		metric, label, value string
		want                 float64
	}{
		{"bulwark_denial_reports_total", "result", "error", 2},
		{"bulwark_denial_reports_total", "result", "refused", 1},
		{"bulwark_denial_reports_total", "result", "ok", 1},
		{"bulwark_denials_dropped_total", "", "", 1},
		{"bulwark_edges_dropped_total", "", "", 2},
	} {
		if got := gauge(t, reg, c.metric, c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q}: got %v, want %v", c.metric, c.label, c.value, got, c.want)
		}
	}
}

// TestReporterNeverBlocksTheDataPath: recording a denial returns while a
// report is stuck on the network.
func TestReporterNeverBlocksTheDataPath(t *testing.T) {
	release := make(chan struct{})
	sending := make(chan struct{})
	stuck := func(ctx context.Context, _ *apiv1.ReportRequest) error {
		close(sending)
		<-release
		return errors.New("timed out")
	}
	r, _ := newReporter(t, clock.NewFake(start), 1000, stuck, stuck)
	r.Record(deny("outbound", "/a"))
	flushed := make(chan struct{})
	go func() {
		r.Flush(context.Background())
		close(flushed)
	}()
	<-sending
	recorded := make(chan struct{})
	go func() {
		for range 1000 {
			r.Record(deny("inbound", "/b"))
		}
		close(recorded)
	}()
	select {
	case <-recorded:
	case <-time.After(hangGuard):
		t.Fatal("Record blocked while a report was being sent")
	}
	close(release)
	<-flushed
}

// TestFramingCounter: the framing listeners' rejections are counted by
// reason.
func TestFramingCounter(t *testing.T) {
	reg := prometheus.NewRegistry()
	onReject, err := sidecar.NewFramingCounter(reg)
	if err != nil {
		t.Fatal(err)
	}
	onReject(framing.ReasonContentLength)
	onReject(framing.ReasonContentLength)
	onReject(framing.ReasonTransferEncoding)
	for reason, want := range map[string]float64{"content_length": 2, "transfer_encoding": 1, "chunk": 0} {
		if got := gauge(t, reg, "bulwark_http_framing_rejected_total", "reason", reason); got != want {
			t.Errorf("bulwark_http_framing_rejected_total{reason=%q}: got %v, want %v", reason, got, want)
		}
	}
	if _, err := sidecar.NewFramingCounter(reg); err == nil {
		t.Error("registering twice: got nil, want an error")
	}
}
