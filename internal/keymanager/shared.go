package keymanager

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/store"
)

// Shared keeps keys in a store.Store, encrypted exactly as Disk encrypts
// its files: AES-256-GCM under a key-encryption key derived from a Secret,
// bound to the key's id. The keyring (salt, KDF parameters, verifier) is in
// the store too. Every control-plane replica that opens it with the same
// secret (the same --ca-key-file or passphrase) shares the keys through
// the store, which is what several replicas on one etcd need; the store
// never sees a key in the clear, and a replica with another secret is
// refused (ErrWrongSecret) before it reads or writes a key.
type Shared struct {
	st     store.Store
	prefix string
	aead   cipher.AEAD
}

var _ KeyManager = (*Shared)(nil)

// NewShared opens the keys under prefix (which ends in "/") in st,
// creating the keyring for secret when there is none. Two replicas that
// create it at once agree on one: the loser of the race reads the
// winner's.
func NewShared(ctx context.Context, st store.Store, prefix string, secret Secret) (*Shared, error) {
	if st == nil || !strings.HasSuffix(prefix, "/") {
		return nil, errors.New("open shared key manager: a store and a prefix ending in / are required")
	}
	if secret.kind == secretNone {
		return nil, errors.New("open shared key manager: a secret (passphrase or key file) is required")
	}
	kek, err := sharedKeyring(ctx, st, prefix+"keyring", secret)
	if err != nil {
		return nil, fmt.Errorf("open shared key manager: %w", err)
	}
	aead, err := newAEAD(kek)
	clear(kek)
	if err != nil {
		return nil, fmt.Errorf("open shared key manager: %w", err)
	}
	return &Shared{st: st, prefix: prefix, aead: aead}, nil
}

// sharedKeyring reads the keyring at key, or creates it, and returns the
// KEK of secret.
func sharedKeyring(ctx context.Context, st store.Store, key string, secret Secret) ([]byte, error) {
	for range 3 {
		kv, err := st.Get(ctx, key)
		if err == nil {
			kr, err := parseKeyring("store key "+key, kv.Value)
			if err != nil {
				return nil, err
			}
			return kr.unlock(secret)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("read keyring: %w", err)
		}
		kr, kek, err := newKeyring(secret)
		if err != nil {
			return nil, err
		}
		data, err := kr.marshal()
		if err != nil {
			return nil, err
		}
		_, err = st.Txn(ctx, []store.Cmp{{Key: key, ModRevision: 0}}, []store.Op{{Key: key, Value: data}})
		if err == nil {
			return kek, nil
		}
		clear(kek)
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("create keyring: %w", err)
		}
		// Another replica created it first: read theirs.
	}
	return nil, errors.New("keyring: created and deleted concurrently")
}

func (s *Shared) key(id string) string { return s.prefix + "key/" + id }

// GenerateKey implements KeyManager.
func (s *Shared) GenerateKey(ctx context.Context, id string) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key %s: %w", id, err)
	}
	return s.put(ctx, id, key)
}

// ImportKey implements KeyManager.
func (s *Shared) ImportKey(ctx context.Context, id string, key crypto.Signer) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	k, err := checkImport(key)
	if err != nil {
		return nil, err
	}
	return s.put(ctx, id, k)
}

func (s *Shared) put(ctx context.Context, id string, key *ecdsa.PrivateKey) (crypto.Signer, error) {
	data, err := sealKey(s.aead, id, key)
	if err != nil {
		return nil, err
	}
	if _, err := store.Put(ctx, s.st, s.key(id), data); err != nil {
		return nil, fmt.Errorf("store key %s: %w", id, err)
	}
	return key, nil
}

// GetKey implements KeyManager.
func (s *Shared) GetKey(ctx context.Context, id string) (crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	kv, err := s.st.Get(ctx, s.key(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("get key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", id, err)
	}
	signer, plaintext, err := decodeKey(id, kv.Value, s.aead)
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w: %v", id, ErrCorrupt, err)
	}
	if plaintext {
		// Only sealed keys are ever written here.
		return nil, fmt.Errorf("get key %q: %w: stored without encryption", id, ErrCorrupt)
	}
	return signer, nil
}

// Delete implements KeyManager.
func (s *Shared) Delete(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if _, err := store.Delete(ctx, s.st, s.key(id)); err != nil {
		return fmt.Errorf("delete key %s: %w", id, err)
	}
	return nil
}
