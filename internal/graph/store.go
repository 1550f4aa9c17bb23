package graph

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Defaults of a Store.
const (
	// DefaultMaxEdges is how many edges a Store keeps.
	DefaultMaxEdges = 10000
	// DefaultMaxBuckets is how many time buckets it keeps over all edges.
	DefaultMaxBuckets = 100000
	// DefaultRetention is how long it keeps what was reported.
	DefaultRetention = 24 * time.Hour
	// minuteFor is how long buckets stay one minute wide; older ones are
	// merged into hour-wide buckets.
	minuteFor = time.Hour
	// maxCount bounds every counter, so that sums cannot overflow.
	maxCount = 1 << 40
)

// StoreConfig configures a Store. Zero values take the defaults.
type StoreConfig struct {
	// Clock tells the time of queries and retention. Default: the wall clock.
	Clock clock.Clock
	// MaxEdges bounds the edges kept (default DefaultMaxEdges) and
	// MaxBuckets their time buckets (default DefaultMaxBuckets). Each
	// reporter owns at most a quarter of MaxEdges (the edges it reported
	// first) and a quarter of MaxBuckets (the buckets it made): a reporter
	// at its edge quota evicts its own least recently reported edge, one at
	// its bucket quota its own oldest bucket (and an edge left without
	// buckets). Only beyond MaxEdges are the least recently reported edges
	// evicted whoever reported them, and beyond MaxBuckets the oldest
	// buckets of the reporter holding the most.
	MaxEdges, MaxBuckets int
	// Retention is how long reported requests are kept. Default:
	// DefaultRetention.
	Retention time.Duration
}

// side is what one end (the caller's or the callee's proxy) reported of an
// edge in one bucket.
type side struct {
	reported                               bool
	requests, errors, denied, dryRunDenied int64
	hist                                   []int64
}

func (s *side) add(e *apiv1.Edge, n int) {
	s.reported = true
	s.requests = min(s.requests+e.GetRequests(), maxCount)
	s.errors = min(s.errors+e.GetErrors(), maxCount)
	s.denied = min(s.denied+e.GetDenied(), maxCount)
	s.dryRunDenied = min(s.dryRunDenied+e.GetDryRunDenied(), maxCount)
	if s.hist == nil {
		s.hist = make([]int64, n)
	}
	for i, c := range e.GetLatencyBuckets() {
		if i < n {
			s.hist[i] = min(s.hist[i]+c, maxCount)
		}
	}
}

func (s *side) merge(o *side, n int) {
	if !o.reported {
		return
	}
	s.reported = true
	s.requests = min(s.requests+o.requests, maxCount)
	s.errors = min(s.errors+o.errors, maxCount)
	s.denied = min(s.denied+o.denied, maxCount)
	s.dryRunDenied = min(s.dryRunDenied+o.dryRunDenied, maxCount)
	if s.hist == nil {
		s.hist = make([]int64, n)
	}
	for i, c := range o.hist {
		s.hist[i] = min(s.hist[i]+c, maxCount)
	}
}

// bucket is an edge's requests reported with a last-seen time in
// [start, start+width).
type bucket struct {
	start   time.Time
	width   time.Duration
	in, out side
	// edge is the edge of the bucket, by the reporter that made it, and
	// elem its element in by.buckets.
	edge *storedEdge
	by   *reporterState
	elem *list.Element
}

// reporterState is what one reporter holds in a Store: the edges it
// reported first and the buckets it made.
type reporterState struct {
	name  string
	edges int
	// buckets holds the reporter's buckets, oldest made first.
	buckets list.List
}

type storeKey struct {
	source, destination, method, path string
}

type storedEdge struct {
	key         storeKey
	first, last time.Time
	mtls        bool
	buckets     []*bucket
	owner       string
	elem        *list.Element
}

// Store is the control plane's service graph: the edges proxies report,
// kept in memory only (they do not survive a restart), in one-minute
// buckets for the last hour and one-hour buckets before that, for
// Retention. An edge's requests reported in one report land in the bucket
// of their last-seen time.
//
// Both ends of a mesh request report it: the caller's proxy as outbound,
// the callee's as inbound. Counting both would double every request, so
// the inbound report wins: when the callee's proxy reported the edge within
// the asked window, requests, errors, denials and dry-run denials are the
// callee's, plus the requests the caller's own proxy denied (they never
// reached the callee). Otherwise (an egress destination, a callee without a
// sidecar) they are the caller's. The rule is applied to the whole window,
// not per bucket, so that the two reports of one request landing in two
// buckets are not both counted. Latency is the caller's histogram when it
// reported one (it includes the network and the callee's proxy), else the
// callee's.
//
// It is safe for concurrent use.
type Store struct {
	clock                clock.Clock
	bounds               []float64
	maxEdges, maxBuckets int
	// perReporter and perReporterBuckets are a reporter's quotas of edges
	// and buckets.
	perReporter, perReporterBuckets int
	retention                       time.Duration
	mu                              sync.Mutex
	edges                           map[storeKey]*storedEdge
	order                           *list.List // most recently reported first
	reporters                       map[string]*reporterState
	nbuckets                        int
	pruned                          time.Time
}

// NewStore returns an empty Store.
func NewStore(cfg StoreConfig) *Store {
	s := &Store{
		clock: clock.OrReal(cfg.Clock), bounds: telemetry.LatencyBucketsMS(),
		maxEdges: cfg.MaxEdges, maxBuckets: cfg.MaxBuckets, retention: cfg.Retention,
		edges: map[storeKey]*storedEdge{}, order: list.New(), reporters: map[string]*reporterState{},
	}
	if s.maxEdges <= 0 {
		s.maxEdges = DefaultMaxEdges
	}
	if s.maxBuckets <= 0 {
		s.maxBuckets = DefaultMaxBuckets
	}
	if s.retention <= 0 {
		s.retention = DefaultRetention
	}
	s.perReporter = max(1, s.maxEdges/4)
	s.perReporterBuckets = max(1, s.maxBuckets/4)
	return s
}

// Add folds validated edges reported by reporter (a SPIFFE ID) into the
// graph. Its cost is that of the edges' map lookups, plus, only when a
// bound is reached, an eviction (a scan of the edges for a reporter at its
// edge quota, of the reporters at the global bucket bound).
func (s *Store) Add(reporter string, edges []*apiv1.Edge) {
	now := s.clock.Now()
	n := len(s.bounds) + 1
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.pruned) >= time.Minute {
		s.pruneLocked(now)
	}
	for _, e := range edges {
		k := storeKey{source: e.GetSource(), destination: e.GetDestination(), method: e.GetMethod(), path: e.GetPath()}
		first, last := time.Unix(0, e.GetFirstSeenUnixNano()), time.Unix(0, e.GetLastSeenUnixNano())
		if last.After(now) {
			last = now
		}
		if first.After(last) {
			first = last
		}
		if now.Sub(last) >= s.retention {
			continue
		}
		se := s.edges[k]
		if se == nil {
			switch {
			case s.reporters[reporter] != nil && s.reporters[reporter].edges >= s.perReporter:
				s.evictLocked(s.oldestOf(reporter))
			case s.order.Len() >= s.maxEdges:
				s.evictLocked(s.order.Back().Value.(*storedEdge))
			}
			se = &storedEdge{key: k, first: first, last: last, mtls: e.GetMtls(), owner: reporter}
			se.elem = s.order.PushFront(se)
			s.edges[k] = se
			s.reporterLocked(reporter).edges++
		} else {
			s.order.MoveToFront(se.elem)
			se.mtls = se.mtls && e.GetMtls()
			if first.Before(se.first) {
				se.first = first
			}
			if last.After(se.last) {
				se.last = last
			}
		}
		b := s.bucketLocked(se, reporter, last, now)
		if e.GetDirection() == telemetry.DirectionInbound {
			b.in.add(e, n)
		} else {
			b.out.add(e, n)
		}
	}
	// The last resort: the oldest buckets of the reporter holding the most.
	for s.nbuckets > s.maxBuckets {
		var big *reporterState
		for _, r := range s.reporters {
			if big == nil || r.buckets.Len() > big.buckets.Len() {
				big = r
			}
		}
		if big == nil || big.buckets.Len() == 0 {
			break
		}
		for over := s.nbuckets - s.maxBuckets; over > 0 && big.buckets.Len() > 0; over-- {
			s.dropOldestBucketLocked(big, nil)
		}
	}
}

// reporterLocked returns the state of reporter, made if needed. s.mu is
// held.
func (s *Store) reporterLocked(reporter string) *reporterState {
	r := s.reporters[reporter]
	if r == nil {
		r = &reporterState{name: reporter}
		s.reporters[reporter] = r
	}
	return r
}

// forgetIdleLocked forgets r when it holds nothing. s.mu is held.
func (s *Store) forgetIdleLocked(r *reporterState) {
	if r.edges <= 0 && r.buckets.Len() == 0 {
		delete(s.reporters, r.name)
	}
}

// findBucket returns the bucket of se holding t, or nil and the index
// where a bucket starting before t's next one is inserted.
func findBucket(se *storedEdge, t time.Time) (*bucket, int) {
	// Buckets are sorted by start; reports usually add to the newest.
	i := len(se.buckets)
	for ; i > 0; i-- {
		if b := se.buckets[i-1]; !t.Before(b.start) {
			if t.Before(b.start.Add(b.width)) {
				return b, i
			}
			break
		}
	}
	return nil, i
}

// bucketLocked returns the bucket of se for time t, made for reporter if
// needed: a reporter at its bucket quota first loses its oldest bucket.
// s.mu is held.
func (s *Store) bucketLocked(se *storedEdge, reporter string, t, now time.Time) *bucket {
	b, i := findBucket(se, t)
	if b != nil {
		return b
	}
	if r := s.reporters[reporter]; r != nil && r.buckets.Len() >= s.perReporterBuckets {
		s.dropOldestBucketLocked(r, se)
		_, i = findBucket(se, t)
	}
	start, width := t.Truncate(time.Minute), time.Minute
	if now.Sub(t) >= minuteFor {
		start, width = t.Truncate(time.Hour), time.Hour
	}
	r := s.reporterLocked(reporter)
	b = &bucket{start: start, width: width, edge: se, by: r}
	b.elem = r.buckets.PushBack(b)
	se.buckets = slices.Insert(se.buckets, i, b)
	s.nbuckets++
	return b
}

// dropOldestBucketLocked removes the oldest bucket r made, and its edge
// when that leaves it without buckets, unless it is keep (the edge being
// added to). s.mu is held.
func (s *Store) dropOldestBucketLocked(r *reporterState, keep *storedEdge) {
	front := r.buckets.Front()
	if front == nil {
		return
	}
	b := front.Value.(*bucket)
	se := b.edge
	if i := slices.Index(se.buckets, b); i >= 0 {
		se.buckets = slices.Delete(se.buckets, i, i+1)
	}
	s.releaseLocked(b)
	if len(se.buckets) == 0 && se != keep {
		s.evictLocked(se)
	}
}

// releaseLocked uncounts b, removed from its edge. s.mu is held.
func (s *Store) releaseLocked(b *bucket) {
	b.by.buckets.Remove(b.elem)
	s.nbuckets--
	s.forgetIdleLocked(b.by)
}

// oldestOf returns the least recently reported edge owned by reporter.
func (s *Store) oldestOf(reporter string) *storedEdge {
	for el := s.order.Back(); el != nil; el = el.Prev() {
		if e := el.Value.(*storedEdge); e.owner == reporter {
			return e
		}
	}
	return nil
}

// evictLocked removes se. s.mu is held.
func (s *Store) evictLocked(se *storedEdge) {
	if se == nil {
		return
	}
	delete(s.edges, se.key)
	s.order.Remove(se.elem)
	for _, b := range se.buckets {
		s.releaseLocked(b)
	}
	se.buckets = nil
	if r := s.reporters[se.owner]; r != nil {
		r.edges--
		s.forgetIdleLocked(r)
	}
}

// pruneLocked drops the buckets older than the retention, merges minute
// buckets older than an hour into hour buckets, and drops edges left
// without buckets. s.mu is held.
func (s *Store) pruneLocked(now time.Time) {
	s.pruned = now
	n := len(s.bounds) + 1
	var empty []*storedEdge
	for _, se := range s.edges {
		var kept []*bucket
		for _, b := range se.buckets {
			end := b.start.Add(b.width)
			if now.Sub(end) >= s.retention {
				s.releaseLocked(b)
				continue
			}
			if b.width == time.Minute && now.Sub(end) >= minuteFor {
				hour := b.start.Truncate(time.Hour)
				if l := len(kept); l > 0 && kept[l-1].width == time.Hour && kept[l-1].start.Equal(hour) {
					kept[l-1].in.merge(&b.in, n)
					kept[l-1].out.merge(&b.out, n)
					s.releaseLocked(b)
					continue
				}
				b.start, b.width = hour, time.Hour
			}
			kept = append(kept, b)
		}
		se.buckets = kept
		if len(kept) == 0 {
			empty = append(empty, se)
		}
	}
	for _, se := range empty {
		s.evictLocked(se)
	}
}

// Len returns how many edges and buckets the Store holds.
func (s *Store) Len() (edges, buckets int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.edges), s.nbuckets
}

// List returns the edges with requests reported in the last within (0:
// the whole retention) whose namespace include accepts (nil: every
// namespace), sorted by destination, source, method and path. An edge's
// namespace is its destination's, or for an egress host its source's.
func (s *Store) List(include func(namespace string) bool, within time.Duration) []*config.Edge {
	now := s.clock.Now()
	if within <= 0 || within > s.retention {
		within = s.retention
	}
	from := now.Add(-within)
	n := len(s.bounds) + 1
	type picked struct {
		key         storeKey
		first, last time.Time
		mtls        bool
		total       side // summed over the window, by the rule above
		hist        []int64
	}
	var out []*config.Edge
	s.mu.Lock()
	var rows []picked
	for _, se := range s.edges {
		if se.last.Before(from) {
			continue
		}
		ns := edgeNamespace(se.key)
		if include != nil && !include(ns) {
			continue
		}
		p := picked{key: se.key, first: se.first, last: se.last, mtls: se.mtls}
		var in, out side
		any := false
		for _, b := range se.buckets {
			if !b.start.Add(b.width).After(from) {
				continue
			}
			any = true
			in.merge(&b.in, n)
			out.merge(&b.out, n)
		}
		p.total, p.hist = countRule(&in, &out), out.hist
		if !out.reported {
			p.hist = in.hist
		}
		if any {
			rows = append(rows, p)
		}
	}
	s.mu.Unlock()
	for _, p := range rows {
		span := now.Sub(from)
		if p.first.After(from) {
			span = now.Sub(p.first)
		}
		span = max(span, time.Second)
		e := &config.Edge{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindEdge},
			Metadata: config.ObjectMeta{Name: EdgeName(p.key.source, p.key.destination, p.key.method, p.key.path), Namespace: edgeNamespace(p.key)},
			Status: config.EdgeStatus{
				Source: p.key.source, SourceService: sourceService(p.key.source), Destination: p.key.destination,
				Method: p.key.method, Path: p.key.path,
				Requests: p.total.requests, Errors: p.total.errors, Denied: p.total.denied, DryRunDenied: p.total.dryRunDenied,
				RPS:   float64(p.total.requests) / span.Seconds(),
				P50MS: Quantile(s.bounds, p.hist, 0.5), P99MS: Quantile(s.bounds, p.hist, 0.99),
				MTLS:      p.mtls,
				FirstSeen: p.first.UTC().Format(time.RFC3339Nano), LastSeen: p.last.UTC().Format(time.RFC3339Nano),
			},
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *config.Edge) int {
		x, y := &a.Status, &b.Status
		return compareStrings(x.Destination, y.Destination, x.Source, y.Source, x.Method, y.Method, x.Path, y.Path)
	})
	return out
}

// countRule returns the counts of an edge over a window from what the
// callee's proxy (in) and the caller's (out) reported: the callee's when it
// reported any, plus the requests the caller's proxy denied itself (they
// never reached the callee); else the caller's.
func countRule(in, out *side) side {
	if !in.reported {
		return side{reported: out.reported, requests: out.requests, errors: out.errors, denied: out.denied, dryRunDenied: out.dryRunDenied}
	}
	c := side{reported: true, requests: in.requests, errors: in.errors, denied: in.denied, dryRunDenied: in.dryRunDenied}
	if out.reported {
		c.requests = min(c.requests+out.denied, maxCount)
		c.denied = min(c.denied+out.denied, maxCount)
	}
	return c
}

// Quantile estimates the q-quantile (0 < q < 1) in milliseconds of a
// latency histogram over bounds (hist has one more bucket, for larger
// values), interpolating linearly within the bucket it falls in, as
// Prometheus' histogram_quantile does: a quantile in the last bucket is
// its lower bound, the largest bound. 0 for an empty histogram.
func Quantile(bounds []float64, hist []int64, q float64) float64 {
	var total int64
	for _, c := range hist {
		total += c
	}
	if total == 0 || len(bounds) == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum int64
	for i, c := range hist {
		if c == 0 {
			cum += c
			continue
		}
		if float64(cum+c) >= rank {
			if i >= len(bounds) {
				return bounds[len(bounds)-1]
			}
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			return lo + (bounds[i]-lo)*(rank-float64(cum))/float64(c)
		}
		cum += c
	}
	return bounds[len(bounds)-1]
}

// EdgeName is the stable name of an edge: "e-" and 12 hex digits of a
// digest of its source, destination, method and path (a valid resource
// name).
func EdgeName(source, destination, method, path string) string {
	h := sha256.New()
	for _, s := range []string{source, destination, method, path} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "e-" + hex.EncodeToString(h.Sum(nil)[:6])
}

// edgeNamespace is the namespace an edge is listed in: its destination's
// ("namespace/name"), or for an egress host, its source's.
func edgeNamespace(k storeKey) string {
	if ref, err := identity.ParseServiceRef(k.destination, ""); err == nil && ref.String() == k.destination {
		return ref.Namespace
	}
	if w, ok := workload(k.source); ok {
		return w.Namespace
	}
	return ""
}

// sourceService is "namespace/account" of a workload SPIFFE ID: outside
// Kubernetes an account is its service's name. "" for other IDs.
func sourceService(source string) string {
	if w, ok := workload(source); ok {
		return w.Namespace + "/" + w.Account
	}
	return ""
}

func workload(source string) (identity.Workload, bool) {
	if !strings.HasPrefix(source, "spiffe://") {
		return identity.Workload{}, false
	}
	id, err := spiffeid.FromString(source)
	if err != nil {
		return identity.Workload{}, false
	}
	w, err := identity.ParseWorkloadID(id)
	return w, err == nil
}
