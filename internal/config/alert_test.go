package config_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// alertRuleYAML is a valid DenialSpike rule in the root namespace; the
// cases below replace its spec.
const alertRuleHeader = `apiVersion: bulwark.dev/v1alpha1
kind: AlertRule
metadata: {name: spikes, namespace: %NS%}
spec:
`

func decodeAlertRule(t *testing.T, ns, spec string) (*config.AlertRule, error) {
	t.Helper()
	doc := strings.ReplaceAll(alertRuleHeader, "%NS%", ns) + spec
	o, err := config.DecodeObject([]byte(doc))
	if err != nil {
		return nil, err
	}
	return o.(*config.AlertRule), nil
}

func TestAlertRuleDefaults(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want config.AlertRuleSpec
	}{
		{
			name: "denial_spike",
			spec: "  detector: DenialSpike\n",
			want: config.AlertRuleSpec{Detector: "DenialSpike", Severity: "warning", Cooldown: "5m0s",
				DenialSpike: &config.DenialSpikeParams{Window: "10s", MinDenials: 10, Factor: 3}},
		},
		{
			name: "new_edge",
			spec: "  detector: NewEdge\n  severity: critical\n  cooldown: 0s\n",
			want: config.AlertRuleSpec{Detector: "NewEdge", Severity: "critical", Cooldown: "0s",
				NewEdge: &config.NewEdgeParams{LearningPeriod: "0s"}},
		},
		{
			name: "auth_failure_burst",
			spec: "  detector: AuthFailureBurst\n",
			want: config.AlertRuleSpec{Detector: "AuthFailureBurst", Severity: "warning", Cooldown: "5m0s",
				AuthFailureBurst: &config.AuthFailureBurstParams{Window: "1m0s", Threshold: 20}},
		},
		{
			name: "svid_expiry",
			spec: "  detector: SVIDExpiry\n",
			want: config.AlertRuleSpec{Detector: "SVIDExpiry", Severity: "warning", Cooldown: "5m0s",
				SVIDExpiry: &config.SVIDExpiryParams{Before: "5m0s"}},
		},
		{
			name: "proxy_out_of_sync",
			spec: "  detector: ProxyOutOfSync\n",
			want: config.AlertRuleSpec{Detector: "ProxyOutOfSync", Severity: "warning", Cooldown: "5m0s",
				ProxyOutOfSync: &config.ProxyOutOfSyncParams{After: "1m0s"}},
		},
		{
			name: "threshold_and_webhook",
			spec: "  detector: Threshold\n  threshold: {metric: bulwark_alerts_total, op: '>', value: 0, rate: true}\n" +
				"  webhooks:\n  - {url: 'https://hooks.example.com/x', secret: 0123456789abcdef}\n",
			want: config.AlertRuleSpec{Detector: "Threshold", Severity: "warning", Cooldown: "5m0s",
				Threshold: &config.ThresholdParams{Metric: "bulwark_alerts_total", Op: ">", Value: ptr(0.0), Rate: true, For: "0s"},
				Webhooks:  []config.AlertWebhook{{URL: "https://hooks.example.com/x", Secret: "0123456789abcdef", Timeout: "5s"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decodeAlertRule(t, config.RootNamespace, tt.spec)
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if diff := cmp.Diff(tt.want, r.Spec); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAlertRuleValidate(t *testing.T) {
	tests := []struct {
		name     string
		ns       string // default: the root namespace
		spec     string
		wantPath string
		wantMsg  string
	}{
		{name: "no_detector", spec: "  severity: info\n", wantPath: "spec.detector", wantMsg: "required"},
		{name: "unknown_detector", spec: "  detector: Spike\n", wantPath: "spec.detector", wantMsg: `unsupported value "Spike"`},
		{name: "other_block", spec: "  detector: NewEdge\n  denialSpike: {window: 1s}\n", wantPath: "spec.denialSpike", wantMsg: "only allowed with detector DenialSpike"},
		{name: "unknown_field", spec: "  detector: NewEdge\n  newEdge: {learning: 1s}\n", wantPath: "spec.newEdge.learning", wantMsg: "unknown field"},
		{name: "spike_window_bad", spec: "  detector: DenialSpike\n  denialSpike: {window: soon}\n", wantPath: "spec.denialSpike.window", wantMsg: "not a Go duration"},
		{name: "spike_window_short", spec: "  detector: DenialSpike\n  denialSpike: {window: 10ms}\n", wantPath: "spec.denialSpike.window", wantMsg: "below the minimum 1s"},
		{name: "spike_window_long", spec: "  detector: DenialSpike\n  denialSpike: {window: 2h}\n", wantPath: "spec.denialSpike.window", wantMsg: "above the maximum 1h"},
		{name: "spike_min_negative", spec: "  detector: DenialSpike\n  denialSpike: {minDenials: -1}\n", wantPath: "spec.denialSpike.minDenials", wantMsg: "out of range"},
		{name: "spike_min_string", spec: "  detector: DenialSpike\n  denialSpike: {minDenials: ten}\n", wantPath: "spec.denialSpike.minDenials", wantMsg: "expected an integer"},
		{name: "spike_factor_one", spec: "  detector: DenialSpike\n  denialSpike: {factor: 1}\n", wantPath: "spec.denialSpike.factor", wantMsg: "above 1"},
		{name: "spike_factor_huge", spec: "  detector: DenialSpike\n  denialSpike: {factor: 5000}\n", wantPath: "spec.denialSpike.factor", wantMsg: "at most 1000"},
		{name: "learning_negative", spec: "  detector: NewEdge\n  newEdge: {learningPeriod: -1s}\n", wantPath: "spec.newEdge.learningPeriod", wantMsg: "negative"},
		{name: "learning_long", spec: "  detector: NewEdge\n  newEdge: {learningPeriod: 1000h}\n", wantPath: "spec.newEdge.learningPeriod", wantMsg: "above the maximum"},
		{name: "burst_window", spec: "  detector: AuthFailureBurst\n  authFailureBurst: {window: 0s}\n", wantPath: "spec.authFailureBurst.window", wantMsg: "below the minimum"},
		{name: "burst_threshold", spec: "  detector: AuthFailureBurst\n  authFailureBurst: {threshold: 2000000000}\n", wantPath: "spec.authFailureBurst.threshold", wantMsg: "out of range"},
		{name: "expiry_before", spec: "  detector: SVIDExpiry\n  svidExpiry: {before: 48h}\n", wantPath: "spec.svidExpiry.before", wantMsg: "above the maximum"},
		{name: "sync_after", spec: "  detector: ProxyOutOfSync\n  proxyOutOfSync: {after: x}\n", wantPath: "spec.proxyOutOfSync.after", wantMsg: "not a Go duration"},
		{name: "threshold_missing", spec: "  detector: Threshold\n", wantPath: "spec.threshold", wantMsg: "required"},
		{name: "threshold_outside_root", ns: "default", spec: "  detector: Threshold\n  threshold: {metric: up, op: '>', value: 1}\n", wantPath: "spec.detector", wantMsg: "only allowed in namespace bulwark-system"},
		{name: "threshold_metric_missing", spec: "  detector: Threshold\n  threshold: {op: '>', value: 1}\n", wantPath: "spec.threshold.metric", wantMsg: "required"},
		{name: "threshold_metric_bad", spec: "  detector: Threshold\n  threshold: {metric: 'a-b', op: '>', value: 1}\n", wantPath: "spec.threshold.metric", wantMsg: "not a Prometheus metric name"},
		{name: "threshold_label_bad", spec: "  detector: Threshold\n  threshold: {metric: up, labels: {'a-b': x}, op: '>', value: 1}\n", wantPath: "spec.threshold.labels", wantMsg: "not a Prometheus label name"},
		{name: "threshold_label_reserved", spec: "  detector: Threshold\n  threshold: {metric: up, labels: {__name__: x}, op: '>', value: 1}\n", wantPath: "spec.threshold.labels", wantMsg: "not starting with __"},
		{name: "threshold_op_missing", spec: "  detector: Threshold\n  threshold: {metric: up, value: 1}\n", wantPath: "spec.threshold.op", wantMsg: "required"},
		{name: "threshold_op_bad", spec: "  detector: Threshold\n  threshold: {metric: up, op: '=>', value: 1}\n", wantPath: "spec.threshold.op", wantMsg: `unsupported value "=>"`},
		{name: "threshold_value_missing", spec: "  detector: Threshold\n  threshold: {metric: up, op: '>'}\n", wantPath: "spec.threshold.value", wantMsg: "required"},
		{name: "threshold_for_bad", spec: "  detector: Threshold\n  threshold: {metric: up, op: '>', value: 1, for: 25h}\n", wantPath: "spec.threshold.for", wantMsg: "above the maximum"},
		{name: "severity_bad", spec: "  detector: NewEdge\n  severity: high\n", wantPath: "spec.severity", wantMsg: `unsupported value "high"`},
		{name: "cooldown_bad", spec: "  detector: NewEdge\n  cooldown: 48h\n", wantPath: "spec.cooldown", wantMsg: "above the maximum"},
		{name: "webhook_url_missing", spec: "  detector: NewEdge\n  webhooks: [{secret: 0123456789abcdef}]\n", wantPath: "spec.webhooks[0].url", wantMsg: "required"},
		{name: "webhook_url_scheme", spec: "  detector: NewEdge\n  webhooks: [{url: 'ftp://x/', secret: 0123456789abcdef}]\n", wantPath: "spec.webhooks[0].url", wantMsg: "https://"},
		{name: "webhook_plain_http_remote", spec: "  detector: NewEdge\n  webhooks: [{url: 'http://hooks.example.com/', secret: 0123456789abcdef}]\n", wantPath: "spec.webhooks[0].url", wantMsg: "only allowed to a loopback host"},
		{name: "webhook_user_info", spec: "  detector: NewEdge\n  webhooks: [{url: 'https://u:p@hooks.example.com/', secret: 0123456789abcdef}]\n", wantPath: "spec.webhooks[0].url", wantMsg: "user info"},
		{name: "webhook_fragment", spec: "  detector: NewEdge\n  webhooks: [{url: 'https://hooks.example.com/#x', secret: 0123456789abcdef}]\n", wantPath: "spec.webhooks[0].url", wantMsg: "fragment"},
		{name: "webhook_no_host", spec: "  detector: NewEdge\n  webhooks: [{url: 'https:///x', secret: 0123456789abcdef}]\n", wantPath: "spec.webhooks[0].url", wantMsg: "host"},
		{name: "webhook_bad_port", spec: "  detector: NewEdge\n  webhooks: [{url: 'https://h:0/', secret: 0123456789abcdef}]\n", wantPath: "spec.webhooks[0].url", wantMsg: "port"},
		{name: "webhook_twice", spec: "  detector: NewEdge\n  webhooks: [{url: 'https://h/', secret: 0123456789abcdef}, {url: 'https://h/', secret: 0123456789abcdef}]\n", wantPath: "spec.webhooks[1].url", wantMsg: "listed twice"},
		{name: "webhook_secret_missing", spec: "  detector: NewEdge\n  webhooks: [{url: 'https://h/'}]\n", wantPath: "spec.webhooks[0].secret", wantMsg: "required"},
		{name: "webhook_secret_short", spec: "  detector: NewEdge\n  webhooks: [{url: 'https://h/', secret: short}]\n", wantPath: "spec.webhooks[0].secret", wantMsg: "at least 16"},
		{name: "webhook_secret_placeholder", spec: "  detector: NewEdge\n  webhooks: [{url: 'https://h/', secret: '<redacted>'}]\n", wantPath: "spec.webhooks[0].secret", wantMsg: "placeholder"},
		{name: "webhook_timeout", spec: "  detector: NewEdge\n  webhooks: [{url: 'https://h/', secret: 0123456789abcdef, timeout: 1ms}]\n", wantPath: "spec.webhooks[0].timeout", wantMsg: "below the minimum 100ms"},
		{name: "too_many_webhooks", spec: "  detector: NewEdge\n  webhooks:\n" + strings.Repeat("  - {url: 'https://h/', secret: 0123456789abcdef}\n", 9), wantPath: "spec.webhooks", wantMsg: "at most 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := tt.ns
			if ns == "" {
				ns = config.RootNamespace
			}
			_, err := decodeAlertRule(t, ns, tt.spec)
			var de *config.DocumentError
			if !errors.As(err, &de) {
				t.Fatalf("got %v, want a DocumentError at %s", err, tt.wantPath)
			}
			var fes config.FieldErrors
			if !errors.As(de.Err, &fes) {
				t.Fatalf("got %v, want field errors", de.Err)
			}
			for _, fe := range fes {
				if fe.Path == tt.wantPath && strings.Contains(fe.Msg, tt.wantMsg) {
					return
				}
			}
			t.Errorf("got %v, want an error at %s containing %q", fes, tt.wantPath, tt.wantMsg)
		})
	}
}

func TestAlertRuleValidWebhooks(t *testing.T) {
	for _, u := range []string{"https://hooks.example.com/a?b=c", "http://127.0.0.1:8080/hook", "http://localhost/x", "http://[::1]:9/", "https://10.0.0.1:8443/"} {
		t.Run(u, func(t *testing.T) {
			_, err := decodeAlertRule(t, "default", "  detector: NewEdge\n  webhooks: [{url: '"+u+"', secret: 0123456789abcdef}]\n")
			if err != nil {
				t.Errorf("got %v, want none", err)
			}
		})
	}
}

func TestAlertRuleRedacted(t *testing.T) {
	r, err := decodeAlertRule(t, "default", "  detector: NewEdge\n  webhooks: [{url: 'https://h/', secret: s3cr3t-s3cr3t-s3cr3t}]\n")
	if err != nil {
		t.Fatal(err)
	}
	red := config.Redact(r)
	b, err := config.Marshal(red)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cr3t") || !strings.Contains(string(b), config.RedactedSecret) {
		t.Errorf("redacted: got %s, want the placeholder and no secret", b)
	}
	if r.Spec.Webhooks[0].Secret != "s3cr3t-s3cr3t-s3cr3t" {
		t.Errorf("original: got secret %q, want it untouched", r.Spec.Webhooks[0].Secret)
	}
	// What `get -o yaml` prints is refused at apply, naming the field.
	y, err := config.MarshalYAML(red)
	if err != nil {
		t.Fatal(err)
	}
	_, err = config.DecodeObject(y)
	if err == nil || !strings.Contains(err.Error(), "spec.webhooks[0].secret") {
		t.Errorf("apply of redacted output: got %v, want an error naming spec.webhooks[0].secret", err)
	}
	if got := config.Redact(validRole()); got == nil {
		t.Errorf("Redact of a Role: got nil, want the role")
	}
}

func TestAlertIsReadOnly(t *testing.T) {
	if !config.IsReadOnly(config.KindAlert) || config.IsReadOnly(config.KindAlertRule) || !config.IsApplicable(config.KindAlertRule) {
		t.Errorf("got read-only(Alert)=%v read-only(AlertRule)=%v applicable(AlertRule)=%v, want true false true",
			config.IsReadOnly(config.KindAlert), config.IsReadOnly(config.KindAlertRule), config.IsApplicable(config.KindAlertRule))
	}
	for name, want := range map[string]string{"alertrules": config.KindAlertRule, "ar": config.KindAlertRule, "alerts": config.KindAlert} {
		if got, ok := config.ResourceKind(name); !ok || got != want {
			t.Errorf("ResourceKind(%q): got %q %v, want %q", name, got, ok, want)
		}
	}
}

// TestAlertExamples: examples/alerts.yaml decodes.
func TestAlertExamples(t *testing.T) {
	b, err := os.ReadFile("../../examples/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := config.Decode(b)
	if err != nil {
		t.Fatalf("examples/alerts.yaml: %v", err)
	}
	if len(objs) != 6 {
		t.Errorf("got %d rules, want 6", len(objs))
	}
}
