package admin_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// TestMe: GET /v1/me tells each operator where it may read what the
// dashboard shows, and never answers 403.
func TestMe(t *testing.T) {
	a := newAPI(t)
	a.namespaceAdmins(t)
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   map[string]admin.Scope
	}{
		{"builtin admin", a.operator, map[string]admin.Scope{
			"Proxy": {Everywhere: true, Namespaces: []string{}}, "Service": {Everywhere: true, Namespaces: []string{}},
			"AuthorizationPolicy": {Everywhere: true, Namespaces: []string{}}, "Edge": {Everywhere: true, Namespaces: []string{}},
			"Denial": {Everywhere: true, Namespaces: []string{}}, "Alert": {Everywhere: true, Namespaces: []string{}},
			"AuditLog": {Everywhere: true, Namespaces: []string{}}, "CA": {Everywhere: true, Namespaces: []string{}},
		}},
		{"namespace editor", a.as(t, "alice"), map[string]admin.Scope{"AuthorizationPolicy": {Namespaces: []string{"team-a"}}}},
		{"no rights", a.as(t, "nobody"), map[string]admin.Scope{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := send(t, tc.client, http.MethodGet, a.srv.URL+"/v1/me", "", nil)
			if got.status != http.StatusOK {
				t.Fatalf("status: got %d %s, want 200", got.status, got.body)
			}
			var me admin.Me
			if err := json.Unmarshal(got.body, &me); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, me.Rights); diff != "" {
				t.Errorf("rights (-want +got):\n%s", diff)
			}
		})
	}
	if got := send(t, a.anonymous, http.MethodGet, a.srv.URL+"/v1/me", "", nil); got.status != http.StatusUnauthorized {
		t.Errorf("anonymous: got %d, want 401", got.status)
	}
}

type fakeLogins struct{ ttl []time.Duration }

func (f *fakeLogins) IssueLogin(op string, ttl time.Duration) (string, time.Time, error) {
	f.ttl = append(f.ttl, ttl)
	return "tok-" + op, time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC), nil
}

// TestDashboardLogin: an operator with a certificate gets a login link of
// its own; a dashboard session cannot mint one; bad ttls are refused.
func TestDashboardLogin(t *testing.T) {
	a := newAPI(t)
	if got := send(t, a.operator, http.MethodPost, a.srv.URL+"/v1/dashboard/login", "application/json", []byte(`{}`)); got.status != http.StatusNotImplemented {
		t.Errorf("without a dashboard: got %d, want 501", got.status)
	}
	logins := &fakeLogins{}
	url := viewsServer(t, a, func(c *admin.Config) { c.Logins = logins })
	nobody := a.as(t, "nobody")
	got := send(t, nobody, http.MethodPost, url+"/v1/dashboard/login", "application/json", []byte(`{"ttl":"2m"}`))
	var l admin.DashboardLogin
	if got.status != http.StatusOK || json.Unmarshal(got.body, &l) != nil || l.Path != "/ui/login?token=tok-nobody" {
		t.Fatalf("login link: got %d %s", got.status, got.body)
	}
	if !cmp.Equal(logins.ttl, []time.Duration{2 * time.Minute}) {
		t.Errorf("ttl passed: got %v, want [2m]", logins.ttl)
	}
	for _, bad := range []string{`{"ttl":"20m"}`, `{"ttl":"0s"}`, `{"ttl":"soon"}`, `{"other":1}`} {
		if got := send(t, a.operator, http.MethodPost, url+"/v1/dashboard/login", "application/json", []byte(bad)); got.status != http.StatusBadRequest {
			t.Errorf("body %s: got %d, want 400", bad, got.status)
		}
	}
	// Through a session (ServeOperator): refused.
	cfg := admin.Config{Resources: a.resources, Registry: a.registry, Tokens: a.tokens, TrustDomain: testTD, Logins: logins}
	srv, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	srv.ServeOperator(w, httptest.NewRequest(http.MethodPost, "/v1/dashboard/login", strings.NewReader(`{}`)), "admin")
	if w.Code != http.StatusForbidden {
		t.Errorf("a session minting a link: got %d %s, want 403", w.Code, w.Body)
	}
	// An empty operator is no operator.
	w = httptest.NewRecorder()
	srv.ServeOperator(w, httptest.NewRequest(http.MethodGet, "/v1/me", nil), "")
	if w.Code != http.StatusUnauthorized {
		t.Errorf("ServeOperator without an operator: got %d, want 401", w.Code)
	}
}

func summaryEdge(ns, source, method string, requests int64) *config.Edge {
	return &config.Edge{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindEdge},
		Metadata: config.ObjectMeta{Name: "e-" + method, Namespace: ns},
		Status: config.EdgeStatus{Source: "spiffe://" + testTD + "/ns/default/sa/" + source, SourceService: "default/" + source,
			Destination: ns + "/api", Method: method, Path: "/x", Requests: requests},
	}
}

// TestPolicySummary: each policy in words with the observed edges it
// decided, only for namespaces the operator may list policies in.
func TestPolicySummary(t *testing.T) {
	a := newAPI(t)
	a.namespaceAdmins(t)
	a.mustApply(t, policyJSON("team-a", "a-get", "GET"), policyJSON("team-b", "b-get", "GET"))
	url := viewsServer(t, a, func(c *admin.Config) {
		c.Edges = func(include func(string) bool, _ time.Duration) []*config.Edge {
			var out []*config.Edge
			for _, e := range []*config.Edge{summaryEdge("team-a", "web", "GET", 5), summaryEdge("team-a", "web", "POST", 2), summaryEdge("team-b", "web", "GET", 7)} {
				if include == nil || include(e.Metadata.Namespace) {
					out = append(out, e)
				}
			}
			return out
		}
	})
	read := func(c *http.Client) (int, admin.PolicySummaryList) {
		got := send(t, c, http.MethodGet, url+"/v1/policy/summary", "", nil)
		var l admin.PolicySummaryList
		_ = json.Unmarshal(got.body, &l)
		return got.status, l
	}
	status, all := read(a.operator)
	if status != http.StatusOK || len(all.Items) != 2 {
		t.Fatalf("admin: got %d with %d policies, want 200 with 2", status, len(all.Items))
	}
	a0 := all.Items[0]
	if a0.Policy != "team-a/a-get" || a0.Selects != "the workloads of service team-a/api" ||
		len(a0.Rules) != 1 || a0.Rules[0] != "allow callers with services default/web to methods GET" {
		t.Errorf("summary of team-a/a-get: got %+v", a0)
	}
	if len(a0.AllowsObserved) != 1 || a0.AllowsObserved[0].Method != "GET" || a0.AllowsObserved[0].Requests != 5 {
		t.Errorf("observed edges allowed by team-a/a-get: got %+v, want the GET edge", a0.AllowsObserved)
	}
	// alice edits team-a: she sees its policy, not team-b's, and no edges
	// (she may not list edges).
	status, mine := read(a.as(t, "alice"))
	if status != http.StatusOK || len(mine.Items) != 1 || mine.Items[0].Policy != "team-a/a-get" || len(mine.Items[0].AllowsObserved) != 0 {
		t.Errorf("alice: got %d %+v, want team-a/a-get alone without edges", status, mine.Items)
	}
	if status, _ := read(a.as(t, "nobody")); status != http.StatusForbidden {
		t.Errorf("nobody: got %d, want 403", status)
	}
	if got := send(t, a.operator, http.MethodGet, url+"/v1/policy/summary?x=1", "", nil); got.status != http.StatusBadRequest {
		t.Errorf("unknown parameter: got %d, want 400", got.status)
	}
}

// TestPolicyExplain decides one request with the live policies.
func TestPolicyExplain(t *testing.T) {
	a := newAPI(t)
	a.namespaceAdmins(t)
	a.mustApply(t, policyJSON("team-a", "a-get", "GET"))
	for _, tc := range []struct {
		name   string
		client *http.Client
		body   string
		status int
		want   string
	}{
		{"allowed", a.operator, `{"from":"default/web","to":"team-a/api","method":"GET","path":"/x"}`, 200, `"decision":"allow"`},
		{"denied", a.operator, `{"from":"default/web","to":"team-a/api","method":"POST","path":"/x"}`, 200, `"decision":"deny"`},
		{"rejected", a.operator, `{"from":"default/web","to":"team-a/api","method":"get","path":"/x"}`, 200, `"decision":"reject"`},
		{"editor of the namespace", a.as(t, "alice"), `{"from":"default/web","to":"team-a/api","path":"/x"}`, 200, `"decision":"allow"`},
		{"editor of another namespace", a.as(t, "bob"), `{"from":"default/web","to":"team-a/api","path":"/x"}`, 403, "may not list AuthorizationPolicy in namespace team-a"},
		{"unknown field", a.operator, `{"to":"team-a/api","path":"/x","evil":1}`, 400, "evil"},
		{"no destination", a.operator, `{"from":"default/web","path":"/x"}`, 400, "to"},
		{"no path", a.operator, `{"from":"default/web","to":"team-a/api"}`, 400, "path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := send(t, tc.client, http.MethodPost, a.srv.URL+"/v1/policy/explain", "application/json", []byte(tc.body))
			if got.status != tc.status || !strings.Contains(string(got.body), tc.want) {
				t.Errorf("got %d %s, want %d with %q", got.status, got.body, tc.status, tc.want)
			}
		})
	}
}
