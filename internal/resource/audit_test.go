package resource_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// auditFailing fails every Txn writing under /audit/.
type auditFailing struct{ store.Store }

func (s auditFailing) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	for _, op := range ops {
		if strings.HasPrefix(op.Key, audit.Prefix) {
			return 0, errors.New("injected: disk full")
		}
	}
	return s.Store.Txn(ctx, cmps, ops)
}

func TestAuditedWrites(t *testing.T) {
	f := newFixture(t)
	ctx := audit.WithRequester(context.Background(), audit.Requester{Actor: "alice", Source: "192.0.2.1"})
	log, err := audit.Open(ctx, audit.Config{Store: f.store, Keys: keymanager.NewMemory(), Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	res := f.res.WithAudit(log)
	if _, err := res.Apply(ctx, decode(t, policy("shop", "a", "GET"), policy("shop", "b", "GET"))); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Apply(ctx, decode(t, policy("shop", "a", "GET"))); err != nil { // unchanged
		t.Fatal(err)
	}
	if _, err := res.Delete(ctx, []resource.Result{result("shop", "a", ""), result("shop", "gone", "")}); err != nil {
		t.Fatal(err)
	}
	entries, _, err := log.Tail(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Actor+" "+e.Source+" "+e.Action+" "+e.Namespace+"/"+e.Name+" "+e.Outcome)
	}
	want := "alice 192.0.2.1 apply shop/a created\nalice 192.0.2.1 apply shop/b created\nalice 192.0.2.1 delete shop/a deleted"
	if strings.Join(got, "\n") != want {
		t.Errorf("got entries\n%s\nwant\n%s", strings.Join(got, "\n"), want)
	}
	if entries[2].Before != entries[0].After || entries[2].After != "" {
		t.Errorf("delete digests: got before %q after %q, want the created document's and none", entries[2].Before, entries[2].After)
	}

	// Without a requester, the actor is "system".
	if _, err := res.Apply(context.Background(), decode(t, policy("shop", "c", "GET"))); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := log.Tail(ctx, 1); e[0].Actor != audit.ActorSystem {
		t.Errorf("got actor %q, want system", e[0].Actor)
	}
}

func TestAuditUnavailableAppliesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bad := auditFailing{f.store}
	log, err := audit.Open(ctx, audit.Config{Store: bad, Keys: keymanager.NewMemory(), Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	res := resource.New(bad, f.clock).WithAudit(log)
	_, err = res.Apply(ctx, decode(t, policy("shop", "a", "GET")))
	if !errors.Is(err, audit.ErrUnavailable) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("apply: got %v, want ErrUnavailable saying why", err)
	}
	f.apply(t, policy("shop", "b", "GET")) // unaudited, through the real store
	rev := f.revision(t)
	_, err = res.Delete(ctx, []resource.Result{result("shop", "b", "")})
	if !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("delete: got %v, want ErrUnavailable", err)
	}
	if got := f.revision(t); got != rev {
		t.Errorf("got revision %d after refused writes, want %d: something was written", got, rev)
	}
	objs, _, err := f.res.List(ctx, kind, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Errorf("got %d policies, want only b", len(objs))
	}
}
