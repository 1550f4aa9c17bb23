package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// lockedBuffer records each write separately.
type lockedBuffer struct {
	mu     sync.Mutex
	writes []string
	fail   error
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return 0, l.fail
	}
	l.writes = append(l.writes, string(p))
	return len(p), nil
}

func (l *lockedBuffer) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.writes...)
}

func TestBufferedWriterBatchesWholeLines(t *testing.T) {
	out := &lockedBuffer{}
	b := telemetry.NewBufferedWriter(out, nil)
	line := strings.Repeat("x", 1000) + "\n"
	for range 100 { // 100,000 bytes: one write when 64 KiB fill up
		if _, err := b.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	writes := out.all()
	if got, want := len(writes), 1; got != want {
		t.Fatalf("got %d writes before Close, want %d", got, want)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	writes = out.all()
	total := 0
	for i, w := range writes {
		if !strings.HasSuffix(w, "\n") || len(w)%len(line) != 0 {
			t.Errorf("write %d splits a line (%d bytes)", i, len(w))
		}
		total += len(w)
	}
	if total != 100*len(line) {
		t.Errorf("got %d bytes written, want %d", total, 100*len(line))
	}
	if _, err := b.Write([]byte(line)); err == nil {
		t.Error("Write after Close: got nil error, want one")
	}
	// A line larger than the buffer goes out whole.
	big := telemetry.NewBufferedWriter(out, nil)
	huge := bytes.Repeat([]byte("y"), 100<<10)
	if n, err := big.Write(huge); err != nil || n != len(huge) {
		t.Fatalf("Write of %d bytes: got %d, %v", len(huge), n, err)
	}
	if got := out.all(); got[len(got)-1] != string(huge) {
		t.Errorf("the large line was not written whole")
	}
}

func TestBufferedWriterFlushesOnTimerAndAtStop(t *testing.T) {
	out := &lockedBuffer{}
	fake := clock.NewFake(time.Unix(0, 0))
	b := telemetry.NewBufferedWriter(out, fake)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	// Wait for timers with channels taken before they can be armed: Run
	// may arm one before a later TimerCreated call.
	armed := fake.TimerCreated()
	go func() { b.Run(ctx); close(done) }()
	<-armed
	if _, err := b.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	if got := out.all(); len(got) != 0 {
		t.Fatalf("got %q before the flush interval, want nothing", got)
	}
	rearmed := fake.TimerCreated()
	fake.Advance(telemetry.DefaultFlushEvery)
	<-rearmed // the loop flushed and waits again
	if got := out.all(); len(got) != 1 || got[0] != "one\n" {
		t.Fatalf("after the interval: got %q, want [one]", got)
	}
	if _, err := b.Write([]byte("two\n")); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if got := out.all(); len(got) != 2 || got[1] != "two\n" {
		t.Fatalf("after stop: got %q, want [one two]", got)
	}
}

func TestBufferedWriterKeepsTheFirstError(t *testing.T) {
	boom := errors.New("disk full")
	out := &lockedBuffer{fail: boom}
	b := telemetry.NewBufferedWriter(out, nil)
	if _, err := b.Write([]byte("a\n")); err != nil {
		t.Fatalf("buffered Write: %v", err)
	}
	if err := b.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush: got %v, want %v", err, boom)
	}
	if _, err := b.Write([]byte("b\n")); !errors.Is(err, boom) {
		t.Fatalf("Write after a failed flush: got %v, want %v", err, boom)
	}
}
