package audit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	st    store.Store
	keys  keymanager.KeyManager
	clock *clock.Fake
	log   *audit.Log
}

func newFixture(t testing.TB, every int) *fixture {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st, keys: keymanager.NewMemory(), clock: clock.NewFake(start)}
	f.log, err = audit.Open(context.Background(), audit.Config{Store: st, Keys: f.keys, Clock: f.clock, CheckpointEvery: every})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// appendN appends n apply entries, one per call.
func (f *fixture) appendN(t testing.TB, n int) {
	t.Helper()
	for i := range n {
		err := f.log.Append(context.Background(), audit.Entry{Actor: "alice", Action: audit.ActionApply,
			Kind: "AuthorizationPolicy", Namespace: "shop", Name: fmt.Sprintf("p%d", i), Outcome: "created"})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) export(t testing.TB) audit.Export {
	t.Helper()
	x, err := f.log.Export(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestAppendChains(t *testing.T) {
	f := newFixture(t, 4)
	f.appendN(t, 6)
	entries, head, err := f.log.Tail(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	// 6 entries and a checkpoint after the 4th write (the 5th entry).
	if got, want := head.Seq, uint64(7); got != want {
		t.Fatalf("head seq: got %d, want %d", got, want)
	}
	var actions []string
	prev := ""
	for i, e := range entries {
		if e.Seq != uint64(i+1) {
			t.Errorf("entry %d: got seq %d", i, e.Seq)
		}
		if e.Prev != prev {
			t.Errorf("entry %d: got prev %q, want %q", e.Seq, e.Prev, prev)
		}
		if e.Hash != audit.ComputeHash(e) {
			t.Errorf("entry %d: hash does not match", e.Seq)
		}
		if e.Time != start.Format(time.RFC3339Nano) {
			t.Errorf("entry %d: got time %q, want the fake clock's", e.Seq, e.Time)
		}
		prev = e.Hash
		actions = append(actions, e.Action)
	}
	want := []string{"apply", "apply", "apply", "apply", "checkpoint", "apply", "apply"}
	if diff := cmp.Diff(want, actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
	rep, err := f.log.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Entries != 7 || rep.Checkpoints != 1 || rep.LastCheckpoint != 5 {
		t.Errorf("got report %+v, want ok, 7 entries, 1 checkpoint at 5", rep)
	}
}

func TestEmptyLogVerifies(t *testing.T) {
	f := newFixture(t, 0)
	rep, err := f.log.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Entries != 0 {
		t.Errorf("got %+v, want ok and empty", rep)
	}
}

func TestCheckpointByTime(t *testing.T) {
	f := newFixture(t, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	armed := f.clock.TimerCreated()
	go func() { done <- f.log.Run(ctx) }()
	f.appendN(t, 3)
	<-armed
	next := f.clock.TimerCreated()
	f.clock.Advance(audit.DefaultCheckpointInterval)
	<-next // the next round: the checkpoint was written
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	head, err := f.log.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if head.Checkpoint != 4 || head.Seq != 4 {
		t.Errorf("got head %+v, want a checkpoint at 4", head)
	}
	// Nothing new: no second checkpoint.
	if err := f.log.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h, _ := f.log.Head(context.Background()); h.Seq != 4 {
		t.Errorf("got head seq %d after an idle checkpoint, want 4", h.Seq)
	}
}

// mutate returns a copy of x changed by fn.
func mutate(x audit.Export, fn func(x *audit.Export)) audit.Export {
	c := x
	c.Entries = append([]json.RawMessage{}, x.Entries...)
	for i := range c.Entries {
		c.Entries[i] = append(json.RawMessage{}, c.Entries[i]...)
	}
	c.Checkpoints = append([]json.RawMessage{}, x.Checkpoints...)
	c.Head = append(json.RawMessage{}, x.Head...)
	fn(&c)
	return c
}

// rewrite decodes entry i, changes it with fn, and re-encodes it with a
// correct hash (an attacker without the key redoing the chain).
func rewrite(t testing.TB, x *audit.Export, i int, fn func(e *audit.Entry)) {
	t.Helper()
	var e audit.Entry
	if err := json.Unmarshal(x.Entries[i], &e); err != nil {
		t.Fatal(err)
	}
	fn(&e)
	e.Hash = audit.ComputeHash(e)
	x.Entries[i] = audit.Canonical(e)
}

// rechain recomputes every hash, prev and the head from entry 0 on.
func rechain(t testing.TB, x *audit.Export) {
	t.Helper()
	prev := ""
	var last audit.Entry
	for i := range x.Entries {
		rewrite(t, x, i, func(e *audit.Entry) { e.Prev = prev; e.Seq = uint64(i + 1) })
		_ = json.Unmarshal(x.Entries[i], &last)
		prev = last.Hash
	}
	var h audit.Head
	_ = json.Unmarshal(x.Head, &h)
	h.Seq, h.Hash = last.Seq, last.Hash
	x.Head, _ = json.Marshal(h)
}

func otherKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerifyDetectsTampering(t *testing.T) {
	f := newFixture(t, 4)
	f.appendN(t, 8) // entries 1-4, checkpoint 5, 6-9, checkpoint 10
	x := f.export(t)
	if len(x.Entries) != 10 || len(x.Checkpoints) != 2 {
		t.Fatalf("got %d entries, %d checkpoints, want 10 and 2", len(x.Entries), len(x.Checkpoints))
	}
	f.appendN(t, 2) // 11, 12 after the last checkpoint
	x = f.export(t)

	tests := []struct {
		name    string
		fn      func(t *testing.T, x *audit.Export)
		wantSeq uint64
		want    string
	}{
		{"edited-byte", func(t *testing.T, x *audit.Export) {
			x.Entries[2] = []byte(strings.Replace(string(x.Entries[2]), `"alice"`, `"alicf"`, 1))
		}, 3, "hash does not match"},
		{"edited-key-case", func(t *testing.T, x *audit.Export) {
			x.Entries[2] = []byte(strings.Replace(string(x.Entries[2]), `"actor"`, `"Actor"`, 1))
		}, 3, "canonical"},
		{"edited-unreadable", func(t *testing.T, x *audit.Export) {
			x.Entries[6] = x.Entries[6][1:]
		}, 7, "unreadable"},
		{"edited-rehashed", func(t *testing.T, x *audit.Export) {
			rewrite(t, x, 1, func(e *audit.Entry) { e.Actor = "mallory" })
		}, 3, "does not follow"},
		{"deleted", func(t *testing.T, x *audit.Export) {
			x.Entries = append(x.Entries[:5], x.Entries[6:]...)
		}, 6, "missing"},
		{"reordered", func(t *testing.T, x *audit.Export) {
			x.Entries[6], x.Entries[7] = x.Entries[7], x.Entries[6]
		}, 7, "out of order"},
		{"truncated-head-kept", func(t *testing.T, x *audit.Export) {
			x.Entries = x.Entries[:11]
		}, 12, "truncation"},
		{"truncated-after-checkpoint-with-head", func(t *testing.T, x *audit.Export) {
			x.Entries = x.Entries[:8]
			rechain(t, x)
		}, 9, "truncation"},
		{"rewritten-history-rechained", func(t *testing.T, x *audit.Export) {
			rewrite(t, x, 1, func(e *audit.Entry) { e.Actor = "mallory" })
			rechain(t, x)
		}, 5, "does not match the checkpoint"},
		{"bad-signature", func(t *testing.T, x *audit.Export) {
			var cp audit.Checkpoint
			_ = json.Unmarshal(x.Checkpoints[0], &cp)
			cp.Signature[len(cp.Signature)-1] ^= 1
			x.Checkpoints[0], _ = json.Marshal(cp)
		}, 5, "signature"},
		{"forged-checkpoint", func(t *testing.T, x *audit.Export) {
			// History rewritten, then sealed with the attacker's key.
			rewrite(t, x, 1, func(e *audit.Entry) { e.Actor = "mallory" })
			rechain(t, x)
			var cp audit.Checkpoint
			_ = json.Unmarshal(x.Checkpoints[0], &cp)
			var e audit.Entry
			_ = json.Unmarshal(x.Entries[4], &e)
			cp.Hash = e.Hash
			k := otherKey(t)
			cp.Signature = signCheckpoint(t, k, cp)
			x.Checkpoints[0], _ = json.Marshal(cp)
		}, 5, "signature"},
		{"checkpoint-deleted", func(t *testing.T, x *audit.Export) {
			x.Checkpoints = x.Checkpoints[:1]
		}, 10, "no valid signed checkpoint"},
		{"appended-outside", func(t *testing.T, x *audit.Export) {
			var h audit.Head
			_ = json.Unmarshal(x.Head, &h)
			h.Seq = 11
			x.Head, _ = json.Marshal(h)
		}, 12, "after the head"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := mutate(x, func(c *audit.Export) { tt.fn(t, c) })
			rep := audit.Verify(bad, f.log.PublicKey())
			if rep.OK {
				t.Fatalf("got ok, want broken at %d", tt.wantSeq)
			}
			if rep.BadSeq != tt.wantSeq || !strings.Contains(rep.Problem, tt.want) {
				t.Errorf("got bad seq %d %q, want %d with %q", rep.BadSeq, rep.Problem, tt.wantSeq, tt.want)
			}
		})
	}
	t.Run("untouched", func(t *testing.T) {
		if rep := audit.Verify(x, f.log.PublicKey()); !rep.OK {
			t.Errorf("got %+v, want ok", rep)
		}
	})
}

// signCheckpoint signs cp as the log does, with k: the signed part is
// recomputed through a checkpoint-shaped document.
func signCheckpoint(t testing.TB, k *ecdsa.PrivateKey, cp audit.Checkpoint) []byte {
	t.Helper()
	digest := audit.CheckpointDigest(cp)
	sig, err := ecdsa.SignASN1(rand.Reader, k, digest)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestVerifyExportFile(t *testing.T) {
	f := newFixture(t, 3)
	f.appendN(t, 5)
	x := f.export(t)
	file, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&otherKey(t).PublicKey)
	wrongKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	edited := []byte(strings.Replace(string(file), `"p2"`, `"p9"`, 1))

	tests := []struct {
		name        string
		file, key   []byte
		wantOK      bool
		wantTrusted bool
		wantErr     string
	}{
		{"pinned", file, []byte(f.log.PublicKeyPEM()), true, false, ""},
		{"trusting-file", file, nil, true, true, ""},
		{"wrong-pinned-key", file, wrongKey, false, false, ""},
		{"edited-byte", edited, []byte(f.log.PublicKeyPEM()), false, false, ""},
		{"not-json", []byte("{"), nil, false, false, "export file"},
		{"wrong-format", []byte(`{"format":"x","publicKey":"","entries":[],"checkpoints":[]}`), nil, false, false, "format"},
		{"unknown-field", []byte(`{"format":"` + audit.ExportFormat + `","extra":1}`), nil, false, false, "unknown field"},
		{"bad-key", file, []byte("not a key"), false, false, "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, trusted, err := audit.VerifyExport(tt.file, tt.key)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got err %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK != tt.wantOK || trusted != tt.wantTrusted {
				t.Errorf("got ok %v trusted %v (%s), want %v %v", rep.OK, trusted, rep.Problem, tt.wantOK, tt.wantTrusted)
			}
		})
	}
}

func TestConcurrentAppendsMakeOneChain(t *testing.T) {
	f := newFixture(t, 50)
	// A second Log over the same store stands for another replica: its
	// appends meet the first's only in the store's compare-and-swap.
	replica, err := audit.Open(context.Background(), audit.Config{Store: f.st, Keys: f.keys, Clock: f.clock, CheckpointEvery: 50})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		l := f.log
		if w%2 == 1 {
			l = replica
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := l.Append(context.Background(), audit.Entry{Actor: fmt.Sprintf("w%d", w), Action: "apply", Name: fmt.Sprint(i)}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	rep, err := f.log.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("got %+v, want ok", rep)
	}
	if got, want := rep.Entries-rep.Checkpoints, writers*each; got != want {
		t.Errorf("got %d non-checkpoint entries, want %d", got, want)
	}
}

func TestTxnJoinsTheCallersWrite(t *testing.T) {
	f := newFixture(t, 0)
	ctx := context.Background()
	// A failed comparison of the caller's: nothing at all is written.
	_, err := f.log.Txn(ctx, []store.Cmp{{Key: "/resources/x", ModRevision: 99}}, []store.Op{{Key: "/resources/x", Value: []byte("v")}},
		audit.Entry{Actor: "alice", Action: audit.ActionApply})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("got %v, want ErrConflict", err)
	}
	if h, _ := f.log.Head(ctx); h.Seq != 0 {
		t.Errorf("got head seq %d after a conflict, want 0", h.Seq)
	}
	// The caller's write and its entry land together.
	if _, err := f.log.Txn(ctx, []store.Cmp{{Key: "/resources/x"}}, []store.Op{{Key: "/resources/x", Value: []byte("v")}},
		audit.Entry{Actor: "alice", Action: audit.ActionApply}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Get(ctx, "/resources/x"); err != nil {
		t.Errorf("caller's write: %v", err)
	}
	if h, _ := f.log.Head(ctx); h.Seq != 1 {
		t.Errorf("got head seq %d, want 1", h.Seq)
	}
}

// failingStore fails every Txn that writes under /audit/.
type failingStore struct{ store.Store }

func (s failingStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	for _, op := range ops {
		if strings.HasPrefix(op.Key, audit.Prefix) {
			return 0, errors.New("disk full")
		}
	}
	return s.Store.Txn(ctx, cmps, ops)
}

func TestUnwritableStoreIsUnavailable(t *testing.T) {
	f := newFixture(t, 0)
	l, err := audit.Open(context.Background(), audit.Config{Store: failingStore{f.st}, Keys: f.keys, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	err = l.Append(context.Background(), audit.Entry{Action: "apply"})
	if !errors.Is(err, audit.ErrUnavailable) || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("got %v, want ErrUnavailable saying why", err)
	}
}

func TestOpenValidates(t *testing.T) {
	f := newFixture(t, 0)
	tests := []struct {
		name string
		cfg  audit.Config
		want string
	}{
		{"no-store", audit.Config{Keys: f.keys}, "store"},
		{"no-keys", audit.Config{Store: f.st}, "keys"},
		{"negative-every", audit.Config{Store: f.st, Keys: f.keys, CheckpointEvery: -1}, "CheckpointEvery"},
		{"negative-interval", audit.Config{Store: f.st, Keys: f.keys, CheckpointInterval: -time.Second}, "CheckpointInterval"},
		{"bad-key-id", audit.Config{Store: f.st, Keys: f.keys, KeyID: "Bad Key"}, "audit key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := audit.Open(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

func TestKeyIsKeptAcrossOpens(t *testing.T) {
	f := newFixture(t, 2)
	f.appendN(t, 3)
	again, err := audit.Open(context.Background(), audit.Config{Store: f.st, Keys: f.keys, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	if again.PublicKeyPEM() != f.log.PublicKeyPEM() {
		t.Fatal("got a new audit key on the second open")
	}
	if rep, err := again.Verify(context.Background()); err != nil || !rep.OK {
		t.Errorf("got %+v, %v, want ok", rep, err)
	}
}

func TestEntryFieldsAreBounded(t *testing.T) {
	f := newFixture(t, 0)
	long := strings.Repeat("é", 2000)
	if err := f.log.Append(context.Background(), audit.Entry{Actor: long, Action: "apply", Detail: long}); err != nil {
		t.Fatal(err)
	}
	entries, _, err := f.log.Tail(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries[0].Actor) > 256 || len(entries[0].Detail) > 512 {
		t.Errorf("got actor %d bytes, detail %d bytes, want at most 256 and 512", len(entries[0].Actor), len(entries[0].Detail))
	}
	if rep, _ := f.log.Verify(context.Background()); !rep.OK {
		t.Errorf("got %+v, want ok (a clipped rune would break the canonical form)", rep)
	}
}

func TestVerifyWhileAppending(t *testing.T) {
	f := newFixture(t, 5)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			_ = f.log.Append(ctx, audit.Entry{Actor: "w", Action: "apply", Name: fmt.Sprint(i)})
		}
	}()
	for range 20 {
		rep, err := f.log.Verify(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK {
			t.Fatalf("a snapshot taken during appends is broken: %+v", rep)
		}
	}
	cancel()
	<-done
}

func TestContinues(t *testing.T) {
	f := newFixture(t, 3)
	f.appendN(t, 4)
	prev := f.export(t)
	f.appendN(t, 2)
	cur := f.export(t)
	if rep := audit.Continues(prev, cur); !rep.OK {
		t.Fatalf("a grown log: got %+v, want ok", rep)
	}
	// Someone with the store and the key rewrote entry 2 and everything
	// after it, and signed new checkpoints: Verify passes, Continues does
	// not.
	rewritten := mutate(cur, func(x *audit.Export) {
		rewrite(t, x, 1, func(e *audit.Entry) { e.Actor = "mallory" })
		rechain(t, x)
	})
	tests := []struct {
		name    string
		cur     audit.Export
		wantSeq uint64
		want    string
	}{
		{"truncated", mutate(cur, func(x *audit.Export) { x.Entries = x.Entries[:3] }), 4, "truncated"},
		{"rewritten", rewritten, 2, "rewritten"},
		{"checkpoint-gone", mutate(cur, func(x *audit.Export) { x.Checkpoints = nil }), 4, "checkpoint"},
		{"other-key", mutate(cur, func(x *audit.Export) { x.PublicKey = "other" }), 1, "public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := audit.Continues(prev, tt.cur)
			if rep.OK || rep.BadSeq != tt.wantSeq || !strings.Contains(rep.Problem, tt.want) {
				t.Errorf("got %+v, want bad seq %d with %q", rep, tt.wantSeq, tt.want)
			}
		})
	}
}
