package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Store keys of the CA records. Each value is a JSON record: the PEM
// certificate and the id of its key in the key manager.
const (
	keyWorkloadRoot         = "/ca/workload/root"
	keyWorkloadIntermediate = "/ca/workload/intermediate"
	// keyWorkloadRotation holds the bundle version and the state of a
	// root rotation (rotate.go).
	keyWorkloadRotation = "/ca/workload/rotation"
	// prefixWorkload is the prefix of every workload CA record, read
	// together by Reload.
	prefixWorkload  = "/ca/workload/"
	keyOperatorRoot = "/ca/operator/root"
)

// Key id prefixes; a key id is "<prefix>-<8 hex>", fresh for every key, so
// that rotation can keep old and new keys side by side.
const (
	keyPrefixWorkloadRoot         = "workload-root"
	keyPrefixWorkloadIntermediate = "workload-intermediate"
	keyPrefixOperatorRoot         = "operator-root"
)

// maxStartAttempts bounds how often a CA start retries after losing a race
// to another control plane writing the same record.
const maxStartAttempts = 5

// record is the stored form of a CA certificate.
type record struct {
	// Certificate is one PEM "CERTIFICATE" block.
	Certificate string `json:"certificate"`
	// KeyID names the certificate's key in the key manager.
	KeyID string `json:"keyID"`
}

// authority is a loaded CA certificate with its signer.
type authority struct {
	cert   *x509.Certificate
	signer crypto.Signer
	// keyID names signer in the key manager.
	keyID string
	// rev is the ModRevision of the record, for compare-and-swap.
	rev int64
}

// custody loads and creates CA records: certificates in the store, keys in
// the key manager.
type custody struct {
	store  store.Store
	keys   keymanager.KeyManager
	logger *slog.Logger
}

// spec says how to check, create and renew one CA record.
type spec struct {
	// key is the store key of the record; keyPrefix names its keys.
	key, keyPrefix string
	// what names the CA in errors and logs, e.g. "workload root".
	what string
	// check validates a stored certificate beyond its key.
	check func(cert *x509.Certificate) error
	// create issues the certificate for signer's public key.
	create func(signer crypto.Signer) (*x509.Certificate, error)
	// renew reports whether a stored certificate must be replaced now.
	// nil means never (roots).
	renew func(cert *x509.Certificate) bool
	// guard is extra conditions of the write, e.g. the root record an
	// intermediate was signed under.
	guard []store.Cmp
	// dependents are the store keys of records issued under this one.
	// Creating this record while one of them exists would orphan it, so
	// that is an error, never a silent new CA.
	dependents []string
}

// loadOrCreate returns the CA of s: the stored one, or a new one when none
// is stored or the stored one must be renewed. Whatever fails to load (a
// corrupted record, a missing or mismatched key) is an error: stored CA
// material is never replaced unless renew says so. When another control
// plane writes the record first, its record is used.
func (c *custody) loadOrCreate(ctx context.Context, s spec) (*authority, error) {
	for range maxStartAttempts {
		a, err := c.load(ctx, s)
		var rev int64
		switch {
		case errors.Is(err, store.ErrNotFound):
			// First start: create it (rev 0: it must still not exist),
			// unless what it signed is still there.
			if err := c.checkNoDependents(ctx, s); err != nil {
				// Another control plane may have written the record and
				// what it signed since the read above: read again before
				// calling the store corrupt.
				if _, lerr := c.load(ctx, s); lerr == nil {
					continue
				}
				return nil, err
			}
		case err != nil:
			return nil, err
		case s.renew != nil && s.renew(a.cert):
			rev = a.rev
		default:
			return a, nil
		}
		created, err := c.create(ctx, s, rev)
		if errors.Is(err, store.ErrConflict) {
			c.logger.Info("ca record written concurrently, loading it", telemetry.KeyName, s.key)
			continue
		}
		if err != nil {
			return nil, err
		}
		if a != nil {
			// The replaced certificate's key signs nothing any more.
			if err := c.keys.Delete(ctx, a.keyID); err != nil {
				c.logger.Warn("delete replaced ca key", telemetry.KeyName, a.keyID, telemetry.KeyErr, err)
			}
			c.logger.Info("ca certificate renewed", telemetry.KeyName, s.key,
				telemetry.KeySerial, created.cert.SerialNumber.Text(16), telemetry.KeyExpiry, created.cert.NotAfter,
				telemetry.KeyDetail, "previous serial "+a.cert.SerialNumber.Text(16)+" expiring "+a.cert.NotAfter.Format(time.RFC3339))
		} else {
			c.logger.Info("ca certificate created", telemetry.KeyName, s.key,
				telemetry.KeySerial, created.cert.SerialNumber.Text(16), telemetry.KeyExpiry, created.cert.NotAfter)
		}
		return created, nil
	}
	return nil, fmt.Errorf("%s: record %s changed concurrently %d times", s.what, s.key, maxStartAttempts)
}

// load reads and checks the record of s and fetches its key. A missing
// record is an error wrapping store.ErrNotFound; nothing else is.
func (c *custody) load(ctx context.Context, s spec) (*authority, error) {
	kv, err := c.store.Get(ctx, s.key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", s.what, err)
	}
	return c.loadKV(ctx, s, kv)
}

// loadKV checks the stored record kv of s and fetches its key.
func (c *custody) loadKV(ctx context.Context, s spec, kv store.KV) (*authority, error) {
	rec, cert, err := decodeRecord(kv.Value)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w %s: %v", s.what, ErrCorruptRecord, s.key, err)
	}
	if err := checkCA(cert); err != nil {
		return nil, fmt.Errorf("load %s: %w %s: %v", s.what, ErrCorruptRecord, s.key, err)
	}
	if err := s.check(cert); err != nil {
		return nil, fmt.Errorf("load %s from %s: %w", s.what, s.key, err)
	}
	signer, err := c.keys.GetKey(ctx, rec.KeyID)
	if err != nil {
		// Never regenerate: a new key would orphan everything issued
		// under the stored certificate.
		return nil, fmt.Errorf("load %s: key %q of %s: %w", s.what, rec.KeyID, s.key, err)
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("load %s: key %q of %s: %w", s.what, rec.KeyID, s.key, ErrKeyMismatch)
	}
	return &authority{cert: cert, signer: signer, keyID: rec.KeyID, rev: kv.ModRevision}, nil
}

// checkNoDependents fails when a record issued under the missing record of
// s exists.
func (c *custody) checkNoDependents(ctx context.Context, s spec) error {
	for _, d := range s.dependents {
		_, err := c.store.Get(ctx, d)
		switch {
		case err == nil:
			return fmt.Errorf("load %s: %w: %s is missing but %s, issued under it, exists", s.what, ErrCorruptRecord, s.key, d)
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("load %s: %w", s.what, err)
		}
	}
	return nil
}

// create makes a new key and certificate for s and writes the record if
// the record's revision is still rev (0: it must not exist). It returns an
// error wrapping store.ErrConflict when another writer came first. The key
// is generated and durable before the record refers to it.
func (c *custody) create(ctx context.Context, s spec, rev int64) (*authority, error) {
	keyID, err := c.newKeyID(ctx, s.keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", s.what, err)
	}
	signer, err := c.keys.GenerateKey(ctx, keyID)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", s.what, err)
	}
	cert, err := s.create(signer)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", s.what, err)
	}
	value, err := json.Marshal(record{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		KeyID:       keyID,
	})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", s.what, err)
	}
	cmps := append([]store.Cmp{{Key: s.key, ModRevision: rev}}, s.guard...)
	if rev == 0 {
		for _, d := range s.dependents {
			cmps = append(cmps, store.Cmp{Key: d, ModRevision: 0})
		}
	}
	newRev, err := c.store.Txn(ctx, cmps, []store.Op{{Key: s.key, Value: value}})
	if err != nil {
		// On a conflict nothing refers to the new key: delete it. On
		// another error the write may have happened after all: keep it.
		if errors.Is(err, store.ErrConflict) {
			if derr := c.keys.Delete(ctx, keyID); derr != nil {
				c.logger.Warn("delete unused ca key", telemetry.KeyName, keyID, telemetry.KeyErr, derr)
			}
		}
		return nil, fmt.Errorf("create %s: write %s: %w", s.what, s.key, err)
	}
	return &authority{cert: cert, signer: signer, keyID: keyID, rev: newRev}, nil
}

// newKeyID returns a fresh key id with prefix that the key manager does not
// hold yet, so GenerateKey never replaces an existing key.
func (c *custody) newKeyID(ctx context.Context, prefix string) (string, error) {
	for range maxStartAttempts {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("key id: %w", err)
		}
		id := prefix + "-" + hex.EncodeToString(b[:])
		_, err := c.keys.GetKey(ctx, id)
		if errors.Is(err, keymanager.ErrNotFound) {
			return id, nil
		}
		// Taken, or unreadable (a corrupted file): try another id.
	}
	return "", fmt.Errorf("key id: no free id with prefix %q after %d attempts", prefix, maxStartAttempts)
}

// decodeRecord parses a stored record strictly: one JSON object with known
// fields only, one PEM certificate, a valid key id.
func decodeRecord(value []byte) (record, *x509.Certificate, error) {
	var rec record
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return record{}, nil, fmt.Errorf("decode json: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return record{}, nil, errors.New("decode json: data after the record")
	}
	if err := keymanager.ValidateID(rec.KeyID); err != nil {
		return record{}, nil, fmt.Errorf("keyID: %v", err)
	}
	block, rest := pem.Decode([]byte(rec.Certificate))
	if block == nil || block.Type != "CERTIFICATE" {
		return record{}, nil, errors.New("certificate: no PEM CERTIFICATE block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return record{}, nil, errors.New("certificate: data after the PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return record{}, nil, fmt.Errorf("certificate: %v", err)
	}
	return rec, cert, nil
}

// checkCA accepts CA certificates only.
func checkCA(cert *x509.Certificate) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return errors.New("certificate is not a CA certificate")
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("certificate lacks the CertSign key usage")
	}
	return nil
}

// publicKeysEqual reports whether a and b are the same key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// lifetimeLeft is the part of cert's validity still ahead at now, 0 once it
// expired and 1 before it starts.
func lifetimeLeft(cert *x509.Certificate, now time.Time) float64 {
	total := cert.NotAfter.Sub(cert.NotBefore)
	left := cert.NotAfter.Sub(now)
	switch {
	case total <= 0 || left <= 0:
		return 0
	case left >= total:
		return 1
	}
	return float64(left) / float64(total)
}
