package telemetry

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// Defaults of a BufferedWriter.
const (
	// DefaultFlushEvery bounds how long a buffered log line waits.
	DefaultFlushEvery = 100 * time.Millisecond
	// defaultBufferSize is how many bytes are buffered before a write.
	defaultBufferSize = 64 << 10
)

// BufferedWriter batches the lines a logger writes (an access log to a
// file: one write(2) per request line costs more CPU than the line) into
// one write per 64 KiB, or per DefaultFlushEvery once Run runs, and on
// Flush and Close. A line is never split between writes: slog handlers
// write whole lines, and a line larger than the buffer is written at once.
// What is buffered when the process is killed is lost (at most
// DefaultFlushEvery of lines); Close on a clean exit loses nothing.
// It is safe for concurrent use.
type BufferedWriter struct {
	w     io.Writer
	clock clock.Clock
	every time.Duration

	mu     sync.Mutex
	buf    []byte
	closed bool
	// err is the first write error; every later Write returns it.
	err error
}

// NewBufferedWriter returns a BufferedWriter to w. c drives Run (nil: the
// wall clock).
func NewBufferedWriter(w io.Writer, c clock.Clock) *BufferedWriter {
	return &BufferedWriter{w: w, clock: clock.OrReal(c), every: DefaultFlushEvery, buf: make([]byte, 0, defaultBufferSize)}
}

// errClosed is returned by Write after Close.
var errClosed = errors.New("buffered writer closed")

// Write buffers p, writing the buffer first when p does not fit.
func (b *BufferedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, errClosed
	case b.err != nil:
		return 0, b.err
	}
	if len(b.buf)+len(p) > cap(b.buf) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(b.buf) {
			if _, err := b.w.Write(p); err != nil {
				b.err = err
				return 0, err
			}
			return len(p), nil
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes what is buffered.
func (b *BufferedWriter) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *BufferedWriter) flushLocked() error {
	if b.err != nil || len(b.buf) == 0 {
		return b.err
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	if err != nil {
		b.err = err
	}
	return err
}

// Run flushes every DefaultFlushEvery until ctx is done, then flushes
// once more.
func (b *BufferedWriter) Run(ctx context.Context) {
	for {
		t := b.clock.NewTimer(b.every)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = b.Flush()
			return
		case <-t.C():
			_ = b.Flush()
		}
	}
}

// Close flushes and refuses later writes. It does not close the
// underlying writer.
func (b *BufferedWriter) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	return b.flushLocked()
}
