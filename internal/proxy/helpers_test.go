package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// hangGuard bounds every wait, so that a bug shows as a failure rather than a
// hung test. It is never a timing assertion.
const hangGuard = 30 * time.Second

var td = spiffeid.RequireTrustDomainFromString("bulwark.test")

// The services of the fixtures: the callee default/api and the caller
// shop/web (in another namespace, so that a bare host name visibly resolves
// to the caller's namespace).
var (
	apiSvc = identity.ServiceRef{Namespace: "default", Name: "api"}
	webSvc = identity.ServiceRef{Namespace: "shop", Name: "web"}
	// secretSvc exists in the mesh, but shop/web may not call it.
	secretSvc = identity.ServiceRef{Namespace: "default", Name: "secret"}
)

func workloadID(t testing.TB, ns, sa string) spiffeid.ID {
	t.Helper()
	id, err := identity.WorkloadID(td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// source is an x509svid.Source and x509bundle.Source holding one SVID and
// the bundle of td, which setRoots replaces (as a snapshot does).
type source struct {
	svid *x509svid.SVID

	mu     sync.Mutex
	bundle *x509bundle.Bundle
}

func (s *source) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s *source) GetX509BundleForTrustDomain(d spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d != s.bundle.TrustDomain() {
		return nil, fmt.Errorf("no bundle for trust domain %s", d)
	}
	return s.bundle, nil
}

// setRoots replaces the bundle's roots.
func (s *source) setRoots(roots ...*x509.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bundle = x509bundle.FromX509Authorities(td, roots)
}

// serial returns the serial of the SVID's leaf as snapshots list it.
func (s *source) serial() string { return s.svid.Certificates[0].SerialNumber.Text(16) }

// authority is a real workload CA in a real bolt store.
type authority struct {
	ca *ca.CA
}

func newAuthority(t testing.TB) *authority {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: st, Keys: keymanager.NewMemory()})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return &authority{ca: c}
}

// svid issues an SVID for id to a fresh ECDSA key.
func (a *authority) svid(t testing.TB, id spiffeid.ID) *source {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.ca.SignSVID(&key.PublicKey, id, 0)
	if err != nil {
		t.Fatalf("SignSVID(%s): %v", id, err)
	}
	return &source{
		svid:   &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key},
		bundle: a.ca.Bundle(),
	}
}

func (a *authority) rootDER() [][]byte {
	var out [][]byte
	for _, r := range a.ca.Roots() {
		out = append(out, r.Raw)
	}
	return out
}

// policyDoc decodes one YAML AuthorizationPolicy strictly and returns its
// JSON, as the control plane puts it in snapshots.
func policyDoc(t testing.TB, yamlDoc string) []byte {
	t.Helper()
	objs, err := config.Decode([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("decode policy: %v", err)
	}
	if len(objs) != 1 {
		t.Fatalf("decode policy: got %d objects, want 1", len(objs))
	}
	b, err := config.Marshal(objs[0])
	if err != nil {
		t.Fatalf("marshal policy: %v", err)
	}
	return b
}

// apiInboundPolicy lets shop/web GET /public/* on default/api.
const apiInboundPolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow-web, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
    to: {methods: [GET], paths: ["/public/*"]}
`

// apiCallerView is shop/web's view of default/api's policies. It is
// deliberately wider than the callee's policy (it also allows /private), so
// that a test shows the callee enforcing on its own.
const apiCallerView = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow-web, namespace: default}
spec:
  selector: {service: api}
  rules:
  - to: {methods: [GET], paths: ["/public/*", "/private"]}
`

// shopAPIView lets shop/web call shop/api, which has no endpoints.
const shopAPIView = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-open, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - to: {methods: ["*"]}
`

// apiSnapshot is the callee's snapshot: its inbound policy and shop/web as a
// peer.
func apiSnapshot(t testing.TB, a *authority, version int64) *apiv1.Snapshot {
	t.Helper()
	return &apiv1.Snapshot{
		Version:     version,
		TrustBundle: a.rootDER(),
		Inbound: &apiv1.Inbound{
			Policies: [][]byte{policyDoc(t, apiInboundPolicy)},
			Peers: []*apiv1.PeerIdentity{
				{SpiffeId: workloadID(t, "shop", "web").String(), Services: []string{"shop/web"}},
			},
		},
		Services: []string{"default/api", "default/secret", "shop/api", "shop/web"},
	}
}

// webSnapshot is the caller's snapshot: default/api reachable at apiAddr
// with the identity apiID, shop/api callable without endpoints, and
// default/secret existing but not callable.
func webSnapshot(t testing.TB, a *authority, version int64, apiAddr string, apiID spiffeid.ID) *apiv1.Snapshot {
	t.Helper()
	var eps []*apiv1.Endpoint
	if apiAddr != "" {
		eps = []*apiv1.Endpoint{{Address: apiAddr, SpiffeId: apiID.String(), Instance: "api-1"}}
	}
	return &apiv1.Snapshot{
		Version:     version,
		TrustBundle: a.rootDER(),
		Inbound:     &apiv1.Inbound{},
		Services:    []string{"default/api", "default/secret", "shop/api", "shop/web"},
		Destinations: []*apiv1.Destination{
			{Service: "default/api", Policies: [][]byte{policyDoc(t, apiCallerView)}, Endpoints: eps},
			{Service: "shop/api", Policies: [][]byte{policyDoc(t, shopAPIView)}},
		},
	}
}

// seenRequest is what the app received.
type seenRequest struct {
	Method     string
	RequestURI string
	Host       string
	Header     http.Header
}

// app is a real HTTP server on loopback that records what it receives.
type app struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []seenRequest
}

func newApp(t testing.TB, name string) *app {
	t.Helper()
	a := &app{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.got = append(a.got, seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone()})
		a.mu.Unlock()
		w.Header().Set("X-App", name)
		fmt.Fprintf(w, "%s: %s %s\n", name, r.Method, r.RequestURI)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) addr() string { return a.srv.Listener.Addr().String() }

func (a *app) requests() []seenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]seenRequest(nil), a.got...)
}

// logBuffer collects JSON log lines written concurrently and lets a test
// wait for one.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) snapshot() ([]map[string]any, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			m["unparsable"] = line
		}
		out = append(out, m)
	}
	return out, b.changed
}

// waitFor returns the first line for which match is true, waiting for it
// to be written.
func (b *logBuffer) waitFor(t testing.TB, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	guard := time.NewTimer(hangGuard)
	defer guard.Stop()
	for {
		lines, changed := b.snapshot()
		for _, l := range lines {
			if match(l) {
				return l
			}
		}
		select {
		case <-changed:
		case <-guard.C:
			t.Fatalf("no log line for %s; log:\n%s", what, b.String())
		}
	}
}

// trackingListener counts accepted connections and reports each one's
// close.
type trackingListener struct {
	net.Listener
	accepted atomic.Int64
	closed   chan struct{}
}

func newTrackingListener(t testing.TB) *trackingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &trackingListener{Listener: ln, closed: make(chan struct{}, 1024)}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	return &trackedConn{Conn: c, closed: l.closed}, nil
}

type trackedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		select {
		case c.closed <- struct{}{}:
		default:
		}
	})
	return c.Conn.Close()
}

// waitClosed waits until n accepted connections have been closed.
func (l *trackingListener) waitClosed(t testing.TB, n int) {
	t.Helper()
	guard := time.NewTimer(hangGuard)
	defer guard.Stop()
	for range n {
		select {
		case <-l.closed:
		case <-guard.C:
			t.Fatalf("pooled connection was not closed")
		}
	}
}

// seenProto records the protocol of each request that reached an inbound
// handler.
type seenProto struct {
	mu     sync.Mutex
	protos []string
}

func (s *seenProto) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.protos = append(s.protos, r.Proto)
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (s *seenProto) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.protos...)
}

// node is one proxy: an Engine with its SVID, its access log, and (when
// started) its inbound mTLS listener.
type node struct {
	svc    identity.ServiceRef
	src    *source
	engine *proxy.Engine
	log    *logBuffer // access log
	plog   *logBuffer // process log

	inbound  *trackingListener
	inProtos *seenProto
}

func newNode(t testing.TB, a *authority, svc identity.ServiceRef, appAddr string) *node {
	t.Helper()
	return newNodeWith(t, a.svid(t, workloadID(t, svc.Namespace, svc.Name)), svc, appAddr)
}

// newNodeWith is newNode with the given identity and bundle.
func newNodeWith(t testing.TB, src *source, svc identity.ServiceRef, appAddr string) *node {
	t.Helper()
	n := &node{svc: svc, src: src, log: newLogBuffer(), plog: newLogBuffer()}
	e, err := proxy.New(proxy.Config{
		Service:   svc,
		App:       appAddr,
		SVID:      n.src,
		Bundle:    n.src,
		Logger:    slog.New(slog.NewJSONHandler(n.plog, &slog.HandlerOptions{Level: slog.LevelInfo})),
		AccessLog: slog.New(slog.NewJSONHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(e.Close)
	n.engine = e
	return n
}

func (n *node) id() spiffeid.ID { return n.src.svid.ID }

func (n *node) apply(t testing.TB, snap *apiv1.Snapshot) {
	t.Helper()
	if err := n.engine.Apply(snap); err != nil {
		t.Fatalf("Apply(version %d): %v", snap.GetVersion(), err)
	}
}

// serveInbound serves the engine's inbound handler over mTLS on loopback,
// as the sidecar does (on a listener prepared by InboundListener), and
// returns its address.
func (n *node) serveInbound(t testing.TB) string {
	t.Helper()
	n.inbound = newTrackingListener(t)
	n.inProtos = &seenProto{}
	ln, tlsCfg := n.engine.InboundListener(n.inbound, td)
	srv := &http.Server{
		Handler:           n.inProtos.wrap(n.engine.Inbound()),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
		// Without this net/http answers "OPTIONS *" itself with 200, and
		// the engine never sees it (see the report on sidecar's servers).
		DisableGeneralOptionsHandler: true,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return n.inbound.Addr().String()
}

// servePlain serves h on a plain loopback listener and returns its address.
func servePlain(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, DisableGeneralOptionsHandler: true}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// response is what a raw exchange returned.
type response struct {
	status int
	body   string
	header http.Header
	// refused is how the server refused an HTTP/2 request instead of
	// answering it: "RST" (stream reset), "GOAWAY", or "closed: <err>" (the
	// connection ended); "" when it answered.
	refused string
}

// rawExchange writes req as is on conn and reads one response.
func rawExchange(t testing.TB, conn net.Conn, req string) response {
	t.Helper()
	if err := conn.SetDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", req, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return response{status: resp.StatusCode, body: string(b), header: resp.Header}
}

// plainRaw sends a raw HTTP/1.1 request over a new TCP connection.
func plainRaw(t testing.TB, addr, req string) response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return rawExchange(t, conn, req)
}

// rawH2 is one request as a raw HTTP/2 client sends it, unvalidated:
// fields (pseudo-header fields included, in order) in one HEADERS frame,
// then body in one DATA frame if not empty, then trailer in a last HEADERS
// frame if not nil.
type rawH2 struct {
	fields  [][2]string
	body    string
	trailer [][2]string
}

// apiFields are the fields of an origin-form request to api: method and
// path as given, scheme https, authority api.default, then extra.
func apiFields(method, path string, extra ...[2]string) [][2]string {
	return append([][2]string{{":method", method}, {":scheme", "https"}, {":authority", "api.default"}, {":path", path}}, extra...)
}

// mtlsH2 sends req as the only stream of a new HTTP/2 connection over mTLS
// made with src's SVID to a peer that must present want (the inbound speaks
// nothing else), and returns the response or how the server refused it.
func mtlsH2(t testing.TB, addr string, src *source, want spiffeid.ID, req rawH2) response {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addr, mtls.ClientConfig(src, src, want))
	if err != nil {
		t.Fatalf("mtls dial: %v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func(fields [][2]string) []byte {
		hb.Reset()
		for _, f := range fields {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(req.fields), EndHeaders: true,
		EndStream: req.body == "" && req.trailer == nil}); err != nil {
		t.Fatal(err)
	}
	if req.body != "" {
		if err := fr.WriteData(1, req.trailer == nil, []byte(req.body)); err != nil {
			t.Fatal(err)
		}
	}
	if req.trailer != nil {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(req.trailer), EndHeaders: true, EndStream: true}); err != nil {
			t.Fatal(err)
		}
	}
	resp := response{header: http.Header{}}
	var body strings.Builder
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return response{refused: "closed: " + err.Error()}
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			if s := f.PseudoValue("status"); s != "" {
				resp.status, err = strconv.Atoi(s)
				if err != nil {
					t.Fatalf(":status %q: %v", s, err)
				}
			}
			for _, hf := range f.RegularFields() {
				resp.header.Add(hf.Name, hf.Value)
			}
			if f.StreamEnded() {
				resp.body = body.String()
				return resp
			}
		case *http2.DataFrame:
			if f.StreamID != 1 {
				continue
			}
			body.Write(f.Data())
			if f.StreamEnded() {
				resp.body = body.String()
				return resp
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return response{refused: "RST"}
			}
		case *http2.GoAwayFrame:
			return response{refused: "GOAWAY"}
		}
	}
}

// h2Client returns an HTTP/2 client over mTLS with src's SVID, for a peer
// that must present want.
func h2Client(t testing.TB, src *source, want spiffeid.ID) *http.Client {
	t.Helper()
	tr := &http2.Transport{TLSClientConfig: mtls.ClientConfig(src, src, want)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: hangGuard}
}

// do sends req with c and returns the response.
func do(t testing.TB, c *http.Client, req *http.Request) response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return response{status: resp.StatusCode, body: string(b), header: resp.Header}
}

// get sends a GET with host as Host to the plain listener at addr.
func get(t testing.TB, addr, host, target string) response {
	t.Helper()
	return plainRaw(t, addr, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
}

// mesh is a caller (shop/web, outbound served) and a callee (default/api,
// inbound served, in front of a recording app), both on the newest
// snapshot.
type mesh struct {
	auth     *authority
	api      *node
	apiApp   *app
	apiAddr  string
	web      *node
	outbound string
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	m := &mesh{auth: newAuthority(t)}
	m.apiApp = newApp(t, "default/api")
	m.api = newNode(t, m.auth, apiSvc, m.apiApp.addr())
	m.apiAddr = m.api.serveInbound(t)
	m.api.apply(t, apiSnapshot(t, m.auth, 1))
	m.web = newNode(t, m.auth, webSvc, "")
	m.web.apply(t, webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()))
	m.outbound = servePlain(t, m.web.engine.Outbound())
	return m
}
