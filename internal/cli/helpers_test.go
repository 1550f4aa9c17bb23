package cli_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/cli"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var td = spiffeid.RequireTrustDomainFromString("bulwark.test")

// created is the fake time at which the admin API's resource store creates
// resources; the AGE column is normalized anyway.
var created = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// controlPlane is a real admin API over HTTPS on loopback with real
// stores, and an operator credential file for it.
type controlPlane struct {
	registry *registry.Registry
	tokens   *jointoken.JoinTokens
	srv      *httptest.Server
	// credPath is the operator credential file.
	credPath string
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func newControlPlane(t testing.TB) *controlPlane {
	t.Helper()
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	fake := clock.NewFake(created)
	cp := &controlPlane{}
	if cp.registry, err = registry.New(registry.Config{Store: st, Clock: fake}); err != nil {
		t.Fatal(err)
	}
	if cp.tokens, err = jointoken.New(jointoken.Config{Store: st, Clock: fake}); err != nil {
		t.Fatal(err)
	}
	op, err := ca.NewOperatorCA(ctx, ca.Config{TrustDomain: td, Store: st, Keys: keymanager.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	handler, err := admin.New(admin.Config{
		Resources: resource.New(st, fake).WithSealer(keymanager.NewMemory()), Registry: cp.registry, Tokens: cp.tokens, TrustDomain: td.Name(),
		Store: st, Operators: op,
	})
	if err != nil {
		t.Fatal(err)
	}
	serverKey := newKey(t)
	leaf, err := op.SignServer(&serverKey.PublicKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	serving := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: serverKey, Leaf: leaf}
	cp.srv = httptest.NewUnstartedServer(handler)
	cp.srv.EnableHTTP2 = true
	cp.srv.TLS = mtls.AdminServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serving, nil }, admin.OperatorRoots(op.Root()))
	cp.srv.TLS.Certificates = []tls.Certificate{serving}
	cp.srv.StartTLS()
	t.Cleanup(cp.srv.Close)

	key := newKey(t)
	// The built-in operator "admin" may do everything (internal/rbac).
	cert, err := op.SignClient(&key.PublicKey, "admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cred := &admin.Credential{
		APIVersion: config.APIVersion, Kind: admin.CredentialKind, Operator: "admin", Server: cp.srv.URL,
		CA: pemCert(op.Root()), Certificate: pemCert(cert),
		Key: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	}
	cp.credPath = filepath.Join(t.TempDir(), "admin.yaml")
	if err := cred.Write(cp.credPath); err != nil {
		t.Fatal(err)
	}
	return cp
}

// result is what one run of the command line gave.
type result struct {
	code     int
	out, err string
}

// run runs the command line with args and stdin.
func run(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Main(context.Background(), args, cli.IO{In: strings.NewReader(stdin), Out: &out, Err: &errOut})
	return result{code: code, out: out.String(), err: errOut.String()}
}

// runOK runs the command line against cp and fails unless it exits 0.
func (cp *controlPlane) runOK(t testing.TB, args ...string) result {
	t.Helper()
	r := run(t, "", append([]string{"--config", cp.credPath}, args...)...)
	if r.code != 0 {
		t.Fatalf("bulwark %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.err)
	}
	return r
}

// writeFile writes content to name in a temp dir and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// isolateCredentials makes the credential lookup see only what a test sets:
// no BULWARK_CONFIG and an empty home directory.
func isolateCredentials(t *testing.T) (home string) {
	t.Helper()
	home = t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("BULWARK_CONFIG", "")
	return home
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}
