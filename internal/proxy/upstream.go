package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/framing"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// ServeUpstream accepts the app's connections on ln, the per-upstream
// listener of svc, until ctx is done or ln fails. It decides per
// connection, from the current snapshot: a connection to a destination
// whose apps speak HTTP (http, http2, grpc) is handed to serveHTTP, which
// serves it as HTTP (the sidecar pushes it to a ConnListener its server
// for Upstream(svc) serves); any other is a TCP tunnel (authorized on
// identity only, see tunnel.go). A service that is not a destination of
// this proxy (it may not call it, or there is no snapshot yet) is thus
// refused by closing the connection, whatever its protocol, after logging
// the denial: the proxy cannot know whether its client speaks HTTP, and
// sends no HTTP answer to a client that may not. Tunnels still open when
// ctx is done are closed; ServeUpstream returns once they are.
func (e *Engine) ServeUpstream(ctx context.Context, ln net.Listener, svc identity.ServiceRef, serveHTTP func(net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	name := svc.String()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				// A graceful shutdown closed the listener: no new
				// connections; tunnels end with ctx.
				<-ctx.Done()
				return nil
			}
			return fmt.Errorf("upstream %s: %w", svc, err)
		}
		if p := e.destProtocol(name); p != "" && p != ProtocolTCP {
			serveHTTP(c)
			continue
		}
		wg.Go(func() { e.serveTCP(ctx, c, name, 0) })
	}
}

// destProtocol is the protocol of the apps of the destination svc
// (ProtocolHTTP when the snapshot names none), "" when it is not one.
func (e *Engine) destProtocol(svc string) string {
	t := e.table.Load()
	if t == nil {
		return ""
	}
	d := t.dests[svc]
	switch {
	case d == nil:
		return ""
	case d.protocol == "":
		return ProtocolHTTP
	}
	return d.protocol
}

// serveTCP tunnels the app's connection c to svc and writes its access log
// line. An unauthorized or unreachable service closes c at once.
func (e *Engine) serveTCP(ctx context.Context, c net.Conn, svc string, port int) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	info := &logInfo{direction: telemetry.DirectionOutbound, source: e.selfID(), destination: svc, start: time.Now()}
	r := (&http.Request{Method: http.MethodConnect, Host: svc, Header: http.Header{}, RemoteAddr: c.RemoteAddr().String()}).WithContext(ctx)
	rw := &recorder{}
	defer e.finish(r, rw, info)
	status, tt := e.openTCP(ctx, info, svc, port)
	rw.code = status
	if tt == nil {
		return
	}
	var n byteCounter
	tt.run(c, &n)
	info.detail = n.detail()
}

// serveOutboundConnect answers a CONNECT of the app on the outbound
// listener. To a mesh service whose apps speak TCP it opens a TCP tunnel;
// to one that speaks HTTP it answers 200 and serves HTTP on the tunnelled
// connection as a per-upstream listener of that service would (HTTP/1.1
// through the framing guard, or HTTP/2 with prior knowledge), each request
// checked and authorized as any; a host that is not a mesh service is
// egress (serveEgressConnect).
func (e *Engine) serveOutboundConnect(rw *recorder, r *http.Request, info *logInfo) {
	// HTTP/1.1 puts the authority in the request-target, HTTP/2 in
	// :authority; net/http sets r.Host from either.
	if r.ProtoMajor == 1 && r.RequestURI != r.Host {
		e.reject(rw, info, http.StatusBadRequest, "bad request", "connect: the request-target must be host:port")
		return
	}
	host, port, err := hostPort(r.Host, 0)
	if err != nil || host == "" || port == 0 {
		e.reject(rw, info, http.StatusBadRequest, "bad request: CONNECT needs host:port", "connect: the authority must be host:port")
		return
	}
	info.destination = host
	t := e.table.Load()
	if t == nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "proxy not ready", "no snapshot yet")
		return
	}
	svc, err := identity.ServiceFromHost(host, e.cfg.Service.Namespace)
	if err != nil {
		e.serveEgressConnect(rw, r, info, host, port)
		return
	}
	name := svc.String()
	if !t.isMesh(name) {
		e.serveEgressConnect(rw, r, info, host, port)
		return
	}
	info.destination = name
	dest := t.dests[name]
	if dest == nil {
		info.decision, info.reason, info.label = telemetry.DecisionDeny, "no allow match", labelNoAllowMatch
		e.reject(rw, info, http.StatusForbidden, "forbidden", "")
		return
	}
	if dest.protocol == ProtocolTCP {
		status, tt := e.openTCP(r.Context(), info, name, port)
		if tt == nil {
			rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
			rw.WriteHeader(status)
			_, _ = io.WriteString(rw, http.StatusText(status)+"\n")
			return
		}
		conn, done, err := e.acceptConnect(rw, r)
		if err != nil {
			tt.abort()
			return
		}
		var n byteCounter
		tt.run(conn, &n)
		<-done
		info.detail = n.detail()
		return
	}
	conn, done, err := e.acceptConnect(rw, r)
	if err != nil {
		return
	}
	info.detail = "tunnel: http"
	e.serveHTTPConn(conn, svc)
	<-done
}

// acceptConnect answers a CONNECT with 200 and returns the tunnelled
// connection: the hijacked connection for HTTP/1.1, the stream for HTTP/2.
// done is closed once the connection is closed; the handler must not
// return before, for HTTP/2.
func (e *Engine) acceptConnect(rw *recorder, r *http.Request) (net.Conn, <-chan struct{}, error) {
	rw.code = http.StatusOK
	if r.ProtoMajor >= 2 {
		rw.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(rw)
		if err := rc.Flush(); err != nil {
			return nil, nil, err
		}
		c := &streamConn{body: r.Body, w: &flushWriter{w: rw, rc: rc}, done: make(chan struct{}), local: localAddr(r), remote: remoteAddr(r.RemoteAddr)}
		return c, c.done, nil
	}
	c, brw, err := http.NewResponseController(rw).Hijack()
	if err != nil {
		rw.detail = "hijack: " + err.Error()
		return nil, nil, err
	}
	// The server's deadlines are for requests, not for a tunnel.
	_ = c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		c.Close()
		return nil, nil, err
	}
	done := make(chan struct{})
	hc := &hijackedConn{Conn: c, done: done}
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right after the CONNECT head.
		b, _ := brw.Reader.Peek(n)
		hc.early = append([]byte(nil), b...)
	}
	return hc, done, nil
}

// serveHTTPConn serves HTTP on conn, a tunnel of the app to svc, as a
// per-upstream listener of svc does: HTTP/1.1 through the framing guard,
// or HTTP/2 with prior knowledge. It returns at once; the connection is
// served until either end closes it.
func (e *Engine) serveHTTPConn(conn net.Conn, svc identity.ServiceRef) {
	srv := AppServer(e.Upstream(svc), e.logger)
	ln := &oneConnListener{conn: conn}
	go func() {
		_ = srv.Serve(framing.NewListener(ln, framing.Config{
			MaxHeaderBytes: srv.MaxHeaderBytes, Logger: e.logger, AllowH2Preface: true,
		}))
	}()
}

// AppServer returns the server of the listeners the app reaches the proxy
// on (outbound, per-upstream): HTTP/1.1 and HTTP/2 with prior knowledge
// (h2c, as gRPC clients speak it), for connections from a framing listener
// with AllowH2Preface.
func AppServer(h http.Handler, logger *slog.Logger) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:   h,
		Protocols: &protos,
		ConnState: framing.ConnState,
		// The engine answers "OPTIONS *" (400: not origin form), not net/http.
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            10 * time.Second,
		IdleTimeout:                  120 * time.Second,
		MaxHeaderBytes:               64 << 10,
		HTTP2:                        &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ErrorLog:                     slog.NewLogLogger(telemetry.OrDiscard(logger).Handler(), slog.LevelDebug),
	}
}

// ConnListener is a net.Listener whose connections are pushed to it: the
// sidecar serves the HTTP connections ServeUpstream hands over with it.
type ConnListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewConnListener returns a ConnListener reporting addr as its address.
func NewConnListener(addr net.Addr) *ConnListener {
	return &ConnListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Push hands c to the next Accept; once the listener is closed, it closes
// c instead.
func (l *ConnListener) Push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

// Accept returns the next pushed connection.
func (l *ConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close closes the listener; it is idempotent.
func (l *ConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr returns the address given to NewConnListener.
func (l *ConnListener) Addr() net.Addr { return l.addr }

// oneConnListener accepts one connection, then waits until it is closed
// and reports itself closed, so that its server lives as long as the
// connection.
type oneConnListener struct {
	conn net.Conn
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	if d, ok := l.conn.(interface{ closedCh() <-chan struct{} }); ok {
		<-d.closedCh()
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// hijackedConn is an HTTP/1.1 connection taken over after a CONNECT: early
// holds the bytes already read past the CONNECT head; done is closed on
// Close.
type hijackedConn struct {
	net.Conn
	early []byte
	done  chan struct{}
	once  sync.Once
}

func (c *hijackedConn) Read(b []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(b, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// CloseWrite half-closes the connection.
func (c *hijackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *hijackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

func (c *hijackedConn) closedCh() <-chan struct{} { return c.done }

// streamConn is an HTTP/2 CONNECT stream as a net.Conn: reads from the
// request body, writes to the response (flushed).
type streamConn struct {
	body          io.ReadCloser
	w             io.Writer
	local, remote net.Addr

	mu     sync.Mutex // serializes writes and close
	closed bool
	done   chan struct{}
}

func (c *streamConn) Read(b []byte) (int, error) { return c.body.Read(b) }

func (c *streamConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.w.Write(b)
}

// CloseWrite cannot end an HTTP/2 response early without ending the
// handler: the stream ends when the connection closes.
func (c *streamConn) CloseWrite() error { return nil }

func (c *streamConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.body.Close()
		close(c.done)
	}
	return nil
}

func (c *streamConn) closedCh() <-chan struct{} { return c.done }
func (c *streamConn) LocalAddr() net.Addr       { return c.local }
func (c *streamConn) RemoteAddr() net.Addr      { return c.remote }

// Deadlines are not supported on a stream (they are ignored): the
// server's timeouts do not apply to tunnelled connections of HTTP/2
// clients, whose outer connection has its own.
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

// localAddr is the address the request arrived on.
func localAddr(r *http.Request) net.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a
	}
	return &net.TCPAddr{}
}

// remoteAddr parses a request's RemoteAddr.
func remoteAddr(s string) net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", s); err == nil {
		return a
	}
	return &net.TCPAddr{}
}
