package balancer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/balancer"
)

// BenchmarkPick measures Pick alone, with an exclude function ruling out
// one endpoint (as the proxy's outlier check does), for each policy.
func BenchmarkPick(b *testing.B) {
	for _, policy := range allPolicies {
		for _, n := range []int{3, 100} {
			b.Run(fmt.Sprintf("policy=%s/n=%d", policy, n), func(b *testing.B) {
				bal := balancer.New(balancer.Config{Policy: policy}, endpoints(n), nil)
				exclude := excluding(1)
				h := balancer.HashString("session")
				b.ReportAllocs()
				for b.Loop() {
					if bal.Pick(h, exclude) < 0 {
						b.Fatal("no endpoint")
					}
				}
			})
		}
	}
}

// BenchmarkPickParallel is BenchmarkPick for the default policy from every
// core at once, with Start and Finish around each pick.
func BenchmarkPickParallel(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			bal := balancer.New(balancer.Config{}, endpoints(n), nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := bal.Pick(0, nil)
					bal.Start(i).Finish(time.Millisecond, false)
				}
			})
		})
	}
}

// BenchmarkStartFinish measures the bookkeeping around one request.
func BenchmarkStartFinish(b *testing.B) {
	bal := balancer.New(balancer.Config{}, endpoints(3), nil)
	b.ReportAllocs()
	for b.Loop() {
		bal.Start(1).Finish(time.Millisecond, false)
	}
}
