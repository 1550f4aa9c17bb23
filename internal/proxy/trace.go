package proxy

// Tracing. With Config.Tracer set, every request the engine serves gets a
// span, started when the request arrives and ended with its access log
// line:
//
//   - outbound (the app's request): a CLIENT span that continues the
//     trace of the app's W3C traceparent (or starts one); its context
//     replaces the traceparent sent to the peer;
//   - inbound (a peer's request): a SERVER span whose parent is the
//     traceparent the peer sent (the caller sidecar's CLIENT span); its
//     context replaces the traceparent handed to the app, so an app that
//     forwards traceparent to its own calls continues the same trace.
//
// Sampling is the tracer provider's (ParentBased: a sampled parent is
// recorded, see telemetry.TracingConfig). A span that is not sampled is
// not recording: no attribute is built for it, and its context is still
// propagated (so the next hop does not sample the trace on its own).
//
// Span attributes name identities (the caller's SPIFFE ID, verified from
// mTLS inbound, and this proxy's own), the destination service, the decision with its reason and
// policy, the route, the endpoint, the status and the tries. They never
// carry a header value, the query string, a token or a body; the path is
// the normalized path with credential-carrying segments masked
// (telemetry.Redactor.Path). A denied request's span has status Error.

import (
	"context"
	"encoding/hex"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// tracerName names the engine's tracer (the instrumentation scope).
const tracerName = "github.com/bulwarkmesh/bulwark/internal/proxy"

// maxSpanDestination bounds the destination attribute: for a host that
// names no service, it is what the app sent.
const maxSpanDestination = 256

// Span attribute keys.
const (
	attrDirection   = attribute.Key("bulwark.direction")
	attrIdentity    = attribute.Key("bulwark.identity")
	attrSource      = attribute.Key("bulwark.source")
	attrDestination = attribute.Key("bulwark.destination")
	attrDecision    = attribute.Key("bulwark.decision")
	attrReason      = attribute.Key("bulwark.reason")
	attrPolicy      = attribute.Key("bulwark.policy")
	attrRoute       = attribute.Key("bulwark.route")
	attrUpstream    = attribute.Key("bulwark.upstream")
	attrAttempts    = attribute.Key("bulwark.attempts")
	attrMethod      = attribute.Key("http.request.method")
	attrStatus      = attribute.Key("http.response.status_code")
	attrPath        = attribute.Key("url.path")
)

// startSpan starts the span of a request arriving, as a child of the
// traceparent it carries, and keeps it in info; nothing when tracing is
// off.
func (e *Engine) startSpan(r *http.Request, info *logInfo, kind trace.SpanKind) {
	if e.tracer == nil {
		return
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(r.Header))
	_, info.span = e.tracer.Start(ctx, spanName(info.direction, r.Method), trace.WithSpanKind(kind), trace.WithTimestamp(info.start))
}

// spanName is "<direction> <METHOD>", with methods outside the standard
// ones named HTTP (span names stay few).
func spanName(direction, method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return direction + " " + method
	}
	return direction + " HTTP"
}

// injectTrace sets the traceparent (and tracestate) of the request's span
// in h, the headers of the request sent on (to the peer or the app),
// replacing what the sender set. Without a span, h is left as it is. The
// traceparent is written as propagation.TraceContext writes it (version 00),
// in one allocation.
func (e *Engine) injectTrace(info *logInfo, h http.Header) {
	if info.span == nil {
		return
	}
	sc := info.span.SpanContext()
	delete(h, "Tracestate")
	if !sc.IsValid() {
		delete(h, "Traceparent")
		return
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	var buf [55]byte // 00-<32 hex>-<16 hex>-<2 hex>
	b := append(buf[:0], "00-"...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, []byte{byte(sc.TraceFlags() & trace.FlagsSampled)})
	h["Traceparent"] = []string{string(b)}
	if ts := sc.TraceState(); ts.Len() > 0 {
		h["Tracestate"] = []string{ts.String()}
	}
}

// endSpan ends the request's span, first recording what the access log
// line says of it when it is sampled.
func (e *Engine) endSpan(r *http.Request, info *logInfo, status int) {
	sp := info.span
	if sp == nil {
		return
	}
	if sp.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 14)
		attrs = append(attrs,
			attrDirection.String(info.direction),
			attrIdentity.String(e.selfID()),
			attrSource.String(info.source),
			attrDestination.String(cut(info.destination, maxSpanDestination)),
			attrMethod.String(cut(r.Method, maxDenialMethod)),
			attrStatus.Int(status),
		)
		if info.path != "" {
			attrs = append(attrs, attrPath.String(cutPath(info.path)))
		}
		if info.decision != "" {
			attrs = append(attrs, attrDecision.String(info.decision))
		}
		if info.reason != "" {
			attrs = append(attrs, attrReason.String(cut(e.redact.Text(info.reason), maxDenialReason)))
		}
		if info.policy != "" {
			attrs = append(attrs, attrPolicy.String(policyRule(info.policy, info.rule)))
		}
		if info.route != "" {
			attrs = append(attrs, attrRoute.String(info.route))
		}
		if info.upstream != "" {
			attrs = append(attrs, attrUpstream.String(info.upstream))
		}
		if info.attempts > 0 {
			attrs = append(attrs, attrAttempts.Int(info.attempts))
		}
		sp.SetAttributes(attrs...)
		switch {
		case info.decision == telemetry.DecisionDeny:
			sp.SetStatus(codes.Error, "denied")
		case status >= 500:
			sp.SetStatus(codes.Error, http.StatusText(status))
		}
	}
	sp.End()
}

// traceID returns the trace ID of the request's span, "" without one.
func traceID(info *logInfo) string {
	if info.span == nil {
		return ""
	}
	if id := info.span.SpanContext().TraceID(); id.IsValid() {
		return id.String()
	}
	return ""
}
