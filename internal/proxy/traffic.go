package proxy

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
)

// trafficPolicy is a compiled TrafficPolicy (or the defaults when a
// destination has none).
type trafficPolicy struct {
	lb       balancer.Config
	hashOn   config.HashOn
	timeout  time.Duration
	retry    *retryPolicy
	outlier  resilience.OutlierConfig
	noEject  bool
	limits   config.ConnectionLimits
	rate     *config.RateLimit
	document string // the JSON it was compiled from; "" for the defaults
}

// retryPolicy is a compiled RetryPolicy.
type retryPolicy struct {
	attempts      int
	perTry        time.Duration
	on            retryOn
	nonIdempotent bool
	budgetPercent int
	budgetMin     int
	backoffBase   time.Duration
	backoffMax    time.Duration
}

// retryOn is the set of retried conditions: bits for the conditions
// and one bit per gRPC status code.
type retryOn struct {
	conds uint8
	grpc  uint32
}

// Retry condition bits.
const (
	condConnect uint8 = 1 << iota
	condReset
	cond5xx
	condGateway
)

// Defaults of the data path (DESIGN: what users of Linkerd and Istio
// expect when they configure nothing).
var (
	defaultRetry = retryPolicy{
		attempts: 2, on: retryOn{conds: condConnect | condReset},
		budgetPercent: 20, budgetMin: 10, backoffBase: 25 * time.Millisecond, backoffMax: 250 * time.Millisecond,
	}
	defaultOutlier = resilience.OutlierConfig{
		Consecutive5xx: 5, ConsecutiveGatewayErrors: 3,
		BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50,
	}
)

// defaultTrafficPolicy is in force for a destination without TrafficPolicy.
func defaultTrafficPolicy() *trafficPolicy {
	return &trafficPolicy{
		lb:      balancer.Config{Policy: config.LBPeakEWMA, LocalityAware: true},
		retry:   &defaultRetry,
		outlier: defaultOutlier,
	}
}

// compileTrafficPolicy decodes and validates a TrafficPolicy document; an
// empty doc gives the defaults.
func compileTrafficPolicy(doc []byte) (*trafficPolicy, error) {
	tp := defaultTrafficPolicy()
	if len(doc) == 0 {
		return tp, nil
	}
	o, err := config.DecodeObject(doc)
	if err != nil {
		return nil, fmt.Errorf("traffic_policy: %w", err)
	}
	p, ok := o.(*config.TrafficPolicy)
	if !ok {
		return nil, fmt.Errorf("traffic_policy: kind %s is not a TrafficPolicy", o.GetTypeMeta().Kind)
	}
	tp.document = string(doc)
	s := &p.Spec
	if lb := s.LoadBalancer; lb != nil {
		if lb.Policy != "" {
			tp.lb.Policy = lb.Policy
		}
		if lb.LocalityAware != nil {
			tp.lb.LocalityAware = *lb.LocalityAware
		}
		if lb.HashOn != nil {
			tp.hashOn = *lb.HashOn
		}
	}
	if tp.timeout, err = optDuration(s.Timeout); err != nil {
		return nil, fmt.Errorf("traffic_policy: spec.timeout: %w", err)
	}
	if s.Retries != nil {
		if tp.retry, err = compileRetry(s.Retries); err != nil {
			return nil, fmt.Errorf("traffic_policy: spec.retries: %w", err)
		}
	}
	if od := s.OutlierDetection; od != nil {
		tp.noEject = od.Disabled
		oc := &tp.outlier
		if od.Consecutive5xx > 0 {
			oc.Consecutive5xx = od.Consecutive5xx
		}
		if od.ConsecutiveGatewayErrors > 0 {
			oc.ConsecutiveGatewayErrors = od.ConsecutiveGatewayErrors
		}
		if od.MaxEjectionPercent > 0 {
			oc.MaxEjectionPercent = od.MaxEjectionPercent
		}
		if d, err := optDuration(od.BaseEjectionTime); err != nil {
			return nil, fmt.Errorf("traffic_policy: spec.outlierDetection.baseEjectionTime: %w", err)
		} else if d > 0 {
			oc.BaseEjectionTime = d
		}
		if d, err := optDuration(od.MaxEjectionTime); err != nil {
			return nil, fmt.Errorf("traffic_policy: spec.outlierDetection.maxEjectionTime: %w", err)
		} else if d > 0 {
			oc.MaxEjectionTime = d
		}
	}
	if s.ConnectionLimits != nil {
		tp.limits = *s.ConnectionLimits
	}
	tp.rate = s.RateLimit
	return tp, nil
}

// compileRetry compiles a validated RetryPolicy; what validation left
// empty gets the defaults.
func compileRetry(r *config.RetryPolicy) (*retryPolicy, error) {
	rp := defaultRetry
	rp.attempts = r.Attempts
	rp.nonIdempotent = r.NonIdempotent
	var err error
	if rp.perTry, err = optDuration(r.PerTryTimeout); err != nil {
		return nil, fmt.Errorf("perTryTimeout: %w", err)
	}
	if len(r.On) > 0 {
		rp.on = retryOn{}
		for _, c := range r.On {
			switch c {
			case config.RetryConnectFailure:
				rp.on.conds |= condConnect
			case config.RetryReset:
				rp.on.conds |= condReset
			case config.Retry5xx:
				rp.on.conds |= cond5xx
			case config.RetryGatewayError:
				rp.on.conds |= condGateway
			default:
				code, ok := grpcCode(strings.TrimPrefix(c, config.RetryGRPCPrefix))
				if !strings.HasPrefix(c, config.RetryGRPCPrefix) || !ok {
					return nil, fmt.Errorf("on: unknown condition %q", c)
				}
				rp.on.grpc |= 1 << code
			}
		}
	} else {
		rp.on = retryOn{conds: condConnect | condReset | condGateway}
	}
	if b := r.Budget; b != nil {
		if b.Percent > 0 {
			rp.budgetPercent = b.Percent
		}
		if b.MinPerSecond != nil {
			rp.budgetMin = *b.MinPerSecond
		}
	}
	if b := r.Backoff; b != nil {
		if d, err := optDuration(b.Base); err != nil {
			return nil, fmt.Errorf("backoff.base: %w", err)
		} else if d > 0 {
			rp.backoffBase = d
		}
		if d, err := optDuration(b.Max); err != nil {
			return nil, fmt.Errorf("backoff.max: %w", err)
		} else if d > 0 {
			rp.backoffMax = d
		}
	}
	return &rp, nil
}

// grpcCode maps a retry condition's status name ("unavailable",
// "resource-exhausted") to its code.
func grpcCode(name string) (int, bool) {
	for i, n := range grpcCodeNames {
		if strings.ReplaceAll(strings.ToLower(n), "_", "-") == name {
			return i, true
		}
	}
	return 0, false
}

// optDuration parses an optional Go duration: "" is 0.
func optDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// destState is what the engine keeps of a destination across snapshots:
// load statistics, outlier ejections, the retry budget and the circuit
// breaker's in-flight count. Parts whose configuration changes are made
// anew.
type destState struct {
	stats   *balancer.Stats
	outlier *resilience.Outlier
	outCfg  resilience.OutlierConfig
	budget  *resilience.Budget
	budCfg  [2]int
	limiter *resilience.Limiter
	limMax  int
	pending *resilience.Limiter
	pendMax int
	// counters are the destination's series of the traffic metrics.
	counters destCounters
}

// destStates keeps every destination's state by "ns/name".
type destStates struct {
	clock   clock.Clock
	metrics *metrics
	mu      sync.Mutex
	m       map[string]*destState
}

// get returns the state of a destination, updated to tp. Only apply calls
// it (one snapshot at a time).
func (s *destStates) get(name string, tp *trafficPolicy) *destState {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Copy on write: requests on the previous table read its state
	// without a lock, so a destState is never changed once attached.
	st := &destState{stats: balancer.NewStats(s.clock), counters: s.metrics.forDestination(name)}
	if prev := s.m[name]; prev != nil {
		cp := *prev
		st = &cp
	}
	s.m[name] = st
	if st.outlier == nil || st.outCfg != tp.outlier {
		st.outlier, st.outCfg = resilience.NewOutlier(tp.outlier, s.clock), tp.outlier
	}
	rp := tp.retry
	if rp == nil {
		rp = &defaultRetry
	}
	if cfg := [2]int{rp.budgetPercent, rp.budgetMin}; st.budget == nil || st.budCfg != cfg {
		st.budget, st.budCfg = resilience.NewBudget(cfg[0], cfg[1], s.clock), cfg
	}
	if st.limiter == nil || st.limMax != tp.limits.MaxRequests {
		st.limiter, st.limMax = resilience.NewLimiter(tp.limits.MaxRequests), tp.limits.MaxRequests
	}
	if st.pending == nil || st.pendMax != tp.limits.MaxPendingRequests {
		st.pending, st.pendMax = resilience.NewLimiter(tp.limits.MaxPendingRequests), tp.limits.MaxPendingRequests
	}
	return st
}

// retain drops the state of destinations no longer in the snapshot.
func (s *destStates) retain(names map[string]*destination) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.m {
		if _, ok := names[name]; !ok {
			delete(s.m, name)
			s.metrics.dropDestination(name)
		}
	}
}

// subset is a set of endpoints with its balancer: a whole destination, or
// the endpoints of one version.
type subset struct {
	eps []endpoint
	bal *balancer.Balancer
}

// newSubset builds a subset over eps.
func newSubset(eps []endpoint, tp *trafficPolicy, local balancer.Locality, stats *balancer.Stats) *subset {
	in := make([]balancer.Endpoint, len(eps))
	for i, ep := range eps {
		in[i] = balancer.Endpoint{Addr: ep.addr, Locality: ep.locality, Draining: ep.draining}
	}
	cfg := tp.lb
	cfg.Local = local
	return &subset{eps: eps, bal: balancer.New(cfg, in, stats)}
}

// buildSubsets makes the destination's balancers: one over every endpoint
// and one per version label value.
func (d *destination) buildSubsets(local balancer.Locality) {
	d.all = newSubset(d.endpoints, d.traffic, local, d.state.stats)
	byVersion := map[string][]endpoint{}
	for _, ep := range d.endpoints {
		if v := ep.labels[config.VersionLabel]; v != "" {
			byVersion[v] = append(byVersion[v], ep)
		}
	}
	d.subsets = make(map[string]*subset, len(byVersion))
	for _, v := range slices.Sorted(maps.Keys(byVersion)) {
		d.subsets[v] = newSubset(byVersion[v], d.traffic, local, d.state.stats)
	}
	addrs := make([]string, len(d.endpoints))
	keep := make(map[string]bool, len(d.endpoints))
	for i, ep := range d.endpoints {
		addrs[i] = ep.addr
		keep[ep.addr] = true
	}
	d.state.outlier.SetEndpoints(addrs)
	d.state.stats.Retain(keep)
}

// attach gives a freshly compiled table the engine's lasting state: each
// destination's state and balancers, and the inbound rate-limit buckets
// (kept while their configuration does not change).
func (e *Engine) attach(t *table) {
	for name, d := range t.dests {
		d.state = e.dstates.get(name, d.traffic)
		d.buildSubsets(e.cfg.Locality)
	}
	e.dstates.retain(t.dests)

	e.rateMu.Lock()
	defer e.rateMu.Unlock()
	used := map[string]*rateLimit{}
	get := func(key string, rl *config.RateLimit) *rateLimit {
		key = fmt.Sprintf("%s %+v", key, *rl)
		r := e.rates[key]
		if r == nil {
			burst := rl.Burst
			if burst <= 0 {
				burst = int(math.Ceil(rl.RequestsPerSecond))
			}
			r = &rateLimit{
				limiter: resilience.NewRateLimiter(rl.RequestsPerSecond, burst, maxRateKeys, e.dstates.clock),
				perPeer: rl.Per != config.RateLimitPerService,
			}
		}
		used[key] = r
		return r
	}
	if rl := t.inTraffic.rate; rl != nil {
		t.rate = get("service", rl)
	}
	if t.inRoutes != nil {
		for _, r := range t.inRoutes.rules {
			if r.rateLimit != nil {
				if t.ruleRates == nil {
					t.ruleRates = map[*routeRule]*rateLimit{}
				}
				t.ruleRates[r] = get("rule "+r.name, r.rateLimit)
			}
		}
	}
	e.attachEdge(t, used)
	e.rates = used
}
