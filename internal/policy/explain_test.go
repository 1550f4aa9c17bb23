package policy_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

func TestExplain(t *testing.T) {
	policies := []*config.AuthorizationPolicy{
		pol("allow-web", "web", config.ActionAllow,
			config.Rule{From: from(list("default/api"), nil), To: to(list("GET", "POST"), list("/api/*"))},
			config.Rule{From: from(list("default/web"), nil), To: to(list("GET", "POST"), list("/api/*"))},
		),
		pol("deny-admin", "", config.ActionDeny, config.Rule{To: to(nil, list("/admin/*"))}),
		pol("z-allow-ids", "", config.ActionAllow, config.Rule{From: &config.Source{Identities: list(idAPI), RequestPrincipals: list("*")}}),
		dryRun(pol("dry-deny-delete", "", config.ActionDeny, config.Rule{To: to(list("DELETE"), nil)})),
		pol("audit-admins", "", config.ActionAudit, config.Rule{When: list("request.headers['x-admin'] == 'yes'")}),
	}
	ix := mustCompile(t, svcWeb(), policies)
	tests := []struct {
		name        string
		req         policy.Request
		wantNearest *policy.Nearest
		wantTrace   map[string][]policy.RuleTrace // by policy, when checked
		wantString  []string                      // lines String must contain
	}{
		{
			name: "denied_method_nearest_rule",
			req:  webCaller("DELETE", "/api/users"),
			wantNearest: &policy.Nearest{Policy: "default/allow-web", Rule: 1, Changes: []string{
				`to.methods: "DELETE" not in [GET, POST]`,
			}},
			wantTrace: map[string][]policy.RuleTrace{
				"default/allow-web": {
					{Rule: 0, Mismatches: []string{
						`to.methods: "DELETE" not in [GET, POST]`,
						`from.services: [default/web] not in [default/api]`,
					}},
					{Rule: 1, Mismatches: []string{`to.methods: "DELETE" not in [GET, POST]`}},
				},
				"default/audit-admins": {
					{Rule: 0, Matched: true, Notes: []string{
						`when[0]: evaluate condition: no such key: x-admin (counted as a match: fails closed): request.headers['x-admin'] == 'yes'`,
					}},
				},
			},
			wantString: []string{
				"decision: deny (no ALLOW rule matched); audited by default/audit-admins",
				"ALLOW default/allow-web",
				"  rule 1: no match",
				`    - to.methods: "DELETE" not in [GET, POST]`,
				"DENY default/dry-deny-delete (dry run)",
				"nearest ALLOW rule: default/allow-web rule 1; to allow the request:",
			},
		},
		{
			name: "denied_path_nearest_rule",
			req:  webCaller("GET", "/admin/x"),
			wantNearest: &policy.Nearest{Policy: "default/allow-web", Rule: 1, Changes: []string{
				`to.paths: "/admin/x" not in [/api/*]`,
			}},
		},
		{
			name: "unknown_values_explained",
			req:  policy.Request{Method: "GET", Path: "/other"},
			wantNearest: &policy.Nearest{Policy: "default/allow-web", Rule: 0, Changes: []string{
				`to.paths: "/other" not in [/api/*]`,
				"from.services: the caller's service list is unknown, and an unknown value matches no entry",
			}},
			wantTrace: map[string][]policy.RuleTrace{
				"default/z-allow-ids": {{Rule: 0, Mismatches: []string{
					"from.identities: the caller's identity is unknown, and an unknown value matches no entry",
					"from.requestPrincipals: the request principal (no validated JWT) is unknown, and an unknown value matches no entry",
				}}},
			},
		},
		{
			name:        "allowed_has_no_nearest",
			req:         webCaller("POST", "/api/orders"),
			wantString:  []string{"decision: allow by default/allow-web rule 1; audited by default/audit-admins"},
			wantNearest: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex := ix.Explain(&tt.req)
			if got, want := ex.Decision, ix.Decide(&tt.req); got != want {
				t.Errorf("Decision: got %v, want %v", got, want)
			}
			if diff := cmp.Diff(tt.wantNearest, ex.Nearest); diff != "" {
				t.Errorf("Nearest mismatch (-want +got):\n%s", diff)
			}
			for ref, want := range tt.wantTrace {
				var got []policy.RuleTrace
				for _, pt := range ex.Policies {
					if pt.Policy == ref {
						got = pt.Rules
					}
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("trace of %s mismatch (-want +got):\n%s", ref, diff)
				}
			}
			s := ex.String()
			for _, line := range tt.wantString {
				if !strings.Contains(s, line+"\n") {
					t.Errorf("String() lacks line %q:\n%s", line, s)
				}
			}
		})
	}
}

// TestExplainNearestTies checks that the nearest ALLOW rule is the one with
// the fewest mismatches, the first by name and rule order on a tie, and
// that dry-run ALLOW rules are never proposed.
func TestExplainNearestTies(t *testing.T) {
	policies := []*config.AuthorizationPolicy{
		pol("b", "", config.ActionAllow, config.Rule{To: to(list("POST"), list("/x"))}, config.Rule{To: to(list("POST"), nil)}),
		pol("c", "", config.ActionAllow, config.Rule{To: to(list("PUT"), nil)}),
		dryRun(pol("a", "", config.ActionAllow, config.Rule{})),
	}
	ex := mustCompile(t, svcWeb(), policies).Explain(&policy.Request{Source: policy.Source{ID: idWeb}, Method: "GET", Path: "/"})
	want := &policy.Nearest{Policy: "default/b", Rule: 1, Changes: []string{`to.methods: "GET" not in [POST]`}}
	if diff := cmp.Diff(want, ex.Nearest); diff != "" {
		t.Errorf("Nearest mismatch (-want +got):\n%s", diff)
	}
	if !ex.Decision.DryRun.Differs || ex.Decision.DryRun.Policy != "default/a" {
		t.Errorf("DryRun: got %+v, want a difference by default/a", ex.Decision.DryRun)
	}
}

// TestExplainDenyWins checks that when an ALLOW rule matches but a DENY
// rule decided first, the nearest rule names the DENY rule.
func TestExplainDenyWins(t *testing.T) {
	policies := []*config.AuthorizationPolicy{
		pol("allow", "", config.ActionAllow, config.Rule{}),
		pol("deny", "", config.ActionDeny, config.Rule{To: to(list("POST"), nil)}, config.Rule{To: to(nil, list("/admin"))}),
	}
	ex := mustCompile(t, svcWeb(), policies).Explain(&policy.Request{Source: policy.Source{ID: idWeb}, Method: "GET", Path: "/admin"})
	want := &policy.Nearest{Policy: "default/allow", Rule: 0, Changes: []string{"DENY default/deny rule 1, which matches first, would have to not match"}}
	if diff := cmp.Diff(want, ex.Nearest); diff != "" {
		t.Errorf("Nearest mismatch (-want +got):\n%s", diff)
	}
}

func TestExplainNoPolicy(t *testing.T) {
	ex := mustCompile(t, svcWeb(), nil).Explain(&policy.Request{Method: "GET", Path: "/"})
	want := "decision: deny (no ALLOW policy selects the service)\nno policy selects the workload\n"
	if got := ex.String(); got != want {
		t.Errorf("String(): got %q, want %q", got, want)
	}
	var nilIx *policy.Index
	if got := nilIx.Explain(nil); got.Decision.Allow || got.Nearest != nil {
		t.Errorf("nil Index Explain(nil): got %+v, want a bare denial", got)
	}
}

func TestDecisionString(t *testing.T) {
	tests := []struct {
		name string
		d    policy.Decision
		want string
	}{
		{name: "allow", d: allowed("default/a", 2), want: "allow by default/a rule 2"},
		{name: "no_match", d: noAllowMatch(), want: "deny (no ALLOW rule matched)"},
		{
			name: "everything",
			d: policy.Decision{Reason: policy.ReasonDenyRule, Policy: "default/d", Rule: 0, ConditionError: true, Audit: true, AuditPolicy: "default/au",
				DryRun: policy.DryRun{Differs: true, Allow: true, Reason: policy.ReasonAllowed, Policy: "default/dry", Rule: 1}},
			want: "deny by default/d rule 0 (a condition failed to evaluate); audited by default/au; dry run: would allow by default/dry rule 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.String(); got != tt.want {
				t.Errorf("String(): got %q, want %q", got, tt.want)
			}
		})
	}
}
