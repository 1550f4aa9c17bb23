package control_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// hangGuard bounds every wait so that a bug fails a test rather than hanging
// it; it is never a timing assertion.
const hangGuard = 30 * time.Second

var td = spiffeid.RequireTrustDomainFromString("bulwark.test")

// mesh is what a proxy needs to reach a control plane, however it runs.
type mesh struct {
	addr   string
	td     spiffeid.TrustDomain
	bundle *x509bundle.Bundle
	// token creates a join token for service ("ns/name") and account
	// ("" for the default).
	token func(t testing.TB, service, account string) string
}

// runningPlane is a control plane started with control.Run.
type runningPlane struct {
	mesh
	ep      control.Endpoints
	clock   *clock.Fake
	admin   *admin.Client
	dataDir string
	// stop cancels Run and returns its result; it is idempotent.
	stop func() error
}

// runOptions configure startRun.
type runOptions struct {
	// clock; default a Fake at the wall clock's time (TLS peers verify
	// certificates with the wall clock, so it must stay close to it).
	clock *clock.Fake
	// dataDir; default a new temporary directory.
	dataDir string
	svidTTL time.Duration
	// listen and adminListen; default 127.0.0.1:0.
	listen, adminListen string
}

// startRun runs control.Run until the test ends and returns once Ready was
// called and the janitor has armed its first timer (so that advancing the
// fake clock fires it deterministically).
func startRun(t testing.TB, o runOptions) *runningPlane {
	t.Helper()
	if o.clock == nil {
		o.clock = clock.NewFake(time.Now())
	}
	if o.dataDir == "" {
		o.dataDir = filepath.Join(t.TempDir(), "data")
	}
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	if o.adminListen == "" {
		o.adminListen = "127.0.0.1:0"
	}
	armed := o.clock.TimerCreated()
	ready := make(chan control.Endpoints, 1)
	cfg := control.Config{
		DataDir:     o.dataDir,
		TrustDomain: td.Name(),
		Listen:      o.listen,
		AdminListen: o.adminListen,
		SVIDTTL:     o.svidTTL,
		Clock:       o.clock,
		Ready:       func(ep control.Endpoints) { ready <- ep },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Run(ctx, cfg) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(hangGuard):
			return errors.New("Run did not return after its context was cancelled")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: got %v, want nil after cancel", err)
		}
	})
	var ep control.Endpoints
	select {
	case ep = <-ready:
	case err := <-done:
		t.Fatalf("Run returned before Ready: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("Run never called Ready")
	}
	select {
	case <-armed:
	case <-time.After(hangGuard):
		t.Fatal("the janitor never armed its timer")
	}
	bundle, err := x509bundle.Load(td, ep.BundlePath)
	if err != nil {
		t.Fatalf("load bundle: %v", err)
	}
	cred, err := admin.LoadCredential(ep.CredentialPath)
	if err != nil {
		t.Fatalf("load operator credential: %v", err)
	}
	client, err := admin.NewClient(cred)
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	p := &runningPlane{ep: ep, clock: o.clock, admin: client, dataDir: o.dataDir, stop: stop}
	p.mesh = mesh{addr: ep.GRPC, td: td, bundle: bundle, token: func(t testing.TB, service, account string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		tr, err := client.CreateToken(ctx, admin.TokenRequest{Service: service, Identity: account})
		if err != nil {
			t.Fatalf("create token for %s: %v", service, err)
		}
		return tr.Token
	}}
	return p
}

// proxyView returns the admin API's view of a proxy record.
func (p *runningPlane) proxyView(t testing.TB, ns, instance string) config.ProxyStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	b, err := p.admin.List(ctx, "proxies", ns)
	if err != nil {
		t.Fatalf("list proxies: %v", err)
	}
	var list struct {
		Items []config.Proxy `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("decode proxies: %v", err)
	}
	for _, it := range list.Items {
		if it.Metadata.Name == instance {
			return it.Status
		}
	}
	t.Fatalf("no proxy record %s/%s in %s", ns, instance, b)
	return config.ProxyStatus{}
}

// waitView polls the admin API's view of a proxy record until ok.
func (p *runningPlane) waitView(t testing.TB, ns, instance string, ok func(config.ProxyStatus) bool) config.ProxyStatus {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		v := p.proxyView(t, ns, instance)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %s/%s never reached the expected state; last %+v", ns, instance, v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// endpoints returns the live endpoints the admin API lists for service.
func (p *runningPlane) endpoints(t testing.TB, service identity.ServiceRef) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	b, err := p.admin.List(ctx, "services", service.Namespace)
	if err != nil {
		t.Fatalf("list services: %v", err)
	}
	var list struct {
		Items []config.Service `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("decode services: %v", err)
	}
	for _, it := range list.Items {
		if it.Metadata.Name == service.Name {
			return it.Status.Endpoints
		}
	}
	return nil
}

// apply applies JSON documents through the admin API.
func (p *runningPlane) apply(t testing.TB, docs ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	raw := make([]json.RawMessage, len(docs))
	for i, d := range docs {
		raw[i] = json.RawMessage(d)
	}
	res, err := p.admin.Apply(ctx, raw)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	out := make([]string, len(res))
	for i, r := range res {
		out[i] = string(r.Outcome)
	}
	return out
}

// planeMesh is the mesh of a control.Plane.
func planeMesh(p *control.Plane) mesh {
	return mesh{addr: p.Addr, td: p.TrustDomain, bundle: p.CA.Bundle(), token: func(t testing.TB, service, account string) string {
		t.Helper()
		ref, err := identity.ParseServiceRef(service, "")
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := p.Tokens.Create(context.Background(), jointoken.CreateRequest{Service: ref, Account: account})
		if err != nil {
			t.Fatalf("create token: %v", err)
		}
		return tok
	}}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newCSR returns a DER CSR for key with the names of tmpl (nil: none).
func newCSR(t testing.TB, key any, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("create csr: %v", err)
	}
	return der
}

// svidSource serves one SVID.
type svidSource struct{ s *x509svid.SVID }

func (v svidSource) GetX509SVID() (*x509svid.SVID, error) { return v.s, nil }

// dial returns a Control client over a new connection (closed when the test
// ends). svid nil: no client certificate.
func (m mesh) dial(t testing.TB, svid *x509svid.SVID) apiv1.ControlClient {
	t.Helper()
	var src x509svid.Source
	if svid != nil {
		src = svidSource{svid}
	}
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ControlClientConfig(src, m.bundle, m.td))))
	if err != nil {
		t.Fatalf("dial %s: %v", m.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return apiv1.NewControlClient(conn)
}

// workload is an attested proxy.
type workload struct {
	svid     *x509svid.SVID
	key      *ecdsa.PrivateKey
	instance string
	service  identity.ServiceRef
	client   apiv1.ControlClient
}

// svidFrom turns an SVID message into an SVID with key, checking that its
// chain verifies against the bundle.
func (m mesh) svidFrom(t testing.TB, msg *apiv1.X509SVID, key *ecdsa.PrivateKey) *x509svid.SVID {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range msg.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("parse svid chain: %v", err)
		}
		chain = append(chain, c)
	}
	id, _, err := x509svid.Verify(chain, m.bundle)
	if err != nil {
		t.Fatalf("svid chain does not verify against the bundle: %v", err)
	}
	if id.String() != msg.GetSpiffeId() {
		t.Fatalf("svid message names %s, certificate %s", msg.GetSpiffeId(), id)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

// attest attests a new proxy of service with a fresh token for account.
func (m mesh) attest(t testing.TB, service, account string) *workload {
	t.Helper()
	ref, err := identity.ParseServiceRef(service, "")
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	resp, err := m.dial(t, nil).Attest(ctx, &apiv1.AttestRequest{
		JoinToken: m.token(t, service, account), Csr: newCSR(t, key, nil), Service: service,
	})
	if err != nil {
		t.Fatalf("attest %s: %v", service, err)
	}
	s := m.svidFrom(t, resp.GetSvid(), key)
	return &workload{svid: s, key: key, instance: resp.GetInstance(), service: ref, client: m.dial(t, s)}
}

// listen serves w's SVID on a loopback port with the inbound listener's
// TLS config, as the proxy's inbound listener does, until the test ends,
// and returns the address to advertise. The control plane may check that
// an advertised address answers with the advertiser's SVID.
func (w *workload) listen(t testing.TB, m mesh) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", mtls.ServerConfig(svidSource{w.svid}, m.bundle, m.td))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(hangGuard))
				_ = c.(*tls.Conn).Handshake()
			})
		}
	})
	return ln.Addr().String()
}

// node returns the Node message of w with the advertised address addr.
func (w *workload) node(addr string) *apiv1.Node {
	return &apiv1.Node{Service: w.service.String(), Instance: w.instance, Address: addr, Version: "test"}
}

// sub is the proxy side of a Subscribe stream.
type sub struct {
	stream apiv1.Control_SubscribeClient
	cancel context.CancelFunc
}

// subscribe opens a stream with client and sends first (usually a Node).
// A failing Send is ignored: the stream's status shows in recv.
func subscribe(t testing.TB, client apiv1.ControlClient, first *apiv1.SubscribeRequest) *sub {
	t.Helper()
	return subscribeWithin(t, client, first, hangGuard)
}

func subscribeWithin(t testing.TB, client apiv1.ControlClient, first *apiv1.SubscribeRequest, d time.Duration) *sub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	stream, err := client.Subscribe(ctx)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	_ = stream.Send(first)
	return &sub{stream: stream, cancel: cancel}
}

func nodeMsg(n *apiv1.Node) *apiv1.SubscribeRequest {
	return &apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Node{Node: n}}
}

func ackMsg(v int64, nack string) *apiv1.SubscribeRequest {
	return &apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Ack{Ack: &apiv1.Ack{Version: v, Error: nack}}}
}

// recv returns the next snapshot, failing the test on an error.
func (s *sub) recv(t testing.TB) *apiv1.Snapshot {
	t.Helper()
	snap, err := s.stream.Recv()
	if err != nil {
		t.Fatalf("recv snapshot: got error %v, want a snapshot", err)
	}
	return snap
}

// recvErr returns the code the stream ends with, failing the test on a
// snapshot.
func (s *sub) recvErr(t testing.TB) (codes.Code, string) {
	t.Helper()
	snap, err := s.stream.Recv()
	if err == nil {
		t.Fatalf("recv: got snapshot version %d, want the stream to end", snap.GetVersion())
	}
	st := status.Convert(err)
	return st.Code(), st.Message()
}

// send sends a message, failing the test on an error.
func (s *sub) send(t testing.TB, m *apiv1.SubscribeRequest) {
	t.Helper()
	if err := s.stream.Send(m); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// end closes the proxy's side and waits until the server ended the stream:
// by then the server has handled every message sent before and recorded the
// disconnect.
func (s *sub) end(t testing.TB) {
	t.Helper()
	if err := s.stream.CloseSend(); err != nil {
		t.Fatalf("close send: %v", err)
	}
	for {
		_, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("stream end: got %v, want a clean end (EOF)", err)
		}
	}
}

// waitState polls the hub until its state satisfies ok.
func waitState(t testing.TB, hub *push.Hub, ok func(*push.State) bool) *push.State {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		if st := hub.State(); st != nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatal("hub state never reached the expected content")
		}
		time.Sleep(time.Millisecond)
	}
}

// hasPolicy reports whether st holds the policy ns/name.
func hasPolicy(ns, name string) func(*push.State) bool {
	return func(st *push.State) bool {
		for _, p := range st.Policies {
			if p.Policy.Metadata.Namespace == ns && p.Policy.Metadata.Name == name {
				return true
			}
		}
		return false
	}
}

// proxyRecord returns the registry record of ns/instance, or false.
func proxyRecord(t testing.TB, reg *registry.Registry, ns, instance string) (registry.Proxy, bool) {
	t.Helper()
	ps, _, err := reg.Proxies(context.Background())
	if err != nil {
		t.Fatalf("list proxies: %v", err)
	}
	for _, p := range ps {
		if p.Namespace == ns && p.Instance == instance {
			return p, true
		}
	}
	return registry.Proxy{}, false
}

// waitRecord waits, following the store's watch, until the record of
// ns/instance satisfies ok.
func waitRecord(t testing.TB, st store.Store, reg *registry.Registry, ns, instance string, ok func(registry.Proxy) bool) registry.Proxy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	rev := revision(t, st)
	events, err := st.Watch(ctx, registry.Prefix, rev)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	for {
		if p, found := proxyRecord(t, reg, ns, instance); found && ok(p) {
			return p
		}
		select {
		case _, open := <-events:
			if !open {
				t.Fatal("record never reached the expected state")
			}
		case <-ctx.Done():
			t.Fatal("record never reached the expected state")
		}
	}
}

// revision returns the store's current revision.
func revision(t testing.TB, st store.Store) int64 {
	t.Helper()
	rev, err := st.Txn(context.Background(), nil, nil)
	if err != nil {
		t.Fatalf("read revision: %v", err)
	}
	return rev
}

// policyJSON is an ALLOW AuthorizationPolicy selecting service in ns, for
// callers of the services from.
func policyJSON(ns, name, service string, from ...string) string {
	doc := map[string]any{
		"apiVersion": config.APIVersion,
		"kind":       config.KindAuthorizationPolicy,
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"selector": map[string]any{"service": service},
			"action":   "ALLOW",
			"rules":    []any{map[string]any{"from": map[string]any{"services": from}}},
		},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// policyObject decodes policyJSON.
func policyObject(t testing.TB, ns, name, service string, from ...string) config.Object {
	t.Helper()
	o, err := config.DecodeObject([]byte(policyJSON(ns, name, service, from...)))
	if err != nil {
		t.Fatalf("decode policy: %v", err)
	}
	return o
}
