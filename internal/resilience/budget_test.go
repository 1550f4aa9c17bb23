package resilience_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
)

var start = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// retries withdraws retries until the budget refuses, and returns how many
// it got (at most limit).
func retries(b *resilience.Budget, limit int) int {
	n := 0
	for n < limit && b.TryRetry() {
		n++
	}
	return n
}

func TestBudget(t *testing.T) {
	tests := []struct {
		name         string
		percent, min int
		requests     int
		want         int
	}{
		{name: "percent_only", percent: 20, requests: 100, want: 20},
		{name: "percent_plus_floor", percent: 20, min: 1, requests: 100, want: 30},
		{name: "quiet_service_floor", percent: 20, min: 10, requests: 0, want: 100},
		{name: "no_budget", percent: 0, min: 0, requests: 100, want: 0},
		{name: "rounds_down", percent: 20, requests: 9, want: 1},
		{name: "negative_counts_as_zero", percent: -5, min: -1, requests: 100, want: 0},
		{name: "hundred_percent", percent: 100, requests: 7, want: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := resilience.NewBudget(tt.percent, tt.min, clock.NewFake(start))
			for range tt.requests {
				b.Request()
			}
			if got := retries(b, 10000); got != tt.want {
				t.Errorf("retries allowed: got %d, want %d", got, tt.want)
			}
		})
	}
}

// TestBudgetWindowSlides: requests and retries older than 10 s no longer
// count.
func TestBudgetWindowSlides(t *testing.T) {
	clk := clock.NewFake(start)
	b := resilience.NewBudget(20, 0, clk)
	for range 100 {
		b.Request()
	}
	if got := retries(b, 1000); got != 20 {
		t.Fatalf("at 0s: got %d retries, want 20", got)
	}
	clk.Advance(9 * time.Second)
	for range 100 {
		b.Request()
	}
	// 200 requests in the window: 40 retries, 20 of them used.
	if got := retries(b, 1000); got != 20 {
		t.Fatalf("at 9s: got %d retries, want 20", got)
	}
	clk.Advance(time.Second)
	// The first second left the window: 100 requests, 20 retries (of 9s).
	if got := retries(b, 1000); got != 0 {
		t.Fatalf("at 10s: got %d retries, want 0", got)
	}
	clk.Advance(9 * time.Second)
	// Everything left the window.
	for range 10 {
		b.Request()
	}
	if got := retries(b, 1000); got != 2 {
		t.Errorf("at 19s: got %d retries, want 2", got)
	}
	// A long idle period (wrapping the ring many times) leaves nothing.
	clk.Advance(time.Hour + 3*time.Second)
	if got := retries(b, 1000); got != 0 {
		t.Errorf("after an hour: got %d retries, want 0", got)
	}
}

// TestBudgetConcurrent: under contention the budget is never overdrawn.
func TestBudgetConcurrent(t *testing.T) {
	b := resilience.NewBudget(20, 0, clock.NewFake(start))
	for range 1000 {
		b.Request()
	}
	var got atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if b.TryRetry() {
					got.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := got.Load(); n > 200 || n == 0 {
		t.Errorf("retries allowed: got %d, want 1 to 200", n)
	}
}

func TestBackoff(t *testing.T) {
	top := func(n int64) int64 { return n - 1 }
	zero := func(int64) int64 { return 0 }
	const base, ceiling = 25 * time.Millisecond, 250 * time.Millisecond
	tests := []struct {
		name    string
		base    time.Duration
		ceiling time.Duration
		attempt int
		rnd     func(int64) int64
		want    time.Duration
	}{
		{name: "first", base: base, ceiling: ceiling, attempt: 1, rnd: top, want: base - 1},
		{name: "second_doubles", base: base, ceiling: ceiling, attempt: 2, rnd: top, want: 2*base - 1},
		{name: "third", base: base, ceiling: ceiling, attempt: 3, rnd: top, want: 4*base - 1},
		{name: "capped", base: base, ceiling: ceiling, attempt: 5, rnd: top, want: ceiling - 1},
		{name: "huge_attempt_capped", base: base, ceiling: ceiling, attempt: 1000, rnd: top, want: ceiling - 1},
		{name: "overflowing_shift_capped", base: time.Hour, ceiling: 2 * time.Hour, attempt: 62, rnd: top, want: 2*time.Hour - 1},
		{name: "attempt_zero_is_first", base: base, ceiling: ceiling, attempt: 0, rnd: top, want: base - 1},
		{name: "low_end", base: base, ceiling: ceiling, attempt: 4, rnd: zero, want: 0},
		{name: "no_base", base: 0, ceiling: ceiling, attempt: 1, rnd: top, want: 0},
		{name: "no_ceiling", base: base, ceiling: 0, attempt: 1, rnd: top, want: 0},
		{name: "ceiling_below_base", base: base, ceiling: time.Millisecond, attempt: 1, rnd: top, want: time.Millisecond - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resilience.Backoff(tt.base, tt.ceiling, tt.attempt, tt.rnd); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("default_rand_in_bounds", func(t *testing.T) {
		for attempt := 1; attempt <= 6; attempt++ {
			bound := min(base<<(attempt-1), ceiling)
			for range 200 {
				if got := resilience.Backoff(base, ceiling, attempt, nil); got < 0 || got >= bound {
					t.Fatalf("attempt %d: got %v, want in [0, %v)", attempt, got, bound)
				}
			}
		}
	})
}
