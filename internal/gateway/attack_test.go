package gateway_test

// Attacks on the gateway's listeners (an internet-facing process), from a
// review of the ingress gateway. Tests whose name ends in "Holds" pin
// abuse that is handled; the others reproduce defects and fail until the
// defect is fixed.

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
)

// slowReadBound is how long a handler blocked on a client that never reads
// may stay blocked before the test calls it held (far beyond the limits of
// the test's Gateway, 1s each: a bound, not a timing assertion).
const slowReadBound = 20 * time.Second

// bigEdge answers every request with an endless body, and reports on ended
// how the handler's writing ended.
type bigEdge struct {
	ended chan error
}

func (e bigEdge) Edge(string, bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		var err error
		for err == nil {
			_, err = w.Write(chunk)
			if err == nil {
				err = http.NewResponseController(w).Flush()
			}
		}
		select {
		case e.ended <- err:
		default:
		}
	})
}

func (bigEdge) ServePassthrough(_ context.Context, c net.Conn, _ string) { c.Close() }

// startEdgeServer runs a Server of edge with an HTTPS and a plain HTTP
// listener (routes, no redirect) under limits, and returns their
// addresses.
func startEdgeServer(t *testing.T, edge gateway.Edge, limits *config.GatewayLimits) map[string]string {
	t.Helper()
	srv, err := gateway.NewServer(gateway.ServerConfig{
		Edge: edge, Listen: map[string]string{"https": "127.0.0.1:0", "http": "127.0.0.1:0"},
		Registry: prometheus.NewRegistry(), ShutdownTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(hangGuard):
			t.Error("Run did not return")
		}
	})
	g := gw(httpsListener("https", 443, secretCert("a")),
		config.GatewayListener{Name: "http", Port: 80, Protocol: config.ListenerHTTP, RedirectToHTTPS: ptr(false)})
	g.Spec.Limits = limits
	if err := srv.Apply(g, map[string]*apiv1.TLSSecret{"a": secretOf("a", newPair(t, "a.example.com"))}); err != nil {
		t.Fatal(err)
	}
	return srv.Status().Listeners
}

var shortLimits = &config.GatewayLimits{RequestHeaderTimeout: "1s", RequestBodyTimeout: "1s", IdleTimeout: "1s", ResponseWriteTimeout: "1s"}

// TestAttackSlowReadHTTP1: a client that sends a request and never reads
// the answer holds the handler (and, through the engine, the upstream
// stream to the service's sidecar and the app's answer) for as long as it
// keeps the connection open: the edge's servers have no write timeout
// (http.Server.WriteTimeout, a per-write deadline, or HTTP2Config's
// WriteByteTimeout), and every limit of GatewayLimits is about reading.
// 256 connections per IP (x 100 streams over HTTP/2) of such clients pin
// as many upstream requests. Want: a write that makes no progress for a
// bounded time (a new limit, e.g. responseWriteTimeout, default ~30s,
// extended on progress) ends the request and closes the connection.
func TestAttackSlowReadHTTP1(t *testing.T) {
	e := bigEdge{ended: make(chan error, 1)}
	addrs := startEdgeServer(t, e, shortLimits)
	c, err := net.DialTimeout("tcp", addrs["http"], hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The client never reads.
	select {
	case err := <-e.ended:
		t.Logf("the handler's write ended: %v", err)
	case <-time.After(slowReadBound):
		t.Errorf("a client that never reads held the handler for %v (limits of 1s): want a write timeout", slowReadBound)
	}
}

// TestAttackSlowReadHTTP2ZeroWindow: the HTTP/2 form of the slow read: a
// client that sets SETTINGS_INITIAL_WINDOW_SIZE to 0 and never sends
// WINDOW_UPDATE keeps each of its streams' handlers blocked (up to
// maxConcurrentStreams per connection) while it answers PINGs; the idle
// timeout does not apply to a connection with open streams.
func TestAttackSlowReadHTTP2ZeroWindow(t *testing.T) {
	e := bigEdge{ended: make(chan error, 1)}
	addrs := startEdgeServer(t, e, shortLimits)
	a := dialH2(t, addrs["https"])
	_ = a.conn.SetDeadline(time.Now().Add(hangGuard + slowReadBound))
	if err := a.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	if err := a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block, EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-e.ended:
		t.Logf("the handler's write ended: %v", err)
	case <-a.closed:
		// The server ended the connection: the handler's write fails.
	case <-time.After(slowReadBound):
		t.Errorf("a stream with a zero flow-control window held its handler for %v (limits of 1s): want a write timeout", slowReadBound)
	}
}

// TestAttackHTTP2PingFloodHolds: a client that floods PINGs without
// reading the acknowledgements gets its connection closed (net/http bounds
// the queued control frames), while another client is served.
func TestAttackHTTP2PingFloodHolds(t *testing.T) {
	_, addrs := limitedGateway(t, nil)
	stop := make(chan struct{})
	legit := startLegit(t, client(true), "https://"+addrs["https"]+"/", stop)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addrs["https"], &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{"h2"}, ServerName: "a.example.com", //nolint:gosec // self-signed
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	fr := http2.NewFramer(c, c)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	_ = fr.WriteSettings()
	closed := false
	for range 2_000_000 {
		if err := fr.WritePing(false, [8]byte{1}); err != nil {
			closed = true
			break
		}
	}
	close(stop)
	legit.check(t)
	if !closed && !waitClosed(c, time.Second, 30) {
		t.Error("a PING flood that never reads the acknowledgements kept its connection")
	}
}

// TestAttackHTTP2SettingsFloodHolds: a SETTINGS flood (each to be
// acknowledged) is handled like the PING flood.
func TestAttackHTTP2SettingsFloodHolds(t *testing.T) {
	_, addrs := limitedGateway(t, nil)
	a := dialH2(t, addrs["https"])
	for range 200_000 {
		if err := a.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 1 << 30}); err != nil {
			break
		}
	}
	// The server still answers on the connection or closed it; it must
	// not have crashed or grown its encoder table: a fresh client works.
	code, _, err := get(client(true), "https://"+addrs["https"]+"/")
	if err != nil || code != http.StatusOK {
		t.Errorf("after a SETTINGS flood: got %d %v, want 200", code, err)
	}
}

// TestAttackTLSKeyExchangeHolds: RSA key exchange (no forward secrecy),
// 3DES and CBC-only clients, and SSLv3/TLS 1.0 hellos are refused.
func TestAttackTLSKeyExchangeHolds(t *testing.T) {
	_, addrs := limitedGateway(t, nil)
	for _, cfg := range []*tls.Config{
		{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384}},
		{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA, tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA}},
		{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
	} {
		cfg.InsecureSkipVerify = true //nolint:gosec // self-signed
		cfg.ServerName = "a.example.com"
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addrs["https"], cfg)
		if err == nil {
			c.Close()
			t.Errorf("handshake with %v (max version %x): accepted, want refused", cfg.CipherSuites, cfg.MaxVersion)
		}
	}
}

// TestAttackGarbageOnHTTPSHolds: bytes that are not TLS, a plain HTTP
// request to the HTTPS port, and a ClientHello cut short get the
// connection closed (within the header timeout), and nothing reaches a
// handler.
func TestAttackGarbageOnHTTPSHolds(t *testing.T) {
	_, addrs := limitedGateway(t, &config.GatewayLimits{RequestHeaderTimeout: "1s"})
	for _, in := range []string{
		"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
		strings.Repeat("\x00", 64),
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a ClientHello header, then silence
	} {
		c, err := net.DialTimeout("tcp", addrs["https"], hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, in); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1024)
		_ = c.SetReadDeadline(time.Now().Add(hangGuard))
		var got []byte
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		c.Close()
		if strings.Contains(string(got), "HTTP/1.1 200") {
			t.Errorf("%q on the HTTPS port: got an answer %q", in, got)
		}
	}
}

// waitEdge counts the requests it starts; each handler waits until its
// request is cancelled, like the engine's forwarding to a slow service.
type waitEdge struct {
	started *atomic.Int64
}

func (e waitEdge) Edge(string, bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.started.Add(1)
		<-r.Context().Done()
	})
}

func (waitEdge) ServePassthrough(_ context.Context, c net.Conn, _ string) { c.Close() }

// TestAttackHTTP2ServerProvokedResets ("MadeYouReset", CVE-2025-8671): the
// rapid-reset guard counts the RST_STREAM frames the client sends, but a
// client can make the server reset each stream itself, here with a
// WINDOW_UPDATE of increment 0 on the stream (a stream error, RFC 9113
// 6.9). Every stream still starts a request (the engine routes, authorizes
// and forwards it into the mesh) that is cancelled at once: the same
// amplification as rapid reset, and the guard never fires. Want: count
// the streams the server resets because of the client's frames (stream
// errors) with the client's resets.
func TestAttackHTTP2ServerProvokedResets(t *testing.T) {
	started := &atomic.Int64{}
	addrs := startEdgeServer(t, waitEdge{started: started}, nil)
	a := dialH2(t, addrs["https"])
	a.fr.AllowIllegalWrites = true // the increment of 0
	const attempts = 5_000
	sent := 0
	for ; sent < attempts; sent++ {
		id := uint32(2*sent + 1)
		if err := a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.block, EndHeaders: true}); err != nil {
			break
		}
		if err := a.fr.WriteWindowUpdate(id, 0); err != nil {
			break
		}
	}
	select {
	case <-a.closed:
		t.Logf("closed after %d streams sent, %d requests started", sent, started.Load())
		return
	default:
	}
	// Still open? A PING proves it.
	if err := a.fr.WritePing(false, [8]byte{7}); err == nil {
		select {
		case <-a.pingAck:
			t.Errorf("the connection survived %d streams reset by the server on the client's cue (%d requests started), want it closed as for rapid reset",
				sent, started.Load())
		case <-a.closed:
			t.Logf("closed after %d streams sent, %d requests started", sent, started.Load())
		case <-time.After(hangGuard):
			t.Error("no answer to a PING")
		}
	}
}
