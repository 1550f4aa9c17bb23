package resilience_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
)

func TestLimiter(t *testing.T) {
	l := resilience.NewLimiter(3)
	for i := range 3 {
		if !l.TryAcquire() {
			t.Fatalf("acquire %d: got false, want true", i)
		}
	}
	if l.TryAcquire() {
		t.Fatalf("acquire past the limit: got true, want false")
	}
	if got := l.InUse(); got != 3 {
		t.Errorf("InUse: got %d, want 3", got)
	}
	l.Release()
	if !l.TryAcquire() {
		t.Errorf("acquire after a release: got false, want true")
	}
}

func TestLimiterUnlimited(t *testing.T) {
	for _, max := range []int{0, -1} {
		t.Run(fmt.Sprint("max=", max), func(t *testing.T) {
			l := resilience.NewLimiter(max)
			for i := range 1000 {
				if !l.TryAcquire() {
					t.Fatalf("acquire %d: got false, want true", i)
				}
			}
			if got := l.InUse(); got != 1000 {
				t.Errorf("InUse: got %d, want 1000", got)
			}
		})
	}
}

func TestLimiterReleaseWithoutAcquirePanics(t *testing.T) {
	l := resilience.NewLimiter(1)
	defer func() {
		if recover() == nil {
			t.Errorf("Release without TryAcquire: no panic, want one")
		}
		if got := l.InUse(); got != 0 {
			t.Errorf("InUse after the bad Release: got %d, want 0", got)
		}
	}()
	l.Release()
}

// TestLimiterConcurrent: many goroutines never hold more than the limit at
// once (run with -race).
func TestLimiterConcurrent(t *testing.T) {
	const max = 4
	l := resilience.NewLimiter(max)
	var holders, peak, granted atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 2000 {
				if !l.TryAcquire() {
					continue
				}
				granted.Add(1)
				n := holders.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				holders.Add(-1)
				l.Release()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > max {
		t.Errorf("peak holders: got %d, want at most %d", p, max)
	}
	if granted.Load() == 0 {
		t.Errorf("no acquisition succeeded")
	}
	if got := l.InUse(); got != 0 {
		t.Errorf("InUse at the end: got %d, want 0", got)
	}
}

func TestRateLimiter(t *testing.T) {
	clk := clock.NewFake(start)
	r := resilience.NewRateLimiter(1, 3, 0, clk)
	type step struct {
		advance   time.Duration
		key       string
		wantOK    bool
		wantAfter time.Duration
	}
	steps := []step{
		{key: "a", wantOK: true},
		{key: "a", wantOK: true},
		{key: "a", wantOK: true},
		{key: "a", wantOK: false, wantAfter: time.Second},
		{key: "b", wantOK: true}, // buckets are per key
		{advance: 400 * time.Millisecond, key: "a", wantOK: false, wantAfter: 600 * time.Millisecond},
		{advance: 600 * time.Millisecond, key: "a", wantOK: true},
		{key: "a", wantOK: false, wantAfter: time.Second},
		// Refill stops at burst.
		{advance: time.Hour, key: "a", wantOK: true},
		{key: "a", wantOK: true},
		{key: "a", wantOK: true},
		{key: "a", wantOK: false, wantAfter: time.Second},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		ok, after := r.Allow(s.key)
		if ok != s.wantOK || after != s.wantAfter {
			t.Errorf("step %d (%s): got %v, %v; want %v, %v", i, s.key, ok, after, s.wantOK, s.wantAfter)
		}
	}
}

func TestRateLimiterFractionalRate(t *testing.T) {
	clk := clock.NewFake(start)
	r := resilience.NewRateLimiter(0.5, 0, 0, clk) // burst 0 counts as 1
	if ok, _ := r.Allow(""); !ok {
		t.Fatalf("first: got refused, want allowed")
	}
	if ok, after := r.Allow(""); ok || after != 2*time.Second {
		t.Errorf("second: got %v, %v; want false, 2s", ok, after)
	}
}

func TestRateLimiterNoRate(t *testing.T) {
	r := resilience.NewRateLimiter(0, 1, 0, clock.NewFake(start))
	for range 100 {
		if ok, _ := r.Allow("x"); !ok {
			t.Fatalf("rps 0: got refused, want no limit")
		}
	}
}

// TestRateLimiterEvictionBound: an attacker cycling identities does not
// grow the limiter past maxKeys, nor allocate once it is full; the least
// recently used bucket is the one evicted.
func TestRateLimiterEvictionBound(t *testing.T) {
	clk := clock.NewFake(start)
	const maxKeys = 100
	r := resilience.NewRateLimiter(1, 1, maxKeys, clk)
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprintf("spiffe://mesh/ns/x/sa/attacker-%d", i)
	}
	for _, k := range keys {
		r.Allow(k)
	}
	if got := r.Len(); got != maxKeys {
		t.Fatalf("Len: got %d, want %d", got, maxKeys)
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		r.Allow(keys[i%len(keys)])
		i++
	})
	if allocs != 0 {
		t.Errorf("Allow of new keys when full: got %v allocs, want 0", allocs)
	}
	if got := r.Len(); got != maxKeys {
		t.Errorf("Len: got %d, want %d", got, maxKeys)
	}

	t.Run("lru", func(t *testing.T) {
		r := resilience.NewRateLimiter(1, 1, 2, clk)
		r.Allow("a") // drained
		r.Allow("b") // drained
		r.Allow("a") // touched: b is now the least recently used
		r.Allow("c") // evicts b
		if ok, _ := r.Allow("a"); ok {
			t.Errorf("a: got allowed, want refused (its drained bucket kept)")
		}
		if ok, _ := r.Allow("b"); !ok {
			t.Errorf("b: got refused, want allowed (evicted, fresh bucket)")
		}
	})
}

func TestRateLimiterConcurrent(t *testing.T) {
	clk := clock.NewFake(start)
	r := resilience.NewRateLimiter(10, 50, 8, clk)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 100 {
				if ok, _ := r.Allow(""); ok {
					allowed.Add(1)
				}
				r.Allow(fmt.Sprint("k", g))
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 50 {
		t.Errorf("shared bucket: got %d allowed, want the burst of 50", got)
	}
}
