// Package storemetrics owns the metrics of the control plane's store: a
// store.Store decorator that counts every operation by kind and result
// and times it, for any backend (bolt, etcd). It changes nothing in what
// the store does: every call, value and error passes through as is.
//
// Labels are fixed sets (op: get, list, txn, watch; result: ok, conflict,
// not_found, error): never a key, a prefix or a value.
package storemetrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// Values of the op label.
const (
	OpGet   = "get"
	OpList  = "list"
	OpTxn   = "txn"
	OpWatch = "watch"
)

// Values of the result label.
const (
	ResultOK       = "ok"
	ResultConflict = "conflict"
	ResultNotFound = "not_found"
	ResultError    = "error"
)

var (
	ops     = []string{OpGet, OpList, OpTxn, OpWatch}
	results = []string{ResultOK, ResultConflict, ResultNotFound, ResultError}
)

// Config configures Wrap.
type Config struct {
	// Registerer is where the metrics are registered. Required.
	Registerer prometheus.Registerer
	// Clock times the operations. Default: the wall clock.
	Clock clock.Clock
}

// Store is a store.Store whose operations are counted and timed.
type Store struct {
	next  store.Store
	clock clock.Clock

	counts    map[string]map[string]prometheus.Counter
	durations map[string]prometheus.Observer
}

// Interface guard.
var _ store.Store = (*Store)(nil)

// Wrap returns next with its operations recorded as
// bulwark_store_operations_total{op, result} and
// bulwark_store_operation_duration_seconds{op} on cfg.Registerer. Every
// series exists from the start. Close is passed on unrecorded.
func Wrap(next store.Store, cfg Config) (*Store, error) {
	if next == nil || cfg.Registerer == nil {
		return nil, errors.New("storemetrics: store and registerer are required")
	}
	counts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_store_operations_total",
		Help: "Operations on the control plane's store, by op (get, list, txn, watch) and result (ok, conflict, not_found, error).",
	}, []string{"op", "result"})
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "bulwark_store_operation_duration_seconds",
		Help: "Time the control plane's store took for an operation (for a watch, to start it), by op.",
		// 100µs to 10s: a bbolt read is sub-millisecond, a synced write
		// milliseconds, an etcd round trip more.
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
	}, []string{"op"})
	for _, c := range []prometheus.Collector{counts, durations} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("storemetrics: register: %w", err)
		}
	}
	s := &Store{
		next: next, clock: clock.OrReal(cfg.Clock),
		counts: map[string]map[string]prometheus.Counter{}, durations: map[string]prometheus.Observer{},
	}
	for _, op := range ops {
		s.counts[op] = map[string]prometheus.Counter{}
		for _, r := range results {
			s.counts[op][r] = counts.WithLabelValues(op, r)
		}
		s.durations[op] = durations.WithLabelValues(op)
	}
	return s, nil
}

// resultOf maps an operation's error to its result label.
func resultOf(err error) string {
	switch {
	case err == nil:
		return ResultOK
	case errors.Is(err, store.ErrConflict):
		return ResultConflict
	case errors.Is(err, store.ErrNotFound):
		return ResultNotFound
	}
	return ResultError
}

// record counts op, started at start, with its error.
func (s *Store) record(op string, start time.Time, err error) {
	s.durations[op].Observe(s.clock.Now().Sub(start).Seconds())
	s.counts[op][resultOf(err)].Inc()
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	start := s.clock.Now()
	kv, err := s.next.Get(ctx, key)
	s.record(OpGet, start, err)
	return kv, err
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	start := s.clock.Now()
	kvs, rev, err := s.next.List(ctx, prefix)
	s.record(OpList, start, err)
	return kvs, rev, err
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	start := s.clock.Now()
	rev, err := s.next.Txn(ctx, cmps, ops)
	s.record(OpTxn, start, err)
	return rev, err
}

// Watch implements store.Store. Only the start of the watch is recorded,
// not its events.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	start := s.clock.Now()
	ch, err := s.next.Watch(ctx, prefix, afterRev)
	s.record(OpWatch, start, err)
	return ch, err
}

// Close implements store.Store.
func (s *Store) Close() error { return s.next.Close() }
