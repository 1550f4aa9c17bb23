package resilience

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// budgetWindow is the number of one-second buckets a Budget counts.
const budgetWindow = 10

// Budget is a Linkerd-style retry budget: retries may add at most Percent%
// of the requests seen in the last 10 seconds, plus MinPerSecond retries per
// second of that window, always allowed. It is safe for concurrent use and
// lock-free.
type Budget struct {
	percent      uint64
	minPerSecond uint64
	clk          clock.Clock
	base         time.Time

	// Each word packs a second (high 32 bits, since base) and the count of
	// that second (low 32 bits).
	requests [budgetWindow]atomic.Uint64
	retries  [budgetWindow]atomic.Uint64
}

// NewBudget returns a Budget allowing percent% of requests as retries plus
// minPerSecond retries per second (negative values count as 0), reading
// time from clk (nil: the wall clock).
func NewBudget(percent, minPerSecond int, clk clock.Clock) *Budget {
	clk = clock.OrReal(clk)
	return &Budget{
		percent:      uint64(max(percent, 0)),
		minPerSecond: uint64(max(minPerSecond, 0)),
		clk:          clk,
		base:         clk.Now(),
	}
}

const countMask = 1<<32 - 1

// second returns the current second since b.base, wrapped to 32 bits.
func (b *Budget) second() uint64 {
	return uint64(b.clk.Now().Sub(b.base)/time.Second) & countMask
}

// add counts one event of second sec in ring, resetting the bucket when it
// holds an older second.
func add(ring *[budgetWindow]atomic.Uint64, sec uint64) {
	slot := &ring[sec%budgetWindow]
	for {
		w := slot.Load()
		nw := sec<<32 | 1
		if w>>32 == sec {
			nw = w + 1
		}
		if slot.CompareAndSwap(w, nw) {
			return
		}
	}
}

// undo takes back one event of second sec, if its bucket still holds it.
func undo(ring *[budgetWindow]atomic.Uint64, sec uint64) {
	slot := &ring[sec%budgetWindow]
	for {
		w := slot.Load()
		if w>>32 != sec || w&countMask == 0 {
			return
		}
		if slot.CompareAndSwap(w, w-1) {
			return
		}
	}
}

// sum returns the events of the window ending at second sec.
func sum(ring *[budgetWindow]atomic.Uint64, sec uint64) uint64 {
	var n uint64
	for i := range ring {
		w := ring[i].Load()
		if age := (sec - w>>32) & countMask; age < budgetWindow {
			n += w & countMask
		}
	}
	return n
}

// Request records that a first try was sent.
func (b *Budget) Request() { add(&b.requests, b.second()) }

// TryRetry withdraws one retry if the budget allows it, and reports whether
// it did.
func (b *Budget) TryRetry() bool {
	sec := b.second()
	add(&b.retries, sec)
	retries := sum(&b.retries, sec) // including this one
	requests := sum(&b.requests, sec)
	if retries*100 <= requests*b.percent+b.minPerSecond*budgetWindow*100 {
		return true
	}
	undo(&b.retries, sec)
	return false
}

// Backoff returns the wait before retry number attempt (1-based; smaller
// counts as 1): full jitter, a uniform random duration in
// [0, min(ceiling, base*2^(attempt-1))). rnd returns a uniform int64 in
// [0, n) (nil: math/rand/v2.Int64N). A non-positive base or ceiling gives 0.
func Backoff(base, ceiling time.Duration, attempt int, rnd func(n int64) int64) time.Duration {
	if base <= 0 || ceiling <= 0 {
		return 0
	}
	attempt = min(max(attempt, 1), 63)
	bound := ceiling
	if b := base << (attempt - 1); b>>(attempt-1) == base && b > 0 && b < ceiling {
		bound = b
	}
	if rnd == nil {
		rnd = rand.Int64N
	}
	return time.Duration(rnd(int64(bound)))
}
