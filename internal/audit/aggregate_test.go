package audit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/audit"
)

// recorder is an Appender that keeps what it is given, or fails.
type recorder struct {
	entries []audit.Entry
	fail    error
}

func (r *recorder) Append(_ context.Context, entries ...audit.Entry) error {
	if r.fail != nil {
		return r.fail
	}
	r.entries = append(r.entries, entries...)
	return nil
}

func TestAggregatorFloodIsBounded(t *testing.T) {
	f := newFixture(t, 0)
	var hooked atomic.Int64
	agg, err := audit.NewAggregator(audit.AggregatorConfig{Log: f.log, Clock: f.clock,
		OnFailure: func(addr, identity, reason string) { hooked.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	const flood = 100_000
	for i := range flood {
		addr := fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 40000+i%1000)
		agg.Failure(audit.FailureOperator, addr, "", "no operator certificate")
	}
	if err := agg.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries, head, err := f.log.Tail(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := head.Seq, uint64(audit.DefaultMaxFailureKeys+1); got != want {
		t.Errorf("got %d entries for a flood of %d sources, want %d", got, flood, want)
	}
	var total int64
	for _, e := range entries {
		total += e.Count
		if strings.Contains(e.Source, ":") {
			t.Errorf("entry %d keeps the port: %q", e.Seq, e.Source)
		}
	}
	if total != flood {
		t.Errorf("got counts adding up to %d, want %d", total, flood)
	}
	last := entries[len(entries)-1]
	if last.Source != "*" || last.Count != flood-audit.DefaultMaxFailureKeys {
		t.Errorf("got overflow entry %+v, want source * with count %d", last, flood-audit.DefaultMaxFailureKeys)
	}
	if hooked.Load() != flood {
		t.Errorf("got %d OnFailure calls, want %d", hooked.Load(), flood)
	}
	// The next period starts empty.
	if err := agg.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h, _ := f.log.Head(context.Background()); h.Seq != head.Seq {
		t.Errorf("an empty flush appended: head %d, want %d", h.Seq, head.Seq)
	}
}

func TestAggregatorCountsPerKey(t *testing.T) {
	rec := &recorder{}
	agg, err := audit.NewAggregator(audit.AggregatorConfig{Log: rec})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		agg.Failure(audit.FailureProxy, "127.0.0.1:5000", "spiffe://td/ns/a/sa/b", "revoked svid")
	}
	agg.Failure(audit.FailureProxy, "127.0.0.1:5001", "", "svid expired")
	for range 5 {
		agg.Signed("spiffe://td/ns/a/sa/b", "x509-svid")
	}
	agg.Signed("spiffe://td/ns/a/sa/b", "jwt-svid")
	if err := agg.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	type row struct {
		Actor, Action, Source, Detail string
		Count                         int64
	}
	var got []row
	for _, e := range rec.entries {
		got = append(got, row{e.Actor, e.Action, e.Source, e.Detail, e.Count})
	}
	want := []row{
		{"anonymous", "auth.failure", "127.0.0.1", "proxy.authn: svid expired", 1},
		{"spiffe://td/ns/a/sa/b", "auth.failure", "127.0.0.1", "proxy.authn: revoked svid", 3},
		{"spiffe://td/ns/a/sa/b", "svid.sign", "", "jwt-svid", 1},
		{"spiffe://td/ns/a/sa/b", "svid.sign", "", "x509-svid", 5},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

func TestAggregatorKeepsCountsWhenAppendFails(t *testing.T) {
	rec := &recorder{fail: errors.New("store down")}
	agg, err := audit.NewAggregator(audit.AggregatorConfig{Log: rec, MaxFailureKeys: 2, MaxSigners: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		agg.Failure(audit.FailureJoinToken, fmt.Sprintf("10.0.0.%d:1", i), "shop/api", "join token rejected")
		agg.Signed(fmt.Sprintf("id%d", i), "x509-svid")
	}
	if err := agg.Flush(context.Background()); err == nil {
		t.Fatal("got nil, want the append's error")
	}
	rec.fail = nil
	if err := agg.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var failures, signs int64
	for _, e := range rec.entries {
		switch e.Action {
		case audit.ActionAuthFailure:
			failures += e.Count
		case audit.ActionSVIDSign:
			signs += e.Count
		}
	}
	if failures != 5 || signs != 5 || len(rec.entries) != 5 {
		t.Errorf("got %d failures, %d signs in %d entries, want 5, 5 in 5 (2+other, 1+other)", failures, signs, len(rec.entries))
	}
}

func TestAggregatorRunFlushesEveryPeriod(t *testing.T) {
	f := newFixture(t, 0)
	agg, err := audit.NewAggregator(audit.AggregatorConfig{Log: f.log, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	armed := f.clock.TimerCreated()
	go func() { done <- agg.Run(ctx) }()
	<-armed
	agg.Failure(audit.FailureOperator, "192.0.2.1:1", "", "no operator certificate")
	next := f.clock.TimerCreated()
	f.clock.Advance(audit.DefaultFlushPeriod)
	<-next
	if h, _ := f.log.Head(context.Background()); h.Seq != 1 {
		t.Errorf("got head %d after one period, want 1", h.Seq)
	}
	// What is counted at shutdown is flushed too.
	agg.Signed("spiffe://td/ns/a/sa/b", "x509-svid")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h, _ := f.log.Head(context.Background()); h.Seq != 2 {
		t.Errorf("got head %d after shutdown, want 2", h.Seq)
	}
}

func TestNilAggregatorIsANoop(t *testing.T) {
	var agg *audit.Aggregator
	agg.Failure(audit.FailureProxy, "x", "y", "z")
	agg.Signed("x", "y")
}

func TestNewAggregatorValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  audit.AggregatorConfig
	}{
		{"no-log", audit.AggregatorConfig{}},
		{"negative-period", audit.AggregatorConfig{Log: &recorder{}, Period: -1}},
		{"negative-keys", audit.AggregatorConfig{Log: &recorder{}, MaxFailureKeys: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := audit.NewAggregator(tt.cfg); err == nil {
				t.Error("got nil, want an error")
			}
		})
	}
}
