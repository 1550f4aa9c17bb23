// Package keymanager owns the custody of the control plane's private keys
// (CA roots, intermediates, the operator CA). Callers get crypto.Signers and
// never raw key bytes, so a KMS, HSM or Vault transit implementation can be
// added without touching signing code.
//
// Implementations:
//   - Disk keeps each key in its own file, mode 0600 in a 0700 directory,
//     written atomically and encrypted at rest with AES-256-GCM under a
//     key-encryption key derived from a Secret: a passphrase (argon2id) or a
//     32-byte key file (HKDF-SHA256). The derivation's salt and parameters and
//     a verifier of the secret live in the directory's keyring.json, so a
//     wrong secret is refused (ErrWrongSecret) before any key is touched.
//     Plaintext key files of earlier releases are encrypted in place when
//     found.
//   - Shared keeps the same encrypted keys, and the keyring, in a
//     store.Store, so that control-plane replicas holding the same secret
//     share them through etcd.
//   - Memory keeps keys in process memory (tests, ephemeral meshes).
//
// Both are also Sealers: they encrypt the data of Secret resources for the
// store under the same custody (AES-256-GCM, bound to a purpose).
//
// keymanagertest holds the contract suites both pass. Key material never
// appears in logs or errors, and a Secret never prints itself.
package keymanager

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
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
	// ImportKey stores key (an operator's own CA key, brought as a PEM
	// file) under id, replacing any key of that id, and returns its
	// signer. Only ECDSA P-256 keys are accepted. The key is durable when
	// it returns.
	ImportKey(ctx context.Context, id string, key crypto.Signer) (crypto.Signer, error)
	// Delete removes the key id for good. Deleting a key that does not
	// exist is not an error; an invalid id is.
	Delete(ctx context.Context, id string) error
}

// checkImport accepts the keys ImportKey stores: ECDSA P-256 private keys.
func checkImport(key crypto.Signer) (*ecdsa.PrivateKey, error) {
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("import key: want an ECDSA P-256 private key, got %T", key)
	}
	return k, nil
}

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
