// Package keymanagertest owns the contract suite of keymanager.KeyManager:
// the behaviour every implementation (Disk, Memory, and later KMS-backed
// ones) must show. An implementation's tests call Run with a constructor of
// fresh, empty instances:
//
//	func TestMemory(t *testing.T) {
//		keymanagertest.Run(t, func(*testing.T) keymanager.KeyManager {
//			return keymanager.NewMemory()
//		})
//	}
package keymanagertest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
)

// NewFunc returns a fresh, empty KeyManager for one test. It registers any
// cleanup with t.
type NewFunc func(t *testing.T) keymanager.KeyManager

// Run runs the contract suite against the KeyManager that newKM makes. Every
// case gets its own instance and runs as a subtest, so
// `go test -run 'TestDisk/Replace'` selects one.
func Run(t *testing.T, newKM NewFunc) {
	t.Helper()
	t.Run("GenerateThenGet", func(t *testing.T) { testGenerateThenGet(t, newKM(t)) })
	t.Run("Replace", func(t *testing.T) { testReplace(t, newKM(t)) })
	t.Run("IndependentIDs", func(t *testing.T) { testIndependentIDs(t, newKM(t)) })
	t.Run("Missing", func(t *testing.T) { testMissing(t, newKM(t)) })
	t.Run("InvalidID", func(t *testing.T) { testInvalidID(t, newKM) })
	t.Run("LongestID", func(t *testing.T) { testLongestID(t, newKM(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, newKM(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, newKM(t)) })
	t.Run("DeleteMissing", func(t *testing.T) { testDeleteMissing(t, newKM(t)) })
	t.Run("DeleteThenGenerate", func(t *testing.T) { testDeleteThenGenerate(t, newKM(t)) })
	t.Run("Import", func(t *testing.T) { testImport(t, newKM(t)) })
}

func testGenerateThenGet(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	generated, err := km.GenerateKey(ctx, "workload-root-1")
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	pub, ok := generated.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("GenerateKey: got public key %T, want ECDSA P-256", generated.Public())
	}
	for i := range 2 {
		got, err := km.GetKey(ctx, "workload-root-1")
		if err != nil {
			t.Fatalf("GetKey #%d: %v", i, err)
		}
		if g, w := fingerprint(got.Public()), fingerprint(pub); g != w {
			t.Fatalf("GetKey #%d: got public key %s, want %s", i, g, w)
		}
		// Each signer's signature verifies with the other's public key.
		checkSigns(t, got, pub)
		checkSigns(t, generated, got.Public())
	}
}

func testReplace(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	first, err := km.GenerateKey(ctx, "replaced")
	if err != nil {
		t.Fatalf("first GenerateKey: %v", err)
	}
	second, err := km.GenerateKey(ctx, "replaced")
	if err != nil {
		t.Fatalf("second GenerateKey: %v", err)
	}
	if fingerprint(first.Public()) == fingerprint(second.Public()) {
		t.Fatalf("second GenerateKey: got the same key as the first, want a new one")
	}
	got, err := km.GetKey(ctx, "replaced")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if g, w := fingerprint(got.Public()), fingerprint(second.Public()); g != w {
		t.Fatalf("GetKey after replace: got public key %s, want %s (the second key)", g, w)
	}
	checkSigns(t, got, second.Public())
}

func testIndependentIDs(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	a, err := km.GenerateKey(ctx, "key-a")
	if err != nil {
		t.Fatalf("GenerateKey key-a: %v", err)
	}
	if _, err := km.GenerateKey(ctx, "key-b"); err != nil {
		t.Fatalf("GenerateKey key-b: %v", err)
	}
	got, err := km.GetKey(ctx, "key-a")
	if err != nil {
		t.Fatalf("GetKey key-a: %v", err)
	}
	if g, w := fingerprint(got.Public()), fingerprint(a.Public()); g != w {
		t.Fatalf("GetKey key-a after generating key-b: got public key %s, want %s", g, w)
	}
}

func testMissing(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	if _, err := km.GetKey(ctx, "never-generated"); !errors.Is(err, keymanager.ErrNotFound) {
		t.Fatalf("GetKey of an empty key manager: got error %v, want one wrapping %v", err, keymanager.ErrNotFound)
	}
	if _, err := km.GenerateKey(ctx, "other"); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if _, err := km.GetKey(ctx, "never-generated"); !errors.Is(err, keymanager.ErrNotFound) {
		t.Fatalf("GetKey beside another key: got error %v, want one wrapping %v", err, keymanager.ErrNotFound)
	}
}

func testInvalidID(t *testing.T, newKM NewFunc) {
	tests := []struct {
		name string
		id   string
	}{
		{"empty", ""},
		{"uppercase", "Root"},
		{"slash", "a/b"},
		{"dotdot", ".."},
		{"parent-path", "../escape"},
		{"absolute-path", "/etc/passwd"},
		{"dot", "root.key"},
		{"space", "a b"},
		{"underscore", "a_b"},
		{"nul", "a\x00b"},
		{"non-ascii", "clé"},
		{"too-long", strings.Repeat("a", 65)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			km := newKM(t)
			ctx := context.Background()
			if _, err := km.GenerateKey(ctx, tt.id); err == nil {
				t.Errorf("GenerateKey(%q): got no error, want one", tt.id)
			}
			_, err := km.GetKey(ctx, tt.id)
			if err == nil {
				t.Fatalf("GetKey(%q): got no error, want one", tt.id)
			}
			if errors.Is(err, keymanager.ErrNotFound) {
				t.Errorf("GetKey(%q): got %v, want an invalid-id error, not %v", tt.id, err, keymanager.ErrNotFound)
			}
			if err := km.Delete(ctx, tt.id); err == nil {
				t.Errorf("Delete(%q): got no error, want one", tt.id)
			}
		})
	}
}

func testLongestID(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	id := strings.Repeat("a", 63) + "9"
	k, err := km.GenerateKey(ctx, id)
	if err != nil {
		t.Fatalf("GenerateKey of a 64-character id: %v", err)
	}
	got, err := km.GetKey(ctx, id)
	if err != nil {
		t.Fatalf("GetKey of a 64-character id: %v", err)
	}
	if g, w := fingerprint(got.Public()), fingerprint(k.Public()); g != w {
		t.Fatalf("GetKey: got public key %s, want %s", g, w)
	}
}

// testConcurrent runs generators of distinct ids, readers of a shared id,
// replacers of another id and deleters of their own ids at once; run it with
// -race.
func testConcurrent(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	shared, err := km.GenerateKey(ctx, "shared")
	if err != nil {
		t.Fatalf("GenerateKey shared: %v", err)
	}
	if _, err := km.GenerateKey(ctx, "churn"); err != nil {
		t.Fatalf("GenerateKey churn: %v", err)
	}
	const workers = 8
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(4)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("worker-%d", i)
			k, err := km.GenerateKey(ctx, id)
			if err != nil {
				t.Errorf("GenerateKey %s: %v", id, err)
				return
			}
			got, err := km.GetKey(ctx, id)
			if err != nil {
				t.Errorf("GetKey %s: %v", id, err)
				return
			}
			if g, w := fingerprint(got.Public()), fingerprint(k.Public()); g != w {
				t.Errorf("GetKey %s: got public key %s, want %s", id, g, w)
			}
		}()
		go func() {
			defer wg.Done()
			got, err := km.GetKey(ctx, "shared")
			if err != nil {
				t.Errorf("GetKey shared: %v", err)
				return
			}
			if g, w := fingerprint(got.Public()), fingerprint(shared.Public()); g != w {
				t.Errorf("GetKey shared: got public key %s, want %s", g, w)
			}
		}()
		go func() {
			defer wg.Done()
			// Readers of an id being replaced see a complete key,
			// old or new, never an error.
			if _, err := km.GenerateKey(ctx, "churn"); err != nil {
				t.Errorf("GenerateKey churn: %v", err)
			}
			if _, err := km.GetKey(ctx, "churn"); err != nil {
				t.Errorf("GetKey churn: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("deleted-%d", i)
			if _, err := km.GenerateKey(ctx, id); err != nil {
				t.Errorf("GenerateKey %s: %v", id, err)
				return
			}
			if err := km.Delete(ctx, id); err != nil {
				t.Errorf("Delete %s: %v", id, err)
				return
			}
			if _, err := km.GetKey(ctx, id); !errors.Is(err, keymanager.ErrNotFound) {
				t.Errorf("GetKey %s after Delete: got error %v, want one wrapping %v", id, err, keymanager.ErrNotFound)
			}
		}()
	}
	wg.Wait()
	for i := range workers {
		id := fmt.Sprintf("worker-%d", i)
		if _, err := km.GetKey(ctx, id); err != nil {
			t.Errorf("GetKey %s after the workers: %v", id, err)
		}
	}
}

func testDelete(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	kept, err := km.GenerateKey(ctx, "kept")
	if err != nil {
		t.Fatalf("GenerateKey kept: %v", err)
	}
	if _, err := km.GenerateKey(ctx, "deleted"); err != nil {
		t.Fatalf("GenerateKey deleted: %v", err)
	}
	if err := km.Delete(ctx, "deleted"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := km.GetKey(ctx, "deleted"); !errors.Is(err, keymanager.ErrNotFound) {
		t.Errorf("GetKey after Delete: got error %v, want one wrapping %v", err, keymanager.ErrNotFound)
	}
	got, err := km.GetKey(ctx, "kept")
	if err != nil {
		t.Fatalf("GetKey of another key after Delete: %v", err)
	}
	if g, w := fingerprint(got.Public()), fingerprint(kept.Public()); g != w {
		t.Errorf("GetKey of another key after Delete: got public key %s, want %s", g, w)
	}
	// Deleting again is not an error.
	if err := km.Delete(ctx, "deleted"); err != nil {
		t.Errorf("second Delete: got error %v, want nil", err)
	}
}

func testDeleteMissing(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	for i := range 2 {
		if err := km.Delete(ctx, "never-generated"); err != nil {
			t.Errorf("Delete #%d of a key never generated: got error %v, want nil", i, err)
		}
	}
}

func testDeleteThenGenerate(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	first, err := km.GenerateKey(ctx, "reused")
	if err != nil {
		t.Fatalf("first GenerateKey: %v", err)
	}
	if err := km.Delete(ctx, "reused"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	second, err := km.GenerateKey(ctx, "reused")
	if err != nil {
		t.Fatalf("GenerateKey after Delete: %v", err)
	}
	got, err := km.GetKey(ctx, "reused")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if g, w := fingerprint(got.Public()), fingerprint(second.Public()); g != w {
		t.Errorf("GetKey after Delete and GenerateKey: got public key %s, want %s (the new key)", g, w)
	}
	if fingerprint(first.Public()) == fingerprint(second.Public()) {
		t.Errorf("GenerateKey after Delete: got the deleted key back, want a new one")
	}
}

// checkSigns signs a digest with s and verifies it with pub.
func testImport(t *testing.T, km keymanager.KeyManager) {
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := km.ImportKey(ctx, "imported", key); err != nil {
		t.Fatalf("ImportKey: %v", err)
	}
	got, err := km.GetKey(ctx, "imported")
	if err != nil {
		t.Fatalf("GetKey after ImportKey: %v", err)
	}
	checkSigns(t, got, &key.PublicKey)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := km.ImportKey(ctx, "p384", p384); err == nil {
		t.Error("ImportKey of a P-384 key: got nil error, want one")
	}
	if _, err := km.ImportKey(ctx, "Bad_ID", key); err == nil {
		t.Error("ImportKey with an invalid id: got nil error, want one")
	}
}

func checkSigns(t *testing.T, s crypto.Signer, pub crypto.PublicKey) {
	t.Helper()
	digest := sha256.Sum256([]byte("bulwark keymanager contract"))
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	ecPub, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("got public key %T, want *ecdsa.PublicKey", pub)
	}
	if !ecdsa.VerifyASN1(ecPub, digest[:], sig) {
		t.Fatalf("signature does not verify with the key's public key")
	}
}

// fingerprint names a public key in failure messages: the SHA-256 of its
// SubjectPublicKeyInfo, never private material.
func fingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Sprintf("<unmarshalable %T: %v>", pub, err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}
