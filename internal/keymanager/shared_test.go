package keymanager_test

import (
	"context"
	"crypto"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/keymanager/keymanagertest"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

func newBolt(t *testing.T) store.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newShared(t *testing.T, st store.Store, secret keymanager.Secret) *keymanager.Shared {
	t.Helper()
	km, err := keymanager.NewShared(context.Background(), st, "/keys/", secret)
	if err != nil {
		t.Fatalf("NewShared: %v", err)
	}
	return km
}

func TestSharedContract(t *testing.T) {
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		return newShared(t, newBolt(t), newKeyFileSecret(t))
	})
}

// TestSharedReplicas: two replicas with the same secret on one store share
// keys; one with another secret is refused before it touches a key; the
// store holds no key in the clear.
func TestSharedReplicas(t *testing.T) {
	st := newBolt(t)
	secret := newKeyFileSecret(t)
	// Both replicas start at once: they agree on one keyring.
	var a, b *keymanager.Shared
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a = newShared(t, st, secret) }()
	go func() { defer wg.Done(); b = newShared(t, st, secret) }()
	wg.Wait()
	ctx := context.Background()
	signer, err := a.GenerateKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.GetKey(ctx, "root")
	if err != nil {
		t.Fatalf("the other replica's GetKey: %v", err)
	}
	if !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(signer.Public()) {
		t.Errorf("replicas hold different keys")
	}
	if _, err := keymanager.NewShared(ctx, st, "/keys/", newKeyFileSecret(t)); !errors.Is(err, keymanager.ErrWrongSecret) {
		t.Errorf("another secret: got %v, want ErrWrongSecret", err)
	}
	kvs, _, err := st.List(ctx, "/keys/")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if strings.Contains(string(kv.Value), "PRIVATE KEY") && !strings.Contains(string(kv.Value), "ENCRYPTED") {
			t.Errorf("%s holds a key in the clear", kv.Key)
		}
	}
	// A key moved to another id does not decrypt (the id is bound).
	kv, _ := st.Get(ctx, "/keys/key/root")
	if _, err := store.Put(ctx, st, "/keys/key/other", kv.Value); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetKey(ctx, "other"); !errors.Is(err, keymanager.ErrCorrupt) {
		t.Errorf("a key copied to another id: got %v, want ErrCorrupt", err)
	}
}
