package graph_test

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// edge is a reported edge of web -> default/api GET path at t, with
// requests of which the given number were errors and denials, all at ms.
func edge(direction, path string, t time.Time, requests, errors, denied int64, ms float64) *apiv1.Edge {
	h := hist(ms)
	for i, c := range h {
		h[i] = c * requests
	}
	return &apiv1.Edge{Direction: direction, Source: webID, Destination: "default/api", Method: "GET", Path: path,
		Requests: requests, Errors: errors, Denied: denied, LatencyBuckets: h, Mtls: true,
		FirstSeenUnixNano: t.Add(-time.Second).UnixNano(), LastSeenUnixNano: t.UnixNano()}
}

func only(t *testing.T, es []*config.Edge) config.EdgeStatus {
	t.Helper()
	if len(es) != 1 {
		t.Fatalf("got %d edges, want 1: %+v", len(es), es)
	}
	return es[0].Status
}

// TestStoreDoubleCount: when both ends report a request, it counts once,
// by the callee's report, plus what the caller's proxy denied itself; an
// edge only the caller reports counts by its report.
func TestStoreDoubleCount(t *testing.T) {
	for _, c := range []struct {
		name                   string
		reports                []*apiv1.Edge
		requests, errs, denied int64
	}{
		{"outbound_only", []*apiv1.Edge{edge("outbound", "/a", start, 5, 1, 2, 1)}, 5, 1, 2},
		{"inbound_only", []*apiv1.Edge{edge("inbound", "/a", start, 4, 0, 1, 1)}, 4, 0, 1},
		{"both_agree", []*apiv1.Edge{edge("outbound", "/a", start, 3, 0, 0, 1), edge("inbound", "/a", start, 3, 0, 0, 1)}, 3, 0, 0},
		// 2 denied by the caller's proxy never reached the callee, which
		// denied 1 of the 3 it got.
		{"caller_denied_some", []*apiv1.Edge{edge("outbound", "/a", start, 5, 0, 2, 1), edge("inbound", "/a", start, 3, 0, 1, 1)}, 5, 0, 3},
		// The two reports of one request in two minute buckets: once.
		{"across_buckets", []*apiv1.Edge{edge("outbound", "/a", start.Add(-time.Second), 3, 0, 0, 1), edge("inbound", "/a", start, 3, 0, 0, 1)}, 3, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			fake := clock.NewFake(start)
			s := graph.NewStore(graph.StoreConfig{Clock: fake})
			for _, e := range c.reports {
				s.Add(e.GetDirection(), []*apiv1.Edge{e})
			}
			got := only(t, s.List(nil, 10*time.Minute))
			if got.Requests != c.requests || got.Errors != c.errs || got.Denied != c.denied {
				t.Errorf("requests, errors, denied: got %d, %d, %d, want %d, %d, %d", got.Requests, got.Errors, got.Denied, c.requests, c.errs, c.denied)
			}
		})
	}
}

// TestStoreView: every field of the Edge view is filled; RPS is over the
// window or since the edge was first seen.
func TestStoreView(t *testing.T) {
	fake := clock.NewFake(start)
	s := graph.NewStore(graph.StoreConfig{Clock: fake})
	e := edge("outbound", "/items/*", start, 120, 6, 0, 7)
	e.FirstSeenUnixNano = start.Add(-time.Minute).UnixNano()
	s.Add(webID, []*apiv1.Edge{e})
	fake.Advance(time.Minute)
	v := s.List(nil, 10*time.Minute)
	if len(v) != 1 {
		t.Fatalf("got %d edges, want 1", len(v))
	}
	got := v[0]
	if got.Kind != config.KindEdge || got.APIVersion != config.APIVersion || got.Metadata.Namespace != "default" ||
		got.Metadata.Name != graph.EdgeName(webID, "default/api", "GET", "/items/*") {
		t.Errorf("meta: got %+v %+v", got.TypeMeta, got.Metadata)
	}
	st := got.Status
	if st.Source != webID || st.SourceService != "shop/web" || st.Destination != "default/api" || st.Method != "GET" ||
		st.Path != "/items/*" || st.Requests != 120 || st.Errors != 6 || !st.MTLS {
		t.Errorf("status: got %+v", st)
	}
	// First seen 2 minutes ago: 120 requests over 120 s.
	if math.Abs(st.RPS-1) > 1e-9 {
		t.Errorf("rps: got %v, want 1", st.RPS)
	}
	if st.P50MS <= 5 || st.P50MS > 10 || st.P99MS <= 5 || st.P99MS > 10 {
		t.Errorf("p50, p99: got %v, %v, want in the (5, 10] bucket", st.P50MS, st.P99MS)
	}
	if st.FirstSeen != start.Add(-time.Minute).Format(time.RFC3339Nano) || st.LastSeen != start.Format(time.RFC3339Nano) {
		t.Errorf("first, last: got %s, %s", st.FirstSeen, st.LastSeen)
	}
	if got := s.List(nil, 30*time.Second); len(got) != 0 {
		t.Errorf("a window after the last request: got %d edges, want none", len(got))
	}
	if got := s.List(func(ns string) bool { return ns == "other" }, 0); len(got) != 0 {
		t.Errorf("namespace other: got %d edges, want none", len(got))
	}
	egress := edge("outbound", "/x", start, 1, 0, 0, 1)
	egress.Destination, egress.Mtls = "example.com", false
	s.Add(webID, []*apiv1.Edge{egress})
	if got := s.List(func(ns string) bool { return ns == "shop" }, 0); len(got) != 1 || got[0].Status.MTLS {
		t.Errorf("egress edge in its source's namespace: got %+v, want one without mTLS", got)
	}
}

func TestQuantile(t *testing.T) {
	bounds := telemetry.LatencyBucketsMS()
	n := len(bounds) + 1
	at := func(counts map[int]int64) []int64 {
		h := make([]int64, n)
		for i, c := range counts {
			h[i] = c
		}
		return h
	}
	for _, c := range []struct {
		name string
		hist []int64
		q    float64
		want float64
	}{
		{"empty", make([]int64, n), 0.5, 0},
		{"first_bucket_half", at(map[int]int64{0: 10}), 0.5, 0.25},
		{"interpolated", at(map[int]int64{3: 100}), 0.5, 2.5 + (5-2.5)*0.5},
		{"p99_in_tail_bucket", at(map[int]int64{0: 98, 5: 2}), 0.99, 10 + (25-10)*0.5},
		{"overflow_is_largest_bound", at(map[int]int64{n - 1: 5}), 0.5, bounds[len(bounds)-1]},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := graph.Quantile(bounds, c.hist, c.q); math.Abs(got-c.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

// TestStoreHistogramMerge: histograms of several reports add up.
func TestStoreHistogramMerge(t *testing.T) {
	fake := clock.NewFake(start)
	s := graph.NewStore(graph.StoreConfig{Clock: fake})
	for range 99 {
		s.Add(webID, []*apiv1.Edge{edge("outbound", "/a", start, 1, 0, 0, 1)})
	}
	s.Add(webID, []*apiv1.Edge{edge("outbound", "/a", start, 1, 0, 0, 3000)})
	st := only(t, s.List(nil, 0))
	if st.Requests != 100 || st.P50MS > 1 || st.P99MS > 1 {
		t.Errorf("got %d requests, p50 %v, p99 %v, want 100, both at most 1ms", st.Requests, st.P50MS, st.P99MS)
	}
	s.Add(webID, []*apiv1.Edge{edge("outbound", "/a", start, 10, 0, 0, 3000)})
	if st := only(t, s.List(nil, 0)); st.P99MS <= 2500 {
		t.Errorf("p99 after 11 slow of 110: got %v, want above 2500", st.P99MS)
	}
}

// TestStoreBounds: at most MaxEdges edges (least recently reported
// evicted first), a reporter owns at most a quarter of them, and at most
// MaxBuckets buckets are kept.
func TestStoreBounds(t *testing.T) {
	fake := clock.NewFake(start)
	s := graph.NewStore(graph.StoreConfig{Clock: fake, MaxEdges: 8})
	add := func(reporter, path string) {
		e := edge("outbound", path, fake.Now(), 1, 0, 0, 1)
		s.Add(reporter, []*apiv1.Edge{e})
	}
	for i := range 4 {
		add(fmt.Sprintf("r%d", i), fmt.Sprintf("/r%d", i))
		add(fmt.Sprintf("r%d", i), fmt.Sprintf("/r%d-b", i))
	}
	// A flooding reporter at its quota of 2 evicts its own.
	for i := range 10 {
		add("r0", fmt.Sprintf("/flood%d", i))
	}
	got := map[string]bool{}
	for _, e := range s.List(nil, 0) {
		got[e.Status.Path] = true
	}
	for _, p := range []string{"/r1", "/r1-b", "/r2", "/r3-b", "/flood9", "/flood8"} {
		if !got[p] {
			t.Errorf("edge %s was evicted; kept %v", p, got)
		}
	}
	if n, _ := s.Len(); n != 8 {
		t.Errorf("edges: got %d, want 8", n)
	}

	b := graph.NewStore(graph.StoreConfig{Clock: fake, MaxBuckets: 5})
	for i := range 8 {
		fake.Advance(time.Minute)
		b.Add("r", []*apiv1.Edge{edge("outbound", fmt.Sprintf("/b%d", i%2), fake.Now(), 1, 0, 0, 1)})
	}
	if _, n := b.Len(); n > 5 {
		t.Errorf("buckets: got %d, want at most 5", n)
	}
}

// TestStoreRetention: buckets older than an hour become hour buckets, and
// what is older than the retention is dropped with its edge.
func TestStoreRetention(t *testing.T) {
	fake := clock.NewFake(start)
	s := graph.NewStore(graph.StoreConfig{Clock: fake, Retention: 3 * time.Hour})
	for range 30 {
		s.Add("r", []*apiv1.Edge{edge("outbound", "/a", fake.Now(), 1, 0, 0, 1)})
		fake.Advance(time.Minute)
	}
	if _, n := s.Len(); n != 30 {
		t.Fatalf("buckets: got %d, want 30 (one a minute)", n)
	}
	fake.Advance(2 * time.Hour)
	s.Add("r", []*apiv1.Edge{edge("outbound", "/b", fake.Now(), 1, 0, 0, 1)}) // prunes
	if edges, n := s.Len(); edges != 2 || n > 3 {
		t.Errorf("after 2h: got %d edges, %d buckets, want 2 edges, /a's minutes merged into hours", edges, n)
	}
	if st := s.List(nil, 0); len(st) != 2 || st[0].Status.Requests != 30 {
		t.Errorf("after merge: got %+v, want /a with its 30 requests", st)
	}
	fake.Advance(2 * time.Hour)
	s.Add("r", []*apiv1.Edge{edge("outbound", "/c", fake.Now(), 1, 0, 0, 1)})
	paths := func() []string {
		var out []string
		for _, e := range s.List(nil, 0) {
			out = append(out, e.Status.Path)
		}
		return out
	}
	if got := paths(); !slices.Equal(got, []string{"/b", "/c"}) {
		t.Errorf("after the retention: got %v, want /a dropped", got)
	}
	// A report of requests older than the retention is not kept.
	s.Add("r", []*apiv1.Edge{edge("outbound", "/old", fake.Now().Add(-4*time.Hour), 1, 0, 0, 1)})
	if got := paths(); !slices.Equal(got, []string{"/b", "/c"}) {
		t.Errorf("old report: got %v, want /old not kept", got)
	}
}

// TestStoreBucketQuota: a reporter flooding time buckets (many paths, each
// at many minutes) evicts its own oldest buckets, never another reporter's
// edge; at the global bound, the reporter holding the most buckets loses
// its oldest.
func TestStoreBucketQuota(t *testing.T) {
	t.Run("one_flooder", func(t *testing.T) {
		fake := clock.NewFake(start)
		s := graph.NewStore(graph.StoreConfig{Clock: fake})
		s.Add("x", []*apiv1.Edge{edge("outbound", "/legit", start, 7, 0, 0, 1)})
		// 2,500 paths (the edge quota) x 100 minutes: 155,000 buckets made.
		for m := range 100 {
			at := start.Add(-time.Duration(m) * time.Minute)
			for p := 0; p < 2500; p += 500 {
				batch := make([]*apiv1.Edge, 0, 500)
				for i := p; i < p+500; i++ {
					batch = append(batch, edge("outbound", fmt.Sprintf("/flood/%d", i), at, 1, 0, 0, 1))
				}
				s.Add("r", batch)
			}
		}
		kept := false
		for _, e := range s.List(nil, 0) {
			if e.Status.Path == "/legit" {
				kept = e.Status.Requests == 7
			}
		}
		if !kept {
			t.Errorf("the other reporter's edge /legit was evicted by the flood")
		}
		if _, n := s.Len(); n > graph.DefaultMaxBuckets/4+1 {
			t.Errorf("buckets: got %d, want at most the flooder's quota %d and /legit's one", n, graph.DefaultMaxBuckets/4)
		}
	})
	t.Run("own_oldest_first", func(t *testing.T) {
		fake := clock.NewFake(start)
		s := graph.NewStore(graph.StoreConfig{Clock: fake, MaxBuckets: 8}) // quota 2
		for m := range 3 {
			s.Add("r", []*apiv1.Edge{edge("outbound", "/a", fake.Now(), 1, 0, 0, 1)})
			if m < 2 {
				fake.Advance(time.Minute)
			}
		}
		if got := only(t, s.List(nil, 0)); got.Requests != 2 {
			t.Errorf("requests: got %d, want 2 (the oldest of 3 buckets dropped)", got.Requests)
		}
		if _, n := s.Len(); n != 2 {
			t.Errorf("buckets: got %d, want 2", n)
		}
	})
	t.Run("many_flooders", func(t *testing.T) {
		fake := clock.NewFake(start)
		s := graph.NewStore(graph.StoreConfig{Clock: fake, MaxBuckets: 40}) // quota 10
		s.Add("x", []*apiv1.Edge{edge("outbound", "/legit", start, 1, 0, 0, 1)})
		for r := range 6 {
			for i := range 12 {
				s.Add(fmt.Sprintf("r%d", r), []*apiv1.Edge{edge("outbound", fmt.Sprintf("/r%d/%d", r, i), start, 1, 0, 0, 1)})
			}
		}
		found := false
		for _, e := range s.List(nil, 0) {
			found = found || e.Status.Path == "/legit"
		}
		if !found {
			t.Errorf("the other reporter's edge /legit was evicted at the global bound")
		}
		if edges, n := s.Len(); n > 40 || edges != n {
			t.Errorf("got %d edges, %d buckets, want at most 40 buckets, one per edge", edges, n)
		}
	})
}
