package graph

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Bounds of a Recorder.
const (
	// DefaultMaxKinds is how many kinds of request a Recorder holds between
	// reports before it folds new ones into FoldedPath.
	DefaultMaxKinds = 1000
	// DefaultMaxFolded is how many folded kinds (one per direction, source,
	// destination and method) it holds beyond MaxKinds; requests of further
	// kinds are dropped and counted.
	DefaultMaxFolded = 100
	// DefaultMaxAuthFailures is how many kinds of authentication failure
	// (address, source, reason) it holds between reports.
	DefaultMaxAuthFailures = 256
	// MaxMethod, MaxSource and MaxDestination bound what an Edge carries
	// (the control plane refuses longer ones); longer values are cut.
	MaxMethod      = 32
	MaxSource      = 2048
	MaxDestination = 253
)

// Reasons of an authentication failure on the inbound listener, the reason
// field of apiv1.AuthFailure.
const (
	// ReasonTLSHandshake: the TLS handshake failed for another reason
	// (not TLS 1.3, no h2, a malformed hello).
	ReasonTLSHandshake = "tls_handshake"
	// ReasonNoSVID: the peer presented no certificate.
	ReasonNoSVID = "no_svid"
	// ReasonUntrustedSVID: the peer's certificate does not chain to the
	// trust bundle, or is not a workload SVID of the trust domain.
	ReasonUntrustedSVID = "untrusted_svid"
	// ReasonRevoked: the peer's SVID is revoked.
	ReasonRevoked = "revoked"
	// ReasonPeerUnverified: the peer's SVID expired on a connection that
	// outlived it.
	ReasonPeerUnverified = "peer_unverified"
	// ReasonUnauthenticated: a JWT was required and missing or invalid.
	ReasonUnauthenticated = "unauthenticated"
)

// AuthFailureReasons returns every reason an AuthFailure may carry.
func AuthFailureReasons() []string {
	return []string{ReasonTLSHandshake, ReasonNoSVID, ReasonUntrustedSVID, ReasonRevoked, ReasonPeerUnverified, ReasonUnauthenticated}
}

// Observation is one finished request, as the proxy engine saw it. It
// holds no query and no header value.
type Observation struct {
	// Direction is telemetry.DirectionInbound or DirectionOutbound.
	Direction string
	// Source is the caller's SPIFFE ID; Destination the called service,
	// "namespace/name", or an egress host.
	Source, Destination string
	Method              string
	// Path is the normalized path without the query ("" for a tunnel);
	// Record templates it.
	Path string
	// Status is the HTTP status answered.
	Status int
	// Denied says the engine denied the request (401 or 403);
	// DryRunDenied that a dryRun policy would have.
	Denied, DryRunDenied bool
	// MTLS says the request came (inbound) or went (outbound) over mTLS
	// with a verified SVID.
	MTLS bool
	// Latency is how long the request took, from its headers to its answer.
	Latency time.Duration
}

// EdgeKey is what makes two requests one kind of request.
type EdgeKey struct {
	Direction, Source, Destination, Method, Path string
}

// edgeStats is what a Recorder holds of one kind of request.
type edgeStats struct {
	requests, errors, denied, dryRunDenied int64
	buckets                                []int64
	mtls                                   bool
	first, last                            time.Time
}

// AuthKey is what makes two authentication failures one kind.
type AuthKey struct {
	Address, Source, Reason string
}

type authStats struct {
	count       int64
	first, last time.Time
}

// Recorder aggregates observations and authentication failures between
// reports. It is safe for concurrent use, never blocks on anything but its
// own short lock, and holds at most MaxKinds kinds of request: a request of
// a new kind beyond that is counted in the kind (direction, source,
// destination, method, FoldedPath), of which at most MaxFolded more are
// held; requests of further kinds are dropped (Dropped counts them, Folded
// the folded ones). At most MaxAuthFailures kinds of authentication failure
// are held; further ones are dropped and counted in DroppedAuthFailures.
type Recorder struct {
	clock   clock.Clock
	bounds  []float64
	maxKind int
	maxFold int
	maxAuth int

	mu      sync.Mutex
	edges   map[EdgeKey]*edgeStats
	folded  int
	auth    map[AuthKey]*authStats
	dropped atomic.Int64
	folds   atomic.Int64
	authOut atomic.Int64
}

// RecorderConfig configures a Recorder. Zero values take the defaults.
type RecorderConfig struct {
	// Clock stamps first and last seen times. Default: the wall clock.
	Clock clock.Clock
	// MaxKinds, MaxFolded and MaxAuthFailures bound what is held. Default:
	// DefaultMaxKinds, DefaultMaxFolded, DefaultMaxAuthFailures.
	MaxKinds, MaxFolded, MaxAuthFailures int
}

// NewRecorder returns an empty Recorder.
func NewRecorder(cfg RecorderConfig) *Recorder {
	r := &Recorder{
		clock: clock.OrReal(cfg.Clock), bounds: telemetry.LatencyBucketsMS(),
		maxKind: cfg.MaxKinds, maxFold: cfg.MaxFolded, maxAuth: cfg.MaxAuthFailures,
		edges: map[EdgeKey]*edgeStats{}, auth: map[AuthKey]*authStats{},
	}
	if r.maxKind <= 0 {
		r.maxKind = DefaultMaxKinds
	}
	if r.maxFold <= 0 {
		r.maxFold = DefaultMaxFolded
	}
	if r.maxAuth <= 0 {
		r.maxAuth = DefaultMaxAuthFailures
	}
	return r
}

// Record counts one finished request. Observations the control plane
// would refuse are ignored: without a source, a method or a destination, a
// destination that is neither namespace/name nor a lower-case host (an
// app's malformed Host), or a request refused before its path was read
// (only a tunnel has no path).
func (r *Recorder) Record(o Observation) {
	if o.Source == "" || o.Method == "" || !validDestination(o.Destination) || o.Path == "" && o.Method != "CONNECT" {
		return
	}
	k := EdgeKey{
		Direction: o.Direction, Source: cut(o.Source, MaxSource), Destination: o.Destination,
		Method: cut(o.Method, MaxMethod), Path: Template(o.Path),
	}
	b := bucketOf(r.bounds, float64(o.Latency)/float64(time.Millisecond))
	now := r.clock.Now()
	r.mu.Lock()
	s := r.edges[k]
	if s == nil {
		if s = r.newKindLocked(&k, o.MTLS, now); s == nil {
			r.mu.Unlock()
			r.dropped.Add(1)
			return
		}
	}
	s.requests++
	if o.Status >= 500 {
		s.errors++
	}
	if o.Denied {
		s.denied++
	}
	if o.DryRunDenied {
		s.dryRunDenied++
	}
	s.buckets[b]++
	s.mtls = s.mtls && o.MTLS
	s.last = now
	r.mu.Unlock()
}

// validDestination reports whether d can be an edge's destination:
// "namespace/name" or a host[:port], lower case.
func validDestination(d string) bool {
	if d == "" || len(d) > MaxDestination {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':' || c == '_' || c == '/') {
			return false
		}
	}
	return true
}

// newKindLocked adds the kind k (folded into FoldedPath when the bound is
// reached, and then k is changed), or returns nil when it cannot be held.
// r.mu is held.
func (r *Recorder) newKindLocked(k *EdgeKey, mtls bool, now time.Time) *edgeStats {
	if len(r.edges)-r.folded >= r.maxKind {
		k.Path = FoldedPath
		if s := r.edges[*k]; s != nil {
			r.folds.Add(1)
			return s
		}
		if r.folded >= r.maxFold {
			return nil
		}
		r.folded++
		r.folds.Add(1)
	}
	s := &edgeStats{buckets: make([]int64, len(r.bounds)+1), mtls: mtls, first: now, last: now}
	r.edges[*k] = s
	return s
}

// bucketOf returns the index of the histogram bucket of ms: the first
// bound it does not exceed, or len(bounds) for larger values.
func bucketOf(bounds []float64, ms float64) int {
	for i, b := range bounds {
		if ms <= b {
			return i
		}
	}
	return len(bounds)
}

// RecordAuthFailure counts one failed authentication on the inbound
// listener from addr (an IP address; a port is dropped) with the peer's
// SPIFFE ID when it presented one ("" else) and one of the fixed reasons.
func (r *Recorder) RecordAuthFailure(addr, source, reason string) {
	ip := remoteIP(addr)
	if !ip.IsValid() {
		return
	}
	k := AuthKey{Address: ip.String(), Source: cut(source, MaxSource), Reason: reason}
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.auth[k]
	if s == nil {
		if len(r.auth) >= r.maxAuth {
			r.authOut.Add(1)
			return
		}
		s = &authStats{first: now}
		r.auth[k] = s
	}
	s.count++
	s.last = now
}

// remoteIP parses an address with or without a port, IPv4-mapped IPv6
// addresses unmapped.
func remoteIP(addr string) netip.Addr {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

// Dropped returns how many requests were never aggregated: too many kinds,
// or given back without room.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Folded returns how many requests were counted in a folded kind
// (FoldedPath) because MaxKinds kinds were held.
func (r *Recorder) Folded() int64 { return r.folds.Load() }

// DroppedAuthFailures returns how many authentication failures were
// dropped: too many kinds.
func (r *Recorder) DroppedAuthFailures() int64 { return r.authOut.Load() }

// Pending reports whether anything is held.
func (r *Recorder) Pending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.edges) > 0 || len(r.auth) > 0
}

// Take empties the Recorder and returns what it held, in a stable order.
func (r *Recorder) Take() ([]*apiv1.Edge, []*apiv1.AuthFailure) {
	r.mu.Lock()
	edges, auth := r.edges, r.auth
	r.edges, r.auth, r.folded = make(map[EdgeKey]*edgeStats, len(edges)), make(map[AuthKey]*authStats, len(auth)), 0
	r.mu.Unlock()

	outE := make([]*apiv1.Edge, 0, len(edges))
	for k, s := range edges {
		outE = append(outE, &apiv1.Edge{
			Direction: k.Direction, Source: k.Source, Destination: k.Destination, Method: k.Method, Path: k.Path,
			Requests: s.requests, Errors: s.errors, Denied: s.denied, DryRunDenied: s.dryRunDenied,
			LatencyBuckets: s.buckets, Mtls: s.mtls,
			FirstSeenUnixNano: s.first.UnixNano(), LastSeenUnixNano: s.last.UnixNano(),
		})
	}
	slices.SortFunc(outE, func(a, b *apiv1.Edge) int { return compareEdge(a, b) })
	outA := make([]*apiv1.AuthFailure, 0, len(auth))
	for k, s := range auth {
		outA = append(outA, &apiv1.AuthFailure{
			Address: k.Address, Source: k.Source, Reason: k.Reason, Count: s.count,
			FirstSeenUnixNano: s.first.UnixNano(), LastSeenUnixNano: s.last.UnixNano(),
		})
	}
	slices.SortFunc(outA, func(a, b *apiv1.AuthFailure) int {
		return compareStrings(a.GetAddress(), b.GetAddress(), a.GetReason(), b.GetReason(), a.GetSource(), b.GetSource())
	})
	return outE, outA
}

func compareEdge(a, b *apiv1.Edge) int {
	return compareStrings(a.GetDirection(), b.GetDirection(), a.GetSource(), b.GetSource(), a.GetDestination(), b.GetDestination(),
		a.GetMethod(), b.GetMethod(), a.GetPath(), b.GetPath())
}

// compareStrings compares pairs in order: a0 with b0, then a1 with b1...
func compareStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] < pairs[i+1] {
			return -1
		}
		if pairs[i] > pairs[i+1] {
			return 1
		}
	}
	return 0
}

// GiveBack merges edges and failures that could not be reported back into
// the Recorder, within its bounds (what does not fit is dropped and
// counted).
func (r *Recorder) GiveBack(edges []*apiv1.Edge, auth []*apiv1.AuthFailure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range edges {
		k := EdgeKey{Direction: e.GetDirection(), Source: e.GetSource(), Destination: e.GetDestination(), Method: e.GetMethod(), Path: e.GetPath()}
		first, last := time.Unix(0, e.GetFirstSeenUnixNano()), time.Unix(0, e.GetLastSeenUnixNano())
		s := r.edges[k]
		if s == nil {
			if s = r.newKindLocked(&k, e.GetMtls(), first); s == nil {
				r.dropped.Add(e.GetRequests())
				continue
			}
		}
		s.requests += e.GetRequests()
		s.errors += e.GetErrors()
		s.denied += e.GetDenied()
		s.dryRunDenied += e.GetDryRunDenied()
		for i, n := range e.GetLatencyBuckets() {
			if i < len(s.buckets) {
				s.buckets[i] += n
			}
		}
		s.mtls = s.mtls && e.GetMtls()
		if first.Before(s.first) {
			s.first = first
		}
		if last.After(s.last) {
			s.last = last
		}
	}
	for _, a := range auth {
		k := AuthKey{Address: a.GetAddress(), Source: a.GetSource(), Reason: a.GetReason()}
		first, last := time.Unix(0, a.GetFirstSeenUnixNano()), time.Unix(0, a.GetLastSeenUnixNano())
		s := r.auth[k]
		if s == nil {
			if len(r.auth) >= r.maxAuth {
				r.authOut.Add(a.GetCount())
				continue
			}
			s = &authStats{first: first, last: last}
			r.auth[k] = s
		}
		s.count += a.GetCount()
		if first.Before(s.first) {
			s.first = first
		}
		if last.After(s.last) {
			s.last = last
		}
	}
}
