// Package proxy is the L7 forwarding engine shared by the sidecar and the
// gateway (edge.go, edge_tls.go). It owns the data path of a request:
//
//	inbound:  peer mTLS identity -> method and request-target hygiene
//	          (400) -> JWT authentication (401) -> authorization (403,
//	          fails closed) -> local app
//	outbound: service from Host -> hygiene -> caller-side authorization (403) ->
//	          endpoint -> pooled HTTP/2 over mTLS to the peer, which must
//	          present the identity the snapshot names for that endpoint
//
// Authorization decides a policy.Request built from everything the engine
// knows of the request at its end: inbound, the peer's SPIFFE ID and
// services, its IP address (IPv4-mapped IPv6 addresses unmapped), the JWT
// principal and claims, the host (lower case, without the port and one
// trailing dot; brackets of an IPv6 literal removed) and port (80 when the
// authority names none: mesh requests are http, TLS is the transport), the
// normalized path, the raw query, the headers, the TLS server name and the
// time. Outbound, the caller knows its own identity and the destination:
// the host is the service's canonical "name.namespace" host, which the peer
// receives, and a port the app named is forwarded in the Host header, so
// that both ends decide on the same host and port.
//
// It reads the mesh through an immutable table compiled from the latest
// snapshot and swapped atomically. It never falls back to plaintext: a peer
// is reached over mTLS or not at all. A peer whose SVID serial the snapshot
// lists as revoked fails the handshake in both directions, and a snapshot
// that revokes a peer closes the connections it already has, pooled
// (outbound) and accepted (inbound, on listeners prepared with
// InboundListener). Client-supplied identity headers are
// removed in both directions; the inbound side sets
// X-Forwarded-Client-Cert for the app (Envoy's format: By=<this proxy's
// SPIFFE ID>;URI=<caller's SPIFFE ID>). Every request produces one access log
// line; secrets in it (and in spans and denial reports) are masked by
// Config.Redactor, and bodies are never logged. The line says audit=true with the
// AUDIT policy that matched, and dry_run="would deny by ns/name#rule2"
// when a dry-run policy would change the decision.
//
// Every denial (401 or 403, either direction) also goes to the process
// log, at most once per edge (direction, source, destination, policy,
// rule, reason, status) every 10 seconds with a count of those not logged,
// to Config.OnDeny (which the sidecar reports to the control plane), and to
// bulwark_authz_decisions_total (see docs/metrics.md).
//
// The engine does not open listeners: the composition root serves its
// handlers on listeners it owns.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Config configures an Engine.
type Config struct {
	// Service is the service this proxy fronts. Required.
	Service identity.ServiceRef
	// App is the local app's host:port; "" for a client-only proxy (its
	// inbound handler then answers 503).
	App string
	// SVID and Bundle are the proxy's identity and trust bundle. Required.
	SVID   x509svid.Source
	Bundle x509bundle.Source
	// Logger is the process log; AccessLog gets one line per request.
	// Default: discard.
	Logger    *slog.Logger
	AccessLog *slog.Logger
	// Clock paces the denial log. Default: the wall clock.
	Clock clock.Clock
	// Metrics, if set, is where the engine registers its counters
	// (bulwark_requests_total, bulwark_authz_decisions_total, ...) and
	// its per-service series (bulwark_service_requests_total,
	// bulwark_request_duration_seconds). Default: none; the counters are
	// still counted, the per-service series are not recorded at all (the
	// data path skips them).
	Metrics prometheus.Registerer
	// OnDeny, if set, is called with every request the engine denies (401
	// or 403) whose caller and path are known, on the request's goroutine:
	// it must not block.
	OnDeny func(Denial)
	// OnRequest, if set, is called with every answered request, in both
	// directions and whatever its outcome, whose caller and destination
	// are known, on the request's goroutine: it must not block (the
	// sidecar aggregates them into the service graph, graph.Recorder).
	OnRequest func(graph.Observation)
	// OnAuthFailure, if set, is called with every failed authentication of
	// a peer on a listener prepared with InboundListener: its address, its
	// SPIFFE ID when it presented a verified one ("" else), and one of the
	// fixed reasons graph.Reason*. It must not block.
	OnAuthFailure func(addr, source, reason string)
	// Locality of this proxy: locality-aware load balancing prefers
	// endpoints in its zone, then its region. Zero: unknown.
	Locality balancer.Locality
	// AppProtocol is the protocol of the app: ProtocolHTTP (HTTP/1.1, the
	// default when empty), ProtocolHTTP2 or ProtocolGRPC (HTTP/2 without
	// TLS, prior knowledge, so that trailers pass), or ProtocolTCP (the
	// inbound side then takes CONNECT tunnels only).
	AppProtocol string
	// Tracer, if set, gives every request a span (trace.go). Default:
	// none, and traceparent headers pass untouched.
	Tracer trace.TracerProvider
	// Redactor masks secrets in the access log, the process log, spans
	// and denial reports. Default: telemetry.DefaultRedactor() (redaction
	// cannot be turned off).
	Redactor *telemetry.Redactor
	// LogHeaders are request header names whose values the access log
	// line carries (under "headers", masked by the Redactor). Default:
	// none.
	LogHeaders []string
}

// Engine forwards requests.
type Engine struct {
	cfg    Config
	logger *slog.Logger
	access *slog.Logger
	// tracer is nil when tracing is off; redact is never nil.
	tracer     trace.Tracer
	redact     *telemetry.Redactor
	logHeaders []logHeader

	table   atomic.Pointer[table]
	metrics *metrics
	denies  *denyLog
	// selfServices is the caller's services in outbound requests.
	selfServices []string
	pool         *pool
	toApp        *httputil.ReverseProxy
	toPeer       *httputil.ReverseProxy

	appTransport *http.Transport
	// appDialer dials the app for tunnels (upgrades, TCP).
	appDialer *net.Dialer
	closeOnce sync.Once

	// dstates keeps each destination's load, ejection, budget and breaker
	// state across snapshots; rates the rate-limit buckets of the inbound
	// side, by configuration (rateMu guards it; only apply writes it).
	dstates *destStates
	rateMu  sync.Mutex
	rates   map[string]*rateLimit
	// mirrors bounds the mirrored requests in flight.
	mirrors chan struct{}
	// egress keeps the transports of external destinations (egress.go).
	egress egressCache

	mu sync.Mutex
	// inbound are the listeners InboundListener prepared.
	inbound []*mtls.ExpiringListener

	// refusedLogged is when a refused handshake was last logged (unix
	// nanoseconds), refusedQuiet how many were not logged since.
	refusedLogged, refusedQuiet atomic.Int64
}

// refusedLogEvery bounds how often refused handshakes of revoked peers are
// logged: a revoked peer that keeps retrying cannot flood the log.
const refusedLogEvery = 10 * time.Second

// New returns an Engine with no snapshot: until the first Apply, outbound
// requests get 503 and inbound requests 503 (fails closed).
func New(cfg Config) (*Engine, error) {
	if cfg.Service.IsZero() || cfg.SVID == nil || cfg.Bundle == nil {
		return nil, errors.New("proxy: service, svid and bundle are required")
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	e := &Engine{
		cfg:          cfg,
		logger:       telemetry.OrDiscard(cfg.Logger),
		access:       telemetry.OrDiscard(cfg.AccessLog),
		metrics:      m,
		selfServices: []string{cfg.Service.String()},
		dstates:      &destStates{clock: clock.OrReal(cfg.Clock), metrics: m, m: map[string]*destState{}},
		rates:        map[string]*rateLimit{},
		mirrors:      make(chan struct{}, maxMirrors),
		redact:       cfg.Redactor,
	}
	if e.redact == nil {
		e.redact = telemetry.DefaultRedactor()
	}
	if cfg.Tracer != nil {
		e.tracer = cfg.Tracer.Tracer(tracerName)
	}
	for _, h := range cfg.LogHeaders {
		if !httpguts.ValidHeaderFieldName(h) {
			return nil, fmt.Errorf("proxy: log header %q: not a header name", h)
		}
		e.logHeaders = append(e.logHeaders, logHeader{canonical: http.CanonicalHeaderKey(h), key: strings.ToLower(h)})
	}
	e.denies = newDenyLog(e.logger, clock.OrReal(cfg.Clock), denyLogEvery, denyLogEdges)
	e.pool = newPool(func(want spiffeid.ID) *tls.Config {
		return mtls.Mesh{SVID: cfg.SVID, Bundle: cfg.Bundle, Revoked: e.refuser(telemetry.DirectionOutbound)}.ClientConfig(want)
	}, e.revoked)
	e.pool.onHandshake = func(result string) { m.handshake(dirOutbound, result) }
	switch cfg.AppProtocol {
	case "", ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC, ProtocolTCP:
	default:
		return nil, fmt.Errorf("proxy: app protocol %q: want %s, %s, %s or %s", cfg.AppProtocol, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC, ProtocolTCP)
	}
	e.appDialer = &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	e.appTransport = &http.Transport{
		DialContext:           e.appDialer.DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
	if cfg.AppProtocol == ProtocolHTTP2 || cfg.AppProtocol == ProtocolGRPC {
		var h2c http.Protocols
		h2c.SetUnencryptedHTTP2(true)
		e.appTransport.Protocols = &h2c
	}
	bufs := &bufferPool{}
	e.toApp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    e.appTransport,
		BufferPool:   bufs,
		ErrorHandler: e.upstreamError,
	}
	e.toPeer = &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      roundTripperFunc(e.peerRoundTrip),
		BufferPool:     bufs,
		ErrorHandler:   e.upstreamError,
		ModifyResponse: e.modifyResponse,
	}
	return e, nil
}

// Apply compiles a snapshot from the control plane and makes it current. A
// snapshot older than the current one is rejected (unless the current one
// is a last-known-good copy from disk); one that does not compile is
// rejected with an error (the proxy NACKs it and keeps the current one).
func (e *Engine) Apply(snap *apiv1.Snapshot) error {
	return e.apply(snap, false)
}

// ApplyLastKnownGood installs a snapshot kept on disk from an earlier run;
// the next snapshot from the control plane replaces it whatever its version.
func (e *Engine) ApplyLastKnownGood(snap *apiv1.Snapshot) error {
	return e.apply(snap, true)
}

func (e *Engine) apply(snap *apiv1.Snapshot, lkg bool) error {
	if cur := e.table.Load(); cur != nil && !cur.lastKnownGood && snap.GetVersion() < cur.version {
		return fmt.Errorf("snapshot version %d is older than the current %d", snap.GetVersion(), cur.version)
	}
	t, dropped, err := compile(snap, e.cfg.Service, e.cfg.Clock)
	if err != nil {
		return err
	}
	for _, d := range dropped {
		e.logger.Warn("endpoint dropped from snapshot", telemetry.KeyDetail, d)
	}
	t.lastKnownGood = lkg
	e.attach(t)
	e.attachEgress(t)
	prev := e.table.Load()
	e.table.Store(t)
	if sm := e.metrics.services; sm != nil {
		sm.retain(knownLabels(t, e.selfServices[0]))
	}
	if added := newlyRevoked(prev, t); len(added) > 0 {
		e.logger.Warn("peer svids revoked", telemetry.KeyCount, len(added), telemetry.KeySerial, added, telemetry.KeyVersion, t.version)
	}
	keep := make(map[poolKey]bool, len(t.idByAddr))
	for addr, id := range t.idByAddr {
		keep[poolKey{addr: addr, id: id}] = true
	}
	closed := e.pool.retain(keep)
	if t.revoked.Len() > 0 {
		e.mu.Lock()
		inbound := e.inbound
		e.mu.Unlock()
		for _, l := range inbound {
			closed += l.ClosePeers(t.revoked.Contains)
		}
	}
	if closed > 0 {
		e.logger.Warn("closed connections of revoked peers", telemetry.KeyCount, closed, telemetry.KeyVersion, t.version)
	}
	return nil
}

// newlyRevoked returns the serials t revokes that prev did not.
func newlyRevoked(prev, t *table) []string {
	if prev == nil || len(prev.revokedSerials) == 0 {
		return slices.Clone(t.revokedSerials)
	}
	before := make(map[string]struct{}, len(prev.revokedSerials))
	for _, s := range prev.revokedSerials {
		before[s] = struct{}{}
	}
	var added []string
	for _, s := range t.revokedSerials {
		if _, ok := before[s]; !ok {
			added = append(added, s)
		}
	}
	return added
}

// revoked reports whether the current snapshot revokes a peer's
// certificate. It does not allocate.
func (e *Engine) revoked(leaf *x509.Certificate) bool {
	t := e.table.Load()
	return t != nil && t.revoked.Contains(leaf)
}

// refuser is revoked for the handshakes of one direction: it also logs the
// refusals, at most once every refusedLogEvery.
func (e *Engine) refuser(direction string) mtls.Revoked {
	return func(leaf *x509.Certificate) bool {
		if !e.revoked(leaf) {
			return false
		}
		now, last := time.Now().UnixNano(), e.refusedLogged.Load()
		if now-last < int64(refusedLogEvery) || !e.refusedLogged.CompareAndSwap(last, now) {
			e.refusedQuiet.Add(1)
			return true
		}
		e.logger.Warn("handshake refused: peer svid revoked", telemetry.KeyDirection, direction,
			telemetry.KeySerial, leaf.SerialNumber.Text(16), telemetry.KeyDetail, fmt.Sprintf("%d more not logged", e.refusedQuiet.Swap(0)))
		return true
	}
}

// InboundListener prepares ln, the inbound listener the composition root
// opened, for serving Inbound over mTLS with the returned config: peers must
// present a workload SVID of td that chains to the current trust bundle and
// that the current snapshot does not revoke. Each accepted connection is
// closed when its peer's certificate expires, or when a later snapshot
// revokes it.
func (e *Engine) InboundListener(ln net.Listener, td spiffeid.TrustDomain) (net.Listener, *tls.Config) {
	// Handshakes are counted on the accepted connections, under the
	// expiry tracking (which must see its own connections).
	hc := telemetry.NewHandshakeCounter(func(_ net.Addr, result string) { e.metrics.handshake(dirInbound, result) })
	el, cfg := mtls.ExpireConnections(hc.Listener(ln), mtls.Mesh{
		SVID: e.cfg.SVID, Bundle: e.cfg.Bundle, TrustDomain: td, Revoked: e.refuser(telemetry.DirectionInbound),
	}.ServerConfig())
	cfg = hc.Config(cfg)
	if e.cfg.OnAuthFailure != nil {
		cfg = e.reportAuthFailures(cfg)
	}
	e.mu.Lock()
	e.inbound = append(e.inbound, el)
	e.mu.Unlock()
	return el, cfg
}

// reportAuthFailures returns cfg (an inbound listener's config) with its
// certificate checks also reporting failures to OnAuthFailure, with the
// peer's address: no certificate (the config asks for one and then
// requires it itself, so that such a client is seen; the handshake fails
// as before), a certificate that is not a trusted workload SVID, a revoked
// one, or no h2. Handshakes the TLS layer fails before these checks (not
// TLS, no shared version) are not reported.
func (e *Engine) reportAuthFailures(cfg *tls.Config) *tls.Config {
	out := cfg.Clone()
	inner := cfg.GetConfigForClient
	out.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := cfg
		if inner != nil {
			got, err := inner(hello)
			if err != nil {
				return nil, err
			}
			if got != nil {
				c = got
			}
		}
		var addr string
		if hello.Conn != nil {
			addr = hello.Conn.RemoteAddr().String()
		}
		w := c.Clone()
		w.GetConfigForClient = nil
		requireCert := false
		if w.ClientAuth == tls.RequireAnyClientCert {
			w.ClientAuth, requireCert = tls.RequestClientCert, true
		}
		verifyPeer, verifyConn := w.VerifyPeerCertificate, w.VerifyConnection
		w.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			if requireCert && len(raw) == 0 {
				e.cfg.OnAuthFailure(addr, "", graph.ReasonNoSVID)
				return errors.New("tls: client didn't provide a certificate")
			}
			if verifyPeer == nil {
				return nil
			}
			err := verifyPeer(raw, chains)
			if err != nil {
				reason := graph.ReasonUntrustedSVID
				if len(raw) == 0 {
					reason = graph.ReasonNoSVID
				}
				e.cfg.OnAuthFailure(addr, "", reason)
			}
			return err
		}
		w.VerifyConnection = func(cs tls.ConnectionState) error {
			if requireCert && len(cs.PeerCertificates) == 0 {
				e.cfg.OnAuthFailure(addr, "", graph.ReasonNoSVID)
				return errors.New("tls: client didn't provide a certificate")
			}
			if verifyConn == nil {
				return nil
			}
			err := verifyConn(cs)
			if err == nil {
				return nil
			}
			reason, source := graph.ReasonTLSHandshake, ""
			if len(cs.PeerCertificates) == 0 {
				reason = graph.ReasonNoSVID
			} else {
				if id, idErr := x509svid.IDFromCert(cs.PeerCertificates[0]); idErr == nil {
					source = id.String()
				}
				if e.revoked(cs.PeerCertificates[0]) {
					reason = graph.ReasonRevoked
				} else if cs.NegotiatedProtocol == mtls.ProtoH2 {
					reason, source = graph.ReasonUntrustedSVID, ""
				}
			}
			e.cfg.OnAuthFailure(addr, source, reason)
			return err
		}
		return w, nil
	}
	return out
}

// Version returns the version of the current snapshot, 0 before the first.
func (e *Engine) Version() int64 {
	if t := e.table.Load(); t != nil {
		return t.version
	}
	return 0
}

// BundleVersion returns the trust bundle version of the current snapshot,
// 0 before the first (or when the control plane does not send one).
func (e *Engine) BundleVersion() int64 {
	if t := e.table.Load(); t != nil {
		return t.bundleVersion
	}
	return 0
}

// RetireConnections gracefully closes every pooled connection to peers
// (in-flight requests finish); new requests open new ones. The sidecar calls
// it after its SVID rotates, so peers see the new certificate long before
// the old one expires.
func (e *Engine) RetireConnections() { e.pool.retire() }

// Close closes pooled connections. It is idempotent.
func (e *Engine) Close() {
	e.closeOnce.Do(func() {
		e.pool.close()
		e.appTransport.CloseIdleConnections()
		e.closeEgress()
	})
}

// Inbound returns the handler for the inbound mTLS listener.
func (e *Engine) Inbound() http.Handler { return http.HandlerFunc(e.serveInbound) }

// Outbound returns the handler for the app's outbound HTTP proxy listener:
// the app sends http://<service>.<namespace>/... in absolute form (as with
// HTTP_PROXY) or origin form with that Host.
func (e *Engine) Outbound() http.Handler { return http.HandlerFunc(e.serveOutbound) }

// Upstream returns the handler of a per-upstream local listener: every
// request to it goes to svc, whatever its Host.
func (e *Engine) Upstream(svc identity.ServiceRef) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := newRecorder(w)
		info := &logInfo{direction: telemetry.DirectionOutbound, source: e.selfID(), destination: svc.String(), start: time.Now()}
		e.startSpan(r, info, trace.SpanKindClient)
		defer e.finish(r, rw, info)
		path, query, ok := e.hygiene(rw, info, r, r.RequestURI)
		if !ok {
			return
		}
		// The Host of a per-upstream listener names the listener, not the
		// service: the port is the default.
		e.forward(rw, r, info, svc, "", path, query)
	})
}

func (e *Engine) selfID() string {
	s, err := e.cfg.SVID.GetX509SVID()
	if err != nil {
		return ""
	}
	return s.ID.String()
}

// stripIdentityHeaders removes identity headers from a request before it is
// forwarded: only the proxy asserts identity. Names are compared with '_'
// read as '-', since CGI-style apps (WSGI, PHP, Rack) see
// X_Forwarded_Client_Cert and X-Forwarded-Client-Cert as one header.
func stripIdentityHeaders(h http.Header) {
	for k := range h {
		// Every identity header starts with x or f and is at least as
		// long as "Forwarded": skip the rest without allocating.
		if len(k) < len("forwarded") || (k[0]|0x20 != 'x' && k[0]|0x20 != 'f') {
			continue
		}
		lk := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		if strings.HasPrefix(lk, "x-bulwark-") || strings.HasPrefix(lk, "x-forwarded-") || lk == "forwarded" {
			delete(h, k)
		}
	}
}

// validMethod reports whether m may be authorized: methods are
// case-sensitive, and a policy naming GET must not be sidestepped by "get",
// which some frameworks upper-case before routing. net/http has already
// checked that m is a token.
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if c := m[i]; c >= 'a' && c <= 'z' {
			return false
		}
	}
	return m != ""
}

// hygiene applies the checks every request passes before anything else,
// in every direction: an upper-case method, an unambiguous authority, and an
// origin-form target whose path it normalizes (DESIGN §3). It answers 400
// itself and returns ok=false for a request that fails one; otherwise it
// returns the normalized path and the query as sent.
func (e *Engine) hygiene(rw *recorder, info *logInfo, r *http.Request, target string) (path, query string, ok bool) {
	if !validMethod(r.Method) {
		e.reject(rw, info, http.StatusBadRequest, "bad request", "method is not upper case")
		return "", "", false
	}
	if err := checkAuthority(r); err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return "", "", false
	}
	path, query, err := originTarget(target)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return "", "", false
	}
	// What is logged, reported and traced of the path has its
	// credential-carrying segments masked.
	info.path, info.query = e.redact.Path(path), query
	return path, query, true
}

// inboundTable returns the current table for an inbound request from a
// peer that is not revoked; otherwise it answers (503 before the first
// snapshot, 403 for a revoked peer) and returns false.
func (e *Engine) inboundTable(rw *recorder, r *http.Request, info *logInfo) (*table, bool) {
	t := e.table.Load()
	if t == nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "proxy not ready", "no snapshot yet")
		return nil, false
	}
	// A revoked peer's connections are closed when the snapshot arrives;
	// this covers requests already read from them.
	if t.revoked.Contains(r.TLS.PeerCertificates[0]) {
		info.label = labelRevoked
		e.reject(rw, info, http.StatusForbidden, "forbidden", "peer certificate revoked")
		return nil, false
	}
	return t, true
}

func (e *Engine) serveInbound(w http.ResponseWriter, r *http.Request) {
	rw := newRecorder(w)
	info := &logInfo{direction: telemetry.DirectionInbound, destination: e.cfg.Service.String(), start: time.Now()}
	e.startSpan(r, info, trace.SpanKindServer)
	defer e.finish(r, rw, info)

	peer, err := peerID(r, info.start)
	info.source = peer
	if err != nil {
		// The TLS layer requires a verified SVID at the handshake; the
		// connection may outlive the certificate, so expiry is checked
		// for every request.
		info.label = labelPeerUnverified
		if e.cfg.OnAuthFailure != nil {
			e.cfg.OnAuthFailure(r.RemoteAddr, peer, graph.ReasonPeerUnverified)
		}
		e.reject(rw, info, http.StatusForbidden, "forbidden", err.Error())
		return
	}
	// A TCP tunnel has no path to check (tunnel.go).
	if r.Method == http.MethodConnect || e.cfg.AppProtocol == ProtocolTCP {
		e.serveInboundTunnel(rw, r, info, peer)
		return
	}
	path, query, ok := e.hygiene(rw, info, r, r.RequestURI)
	if !ok {
		return
	}
	t, ok := e.inboundTable(rw, r, info)
	if !ok {
		return
	}
	if e.cfg.App == "" {
		e.reject(rw, info, http.StatusServiceUnavailable, "no such service", "client-only proxy has no app")
		return
	}
	host, port, err := hostPort(r.Host, defaultPort)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	// A tunnelled upgrade (tunnel.go) names its protocol in a header the
	// strip below removes; policies see the Upgrade the client sent.
	upgrade, err := inboundUpgrade(r.Header)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	// JWT authentication answers 401 itself; a token taken out of the
	// query changes the query forwarded.
	res, query, ok := e.authenticate(t, rw, r, info, query)
	if !ok {
		return
	}
	req := policy.Request{
		Source: policy.Source{
			ID:        peer,
			Services:  t.peers[peer],
			IP:        remoteIP(r.RemoteAddr),
			Principal: res.Principal,
			Claims:    res.Claims,
		},
		Method:  r.Method,
		Host:    host,
		Port:    port,
		Path:    path,
		Query:   query,
		Headers: r.Header,
		SNI:     r.TLS.ServerName,
		Time:    info.start,
	}
	if !e.decide(rw, info, t.inbound, &req) {
		return
	}
	if e.rateLimited(rw, info, t, peer, r, path, query) {
		return
	}

	if _, ok := t.gateways[peer]; ok {
		// A gateway is the edge: it replaced what its client sent with
		// the client's address, scheme and host (edge.go).
		keepForwarded(r.Header)
	} else {
		stripIdentityHeaders(r.Header)
	}
	r.Header.Set(xfcc, "By="+e.selfID()+";URI="+peer)
	e.injectTrace(info, r.Header)
	setTarget(r, "http", e.cfg.App, e.cfg.Service.Host(), path, query)
	if upgrade != "" {
		e.upgradeToApp(rw, r, info, upgrade)
		return
	}
	e.toApp.ServeHTTP(rw, r)
}

func (e *Engine) serveOutbound(w http.ResponseWriter, r *http.Request) {
	rw := newRecorder(w)
	info := &logInfo{direction: telemetry.DirectionOutbound, source: e.selfID(), start: time.Now()}
	e.startSpan(r, info, trace.SpanKindClient)
	defer e.finish(r, rw, info)

	if r.Method == http.MethodConnect {
		e.serveOutboundConnect(rw, r, info)
		return
	}
	host, target, err := outboundTarget(r)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, err.Error(), err.Error())
		return
	}
	info.destination = host
	path, query, ok := e.hygiene(rw, info, r, target)
	if !ok {
		return
	}
	// A host that names no mesh service is egress (egress.go).
	if e.serveEgress(rw, r, info, host, path, query) {
		return
	}
	svc, err := identity.ServiceFromHost(host, e.cfg.Service.Namespace)
	if err != nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "no such service", "host is not a mesh service")
		return
	}
	info.destination = svc.String()
	e.forward(rw, r, info, svc, host, path, query)
}

// rewrite runs after ReverseProxy has prepared the outgoing request from the
// one the handler already pointed at its target. It undoes two things
// ReverseProxy does that the data path must not allow: removing the headers a
// client names in Connection (a caller could otherwise strip the identity
// header the proxy sets: "Connection: X-Forwarded-Client-Cert"), and dropping
// query parameters it cannot parse (the query is forwarded as sent).
func rewrite(pr *httputil.ProxyRequest) {
	if v, ok := pr.In.Header[xfcc]; ok {
		pr.Out.Header[xfcc] = v
	} else {
		delete(pr.Out.Header, xfcc)
	}
	// ReverseProxy also removes X-Forwarded-For, -Host and -Proto; the
	// data path has already removed any a client set, so what is left
	// was set by a gateway (edge.go) and crosses.
	for _, k := range forwardedKept {
		if v, ok := pr.In.Header[k]; ok {
			pr.Out.Header[k] = v
		}
	}
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
}

// xfcc is the canonical name of the identity header the inbound side sets.
const xfcc = "X-Forwarded-Client-Cert"

// upstreamError answers when the app or a peer cannot be reached or fails.
func (e *Engine) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusBadGateway, "bad gateway"
	var ce *connectError
	var oe *net.OpError
	var ov *overflowError
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		status, msg = 499, "client closed request"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errPerTryTimeout):
		status, msg = http.StatusGatewayTimeout, "upstream request timeout"
	case errors.As(err, &ov):
		status, msg = http.StatusServiceUnavailable, "upstream overloaded"
	case errors.Is(err, errNoEndpoint):
		status, msg = http.StatusServiceUnavailable, "no healthy upstream"
	case errors.As(err, new(*http.MaxBytesError)):
		// A streamed body over the edge's limit (edge.go).
		status, msg = http.StatusRequestEntityTooLarge, "request body too large"
	case errors.As(err, &ce), errors.As(err, &oe) && oe.Op == "dial":
		status, msg = http.StatusServiceUnavailable, "upstream unavailable"
	}
	if rw, ok := w.(*recorder); ok {
		rw.detail = err.Error()
	}
	e.logger.Debug("upstream error", telemetry.KeyPath, e.redact.Path(r.URL.EscapedPath()), telemetry.KeyErr, e.redact.Text(err.Error()))
	if status != 499 {
		http.Error(w, msg, status)
	}
}

// reject answers with an opaque body. What caused it goes to the access log
// only: for a denial the decision and its reason, for anything else detail.
func (e *Engine) reject(rw *recorder, info *logInfo, status int, body, detail string) {
	if status == http.StatusForbidden {
		info.decision = telemetry.DecisionDeny
		info.denied = status
		if info.reason == "" {
			info.reason = detail
		}
	} else if detail != "" {
		info.detail = detail
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Header().Set("X-Content-Type-Options", "nosniff")
	rw.WriteHeader(status)
	_, _ = rw.Write([]byte(body + "\n"))
}

// outboundTarget returns the host and origin-form target of an app's
// request: from an absolute-form request-target (as sent through
// HTTP_PROXY), or from Host with an origin-form one. The authority is cut
// where every HTTP parser cuts it; one carrying userinfo is refused, since
// parsers disagree on which host it names.
func outboundTarget(r *http.Request) (host, target string, err error) {
	target = r.RequestURI
	if strings.HasPrefix(target, "/") {
		return r.Host, target, nil
	}
	const scheme = "http://"
	if len(target) < len(scheme) || !strings.EqualFold(target[:len(scheme)], scheme) {
		return "", "", errors.New("use http:// through the mesh: the sidecar encrypts")
	}
	rest := target[len(scheme):]
	authority, target := rest, "/"
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, target = rest[:i], rest[i:]
		if target[0] != '/' {
			target = "/" + target
		}
	}
	if authority == "" || strings.Contains(authority, "@") {
		return "", "", errors.New("bad request: the URL's authority must be <service>.<namespace>[:port]")
	}
	return authority, target, nil
}

// originTarget applies request-target hygiene: origin form only, then path
// normalization (DESIGN §3). The query is returned as sent.
func originTarget(target string) (path, rawQuery string, err error) {
	p, q, err := pathnorm.SplitTarget(target)
	if err != nil {
		return "", "", err
	}
	p, err = pathnorm.Normalize(p)
	if err != nil {
		return "", "", err
	}
	return p, q, nil
}

// setTarget points r at scheme://addr with the normalized path, the
// original query and Host set to host.
func setTarget(r *http.Request, scheme, addr, host, path, query string) {
	decoded, err := url.PathUnescape(path)
	if err != nil {
		decoded = path // cannot happen: path is normalized
	}
	r.URL = &url.URL{Scheme: scheme, Host: addr, Path: decoded, RawPath: path, RawQuery: query}
	r.Host = host
}

// peerID returns the SPIFFE ID of the request's peer, whose certificate
// must still be valid at now. The ID of an expired certificate is returned
// with the error, for the logs.
func peerID(r *http.Request, now time.Time) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("no peer certificate")
	}
	leaf := r.TLS.PeerCertificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return "", err
	}
	if now.After(leaf.NotAfter) {
		return id.String(), errors.New("peer certificate expired")
	}
	return id.String(), nil
}

// defaultPort is the port of a mesh request whose authority names none:
// the scheme is http (TLS between proxies is the transport).
const defaultPort = 80

// Errors of hostPort, answered with 400.
var (
	errHostBrackets = errors.New("host: unbalanced brackets of an IPv6 literal")
	errHostColons   = errors.New("host: an IPv6 literal must be in brackets")
	errHostPort     = errors.New("host: the port must be a decimal number from 1 to 65535")
)

// hostPort splits an authority (the Host header, :authority) into the host
// as policies match it, in lower case without one trailing dot (and an
// IPv6 literal without its brackets), and the port: def when the
// authority names none or an empty one. It allocates only for a host with
// upper-case letters.
func hostPort(authority string, def int) (host string, port int, err error) {
	host, p := authority, ""
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", 0, errHostBrackets
		}
		rest := host[end+1:]
		host = host[1:end]
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, errHostBrackets
			}
			p = rest[1:]
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		if strings.IndexByte(host[:i], ':') >= 0 {
			return "", 0, errHostColons
		}
		host, p = host[:i], host[i+1:]
	}
	port = def
	if p != "" {
		if port = parsePort(p); port == 0 {
			return "", 0, errHostPort
		}
	}
	host = strings.TrimSuffix(host, ".")
	return strings.ToLower(host), port, nil
}

// parsePort returns the port p names, 1 to 65535 in plain decimal (no
// sign, no leading zero), or 0.
func parsePort(p string) int {
	if len(p) > 5 || p[0] == '0' {
		return 0
	}
	n := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0
	}
	return n
}

// remoteIP returns the address of a connection's peer (r.RemoteAddr), an
// IPv4-mapped IPv6 address as IPv4; the zero Addr when it cannot be read.
func remoteIP(addr string) netip.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// bufferPool recycles the 32 KiB copy buffers of the reverse proxies.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
