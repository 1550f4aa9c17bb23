package keymanager

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// Interface guards.
var (
	_ Sealer = (*Disk)(nil)
	_ Sealer = (*Memory)(nil)
)

const (
	// sealedVersion is the first byte of a sealed blob.
	sealedVersion byte = 1
	// sealedAAD starts the additional data of a sealed blob; the purpose
	// follows. It differs from encryptedKeyAAD, so a sealed blob and a
	// key file, encrypted under the same KEK, can never be swapped.
	sealedAAD = "bulwark sealed v1 purpose="
	// maxPurposeLen bounds a purpose (resource keys are far shorter).
	maxPurposeLen = 1024
)

// ErrUnseal is wrapped by every Open failure of a blob that is not what
// Seal wrote for this purpose under this key: altered, truncated, sealed
// for another purpose, or by another key custody.
var ErrUnseal = errors.New("sealed data cannot be opened")

// Sealer encrypts small secrets (the data of Secret resources) for storage
// at rest under the key custody's key-encryption key. A purpose (the
// resource's store key) binds a sealed blob to its place: a blob copied to
// another purpose does not open. Neither method puts plaintext in its
// errors.
type Sealer interface {
	// Seal encrypts plaintext for purpose. Two seals of the same plaintext
	// differ (random nonce).
	Seal(ctx context.Context, purpose string, plaintext []byte) ([]byte, error)
	// Open decrypts what Seal returned for purpose, or returns an error
	// wrapping ErrUnseal.
	Open(ctx context.Context, purpose string, sealed []byte) ([]byte, error)
}

// Seal implements Sealer with AES-256-GCM under the Disk's KEK: a version
// byte (1), a random 12-byte nonce, then the ciphertext and its tag, with
// the additional data "bulwark sealed v1 purpose=<purpose>". The format is
// that of an encrypted key file's block; the additional data tells them
// apart, so neither opens as the other.
func (d *Disk) Seal(_ context.Context, purpose string, plaintext []byte) ([]byte, error) {
	return seal(d.aead, purpose, plaintext)
}

// Open implements Sealer.
func (d *Disk) Open(_ context.Context, purpose string, sealed []byte) ([]byte, error) {
	return open(d.aead, purpose, sealed)
}

// Seal implements Sealer with AES-256-GCM under a random key of this
// process: what it seals cannot be opened after the process exits, like
// the Memory's keys.
func (m *Memory) Seal(_ context.Context, purpose string, plaintext []byte) ([]byte, error) {
	return seal(m.aead, purpose, plaintext)
}

// Open implements Sealer.
func (m *Memory) Open(_ context.Context, purpose string, sealed []byte) ([]byte, error) {
	return open(m.aead, purpose, sealed)
}

// newRandomAEAD returns AES-256-GCM with random nonces (as the Disk's)
// under a fresh random key.
func newRandomAEAD() (cipher.AEAD, error) {
	key := make([]byte, kekSize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("random sealing key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// checkPurpose refuses an empty or oversized purpose.
func checkPurpose(purpose string) error {
	if purpose == "" || len(purpose) > maxPurposeLen {
		return fmt.Errorf("purpose must be 1 to %d bytes", maxPurposeLen)
	}
	return nil
}

// seal encrypts plaintext for purpose under aead.
func seal(aead cipher.AEAD, purpose string, plaintext []byte) ([]byte, error) {
	if aead == nil {
		return nil, errors.New("seal: no key (use NewDisk or NewMemory)")
	}
	if err := checkPurpose(purpose); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	// The AEAD draws the nonce and puts it first (NewGCMWithRandomNonce).
	out := append(make([]byte, 0, 1+aead.Overhead()+len(plaintext)), sealedVersion)
	return aead.Seal(out, nil, plaintext, sealAAD(purpose)), nil
}

// open decrypts sealed for purpose under aead.
func open(aead cipher.AEAD, purpose string, sealed []byte) ([]byte, error) {
	if aead == nil {
		return nil, errors.New("open sealed data: no key (use NewDisk or NewMemory)")
	}
	if err := checkPurpose(purpose); err != nil {
		return nil, fmt.Errorf("open sealed data: %w", err)
	}
	switch {
	case len(sealed) == 0:
		return nil, fmt.Errorf("open sealed data: %w: empty", ErrUnseal)
	case sealed[0] != sealedVersion:
		return nil, fmt.Errorf("open sealed data: %w: version %d, want %d", ErrUnseal, sealed[0], sealedVersion)
	case len(sealed) < 1+aead.Overhead():
		return nil, fmt.Errorf("open sealed data: %w: truncated", ErrUnseal)
	}
	plain, err := aead.Open(nil, nil, sealed[1:], sealAAD(purpose))
	if err != nil {
		return nil, fmt.Errorf("open sealed data: %w: altered, truncated, sealed for another purpose or under another key", ErrUnseal)
	}
	return plain, nil
}

// sealAAD returns the additional data of a blob sealed for purpose.
func sealAAD(purpose string) []byte {
	return []byte(sealedAAD + purpose)
}
