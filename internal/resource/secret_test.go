package resource_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// tlsPair returns a self-signed certificate for host and its key, PEM.
func tlsPair(t testing.TB, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: start.Add(-time.Hour), NotAfter: start.Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// secretDoc returns a kubernetes.io/tls Secret document.
func secretDoc(ns, name string, certPEM, keyPEM []byte) string {
	return `apiVersion: bulwark.dev/v1alpha1
kind: Secret
metadata:
  name: ` + name + `
  namespace: ` + ns + `
  labels: {team: edge}
type: kubernetes.io/tls
data:
  tls.crt: ` + base64.StdEncoding.EncodeToString(certPEM) + `
  tls.key: ` + base64.StdEncoding.EncodeToString(keyPEM) + `
`
}

// sealedFixture is a fixture whose store file is known and whose Store
// seals with a Disk.
type sealedFixture struct {
	*fixture
	path string
	keys *keymanager.Disk
}

func newSealedFixture(t testing.TB) *sealedFixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := bolt.Open(path, bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	keys := newDisk(t)
	c := clock.NewFake(start)
	return &sealedFixture{fixture: &fixture{store: s, clock: c, res: resource.New(s, c).WithSealer(keys)}, path: path, keys: keys}
}

func newDisk(t testing.TB) *keymanager.Disk {
	t.Helper()
	kf := filepath.Join(t.TempDir(), "ca-key")
	if err := keymanager.CreateKeyFile(kf); err != nil {
		t.Fatal(err)
	}
	secret, err := keymanager.KeyFileSecret(kf)
	if err != nil {
		t.Fatal(err)
	}
	d, err := keymanager.NewDisk(filepath.Join(t.TempDir(), "keys"), secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// secretOf gets the Secret ns/name through res.
func secretOf(t testing.TB, res *resource.Store, ns, name string) *config.Secret {
	t.Helper()
	o, err := res.Get(context.Background(), config.KindSecret, ns, name)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	s, ok := o.(*config.Secret)
	if !ok {
		t.Fatalf("Get returned a %T, want *config.Secret", o)
	}
	return s
}

// forms returns the forms of data a store must not hold: raw, base64 (as
// in JSON) and the base64 of the PEM body alone.
func forms(data []byte) map[string][]byte {
	block, _ := pem.Decode(data)
	return map[string][]byte{
		"raw":           data,
		"base64":        []byte(base64.StdEncoding.EncodeToString(data)),
		"PEM body":      []byte(base64.StdEncoding.EncodeToString(block.Bytes)[:64]),
		"base64url":     []byte(base64.RawURLEncoding.EncodeToString(data)),
		"DER":           block.Bytes,
		"hex of DER":    []byte(hex.EncodeToString(block.Bytes)),
		"base64 of DER": []byte(base64.StdEncoding.EncodeToString(block.Bytes)),
	}
}

func TestSecretSealedAtRest(t *testing.T) {
	f := newSealedFixture(t)
	certPEM, keyPEM := tlsPair(t, "shop.example.com")
	got := f.apply(t, secretDoc("shop", "tls", certPEM, keyPEM))
	if want := []resource.Result{{Kind: config.KindSecret, Namespace: "shop", Name: "tls", Outcome: resource.Created}}; !cmp.Equal(got, want) {
		t.Fatalf("apply: got %v, want %v", got, want)
	}
	// Through the internal API, the data is there.
	s := secretOf(t, f.res, "shop", "tls")
	if !bytes.Equal(s.Data[config.SecretKeyTLSKey], keyPEM) || !bytes.Equal(s.Data[config.SecretKeyTLSCert], certPEM) {
		t.Errorf("Get: the data is not the one applied")
	}
	if s.Type != config.SecretTypeTLS || s.Metadata.Labels["team"] != "edge" || s.Metadata.CreationTimestamp == "" || s.Metadata.ResourceVersion == "" {
		t.Errorf("Get: got type %q metadata %+v, want the applied type, labels and server metadata", s.Type, s.Metadata)
	}
	// The stored value is the envelope, without the key.
	kv, err := f.store.Get(context.Background(), resource.Key(config.KindSecret, "shop", "tls"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"sealed":`, `"keys":["tls.crt","tls.key"]`, `"type":"kubernetes.io/tls"`} {
		if !strings.Contains(string(kv.Value), want) {
			t.Errorf("stored document %s lacks %s", kv.Value, want)
		}
	}
	if strings.Contains(string(kv.Value), `"data"`) {
		t.Errorf("stored document has a data field: %s", kv.Value)
	}
	// Neither the store's file nor the stored value holds the key or the
	// certificate, in any encoding.
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	for what, m := range map[string][]byte{"key": keyPEM, "certificate": certPEM} {
		for form, b := range forms(m) {
			if bytes.Contains(db, b) {
				t.Errorf("the store file holds the %s (%s)", what, form)
			}
		}
	}
}

func TestSecretUnchanged(t *testing.T) {
	f := newSealedFixture(t)
	ctx := audit.WithRequester(context.Background(), audit.Requester{Actor: "alice", Source: "192.0.2.1"})
	log, err := audit.Open(ctx, audit.Config{Store: f.store, Keys: keymanager.NewMemory(), Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	res := f.res.WithAudit(log)
	certPEM, keyPEM := tlsPair(t, "shop.example.com")
	cert2, key2 := tlsPair(t, "shop.example.com")
	steps := []struct {
		doc  string
		want resource.Outcome
	}{
		{secretDoc("shop", "tls", certPEM, keyPEM), resource.Created},
		{secretDoc("shop", "tls", certPEM, keyPEM), resource.Unchanged},
		{secretDoc("shop", "tls", cert2, key2), resource.Configured},
		{secretDoc("shop", "tls", cert2, key2), resource.Unchanged},
		{strings.Replace(secretDoc("shop", "tls", cert2, key2), "team: edge", "team: web", 1), resource.Configured},
	}
	for i, st := range steps {
		got, err := res.Apply(ctx, decode(t, st.doc))
		if err != nil {
			t.Fatalf("step %d: Apply: %v", i, err)
		}
		if got[0].Outcome != st.want {
			t.Errorf("step %d: got %s, want %s", i, got[0].Outcome, st.want)
		}
	}
	if s := secretOf(t, f.res, "shop", "tls"); !bytes.Equal(s.Data[config.SecretKeyTLSKey], key2) {
		t.Errorf("after the rotation, Get gives another key than the last applied")
	}
	// Audit: one entry per change, its digests those of the sealed
	// documents, never one of the plaintext.
	entries, _, err := log.Tail(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("got %d audit entries, want 3 (created, configured, configured)", len(entries))
	}
	kv, err := f.store.Get(ctx, resource.Key(config.KindSecret, "shop", "tls"))
	if err != nil {
		t.Fatal(err)
	}
	if last := entries[2]; last.After != audit.Digest(kv.Value) || last.Before != entries[1].After {
		t.Errorf("digests: got before %s after %s, want the previous entry's and the sealed document's", last.Before, last.After)
	}
	plain, err := config.Marshal(secretOf(t, f.res, "shop", "tls"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(plain)
	for _, e := range entries {
		if e.After == hex.EncodeToString(sum[:]) || strings.Contains(e.Detail, "PRIVATE") {
			t.Errorf("audit entry %+v is a digest of the plaintext or holds it", e)
		}
	}
	// Delete: audited with the sealed digest, and gone.
	if _, err := res.Delete(ctx, []resource.Result{{Kind: config.KindSecret, Namespace: "shop", Name: "tls"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.res.Get(ctx, config.KindSecret, "shop", "tls"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after delete: %v, want ErrNotFound", err)
	}
}

func TestSecretWithoutSealer(t *testing.T) {
	f := newSealedFixture(t)
	certPEM, keyPEM := tlsPair(t, "shop.example.com")
	plain := resource.New(f.store, f.clock)
	if _, err := plain.Apply(context.Background(), decode(t, secretDoc("shop", "tls", certPEM, keyPEM), policy("shop", "a", "GET"))); !errors.Is(err, resource.ErrNoKeyCustody) {
		t.Fatalf("Apply without a sealer: %v, want ErrNoKeyCustody", err)
	}
	if objs, _, err := plain.List(context.Background(), kind, ""); err != nil || len(objs) != 0 {
		t.Errorf("after a refused apply: got %d policies (%v), want none (all or nothing)", len(objs), err)
	}
	f.apply(t, secretDoc("shop", "tls", certPEM, keyPEM))
	s := secretOf(t, plain, "shop", "tls")
	if s.Data != nil || s.Type != config.SecretTypeTLS || s.Metadata.Name != "tls" {
		t.Errorf("Get without a sealer: got type %q name %q and %d data keys, want the metadata and data nil", s.Type, s.Metadata.Name, len(s.Data))
	}
	// Another key custody cannot open it either.
	other := resource.New(f.store, f.clock).WithSealer(newDisk(t))
	if s := secretOf(t, other, "shop", "tls"); s.Data != nil {
		t.Errorf("Get with another key custody: got %d data keys, want data nil", len(s.Data))
	}
	// Applying the same Secret with another custody replaces it (the old
	// one does not open: never "unchanged").
	got, err := other.Apply(context.Background(), decode(t, secretDoc("shop", "tls", certPEM, keyPEM)))
	if err != nil || got[0].Outcome != resource.Configured {
		t.Errorf("re-apply with another key custody: got %v, %v; want configured", got, err)
	}
}

// TestSecretMovedEnvelope: a sealed envelope copied under another Secret's
// key does not open there (the purpose is the store key).
func TestSecretMovedEnvelope(t *testing.T) {
	f := newSealedFixture(t)
	ctx := context.Background()
	certPEM, keyPEM := tlsPair(t, "shop.example.com")
	f.apply(t, secretDoc("shop", "tls", certPEM, keyPEM))
	kv, err := f.store.Get(ctx, resource.Key(config.KindSecret, "shop", "tls"))
	if err != nil {
		t.Fatal(err)
	}
	moved := bytes.Replace(kv.Value, []byte(`"namespace":"shop"`), []byte(`"namespace":"evil"`), 1)
	for _, c := range []struct {
		key string
		doc []byte
	}{
		{resource.Key(config.KindSecret, "evil", "tls"), moved},
		{resource.Key(config.KindSecret, "shop", "tls2"), kv.Value},
	} {
		if _, err := f.store.Txn(ctx, nil, []store.Op{{Key: c.key, Value: c.doc}}); err != nil {
			t.Fatal(err)
		}
	}
	if s := secretOf(t, f.res, "evil", "tls"); s.Data != nil {
		t.Errorf("an envelope moved to another namespace opened")
	}
	if s := secretOf(t, f.res, "shop", "tls2"); s.Data != nil {
		t.Errorf("an envelope copied to another name opened")
	}
	// An envelope that is not one is an error naming the key, not a crash.
	if _, err := f.store.Txn(ctx, nil, []store.Op{{Key: resource.Key(config.KindSecret, "shop", "bad"), Value: []byte(`{"kind":"Secret","data":{"tls.key":"eA=="}}`)}}); err != nil {
		t.Fatal(err)
	}
	_, err = f.res.Get(ctx, config.KindSecret, "shop", "bad")
	if err == nil || !strings.Contains(err.Error(), "/resources/Secret/shop/bad") {
		t.Errorf("Get of a bad envelope: %v, want an error naming its key", err)
	}
}
