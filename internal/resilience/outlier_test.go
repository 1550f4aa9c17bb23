package resilience_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
)

const (
	base    = 10 * time.Second
	maxEjct = 35 * time.Second
)

// outlier returns an Outlier over n endpoints e0..e(n-1).
func outlier(t *testing.T, n, pct int) (*resilience.Outlier, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(start)
	o := resilience.NewOutlier(resilience.OutlierConfig{
		Consecutive5xx:           5,
		ConsecutiveGatewayErrors: 3,
		BaseEjectionTime:         base,
		MaxEjectionTime:          maxEjct,
		MaxEjectionPercent:       pct,
	}, clk)
	o.SetEndpoints(addrs(n))
	return o, clk
}

func addrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("e%d", i)
	}
	return out
}

// report sends results to addr and returns what each Report returned.
func report(o *resilience.Outlier, addr string, rs ...resilience.Result) []bool {
	out := make([]bool, len(rs))
	for i, r := range rs {
		out[i] = o.Report(addr, r)
	}
	return out
}

const (
	ok  = resilience.Success
	e5  = resilience.ServerError
	egw = resilience.GatewayError
)

func TestOutlierCounting(t *testing.T) {
	tests := []struct {
		name    string
		results []resilience.Result
		want    []bool
	}{
		{name: "gateway_errors", results: []resilience.Result{egw, egw, egw}, want: []bool{false, false, true}},
		{name: "server_errors", results: []resilience.Result{e5, e5, e5, e5, e5}, want: []bool{false, false, false, false, true}},
		{name: "gateway_counts_as_5xx", results: []resilience.Result{e5, e5, e5, e5, egw}, want: []bool{false, false, false, false, true}},
		{name: "5xx_resets_gateway", results: []resilience.Result{egw, egw, e5, egw, egw}, want: []bool{false, false, false, false, true}},
		{name: "success_resets_both", results: []resilience.Result{egw, egw, ok, egw, egw, e5, e5, ok, e5}, want: make([]bool, 9)},
		{name: "ignored_while_ejected", results: []resilience.Result{egw, egw, egw, egw, egw, egw}, want: []bool{false, false, true, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := outlier(t, 10, 50)
			if diff := cmp.Diff(tt.want, report(o, "e1", tt.results...)); diff != "" {
				t.Errorf("Report results (-want +got):\n%s", diff)
			}
			want := tt.want[len(tt.want)-1] || tt.name == "ignored_while_ejected"
			if got := o.Ejected("e1"); got != want {
				t.Errorf("Ejected: got %v, want %v", got, want)
			}
		})
	}
}

// TestOutlierEjectionTimes: the nth ejection lasts min(base*n, max) and
// ends by itself; n restarts after MaxEjectionTime without ejection.
func TestOutlierEjectionTimes(t *testing.T) {
	o, clk := outlier(t, 10, 50)
	for n, want := range []time.Duration{base, 2 * base, 3 * base, maxEjct, maxEjct} {
		if !report(o, "e0", egw, egw, egw)[2] {
			t.Fatalf("ejection %d: Report did not eject", n+1)
		}
		if got := o.Ejections(); got != 1 {
			t.Fatalf("ejection %d: Ejections got %d, want 1", n+1, got)
		}
		clk.Advance(want - time.Nanosecond)
		if !o.Ejected("e0") {
			t.Fatalf("ejection %d: not ejected just before %v", n+1, want)
		}
		clk.Advance(time.Nanosecond)
		if o.Ejected("e0") {
			t.Fatalf("ejection %d: still ejected after %v", n+1, want)
		}
		if got := o.Ejections(); got != 0 {
			t.Fatalf("ejection %d: Ejections after its end got %d, want 0", n+1, got)
		}
	}
	// Healthy for MaxEjectionTime: forgiven, back to base.
	clk.Advance(maxEjct)
	report(o, "e0", egw, egw, egw)
	clk.Advance(base)
	if o.Ejected("e0") {
		t.Errorf("after forgiveness: ejection lasted more than base")
	}
	// Not yet forgiven: the next one is 2*base.
	clk.Advance(maxEjct - time.Second)
	report(o, "e0", egw, egw, egw)
	clk.Advance(base)
	if !o.Ejected("e0") {
		t.Errorf("without forgiveness: ejection ended after base, want 2*base")
	}
}

// TestOutlierMaxEjectionPercent: a hard cap, as Envoy.
func TestOutlierMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		n, pct int
		want   int // how many endpoints can be ejected at once
	}{
		{n: 3, pct: 50, want: 1},
		{n: 2, pct: 50, want: 1},
		{n: 1, pct: 50, want: 0},
		{n: 1, pct: 100, want: 1},
		{n: 10, pct: 50, want: 5},
		{n: 10, pct: 10, want: 1},
		{n: 4, pct: 100, want: 4},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("n=%d/pct=%d", tt.n, tt.pct), func(t *testing.T) {
			o, clk := outlier(t, tt.n, tt.pct)
			for i := range tt.n {
				got := report(o, fmt.Sprint("e", i), egw, egw, egw)[2]
				if want := i < tt.want; got != want {
					t.Errorf("e%d: ejected %v, want %v", i, got, want)
				}
			}
			if got := o.Ejections(); got != tt.want {
				t.Errorf("Ejections: got %d, want %d", got, tt.want)
			}
			if tt.want == 0 || tt.want == tt.n {
				return
			}
			// Once the first ejections end, another endpoint may go.
			clk.Advance(base)
			if !report(o, fmt.Sprint("e", tt.n-1), egw, egw, egw)[2] {
				t.Errorf("after the earlier ejections ended: e%d not ejected", tt.n-1)
			}
		})
	}
}

func TestOutlierSetEndpoints(t *testing.T) {
	o, _ := outlier(t, 3, 100)
	report(o, "e0", egw, egw, egw)
	report(o, "e1", egw, egw)
	o.SetEndpoints([]string{"e1", "e2", "e3"})
	if o.Ejected("e0") || o.Ejections() != 0 {
		t.Errorf("e0 still counted after it left the set")
	}
	if o.Report("e0", egw) {
		t.Errorf("Report of an address outside the set: got true")
	}
	// e1's counter was kept: one more gateway error ejects it.
	if !o.Report("e1", egw) {
		t.Errorf("e1: state lost across SetEndpoints")
	}
	o.SetEndpoints([]string{"e0", "e1", "e2", "e3"})
	if o.Ejected("e0") {
		t.Errorf("e0 back in the set: got ejected, want fresh state")
	}
	if !o.Ejected("e1") {
		t.Errorf("e1: ejection lost across SetEndpoints")
	}
	if o.Ejected("unknown") {
		t.Errorf("unknown address: got ejected")
	}
}

func TestOutlierDefaultsAndDisabled(t *testing.T) {
	o := resilience.NewOutlier(resilience.OutlierConfig{}, clock.NewFake(start))
	want := resilience.OutlierConfig{
		Consecutive5xx:           5,
		ConsecutiveGatewayErrors: 3,
		BaseEjectionTime:         30 * time.Second,
		MaxEjectionTime:          300 * time.Second,
		MaxEjectionPercent:       50,
	}
	if diff := cmp.Diff(want, o.Config()); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}

	off := resilience.NewOutlier(resilience.OutlierConfig{Consecutive5xx: -1, ConsecutiveGatewayErrors: -1}, clock.NewFake(start))
	off.SetEndpoints(addrs(2))
	for range 20 {
		if off.Report("e0", egw) {
			t.Fatalf("detectors disabled: got an ejection")
		}
	}
	never := resilience.NewOutlier(resilience.OutlierConfig{MaxEjectionPercent: -1}, clock.NewFake(start))
	never.SetEndpoints(addrs(2))
	if report(never, "e0", egw, egw, egw)[2] {
		t.Errorf("MaxEjectionPercent < 0: got an ejection")
	}
}

// TestOutlierConcurrent reports, checks and swaps endpoints from many
// goroutines (run with -race).
func TestOutlierConcurrent(t *testing.T) {
	o, clk := outlier(t, 10, 50)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			addr := fmt.Sprint("e", g)
			for k := range 500 {
				o.Report(addr, resilience.Result(k%3))
				o.Ejected(addr)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			o.SetEndpoints(addrs(10))
			clk.Advance(time.Second)
			o.Ejections()
		}
	})
	wg.Wait()
	if got := o.Ejections(); got > 5 {
		t.Errorf("Ejections: got %d, want at most 5 (50%% of 10)", got)
	}
}

func TestResultString(t *testing.T) {
	got := []string{ok.String(), e5.String(), egw.String(), resilience.Result(9).String()}
	want := []string{"success", "server-error", "gateway-error", "unknown"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
