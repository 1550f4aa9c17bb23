// Package telemetry owns what Bulwark's processes say about themselves: the
// constant keys of structured log fields (so every log line of every process
// uses the same names), logger construction, and the Prometheus registry
// each daemon serves its metrics from (NewRegistry; there is no global one),
// the tracer provider of a process (NewTracing; none global either), the
// Redactor that masks secrets in everything logged or exported, and the
// bounded results of TLS handshakes (HandshakeResult, HandshakeCounter).
//
// The logging rule: messages are constant strings; everything variable goes
// in fields whose keys are the constants below. Loggers are passed through
// each component's Config; libraries default to Discard(). Secrets (keys,
// tokens, Authorization headers) are never logged.
package telemetry

import (
	"io"
	"log/slog"
)

// Keys of structured log fields.
const (
	KeyErr          = "err"
	KeyComponent    = "component"
	KeyService      = "service"
	KeyInstance     = "instance"
	KeyIdentity     = "identity"
	KeySource       = "source"
	KeyDestination  = "destination"
	KeyDirection    = "direction"
	KeyMethod       = "method"
	KeyPath         = "path"
	KeyStatus       = "status"
	KeyDecision     = "decision"
	KeyReason       = "reason"
	KeyPolicy       = "policy"
	KeyRule         = "rule"
	KeyDurationMS   = "duration_ms"
	KeyAddress      = "address"
	KeyUpstream     = "upstream"
	KeyRoute        = "route"
	KeyFault        = "fault"
	KeyAttempts     = "attempts"
	KeyGRPCStatus   = "grpc_status"
	KeyInbound      = "inbound"
	KeyOutbound     = "outbound"
	KeyVersion      = "version"
	KeyExpiry       = "expiry"
	KeySerial       = "serial"
	KeyPhase        = "phase"
	KeyBackoff      = "backoff"
	KeyAttempt      = "attempt"
	KeyOperator     = "operator"
	KeyKind         = "kind"
	KeyName         = "name"
	KeyNamespace    = "namespace"
	KeyCount        = "count"
	KeyDestinations = "destinations"
	KeyPeer         = "peer"
	KeyDataDir      = "data_dir"
	KeyTrustDomain  = "trust_domain"
	KeyRemote       = "remote"
	KeyURL          = "url"
	KeyDetail       = "detail"
	KeyPID          = "pid"
	KeyAuthority    = "authority"
	KeyDelay        = "delay"
	KeyProvider     = "provider"
	KeyVerb         = "verb"
	KeyAudit        = "audit"
	KeyAuditPolicy  = "audit_policy"
	KeyDryRun       = "dry_run"
	KeySuppressed   = "suppressed"
	KeyReporter     = "reporter"
	KeyDetector     = "detector"
	KeySeverity     = "severity"
	KeySubject      = "subject"
	KeyQuery        = "query"
	KeyUserAgent    = "user_agent"
	KeyRequestID    = "request_id"
	KeyTraceID      = "trace_id"
	KeyBytesIn      = "bytes_in"
	KeyBytesOut     = "bytes_out"
	KeyHeaders      = "headers"
	KeyListener     = "listener"
	KeyClientIP     = "client_ip"
	KeyGatewayRoute = "gateway_route"
)

// Directions of a proxied request, the value of KeyDirection.
const (
	DirectionInbound  = "inbound"
	DirectionOutbound = "outbound"
)

// Decisions, the value of KeyDecision.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
)

// Reasons of an authorization decision, the reason label of
// bulwark_authz_decisions_total. The set is bounded and fixed: a label
// never carries a path, an identity or anything else a caller chooses.
const (
	// ReasonAllowed: an ALLOW rule matched and no DENY rule did.
	ReasonAllowed = "allowed"
	// ReasonDenyRule: a DENY rule matched.
	ReasonDenyRule = "deny_rule"
	// ReasonNoAllowMatch: ALLOW policies select the workload, none of
	// their rules matched.
	ReasonNoAllowMatch = "no_allow_match"
	// ReasonNoAllowPolicy: no enforced ALLOW policy selects the workload
	// (fails closed).
	ReasonNoAllowPolicy = "no_allow_policy"
	// ReasonConditionError: a when condition failed to evaluate and the
	// decision failed closed.
	ReasonConditionError = "condition_error"
	// ReasonUnauthenticated: the request's token was missing where one is
	// required, or invalid (401).
	ReasonUnauthenticated = "unauthenticated"
	// ReasonRevoked: the peer's SVID is revoked.
	ReasonRevoked = "revoked"
	// ReasonPeerUnverified: the peer presented no SVID that is still
	// valid.
	ReasonPeerUnverified = "peer_unverified"
	// ReasonUndeclaredHost: egress to a host, port or protocol that no
	// ExternalService the caller may reach declares.
	ReasonUndeclaredHost = "undeclared_host"
)

// Discard returns a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// OrDiscard returns l, or a discarding logger when l is nil.
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return Discard()
	}
	return l
}

// NewJSON returns a JSON logger writing to w at level.
func NewJSON(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}
