// Package storetest owns the contract suite of store.Store: the behaviour
// every backend (bolt, etcd) must show, checked through the interface only.
//
// A backend's test calls Run with a function that opens a new, empty store:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := bolt.Open(filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// It is a test-support package: only tests import it.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bulwarkmesh/bulwark/internal/store"
)

// eventWait bounds the wait for a watch event or a channel close, so that
// a missing event fails the test with a message instead of hanging it. It
// is a hang guard, not a latency assertion.
const eventWait = 30 * time.Second

// equateEmpty treats nil and empty values (and lists) as equal: backends
// may return either for an empty value.
var equateEmpty = cmpopts.EquateEmpty()

// Run runs the contract suite. open returns a new, empty store that nothing
// else writes to, and arranges for it to be closed when the test ends (the
// suite closes some stores itself: Close is idempotent). The store's
// initial revision may be any value. Subtests do not run in parallel.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		test func(t *testing.T, open func(t *testing.T) store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutGet", testPutGet},
		{"ValuesAreCopies", testValuesAreCopies},
		{"LargeValue", testLargeValue},
		{"RevisionPerTxn", testRevisionPerTxn},
		{"CreateAndModRevision", testCreateAndModRevision},
		{"ListPrefix", testListPrefix},
		{"ListRevision", testListRevision},
		{"TxnCmp", testTxnCmp},
		{"TxnFailedCmpWritesNothing", testTxnFailedCmpWritesNothing},
		{"Delete", testDelete},
		{"TxnInvalid", testTxnInvalid},
		{"WatchFromRevision", testWatchFromRevision},
		{"WatchFromCurrentRevision", testWatchFromCurrentRevision},
		{"WatchListThenWatch", testWatchListThenWatch},
		{"WatchCancel", testWatchCancel},
		{"ConcurrentCAS", testConcurrentCAS},
		{"CancelledContext", testCancelledContext},
		{"CloseIdempotent", testCloseIdempotent},
		{"AfterClose", testAfterClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.test(t, open) })
	}
}

func testGetMissing(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustPut(t, s, "/a/b", "v")
	tests := []struct {
		name string
		key  string
	}{
		{"never_written", "/missing"},
		{"parent", "/a"},
		{"parent_dir", "/a/"},
		{"child", "/a/b/c"},
		{"empty_key", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Get(t.Context(), tt.key)
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Get(%q): got error %v, want ErrNotFound", tt.key, err)
			}
		})
	}
}

func testPutGet(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name  string
		key   string
		value []byte
	}{
		{"text", "/a", []byte("hello")},
		{"binary", "/bin", []byte{0, 1, 2, 0xff, 0}},
		{"empty_value", "/empty", nil},
		{"unicode_key", "/ключ/名前", []byte("v")},
		{"key_with_spaces_and_nul", "/a b\x00c", []byte("v")},
	}
	s := open(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev, err := store.Put(t.Context(), s, tt.key, tt.value)
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			got, err := s.Get(t.Context(), tt.key)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			want := store.KV{Key: tt.key, Value: tt.value, CreateRevision: rev, ModRevision: rev}
			if diff := cmp.Diff(want, got, equateEmpty); diff != "" {
				t.Errorf("Get(%q) (-want +got):\n%s", tt.key, diff)
			}
		})
	}
}

func testValuesAreCopies(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	in := []byte("original")
	rev := mustPut(t, s, "/k", string(in))
	ch, err := s.Watch(t.Context(), "/k", rev-1)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	value := []byte("original")
	if _, err := s.Txn(t.Context(), nil, []store.Op{{Key: "/k", Value: value}}); err != nil {
		t.Fatalf("Txn: %v", err)
	}
	copy(value, "CHANGED!") // the caller reuses its buffer

	got, err := s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if string(got.Value) != "original" {
		t.Errorf("Get after the caller changed its Op value: got %q, want %q", got.Value, "original")
	}
	copy(got.Value, "CHANGED!")
	kvs, _, err := s.List(t.Context(), "/k")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	copy(kvs[0].Value, "CHANGED!")
	for i := range 2 {
		ev := recv(t, ch)
		if string(ev.KV.Value) != "original" {
			t.Errorf("event %d value: got %q, want %q", i, ev.KV.Value, "original")
		}
		copy(ev.KV.Value, "CHANGED!")
	}
	// A second watcher sees the values unchanged by the first.
	ch2, err := s.Watch(t.Context(), "/k", rev-1)
	if err != nil {
		t.Fatalf("second Watch: %v", err)
	}
	for i := range 2 {
		if ev := recv(t, ch2); string(ev.KV.Value) != "original" {
			t.Errorf("second watcher, event %d value: got %q, want %q", i, ev.KV.Value, "original")
		}
	}
	got, err = s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if string(got.Value) != "original" {
		t.Errorf("Get after callers changed returned values: got %q, want %q", got.Value, "original")
	}
}

func testLargeValue(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	value := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range value {
		value[i] = byte(rng.Uint32())
	}
	if _, err := store.Put(t.Context(), s, "/big", value); err != nil {
		t.Fatalf("Put 1 MiB: %v", err)
	}
	got, err := s.Get(t.Context(), "/big")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !bytes.Equal(got.Value, value) {
		t.Errorf("Get 1 MiB value: got %d bytes not equal to the %d put", len(got.Value), len(value))
	}
}

func testRevisionPerTxn(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	rev0 := currentRev(t, s)
	steps := []struct {
		name string
		ops  []store.Op
	}{
		{"put_a", []store.Op{{Key: "/a", Value: []byte("1")}}},
		{"put_b", []store.Op{{Key: "/b", Value: []byte("1")}}},
		{"put_c_and_d", []store.Op{{Key: "/c", Value: []byte("1")}, {Key: "/d", Value: []byte("1")}}},
		{"update_a_delete_b", []store.Op{{Key: "/a", Value: []byte("2")}, {Key: "/b", Delete: true}}},
	}
	for i, step := range steps {
		rev, err := s.Txn(t.Context(), nil, step.ops)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if want := rev0 + int64(i) + 1; rev != want {
			t.Errorf("%s: got revision %d, want %d", step.name, rev, want)
		}
	}
	wantMod := map[string]int64{"/a": rev0 + 4, "/c": rev0 + 3, "/d": rev0 + 3}
	for key, want := range wantMod {
		kv, err := s.Get(t.Context(), key)
		if err != nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		if kv.ModRevision != want {
			t.Errorf("Get(%q).ModRevision: got %d, want %d", key, kv.ModRevision, want)
		}
	}
	if got, want := currentRev(t, s), rev0+4; got != want {
		t.Errorf("Txn with no ops: got revision %d, want %d", got, want)
	}
}

func testCreateAndModRevision(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	created := mustPut(t, s, "/k", "v1")
	mustPut(t, s, "/other", "x") // moves the revision between steps
	updated := mustPut(t, s, "/k", "v2")

	got, err := s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatalf("Get after update: %v", err)
	}
	want := store.KV{Key: "/k", Value: []byte("v2"), CreateRevision: created, ModRevision: updated}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after update (-want +got):\n%s", diff)
	}

	if _, err := store.Delete(t.Context(), s, "/k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(t.Context(), "/k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after delete: got error %v, want ErrNotFound", err)
	}

	recreated := mustPut(t, s, "/k", "v3")
	got, err = s.Get(t.Context(), "/k")
	if err != nil {
		t.Fatalf("Get after re-create: %v", err)
	}
	want = store.KV{Key: "/k", Value: []byte("v3"), CreateRevision: recreated, ModRevision: recreated}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after re-create (-want +got):\n%s", diff)
	}
}

func testListPrefix(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	// Written out of order so that sorting is observable.
	keys := []string{"/b/1", "/a/2", "/ab", "/a", "/a/1/x", "/a/1", "/a0"}
	revs := map[string]int64{}
	for _, key := range keys {
		revs[key] = mustPut(t, s, key, "v"+key)
	}
	tests := []struct {
		name   string
		prefix string
		want   []string
	}{
		{"dir", "/a/", []string{"/a/1", "/a/1/x", "/a/2"}},
		{"dir_without_slash", "/a", []string{"/a", "/a/1", "/a/1/x", "/a/2", "/a0", "/ab"}},
		{"sibling_boundary", "/ab", []string{"/ab"}},
		{"key_and_children", "/a/1", []string{"/a/1", "/a/1/x"}},
		{"other_dir", "/b/", []string{"/b/1"}},
		{"no_match", "/c/", nil},
		{"everything", "", []string{"/a", "/a/1", "/a/1/x", "/a/2", "/a0", "/ab", "/b/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := s.List(t.Context(), tt.prefix)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			var want []store.KV
			for _, key := range tt.want {
				want = append(want, store.KV{Key: key, Value: []byte("v" + key), CreateRevision: revs[key], ModRevision: revs[key]})
			}
			if diff := cmp.Diff(want, got, equateEmpty); diff != "" {
				t.Errorf("List(%q) (-want +got):\n%s", tt.prefix, diff)
			}
		})
	}
}

func testListRevision(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	steps := []struct {
		name string
		op   store.Op
	}{
		{"put_listed_key", store.Op{Key: "/l/a", Value: []byte("1")}},
		{"put_other_key", store.Op{Key: "/other", Value: []byte("1")}},
		{"delete_other_key", store.Op{Key: "/other", Delete: true}},
	}
	for _, step := range steps {
		rev, err := s.Txn(t.Context(), nil, []store.Op{step.op})
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		for _, prefix := range []string{"/l/", "/nothing/"} {
			_, got, err := s.List(t.Context(), prefix)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if got != rev {
				t.Errorf("after %s, List(%q): got revision %d, want %d", step.name, prefix, got, rev)
			}
		}
	}
}

func testTxnCmp(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		// cmps is built from the revision of "/x" (which exists) and
		// "/missing" (which does not).
		cmps    func(xRev int64) []store.Cmp
		wantErr error
	}{
		{"mod_revision_matches", func(x int64) []store.Cmp { return []store.Cmp{{Key: "/x", ModRevision: x}} }, nil},
		{"mod_revision_stale", func(x int64) []store.Cmp { return []store.Cmp{{Key: "/x", ModRevision: x - 1}} }, store.ErrConflict},
		{"mod_revision_future", func(x int64) []store.Cmp { return []store.Cmp{{Key: "/x", ModRevision: x + 1}} }, store.ErrConflict},
		{"zero_on_missing", func(int64) []store.Cmp { return []store.Cmp{{Key: "/missing"}} }, nil},
		{"zero_on_existing", func(int64) []store.Cmp { return []store.Cmp{{Key: "/x"}} }, store.ErrConflict},
		{"revision_on_missing", func(x int64) []store.Cmp { return []store.Cmp{{Key: "/missing", ModRevision: x}} }, store.ErrConflict},
		{"all_hold", func(x int64) []store.Cmp { return []store.Cmp{{Key: "/x", ModRevision: x}, {Key: "/missing"}} }, nil},
		{"one_fails", func(x int64) []store.Cmp {
			return []store.Cmp{{Key: "/x", ModRevision: x}, {Key: "/missing", ModRevision: x}}
		}, store.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			xRev := mustPut(t, s, "/x", "v")
			mustPut(t, s, "/y", "v") // so that xRev is not the latest
			before := currentRev(t, s)

			rev, err := s.Txn(t.Context(), tt.cmps(xRev), []store.Op{{Key: "/written", Value: []byte("w")}})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Txn: got error %v, want %v", err, tt.wantErr)
			}
			_, getErr := s.Get(t.Context(), "/written")
			if tt.wantErr != nil {
				if !errors.Is(getErr, store.ErrNotFound) {
					t.Errorf("Get of the op's key after a conflict: got error %v, want ErrNotFound", getErr)
				}
				if got := currentRev(t, s); got != before {
					t.Errorf("revision after a conflict: got %d, want %d", got, before)
				}
				return
			}
			if rev != before+1 {
				t.Errorf("Txn: got revision %d, want %d", rev, before+1)
			}
			if getErr != nil {
				t.Errorf("Get of the op's key: %v", getErr)
			}
		})
	}

	t.Run("cmps_without_ops", func(t *testing.T) {
		s := open(t)
		xRev := mustPut(t, s, "/x", "v")
		if rev, err := s.Txn(t.Context(), []store.Cmp{{Key: "/x", ModRevision: xRev}}, nil); err != nil || rev != xRev {
			t.Errorf("holding cmp, no ops: got (%d, %v), want (%d, nil)", rev, err, xRev)
		}
		if _, err := s.Txn(t.Context(), []store.Cmp{{Key: "/x"}}, nil); !errors.Is(err, store.ErrConflict) {
			t.Errorf("failing cmp, no ops: got error %v, want ErrConflict", err)
		}
	})
}

func testTxnFailedCmpWritesNothing(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	xRev := mustPut(t, s, "/t/x", "x1")
	zRev := mustPut(t, s, "/t/z", "z1")
	before, rev0, err := s.List(t.Context(), "/t/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	ch, err := s.Watch(t.Context(), "/t/", rev0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}

	_, err = s.Txn(t.Context(),
		[]store.Cmp{{Key: "/t/x", ModRevision: xRev}, {Key: "/t/z", ModRevision: zRev - 1}},
		[]store.Op{
			{Key: "/t/x", Value: []byte("x2")},
			{Key: "/t/y", Value: []byte("y1")},
			{Key: "/t/z", Delete: true},
		})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Txn with a failing cmp: got error %v, want ErrConflict", err)
	}
	after, rev, err := s.List(t.Context(), "/t/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if rev != rev0 {
		t.Errorf("revision after a conflict: got %d, want %d", rev, rev0)
	}
	if diff := cmp.Diff(before, after, equateEmpty); diff != "" {
		t.Errorf("keys after a conflict (-before +after):\n%s", diff)
	}
	// The next event is the marker: the failed Txn made none.
	marker := mustPut(t, s, "/t/marker", "m")
	if ev := recv(t, ch); ev.KV.Key != "/t/marker" || ev.KV.ModRevision != marker {
		t.Errorf("first event after a conflict: got %s at %d, want /t/marker at %d", ev.KV.Key, ev.KV.ModRevision, marker)
	}
}

func testDelete(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	put := mustPut(t, s, "/k", "v")

	del, err := store.Delete(t.Context(), s, "/k")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if del != put+1 {
		t.Errorf("Delete: got revision %d, want %d", del, put+1)
	}
	if _, err := s.Get(t.Context(), "/k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete: got error %v, want ErrNotFound", err)
	}

	tests := []struct {
		name string
		ops  []store.Op
	}{
		{"delete_missing", []store.Op{{Key: "/k", Delete: true}}},
		{"delete_never_written", []store.Op{{Key: "/never", Delete: true}}},
		{"delete_two_missing", []store.Op{{Key: "/k", Delete: true}, {Key: "/never", Delete: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev, err := s.Txn(t.Context(), nil, tt.ops)
			if err != nil {
				t.Fatalf("Txn: %v", err)
			}
			if rev != del {
				t.Errorf("Txn deleting missing keys: got revision %d, want %d (unchanged)", rev, del)
			}
		})
	}

	t.Run("delete_missing_with_put", func(t *testing.T) {
		rev, err := s.Txn(t.Context(), nil, []store.Op{{Key: "/k", Delete: true}, {Key: "/p", Value: []byte("v")}})
		if err != nil {
			t.Fatalf("Txn: %v", err)
		}
		if rev != del+1 {
			t.Errorf("Txn: got revision %d, want %d", rev, del+1)
		}
	})
}

func testTxnInvalid(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		cmps []store.Cmp
		ops  []store.Op
	}{
		{"duplicate_put", nil, []store.Op{{Key: "/d", Value: []byte("1")}, {Key: "/d", Value: []byte("2")}}},
		{"duplicate_put_delete", nil, []store.Op{{Key: "/d", Value: []byte("1")}, {Key: "/d", Delete: true}}},
		{"duplicate_among_others", nil, []store.Op{{Key: "/a", Value: []byte("1")}, {Key: "/d", Value: []byte("1")}, {Key: "/b", Value: []byte("1")}, {Key: "/d", Delete: true}}},
		{"empty_key_put", nil, []store.Op{{Key: "/a", Value: []byte("1")}, {Key: "", Value: []byte("1")}}},
		{"empty_key_delete", nil, []store.Op{{Key: "", Delete: true}}},
		{"empty_key_cmp", []store.Cmp{{Key: ""}}, []store.Op{{Key: "/a", Value: []byte("1")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			before := currentRev(t, s)
			_, err := s.Txn(t.Context(), tt.cmps, tt.ops)
			if err == nil || errors.Is(err, store.ErrConflict) {
				t.Fatalf("Txn: got error %v, want a validation error", err)
			}
			kvs, rev, err := s.List(t.Context(), "")
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(kvs) != 0 || rev != before {
				t.Errorf("after a rejected Txn: got %d keys at revision %d, want 0 at %d", len(kvs), rev, before)
			}
		})
	}
}

func testWatchFromRevision(t *testing.T, open func(t *testing.T) store.Store) {
	// The fixture is five Txns; each case watches "/w/" from after the
	// first txns of them, and then sees a live change.
	fixture := [][]store.Op{
		{{Key: "/w/a", Value: []byte("a1")}},
		{{Key: "/other", Value: []byte("o")}},
		{{Key: "/w/b", Value: []byte("b1")}},
		{{Key: "/w/b", Delete: true}, {Key: "/w/a", Value: []byte("a2")}},
		{{Key: "/wx", Value: []byte("outside the prefix")}},
	}
	// all is the events of fixture, at revisions relative to the
	// store's first.
	all := []store.Event{
		{Type: store.EventPut, KV: store.KV{Key: "/w/a", Value: []byte("a1"), CreateRevision: 1, ModRevision: 1}},
		{Type: store.EventPut, KV: store.KV{Key: "/w/b", Value: []byte("b1"), CreateRevision: 3, ModRevision: 3}},
		{Type: store.EventDelete, KV: store.KV{Key: "/w/b", ModRevision: 4}},
		{Type: store.EventPut, KV: store.KV{Key: "/w/a", Value: []byte("a2"), CreateRevision: 1, ModRevision: 4}},
	}
	tests := []struct {
		name string
		// afterTxns is the number of fixture Txns the watch starts after.
		afterTxns int
		want      []store.Event
	}{
		{"from_start", 0, all},
		{"after_first", 1, all[1:]},
		{"between_changes", 2, all[1:]},
		{"after_last_match", 4, nil},
		{"after_everything", 5, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			rev0 := currentRev(t, s)
			for i, ops := range fixture {
				if _, err := s.Txn(t.Context(), nil, ops); err != nil {
					t.Fatalf("fixture Txn %d: %v", i, err)
				}
			}
			ch, err := s.Watch(t.Context(), "/w/", rev0+int64(tt.afterTxns))
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			var want []store.Event
			for _, ev := range tt.want {
				ev.KV.ModRevision += rev0
				if ev.KV.CreateRevision != 0 {
					ev.KV.CreateRevision += rev0
				}
				want = append(want, ev)
			}
			got := recvN(t, ch, len(want))
			if diff := cmp.Diff(want, got, equateEmpty); diff != "" {
				t.Errorf("catch-up events (-want +got):\n%s", diff)
			}
			// A live change comes next, after the catch-up.
			live := mustPut(t, s, "/w/live", "l")
			wantLive := store.Event{Type: store.EventPut, KV: store.KV{Key: "/w/live", Value: []byte("l"), CreateRevision: live, ModRevision: live}}
			if diff := cmp.Diff(wantLive, recv(t, ch)); diff != "" {
				t.Errorf("live event (-want +got):\n%s", diff)
			}
		})
	}
}

func testWatchFromCurrentRevision(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustPut(t, s, "/w/old", "1")
	mustPut(t, s, "/w/old", "2")
	_, rev, err := s.List(t.Context(), "/w/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	ch, err := s.Watch(t.Context(), "/w/", rev)
	if err != nil {
		t.Fatalf("Watch from the current revision: %v", err)
	}
	next := mustPut(t, s, "/w/new", "n")
	want := store.Event{Type: store.EventPut, KV: store.KV{Key: "/w/new", Value: []byte("n"), CreateRevision: next, ModRevision: next}}
	if diff := cmp.Diff(want, recv(t, ch)); diff != "" {
		t.Errorf("first event (-want +got):\n%s", diff)
	}
}

// testWatchListThenWatch lists then watches from the listed revision while
// a writer runs, as every consumer does, over and over: each watch must
// start with the revision right after the listed one (nothing lost or
// repeated between catch-up and live delivery), and one watcher that stays
// must see every revision exactly once, in order.
func testWatchListThenWatch(t *testing.T, open func(t *testing.T) store.Store) {
	const (
		writes   = 200
		watchers = 8
	)
	s := open(t)
	rev0 := currentRev(t, s)
	last := rev0 + writes

	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range writes {
			if _, err := store.Put(t.Context(), s, "/c/k"+strconv.Itoa(i%7), []byte(strconv.Itoa(i))); err != nil {
				t.Errorf("Put %d: %v", i, err)
				return
			}
		}
	})
	// The steady watcher.
	steady, err := s.Watch(t.Context(), "/c/", rev0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	wg.Go(func() {
		for want := rev0 + 1; want <= last; want++ {
			ev, ok := recvOK(t, steady)
			if !ok {
				t.Errorf("steady watcher: channel closed waiting for revision %d", want)
				return
			}
			if ev.KV.ModRevision != want {
				t.Errorf("steady watcher: got revision %d, want %d", ev.KV.ModRevision, want)
				return
			}
		}
	})
	// Watchers that list, watch, check the first event, and start over.
	for w := range watchers {
		wg.Go(func() {
			for {
				_, rev, err := s.List(t.Context(), "/c/")
				if err != nil {
					t.Errorf("watcher %d: List: %v", w, err)
					return
				}
				if rev == last {
					return
				}
				ctx, cancel := context.WithCancel(t.Context())
				ch, err := s.Watch(ctx, "/c/", rev)
				if err != nil {
					cancel()
					t.Errorf("watcher %d: Watch: %v", w, err)
					return
				}
				ev, ok := recvOK(t, ch)
				cancel()
				if !ok {
					t.Errorf("watcher %d: channel closed waiting for revision %d", w, rev+1)
					return
				}
				if ev.KV.ModRevision != rev+1 {
					t.Errorf("watcher %d from %d: got first revision %d, want %d", w, rev, ev.KV.ModRevision, rev+1)
					return
				}
			}
		})
	}
	wg.Wait()
}

func testWatchCancel(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		// end ends the watch: it cancels ctx or closes s.
		end func(cancel context.CancelFunc, s store.Store) error
	}{
		{"cancel_ctx", func(cancel context.CancelFunc, _ store.Store) error { cancel(); return nil }},
		{"close_store", func(_ context.CancelFunc, s store.Store) error { return s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			rev := currentRev(t, s)
			ch, err := s.Watch(ctx, "/", rev)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			mustPut(t, s, "/a", "1")
			if ev := recv(t, ch); ev.KV.Key != "/a" {
				t.Fatalf("event: got key %s, want /a", ev.KV.Key)
			}
			if err := tt.end(cancel, s); err != nil {
				t.Fatalf("ending the watch: %v", err)
			}
			waitClosed(t, ch)
		})
	}
}

func testConcurrentCAS(t *testing.T, open func(t *testing.T) store.Store) {
	const (
		workers    = 8
		iterations = 50
	)
	s := open(t)
	mustPut(t, s, "/counter", "0")
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		conflicts int
	)
	for w := range workers {
		wg.Go(func() {
			for range iterations {
				for {
					kv, err := s.Get(t.Context(), "/counter")
					if err != nil {
						t.Errorf("worker %d: Get: %v", w, err)
						return
					}
					n, err := strconv.Atoi(string(kv.Value))
					if err != nil {
						t.Errorf("worker %d: counter %q: %v", w, kv.Value, err)
						return
					}
					_, err = s.Txn(t.Context(),
						[]store.Cmp{{Key: "/counter", ModRevision: kv.ModRevision}},
						[]store.Op{{Key: "/counter", Value: []byte(strconv.Itoa(n + 1))}})
					if errors.Is(err, store.ErrConflict) {
						mu.Lock()
						conflicts++
						mu.Unlock()
						continue
					}
					if err != nil {
						t.Errorf("worker %d: Txn: %v", w, err)
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	kv, err := s.Get(t.Context(), "/counter")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got, want := string(kv.Value), strconv.Itoa(workers*iterations); got != want {
		t.Errorf("counter after %d increments (%d conflicts retried): got %s, want %s", workers*iterations, conflicts, got, want)
	}
}

func testCancelledContext(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustPut(t, s, "/k", "v")
	rev := currentRev(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tt := range operations() {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(ctx, s, rev); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled ctx: got error %v, want context.Canceled", tt.name, err)
			}
		})
	}
	// Nothing was written.
	if got := currentRev(t, s); got != rev {
		t.Errorf("revision after cancelled calls: got %d, want %d", got, rev)
	}
}

func testCloseIdempotent(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("sequential", func(t *testing.T) {
		s := open(t)
		for i := range 3 {
			if err := s.Close(); err != nil {
				t.Errorf("Close %d: got error %v, want nil", i, err)
			}
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		s := open(t)
		mustPut(t, s, "/k", "v")
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close %d: got error %v, want nil", i, err)
				}
			})
		}
		wg.Wait()
	})
}

func testAfterClose(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	mustPut(t, s, "/k", "v")
	rev := currentRev(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, tt := range operations() {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(t.Context(), s, rev); !errors.Is(err, store.ErrClosed) {
				t.Errorf("%s after Close: got error %v, want ErrClosed", tt.name, err)
			}
		})
	}
}

// operation is one call of each Store method (but Close) that returns its
// error; rev is the store's current revision.
type operation struct {
	name string
	call func(ctx context.Context, s store.Store, rev int64) error
}

// operations returns a call of every Store method but Close.
func operations() []operation {
	return []operation{
		{"Get", func(ctx context.Context, s store.Store, _ int64) error {
			_, err := s.Get(ctx, "/k")
			return err
		}},
		{"List", func(ctx context.Context, s store.Store, _ int64) error {
			_, _, err := s.List(ctx, "/")
			return err
		}},
		{"Txn_put", func(ctx context.Context, s store.Store, _ int64) error {
			_, err := store.Put(ctx, s, "/k2", []byte("v"))
			return err
		}},
		{"Txn_empty", func(ctx context.Context, s store.Store, _ int64) error {
			_, err := s.Txn(ctx, nil, nil)
			return err
		}},
		{"Watch", func(ctx context.Context, s store.Store, rev int64) error {
			_, err := s.Watch(ctx, "/", rev)
			return err
		}},
	}
}

// mustPut writes key and returns the revision.
func mustPut(t *testing.T, s store.Store, key, value string) int64 {
	t.Helper()
	rev, err := store.Put(t.Context(), s, key, []byte(value))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return rev
}

// currentRev returns the store revision, from a Txn with no ops.
func currentRev(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Txn(t.Context(), nil, nil)
	if err != nil {
		t.Fatalf("Txn with no ops: %v", err)
	}
	return rev
}

// recv returns the next event of ch; it fails the test if ch is closed.
func recv(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	ev, ok := recvOK(t, ch)
	if !ok {
		t.Fatal("watch channel closed, want an event")
	}
	return ev
}

// recvOK returns the next event of ch, or false when ch is closed. It is
// safe to call from any goroutine: on a hang it reports with t.Errorf.
func recvOK(t *testing.T, ch <-chan store.Event) (store.Event, bool) {
	t.Helper()
	timer := time.NewTimer(eventWait)
	defer timer.Stop()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-timer.C:
		t.Errorf("no watch event within %v (hang guard)", eventWait)
		return store.Event{}, false
	}
}

// recvN returns the next n events of ch.
func recvN(t *testing.T, ch <-chan store.Event, n int) []store.Event {
	t.Helper()
	var evs []store.Event
	for range n {
		evs = append(evs, recv(t, ch))
	}
	return evs
}

// waitClosed drains ch until it is closed.
func waitClosed(t *testing.T, ch <-chan store.Event) {
	t.Helper()
	timer := time.NewTimer(eventWait)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("watch channel not closed within %v (hang guard)", eventWait)
		}
	}
}
