package alert

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// rule is a compiled AlertRule with its detector's state.
type rule struct {
	ref, ns     string
	fingerprint [32]byte
	detector    string
	severity    string
	cooldown    time.Duration
	// created is when the rule was first applied (NewEdge learning).
	created time.Time
	sinks   []*sink

	// DenialSpike.
	window     time.Duration
	minDenials int64
	factor     float64
	spikes     map[Edge]*spikeState
	// NewEdge.
	learning time.Duration
	// AuthFailureBurst.
	burstThreshold int64
	bursts         map[string]*burstState
	// reporters is what each proxy's reports did to bursts.
	reporters map[string]*reporterBursts
	// SVIDExpiry and ProxyOutOfSync.
	before, after time.Duration
	// Threshold.
	threshold *config.ThresholdParams
	forDur    time.Duration
	series    map[string]*seriesState
}

// compileRule compiles a validated AlertRule; started stands for its
// creation time when the document has none.
func compileRule(doc *config.AlertRule, started time.Time) *rule {
	s := doc.Spec
	r := &rule{
		ref: config.Ref(doc), ns: doc.Metadata.Namespace, detector: s.Detector, severity: s.Severity,
		cooldown: config.AlertDuration(s.Cooldown), created: started,
	}
	if b, err := config.Marshal(doc); err == nil {
		r.fingerprint = sha256.Sum256(b)
	}
	if t, err := time.Parse(time.RFC3339, doc.Metadata.CreationTimestamp); err == nil {
		r.created = t
	}
	switch s.Detector {
	case config.DetectorDenialSpike:
		p := s.DenialSpike
		r.window, r.minDenials, r.factor = config.AlertDuration(p.Window), p.MinDenials, p.Factor
		r.spikes = map[Edge]*spikeState{}
	case config.DetectorNewEdge:
		r.learning = config.AlertDuration(s.NewEdge.LearningPeriod)
	case config.DetectorAuthFailureBurst:
		p := s.AuthFailureBurst
		r.window, r.burstThreshold = config.AlertDuration(p.Window), p.Threshold
		r.bursts = map[string]*burstState{}
		r.reporters = map[string]*reporterBursts{}
	case config.DetectorSVIDExpiry:
		r.before = config.AlertDuration(s.SVIDExpiry.Before)
	case config.DetectorProxyOutOfSync:
		r.after = config.AlertDuration(s.ProxyOutOfSync.After)
	case config.DetectorThreshold:
		r.threshold = s.Threshold
		r.forDur = config.AlertDuration(s.Threshold.For)
		r.series = map[string]*seriesState{}
	}
	if r.window <= 0 {
		r.window = time.Second
	}
	return r
}

// covers reports whether the rule watches namespace ns: a rule in
// RootNamespace watches every one.
func (r *rule) covers(ns string) bool {
	return r.ns == config.RootNamespace || r.ns == ns
}

// prune forgets the rule's idle state.
func (r *rule) prune(now time.Time) {
	idle := time.Duration(idleWindows) * r.window
	for k, s := range r.spikes {
		if now.Sub(s.last) > idle {
			delete(r.spikes, k)
		}
	}
	for k, s := range r.bursts {
		if now.Sub(s.start) > 2*r.window {
			r.dropBurst(k, s)
		}
	}
	for k, rb := range r.reporters {
		if rb.subjects <= 0 && now.Sub(rb.start) > 2*r.window {
			delete(r.reporters, k)
		}
	}
}

// spikeState is one edge's denials: the current window and the baseline.
type spikeState struct {
	start    time.Time
	count    int64
	baseline float64
	// history: at least one window has ended.
	history bool
	fired   bool
	last    time.Time
}

// roll ends the windows that are over at now.
func (s *spikeState) roll(now time.Time, window time.Duration) {
	if now.Before(s.start.Add(window)) {
		return
	}
	k := int64(now.Sub(s.start) / window)
	if s.history {
		s.baseline = ewmaAlpha*float64(s.count) + (1-ewmaAlpha)*s.baseline
	} else {
		// The first window is the baseline: a steady rate from the start
		// does not fire again in the second window.
		s.baseline, s.history = float64(s.count), true
	}
	if k > 1 {
		s.baseline *= math.Pow(1-ewmaAlpha, float64(min(k-1, 1000)))
	}
	s.start = s.start.Add(time.Duration(k) * window)
	s.count, s.fired = 0, false
}

// observeDenials adds n denials of ed at now to every DenialSpike rule
// that covers it. e.mu is held.
func (e *Engine) observeDenials(ed Edge, n int64, now time.Time) []*firing {
	var out []*firing
	ns := edgeNamespace(ed)
	for _, r := range e.rules {
		if r.detector != config.DetectorDenialSpike || !r.covers(ns) {
			continue
		}
		s, ok := r.spikes[ed]
		if !ok {
			if len(r.spikes) >= maxTracked {
				evictOldest(r.spikes, func(s *spikeState) time.Time { return s.last })
			}
			s = &spikeState{start: now}
			r.spikes[ed] = s
		}
		s.roll(now, r.window)
		s.count = min(s.count+n, maxCount)
		s.last = now
		if s.fired || s.count < r.minDenials || float64(s.count) <= r.factor*s.baseline {
			continue
		}
		s.fired = true
		f := e.fire(r, config.AlertStatus{
			Subject: edgeSubject(ed), Source: ed.Source, Destination: ed.Destination, Count: s.count,
			Baseline: math.Round(s.baseline*100) / 100,
			Summary: fmt.Sprintf("denial spike: %d requests of %s to %s denied within %s (baseline %.1f per window, factor %g)",
				s.count, ed.Source, ed.Destination, r.window, s.baseline, r.factor),
		}, now)
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

// observeEdge learns ed and, when it is new, fires the NewEdge rules that
// cover it and are past their learning period. e.mu is held.
func (e *Engine) observeEdge(ed Edge, now time.Time) []*firing {
	if _, ok := e.known[ed]; ok {
		return nil
	}
	if len(e.known) >= maxKnownEdges {
		// Every edge that filled the set fired: stop, rather than fire
		// for the same unremembered edge at every report.
		if !e.knownFull {
			e.knownFull = true
			e.logger.Error("alert: known edge set full: NewEdge rules stop firing", telemetry.KeyCount, maxKnownEdges)
		}
		return nil
	}
	if e.knownFrom[ed.Source] >= maxKnownPerEnd || e.knownTo[ed.Destination] >= maxKnownPerEnd {
		return nil
	}
	e.remember(ed)
	if e.knownFrom[ed.Source] == maxKnownPerEnd {
		e.logger.Warn("alert: known edges of one source at their bound: its new edges no longer fire NewEdge",
			telemetry.KeySource, ed.Source, telemetry.KeyCount, maxKnownPerEnd)
	}
	if e.knownTo[ed.Destination] == maxKnownPerEnd {
		e.logger.Warn("alert: known edges of one destination at their bound: its new edges no longer fire NewEdge",
			telemetry.KeyDestination, ed.Destination, telemetry.KeyCount, maxKnownPerEnd)
	}
	e.pending = append(e.pending, ed)
	var out []*firing
	ns := edgeNamespace(ed)
	for _, r := range e.rules {
		if r.detector != config.DetectorNewEdge || !r.covers(ns) || now.Before(r.created.Add(r.learning)) {
			continue
		}
		f := e.fire(r, config.AlertStatus{
			Subject: edgeSubject(ed), Source: ed.Source, Destination: ed.Destination,
			Summary: fmt.Sprintf("new edge: %s called %s for the first time", ed.Source, ed.Destination),
		}, now)
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

// remember adds ed to the known edges. e.mu is held (or e is not yet
// shared).
func (e *Engine) remember(ed Edge) {
	if _, ok := e.known[ed]; ok {
		return
	}
	e.known[ed] = struct{}{}
	e.knownFrom[ed.Source]++
	e.knownTo[ed.Destination]++
}

// burstState counts one subject's failures over a sliding window: the
// current fixed window and the previous one, weighted by how much of it
// the sliding window still covers.
type burstState struct {
	start     time.Time
	cur, prev int64
	fired     time.Time
	// owner is the proxy whose report made it ("" for the control
	// plane's own failures).
	owner string
}

// reporterBursts is what one proxy's reports did to a rule's bursts: the
// subjects it made (still tracked), and in its current window the alerts
// it fired, those held back past maxAlertsPerReporter, and the subjects
// (and their failures) it reported past maxSubjectsPerReporter.
type reporterBursts struct {
	start            time.Time
	subjects         int
	fired, held      int
	untracked        int
	untrackedCount   int64
	aggregateFiredAt time.Time
}

// reporterBursts returns the state of reporter in r, its window rolled to
// now. e.mu is held.
func (r *rule) reporterBursts(reporter string, now time.Time) *reporterBursts {
	rb, ok := r.reporters[reporter]
	if !ok {
		if len(r.reporters) >= maxTracked {
			r.evictReporter()
		}
		rb = &reporterBursts{start: now}
		r.reporters[reporter] = rb
	}
	if !now.Before(rb.start.Add(r.window)) {
		rb.start, rb.fired, rb.held, rb.untracked, rb.untrackedCount = now, 0, 0, 0, 0
	}
	return rb
}

// evictReporter forgets the reporter that tracks no subject and was seen
// least recently, or failing that the least recently seen one (its
// subjects are no longer counted against anyone).
func (r *rule) evictReporter() {
	var (
		victim string
		oldest time.Time
		found  bool
	)
	for pass := 0; pass < 2 && !found; pass++ {
		for k, rb := range r.reporters {
			if (pass == 0 && rb.subjects > 0) || (found && !rb.start.Before(oldest)) {
				continue
			}
			victim, oldest, found = k, rb.start, true
		}
	}
	if !found {
		return
	}
	if r.reporters[victim].subjects > 0 {
		for _, s := range r.bursts {
			if s.owner == victim {
				s.owner = ""
			}
		}
	}
	delete(r.reporters, victim)
}

// dropBurst forgets the burst of subject k.
func (r *rule) dropBurst(k string, s *burstState) {
	delete(r.bursts, k)
	if rb := r.reporters[s.owner]; rb != nil && s.owner != "" {
		rb.subjects--
	}
}

// evictBurst makes room for one subject: the least recently started
// subject of the proxy tracking the most, or of any when no proxy tracks
// one (only the control plane's own failures).
func (r *rule) evictBurst() {
	owner, most := "", 0
	for k, rb := range r.reporters {
		if rb.subjects > most {
			owner, most = k, rb.subjects
		}
	}
	var (
		victim string
		oldest *burstState
	)
	for k, s := range r.bursts {
		if (most > 0 && s.owner != owner) || (oldest != nil && !s.start.Before(oldest.start)) {
			continue
		}
		victim, oldest = k, s
	}
	if oldest != nil {
		r.dropBurst(victim, oldest)
	}
}

// observeFailures adds n failures of a subject (an address or an
// identity), reported by the proxy reporter ("" for the control plane's
// own failures), to the AuthFailureBurst rules that cover reporterNS (""
// for the control plane's own failures: root rules only). What one proxy
// reports is bounded per rule: it makes at most maxSubjectsPerReporter
// subjects tracked and fires at most maxAlertsPerReporter alerts a window;
// past either, one aggregate alert about the proxy. e.mu is held.
func (e *Engine) observeFailures(reporter, reporterNS, subject, addr, id string, n int64, now time.Time) []*firing {
	var out []*firing
	for _, r := range e.rules {
		if r.detector != config.DetectorAuthFailureBurst {
			continue
		}
		if r.ns != config.RootNamespace && (reporterNS == "" || r.ns != reporterNS) {
			continue
		}
		var rb *reporterBursts
		if reporter != "" {
			rb = r.reporterBursts(reporter, now)
		}
		s, ok := r.bursts[subject]
		if !ok {
			if rb != nil && rb.subjects >= maxSubjectsPerReporter {
				rb.untracked++
				rb.untrackedCount = min(rb.untrackedCount+n, maxCount)
				if f := e.fireReporter(r, reporter, rb, now); f != nil {
					out = append(out, f)
				}
				continue
			}
			if len(r.bursts) >= maxTracked {
				r.evictBurst()
			}
			s = &burstState{start: now, owner: reporter}
			r.bursts[subject] = s
			if rb != nil {
				rb.subjects++
			}
		}
		if end := s.start.Add(r.window); !now.Before(end) {
			k := now.Sub(s.start) / r.window
			if k == 1 {
				s.prev = s.cur
			} else {
				s.prev = 0
			}
			s.cur = 0
			s.start = s.start.Add(k * r.window)
		}
		s.cur = min(s.cur+n, maxCount)
		covered := 1 - float64(now.Sub(s.start))/float64(r.window)
		est := s.cur + int64(float64(s.prev)*covered)
		if est < r.burstThreshold || (!s.fired.IsZero() && now.Sub(s.fired) < r.window) {
			continue
		}
		if rb != nil && rb.fired >= maxAlertsPerReporter {
			// Held back, not marked fired: an honest proxy's next report
			// of the subject still fires it.
			rb.held++
			if f := e.fireReporter(r, reporter, rb, now); f != nil {
				out = append(out, f)
			}
			continue
		}
		if rb != nil {
			rb.fired++
		}
		s.fired = now
		who := "address " + addr
		if addr == "" {
			who = "identity " + id
		}
		f := e.fire(r, config.AlertStatus{
			Subject: subject, Address: addr, Source: id, Count: est,
			Summary: fmt.Sprintf("authentication failure burst: %d failed authentications from %s within %s", est, who, r.window),
		}, now)
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

// fireReporter fires, at most once a window, the aggregate alert of a
// proxy whose reports went past its bounds: alerts held back, or failures
// of untracked subjects reaching the rule's threshold. e.mu is held.
func (e *Engine) fireReporter(r *rule, reporter string, rb *reporterBursts, now time.Time) *firing {
	if rb.held == 0 && rb.untrackedCount < r.burstThreshold {
		return nil
	}
	if !rb.aggregateFiredAt.IsZero() && now.Sub(rb.aggregateFiredAt) < r.window {
		return nil
	}
	rb.aggregateFiredAt = now
	subjects := rb.subjects + rb.untracked
	return e.fire(r, config.AlertStatus{
		Subject: "reporter " + reporter, Source: reporter, Count: int64(subjects),
		Summary: fmt.Sprintf("authentication failure burst: reporter %s reports failed authentications from %d addresses or identities "+
			"within %s (%d alerts held back past %d per window, %d failures of subjects past its %d tracked)",
			reporter, subjects, r.window, rb.held, maxAlertsPerReporter, rb.untrackedCount, maxSubjectsPerReporter),
	}, now)
}

// evaluateProxies runs the SVIDExpiry and ProxyOutOfSync rules over the
// registry. e.mu is held.
func (e *Engine) evaluateProxies(proxies []ProxyState, now time.Time) []*firing {
	var out []*firing
	lagging := map[string]bool{}
	for _, p := range proxies {
		key := p.Namespace + "/" + p.Instance
		if p.Connected && p.AckedVersion < p.SnapshotVersion {
			lagging[key] = true
			if _, ok := e.lagSince[key]; !ok {
				e.lagSince[key] = now
			}
		}
	}
	for k := range e.lagSince {
		if !lagging[k] {
			delete(e.lagSince, k)
		}
	}
	for _, r := range e.rules {
		for _, p := range proxies {
			if !p.Connected || !r.covers(p.Namespace) {
				continue
			}
			key := p.Namespace + "/" + p.Instance
			var st config.AlertStatus
			switch r.detector {
			case config.DetectorSVIDExpiry:
				left := p.SVIDExpiry.Sub(now)
				if p.SVIDExpiry.IsZero() || left > r.before {
					continue
				}
				when := "expires in " + left.Round(time.Second).String()
				if left <= 0 {
					when = "has expired"
				}
				st = config.AlertStatus{Value: math.Round(left.Seconds()),
					Summary: fmt.Sprintf("svid expiry: the SVID of proxy %s (%s) %s", key, p.Identity, when)}
			case config.DetectorProxyOutOfSync:
				since, ok := e.lagSince[key]
				if !ok || now.Sub(since) < r.after {
					continue
				}
				st = config.AlertStatus{Value: math.Round(now.Sub(since).Seconds()),
					Summary: fmt.Sprintf("proxy out of sync: proxy %s (%s) has not ACKed snapshot version %d for %s (ACKed %d)",
						key, p.Identity, p.SnapshotVersion, now.Sub(since).Round(time.Second), p.AckedVersion)}
			default:
				continue
			}
			st.Subject, st.Proxy, st.Source = "proxy "+key, key, p.Identity
			if f := e.fire(r, st, now); f != nil {
				out = append(out, f)
			}
		}
	}
	return out
}

// edgeOf returns the Edge of a reported source and destination, refusing
// what could not come from a valid report.
func edgeOf(source, destination string) (Edge, bool) {
	if source == "" || destination == "" || !plainText(source) || !plainText(destination) {
		return Edge{}, false
	}
	if _, err := spiffeid.FromString(source); err != nil {
		return Edge{}, false
	}
	return Edge{Source: source, Destination: destination}, true
}

// edgeNamespace is the namespace an edge belongs to: its destination's
// ("namespace/name"), or for an egress host, its source's.
func edgeNamespace(ed Edge) string {
	if ref, err := identity.ParseServiceRef(ed.Destination, ""); err == nil && ref.String() == ed.Destination {
		return ref.Namespace
	}
	if id, err := spiffeid.FromString(ed.Source); err == nil {
		if w, err := identity.ParseWorkloadID(id); err == nil {
			return w.Namespace
		}
	}
	return ""
}

// edgeSubject names an edge in an alert.
func edgeSubject(ed Edge) string { return ed.Source + " -> " + ed.Destination }

// sortedEdges returns the keys of m in order.
func sortedEdges(m map[Edge]int64) []Edge {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b Edge) int {
		return cmp.Or(strings.Compare(a.Source, b.Source), strings.Compare(a.Destination, b.Destination))
	})
	return keys
}

// plainText reports whether s is short UTF-8 without control characters.
func plainText(s string) bool {
	if len(s) > maxText || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// clampCount bounds a reported count to 0..maxCount.
func clampCount(n int64) int64 {
	return min(max(n, 0), maxCount)
}

// netipAddr returns the canonical form of an IP address.
func netipAddr(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", errNotAddress
	}
	return a.Unmap().String(), nil
}

// evictOldest removes the entry of m whose time is the earliest.
func evictOldest[K comparable, V any](m map[K]V, at func(V) time.Time) {
	var (
		oldest K
		t      time.Time
		found  bool
	)
	for k, v := range m {
		if !found || at(v).Before(t) {
			oldest, t, found = k, at(v), true
		}
	}
	if found {
		delete(m, oldest)
	}
}
