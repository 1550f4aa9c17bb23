// Package run runs a process's long-lived tasks together: the first task to
// return stops the others, and the first error cancels all.
//
// Each composition root (bulwark control, proxy, gateway, up) builds its
// components and hands their Run methods to Group, which is what ties their
// lifetimes together:
//
//	err := run.Group(ctx, srv.Run, hub.Run, dashboard.Run)
//
// Group follows spire's util.RunTasks, with three differences: a task that
// returns nil also stops the group (a long-lived task that ends is as
// fatal to the process as one that fails), a cancelled parent context is a
// clean stop, not an error, and panics are not recovered (see Group).
package run

import (
	"context"
	"errors"
	"fmt"
)

// Task is a long-lived component's Run method: it returns when ctx is done
// (nil) or on failure (error).
type Task func(ctx context.Context) error

// Group runs tasks until the first returns; then cancels the others and
// waits for all. It returns the first non-nil error (a task returning nil
// before ctx is done also stops the group: nil error), ignoring
// context.Canceled from tasks stopped by the cancellation.
//
// In detail: errors are taken in the order the tasks return, so an error a
// task returns while stopping (after another task returned) is still
// reported. A task's error is ignored when it wraps context.Canceled or
// context.DeadlineExceeded and the group's context was already done when
// the task returned, because of the parent or of another task; before
// that, such an error is a failure like any other. When ctx is cancelled,
// every task stops and Group returns nil unless a task failed otherwise.
//
// Group returns only after every task has returned, so no task outlives it;
// a task that ignores its context blocks Group forever. With no tasks,
// Group returns nil at once. A nil task is an error, reported before any
// task starts.
//
// Group does not recover panics. A panicking task crashes the process, as
// a panic in any goroutine does: the panic is a bug, the state it left
// behind cannot be trusted, and the crash keeps the stack of the panic,
// which a recover that turned it into an error would lose.
func Group(ctx context.Context, tasks ...Task) error {
	for i, t := range tasks {
		if t == nil {
			return fmt.Errorf("run: task %d is nil", i)
		}
	}
	if len(tasks) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Buffered so that every task can report and exit even while Group is
	// not receiving.
	results := make(chan error, len(tasks))
	for _, t := range tasks {
		go func() {
			err := t(ctx)
			if err != nil && ctx.Err() != nil && isCancellation(err) {
				err = nil
			}
			results <- err
		}()
	}

	var first error
	for i := range tasks {
		err := <-results
		if i == 0 {
			cancel()
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// isCancellation reports whether err is what a task returns when its
// context is done.
func isCancellation(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
