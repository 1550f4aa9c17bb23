// Package keymanager owns the custody of the control plane's private keys
// (CA roots, intermediates, the operator CA). Callers get crypto.Signers and
// never raw key bytes, so a KMS, HSM or Vault transit implementation can be
// added without touching signing code.
//
// Implementations: Disk (PKCS#8 PEM files, mode 0600, written atomically) and
// Memory (tests, ephemeral meshes). keymanagertest holds the contract suite
// both pass. Encryption at rest is added behind this seam.
package keymanager

import (
	"context"
	"crypto"
	"errors"
	"fmt"
)

// KeyManager keeps named private keys.
type KeyManager interface {
	// GenerateKey creates a new ECDSA P-256 key under id, replacing any key
	// of that id, and returns its signer. The key is durable when it returns.
	GenerateKey(ctx context.Context, id string) (crypto.Signer, error)
	// GetKey returns the signer of the key id, or an error wrapping
	// ErrNotFound.
	GetKey(ctx context.Context, id string) (crypto.Signer, error)
}

// ErrNotFound is returned by GetKey for a key that does not exist.
var ErrNotFound = errors.New("keymanager: key not found")

// ValidateID checks a key id: 1 to 64 characters of [a-z0-9-].
func ValidateID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("key id %q: must be 1 to 64 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("key id %q: only [a-z0-9-] allowed", id)
		}
	}
	return nil
}
