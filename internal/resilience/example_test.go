package resilience_test

import (
	"fmt"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
)

// A caller's sidecar reports each response; three gateway errors in a row
// eject the endpoint for BaseEjectionTime.
func ExampleOutlier() {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	o := resilience.NewOutlier(resilience.OutlierConfig{}, clk) // defaults: 3 gateway errors, 30s
	o.SetEndpoints([]string{"10.0.0.1:8443", "10.0.0.2:8443", "10.0.0.3:8443"})
	for i := range 3 {
		fmt.Println(i, o.Report("10.0.0.2:8443", resilience.GatewayError))
	}
	fmt.Println(o.Ejected("10.0.0.2:8443"), o.Ejections())
	clk.Advance(30 * time.Second)
	fmt.Println(o.Ejected("10.0.0.2:8443"))
	// Output:
	// 0 false
	// 1 false
	// 2 true
	// true 1
	// false
}

// Retries draw on a budget and wait a jittered, growing time.
func ExampleBudget() {
	b := resilience.NewBudget(20, 0, clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
	for range 10 {
		b.Request()
	}
	fmt.Println(b.TryRetry(), b.TryRetry(), b.TryRetry())
	highest := func(n int64) int64 { return n - 1 }
	for attempt := 1; attempt <= 5; attempt++ {
		fmt.Print(resilience.Backoff(25*time.Millisecond, 250*time.Millisecond, attempt, highest).Round(time.Millisecond), " ")
	}
	fmt.Println()
	// Output:
	// true true false
	// 25ms 50ms 100ms 200ms 250ms
}
