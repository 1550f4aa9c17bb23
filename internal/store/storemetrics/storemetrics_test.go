package storemetrics_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
	"github.com/bulwarkmesh/bulwark/internal/store/storemetrics"
	"github.com/bulwarkmesh/bulwark/internal/store/storetest"
)

func openBolt(t *testing.T) store.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestContract: the decorator over bbolt passes the store contract suite.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := storemetrics.Wrap(openBolt(t), storemetrics.Config{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// values returns name's series on reg as "label=value,..." -> value
// (counter) or sample count (histogram).
func values(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for i, lp := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += lp.GetName() + "=" + lp.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				out[key] = float64(h.GetSampleCount())
			} else {
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestMetrics: each operation counts by op and result, with its time on
// the injected clock.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	fake := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s, err := storemetrics.Wrap(openBolt(t), storemetrics.Config{Registerer: reg, Clock: fake})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rev, err := store.Put(ctx, s, "/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "/missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(/missing): got %v, want ErrNotFound", err)
	}
	if _, err := s.Txn(ctx, []store.Cmp{{Key: "/a", ModRevision: rev + 7}}, []store.Op{{Key: "/a", Value: []byte("2")}}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Txn: got %v, want ErrConflict", err)
	}
	if _, err := s.Txn(ctx, nil, []store.Op{{Key: ""}}); err == nil {
		t.Fatal("Txn with an empty key: got nil, want an error")
	}
	if _, _, err := s.List(ctx, "/"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	if _, err := s.Watch(wctx, "/", rev); err != nil {
		t.Fatal(err)
	}
	cancel()
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	if _, err := s.Get(done, "/a"); err == nil {
		t.Fatal("Get with a done context: got nil, want an error")
	}

	want := map[string]float64{}
	for _, op := range []string{"get", "list", "txn", "watch"} {
		for _, r := range []string{"ok", "conflict", "not_found", "error"} {
			want["op="+op+",result="+r] = 0
		}
	}
	want["op=txn,result=ok"] = 1
	want["op=get,result=ok"] = 1
	want["op=get,result=not_found"] = 1
	want["op=get,result=error"] = 1
	want["op=txn,result=conflict"] = 1
	want["op=txn,result=error"] = 1
	want["op=list,result=ok"] = 1
	want["op=watch,result=ok"] = 1
	if diff := cmp.Diff(want, values(t, reg, "bulwark_store_operations_total")); diff != "" {
		t.Errorf("bulwark_store_operations_total (-want +got):\n%s", diff)
	}
	wantDur := map[string]float64{"op=get": 3, "op=list": 1, "op=txn": 3, "op=watch": 1}
	if diff := cmp.Diff(wantDur, values(t, reg, "bulwark_store_operation_duration_seconds")); diff != "" {
		t.Errorf("bulwark_store_operation_duration_seconds sample counts (-want +got):\n%s", diff)
	}
}

// TestWrapRequires: a missing store or registerer is an error, and a
// registerer that already has the metrics refuses a second decorator.
func TestWrapRequires(t *testing.T) {
	reg := prometheus.NewRegistry()
	tests := []struct {
		name string
		next store.Store
		cfg  storemetrics.Config
	}{
		{name: "no_store", cfg: storemetrics.Config{Registerer: reg}},
		{name: "no_registerer", next: openBolt(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := storemetrics.Wrap(tt.next, tt.cfg); err == nil {
				t.Error("got nil, want an error")
			}
		})
	}
	t.Run("registered_twice", func(t *testing.T) {
		if _, err := storemetrics.Wrap(openBolt(t), storemetrics.Config{Registerer: reg}); err != nil {
			t.Fatal(err)
		}
		if _, err := storemetrics.Wrap(openBolt(t), storemetrics.Config{Registerer: reg}); err == nil {
			t.Error("got nil, want an error")
		}
	})
}
