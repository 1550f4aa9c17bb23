// Package proxy is the L7 forwarding engine shared by the sidecar and (later)
// the gateway. It owns the data path of a request:
//
//	inbound:  peer mTLS identity -> request-target hygiene (400) ->
//	          authorization (403, fails closed) -> local app
//	outbound: service from Host -> hygiene -> caller-side authorization (403) ->
//	          endpoint -> pooled HTTP/2 over mTLS to the peer, which must
//	          present the identity the snapshot names for that endpoint
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
// line; query strings are never logged.
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
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
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
}

// Engine forwards requests.
type Engine struct {
	cfg    Config
	logger *slog.Logger
	access *slog.Logger

	table  atomic.Pointer[table]
	pool   *pool
	toApp  *httputil.ReverseProxy
	toPeer *httputil.ReverseProxy

	appTransport *http.Transport
	closeOnce    sync.Once

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
	e := &Engine{
		cfg:    cfg,
		logger: telemetry.OrDiscard(cfg.Logger),
		access: telemetry.OrDiscard(cfg.AccessLog),
	}
	e.pool = newPool(func(want spiffeid.ID) *tls.Config {
		return mtls.Mesh{SVID: cfg.SVID, Bundle: cfg.Bundle, Revoked: e.refuser(telemetry.DirectionOutbound)}.ClientConfig(want)
	}, e.revoked)
	e.appTransport = &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
	bufs := &bufferPool{}
	e.toApp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    e.appTransport,
		BufferPool:   bufs,
		ErrorHandler: e.upstreamError,
	}
	e.toPeer = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    roundTripperFunc(e.peerRoundTrip),
		BufferPool:   bufs,
		ErrorHandler: e.upstreamError,
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
	t, dropped, err := compile(snap, e.cfg.Service)
	if err != nil {
		return err
	}
	for _, d := range dropped {
		e.logger.Warn("endpoint dropped from snapshot", telemetry.KeyDetail, d)
	}
	t.lastKnownGood = lkg
	prev := e.table.Load()
	e.table.Store(t)
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
	el, cfg := mtls.ExpireConnections(ln, mtls.Mesh{
		SVID: e.cfg.SVID, Bundle: e.cfg.Bundle, TrustDomain: td, Revoked: e.refuser(telemetry.DirectionInbound),
	}.ServerConfig())
	e.mu.Lock()
	e.inbound = append(e.inbound, el)
	e.mu.Unlock()
	return el, cfg
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
		defer e.logRequest(r, rw, info)
		if !validMethod(r.Method) {
			e.reject(rw, info, http.StatusBadRequest, "bad request", "method is not upper case")
			return
		}
		path, query, err := originTarget(r.RequestURI)
		if err != nil {
			e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
			return
		}
		info.path = path
		e.forward(rw, r, info, svc, path, query)
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

func (e *Engine) serveInbound(w http.ResponseWriter, r *http.Request) {
	rw := newRecorder(w)
	info := &logInfo{direction: telemetry.DirectionInbound, destination: e.cfg.Service.String(), start: time.Now()}
	defer e.logRequest(r, rw, info)

	peer, err := peerID(r, time.Now())
	if err != nil {
		// The TLS layer requires a verified SVID at the handshake; the
		// connection may outlive the certificate, so expiry is checked
		// for every request.
		e.reject(rw, info, http.StatusForbidden, "forbidden", err.Error())
		return
	}
	info.source = peer
	if !validMethod(r.Method) {
		e.reject(rw, info, http.StatusBadRequest, "bad request", "method is not upper case")
		return
	}
	path, query, err := originTarget(r.RequestURI)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	info.path = path
	t := e.table.Load()
	if t == nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "proxy not ready", "no snapshot yet")
		return
	}
	// A revoked peer's connections are closed when the snapshot arrives;
	// this covers requests already read from them.
	if t.revoked.Contains(r.TLS.PeerCertificates[0]) {
		e.reject(rw, info, http.StatusForbidden, "forbidden", "peer certificate revoked")
		return
	}
	if e.cfg.App == "" {
		e.reject(rw, info, http.StatusServiceUnavailable, "no such service", "client-only proxy has no app")
		return
	}
	dec := t.inbound.Decide(&policy.Request{
		Source: policy.Source{ID: peer, Services: t.peers[peer]},
		Method: r.Method,
		Path:   path,
	})
	info.setDecision(dec)
	if !dec.Allow {
		e.reject(rw, info, http.StatusForbidden, "forbidden", "")
		return
	}

	stripIdentityHeaders(r.Header)
	r.Header.Set(xfcc, "By="+e.selfID()+";URI="+peer)
	setTarget(r, "http", e.cfg.App, e.cfg.Service.Host(), path, query)
	e.toApp.ServeHTTP(rw, r)
}

func (e *Engine) serveOutbound(w http.ResponseWriter, r *http.Request) {
	rw := newRecorder(w)
	info := &logInfo{direction: telemetry.DirectionOutbound, source: e.selfID(), start: time.Now()}
	defer e.logRequest(r, rw, info)

	if r.Method == http.MethodConnect {
		e.reject(rw, info, http.StatusMethodNotAllowed, "CONNECT is not supported", "connect")
		return
	}
	if !validMethod(r.Method) {
		e.reject(rw, info, http.StatusBadRequest, "bad request", "method is not upper case")
		return
	}
	host, target, err := outboundTarget(r)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, err.Error(), err.Error())
		return
	}
	info.destination = host
	path, query, err := originTarget(target)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	info.path = path
	svc, err := identity.ServiceFromHost(host, e.cfg.Service.Namespace)
	if err != nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "no such service", "host is not a mesh service")
		return
	}
	info.destination = svc.String()
	e.forward(rw, r, info, svc, path, query)
}

// forward authorizes a request as the caller and sends it to an endpoint of
// svc.
func (e *Engine) forward(rw *recorder, r *http.Request, info *logInfo, svc identity.ServiceRef, path, query string) {
	t := e.table.Load()
	if t == nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "proxy not ready", "no snapshot yet")
		return
	}
	name := svc.String()
	dest := t.dests[name]
	if dest == nil {
		if _, exists := t.services[name]; exists {
			info.decision, info.reason = telemetry.DecisionDeny, policy.ReasonNoAllowMatch.String()
			e.reject(rw, info, http.StatusForbidden, "forbidden", "")
			return
		}
		e.reject(rw, info, http.StatusServiceUnavailable, "no such service", "unknown service")
		return
	}
	dec := dest.index.Decide(&policy.Request{Method: r.Method, Path: path})
	info.setDecision(dec)
	if !dec.Allow {
		e.reject(rw, info, http.StatusForbidden, "forbidden", "")
		return
	}
	ep, ok := dest.pick()
	if !ok {
		e.reject(rw, info, http.StatusServiceUnavailable, "no healthy upstream", "no endpoints")
		return
	}
	info.upstream = ep.addr
	stripIdentityHeaders(r.Header)
	r.Header.Del("Proxy-Authorization")
	setTarget(r, "https", ep.addr, dest.host, path, query)
	e.toPeer.ServeHTTP(rw, r)
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
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
}

// xfcc is the canonical name of the identity header the inbound side sets.
const xfcc = "X-Forwarded-Client-Cert"

// peerRoundTrip sends a request on a pooled connection to the endpoint in
// its URL, which must present the identity the current snapshot names for it.
func (e *Engine) peerRoundTrip(req *http.Request) (*http.Response, error) {
	t := e.table.Load()
	id, ok := t.idByAddr[req.URL.Host]
	if !ok {
		return nil, &connectError{err: fmt.Errorf("endpoint %s is no longer in the snapshot", req.URL.Host)}
	}
	return e.pool.roundTrip(req, poolKey{addr: req.URL.Host, id: id})
}

// upstreamError answers when the app or a peer cannot be reached or fails.
func (e *Engine) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusBadGateway, "bad gateway"
	var ce *connectError
	var oe *net.OpError
	switch {
	case errors.Is(err, context.Canceled):
		status, msg = 499, "client closed request"
	case errors.As(err, &ce), errors.As(err, &oe) && oe.Op == "dial":
		status, msg = http.StatusServiceUnavailable, "upstream unavailable"
	}
	if rw, ok := w.(*recorder); ok {
		rw.detail = err.Error()
	}
	e.logger.Debug("upstream error", telemetry.KeyPath, r.URL.Path, telemetry.KeyErr, err)
	if status != 499 {
		http.Error(w, msg, status)
	}
}

// reject answers with an opaque body. What caused it goes to the access log
// only: for a denial the decision and its reason, for anything else detail.
func (e *Engine) reject(rw *recorder, info *logInfo, status int, body, detail string) {
	if status == http.StatusForbidden {
		info.decision = telemetry.DecisionDeny
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
// must still be valid at now.
func peerID(r *http.Request, now time.Time) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("no peer certificate")
	}
	leaf := r.TLS.PeerCertificates[0]
	if now.After(leaf.NotAfter) {
		return "", errors.New("peer certificate expired")
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return "", err
	}
	return id.String(), nil
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
