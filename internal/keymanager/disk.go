package keymanager

import (
	"bytes"
	"context"
	"crypto"
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

	"github.com/bulwarkmesh/bulwark/internal/fileutil"
)

// Interface guards.
var (
	_ KeyManager = (*Disk)(nil)
	_ KeyManager = (*Memory)(nil)
)

const (
	// diskDirMode is the mode of a key directory Disk creates.
	diskDirMode fs.FileMode = 0o700
	// diskKeyMode is the mode of every key file.
	diskKeyMode fs.FileMode = 0o600
	// diskKeySuffix ends the name of every key file: <dir>/<id>.key.
	diskKeySuffix = ".key"
	// pemTypePKCS8 is the PEM block type of an unencrypted PKCS#8 key.
	pemTypePKCS8 = "PRIVATE KEY"
)

// Disk keeps keys as files in one directory: <dir>/<id>.key, a PKCS#8
// "PRIVATE KEY" PEM block, mode 0600. A key file is written atomically (a
// temporary file in the same directory, synced, renamed over the target,
// and the directory synced), so a crash leaves either the old key or the
// new one, never a partial file. A file that cannot be parsed is reported,
// never overwritten by GetKey. Key material is never logged.
//
// The file format lives only in encodeKey and decodeKey, so encryption at
// rest (a passphrase, AES-256-GCM) goes there as a new PEM block type
// without changing callers; plaintext files stay readable for migration.
//
// A Disk is safe for concurrent use, also by several Disks on the same
// directory. Concurrent GenerateKey calls of one id each return a working
// signer, and the file ends up holding one of their keys.
type Disk struct {
	dir string
}

// NewDisk returns a Disk keeping its keys in dir, which it creates with mode
// 0700 when missing. An existing dir is used as it is.
func NewDisk(dir string) (*Disk, error) {
	if dir == "" {
		return nil, errors.New("open disk key manager: directory is required")
	}
	if err := os.MkdirAll(dir, diskDirMode); err != nil {
		return nil, fmt.Errorf("open disk key manager: %w", err)
	}
	return &Disk{dir: dir}, nil
}

// GenerateKey creates a new ECDSA P-256 key under id, replacing any key of
// that id, and returns its signer. The key file is synced to disk before it
// returns.
func (d *Disk) GenerateKey(_ context.Context, id string) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	data, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	if err := fileutil.WriteAtomic(d.path(id), data, diskKeyMode); err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	return key, nil
}

// GetKey reads the key id from its file. A missing file is an error
// wrapping ErrNotFound; a file that does not hold a parseable private key is
// an error naming the file, which is left untouched.
func (d *Disk) GetKey(_ context.Context, id string) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("get key: %w", err)
	}
	path := d.path(id)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", id, err)
	}
	signer, err := decodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("get key %q: key file %s is corrupted: %w", id, path, err)
	}
	return signer, nil
}

// path returns the file of a validated key id.
func (d *Disk) path(id string) string {
	return filepath.Join(d.dir, id+diskKeySuffix)
}

// encodeKey returns the file contents for key.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypePKCS8, Bytes: der}), nil
}

// decodeKey parses file contents written by encodeKey. It accepts exactly
// one PEM block of a known type and nothing else but whitespace. The errors
// never include key bytes.
func decodeKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	if block.Type != pemTypePKCS8 {
		return nil, fmt.Errorf("PEM block type %q, want %q", block.Type, pemTypePKCS8)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		// The parser's message does not echo the input.
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T is not a signer", key)
	}
	return signer, nil
}
