package keymanager_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/keymanager/keymanagertest"
)

// testPassphrase is the passphrase of the tests' data dirs.
const testPassphrase = "correct horse battery staple"

// secretKind makes a fresh Secret of one kind for a test.
type secretKind struct {
	name   string
	secret func(t *testing.T) keymanager.Secret
}

// secretKinds returns both kinds of Secret: the tests of Disk run with each.
func secretKinds() []secretKind {
	return []secretKind{
		{"passphrase", func(t *testing.T) keymanager.Secret { return passphraseSecret(t, testPassphrase) }},
		{"key-file", newKeyFileSecret},
	}
}

// passphraseSecret returns a Secret of p with the cheapest argon2id cost.
func passphraseSecret(t *testing.T, p string) keymanager.Secret {
	t.Helper()
	s, err := keymanager.PassphraseSecret(p)
	if err != nil {
		t.Fatalf("PassphraseSecret: %v", err)
	}
	return keymanager.CheapArgon2(s)
}

// newKeyFileSecret creates a key file in a temp dir and returns its Secret.
func newKeyFileSecret(t *testing.T) keymanager.Secret {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca-key")
	if err := keymanager.CreateKeyFile(path); err != nil {
		t.Fatalf("CreateKeyFile: %v", err)
	}
	s, err := keymanager.KeyFileSecret(path)
	if err != nil {
		t.Fatalf("KeyFileSecret: %v", err)
	}
	return s
}

func TestDisk(t *testing.T) {
	for _, kind := range secretKinds() {
		t.Run(kind.name, func(t *testing.T) {
			keymanagertest.Run(t, func(t *testing.T) keymanager.KeyManager {
				return newDisk(t, t.TempDir(), kind.secret(t))
			})
		})
	}
}

func newDisk(t *testing.T, dir string, secret keymanager.Secret) *keymanager.Disk {
	t.Helper()
	d, err := keymanager.NewDisk(dir, secret, nil)
	if err != nil {
		t.Fatalf("NewDisk: %v", err)
	}
	return d
}

// dirFiles returns the contents of every file in dir by name.
func dirFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(data)
	}
	return files
}

// writePlaintextKey writes a new key to <dir>/<id>.key as the release before
// encryption at rest did: a PKCS#8 "PRIVATE KEY" PEM block, mode 0600. It
// returns the key and its DER.
func writePlaintextKey(t *testing.T, dir, id string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, der := newPKCS8(t)
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, id+".key"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return key, der
}

func newPKCS8(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// keyMaterial returns encodings of a private key that must never be seen
// on disk, in errors or in logs: its PKCS#8 DER raw, base64 and hex, and its
// private scalar raw and hex.
func keyMaterial(t *testing.T, key crypto.Signer) map[string][]byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("got key %T, want *ecdsa.PrivateKey", key)
	}
	scalar, err := ec.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"pkcs8 der":        der,
		"pkcs8 der base64": []byte(base64.StdEncoding.EncodeToString(der)[:64]),
		"pkcs8 der hex":    []byte(hex.EncodeToString(der[len(der)-32:])),
		"scalar":           scalar,
		"scalar hex":       []byte(hex.EncodeToString(scalar)),
	}
}

// checkNoKeyMaterial fails when data holds any encoding of key.
func checkNoKeyMaterial(t *testing.T, what string, data []byte, key crypto.Signer) {
	t.Helper()
	for name, m := range keyMaterial(t, key) {
		if bytes.Contains(data, m) {
			t.Errorf("%s contains the key's %s", what, name)
		}
	}
}

// checkSamePublic fails when got is not the key of want.
func checkSamePublic(t *testing.T, what string, got crypto.Signer, want crypto.PublicKey) {
	t.Helper()
	if !want.(*ecdsa.PublicKey).Equal(got.Public()) {
		t.Errorf("%s: got another key, want the original one", what)
	}
}

// checkEncryptedFile fails unless path is mode 0600 and holds one encrypted
// key block and no material of key.
func checkEncryptedFile(t *testing.T, path string, key crypto.Signer) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), fs.FileMode(0o600); got != want {
		t.Errorf("mode of %s: got %v, want %v", path, got, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || len(rest) != 0 {
		t.Fatalf("%s: got %d bytes that are not one PEM block, want one", path, len(data))
	}
	if got, want := block.Type, "BULWARK ENCRYPTED PRIVATE KEY"; got != want {
		t.Errorf("%s: PEM type: got %q, want %q", path, got, want)
	}
	if len(block.Bytes) == 0 || block.Bytes[0] != 1 {
		t.Errorf("%s: got a block not starting with format version 1", path)
	}
	checkNoKeyMaterial(t, path, data, key)
	checkNoKeyMaterial(t, path+" (PEM body)", block.Bytes, key)
}

func TestNewDiskCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "keys")
	newDisk(t, dir, newKeyFileSecret(t))
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
	secret := newKeyFileSecret(t)
	tests := []struct {
		name   string
		dir    string
		secret keymanager.Secret
	}{
		{"empty-path", "", secret},
		{"path-is-a-file", file, secret},
		{"below-a-file", filepath.Join(file, "keys"), secret},
		{"zero-secret", t.TempDir(), keymanager.Secret{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := keymanager.NewDisk(tt.dir, tt.secret, nil); err == nil {
				t.Fatalf("NewDisk(%q): got no error, want one", tt.dir)
			}
		})
	}
}

func TestDiskFiles(t *testing.T) {
	for _, kind := range secretKinds() {
		t.Run(kind.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			d := newDisk(t, dir, kind.secret(t))
			ctx := context.Background()
			var keys []crypto.Signer
			for i := range 2 { // create, then replace
				k, err := d.GenerateKey(ctx, "workload-root-1")
				if err != nil {
					t.Fatal(err)
				}
				checkEncryptedFile(t, filepath.Join(dir, "workload-root-1.key"), k)
				keys = append(keys, k)
				if i == 1 && fingerprint(k) == fingerprint(keys[0]) {
					t.Error("second GenerateKey: got the first key again, want a new one")
				}
			}
			other, err := d.GenerateKey(ctx, "operator-root-1")
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, other)
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fi.Mode().Perm(), fs.FileMode(0o700); got != want {
				t.Errorf("mode of %s: got %v, want %v", dir, got, want)
			}
			files := dirFiles(t, dir)
			var names []string
			for name, data := range files {
				names = append(names, name)
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if got, want := fi.Mode().Perm(), fs.FileMode(0o600); got != want {
					t.Errorf("mode of %s: got %v, want %v", name, got, want)
				}
				for _, k := range keys {
					checkNoKeyMaterial(t, name, []byte(data), k)
				}
			}
			slices.Sort(names)
			if diff := cmp.Diff([]string{"keyring.json", "operator-root-1.key", "workload-root-1.key"}, names); diff != "" {
				t.Errorf("files in the key dir (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDiskNoTempFilesLeft(t *testing.T) {
	dir := t.TempDir()
	d := newDisk(t, dir, newKeyFileSecret(t))
	ctx := context.Background()
	for _, id := range []string{"a", "b", "a", "c", "a", "d"} {
		if _, err := d.GenerateKey(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"Invalid", "../a"} {
		if _, err := d.GenerateKey(ctx, id); err == nil {
			t.Fatalf("GenerateKey(%q): got no error, want one", id)
		}
		if err := d.Delete(ctx, id); err == nil {
			t.Fatalf("Delete(%q): got no error, want one", id)
		}
	}
	var got []string
	for name := range dirFiles(t, dir) {
		got = append(got, name)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{"a.key", "b.key", "c.key", "keyring.json"}, got); diff != "" {
		t.Errorf("files in the key dir (-want +got):\n%s", diff)
	}
}

func TestDiskInvalidIDStaysInDir(t *testing.T) {
	parent := t.TempDir()
	d := newDisk(t, filepath.Join(parent, "keys"), newKeyFileSecret(t))
	if _, err := d.GenerateKey(context.Background(), "../escape"); err == nil {
		t.Fatal("GenerateKey(\"../escape\"): got no error, want one")
	}
	if _, err := os.Stat(filepath.Join(parent, "escape.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat escape.key beside the key dir: got %v, want %v", err, fs.ErrNotExist)
	}
	if err := os.WriteFile(filepath.Join(parent, "outside.key"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(context.Background(), "../outside"); err == nil {
		t.Fatal("Delete(\"../outside\"): got no error, want one")
	}
	if _, err := os.Stat(filepath.Join(parent, "outside.key")); err != nil {
		t.Fatalf("stat outside.key beside the key dir after Delete: got %v, want it kept", err)
	}
}

func TestDiskReopen(t *testing.T) {
	for _, kind := range secretKinds() {
		t.Run(kind.name, func(t *testing.T) {
			dir := t.TempDir()
			secret := kind.secret(t)
			ctx := context.Background()
			k, err := newDisk(t, dir, secret).GenerateKey(ctx, "operator-root-1")
			if err != nil {
				t.Fatal(err)
			}
			before := dirFiles(t, dir)
			got, err := newDisk(t, dir, secret).GetKey(ctx, "operator-root-1")
			if err != nil {
				t.Fatalf("GetKey from a new Disk on the same dir: %v", err)
			}
			checkSamePublic(t, "GetKey from a new Disk on the same dir", got, k.Public())
			if diff := cmp.Diff(before, dirFiles(t, dir)); diff != "" {
				t.Errorf("files changed by reopening (-before +after):\n%s", diff)
			}
		})
	}
}

// TestDiskReopenWithProductionCost opens a keyring made with the cheapest
// argon2id cost with a Secret of the production cost: the stored cost is
// the one used.
func TestDiskReopenWithProductionCost(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	k, err := newDisk(t, dir, passphraseSecret(t, testPassphrase)).GenerateKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := keymanager.PassphraseSecret(testPassphrase)
	if err != nil {
		t.Fatal(err)
	}
	got, err := newDisk(t, dir, secret).GetKey(ctx, "root")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	checkSamePublic(t, "GetKey", got, k.Public())
}

func TestDiskWrongSecret(t *testing.T) {
	tests := []struct {
		name         string
		right, wrong func(t *testing.T) keymanager.Secret
	}{
		{
			"other-passphrase",
			func(t *testing.T) keymanager.Secret { return passphraseSecret(t, testPassphrase) },
			func(t *testing.T) keymanager.Secret { return passphraseSecret(t, testPassphrase+"!") },
		},
		{"other-key-file", newKeyFileSecret, newKeyFileSecret},
		{
			"key-file-for-passphrase",
			func(t *testing.T) keymanager.Secret { return passphraseSecret(t, testPassphrase) },
			newKeyFileSecret,
		},
		{
			"passphrase-for-key-file",
			newKeyFileSecret,
			func(t *testing.T) keymanager.Secret { return passphraseSecret(t, testPassphrase) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			right := tt.right(t)
			d := newDisk(t, dir, right)
			ctx := context.Background()
			k, err := d.GenerateKey(ctx, "workload-root-1")
			if err != nil {
				t.Fatal(err)
			}
			// A plaintext key file must not be migrated under a wrong secret.
			writePlaintextKey(t, dir, "plaintext")
			before := dirFiles(t, dir)

			_, err = keymanager.NewDisk(dir, tt.wrong(t), nil)
			if !errors.Is(err, keymanager.ErrWrongSecret) {
				t.Fatalf("NewDisk with a wrong secret: got error %v, want one wrapping %v", err, keymanager.ErrWrongSecret)
			}
			for _, want := range []string{"BULWARK_CA_KEY_PASSPHRASE", "--ca-key-file", "keyring.json"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("NewDisk with a wrong secret: got error %q, want it to mention %s", err, want)
				}
			}
			if diff := cmp.Diff(before, dirFiles(t, dir)); diff != "" {
				t.Errorf("files changed by NewDisk with a wrong secret (-before +after):\n%s", diff)
			}

			got, err := newDisk(t, dir, right).GetKey(ctx, "workload-root-1")
			if err != nil {
				t.Fatalf("GetKey with the right secret afterwards: %v", err)
			}
			checkSamePublic(t, "GetKey with the right secret afterwards", got, k.Public())
		})
	}
}

func TestDiskCorruptedFile(t *testing.T) {
	_, otherDER := newPKCS8(t)
	tests := []struct {
		name string
		// corrupt returns the damaged contents of a good encrypted file.
		corrupt func(good []byte, block *pem.Block) []byte
	}{
		{"empty-file", func([]byte, *pem.Block) []byte { return nil }},
		{"garbage", func([]byte, *pem.Block) []byte { return []byte("not a key at all\n") }},
		{"truncated-pem", func(good []byte, _ *pem.Block) []byte { return good[:len(good)/2] }},
		{"empty-block", func(_ []byte, b *pem.Block) []byte { return reencode(b, nil) }},
		{"version-only", func(_ []byte, b *pem.Block) []byte { return reencode(b, b.Bytes[:1]) }},
		{"truncated-nonce", func(_ []byte, b *pem.Block) []byte { return reencode(b, b.Bytes[:8]) }},
		{"truncated-ciphertext", func(_ []byte, b *pem.Block) []byte { return reencode(b, b.Bytes[:len(b.Bytes)-1]) }},
		{"flipped-nonce-bit", func(_ []byte, b *pem.Block) []byte { return reencode(b, flip(b.Bytes, 2)) }},
		{"flipped-ciphertext-bit", func(_ []byte, b *pem.Block) []byte { return reencode(b, flip(b.Bytes, 40)) }},
		{"flipped-tag-bit", func(_ []byte, b *pem.Block) []byte { return reencode(b, flip(b.Bytes, len(b.Bytes)-1)) }},
		{"unknown-version", func(_ []byte, b *pem.Block) []byte {
			body := bytes.Clone(b.Bytes)
			body[0] = 2
			return reencode(b, body)
		}},
		{"pem-headers", func(_ []byte, b *pem.Block) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: b.Type, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: b.Bytes})
		}},
		{"certificate-block-type", func(_ []byte, b *pem.Block) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
		}},
		{"sec1-block-type", func(_ []byte, b *pem.Block) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b.Bytes})
		}},
		{"trailing-data", func(good []byte, _ *pem.Block) []byte { return append(bytes.Clone(good), "junk"...) }},
		{"two-blocks", func(good []byte, _ *pem.Block) []byte { return append(bytes.Clone(good), good...) }},
		{"plaintext-bad-der", func([]byte, *pem.Block) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER[:len(otherDER)-5]})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			secret := newKeyFileSecret(t)
			d := newDisk(t, dir, secret)
			ctx := context.Background()
			const id = "workload-root-1"
			key, err := d.GenerateKey(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, id+".key")
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(good)
			data := tt.corrupt(good, block)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}

			_, err = d.GetKey(ctx, id)
			if !errors.Is(err, keymanager.ErrCorrupt) {
				t.Fatalf("GetKey: got error %v, want one wrapping %v", err, keymanager.ErrCorrupt)
			}
			if errors.Is(err, keymanager.ErrNotFound) {
				t.Errorf("GetKey: got %v, want a corruption error, not %v", err, keymanager.ErrNotFound)
			}
			for _, want := range []string{path, `"` + id + `"`} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("GetKey: got error %q, want it to name %s", err, want)
				}
			}
			checkNoKeyMaterial(t, "the error", []byte(err.Error()), key)
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, data) {
				t.Errorf("GetKey changed the corrupted file: got %d bytes, want the original %d", len(after), len(data))
			}
			// Nor does a restart touch it.
			before := dirFiles(t, dir)
			if _, err := keymanager.NewDisk(dir, secret, nil); err != nil {
				t.Fatalf("NewDisk beside a corrupted key file: %v", err)
			}
			if diff := cmp.Diff(before, dirFiles(t, dir)); diff != "" {
				t.Errorf("files changed by NewDisk (-before +after):\n%s", diff)
			}
		})
	}
}

// reencode returns a PEM block of b's type holding body.
func reencode(b *pem.Block, body []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: body})
}

// flip returns a copy of data with the lowest bit of byte i flipped.
func flip(data []byte, i int) []byte {
	out := bytes.Clone(data)
	out[i] ^= 1
	return out
}

// fingerprint names a key's public half in failure messages.
func fingerprint(k crypto.Signer) string {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return hex.EncodeToString(der[len(der)-8:])
}

func TestDiskCorruptedKeyring(t *testing.T) {
	tests := []struct {
		name string
		// corrupt returns damaged contents of a good passphrase keyring,
		// given as its bytes and decoded into a map.
		corrupt  func(t *testing.T, good []byte, fields map[string]any) []byte
		wantErr  error // nil: any error but ErrWrongSecret
		wantText string
	}{
		{"empty", func(*testing.T, []byte, map[string]any) []byte { return nil }, keymanager.ErrCorrupt, ""},
		{"garbage", func(*testing.T, []byte, map[string]any) []byte { return []byte("not json\n") }, keymanager.ErrCorrupt, ""},
		{"truncated", func(_ *testing.T, good []byte, _ map[string]any) []byte { return good[:len(good)/2] }, keymanager.ErrCorrupt, ""},
		{"trailing-data", func(_ *testing.T, good []byte, _ map[string]any) []byte { return append(bytes.Clone(good), "{}"...) }, keymanager.ErrCorrupt, ""},
		{"array", func(*testing.T, []byte, map[string]any) []byte { return []byte("[]") }, keymanager.ErrCorrupt, ""},
		{"unknown-field", withField("extra", 1), keymanager.ErrCorrupt, "extra"},
		{"version-missing", withField("version", nil), keymanager.ErrCorrupt, "version"},
		{"version-zero", withField("version", 0), keymanager.ErrCorrupt, "version"},
		{"later-version", withField("version", 2), nil, "later release"},
		{"salt-not-base64", withField("salt", "!!!not base64!!!"), keymanager.ErrCorrupt, "salt"},
		{"salt-too-short", withField("salt", base64.StdEncoding.EncodeToString(make([]byte, 16))), keymanager.ErrCorrupt, "salt"},
		{"salt-missing", withField("salt", nil), keymanager.ErrCorrupt, "salt"},
		{"unknown-kdf", withField("kdf", "scrypt"), keymanager.ErrCorrupt, "scrypt"},
		{"argon2-missing", withField("argon2", nil), keymanager.ErrCorrupt, "argon2"},
		{"argon2-time-zero", withArgon2("time", 0), keymanager.ErrCorrupt, "argon2 time"},
		{"argon2-threads-zero", withArgon2("threads", 0), keymanager.ErrCorrupt, "argon2 threads"},
		{"argon2-threads-overflow", withArgon2("threads", 256), keymanager.ErrCorrupt, "threads"},
		{"argon2-memory-too-large", withArgon2("memory_kib", 1<<31), keymanager.ErrCorrupt, "argon2 memory"},
		{"argon2-memory-too-small", withArgon2("memory_kib", 1), keymanager.ErrCorrupt, "argon2 memory"},
		{"verifier-missing", withField("verifier", nil), keymanager.ErrCorrupt, "verifier"},
		{"verifier-not-base64", withField("verifier", "@@@"), keymanager.ErrCorrupt, "verifier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			secret := passphraseSecret(t, testPassphrase)
			if _, err := newDisk(t, dir, secret).GenerateKey(context.Background(), "workload-root-1"); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "keyring.json")
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]any
			if err := json.Unmarshal(good, &fields); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.corrupt(t, good, fields), 0o600); err != nil {
				t.Fatal(err)
			}
			before := dirFiles(t, dir)

			_, err = keymanager.NewDisk(dir, secret, nil)
			if err == nil {
				t.Fatal("NewDisk: got no error, want one")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("NewDisk: got error %v, want one wrapping %v", err, tt.wantErr)
			}
			if errors.Is(err, keymanager.ErrWrongSecret) {
				t.Errorf("NewDisk: got %v, want an error about the keyring, not %v", err, keymanager.ErrWrongSecret)
			}
			for _, want := range []string{path, tt.wantText} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("NewDisk: got error %q, want it to mention %q", err, want)
				}
			}
			if diff := cmp.Diff(before, dirFiles(t, dir)); diff != "" {
				t.Errorf("files changed by NewDisk (-before +after):\n%s", diff)
			}
		})
	}
}

// withField returns a keyring corruption setting a top-level field, or
// removing it for nil.
func withField(name string, value any) func(*testing.T, []byte, map[string]any) []byte {
	return func(t *testing.T, _ []byte, fields map[string]any) []byte {
		t.Helper()
		if value == nil {
			delete(fields, name)
		} else {
			fields[name] = value
		}
		return mustMarshal(t, fields)
	}
}

// withArgon2 returns a keyring corruption setting a field of the argon2
// cost.
func withArgon2(name string, value any) func(*testing.T, []byte, map[string]any) []byte {
	return func(t *testing.T, _ []byte, fields map[string]any) []byte {
		t.Helper()
		cost, ok := fields["argon2"].(map[string]any)
		if !ok {
			t.Fatalf("keyring has no argon2 object: %v", fields)
		}
		cost[name] = value
		return mustMarshal(t, fields)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDiskRefusesEncryptedKeysWithoutKeyring checks that a lost keyring is
// not replaced by a new one, which would make the keys undecryptable.
func TestDiskRefusesEncryptedKeysWithoutKeyring(t *testing.T) {
	dir := t.TempDir()
	secret := newKeyFileSecret(t)
	if _, err := newDisk(t, dir, secret).GenerateKey(context.Background(), "workload-root-1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "keyring.json")); err != nil {
		t.Fatal(err)
	}
	before := dirFiles(t, dir)
	_, err := keymanager.NewDisk(dir, secret, nil)
	if err == nil {
		t.Fatal("NewDisk: got no error, want one")
	}
	for _, want := range []string{"keyring.json", "workload-root-1.key", "backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NewDisk: got error %q, want it to mention %s", err, want)
		}
	}
	if diff := cmp.Diff(before, dirFiles(t, dir)); diff != "" {
		t.Errorf("files changed by NewDisk (-before +after):\n%s", diff)
	}
}

// logEntry is what the tests check of a log line.
type logEntry struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Name  string `json:"name"`
}

// newLogger returns a JSON logger and the buffer it writes to.
func newLogger() (*slog.Logger, *syncBuffer) {
	var buf syncBuffer
	return slog.New(slog.NewJSONHandler(&buf, nil)), &buf
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// entries returns the logged lines, sorted.
func (b *syncBuffer) entries(t *testing.T) []logEntry {
	t.Helper()
	var got []logEntry
	for line := range bytes.Lines(b.Bytes()) {
		var e logEntry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		got = append(got, e)
	}
	slices.SortFunc(got, func(a, b logEntry) int { return strings.Compare(a.Level+a.Msg+a.Name, b.Level+b.Msg+b.Name) })
	return got
}

func TestDiskMigratesPlaintext(t *testing.T) {
	for _, kind := range secretKinds() {
		t.Run(kind.name, func(t *testing.T) {
			dir := t.TempDir()
			root, rootDER := writePlaintextKey(t, dir, "workload-root-1")
			op, _ := writePlaintextKey(t, dir, "operator-root-1")
			broken := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rootDER[:20]})
			if err := os.WriteFile(filepath.Join(dir, "broken.key"), broken, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a key"), 0o600); err != nil {
				t.Fatal(err)
			}
			secret := kind.secret(t)
			logger, logs := newLogger()

			d, err := keymanager.NewDisk(dir, secret, logger)
			if err != nil {
				t.Fatalf("NewDisk: %v", err)
			}

			want := []logEntry{
				{"INFO", "created keyring for encrypted ca keys", ""},
				{"INFO", "encrypted plaintext key file", "operator-root-1"},
				{"INFO", "encrypted plaintext key file", "workload-root-1"},
				{"WARN", "key file is not a readable key; left as it is", "broken"},
			}
			if diff := cmp.Diff(want, logs.entries(t)); diff != "" {
				t.Errorf("log (-want +got):\n%s", diff)
			}
			for name, key := range map[string]*ecdsa.PrivateKey{"workload-root-1": root, "operator-root-1": op} {
				checkEncryptedFile(t, filepath.Join(dir, name+".key"), key)
				checkNoKeyMaterial(t, "the log", logs.Bytes(), key)
				got, err := d.GetKey(context.Background(), name)
				if err != nil {
					t.Fatalf("GetKey %s: %v", name, err)
				}
				checkSamePublic(t, "GetKey "+name, got, key.Public())
				got, err = newDisk(t, dir, secret).GetKey(context.Background(), name)
				if err != nil {
					t.Fatalf("GetKey %s from a new Disk: %v", name, err)
				}
				checkSamePublic(t, "GetKey "+name+" from a new Disk", got, key.Public())
			}
			files := dirFiles(t, dir)
			if got := files["broken.key"]; got != string(broken) {
				t.Errorf("broken.key: got %d bytes, want the original %d left as they were", len(got), len(broken))
			}
			if got, want := files["notes.txt"], "not a key"; got != want {
				t.Errorf("notes.txt: got %q, want %q", got, want)
			}
			if _, err := d.GetKey(context.Background(), "broken"); !errors.Is(err, keymanager.ErrCorrupt) {
				t.Errorf("GetKey broken: got error %v, want one wrapping %v", err, keymanager.ErrCorrupt)
			}
		})
	}
}

// TestDiskEncryptsLatePlaintext puts a plaintext key file into a data dir
// that already has a keyring.
func TestDiskEncryptsLatePlaintext(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T, d *keymanager.Disk, dir string, secret keymanager.Secret, logger *slog.Logger) crypto.Signer
	}{
		{"get-key", func(t *testing.T, d *keymanager.Disk, _ string, _ keymanager.Secret, logger *slog.Logger) crypto.Signer {
			got, err := d.GetKey(context.Background(), "late-key")
			if err != nil {
				t.Fatalf("GetKey: %v", err)
			}
			return got
		}},
		{"reopen", func(t *testing.T, _ *keymanager.Disk, dir string, secret keymanager.Secret, logger *slog.Logger) crypto.Signer {
			d, err := keymanager.NewDisk(dir, secret, logger)
			if err != nil {
				t.Fatalf("NewDisk: %v", err)
			}
			got, err := d.GetKey(context.Background(), "late-key")
			if err != nil {
				t.Fatalf("GetKey: %v", err)
			}
			return got
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			secret := newKeyFileSecret(t)
			logger, logs := newLogger()
			d, err := keymanager.NewDisk(dir, secret, logger)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := writePlaintextKey(t, dir, "late-key")
			got := tt.open(t, d, dir, secret, logger)
			checkSamePublic(t, "GetKey", got, key.Public())
			checkEncryptedFile(t, filepath.Join(dir, "late-key.key"), key)
			want := []logEntry{
				{"INFO", "created keyring for encrypted ca keys", ""},
				{"WARN", "found plaintext key file in a data dir with a keyring; encrypted it", "late-key"},
			}
			if diff := cmp.Diff(want, logs.entries(t)); diff != "" {
				t.Errorf("log (-want +got):\n%s", diff)
			}
			checkNoKeyMaterial(t, "the log", logs.Bytes(), key)
		})
	}
}

func TestDiskMovedFiles(t *testing.T) {
	tests := []struct {
		name string
		// move damages dir, whose keys a and b exist; other is another
		// data dir of the same secret with a key a. It returns the id to
		// read.
		move func(t *testing.T, dir, other string) string
	}{
		{"swapped-ids", func(t *testing.T, dir, _ string) string {
			a, b := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
			tmp := filepath.Join(dir, "swap")
			for _, r := range [][2]string{{a, tmp}, {b, a}, {tmp, b}} {
				if err := os.Rename(r[0], r[1]); err != nil {
					t.Fatal(err)
				}
			}
			return "a"
		}},
		{"copied-to-other-id", func(t *testing.T, dir, _ string) string {
			copyFile(t, filepath.Join(dir, "a.key"), filepath.Join(dir, "c.key"))
			return "c"
		}},
		{"copied-from-other-data-dir", func(t *testing.T, dir, other string) string {
			copyFile(t, filepath.Join(other, "a.key"), filepath.Join(dir, "a.key"))
			return "a"
		}},
	}
	for _, kind := range secretKinds() {
		for _, tt := range tests {
			t.Run(kind.name+"/"+tt.name, func(t *testing.T) {
				secret := kind.secret(t)
				ctx := context.Background()
				dir, other := t.TempDir(), t.TempDir()
				d := newDisk(t, dir, secret)
				for _, id := range []string{"a", "b"} {
					if _, err := d.GenerateKey(ctx, id); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := newDisk(t, other, secret).GenerateKey(ctx, "a"); err != nil {
					t.Fatal(err)
				}
				id := tt.move(t, dir, other)
				if _, err := d.GetKey(ctx, id); !errors.Is(err, keymanager.ErrCorrupt) {
					t.Errorf("GetKey %s: got error %v, want one wrapping %v", id, err, keymanager.ErrCorrupt)
				}
			})
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDiskDeleteRemovesFile(t *testing.T) {
	dir := t.TempDir()
	d := newDisk(t, dir, newKeyFileSecret(t))
	ctx := context.Background()
	if _, err := d.GenerateKey(ctx, "retired-root"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "retired-root"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "retired-root.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat retired-root.key after Delete: got %v, want %v", err, fs.ErrNotExist)
	}
	// A corrupted key can be deleted too.
	if err := os.WriteFile(filepath.Join(dir, "damaged.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "damaged"); err != nil {
		t.Fatalf("Delete of a corrupted key: %v", err)
	}
	if _, err := d.GetKey(ctx, "damaged"); !errors.Is(err, keymanager.ErrNotFound) {
		t.Errorf("GetKey after Delete: got error %v, want one wrapping %v", err, keymanager.ErrNotFound)
	}
}

// TestDiskConcurrentOpen opens several Disks on one new dir at once: one
// keyring is created and every Disk uses it.
func TestDiskConcurrentOpen(t *testing.T) {
	for _, kind := range secretKinds() {
		t.Run(kind.name, func(t *testing.T) {
			dir := t.TempDir()
			secret := kind.secret(t)
			const n = 8
			disks := make([]*keymanager.Disk, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					d, err := keymanager.NewDisk(dir, secret, nil)
					if err != nil {
						t.Errorf("NewDisk #%d: %v", i, err)
						return
					}
					disks[i] = d
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			ctx := context.Background()
			for i, d := range disks {
				id := fmt.Sprintf("key-%d", i)
				k, err := d.GenerateKey(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				for j, other := range disks {
					got, err := other.GetKey(ctx, id)
					if err != nil {
						t.Fatalf("GetKey %s written by Disk #%d from Disk #%d: %v", id, i, j, err)
					}
					checkSamePublic(t, "GetKey "+id, got, k.Public())
				}
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

	// The key file is made once, kept apart from the data dir, and given
	// to every start of the control plane (--ca-key-file).
	keyFile := filepath.Join(dir, "ca-key")
	if err := keymanager.CreateKeyFile(keyFile); err != nil {
		panic(err)
	}
	secret, err := keymanager.KeyFileSecret(keyFile)
	if err != nil {
		panic(err)
	}
	keys, err := keymanager.NewDisk(filepath.Join(dir, "keys"), secret, nil)
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

	if err := keys.Delete(ctx, "workload-root-0a1b2c3d"); err != nil {
		panic(err)
	}
	_, err = keys.GetKey(ctx, "workload-root-0a1b2c3d")
	fmt.Println(errors.Is(err, keymanager.ErrNotFound))

	// Another secret is refused before any key is read.
	other, err := keymanager.PassphraseSecret("not the key file at all")
	if err != nil {
		panic(err)
	}
	_, err = keymanager.NewDisk(filepath.Join(dir, "keys"), other, nil)
	fmt.Println(errors.Is(err, keymanager.ErrWrongSecret))
	// Output:
	// P-256
	// true
	// true
}
