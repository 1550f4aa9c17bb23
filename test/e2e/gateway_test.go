package e2e_test

// End-to-end tests of the ingress gateway (issue 8) with the real binary:
// `bulwark gateway` attests like a proxy, gets its Gateway, Secrets and JWT
// providers from the control plane, and forwards requests from outside over
// HTTPS (HTTP/2 and HTTP/1.1) through the mesh to the apps behind their
// sidecars. The helpers are prefixed gw; the attacks are in
// gateway_attack_test.go.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// gwName is the name (in namespace default) of the tests' Gateway, and so
// the service the gateway attests for.
const gwName = "edge"

// gwXFCC is the X-Forwarded-Client-Cert the app behind service's sidecar
// sees for a request the gateway forwarded.
func gwXFCC(service string) string {
	return "By=spiffe://bulwark.local/ns/default/sa/" + service + ";URI=spiffe://bulwark.local/ns/default/sa/" + gwName
}

// gwEdgePolicy lets clients on loopback (the tests' only clients) through
// the gateway: an AuthorizationPolicy selecting it on the client's IP.
const gwEdgePolicy = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: edge-clients, namespace: default}
spec:
  selector: {service: edge}
  rules:
  - from: {ipBlocks: ["127.0.0.0/8"]}
`

// gwCert is a self-signed certificate and its key.
type gwCert struct {
	certPEM, keyPEM []byte
	cert            *x509.Certificate
	pool            *x509.CertPool
}

// gwNewCert makes a self-signed ECDSA certificate for names with serial.
func gwNewCert(t *testing.T, serial int64, names ...string) gwCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return gwCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		cert:    cert,
		pool:    pool,
	}
}

// gwIndent indents every line of s by n spaces, for a YAML block scalar.
func gwIndent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad)
}

// gwSecret is a kubernetes.io/tls Secret of namespace default holding c.
func gwSecret(name string, c gwCert) string {
	return `apiVersion: bulwark.dev/v1alpha1
kind: Secret
metadata: {name: ` + name + `, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
` + gwIndent(string(c.certPEM), 4) + `
  tls.key: |
` + gwIndent(string(c.keyPEM), 4) + `
`
}

// gwSeen is what a gwApp answers: the request as the app received it, and
// for a front app the answer of the service it called.
type gwSeen struct {
	App      string      `json:"app"`
	Method   string      `json:"method"`
	Path     string      `json:"path"`
	Query    string      `json:"query"`
	Host     string      `json:"host"`
	Headers  http.Header `json:"headers"`
	Body     string      `json:"body"`
	Upstream *gwSeen     `json:"upstream,omitempty"`
}

// gwApp is an app on loopback that answers with what it received and
// records the paths of its requests.
type gwApp struct {
	name string
	addr string
	// next, when set, is called with the request and its answer is
	// embedded as Upstream (a front app calling another service).
	next func(r *http.Request) (*gwSeen, error)

	mu    sync.Mutex
	paths []string
}

// gwStartApp starts a gwApp; next may be nil.
func gwStartApp(t *testing.T, name string, next func(r *http.Request) (*gwSeen, error)) *gwApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &gwApp{name: name, addr: ln.Addr().String(), next: next}
	srv := &http.Server{Handler: http.HandlerFunc(a.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *gwApp) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	a.mu.Lock()
	entry := r.Method + " " + r.URL.RequestURI()
	if err != nil {
		entry += " (body cut)"
	}
	a.paths = append(a.paths, entry)
	a.mu.Unlock()
	seen := gwSeen{App: a.name, Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
		Host: r.Host, Headers: r.Header, Body: string(body)}
	if a.next != nil {
		up, err := a.next(r)
		if err != nil {
			http.Error(w, a.name+": "+err.Error(), http.StatusBadGateway)
			return
		}
		seen.Upstream = up
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(seen)
}

// requests returns the "METHOD URI" of every request the app received.
func (a *gwApp) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.paths)
}

// received reports whether the app received a request whose URI contains
// marker.
func (a *gwApp) received(marker string) bool {
	return slices.ContainsFunc(a.requests(), func(r string) bool { return strings.Contains(r, marker) })
}

// gwGateway is a running `bulwark gateway`.
type gwGateway struct {
	proc    *proc
	admin   string
	dataDir string
	// addrs are the bound addresses by listener name, as logged.
	addrs map[string]string
}

// gwStart starts the gateway of the Gateway default/edge, binding each of
// listeners on a free loopback port, and waits until it has logged every
// one of them as listening.
func (m *mesh) gwStart(listeners ...string) *gwGateway {
	m.t.Helper()
	return m.gwStartFlags(listeners, nil)
}

// gwStartFlags is gwStart with extra flags.
func (m *mesh) gwStartFlags(listeners, extra []string) *gwGateway {
	m.t.Helper()
	g := &gwGateway{admin: freeAddr(m.t), dataDir: filepath.Join(m.t.TempDir(), "gateway")}
	args := []string{"gateway", "--control", m.grpc, "--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"),
		"--token-file", m.token("default/" + gwName), "--gateway", "default/" + gwName,
		"--data-dir", g.dataDir, "--admin", g.admin}
	for _, l := range listeners {
		args = append(args, "--listen", l+"=127.0.0.1:0")
	}
	g.proc = start(m.t, "gateway", nil, append(args, extra...)...)
	eventually(m.t, 25*time.Second, "gateway listening", func() error {
		if gwExited(g.proc) {
			m.t.Fatalf("gateway exited: %v", g.proc.err)
		}
		got := gwListening(g.proc.out.String())
		for _, l := range listeners {
			if got[l] == "" {
				return fmt.Errorf("listener %s not logged as listening (have %v)", l, got)
			}
		}
		g.addrs = got
		return nil
	})
	return g
}

// gwExited reports whether p has exited, without racing with the
// goroutine that waits for it (p.hasExited() is written there unsynchronized).
func gwExited(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// gwListening reads the "gateway listening" log lines (JSON, or slog's
// text form) of a gateway's output: address by listener.
func gwListening(out string) map[string]string {
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var l struct {
			Msg      string `json:"msg"`
			Listener string `json:"listener"`
			Address  string `json:"address"`
		}
		if json.Unmarshal([]byte(line), &l) == nil {
			if l.Msg == "gateway listening" && l.Listener != "" && l.Address != "" {
				got[l.Listener] = l.Address
			}
			continue
		}
		if !strings.Contains(line, `msg="gateway listening"`) {
			continue
		}
		var name, addr string
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "listener="); ok {
				name = strings.Trim(v, `"`)
			}
			if v, ok := strings.CutPrefix(f, "address="); ok {
				addr = strings.Trim(v, `"`)
			}
		}
		if name != "" && addr != "" {
			got[name] = addr
		}
	}
	return got
}

// gwTransportOpts tune gwClient.
type gwTransportOpts struct {
	// proto is "h2" or "h1": the only protocol the client offers.
	proto string
	// local is the client's source address; nil: the kernel's choice.
	local net.IP
	// dials counts the TCP connections the client opened, when set.
	dials *atomic.Int64
}

// gwClient returns a client that connects to addr whatever the URL's host
// (so the URL's host is the SNI and the Host), trusts roots, and speaks
// only o.proto.
func gwClient(addr string, roots *x509.CertPool, o gwTransportOpts) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if o.local != nil {
		d.LocalAddr = &net.TCPAddr{IP: o.local}
	}
	var p http.Protocols
	if o.proto == "h1" {
		p.SetHTTP1(true)
	} else {
		p.SetHTTP2(true)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			if o.dials != nil {
				o.dials.Add(1)
			}
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		Protocols:           &p,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// gwResp is an answer of the gateway.
type gwResp struct {
	status int
	proto  int
	header http.Header
	body   string
	tls    *tls.ConnectionState
}

// seen decodes the app's answer; a test failure when it is not one.
func (r gwResp) seen(t *testing.T) gwSeen {
	t.Helper()
	var s gwSeen
	if err := json.Unmarshal([]byte(r.body), &s); err != nil {
		t.Fatalf("status %d, body %q is not an app's answer: %v", r.status, r.body, err)
	}
	return s
}

// gwDo sends a request; header values replace the request's.
func gwDo(c *http.Client, method, u string, header map[string]string, body string) (gwResp, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return gwResp{}, err
	}
	for k, v := range header {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return gwResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return gwResp{}, fmt.Errorf("status %d, reading the body: %w", resp.StatusCode, err)
	}
	return gwResp{status: resp.StatusCode, proto: resp.ProtoMajor, header: resp.Header, body: string(b), tls: resp.TLS}, nil
}

// gwWant sends a request that must be answered with status want.
func gwWant(t *testing.T, c *http.Client, method, u string, header map[string]string, body string, want int) gwResp {
	t.Helper()
	r, err := gwDo(c, method, u, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v, want %d", method, u, err, want)
	}
	if r.status != want {
		t.Fatalf("%s %s: got %d %.300q, want %d", method, u, r.status, r.body, want)
	}
	return r
}

// gwWaitStatus waits until a GET of u is answered want.
func gwWaitStatus(t *testing.T, c *http.Client, u string, header map[string]string, want int) {
	t.Helper()
	eventually(t, 20*time.Second, "GET "+u+" answered "+strconv.Itoa(want), func() error {
		r, err := gwDo(c, http.MethodGet, u, header, "")
		if err != nil {
			return err
		}
		if r.status != want {
			return fmt.Errorf("got %d %.200q", r.status, r.body)
		}
		return nil
	})
}

// gwCheckEdgeHeaders checks what the app behind service's sidecar received
// for a request the gateway forwarded from a loopback client over HTTPS to
// host: the gateway's forwarding headers, the sidecar's XFCC naming the
// gateway, and nothing the client spoofed.
func gwCheckEdgeHeaders(t *testing.T, s gwSeen, service, host string) {
	t.Helper()
	h := s.Headers
	want := map[string][]string{
		"X-Forwarded-Client-Cert": {gwXFCC(service)},
		"X-Forwarded-For":         {"127.0.0.1"},
		"X-Forwarded-Proto":       {"https"},
		"X-Forwarded-Host":        {host},
	}
	for k, v := range want {
		if got := h.Values(k); !slices.Equal(got, v) {
			t.Errorf("%s at the app: got %q, want %q", k, got, v)
		}
	}
	if got := h.Values("X-Request-Id"); len(got) != 1 || got[0] == "" {
		t.Errorf("X-Request-Id at the app: got %q, want one generated value", got)
	}
	if got := h.Get("X-Forwarded-Port"); got == gwSpoofed["X-Forwarded-Port"] {
		t.Errorf("X-Forwarded-Port at the app: got the client's %q", got)
	}
	if got := h.Values("Forwarded"); len(got) != 0 {
		t.Errorf("Forwarded at the app: got %q, want none", got)
	}
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(k), "x-bulwark-") {
			t.Errorf("the app received %s: %q", k, v)
		}
		for _, x := range v {
			if strings.Contains(x, "6.6.6.6") || strings.Contains(x, "evil") || strings.Contains(x, "/sa/admin") {
				t.Errorf("the app received the client's spoofed %s: %q", k, x)
			}
		}
	}
}

// gwSpoofed are headers a client sends to pass for someone else.
var gwSpoofed = map[string]string{
	"X-Forwarded-Client-Cert": "By=spiffe://bulwark.local/ns/default/sa/api;URI=spiffe://bulwark.local/ns/default/sa/admin",
	"X-Forwarded-For":         "6.6.6.6",
	"X-Forwarded-Proto":       "evil",
	"X-Forwarded-Host":        "evil.example",
	"X-Forwarded-Port":        "31337",
	"Forwarded":               "for=6.6.6.6;proto=http;host=evil.example",
	"X-Bulwark-Identity":      "spiffe://bulwark.local/ns/default/sa/admin",
	"X-Bulwark-Source":        "default/admin",
}

// gwFrontNext returns a front app's next: it calls api through the
// sidecar whose outbound address *outbound holds once set, so the request
// crosses the front's sidecar outbound and api's sidecar.
func gwFrontNext(outbound *atomic.Value) func(r *http.Request) (*gwSeen, error) {
	return func(r *http.Request) (*gwSeen, error) {
		addr, _ := outbound.Load().(string)
		if addr == "" {
			return nil, errors.New("no sidecar yet")
		}
		u, _ := url.Parse("http://" + addr)
		c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}, Timeout: 10 * time.Second}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://api.default/via-front"+r.URL.Path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("api answered %d %.200q", resp.StatusCode, b)
		}
		var s gwSeen
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, err
		}
		return &s, nil
	}
}

// TestGatewayEndToEnd: HTTPS with SNI to the gateway, with the certificate
// of a Secret, over HTTP/2 and HTTP/1.1: a route to api crosses api's
// sidecar, a route to front crosses front's sidecar, and front's app calls
// api through its own sidecar (two sidecars after the gateway); the apps see
// the gateway's X-Forwarded-* and X-Request-Id, the sidecar's XFCC naming
// the gateway, and none of the client's spoofed headers. A host no route
// takes gets 404, the HTTP listener redirects with 308 (one with
// redirectToHTTPS false serves the routes in plain HTTP), the SNI picks the
// certificate, old TLS versions and CBC suites are refused, HSTS is on
// every HTTPS answer, a route rewrites paths and answers CORS, a route
// added and a Secret renewed are taken live, and the Secret's key is never
// shown back.
func TestGatewayEndToEnd(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	api := gwStartApp(t, "api", nil)
	var frontOutbound atomic.Value
	front := gwStartApp(t, "front", gwFrontNext(&frontOutbound))
	m.startProxy("default/api", api.addr)
	fp := m.startProxy("default/front", front.addr)
	frontOutbound.Store(fp.outbound)

	cert := gwNewCert(t, 4201, "*.example.test")
	shopCert := gwNewCert(t, 4211, "shop.example.test")
	roots := x509.NewCertPool()
	roots.AddCert(cert.cert)
	roots.AddCert(shopCert.cert)
	gateway := `apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificates: [{secret: shop-cert}, {secret: edge-cert}]
      hsts: {maxAge: 1h, includeSubdomains: true}
  - name: http
    port: 80
    protocol: HTTP
  - name: plain
    port: 8080
    protocol: HTTP
    redirectToHTTPS: false
  routes:
  - name: v1
    hosts: [api.example.test]
    matches: [{path: {prefix: /v1}}]
    service: default/api
    rewrite: {stripPrefix: /v1}
    cors:
      allowOrigins: ["https://app.example.test"]
      allowMethods: [GET, POST]
  - name: api
    hosts: [api.example.test]
    service: default/api
  - name: shop
    hosts: [shop.example.test]
    service: default/front
`
	m.apply(gwSecret("edge-cert", cert) + "---\n" + gwSecret("shop-cert", shopCert) + "---\n" +
		allowAll("api", "default/edge", "default/front") + "---\n" +
		allowAll("front", "default/edge") + "---\n" + gwEdgePolicy + "---\n" + gateway)
	gw := m.gwStart("https", "http", "plain")
	h2 := gwClient(gw.addrs["https"], roots, gwTransportOpts{proto: "h2"})
	h1 := gwClient(gw.addrs["https"], roots, gwTransportOpts{proto: "h1"})
	gwWaitStatus(t, h2, "https://api.example.test/ready", nil, http.StatusOK)

	for _, tc := range []struct {
		name  string
		c     *http.Client
		proto int
	}{{"h2", h2, 2}, {"h1", h1, 1}} {
		t.Run(tc.name+"/api", func(t *testing.T) {
			r := gwWant(t, tc.c, http.MethodGet, "https://api.example.test/hello/"+tc.name+"?x=1", gwSpoofed, "", http.StatusOK)
			if r.proto != tc.proto {
				t.Errorf("got HTTP/%d, want HTTP/%d", r.proto, tc.proto)
			}
			if got := r.tls.PeerCertificates[0].SerialNumber.Int64(); got != 4201 {
				t.Errorf("got certificate serial %d, want edge-cert's 4201 (the first matching the SNI)", got)
			}
			if got := r.header.Get("Strict-Transport-Security"); got != "max-age=3600; includeSubDomains" {
				t.Errorf("got Strict-Transport-Security %q, want max-age=3600; includeSubDomains", got)
			}
			s := r.seen(t)
			if s.App != "api" || s.Path != "/hello/"+tc.name || s.Query != "x=1" {
				t.Errorf("got app %q path %q query %q, want api /hello/%s x=1", s.App, s.Path, s.Query, tc.name)
			}
			gwCheckEdgeHeaders(t, s, "api", "api.example.test")
		})
		t.Run(tc.name+"/post_body", func(t *testing.T) {
			body := strings.Repeat("0123456789", 5000)
			s := gwWant(t, tc.c, http.MethodPost, "https://api.example.test/upload", nil, body, http.StatusOK).seen(t)
			if s.Body != body {
				t.Errorf("the app got a body of %d bytes, want the %d sent", len(s.Body), len(body))
			}
		})
		t.Run(tc.name+"/two_sidecars", func(t *testing.T) {
			r := gwWant(t, tc.c, http.MethodGet, "https://shop.example.test/cart/"+tc.name, gwSpoofed, "", http.StatusOK)
			s := r.seen(t)
			if s.App != "front" || s.Path != "/cart/"+tc.name {
				t.Fatalf("got app %q path %q, want front /cart/%s", s.App, s.Path, tc.name)
			}
			gwCheckEdgeHeaders(t, s, "front", "shop.example.test")
			up := s.Upstream
			if up == nil || up.App != "api" || up.Path != "/via-front/cart/"+tc.name {
				t.Fatalf("got upstream %+v, want api's answer for /via-front/cart/%s", up, tc.name)
			}
			want := "By=spiffe://bulwark.local/ns/default/sa/api;URI=spiffe://bulwark.local/ns/default/sa/front"
			if got := up.Headers.Values("X-Forwarded-Client-Cert"); !slices.Equal(got, []string{want}) {
				t.Errorf("XFCC at api behind front: got %q, want %q", got, want)
			}
		})
		t.Run(tc.name+"/wrong_host_404", func(t *testing.T) {
			before := len(api.requests()) + len(front.requests())
			r := gwWant(t, tc.c, http.MethodGet, "https://nope.example.test/hello", nil, "", http.StatusNotFound)
			if r.header.Get("Strict-Transport-Security") == "" {
				t.Errorf("the 404 has no Strict-Transport-Security: want it on every answer of the listener")
			}
			if after := len(api.requests()) + len(front.requests()); after != before {
				t.Errorf("the apps received %d requests for a host no route takes", after-before)
			}
		})
	}

	t.Run("sni_selection", func(t *testing.T) {
		for _, tc := range []struct {
			sni  string
			want int64
		}{{"shop.example.test", 4211}, {"api.example.test", 4201}, {"x.example.test", 4201}, {"", 4211}, {"zzz.other.test", 4211}} {
			cfg := &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true} //nolint:gosec // the test reads the presented certificate
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", gw.addrs["https"], cfg)
			if err != nil {
				t.Errorf("SNI %q: %v", tc.sni, err)
				continue
			}
			if got := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != tc.want {
				t.Errorf("SNI %q: got serial %d, want %d", tc.sni, got, tc.want)
			}
			conn.Close()
		}
	})

	t.Run("tls_versions_and_suites", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			cfg  *tls.Config
			ok   bool
		}{
			{"tls1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false}, //nolint:gosec // the test offers old versions on purpose
			{"tls1.2_cbc", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}, false}, //nolint:gosec // the test offers weak suites on purpose
			{"tls1.2_gcm", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true},
			{"tls1.3", &tls.Config{MinVersion: tls.VersionTLS13}, true},
		} {
			tc.cfg.ServerName, tc.cfg.RootCAs = "api.example.test", roots
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", gw.addrs["https"], tc.cfg)
			if err == nil {
				conn.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("%s: handshake error %v, want success %v", tc.name, err, tc.ok)
			}
		}
	})

	t.Run("rewrite_and_cors", func(t *testing.T) {
		before := len(api.requests())
		s := gwWant(t, h2, http.MethodGet, "https://api.example.test/v1/items?q=1", map[string]string{"Origin": "https://app.example.test"}, "", http.StatusOK)
		if got := s.header.Get("Access-Control-Allow-Origin"); got != "https://app.example.test" {
			t.Errorf("allowed origin: got Access-Control-Allow-Origin %q", got)
		}
		if seen := s.seen(t); seen.Path != "/items" || seen.Query != "q=1" {
			t.Errorf("stripPrefix /v1: the app got %q ? %q, want /items ? q=1", seen.Path, seen.Query)
		}
		other := gwWant(t, h2, http.MethodGet, "https://api.example.test/v1/items", map[string]string{"Origin": "https://evil.example"}, "", http.StatusOK)
		if got := other.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("another origin: got Access-Control-Allow-Origin %q, want none", got)
		}
		pre := gwWant(t, h2, http.MethodOptions, "https://api.example.test/v1/items",
			map[string]string{"Origin": "https://app.example.test", "Access-Control-Request-Method": "POST"}, "", http.StatusNoContent)
		if got := pre.header.Get("Access-Control-Allow-Origin"); got != "https://app.example.test" {
			t.Errorf("preflight: got Access-Control-Allow-Origin %q", got)
		}
		if got := pre.header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "POST") {
			t.Errorf("preflight: got Access-Control-Allow-Methods %q, want POST in it", got)
		}
		gwWant(t, h2, http.MethodOptions, "https://api.example.test/v1/items",
			map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, "", http.StatusForbidden)
		gwWant(t, h2, http.MethodOptions, "https://api.example.test/v1/items",
			map[string]string{"Origin": "https://app.example.test", "Access-Control-Request-Method": "DELETE"}, "", http.StatusForbidden)
		if got := api.requests()[before:]; len(got) != 2 || slices.ContainsFunc(got, func(r string) bool { return strings.HasPrefix(r, "OPTIONS") }) {
			t.Errorf("the app received %q, want the two GETs and no preflight", got)
		}
	})

	t.Run("client_request_id", func(t *testing.T) {
		s := gwWant(t, h2, http.MethodGet, "https://api.example.test/rid", map[string]string{"X-Request-Id": "client-chosen"}, "", http.StatusOK).seen(t)
		if got := s.Headers.Values("X-Request-Id"); len(got) != 1 || got[0] == "" {
			t.Errorf("X-Request-Id at the app: got %q, want one", got)
		}
	})

	t.Run("http_redirects_308", func(t *testing.T) {
		c := &http.Client{Timeout: 10 * time.Second,
			Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, gw.addrs["http"])
			}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		before := len(api.requests())
		r := gwWant(t, c, http.MethodGet, "http://api.example.test/x/y?z=1", nil, "", http.StatusPermanentRedirect)
		if got, want := r.header.Get("Location"), "https://api.example.test/x/y?z=1"; got != want {
			t.Errorf("got Location %q, want %q", got, want)
		}
		if len(api.requests()) != before {
			t.Errorf("the HTTP listener forwarded a request it must only redirect")
		}
		if got := r.header.Get("Strict-Transport-Security"); got != "" {
			t.Errorf("plain HTTP answer with Strict-Transport-Security %q (RFC 6797 7.2: never over HTTP)", got)
		}
	})

	t.Run("plain_http_listener", func(t *testing.T) {
		c := &http.Client{Timeout: 10 * time.Second,
			Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, gw.addrs["plain"])
			}}}
		r := gwWant(t, c, http.MethodGet, "http://api.example.test/plain", gwSpoofed, "", http.StatusOK)
		if got := r.header.Get("Strict-Transport-Security"); got != "" {
			t.Errorf("plain HTTP answer with Strict-Transport-Security %q", got)
		}
		s := r.seen(t)
		for k, want := range map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Client-Cert": gwXFCC("api")} {
			if got := s.Headers.Values(k); !slices.Equal(got, []string{want}) {
				t.Errorf("%s at the app: got %q, want [%s]", k, got, want)
			}
		}
		for _, k := range []string{"Forwarded", "X-Bulwark-Identity", "X-Bulwark-Source"} {
			if got := s.Headers.Values(k); len(got) != 0 {
				t.Errorf("%s at the app: got %q, want none", k, got)
			}
		}
	})

	// Last, as they change the Gateway and the Secret: both are applied
	// live, without a restart or dropping the open connection.
	t.Run("route_added_live", func(t *testing.T) {
		gwWant(t, h2, http.MethodGet, "https://new.example.test/x", nil, "", http.StatusNotFound)
		m.apply(gateway + `  - name: new
    hosts: [new.example.test]
    service: default/api
`)
		gwWaitStatus(t, h2, "https://new.example.test/x", nil, http.StatusOK)
		gwWant(t, h1, http.MethodGet, "https://api.example.test/still", nil, "", http.StatusOK)
	})
	t.Run("secret_rotated_live", func(t *testing.T) {
		renewed := gwNewCert(t, 4299, "*.example.test")
		m.apply(gwSecret("edge-cert", renewed))
		eventually(t, 20*time.Second, "new handshakes present the renewed Secret", func() error {
			serial, err := gwHandshakeSerial(gw.addrs["https"], "api.example.test")
			if err != nil {
				return err
			}
			if serial != 4299 {
				return fmt.Errorf("serial %d, want 4299", serial)
			}
			return nil
		})
		r := gwWant(t, h2, http.MethodGet, "https://api.example.test/after-rotation", nil, "", http.StatusOK)
		if got := r.tls.PeerCertificates[0].SerialNumber.Int64(); got != 4201 {
			t.Errorf("the open HTTP/2 connection: got serial %d, want the old 4201 (the connection was replaced)", got)
		}
		if gwExited(gw.proc) {
			t.Errorf("the gateway exited: %v", gw.proc.err)
		}
	})

	t.Run("secret_not_shown", func(t *testing.T) {
		keyBody := strings.Join(strings.Split(strings.TrimSpace(string(cert.keyPEM)), "\n")[1:3], "")
		for _, format := range []string{"yaml", "json"} {
			out, errOut, code := cli(t, m.env, "", "get", "secrets", "edge-cert", "-n", "default", "-o", format)
			if code != 0 {
				t.Errorf("get secrets edge-cert -o %s: exit %d: %s", format, code, errOut)
			}
			if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, keyBody) || strings.Contains(out, gwB64Key(cert)) {
				t.Errorf("get secrets -o %s shows the key:\n%s", format, out)
			}
		}
		for _, p := range []*proc{m.control, gw.proc} {
			if strings.Contains(p.out.String(), keyBody) {
				t.Errorf("the output of %s contains the private key", p.name)
			}
		}
		// At rest: the control plane stores the Secret encrypted; a copy
		// the gateway keeps (its last snapshot) is readable by its user
		// only.
		for _, dir := range []string{filepath.Join(m.dir, "control"), gw.dataDir} {
			_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				b, err := os.ReadFile(path)
				if err != nil || !strings.Contains(string(b), keyBody) && !strings.Contains(string(b), gwB64Key(cert)) {
					return nil
				}
				if dir != gw.dataDir {
					t.Errorf("%s holds the Secret's key in clear", path)
				} else if info, err := d.Info(); err == nil && info.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s holds the Secret's key with mode %v, want no access for group and others", path, info.Mode().Perm())
				}
				return nil
			})
		}
		for _, path := range []string{"/config_dump", "/ready"} {
			resp, err := http.Get("http://" + gw.admin + path)
			if err != nil {
				t.Errorf("admin %s: %v", path, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), keyBody) || strings.Contains(string(b), "PRIVATE KEY") || strings.Contains(string(b), gwB64Key(cert)) {
				t.Errorf("admin %s shows the private key", path)
			}
		}
	})
}

// gwB64Key is a piece of the base64 of c's PEM key that only the key has.
func gwB64Key(c gwCert) string {
	return base64.StdEncoding.EncodeToString(c.keyPEM)[40:80]
}

// gwJWTIssuer is the issuer of TestGatewayJWT's tokens.
const gwJWTIssuer = "https://edge-idp.example"

// gwSigner signs tokens with an ECDSA key under a kid.
type gwSigner struct {
	kid string
	key *ecdsa.PrivateKey
}

func gwNewSigner(t *testing.T, kid string) gwSigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return gwSigner{kid: kid, key: k}
}

// jwks is the JWKS document of the signer's public key.
func (s gwSigner) jwks(t *testing.T) string {
	t.Helper()
	pub, err := jwk.Import(s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, s.kid)
	_ = pub.Set(jwk.AlgorithmKey, jwa.ES256())
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// token signs claims (iss, iat and a ten-minute exp added unless given).
func (s gwSigner) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": gwJWTIssuer, "iat": time.Now().Unix(), "exp": time.Now().Add(10 * time.Minute).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, s.kid)
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), s.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// TestGatewayJWT: a route requires a token of a JWTProvider with inline
// keys, and a policy selecting the gateway allows /orders only to tokens
// whose scope has "orders": no token is 401 with WWW-Authenticate, a valid
// token with the scope 200 (the app does not get the token), without the
// scope 403, an expired, forged, unsigned, not yet valid or other issuer's
// token, or one signed HS256 with the public keys, 401. The claim header
// replaces the client's, dot segments and encodings do not reach /orders
// without a token, X-Forwarded-For and Forwarded are not the client's IP
// for policies, a route with forwardToken passes the token on, and no
// token shows in the logs or metrics. The certificate comes from `bulwark
// create secret tls`.
func TestGatewayJWT(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	api := gwStartApp(t, "api", nil)
	m.startProxy("default/api", api.addr)
	cert := gwNewCert(t, 4202, "api.example.test")
	certFile, keyFile := writeFile(t, "tls.crt", string(cert.certPEM)), writeFile(t, "tls.key", string(cert.keyPEM))
	mustCLI(t, m.env, "create", "secret", "tls", "edge-cert", "-n", "default", "--cert", certFile, "--key", keyFile)

	signer := gwNewSigner(t, "k1")
	m.apply(allowAll("api", "default/edge") + "---\n" + `apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: edge-idp, namespace: default}
spec:
  selector: {service: edge}
  issuer: ` + gwJWTIssuer + `
  jwks: '` + signer.jwks(t) + `'
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: edge-access, namespace: default}
spec:
  selector: {service: edge}
  rules:
  - from: {ipBlocks: ["127.0.0.0/8"]}
    to: {paths: ["/public/*"]}
  - from: {requestPrincipals: ["` + gwJWTIssuer + `/*"]}
    to: {paths: ["/orders", "/orders/*"]}
    when: ["'orders' in string(jwt.claims.scope).split(' ')"]
  - from: {requestPrincipals: ["` + gwJWTIssuer + `/*"]}
    to: {paths: ["/fwd/*"]}
  - from: {ipBlocks: ["10.0.0.0/8"]}
    to: {paths: ["/internal/*"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificates: [{secret: edge-cert}]
  routes:
  - name: orders
    hosts: [api.example.test]
    matches: [{path: {prefix: /orders}}]
    service: default/api
    jwt:
      providers: [edge-idp]
      claimsToHeaders: [{claim: sub, header: X-User}]
  - name: fwd
    hosts: [api.example.test]
    matches: [{path: {prefix: /fwd}}]
    service: default/api
    jwt: {providers: [edge-idp], forwardToken: true}
  - name: public
    hosts: [api.example.test]
    service: default/api
`)
	metrics := freeAddr(t)
	gw := m.gwStartFlags([]string{"https"}, []string{"--metrics", metrics})
	c := gwClient(gw.addrs["https"], cert.pool, gwTransportOpts{proto: "h2"})
	gwWaitStatus(t, c, "https://api.example.test/public/ready", nil, http.StatusOK)

	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	good := signer.token(t, map[string]any{"sub": "alice", "scope": "read orders"})
	noScope := signer.token(t, map[string]any{"sub": "bob", "scope": "read"})
	expired := signer.token(t, map[string]any{"sub": "alice", "scope": "orders",
		"iat": time.Now().Add(-time.Hour).Unix(), "exp": time.Now().Add(-30 * time.Minute).Unix()})
	forged := gwNewSigner(t, "k1").token(t, map[string]any{"sub": "alice", "scope": "orders"})
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"k1"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+gwJWTIssuer+`","sub":"alice","scope":"orders","exp":`+
			strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)+`}`)) + "."

	// Algorithm confusion: HS256 keyed with the provider's public JWKS.
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, "k1")
	confusedPayload, _ := json.Marshal(map[string]any{"iss": gwJWTIssuer, "sub": "alice", "scope": "orders", "exp": time.Now().Add(time.Hour).Unix()})
	confused, err := jws.Sign(confusedPayload, jws.WithKey(jwa.HS256(), []byte(signer.jwks(t)), jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	notYet := signer.token(t, map[string]any{"sub": "alice", "scope": "orders", "nbf": time.Now().Add(time.Hour).Unix()})
	otherIssuer := signer.token(t, map[string]any{"sub": "alice", "scope": "orders", "iss": "https://evil.example"})

	t.Run("no_token_401", func(t *testing.T) {
		r := gwWant(t, c, http.MethodGet, "https://api.example.test/orders/1", nil, "", http.StatusUnauthorized)
		if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("got WWW-Authenticate %q, want a Bearer challenge", got)
		}
	})
	t.Run("valid_with_scope_200", func(t *testing.T) {
		hdr := bearer(good)
		hdr["X-User"] = "mallory"
		s := gwWant(t, c, http.MethodGet, "https://api.example.test/orders/2", hdr, "", http.StatusOK).seen(t)
		if got := s.Headers.Values("X-User"); !slices.Equal(got, []string{"alice"}) {
			t.Errorf("claimsToHeaders: got X-User %q at the app, want [alice] (the claim, not the client's)", got)
		}
		if got := s.Headers.Get("Authorization"); got != "" {
			t.Errorf("the app got the token (no forwardToken): %q", got)
		}
		for k, v := range s.Headers {
			if slices.ContainsFunc(v, func(x string) bool { return strings.Contains(x, good[:40]) }) {
				t.Errorf("the app got the token in %s", k)
			}
		}
		gwCheckEdgeHeaders(t, s, "api", "api.example.test")
	})
	t.Run("valid_without_scope_403", func(t *testing.T) {
		gwWant(t, c, http.MethodGet, "https://api.example.test/orders/3", bearer(noScope), "", http.StatusForbidden)
	})
	for name, tok := range map[string]string{"expired": expired, "forged": forged, "unsigned": unsigned, "garbage": "a.b.c",
		"hs256_confusion": string(confused), "not_yet_valid": notYet, "other_issuer": otherIssuer} {
		t.Run(name+"_401", func(t *testing.T) {
			r := gwWant(t, c, http.MethodGet, "https://api.example.test/orders/"+name, bearer(tok), "", http.StatusUnauthorized)
			if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("got WWW-Authenticate %q, want a Bearer challenge", got)
			}
			if strings.Contains(r.body, tok) {
				t.Errorf("the 401 body quotes the token")
			}
		})
	}
	t.Run("path_tricks_do_not_skip_the_jwt_route", func(t *testing.T) {
		for _, p := range []string{"/public/../orders/9", "/public/%2e%2e/orders/9", "/public/..%2forders/9", "/public/%2E%2E/orders/9",
			"//orders/9", "/./orders/9", "/public/..;/orders/9", "/ORDERS/9", "/orders%2f9"} {
			r, err := gwDo(c, http.MethodGet, "https://api.example.test"+p, nil, "")
			if err != nil {
				t.Errorf("%s: %v", p, err)
				continue
			}
			if r.status == http.StatusOK {
				if s := r.seen(t); strings.Contains(strings.ToLower(s.Path), "orders") {
					t.Errorf("%s without a token: 200 and the app got %q", p, s.Path)
				}
			}
		}
	})
	t.Run("x_forwarded_for_is_not_the_client_ip", func(t *testing.T) {
		gwWant(t, c, http.MethodGet, "https://api.example.test/internal/x", map[string]string{"X-Forwarded-For": "10.1.2.3"}, "", http.StatusForbidden)
		gwWant(t, c, http.MethodGet, "https://api.example.test/internal/x", map[string]string{"Forwarded": "for=10.1.2.3", "X-Real-Ip": "10.1.2.3"}, "", http.StatusForbidden)
	})
	t.Run("forward_token", func(t *testing.T) {
		s := gwWant(t, c, http.MethodGet, "https://api.example.test/fwd/1", bearer(good), "", http.StatusOK).seen(t)
		if got := s.Headers.Get("Authorization"); got != "Bearer "+good {
			t.Errorf("got Authorization %.60q at the app, want the forwarded token", got)
		}
	})
	if slices.ContainsFunc([]string{"/orders/1", "/orders/3", "/orders/expired", "/orders/forged", "/orders/unsigned", "/orders/garbage",
		"/orders/hs256_confusion", "/orders/not_yet_valid", "/orders/other_issuer"}, api.received) {
		t.Errorf("the app received refused requests: %q", api.requests())
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatalf("gateway metrics: %v", err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, tok := range []string{good, noScope, forged} {
		sig := tok[strings.LastIndexByte(tok, '.'):]
		for _, p := range []*proc{m.control, gw.proc} {
			if strings.Contains(p.out.String(), sig) {
				t.Errorf("the output of %s contains a token's signature", p.name)
			}
		}
		if strings.Contains(string(mb), sig) {
			t.Errorf("the gateway's metrics contain a token's signature")
		}
	}
}

// TestGatewayRateLimit: a route's limit per client IP (one request every
// five seconds, burst 2) answers the third quick request of an address 429
// with Retry-After, which the app never sees, while another address still
// gets through and X-Forwarded-For does not make another client; a limit
// per route counts every client together, one per subject each JWT
// subject apart.
func TestGatewayRateLimit(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	api := gwStartApp(t, "api", nil)
	m.startProxy("default/api", api.addr)
	cert := gwNewCert(t, 4203, "*.example.test")
	signer := gwNewSigner(t, "k1")
	m.apply(gwSecret("edge-cert", cert) + "---\n" + allowAll("api", "default/edge") + "---\n" + gwEdgePolicy + "---\n" + `apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: edge-idp, namespace: default}
spec:
  selector: {service: edge}
  issuer: ` + gwJWTIssuer + `
  jwks: '` + signer.jwks(t) + `'
---
apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificates: [{secret: edge-cert}]
  routes:
  - name: limited
    hosts: [limited.example.test]
    service: default/api
    rateLimits:
    - {requestsPerSecond: 0.2, burst: 2, per: client-ip}
  - name: shared
    hosts: [shared.example.test]
    service: default/api
    rateLimits:
    - {requestsPerSecond: 0.2, burst: 2, per: route}
  - name: subject
    hosts: [subject.example.test]
    service: default/api
    jwt: {providers: [edge-idp]}
    rateLimits:
    - {requestsPerSecond: 0.2, burst: 2, per: subject}
  - name: api
    hosts: [api.example.test]
    service: default/api
`)
	gw := m.gwStart("https")
	gwWaitStatus(t, gwClient(gw.addrs["https"], cert.pool, gwTransportOpts{proto: "h2"}), "https://api.example.test/ready", nil, http.StatusOK)

	for _, proto := range []string{"h2", "h1"} {
		t.Run(proto, func(t *testing.T) {
			ip := net.IPv4(127, 0, 0, 2)
			if proto == "h1" {
				ip = net.IPv4(127, 0, 0, 3)
			}
			c := gwClient(gw.addrs["https"], cert.pool, gwTransportOpts{proto: proto, local: ip})
			for i := 1; i <= 2; i++ {
				gwWant(t, c, http.MethodGet, fmt.Sprintf("https://limited.example.test/%s/r%d", proto, i), nil, "", http.StatusOK)
			}
			// Another X-Forwarded-For does not make another client.
			r := gwWant(t, c, http.MethodGet, "https://limited.example.test/"+proto+"/r3", map[string]string{"X-Forwarded-For": "10.9.9.9"}, "", http.StatusTooManyRequests)
			ra, err := strconv.Atoi(r.header.Get("Retry-After"))
			if err != nil || ra < 1 {
				t.Errorf("got Retry-After %q, want whole seconds >= 1", r.header.Get("Retry-After"))
			}
			if api.received("/" + proto + "/r3") {
				t.Errorf("the app received the limited request")
			}
			// Another address has its own bucket; another route is not
			// limited.
			other := gwClient(gw.addrs["https"], cert.pool, gwTransportOpts{proto: proto, local: net.IPv4(127, 0, 0, 4)})
			gwWant(t, other, http.MethodGet, "https://limited.example.test/"+proto+"/other", nil, "", http.StatusOK)
			gwWant(t, c, http.MethodGet, "https://api.example.test/"+proto+"/unlimited", nil, "", http.StatusOK)
		})
	}

	t.Run("per_route", func(t *testing.T) {
		// One bucket for the route, whoever sends.
		for i, ip := range []net.IP{net.IPv4(127, 0, 1, 1), net.IPv4(127, 0, 1, 2)} {
			gwWant(t, gwClient(gw.addrs["https"], cert.pool, gwTransportOpts{proto: "h2", local: ip}), http.MethodGet,
				fmt.Sprintf("https://shared.example.test/s%d", i), nil, "", http.StatusOK)
		}
		r := gwWant(t, gwClient(gw.addrs["https"], cert.pool, gwTransportOpts{proto: "h2", local: net.IPv4(127, 0, 1, 3)}),
			http.MethodGet, "https://shared.example.test/s3", nil, "", http.StatusTooManyRequests)
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("got Retry-After %q, want whole seconds >= 1", r.header.Get("Retry-After"))
		}
	})
	t.Run("per_subject", func(t *testing.T) {
		// One bucket per JWT subject, from one address.
		c := gwClient(gw.addrs["https"], cert.pool, gwTransportOpts{proto: "h2", local: net.IPv4(127, 0, 1, 4)})
		bearer := func(sub string) map[string]string {
			return map[string]string{"Authorization": "Bearer " + signer.token(t, map[string]any{"sub": sub})}
		}
		gwWant(t, c, http.MethodGet, "https://subject.example.test/a1", bearer("alice"), "", http.StatusOK)
		gwWant(t, c, http.MethodGet, "https://subject.example.test/a2", bearer("alice"), "", http.StatusOK)
		gwWant(t, c, http.MethodGet, "https://subject.example.test/a3", bearer("alice"), "", http.StatusTooManyRequests)
		gwWant(t, c, http.MethodGet, "https://subject.example.test/b1", bearer("bob"), "", http.StatusOK)
		if api.received("/a3") {
			t.Errorf("the app received alice's limited request")
		}
	})
}

// gwWriteCertFiles writes c's certificate and key into dir as tls.crt and
// tls.key, each through a temporary file renamed into place.
func gwWriteCertFiles(t *testing.T, dir string, c gwCert) {
	t.Helper()
	for name, b := range map[string][]byte{"tls.key": c.keyPEM, "tls.crt": c.certPEM} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// gwHandshakeSerial opens a new TLS connection to addr with SNI host and
// returns the serial of the certificate the gateway presents.
func gwHandshakeSerial(addr, host string) (int64, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: host, InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // the test reads the presented certificate
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// TestGatewayCertRotation: the HTTPS listener's certificate comes from
// files; replacing them is picked up by new handshakes, while a keep-alive
// HTTP/1.1 connection and an HTTP/2 connection opened before keep being
// served on the same connection.
func TestGatewayCertRotation(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	api := gwStartApp(t, "api", nil)
	m.startProxy("default/api", api.addr)
	dir := t.TempDir()
	old, renewed := gwNewCert(t, 1001, "*.example.test"), gwNewCert(t, 1002, "*.example.test")
	gwWriteCertFiles(t, dir, old)
	m.apply(allowAll("api", "default/edge") + "---\n" + gwEdgePolicy + "---\n" + `apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificates: [{certFile: ` + filepath.Join(dir, "tls.crt") + `, keyFile: ` + filepath.Join(dir, "tls.key") + `}]
  routes:
  - name: api
    service: default/api
`)
	gw := m.gwStart("https")
	addr := gw.addrs["https"]
	roots := x509.NewCertPool()
	roots.AddCert(old.cert)
	roots.AddCert(renewed.cert)
	var dials1, dials2 atomic.Int64
	h1 := gwClient(addr, roots, gwTransportOpts{proto: "h1", dials: &dials1})
	h2 := gwClient(addr, roots, gwTransportOpts{proto: "h2", dials: &dials2})
	gwWaitStatus(t, h2, "https://api.example.test/ready", nil, http.StatusOK)
	for _, c := range []*http.Client{h1, h2} {
		r := gwWant(t, c, http.MethodGet, "https://api.example.test/before", nil, "", http.StatusOK)
		if got := r.tls.PeerCertificates[0].SerialNumber.Int64(); got != 1001 {
			t.Fatalf("got serial %d before the rotation, want 1001", got)
		}
	}
	d1, d2 := dials1.Load(), dials2.Load()

	gwWriteCertFiles(t, dir, renewed)
	eventually(t, 20*time.Second, "a new handshake presents the renewed certificate", func() error {
		serial, err := gwHandshakeSerial(addr, "api.example.test")
		if err != nil {
			return err
		}
		if serial != 1002 {
			return fmt.Errorf("serial %d, want 1002", serial)
		}
		return nil
	})

	for name, c := range map[string]*http.Client{"h1": h1, "h2": h2} {
		r := gwWant(t, c, http.MethodGet, "https://api.example.test/after-"+name, nil, "", http.StatusOK)
		if got := r.tls.PeerCertificates[0].SerialNumber.Int64(); got != 1001 {
			t.Errorf("%s: got serial %d on the old connection, want 1001 (the connection was replaced)", name, got)
		}
	}
	if dials1.Load() != d1 || dials2.Load() != d2 {
		t.Errorf("the clients dialed again after the rotation (h1 %d -> %d, h2 %d -> %d): old connections were dropped",
			d1, dials1.Load(), d2, dials2.Load())
	}
	// A new client gets the new certificate and is served.
	fresh := gwClient(addr, renewed.pool, gwTransportOpts{proto: "h2"})
	if got := gwWant(t, fresh, http.MethodGet, "https://api.example.test/fresh", nil, "", http.StatusOK).tls.PeerCertificates[0].SerialNumber.Int64(); got != 1002 {
		t.Errorf("a new client got serial %d, want 1002", got)
	}

	// A broken file is not taken: the gateway keeps serving the last good
	// certificate.
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	serial, err := gwHandshakeSerial(addr, "api.example.test")
	if err != nil || serial != 1002 {
		t.Errorf("after a broken certificate file: got serial %d, %v; want the last good 1002", serial, err)
	}
	if gwExited(gw.proc) {
		t.Errorf("the gateway exited on a broken certificate file: %v", gw.proc.err)
	}
}

// gwTLSUpstream is a TLS-terminating TCP app on loopback: it answers each
// line with "upstream: " and the line, and counts its connections.
type gwTLSUpstream struct {
	addr     string
	cert     gwCert
	accepted atomic.Int64
}

func gwStartTLSUpstream(t *testing.T, serial int64, host string) *gwTLSUpstream {
	t.Helper()
	u := &gwTLSUpstream{cert: gwNewCert(t, serial, host)}
	pair, err := tls.X509KeyPair(u.cert.certPEM, u.cert.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted.Add(1)
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, "upstream: "+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return u
}

// TestGatewayPassthrough: a TLS listener routes by SNI, without
// terminating, to a service whose app terminates TLS itself: the client
// completes its handshake with the app's certificate and talks to it; a
// name no TLS route takes, one a DENY policy selecting the gateway names,
// a ClientHello without SNI and bytes that are not TLS get the connection
// closed and never reach the app.
func TestGatewayPassthrough(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	up := gwStartTLSUpstream(t, 7007, "secure.example.test")
	m.startProxy("default/vault", up.addr, "--app-protocol", "tcp")
	m.apply(allowAll("vault", "default/edge") + "---\n" + gwEdgePolicy + "---\n" + `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: edge-deny-blocked, namespace: default}
spec:
  selector: {service: edge}
  action: DENY
  rules:
  - to: {hosts: ["blocked.example.test"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - name: passthrough
    port: 9443
    protocol: TLS
  tlsRoutes:
  - name: vault
    hosts: [secure.example.test, blocked.example.test]
    service: default/vault
`)
	gw := m.gwStart("passthrough")
	addr := gw.addrs["passthrough"]

	exchange := func(cfg *tls.Config) (int64, string, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return 0, "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
		if _, err := io.WriteString(conn, "ping\n"); err != nil {
			return serial, "", err
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		return serial, line, err
	}
	eventually(t, 20*time.Second, "a handshake through the gateway with the app", func() error {
		serial, line, err := exchange(&tls.Config{ServerName: "secure.example.test", RootCAs: up.cert.pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			return err
		}
		if serial != 7007 || line != "upstream: ping\n" {
			return fmt.Errorf("got serial %d and %q, want 7007 and the app's answer", serial, line)
		}
		return nil
	})

	before := up.accepted.Load()
	t.Run("unknown_sni_closed", func(t *testing.T) {
		cfg := &tls.Config{ServerName: "other.example.test", InsecureSkipVerify: true} //nolint:gosec // any certificate would show the route was taken
		if serial, line, err := exchange(cfg); err == nil {
			t.Errorf("unknown SNI: got serial %d, %q, want the connection closed", serial, line)
		}
	})
	t.Run("sni_denied_by_policy_closed", func(t *testing.T) {
		cfg := &tls.Config{ServerName: "blocked.example.test", InsecureSkipVerify: true} //nolint:gosec // any certificate would show the tunnel was opened
		if serial, line, err := exchange(cfg); err == nil {
			t.Errorf("SNI a DENY policy names: got serial %d, %q, want the connection closed", serial, line)
		}
	})
	t.Run("no_sni_closed", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // no SNI at all: the IP address is not sent as a name
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err == nil {
			t.Errorf("a ClientHello without SNI completed a handshake with serial %d", tc.ConnectionState().PeerCertificates[0].SerialNumber)
		} else if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			t.Errorf("a ClientHello without SNI: still open after 10s, want it closed")
		}
	})
	t.Run("not_tls_closed", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: secure.example.test\r\n\r\n")
		if b, err := gwClosedWithin(conn, 10*time.Second); err != nil {
			t.Errorf("plain HTTP on the TLS listener: %v (read %q), want the connection closed", err, b)
		}
	})
	if got := up.accepted.Load(); got != before {
		t.Errorf("the app accepted %d connections the gateway must have closed", got-before)
	}
	// Without the DENY policy the same name is tunneled: the policy, not
	// the route, closed it.
	mustCLI(t, m.env, "delete", "authorizationpolicies", "edge-deny-blocked", "-n", "default")
	eventually(t, 20*time.Second, "blocked.example.test tunneled once the DENY policy is gone", func() error {
		cfg := &tls.Config{ServerName: "blocked.example.test", InsecureSkipVerify: true} //nolint:gosec // the test reads the presented certificate
		serial, line, err := exchange(cfg)
		if err != nil {
			return err
		}
		if serial != 7007 || line != "upstream: ping\n" {
			return fmt.Errorf("got serial %d and %q", serial, line)
		}
		return nil
	})
}

// TestGatewayGracefulShutdown: on SIGTERM the gateway lets a request in
// flight finish (the client gets the app's 200), then stops accepting
// connections and exits 0.
func TestGatewayGracefulShutdown(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	g := newGate(t)
	app := startCountingApp(t, "api", g)
	m.startProxy("default/api", app.addr)
	cert := gwNewCert(t, 4204, "*.example.test")
	m.apply(gwSecret("edge-cert", cert) + "---\n" + allowAll("api", "default/edge") + "---\n" + gwEdgePolicy + "---\n" + `apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificates: [{secret: edge-cert}]
  routes:
  - name: api
    service: default/api
`)
	gw := m.gwStart("https")
	c := gwClient(gw.addrs["https"], cert.pool, gwTransportOpts{proto: "h2"})
	gwWaitStatus(t, c, "https://api.example.test/ready", nil, http.StatusOK)

	type result struct {
		r   gwResp
		err error
	}
	inFlight := make(chan result, 1)
	go func() {
		r, err := gwDo(c, http.MethodGet, "https://api.example.test/hold/1", nil, "")
		inFlight <- result{r, err}
	}()
	select {
	case <-g.arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("the held request did not reach the app")
	}
	if err := syscall.Kill(gw.proc.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the gateway stops accepting connections", func() error {
		conn, err := net.DialTimeout("tcp", gw.addrs["https"], time.Second)
		if err != nil {
			return nil
		}
		conn.Close()
		return errors.New("still accepting")
	})
	g.open()
	res := <-inFlight
	if res.err != nil || res.r.status != http.StatusOK {
		t.Errorf("the request in flight at SIGTERM: got %d %v, want the app's 200", res.r.status, res.err)
	}
	if code := gw.proc.wait(t, 20*time.Second); code != 0 {
		t.Errorf("the gateway exited %d after SIGTERM, want 0", code)
	}
}
