package bolt_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// A consumer lists, then watches from the listed revision, and updates a key
// with compare-and-swap.
func Example() {
	dir, err := os.MkdirTemp("", "bulwark-store")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	s, err := bolt.Open(filepath.Join(dir, "bulwark.db"), bolt.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	if _, err := store.Put(ctx, s, "/services/web", []byte("v1")); err != nil {
		fmt.Println(err)
		return
	}
	kvs, rev, err := s.List(ctx, "/services/")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("listed %d at revision %d\n", len(kvs), rev)
	events, err := s.Watch(ctx, "/services/", rev)
	if err != nil {
		fmt.Println(err)
		return
	}

	// Update only if nobody changed the key since it was listed.
	cmps := []store.Cmp{{Key: "/services/web", ModRevision: kvs[0].ModRevision}}
	ops := []store.Op{{Key: "/services/web", Value: []byte("v2")}}
	if _, err := s.Txn(ctx, cmps, ops); err != nil {
		fmt.Println(err)
		return
	}
	// The same comparison now fails: the key has a newer ModRevision.
	if _, err := s.Txn(ctx, cmps, ops); err != nil {
		fmt.Println(err)
	}

	ev := <-events
	fmt.Printf("watched %s = %s at revision %d\n", ev.KV.Key, ev.KV.Value, ev.KV.ModRevision)
	// Output:
	// listed 1 at revision 1
	// store: transaction conflict
	// watched /services/web = v2 at revision 2
}
