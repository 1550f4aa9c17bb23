package bolt_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
	"github.com/bulwarkmesh/bulwark/internal/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	})
}

// open opens the store at path and closes it when the test ends.
func open(t testing.TB, path string, cfg bolt.Config) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(path, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// put writes key and returns the revision.
func put(t testing.TB, s store.Store, key, value string) int64 {
	t.Helper()
	rev, err := store.Put(context.Background(), s, key, []byte(value))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return rev
}

// revision returns the store revision.
func revision(t testing.TB, s store.Store) int64 {
	t.Helper()
	rev, err := s.Txn(context.Background(), nil, nil)
	if err != nil {
		t.Fatalf("Txn with no ops: %v", err)
	}
	return rev
}

// drain returns the events of ch until it is closed. The events must be
// buffered already: it fails rather than wait for more.
func drain(t *testing.T, ch <-chan store.Event) []int64 {
	t.Helper()
	var revs []int64
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return revs
			}
			revs = append(revs, ev.KV.ModRevision)
		default:
			t.Fatalf("watch channel open after events at %v, want it closed", revs)
		}
	}
}

// buffered returns the revisions of the events already buffered in ch,
// and whether ch is closed.
func buffered(ch <-chan store.Event) ([]int64, bool) {
	var revs []int64
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return revs, true
			}
			revs = append(revs, ev.KV.ModRevision)
		default:
			return revs, false
		}
	}
}

func TestReopenKeepsDataAndRevision(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bulwark.db")
	s, err := bolt.Open(path, bolt.Config{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx := context.Background()
	created := put(t, s, "/k/a", "a1")
	put(t, s, "/k/b", "b1")
	if _, err := store.Delete(ctx, s, "/k/b"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	updated := put(t, s, "/k/a", "a2")
	want, wantRev, err := s.List(ctx, "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, path, bolt.Config{})
	got, gotRev, err := s.List(ctx, "")
	if err != nil {
		t.Fatalf("List after reopen: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keys after reopen (-before +after):\n%s", diff)
	}
	if gotRev != wantRev {
		t.Errorf("revision after reopen: got %d, want %d", gotRev, wantRev)
	}
	wantKV := store.KV{Key: "/k/a", Value: []byte("a2"), CreateRevision: created, ModRevision: updated}
	if diff := cmp.Diff([]store.KV{wantKV}, got); diff != "" {
		t.Errorf("stored keys (-want +got):\n%s", diff)
	}
	if rev := put(t, s, "/k/c", "c1"); rev != wantRev+1 {
		t.Errorf("first Put after reopen: got revision %d, want %d", rev, wantRev+1)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bulwark.db")
	open(t, path, bolt.Config{})

	s, err := bolt.Open(path, bolt.Config{LockTimeout: 100 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("second Open of a locked file: got nil error, want ErrLocked")
	}
	if !errors.Is(err, bolt.ErrLocked) {
		t.Errorf("second Open: got error %v, want ErrLocked", err)
	}
	want := "open store " + path + ": locked by another process (is another control plane using this data dir?)"
	if got := err.Error(); got != want {
		t.Errorf("second Open: got error %q, want %q", got, want)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		path    string
		cfg     bolt.Config
		wantErr string
	}{
		{"missing_parent_dir", filepath.Join(dir, "missing", "bulwark.db"), bolt.Config{}, "no such file or directory"},
		{"path_is_dir", dir, bolt.Config{}, "open store " + dir},
		{"negative_lock_timeout", filepath.Join(dir, "a.db"), bolt.Config{LockTimeout: -time.Second}, "LockTimeout"},
		{"negative_watch_history", filepath.Join(dir, "b.db"), bolt.Config{WatchHistory: -1}, "WatchHistory"},
		{"negative_watch_buffer", filepath.Join(dir, "c.db"), bolt.Config{WatchBuffer: -1}, "WatchBuffer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := bolt.Open(tt.path, tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Open: got nil error, want one containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Open: got error %q, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bulwark.db")
	open(t, path, bolt.Config{})
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("store file mode: got %v, want %v", got, want)
	}
}

func TestWatchCompacted(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		history int
		// txns are the sizes of the Txns written, one key per op.
		txns     []int
		afterRev int64
		wantErr  error
		wantRevs []int64
	}{
		{"within_history", 3, []int{1, 1, 1, 1, 1}, 2, nil, []int64{3, 4, 5}},
		{"just_evicted", 3, []int{1, 1, 1, 1, 1}, 1, store.ErrCompacted, nil},
		{"long_evicted", 3, []int{1, 1, 1, 1, 1}, 0, store.ErrCompacted, nil},
		{"current_revision", 3, []int{1, 1, 1, 1, 1}, 5, nil, nil},
		{"future_revision", 3, []int{1, 1, 1, 1, 1}, 7, nil, nil},
		{"txn_partly_evicted", 2, []int{3}, 0, store.ErrCompacted, nil},
		{"after_partly_evicted_txn", 2, []int{3, 1}, 1, nil, []int64{2}},
		{"history_fits", 10, []int{3, 1}, 0, nil, []int64{1, 1, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{WatchHistory: tt.history})
			for i, n := range tt.txns {
				var ops []store.Op
				for k := range n {
					ops = append(ops, store.Op{Key: "/k" + strconv.Itoa(k), Value: []byte(strconv.Itoa(i))})
				}
				if _, err := s.Txn(ctx, nil, ops); err != nil {
					t.Fatalf("Txn %d: %v", i, err)
				}
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Watch(wctx, "/", tt.afterRev)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Watch after %d: got error %v, want %v", tt.afterRev, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			got, _ := buffered(ch)
			if diff := cmp.Diff(tt.wantRevs, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("catch-up revisions (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWatchAfterReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bulwark.db")
	s, err := bolt.Open(path, bolt.Config{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for i := range 3 {
		put(t, s, "/k", strconv.Itoa(i))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open(t, path, bolt.Config{})

	tests := []struct {
		name     string
		afterRev int64
		wantErr  error
	}{
		{"from_start", 0, store.ErrCompacted},
		{"before_open", 2, store.ErrCompacted},
		{"at_open", 3, nil},
		{"future", 4, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			_, err := s.Watch(wctx, "/", tt.afterRev)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Watch after %d: got error %v, want %v", tt.afterRev, err, tt.wantErr)
			}
		})
	}

	// Changes after Open are served from history.
	put(t, s, "/k", "new")
	ch, err := s.Watch(ctx, "/", 3)
	if err != nil {
		t.Fatalf("Watch after 3: %v", err)
	}
	if got, _ := buffered(ch); !cmp.Equal(got, []int64{4}) {
		t.Errorf("catch-up after reopen: got revisions %v, want [4]", got)
	}
}

func TestWatchFutureRevision(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	put(t, s, "/k", "1")
	ch, err := s.Watch(context.Background(), "/", 2)
	if err != nil {
		t.Fatalf("Watch after the next revision: %v", err)
	}
	put(t, s, "/k", "2")
	put(t, s, "/k", "3")
	if got, _ := buffered(ch); !cmp.Equal(got, []int64{3}) {
		t.Errorf("Watch after 2 at revision 1: got revisions %v, want [3]", got)
	}
}

func TestWatchCatchUpLargerThanBuffer(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{WatchBuffer: 1})
	for i := range 10 {
		put(t, s, "/k", strconv.Itoa(i))
	}
	ch, err := s.Watch(context.Background(), "/", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	got, closed := buffered(ch)
	if want := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !cmp.Equal(got, want) || closed {
		t.Errorf("catch-up of 10 with WatchBuffer 1: got %v (closed %t), want %v (open)", got, closed, want)
	}
}

func TestSlowWatcherDropped(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{WatchBuffer: 2})
	slow, err := s.Watch(ctx, "/", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	fast, err := s.Watch(ctx, "/", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	// The writer is never blocked by slow: every Put returns (a blocked
	// writer would hang the test).
	var fastRevs []int64
	for i := range 5 {
		rev := put(t, s, "/k", strconv.Itoa(i))
		ev := <-fast
		fastRevs = append(fastRevs, ev.KV.ModRevision)
		if ev.KV.ModRevision != rev {
			t.Errorf("fast watcher: got revision %d, want %d", ev.KV.ModRevision, rev)
		}
	}
	if got, want := drain(t, slow), []int64{1, 2}; !cmp.Equal(got, want) {
		t.Errorf("slow watcher with WatchBuffer 2: got revisions %v then closed, want %v then closed", got, want)
	}
	if got, closed := buffered(fast); len(got) != 0 || closed {
		t.Errorf("fast watcher after the slow one was dropped: got %v (closed %t), want nothing (open)", got, closed)
	}
}

func TestConcurrentTxnEventOrder(t *testing.T) {
	const (
		writers = 4
		puts    = 25
	)
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	ch, err := s.Watch(ctx, "/", 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range puts {
				if _, err := store.Put(ctx, s, "/w"+strconv.Itoa(w), []byte(strconv.Itoa(i))); err != nil {
					t.Errorf("writer %d: Put: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for want := int64(1); want <= writers*puts; want++ {
		ev := <-ch
		if ev.KV.ModRevision != want {
			t.Fatalf("event: got revision %d, want %d", ev.KV.ModRevision, want)
		}
	}
}

func BenchmarkTxnPut(b *testing.B) {
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "bulwark.db"), bolt.Config{})
	value := make([]byte, 256)
	b.SetBytes(int64(len(value)))
	i := 0
	for b.Loop() {
		if _, err := store.Put(ctx, s, "/bench/"+strconv.Itoa(i%1000), value); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// fill writes n keys of 256-byte values under /bench/.
func fill(b *testing.B, s store.Store, n int) {
	b.Helper()
	ops := make([]store.Op, n)
	for i := range ops {
		ops[i] = store.Op{Key: "/bench/" + strconv.Itoa(100000+i), Value: make([]byte, 256)}
	}
	if _, err := s.Txn(context.Background(), nil, ops); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "bulwark.db"), bolt.Config{})
	fill(b, s, 1000)
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, "/bench/"+strconv.Itoa(100000+i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkList1000(b *testing.B) {
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "bulwark.db"), bolt.Config{})
	fill(b, s, 1000)
	put(b, s, "/other", "outside the prefix")
	for b.Loop() {
		kvs, _, err := s.List(ctx, "/bench/")
		if err != nil {
			b.Fatal(err)
		}
		if len(kvs) != 1000 {
			b.Fatalf("List: got %d keys, want 1000", len(kvs))
		}
	}
}
