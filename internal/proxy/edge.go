package proxy

// The edge: the data path of `bulwark gateway`, the mesh's ingress. The
// gateway is a workload of the mesh (a client-only proxy: it has no app and
// no inbound listener); the composition root serves Edge on its HTTPS and
// HTTP listeners and ServePassthrough on its TLS ones. A request from
// outside goes, in order (each refusal opaque, its reason in the access
// log; docs/gateway-data-path.md tells the whole path):
//
//	no Gateway in the snapshot (503) -> request-target length (414) ->
//	header field count (431) -> hygiene, host not a DNS name or an IP
//	(400) -> host not covered by the served certificate (421) -> route by
//	listener, host and matches (404) -> body limit (413) -> CORS preflight
//	(204/403) -> edge hygiene (client X-Forwarded-*, Forwarded, XFCC,
//	X-Bulwark-*, X-Request-Id, traceparent, tracestate,
//	Proxy-Authorization removed) -> the spec's per-client-IP rate limits
//	(429) -> route's JWT (401; 503 when a provider is missing) -> the
//	gateway's policies on the client's IP, principal and claims and the
//	listener's port (403, fails closed) -> other rate limits (429) ->
//	rewrite and header edits -> X-Forwarded-For, -Proto, -Host and
//	X-Request-Id set -> forward as an outbound request of the gateway's
//	identity (caller-side authorization, mesh Routes, pooled HTTP/2 over
//	mTLS to the service's sidecar), the route's timeout bounding it until
//	the service answers.

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Edge returns the handler of the gateway listener named listener (of the
// Gateway in the current snapshot); tls says whether the listener
// terminated TLS.
func (e *Engine) Edge(listener string, tls bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.serveEdge(w, r, listener, tls)
	})
}

// Gateway returns the Gateway of the current snapshot (decoded and
// validated once, at Apply; nil when the snapshot has none), the TLS
// secrets of the snapshot by name, and the snapshot version. The returned
// values must not be modified.
func (e *Engine) Gateway() (gw *config.Gateway, secrets map[string]*apiv1.TLSSecret, version int64) {
	t := e.table.Load()
	if t == nil || t.gateway == nil {
		if t != nil {
			return nil, nil, t.version
		}
		return nil, nil, 0
	}
	return t.gateway.gw, t.gateway.secrets, t.version
}

// edgeHeaders are the request headers the edge removes from what a client
// sends beyond the identity headers (stripIdentityHeaders): lower case,
// '_' read as '-'.
var edgeHeaders = map[string]bool{
	"x-request-id": true, "traceparent": true, "tracestate": true, "proxy-authorization": true,
}

// stripEdgeHeaders removes edgeHeaders from a client's request.
func stripEdgeHeaders(h http.Header) {
	for k := range h {
		if edgeHeaders[strings.ToLower(strings.ReplaceAll(k, "_", "-"))] {
			delete(h, k)
		}
	}
}

// edgeConnection removes the headers a client's Connection field names
// now, and leaves in it only "Upgrade" (when it was there): the reverse
// proxy removes whatever Connection names from the request it sends, which
// would otherwise let a client remove the headers the gateway sets
// (X-Forwarded-For, X-Request-Id, claims-to-headers).
func edgeConnection(h http.Header) {
	vs := h["Connection"]
	if len(vs) == 0 {
		return
	}
	upgrade := false
	for _, v := range vs {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			switch {
			case name == "":
			case strings.EqualFold(name, "upgrade"):
				upgrade = true
			case strings.EqualFold(name, "close"), strings.EqualFold(name, "keep-alive"):
			default:
				h.Del(name)
			}
		}
	}
	if upgrade {
		h["Connection"] = []string{"Upgrade"}
	} else {
		delete(h, "Connection")
	}
}

// newRequestID returns a random 128-bit request ID in hex.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// edgeWriter adds the CORS headers and the route's response header edits
// to the answer, when it is written.
type edgeWriter struct {
	http.ResponseWriter
	wrote bool
	// origin is the allowed Origin of the request ("" for none), cors the
	// route's policy (nil for a route without one).
	origin string
	cors   *edgeCORS
	// edits are the route's response header edits, set once the request
	// is forwarded.
	edits *headerEdits
}

// corsPrefix starts the names of the CORS response headers.
const corsPrefix = "Access-Control-"

func (w *edgeWriter) WriteHeader(code int) {
	if !w.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.wrote = true
		h := w.ResponseWriter.Header()
		if w.edits != nil {
			w.edits.apply(h)
		}
		if w.cors != nil {
			// The service's own CORS headers are replaced by the
			// gateway's (none for an origin the policy does not allow).
			for k := range h {
				if len(k) >= len(corsPrefix) && strings.EqualFold(k[:len(corsPrefix)], corsPrefix) {
					delete(h, k)
				}
			}
			if w.origin != "" {
				h.Set("Access-Control-Allow-Origin", w.origin)
				if w.cors.credentials {
					h.Set("Access-Control-Allow-Credentials", "true")
				}
				if w.cors.expose != "" {
					h.Set("Access-Control-Expose-Headers", w.cors.expose)
				}
			}
			h.Add("Vary", "Origin")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *edgeWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *edgeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (e *Engine) serveEdge(w http.ResponseWriter, r *http.Request, listener string, tls bool) {
	ew := &edgeWriter{ResponseWriter: w}
	rw := newRecorder(ew)
	ip := remoteIP(r.RemoteAddr)
	info := &logInfo{direction: telemetry.DirectionOutbound, source: e.selfID(), start: time.Now(), edge: true, listener: listener}
	if ip.IsValid() {
		info.clientIP = ip.String()
	}
	// An edge request starts a trace: the client's is not continued, and
	// its request ID is replaced.
	stripEdgeHeaders(r.Header)
	requestID := newRequestID()
	r.Header["X-Request-Id"] = []string{requestID}
	e.startSpan(r, info, trace.SpanKindServer)
	defer e.finish(r, rw, info)

	// 1. Limits and hygiene.
	t := e.table.Load()
	if t == nil || t.gateway == nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "gateway not ready", "no gateway in the snapshot")
		return
	}
	g := t.gateway
	if len(r.RequestURI) > g.maxURL {
		e.reject(rw, info, http.StatusRequestURITooLong, "uri too long", "request-target of "+strconv.Itoa(len(r.RequestURI))+" bytes")
		return
	}
	fields := 0
	for _, vs := range r.Header {
		fields += len(vs)
	}
	if fields > g.maxHeaders {
		e.reject(rw, info, http.StatusRequestHeaderFieldsTooLarge, "too many header fields", strconv.Itoa(fields)+" header fields")
		return
	}
	path, query, ok := e.hygiene(rw, info, r, r.RequestURI)
	if !ok {
		return
	}
	defPort := 80
	if tls {
		defPort = 443
	}
	host, port, err := hostPort(r.Host, defPort)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	if host != "" && !edgeHost(host) {
		e.reject(rw, info, http.StatusBadRequest, "bad request", "host: not a dns name or an ip address")
		return
	}
	if tls && host != "" && !misdirectedOK(r, host) {
		e.reject(rw, info, http.StatusMisdirectedRequest, "misdirected request", "host not covered by the connection's certificate")
		return
	}
	// Policies see the port the Gateway declares for the listener, not
	// the one the client names in Host (nor the one the listener is bound
	// to: --listen may move it), as for passthrough.
	if l := g.listeners[listener]; l != nil {
		port = l.Port
	}

	// 2. Route.
	in := routeInput{method: r.Method, path: path, rawQuery: query, header: r.Header}
	route := g.match(listener, host, &in)
	if route == nil {
		e.reject(rw, info, http.StatusNotFound, "not found", "no gateway route")
		return
	}
	info.gatewayRoute, info.destination = route.name, route.svc.String()

	// 3. Body limit: a declared length at once, a streamed body when it
	// goes over (upstreamError answers 413 if nothing was sent yet).
	if r.ContentLength > route.maxBody {
		e.reject(rw, info, http.StatusRequestEntityTooLarge, "request body too large", "content-length "+strconv.FormatInt(r.ContentLength, 10))
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(rw, r.Body, route.maxBody)
	}

	// 4. CORS. On a route with a policy the gateway's CORS headers
	// replace the service's (none for an origin the policy does not
	// allow). A preflight (with one Origin or more) is never forwarded.
	if c := route.cors; c != nil {
		origin, ok := corsOrigin(r.Header)
		allowed := ok && c.allowsOrigin(origin)
		if r.Method == http.MethodOptions && len(r.Header.Values("Origin")) > 0 && len(r.Header.Values("Access-Control-Request-Method")) > 0 {
			e.preflight(rw, info, r, c, origin, allowed)
			return
		}
		ew.cors = c
		if allowed {
			ew.origin = origin
		}
	}

	// 5. Edge hygiene (X-Request-Id, traceparent, tracestate and
	// Proxy-Authorization are gone already).
	stripIdentityHeaders(r.Header)
	edgeConnection(r.Header)

	// 6. The spec's per-client-IP rate limits, before the JWT and the
	// policies: floods of 401s and 403s (token guessing) are limited too.
	clientKey := rateKeyIP(ip)
	for _, rl := range g.rates {
		if rl.limit == nil || !rl.clientIP() {
			continue
		}
		if ok, after := rl.limit.allow(clientKey); !ok {
			e.tooMany(rw, info, after, "gateway rate limit ("+config.GatewayRatePerClientIP+")")
			return
		}
	}

	// 7. JWT.
	if route.unavailable != "" {
		e.reject(rw, info, http.StatusServiceUnavailable, "route unavailable", route.unavailable)
		return
	}
	var principal string
	var claims map[string]any
	if route.authn != nil {
		target := r.RequestURI
		res, err := route.authn.Authenticate(r)
		if err != nil {
			e.unauthenticated(rw, info, err)
			return
		}
		if r.RequestURI != target {
			query = r.URL.RawQuery
			info.query = query
		}
		principal, claims = res.Principal, res.Claims
	}

	// 8. The gateway's policies.
	req := policy.Request{
		Source:  policy.Source{IP: ip, Principal: principal, Claims: claims},
		Method:  r.Method,
		Host:    host,
		Port:    port,
		Path:    path,
		Query:   query,
		Headers: r.Header,
		Time:    info.start,
	}
	if r.TLS != nil {
		req.SNI = r.TLS.ServerName
	}
	if !e.decide(rw, info, t.inbound, &req) {
		return
	}

	// 9. The other rate limits.
	subject := principal
	if subject == "" {
		subject = clientKey
	}
	for i, rates := range [][]*edgeRate{g.rates, route.rates} {
		for _, rl := range rates {
			if rl.limit == nil || (i == 0 && rl.clientIP()) {
				continue
			}
			key := clientKey
			if rl.cfg.Per == config.GatewayRatePerSubject {
				key = subject
			}
			if ok, after := rl.limit.allow(key); !ok {
				e.tooMany(rw, info, after, "gateway rate limit ("+cmp.Or(rl.cfg.Per, config.GatewayRatePerClientIP)+")")
				return
			}
		}
	}

	// 10. Rewrite, header edits, forwarding headers.
	if route.rewrite != nil {
		p, err := rewritePath(route, path)
		if err != nil {
			e.reject(rw, info, http.StatusBadRequest, "bad request", "rewrite: "+err.Error())
			return
		}
		path = p
	}
	if route.reqEdits != nil {
		route.reqEdits.apply(r.Header)
	}
	proto := "http"
	if tls {
		proto = "https"
	}
	r.Header["X-Forwarded-For"] = []string{info.clientIP}
	r.Header["X-Forwarded-Proto"] = []string{proto}
	r.Header["X-Forwarded-Host"] = []string{r.Host}
	r.Header["X-Request-Id"] = []string{requestID}

	// 11. Forward as the gateway.
	ew.edits = route.respEdits
	authority := route.svc.Host()
	if route.port != 0 {
		authority += ":" + strconv.Itoa(route.port)
	}
	// The route's timeout bounds the request until the service answers;
	// an established upgrade (WebSocket) then lasts as long as its
	// connection, as in forward.
	if route.timeout > 0 {
		ctx, cancel := withRequestTimeout(r.Context(), route.timeout, isUpgrade(r.Header))
		defer cancel()
		r = r.WithContext(ctx)
	}
	e.forward(rw, r, info, route.svc, authority, path, query)
}

// misdirectedOK reports whether a request of a TLS connection for host
// (lower case, no port) may be served on it: host is covered by the
// names of the certificate served (WithServedNames; the server name the
// client asked for when they are unknown). An IP literal, a connection
// without a server name, or a certificate without DNS names are not
// checked.
func misdirectedOK(r *http.Request, host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	names, ok := servedNames(r.Context())
	if !ok && r.TLS != nil && r.TLS.ServerName != "" {
		names = []string{r.TLS.ServerName}
	}
	return len(names) == 0 || coveredBy(host, names)
}

// clientIP reports whether the rate limit is keyed by the client's IP
// address (per client-ip, the default).
func (rl *edgeRate) clientIP() bool {
	return cmp.Or(rl.cfg.Per, config.GatewayRatePerClientIP) == config.GatewayRatePerClientIP
}

// corsOrigin returns the request's Origin; ok is false when there is none,
// more than one, or a list.
func corsOrigin(h http.Header) (origin string, ok bool) {
	vs := h.Values("Origin")
	if len(vs) != 1 || vs[0] == "" || strings.ContainsRune(vs[0], ',') {
		return "", false
	}
	return vs[0], true
}

// allowsOrigin reports whether the policy allows origin.
func (c *edgeCORS) allowsOrigin(origin string) bool {
	if c.anyOrigin {
		return origin != "null"
	}
	_, ok := c.origins[origin]
	return ok
}

// corsSafelisted are the request headers a preflight may always ask for
// (the CORS-safelisted request headers).
var corsSafelisted = map[string]bool{
	"accept": true, "accept-language": true, "content-language": true, "content-type": true, "range": true,
}

// preflight answers a CORS preflight: 204 with the Access-Control-Allow-*
// headers when the origin, the method and every requested header are
// allowed, 403 otherwise. It is never forwarded.
func (e *Engine) preflight(rw *recorder, info *logInfo, r *http.Request, c *edgeCORS, origin string, allowed bool) {
	h := rw.Header()
	h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	refuse := func(detail string) {
		info.detail = "cors preflight refused: " + detail
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
		rw.WriteHeader(http.StatusForbidden)
		_, _ = rw.Write([]byte("forbidden\n"))
	}
	if !allowed {
		refuse("origin not allowed")
		return
	}
	methods := r.Header.Values("Access-Control-Request-Method")
	if len(methods) != 1 || !slices.Contains(c.methods, methods[0]) {
		refuse("method not allowed")
		return
	}
	var asked []string
	for _, v := range r.Header.Values("Access-Control-Request-Headers") {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			if _, ok := c.headers[name]; !ok && !corsSafelisted[name] {
				refuse("header not allowed")
				return
			}
			asked = append(asked, name)
		}
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", c.allowMethod)
	switch {
	case len(asked) > 0:
		h.Set("Access-Control-Allow-Headers", strings.Join(asked, ", "))
	case c.allowHeader != "":
		h.Set("Access-Control-Allow-Headers", c.allowHeader)
	}
	h.Set("Access-Control-Max-Age", c.maxAge)
	if c.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	info.detail = "cors preflight"
	rw.WriteHeader(http.StatusNoContent)
}

// rewritePath applies the route's rewrite to the normalized path p; the
// result is normalized again.
func rewritePath(route *edgeRoute, p string) (string, error) {
	rw := route.rewrite
	out := p
	switch {
	case rw.StripPrefix != "":
		s := rw.StripPrefix
		switch {
		case p == s:
			out = "/"
		case strings.HasPrefix(p, s+"/"):
			out = p[len(s):]
		}
	case rw.ReplacePrefix != "":
		prefix, ok := matchedPrefix(route, p)
		if ok {
			rest := p[len(prefix):]
			if strings.HasSuffix(prefix, "/") {
				rest = p[len(prefix)-1:]
			}
			out = strings.TrimSuffix(rw.ReplacePrefix, "/") + rest
			if out == "" {
				out = "/"
			}
		}
	case rw.ReplaceFullPath != "":
		out = rw.ReplaceFullPath
	}
	return pathnorm.Normalize(out)
}

// matchedPrefix returns the path prefix of the first of the route's
// matches whose path prefix p has.
func matchedPrefix(route *edgeRoute, p string) (string, bool) {
	for i := range route.matches {
		c := &route.matches[i].path
		if c.op == routeOpPrefix && c.matchPath(p) {
			return c.value, true
		}
	}
	return "", false
}

// forwardedKept are the headers the inbound side keeps from a gateway
// peer (canonical names): the client's address, scheme and host.
var forwardedKept = [...]string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"}

// keepForwarded is stripIdentityHeaders for a request from a gateway: it
// keeps forwardedKept, exactly as the gateway set them.
func keepForwarded(h http.Header) {
	var kept [len(forwardedKept)][]string
	for i, k := range forwardedKept {
		kept[i] = h[k]
	}
	stripIdentityHeaders(h)
	for i, k := range forwardedKept {
		if kept[i] != nil {
			h[k] = kept[i]
		}
	}
}
