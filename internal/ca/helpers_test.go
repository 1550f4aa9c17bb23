package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// Store keys of the CA records, as documented in the package.
const (
	keyWorkloadRoot         = "/ca/workload/root"
	keyWorkloadIntermediate = "/ca/workload/intermediate"
	keyOperatorRoot         = "/ca/operator/root"
)

// testTrustDomain is the trust domain of every fixture.
const testTrustDomain = "bulwark.test"

// startTime is the fake clock's start: whole seconds, so certificate times
// (second precision) compare exactly.
func startTime() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

// fixture is one control plane's dependencies: a real store, a real key
// manager and a fake clock.
type fixture struct {
	td    spiffeid.TrustDomain
	store store.Store
	keys  keymanager.KeyManager
	clock *clock.Fake
	// keyDir is the Disk key manager's directory, if keys is a Disk.
	keyDir string
}

// newFixture returns a fixture with a Memory key manager.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	return &fixture{
		td:    spiffeid.RequireTrustDomainFromString(testTrustDomain),
		store: newStore(t),
		keys:  keymanager.NewMemory(),
		clock: clock.NewFake(startTime()),
	}
}

// newDiskFixture returns a fixture with a Disk key manager in a temp dir.
func newDiskFixture(t testing.TB) *fixture {
	t.Helper()
	f := newFixture(t)
	f.keyDir = filepath.Join(t.TempDir(), "keys")
	f.keys = openDisk(t, f.keyDir)
	return f
}

// openDisk opens a Disk key manager on dir, encrypted with a key file next
// to it (created on the first call).
func openDisk(t testing.TB, dir string) *keymanager.Disk {
	t.Helper()
	keyFile := dir + ".key"
	if _, err := os.Stat(keyFile); err != nil {
		if err := keymanager.CreateKeyFile(keyFile); err != nil {
			t.Fatal(err)
		}
	}
	secret, err := keymanager.KeyFileSecret(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := keymanager.NewDisk(dir, secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *fixture) config() ca.Config {
	return ca.Config{TrustDomain: f.td, Store: f.store, Keys: f.keys, Clock: f.clock}
}

func (f *fixture) newCA(t testing.TB) *ca.CA {
	t.Helper()
	c, err := ca.New(context.Background(), f.config())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func (f *fixture) newOperatorCA(t testing.TB) *ca.OperatorCA {
	t.Helper()
	o, err := ca.NewOperatorCA(context.Background(), f.config())
	if err != nil {
		t.Fatalf("NewOperatorCA: %v", err)
	}
	return o
}

// revision returns the store's current revision.
func (f *fixture) revision(t testing.TB) int64 {
	t.Helper()
	rev, err := f.store.Txn(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// records returns every CA record in the store, to check that a failed
// start changed nothing.
func (f *fixture) records(t testing.TB) []store.KV {
	t.Helper()
	kvs, _, err := f.store.List(context.Background(), "/ca/")
	if err != nil {
		t.Fatal(err)
	}
	return kvs
}

// storedRecord is the JSON form of a CA record.
type storedRecord struct {
	Certificate string `json:"certificate"`
	KeyID       string `json:"keyID"`
}

// record reads the CA record at key.
func (f *fixture) record(t testing.TB, key string) (*x509.Certificate, string) {
	t.Helper()
	kv, err := f.store.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	var rec storedRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		t.Fatalf("decode %s: %v", key, err)
	}
	block, _ := pem.Decode([]byte(rec.Certificate))
	if block == nil {
		t.Fatalf("decode %s: no PEM block", key)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("decode %s: %v", key, err)
	}
	return cert, rec.KeyID
}

// newKey returns a fresh ECDSA P-256 key, what proxies use.
func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// workloadID returns spiffe://bulwark.test/ns/<ns>/sa/<sa>.
func workloadID(t testing.TB, ns, sa string) spiffeid.ID {
	t.Helper()
	return spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(testTrustDomain), "/ns/"+ns+"/sa/"+sa)
}

// pool returns a cert pool of certs.
func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
