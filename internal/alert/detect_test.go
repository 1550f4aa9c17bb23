package alert_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

func TestDenialSpike(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "spike",
		"  detector: DenialSpike\n  denialSpike: {window: 10s, minDenials: 10, factor: 3}\n  cooldown: 0s\n")})
	const ref = config.RootNamespace + "/spike"
	rogue := id(t, rogueID)

	// A steady 20 denials per window: the first window of an edge without
	// history fires (it is a burst from nothing), the next 20 do not.
	for w := 0; w < 21; w++ {
		f.engine.ObserveReport(rogue, denials(rogueID, "default/api", 20), f.clock.Now())
		f.clock.Advance(10 * time.Second)
	}
	got := f.alertsOf(ref)
	if len(got) != 1 {
		t.Fatalf("steady rate: got %d alerts, want 1 (the first window)", len(got))
	}
	want := config.AlertStatus{
		Rule: ref, Detector: "DenialSpike", Severity: "warning", Subject: rogueID + " -> default/api",
		Source: rogueID, Destination: "default/api", Count: 20, FiredAt: t0.Format(time.RFC3339Nano),
	}
	if diff := cmp.Diff(want, got[0].Status, cmpopts.IgnoreFields(config.AlertStatus{}, "Summary")); diff != "" {
		t.Errorf("first alert (-want +got):\n%s", diff)
	}
	if got[0].Metadata.Namespace != config.RootNamespace || got[0].Kind != config.KindAlert {
		t.Errorf("got metadata %+v kind %q, want namespace %s kind Alert", got[0].Metadata, got[0].Kind, config.RootNamespace)
	}

	// A 5x jump fires, with the baseline in the payload; counted in two
	// reports of the same window.
	f.engine.ObserveReport(rogue, denials(rogueID, "default/api", 60), f.clock.Now())
	f.engine.ObserveReport(rogue, denials(rogueID, "default/api", 40), f.clock.Now().Add(time.Second))
	got = f.alertsOf(ref)
	if len(got) != 2 {
		t.Fatalf("after a 5x jump: got %d alerts, want 2", len(got))
	}
	if s := got[1].Status; s.Count != 100 || s.Baseline < 19 || s.Baseline > 21 {
		t.Errorf("jump: got count %d baseline %v, want 100 over a baseline of about 20", s.Count, s.Baseline)
	}
	// Within the window it does not fire again.
	f.engine.ObserveReport(rogue, denials(rogueID, "default/api", 100), f.clock.Now().Add(2*time.Second))
	if n := len(f.alertsOf(ref)); n != 2 {
		t.Errorf("same window: got %d alerts, want 2", n)
	}
	if got := f.counter(t, "bulwark_alerts_total", "rule", ref, "detector", "DenialSpike", "severity", "warning"); got != 2 {
		t.Errorf("bulwark_alerts_total: got %v, want 2", got)
	}
}

func TestDenialSpikeBelowMinimum(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "spike", "  detector: DenialSpike\n  denialSpike: {minDenials: 50}\n")})
	f.engine.ObserveReport(id(t, rogueID), denials(rogueID, "default/api", 49), f.clock.Now())
	if got := f.engine.Alerts(nil, time.Time{}); len(got) != 0 {
		t.Errorf("49 denials with minDenials 50: got %d alerts, want 0", len(got))
	}
}

func TestDenialSpikeCooldown(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "spike", "  detector: DenialSpike\n  cooldown: 1m\n")})
	rogue := id(t, rogueID)
	// Bursts in windows 1, 4 (within the cooldown) and 8 (after it).
	for w := 0; w < 8; w++ {
		n := int64(0)
		if w == 0 || w == 3 || w == 7 {
			n = 1000
		}
		if n > 0 {
			f.engine.ObserveReport(rogue, denials(rogueID, "default/api", n), f.clock.Now())
		}
		f.clock.Advance(10 * time.Second)
	}
	if n := len(f.alertsOf(config.RootNamespace + "/spike")); n != 2 {
		t.Errorf("got %d alerts, want 2 (the burst within the cooldown is suppressed)", n)
	}
}

func TestDenialSpikeScope(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{
		rule(t, "default", "mine", "  detector: DenialSpike\n"),
		rule(t, "other", "theirs", "  detector: DenialSpike\n"),
	})
	f.engine.ObserveReport(id(t, rogueID), denials(rogueID, "default/api", 100), f.clock.Now())
	if n := len(f.alertsOf("default/mine")); n != 1 {
		t.Errorf("rule of the destination's namespace: got %d alerts, want 1", n)
	}
	if n := len(f.alertsOf("other/theirs")); n != 0 {
		t.Errorf("rule of another namespace: got %d alerts, want 0", n)
	}
	if got := f.engine.Alerts(func(ns string) bool { return ns == "other" }, time.Time{}); len(got) != 0 {
		t.Errorf("Alerts of namespace other: got %d, want 0", len(got))
	}
}

func TestNewEdgeOnce(t *testing.T) {
	store := &memEdges{}
	f := newFixture(t, alert.Config{KnownEdges: store})
	r := rule(t, "default", "new", "  detector: NewEdge\n  cooldown: 0s\n")
	f.engine.SetRules([]*config.AlertRule{r})
	rogue := id(t, rogueID)
	// Seen as an edge and as a denial in the same report: one alert.
	req := edges(rogueID, "default/api")
	req.Denials = denials(rogueID, "default/api", 3).Denials
	f.engine.ObserveReport(rogue, req, f.clock.Now())
	for range 5 {
		f.clock.Advance(time.Minute)
		f.engine.ObserveReport(rogue, edges(rogueID, "default/api"), f.clock.Now())
	}
	got := f.alertsOf("default/new")
	if len(got) != 1 {
		t.Fatalf("got %d alerts, want 1", len(got))
	}
	if s := got[0].Status; s.Source != rogueID || s.Destination != "default/api" || s.Detector != "NewEdge" {
		t.Errorf("got %+v, want the edge rogue -> default/api", s)
	}

	// Run saves the known edges when it stops; a new engine over the same
	// store (a restarted control plane) does not fire for the edge again.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.engine.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(store.edges) != 1 {
		t.Fatalf("saved edges: got %v, want the one edge", store.edges)
	}
	g := newFixture(t, alert.Config{KnownEdges: store})
	g.engine.SetRules([]*config.AlertRule{r})
	g.engine.ObserveReport(rogue, edges(rogueID, "default/api"), g.clock.Now())
	g.engine.ObserveReport(rogue, edges(webID, "default/api"), g.clock.Now())
	got = g.alertsOf("default/new")
	if len(got) != 1 || got[0].Status.Source != webID {
		t.Errorf("after restart: got %d alerts (%v), want only the new edge of web", len(got), got)
	}
}

func TestNewEdgeLearningPeriod(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{rule(t, "default", "new", "  detector: NewEdge\n  newEdge: {learningPeriod: 1h}\n")})
	f.engine.ObserveReport(id(t, webID), edges(webID, "default/api"), f.clock.Now())
	f.clock.Advance(time.Hour)
	f.engine.ObserveReport(id(t, webID), edges(webID, "default/api"), f.clock.Now())
	f.engine.ObserveReport(id(t, rogueID), edges(rogueID, "default/api"), f.clock.Now())
	got := f.alertsOf("default/new")
	if len(got) != 1 || got[0].Status.Source != rogueID {
		t.Errorf("got %v, want one alert, for the edge first seen after the learning period", got)
	}
}

func TestNewEdgeSaveFailureKeepsPending(t *testing.T) {
	store := &memEdges{fail: errors.New("disk full")}
	f := newFixture(t, alert.Config{KnownEdges: store, Every: time.Second})
	f.engine.ObserveReport(id(t, webID), edges(webID, "default/api"), f.clock.Now())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	created := f.clock.TimerCreated()
	go func() { done <- f.engine.Run(ctx) }()
	<-created
	created = f.clock.TimerCreated()
	f.clock.Advance(time.Second) // an evaluation: the save fails
	<-created
	store.mu.Lock()
	store.fail = nil
	store.mu.Unlock()
	cancel()
	<-done
	if len(store.edges) != 1 {
		t.Errorf("got saved edges %v, want the edge kept and saved at stop", store.edges)
	}
}

func TestIgnoresMalformedReports(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "new", "  detector: NewEdge\n"),
		rule(t, config.RootNamespace, "burst", "  detector: AuthFailureBurst\n  authFailureBurst: {threshold: 1}\n")})
	f.engine.ObserveReport(id(t, webID), nil, f.clock.Now())
	f.engine.ObserveReport(id(t, webID), &apiv1.ReportRequest{
		Edges: []*apiv1.Edge{{Source: "not-an-id", Destination: "default/api"}, {Source: webID, Destination: "a\x1b[2Jb"}},
		AuthFailures: []*apiv1.AuthFailure{{Address: "not-an-ip", Count: 5}, {Address: "10.0.0.1", Count: -5},
			{Address: "10.0.0.2", Source: "bad\nid", Count: 5}},
	}, f.clock.Now())
	for _, a := range f.engine.Alerts(nil, time.Time{}) {
		if a.Status.Detector == "NewEdge" || a.Status.Address != "10.0.0.2" {
			t.Errorf("got alert %+v from a malformed entry", a.Status)
		}
	}
}

func TestAuthFailureBurst(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{
		rule(t, config.RootNamespace, "burst", "  detector: AuthFailureBurst\n  authFailureBurst: {window: 1m, threshold: 20}\n"),
		rule(t, "default", "ns-burst", "  detector: AuthFailureBurst\n  authFailureBurst: {window: 1m, threshold: 20}\n"),
	})
	// The control plane's own failures: 19 from one address do not fire,
	// the 20th does (root rules only).
	for i := 0; i < 19; i++ {
		f.engine.ObserveAuthFailure("192.0.2.7:51234", "", "bad certificate", f.clock.Now())
	}
	if n := len(f.alertsOf(config.RootNamespace + "/burst")); n != 0 {
		t.Fatalf("19 failures: got %d alerts, want 0", n)
	}
	f.engine.ObserveAuthFailure("192.0.2.7:51235", "", "bad certificate", f.clock.Now())
	got := f.alertsOf(config.RootNamespace + "/burst")
	if len(got) != 1 || got[0].Status.Address != "192.0.2.7" || got[0].Status.Count != 20 {
		t.Fatalf("20 failures: got %v, want one alert for 192.0.2.7 with count 20", got)
	}
	if n := len(f.alertsOf("default/ns-burst")); n != 0 {
		t.Errorf("namespaced rule and control-plane failures: got %d alerts, want 0", n)
	}

	// A proxy of namespace default reports failures of an identity: both
	// rules see them.
	f.engine.ObserveReport(id(t, apiID), &apiv1.ReportRequest{AuthFailures: []*apiv1.AuthFailure{
		{Address: "198.51.100.1", Source: rogueID, Reason: "revoked", Count: 25, FirstSeenUnixNano: 1, LastSeenUnixNano: 1},
	}}, f.clock.Now())
	for _, ref := range []string{config.RootNamespace + "/burst", "default/ns-burst"} {
		var subjects []string
		for _, a := range f.alertsOf(ref) {
			subjects = append(subjects, a.Status.Subject)
		}
		if !contains(subjects, "address 198.51.100.1") || !contains(subjects, "identity "+rogueID) {
			t.Errorf("%s: got subjects %v, want the address and the identity", ref, subjects)
		}
	}
}

func TestAuthFailureBurstSlidingWindow(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "burst", "  detector: AuthFailureBurst\n  authFailureBurst: {window: 1m, threshold: 20}\n")})
	// 10 per minute, spread out: never 20 within a minute.
	for i := 0; i < 40; i++ {
		f.engine.ObserveAuthFailure("192.0.2.9", "", "x", f.clock.Now())
		f.clock.Advance(6 * time.Second)
	}
	if n := len(f.engine.Alerts(nil, time.Time{})); n != 0 {
		t.Errorf("10 per minute: got %d alerts, want 0", n)
	}
	// 10 in one fixed window and 12 early in the next: neither window
	// holds 20, but the sliding minute (the previous window weighted by how
	// much of it is still inside) does.
	f.clock.Advance(time.Hour)
	f.engine.ObserveAuthFailure("192.0.2.10", "", "x", f.clock.Now()) // the window starts
	f.clock.Advance(50 * time.Second)
	for i := 0; i < 9; i++ {
		f.engine.ObserveAuthFailure("192.0.2.10", "", "x", f.clock.Now())
	}
	f.clock.Advance(15 * time.Second)
	for i := 0; i < 9; i++ {
		f.engine.ObserveAuthFailure("192.0.2.10", "", "x", f.clock.Now())
	}
	if n := len(f.engine.Alerts(nil, time.Time{})); n != 0 {
		t.Fatalf("9 + 10 weighted 55/60: got %d alerts, want 0", n)
	}
	for i := 0; i < 3; i++ {
		f.engine.ObserveAuthFailure("192.0.2.10", "", "x", f.clock.Now())
	}
	got := f.engine.Alerts(nil, time.Time{})
	if len(got) != 1 || got[0].Status.Count < 20 {
		t.Errorf("12 + 10 weighted 55/60: got %v, want one alert with a count of at least 20", got)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// proxies is a settable proxy list.
type proxies struct{ list []alert.ProxyState }

func (p *proxies) get(context.Context) ([]alert.ProxyState, error) { return p.list, nil }

func TestSVIDExpiry(t *testing.T) {
	ps := &proxies{}
	f := newFixture(t, alert.Config{Proxies: ps.get})
	f.engine.SetRules([]*config.AlertRule{rule(t, "default", "expiry", "  detector: SVIDExpiry\n  svidExpiry: {before: 5m}\n  cooldown: 1h\n")})
	ps.list = []alert.ProxyState{
		{Namespace: "default", Instance: "api-1", Identity: apiID, Connected: true, SVIDExpiry: t0.Add(10 * time.Minute)},
		{Namespace: "default", Instance: "api-2", Identity: apiID, Connected: false, SVIDExpiry: t0.Add(time.Minute)},
		{Namespace: "other", Instance: "x-1", Identity: "spiffe://bulwark.local/ns/other/sa/x", Connected: true, SVIDExpiry: t0.Add(time.Minute)},
	}
	f.engine.Evaluate(context.Background())
	if n := len(f.alertsOf("default/expiry")); n != 0 {
		t.Fatalf("10m left: got %d alerts, want 0 (and none for a disconnected proxy or another namespace)", n)
	}
	f.clock.Advance(6 * time.Minute)
	f.engine.Evaluate(context.Background())
	f.clock.Advance(time.Second)
	f.engine.Evaluate(context.Background())
	got := f.alertsOf("default/expiry")
	if len(got) != 1 || got[0].Status.Proxy != "default/api-1" || got[0].Status.Value != 240 {
		t.Errorf("4m left: got %v, want one alert for default/api-1 with 240 seconds left", got)
	}
}

func TestProxyOutOfSync(t *testing.T) {
	ps := &proxies{list: []alert.ProxyState{{Namespace: "default", Instance: "api-1", Identity: apiID, Connected: true, SnapshotVersion: 7, AckedVersion: 6}}}
	f := newFixture(t, alert.Config{Proxies: ps.get})
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "sync", "  detector: ProxyOutOfSync\n  proxyOutOfSync: {after: 1m}\n  cooldown: 0s\n")})
	step := func(d time.Duration) int {
		f.clock.Advance(d)
		f.engine.Evaluate(context.Background())
		return len(f.alertsOf(config.RootNamespace + "/sync"))
	}
	if n := step(0); n != 0 {
		t.Fatalf("lag just seen: got %d alerts, want 0", n)
	}
	if n := step(59 * time.Second); n != 0 {
		t.Fatalf("lag for 59s: got %d alerts, want 0", n)
	}
	if n := step(time.Second); n != 1 {
		t.Fatalf("lag for 60s: got %d alerts, want 1", n)
	}
	// It catches up, then lags again: the clock starts over.
	ps.list[0].AckedVersion = 7
	step(time.Second)
	ps.list[0].SnapshotVersion = 8
	if n := step(30 * time.Second); n != 1 {
		t.Errorf("new lag for 0s: got %d alerts, want 1", n)
	}
	if n := step(30 * time.Second); n != 1 {
		t.Errorf("new lag for 30s: got %d alerts, want 1", n)
	}
}

func TestThreshold(t *testing.T) {
	reg := prometheus.NewRegistry()
	gauge := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "test_queue_depth", Help: "x"}, []string{"queue"})
	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_errors_total", Help: "x"})
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "test_latency_seconds", Help: "x"})
	reg.MustRegister(gauge, counter, hist)
	f := newFixture(t, alert.Config{Gatherer: reg})
	f.engine.SetRules([]*config.AlertRule{
		rule(t, config.RootNamespace, "depth", "  detector: Threshold\n  threshold: {metric: test_queue_depth, labels: {queue: a}, op: '>', value: 5, for: 10s}\n  cooldown: 0s\n"),
		rule(t, config.RootNamespace, "errors", "  detector: Threshold\n  threshold: {metric: test_errors_total, rate: true, op: '>=', value: 2}\n"),
		rule(t, config.RootNamespace, "slow", "  detector: Threshold\n  threshold: {metric: test_latency_seconds_count, op: '==', value: 3}\n"),
	})
	gauge.WithLabelValues("a").Set(3)
	gauge.WithLabelValues("b").Set(100)
	eval := func(d time.Duration) {
		f.clock.Advance(d)
		f.engine.Evaluate(context.Background())
	}
	eval(0)
	if n := len(f.engine.Alerts(nil, time.Time{})); n != 0 {
		t.Fatalf("below every threshold: got %d alerts, want 0", n)
	}
	gauge.WithLabelValues("a").Set(7)
	eval(time.Second)
	eval(9 * time.Second)
	if n := len(f.alertsOf(config.RootNamespace + "/depth")); n != 0 {
		t.Fatalf("above for 9s: got %d alerts, want 0", n)
	}
	eval(time.Second)
	got := f.alertsOf(config.RootNamespace + "/depth")
	if len(got) != 1 || got[0].Status.Subject != `test_queue_depth{queue="a"}` || got[0].Status.Value != 7 {
		t.Fatalf("above for 10s: got %v, want one alert for queue a with value 7", got)
	}

	// A rate: 30 errors over 10s is 3 per second.
	counter.Add(30)
	eval(10 * time.Second)
	got = f.alertsOf(config.RootNamespace + "/errors")
	if len(got) != 1 || got[0].Status.Value != 3 {
		t.Errorf("rate 3/s: got %v, want one alert with value 3", got)
	}
	for range 3 {
		hist.Observe(1)
	}
	eval(time.Second)
	if n := len(f.alertsOf(config.RootNamespace + "/slow")); n != 1 {
		t.Errorf("histogram count 3: got %d alerts, want 1", n)
	}
}

func TestAlertsRing(t *testing.T) {
	f := newFixture(t, alert.Config{MaxAlerts: 3})
	f.engine.SetRules([]*config.AlertRule{rule(t, "default", "new", "  detector: NewEdge\n")})
	for i := 0; i < 5; i++ {
		src := fmt.Sprintf("spiffe://bulwark.local/ns/default/sa/s%d", i)
		f.engine.ObserveReport(id(t, src), edges(src, "default/api"), f.clock.Now())
		f.clock.Advance(time.Minute)
	}
	got := f.engine.Alerts(nil, time.Time{})
	var srcs []string
	for _, a := range got {
		srcs = append(srcs, a.Status.Source)
	}
	want := []string{"spiffe://bulwark.local/ns/default/sa/s4", "spiffe://bulwark.local/ns/default/sa/s3", "spiffe://bulwark.local/ns/default/sa/s2"}
	if diff := cmp.Diff(want, srcs); diff != "" {
		t.Errorf("ring, newest first (-want +got):\n%s", diff)
	}
	if got := f.engine.Alerts(nil, t0.Add(3*time.Minute)); len(got) != 2 {
		t.Errorf("since 3m after start: got %d alerts, want 2", len(got))
	}
	if got := f.engine.Alerts(func(ns string) bool { return ns == "default" }, time.Time{}); len(got) != 3 {
		t.Errorf("namespace default: got %d alerts, want 3", len(got))
	}
}

func TestSetRulesKeepsState(t *testing.T) {
	f := newFixture(t, alert.Config{})
	r := rule(t, config.RootNamespace, "spike", "  detector: DenialSpike\n  cooldown: 0s\n")
	f.engine.SetRules([]*config.AlertRule{r})
	rogue := id(t, rogueID)
	f.engine.ObserveReport(rogue, denials(rogueID, "default/api", 100), f.clock.Now())
	// The same rule again (a no-op apply): the fired window is kept.
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "spike", "  detector: DenialSpike\n  cooldown: 0s\n")})
	f.engine.ObserveReport(rogue, denials(rogueID, "default/api", 100), f.clock.Now())
	if n := len(f.engine.Alerts(nil, time.Time{})); n != 1 {
		t.Errorf("got %d alerts, want 1", n)
	}
	if got := f.engine.Rules(); !cmp.Equal(got, []string{config.RootNamespace + "/spike"}) {
		t.Errorf("Rules: got %v", got)
	}
	f.engine.SetRules(nil)
	f.engine.ObserveReport(rogue, denials(rogueID, "default/other", 100), f.clock.Now())
	if n := len(f.engine.Alerts(nil, time.Time{})); n != 1 {
		t.Errorf("without rules: got %d alerts, want 1", n)
	}
}

func TestCloseIdempotent(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.Close()
	f.engine.Close()
	// After Close, rules with webhooks start nothing.
	f.engine.SetRules([]*config.AlertRule{rule(t, "default", "new", "  detector: NewEdge\n  webhooks: [{url: 'http://127.0.0.1:1/', secret: 0123456789abcdef}]\n")})
}

// failingEdges is an EdgeStore that cannot be read.
type failingEdges struct{ memEdges }

func (*failingEdges) LoadEdges(context.Context) ([]alert.Edge, error) {
	return nil, errors.New("store closed")
}

func TestNewFailures(t *testing.T) {
	if _, err := alert.New(context.Background(), alert.Config{KnownEdges: &failingEdges{}}); err == nil {
		t.Errorf("unreadable known edges: got no error, want one")
	}
	reg := prometheus.NewRegistry()
	e, err := alert.New(context.Background(), alert.Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := alert.New(context.Background(), alert.Config{Registerer: reg}); err == nil {
		t.Errorf("metrics registered twice: got no error, want one")
	}
}
