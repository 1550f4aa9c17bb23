package resilience

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// Limiter is a circuit breaker on concurrency: at most max holders at once.
// It is safe for concurrent use and lock-free.
type Limiter struct {
	max   int64
	inUse atomic.Int64
}

// NewLimiter returns a Limiter of max holders (max <= 0: unlimited, only
// counted).
func NewLimiter(max int) *Limiter { return &Limiter{max: int64(max)} }

// TryAcquire takes a place if one is free, and reports whether it did. It
// never waits.
func (l *Limiter) TryAcquire() bool {
	if l.max <= 0 {
		l.inUse.Add(1)
		return true
	}
	for {
		n := l.inUse.Load()
		if n >= l.max {
			return false
		}
		if l.inUse.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release gives back a place taken by a successful TryAcquire. Releasing
// more than was acquired is a bug of the caller and panics.
func (l *Limiter) Release() {
	if l.inUse.Add(-1) < 0 {
		l.inUse.Add(1)
		panic("resilience: Limiter.Release without TryAcquire")
	}
}

// InUse returns how many places are taken.
func (l *Limiter) InUse() int { return int(l.inUse.Load()) }

// DefaultMaxKeys is the number of buckets a RateLimiter keeps when
// NewRateLimiter is given maxKeys <= 0.
const DefaultMaxKeys = 10000

// RateLimiter keeps token buckets keyed by a string (a caller's SPIFFE ID,
// or "" for one shared bucket), refilled at rps up to burst, lazily on Allow
// (no goroutine). It keeps at most maxKeys buckets, evicting the least
// recently used. It is safe for concurrent use.
type RateLimiter struct {
	rps     float64
	burst   float64
	maxKeys int
	clk     clock.Clock
	base    time.Time

	mu sync.Mutex
	m  map[string]*bucket
	// lru is a circular doubly linked list of the buckets; lru.next is the
	// most recently used, lru.prev the least.
	lru bucket
}

type bucket struct {
	key        string
	tokens     float64
	last       int64 // nanoseconds since base of the last refill
	prev, next *bucket
}

// NewRateLimiter returns a RateLimiter whose buckets hold burst tokens
// (at least 1) and refill at rps tokens per second (rps <= 0: no limit,
// Allow always succeeds), keeping at most maxKeys buckets (<= 0:
// DefaultMaxKeys). It reads time from clk (nil: the wall clock).
func NewRateLimiter(rps float64, burst int, maxKeys int, clk clock.Clock) *RateLimiter {
	clk = clock.OrReal(clk)
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	r := &RateLimiter{
		rps:     rps,
		burst:   float64(max(burst, 1)),
		maxKeys: maxKeys,
		clk:     clk,
		base:    clk.Now(),
		m:       map[string]*bucket{},
	}
	r.lru.next, r.lru.prev = &r.lru, &r.lru
	return r
}

// maxRetryAfter bounds the wait Allow returns.
const maxRetryAfter = 24 * time.Hour

// Allow takes one token from key's bucket. When none is left it returns
// false and how long until the next token (callers round it up to whole
// seconds for Retry-After).
func (r *RateLimiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if r.rps <= 0 {
		return true, 0
	}
	now := int64(r.clk.Now().Sub(r.base))
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.m[key]
	if b == nil {
		b = r.newBucket(key, now)
	} else {
		b.unlink()
		if dt := now - b.last; dt > 0 {
			b.tokens = math.Min(r.burst, b.tokens+float64(dt)*r.rps/float64(time.Second))
			b.last = now
		}
	}
	r.pushFront(b)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	// At most maxRetryAfter: a tiny rate would overflow a Duration.
	wait := math.Ceil((1 - b.tokens) / r.rps * float64(time.Second))
	if !(wait < float64(maxRetryAfter)) {
		return false, maxRetryAfter
	}
	return false, max(time.Duration(wait), 1)
}

// newBucket returns a full bucket for key, recycling the least recently
// used one when the limiter is full. r.mu is held.
func (r *RateLimiter) newBucket(key string, now int64) *bucket {
	var b *bucket
	if len(r.m) >= r.maxKeys {
		b = r.lru.prev
		b.unlink()
		delete(r.m, b.key)
	} else {
		b = &bucket{}
	}
	*b = bucket{key: key, tokens: r.burst, last: now}
	r.m[key] = b
	return b
}

// Len returns how many buckets the limiter holds.
func (r *RateLimiter) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

func (r *RateLimiter) pushFront(b *bucket) {
	b.prev, b.next = &r.lru, r.lru.next
	r.lru.next.prev = b
	r.lru.next = b
}

func (b *bucket) unlink() {
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
}
