package fileutil_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/fileutil"
)

func TestWriteAtomicReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svid.pem")
	for _, data := range []string{"old", "new"} {
		if err := fileutil.WriteAtomic(path, []byte(data), 0o600); err != nil {
			t.Fatalf("WriteAtomic(%q): %v", data, err)
		}
	}
	checkFile(t, path, "new", 0o600)
	checkNoTemp(t, filepath.Dir(path))
}

func TestWriteNewNeverReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := fileutil.WriteNew(path, []byte("first"), 0o600); err != nil {
		t.Fatalf("first WriteNew: %v", err)
	}
	err := fileutil.WriteNew(path, []byte("second"), 0o644)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteNew: got %v, want an error wrapping fs.ErrExist", err)
	}
	checkFile(t, path, "first", 0o600)
	checkNoTemp(t, filepath.Dir(path))
}

func TestWriteIntoMissingDirFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "key")
	if err := fileutil.WriteAtomic(path, []byte("x"), 0o600); err == nil {
		t.Errorf("WriteAtomic into a missing directory: got nil error, want one")
	}
	if err := fileutil.WriteNew(path, []byte("x"), 0o600); err == nil {
		t.Errorf("WriteNew into a missing directory: got nil error, want one")
	}
}

func checkFile(t *testing.T, path, want string, mode fs.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("%s: got %q, want %q", path, b, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s: got mode %v, want %v", path, fi.Mode().Perm(), mode)
	}
}

func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("%s: got %d entries, want only the file (no temporary left behind)", dir, len(entries))
	}
}
