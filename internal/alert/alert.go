// Package alert owns the control plane's anomaly alerts: the Engine that
// evaluates AlertRules over the live stream (proxies' reports of denials,
// edges and authentication failures; the control plane's own
// authentication failures; the registry of proxies; the control plane's
// metrics), and the webhook dispatcher that delivers what fires.
//
// Detectors (docs/alerts.md):
//
//   - DenialSpike: per edge (source identity -> destination), the denials
//     of the current window against an exponentially weighted moving
//     average of the edge's past windows.
//   - NewEdge: an edge never seen before; the set of known edges is
//     persisted (EdgeStore), so a restart does not fire again.
//   - AuthFailureBurst: per address and per identity, failed
//     authentications over a sliding window.
//   - SVIDExpiry, ProxyOutOfSync: connected proxies of the registry,
//     at every evaluation.
//   - Threshold: any series of the control plane's Prometheus registry.
//
// A firing alert is logged (Warn, message "alert"), counted in
// bulwark_alerts_total{rule,detector,severity}, kept in a ring of the last
// alerts (Alerts), and queued to each of its rule's webhooks. Nothing the
// Engine does on behalf of a report blocks on I/O: webhooks are delivered
// by one goroutine per rule and URL from a bounded queue (overflow is
// dropped and counted), and known edges are persisted at each evaluation.
//
// Everything a peer can make the Engine hold is bounded: tracked edges,
// subjects and series per rule, cooldowns, known edges, the alert ring and
// the webhook queues. What one proxy's reports can make an
// AuthFailureBurst rule track and fire is bounded too, so that invented
// failures do not drown real alerts.
package alert

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Defaults and bounds of the Engine.
const (
	// DefaultEvery is how often the Engine evaluates the registry, the
	// metrics and its windows.
	DefaultEvery = time.Second
	// DefaultMaxAlerts is how many alerts the ring keeps.
	DefaultMaxAlerts = 1000
	// DefaultQueueSize is the queue of each webhook (rule and URL).
	DefaultQueueSize = 64
	// DefaultAttempts is the most delivery attempts of one alert to one
	// webhook.
	DefaultAttempts = 5
	// DefaultBackoffBase and DefaultBackoffMax bound the backoff between
	// attempts: attempt n waits between half and all of
	// min(base*2^(n-1), max).
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = 30 * time.Second
	// maxTracked bounds the edges or subjects one rule tracks.
	maxTracked = 10000
	// maxSeries bounds the metric series one Threshold rule tracks.
	maxSeries = 1000
	// maxKnownEdges bounds the set of known edges: once it is full,
	// NewEdge rules stop firing (and the Engine logs it once).
	maxKnownEdges = 100000
	// maxKnownPerEnd bounds the known edges of one source or one
	// destination: a proxy can invent edges only to its own services
	// (inbound) or from its own identity (outbound), so it cannot fill
	// the set for everyone (which would silence NewEdge mesh-wide, for
	// good: the set is persisted). Past it, that end's new edges neither
	// fire nor are remembered (logged once per end).
	maxKnownPerEnd = 5000
	// maxSubjectsPerReporter bounds the AuthFailureBurst subjects the
	// reports of one proxy make a rule track: past it, the proxy's new
	// subjects are only added to its own aggregate, so that it cannot push
	// the subjects other proxies report out of the maxTracked bound.
	maxSubjectsPerReporter = 1000
	// maxAlertsPerReporter bounds the AuthFailureBurst alerts the reports
	// of one proxy fire per rule and window: past it, one aggregate alert
	// whose subject is the proxy ("reporter <id>").
	maxAlertsPerReporter = 10
	// maxReportedFailures bounds one reported count of failed
	// authentications: a proxy reports every 10 seconds, and does not see
	// a million failed handshakes in that time.
	maxReportedFailures = 1000000
	// maxCooldowns bounds the cooldowns remembered.
	maxCooldowns = 50000
	// Bounds of what one report may make the Engine look at.
	maxReportEntries = 1000
	maxText          = 2048
	maxCount         = 1 << 40
	// idleWindows: a tracked edge or subject without events for this many
	// windows is forgotten (its baseline has decayed to nothing).
	idleWindows = 30
	// ewmaAlpha is the weight of the latest window in a baseline.
	ewmaAlpha = 0.3
)

// ProxyState is what the Engine reads of one proxy of the registry.
type ProxyState struct {
	Namespace, Instance, Service string
	// Identity is the proxy's SPIFFE ID.
	Identity  string
	Connected bool
	// SVIDExpiry is zero when unknown.
	SVIDExpiry time.Time
	// SnapshotVersion is the latest version sent, AckedVersion the latest
	// the proxy ACKed.
	SnapshotVersion, AckedVersion int64
}

// Edge is one edge of the service graph as the NewEdge detector knows it:
// a source SPIFFE ID and a destination ("namespace/name", or an egress
// host).
type Edge struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
}

// EdgeStore persists the known edges, so that a restarted control plane
// does not take every edge for new.
type EdgeStore interface {
	// LoadEdges returns every edge saved.
	LoadEdges(ctx context.Context) ([]Edge, error)
	// SaveEdges adds edges.
	SaveEdges(ctx context.Context, edges []Edge) error
}

// Config configures an Engine. Zero values take the defaults written on
// each field.
type Config struct {
	// Clock, default the wall clock.
	Clock clock.Clock
	// Logger, default discard.
	Logger *slog.Logger
	// Registerer gets the Engine's metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Gatherer is what Threshold rules read; nil: they never fire.
	Gatherer prometheus.Gatherer
	// Proxies lists the registry; nil: SVIDExpiry and ProxyOutOfSync
	// rules never fire.
	Proxies func(ctx context.Context) ([]ProxyState, error)
	// KnownEdges persists the known edges; nil: in memory only.
	KnownEdges EdgeStore
	// Every is the evaluation interval. Default: DefaultEvery.
	Every time.Duration
	// MaxAlerts is the size of the alert ring. Default: DefaultMaxAlerts.
	MaxAlerts int
	// QueueSize is the queue of each webhook. Default: DefaultQueueSize.
	QueueSize int
	// Attempts bounds the delivery attempts. Default: DefaultAttempts.
	Attempts int
	// BackoffBase and BackoffMax shape the retry backoff. Default:
	// DefaultBackoffBase and DefaultBackoffMax.
	BackoffBase, BackoffMax time.Duration
	// Transport sends webhooks. Default: a transport that ignores proxy
	// environment variables, uses the system's roots, and refuses to
	// connect to a link-local, unspecified or multicast address (a host
	// name resolving to a cloud metadata service).
	Transport http.RoundTripper
}

// Engine evaluates AlertRules. Its methods are safe for concurrent use.
type Engine struct {
	cfg     Config
	clock   clock.Clock
	logger  *slog.Logger
	metrics *metrics
	client  *http.Client

	// ctx is the context of the webhook workers; cancel ends them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	rules     []*rule
	sinks     map[sinkKey]*sink
	cooldowns map[string]time.Time
	known     map[Edge]struct{}
	pending   []Edge
	knownFull bool
	lagSince  map[string]time.Time
	started   time.Time

	// knownFrom and knownTo count the known edges of each source and
	// destination (maxKnownPerEnd). Guarded by mu.
	knownFrom, knownTo map[string]int

	ringMu sync.Mutex
	ring   []*config.Alert
	next   int
}

// New returns an Engine and loads the known edges from cfg.KnownEdges.
// The Engine evaluates its windows and delivers webhooks once Run runs.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	cfg.Clock = clock.OrReal(cfg.Clock)
	cfg.Logger = telemetry.OrDiscard(cfg.Logger)
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.MaxAlerts <= 0 {
		cfg.MaxAlerts = DefaultMaxAlerts
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultAttempts
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffBase)
	}
	if cfg.Transport == nil {
		cfg.Transport = newTransport()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg: cfg, clock: cfg.Clock, logger: cfg.Logger, metrics: m,
		client: &http.Client{
			Transport: cfg.Transport,
			// Redirects are not followed: a 3xx is a failed delivery.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		sinks: map[sinkKey]*sink{}, cooldowns: map[string]time.Time{}, known: map[Edge]struct{}{},
		knownFrom: map[string]int{}, knownTo: map[string]int{},
		lagSince: map[string]time.Time{}, started: cfg.Clock.Now(),
		ring: make([]*config.Alert, 0, cfg.MaxAlerts),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	if cfg.KnownEdges != nil {
		edges, err := cfg.KnownEdges.LoadEdges(ctx)
		if err != nil {
			return nil, fmt.Errorf("load known edges: %w", err)
		}
		for _, ed := range edges {
			if len(e.known) >= maxKnownEdges {
				break
			}
			e.remember(ed)
		}
	}
	return e, nil
}

// newTransport is the default webhook transport.
func newTransport() *http.Transport {
	return &http.Transport{
		// Never through HTTP_PROXY: the control plane's environment must
		// not reroute alerts.
		Proxy:                  nil,
		DialContext:            (&net.Dialer{Timeout: 10 * time.Second, Control: dialControl}).DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
		ForceAttemptHTTP2:      true,
	}
}

// errWebhookAddr refuses a webhook connection to an address alerts are
// never sent to.
var errWebhookAddr = errors.New("webhook address refused: a cloud metadata service, link-local, unspecified or multicast address")

// dialControl refuses, after name resolution, a connection to an address
// config.WebhookAddrAllowed refuses: a webhook host name that resolves to
// a metadata service address is not followed there.
func dialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !config.WebhookAddrAllowed(ap.Addr()) {
		return errWebhookAddr
	}
	return nil
}

// Run evaluates the windows, the registry and the metrics every
// Config.Every and persists new known edges, until ctx is done; then it
// saves what is pending (within 2 seconds) and stops the webhook workers
// (alerts still queued are dropped). It returns nil.
func (e *Engine) Run(ctx context.Context) error {
	defer e.Close()
	for {
		t := e.clock.NewTimer(e.cfg.Every)
		select {
		case <-ctx.Done():
			t.Stop()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			e.saveEdges(sctx)
			cancel()
			return nil
		case <-t.C():
		}
		e.Evaluate(ctx)
		e.saveEdges(ctx)
	}
}

// Close stops the webhook workers and waits for them. It is idempotent.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
	e.client.CloseIdleConnections()
}

// saveEdges persists the edges learned since the last call; on failure
// they are kept for the next one.
func (e *Engine) saveEdges(ctx context.Context) {
	if e.cfg.KnownEdges == nil {
		return
	}
	e.mu.Lock()
	batch := e.pending
	e.pending = nil
	e.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := e.cfg.KnownEdges.SaveEdges(ctx, batch); err != nil {
		e.logger.Warn("save known edges", telemetry.KeyCount, len(batch), telemetry.KeyErr, err)
		e.mu.Lock()
		e.pending = append(batch, e.pending...)
		e.mu.Unlock()
	}
}

// SetRules replaces the rules. A rule whose document did not change keeps
// its state (baselines, windows, pending conditions) and its webhook
// queues; the webhooks of removed rules stop, dropping what they hold.
// Rules must have been validated (config.Decode does it).
func (e *Engine) SetRules(rules []*config.AlertRule) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	old := map[string]*rule{}
	for _, r := range e.rules {
		old[r.ref] = r
	}
	next := make([]*rule, 0, len(rules))
	sinks := map[sinkKey]*sink{}
	for _, doc := range rules {
		r := compileRule(doc, e.started)
		if prev, ok := old[r.ref]; ok && prev.fingerprint == r.fingerprint {
			r = prev
		}
		r.sinks = r.sinks[:0]
		for _, w := range doc.Spec.Webhooks {
			k := newSinkKey(r.ref, w)
			s, ok := e.sinks[k]
			if !ok {
				s = e.startSink(k, r.ref, w)
			}
			sinks[k] = s
			r.sinks = append(r.sinks, s)
		}
		next = append(next, r)
	}
	var stop []*sink
	for k, s := range e.sinks {
		if _, ok := sinks[k]; !ok {
			stop = append(stop, s)
		}
	}
	e.rules, e.sinks = next, sinks
	e.mu.Unlock()
	for _, s := range stop {
		s.cancel()
	}
}

// Rules returns "namespace/name" of the rules in force, sorted.
func (e *Engine) Rules() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.rules))
	for i, r := range e.rules {
		out[i] = r.ref
	}
	slices.Sort(out)
	return out
}

// ObserveReport feeds a proxy's report, already validated and bound to
// reporter (the SPIFFE ID of its SVID), to the DenialSpike, NewEdge and
// AuthFailureBurst rules. now is the control plane's time of receipt:
// counts are attributed to it, never to the proxy's clock. It never
// blocks on I/O.
func (e *Engine) ObserveReport(reporter spiffeid.ID, req *apiv1.ReportRequest, now time.Time) {
	if req == nil {
		return
	}
	reporterNS := ""
	if w, err := identity.ParseWorkloadID(reporter); err == nil {
		reporterNS = w.Namespace
	}
	denied := map[Edge]int64{}
	var seen []Edge
	n := 0
	for _, d := range req.GetDenials() {
		if n++; n > maxReportEntries {
			break
		}
		ed, ok := edgeOf(d.GetSource(), d.GetDestination())
		if !ok {
			continue
		}
		denied[ed] = min(denied[ed]+clampCount(d.GetCount()), maxCount)
		seen = append(seen, ed)
	}
	for _, x := range req.GetEdges() {
		if n++; n > maxReportEntries {
			break
		}
		if ed, ok := edgeOf(x.GetSource(), x.GetDestination()); ok {
			seen = append(seen, ed)
		}
	}
	var fired []*firing
	e.mu.Lock()
	for _, ed := range sortedEdges(denied) {
		fired = append(fired, e.observeDenials(ed, denied[ed], now)...)
	}
	for _, ed := range seen {
		fired = append(fired, e.observeEdge(ed, now)...)
	}
	for i, af := range req.GetAuthFailures() {
		if i >= maxReportEntries {
			break
		}
		addr, src := af.GetAddress(), af.GetSource()
		if !plainText(addr) || !plainText(src) {
			continue
		}
		count := min(clampCount(af.GetCount()), maxReportedFailures)
		if a, err := netipAddr(addr); err == nil {
			fired = append(fired, e.observeFailures(reporter.String(), reporterNS, "address "+a, a, "", count, now)...)
		}
		if id, err := spiffeid.FromString(src); err == nil && src != "" {
			fired = append(fired, e.observeFailures(reporter.String(), reporterNS, "identity "+id.String(), "", id.String(), count, now)...)
		}
	}
	e.mu.Unlock()
	e.emit(fired)
}

// ObserveAuthFailure feeds one failed authentication at the control plane
// (an operator or a proxy; addr is the remote address, with or without a
// port; identity is the SPIFFE ID or operator name presented, "" for
// none) to the AuthFailureBurst rules of RootNamespace. reason is not
// used for counting: a burst of mixed failures is still a burst.
func (e *Engine) ObserveAuthFailure(addr, identity, reason string, now time.Time) {
	_ = reason
	var fired []*firing
	e.mu.Lock()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	if a, err := netipAddr(addr); err == nil {
		fired = append(fired, e.observeFailures("", "", "address "+a, a, "", 1, now)...)
	}
	if identity != "" && plainText(identity) {
		fired = append(fired, e.observeFailures("", "", "identity "+identity, "", identity, 1, now)...)
	}
	e.mu.Unlock()
	e.emit(fired)
}

// Evaluate runs the periodic detectors once (SVIDExpiry, ProxyOutOfSync,
// Threshold) and forgets idle state. Run calls it every Config.Every.
func (e *Engine) Evaluate(ctx context.Context) {
	now := e.clock.Now()
	e.mu.Lock()
	var needProxies, needMetrics bool
	for _, r := range e.rules {
		switch r.detector {
		case config.DetectorSVIDExpiry, config.DetectorProxyOutOfSync:
			needProxies = true
		case config.DetectorThreshold:
			needMetrics = true
		}
	}
	e.mu.Unlock()
	var proxies []ProxyState
	proxiesOK := false
	if needProxies && e.cfg.Proxies != nil {
		ps, err := e.cfg.Proxies(ctx)
		if err != nil {
			if ctx.Err() == nil {
				e.logger.Warn("alert: list proxies", telemetry.KeyErr, err)
			}
		} else {
			proxies, proxiesOK = ps, true
		}
	}
	var gathered []*metricFamily
	metricsOK := false
	if needMetrics && e.cfg.Gatherer != nil {
		mfs, err := e.cfg.Gatherer.Gather()
		if err != nil && len(mfs) == 0 {
			e.logger.Warn("alert: gather metrics", telemetry.KeyErr, err)
		} else {
			gathered, metricsOK = families(mfs), true
		}
	}
	var fired []*firing
	e.mu.Lock()
	if proxiesOK {
		fired = append(fired, e.evaluateProxies(proxies, now)...)
	}
	if metricsOK {
		fired = append(fired, e.evaluateThresholds(gathered, now)...)
	}
	e.prune(now)
	e.mu.Unlock()
	e.emit(fired)
}

// Alerts returns the alerts of the ring whose namespace include accepts
// (nil: every namespace) and that fired at or after since (zero: any),
// newest first.
func (e *Engine) Alerts(include func(namespace string) bool, since time.Time) []*config.Alert {
	e.ringMu.Lock()
	defer e.ringMu.Unlock()
	var out []*config.Alert
	n := len(e.ring)
	for i := 0; i < n; i++ {
		// Newest first: the slot before next, going back.
		a := e.ring[(e.next-1-i+2*n)%n]
		if include != nil && !include(a.Metadata.Namespace) {
			continue
		}
		if !since.IsZero() {
			if t, err := time.Parse(time.RFC3339Nano, a.Status.FiredAt); err == nil && t.Before(since) {
				continue
			}
		}
		c := *a
		out = append(out, &c)
	}
	return out
}

// firing is an alert that fired, with what it goes to.
type firing struct {
	alert *config.Alert
	sinks []*sink
}

// fire makes the alert of r about subject, unless the same alert fired
// within r's cooldown. e.mu is held.
func (e *Engine) fire(r *rule, st config.AlertStatus, now time.Time) *firing {
	key := r.ref + "\x00" + st.Subject
	if until, ok := e.cooldowns[key]; ok && now.Before(until) {
		return nil
	}
	if r.cooldown > 0 {
		if len(e.cooldowns) >= maxCooldowns {
			e.pruneCooldowns(now)
			for k := range e.cooldowns {
				if len(e.cooldowns) < maxCooldowns {
					break
				}
				delete(e.cooldowns, k)
			}
		}
		e.cooldowns[key] = now.Add(r.cooldown)
	}
	st.Rule, st.Detector, st.Severity = r.ref, r.detector, r.severity
	st.FiredAt = now.UTC().Format(time.RFC3339Nano)
	a := &config.Alert{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAlert},
		Metadata: config.ObjectMeta{Name: newAlertName(), Namespace: r.ns},
		Status:   st,
	}
	return &firing{alert: a, sinks: slices.Clone(r.sinks)}
}

// emit logs, counts, keeps and sends alerts. e.mu is not held.
func (e *Engine) emit(fired []*firing) {
	for _, f := range fired {
		if f == nil {
			continue
		}
		s := f.alert.Status
		e.logger.Warn("alert", telemetry.KeyRule, s.Rule, telemetry.KeyDetector, s.Detector, telemetry.KeySeverity, s.Severity,
			telemetry.KeySubject, s.Subject, telemetry.KeyCount, s.Count, telemetry.KeyDetail, s.Summary)
		e.metrics.alerts.WithLabelValues(s.Rule, s.Detector, s.Severity).Inc()
		e.keep(f.alert)
		if len(f.sinks) == 0 {
			continue
		}
		body, err := config.Marshal(f.alert)
		if err != nil {
			e.logger.Error("alert: marshal", telemetry.KeyRule, s.Rule, telemetry.KeyErr, err)
			continue
		}
		for _, sk := range f.sinks {
			e.enqueue(sk, delivery{id: f.alert.Metadata.Name, body: body})
		}
	}
}

// keep adds a to the ring.
func (e *Engine) keep(a *config.Alert) {
	e.ringMu.Lock()
	defer e.ringMu.Unlock()
	if len(e.ring) < e.cfg.MaxAlerts {
		e.ring = append(e.ring, a)
		e.next = len(e.ring) % e.cfg.MaxAlerts
		return
	}
	e.ring[e.next] = a
	e.next = (e.next + 1) % e.cfg.MaxAlerts
}

// prune forgets expired cooldowns. e.mu is held.
func (e *Engine) pruneCooldowns(now time.Time) {
	for k, until := range e.cooldowns {
		if !now.Before(until) {
			delete(e.cooldowns, k)
		}
	}
}

// prune forgets idle state. e.mu is held.
func (e *Engine) prune(now time.Time) {
	e.pruneCooldowns(now)
	for _, r := range e.rules {
		r.prune(now)
	}
}

// newAlertName returns "a-" and 16 random hex digits.
func newAlertName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "a-" + hex.EncodeToString(b[:])
}

// errNotAddress: an address that is not an IP.
var errNotAddress = errors.New("not an IP address")
