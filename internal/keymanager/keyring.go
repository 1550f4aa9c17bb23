package keymanager

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"golang.org/x/crypto/argon2"
)

// keyring.json is the one file of a Disk's directory that is not a key: how
// the key-encryption key (KEK) is derived from the Secret, and a verifier
// that tells a wrong secret before any key is read. It holds no key
// material; losing it makes every key of the directory undecryptable.
//
//	{
//	  "version": 1,
//	  "kdf": "argon2id",                       // or "hkdf-sha256" for a key file
//	  "salt": "<base64 of 32 random bytes>",
//	  "argon2": {"time": 3, "memory_kib": 65536, "threads": 2}, // argon2id only
//	  "verifier": "<base64 of nonce || AES-256-GCM(KEK, verifierPlaintext)>"
//	}
const (
	// keyringFile is the name of the keyring in a Disk's directory.
	keyringFile = "keyring.json"
	// keyringVersion is the version of the keyring format written.
	keyringVersion = 1
	// keyringMaxSize bounds how much of keyring.json is read.
	keyringMaxSize = 64 << 10
	// kdfArgon2id derives the KEK from a passphrase.
	kdfArgon2id = "argon2id"
	// kdfHKDFSHA256 derives the KEK from a key file's 32 bytes.
	kdfHKDFSHA256 = "hkdf-sha256"
	// saltSize is the size of a keyring's random salt.
	saltSize = 32
	// kekSize is the size of the KEK: AES-256.
	kekSize = 32
	// hkdfInfo is the HKDF context of a key file's KEK.
	hkdfInfo = "bulwark keymanager key-encryption key v1"
	// verifierPlaintext is what the verifier encrypts.
	verifierPlaintext = "bulwark keymanager keyring verifier v1"
	// verifierAAD is the additional data of the verifier.
	verifierAAD = "bulwark keyring verifier v1"
)

// Bounds of the argon2id cost read from a keyring, so that a damaged file
// can neither panic the derivation nor exhaust memory.
const (
	argon2MaxTime      = 64
	argon2MaxMemoryKiB = 4 << 20 // 4 GiB
)

// keyring is the contents of keyring.json.
type keyring struct {
	Version  int          `json:"version"`
	KDF      string       `json:"kdf"`
	Salt     []byte       `json:"salt"`
	Argon2   *keyringCost `json:"argon2,omitempty"`
	Verifier []byte       `json:"verifier"`
}

// keyringCost is the argon2id cost of a keyring.
type keyringCost struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// newKeyring returns a keyring for secret with a fresh salt, and its KEK.
func newKeyring(secret Secret) (keyring, []byte, error) {
	kr := keyring{Version: keyringVersion, Salt: make([]byte, saltSize)}
	if _, err := rand.Read(kr.Salt); err != nil {
		return keyring{}, nil, err
	}
	switch secret.kind {
	case secretPassphrase:
		kr.KDF = kdfArgon2id
		kr.Argon2 = &keyringCost{Time: secret.argon2.time, MemoryKiB: secret.argon2.memoryKiB, Threads: secret.argon2.threads}
	case secretKeyFile:
		kr.KDF = kdfHKDFSHA256
	default:
		return keyring{}, nil, errors.New("no secret")
	}
	if err := kr.validate(); err != nil {
		return keyring{}, nil, err
	}
	kek, err := kr.deriveKEK(secret)
	if err != nil {
		return keyring{}, nil, err
	}
	aead, err := newAEAD(kek)
	if err != nil {
		return keyring{}, nil, err
	}
	kr.Verifier = aead.Seal(nil, nil, []byte(verifierPlaintext), []byte(verifierAAD))
	return kr, kek, nil
}

// readKeyring reads and validates the keyring at path. A missing file is an
// error wrapping fs.ErrNotExist; a file that cannot be decoded is an error
// wrapping ErrCorrupt. The file is never written.
func readKeyring(path string) (keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return keyring{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, keyringMaxSize+1))
	if err != nil {
		return keyring{}, err
	}
	return parseKeyring(path, data)
}

// parseKeyring decodes and validates a keyring read from where. A keyring
// that cannot be decoded is an error wrapping ErrCorrupt.
func parseKeyring(path string, data []byte) (keyring, error) {
	if len(data) > keyringMaxSize {
		return keyring{}, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrCorrupt, keyringMaxSize)
	}
	// The version comes first, so that a keyring of a later release is
	// reported as such rather than as unknown fields.
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return keyring{}, fmt.Errorf("%s: %w: %v", path, ErrCorrupt, err)
	}
	if v.Version != keyringVersion {
		if v.Version > keyringVersion {
			return keyring{}, fmt.Errorf("%s: version %d is not supported (want %d): it was written by a later release of bulwark", path, v.Version, keyringVersion)
		}
		return keyring{}, fmt.Errorf("%s: %w: version %d, want %d", path, ErrCorrupt, v.Version, keyringVersion)
	}
	var kr keyring
	if err := json.Unmarshal(data, &kr, json.RejectUnknownMembers(true)); err != nil {
		return keyring{}, fmt.Errorf("%s: %w: %v", path, ErrCorrupt, err)
	}
	if err := kr.validate(); err != nil {
		return keyring{}, fmt.Errorf("%s: %w: %v", path, ErrCorrupt, err)
	}
	if len(kr.Verifier) == 0 {
		return keyring{}, fmt.Errorf("%s: %w: verifier is missing", path, ErrCorrupt)
	}
	return kr, nil
}

// validate checks the derivation fields of kr.
func (kr keyring) validate() error {
	if len(kr.Salt) != saltSize {
		return fmt.Errorf("salt is %d bytes, want %d", len(kr.Salt), saltSize)
	}
	switch kr.KDF {
	case kdfArgon2id:
		c := kr.Argon2
		switch {
		case c == nil:
			return errors.New("argon2 cost is missing")
		case c.Time < 1 || c.Time > argon2MaxTime:
			return fmt.Errorf("argon2 time %d, want 1 to %d", c.Time, argon2MaxTime)
		case c.Threads < 1:
			return fmt.Errorf("argon2 threads %d, want at least 1", c.Threads)
		case c.MemoryKiB < 8*uint32(c.Threads) || c.MemoryKiB > argon2MaxMemoryKiB:
			return fmt.Errorf("argon2 memory %d KiB, want %d to %d", c.MemoryKiB, 8*uint32(c.Threads), argon2MaxMemoryKiB)
		}
	case kdfHKDFSHA256:
		if kr.Argon2 != nil {
			return fmt.Errorf("argon2 cost given for kdf %q", kr.KDF)
		}
	default:
		return fmt.Errorf("kdf %q, want %q or %q", kr.KDF, kdfArgon2id, kdfHKDFSHA256)
	}
	return nil
}

// marshal returns the contents of keyring.json.
func (kr keyring) marshal() ([]byte, error) {
	data, err := json.Marshal(kr, json.Deterministic(true), jsontext.WithIndent("  "))
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// unlock derives the KEK of secret and checks it against the verifier. A
// secret of the other kind or with another value is an error wrapping
// ErrWrongSecret.
func (kr keyring) unlock(secret Secret) ([]byte, error) {
	want := secretPassphrase
	if kr.KDF == kdfHKDFSHA256 {
		want = secretKeyFile
	}
	if secret.kind != want {
		return nil, fmt.Errorf("%w (the keys are encrypted with %s, got %s)", ErrWrongSecret, kindName(want), kindName(secret.kind))
	}
	kek, err := kr.deriveKEK(secret)
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, err
	}
	got, err := aead.Open(nil, nil, kr.Verifier, []byte(verifierAAD))
	if err != nil || string(got) != verifierPlaintext {
		clear(kek)
		return nil, ErrWrongSecret
	}
	return kek, nil
}

// deriveKEK derives the KEK of secret with the keyring's KDF, salt and
// cost. The keyring has been validated and matches the secret's kind.
func (kr keyring) deriveKEK(secret Secret) ([]byte, error) {
	switch kr.KDF {
	case kdfArgon2id:
		c := kr.Argon2
		return argon2.IDKey(secret.material, kr.Salt, c.Time, c.MemoryKiB, c.Threads, kekSize), nil
	case kdfHKDFSHA256:
		kek, err := hkdf.Key(sha256.New, secret.material, kr.Salt, hkdfInfo, kekSize)
		if err != nil {
			return nil, fmt.Errorf("derive key-encryption key: %v", err)
		}
		return kek, nil
	default:
		return nil, fmt.Errorf("kdf %q is not supported", kr.KDF)
	}
}

// newAEAD returns AES-256-GCM under kek with random 96-bit nonces, which
// Seal prepends to its output and Open reads back.
func newAEAD(kek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("aes: %v", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("aes-gcm: %v", err)
	}
	return aead, nil
}
