package resilience_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
)

// hotPath lists every per-request call, each as a function run once per
// iteration, for the allocation test and the benchmarks.
func hotPath() []struct {
	name string
	f    func()
} {
	budget := resilience.NewBudget(20, 10, nil)
	for range 1000 {
		budget.Request()
	}
	limiter := resilience.NewLimiter(100)
	rl := resilience.NewRateLimiter(1e9, 1000, 0, nil)
	rl.Allow("spiffe://mesh/ns/default/sa/web")
	o := resilience.NewOutlier(resilience.OutlierConfig{}, nil)
	o.SetEndpoints(addrs(100))
	ejected := resilience.NewOutlier(resilience.OutlierConfig{MaxEjectionTime: time.Hour, BaseEjectionTime: time.Hour}, nil)
	ejected.SetEndpoints(addrs(100))
	report(ejected, "e7", egw, egw, egw)
	var n int
	return []struct {
		name string
		f    func()
	}{
		{"Budget.Request", budget.Request},
		{"Budget.TryRetry", func() { budget.TryRetry() }},
		{"Backoff", func() { resilience.Backoff(25*time.Millisecond, 250*time.Millisecond, 3, nil) }},
		{"Limiter.TryAcquire+Release", func() {
			if limiter.TryAcquire() {
				limiter.Release()
			}
		}},
		{"RateLimiter.Allow", func() { rl.Allow("spiffe://mesh/ns/default/sa/web") }},
		{"Outlier.Report", func() {
			n++
			r := resilience.Success
			if n%2 == 0 {
				r = resilience.GatewayError
			}
			o.Report("e7", r)
		}},
		{"Outlier.Ejected", func() { o.Ejected("e7") }},
		{"Outlier.Ejected/ejected", func() { ejected.Ejected("e7") }},
	}
}

// TestZeroAllocs: no per-request call allocates.
func TestZeroAllocs(t *testing.T) {
	for _, c := range hotPath() {
		t.Run(c.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, c.f); got != 0 {
				t.Errorf("got %v allocs, want 0", got)
			}
		})
	}
}

func BenchmarkHotPath(b *testing.B) {
	for _, c := range hotPath() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.f()
			}
		})
	}
}

// BenchmarkHotPathParallel runs the calls from every core at once, on
// shared state.
func BenchmarkHotPathParallel(b *testing.B) {
	for _, c := range hotPath() {
		if c.name == "Outlier.Report" {
			continue // its closure counts in a plain int
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.f()
				}
			})
		})
	}
}

// BenchmarkRateLimiterNewKeys is the attacker's case: every request from a
// new identity, the limiter full.
func BenchmarkRateLimiterNewKeys(b *testing.B) {
	rl := resilience.NewRateLimiter(10, 10, 1000, clock.NewFake(start))
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprint("spiffe://mesh/ns/x/sa/attacker-", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		rl.Allow(keys[i%len(keys)])
		i++
	}
}
