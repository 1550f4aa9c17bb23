package admin_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

const testTD = "bulwark.test"

var td = spiffeid.RequireTrustDomainFromString(testTD)

// start is the fake clock of the resource store, registry and tokens. The
// CAs use the wall clock, since TLS verifies certificates against it.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testPin is the CA pin the server puts in join tokens.
const testPin = "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// api is a real admin API over HTTPS on loopback, with real stores.
type api struct {
	clock     *clock.Fake
	resources *resource.Store
	registry  *registry.Registry
	tokens    *jointoken.JoinTokens
	op        *ca.OperatorCA
	workload  *ca.CA
	server    *admin.Server
	srv       *httptest.Server
	roots     *x509.CertPool
	cred      *admin.Credential
	client    *admin.Client
	// operator sends raw requests as the built-in operator "admin", which
	// may do everything; anonymous has no client certificate.
	operator  *http.Client
	anonymous *http.Client
	// logs holds what the server logged (JSON lines, level debug).
	logs *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
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

func pemKey(t testing.TB, k *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func newAPI(t testing.TB) *api {
	t.Helper()
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	a := &api{clock: clock.NewFake(start), logs: &syncBuffer{}}
	a.resources = resource.New(st, a.clock).WithSealer(keymanager.NewMemory())
	if a.registry, err = registry.New(registry.Config{Store: st, Clock: a.clock}); err != nil {
		t.Fatal(err)
	}
	if a.tokens, err = jointoken.New(jointoken.Config{Store: st, Clock: a.clock}); err != nil {
		t.Fatal(err)
	}
	keys := keymanager.NewMemory()
	if a.op, err = ca.NewOperatorCA(ctx, ca.Config{TrustDomain: td, Store: st, Keys: keys}); err != nil {
		t.Fatal(err)
	}
	if a.workload, err = ca.New(ctx, ca.Config{TrustDomain: td, Store: st, Keys: keys}); err != nil {
		t.Fatal(err)
	}
	handler, err := admin.New(admin.Config{
		Resources: a.resources, Registry: a.registry, Tokens: a.tokens, Store: st,
		TrustDomain: testTD, Pin: func() string { return testPin }, Operators: a.op,
		Logger: slog.New(slog.NewJSONHandler(a.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}

	serverKey := newKey(t)
	leaf, err := a.op.SignServer(&serverKey.PublicKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	serving := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: serverKey, Leaf: leaf}
	a.roots = admin.OperatorRoots(a.op.Root())
	a.server = handler
	a.srv = httptest.NewUnstartedServer(handler)
	a.srv.EnableHTTP2 = true
	a.srv.TLS = mtls.AdminServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serving, nil }, a.roots)
	// Without SNI (an IP address in the URL) crypto/tls serves
	// Certificates[0]; httptest would put its own there.
	a.srv.TLS.Certificates = []tls.Certificate{serving}
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)

	a.cred = a.credential(t, rbac.BuiltinAdmin)
	if a.client, err = admin.NewClient(a.cred); err != nil {
		t.Fatal(err)
	}
	opCert, err := tls.X509KeyPair([]byte(a.cred.Certificate), []byte(a.cred.Key))
	if err != nil {
		t.Fatal(err)
	}
	a.operator = a.httpClient(t, mtls.AdminClientConfig(a.roots, opCert))
	a.anonymous = a.httpClient(t, &tls.Config{RootCAs: a.roots, MinVersion: tls.VersionTLS12})
	return a
}

// credential issues an operator credential for name.
func (a *api) credential(t testing.TB, name string) *admin.Credential {
	t.Helper()
	key := newKey(t)
	cert, err := a.op.SignClient(&key.PublicKey, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &admin.Credential{
		APIVersion:  config.APIVersion,
		Kind:        admin.CredentialKind,
		Operator:    name,
		Server:      a.srv.URL,
		CA:          pemCert(a.op.Root()),
		Certificate: pemCert(cert),
		Key:         pemKey(t, key),
	}
}

func (a *api) httpClient(t testing.TB, cfg *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// reply is an HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// errorBody decodes the body as an admin.ErrorBody.
func (r reply) errorBody(t testing.TB) admin.ErrorBody {
	t.Helper()
	var eb admin.ErrorBody
	if err := json.Unmarshal(r.body, &eb); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return eb
}

// send makes one request with c; contentType "" sends none.
func send(t testing.TB, c *http.Client, method, url, contentType string, body []byte) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// policyJSON returns a valid AuthorizationPolicy document.
func policyJSON(ns, name, method string) json.RawMessage {
	return json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy",` +
		`"metadata":{"name":"` + name + `","namespace":"` + ns + `"},` +
		`"spec":{"selector":{"service":"api"},"rules":[{"from":{"services":["default/web"]},"to":{"methods":["` + method + `"]}}]}}`)
}

// applyBody returns the JSON of an ApplyRequest of docs.
func applyBody(t testing.TB, docs ...json.RawMessage) []byte {
	t.Helper()
	b, err := json.Marshal(admin.ApplyRequest{Items: docs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listNames lists the policies as "ns/name".
func (a *api) policyNames(t testing.TB) []string {
	t.Helper()
	objs, _, err := a.resources.List(context.Background(), config.KindAuthorizationPolicy, "")
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, o := range objs {
		out = append(out, config.Ref(o))
	}
	return out
}
