package balancer_test

import (
	"fmt"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// A proxy keeps one Stats per destination and builds a Balancer from each
// snapshot; a request picks an endpoint, skipping those already tried, and
// reports its latency.
func ExampleBalancer() {
	stats := balancer.NewStats(nil)
	local, _ := balancer.ParseLocality("eu-west-1/eu-west-1a")
	eps := []balancer.Endpoint{
		{Addr: "10.0.1.5:8443", Locality: balancer.Locality{Region: "eu-west-1", Zone: "eu-west-1a"}},
		{Addr: "10.0.2.7:8443", Locality: balancer.Locality{Region: "eu-west-1", Zone: "eu-west-1b"}},
	}
	b := balancer.New(balancer.Config{Policy: config.LBPeakEWMA, LocalityAware: true, Local: local}, eps, stats)

	tried := map[int]bool{}
	for attempt := range 2 {
		i := b.Pick(0, func(i int) bool { return tried[i] })
		tried[i] = true
		done := b.Start(i)
		failed := attempt == 0 // pretend the first try failed
		done.Finish(3*time.Millisecond, failed)
		fmt.Println(attempt, eps[i].Addr, failed)
	}
	// Output:
	// 0 10.0.1.5:8443 true
	// 1 10.0.2.7:8443 false
}
