package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/websocket"

	"github.com/bulwarkmesh/bulwark/internal/framing"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// newProtoNode is newNode for an app speaking proto, with its metrics on
// reg.
func newProtoNode(t testing.TB, a *authority, svc identity.ServiceRef, appAddr, proto string, reg *prometheus.Registry) *node {
	t.Helper()
	n := &node{svc: svc, src: a.svid(t, workloadID(t, svc.Namespace, svc.Name)), log: newLogBuffer(), plog: newLogBuffer()}
	cfg := proxy.Config{
		Service: svc, App: appAddr, SVID: n.src, Bundle: n.src, AppProtocol: proto,
		Logger:    slog.New(slog.NewJSONHandler(n.plog, &slog.HandlerOptions{Level: slog.LevelInfo})),
		AccessLog: slog.New(slog.NewJSONHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if reg != nil {
		cfg.Metrics = reg
	}
	e, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(e.Close)
	n.engine = e
	return n
}

// Policies of the TCP and gRPC fixtures: default/api lets shop/web in
// whatever it asks (no to: the rule also matches a TCP connection), and
// shop/web's view of it allows everything.
const (
	tunAllowWeb = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow-web, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
`
	tunAllowOther = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow-other, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/other]}
`
	tunOpenView = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow-web, namespace: default}
spec:
  selector: {service: api}
  rules:
  - {}
`
	tunHTTPOnlyView = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-get, namespace: default}
spec:
  selector: {service: api}
  rules:
  - to: {methods: ["*"]}
`
)

// protoMesh is a caller (shop/web) and a callee (default/api) whose app
// speaks proto, both on the newest snapshot, the callee admitting shop/web
// with inboundPolicy and the caller seeing it with callerView.
type protoMesh struct {
	auth     *authority
	api, web *node
	apiAddr  string
	webReg   *prometheus.Registry
}

func newProtoMesh(t testing.TB, appAddr, proto, inboundPolicy, callerView string) *protoMesh {
	t.Helper()
	m := &protoMesh{auth: newAuthority(t), webReg: prometheus.NewRegistry()}
	m.api = newProtoNode(t, m.auth, apiSvc, appAddr, proto, nil)
	m.apiAddr = m.api.serveInbound(t)
	snap := apiSnapshot(t, m.auth, 1)
	snap.Inbound.Policies = [][]byte{policyDoc(t, inboundPolicy)}
	m.api.apply(t, snap)
	m.web = newProtoNode(t, m.auth, webSvc, "", "", m.webReg)
	ws := webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id())
	ws.Destinations[0].Policies = [][]byte{policyDoc(t, callerView)}
	ws.Destinations[0].Protocol = proto
	m.web.apply(t, ws)
	return m
}

// serveApp serves the caller's app-facing handler h as the sidecar does:
// HTTP/1.1 through the framing guard, or HTTP/2 with prior knowledge.
func serveApp(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.AppServer(h, nil)
	go func() {
		_ = srv.Serve(framing.NewListener(ln, framing.Config{MaxHeaderBytes: srv.MaxHeaderBytes, AllowH2Preface: true}))
	}()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// serveUpstream runs ServeUpstream for svc on a new loopback listener, its
// HTTP connections served as the sidecar serves them, and returns its
// address.
func serveUpstream(t testing.TB, e *proxy.Engine, svc identity.ServiceRef) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := proxy.NewConnListener(ln.Addr())
	srv := proxy.AppServer(e.Upstream(svc), nil)
	go func() {
		_ = srv.Serve(framing.NewListener(cl, framing.Config{MaxHeaderBytes: srv.MaxHeaderBytes, AllowH2Preface: true}))
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ServeUpstream(ctx, ln, svc, cl.Push) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUpstream: %v", err)
		}
		srv.Close()
	})
	return ln.Addr().String()
}

// echoServer is a TCP app that echoes what it reads until its client
// half-closes, then closes.
func echoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// settleGoroutines waits until no more goroutines run than before (the
// tunnels' goroutines have all ended).
func settleGoroutines(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want at most %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // polling, not an assertion on time
	}
}

// isLine matches an access log line of method with status.
func isLine(method string, status int) func(map[string]any) bool {
	return func(l map[string]any) bool {
		return l["method"] == method && l["status"] == float64(status)
	}
}

// wsApp is a WebSocket app: /public/echo echoes every message, ending the
// connection after "bye"; /public/bad answers 400 to the upgrade.
func wsApp(t testing.TB) (addr string, ended chan struct{}) {
	t.Helper()
	ended = make(chan struct{}, 16)
	mux := http.NewServeMux()
	mux.Handle("/public/echo", websocket.Handler(func(ws *websocket.Conn) {
		defer func() { ended <- struct{}{} }()
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			reply := "echo: " + msg + " (xfcc " + ws.Request().Header.Get("X-Forwarded-Client-Cert") + ")"
			if err := websocket.Message.Send(ws, reply); err != nil || msg == "bye" {
				return
			}
		}
	}))
	mux.HandleFunc("/public/bad", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no upgrade here", http.StatusBadRequest)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), ended
}

// wsDial opens a WebSocket to ws://api.default<path> through the outbound
// listener at outbound.
func wsDial(t testing.TB, outbound, path string) (*websocket.Conn, error) {
	t.Helper()
	cfg, err := websocket.NewConfig("ws://api.default"+path, "http://web.shop")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", outbound, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	ws, err := websocket.NewClient(cfg, c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return ws, nil
}

func TestWebSocketThroughTwoEngines(t *testing.T) {
	appAddr, ended := wsApp(t)
	m := newMesh(t)
	// The mesh's callee app is replaced with the WebSocket app.
	api := newNode(t, m.auth, apiSvc, appAddr)
	apiAddr := api.serveInbound(t)
	api.apply(t, apiSnapshot(t, m.auth, 1))
	m.web.apply(t, webSnapshot(t, m.auth, 2, apiAddr, api.id()))
	outbound := serveApp(t, m.web.engine.Outbound())

	session := func(t *testing.T, clientCloses bool) {
		ws, err := wsDial(t, outbound, "/public/echo")
		if err != nil {
			t.Fatalf("websocket through the mesh: %v", err)
		}
		defer ws.Close()
		for _, msg := range []string{"hello", strings.Repeat("x", 100_000), "again"} {
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil {
				t.Fatal(err)
			}
			want := "echo: " + msg + " (xfcc By=" + api.id().String() + ";URI=" + m.web.id().String() + ")"
			if got != want {
				t.Fatalf("echo: got %.80q, want %.80q", got, want)
			}
		}
		if clientCloses {
			ws.Close()
		} else {
			if err := websocket.Message.Send(ws, "bye"); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil {
				t.Fatal(err)
			}
			// The app ended the connection: the client sees its end.
			if err := websocket.Message.Receive(ws, &got); !errors.Is(err, io.EOF) {
				t.Errorf("after the app closed: got %v, want EOF", err)
			}
		}
		select {
		case <-ended:
		case <-time.After(hangGuard):
			t.Fatal("the app's handler did not end")
		}
	}
	t.Run("client closes", func(t *testing.T) { session(t, true) })
	// Both proxies log the tunnel once it is closed at both ends.
	m.web.log.waitFor(t, "caller's 101", isLine(http.MethodGet, http.StatusSwitchingProtocols))
	api.log.waitFor(t, "callee's tunnel", isLine(http.MethodGet, http.StatusOK))

	before := runtime.NumGoroutine()
	t.Run("app closes", func(t *testing.T) { session(t, false) })
	t.Run("client closes again", func(t *testing.T) { session(t, true) })
	settleGoroutines(t, before)
}

func TestWebSocketDeniedAndRefused(t *testing.T) {
	appAddr, _ := wsApp(t)
	m := newMesh(t)
	api := newNode(t, m.auth, apiSvc, appAddr)
	apiAddr := api.serveInbound(t)
	api.apply(t, apiSnapshot(t, m.auth, 1))
	m.web.apply(t, webSnapshot(t, m.auth, 2, apiAddr, api.id()))
	outbound := serveApp(t, m.web.engine.Outbound())
	upgrade := func(path string) response {
		return plainRaw(t, outbound, "GET "+path+" HTTP/1.1\r\nHost: api.default\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://web.shop\r\n\r\n")
	}

	// The caller's view allows /private; the callee denies it.
	got := upgrade("/private")
	if got.status != http.StatusForbidden || got.header.Get("Upgrade") != "" {
		t.Errorf("denied upgrade: got %d %q (Upgrade %q), want 403 without a tunnel", got.status, got.body, got.header.Get("Upgrade"))
	}
	api.log.waitFor(t, "the callee's denial", func(l map[string]any) bool {
		return l["path"] == "/private" && l["status"] == float64(403) && l["decision"] == "deny"
	})
	// Denied by the caller: never sent.
	if got := upgrade("/admin"); got.status != http.StatusForbidden {
		t.Errorf("upgrade the caller denies: got %d, want 403", got.status)
	}

	got = upgrade("/public/bad")
	if got.status != http.StatusBadRequest || got.body != "no upgrade here\n" {
		t.Errorf("app refusing the upgrade: got %d %q, want its 400 relayed", got.status, got.body)
	}
	if _, err := wsDial(t, outbound, "/public/bad"); err == nil {
		t.Error("websocket client: got a connection to an app that refused it")
	}
}

func TestTCPThroughTwoEngines(t *testing.T) {
	m := newProtoMesh(t, echoServer(t), proxy.ProtocolTCP, tunAllowWeb, tunOpenView)
	up := serveUpstream(t, m.web.engine, apiSvc)

	t.Run("echo", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", up, hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(hangGuard))
		br := bufio.NewReader(c)
		for i := range 3 {
			line := fmt.Sprintf("line %d\n", i)
			if _, err := io.WriteString(c, line); err != nil {
				t.Fatal(err)
			}
			got, err := br.ReadString('\n')
			if err != nil || got != line {
				t.Fatalf("echo: got %q, %v; want %q", got, err, line)
			}
		}
	})
	// Goroutines are counted once the pooled connection to the peer is up.
	m.web.log.waitFor(t, "the first tunnel", isLine(http.MethodConnect, http.StatusOK))
	before := runtime.NumGoroutine()
	t.Run("half-close", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", up, hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(hangGuard))
		payload := strings.Repeat("0123456789", 50_000)
		go func() {
			_, _ = io.WriteString(c, payload)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != payload {
			t.Errorf("after a half-close: read %d bytes, %v; want the %d sent", len(got), err, len(payload))
		}
	})
	line := m.api.log.waitFor(t, "the callee's tunnel", isLine(http.MethodConnect, http.StatusOK))
	if d, _ := line["detail"].(string); !strings.HasPrefix(d, "tunnel: ") {
		t.Errorf("callee's line: detail %q, want the bytes of the tunnel", d)
	}
	m.web.log.waitFor(t, "the caller's tunnel", func(l map[string]any) bool {
		return isLine(http.MethodConnect, http.StatusOK)(l) && l["detail"] == "tunnel: 500000 bytes from the client, 500000 bytes to it"
	})
	settleGoroutines(t, before)
	if got := counter(t, m.webReg, "bulwark_requests_total", map[string]string{"direction": "outbound", "code_class": "2xx"}); got != 2 {
		t.Errorf("outbound 2xx: got %v, want 2", got)
	}
}

func TestTCPDenied(t *testing.T) {
	t.Run("by the callee", func(t *testing.T) {
		app := echoServer(t)
		m := newProtoMesh(t, app, proxy.ProtocolTCP, tunAllowOther, tunOpenView)
		up := serveUpstream(t, m.web.engine, apiSvc)
		expectClosed(t, up)
		m.api.log.waitFor(t, "the callee's denial", func(l map[string]any) bool {
			return isLine(http.MethodConnect, http.StatusForbidden)(l) && l["decision"] == "deny"
		})
		m.web.log.waitFor(t, "the caller's line", isLine(http.MethodConnect, http.StatusForbidden))
	})
	t.Run("not a destination: closed, whatever the protocol", func(t *testing.T) {
		m := newProtoMesh(t, echoServer(t), proxy.ProtocolTCP, tunAllowWeb, tunOpenView)
		up := serveUpstream(t, m.web.engine, secretSvc)
		expectClosed(t, up)
		m.web.log.waitFor(t, "the caller's denial", func(l map[string]any) bool {
			return isLine(http.MethodConnect, http.StatusForbidden)(l) && l["destination"] == "default/secret"
		})
	})
	t.Run("by the caller: HTTP-only rules never match", func(t *testing.T) {
		m := newProtoMesh(t, echoServer(t), proxy.ProtocolTCP, tunAllowWeb, tunHTTPOnlyView)
		up := serveUpstream(t, m.web.engine, apiSvc)
		expectClosed(t, up)
		m.web.log.waitFor(t, "the caller's denial", func(l map[string]any) bool {
			return isLine(http.MethodConnect, http.StatusForbidden)(l) && l["decision"] == "deny"
		})
		if lines, _ := m.api.log.snapshot(); len(lines) != 0 {
			t.Errorf("the callee saw %v, want nothing", lines)
		}
	})
}

// expectClosed connects to addr, sends a line and expects the connection
// closed without a byte back.
func expectClosed(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	_, _ = io.WriteString(c, "hello\n")
	got, err := io.ReadAll(c)
	if len(got) != 0 {
		t.Errorf("denied tunnel: read %q (%v), want the connection closed", got, err)
	}
}

func TestInboundConnectByAppProtocol(t *testing.T) {
	a := newAuthority(t)
	web := a.svid(t, workloadID(t, "shop", "web"))
	connect := rawH2{fields: [][2]string{{":method", "CONNECT"}, {":authority", "api.default:5432"}}}
	get := rawH2{fields: apiFields("GET", "/public/x")}
	for _, tt := range []struct {
		proto     string
		req       rawH2
		want      int
		wantInLog string
	}{
		{proxy.ProtocolHTTP, connect, http.StatusMethodNotAllowed, "connect: the app speaks http"},
		{proxy.ProtocolGRPC, connect, http.StatusMethodNotAllowed, "connect: the app speaks grpc"},
		{proxy.ProtocolTCP, get, http.StatusMethodNotAllowed, "not a tcp tunnel"},
	} {
		t.Run(tt.proto, func(t *testing.T) {
			api := newProtoNode(t, a, apiSvc, echoServer(t), tt.proto, nil)
			addr := api.serveInbound(t)
			snap := apiSnapshot(t, a, 1)
			snap.Inbound.Policies = [][]byte{policyDoc(t, tunAllowWeb)}
			api.apply(t, snap)
			got := mtlsH2(t, addr, web, api.id(), tt.req)
			if got.status != tt.want {
				t.Errorf("got %d %q (%s), want %d", got.status, got.body, got.refused, tt.want)
			}
			api.log.waitFor(t, "the refusal", func(l map[string]any) bool { return l["detail"] == tt.wantInLog })
		})
	}
	if _, err := proxy.New(proxy.Config{Service: apiSvc, SVID: web, Bundle: web, AppProtocol: "udp"}); err == nil ||
		!strings.Contains(err.Error(), `app protocol "udp"`) {
		t.Errorf("New with app protocol udp: got %v, want an error naming it", err)
	}
}

func TestOutboundConnect(t *testing.T) {
	t.Run("tcp service", func(t *testing.T) {
		m := newProtoMesh(t, echoServer(t), proxy.ProtocolTCP, tunAllowWeb, tunOpenView)
		outbound := serveApp(t, m.web.engine.Outbound())
		c, err := net.DialTimeout("tcp", outbound, hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(hangGuard))
		if _, err := io.WriteString(c, "CONNECT api.default:5432 HTTP/1.1\r\nHost: api.default:5432\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT: got %v, %v; want 200", resp, err)
		}
		// As clients do, the tunnel starts after the 200 (the framing
		// guard reads what comes before as HTTP).
		_, _ = io.WriteString(c, "tunnel\n")
		_ = c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(br)
		if err != nil || string(got) != "tunnel\n" {
			t.Errorf("tunnel: got %q, %v; want the bytes echoed", got, err)
		}
		m.api.log.waitFor(t, "the callee's tunnel", func(l map[string]any) bool {
			return isLine(http.MethodConnect, http.StatusOK)(l) && l["detail"] == "tunnel: 7 bytes from the client, 7 bytes to it"
		})
	})
	t.Run("tcp service over http2", func(t *testing.T) {
		m := newProtoMesh(t, echoServer(t), proxy.ProtocolTCP, tunAllowWeb, tunOpenView)
		outbound := serveApp(t, m.web.engine.Outbound())
		tr := &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		pr, pw := io.Pipe()
		req, err := http.NewRequest(http.MethodConnect, "http://"+outbound, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "api.default:5432"
		resp, err := tr.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT over HTTP/2: got %v, %v; want 200", resp, err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for _, line := range []string{"one\n", "two\n"} {
			if _, err := io.WriteString(pw, line); err != nil {
				t.Fatal(err)
			}
			got, err := br.ReadString('\n')
			if err != nil || got != line {
				t.Fatalf("echo: got %q, %v; want %q", got, err, line)
			}
		}
		pw.Close() // the end of the stream is the client's half-close
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Errorf("after the half-close: got %q, %v; want the end", rest, err)
		}
		m.web.log.waitFor(t, "the caller's tunnel", func(l map[string]any) bool {
			return isLine(http.MethodConnect, http.StatusOK)(l) && l["detail"] == "tunnel: 8 bytes from the client, 8 bytes to it"
		})
	})
	t.Run("http service", func(t *testing.T) {
		m := newMesh(t)
		outbound := serveApp(t, m.web.engine.Outbound())
		c, err := net.DialTimeout("tcp", outbound, hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(hangGuard))
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, "CONNECT api.default:80 HTTP/1.1\r\nHost: api.default:80\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT: got %v, %v; want 200", resp, err)
		}
		// Requests in the tunnel are checked and authorized one by one,
		// whatever Host they name.
		for _, tt := range []struct {
			target string
			want   int
		}{{"/public/a", 200}, {"/private", 403}, {"/public/../admin", 403}, {"/public/b", 200}} {
			if _, err := io.WriteString(c, "GET "+tt.target+" HTTP/1.1\r\nHost: elsewhere\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("GET %s in the tunnel: %v", tt.target, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("GET %s in the tunnel: got %d %q, want %d", tt.target, resp.StatusCode, body, tt.want)
			}
		}
		// The framing guard applies in the tunnel.
		if _, err := io.WriteString(c, "GET /public/c HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"); err != nil {
			t.Fatal(err)
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("smuggling in the tunnel: got %v, %v; want 400", resp, err)
		}
		if got := len(m.apiApp.requests()); got != 2 {
			t.Errorf("the app saw %d requests, want 2", got)
		}
	})
	t.Run("bad authority", func(t *testing.T) {
		m := newMesh(t)
		outbound := serveApp(t, m.web.engine.Outbound())
		for _, authority := range []string{"api.default", "api.default:0", "[::1"} {
			got := plainRaw(t, outbound, "CONNECT "+authority+" HTTP/1.1\r\nHost: "+authority+"\r\n\r\n")
			if got.status != http.StatusBadRequest {
				t.Errorf("CONNECT %s: got %d %q, want 400", authority, got.status, got.body)
			}
		}
	})
}

// TestTCPCircuitBreaker: an open tunnel holds a place in the circuit
// breaker (connectionLimits.maxRequests) until it closes; past the limit a
// new tunnel is refused at once (the connection closed), and the place is
// free again after the first tunnel ends.
func TestTCPCircuitBreaker(t *testing.T) {
	m := newProtoMesh(t, echoServer(t), proxy.ProtocolTCP, tunAllowWeb, tunOpenView)
	ws := webSnapshot(t, m.auth, 2, m.apiAddr, m.api.id())
	ws.Destinations[0].Policies = [][]byte{policyDoc(t, tunOpenView)}
	ws.Destinations[0].Protocol = proxy.ProtocolTCP
	ws.Destinations[0].TrafficPolicy = trafficPolicyDoc(t, "connectionLimits: {maxRequests: 1}")
	m.web.apply(t, ws)
	up := serveUpstream(t, m.web.engine, apiSvc)

	first, err := net.DialTimeout("tcp", up, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	_ = first.SetDeadline(time.Now().Add(hangGuard))
	br := bufio.NewReader(first)
	if _, err := io.WriteString(first, "held\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := br.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("first tunnel: got %q, %v; want the echo", got, err)
	}
	expectClosed(t, up) // the first tunnel still holds the only place
	if got := counter(t, m.webReg, "bulwark_circuit_breaker_open_total", nil); got != 1 {
		t.Errorf("bulwark_circuit_breaker_open_total: got %v, want 1", got)
	}
	first.Close()
	m.web.log.waitFor(t, "the first tunnel closed", isLine(http.MethodConnect, http.StatusOK))

	second, err := net.DialTimeout("tcp", up, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetDeadline(time.Now().Add(hangGuard))
	if _, err := io.WriteString(second, "again\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := bufio.NewReader(second).ReadString('\n'); err != nil || got != "again\n" {
		t.Errorf("tunnel after the first closed: got %q, %v; want the echo", got, err)
	}
}
