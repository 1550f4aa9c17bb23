package proxy

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bulwarkmesh/bulwark/internal/graph"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// logInfo collects what the access log line of one request says.
type logInfo struct {
	direction   string
	source      string
	destination string
	upstream    string
	path        string
	decision    string
	reason      string
	// detail says why a request failed that no policy decided (bad
	// request, no endpoints, upstream errors).
	detail string
	// policy is "ns/name" of the deciding policy and rule its rule; ""
	// when no rule decided.
	policy string
	rule   int
	// label is the reason label of the decision, labelNone when none was
	// taken.
	label reasonLabel
	// denied is the status of a denial by the engine (401 or 403), 0 for
	// anything else.
	denied int
	// audit is the AUDIT policy ("ns/name") that matched, if any; dryRun
	// what a dry-run policy would have changed ("would deny by
	// ns/name#ruleN"), if anything.
	audit  string
	dryRun string
	// route is the route rule that matched ("route/rule"), fault the
	// fault injected ("delay", "abort"), attempts the tries made when
	// more than one.
	route    string
	fault    string
	attempts int
	start    time.Time
	// query is the raw query as sent (logged masked).
	query string
	// span is the request's span, nil when tracing is off (trace.go).
	span trace.Span
	// edge marks a request of a gateway's listener (edge.go): listener
	// names it, clientIP is the client's address and gatewayRoute the
	// Gateway route that took it.
	edge         bool
	listener     string
	clientIP     string
	gatewayRoute string
}

func (i *logInfo) setDecision(d *policy.Decision) {
	if d.Allow {
		i.decision = telemetry.DecisionAllow
	} else {
		i.decision = telemetry.DecisionDeny
	}
	i.reason = d.Reason.String()
	i.label = labelOf(d.Reason)
	if d.ConditionError && !d.Allow {
		i.label = labelConditionError
		i.reason += " (a condition failed to evaluate)"
	}
	i.policy, i.rule = d.Policy, d.Rule
	if d.Audit {
		i.audit = d.AuditPolicy
	}
	if dr := &d.DryRun; dr.Differs {
		would := "would deny by "
		if dr.Allow {
			would = "would allow by "
		}
		i.dryRun = would + policyRule(dr.Policy, dr.Rule)
	}
}

// policyRule is "ns/name#ruleN", or "ns/name" for an unknown rule.
func policyRule(policy string, rule int) string {
	if rule < 0 {
		return policy
	}
	return policy + "#rule" + strconv.Itoa(rule)
}

// finish accounts for a request once it is answered: the counters, the
// denial (process log, OnDeny) and the access log line.
func (e *Engine) finish(r *http.Request, rw *recorder, info *logInfo) {
	status, g := rw.status(), grpcStatusOf(rw)
	e.metrics.count(info, status, g)
	e.countService(r, info, status, g)
	if info.denied != 0 {
		e.denied(r, info)
	}
	if e.cfg.OnRequest != nil && info.source != "" && info.destination != "" {
		// Between sidecars every request is mTLS; an egress destination
		// (a host, not namespace/name) is not.
		e.cfg.OnRequest(graph.Observation{
			Direction: info.direction, Source: info.source, Destination: info.destination, Method: r.Method,
			Path: info.path, Status: status, Denied: info.denied != 0, DryRunDenied: strings.HasPrefix(info.dryRun, "would deny"),
			MTLS:    info.direction == telemetry.DirectionInbound || strings.IndexByte(info.destination, '/') >= 0,
			Latency: time.Since(info.start),
		})
	}
	e.endSpan(r, info, status)
	e.logRequest(r, rw, info, status, g)
}

// maxDenialMethod and maxDenialReason bound what a Denial carries (the
// control plane refuses longer ones).
const (
	maxDenialMethod = 32
	maxDenialReason = 128
)

// denied logs a denial (rate-limited per edge) and passes it to OnDeny
// when its caller and path are known (a peer without a valid SVID is
// refused before the path is read).
func (e *Engine) denied(r *http.Request, info *logInfo) {
	d := Denial{
		Direction: info.direction, Source: info.source, Destination: info.destination,
		Method: cut(r.Method, maxDenialMethod), Path: cutPath(info.path), Policy: info.policy, Rule: info.rule,
		Reason: cut(e.redact.Text(info.reason), maxDenialReason), Status: info.denied,
	}
	if d.Policy == "" {
		d.Rule = -1
	}
	e.denies.log(&d)
	// A tunnel (CONNECT) has no path; any other request denied before its
	// path was read is not reported.
	if e.cfg.OnDeny != nil && d.Source != "" && d.Destination != "" && (d.Path != "" || r.Method == http.MethodConnect) {
		e.cfg.OnDeny(d)
	}
}

// cut returns s cut at n bytes, at a UTF-8 boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// logHeader is a request header the access log line carries: its
// canonical name and its key in the line (lower case).
type logHeader struct{ canonical, key string }

// Bounds of what the access log line carries of a request (after
// redaction).
const (
	maxLogQuery     = 1 << 10
	maxLogUserAgent = 256
	maxLogRequestID = 128
	maxLogHeader    = 256
)

// logRequest writes the access log line. Denials are logged at Warn so they
// stand out. What the request carries (query, user agent, request ID, the
// headers of Config.LogHeaders) is masked by the Redactor and cut; the
// body is never logged.
func (e *Engine) logRequest(r *http.Request, rw *recorder, info *logInfo, status int, g grpcLabel) {
	level := slog.LevelInfo
	if info.decision == telemetry.DecisionDeny {
		level = slog.LevelWarn
	}
	if !e.access.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String(telemetry.KeyDirection, info.direction),
		slog.String(telemetry.KeySource, info.source),
		slog.String(telemetry.KeyDestination, info.destination),
		slog.String(telemetry.KeyMethod, r.Method),
		slog.String(telemetry.KeyPath, info.path),
		slog.Int(telemetry.KeyStatus, status),
		slog.Float64(telemetry.KeyDurationMS, float64(time.Since(info.start).Microseconds())/1000),
	}
	if info.decision != "" {
		attrs = append(attrs, slog.String(telemetry.KeyDecision, info.decision))
	}
	if info.reason != "" {
		attrs = append(attrs, slog.String(telemetry.KeyReason, e.redact.Text(info.reason)))
	}
	if info.policy != "" {
		attrs = append(attrs, slog.String(telemetry.KeyPolicy, policyRule(info.policy, info.rule)))
	}
	if info.audit != "" {
		attrs = append(attrs, slog.Bool(telemetry.KeyAudit, true), slog.String(telemetry.KeyAuditPolicy, info.audit))
	}
	if info.dryRun != "" {
		attrs = append(attrs, slog.String(telemetry.KeyDryRun, info.dryRun))
	}
	if info.upstream != "" {
		attrs = append(attrs, slog.String(telemetry.KeyUpstream, info.upstream))
	}
	if g != grpcNone {
		attrs = append(attrs, slog.String(telemetry.KeyGRPCStatus, g.String()))
	}
	if info.route != "" {
		attrs = append(attrs, slog.String(telemetry.KeyRoute, info.route))
	}
	if info.edge {
		attrs = append(attrs, slog.String(telemetry.KeyListener, info.listener), slog.String(telemetry.KeyClientIP, info.clientIP))
		if info.gatewayRoute != "" {
			attrs = append(attrs, slog.String(telemetry.KeyGatewayRoute, info.gatewayRoute))
		}
	}
	if info.fault != "" {
		attrs = append(attrs, slog.String(telemetry.KeyFault, info.fault))
	}
	if info.attempts > 1 {
		attrs = append(attrs, slog.Int(telemetry.KeyAttempts, info.attempts))
	}
	if info.detail != "" {
		attrs = append(attrs, slog.String(telemetry.KeyDetail, e.redact.Text(info.detail)))
	}
	if rw.detail != "" {
		attrs = append(attrs, slog.String(telemetry.KeyErr, e.redact.Text(rw.detail)))
	}
	if info.query != "" {
		attrs = append(attrs, slog.String(telemetry.KeyQuery, cut(e.redact.Query(info.query), maxLogQuery)))
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		attrs = append(attrs, slog.String(telemetry.KeyUserAgent, cut(e.redact.Text(ua), maxLogUserAgent)))
	}
	if id := r.Header.Get("X-Request-Id"); id != "" {
		attrs = append(attrs, slog.String(telemetry.KeyRequestID, cut(e.redact.Text(id), maxLogRequestID)))
	}
	if id := traceID(info); id != "" {
		attrs = append(attrs, slog.String(telemetry.KeyTraceID, id))
	}
	if r.ContentLength > 0 {
		attrs = append(attrs, slog.Int64(telemetry.KeyBytesIn, r.ContentLength))
	}
	attrs = append(attrs, slog.Int64(telemetry.KeyBytesOut, rw.written))
	if len(e.logHeaders) > 0 {
		hs := make([]any, 0, len(e.logHeaders))
		for _, h := range e.logHeaders {
			if vs := r.Header.Values(h.canonical); len(vs) > 0 {
				hs = append(hs, slog.String(h.key, cut(e.redact.Header(h.canonical, strings.Join(vs, ", ")), maxLogHeader)))
			}
		}
		if len(hs) > 0 {
			attrs = append(attrs, slog.Group(telemetry.KeyHeaders, hs...))
		}
	}
	e.access.LogAttrs(r.Context(), level, "request", attrs...)
}

// recorder remembers the status written through it.
type recorder struct {
	http.ResponseWriter
	code   int
	detail string
	// written counts the response body bytes written through it.
	written int64
}

func newRecorder(w http.ResponseWriter) *recorder { return &recorder{ResponseWriter: w} }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer (flush,
// hijack for upgrades).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	if r.code == 0 {
		return 499 // nothing was written: the client went away
	}
	return r.code
}
