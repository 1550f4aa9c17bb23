package proxy

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// reasonLabel is the reason label of an authorization decision: an index
// into a fixed set, so that the data path adds to a counter it resolved at
// New and a label never carries anything a caller chose.
type reasonLabel uint8

// Reason labels; labelNone marks a request no decision was taken for (a
// bad request, a proxy without snapshot).
const (
	labelNone reasonLabel = iota
	labelAllowed
	labelDenyRule
	labelNoAllowMatch
	labelNoAllowPolicy
	labelConditionError
	labelUnauthenticated
	labelRevoked
	labelPeerUnverified
	labelUndeclaredHost
	numReasonLabels
)

// String returns the label's value.
func (l reasonLabel) String() string {
	switch l {
	case labelAllowed:
		return telemetry.ReasonAllowed
	case labelDenyRule:
		return telemetry.ReasonDenyRule
	case labelNoAllowMatch:
		return telemetry.ReasonNoAllowMatch
	case labelNoAllowPolicy:
		return telemetry.ReasonNoAllowPolicy
	case labelConditionError:
		return telemetry.ReasonConditionError
	case labelUnauthenticated:
		return telemetry.ReasonUnauthenticated
	case labelRevoked:
		return telemetry.ReasonRevoked
	case labelPeerUnverified:
		return telemetry.ReasonPeerUnverified
	case labelUndeclaredHost:
		return telemetry.ReasonUndeclaredHost
	}
	return ""
}

// labelOf maps a policy reason to its label.
func labelOf(r policy.Reason) reasonLabel {
	switch r {
	case policy.ReasonAllowed:
		return labelAllowed
	case policy.ReasonDenyRule:
		return labelDenyRule
	case policy.ReasonNoAllowMatch:
		return labelNoAllowMatch
	case policy.ReasonNoAllowPolicy:
		return labelNoAllowPolicy
	}
	return labelNoAllowMatch
}

// Directions by index in the metrics' arrays.
const (
	dirInbound = iota
	dirOutbound
	numDirections
)

func dirIndex(direction string) int {
	if direction == telemetry.DirectionInbound {
		return dirInbound
	}
	return dirOutbound
}

func dirName(i int) string {
	if i == dirInbound {
		return telemetry.DirectionInbound
	}
	return telemetry.DirectionOutbound
}

// codeClasses are the values of the code_class label, by status / 100
// (index 0 for anything outside 100-599).
func codeClass(i int) string {
	if i == 0 {
		return "other"
	}
	return fmt.Sprintf("%dxx", i)
}

// metrics are the engine's counters, every series created at New, so the
// data path only adds to a counter it already holds (no lookup, no
// allocation) and every series exists from the start at 0.
type metrics struct {
	decisions [numDirections][numReasonLabels]prometheus.Counter
	requests  [numDirections][6][numGRPCLabels]prometheus.Counter
	dryRun    [numDirections]prometheus.Counter
	audit     [numDirections]prometheus.Counter

	// Traffic management: by destination outbound (retries, ejections,
	// breaker; a destination's series go with it), mirrors, and inbound
	// rate limits.
	retries, ejections, breakerOpen *prometheus.CounterVec
	mirrorDropped, rateLimited      prometheus.Counter
}

// destCounters are the traffic counters of one destination, resolved once
// per snapshot so that the data path adds without a lookup.
type destCounters struct {
	retries, ejections, breakerOpen prometheus.Counter
}

// forDestination returns the counters of the destination name ("ns/name").
func (m *metrics) forDestination(name string) destCounters {
	return destCounters{
		retries:     m.retries.WithLabelValues(name),
		ejections:   m.ejections.WithLabelValues(name),
		breakerOpen: m.breakerOpen.WithLabelValues(name),
	}
}

// dropDestination deletes the series of a destination that left the
// snapshot, so the label's values stay bounded by the mesh.
func (m *metrics) dropDestination(name string) {
	m.retries.DeleteLabelValues(name)
	m.ejections.DeleteLabelValues(name)
	m.breakerOpen.DeleteLabelValues(name)
}

// newMetrics creates the counters and registers them on reg (nil: kept
// unregistered, still counted).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_authz_decisions_total",
		Help: "Authorization decisions of the proxy, by direction (inbound: as the callee, outbound: as the caller), decision (allow, deny) and reason.",
	}, []string{"direction", "decision", "reason"})
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_requests_total",
		Help: "Requests the proxy answered, by direction, status code class (1xx to 5xx; 499: the client went away) and gRPC status (a code name; empty for a response without grpc-status).",
	}, []string{"direction", "code_class", "grpc_status"})
	dryRun := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_authz_dry_run_differs_total",
		Help: "Requests whose decision a dry-run policy would have changed, by direction.",
	}, []string{"direction"})
	audit := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_authz_audited_total",
		Help: "Requests an AUDIT policy matched, by direction.",
	}, []string{"direction"})
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	byDestination := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"destination"})
	}
	m := &metrics{
		retries:       byDestination("bulwark_retries_total", "Outbound tries sent again (retries), within the retry budget, by destination service."),
		ejections:     byDestination("bulwark_outlier_ejections_total", "Endpoints ejected by outlier detection, by destination service."),
		breakerOpen:   byDestination("bulwark_circuit_breaker_open_total", "Outbound requests (and TCP tunnels) answered 503 at once because a connection limit (circuit breaker) was reached, by destination service."),
		mirrorDropped: counter("bulwark_mirror_dropped_total", "Mirrored copies dropped because too many were in flight."),
		rateLimited:   counter("bulwark_rate_limited_total", "Inbound requests answered 429 by a rate limit."),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{decisions, requests, dryRun, audit, m.retries, m.ejections, m.breakerOpen, m.mirrorDropped, m.rateLimited} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	for d := range numDirections {
		dir := dirName(d)
		for l := labelAllowed; l < numReasonLabels; l++ {
			decision := telemetry.DecisionDeny
			if l == labelAllowed {
				decision = telemetry.DecisionAllow
			}
			m.decisions[d][l] = decisions.WithLabelValues(dir, decision, l.String())
		}
		for c := range m.requests[d] {
			for g := range grpcLabel(numGRPCLabels) {
				m.requests[d][c][g] = requests.WithLabelValues(dir, codeClass(c), g.String())
			}
		}
		m.dryRun[d] = dryRun.WithLabelValues(dir)
		m.audit[d] = audit.WithLabelValues(dir)
	}
	return m, nil
}

// count adds one request of info, answered with status and the gRPC
// status g, to the counters.
func (m *metrics) count(info *logInfo, status int, g grpcLabel) {
	d := dirIndex(info.direction)
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	if g >= numGRPCLabels {
		g = grpcNone
	}
	m.requests[d][class][g].Inc()
	if info.label != labelNone {
		m.decisions[d][info.label].Inc()
	}
	if info.dryRun != "" {
		m.dryRun[d].Inc()
	}
	if info.audit != "" {
		m.audit[d].Inc()
	}
}

// grpcLabel is the grpc_status label of a request: grpcNone for a response
// without grpc-status, else the gRPC code plus one.
type grpcLabel uint8

// grpcNone marks a response without grpc-status; numGRPCLabels bounds the
// labels (the 17 codes of gRPC, and grpcNone).
const (
	grpcNone      grpcLabel = 0
	numGRPCLabels grpcLabel = 18
)

// grpcCodeNames are the names of the gRPC status codes, by code.
var grpcCodeNames = [numGRPCLabels - 1]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

// String returns the label's value: a code name, or "".
func (g grpcLabel) String() string {
	if g == grpcNone || g >= numGRPCLabels {
		return ""
	}
	return grpcCodeNames[g-1]
}

// grpcStatusOf reads the gRPC status of a response once it is written:
// from its trailers (net/http keeps them in the header map, declared or
// with http.TrailerPrefix), or from its headers for a trailers-only
// response. A value that is not a code of gRPC counts as UNKNOWN, as
// gRPC clients read it.
func grpcStatusOf(rw *recorder) grpcLabel {
	if rw.ResponseWriter == nil {
		return grpcNone // a TCP tunnel: no HTTP response
	}
	h := rw.Header()
	v := h.Get("Grpc-Status")
	if v == "" {
		if v = h.Get(http.TrailerPrefix + "Grpc-Status"); v == "" {
			return grpcNone
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n >= int(numGRPCLabels-1) {
		return grpcLabel(2 + 1) // UNKNOWN
	}
	return grpcLabel(n + 1)
}
