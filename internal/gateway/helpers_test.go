package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
)

// hangGuard bounds every wait, so that a bug shows as a failure rather than
// a hung test. It is never a timing assertion.
const hangGuard = 30 * time.Second

// pemPair is a self-signed certificate and its key, PEM.
type pemPair struct {
	cert, key []byte
	serial    *big.Int
}

var serials struct {
	mu   sync.Mutex
	next int64
}

// newPair makes a self-signed ECDSA P-256 certificate for names, with a
// fresh serial.
func newPair(t testing.TB, names ...string) pemPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serials.mu.Lock()
	serials.next++
	serial := big.NewInt(1000 + serials.next)
	serials.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemPair{
		cert:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		serial: serial,
	}
}

// writePair writes p to dir/name.crt and dir/name.key and returns their
// paths.
func writePair(t testing.TB, dir, name string, p pemPair) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, p.cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, p.key, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// fakeEdge answers every request 200 with "<listener> <tls> <proto>
// <bytes of body read> <whether r.TLS is set>", and echoes passthrough
// connections.
type fakeEdge struct{}

func (fakeEdge) Edge(listener string, tls bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusRequestTimeout)
			return
		}
		fmt.Fprintf(w, "%s %v %s %d %v", listener, tls, r.Proto, n, r.TLS != nil)
	})
}

func (fakeEdge) ServePassthrough(ctx context.Context, c net.Conn, listener string) {
	defer c.Close()
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	_, _ = io.Copy(c, c)
}

// fixture is a running Server on loopback.
type fixture struct {
	srv   *gateway.Server
	reg   *prometheus.Registry
	clock clock.Clock
	// ready receives the addresses given to Ready.
	ready chan map[string]string
}

// startServer runs a Server whose listeners (by name) bind 127.0.0.1:0,
// with clk (nil: the wall clock), and stops it at the end of the test.
func startServer(t *testing.T, clk clock.Clock, names ...string) *fixture {
	t.Helper()
	listen := map[string]string{}
	for _, n := range names {
		listen[n] = "127.0.0.1:0"
	}
	f := &fixture{reg: prometheus.NewRegistry(), clock: clk, ready: make(chan map[string]string, 1)}
	srv, err := gateway.NewServer(gateway.ServerConfig{
		Edge: fakeEdge{}, Listen: listen, Clock: clk, Registry: f.reg,
		ShutdownTimeout: 2 * time.Second,
		Ready:           func(a map[string]string) { f.ready <- a },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(hangGuard):
			t.Error("Run did not return")
		}
	})
	return f
}

// apply applies gw and returns the listeners' addresses.
func (f *fixture) apply(t *testing.T, gw *config.Gateway, secrets map[string]*apiv1.TLSSecret) map[string]string {
	t.Helper()
	if err := f.srv.Apply(gw, secrets); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return f.srv.Status().Listeners
}

// closedCount is bulwark_gateway_connections_closed_total{listener,reason}.
func (f *fixture) closedCount(listener, reason string) float64 {
	return counterValue(f.reg, "bulwark_gateway_connections_closed_total", map[string]string{"listener": listener, "reason": reason})
}

// counterValue reads one series of a counter of reg (0 when absent).
func counterValue(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// gw builds a Gateway of listeners.
func gw(listeners ...config.GatewayListener) *config.Gateway {
	return &config.Gateway{
		TypeMeta: config.TypeMeta{APIVersion: "bulwark.dev/v1alpha1", Kind: config.KindGateway},
		Metadata: config.ObjectMeta{Name: "edge", Namespace: "default"},
		Spec:     config.GatewaySpec{Listeners: listeners},
	}
}

func httpsListener(name string, port int, certs ...config.GatewayCertificate) config.GatewayListener {
	return config.GatewayListener{Name: name, Port: port, Protocol: config.ListenerHTTPS, TLS: &config.GatewayTLS{Certificates: certs}}
}

func secretCert(name string) config.GatewayCertificate {
	return config.GatewayCertificate{Secret: name}
}

func secretOf(name string, p pemPair) *apiv1.TLSSecret {
	return &apiv1.TLSSecret{Name: name, CertPem: p.cert, KeyPem: p.key}
}

// handshake connects to addr with TLS (server name sni, "" for none,
// unverified: the test reads the certificate) and returns the serial of
// the leaf the server presented.
func handshake(t *testing.T, addr, sni string) *big.Int {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addr, &tls.Config{
		ServerName: sni, InsecureSkipVerify: true, //nolint:gosec // the test reads the certificate
	})
	if err != nil {
		t.Fatalf("handshake %s (sni %q): %v", addr, sni, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// client is an HTTPS client trusting nothing but reading everything (one
// connection, kept alive), HTTP/2 when h2.
func client(h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test certificates
		ForceAttemptHTTP2: h2,
		MaxConnsPerHost:   1,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: hangGuard,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get GETs url with c and returns the status and body.
func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitClosed reads c until the server closes it (EOF or reset) and
// reports whether it did within limit reads of at most step each.
func waitClosed(c net.Conn, step time.Duration, limit int) bool {
	buf := make([]byte, 4096)
	for range limit {
		_ = c.SetReadDeadline(time.Now().Add(step))
		_, err := c.Read(buf)
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return true
		}
	}
	return false
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
