package keymanager_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/keymanager/keymanagertest"
)

func TestDisk(t *testing.T) {
	keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
		return newDisk(t, t.TempDir())
	})
}

func newDisk(t *testing.T, dir string) *keymanager.Disk {
	t.Helper()
	d, err := keymanager.NewDisk(dir)
	if err != nil {
		t.Fatalf("NewDisk: %v", err)
	}
	return d
}

func TestNewDiskCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "keys")
	newDisk(t, dir)
	for _, p := range []string{dir, filepath.Dir(dir)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), fs.FileMode(0o700); got != want {
			t.Errorf("mode of %s: got %v, want %v", p, got, want)
		}
	}
}

func TestNewDiskErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
	}{
		{"empty-path", ""},
		{"path-is-a-file", file},
		{"below-a-file", filepath.Join(file, "keys")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := keymanager.NewDisk(tt.dir); err == nil {
				t.Fatalf("NewDisk(%q): got no error, want one", tt.dir)
			}
		})
	}
}

func TestDiskKeyFile(t *testing.T) {
	dir := t.TempDir()
	d := newDisk(t, dir)
	ctx := context.Background()
	for i := range 2 { // create, then replace
		k, err := d.GenerateKey(ctx, "workload-root-1")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "workload-root-1.key")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), fs.FileMode(0o600); got != want {
			t.Errorf("write #%d: mode of %s: got %v, want %v", i, path, got, want)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		block, rest := pem.Decode(data)
		if block == nil || len(rest) != 0 {
			t.Fatalf("write #%d: got %d bytes that are not one PEM block, want one PKCS#8 PEM block", i, len(data))
		}
		if got, want := block.Type, "PRIVATE KEY"; got != want {
			t.Errorf("write #%d: PEM type: got %q, want %q", i, got, want)
		}
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatalf("write #%d: parse PKCS#8: %v", i, err)
		}
		ec, ok := parsed.(*ecdsa.PrivateKey)
		if !ok || ec.Curve != elliptic.P256() {
			t.Fatalf("write #%d: got key %T, want ECDSA P-256", i, parsed)
		}
		if !ec.PublicKey.Equal(k.Public()) {
			t.Errorf("write #%d: the file holds another key than the one returned", i)
		}
	}
}

func TestDiskNoTempFilesLeft(t *testing.T) {
	dir := t.TempDir()
	d := newDisk(t, dir)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "a", "c", "a"} {
		if _, err := d.GenerateKey(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"Invalid", "../a"} {
		if _, err := d.GenerateKey(ctx, id); err == nil {
			t.Fatalf("GenerateKey(%q): got no error, want one", id)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if diff := cmp.Diff([]string{"a.key", "b.key", "c.key"}, got); diff != "" {
		t.Errorf("files in the key dir (-want +got):\n%s", diff)
	}
}

func TestDiskInvalidIDStaysInDir(t *testing.T) {
	parent := t.TempDir()
	d := newDisk(t, filepath.Join(parent, "keys"))
	if _, err := d.GenerateKey(context.Background(), "../escape"); err == nil {
		t.Fatal("GenerateKey(\"../escape\"): got no error, want one")
	}
	if _, err := os.Stat(filepath.Join(parent, "escape.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat escape.key beside the key dir: got %v, want %v", err, fs.ErrNotExist)
	}
}

func TestDiskReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	k, err := newDisk(t, dir).GenerateKey(ctx, "operator-root-1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := newDisk(t, dir).GetKey(ctx, "operator-root-1")
	if err != nil {
		t.Fatalf("GetKey from a new Disk on the same dir: %v", err)
	}
	if !k.Public().(*ecdsa.PublicKey).Equal(got.Public()) {
		t.Fatal("GetKey from a new Disk on the same dir: got another key, want the generated one")
	}
}

func TestDiskCorruptedFile(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	tests := []struct {
		name string
		data []byte
	}{
		{"empty-file", nil},
		{"garbage", []byte("not a key at all\n")},
		{"truncated-pem", good[:len(good)/2]},
		{"sec1-block-type", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
		{"certificate-block-type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pkcs8})},
		{"bad-der", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8[:len(pkcs8)-5]})},
		{"trailing-data", append(bytes.Clone(good), "junk"...)},
		{"two-blocks", append(bytes.Clone(good), good...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "workload-root-1.key")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			d := newDisk(t, dir)
			_, err := d.GetKey(context.Background(), "workload-root-1")
			if err == nil {
				t.Fatal("GetKey: got no error, want one")
			}
			if errors.Is(err, keymanager.ErrNotFound) {
				t.Errorf("GetKey: got %v, want a corruption error, not %v", err, keymanager.ErrNotFound)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("GetKey: got error %q, want it to name %s", err, path)
			}
			for _, secret := range [][]byte{pkcs8, sec1} {
				if strings.Contains(err.Error(), fmt.Sprintf("%x", secret[len(secret)-16:])) {
					t.Errorf("GetKey: error %q contains key bytes", err)
				}
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, tt.data) {
				t.Errorf("GetKey changed the corrupted file: got %d bytes, want the original %d", len(after), len(tt.data))
			}
		})
	}
}

func ExampleDisk() {
	dir, err := os.MkdirTemp("", "bulwark-keys-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	keys, err := keymanager.NewDisk(dir)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if _, err := keys.GenerateKey(ctx, "workload-root-0a1b2c3d"); err != nil {
		panic(err)
	}
	signer, err := keys.GetKey(ctx, "workload-root-0a1b2c3d")
	if err != nil {
		panic(err)
	}
	fmt.Println(signer.Public().(*ecdsa.PublicKey).Curve.Params().Name)

	_, err = keys.GetKey(ctx, "missing")
	fmt.Println(errors.Is(err, keymanager.ErrNotFound))
	// Output:
	// P-256
	// true
}
