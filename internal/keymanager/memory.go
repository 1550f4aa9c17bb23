package keymanager

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"sync"
)

// Memory keeps keys in process memory only: they are gone when the process
// exits. It is meant for tests and ephemeral meshes. The zero value is not
// usable; call NewMemory. A Memory is safe for concurrent use.
type Memory struct {
	mu   sync.RWMutex
	keys map[string]crypto.Signer
	// aead seals under a random key of this Memory (Sealer); nil when the
	// system's randomness failed, and then Seal fails.
	aead cipher.AEAD
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	aead, _ := newRandomAEAD()
	return &Memory{keys: make(map[string]crypto.Signer), aead: aead}
}

// GenerateKey creates a new ECDSA P-256 key under id, replacing any key of
// that id, and returns its signer.
func (m *Memory) GenerateKey(_ context.Context, id string) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key %q: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[id] = key
	return key, nil
}

// ImportKey stores key under id, replacing any key of that id.
func (m *Memory) ImportKey(_ context.Context, id string, key crypto.Signer) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("import key: %w", err)
	}
	k, err := checkImport(key)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[id] = k
	return k, nil
}

// GetKey returns the signer of the key id, or an error wrapping
// ErrNotFound.
func (m *Memory) GetKey(_ context.Context, id string) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("get key: %w", err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	key, ok := m.keys[id]
	if !ok {
		return nil, fmt.Errorf("get key %q: %w", id, ErrNotFound)
	}
	return key, nil
}

// Delete removes the key id. Deleting a missing key is not an error.
func (m *Memory) Delete(_ context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("delete key: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, id)
	return nil
}
