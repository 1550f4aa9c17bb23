package etcd_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/etcd"
	"github.com/bulwarkmesh/bulwark/internal/store/etcd/etcdtest"
	"github.com/bulwarkmesh/bulwark/internal/store/storetest"
)

func open(t *testing.T, s etcdtest.Server, prefix string) *etcd.Store {
	t.Helper()
	st, err := etcd.Open(t.Context(), etcd.Config{Endpoints: []string{s.Endpoint}, TLS: s.TLS, AllowInsecure: s.TLS == nil, Prefix: prefix})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestContract runs the store contract suite on one etcd with mTLS, each
// store under a prefix of its own (the suite's subtests run one at a
// time, so nothing else writes while one runs).
func TestContract(t *testing.T) {
	srv := etcdtest.Start(t, true)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, srv, fmt.Sprintf("/contract/%d/", n.Add(1)))
	})
}

func TestOpenRefuses(t *testing.T) {
	srv := etcdtest.Start(t, true)
	for _, tc := range []struct {
		name string
		cfg  etcd.Config
		want string
	}{
		{"no endpoints", etcd.Config{AllowInsecure: true}, "no endpoints"},
		{"no tls", etcd.Config{Endpoints: []string{srv.Endpoint}}, "TLS is required"},
		{"bad prefix", etcd.Config{Endpoints: []string{srv.Endpoint}, TLS: srv.TLS, Prefix: "/x"}, "must end in /"},
		{"no client certificate", etcd.Config{Endpoints: []string{srv.Endpoint}, TLS: &tls.Config{RootCAs: srv.TLS.RootCAs}, DialTimeout: 2 * time.Second}, "reach"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := etcd.Open(t.Context(), tc.cfg)
			if err == nil {
				st.Close()
				t.Fatalf("Open: no error, want one with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestPrefixIsolates: two stores on one etcd see only their own keys.
func TestPrefixIsolates(t *testing.T) {
	srv := etcdtest.Start(t, false)
	a, b := open(t, srv, "/mesh-a/"), open(t, srv, "/mesh-b/")
	if _, err := store.Put(t.Context(), a, "/k", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(t.Context(), "/k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b.Get of a's key: got %v, want ErrNotFound", err)
	}
	kvs, _, err := b.List(t.Context(), "")
	if err != nil || len(kvs) != 0 {
		t.Errorf("b.List: got %v %v, want nothing", kvs, err)
	}
}

// TestReplicasCompareAndSwap: two Stores on the same prefix (two control
// plane replicas) race 50 writers on one key with compare-and-swap:
// every increment lands exactly once.
func TestReplicasCompareAndSwap(t *testing.T) {
	srv := etcdtest.Start(t, false)
	replicas := []*etcd.Store{open(t, srv, "/ha/"), open(t, srv, "/ha/")}
	ctx := t.Context()
	if _, err := store.Put(ctx, replicas[0], "/counter", []byte("0")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conflicts atomic.Int64
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := replicas[i%2]
			for {
				kv, err := s.Get(ctx, "/counter")
				if err != nil {
					t.Error(err)
					return
				}
				var n int
				fmt.Sscan(string(kv.Value), &n)
				_, err = s.Txn(ctx, []store.Cmp{{Key: "/counter", ModRevision: kv.ModRevision}},
					[]store.Op{{Key: "/counter", Value: []byte(fmt.Sprint(n + 1))}})
				if errors.Is(err, store.ErrConflict) {
					conflicts.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
				}
				return
			}
		}()
	}
	wg.Wait()
	kv, err := replicas[1].Get(ctx, "/counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "50" {
		t.Errorf("counter: got %s, want 50 (lost updates)", kv.Value)
	}
	t.Logf("%d conflicts retried", conflicts.Load())
}

// TestWatchCompacted: a watch from a revision the cluster compacted away
// is ErrCompacted; the caller lists again.
func TestWatchCompacted(t *testing.T) {
	srv := etcdtest.Start(t, false)
	s := open(t, srv, "/compact/")
	ctx := t.Context()
	first, err := store.Put(ctx, s, "/w/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	last, _ := store.Put(ctx, s, "/w/a", []byte("2"))
	store.Put(ctx, s, "/w/a", []byte("3"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Watch(ctx, "/w/", first); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("watch from a compacted revision: got %v, want ErrCompacted", err)
	}
	ch, err := s.Watch(ctx, "/w/", last)
	if err != nil {
		t.Fatalf("watch from the compaction revision: %v", err)
	}
	select {
	case ev := <-ch:
		if string(ev.KV.Value) != "3" {
			t.Errorf("event: got %q, want the write after the compaction", ev.KV.Value)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
}
