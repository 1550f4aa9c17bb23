package clock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// hangGuard bounds waits on the real clock so that a bug fails rather than
// hangs; it is never a timing assertion.
const hangGuard = 30 * time.Second

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fired reports whether t has delivered a time, and which.
func fired(t clock.Timer) (time.Time, bool) {
	select {
	case v := <-t.C():
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestFakeNowAndAdvance(t *testing.T) {
	f := clock.NewFake(start)
	if got := f.Now(); !got.Equal(start) {
		t.Errorf("Now: got %v, want %v", got, start)
	}
	f.Advance(90 * time.Second)
	f.Advance(30 * time.Second)
	if got, want := f.Now(), start.Add(2*time.Minute); !got.Equal(want) {
		t.Errorf("Now after Advance: got %v, want %v", got, want)
	}
	f.Advance(0)
	if got, want := f.Now(), start.Add(2*time.Minute); !got.Equal(want) {
		t.Errorf("Now after Advance(0): got %v, want %v", got, want)
	}
}

func TestFakeTimersFireInDeadlineOrder(t *testing.T) {
	tests := []struct {
		name string
		// steps are the successive Advance calls; want[i] are the
		// timers (by their duration) that fire at step i.
		steps []time.Duration
		want  [][]time.Duration
	}{
		{
			name:  "one_step_per_deadline",
			steps: []time.Duration{time.Second, time.Second, time.Second},
			want:  [][]time.Duration{{time.Second}, {2 * time.Second}, {3 * time.Second}},
		},
		{
			name:  "short_of_the_deadline",
			steps: []time.Duration{time.Second - time.Nanosecond, time.Nanosecond},
			want:  [][]time.Duration{nil, {time.Second}},
		},
		{
			name:  "all_at_once",
			steps: []time.Duration{time.Hour},
			want:  [][]time.Duration{{time.Second, 2 * time.Second, 3 * time.Second}},
		},
		{
			name:  "past_two_deadlines",
			steps: []time.Duration{2500 * time.Millisecond, time.Second},
			want:  [][]time.Duration{{time.Second, 2 * time.Second}, {3 * time.Second}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := clock.NewFake(start)
			// Created out of order: firing must not depend on it.
			durations := []time.Duration{3 * time.Second, time.Second, 2 * time.Second}
			timers := map[time.Duration]clock.Timer{}
			for _, d := range durations {
				timers[d] = f.NewTimer(d)
			}
			now := start
			for i, step := range tt.steps {
				f.Advance(step)
				now = now.Add(step)
				var got []time.Duration
				for _, d := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
					if v, ok := fired(timers[d]); ok {
						got = append(got, d)
						if !v.Equal(now) {
							t.Errorf("step %d: timer %v delivered %v, want the time of the Advance %v", i, d, v, now)
						}
					}
				}
				if diff := cmp.Diff(tt.want[i], got); diff != "" {
					t.Errorf("step %d: timers fired (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestFakeTimerStop(t *testing.T) {
	tests := []struct {
		name string
		run  func(f *clock.Fake, tm clock.Timer) (stopResults []bool)
		// wantFired: whether the channel holds a value at the end.
		wantFired  bool
		wantStops  []bool
		wantTimers int
	}{
		{
			name: "stop_before_deadline_prevents_firing",
			run: func(f *clock.Fake, tm clock.Timer) []bool {
				r := tm.Stop()
				f.Advance(time.Hour)
				return []bool{r}
			},
			wantStops: []bool{true},
		},
		{
			name: "stop_after_firing_returns_false",
			run: func(f *clock.Fake, tm clock.Timer) []bool {
				f.Advance(time.Minute)
				return []bool{tm.Stop()}
			},
			wantFired: true,
			wantStops: []bool{false},
		},
		{
			name: "stop_twice",
			run: func(f *clock.Fake, tm clock.Timer) []bool {
				return []bool{tm.Stop(), tm.Stop()}
			},
			wantStops: []bool{true, false},
		},
		{
			name: "stop_just_before_deadline",
			run: func(f *clock.Fake, tm clock.Timer) []bool {
				f.Advance(time.Minute - time.Nanosecond)
				r := tm.Stop()
				f.Advance(time.Nanosecond)
				return []bool{r}
			},
			wantStops: []bool{true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := clock.NewFake(start)
			tm := f.NewTimer(time.Minute)
			other := f.NewTimer(time.Hour + time.Minute) // must stay armed
			stops := tt.run(f, tm)
			if diff := cmp.Diff(tt.wantStops, stops); diff != "" {
				t.Errorf("Stop results (-want +got):\n%s", diff)
			}
			if _, got := fired(tm); got != tt.wantFired {
				t.Errorf("fired: got %v, want %v", got, tt.wantFired)
			}
			if got := f.Timers(); got != 1 {
				t.Errorf("Timers: got %d, want 1 (the other timer)", got)
			}
			if !other.Stop() {
				t.Errorf("Stop of the other timer: got false, want true")
			}
		})
	}
}

func TestFakeTimerNonPositiveDurationFiresAtOnce(t *testing.T) {
	tests := []struct {
		name string
		d    time.Duration
	}{
		{name: "zero", d: 0},
		{name: "negative", d: -time.Second},
		{name: "very_negative", d: -100 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := clock.NewFake(start)
			tm := f.NewTimer(tt.d)
			v, ok := fired(tm)
			if !ok || !v.Equal(start) {
				t.Errorf("got fired %v with %v, want fired at once with %v", ok, v, start)
			}
			if got := f.Timers(); got != 0 {
				t.Errorf("Timers: got %d, want 0", got)
			}
			if tm.Stop() {
				t.Errorf("Stop: got true, want false (already fired)")
			}
		})
	}
}

func TestFakeTimerCreated(t *testing.T) {
	tests := []struct {
		name string
		d    time.Duration
	}{
		{name: "positive", d: time.Minute},
		{name: "zero", d: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := clock.NewFake(start)
			created := f.TimerCreated()
			also := f.TimerCreated()
			select {
			case <-created:
				t.Fatalf("TimerCreated closed before any timer was created")
			default:
			}
			f.NewTimer(tt.d)
			for i, c := range []<-chan struct{}{created, also} {
				select {
				case <-c:
				default:
					t.Errorf("waiter %d: TimerCreated not closed after NewTimer", i)
				}
			}
			// A channel asked for now waits for the next timer.
			next := f.TimerCreated()
			select {
			case <-next:
				t.Errorf("a new TimerCreated channel is closed before the next timer")
			default:
			}
		})
	}
}

// TestFakeTimerCreatedLetsATestAdvanceAfterArming is the pattern the Fake
// exists for: a component arms a timer in its own goroutine; the test waits
// for it before advancing, without sleeping.
func TestFakeTimerCreatedLetsATestAdvanceAfterArming(t *testing.T) {
	f := clock.NewFake(start)
	created := f.TimerCreated()
	done := make(chan time.Time)
	go func() {
		tm := f.NewTimer(10 * time.Minute)
		done <- <-tm.C()
	}()
	<-created
	f.Advance(10 * time.Minute)
	if got, want := <-done, start.Add(10*time.Minute); !got.Equal(want) {
		t.Errorf("component's timer delivered %v, want %v", got, want)
	}
}

func TestFakeConcurrentUse(t *testing.T) {
	f := clock.NewFake(start)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				tm := f.NewTimer(time.Duration(i*100+j) * time.Millisecond)
				if j%2 == 0 {
					tm.Stop()
				}
				_ = f.Now()
				_ = f.Timers()
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			f.Advance(10 * time.Millisecond)
			_ = f.TimerCreated()
		}
	})
	wg.Wait()
	f.Advance(time.Hour)
	if got := f.Timers(); got != 0 {
		t.Errorf("Timers after advancing past every deadline: got %d, want 0", got)
	}
}

func TestReal(t *testing.T) {
	c := clock.Real()
	before := time.Now()
	now := c.Now()
	if now.Before(before) {
		t.Errorf("Real().Now: got %v, before %v", now, before)
	}

	tm := c.NewTimer(time.Millisecond)
	select {
	case v := <-tm.C():
		if v.Before(before) {
			t.Errorf("timer delivered %v, before it was created (%v)", v, before)
		}
	case <-time.After(hangGuard):
		t.Fatal("a 1ms real timer did not fire")
	}
	if tm.Stop() {
		t.Errorf("Stop after firing: got true, want false")
	}

	long := c.NewTimer(time.Hour)
	if !long.Stop() {
		t.Errorf("Stop of an armed timer: got false, want true")
	}
	if long.Stop() {
		t.Errorf("second Stop: got true, want false")
	}
}

func TestOrReal(t *testing.T) {
	f := clock.NewFake(start)
	if got := clock.OrReal(f); got != f {
		t.Errorf("OrReal(fake): got %v, want the fake", got)
	}
	got := clock.OrReal(nil)
	if got == nil {
		t.Fatal("OrReal(nil): got nil, want the real clock")
	}
	if d := time.Since(got.Now()); d < 0 || d > time.Hour {
		t.Errorf("OrReal(nil).Now: got %v, want the wall clock", got.Now())
	}
}
