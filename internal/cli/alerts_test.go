package cli_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// alertsFixture is what the admin API of TestGetAlerts serves.
func alertsFixture(now time.Time) []*config.Alert {
	mk := func(ns, name, rule, detector, subject string, count int64, ago time.Duration, summary string) *config.Alert {
		return &config.Alert{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAlert},
			Metadata: config.ObjectMeta{Name: name, Namespace: ns},
			Status: config.AlertStatus{Rule: rule, Detector: detector, Severity: "critical", Subject: subject, Count: count,
				FiredAt: now.Add(-ago).Format(time.RFC3339Nano), Summary: summary},
		}
	}
	return []*config.Alert{
		mk("default", "a-0000000000000001", "default/new-edge", "NewEdge", "spiffe://bulwark.test/ns/default/sa/rogue -> default/api", 0, 10*time.Minute+30*time.Second, "new edge"),
		mk(config.RootNamespace, "a-0000000000000002", "bulwark-system/spike", "DenialSpike", "spiffe://bulwark.test/ns/default/sa/rogue -> default/api", 50, 2*time.Hour+30*time.Minute, "denial spike\x1b[2J"),
	}
}

// TestGetAlerts: `bulwark get alerts` prints the table of the alerts of a
// namespace (or all), passes --since, and prints Alert objects with -o;
// `get alertrules` never shows a webhook secret.
func TestGetAlerts(t *testing.T) {
	now := time.Now()
	var gotWithin []time.Duration
	source := func(include func(string) bool, within time.Duration) []*config.Alert {
		gotWithin = append(gotWithin, within)
		var out []*config.Alert
		for _, a := range alertsFixture(now) {
			if include == nil || include(a.Metadata.Namespace) {
				out = append(out, a)
			}
		}
		return out
	}
	credPath := alertsAdmin(t, source)
	get := func(t *testing.T, args ...string) result {
		t.Helper()
		r := run(t, "", append([]string{"--config", credPath}, args...)...)
		if r.code != 0 {
			t.Fatalf("%s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.err)
		}
		return r
	}

	t.Run("table", func(t *testing.T) {
		out := get(t, "get", "alerts").out
		want := "FIRED  RULE              DETECTOR  SEVERITY  SUBJECT                                                   COUNT  SUMMARY\n" +
			"10m    default/new-edge  NewEdge   critical  spiffe://bulwark.test/ns/default/sa/rogue -> default/api  0      new edge\n"
		if out != want {
			t.Errorf("got\n%s\nwant\n%s", out, want)
		}
	})
	t.Run("all_namespaces_quotes_control_characters", func(t *testing.T) {
		out := get(t, "get", "alerts", "-A").out
		if !strings.HasPrefix(out, "NAMESPACE       FIRED") || !strings.Contains(out, `"denial spike\x1b[2J"`) || strings.Contains(out, "\x1b") {
			t.Errorf("got\n%q\nwant a NAMESPACE column and the escape sequence quoted", out)
		}
	})
	t.Run("since", func(t *testing.T) {
		gotWithin = nil
		get(t, "get", "alerts", "-A", "--since", "15m")
		if len(gotWithin) != 1 || gotWithin[0] != 15*time.Minute {
			t.Errorf("the server got since %v, want [15m]", gotWithin)
		}
	})
	t.Run("json", func(t *testing.T) {
		objs, err := config.UnmarshalList([]byte(get(t, "get", "alerts", "-n", config.RootNamespace, "-o", "json").out))
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 1 || objs[0].(*config.Alert).Status.Count != 50 {
			t.Errorf("got %v, want the one alert of %s", objs, config.RootNamespace)
		}
	})
	t.Run("alertrules_redacted", func(t *testing.T) {
		const secret = "cli-test-secret-0123456789"
		rule := writeFile(t, "rule.yaml", "apiVersion: bulwark.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: spikes}\n"+
			"spec:\n  detector: DenialSpike\n  webhooks: [{url: 'https://hooks.example.com/', secret: "+secret+"}]\n")
		get(t, "apply", "-f", rule)
		table := get(t, "get", "alertrules").out
		if !strings.HasPrefix(table, "NAME    DETECTOR     SEVERITY  COOLDOWN  WEBHOOKS") || !strings.Contains(table, "spikes  DenialSpike  warning   5m0s      1") {
			t.Errorf("table: got\n%s", table)
		}
		for _, args := range [][]string{{"get", "alertrules", "-o", "yaml"}, {"get", "ar", "spikes", "-o", "json"}} {
			out := get(t, args...).out
			if strings.Contains(out, secret) || !strings.Contains(out, config.RedactedSecret) {
				t.Errorf("%s: got\n%s\nwant the placeholder, not the secret", strings.Join(args, " "), out)
			}
		}
	})
}

// alertsAdmin serves a real admin API whose alerts come from source, and
// returns the built-in admin's credential file for it.
func alertsAdmin(t *testing.T, source admin.AlertSource) string {
	return viewsAdmin(t, func(c *admin.Config) { c.Alerts = source })
}
