package admin_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// auditFailingStore wraps the real store and fails every Txn that writes
// under /audit/ while failing is set: an audit log that cannot be written.
type auditFailingStore struct {
	store.Store
	mu      sync.Mutex
	failing bool
}

func (s *auditFailingStore) setFailing(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = v
}

func (s *auditFailingStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	s.mu.Lock()
	failing := s.failing
	s.mu.Unlock()
	if failing {
		for _, op := range ops {
			if strings.HasPrefix(op.Key, audit.Prefix) {
				return 0, errors.New("injected: disk full")
			}
		}
	}
	return s.Store.Txn(ctx, cmps, ops)
}

// failureRecorder is an admin.FailureRecorder that keeps what it gets.
type failureRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *failureRecorder) Failure(kind, addr, identity, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	r.got = append(r.got, kind+"|"+host+"|"+identity+"|"+reason)
}

func (r *failureRecorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{}, r.got...)
}

// auditAPI is the admin API with an audit log over a store whose audit
// writes can be made to fail.
type auditAPI struct {
	*api
	st       *auditFailingStore
	log      *audit.Log
	failures *failureRecorder
}

// newAuditAPI starts the API; cas, if given, is its CA.
func newAuditAPI(t testing.TB, cas ...admin.CA) *auditAPI {
	t.Helper()
	ctx := context.Background()
	bst, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bst.Close() })
	st := &auditFailingStore{Store: bst}
	a := &api{clock: clock.NewFake(start), logs: &syncBuffer{}}
	keys := keymanager.NewMemory()
	log, err := audit.Open(ctx, audit.Config{Store: st, Keys: keys, Clock: a.clock, CheckpointEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	a.resources = resource.New(st, a.clock).WithAudit(log).WithSealer(keys)
	if a.registry, err = registry.New(registry.Config{Store: st, Clock: a.clock}); err != nil {
		t.Fatal(err)
	}
	if a.tokens, err = jointoken.New(jointoken.Config{Store: st, Clock: a.clock}); err != nil {
		t.Fatal(err)
	}
	if a.op, err = ca.NewOperatorCA(ctx, ca.Config{TrustDomain: td, Store: st, Keys: keys}); err != nil {
		t.Fatal(err)
	}
	fr := &failureRecorder{}
	handler, err := admin.New(admin.Config{
		Resources: a.resources, Registry: a.registry, Tokens: a.tokens, Store: st,
		TrustDomain: testTD, Operators: a.op, Audit: log, Failures: fr,
	})
	if len(cas) > 0 {
		handler, err = admin.New(admin.Config{
			Resources: a.resources, Registry: a.registry, Tokens: a.tokens, Store: st,
			TrustDomain: testTD, Operators: a.op, Audit: log, Failures: fr, CA: cas[0],
		})
	}
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
	a.srv.TLS.Certificates = []tls.Certificate{serving}
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	a.cred = a.credential(t, rbac.BuiltinAdmin)
	if a.client, err = admin.NewClient(a.cred); err != nil {
		t.Fatal(err)
	}
	a.anonymous = a.httpClient(t, &tls.Config{RootCAs: a.roots, MinVersion: tls.VersionTLS12})
	return &auditAPI{api: a, st: st, log: log, failures: fr}
}

func (a *auditAPI) entries(t testing.TB) []audit.Entry {
	t.Helper()
	list, err := a.client.AuditEntries(context.Background(), nil, admin.MaxAuditLimit)
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestAuditRecordsResourceWrites(t *testing.T) {
	a := newAuditAPI(t)
	ctx := context.Background()
	if _, err := a.client.Apply(ctx, []json.RawMessage{policyJSON("shop", "p1", "GET")}); err != nil {
		t.Fatal(err)
	}
	// Unchanged: nothing written, nothing recorded.
	if _, err := a.client.Apply(ctx, []json.RawMessage{policyJSON("shop", "p1", "GET")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.Apply(ctx, []json.RawMessage{policyJSON("shop", "p1", "POST")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.Delete(ctx, []resource.Result{{Kind: config.KindAuthorizationPolicy, Namespace: "shop", Name: "p1"}}); err != nil {
		t.Fatal(err)
	}
	got := a.entries(t)
	type row struct{ actor, action, object, outcome string }
	var rows []row
	for _, e := range got {
		if e.Action == audit.ActionCheckpoint {
			continue
		}
		rows = append(rows, row{e.Actor, e.Action, e.Kind + " " + e.Namespace + "/" + e.Name, e.Outcome})
		if e.Source == "" {
			t.Errorf("entry %d: no source address", e.Seq)
		}
	}
	want := []row{
		{"admin", "apply", "AuthorizationPolicy shop/p1", "created"},
		{"admin", "apply", "AuthorizationPolicy shop/p1", "configured"},
		{"admin", "delete", "AuthorizationPolicy shop/p1", "deleted"},
	}
	if len(rows) != len(want) {
		t.Fatalf("got entries %+v, want %+v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, rows[i], want[i])
		}
	}
	// The digests link the versions: configured's before is created's
	// after; deleted's before is configured's after.
	if got[0].Before != "" || got[0].After == "" || got[1].Before != got[0].After || got[2].Before != got[1].After {
		t.Errorf("digests do not chain the versions: %+v", got)
	}
	rep, err := a.client.AuditVerify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Checkpoints != 1 {
		t.Errorf("got %+v, want ok with 1 checkpoint", rep)
	}
	b, err := a.client.AuditExport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep, _, err := audit.VerifyExport(b, []byte(a.log.PublicKeyPEM())); err != nil || !rep.OK {
		t.Errorf("export: got %+v, %v, want ok", rep, err)
	}
}

func TestAuditUnavailableRefusesWrites(t *testing.T) {
	a := newAuditAPI(t)
	a.st.setFailing(true)
	tests := []struct {
		name, method, path string
		body               any
	}{
		{"apply", http.MethodPost, "/v1/apply", admin.ApplyRequest{Items: []json.RawMessage{policyJSON("shop", "p1", "GET")}}},
		{"token", http.MethodPost, "/v1/tokens", admin.TokenRequest{Service: "shop/api"}},
		{"revoke", http.MethodPost, "/v1/proxies/revoke", admin.RevokeRequest{Namespace: "shop", Service: "api"}},
	}
	operator := a.operatorClient(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(tt.body)
			r := send(t, operator, tt.method, a.srv.URL+tt.path, "application/json", body)
			if r.status != http.StatusServiceUnavailable {
				t.Fatalf("got %d %s, want 503", r.status, r.body)
			}
			msg := r.errorBody(t).Error
			if !strings.HasPrefix(msg, "audit log unavailable: ") || !strings.Contains(msg, "disk full") {
				t.Errorf("got %q, want it to say the audit log is unavailable and why", msg)
			}
		})
	}
	if got := a.policyNames(t); len(got) != 0 {
		t.Errorf("got policies %v applied, want none", got)
	}
	if toks, _, err := a.st.List(context.Background(), "/tokens/"); err != nil || len(toks) != 0 {
		t.Errorf("got %d join tokens created (%v), want none", len(toks), err)
	}
	// Writable again: writes go through, and the chain is whole.
	a.st.setFailing(false)
	if _, err := a.client.Apply(context.Background(), []json.RawMessage{policyJSON("shop", "p1", "GET")}); err != nil {
		t.Fatal(err)
	}
	if rep, err := a.client.AuditVerify(context.Background()); err != nil || !rep.OK {
		t.Errorf("got %+v, %v, want ok", rep, err)
	}
}

// operatorClient is an HTTP client with the admin credential.
func (a *auditAPI) operatorClient(t testing.TB) *http.Client {
	t.Helper()
	opCert, err := tls.X509KeyPair([]byte(a.cred.Certificate), []byte(a.cred.Key))
	if err != nil {
		t.Fatal(err)
	}
	return a.httpClient(t, mtls.AdminClientConfig(a.roots, opCert))
}

func TestAuditRecordsOtherWrites(t *testing.T) {
	a := newAuditAPI(t)
	ctx := context.Background()
	if _, err := a.client.CreateToken(ctx, admin.TokenRequest{Service: "shop/api"}); err != nil {
		t.Fatal(err)
	}
	_, err := a.client.Revoke(ctx, admin.RevokeRequest{Namespace: "shop", Service: "api"})
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("revoke of nothing: got %v, want 404", err)
	}
	var got []string
	for _, e := range a.entries(t) {
		if e.Action != audit.ActionCheckpoint {
			got = append(got, e.Actor+" "+e.Action+" "+e.Kind+" "+e.Namespace+"/"+e.Name+" "+e.Outcome)
		}
	}
	want := []string{
		"admin token.create JoinToken shop/api started",
		"admin token.create JoinToken shop/api ok",
		"admin proxy.revoke Proxy shop/api started",
		"admin proxy.revoke Proxy shop/api failed",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got entries\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range a.entries(t) {
		if strings.Contains(e.Detail, "token") && len(e.Detail) > 60 {
			t.Errorf("entry %d detail may hold a token: %q", e.Seq, e.Detail)
		}
	}
}

func TestAuditFailuresAndRights(t *testing.T) {
	a := newAuditAPI(t)
	// No certificate: 401, and the failure is counted.
	r := send(t, a.anonymous, http.MethodGet, a.srv.URL+"/v1/audit", "", nil)
	if r.status != http.StatusUnauthorized {
		t.Fatalf("anonymous: got %d, want 401", r.status)
	}
	// An operator without rights: 403 on every audit route, counted.
	bob := a.credential(t, "bob")
	c, err := admin.NewClient(bob)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.AuditEntries(ctx, nil, 5)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("tail: got %v, want 403", err)
	}
	if _, err := c.AuditVerify(ctx); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("verify: got %v, want 403", err)
	}
	if _, err := c.AuditExport(ctx); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("export: got %v, want 403", err)
	}
	got := a.failures.list()
	want := []string{
		"operator.authn|127.0.0.1||an operator client certificate is required",
		"operator.authz|127.0.0.1|bob|may not get AuditLog mesh-wide",
	}
	if len(got) != 4 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got failures %q, want %q then the same twice", got, want)
	}
}

func TestAuditListBadInput(t *testing.T) {
	a := newAuditAPI(t)
	operator := a.operatorClient(t)
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "after=-1", "after=x"} {
		t.Run(q, func(t *testing.T) {
			r := send(t, operator, http.MethodGet, a.srv.URL+"/v1/audit?"+q, "", nil)
			field, _, _ := strings.Cut(q, "=")
			if r.status != http.StatusBadRequest || !strings.HasPrefix(r.errorBody(t).Error, field+":") {
				t.Errorf("got %d %s, want 400 naming %s", r.status, r.body, field)
			}
		})
	}
	if _, err := a.client.Apply(context.Background(), []json.RawMessage{policyJSON("shop", "p1", "GET")}); err != nil {
		t.Fatal(err)
	}
	after := uint64(0)
	list, err := a.client.AuditEntries(context.Background(), &after, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Seq != 1 || list.Head != 1 {
		t.Errorf("got %+v, want entry 1 of 1", list)
	}
}

func TestAuditRoutesWithoutLog(t *testing.T) {
	a := newAPI(t)
	r := send(t, a.operator, http.MethodGet, a.srv.URL+"/v1/audit", "", nil)
	if r.status != http.StatusNotImplemented {
		t.Errorf("got %d, want 501", r.status)
	}
}

// rotateSpy is an admin.CA that records whether Rotate was called.
type rotateSpy struct {
	mu      sync.Mutex
	rotated int
}

func (c *rotateSpy) Status(context.Context) (admin.CAStatus, error) {
	return admin.CAStatus{Phase: "idle"}, nil
}
func (c *rotateSpy) JWKS() []byte { return []byte(`{"keys":[]}`) }
func (c *rotateSpy) Rotate(context.Context, admin.RotateRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rotated++
	return nil
}

func TestAuditUnavailableRefusesCAAndOperators(t *testing.T) {
	spy := &rotateSpy{}
	a := newAuditAPI(t, spy)
	operator := a.operatorClient(t)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	post := func(path string, body any) reply {
		b, _ := json.Marshal(body)
		return send(t, operator, http.MethodPost, a.srv.URL+path, "application/json", b)
	}

	a.st.setFailing(true)
	if r := post("/v1/ca/rotate", admin.RotateRequest{Target: "intermediate"}); r.status != http.StatusServiceUnavailable {
		t.Errorf("rotate: got %d %s, want 503", r.status, r.body)
	}
	if r := post("/v1/operators", admin.OperatorRequest{Name: "carol", CSR: csrPEM}); r.status != http.StatusServiceUnavailable ||
		!strings.Contains(r.errorBody(t).Error, "audit log unavailable") {
		t.Errorf("operator: got %d %s, want 503", r.status, r.body)
	}
	if spy.rotated != 0 {
		t.Errorf("the CA rotated %d times without an audit entry", spy.rotated)
	}

	a.st.setFailing(false)
	if r := post("/v1/ca/rotate", admin.RotateRequest{Target: "intermediate"}); r.status != http.StatusOK {
		t.Fatalf("rotate: got %d %s, want 200", r.status, r.body)
	}
	if r := post("/v1/operators", admin.OperatorRequest{Name: "carol", CSR: csrPEM}); r.status != http.StatusCreated {
		t.Fatalf("operator: got %d %s, want 201", r.status, r.body)
	}
	var got []string
	for _, e := range a.entries(t) {
		if e.Action != audit.ActionCheckpoint {
			got = append(got, e.Action+" "+e.Kind+" "+e.Name+" "+e.Outcome)
		}
	}
	want := []string{
		"ca.rotate CA intermediate started", "ca.rotate CA intermediate ok",
		"operator.create Operator carol started", "operator.create Operator carol ok",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got entries\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
