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

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/framing"
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

// TestReporterAggregatesEveryInterval: denials of one kind are one entry
// with a count and their first and last times, reported every interval on
// the running reporter's clock; nothing is sent when nothing was denied.
func TestReporterAggregatesEveryInterval(t *testing.T) {
	fake := clock.NewFake(start)
	ctl := newFakeControl()
	r, reg := newReporter(t, fake, 1000, ctl.send, ctl.send)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	armed := fake.TimerCreated()
	go func() { done <- r.Run(ctx) }()
	<-armed

	r.Record(deny("outbound", "/a"))
	fake.Advance(time.Second)
	r.Record(deny("outbound", "/a"))
	r.Record(deny("inbound", "/a"))
	fake.Advance(2 * time.Second)
	r.Record(deny("outbound", "/a"))
	armed = fake.TimerCreated()
	fake.Advance(sidecar.ReportEvery - 3*time.Second)
	ctl.wait(t)
	<-armed // the next interval started

	reports := ctl.take()
	if diff := cmp.Diff([]entry{{"inbound", "/a", "no ALLOW rule matched", 1}, {"outbound", "/a", "no ALLOW rule matched", 3}}, entries(reports)); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	for _, d := range reports[0].GetDenials() {
		if d.GetDirection() != "outbound" {
			continue
		}
		if first, last := time.Unix(0, d.GetFirstSeenUnixNano()), time.Unix(0, d.GetLastSeenUnixNano()); !first.Equal(start) || !last.Equal(start.Add(3*time.Second)) {
			t.Errorf("first, last: got %s, %s, want %s, %s", first, last, start, start.Add(3*time.Second))
		}
		if d.GetRule() != -1 || d.GetStatus() != 403 || d.GetMethod() != "GET" || d.GetDestination() != "default/api" {
			t.Errorf("entry: got %v, want rule -1, status 403, GET to default/api", d)
		}
	}

	// An interval without denials sends nothing.
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
	r.Flush(ctx)
	ctl.setErr(status.Error(codes.Unavailable, "control plane restarting"))
	r.Record(deny("outbound", "/a"))
	r.Flush(ctx)
	ctl.setErr(nil)
	r.Record(deny("outbound", "/a"))
	ctl.take()
	r.Flush(ctx)
	if diff := cmp.Diff([]entry{{"outbound", "/a", "no ALLOW rule matched", 3}}, entries(ctl.take())); diff != "" {
		t.Errorf("report after two failures (-want +got):\n%s", diff)
	}

	ctl.setErr(status.Error(codes.InvalidArgument, "report: denials[0].path: too long"))
	r.Record(deny("outbound", "/b"))
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
