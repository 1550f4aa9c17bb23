package alert_test

// Attack tests of alerting: webhook URLs that reach what they must not
// (SSRF), AlertRules with extreme values, and delivery to a host whose
// address is only known once it is resolved.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// alertRuleDoc is an AlertRule of namespace ns with spec (indented two
// spaces).
func alertRuleDoc(ns, spec string) string {
	return "apiVersion: bulwark.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: r, namespace: " + ns + "}\nspec:\n" + spec
}

// TestAttackWebhookURLsRefusedAtApply: every URL that leaves https (or
// http to loopback), carries credentials, or names a link-local (cloud
// metadata), unspecified or multicast address is refused at apply with
// the field named.
func TestAttackWebhookURLsRefusedAtApply(t *testing.T) {
	bad := []string{
		"file:///etc/passwd",
		"unix:///var/run/docker.sock",
		"gopher://127.0.0.1:25/",
		"ftp://example.com/",
		"http://169.254.169.254/latest/meta-data/",
		"https://169.254.169.254/latest/meta-data/",
		"https://169.254.170.2/v2/credentials",
		"https://[fd00:ec2::254]/latest/meta-data/",
		"https://100.100.100.200/latest/meta-data/",
		"https://[fe80::1]/hook",
		"https://[fe80::1%25eth0]/hook",
		"https://[::ffff:169.254.169.254]/hook",
		"https://0.0.0.0/hook",
		"https://[::]/hook",
		"https://224.0.0.1/hook",
		"https://[ff02::1]/hook",
		"http://10.0.0.1/hook",
		"http://example.com/hook",
		"http://127.0.0.1.nip.io/hook",
		"https://user:pass@example.com/hook",
		"https://token@example.com/hook",
		"https:///hook",
		"//example.com/hook",
		"https://example.com:0/hook",
		"https://example.com:99999/hook",
		"https://example.com/hook#frag",
		"https://example.com/" + strings.Repeat("a", config.MaxWebhookURL),
	}
	for _, u := range bad {
		t.Run(u[:min(len(u), 48)], func(t *testing.T) {
			doc := alertRuleDoc("default", "  detector: NewEdge\n  webhooks: [{url: '"+u+"', secret: 0123456789abcdef0123}]\n")
			_, err := config.DecodeObject([]byte(doc))
			if err == nil {
				t.Fatalf("webhook url %q: accepted, want it refused", u)
			}
			if !strings.Contains(err.Error(), "spec.webhooks[0].url") {
				t.Errorf("webhook url %q: got %v, want an error naming spec.webhooks[0].url", u, err)
			}
			if strings.Contains(err.Error(), "0123456789abcdef0123") {
				t.Errorf("error quotes the webhook secret: %v", err)
			}
		})
	}
	for _, u := range []string{"https://alerts.example.com/hook?team=sec", "http://127.0.0.1:9000/hook", "http://[::1]:9000/hook",
		"http://localhost:9000/hook", "https://10.0.0.5/hook", "https://[2001:db8::1]/hook"} {
		doc := alertRuleDoc("default", "  detector: NewEdge\n  webhooks: [{url: '"+u+"', secret: 0123456789abcdef0123}]\n")
		if _, err := config.DecodeObject([]byte(doc)); err != nil {
			t.Errorf("webhook url %q: got %v, want it accepted", u, err)
		}
	}
}

// TestAttackExtremeRuleValues: AlertRules with extreme or hostile values
// are refused at apply, each naming its field.
func TestAttackExtremeRuleValues(t *testing.T) {
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("  detector: NewEdge\n  webhooks:\n")
		for i := range n {
			b.WriteString("  - {url: 'https://h" + strings.Repeat("x", i%7) + ".example.com/" + string(rune('a'+i%26)) + strings.Repeat("b", i/26) + "', secret: 0123456789abcdef0123}\n")
		}
		return b.String()
	}
	tests := []struct {
		name, ns, spec, field string
	}{
		{"window_zero", "default", "  detector: DenialSpike\n  denialSpike: {window: 0s}\n", "spec.denialSpike.window"},
		{"window_negative", "default", "  detector: DenialSpike\n  denialSpike: {window: -5s}\n", "spec.denialSpike.window"},
		{"window_huge", "default", "  detector: DenialSpike\n  denialSpike: {window: 100000h}\n", "spec.denialSpike.window"},
		{"window_overflow", "default", "  detector: DenialSpike\n  denialSpike: {window: 9999999999999999999h}\n", "spec.denialSpike.window"},
		{"factor_huge", "default", "  detector: DenialSpike\n  denialSpike: {factor: 1e308}\n", "spec.denialSpike.factor"},
		{"factor_inf", "default", "  detector: DenialSpike\n  denialSpike: {factor: .inf}\n", "spec.denialSpike.factor"},
		{"factor_nan", "default", "  detector: DenialSpike\n  denialSpike: {factor: .nan}\n", "spec.denialSpike.factor"},
		{"factor_one", "default", "  detector: DenialSpike\n  denialSpike: {factor: 1}\n", "spec.denialSpike.factor"},
		{"factor_negative", "default", "  detector: DenialSpike\n  denialSpike: {factor: -3}\n", "spec.denialSpike.factor"},
		{"min_negative", "default", "  detector: DenialSpike\n  denialSpike: {minDenials: -1}\n", "spec.denialSpike.minDenials"},
		{"min_huge", "default", "  detector: DenialSpike\n  denialSpike: {minDenials: 99999999999999}\n", "spec.denialSpike.minDenials"},
		{"burst_threshold_negative", "default", "  detector: AuthFailureBurst\n  authFailureBurst: {threshold: -1}\n", "spec.authFailureBurst.threshold"},
		{"cooldown_negative", "default", "  detector: NewEdge\n  cooldown: -1s\n", "spec.cooldown"},
		{"cooldown_huge", "default", "  detector: NewEdge\n  cooldown: 10000h\n", "spec.cooldown"},
		{"threshold_metric_injection", "bulwark-system", "  detector: Threshold\n  threshold: {metric: 'up{job=\"x\"}', op: '>', value: 1}\n", "spec.threshold.metric"},
		{"threshold_metric_regex", "bulwark-system", "  detector: Threshold\n  threshold: {metric: '.*', op: '>', value: 1}\n", "spec.threshold.metric"},
		{"threshold_label_injection", "bulwark-system", "  detector: Threshold\n  threshold: {metric: up, labels: {'a\"}': x}, op: '>', value: 1}\n", "spec.threshold.labels"},
		{"threshold_op_injection", "bulwark-system", "  detector: Threshold\n  threshold: {metric: up, op: '> 0 or', value: 1}\n", "spec.threshold.op"},
		{"threshold_value_inf", "bulwark-system", "  detector: Threshold\n  threshold: {metric: up, op: '>', value: .inf}\n", "spec.threshold.value"},
		{"threshold_outside_root", "default", "  detector: Threshold\n  threshold: {metric: up, op: '>', value: 1}\n", "spec.detector"},
		{"webhooks_9", "default", many(9), "spec.webhooks"},
		{"webhooks_10000", "default", many(10000), "spec.webhooks"},
		{"secret_short", "default", "  detector: NewEdge\n  webhooks: [{url: 'https://a.example.com/', secret: short}]\n", "spec.webhooks[0].secret"},
		{"secret_placeholder", "default", "  detector: NewEdge\n  webhooks: [{url: 'https://a.example.com/', secret: '<redacted>'}]\n", "spec.webhooks[0].secret"},
		{"timeout_huge", "default", "  detector: NewEdge\n  webhooks: [{url: 'https://a.example.com/', secret: 0123456789abcdef0123, timeout: 1h}]\n", "spec.webhooks[0].timeout"},
		{"timeout_zero", "default", "  detector: NewEdge\n  webhooks: [{url: 'https://a.example.com/', secret: 0123456789abcdef0123, timeout: 0s}]\n", "spec.webhooks[0].timeout"},
		{"url_twice", "default", "  detector: NewEdge\n  webhooks: [{url: 'https://a.example.com/', secret: 0123456789abcdef0123}, {url: 'https://a.example.com/', secret: 0123456789abcdef0123}]\n", "spec.webhooks[1].url"},
		{"unknown_detector", "default", "  detector: '; rm -rf /'\n", "spec.detector"},
		{"severity", "default", "  detector: NewEdge\n  severity: '<script>'\n", "spec.severity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.DecodeObject([]byte(alertRuleDoc(tt.ns, tt.spec)))
			if err == nil {
				t.Fatalf("accepted, want an error naming %s", tt.field)
			}
			// Infinities and NaN cannot be written as JSON: the YAML
			// decoder refuses them before validation, naming the value.
			if !strings.Contains(err.Error(), tt.field) && !strings.Contains(err.Error(), "unsupported value") {
				t.Errorf("got %v, want an error naming %s", err, tt.field)
			}
			if strings.Contains(err.Error(), "0123456789abcdef0123") {
				t.Errorf("error quotes the webhook secret: %v", err)
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for the webhook workers' logging.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAttackWebhookDialRefusesMetadataAddress: a webhook whose host turns
// out to be a link-local address (as a host name resolving to a metadata
// service would) is not connected to: the default transport refuses the
// address after resolution, and the delivery fails, saying why, without
// the URL's path or query in the log.
func TestAttackWebhookDialRefusesMetadataAddress(t *testing.T) {
	logs := &lockedBuffer{}
	f := newFixture(t, alert.Config{Clock: clock.Real(), Attempts: 1, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	r := hookRule(t, "meta", "https://alerts.example.com/hook", "30s")
	// What validation would refuse as a literal reaches the dialer as a
	// resolved address: put it in the URL after validation.
	r.Spec.Webhooks[0].URL = "http://169.254.169.254:80/latest/meta-data/iam?token=leak-me"
	f.engine.SetRules([]*config.AlertRule{r})
	start := time.Now()
	f.engine.ObserveReport(id(t, rogueID), edges(rogueID, "default/api"), time.Now())
	waitFor(t, "failed", func() bool { return f.counter(t, "bulwark_alert_webhook_deliveries_total", "result", "failed") == 1 })
	out := logs.String()
	if !strings.Contains(out, "webhook address refused") {
		t.Errorf("log: got %s, want the delivery refused for its address", out)
	}
	if strings.Contains(out, "leak-me") || strings.Contains(out, "meta-data") {
		t.Errorf("log carries the webhook URL's path or query: %s", out)
	}
	// Refused before any connection: not the 30s timeout.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("delivery took %v: the dialer waited for the address instead of refusing it", d)
	}

	// A loopback receiver is still reached by the same transport.
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	f.engine.SetRules([]*config.AlertRule{hookRule(t, "ok", rc.srv.URL+"/hook", "5s")})
	f.engine.ObserveReport(id(t, webID), edges(webID, "default/api"), time.Now())
	waitFor(t, "delivered", func() bool { return f.counter(t, "bulwark_alert_webhook_deliveries_total", "result", "delivered") == 1 })
}

// TestAttackNewEdgeFloodStaysWithItsReporter: one compromised proxy
// invents 100,000 edges to its own service (inbound, any source it likes)
// and from its own identity (outbound denials to invented hosts), enough
// to fill the mesh-wide set of known edges. NewEdge must still fire for an
// edge between two other services: the invented edges only use up the
// attacker's own ends.
func TestAttackNewEdgeFloodStaysWithItsReporter(t *testing.T) {
	store := &memEdges{}
	f := newFixture(t, alert.Config{KnownEdges: store})
	f.engine.SetRules([]*config.AlertRule{rule(t, "bulwark-system", "new", "  detector: NewEdge\n  cooldown: 0s\n")})
	rogue := id(t, rogueID)
	const perReport = 500
	n := 0
	for n < 100000 {
		req := &apiv1.ReportRequest{}
		for i := 0; i < perReport; i++ {
			n++
			if n%2 == 0 {
				req.Edges = append(req.Edges, &apiv1.Edge{Direction: "inbound", Source: fmt.Sprintf("spiffe://bulwark.local/ns/x/sa/fake-%d", n),
					Destination: "default/rogue", Method: "GET", Path: "/", Requests: 1})
			} else {
				req.Denials = append(req.Denials, &apiv1.Denial{Direction: "outbound", Source: rogueID, Destination: fmt.Sprintf("h%d.example.com", n),
					Method: "GET", Path: "/", Rule: -1, Reason: "no ALLOW rule matched", Status: 403, Count: 1, FirstSeenUnixNano: 1, LastSeenUnixNano: 1})
			}
		}
		f.engine.ObserveReport(rogue, req, f.clock.Now())
	}
	f.engine.ObserveReport(id(t, webID), edges(webID, "default/api"), f.clock.Now())
	var found bool
	for _, a := range f.alertsOf("bulwark-system/new") {
		if a.Status.Source == webID && a.Status.Destination == "default/api" {
			found = true
		}
	}
	if !found {
		t.Fatalf("after a flood of %d invented edges: no NewEdge alert for web -> default/api", n)
	}
	// What is remembered (and persisted) of the flood is bounded by the
	// attacker's two ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.engine.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := len(store.edges); got > 2*5000+1 {
		t.Errorf("persisted known edges: got %d, want at most %d", got, 2*5000+1)
	}
}

// TestAttackForgedAuthFailures: one compromised proxy reports 256
// authentication failures per report, from invented addresses, with huge
// counts. It fires at most maxAlertsPerReporter alerts and one aggregate
// alert about itself per window, cannot push out the subjects other
// proxies report, and its counts are clamped; an honest proxy's burst
// still fires.
func TestAttackForgedAuthFailures(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "burst", "  detector: AuthFailureBurst\n  authFailureBurst: {window: 1m, threshold: 20}\n")})
	honest, rogue := id(t, apiID), id(t, rogueID)
	failures := func(addr string, n int64) *apiv1.AuthFailure {
		return &apiv1.AuthFailure{Address: addr, Reason: "untrusted_svid", Count: n, FirstSeenUnixNano: 1, LastSeenUnixNano: 1}
	}
	// The honest proxy sees 10 failures of a scanner: below the threshold.
	f.engine.ObserveReport(honest, &apiv1.ReportRequest{AuthFailures: []*apiv1.AuthFailure{failures("198.51.100.9", 10)}}, f.clock.Now())
	// 60 reports of 256 invented addresses: 15,360 subjects, more than the
	// 10,000 a rule tracks.
	for r := range 60 {
		req := &apiv1.ReportRequest{}
		for i := range 256 {
			req.AuthFailures = append(req.AuthFailures, failures(fmt.Sprintf("10.%d.%d.%d", r, i/256, i%256), 1<<40))
		}
		f.engine.ObserveReport(rogue, req, f.clock.Now())
	}
	var fromRogue, aggregate int
	for _, a := range f.alertsOf(config.RootNamespace + "/burst") {
		if strings.HasPrefix(a.Status.Address, "10.") {
			fromRogue++
			if a.Status.Count > 1000000 {
				t.Errorf("alert %s: got count %d, want it clamped to at most 1000000", a.Status.Subject, a.Status.Count)
			}
		}
		if a.Status.Subject == "reporter "+rogueID {
			aggregate++
			if a.Status.Source != rogueID || !strings.Contains(a.Status.Summary, "reporter "+rogueID) {
				t.Errorf("aggregate alert: got %+v, want the reporter as its source and in its summary", a.Status)
			}
		}
	}
	if fromRogue != 10 || aggregate != 1 {
		t.Errorf("forged failures: got %d alerts and %d aggregate, want 10 and 1", fromRogue, aggregate)
	}
	// The honest proxy's scanner reaches the threshold: its first 10
	// failures were not pushed out.
	f.engine.ObserveReport(honest, &apiv1.ReportRequest{AuthFailures: []*apiv1.AuthFailure{failures("198.51.100.9", 10)}}, f.clock.Now())
	found := false
	for _, a := range f.alertsOf(config.RootNamespace + "/burst") {
		if a.Status.Address == "198.51.100.9" {
			found = a.Status.Count == 20
		}
	}
	if !found {
		t.Errorf("after the flood: no alert for 198.51.100.9 with its 20 failures")
	}
	// In the next window the rogue proxy gets its bounded share again, no
	// more.
	f.clock.Advance(2 * time.Minute)
	f.engine.Evaluate(context.Background())
	before := len(f.alertsOf(config.RootNamespace + "/burst"))
	req := &apiv1.ReportRequest{}
	for i := range 256 {
		req.AuthFailures = append(req.AuthFailures, failures(fmt.Sprintf("10.200.%d.%d", i/256, i%256), 100))
	}
	f.engine.ObserveReport(rogue, req, f.clock.Now())
	if got := len(f.alertsOf(config.RootNamespace+"/burst")) - before; got > 11 {
		t.Errorf("next window: got %d alerts, want at most 11", got)
	}
}

// TestAttackForgedAuthFailuresManyReporters: twelve compromised proxies,
// each at its bound of tracked subjects, fill the rule's 10,000 subjects;
// the subject an honest proxy reported survives, because at the bound the
// proxies tracking the most lose their oldest.
func TestAttackForgedAuthFailuresManyReporters(t *testing.T) {
	f := newFixture(t, alert.Config{})
	f.engine.SetRules([]*config.AlertRule{rule(t, config.RootNamespace, "burst", "  detector: AuthFailureBurst\n  authFailureBurst: {window: 1m, threshold: 20}\n")})
	failures := func(addr string, n int64) *apiv1.AuthFailure {
		return &apiv1.AuthFailure{Address: addr, Reason: "no_svid", Count: n, FirstSeenUnixNano: 1, LastSeenUnixNano: 1}
	}
	f.engine.ObserveReport(id(t, apiID), &apiv1.ReportRequest{AuthFailures: []*apiv1.AuthFailure{failures("198.51.100.9", 10)}}, f.clock.Now())
	for p := range 12 {
		rogue := id(t, fmt.Sprintf("spiffe://bulwark.local/ns/default/sa/rogue-%d", p))
		for r := range 4 {
			req := &apiv1.ReportRequest{}
			for i := range 256 {
				req.AuthFailures = append(req.AuthFailures, failures(fmt.Sprintf("10.%d.%d.%d", p, r, i), 1))
			}
			f.engine.ObserveReport(rogue, req, f.clock.Now())
		}
	}
	f.engine.ObserveReport(id(t, apiID), &apiv1.ReportRequest{AuthFailures: []*apiv1.AuthFailure{failures("198.51.100.9", 10)}}, f.clock.Now())
	found := false
	for _, a := range f.alertsOf(config.RootNamespace + "/burst") {
		found = found || (a.Status.Address == "198.51.100.9" && a.Status.Count == 20)
	}
	if !found {
		t.Errorf("after 12 proxies' floods: no alert for 198.51.100.9 with its 20 failures")
	}
}
