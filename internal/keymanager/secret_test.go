package keymanager_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
)

func TestPassphraseSecret(t *testing.T) {
	tests := []struct {
		name       string
		passphrase string
		wantErr    string // "" for none
	}{
		{"empty", "", "must not be empty"},
		{"one-byte", "Q", "at least 12 bytes"},
		{"eleven-bytes", "abcdefghijk", "at least 12 bytes"},
		{"twelve-bytes", "abcdefghijkl", ""},
		{"twelve-bytes-multibyte", "éééééé", ""},
		{"whitespace-kept", "  passphrase with spaces  ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := keymanager.PassphraseSecret(tt.passphrase)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("PassphraseSecret: got error %v, want none", err)
				}
				if got, want := s.String(), "passphrase"; got != want {
					t.Errorf("String: got %q, want %q", got, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("PassphraseSecret: got error %v, want one containing %q", err, tt.wantErr)
			}
			if tt.passphrase != "" && strings.Contains(err.Error(), tt.passphrase) {
				t.Errorf("PassphraseSecret: error %q contains the passphrase", err)
			}
		})
	}
}

// TestPassphraseWhitespaceMatters checks that a passphrase is used as
// given: a trailing newline makes another secret.
func TestPassphraseWhitespaceMatters(t *testing.T) {
	dir := t.TempDir()
	newDisk(t, dir, passphraseSecret(t, testPassphrase))
	_, err := keymanager.NewDisk(dir, passphraseSecret(t, testPassphrase+"\n"), nil)
	if !errors.Is(err, keymanager.ErrWrongSecret) {
		t.Fatalf("NewDisk with a trailing newline: got error %v, want one wrapping %v", err, keymanager.ErrWrongSecret)
	}
}

func TestKeyFileSecret(t *testing.T) {
	raw := bytes.Repeat([]byte{0xfb}, 32)
	b64 := base64.StdEncoding.EncodeToString(raw)
	tests := []struct {
		name    string
		setup   func(t *testing.T, path string) // makes the key file at path
		wantErr string                          // "" for none
	}{
		{"raw-0600", writeMode(raw, 0o600), ""},
		{"raw-0400", writeMode(raw, 0o400), ""},
		{"base64-0600", writeMode([]byte(b64), 0o600), ""},
		{"base64-newline", writeMode([]byte(b64+"\n"), 0o600), ""},
		{"base64-surrounding-whitespace", writeMode([]byte(" \t"+b64+"\r\n\n"), 0o600), ""},
		{"symlink-to-0600", symlinkTo(raw, 0o600), ""},
		{"missing", func(*testing.T, string) {}, "no such file"},
		{"empty", writeMode(nil, 0o600), "neither 32 raw bytes"},
		{"raw-31-bytes", writeMode(raw[:31], 0o600), "neither 32 raw bytes"},
		{"raw-33-bytes", writeMode(append(bytes.Clone(raw), 0), 0o600), "neither 32 raw bytes"},
		{"base64-16-bytes", writeMode([]byte(base64.StdEncoding.EncodeToString(raw[:16])), 0o600), "neither 32 raw bytes"},
		{"base64url", writeMode([]byte(base64.URLEncoding.EncodeToString(raw)), 0o600), "neither 32 raw bytes"},
		{"hex", writeMode([]byte(hex.EncodeToString(raw)), 0o600), "neither 32 raw bytes"},
		{"too-large", writeMode(bytes.Repeat([]byte("A"), 5000), 0o600), "larger than"},
		{"group-readable", writeMode(raw, 0o640), "chmod 600"},
		{"group-writable", writeMode(raw, 0o620), "chmod 600"},
		{"world-readable", writeMode(raw, 0o604), "chmod 600"},
		{"world-readable-base64", writeMode([]byte(b64), 0o644), "chmod 600"},
		{"symlink-to-world-readable", symlinkTo(raw, 0o644), "chmod 600"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ca-key")
			tt.setup(t, path)
			s, err := keymanager.KeyFileSecret(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("KeyFileSecret: got error %v, want none", err)
				}
				if got, want := s.String(), "key file "+path; got != want {
					t.Errorf("String: got %q, want %q", got, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("KeyFileSecret: got error %v, want one containing %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("KeyFileSecret: got error %q, want it to name %s", err, path)
			}
			if strings.Contains(err.Error(), b64[:12]) {
				t.Errorf("KeyFileSecret: error %q contains the key", err)
			}
		})
	}
	t.Run("missing-wraps-ErrNotExist", func(t *testing.T) {
		_, err := keymanager.KeyFileSecret(filepath.Join(t.TempDir(), "missing"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("KeyFileSecret: got error %v, want one wrapping %v", err, fs.ErrNotExist)
		}
	})
}

// TestKeyFileRawAndBase64AreOneSecret opens a data dir made with a raw key
// file with the same bytes in base64.
func TestKeyFileRawAndBase64AreOneSecret(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, 32)
	files := t.TempDir()
	rawPath, b64Path := filepath.Join(files, "raw"), filepath.Join(files, "b64")
	writeMode(raw, 0o600)(t, rawPath)
	writeMode([]byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600)(t, b64Path)
	dir := t.TempDir()
	for _, path := range []string{rawPath, b64Path} {
		s, err := keymanager.KeyFileSecret(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keymanager.NewDisk(dir, s, nil); err != nil {
			t.Errorf("NewDisk with %s: %v", filepath.Base(path), err)
		}
	}
}

// writeMode returns a setup writing data with exactly mode perm.
func writeMode(data []byte, perm fs.FileMode) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, perm); err != nil {
			t.Fatal(err)
		}
	}
}

// symlinkTo returns a setup making path a symbolic link to a file holding
// data with mode perm, as Kubernetes mounts secrets.
func symlinkTo(data []byte, perm fs.FileMode) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		t.Helper()
		target := filepath.Join(t.TempDir(), "target")
		writeMode(data, perm)(t, target)
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCreateKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca-key")
	if err := keymanager.CreateKeyFile(path); err != nil {
		t.Fatalf("CreateKeyFile: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), fs.FileMode(0o600); got != want {
		t.Errorf("mode: got %v, want %v", got, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9+/]{43}=\n$`).Match(data) {
		t.Errorf("contents: got %d bytes that are not 32 bytes in base64 and a newline, want them", len(data))
	}
	if _, err := keymanager.KeyFileSecret(path); err != nil {
		t.Errorf("KeyFileSecret of the created file: %v", err)
	}

	err = keymanager.CreateKeyFile(path)
	if !errors.Is(err, os.ErrExist) {
		t.Errorf("second CreateKeyFile: got error %v, want one wrapping %v", err, os.ErrExist)
	}
	if err != nil && !strings.Contains(err.Error(), path) {
		t.Errorf("second CreateKeyFile: got error %q, want it to name %s", err, path)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, data) {
		t.Error("second CreateKeyFile changed the existing file, want it kept")
	}

	other := filepath.Join(dir, "other-key")
	if err := keymanager.CreateKeyFile(other); err != nil {
		t.Fatal(err)
	}
	otherData, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(otherData, data) {
		t.Error("two CreateKeyFile calls wrote the same key, want random ones")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(entries), 2; got != want {
		t.Errorf("files in the dir: got %d, want %d (no temporary files)", got, want)
	}

	if err := keymanager.CreateKeyFile(filepath.Join(dir, "missing", "ca-key")); err == nil {
		t.Error("CreateKeyFile in a missing dir: got no error, want one")
	}
}

// TestSecretNeverPrinted prints Secrets every way a program might and
// checks that only their kind (and a key file's path) shows.
func TestSecretNeverPrinted(t *testing.T) {
	keyPath := filepath.Join(t.TempDir(), "ca-key")
	if err := keymanager.CreateKeyFile(keyPath); err != nil {
		t.Fatal(err)
	}
	keyB64, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	keyRaw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(keyB64)))
	if err != nil {
		t.Fatal(err)
	}
	keySecret, err := keymanager.KeyFileSecret(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	passSecret, err := keymanager.PassphraseSecret(testPassphrase)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		secret    keymanager.Secret
		want      string
		forbidden []string
	}{
		{"passphrase", passSecret, "passphrase", []string{
			testPassphrase, hex.EncodeToString([]byte(testPassphrase))[:16],
			fmt.Sprint([]byte(testPassphrase)[:4])[1:12],
		}},
		{"key-file", keySecret, "key file " + keyPath, []string{
			strings.TrimSpace(string(keyB64))[:12], hex.EncodeToString(keyRaw)[:16], string(keyRaw[:8]),
			fmt.Sprint(keyRaw[:4])[1:12],
		}},
		{"zero", keymanager.Secret{}, "no secret", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var printed []string
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
				got := fmt.Sprintf(verb, tt.secret)
				printed = append(printed, got)
				if verb == "%T" {
					continue
				}
				if got != tt.want {
					t.Errorf("Sprintf(%q): got %q, want %q", verb, got, tt.want)
				}
				printed = append(printed, fmt.Sprintf(verb, &tt.secret))
			}
			wrapped := struct{ Secret keymanager.Secret }{tt.secret}
			printed = append(printed, fmt.Sprintf("%+v %#v", wrapped, wrapped), tt.secret.String())

			var logBuf bytes.Buffer
			slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("m", "secret", tt.secret)
			slog.New(slog.NewTextHandler(&logBuf, nil)).Info("m", "secret", tt.secret)
			printed = append(printed, logBuf.String())
			if !strings.Contains(logBuf.String(), `"secret":"`+tt.want+`"`) {
				t.Errorf("JSON log: got %q, want it to hold secret %q", logBuf.String(), tt.want)
			}
			js, err := json.Marshal(tt.secret)
			if err != nil {
				t.Fatal(err)
			}
			printed = append(printed, string(js))

			for _, p := range printed {
				for _, f := range tt.forbidden {
					if strings.Contains(p, f) {
						t.Errorf("printed %q contains secret material %q", p, f)
					}
				}
			}
		})
	}
}

func ExamplePassphraseSecret() {
	_, err := keymanager.PassphraseSecret("hunter2")
	fmt.Println(err)
	secret, err := keymanager.PassphraseSecret("a long and private passphrase")
	if err != nil {
		panic(err)
	}
	fmt.Println(secret)
	// Output:
	// ca key passphrase: too short: must be at least 12 bytes
	// passphrase
}
