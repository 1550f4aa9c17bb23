package balancer

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// RingReplicas is how many points each endpoint owns on the ConsistentHash
// ring.
const RingReplicas = 100

// Endpoint is one endpoint as the snapshot gives it.
type Endpoint struct {
	// Addr is the endpoint's address ("host:port"); Stats and the hash
	// ring key on it.
	Addr string
	// Locality of the endpoint; the zero value is unknown.
	Locality Locality
	// Draining endpoints are used only when no other is left.
	Draining bool
}

// Config configures a Balancer.
type Config struct {
	// Policy is config.LBPeakEWMA (the default when ""),
	// config.LBRoundRobin, config.LBLeastRequest or
	// config.LBConsistentHash. An unknown policy is treated as the default
	// (config validation rejects it before it gets here).
	Policy string
	// LocalityAware prefers the caller's zone, then its region, then any
	// (see the package doc). Without a known Local it has no effect.
	LocalityAware bool
	// Local is the caller's locality.
	Local Locality
	// Rand returns a uniform int in [0, n); it must be safe for concurrent
	// use. Default (nil): math/rand/v2.IntN.
	Rand func(n int) int
}

type policy int

const (
	policyPeakEWMA policy = iota
	policyRoundRobin
	policyLeastRequest
	policyConsistentHash
)

func parsePolicy(s string) policy {
	switch s {
	case config.LBRoundRobin:
		return policyRoundRobin
	case config.LBLeastRequest:
		return policyLeastRequest
	case config.LBConsistentHash:
		return policyConsistentHash
	default:
		return policyPeakEWMA
	}
}

// ringPoint is one point of the hash ring.
type ringPoint struct {
	hash uint64
	idx  int32
}

// tier is a set of endpoints of equal locality preference.
type tier struct {
	idx  []int32     // indexes into Balancer.eps
	live int         // how many are not draining
	ring []ringPoint // ConsistentHash only, sorted by hash
}

// Balancer picks among a fixed list of endpoints (one destination, or one
// version subset of it). It is immutable apart from its counters and built
// once per snapshot; it is safe for concurrent use.
type Balancer struct {
	policy      policy
	rnd         func(int) int
	stats       *Stats
	draining    []bool
	ep          []*endpointStats
	tiers       []tier
	anyDraining bool
	rr          atomic.Uint64
}

// New returns a Balancer over eps. stats carries load history across
// snapshots (nil: private Stats on the wall clock). eps is not retained.
func New(cfg Config, eps []Endpoint, stats *Stats) *Balancer {
	if stats == nil {
		stats = NewStats(nil)
	}
	b := &Balancer{
		policy:   parsePolicy(cfg.Policy),
		rnd:      cfg.Rand,
		stats:    stats,
		draining: make([]bool, len(eps)),
		ep:       make([]*endpointStats, len(eps)),
	}
	if b.rnd == nil {
		b.rnd = rand.IntN
	}
	var byTier [3][]int32
	for i, e := range eps {
		b.draining[i] = e.Draining
		b.anyDraining = b.anyDraining || e.Draining
		b.ep[i] = stats.get(e.Addr)
		t := 0
		if cfg.LocalityAware && cfg.Local.Known() {
			t = rank(cfg.Local, e.Locality)
		}
		byTier[t] = append(byTier[t], int32(i))
	}
	for _, idx := range byTier {
		if len(idx) == 0 {
			continue
		}
		t := tier{idx: idx}
		for _, i := range idx {
			if !eps[i].Draining {
				t.live++
			}
		}
		if b.policy == policyConsistentHash {
			t.ring = buildRing(eps, idx)
		}
		b.tiers = append(b.tiers, t)
	}
	return b
}

// rank returns the locality tier of an endpoint at l seen from local: 0 for
// the same zone, 1 for the same region, 2 for the rest. A local locality
// without a zone ranks its region first.
func rank(local, l Locality) int {
	switch {
	case l.Region != local.Region:
		return 2
	case local.Zone == "" || l.Zone == local.Zone:
		return 0
	default:
		return 1
	}
}

func buildRing(eps []Endpoint, idx []int32) []ringPoint {
	ring := make([]ringPoint, 0, len(idx)*RingReplicas)
	for _, i := range idx {
		for r := range RingReplicas {
			ring = append(ring, ringPoint{hash: HashString(eps[i].Addr + "#" + strconv.Itoa(r)), idx: i})
		}
	}
	// Ties (astronomically rare) are broken by address, then position, so
	// that the ring does not depend on the order of eps.
	slices.SortFunc(ring, func(a, b ringPoint) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		if c := cmp.Compare(eps[a.idx].Addr, eps[b.idx].Addr); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	return ring
}

// Len returns how many endpoints the Balancer picks among.
func (b *Balancer) Len() int { return len(b.ep) }

// Pick returns the index (into the eps given to New) of the endpoint for a
// request, or -1 when none is left.
//
// exclude(i) reports endpoints the caller rules out for this request
// (ejected by outlier detection, already tried by an earlier attempt); it
// may be nil. hash is the request's hash key for ConsistentHash (ignored by
// the other policies); 0 means no key, and then ConsistentHash picks at
// random. Draining endpoints are skipped unless every remaining candidate is
// draining. With locality, the caller's zone comes first, then its region,
// then any: the next tier is used only when the previous one has no usable
// endpoint.
func (b *Balancer) Pick(hash uint64, exclude func(i int) bool) int {
	for pass := 0; pass < 2; pass++ {
		withDraining := pass == 1
		for t := range b.tiers {
			if !withDraining && b.tiers[t].live == 0 {
				continue
			}
			if i := b.pickIn(&b.tiers[t], hash, exclude, withDraining); i >= 0 {
				return i
			}
		}
		if !b.anyDraining {
			break
		}
	}
	return -1
}

// usable reports whether endpoint i may serve this request in this pass.
func (b *Balancer) usable(i int32, exclude func(int) bool, withDraining bool) bool {
	if b.draining[i] && !withDraining {
		return false
	}
	return exclude == nil || !exclude(int(i))
}

func (b *Balancer) pickIn(t *tier, hash uint64, exclude func(int) bool, withDraining bool) int {
	switch b.policy {
	case policyRoundRobin:
		n := uint64(len(t.idx))
		start := b.rr.Add(1) - 1
		for k := range n {
			if i := t.idx[(start+k)%n]; b.usable(i, exclude, withDraining) {
				return int(i)
			}
		}
		return -1
	case policyConsistentHash:
		if hash == 0 {
			p := b.sample(t, -1, exclude, withDraining)
			if p < 0 {
				return -1
			}
			return int(t.idx[p])
		}
		return b.walkRing(t, hash, exclude, withDraining)
	}
	// Power of two choices.
	p := b.sample(t, -1, exclude, withDraining)
	if p < 0 {
		return -1
	}
	a := t.idx[p]
	q := b.sample(t, p, exclude, withDraining)
	if q < 0 {
		return int(a)
	}
	c := t.idx[q]
	if b.policy == policyLeastRequest {
		if b.ep[c].outstanding.Load() < b.ep[a].outstanding.Load() {
			return int(c)
		}
		return int(a)
	}
	now := b.stats.since()
	if b.cost(c, now) < b.cost(a, now) {
		return int(c)
	}
	return int(a)
}

// cost is the peak-EWMA cost of endpoint i at now.
func (b *Balancer) cost(i int32, now int64) float64 {
	e := b.ep[i]
	return e.latency(now) * float64(e.outstanding.Load()+1)
}

// sample returns the position in t of a random usable endpoint other than
// the one at position not (-1: none), or -1 when there is none. It probes at
// random twice, then scans from a random position, so it is O(1) while few
// endpoints are excluded and O(n) at worst.
func (b *Balancer) sample(t *tier, not int, exclude func(int) bool, withDraining bool) int {
	n := len(t.idx)
	m := n
	if not >= 0 {
		m--
	}
	if m <= 0 {
		return -1
	}
	for range 2 {
		p := b.rnd(m)
		if not >= 0 && p >= not {
			p++
		}
		if b.usable(t.idx[p], exclude, withDraining) {
			return p
		}
	}
	off := b.rnd(n)
	for k := range n {
		p := (off + k) % n
		if p != not && b.usable(t.idx[p], exclude, withDraining) {
			return p
		}
	}
	return -1
}

// walkRing returns the first usable endpoint clockwise from hash.
func (b *Balancer) walkRing(t *tier, hash uint64, exclude func(int) bool, withDraining bool) int {
	ring := t.ring
	n := len(ring)
	// The first point whose hash is >= hash (binary search).
	lo, hi := 0, n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if ring[mid].hash < hash {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	last := int32(-1)
	for k := range n {
		i := ring[(lo+k)%n].idx
		if i == last {
			continue // the same endpoint's neighbouring point: already refused
		}
		last = i
		if b.usable(i, exclude, withDraining) {
			return int(i)
		}
	}
	return -1
}

// Start records that a request was sent to endpoint i (an index Pick
// returned); the returned Done must be finished exactly once with the
// latency to its response headers, or its failure. An index out of range
// returns the zero Done.
func (b *Balancer) Start(i int) Done {
	if i < 0 || i >= len(b.ep) {
		return Done{}
	}
	e := b.ep[i]
	e.outstanding.Add(1)
	return Done{e: e}
}

// Outstanding returns the requests in flight to endpoint i.
func (b *Balancer) Outstanding(i int) int64 {
	if i < 0 || i >= len(b.ep) {
		return 0
	}
	return b.ep[i].outstanding.Load()
}

// HashString returns a stable 64-bit hash of s (FNV-1a 64 with MurmurHash3's
// fmix64 finalizer), the same in every process, for the ConsistentHash key
// of a header or cookie value. It returns 0, meaning no key, only for "".
func HashString(s string) uint64 {
	if s == "" {
		return 0
	}
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	if h == 0 {
		h = 1
	}
	return h
}
