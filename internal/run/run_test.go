package run_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/run"
)

var (
	errFail  = errors.New("fail")
	errFlush = errors.New("flush on stop")
)

// Tasks used by the tests.
func failNow(context.Context) error { return errFail }

func returnNow(context.Context) error { return nil }

func returnCanceledNow(context.Context) error { return context.Canceled }

func stopClean(ctx context.Context) error { <-ctx.Done(); return nil }

func stopWithCtxErr(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

func stopWithWrappedCtxErr(ctx context.Context) error {
	<-ctx.Done()
	return fmt.Errorf("serve: %w", ctx.Err())
}

func stopWithError(ctx context.Context) error { <-ctx.Done(); return errFlush }

// failAfter returns a task that fails once ready is closed, so that it
// returns after the other tasks have started.
func failAfter(ready <-chan struct{}) run.Task {
	return func(context.Context) error { <-ready; return errFail }
}

func TestGroup(t *testing.T) {
	tests := []struct {
		name string
		// parent makes the parent context; nil: context.Background.
		parent func(t *testing.T) context.Context
		tasks  []run.Task
		want   error
	}{
		{name: "first-error-is-returned", tasks: []run.Task{stopClean, failNow, stopWithCtxErr}, want: errFail},
		{name: "first-error-wins-over-stop-errors", tasks: []run.Task{failNow, stopWithError}, want: errFail},
		{name: "nil-return-stops-group", tasks: []run.Task{stopWithCtxErr, returnNow, stopClean}, want: nil},
		{name: "error-while-stopping-is-reported", tasks: []run.Task{returnNow, stopWithError}, want: errFlush},
		{name: "wrapped-cancellation-is-ignored", tasks: []run.Task{failNow, stopWithWrappedCtxErr}, want: errFail},
		{name: "canceled-before-cancellation-is-an-error", tasks: []run.Task{returnCanceledNow, stopClean}, want: context.Canceled},
		{name: "no-tasks", want: nil},
		{name: "one-task-failing", tasks: []run.Task{failNow}, want: errFail},
		{name: "parent-cancelled", parent: func(t *testing.T) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, tasks: []run.Task{stopWithCtxErr, stopClean, stopWithWrappedCtxErr}, want: nil},
		{name: "parent-deadline", parent: func(t *testing.T) context.Context {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			t.Cleanup(cancel)
			return ctx
		}, tasks: []run.Task{stopWithCtxErr, stopWithWrappedCtxErr}, want: nil},
		{name: "parent-cancelled-with-failing-stop", parent: func(t *testing.T) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, tasks: []run.Task{stopClean, stopWithError}, want: errFlush},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.parent != nil {
				ctx = tt.parent(t)
			}
			if got := run.Group(ctx, tt.tasks...); !errors.Is(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestGroupFirstErrorCancelsOthers(t *testing.T) {
	const others = 3
	var (
		started   = make(chan struct{}, others)
		ready     = make(chan struct{})
		cancelled atomic.Int32
	)
	other := func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		cancelled.Add(1)
		return ctx.Err()
	}
	go func() {
		for range others {
			<-started
		}
		close(ready)
	}()
	err := run.Group(context.Background(), other, failAfter(ready), other, other)
	if !errors.Is(err, errFail) {
		t.Errorf("got %v, want %v", err, errFail)
	}
	if got := cancelled.Load(); got != others {
		t.Errorf("got %d tasks cancelled, want %d", got, others)
	}
}

func TestGroupWaitsForEveryTask(t *testing.T) {
	var running atomic.Int32
	// slowStop takes a while to stop, as a server draining connections
	// does; Group must not return before it has.
	slowStop := func(ctx context.Context) error {
		defer running.Add(-1)
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond)
		return nil
	}
	tasks := []run.Task{slowStop, slowStop, slowStop, failNow}
	running.Store(int32(len(tasks) - 1))
	if err := run.Group(context.Background(), tasks...); !errors.Is(err, errFail) {
		t.Errorf("got %v, want %v", err, errFail)
	}
	if n := running.Load(); n != 0 {
		t.Errorf("got %d tasks still running after Group returned, want 0", n)
	}
}

func TestGroupRejectsNilTask(t *testing.T) {
	var started atomic.Bool
	first := func(ctx context.Context) error { started.Store(true); return nil }
	err := run.Group(context.Background(), first, nil)
	const want = "run: task 1 is nil"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	if started.Load() {
		t.Error("got task 0 started, want no task started")
	}
}

// TestGroupDoesNotRecoverPanics pins the decision that a panicking task
// crashes the process: it runs itself in a child process that must die of
// the panic.
func TestGroupDoesNotRecoverPanics(t *testing.T) {
	const env = "RUN_TEST_PANIC_CHILD"
	if os.Getenv(env) == "1" {
		_ = run.Group(context.Background(), stopClean, func(context.Context) error { panic("boom") })
		t.Fatal("got Group returning after a panic, want a crash")
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGroupDoesNotRecoverPanics$", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 2 {
		t.Fatalf("got child error %v, want exit status 2 (a panic); output:\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("panic: boom")) {
		t.Errorf("got child output without %q:\n%s", "panic: boom", out)
	}
}

func ExampleGroup() {
	ctx, stop := context.WithCancel(context.Background())
	server := func(ctx context.Context) error {
		<-ctx.Done() // serve until told to stop
		fmt.Println("server stopped")
		return nil
	}
	watcher := func(context.Context) error {
		return errors.New("watch: store unreachable")
	}
	defer stop()
	fmt.Println(run.Group(ctx, server, watcher))
	// Output:
	// server stopped
	// watch: store unreachable
}
