package balancer_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

var start = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// seeded returns a deterministic, concurrency-safe Config.Rand.
func seeded(seed uint64) func(int) int {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		return r.IntN(n)
	}
}

// endpoints returns n endpoints 10.0.0.i:8080 of unknown locality.
func endpoints(n int) []balancer.Endpoint {
	eps := make([]balancer.Endpoint, n)
	for i := range eps {
		eps[i].Addr = fmt.Sprintf("10.0.0.%d:8080", i+1)
	}
	return eps
}

// excluding returns an exclude function ruling out the given indexes.
func excluding(idx ...int) func(int) bool {
	return func(i int) bool {
		for _, x := range idx {
			if x == i {
				return true
			}
		}
		return false
	}
}

var allPolicies = []string{config.LBPeakEWMA, config.LBRoundRobin, config.LBLeastRequest, config.LBConsistentHash}

func TestParseLocality(t *testing.T) {
	tests := []struct {
		in      string
		want    balancer.Locality
		wantErr string
	}{
		{in: "", want: balancer.Locality{}},
		{in: "eu-west-1", want: balancer.Locality{Region: "eu-west-1"}},
		{in: "eu-west-1/eu-west-1a", want: balancer.Locality{Region: "eu-west-1", Zone: "eu-west-1a"}},
		{in: "r_1.x/z", want: balancer.Locality{Region: "r_1.x", Zone: "z"}},
		{in: "a/b/c", wantErr: "got 3 parts"},
		{in: "/zone", wantErr: "region: empty"},
		{in: "region/", wantErr: "zone: empty"},
		{in: "EU/a", wantErr: `region: invalid character 'E'`},
		{in: "eu/a b", wantErr: `zone: invalid character ' '`},
		{in: strings.Repeat("a", 64), wantErr: "region: longer than 63"},
		{in: "r/" + strings.Repeat("a", 63), want: balancer.Locality{Region: "r", Zone: strings.Repeat("a", 63)}},
	}
	for _, tt := range tests {
		name := strings.NewReplacer("/", "_", " ", "_").Replace(tt.in)
		if len(name) > 20 {
			name = name[:20]
		}
		t.Run("in="+name, func(t *testing.T) {
			got, err := balancer.ParseLocality(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String: got %q, want %q", got.String(), tt.in)
			}
		})
	}
}

// TestPeakEWMAPrefersFaster: one endpoint of three answers in 50ms, the
// others in 5ms; after it has been tried, P2C avoids it. New endpoints get
// traffic at once (no starvation).
func TestPeakEWMAPrefersFaster(t *testing.T) {
	clk := clock.NewFake(start)
	stats := balancer.NewStats(clk)
	b := balancer.New(balancer.Config{Rand: seeded(1)}, endpoints(3), stats)
	latency := []time.Duration{50 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}
	counts := make([]int, 3)
	const n = 1000
	for range n {
		i := b.Pick(0, nil)
		counts[i]++
		b.Start(i).Finish(latency[i], false)
		clk.Advance(10 * time.Millisecond)
	}
	for i, c := range counts {
		if c == 0 {
			t.Errorf("endpoint %d never picked (starved): counts %v", i, counts)
		}
	}
	if counts[0] > n/20 {
		t.Errorf("slow endpoint picked %d times of %d, want at most %d: counts %v", counts[0], n, n/20, counts)
	}
}

// TestPeakEWMAFailureCountsAsSlow: an endpoint failing fast is not the
// fastest.
func TestPeakEWMAFailureCountsAsSlow(t *testing.T) {
	clk := clock.NewFake(start)
	b := balancer.New(balancer.Config{Rand: seeded(2)}, endpoints(3), balancer.NewStats(clk))
	counts := make([]int, 3)
	const n = 600
	for range n {
		i := b.Pick(0, nil)
		counts[i]++
		if i == 0 {
			b.Start(i).Finish(time.Millisecond, true)
		} else {
			b.Start(i).Finish(20*time.Millisecond, false)
		}
		clk.Advance(10 * time.Millisecond)
	}
	if counts[0] > 5 {
		t.Errorf("failing endpoint picked %d times of %d, want at most 5: counts %v", counts[0], n, counts)
	}
}

// TestPeakEWMADecay: a slow endpoint is tried again once its estimate has
// decayed below the others' (tau = 10s).
func TestPeakEWMADecay(t *testing.T) {
	clk := clock.NewFake(start)
	b := balancer.New(balancer.Config{Rand: seeded(3)}, endpoints(2), balancer.NewStats(clk))
	b.Start(0).Finish(time.Second, false)
	b.Start(1).Finish(100*time.Millisecond, false)
	if got := b.Pick(0, nil); got != 1 {
		t.Fatalf("right after the samples: got endpoint %d, want 1", got)
	}
	// Both decay at the same rate: the ratio holds.
	clk.Advance(time.Minute)
	if got := b.Pick(0, nil); got != 1 {
		t.Fatalf("after a minute idle: got endpoint %d, want 1", got)
	}
	// Endpoint 1 stays fresh (a 100ms sample keeps it at 100ms), endpoint
	// 0 decays: 1s*exp(-30s/10s) = 50ms < 100ms.
	for range 30 {
		clk.Advance(time.Second)
		b.Start(1).Finish(100*time.Millisecond, false)
	}
	if got := b.Pick(0, nil); got != 0 {
		t.Errorf("after endpoint 0 decayed: got endpoint %d, want 0", got)
	}
}

// TestOutstandingAvoided: PeakEWMA and LeastRequest both avoid an endpoint
// with many requests in flight.
func TestOutstandingAvoided(t *testing.T) {
	for _, policy := range []string{config.LBPeakEWMA, config.LBLeastRequest} {
		t.Run(policy, func(t *testing.T) {
			clk := clock.NewFake(start)
			b := balancer.New(balancer.Config{Policy: policy, Rand: seeded(4)}, endpoints(3), balancer.NewStats(clk))
			var busy []balancer.Done
			for range 10 {
				busy = append(busy, b.Start(0))
			}
			if got := b.Outstanding(0); got != 10 {
				t.Fatalf("Outstanding(0): got %d, want 10", got)
			}
			counts := make([]int, 3)
			for range 300 {
				i := b.Pick(0, nil)
				counts[i]++
				b.Start(i).Finish(balancer.DefaultRTT, false)
			}
			if counts[0] != 0 {
				t.Errorf("busy endpoint picked %d times, want 0: counts %v", counts[0], counts)
			}
			if counts[1] < 100 || counts[2] < 100 {
				t.Errorf("idle endpoints unevenly picked: counts %v, want at least 100 each", counts)
			}
			for _, d := range busy {
				d.Finish(balancer.DefaultRTT, false)
			}
			if got := b.Outstanding(0); got != 0 {
				t.Errorf("Outstanding(0) after Finish: got %d, want 0", got)
			}
		})
	}
}

func TestRoundRobinEven(t *testing.T) {
	b := balancer.New(balancer.Config{Policy: config.LBRoundRobin}, endpoints(4), nil)
	counts := make([]int, 4)
	for range 400 {
		counts[b.Pick(0, nil)]++
	}
	if diff := cmp.Diff([]int{100, 100, 100, 100}, counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	for range 100 {
		if got := b.Pick(0, excluding(1, 2)); got != 0 && got != 3 {
			t.Fatalf("with 1 and 2 excluded: got %d, want 0 or 3", got)
		}
	}
}

// TestLocalityTiers: the caller's zone first, then its region, then any;
// failover when a tier has no usable endpoint.
func TestLocalityTiers(t *testing.T) {
	eps := []balancer.Endpoint{
		{Addr: "a:1", Locality: balancer.Locality{Region: "r1", Zone: "z1"}},
		{Addr: "b:1", Locality: balancer.Locality{Region: "r1", Zone: "z1"}},
		{Addr: "c:1", Locality: balancer.Locality{Region: "r1", Zone: "z2"}},
		{Addr: "d:1", Locality: balancer.Locality{Region: "r2", Zone: "z1"}},
		{Addr: "e:1"},
	}
	zone := balancer.Locality{Region: "r1", Zone: "z1"}
	tests := []struct {
		name    string
		local   balancer.Locality
		aware   bool
		exclude []int
		want    []int // the indexes Pick may return
	}{
		{name: "zone", local: zone, aware: true, want: []int{0, 1}},
		{name: "zone_partly_excluded", local: zone, aware: true, exclude: []int{0}, want: []int{1}},
		{name: "zone_gone_region", local: zone, aware: true, exclude: []int{0, 1}, want: []int{2}},
		{name: "region_gone_any", local: zone, aware: true, exclude: []int{0, 1, 2}, want: []int{3, 4}},
		{name: "only_unknown_left", local: zone, aware: true, exclude: []int{0, 1, 2, 3}, want: []int{4}},
		{name: "nothing_left", local: zone, aware: true, exclude: []int{0, 1, 2, 3, 4}, want: []int{-1}},
		{name: "region_only_caller", local: balancer.Locality{Region: "r1"}, aware: true, want: []int{0, 1, 2}},
		{name: "unknown_caller", local: balancer.Locality{}, aware: true, want: []int{0, 1, 2, 3, 4}},
		{name: "not_aware", local: zone, aware: false, want: []int{0, 1, 2, 3, 4}},
		{name: "other_region_caller", local: balancer.Locality{Region: "r2", Zone: "z1"}, aware: true, want: []int{3}},
	}
	for _, tt := range tests {
		for _, policy := range allPolicies {
			t.Run(tt.name+"/"+policy, func(t *testing.T) {
				cfg := balancer.Config{Policy: policy, LocalityAware: tt.aware, Local: tt.local, Rand: seeded(5)}
				b := balancer.New(cfg, eps, balancer.NewStats(clock.NewFake(start)))
				seen := map[int]bool{}
				for k := range 200 {
					seen[b.Pick(balancer.HashString(fmt.Sprint("key", k)), excluding(tt.exclude...))] = true
				}
				var got []int
				for i := -1; i < len(eps); i++ {
					if seen[i] {
						got = append(got, i)
					}
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("picked (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestDraining: draining endpoints are skipped while another is usable, in
// any tier, and used when they are all that is left.
func TestDraining(t *testing.T) {
	zone := balancer.Locality{Region: "r1", Zone: "z1"}
	tests := []struct {
		name     string
		draining []bool
		local    []balancer.Locality
		exclude  []int
		want     []int
	}{
		{name: "skipped", draining: []bool{true, false, false}, want: []int{1, 2}},
		{name: "used_when_rest_excluded", draining: []bool{true, false, false}, exclude: []int{1, 2}, want: []int{0}},
		{name: "all_draining", draining: []bool{true, true, true}, want: []int{0, 1, 2}},
		{name: "all_draining_some_excluded", draining: []bool{true, true, true}, exclude: []int{0}, want: []int{1, 2}},
		{
			name:     "healthy_other_region_before_draining_zone",
			draining: []bool{true, false, false},
			local:    []balancer.Locality{zone, {Region: "r2"}, {Region: "r2"}},
			want:     []int{1, 2},
		},
		{
			name:     "draining_in_tier_order",
			draining: []bool{true, true, true},
			local:    []balancer.Locality{{Region: "r2"}, zone, {Region: "r2"}},
			want:     []int{1},
		},
	}
	for _, tt := range tests {
		for _, policy := range allPolicies {
			t.Run(tt.name+"/"+policy, func(t *testing.T) {
				eps := endpoints(3)
				for i := range eps {
					eps[i].Draining = tt.draining[i]
					if tt.local != nil {
						eps[i].Locality = tt.local[i]
					}
				}
				cfg := balancer.Config{Policy: policy, LocalityAware: true, Local: zone, Rand: seeded(6)}
				b := balancer.New(cfg, eps, balancer.NewStats(clock.NewFake(start)))
				seen := map[int]bool{}
				for k := range 200 {
					seen[b.Pick(uint64(k+1)*0x9e3779b97f4a7c15, excluding(tt.exclude...))] = true
				}
				var got []int
				for i := -1; i < len(eps); i++ {
					if seen[i] {
						got = append(got, i)
					}
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("picked (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestPickNoneLeft(t *testing.T) {
	for _, policy := range allPolicies {
		t.Run(policy, func(t *testing.T) {
			empty := balancer.New(balancer.Config{Policy: policy}, nil, nil)
			if got := empty.Pick(1, nil); got != -1 {
				t.Errorf("no endpoints: got %d, want -1", got)
			}
			b := balancer.New(balancer.Config{Policy: policy}, endpoints(3), nil)
			all := func(int) bool { return true }
			for _, h := range []uint64{0, 1, 1 << 63} {
				if got := b.Pick(h, all); got != -1 {
					t.Errorf("all excluded, hash %d: got %d, want -1", h, got)
				}
			}
			one := balancer.New(balancer.Config{Policy: policy}, endpoints(1), nil)
			if got := one.Pick(7, nil); got != 0 {
				t.Errorf("single endpoint: got %d, want 0", got)
			}
		})
	}
}

// TestStatsSurviveSnapshots: a Balancer built from a new snapshot keeps the
// latency history of the previous one; Retain drops departed addresses.
func TestStatsSurviveSnapshots(t *testing.T) {
	clk := clock.NewFake(start)
	stats := balancer.NewStats(clk)
	eps := endpoints(2)
	b1 := balancer.New(balancer.Config{Rand: seeded(7)}, eps, stats)
	b1.Start(0).Finish(time.Second, false)
	b1.Start(1).Finish(time.Millisecond, false)
	// The next snapshot lists them in the other order, plus a third.
	eps2 := []balancer.Endpoint{eps[1], eps[0], {Addr: "10.0.0.9:8080"}}
	b2 := balancer.New(balancer.Config{Rand: seeded(7)}, eps2, stats)
	for range 50 {
		if got := b2.Pick(0, excluding(2)); got != 0 {
			t.Fatalf("got %d (%s), want 0 (%s, the fast one)", got, eps2[got].Addr, eps2[0].Addr)
		}
	}
	if got := stats.Len(); got != 3 {
		t.Fatalf("Len: got %d, want 3", got)
	}
	stats.Retain(map[string]bool{eps[0].Addr: true})
	if got := stats.Len(); got != 1 {
		t.Errorf("Len after Retain: got %d, want 1", got)
	}
	// The dropped address starts afresh in the next Balancer.
	b3 := balancer.New(balancer.Config{Rand: seeded(7)}, eps, stats)
	for range 50 {
		if got := b3.Pick(0, nil); got != 1 {
			t.Fatalf("after Retain: got %d, want 1 (fresh, DefaultRTT < 1s)", got)
		}
	}
}

func TestHashStringStable(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
	}{
		{in: "", want: 0},
		{in: "a", want: 0x82a2a958a9bece5b},
		{in: "user-42", want: 0xa39532c7ab051e8d},
		{in: "10.0.0.1:8080#0", want: 0x65283bf9882a6167},
	}
	for _, tt := range tests {
		t.Run("in="+tt.in, func(t *testing.T) {
			if got := balancer.HashString(tt.in); got != tt.want {
				t.Errorf("got %#x, want %#x", got, tt.want)
			}
		})
	}
}

// keyMap returns, for each of n keys, the address ConsistentHash picks.
func keyMap(eps []balancer.Endpoint, n int) []string {
	b := balancer.New(balancer.Config{Policy: config.LBConsistentHash}, eps, nil)
	out := make([]string, n)
	for k := range n {
		out[k] = eps[b.Pick(balancer.HashString(fmt.Sprint("session-", k)), nil)].Addr
	}
	return out
}

func TestConsistentHash(t *testing.T) {
	const n, keys = 10, 10000
	eps := endpoints(n)
	base := keyMap(eps, keys)

	t.Run("order_independent", func(t *testing.T) {
		rev := make([]balancer.Endpoint, n)
		for i := range eps {
			rev[n-1-i] = eps[i]
		}
		if diff := cmp.Diff(base, keyMap(rev, keys)); diff != "" {
			t.Errorf("key map differs with the endpoints reversed (-want +got):\n%s", diff)
		}
	})

	t.Run("balanced", func(t *testing.T) {
		per := map[string]int{}
		for _, a := range base {
			per[a]++
		}
		for _, e := range eps {
			if c := per[e.Addr]; c < keys/n/2 || c > keys/n*3/2 {
				t.Errorf("%s got %d keys, want %d to %d", e.Addr, c, keys/n/2, keys/n*3/2)
			}
		}
	})

	t.Run("removal_moves_one_nth", func(t *testing.T) {
		removed := eps[3].Addr
		rest := append(append([]balancer.Endpoint{}, eps[:3]...), eps[4:]...)
		after := keyMap(rest, keys)
		moved := 0
		for k := range keys {
			if base[k] == after[k] {
				continue
			}
			moved++
			if base[k] != removed {
				t.Fatalf("key %d moved from %s (still there) to %s", k, base[k], after[k])
			}
		}
		if moved < keys/n/2 || moved > keys/n*2 {
			t.Errorf("moved %d keys of %d, want about 1/%d", moved, keys, n)
		}
	})

	t.Run("exclude_walks_on_consistently", func(t *testing.T) {
		b := balancer.New(balancer.Config{Policy: config.LBConsistentHash}, eps, nil)
		h := balancer.HashString("sticky")
		first := b.Pick(h, nil)
		second := b.Pick(h, excluding(first))
		if second == first || second < 0 {
			t.Fatalf("with %d excluded: got %d", first, second)
		}
		for range 10 {
			if got := b.Pick(h, excluding(first)); got != second {
				t.Fatalf("with %d excluded: got %d, want %d every time", first, got, second)
			}
		}
	})

	t.Run("no_key_random", func(t *testing.T) {
		b := balancer.New(balancer.Config{Policy: config.LBConsistentHash, Rand: seeded(8)}, eps, nil)
		seen := map[int]bool{}
		for range 500 {
			seen[b.Pick(0, nil)] = true
		}
		if len(seen) != n {
			t.Errorf("empty key reached %d endpoints, want all %d", len(seen), n)
		}
	})
}

// TestZeroAllocs: the hot path does not allocate.
func TestZeroAllocs(t *testing.T) {
	exclude := excluding(1)
	for _, policy := range allPolicies {
		for _, n := range []int{3, 100} {
			t.Run(fmt.Sprintf("%s/n=%d", policy, n), func(t *testing.T) {
				cfg := balancer.Config{Policy: policy, LocalityAware: true, Local: balancer.Locality{Region: "r"}}
				b := balancer.New(cfg, endpoints(n), nil)
				h := balancer.HashString("k")
				got := testing.AllocsPerRun(1000, func() {
					i := b.Pick(h, exclude)
					b.Start(i).Finish(time.Millisecond, false)
				})
				if got != 0 {
					t.Errorf("Pick+Start+Finish: got %v allocs, want 0", got)
				}
			})
		}
	}
}

// TestConcurrentUse runs Pick, Start and Finish from many goroutines (run
// with -race); outstanding counts return to zero.
func TestConcurrentUse(t *testing.T) {
	for _, policy := range allPolicies {
		t.Run(policy, func(t *testing.T) {
			stats := balancer.NewStats(nil)
			b := balancer.New(balancer.Config{Policy: policy}, endpoints(5), stats)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for k := range 500 {
						i := b.Pick(uint64(g*1000+k), excluding(g%5))
						if i < 0 || i == g%5 {
							t.Errorf("got %d with %d excluded", i, g%5)
							return
						}
						b.Start(i).Finish(time.Duration(k)*time.Microsecond, k%7 == 0)
					}
				})
			}
			wg.Go(func() {
				for range 50 {
					balancer.New(balancer.Config{Policy: policy}, endpoints(5), stats)
					stats.Retain(map[string]bool{"10.0.0.1:8080": true, "10.0.0.2:8080": true, "10.0.0.3:8080": true, "10.0.0.4:8080": true, "10.0.0.5:8080": true})
				}
			})
			wg.Wait()
			for i := range 5 {
				if got := b.Outstanding(i); got != 0 {
					t.Errorf("Outstanding(%d): got %d, want 0", i, got)
				}
			}
		})
	}
}
