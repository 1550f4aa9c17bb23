package keymanager

import (
	"bytes"
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/bulwarkmesh/bulwark/internal/fileutil"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Interface guards.
var (
	_ KeyManager = (*Disk)(nil)
	_ KeyManager = (*Memory)(nil)
)

const (
	// diskDirMode is the mode of a key directory Disk creates.
	diskDirMode fs.FileMode = 0o700
	// diskKeyMode is the mode of every file Disk writes.
	diskKeyMode fs.FileMode = 0o600
	// diskKeySuffix ends the name of every key file: <dir>/<id>.key.
	diskKeySuffix = ".key"
	// pemTypePKCS8 is the PEM block type of an unencrypted PKCS#8 key, as
	// written before encryption at rest. It is read and migrated, never
	// written.
	pemTypePKCS8 = "PRIVATE KEY"
	// pemTypeEncrypted is the PEM block type of an encrypted key.
	pemTypeEncrypted = "BULWARK ENCRYPTED PRIVATE KEY"
	// encryptedKeyVersion is the first byte of an encrypted key block.
	encryptedKeyVersion byte = 1
	// encryptedKeyAAD starts the additional data of an encrypted key; the
	// key id follows.
	encryptedKeyAAD = "bulwark encrypted private key v1 id="
)

// Log messages.
const (
	msgKeyringCreated   = "created keyring for encrypted ca keys"
	msgMigratedKey      = "encrypted plaintext key file"
	msgFoundPlaintext   = "found plaintext key file in a data dir with a keyring; encrypted it"
	msgCorruptPlaintext = "key file is not a readable key; left as it is"
)

// Disk keeps keys as files in one directory (mode 0700), encrypted at rest:
//
//	<dir>/keyring.json  how the key-encryption key (KEK) is derived from
//	                    the Secret, and a verifier of it
//	<dir>/<id>.key      one PEM block "BULWARK ENCRYPTED PRIVATE KEY"
//
// The block holds a version byte (1), then a random 12-byte nonce and the
// AES-256-GCM encryption under the KEK of the key's PKCS#8 DER. The
// additional data is "bulwark encrypted private key v1 id=<id>", so a file
// renamed or copied to another id fails to decrypt, as does one from another
// data dir (another salt, another KEK).
//
// Every file is mode 0600 and written atomically (a temporary file in the
// same directory, synced, renamed over the target, and the directory
// synced), so a crash leaves either the old file or the new one. A file
// that cannot be decoded or decrypted is reported (ErrCorrupt), never
// overwritten by GetKey. Key material is never logged nor put in errors.
//
// Migration: a directory of an earlier release holds plaintext PKCS#8
// "PRIVATE KEY" files and no keyring. NewDisk creates the keyring, then
// encrypts every such file in place, logging each id. A plaintext file found
// later (by NewDisk or GetKey) is encrypted the same way, with a warning.
//
// A Disk is safe for concurrent use, also by several Disks on the same
// directory with the same Secret. Concurrent GenerateKey calls of one id
// each return a working signer, and the file ends up holding one of their
// keys. Caveat: migrating a plaintext file while another process replaces
// the same key can lose the replacement; within one Disk it cannot.
type Disk struct {
	dir    string
	aead   cipher.AEAD
	logger *slog.Logger
	// mu serialises this Disk's writes, so that encrypting a plaintext file
	// in place never overwrites a key written meanwhile.
	mu sync.Mutex
}

// NewDisk returns a Disk keeping its keys in dir, which it creates with mode
// 0700 when missing, encrypted under secret. logger receives one line per
// key migrated and never key material; nil discards.
//
// When dir has a keyring.json, secret must be the one it was made with, or
// NewDisk fails with an error wrapping ErrWrongSecret and changes nothing. A
// keyring.json that cannot be decoded is an error wrapping ErrCorrupt, and
// is left as it is. When dir has no keyring, NewDisk creates one for secret
// (for a passphrase, with the argon2id cost of PassphraseSecret), unless dir
// already holds encrypted keys: their keyring was lost, and NewDisk fails
// rather than make them undecryptable for good. Then NewDisk encrypts every
// plaintext key file in dir (see Disk).
func NewDisk(dir string, secret Secret, logger *slog.Logger) (*Disk, error) {
	if dir == "" {
		return nil, errors.New("open disk key manager: directory is required")
	}
	if secret.kind == secretNone {
		return nil, errors.New("open disk key manager: a secret (passphrase or key file) is required")
	}
	logger = telemetry.OrDiscard(logger)
	if err := os.MkdirAll(dir, diskDirMode); err != nil {
		return nil, fmt.Errorf("open disk key manager: %w", err)
	}
	files, err := scanKeyFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("open disk key manager: %w", err)
	}
	kek, created, err := openKeyring(dir, secret, files, logger)
	if err != nil {
		return nil, fmt.Errorf("open disk key manager: %w", err)
	}
	aead, err := newAEAD(kek)
	clear(kek)
	if err != nil {
		return nil, fmt.Errorf("open disk key manager: %w", err)
	}
	d := &Disk{dir: dir, aead: aead, logger: logger}
	for _, f := range files {
		if f.kind != pemTypePKCS8 {
			continue
		}
		if err := d.migrate(f.id, f.data, created); err != nil {
			return nil, fmt.Errorf("open disk key manager: %w", err)
		}
	}
	return d, nil
}

// openKeyring reads the keyring of dir, or creates it when it is missing
// and no encrypted key is in files, and returns the KEK of secret and
// whether the keyring was created.
func openKeyring(dir string, secret Secret, files []keyFile, logger *slog.Logger) (kek []byte, created bool, err error) {
	path := filepath.Join(dir, keyringFile)
	kr, err := readKeyring(path)
	if errors.Is(err, fs.ErrNotExist) {
		for _, f := range files {
			if f.kind == pemTypeEncrypted {
				return nil, false, fmt.Errorf("%s is missing but %s holds encrypted keys (%s): restore keyring.json from a backup of this data dir; without it the keys cannot be decrypted", path, dir, f.path)
			}
		}
		kr, kek, err := newKeyring(secret)
		if err != nil {
			return nil, false, fmt.Errorf("create keyring: %w", err)
		}
		data, err := kr.marshal()
		if err != nil {
			clear(kek)
			return nil, false, fmt.Errorf("create keyring: %w", err)
		}
		err = fileutil.WriteNew(path, data, diskKeyMode)
		if err == nil {
			logger.Info(msgKeyringCreated, telemetry.KeyPath, path, telemetry.KeyKind, kr.KDF)
			return kek, true, nil
		}
		clear(kek)
		if !errors.Is(err, fs.ErrExist) {
			return nil, false, fmt.Errorf("create keyring: %w", err)
		}
		// Another Disk created it meanwhile: use theirs.
		kr2, err := readKeyring(path)
		if err != nil {
			return nil, false, fmt.Errorf("read keyring: %w", err)
		}
		kek, err = kr2.unlock(secret)
		if err != nil {
			return nil, false, fmt.Errorf("keyring %s: %w", path, err)
		}
		return kek, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read keyring: %w", err)
	}
	kek, err = kr.unlock(secret)
	if err != nil {
		return nil, false, fmt.Errorf("keyring %s: %w", path, err)
	}
	return kek, false, nil
}

// keyFile is a key file found in a Disk's directory.
type keyFile struct {
	id   string
	path string
	data []byte
	// kind is the PEM block type, or "" when the file is not one PEM block.
	kind string
}

// scanKeyFiles reads every <id>.key file of dir with a valid id.
func scanKeyFiles(dir string) ([]keyFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []keyFile
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), diskKeySuffix)
		if !ok || e.IsDir() || ValidateID(id) != nil {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		f := keyFile{id: id, path: path, data: data}
		if block, err := decodePEM(data); err == nil {
			f.kind = block.Type
		}
		files = append(files, f)
	}
	return files, nil
}

// migrate encrypts the plaintext key file of id in place when it still
// holds data. created says whether the keyring was just created (a
// migration from an earlier release, logged at info) or not (a warning). A
// file that does not hold a key is left as it is, with a warning.
func (d *Disk) migrate(id string, data []byte, created bool) error {
	path := d.path(id)
	signer, _, err := decodeKey(id, data, d.aead)
	if err != nil {
		d.logger.Warn(msgCorruptPlaintext, telemetry.KeyName, id, telemetry.KeyPath, path, telemetry.KeyErr, err)
		return nil
	}
	if _, err := d.rewriteEncrypted(id, data, signer); err != nil {
		return err
	}
	if created {
		d.logger.Info(msgMigratedKey, telemetry.KeyName, id, telemetry.KeyPath, path)
	} else {
		d.logger.Warn(msgFoundPlaintext, telemetry.KeyName, id, telemetry.KeyPath, path)
	}
	return nil
}

// GenerateKey creates a new ECDSA P-256 key under id, replacing any key of
// that id, and returns its signer. The encrypted key file is synced to disk
// before it returns.
func (d *Disk) GenerateKey(_ context.Context, id string) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	if err := d.write(id, key); err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	return key, nil
}

// ImportKey encrypts key and stores it under id, replacing any key of that
// id.
func (d *Disk) ImportKey(_ context.Context, id string, key crypto.Signer) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("import key: %w", err)
	}
	k, err := checkImport(key)
	if err != nil {
		return nil, err
	}
	if err := d.write(id, k); err != nil {
		return nil, fmt.Errorf("import key %q: %w", id, err)
	}
	return k, nil
}

// write encrypts key and writes it atomically as the file of id.
func (d *Disk) write(id string, key crypto.Signer) error {
	data, err := d.encodeKey(id, key)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return fileutil.WriteAtomic(d.path(id), data, diskKeyMode)
}

// GetKey reads and decrypts the key id. A missing file is an error wrapping
// ErrNotFound. A file that cannot be decoded or decrypted (damaged,
// truncated, or moved from another id or data dir) is an error wrapping
// ErrCorrupt that names the id and the file, which is left as it is. A
// plaintext key file is accepted, encrypted in place, and logged as a
// warning.
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
	signer, plaintext, err := decodeKey(id, data, d.aead)
	if err != nil {
		return nil, fmt.Errorf("get key %q: key file %s: %w: %v", id, path, ErrCorrupt, err)
	}
	if plaintext {
		rewritten, err := d.rewriteEncrypted(id, data, signer)
		if err != nil {
			return nil, fmt.Errorf("get key %q: %w", id, err)
		}
		if rewritten {
			d.logger.Warn(msgFoundPlaintext, telemetry.KeyName, id, telemetry.KeyPath, path)
		}
	}
	return signer, nil
}

// Delete removes the key file of id for good and syncs the directory.
// Deleting a missing key is not an error.
func (d *Disk) Delete(_ context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("delete key: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	err := os.Remove(d.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete key %q: %w", id, err)
	}
	if err := fileutil.SyncDir(d.dir); err != nil {
		return fmt.Errorf("delete key %q: %w", id, err)
	}
	return nil
}

// rewriteEncrypted replaces the file of id, which held plain, with the
// encryption of signer, unless the file changed meanwhile. It reports
// whether it wrote.
func (d *Disk) rewriteEncrypted(id string, plain []byte, signer crypto.Signer) (bool, error) {
	data, err := d.encodeKey(id, signer)
	if err != nil {
		return false, fmt.Errorf("encrypt plaintext key file: %w", err)
	}
	path := d.path(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	current, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) || err == nil && !bytes.Equal(current, plain) {
		return false, nil // deleted or replaced meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("encrypt plaintext key file: %w", err)
	}
	if err := fileutil.WriteAtomic(path, data, diskKeyMode); err != nil {
		return false, fmt.Errorf("encrypt plaintext key file: %w", err)
	}
	return true, nil
}

// path returns the file of a validated key id.
func (d *Disk) path(id string) string {
	return filepath.Join(d.dir, id+diskKeySuffix)
}

// encodeKey returns the encrypted file contents for the key id.
func (d *Disk) encodeKey(id string, key crypto.Signer) ([]byte, error) {
	return sealKey(d.aead, id, key)
}

// sealKey encodes the key id encrypted with aead, as a PEM block that
// decodeKey reads.
func sealKey(aead cipher.AEAD, id string, key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	body := append(make([]byte, 0, 1+aead.Overhead()+len(der)), encryptedKeyVersion)
	body = aead.Seal(body, nil, der, keyAAD(id))
	clear(der)
	return pem.EncodeToMemory(&pem.Block{Type: pemTypeEncrypted, Bytes: body}), nil
}

// decodeKey parses the contents of the key file of id: an encrypted block,
// decrypted with aead, or a plaintext PKCS#8 block of an earlier release.
// It returns the key and whether it was plaintext. The errors never include
// key bytes.
func decodeKey(id string, data []byte, aead cipher.AEAD) (signer crypto.Signer, plaintext bool, err error) {
	block, err := decodePEM(data)
	if err != nil {
		return nil, false, err
	}
	der := block.Bytes
	switch block.Type {
	case pemTypeEncrypted:
		if len(block.Headers) != 0 {
			return nil, false, errors.New("unexpected PEM headers")
		}
		if len(der) == 0 {
			return nil, false, errors.New("empty encrypted block")
		}
		if der[0] != encryptedKeyVersion {
			return nil, false, fmt.Errorf("encrypted key version %d, want %d", der[0], encryptedKeyVersion)
		}
		if len(der)-1 < aead.Overhead() {
			return nil, false, errors.New("encrypted key is truncated")
		}
		plain, err := aead.Open(nil, nil, der[1:], keyAAD(id))
		if err != nil {
			return nil, false, errors.New("decryption failed: the file was altered, truncated, or moved from another key id or data dir")
		}
		der = plain
		defer clear(plain)
	case pemTypePKCS8:
		plaintext = true
	default:
		return nil, false, fmt.Errorf("PEM block type %q, want %q", block.Type, pemTypeEncrypted)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		// The parser's message does not echo the input.
		return nil, false, fmt.Errorf("parse PKCS#8: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, false, fmt.Errorf("key type %T is not a signer", key)
	}
	return signer, plaintext, nil
}

// decodePEM returns the one PEM block of data, which may be followed only
// by whitespace.
func decodePEM(data []byte) (*pem.Block, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	return block, nil
}

// keyAAD returns the additional data of the encrypted key id.
func keyAAD(id string) []byte {
	return []byte(encryptedKeyAAD + id)
}
