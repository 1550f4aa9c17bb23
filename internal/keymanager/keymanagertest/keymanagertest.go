// Package keymanagertest owns the contract suite of keymanager.KeyManager:
// the behaviour every implementation (Disk, Memory, and later KMS-backed
// ones) must show. An implementation's tests call Run with a constructor of
// fresh, empty instances:
//
//	func TestDisk(t *testing.T) {
//		keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
//			d, err := keymanager.NewDisk(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return d
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

// testConcurrent runs generators of distinct ids, readers of a shared id
// and replacers of another id at once; run it with -race.
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
		wg.Add(3)
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
	}
	wg.Wait()
	for i := range workers {
		id := fmt.Sprintf("worker-%d", i)
		if _, err := km.GetKey(ctx, id); err != nil {
			t.Errorf("GetKey %s after the workers: %v", id, err)
		}
	}
}

// checkSigns signs a digest with s and verifies it with pub.
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
