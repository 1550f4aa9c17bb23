package clock_test

import (
	"fmt"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// A component arms a timer on its own goroutine; the test waits until it is
// armed, then moves time forward instead of sleeping.
func ExampleFake() {
	f := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	armed := f.TimerCreated()
	done := make(chan time.Time)
	go func() {
		t := f.NewTimer(time.Hour)
		done <- <-t.C()
	}()
	<-armed
	f.Advance(time.Hour)
	fmt.Println((<-done).Format(time.RFC3339))
	// Output: 2026-01-01T01:00:00Z
}
