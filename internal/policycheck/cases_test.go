package policycheck_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

func TestParseCasesDefaults(t *testing.T) {
	cases, err := policycheck.ParseCases([]byte(`
cases:
- name: web reads users
  from: default/web
  to: api
  path: /v1/users?x=1
  expect: allow
- name: alice
  identity: spiffe://example.org/ns/default/sa/batch
  to: shop/api
  method: POST
  path: /v1/orders
  principal: https://idp.example.com/alice
  expect: deny
  policy: shop/orders
`), "bulwark.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []policycheck.Case{
		{Name: "web reads users", From: "default/web", Identity: "spiffe://bulwark.test/ns/default/sa/web", To: "default/api",
			Method: "GET", Path: "/v1/users?x=1", Host: "api.default", Port: 80, Expect: "allow"},
		{Name: "alice", Identity: "spiffe://example.org/ns/default/sa/batch", To: "shop/api", Method: "POST", Path: "/v1/orders",
			Host: "api.shop", Port: 80, Principal: "https://idp.example.com/alice",
			Claims: map[string]any{"iss": "https://idp.example.com", "sub": "alice"}, Expect: "deny", Policy: "shop/orders"},
	}
	if diff := cmp.Diff(want, cases); diff != "" {
		t.Errorf("cases (-want +got):\n%s", diff)
	}
}

func TestParseCasesErrors(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string
	}{
		{"unknown_field", "cases:\n- {name: a, from: web, to: api, path: /, expct: allow}", []string{"cases[0].expct: unknown field"}},
		{"wrong_type", "cases:\n- {name: a, from: web, to: api, path: /, expect: allow, port: x}", []string{"cases[0].port: expected int"}},
		{"missing_expect_and_path", "cases:\n- {name: a, from: web, to: api}", []string{"cases[0].path: required", "cases[0].expect: required"}},
		{"bad_expect", "cases:\n- {name: a, from: web, to: api, path: /, expect: allowed}", []string{`cases[0].expect: unsupported value "allowed"`}},
		{"no_caller", "cases:\n- {name: a, to: api, path: /, expect: allow}", []string{"cases[0].from: required unless identity is given"}},
		{"bad_service", "cases:\n- {name: a, from: Web, to: api, path: /, expect: allow}", []string{"cases[0].from: service"}},
		{"identity_namespace_mismatch", "cases:\n- {name: a, from: shop/web, identity: spiffe://bulwark.local/ns/prod/sa/web, to: api, path: /, expect: allow}",
			[]string{`cases[0].identity: namespace "prod" differs from from's "shop"`}},
		{"bad_ip_and_time", "cases:\n- {name: a, from: web, to: api, path: /, expect: allow, ip: 10.0.0.300, time: yesterday}",
			[]string{`cases[0].ip: "10.0.0.300" is not an IP address`, "cases[0].time:"}},
		{"bad_principal", "cases:\n- {name: a, from: web, to: api, path: /, expect: allow, principal: alice}", []string{`cases[0].principal: "alice" must be`}},
		{"duplicate_name", "cases:\n- {name: a, from: web, to: api, path: /, expect: allow}\n- {name: a, from: web, to: api, path: /, expect: deny}",
			[]string{`cases[1].name: "a" is also the name of cases[0]`}},
		{"bad_policy_ref", "cases:\n- {name: a, from: web, to: api, path: /, expect: allow, policy: web}", []string{`cases[0].policy: "web" must be "namespace/name"`}},
		{"no_cases", "cases: []", []string{"cases: at least one case is required"}},
		{"unknown_top_level_field", "case: []", []string{`case: unknown field`}},
		{"duplicate_key", "cases:\n- {name: a, name: b, from: web, to: api, path: /, expect: allow}", []string{`key "name" already set`}},
		{"not_yaml", "cases: [", []string{"cases file:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policycheck.ParseCases([]byte(tt.file), "")
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q: want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestParseCasesBadTrustDomain(t *testing.T) {
	if _, err := policycheck.ParseCases([]byte("cases:\n- {name: a, from: web, to: api, path: /, expect: allow}"), "Not A Domain"); err == nil {
		t.Error("got no error, want one for the trust domain")
	}
}

// casePolicies: web may GET below /v1/ on api; batch may POST /v1/orders;
// no one may call /v1/admin; v2 instances of api also let admin in when
// x-env is staging.
const casePolicies = `
metadata: {name: web-reads-api}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET], paths: ["/v1/*"]}
  - from: {services: [default/batch]}
    to: {methods: [POST], paths: [/v1/orders]}
---
metadata: {name: no-admin}
spec:
  action: DENY
  selector: {service: api}
  rules:
  - to: {paths: ["/v1/admin/*"]}
---
metadata: {name: staging-admin}
spec:
  selector: {service: api, labels: {version: v2}}
  rules:
  - from: {services: [default/admin]}
    when: ["request.headers['x-env'] == 'staging'"]`

func TestRunCases(t *testing.T) {
	cases, err := policycheck.ParseCases([]byte(`
cases:
- {name: web reads users, from: web, to: api, path: "/v1/users?x=1", expect: allow, policy: default/web-reads-api}
- {name: web reads users after normalization, from: web, to: api, path: "/v1/./a/../users", expect: allow}
- {name: web cannot post, from: web, to: api, method: POST, path: /v1/users, expect: deny}
- {name: batch posts orders, from: batch, to: api, method: POST, path: /v1/orders, expect: allow}
- {name: admin path is denied, from: web, to: api, path: /v1/admin/keys, expect: deny, policy: default/no-admin}
- {name: encoded slash is rejected, from: web, to: api, path: /v1/a%2Fb, expect: reject}
- {name: absolute form is rejected, from: web, to: api, path: "http://api.default/v1/users", expect: reject}
- {name: lower case method is rejected, from: web, to: api, method: get, path: /v1/users, expect: reject}
- {name: admin on v2 in staging, from: admin, to: api, path: /x, headers: {X-Env: staging}, labels: {version: v2}, expect: allow}
- {name: admin on v1 in staging, from: admin, to: api, path: /x, headers: {X-Env: staging}, expect: deny}
- name: wrong expectation
  from: web
  to: api
  method: DELETE
  path: /v1/users
  expect: allow
- {name: wrong policy, from: web, to: api, path: /v1/users, expect: allow, policy: default/other}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	results, err := policycheck.RunCases(policies(t, casePolicies), cases)
	if err != nil {
		t.Fatal(err)
	}
	type short struct {
		Name      string
		Pass      bool
		Got       string
		Policy    string
		Explained bool
	}
	var got []short
	for _, r := range results {
		got = append(got, short{r.Name, r.Pass, r.Got, r.Policy, r.Explanation != ""})
	}
	want := []short{
		{"web reads users", true, "allow", "default/web-reads-api", false},
		{"web reads users after normalization", true, "allow", "default/web-reads-api", false},
		{"web cannot post", true, "deny", "", false},
		{"batch posts orders", true, "allow", "default/web-reads-api", false},
		{"admin path is denied", true, "deny", "default/no-admin", false},
		{"encoded slash is rejected", true, "reject", "", false},
		{"absolute form is rejected", true, "reject", "", false},
		{"lower case method is rejected", true, "reject", "", false},
		{"admin on v2 in staging", true, "allow", "default/staging-admin", false},
		{"admin on v1 in staging", true, "deny", "", false},
		{"wrong expectation", false, "deny", "", true},
		{"wrong policy", false, "allow", "default/web-reads-api", true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	wrong := results[10]
	if !strings.Contains(wrong.Failure, "expected allow, got deny") {
		t.Errorf("failure: got %q, want it to say expected allow, got deny", wrong.Failure)
	}
	if !strings.Contains(wrong.Explanation, "nearest ALLOW rule: default/web-reads-api rule 0") || !strings.Contains(wrong.Explanation, "DELETE") {
		t.Errorf("explanation: got\n%s\nwant the nearest ALLOW rule and the method", wrong.Explanation)
	}
	if got := results[11].Failure; !strings.Contains(got, "expected allow by policy default/other, got allow by default/web-reads-api") {
		t.Errorf("policy failure: got %q", got)
	}
}

func TestRunCasesPrincipalAndIP(t *testing.T) {
	pols := policies(t, `
metadata: {name: alice-from-office}
spec:
  selector: {service: api}
  rules:
  - from: {requestPrincipals: ["https://idp.example.com/alice"], ipBlocks: [10.1.0.0/16]}`)
	cases, err := policycheck.ParseCases([]byte(`
cases:
- {name: alice in office, from: web, to: api, path: /, principal: "https://idp.example.com/alice", ip: 10.1.2.3, expect: allow}
- {name: alice mapped address, from: web, to: api, path: /, claims: {iss: "https://idp.example.com", sub: alice}, ip: "::ffff:10.1.2.3", expect: allow}
- {name: alice elsewhere, from: web, to: api, path: /, principal: "https://idp.example.com/alice", ip: 192.0.2.1, expect: deny}
- {name: no token, from: web, to: api, path: /, ip: 10.1.2.3, expect: deny}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	results, err := policycheck.RunCases(pols, cases)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if !r.Pass {
			t.Errorf("%s: %s\n%s", r.Name, r.Failure, r.Explanation)
		}
	}
}

func TestRunCasesPolicyThatDoesNotCompile(t *testing.T) {
	pols := policies(t, `
metadata: {name: broken}
spec:
  selector: {service: api}
  rules:
  - when: ["request.method =="]`)
	cases, err := policycheck.ParseCases([]byte("cases:\n- {name: a, from: web, to: api, path: /, expect: deny}"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policycheck.RunCases(pols, cases); err == nil || !strings.Contains(err.Error(), "default/broken") {
		t.Errorf("got %v, want an error naming default/broken", err)
	}
}
