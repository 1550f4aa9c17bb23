package admin_test

// Attack tests of the admin API's new surface: a webhook secret must not
// come back in any answer, error or audit entry; the audit routes read
// only for those with mesh-wide rights, and their parameters cannot make
// them read what was not asked.

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/admin"
)

// a7Secret is the webhook secret of the attack tests.
const a7Secret = "a7-hmac-secret-never-shown-0123456789"

// a7Rule is an AlertRule document of ns with spec (JSON).
func a7Rule(ns, name, spec string) json.RawMessage {
	return json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AlertRule","metadata":{"name":"` + name + `","namespace":"` + ns + `"},"spec":` + spec + `}`)
}

// TestAttackWebhookSecretNeverEchoed applies AlertRules carrying the
// secret, refused in every way and then accepted, and reads everything
// the API answers: no answer, error, list, get or audit entry carries it.
func TestAttackWebhookSecretNeverEchoed(t *testing.T) {
	a := newAuditAPI(t)
	operator := a.operatorClient(t)
	hook := func(url, secret string) string {
		return `{"detector":"NewEdge","webhooks":[{"url":"` + url + `","secret":` + secret + `}]}`
	}
	q := `"` + a7Secret + `"`
	refused := []json.RawMessage{
		a7Rule("default", "bad-url", hook("https://169.254.169.254/latest", q)),
		a7Rule("default", "http-url", hook("http://hooks.example.com/x", q)),
		a7Rule("default", "userinfo", hook("https://u:"+a7Secret+"@hooks.example.com/x", q)),
		a7Rule("default", "secret-object", hook("https://hooks.example.com/x", `{"v":`+q+`}`)),
		a7Rule("default", "secret-list", hook("https://hooks.example.com/x", `[`+q+`]`)),
		a7Rule("default", "unknown-field", `{"detector":"NewEdge","webhooks":[{"url":"https://hooks.example.com/x","secret":`+q+`,"token":`+q+`}]}`),
	}
	for _, doc := range refused {
		r := send(t, operator, http.MethodPost, a.srv.URL+"/v1/apply", "application/json", applyBody(t, doc))
		if r.status < 400 || r.status >= 500 {
			t.Errorf("apply %s: got %d %s, want a 4xx", doc, r.status, r.body)
		}
		if strings.Contains(string(r.body), a7Secret) {
			t.Errorf("apply %.80s: the refusal quotes the secret: %s", doc, r.body)
		}
	}
	good := a7Rule("default", "good", hook("https://hooks.example.com/x?team=sec", q))
	r := send(t, operator, http.MethodPost, a.srv.URL+"/v1/apply", "application/json", applyBody(t, good))
	if r.status != http.StatusOK {
		t.Fatalf("apply: got %d %s", r.status, r.body)
	}
	reads := []string{
		"/v1/alertrules", "/v1/alertrules?namespace=default", "/v1/namespaces/default/alertrules/good",
		"/v1/audit?limit=1000", "/v1/audit/export", "/v1/audit/verify",
	}
	everything := string(r.body)
	for _, p := range reads {
		got := send(t, operator, http.MethodGet, a.srv.URL+p, "", nil)
		if got.status >= 500 {
			t.Errorf("GET %s: got %d %s", p, got.status, got.body)
		}
		everything += string(got.body)
	}
	// Re-applying what get shows keeps the secret: the placeholder is
	// refused, naming the field.
	got := send(t, operator, http.MethodGet, a.srv.URL+"/v1/namespaces/default/alertrules/good", "", nil)
	r = send(t, operator, http.MethodPost, a.srv.URL+"/v1/apply", "application/json", applyBody(t, json.RawMessage(got.body)))
	if r.status != http.StatusUnprocessableEntity && r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "spec.webhooks[0].secret") {
		t.Errorf("re-apply of get's output: got %d %s, want a 4xx naming spec.webhooks[0].secret", r.status, r.body)
	}
	everything += string(r.body) + a.logs.String()
	if strings.Contains(everything, a7Secret) {
		i := strings.Index(everything, a7Secret)
		t.Errorf("the webhook secret came back: ...%s...", everything[max(0, i-200):min(len(everything), i+40)])
	}
}

// TestAttackAuditReadNeedsMeshWideRights: an operator granted get on
// AuditLog in a namespace only (or everything in a namespace) still cannot
// tail, verify or export the log.
func TestAttackAuditReadNeedsMeshWideRights(t *testing.T) {
	a := newAuditAPI(t)
	// The role may be refused at apply (AuditLog is mesh-wide); either way
	// the binding must not open the log.
	_, _ = a.client.Apply(context.Background(), []json.RawMessage{
		roleJSON("team-a", "auditor", `[{"verbs":["get","list"],"kinds":["AuditLog"]}]`),
		bindingJSON("team-a", "eve-audits", "auditor", "eve"),
	})
	_, _ = a.client.Apply(context.Background(), []json.RawMessage{
		roleJSON("team-a", "all", `[{"verbs":["*"],"kinds":["*"]}]`),
		bindingJSON("team-a", "eve-all", "all", "eve"),
	})
	eve := a.as(t, "eve")
	for _, p := range []string{"/v1/audit", "/v1/audit?after=0&limit=1000", "/v1/audit/verify", "/v1/audit/export", "/v1/auditlogs", "/v1/namespaces/team-a/auditlogs/x"} {
		r := send(t, eve, http.MethodGet, a.srv.URL+p, "", nil)
		if r.status != http.StatusForbidden && r.status != http.StatusNotFound {
			t.Errorf("GET %s as a namespace operator: got %d %.200s, want 403 (or 404 for no such route)", p, r.status, r.body)
		}
		if strings.Contains(string(r.body), `"seq"`) {
			t.Errorf("GET %s as a namespace operator: the answer holds entries: %.200s", p, r.body)
		}
	}
}

// TestAttackAuditAfterBeyondHead: after at or past the head, up to the
// largest uint64 (where after+1 wraps to 0), lists nothing rather than the
// start of the log.
func TestAttackAuditAfterBeyondHead(t *testing.T) {
	a := newAuditAPI(t)
	if _, err := a.client.Apply(context.Background(), []json.RawMessage{policyJSON("shop", "p1", "GET")}); err != nil {
		t.Fatal(err)
	}
	for _, after := range []string{"1", "2", "18446744073709551614", "18446744073709551615"} {
		r := send(t, a.operatorClient(t), http.MethodGet, a.srv.URL+"/v1/audit?limit=1000&after="+after, "", nil)
		var list admin.AuditList
		if r.status != http.StatusOK || json.Unmarshal(r.body, &list) != nil {
			t.Fatalf("after=%s: got %d %s, want 200 and a list", after, r.status, r.body)
		}
		if len(list.Items) != 0 {
			t.Errorf("after=%s with head %d: got %d entries (first %d), want none", after, list.Head, len(list.Items), list.Items[0].Seq)
		}
	}
	r := send(t, a.operatorClient(t), http.MethodGet, a.srv.URL+"/v1/audit?after=18446744073709551616", "", nil)
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "after") {
		t.Errorf("after past uint64: got %d %s, want 400 naming after", r.status, r.body)
	}
}

// TestAttackAnonymousFloodDoesNotFloodTheLog: a thousand requests without
// an operator certificate are refused (401) and logged a handful of times
// (1st, 2nd, 4th... with the count), not once each.
func TestAttackAnonymousFloodDoesNotFloodTheLog(t *testing.T) {
	a := newAPI(t)
	const n = 1000
	for range n {
		if r := send(t, a.anonymous, http.MethodGet, a.srv.URL+"/v1/policies", "", nil); r.status != http.StatusUnauthorized {
			t.Fatalf("anonymous: got %d, want 401", r.status)
		}
	}
	lines := strings.Count(a.logs.String(), "admin request without operator certificate")
	if lines < 1 || lines > 11 {
		t.Errorf("%d anonymous requests: got %d log lines, want 1 to 11", n, lines)
	}
	if !strings.Contains(a.logs.String(), `"count":512`) {
		t.Errorf("log: want the 512th request logged with its count:\n%s", a.logs.String())
	}
}
