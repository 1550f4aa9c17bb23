package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// The forwarding loop of an outbound request, after authorization:
//
//	route (first matching rule of the destination's Routes)
//	  -> redirect | fault (delay, abort) | header edits
//	  -> version (weighted backends) -> mirror a copy
//	  -> circuit breaker (maxRequests: 503 at once when full)
//	  -> tries: balancer pick (not ejected, not tried yet) -> pooled HTTP/2
//	     stream -> classify -> outlier detection -> retry when the
//	     condition is configured, the method allows it, the body can be
//	     sent again and the retry budget has room, after a jittered backoff
//
// The request's timeout bounds all of it (an upgrade only until the
// upstream answers: an established tunnel outlives it); a per-try timeout
// bounds each try until its response headers.

// maxReplayBody is the largest request body kept to be sent again by a
// retry (or a mirror); a longer body is streamed and its request is retried
// only when it could not be sent at all.
const maxReplayBody = 64 << 10

// fwdKey is the context key of a request's fwdState.
type fwdKey struct{}

// fwdState is what the peer transport needs to know of one outbound
// request, and what it reports back for the access log.
type fwdState struct {
	dest  *destination
	set   *subset
	retry *retryPolicy
	rule  *routeRule
	hash  uint64
	// body is the buffered request body, nil when the body is streamed
	// (or empty).
	body    []byte
	upgrade bool

	upstream string
	attempts int
}

// Errors of the forwarding loop, answered by upstreamError.
var (
	errNoEndpoint    = errors.New("no healthy endpoint")
	errPerTryTimeout = errors.New("per-try timeout")
)

// overflowError is a circuit breaker limit reached in the pool.
type overflowError struct{ what string }

func (e *overflowError) Error() string { return "circuit breaker open: " + e.what }

// forward authorizes a request as the caller and sends it to an endpoint of
// svc; authority is the host[:port] the app addressed.
func (e *Engine) forward(rw *recorder, r *http.Request, info *logInfo, svc identity.ServiceRef, authority, path, query string) {
	t := e.table.Load()
	if t == nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "proxy not ready", "no snapshot yet")
		return
	}
	name := svc.String()
	dest := t.dests[name]
	if dest == nil {
		if _, exists := t.services[name]; exists {
			info.decision, info.reason, info.label = telemetry.DecisionDeny, policy.ReasonNoAllowMatch.String(), labelNoAllowMatch
			e.reject(rw, info, http.StatusForbidden, "forbidden", "")
			return
		}
		e.reject(rw, info, http.StatusServiceUnavailable, "no such service", "unknown service")
		return
	}
	_, port, err := hostPort(authority, defaultPort)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return
	}
	if !e.authorizeOutbound(rw, r, info, dest, port, path, query) {
		return
	}
	if dest.external != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", "an external service is reached by its host name through the outbound listener")
		return
	}
	if dest.protocol == protocolTCP {
		e.reject(rw, info, http.StatusBadRequest, "bad request", "a tcp service is reached through a per-upstream port")
		return
	}

	// Only the proxy asserts identity: identity headers from the app are
	// gone before routing looks at headers. The edge removed the client's
	// and set its own (edge.go).
	if !info.edge {
		stripIdentityHeaders(r.Header)
		r.Header.Del("Proxy-Authorization")
	}
	e.injectTrace(info, r.Header)

	// Routing.
	tp := dest.traffic
	timeout, retry, set := tp.timeout, tp.retry, dest.all
	var rule *routeRule
	if dest.routes != nil {
		in := routeInput{method: r.Method, path: path, rawQuery: query, header: r.Header, sources: e.selfServices}
		rule = dest.routes.match(&in)
	}
	if rule != nil {
		info.route = rule.name
		if rule.redirect != nil {
			status, loc := redirectLocation(rule.redirect, outboundHost(authority, dest.host), path, query)
			rw.Header().Set("Location", loc)
			rw.WriteHeader(status)
			return
		}
		if f := rule.fault; f != nil {
			delay, abort := f.decide(rand.Float64()*100, rand.Float64()*100)
			if delay > 0 {
				info.fault = "delay"
				tm := time.NewTimer(delay)
				select {
				case <-tm.C:
				case <-r.Context().Done():
					tm.Stop()
					return
				}
			}
			if abort != 0 {
				info.fault = "abort"
				rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
				rw.WriteHeader(abort)
				_, _ = rw.Write([]byte("fault injected\n"))
				return
			}
		}
		if rule.hasTimeout {
			timeout = rule.timeout
		}
		if rr := dest.ruleRetry[rule]; rr != nil {
			retry = rr
		}
		if v := rule.pickVersion(rand.Float64() * 100); v != "" {
			if set = dest.subsets[v]; set == nil {
				e.reject(rw, info, http.StatusServiceUnavailable, "no healthy upstream", "no endpoints of version "+v)
				return
			}
		}
		if rule.reqEdits != nil {
			rule.reqEdits.apply(r.Header)
		}
	}
	if set == nil || len(set.eps) == 0 {
		e.reject(rw, info, http.StatusServiceUnavailable, "no healthy upstream", "no endpoints")
		return
	}

	// Circuit breaker: fail fast rather than queue.
	st := dest.state
	if !st.limiter.TryAcquire() {
		st.counters.breakerOpen.Inc()
		e.reject(rw, info, http.StatusServiceUnavailable, "upstream overloaded", "circuit breaker open: maxRequests")
		return
	}
	defer st.limiter.Release()

	fs := &fwdState{dest: dest, set: set, retry: retry, rule: rule, upgrade: isUpgrade(r.Header)}
	if h := tp.hashOn; h.Header != "" || h.Cookie != "" {
		fs.hash = balancer.HashString(hashValue(r, h))
	}
	if !fs.upgrade && r.ContentLength > 0 && r.ContentLength <= maxReplayBody {
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			e.reject(rw, info, http.StatusBadRequest, "bad request", "read request body: "+err.Error())
			return
		}
		fs.body = buf
	}

	host := dest.host
	if port != defaultPort {
		// The callee decides on the port the app addressed too.
		host += ":" + strconv.Itoa(port)
	}
	setTarget(r, "https", "endpoint.invalid", host, path, query)
	if rule != nil && rule.mirror != nil && !fs.upgrade && rule.mirror.mirrored(rand.Float64()*100) && (r.ContentLength == 0 || fs.body != nil) {
		if ms := dest.subsets[rule.mirror.version]; ms != nil && len(ms.eps) > 0 {
			e.mirror(r, ms, fs.body)
		}
	}

	ctx := r.Context()
	if timeout > 0 {
		// An upgrade is bounded until its tunnel is established.
		var cancel context.CancelFunc
		ctx, cancel = withRequestTimeout(ctx, timeout, fs.upgrade)
		defer cancel()
	}
	e.toPeer.ServeHTTP(rw, r.WithContext(context.WithValue(ctx, fwdKey{}, fs)))
	info.upstream = fs.upstream
	if fs.attempts > 1 {
		info.attempts = fs.attempts
	}
}

// upgradeTimersKey is the context key of the timers of withRequestTimeout
// bounding an upgrade request (a []*time.Timer, the outermost first).
type upgradeTimersKey struct{}

// withRequestTimeout bounds a request by d: all of it, or for an upgrade
// (isUpgrade) only until the upstream answers (upgradeAnswered), so that
// an established tunnel outlives it while a client cannot escape the
// timeout by asking for an upgrade the service never answers. An expired
// upgrade's context has the cause context.DeadlineExceeded.
func withRequestTimeout(parent context.Context, d time.Duration, upgrade bool) (context.Context, context.CancelFunc) {
	if !upgrade {
		return context.WithTimeout(parent, d)
	}
	ctx, cancel := context.WithCancelCause(parent)
	t := time.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	prev, _ := parent.Value(upgradeTimersKey{}).([]*time.Timer)
	ctx = context.WithValue(ctx, upgradeTimersKey{}, append(prev[:len(prev):len(prev)], t))
	return ctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// upgradeAnswered ends the timeouts of an upgrade request (ctx is its
// context) once the upstream switched protocols: the tunnel then lasts as
// long as its connection. Any other answer stays bounded by them. An
// upgrade whose timeout expired first gets an error wrapping
// context.DeadlineExceeded (504), and a late 101 is dropped.
func upgradeAnswered(ctx context.Context, resp *http.Response, err error) (*http.Response, error) {
	expired := errors.Is(context.Cause(ctx), context.DeadlineExceeded)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		if err != nil && expired {
			return nil, fmt.Errorf("upgrade: %w", context.DeadlineExceeded)
		}
		return resp, err
	}
	timers, _ := ctx.Value(upgradeTimersKey{}).([]*time.Timer)
	for _, t := range timers {
		if !t.Stop() {
			expired = true
		}
	}
	if expired {
		resp.Body.Close()
		return nil, fmt.Errorf("upgrade: %w", context.DeadlineExceeded)
	}
	return resp, nil
}

// outboundHost is the host the app addressed (authority), or the
// service's host when it named none.
func outboundHost(authority, host string) string {
	if authority != "" {
		return authority
	}
	return host
}

// hashValue is the request value a consistent-hash balancer hashes: the
// header or the cookie named.
func hashValue(r *http.Request, h config.HashOn) string {
	if h.Header != "" {
		return r.Header.Get(h.Header)
	}
	if c, err := r.Cookie(h.Cookie); err == nil {
		return c.Value
	}
	return ""
}

// authorizeOutbound decides the request as the caller (both ends enforce);
// it answers 403 itself and returns false for a denial.
func (e *Engine) authorizeOutbound(rw *recorder, r *http.Request, info *logInfo, dest *destination, port int, path, query string) bool {
	// The caller knows who it is and what it calls; the callee decides on
	// the rest (its view of the policies is the more permissive one).
	req := policy.Request{
		Source:  policy.Source{ID: info.source, Services: e.selfServices},
		Method:  r.Method,
		Host:    dest.host,
		Port:    port,
		Path:    path,
		Query:   query,
		Headers: r.Header,
		Time:    info.start,
	}
	return e.decide(rw, info, dest.index, &req)
}

// decide decides req with ix and records the decision in info; for a
// denial it answers 403 (opaque) itself and returns false.
func (e *Engine) decide(rw *recorder, info *logInfo, ix *policy.Index, req *policy.Request) bool {
	dec := ix.Decide(req)
	info.setDecision(&dec)
	if !dec.Allow {
		e.reject(rw, info, http.StatusForbidden, "forbidden", "")
		return false
	}
	return true
}

// idempotent reports whether a method may be sent twice without changing
// the result (RFC 9110 §9.2.2).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// peerRoundTrip runs the tries of one outbound request (see the top of this
// file). A request without forwarding state goes to the endpoint in its URL.
func (e *Engine) peerRoundTrip(req *http.Request) (*http.Response, error) {
	fs, _ := req.Context().Value(fwdKey{}).(*fwdState)
	t := e.table.Load()
	if fs == nil {
		id, ok := t.idByAddr[req.URL.Host]
		if !ok {
			return nil, &connectError{err: errors.New("endpoint " + req.URL.Host + " is no longer in the snapshot")}
		}
		return e.pool.roundTrip(req, poolKey{addr: req.URL.Host, id: id}, nil, 0)
	}
	st := fs.dest.state
	if fs.upgrade {
		idx := pickFor(fs, 0)
		if idx < 0 {
			return nil, errNoEndpoint
		}
		ep := fs.set.eps[idx]
		fs.upstream, fs.attempts = ep.addr, 1
		out := withEndpoint(req, req.Context(), ep.addr)
		resp, err := e.upgradeToPeer(out, poolKey{addr: ep.addr, id: ep.id})
		return upgradeAnswered(req.Context(), resp, err)
	}
	rp := fs.retry
	st.budget.Request()
	var tried uint64
	streamed := false // the streamed body was handed to a try
	for attempt := 0; ; attempt++ {
		idx := pickFor(fs, tried)
		if idx < 0 && attempt > 0 {
			// Every endpoint was tried: try one again (a connect failure
			// or a reset is often transient).
			idx = pickFor(fs, 0)
		}
		if idx < 0 {
			return nil, errNoEndpoint
		}
		ep := fs.set.eps[idx]
		if idx < 64 {
			tried |= 1 << idx
		}
		fs.upstream, fs.attempts = ep.addr, attempt+1

		tctx, cancel := context.WithCancel(req.Context())
		out := withEndpoint(req, tctx, ep.addr)
		switch {
		case fs.body != nil:
			out.Body = io.NopCloser(bytes.NewReader(fs.body))
			out.ContentLength = int64(len(fs.body))
		case req.Body != nil && req.Body != http.NoBody:
			streamed = true
		}
		var timedOut atomic.Bool
		var timer *time.Timer
		if rp.perTry > 0 {
			timer = time.AfterFunc(rp.perTry, func() { timedOut.Store(true); cancel() })
		}
		start := time.Now()
		done := fs.set.bal.Start(idx)
		resp, err := e.pool.roundTrip(out, poolKey{addr: ep.addr, id: ep.id}, st.pending, fs.dest.traffic.limits.MaxConnections)
		if timer != nil && !timer.Stop() && err == nil {
			// The timer fired as the headers arrived: the try's context
			// is cancelled, so its body would be cut. It timed out.
			resp.Body.Close()
			resp, err = nil, errPerTryTimeout
		}
		if err != nil && timedOut.Load() {
			err = errPerTryTimeout
		}
		var ov *overflowError
		if errors.As(err, &ov) {
			done.Finish(0, false)
			cancel()
			st.counters.breakerOpen.Inc()
			return nil, err
		}
		cond, result := classify(resp, err)
		done.Finish(time.Since(start), result != resilience.Success)
		if !fs.dest.traffic.noEject && st.outlier.Report(ep.addr, result) {
			st.counters.ejections.Inc()
			e.logger.Warn("endpoint ejected", telemetry.KeyDestination, fs.dest.ref.String(), telemetry.KeyUpstream, ep.addr)
		}
		retry := cond != (retryOn{}) && attempt < rp.attempts && req.Context().Err() == nil &&
			(cond.conds&rp.on.conds != 0 || cond.grpc&rp.on.grpc != 0) &&
			(cond.conds == condConnect || idempotent(req.Method) || rp.nonIdempotent) &&
			(!streamed || cond.conds == condConnect && errors.As(err, new(*connectError)))
		if !retry || !st.budget.TryRetry() {
			if err != nil || resp == nil {
				cancel()
				return nil, err
			}
			resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxReplayBody))
			resp.Body.Close()
		}
		cancel()
		st.counters.retries.Inc()
		wait := resilience.Backoff(rp.backoffBase, rp.backoffMax, attempt+1, rand.Int64N)
		tm := time.NewTimer(wait)
		select {
		case <-tm.C:
		case <-req.Context().Done():
			tm.Stop()
			return nil, req.Context().Err()
		}
	}
}

// pickFor picks an endpoint of the request's subset that is neither
// ejected nor tried yet (tried: a bit per endpoint index); when outlier
// detection has ejected every one left, an ejected endpoint is better than
// none (Envoy's panic threshold does the same).
func pickFor(fs *fwdState, tried uint64) int {
	set, outlier := fs.set, fs.dest.state.outlier
	isTried := func(i int) bool { return i < 64 && tried&(1<<i) != 0 }
	idx := set.bal.Pick(fs.hash, func(i int) bool { return isTried(i) || outlier.Ejected(set.eps[i].addr) })
	if idx < 0 {
		idx = set.bal.Pick(fs.hash, isTried)
	}
	return idx
}

// withEndpoint returns a shallow copy of req with ctx, sent to addr.
func withEndpoint(req *http.Request, ctx context.Context, addr string) *http.Request {
	out := req.WithContext(ctx)
	u := *req.URL
	u.Host = addr
	out.URL = &u
	return out
}

// classify says which retry conditions a try's outcome meets and what it
// tells outlier detection.
func classify(resp *http.Response, err error) (retryOn, resilience.Result) {
	var ce *connectError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		return retryOn{conds: condConnect}, resilience.GatewayError
	case errors.Is(err, errPerTryTimeout):
		return retryOn{conds: condGateway | cond5xx}, resilience.GatewayError
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, errPoolClosed):
		return retryOn{}, resilience.Success // the caller gave up: not the endpoint's fault
	default:
		return retryOn{conds: condReset}, resilience.GatewayError
	}
	switch c := resp.StatusCode; {
	case c == http.StatusBadGateway || c == http.StatusServiceUnavailable || c == http.StatusGatewayTimeout:
		return retryOn{conds: condGateway | cond5xx}, resilience.GatewayError
	case c >= 500:
		return retryOn{conds: cond5xx}, resilience.ServerError
	}
	// A gRPC error before any message comes as a trailers-only response:
	// grpc-status in the headers.
	if gs := resp.Header.Get("Grpc-Status"); gs != "" && gs != "0" {
		if n, err := strconv.Atoi(gs); err == nil && n > 0 && n < 32 {
			return retryOn{grpc: 1 << n}, resilience.Success
		}
	}
	return retryOn{}, resilience.Success
}

// cancelOnClose ends a try's context when its response body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// maxMirrors bounds the mirrored requests in flight: past it, copies are
// dropped rather than queued (a mirror must never slow the real traffic).
const maxMirrors = 64

// mirror sends a copy of r (whose body is body) to an endpoint of set in
// the background and discards the answer.
func (e *Engine) mirror(r *http.Request, set *subset, body []byte) {
	select {
	case e.mirrors <- struct{}{}:
	default:
		e.metrics.mirrorDropped.Inc()
		return
	}
	idx := set.bal.Pick(0, nil)
	if idx < 0 {
		<-e.mirrors
		return
	}
	ep := set.eps[idx]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	out := withEndpoint(r, ctx, ep.addr)
	out.Header = r.Header.Clone()
	// As ReverseProxy does for the request itself: hop-by-hop fields do
	// not cross (the HTTP/2 transport refuses most of them), "Te:
	// trailers" does (gRPC).
	removeHopHeaders(out.Header)
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		out.Header.Set("Te", "trailers")
	}
	out.Body, out.ContentLength = http.NoBody, 0
	if len(body) > 0 {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	out.RequestURI = ""
	go func() {
		defer func() { <-e.mirrors }()
		defer cancel()
		resp, err := e.pool.roundTrip(out, poolKey{addr: ep.addr, id: ep.id}, nil, 0)
		if err != nil {
			e.logger.Debug("mirror failed", telemetry.KeyUpstream, ep.addr, telemetry.KeyErr, err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
}

// modifyResponse applies the matched route rule's response header edits.
func (e *Engine) modifyResponse(resp *http.Response) error {
	if fs, _ := resp.Request.Context().Value(fwdKey{}).(*fwdState); fs != nil && fs.rule != nil && fs.rule.respEdits != nil {
		fs.rule.respEdits.apply(resp.Header)
	}
	return nil
}

// rateLimited enforces the service's rate limits on an inbound request the
// policies allowed: the TrafficPolicy's, then the matching route rule's. It
// answers 429 with Retry-After itself and returns true when over a limit.
func (e *Engine) rateLimited(rw *recorder, info *logInfo, t *table, peer string, r *http.Request, path, query string) bool {
	if t.rate != nil {
		if ok, after := t.rate.allow(peer); !ok {
			e.tooMany(rw, info, after, "rate limit of the service")
			return true
		}
	}
	if t.inRoutes == nil || len(t.ruleRates) == 0 {
		return false
	}
	in := routeInput{method: r.Method, path: path, rawQuery: query, header: r.Header, sources: t.peers[peer]}
	rule := t.inRoutes.match(&in)
	if rule == nil {
		return false
	}
	if rl := t.ruleRates[rule]; rl != nil {
		if ok, after := rl.allow(peer); !ok {
			e.tooMany(rw, info, after, "rate limit of route "+rule.name)
			return true
		}
	}
	return false
}

// tooMany answers 429 with the seconds until a token is back.
func (e *Engine) tooMany(rw *recorder, info *logInfo, after time.Duration, detail string) {
	e.metrics.rateLimited.Inc()
	secs := int(math.Ceil(after.Seconds()))
	if secs < 1 {
		secs = 1
	}
	rw.Header().Set("Retry-After", strconv.Itoa(secs))
	e.reject(rw, info, http.StatusTooManyRequests, "rate limited", detail)
}

// rateLimit is a compiled RateLimit: its buckets and their key.
type rateLimit struct {
	limiter *resilience.RateLimiter
	perPeer bool
}

func (r *rateLimit) allow(peer string) (bool, time.Duration) {
	key := ""
	if r.perPeer {
		key = peer
	}
	return r.limiter.Allow(key)
}

// maxRateKeys bounds the buckets of one rate limit (one per caller
// identity): a caller cycling identities cannot grow memory without bound.
const maxRateKeys = 10000
