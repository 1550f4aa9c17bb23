package bolt

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// watcher is one Watch call.
type watcher struct {
	prefix string
	// after is the revision the watch starts after: later events with a
	// revision at or below it are not delivered.
	after int64
	ch    chan store.Event
	// stop unregisters the ctx callback.
	stop func() bool
}

// Watch delivers, in revision order, every change to keys with the prefix
// made after revision afterRev: first the changes still in history, then
// live ones. It returns store.ErrCompacted when afterRev is older than the
// history (always so for a revision older than the one at Open). The
// channel buffers Config.WatchBuffer events beyond the catch-up; when it is
// full the watcher is dropped and the channel closed, and the caller lists
// again. The channel is also closed when ctx is done or the Store closed.
// Each event's value is the receiver's.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if afterRev < 0 {
		return nil, fmt.Errorf("watch %s: negative revision %d", prefix, afterRev)
	}
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return nil, store.ErrClosed
	}

	// Catch-up and registration happen under one hold of mu, which
	// publish also holds: every event is either in the catch-up or
	// published to the registered watcher, never both or neither.
	s.mu.Lock()
	defer s.mu.Unlock()
	if afterRev < s.compacted {
		return nil, store.ErrCompacted
	}
	var backlog []store.Event
	first := sort.Search(s.history.len(), func(i int) bool {
		return s.history.at(i).KV.ModRevision > afterRev
	})
	for i := first; i < s.history.len(); i++ {
		if ev := s.history.at(i); strings.HasPrefix(ev.KV.Key, prefix) {
			backlog = append(backlog, ev)
		}
	}
	w := &watcher{
		prefix: prefix,
		after:  afterRev,
		ch:     make(chan store.Event, len(backlog)+s.buffer),
	}
	for _, ev := range backlog {
		w.ch <- clone(ev)
	}
	s.watchers[w] = struct{}{}
	w.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.removeLocked(w)
	})
	return w.ch, nil
}

// publish records the events of the Txn that made revision rev and
// delivers them to the watchers, without blocking: a watcher whose buffer
// is full is dropped. The caller holds writeMu, so revisions are published
// in order.
func (s *Store) publish(rev int64, events []store.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range events {
		if old, evicted := s.history.push(ev); evicted {
			s.compacted = max(s.compacted, old.KV.ModRevision)
		}
	}
	for w := range s.watchers {
		if rev <= w.after {
			continue
		}
		for _, ev := range events {
			if !strings.HasPrefix(ev.KV.Key, w.prefix) {
				continue
			}
			select {
			case w.ch <- clone(ev):
				continue
			default:
			}
			s.logger.Warn("store watcher dropped: buffer full",
				telemetry.KeyDetail, "prefix "+w.prefix, telemetry.KeyCount, cap(w.ch))
			s.removeLocked(w)
			break
		}
	}
}

// closeWatchers closes every watch channel, at Close.
func (s *Store) closeWatchers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.watchers {
		s.removeLocked(w)
	}
}

// removeLocked unregisters w and closes its channel, once. The caller holds
// mu.
func (s *Store) removeLocked(w *watcher) {
	if _, ok := s.watchers[w]; !ok {
		return
	}
	delete(s.watchers, w)
	close(w.ch)
	w.stop()
}

// clone returns ev with its own copy of the value: events in history are
// shared, the receiver's are not.
func clone(ev store.Event) store.Event {
	ev.KV.Value = bytes.Clone(ev.KV.Value)
	return ev
}

// ring is the watch history: the last max events, oldest first.
type ring struct {
	max int
	// buf grows to max, then is overwritten from start.
	buf   []store.Event
	start int
}

// push appends ev and returns the event it evicted, if any.
func (r *ring) push(ev store.Event) (store.Event, bool) {
	if len(r.buf) < r.max {
		r.buf = append(r.buf, ev)
		return store.Event{}, false
	}
	old := r.buf[r.start]
	r.buf[r.start] = ev
	r.start = (r.start + 1) % r.max
	return old, true
}

// len returns the number of events held.
func (r *ring) len() int { return len(r.buf) }

// at returns the i-th oldest event held.
func (r *ring) at(i int) store.Event { return r.buf[(r.start+i)%len(r.buf)] }
