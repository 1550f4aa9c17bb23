package graph_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

var start = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

const (
	webID = "spiffe://bulwark.test/ns/shop/sa/web"
	apiID = "spiffe://bulwark.test/ns/default/sa/api"
)

func obs(path string, status int, latency time.Duration) graph.Observation {
	return graph.Observation{Direction: "outbound", Source: webID, Destination: "default/api", Method: "GET",
		Path: path, Status: status, MTLS: true, Latency: latency}
}

// hist returns a histogram with counts at the buckets of the given
// latencies in milliseconds.
func hist(ms ...float64) []int64 {
	bounds := telemetry.LatencyBucketsMS()
	h := make([]int64, len(bounds)+1)
	for _, v := range ms {
		i := 0
		for i < len(bounds) && v > bounds[i] {
			i++
		}
		h[i]++
	}
	return h
}

// TestRecorderAggregates: requests of one kind (path template included)
// are one edge with counts, a histogram and first/last times; Take empties
// the recorder.
func TestRecorderAggregates(t *testing.T) {
	fake := clock.NewFake(start)
	r := graph.NewRecorder(graph.RecorderConfig{Clock: fake})
	r.Record(obs("/items/1", 200, 3*time.Millisecond))
	fake.Advance(time.Second)
	r.Record(obs("/items/2", 503, 30*time.Millisecond))
	d := obs("/items/3", 403, 200*time.Microsecond)
	d.Denied, d.DryRunDenied = true, true
	r.Record(d)
	plain := obs("/x", 200, time.Minute)
	plain.Destination, plain.MTLS = "example.com", false
	r.Record(plain)
	r.Record(graph.Observation{Direction: "outbound", Destination: "default/api", Method: "GET", Path: "/no-source"})
	badHost := obs("/x", 400, time.Millisecond)
	badHost.Destination = "API.Default"
	r.Record(badHost)
	noPath := obs("", 400, time.Millisecond)
	r.Record(noPath)

	edges, auth := r.Take()
	want := []*apiv1.Edge{
		{Direction: "outbound", Source: webID, Destination: "default/api", Method: "GET", Path: "/items/*",
			Requests: 3, Errors: 1, Denied: 1, DryRunDenied: 1, LatencyBuckets: hist(3, 30, 0.2), Mtls: true,
			FirstSeenUnixNano: start.UnixNano(), LastSeenUnixNano: start.Add(time.Second).UnixNano()},
		{Direction: "outbound", Source: webID, Destination: "example.com", Method: "GET", Path: "/x",
			Requests: 1, LatencyBuckets: hist(60000), FirstSeenUnixNano: start.Add(time.Second).UnixNano(), LastSeenUnixNano: start.Add(time.Second).UnixNano()},
	}
	if diff := cmp.Diff(want, edges, protocmp.Transform()); diff != "" {
		t.Errorf("edges (-want +got):\n%s", diff)
	}
	if len(auth) != 0 {
		t.Errorf("auth failures: got %v, want none", auth)
	}
	if e, a := r.Take(); len(e) != 0 || len(a) != 0 || r.Pending() {
		t.Errorf("after Take: got %d edges, %d failures, want none", len(e), len(a))
	}
}

// TestRecorderBounds: beyond MaxKinds, new kinds fold into FoldedPath per
// (direction, source, destination, method); beyond MaxFolded folded kinds,
// requests are dropped and counted.
func TestRecorderBounds(t *testing.T) {
	r := graph.NewRecorder(graph.RecorderConfig{Clock: clock.NewFake(start), MaxKinds: 3, MaxFolded: 2})
	for i := range 5 {
		r.Record(obs(fmt.Sprintf("/p%c", 'a'+i), 200, time.Millisecond))
	}
	r.Record(obs("/pa", 200, time.Millisecond)) // a held kind still counts
	post := obs("/pz", 200, time.Millisecond)
	post.Method = "POST"
	r.Record(post)
	put := obs("/pz", 200, time.Millisecond)
	put.Method = "PUT"
	r.Record(put) // a third folded kind: dropped
	edges, _ := r.Take()
	got := map[string]int64{}
	for _, e := range edges {
		got[e.GetMethod()+" "+e.GetPath()] = e.GetRequests()
	}
	want := map[string]int64{"GET /pa": 2, "GET /pb": 1, "GET /pc": 1, "GET " + graph.FoldedPath: 2, "POST " + graph.FoldedPath: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("edges (-want +got):\n%s", diff)
	}
	if r.Folded() != 3 || r.Dropped() != 1 {
		t.Errorf("folded, dropped: got %d, %d, want 3, 1", r.Folded(), r.Dropped())
	}
	// The bound starts again after Take.
	r.Record(obs("/new", 200, time.Millisecond))
	if edges, _ := r.Take(); len(edges) != 1 || edges[0].GetPath() != "/new" {
		t.Errorf("after Take: got %v, want /new on its own", edges)
	}
}

// TestRecorderAuthFailures: failures aggregate by address (no port),
// source and reason, at most MaxAuthFailures kinds.
func TestRecorderAuthFailures(t *testing.T) {
	r := graph.NewRecorder(graph.RecorderConfig{Clock: clock.NewFake(start), MaxAuthFailures: 2})
	r.RecordAuthFailure("10.0.0.1:5555", "", graph.ReasonNoSVID)
	r.RecordAuthFailure("10.0.0.1:6666", "", graph.ReasonNoSVID)
	r.RecordAuthFailure("[::ffff:10.0.0.2]:1", apiID, graph.ReasonRevoked)
	r.RecordAuthFailure("10.0.0.3:1", "", graph.ReasonTLSHandshake) // third kind: dropped
	r.RecordAuthFailure("not an address", "", graph.ReasonNoSVID)   // ignored
	_, auth := r.Take()
	want := []*apiv1.AuthFailure{
		{Address: "10.0.0.1", Reason: graph.ReasonNoSVID, Count: 2, FirstSeenUnixNano: start.UnixNano(), LastSeenUnixNano: start.UnixNano()},
		{Address: "10.0.0.2", Source: apiID, Reason: graph.ReasonRevoked, Count: 1, FirstSeenUnixNano: start.UnixNano(), LastSeenUnixNano: start.UnixNano()},
	}
	if diff := cmp.Diff(want, auth, protocmp.Transform()); diff != "" {
		t.Errorf("auth failures (-want +got):\n%s", diff)
	}
	if r.DroppedAuthFailures() != 1 {
		t.Errorf("dropped auth failures: got %d, want 1", r.DroppedAuthFailures())
	}
}

// TestRecorderGiveBack: what is given back merges with what was recorded
// meanwhile.
func TestRecorderGiveBack(t *testing.T) {
	fake := clock.NewFake(start)
	r := graph.NewRecorder(graph.RecorderConfig{Clock: fake})
	r.Record(obs("/a", 200, time.Millisecond))
	r.RecordAuthFailure("10.0.0.1:1", "", graph.ReasonNoSVID)
	edges, auth := r.Take()
	fake.Advance(time.Second)
	r.Record(obs("/a", 500, time.Millisecond))
	r.GiveBack(edges, auth)
	got, gotAuth := r.Take()
	if len(got) != 1 || got[0].GetRequests() != 2 || got[0].GetErrors() != 1 || got[0].GetLatencyBuckets()[1] != 2 ||
		got[0].GetFirstSeenUnixNano() != start.UnixNano() || got[0].GetLastSeenUnixNano() != start.Add(time.Second).UnixNano() {
		t.Errorf("merged edge: got %v, want 2 requests, 1 error, from start to start+1s", got)
	}
	if len(gotAuth) != 1 || gotAuth[0].GetCount() != 1 {
		t.Errorf("merged failures: got %v, want 1", gotAuth)
	}
}

// BenchmarkRecord is the data path's cost of the service graph: one
// request of a kind already held.
func BenchmarkRecord(b *testing.B) {
	r := graph.NewRecorder(graph.RecorderConfig{})
	o := obs("/api/v2/items/list", 200, time.Millisecond)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Record(o)
		}
	})
}
