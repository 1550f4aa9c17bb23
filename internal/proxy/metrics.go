package proxy

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// gateway counts a gateway's edge requests by listener, route and
	// code class (edge.go); its labels are bounded by the Gateway.
	gateway *prometheus.CounterVec

	// services are the per-service request metrics; nil when the engine
	// has no registry (metrics off: the data path skips them).
	services *serviceMetrics
	// handshakes counts TLS handshakes by direction and result.
	handshakes [numDirections]map[string]prometheus.Counter
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
		gateway: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_gateway_requests_total",
			Help: "Requests and TLS connections a gateway answered, by listener, route (empty when none took it) and status code class.",
		}, []string{"listener", "route", "code_class"}),
	}
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_tls_handshakes_total",
		Help: "mTLS handshakes of the proxy, by direction (inbound: on its listener, outbound: its dials to peers) and result (ok, or a failure reason).",
	}, []string{"direction", "result"})
	if reg != nil {
		for _, c := range []prometheus.Collector{decisions, requests, dryRun, audit, m.retries, m.ejections, m.breakerOpen, m.mirrorDropped, m.rateLimited, handshakes, m.gateway} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
		// Per-service series are resolved per label set: only with a
		// registry to serve them (metrics off costs the data path
		// nothing).
		svc, err := newServiceMetrics(reg)
		if err != nil {
			return nil, err
		}
		m.services = svc
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
		m.handshakes[d] = map[string]prometheus.Counter{}
		for _, res := range telemetry.HandshakeResults() {
			m.handshakes[d][res] = handshakes.WithLabelValues(dir, res)
		}
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
	if info.edge {
		m.gateway.WithLabelValues(info.listener, info.gatewayRoute, codeClass(class)).Inc()
	}
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

// handshake counts a TLS handshake of direction with its result (a value
// of telemetry.HandshakeResults).
func (m *metrics) handshake(dir int, result string) {
	if c := m.handshakes[dir][result]; c != nil {
		c.Inc()
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

// Values of the source and destination labels that are not a service of
// the snapshot.
const (
	// labelUnknown: a caller whose identity serves no service of the
	// snapshot (or was not verified), or a destination the snapshot does
	// not know (a request for an unknown service, a bad request).
	labelUnknown = "unknown"
	// labelEgress: a host outside the mesh that no ExternalService of the
	// snapshot declares.
	labelEgress = "egress"
)

// methodLabels are the values of the method label: the methods of RFC
// 9110 and PATCH, and "other" for anything else (extension methods are
// tokens a caller chooses).
var methodLabels = [...]string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
	http.MethodPatch, http.MethodOptions, http.MethodConnect, "other",
}

// methodIndex returns the index of m's label in methodLabels, without
// allocating.
func methodIndex(m string) uint8 {
	for i, l := range methodLabels[:len(methodLabels)-1] {
		if m == l {
			return uint8(i)
		}
	}
	return uint8(len(methodLabels) - 1)
}

// serviceKey identifies one series of bulwark_service_requests_total; its
// strings are label values already bounded by the snapshot.
type serviceKey struct {
	source, destination string
	dir, method, class  uint8
	grpc                grpcLabel
}

// serviceSeries are the resolved series of one serviceKey: its counter,
// and the latency histogram of its direction and destination.
type serviceSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// serviceMetrics are the per-service request metrics: requests by source,
// destination, method, status class and gRPC status, and latency by
// direction and destination. Their label values are services of the
// current snapshot only (known), "unknown" or "egress", never a value a
// request chooses, and a service's series go when it leaves the snapshot.
// Series are resolved once per label set and cached, so the data path
// does one map lookup under a read lock rather than a label join per
// request.
type serviceMetrics struct {
	requests  *prometheus.CounterVec
	durations *prometheus.HistogramVec

	mu     sync.RWMutex
	known  map[string]struct{}
	series map[serviceKey]serviceSeries
}

// newServiceMetrics creates the per-service families and registers them
// on reg.
func newServiceMetrics(reg prometheus.Registerer) (*serviceMetrics, error) {
	buckets := telemetry.LatencyBucketsMS()
	for i := range buckets {
		buckets[i] /= 1000
	}
	m := &serviceMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_service_requests_total",
			Help: "Requests the proxy answered, by direction, source and destination service (namespace/name of the snapshot; unknown, egress), method (other for non-standard ones), status code class and gRPC status.",
		}, []string{"direction", "source", "destination", "method", "code_class", "grpc_status"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bulwark_request_duration_seconds",
			Help:    "Time from a request's arrival at the proxy to its answer (to the end of the response body's copy), by direction and destination service; tunnels are not observed.",
			Buckets: buckets,
		}, []string{"direction", "destination"}),
		known:  map[string]struct{}{},
		series: map[serviceKey]serviceSeries{},
	}
	for _, c := range []prometheus.Collector{m.requests, m.durations} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// observe counts one request of key that took d (d < 0: a tunnel, not
// observed).
func (m *serviceMetrics) observe(key serviceKey, d time.Duration) {
	m.mu.RLock()
	s, ok := m.series[key]
	m.mu.RUnlock()
	if !ok {
		s = m.resolve(key)
	}
	s.requests.Inc()
	if d >= 0 {
		s.duration.Observe(d.Seconds())
	}
}

// resolve creates the series of key. A service that left the snapshot
// since the request read it counts as unknown, so that no series of a
// departed service comes back.
func (m *serviceMetrics) resolve(key serviceKey) serviceSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.series[key]; ok {
		return s
	}
	if _, ok := m.known[key.source]; !ok && key.source != labelEgress {
		key.source = labelUnknown
	}
	if _, ok := m.known[key.destination]; !ok && key.destination != labelEgress {
		key.destination = labelUnknown
	}
	if s, ok := m.series[key]; ok {
		return s
	}
	dir := dirName(int(key.dir))
	s := serviceSeries{
		requests: m.requests.WithLabelValues(dir, key.source, key.destination, methodLabels[key.method], codeClass(int(key.class)), key.grpc.String()),
		duration: m.durations.WithLabelValues(dir, key.destination),
	}
	m.series[key] = s
	return s
}

// retain makes known the label values of the current snapshot and deletes
// the series (and cached handles) of services no longer in it.
func (m *serviceMetrics) retain(known map[string]struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.known {
		if _, ok := known[name]; ok {
			continue
		}
		m.requests.DeletePartialMatch(prometheus.Labels{"source": name})
		m.requests.DeletePartialMatch(prometheus.Labels{"destination": name})
		m.durations.DeletePartialMatch(prometheus.Labels{"destination": name})
	}
	for k := range m.series {
		_, src := known[k.source]
		_, dst := known[k.destination]
		if !src && k.source != labelUnknown && k.source != labelEgress || !dst && k.destination != labelUnknown && k.destination != labelEgress {
			delete(m.series, k)
		}
	}
	m.known = known
}

// knownLabels returns the service names a label may carry while t is the
// snapshot: the services of the mesh (ExternalServices included), those
// of every peer identity, and the proxy's own.
func knownLabels(t *table, self string) map[string]struct{} {
	known := make(map[string]struct{}, len(t.services)+1)
	for name := range t.services {
		known[name] = struct{}{}
	}
	for _, svcs := range t.peers {
		for _, s := range svcs {
			known[s] = struct{}{}
		}
	}
	known[self] = struct{}{}
	return known
}

// serviceLabels returns the source and destination labels of a request:
// services of t, never a value the request chose.
func (e *Engine) serviceLabels(t *table, info *logInfo) (source, destination string) {
	source, destination = labelUnknown, labelUnknown
	self := e.selfServices[0]
	if info.direction == telemetry.DirectionInbound {
		destination = self
		if t != nil {
			if svcs := t.peers[info.source]; len(svcs) > 0 && info.label != labelPeerUnverified {
				source = svcs[0]
			}
		}
		return source, destination
	}
	source = self
	if t == nil {
		return source, destination
	}
	if _, ok := t.services[info.destination]; ok {
		return source, info.destination
	}
	if info.label == labelUndeclaredHost || info.upstream != "" {
		destination = labelEgress
	}
	return source, destination
}

// countService adds a request to the per-service metrics, if they are on.
func (e *Engine) countService(r *http.Request, info *logInfo, status int, g grpcLabel) {
	sm := e.metrics.services
	if sm == nil {
		return
	}
	src, dst := e.serviceLabels(e.table.Load(), info)
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	if g >= numGRPCLabels {
		g = grpcNone
	}
	key := serviceKey{
		source: src, destination: dst, dir: uint8(dirIndex(info.direction)),
		method: methodIndex(r.Method), class: uint8(class), grpc: g,
	}
	d := time.Duration(-1)
	if r.Method != http.MethodConnect && status != http.StatusSwitchingProtocols && !strings.HasPrefix(info.detail, "tunnel") {
		d = max(time.Since(info.start), 0)
	}
	sm.observe(key, d)
}
