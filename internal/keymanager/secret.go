package keymanager

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"

	"github.com/bulwarkmesh/bulwark/internal/fileutil"
)

const (
	// MinPassphraseLen is the shortest passphrase PassphraseSecret accepts,
	// in bytes.
	MinPassphraseLen = 12
	// keyFileSize is the number of random bytes a key file holds.
	keyFileSize = 32
	// keyFileMaxRead bounds how much of a key file is read: a raw key is 32
	// bytes and a base64 one 44 plus whitespace.
	keyFileMaxRead = 4 << 10
	// keyFileMode is the mode of a key file CreateKeyFile writes.
	keyFileMode fs.FileMode = 0o600
)

// Argon2id cost of a passphrase, used when a data dir's keyring is created
// and stored in it (later opens use the stored cost): 3 passes over 64 MiB
// with 2 lanes, the second recommendation of RFC 9106 with more passes.
const (
	argon2Time      uint32 = 3
	argon2MemoryKiB uint32 = 64 << 10
	argon2Threads   uint8  = 2
)

// secretKind says what a Secret holds.
type secretKind uint8

const (
	secretNone secretKind = iota
	secretPassphrase
	secretKeyFile
)

// argon2Params is the cost of an argon2id derivation.
type argon2Params struct {
	time      uint32
	memoryKiB uint32
	threads   uint8
}

// Secret is what the key manager encrypts keys with: a passphrase or a
// 32-byte key file. Make one with PassphraseSecret or KeyFileSecret; the zero
// value holds no secret and NewDisk refuses it.
//
// A Secret never reveals its material: String, LogValue and every fmt verb
// print only its kind (and a key file's path).
type Secret struct {
	kind     secretKind
	material []byte // the passphrase, or the key file's 32 bytes
	path     string // the key file's path; empty for a passphrase
	// argon2 is the cost of a passphrase's derivation when NewDisk creates
	// a keyring.
	argon2 argon2Params
}

// PassphraseSecret returns a Secret of passphrase, which NewDisk stretches
// with argon2id. It rejects an empty passphrase and one shorter than
// MinPassphraseLen bytes. The passphrase is used exactly as given: no
// whitespace is trimmed.
func PassphraseSecret(passphrase string) (Secret, error) {
	if passphrase == "" {
		return Secret{}, errors.New("ca key passphrase: must not be empty")
	}
	if len(passphrase) < MinPassphraseLen {
		return Secret{}, fmt.Errorf("ca key passphrase: too short: must be at least %d bytes", MinPassphraseLen)
	}
	return Secret{
		kind:     secretPassphrase,
		material: []byte(passphrase),
		argon2:   argon2Params{time: argon2Time, memoryKiB: argon2MemoryKiB, threads: argon2Threads},
	}, nil
}

// KeyFileSecret returns a Secret of the key file at path, which holds 32
// random bytes, raw or in standard base64 (surrounding whitespace is
// ignored). It fails, naming the file, when the file is missing, is not a
// regular file, holds anything else, or can be read or written by group or
// others (mode & 0o077 != 0): a key file must be 0600 or 0400. A symbolic
// link is followed and the mode checked is its target's.
func KeyFileSecret(path string) (Secret, error) {
	if path == "" {
		return Secret{}, errors.New("ca key file: path is required")
	}
	f, err := os.Open(path)
	if err != nil {
		return Secret{}, fmt.Errorf("ca key file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Secret{}, fmt.Errorf("ca key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return Secret{}, fmt.Errorf("ca key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return Secret{}, fmt.Errorf("ca key file %s: mode %04o lets group or others access it; chmod 600 it", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, keyFileMaxRead+1))
	if err != nil {
		return Secret{}, fmt.Errorf("ca key file %s: %w", path, err)
	}
	key, err := decodeKeyFile(data)
	clear(data)
	if err != nil {
		return Secret{}, fmt.Errorf("ca key file %s: %w", path, err)
	}
	return Secret{kind: secretKeyFile, material: key, path: path}, nil
}

// decodeKeyFile returns the 32 bytes of a key file's contents. Its errors
// never include the contents.
func decodeKeyFile(data []byte) ([]byte, error) {
	if len(data) == keyFileSize {
		return bytes.Clone(data), nil
	}
	if len(data) > keyFileMaxRead {
		return nil, fmt.Errorf("larger than %d bytes; want %d random bytes, raw or base64", keyFileMaxRead, keyFileSize)
	}
	trimmed := bytes.TrimSpace(data)
	key := make([]byte, base64.StdEncoding.DecodedLen(len(trimmed)))
	n, err := base64.StdEncoding.Decode(key, trimmed)
	if err != nil || n != keyFileSize {
		clear(key)
		return nil, fmt.Errorf("holds %d bytes that are neither %d raw bytes nor their standard base64", len(data), keyFileSize)
	}
	return key[:n], nil
}

// CreateKeyFile writes a new key file at path: 32 bytes from crypto/rand in
// standard base64 and a newline, mode 0600. The file appears complete or not
// at all (it is written to a temporary file, synced, and linked into place).
// It never replaces a file: when path exists it fails with an error wrapping
// os.ErrExist. The directory must exist.
func CreateKeyFile(path string) error {
	if path == "" {
		return errors.New("create ca key file: path is required")
	}
	key := make([]byte, keyFileSize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("create ca key file %s: %w", path, err)
	}
	data := base64.StdEncoding.AppendEncode(nil, key)
	data = append(data, '\n')
	clear(key)
	err := fileutil.WriteNew(path, data, keyFileMode)
	clear(data)
	if err != nil {
		return fmt.Errorf("create ca key file: %w", err)
	}
	return nil
}

// String returns the kind of the secret, and a key file's path; never the
// secret itself.
func (s Secret) String() string {
	switch s.kind {
	case secretPassphrase:
		return "passphrase"
	case secretKeyFile:
		return "key file " + s.path
	default:
		return "no secret"
	}
}

// LogValue logs what String returns.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Format prints what String returns for every verb, so that %#v, %x or %d
// cannot print the fields.
func (s Secret) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }

// kindName names the kind of secret a keyring's KDF expects, for errors.
func kindName(k secretKind) string {
	if k == secretKeyFile {
		return "a key file"
	}
	return "a passphrase"
}
