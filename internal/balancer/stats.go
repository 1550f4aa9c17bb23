package balancer

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

const (
	// DefaultRTT is the latency estimate of an endpoint without samples
	// (Linkerd's EWMA_DEFAULT_RTT): optimistic, so new endpoints get
	// traffic at once.
	DefaultRTT = 30 * time.Millisecond
	// Decay is the time constant τ of the peak-EWMA (Linkerd's EWMA_DECAY).
	Decay = 10 * time.Second
	// FailureLatency is the least latency sample a failed request counts
	// as.
	FailureLatency = time.Second
)

// Stats keeps per-endpoint load state (outstanding requests, peak-EWMA
// latency) by address, shared by every Balancer built from successive
// snapshots so that history survives a snapshot update. Entries of
// addresses absent from the latest Retain are dropped. It is safe for
// concurrent use.
type Stats struct {
	clk  clock.Clock
	base time.Time

	mu sync.Mutex
	m  map[string]*endpointStats
}

// NewStats returns empty Stats reading time from clk (nil: the wall clock).
func NewStats(clk clock.Clock) *Stats {
	clk = clock.OrReal(clk)
	return &Stats{clk: clk, base: clk.Now(), m: map[string]*endpointStats{}}
}

// Retain drops the state of every address not in addrs. Balancers built
// before keep working with the state they hold (it is no longer shared).
func (s *Stats) Retain(addrs map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a := range s.m {
		if !addrs[a] {
			delete(s.m, a)
		}
	}
}

// Len returns how many addresses have state.
func (s *Stats) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// get returns the state of addr, created when missing.
func (s *Stats) get(addr string) *endpointStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[addr]
	if !ok {
		e = &endpointStats{owner: s}
		e.ewma.Store(math.Float64bits(float64(DefaultRTT)))
		e.stamp.Store(s.since())
		s.m[addr] = e
	}
	return e
}

// since returns the nanoseconds from s.base to now.
func (s *Stats) since() int64 { return int64(s.clk.Now().Sub(s.base)) }

// endpointStats is the load state of one address. The estimate (ewma,
// stamp) is written under mu and read without a lock through the sequence
// lock seq (odd while a write is under way).
type endpointStats struct {
	owner       *Stats
	outstanding atomic.Int64

	mu    sync.Mutex
	seq   atomic.Uint64
	ewma  atomic.Uint64 // float64 bits, nanoseconds
	stamp atomic.Int64  // nanoseconds since owner.base of the last update
}

// estimate returns the peak-EWMA latency in nanoseconds and the time of its
// last update, a consistent pair.
func (e *endpointStats) estimate() (float64, int64) {
	for i := 0; ; i++ {
		if i > 16 {
			runtime.Gosched() // a writer was preempted mid-write
		}
		s1 := e.seq.Load()
		if s1&1 == 0 {
			v, t := e.ewma.Load(), e.stamp.Load()
			if e.seq.Load() == s1 {
				return math.Float64frombits(v), t
			}
		}
	}
}

// latency returns the estimate at now, decayed towards zero since its last
// update (tower's Load::load).
func (e *endpointStats) latency(now int64) float64 {
	v, t := e.estimate()
	if dt := now - t; dt > 0 {
		v *= math.Exp(-float64(dt) / float64(Decay))
	}
	return v
}

// observe records a latency sample (Finagle's PeakEwma.observe).
func (e *endpointStats) observe(sample float64, now int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cur := math.Float64frombits(e.ewma.Load())
	next := sample
	if sample <= cur {
		dt := now - e.stamp.Load()
		if dt < 0 {
			dt = 0
		}
		w := math.Exp(-float64(dt) / float64(Decay))
		next = cur*w + sample*(1-w)
	}
	e.seq.Add(1)
	e.ewma.Store(math.Float64bits(next))
	if now > e.stamp.Load() {
		e.stamp.Store(now)
	}
	e.seq.Add(1)
}

// Done ends what Balancer.Start began. It is a small value: copying it does
// not allocate. The zero Done does nothing.
type Done struct {
	e *endpointStats
}

// Finish records the request's end: latency is the time to its response
// headers, or to its failure. A failed request counts as a latency of at
// least FailureLatency. Call it exactly once per Start.
func (d Done) Finish(latency time.Duration, failed bool) {
	if d.e == nil {
		return
	}
	d.e.outstanding.Add(-1)
	if latency < 0 {
		latency = 0
	}
	if failed && latency < FailureLatency {
		latency = FailureLatency
	}
	d.e.observe(float64(latency), d.e.owner.since())
}
