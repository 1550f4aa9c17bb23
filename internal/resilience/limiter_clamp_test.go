package resilience_test

import (
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
)

// TestRateLimiterWaitClamped: the wait of a tiny rate is at most a day,
// never an overflowed Duration.
func TestRateLimiterWaitClamped(t *testing.T) {
	for _, rps := range []float64{1e-300, 1e-9, 1.0 / 86400 / 2} {
		rl := resilience.NewRateLimiter(rps, 1, 10, clock.NewFake(time.Unix(0, 0)))
		if ok, _ := rl.Allow("k"); !ok {
			t.Fatalf("rate %v: the first request was refused", rps)
		}
		ok, wait := rl.Allow("k")
		if ok || wait != 24*time.Hour {
			t.Errorf("rate %v: got %v, %v, want false, 24h", rps, ok, wait)
		}
	}
	rl := resilience.NewRateLimiter(1.0/3600, 1, 10, clock.NewFake(time.Unix(0, 0)))
	rl.Allow("k")
	if _, wait := rl.Allow("k"); wait != time.Hour {
		t.Errorf("one an hour: got a wait of %v, want 1h", wait)
	}
}
