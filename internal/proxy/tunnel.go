package proxy

// Tunnels between sidecars. Everything between sidecars travels on pooled
// HTTP/2 connections over mTLS, and HTTP/2 has neither Upgrade nor 101:
// WebSocket (and any HTTP Upgrade) and raw TCP are carried as HTTP/2
// streams whose request body is the client-to-server byte stream and whose
// response body the server-to-client one.
//
// Upgrade (WebSocket, any "Connection: Upgrade" request):
//
//   - The caller sends an HTTP/2 request with the original method, path,
//     query and end-to-end headers (hop-by-hop ones removed, Connection
//     and Upgrade among them) plus "X-Bulwark-Upgrade: <the Upgrade
//     value>"; its body is the client's bytes.
//   - The callee checks and authorizes it as any request, with the
//     Connection and Upgrade fields the client sent put back (a policy on
//     the Upgrade header holds), and refuses an upgrade to h2c (400: the
//     tunnel would carry HTTP/2 requests no sidecar checks); right before it
//     would go to the app, it dials the app and writes the HTTP/1.1
//     upgrade request (Connection: Upgrade, Upgrade: <value>, XFCC, the
//     normalized path and query, Host as for any request). On 101 it
//     answers 200 with the 101's end-to-end headers plus
//     "X-Bulwark-Upgrade: <the 101's Upgrade value>", and copies both ways
//     (request body to the app; the app's bytes to the response, flushed
//     after each write). On any other status it relays that answer as
//     usual and no tunnel exists.
//   - The caller turns a 200 carrying X-Bulwark-Upgrade into a 101 for the
//     app (httputil.ReverseProxy then hijacks the app's connection); any
//     other answer is relayed as is.
//
// TCP (services whose apps speak "tcp"):
//
//   - The caller authorizes on identity only (policy.Request with Source,
//     Host and Port, no method, path or headers: a rule with an HTTP-only
//     field such as methods or paths never allows a TCP connection, and a
//     DENY rule with notMethods or notPaths always matches one, as in
//     Istio), picks an endpoint and sends an HTTP/2 CONNECT request whose
//     :authority is the service's host (with the port the app named, if
//     any); its body is the client's bytes.
//   - The callee, whose app protocol is "tcp", checks the peer's identity
//     and revocation, authorizes on identity only, takes a token of the
//     service's rate limit (429 when none is left), dials its app, answers
//     200 and copies both ways. A callee whose app speaks HTTP answers
//     CONNECT with 405; one whose app speaks TCP answers anything but
//     CONNECT with 405.
//
// Closing: the end of the client's bytes (a TCP half-close, or the end of
// the HTTP/2 request body) is passed on as a half-close (CloseWrite); the
// tunnel lasts until the server side ends (its app closes, or the HTTP/2
// response ends), which closes it in both directions. A reset stream or a
// cancelled request closes both connections.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"

	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// App protocols (Config.AppProtocol, Node.protocol, Destination.protocol).
const (
	// ProtocolHTTP is HTTP/1.1 (the default).
	ProtocolHTTP = "http"
	// ProtocolHTTP2 is HTTP/2 without TLS, with prior knowledge.
	ProtocolHTTP2 = "http2"
	// ProtocolGRPC is gRPC: HTTP/2 as ProtocolHTTP2.
	ProtocolGRPC = "grpc"
	// ProtocolTCP is raw TCP, carried in CONNECT tunnels.
	ProtocolTCP = "tcp"
)

// upgradeHeader carries the Upgrade value of a tunnelled upgrade between
// sidecars (see the protocol above). It starts with X-Bulwark-, so
// stripIdentityHeaders removes it from whatever an app sends.
const upgradeHeader = "X-Bulwark-Upgrade"

// isUpgrade reports whether a request asks for a protocol upgrade
// ("Connection: upgrade" and an Upgrade value).
func isUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// errUpgradeH2C refuses an upgrade to h2c: the tunnel would become an
// HTTP/2 connection to the app whose requests no sidecar checks (h2c
// smuggling). The framing guard refuses it on the app listeners already.
var errUpgradeH2C = errors.New("upgrade: h2c is refused")

// inboundUpgrade returns the protocol a tunnelled upgrade names in h
// (upgradeHeader; "" for any other request) and puts back into h the
// Connection and Upgrade fields the caller removed, so that the callee's
// policies decide the request the client sent. An upgrade to h2c (an
// element "h2c" or "h2c/<version>", in any case) is refused.
func inboundUpgrade(h http.Header) (string, error) {
	up := h.Get(upgradeHeader)
	if up == "" {
		return "", nil
	}
	for p := range strings.SplitSeq(up, ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(p), "/")
		if strings.EqualFold(name, "h2c") {
			return "", errUpgradeH2C
		}
	}
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", up)
	return up, nil
}

// hopHeaders are the hop-by-hop header fields (RFC 9110 §7.6.1), which
// never cross a proxy.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders removes the hop-by-hop fields of h and those its
// Connection field names.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// upgradeToPeer sends an upgrade request (isUpgrade) to the peer key as a
// tunnel (see the protocol above) and, when the peer's app switched
// protocols, returns a 101 whose Body is the tunnel, an io.ReadWriteCloser,
// as httputil.ReverseProxy expects of a backend that switched. Any other
// answer is returned as is. Upgrades are never retried.
func (e *Engine) upgradeToPeer(req *http.Request, key poolKey) (*http.Response, error) {
	up := req.Header.Get("Upgrade")
	out := req.Clone(req.Context())
	removeHopHeaders(out.Header)
	out.Header.Set(upgradeHeader, up)
	pr, pw := io.Pipe()
	out.Body, out.ContentLength, out.GetBody = pr, -1, nil
	resp, err := e.pool.roundTrip(out, key, nil, 0)
	if err != nil {
		pw.CloseWithError(err)
		return nil, err
	}
	switched := resp.Header.Get(upgradeHeader)
	if resp.StatusCode != http.StatusOK || switched == "" {
		pw.Close() // no tunnel: the request ends here
		resp.Header.Del(upgradeHeader)
		return resp, nil
	}
	h := resp.Header.Clone()
	h.Del(upgradeHeader)
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", switched)
	return &http.Response{
		Status:     "101 Switching Protocols",
		StatusCode: http.StatusSwitchingProtocols,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h,
		Body:   &tunnelStream{r: resp.Body, pr: pr, pw: pw},
		// A 101 has no body as HTTP sees it (-1 would make ReverseProxy
		// add "Connection: close", and clients drop the Connection field).
		ContentLength: 0,
		Request:       req,
	}, nil
}

// tunnelStream is the caller's end of a tunnel: it reads the peer's
// response body and writes the request body.
type tunnelStream struct {
	r  io.ReadCloser
	pr *io.PipeReader
	pw *io.PipeWriter
}

func (s *tunnelStream) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil {
		// The server side ended: nothing the client still sends can
		// reach it.
		s.pr.CloseWithError(io.ErrClosedPipe)
	}
	return n, err
}

func (s *tunnelStream) Write(b []byte) (int, error) { return s.pw.Write(b) }

// CloseWrite ends the request body: the client half-closed.
func (s *tunnelStream) CloseWrite() error { return s.pw.Close() }

func (s *tunnelStream) Close() error {
	s.pw.Close()
	s.pr.CloseWithError(io.ErrClosedPipe)
	return s.r.Close()
}

// Hijack lets httputil.ReverseProxy take the app's connection over for a
// 101 it relays (a tunnelled upgrade); the recorder then records the 101.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.code == 0 {
		r.code = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// byteCounter counts the bytes of a tunnel: in from the client (the app
// on the caller's side, the peer on the callee's), out to it.
type byteCounter struct {
	in, out atomic.Int64
}

// detail is what the access log line of a tunnel says of it.
func (n *byteCounter) detail() string {
	return fmt.Sprintf("tunnel: %d bytes from the client, %d bytes to it", n.in.Load(), n.out.Load())
}

// upgradeToApp is the callee's end of a tunnelled upgrade: r, authorized
// and pointed at the app (setTarget), asks for the protocol up.
func (e *Engine) upgradeToApp(rw *recorder, r *http.Request, info *logInfo, up string) {
	conn, closeConn, ok := e.dialApp(rw, r)
	if !ok {
		return
	}
	defer closeConn()

	h := r.Header.Clone()
	removeHopHeaders(h)
	h.Del("Host")
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", up)
	bw := bufio.NewWriter(conn)
	fmt.Fprintf(bw, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.Method, r.URL.RequestURI(), r.Host)
	_ = h.Write(bw)
	_, _ = bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		e.upstreamError(rw, r, fmt.Errorf("write upgrade request: %w", err))
		return
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, r)
	if err != nil {
		e.upstreamError(rw, r, fmt.Errorf("read upgrade response: %w", err))
		return
	}
	switched := resp.Header.Get("Upgrade")
	respHeader := resp.Header.Clone()
	removeHopHeaders(respHeader)
	// Only this sidecar says that the app switched: an app's own
	// X-Bulwark-Upgrade would make the caller answer 101 to a refusal.
	respHeader.Del(upgradeHeader)
	for k, v := range respHeader {
		rw.Header()[k] = v
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || switched == "" {
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusSwitchingProtocols {
			e.upstreamError(rw, r, errors.New("app switched protocols without naming one"))
			return
		}
		rw.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(rw, resp.Body)
		return
	}
	rw.Header().Set(upgradeHeader, switched)
	rw.WriteHeader(http.StatusOK)
	var n byteCounter
	e.pipe(rw, r.Body, conn, br, &n)
	info.detail = n.detail()
}

// pipe copies a tunnel's two directions on the callee: body (the caller's
// bytes) to conn, then a half-close; src (conn's bytes, possibly
// buffered) to rw, flushed after each write. It returns when src ends,
// once the body copy has stopped too.
func (e *Engine) pipe(rw *recorder, body io.ReadCloser, conn net.Conn, src io.Reader, n *byteCounter) {
	rc := http.NewResponseController(rw)
	_ = rc.Flush()
	var wg sync.WaitGroup
	wg.Go(func() {
		k, err := io.Copy(conn, body)
		n.in.Add(k)
		if err == nil {
			closeWrite(conn)
		}
	})
	k, _ := io.Copy(&flushWriter{w: rw, rc: rc}, src)
	n.out.Add(k)
	// The server side ended: end the caller's side too. Closing the
	// request body interrupts a read the copy above is blocked in.
	conn.Close()
	body.Close()
	wg.Wait()
}

// flushWriter flushes after every write, so that a tunnel's bytes go out
// as they come.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f *flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if err != nil {
		return n, err
	}
	return n, f.rc.Flush()
}

// serveInboundTunnel is the callee's end of a TCP tunnel: a CONNECT, or
// any request to a proxy whose app speaks TCP. The peer's identity has been
// checked; it answers everything else itself.
func (e *Engine) serveInboundTunnel(rw *recorder, r *http.Request, info *logInfo, peer string) {
	t, ok := e.inboundTable(rw, r, info)
	if !ok {
		return
	}
	switch {
	case r.Method != http.MethodConnect:
		e.reject(rw, info, http.StatusMethodNotAllowed, "this service takes TCP tunnels (CONNECT) only", "not a tcp tunnel")
		return
	case e.cfg.AppProtocol != ProtocolTCP:
		e.reject(rw, info, http.StatusMethodNotAllowed, "CONNECT is not supported", "connect: the app speaks "+e.appProtocol())
		return
	case e.cfg.App == "":
		e.reject(rw, info, http.StatusServiceUnavailable, "no such service", "client-only proxy has no app")
		return
	}
	if err := checkAuthority(r); err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	host, port, err := hostPort(r.Host, 0)
	if err != nil || host == "" {
		e.reject(rw, info, http.StatusBadRequest, "bad request", "connect: the authority must be host[:port]")
		return
	}
	req := policy.Request{
		Source: policy.Source{ID: peer, Services: t.peers[peer], IP: remoteIP(r.RemoteAddr)},
		Host:   host,
		Port:   port,
		SNI:    r.TLS.ServerName,
		Time:   info.start,
	}
	if !e.decide(rw, info, t.inbound, &req) {
		return
	}
	// A tunnel takes a token of the service's rate limit as a request
	// does (route rules match HTTP requests only).
	if t.rate != nil {
		if ok, after := t.rate.allow(peer); !ok {
			e.tooMany(rw, info, after, "rate limit of the service")
			return
		}
	}
	conn, closeConn, ok := e.dialApp(rw, r)
	if !ok {
		return
	}
	defer closeConn()
	rw.WriteHeader(http.StatusOK)
	var n byteCounter
	e.pipe(rw, r.Body, conn, conn, &n)
	info.detail = n.detail()
}

// appProtocol is the app protocol, "http" when not set.
func (e *Engine) appProtocol() string {
	if e.cfg.AppProtocol == "" {
		return ProtocolHTTP
	}
	return e.cfg.AppProtocol
}

// tcpTunnel is an open tunnel to a peer: its response body carries the
// server's bytes, pw takes the client's.
type tcpTunnel struct {
	resp *http.Response
	pr   *io.PipeReader
	pw   *io.PipeWriter
	// release gives back the tunnel's place in the circuit breaker.
	release func()
}

// abort ends a tunnel that will not run.
func (tt *tcpTunnel) abort() {
	tt.pw.Close()
	tt.resp.Body.Close()
	tt.release()
}

// openTCP authorizes a TCP connection of this proxy's app to svc (on port,
// 0 when the app named none) and opens a tunnel to an endpoint. It returns
// the status to answer with, 200 with a tunnel, and sets info as reject
// does.
func (e *Engine) openTCP(ctx context.Context, info *logInfo, svc string, port int) (status int, tt *tcpTunnel) {
	fail := func(status int, detail string) (int, *tcpTunnel) {
		if status == http.StatusForbidden {
			info.decision, info.denied = telemetry.DecisionDeny, status
			if info.reason == "" {
				info.reason = detail
			}
		} else {
			info.detail = detail
		}
		return status, nil
	}
	t := e.table.Load()
	if t == nil {
		return fail(http.StatusServiceUnavailable, "no snapshot yet")
	}
	dest := t.dests[svc]
	if dest == nil {
		if _, exists := t.services[svc]; exists {
			info.decision, info.reason, info.label = telemetry.DecisionDeny, policy.ReasonNoAllowMatch.String(), labelNoAllowMatch
			return fail(http.StatusForbidden, "")
		}
		return fail(http.StatusServiceUnavailable, "unknown service")
	}
	req := policy.Request{
		Source: policy.Source{ID: info.source, Services: e.selfServices},
		Host:   dest.host,
		Port:   port,
		Time:   info.start,
	}
	dec := dest.index.Decide(&req)
	info.setDecision(&dec)
	if !dec.Allow {
		return fail(http.StatusForbidden, "")
	}
	// A tunnel holds a place in the circuit breaker (maxRequests) for as
	// long as it is open.
	if !dest.state.limiter.TryAcquire() {
		dest.state.counters.breakerOpen.Inc()
		return fail(http.StatusServiceUnavailable, "circuit breaker open: maxRequests")
	}
	release := sync.OnceFunc(dest.state.limiter.Release)
	defer func() {
		if tt == nil {
			release()
		}
	}()
	ep, ok := dest.pick()
	if !ok {
		return fail(http.StatusServiceUnavailable, "no endpoints")
	}
	info.upstream = ep.addr
	authority := dest.host
	if port != 0 {
		authority = net.JoinHostPort(dest.host, strconv.Itoa(port))
	}
	pr, pw := io.Pipe()
	out, err := http.NewRequestWithContext(ctx, http.MethodConnect, "https://"+ep.addr, pr)
	if err != nil {
		pw.Close()
		return fail(http.StatusBadGateway, err.Error())
	}
	out.Host, out.URL.Host, out.ContentLength = authority, authority, -1
	e.injectTrace(info, out.Header)
	resp, err := e.pool.roundTrip(out, poolKey{addr: ep.addr, id: ep.id}, nil, 0)
	if err != nil {
		pw.CloseWithError(err)
		var ce *connectError
		if errors.As(err, &ce) {
			return fail(http.StatusServiceUnavailable, err.Error())
		}
		return fail(http.StatusBadGateway, err.Error())
	}
	if resp.StatusCode != http.StatusOK {
		pw.Close()
		resp.Body.Close()
		detail := "peer answered " + resp.Status
		if resp.StatusCode == http.StatusForbidden {
			// The callee denied it: a denial of the callee, not ours.
			info.detail = detail
			return resp.StatusCode, nil
		}
		return fail(resp.StatusCode, detail)
	}
	return http.StatusOK, &tcpTunnel{resp: resp, pr: pr, pw: pw, release: release}
}

// run copies both ways between the app's connection c and the tunnel
// until the server side ends (then c is half-closed, then closed), and
// closes c and the tunnel.
func (tt *tcpTunnel) run(c net.Conn, n *byteCounter) {
	defer tt.release()
	var wg sync.WaitGroup
	wg.Go(func() {
		k, err := io.Copy(tt.pw, c)
		n.out.Add(k)
		if err != nil {
			tt.pw.CloseWithError(err)
			return
		}
		tt.pw.Close() // the client half-closed: end the request body
	})
	k, _ := io.Copy(c, tt.resp.Body)
	n.in.Add(k)
	closeWrite(c)
	tt.resp.Body.Close()
	tt.pr.CloseWithError(io.ErrClosedPipe)
	c.Close()
	wg.Wait()
}

// dialApp connects to the app for a tunnel, closed when the request's
// context ends or by the returned func. A failure is answered.
func (e *Engine) dialApp(rw *recorder, r *http.Request) (conn net.Conn, closeConn func(), ok bool) {
	ctx := r.Context()
	conn, err := e.appDialer.DialContext(ctx, "tcp", e.cfg.App)
	if err != nil {
		e.upstreamError(rw, r, err)
		return nil, nil, false
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return conn, func() { stop(); conn.Close() }, true
}
