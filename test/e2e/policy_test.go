package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// webReadsAPI lets default/web GET and HEAD below /v1/ on default/api.
const webReadsAPI = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: ["default/web"]}
    to: {methods: [GET], paths: ["/v1/*"]}
`

// wrongCases expects web to be allowed to DELETE: a wrong expectation.
const wrongCases = `cases:
- name: web reads users
  from: default/web
  to: default/api
  method: GET
  path: /v1/users?x=1
  expect: allow
  policy: default/web-reads-api
- name: web deletes users
  from: default/web
  to: default/api
  method: DELETE
  path: /v1/users/1
  expect: allow
- name: encoded slash is rejected
  from: default/web
  to: default/api
  path: /v1/a%2Fb
  expect: reject
`

// TestPolicyTestInCI is a CI job in miniature: `bulwark policy test` fails
// (exit 1) on a wrong expectation, explaining the failure, passes (exit 0)
// once the case is fixed, and refuses (exit 2) a cases file with a typo.
func TestPolicyTestInCI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	policies := filepath.Join(dir, "policies")
	if err := os.Mkdir(policies, 0o755); err != nil {
		t.Fatal(err)
	}
	write("policies/web-reads-api.yaml", webReadsAPI)

	cases := write("cases.yaml", wrongCases)
	out, errOut, code := cli(t, nil, "", "policy", "test", "-f", policies, "--cases", cases)
	if code != 1 {
		t.Fatalf("policy test with a wrong expectation: exit %d, want 1\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{`(?m)^PASS +web reads users +allow +allow +default/web-reads-api rule 0$`,
		`(?m)^FAIL +web deletes users +allow +deny`, `FAIL web deletes users: expected allow, got deny`,
		`nearest ALLOW rule: default/web-reads-api rule 0`, `"DELETE"`, `2 passed, 1 failed`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("policy test output: want %s in\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "1 of 3 cases failed") {
		t.Errorf("policy test stderr: got %q, want it to count the failed case", errOut)
	}

	write("cases.yaml", strings.Replace(wrongCases, "  path: /v1/users/1\n  expect: allow", "  path: /v1/users/1\n  expect: deny", 1))
	out, errOut, code = cli(t, nil, "", "policy", "test", "-f", policies, "--cases", cases, "-o", "json")
	if code != 0 {
		t.Fatalf("policy test after the fix: exit %d, want 0\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var res struct{ Passed, Failed int }
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Passed != 3 || res.Failed != 0 {
		t.Errorf("policy test -o json: got %+v (%v), want 3 passed and none failed\n%s", res, err, out)
	}

	typo := write("typo.yaml", strings.Replace(wrongCases, "  expect: allow\n  policy:", "  expct: allow\n  policy:", 1))
	_, errOut, code = cli(t, nil, "", "policy", "test", "-f", policies, "--cases", typo)
	if code != 2 || !strings.Contains(errOut, "cases[0].expct: unknown field") {
		t.Errorf("policy test with a typo in the cases: exit %d, stderr %q; want 2 naming cases[0].expct", code, errOut)
	}
}

// TestPolicyLintCELSyntaxError: `bulwark policy lint` on a policy whose when
// condition does not parse exits 1 and names the file, the field path and
// the position in the expression; a clean file exits 0.
func TestPolicyLintCELSyntaxError(t *testing.T) {
	t.Parallel()
	bad := writeFile(t, "bad.yaml", webReadsAPI+`    when: ["request.headers['x-env'] == "]
`)
	out, errOut, code := cli(t, nil, "", "policy", "lint", "-f", bad)
	if code != 1 {
		t.Fatalf("policy lint of a CEL syntax error: exit %d, want 1\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	for _, want := range []string{bad + "#1", "default/web-reads-api", "spec.rules[0].when[0]", "1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy lint output: want %q in\n%s", want, out)
		}
	}
	out, errOut, code = cli(t, nil, "", "policy", "lint", "-f", writeFile(t, "good.yaml", webReadsAPI))
	if code != 0 || !strings.Contains(out, "1 policy: 0 errors, 0 warnings") {
		t.Errorf("policy lint of a clean file: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

// apiForOther replaces client-to-api (identity_helpers_test.go): only
// default/other may call api, which cuts api's only current caller.
const apiForOther = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: client-to-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: ["default/other"]}
`

// TestPolicyLockoutGuard: against a live mesh where client calls api,
// `policy explain` names the deciding policy, `policy diff` shows the edge a
// change would cut, `apply` of that change is refused with a message
// naming api and the caller it would lose (the live policy stays as it was),
// and `apply --force` applies it.
func TestPolicyLockoutGuard(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	m.startProxy("default/api", startApp(t, "api").addr)
	client := m.startClientProxy("default/client")
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policy.yaml", clientToAPI))
	cc := client.client()
	eventually(t, 15*time.Second, "client may call api", func() error {
		if code, body := do(t, cc, "GET", "http://api.default/x", ""); code != 200 {
			return &statusError{code, body}
		}
		return nil
	})

	out := mustCLI(t, m.env, "policy", "explain", "--from", "default/client", "--to", "default/api", "GET", "/x")
	for _, want := range []string{"decision: allow by default/client-to-api rule 0", "/ns/default/sa/client", "the live mesh"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy explain: want %q in\n%s", want, out)
		}
	}

	change := writeFile(t, "change.yaml", apiForOther)
	out = mustCLI(t, m.env, "policy", "diff", "-f", change)
	for _, want := range []string{"- default/client -> default/api", "policy edges: 0 opened, 1 cut", "lock-out: default/api would lose every caller: default/client"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy diff: want %q in\n%s", want, out)
		}
	}
	// The client's GET /x reaches the service graph with the proxies' next
	// report (every 10 s): diff then also shows the observed traffic cut.
	eventually(t, 25*time.Second, "policy diff shows the observed request cut", func() error {
		out := mustCLI(t, m.env, "policy", "diff", "-f", change)
		if !strings.Contains(out, "observed edges: 0 opened, 1 cut") {
			return fmt.Errorf("policy diff: no observed cut in\n%s", out)
		}
		return nil
	})
	if _, _, code := cli(t, m.env, "", "policy", "diff", "--exit-code", "-f", change); code != 1 {
		t.Errorf("policy diff --exit-code with a cut edge: exit %d, want 1", code)
	}

	out, errOut, code := cli(t, m.env, "", "apply", "-f", change)
	if code == 0 {
		t.Fatalf("apply cutting api's only caller: exit 0 (%q), want it refused", out)
	}
	for _, want := range []string{"default/api would lose every caller: default/client", "--force", "nothing was changed"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("refused apply: want %q in stderr\n%s", want, errOut)
		}
	}
	if got := m.policyCallers(t); got != "default/client" {
		t.Errorf("live policy after the refused apply: from.services %q, want default/client", got)
	}

	out = mustCLI(t, m.env, "apply", "--force", "-f", change)
	if !strings.Contains(out, "authorizationpolicy default/client-to-api configured") {
		t.Errorf("apply --force: got %q, want the policy configured", out)
	}
	if got := m.policyCallers(t); got != "default/other" {
		t.Errorf("live policy after apply --force: from.services %q, want default/other", got)
	}
	eventually(t, 15*time.Second, "client denied after the forced change", func() error {
		if code, body := do(t, cc, "GET", "http://api.default/x", ""); code != 403 {
			return &statusError{code, body}
		}
		return nil
	})
}

// statusError is an unexpected HTTP answer.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return "status " + http.StatusText(e.code) + ": " + e.body }

// policyCallers returns the from.services of the live
// default/client-to-api, joined with ",".
func (m *mesh) policyCallers(t *testing.T) string {
	t.Helper()
	out := mustCLI(t, m.env, "get", "policies", "client-to-api", "-o", "json")
	var p struct {
		Spec struct {
			Rules []struct {
				From struct {
					Services []string `json:"services"`
				} `json:"from"`
			} `json:"rules"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("get policy: %v\n%s", err, out)
	}
	var svcs []string
	for _, r := range p.Spec.Rules {
		svcs = append(svcs, r.From.Services...)
	}
	return strings.Join(svcs, ",")
}
