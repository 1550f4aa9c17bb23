package proxy

import (
	"fmt"

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
	requests  [numDirections][6]prometheus.Counter
	dryRun    [numDirections]prometheus.Counter
	audit     [numDirections]prometheus.Counter
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
		Help: "Requests the proxy answered, by direction and status code class (1xx to 5xx; 499: the client went away).",
	}, []string{"direction", "code_class"})
	dryRun := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_authz_dry_run_differs_total",
		Help: "Requests whose decision a dry-run policy would have changed, by direction.",
	}, []string{"direction"})
	audit := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_authz_audited_total",
		Help: "Requests an AUDIT policy matched, by direction.",
	}, []string{"direction"})
	if reg != nil {
		for _, c := range []prometheus.Collector{decisions, requests, dryRun, audit} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	m := &metrics{}
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
			m.requests[d][c] = requests.WithLabelValues(dir, codeClass(c))
		}
		m.dryRun[d] = dryRun.WithLabelValues(dir)
		m.audit[d] = audit.WithLabelValues(dir)
	}
	return m, nil
}

// count adds one request of info, answered with status, to the counters.
func (m *metrics) count(info *logInfo, status int) {
	d := dirIndex(info.direction)
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	m.requests[d][class].Inc()
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
