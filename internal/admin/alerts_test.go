package admin_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// alertsServer serves a second admin API on a's stores and operator CA,
// whose alerts come from source, and returns its URL.
func alertsServer(t *testing.T, a *api, source admin.AlertSource) string {
	return viewsServer(t, a, func(c *admin.Config) { c.Alerts = source })
}

func alertIn(ns, subject string) *config.Alert {
	return &config.Alert{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAlert},
		Metadata: config.ObjectMeta{Name: "a-00000000000000" + subject[:2], Namespace: ns},
		Status: config.AlertStatus{Rule: ns + "/r", Detector: config.DetectorNewEdge, Severity: config.SeverityWarning,
			Subject: subject, FiredAt: start.Format(time.RFC3339Nano), Summary: "new edge"},
	}
}

// TestAlertsRoute: GET /v1/alerts lists what the source holds, filtered by
// the namespaces where the operator may list alerts, and passes since on.
func TestAlertsRoute(t *testing.T) {
	a := newAPI(t)
	var within []time.Duration
	url := alertsServer(t, a, func(include func(string) bool, d time.Duration) []*config.Alert {
		within = append(within, d)
		var out []*config.Alert
		for _, al := range []*config.Alert{alertIn("team-a", "aa"), alertIn("team-b", "bb"), alertIn(config.RootNamespace, "rr")} {
			if include == nil || include(al.Metadata.Namespace) {
				out = append(out, al)
			}
		}
		return out
	})
	a.namespaceAdmins(t)
	a.mustApply(t,
		roleJSON("team-a", "alert-reader", `[{"verbs":["list","get"],"kinds":["Alert"]}]`),
		bindingJSON("team-a", "alice-reads-alerts", "alert-reader", "alice"),
	)
	root, alice, bob := a.operator, a.as(t, "alice"), a.as(t, "bob")
	tests := []struct {
		name       string
		client     *http.Client
		path       string
		wantStatus int
		wantSubj   []string
		wantErr    string
	}{
		{name: "admin_all", client: root, path: "/v1/alerts", wantStatus: 200, wantSubj: []string{"aa", "bb", "rr"}},
		{name: "admin_namespace", client: root, path: "/v1/alerts?namespace=team-b", wantStatus: 200, wantSubj: []string{"bb"}},
		{name: "reader_all_is_its_namespaces", client: alice, path: "/v1/alerts", wantStatus: 200, wantSubj: []string{"aa"}},
		{name: "reader_other_namespace", client: alice, path: "/v1/alerts?namespace=team-b", wantStatus: 403,
			wantErr: "operator alice may not list Alert in namespace team-b"},
		{name: "no_rights", client: bob, path: "/v1/alerts", wantStatus: 403, wantErr: "operator bob may not list Alert in any namespace"},
		{name: "bad_namespace", client: root, path: "/v1/alerts?namespace=Team_A", wantStatus: 400, wantErr: "namespace: "},
		{name: "bad_since", client: root, path: "/v1/alerts?since=yesterday", wantStatus: 400, wantErr: `since: "yesterday": want a positive duration`},
		{name: "unknown_parameter", client: root, path: "/v1/alerts?severity=critical", wantStatus: 400, wantErr: "severity: unknown query parameter"},
		{name: "since", client: root, path: "/v1/alerts?since=15m", wantStatus: 200, wantSubj: []string{"aa", "bb", "rr"}},
		{name: "generic_list", client: root, path: "/v1/alerts?namespace=team-a", wantStatus: 200, wantSubj: []string{"aa"}},
		{name: "generic_get", client: alice, path: "/v1/namespaces/team-a/alerts/a-00000000000000aa", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			within = nil
			got := send(t, tt.client, "GET", url+tt.path, "", nil)
			if got.status != tt.wantStatus {
				t.Fatalf("status: got %d %s, want %d", got.status, got.body, tt.wantStatus)
			}
			if tt.wantErr != "" {
				if eb := got.errorBody(t); !strings.HasPrefix(eb.Error, tt.wantErr) {
					t.Errorf("error: got %q, want it to start with %q", eb.Error, tt.wantErr)
				}
				if len(within) != 0 {
					t.Error("the source was asked for a refused request")
				}
				return
			}
			if tt.wantSubj == nil {
				return
			}
			if diff := cmp.Diff(tt.wantSubj, listed(t, got.body, func(o config.Object) string { return o.(*config.Alert).Status.Subject })); diff != "" {
				t.Errorf("alerts (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("client", func(t *testing.T) {
		cred := a.credential(t, "admin")
		cred.Server = url
		c, err := admin.NewClient(cred)
		if err != nil {
			t.Fatal(err)
		}
		within = nil
		b, err := c.Alerts(t.Context(), "team-a", 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(b, &list); err != nil || list.Kind != "List" || len(list.Items) != 1 {
			t.Errorf("got %s (%v), want a List of one item", b, err)
		}
		if len(within) != 1 || within[0] != 10*time.Minute {
			t.Errorf("since passed to the source: got %v, want [10m]", within)
		}
	})
}

// TestAlertsWithoutSource: a server that keeps no alerts says so.
func TestAlertsWithoutSource(t *testing.T) {
	a := newAPI(t)
	if got := send(t, a.operator, "GET", a.srv.URL+"/v1/alerts", "", nil); got.status != http.StatusNotImplemented {
		t.Errorf("got %d %s, want 501", got.status, got.body)
	}
}

// TestAlertRuleSecretRedacted: an AlertRule's webhook secret is stored but
// never served: list and get show the placeholder.
func TestAlertRuleSecretRedacted(t *testing.T) {
	a := newAPI(t)
	const secret = "s3cr3t-hmac-key-do-not-print"
	doc := json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AlertRule","metadata":{"name":"spikes","namespace":"default"},` +
		`"spec":{"detector":"DenialSpike","webhooks":[{"url":"https://hooks.example.com/x","secret":"` + secret + `"}]}}`)
	if got := send(t, a.operator, "POST", a.srv.URL+"/v1/apply", "application/json", applyBody(t, doc)); got.status != http.StatusOK {
		t.Fatalf("apply: got %d %s", got.status, got.body)
	}
	objs, _, err := a.resources.List(t.Context(), config.KindAlertRule, "default")
	if err != nil || len(objs) != 1 || objs[0].(*config.AlertRule).Spec.Webhooks[0].Secret != secret {
		t.Fatalf("stored: got %v %v, want the rule with its secret", objs, err)
	}
	for _, path := range []string{"/v1/alertrules", "/v1/alertrules?namespace=default", "/v1/namespaces/default/alertrules/spikes"} {
		got := send(t, a.operator, "GET", a.srv.URL+path, "", nil)
		if got.status != http.StatusOK || strings.Contains(string(got.body), secret) || !strings.Contains(string(got.body), `"secret":"\u003credacted\u003e"`) && !strings.Contains(string(got.body), `"secret":"<redacted>"`) {
			t.Errorf("GET %s: got %d %s, want the placeholder and not the secret", path, got.status, got.body)
		}
	}
	if strings.Contains(a.logs.String(), secret) {
		t.Errorf("the secret is in the log")
	}
}
