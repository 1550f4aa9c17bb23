package keymanager_test

import (
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/keymanager/keymanagertest"
)

func TestDiskSealer(t *testing.T) {
	for _, kind := range secretKinds() {
		t.Run(kind.name, func(t *testing.T) {
			keymanagertest.RunSealer(t, func(t *testing.T) keymanager.Sealer {
				return newDisk(t, t.TempDir(), kind.secret(t))
			})
		})
	}
}

func TestMemorySealer(t *testing.T) {
	keymanagertest.RunSealer(t, func(*testing.T) keymanager.Sealer {
		return keymanager.NewMemory()
	})
}

// TestDiskSealerReopen: what a Disk sealed opens with a Disk reopened on
// the same dir and secret, and not with a Disk of another dir and secret,
// nor of the same secret in another dir (another salt, another KEK).
func TestDiskSealerReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	secret := newKeyFileSecret(t)
	sealed, err := newDisk(t, dir, secret).Seal(ctx, "/resources/Secret/shop/tls", []byte("tls.key"))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	got, err := newDisk(t, dir, secret).Open(ctx, "/resources/Secret/shop/tls", sealed)
	if err != nil || string(got) != "tls.key" {
		t.Fatalf("Open with the reopened Disk = %q, %v; want %q", got, err, "tls.key")
	}
	others := map[string]*keymanager.Disk{
		"another secret":                   newDisk(t, t.TempDir(), newKeyFileSecret(t)),
		"the same secret, another keyring": newDisk(t, t.TempDir(), secret),
	}
	for name, d := range others {
		if _, err := d.Open(ctx, "/resources/Secret/shop/tls", sealed); !errors.Is(err, keymanager.ErrUnseal) {
			t.Errorf("%s: Open error %v, want one wrapping ErrUnseal", name, err)
		}
	}
}

// TestDiskSealerNotAKeyFile: a sealed blob and a key file's block never
// open as each other (another additional data).
func TestDiskSealerNotAKeyFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := newDisk(t, dir, newKeyFileSecret(t))
	if _, err := d.GenerateKey(ctx, "root"); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	sealed, err := d.Seal(ctx, "root", []byte("x"))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if _, err := d.Open(ctx, "root", sealed); err != nil {
		t.Fatalf("Open: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("root.key is not PEM")
	}
	// The same format (version, nonce, ciphertext): only the additional
	// data differs.
	if _, err := d.Open(ctx, "root", block.Bytes); !errors.Is(err, keymanager.ErrUnseal) {
		t.Errorf("Open of a key file's block: error %v, want one wrapping ErrUnseal", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "root.key"), pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: sealed}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetKey(ctx, "root"); !errors.Is(err, keymanager.ErrCorrupt) {
		t.Errorf("GetKey of a sealed blob: error %v, want one wrapping ErrCorrupt", err)
	}
}
