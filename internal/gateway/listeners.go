package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/framing"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Edge is what the listeners hand their traffic to: the proxy engine
// (*proxy.Engine), which routes, authenticates, authorizes and forwards.
type Edge interface {
	// Edge returns the handler of the requests of an HTTPS (tls) or HTTP
	// listener.
	Edge(listener string, tls bool) http.Handler
	// ServePassthrough serves one connection of a TLS (passthrough)
	// listener until it ends or ctx is done, and closes it.
	ServePassthrough(ctx context.Context, c net.Conn, listener string)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Edge serves the requests and passthrough connections. Required.
	Edge Edge
	// Address is the host every listener binds. Default: "0.0.0.0".
	Address string
	// Listen overrides the bind address (host:port) of listeners by name;
	// a ":0" port binds a free one. Default: Address and the listener's
	// port.
	Listen map[string]string
	// Logger, default discard.
	Logger *slog.Logger
	// Clock drives the certificate file polls and the bind retries.
	// Default: the wall clock.
	Clock clock.Clock
	// Registry gets the gateway's metrics. Default: a registry of its own
	// (not served).
	Registry prometheus.Registerer
	// CertPollInterval is how often certificate files are checked for
	// changes, and unbound listeners retried when due. Default: 1s.
	CertPollInterval time.Duration
	// ShutdownTimeout bounds how long the in-flight requests of a
	// listener that is removed or re-opened may run once it stopped
	// accepting. Default: 15s.
	ShutdownTimeout time.Duration
	// AddServer, if set, is given every HTTP server the gateway starts, so
	// that the process's graceful shutdown stops them; when it reports
	// false (the shutdown began), the server is not started.
	AddServer func(*http.Server) bool
	// AddListener, if set, is given every socket the gateway binds, so
	// that the process's graceful shutdown closes them.
	AddListener func(net.Listener)
	// Ready, if set, is called once, when the listeners of the first
	// Gateway applied are all bound, with their addresses by name.
	Ready func(listeners map[string]string)
}

// Defaults of ServerConfig.
const (
	// DefaultAddress is ServerConfig.Address's default.
	DefaultAddress = "0.0.0.0"
	// DefaultCertPollInterval is ServerConfig.CertPollInterval's default.
	DefaultCertPollInterval = time.Second
	// DefaultShutdownTimeout is ServerConfig.ShutdownTimeout's default.
	DefaultShutdownTimeout = 15 * time.Second
)

// Bind retries of a listener whose port cannot be bound.
const (
	minBindBackoff = time.Second
	maxBindBackoff = 30 * time.Second
)

// errStopped is Apply's error once Run has returned.
var errStopped = errors.New("gateway stopped")

// Server serves the listeners of a Gateway and keeps them in step with the
// newest one applied: it opens new listeners, closes removed ones
// gracefully, re-opens one whose port or protocol changed and keeps the
// others (their connections stay up; a change of their TLS or limits
// settings applies to new connections). It holds the listeners'
// certificates, re-reads certificate files when they change, and protects
// itself from slow and greedy clients (GatewayLimits, and the HTTP/2
// guards of h2Guard).
//
// Apply may be called before Run and while it runs; Run must be called for
// the files to be polled and failed binds retried, and its return stops
// every listener.
type Server struct {
	cfg     ServerConfig
	edge    Edge
	logger  *slog.Logger
	clock   clock.Clock
	certs   *certStore
	limiter *ipLimiter
	closed  *prometheus.CounterVec

	// ctx is cancelled when Run returns: it ends passthrough connections
	// and accept loops.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	listeners map[string]*listener
	applied   bool // a Gateway was applied
	none      bool // the last Apply had no Gateway
	stopped   bool
	readyDone bool
	// warned are the --listen names logged as naming no listener.
	warned map[string]bool
}

// NewServer returns a Server with no listeners.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Edge == nil {
		return nil, errors.New("gateway: edge: required")
	}
	if cfg.Address == "" {
		cfg.Address = DefaultAddress
	}
	for name, addr := range cfg.Listen {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("gateway: listen %s: %w", name, err)
		}
	}
	if cfg.CertPollInterval <= 0 {
		cfg.CertPollInterval = DefaultCertPollInterval
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	logger := telemetry.OrDiscard(cfg.Logger)
	certs, err := newCertStore(logger, cfg.Registry)
	if err != nil {
		return nil, err
	}
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_gateway_connections_closed_total",
		Help: "Client connections the gateway closed to protect itself, by listener and reason: per_ip_limit (over maxConnectionsPerIP), rapid_reset and continuation_flood (HTTP/2 abuse), header_timeout (an HTTP/2 header block not finished in time), bad_framing (an HTTP/1.1 request whose boundaries are ambiguous).",
	}, []string{"listener", "reason"})
	if err := cfg.Registry.Register(closed); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, edge: cfg.Edge, logger: logger, clock: clock.OrReal(cfg.Clock), certs: certs,
		limiter: newIPLimiter(config.DefaultGatewayMaxConnectionsPerIP), closed: closed,
		ctx: ctx, cancel: cancel, listeners: map[string]*listener{}, warned: map[string]bool{},
	}, nil
}

// settings are what a listener's HTTP server is built from; a change
// replaces the server (not the socket).
type settings struct {
	protocol   string
	minVersion uint16
	hsts       string
	redirect   bool
	httpsPort  int
	limits     limits
}

// listener is one listener of the Gateway: its socket, while bound, and
// the server its connections are handed to.
type listener struct {
	name     string
	protocol string
	bind     string
	settings settings

	// sock is the bound socket, nil while not bound; addr its address.
	sock net.Listener
	addr string
	// err is the last bind error; next the time of the next attempt.
	err     error
	attempt int
	next    time.Time

	// gen serves the listener's HTTP connections (HTTP and HTTPS), nil
	// once stopped.
	gen *generation
	// conns are the passthrough connections in flight; cancel ends them.
	conns  connTracker
	cancel context.CancelFunc
}

// generation is the HTTP server of a listener's settings and the queues
// that feed it; a settings change starts a new one and lets the old one
// finish its connections.
type generation struct {
	srv *http.Server
	// h1 takes HTTP/1.1 connections: plain, or TLS once the handshake is
	// done (the server reads them through the framing guard).
	h1 *connQueue
	// h2 takes the HTTP/2 connections of an HTTPS listener (TLS done,
	// ALPN h2, watched by an h2Guard); nil for HTTP.
	h2 *connQueue
	// tls is the handshake's config (HTTPS), limits the listener's.
	tls    *tls.Config
	limits limits
}

// close stops the queues: connections still to hand over are closed.
func (g *generation) close() {
	g.h1.Close()
	if g.h2 != nil {
		g.h2.Close()
	}
}

// Status is the state of a Server's listeners.
type Status struct {
	// Listeners are the bound addresses by listener name.
	Listeners map[string]string
	// Problems say why the gateway does not serve its Gateway fully:
	// none applied, a listener not bound, an HTTPS listener without a
	// usable certificate. Empty when it does.
	Problems []string
}

// Status reports the listeners and what keeps the gateway from being
// ready.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Listeners: map[string]string{}}
	switch {
	case !s.applied:
		st.Problems = append(st.Problems, "no gateway configuration received yet")
	case s.none:
		st.Problems = append(st.Problems, "the control plane has no Gateway for this gateway's service")
	}
	for _, name := range slices.Sorted(maps.Keys(s.listeners)) {
		l := s.listeners[name]
		if l.sock == nil {
			st.Problems = append(st.Problems, fmt.Sprintf("listener %s: cannot bind %s (retrying): %v", name, l.bind, l.err))
			continue
		}
		st.Listeners[name] = l.addr
		if l.protocol == config.ListenerHTTPS && !s.certs.usable(name) {
			st.Problems = append(st.Problems, fmt.Sprintf("listener %s: no usable certificate", name))
		}
	}
	return st
}

// Apply makes the listeners those of gw (nil: none), with the certificates
// of its HTTPS listeners from secrets (by Secret name) and files. It binds
// new listeners before it returns; one whose port cannot be bound is
// logged and retried with backoff by Run (Status says so). It returns an
// error, changing nothing, for limits it cannot read.
func (s *Server) Apply(gw *config.Gateway, secrets map[string]*apiv1.TLSSecret) error {
	var spec config.GatewaySpec
	if gw != nil {
		spec = gw.Spec
	}
	lim, err := parseLimits(spec.Limits)
	if err != nil {
		return fmt.Errorf("apply gateway: %w", err)
	}
	s.mu.Lock()
	ready := s.apply(gw, spec, secrets, lim)
	s.mu.Unlock()
	if ready == nil {
		return errStopped
	}
	ready()
	return nil
}

// apply is Apply with s.mu held; it returns what to call once s.mu is
// released (nil once stopped).
func (s *Server) apply(gw *config.Gateway, spec config.GatewaySpec, secrets map[string]*apiv1.TLSSecret, lim limits) func() {
	if s.stopped {
		return nil
	}
	s.applied, s.none = true, gw == nil
	if gw != nil {
		s.certs.update(gw, secrets)
	} else {
		s.certs.update(&config.Gateway{}, nil)
	}
	s.limiter.setMax(lim.maxConnsPerIP)
	httpsPort := 443
	for _, l := range spec.Listeners {
		if l.Protocol == config.ListenerHTTPS {
			httpsPort = l.Port
			break
		}
	}
	want := map[string]config.GatewayListener{}
	for _, ls := range spec.Listeners {
		want[ls.Name] = ls
	}
	if gw != nil {
		for name := range s.cfg.Listen {
			if _, ok := want[name]; !ok && !s.warned[name] {
				s.warned[name] = true
				s.logger.Warn(msgUnknownListen, telemetry.KeyListener, name)
			}
		}
	}
	// Removed and re-opened listeners release their ports first: another
	// listener may take one over.
	for name, l := range s.listeners {
		ls, ok := want[name]
		switch {
		case !ok:
			s.logger.Info(msgRemoved, telemetry.KeyListener, name)
		case l.bind != s.bindAddr(ls) || l.protocol != ls.Protocol:
			s.logger.Info(msgReopening, telemetry.KeyListener, name, telemetry.KeyAddress, s.bindAddr(ls))
		default:
			continue
		}
		s.stopListener(l)
		delete(s.listeners, name)
	}
	for _, ls := range spec.Listeners {
		st := settingsOf(ls, lim, httpsPort)
		l := s.listeners[ls.Name]
		if l == nil {
			l = &listener{name: ls.Name, protocol: ls.Protocol, bind: s.bindAddr(ls), settings: st}
			s.listeners[ls.Name] = l
			s.bindListener(l)
			continue
		}
		if l.settings != st {
			l.settings = st
			if l.sock != nil && l.protocol != config.ListenerTLS {
				s.logger.Info(msgSettingsChanged, telemetry.KeyListener, l.name)
				s.startServer(l)
			}
		}
	}
	return s.checkReady()
}

// Log messages of the listeners.
const (
	msgListening       = "gateway listening"
	msgBindFailed      = "gateway listener cannot bind, retrying"
	msgReopening       = "gateway listener re-opened: its port or protocol changed"
	msgSettingsChanged = "gateway listener settings changed: new connections get them"
	msgRemoved         = "gateway listener removed"
	msgReady           = "gateway ready"
	msgGuardClosed     = "gateway closed a client connection"
	msgServeStopped    = "gateway listener stopped serving"
	msgAcceptFailed    = "gateway accept failed"
	msgHandshakeFailed = "gateway TLS handshake failed"
	msgUnknownListen   = "gateway --listen names no listener of the Gateway"
)

func (s *Server) bindAddr(spec config.GatewayListener) string {
	if a, ok := s.cfg.Listen[spec.Name]; ok {
		return a
	}
	return net.JoinHostPort(s.cfg.Address, strconv.Itoa(spec.Port))
}

func settingsOf(spec config.GatewayListener, lim limits, httpsPort int) settings {
	st := settings{protocol: spec.Protocol, limits: lim}
	switch spec.Protocol {
	case config.ListenerHTTPS:
		st.minVersion = tls.VersionTLS12
		if spec.TLS != nil {
			if spec.TLS.MinVersion == config.TLSVersion13 {
				st.minVersion = tls.VersionTLS13
			}
			st.hsts = hstsValue(spec.TLS.HSTS)
		}
	case config.ListenerHTTP:
		st.redirect = spec.RedirectToHTTPS == nil || *spec.RedirectToHTTPS
		st.httpsPort = httpsPort
		if spec.HTTPSPort != 0 {
			st.httpsPort = spec.HTTPSPort
		}
	}
	return st
}

// bindListener binds l's socket and serves it; on failure it schedules a
// retry. s.mu is held.
func (s *Server) bindListener(l *listener) {
	sock, err := net.Listen("tcp", l.bind)
	if err != nil {
		l.err = err
		backoff := min(minBindBackoff<<min(l.attempt, 5), maxBindBackoff)
		l.attempt++
		l.next = s.clock.Now().Add(backoff)
		s.logger.Warn(msgBindFailed, telemetry.KeyListener, l.name, telemetry.KeyAddress, l.bind,
			telemetry.KeyAttempt, l.attempt, telemetry.KeyBackoff, backoff.String(), telemetry.KeyErr, err)
		return
	}
	l.sock, l.addr, l.err, l.attempt = sock, sock.Addr().String(), nil, 0
	if s.cfg.AddListener != nil {
		s.cfg.AddListener(sock)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	l.cancel = cancel
	if l.protocol != config.ListenerTLS {
		s.startServer(l)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.accept(ctx, l, sock)
	}()
	s.logger.Info(msgListening, telemetry.KeyListener, l.name, telemetry.KeyAddress, l.addr, telemetry.KeyKind, l.protocol)
}

// retryBinds retries the listeners whose retry is due.
func (s *Server) retryBinds() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	now := s.clock.Now()
	for _, l := range s.listeners {
		if l.sock == nil && !now.Before(l.next) {
			s.bindListener(l)
		}
	}
	ready := s.checkReady()
	s.mu.Unlock()
	ready()
}

// checkReady returns the call of Ready, once every listener of the
// applied Gateway is bound (the first time), or a no-op. s.mu is held; the
// caller makes the call once it is released.
func (s *Server) checkReady() func() {
	nop := func() {}
	if s.readyDone || !s.applied || s.none {
		return nop
	}
	addrs := map[string]string{}
	for name, l := range s.listeners {
		if l.sock == nil {
			return nop
		}
		addrs[name] = l.addr
	}
	s.readyDone = true
	s.logger.Info(msgReady, telemetry.KeyCount, len(addrs))
	if s.cfg.Ready == nil {
		return nop
	}
	return func() { s.cfg.Ready(addrs) }
}

// startServer starts a new HTTP server for l, with its current settings,
// and hands it the connections accepted from now on; the previous one (if
// any) finishes its connections gracefully. s.mu is held.
func (s *Server) startServer(l *listener) {
	old := l.gen
	st := l.settings
	g := &generation{srv: s.newHTTPServer(l.name, st), h1: newConnQueue(l.sock.Addr()), limits: st.limits}
	if st.protocol == config.ListenerHTTPS {
		g.h2 = newConnQueue(l.sock.Addr())
		g.tls = edgeTLSConfig(st.minVersion, recordServed(s.certs.getCertificate(l.name)))
	}
	l.gen = g
	if s.cfg.AddServer != nil && !s.cfg.AddServer(g.srv) {
		// The process is shutting down: nothing more is served.
		g.close()
	} else {
		serve := func(ln net.Listener) {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				if err := g.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
					s.logger.Error(msgServeStopped, telemetry.KeyListener, l.name, telemetry.KeyErr, err)
				}
			}()
		}
		// HTTP/1.1 is framed strictly (request smuggling), an HTTP/2
		// preface included: HTTP/2 comes only by ALPN, through g.h2.
		// Its head limit is above net/http's, which answers 431 (framing
		// would answer 400) to a head over MaxHeaderBytes.
		serve(framing.NewListener(g.h1, framing.Config{
			MaxHeaderBytes: g.srv.MaxHeaderBytes + framingHeadSlack, Logger: s.logger,
			OnReject: func(framing.Reason) { s.closed.WithLabelValues(l.name, reasonBadFraming).Inc() },
		}))
		if g.h2 != nil {
			serve(g.h2)
		}
	}
	if old != nil {
		old.close()
		s.drain(old.srv)
	}
}

// drain shuts srv down in the background: in-flight requests get
// ShutdownTimeout, then their connections are closed.
func (s *Server) drain(srv *http.Server) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		t := s.clock.NewTimer(s.cfg.ShutdownTimeout)
		defer t.Stop()
		go func() {
			select {
			case <-t.C():
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}()
}

// stopListener stops accepting on l and lets its in-flight requests and
// connections finish within ShutdownTimeout. s.mu is held.
func (s *Server) stopListener(l *listener) {
	if l.sock == nil {
		return
	}
	l.sock.Close()
	l.sock = nil
	if l.gen != nil {
		l.gen.close()
		s.drain(l.gen.srv)
		l.gen = nil
	}
	if l.protocol == config.ListenerTLS {
		cancel := l.cancel
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			done := l.conns.close()
			t := s.clock.NewTimer(s.cfg.ShutdownTimeout)
			defer t.Stop()
			select {
			case <-done:
			case <-t.C():
			case <-s.ctx.Done():
			}
			cancel()
			<-done
		}()
	} else if l.cancel != nil {
		l.cancel()
	}
}

// accept accepts the connections of sock until it is closed: a client IP
// over its connection limit is closed at once; the others go to the
// listener's server, or to the engine (passthrough).
func (s *Server) accept(ctx context.Context, l *listener, sock net.Listener) {
	var delay time.Duration
	for {
		c, err := sock.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: back off as net/http
			// does, on the wall clock (nothing to test with a fake one).
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logger.Warn(msgAcceptFailed, telemetry.KeyListener, l.name, telemetry.KeyErr, err)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		ip := clientAddr(c)
		if !s.limiter.acquire(ip) {
			s.closed.WithLabelValues(l.name, reasonPerIPLimit).Inc()
			c.Close()
			continue
		}
		lc := &limitedConn{Conn: c, release: func() { s.limiter.release(ip) }}
		if l.protocol == config.ListenerHTTPS {
			// The accept loop holds a count of s.wg while it runs.
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handshake(ctx, l, lc)
			}()
			continue
		}
		if l.protocol == config.ListenerTLS {
			if !l.conns.add() {
				lc.Close()
				continue
			}
			go func() {
				defer l.conns.done()
				defer lc.Close()
				s.edge.ServePassthrough(ctx, lc, l.name)
			}()
			continue
		}
		s.deliver(l, lc, false)
	}
}

// handshake terminates TLS on c within the request header timeout, and
// hands the connection to the listener's server: HTTP/2 (ALPN h2) watched
// by an h2Guard, else HTTP/1.1.
func (s *Server) handshake(ctx context.Context, l *listener, c net.Conn) {
	s.mu.Lock()
	g := l.gen
	s.mu.Unlock()
	if g == nil {
		c.Close()
		return
	}
	tc := tls.Server(c, g.tls)
	// A socket deadline: the wall clock's.
	_ = c.SetDeadline(time.Now().Add(g.limits.headerTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		// Debug: clients fail handshakes all day (scanners, old TLS).
		s.logger.Debug(msgHandshakeFailed, telemetry.KeyListener, l.name,
			telemetry.KeyRemote, c.RemoteAddr().String(), telemetry.KeyErr, err)
		tc.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol != http2Proto {
		s.deliver(l, tc, false)
		return
	}
	name := l.name
	s.deliver(l, newH2Guard(tc, g.limits, s.clock, func(reason string) {
		s.closed.WithLabelValues(name, reason).Inc()
		s.logger.Info(msgGuardClosed, telemetry.KeyListener, name, telemetry.KeyReason, reason,
			telemetry.KeyRemote, c.RemoteAddr().String())
	}), true)
}

// framingHeadSlack is what the framing guard allows above the server's
// MaxHeaderBytes, so that net/http's 431 comes first.
const framingHeadSlack = 8 << 10

// http2Proto is HTTP/2's ALPN protocol name.
const http2Proto = "h2"

// deliver hands c to l's current server (its HTTP/2 queue when h2),
// following a replacement made while it waited; once the listener stops,
// it closes c.
func (s *Server) deliver(l *listener, c net.Conn, h2 bool) {
	for {
		s.mu.Lock()
		g := l.gen
		s.mu.Unlock()
		if g != nil {
			q := g.h1
			if h2 {
				q = g.h2
			}
			if q != nil && q.push(c) {
				return
			}
		}
		s.mu.Lock()
		same := l.gen == g
		s.mu.Unlock()
		if same {
			c.Close()
			return
		}
	}
}

// tlsStateKey is the context key of a connection's TLS state.
type tlsStateKey struct{}

// connTLSState is the ConnContext of HTTPS servers: it keeps the TLS state
// of the connection (a *tls.Conn under the framing guard, or an h2Guard),
// which the server cannot see itself as it serves them as plain
// connections, and the DNS names of the certificate served on it
// (proxy.WithServedNames).
func connTLSState(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := c.(*framing.Conn); ok {
		c = fc.Conn
	}
	var tc *tls.Conn
	switch c := c.(type) {
	case *tls.Conn:
		tc = c
	case *h2Guard:
		tc = c.tc
	default:
		return ctx
	}
	st := tc.ConnectionState()
	if lc, ok := tc.NetConn().(*limitedConn); ok && lc.served != nil {
		// The engine answers 421 to a host the certificate served does
		// not cover (domain fronting).
		ctx = proxy.WithServedNames(ctx, lc.served.Leaf.DNSNames)
	}
	return context.WithValue(ctx, tlsStateKey{}, &st)
}

// recordServed wraps get, the GetCertificate of a listener, so that the
// certificate picked for a connection is kept on it (limitedConn.served):
// connTLSState hands its DNS names to the engine with every request.
func recordServed(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := get(hello)
		if lc, ok := hello.Conn.(*limitedConn); ok && err == nil && cert.Leaf != nil {
			lc.served = cert
		}
		return cert, err
	}
}

// withTLSState sets r.TLS from the connection's TLS state (connTLSState).
func withTLSState(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok && r.TLS == nil {
			r.TLS = st
		}
		next.ServeHTTP(w, r)
	})
}

// newHTTPServer builds the server of an HTTPS or HTTP listener. The
// gateway terminates TLS itself (handshake), so the server sees plain
// connections: HTTP/1.1, and for HTTPS also HTTP/2 with prior knowledge
// (only ALPN h2 connections reach it that way).
func (s *Server) newHTTPServer(name string, st settings) *http.Server {
	var h http.Handler
	if st.protocol == config.ListenerHTTP && st.redirect {
		h = redirectHandler(st.httpsPort)
	} else {
		// Socket deadlines are wall-clock times, whatever the clock.
		h = withBodyDeadline(s.edge.Edge(name, st.protocol == config.ListenerHTTPS), st.limits.bodyTimeout, st.limits.writeTimeout, time.Now)
	}
	if st.hsts != "" {
		h = withHSTS(h, st.hsts)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	srv := &http.Server{
		Protocols: &protos,
		ConnState: framing.ConnState,
		// The engine answers "OPTIONS *", not net/http.
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            st.limits.headerTimeout,
		IdleTimeout:                  st.limits.idleTimeout,
		MaxHeaderBytes:               st.limits.maxHeaderBytes,
		ErrorLog:                     slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	if st.protocol == config.ListenerHTTPS {
		protos.SetUnencryptedHTTP2(true)
		srv.HTTP2 = st.limits.http2Config()
		srv.ConnContext = connTLSState
		h = withTLSState(h)
	}
	srv.Handler = h
	return srv
}

// edgeCipherSuites are the TLS 1.2 suites of the edge: ECDHE with AES-GCM
// or ChaCha20-Poly1305 only (forward secrecy, AEAD). TLS 1.3's suites are
// all of that kind.
var edgeCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// edgeTLSConfig is the TLS config of an HTTPS listener: TLS minVersion (1.2
// or 1.3) and up, edgeCipherSuites, X25519 (with ML-KEM when the client
// offers it) or P-256, HTTP/2 and HTTP/1.1 by ALPN, and the certificate
// picked by SNI.
func edgeTLSConfig(minVersion uint16, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:       minVersion,
		CipherSuites:     slices.Clone(edgeCipherSuites),
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
		NextProtos:       []string{http2Proto, "http/1.1"},
		GetCertificate:   getCert,
	}
}

// Run polls the certificate files and retries the listeners that could not
// bind until ctx is done; then it stops every listener (in-flight requests
// get ShutdownTimeout) and returns nil once all their goroutines are done.
func (s *Server) Run(ctx context.Context) error {
	defer s.stop()
	for {
		t := s.clock.NewTimer(s.cfg.CertPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
		s.certs.poll()
		s.retryBinds()
	}
}

// stop stops every listener and waits for the goroutines of the server.
// It is idempotent.
func (s *Server) stop() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		for _, l := range s.listeners {
			s.stopListener(l)
		}
	}
	s.mu.Unlock()
	// The process stops: passthrough tunnels end now (the graceful part
	// of the shutdown, if any, is over); HTTP servers finish within
	// ShutdownTimeout.
	s.cancel()
	s.wg.Wait()
}

// connTracker counts the connections in flight of a listener, until it is
// closed.
type connTracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{}
}

// add counts a new connection; it reports false once closed.
func (t *connTracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *connTracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// close refuses new connections and returns a channel closed once none is
// in flight.
func (t *connTracker) close() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := make(chan struct{})
	if t.closed && t.idle != nil {
		return t.idle
	}
	t.closed = true
	if t.n == 0 {
		close(c)
		return c
	}
	t.idle = c
	return c
}

// connQueue is a net.Listener whose connections are pushed to it by the
// accept loop: one socket feeds, in turn, the servers a listener's settings
// changes replace.
type connQueue struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the next Accept; it reports false (keeping c) once the
// queue is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case <-q.closed:
		return false
	default:
	}
	select {
	case q.conns <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
