package policy_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

const (
	idWeb      = "spiffe://bulwark.local/ns/default/sa/web"
	idAPI      = "spiffe://bulwark.local/ns/default/sa/api"
	idOtherWeb = "spiffe://bulwark.local/ns/other/sa/web"
	idForeign  = "spiffe://other.example/ns/default/sa/web"
)

// svcWeb is default/web, the service most cases decide for.
func svcWeb() identity.ServiceRef { return identity.ServiceRef{Namespace: "default", Name: "web"} }

// svcAPI is default/api.
func svcAPI() identity.ServiceRef { return identity.ServiceRef{Namespace: "default", Name: "api"} }

// pol builds a validated-looking policy default/name.
func pol(name, selector string, action config.Action, rules ...config.Rule) *config.AuthorizationPolicy {
	return polNS("default", name, selector, action, rules...)
}

// polNS builds a policy ns/name.
func polNS(ns, name, selector string, action config.Action, rules ...config.Rule) *config.AuthorizationPolicy {
	return &config.AuthorizationPolicy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAuthorizationPolicy},
		Metadata: config.ObjectMeta{Namespace: ns, Name: name},
		Spec: config.AuthorizationPolicySpec{
			Selector: config.PolicySelector{Service: selector},
			Action:   action,
			Rules:    rules,
		},
	}
}

// from builds a rule's from.
func from(services, identities []string) *config.Source {
	return &config.Source{Services: services, Identities: identities}
}

// to builds a rule's to.
func to(methods, paths []string) *config.Operation {
	return &config.Operation{Methods: methods, Paths: paths}
}

// mustCompile compiles the policies selecting svc (an instance without
// labels) or fails the test.
func mustCompile(t testing.TB, svc identity.ServiceRef, policies []*config.AuthorizationPolicy) *policy.Index {
	t.Helper()
	ix, err := policy.Compile(policy.Workload{Service: svc}, policies)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return ix
}

// list is shorthand for a string list.
func list(s ...string) []string { return s }

// webCaller is a request from default/web's identity.
func webCaller(method, path string) policy.Request {
	return policy.Request{
		Source: policy.Source{ID: idWeb, Services: list("default/web")},
		Method: method,
		Path:   path,
	}
}

// allowed is an allow by rule of policy ref.
func allowed(ref string, rule int) policy.Decision {
	return policy.Decision{Allow: true, Reason: policy.ReasonAllowed, Policy: ref, Rule: rule}
}

// deniedBy is a denial by rule of DENY policy ref.
func deniedBy(ref string, rule int) policy.Decision {
	return policy.Decision{Reason: policy.ReasonDenyRule, Policy: ref, Rule: rule}
}

// noAllowMatch is a denial for lack of a matching ALLOW rule.
func noAllowMatch() policy.Decision {
	return policy.Decision{Reason: policy.ReasonNoAllowMatch, Rule: -1}
}

// noAllowPolicy is a denial for lack of an ALLOW policy.
func noAllowPolicy() policy.Decision {
	return policy.Decision{Reason: policy.ReasonNoAllowPolicy, Rule: -1}
}

func TestDecide(t *testing.T) {
	allowAll := config.Rule{}
	tests := []struct {
		name     string
		svc      identity.ServiceRef
		policies []*config.AuthorizationPolicy
		req      policy.Request
		want     policy.Decision
	}{
		// Fails closed without an ALLOW policy.
		{
			name: "no_policy_denies",
			svc:  svcWeb(),
			req:  webCaller("GET", "/"),
			want: noAllowPolicy(),
		},
		{
			name:     "only_deny_policies_deny_when_no_rule_matches",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("deny-admin", "", config.ActionDeny, config.Rule{To: to(nil, list("/admin"))})},
			req:      webCaller("GET", "/"),
			want:     noAllowPolicy(),
		},
		{
			name:     "only_deny_policies_report_matching_deny",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("deny-admin", "", config.ActionDeny, config.Rule{To: to(nil, list("/admin"))})},
			req:      webCaller("GET", "/admin"),
			want:     deniedBy("default/deny-admin", 0),
		},

		// DENY, then ALLOW, then deny.
		{
			name: "matching_allow_allows",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-all", "web", config.ActionAllow, allowAll),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow-all", 0),
		},
		{
			name: "deny_beats_allow",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("a-allow-all", "web", config.ActionAllow, allowAll),
				pol("z-deny-admin", "web", config.ActionDeny, config.Rule{To: to(nil, list("/admin/*"))}),
			},
			req:  webCaller("GET", "/admin/users"),
			want: deniedBy("default/z-deny-admin", 0),
		},
		{
			name: "deny_not_matching_lets_allow_decide",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("a-allow-all", "web", config.ActionAllow, allowAll),
				pol("z-deny-admin", "web", config.ActionDeny, config.Rule{To: to(nil, list("/admin/*"))}),
			},
			req:  webCaller("GET", "/hello"),
			want: allowed("default/a-allow-all", 0),
		},
		{
			name: "no_rule_matching_denies",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-get", "web", config.ActionAllow, config.Rule{To: to(list("GET"), nil)}),
			},
			req:  webCaller("POST", "/"),
			want: noAllowMatch(),
		},
		{
			name: "empty_action_is_allow",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-default", "web", "", allowAll),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow-default", 0),
		},
		{
			name: "unknown_action_denies",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-all", "web", config.ActionAllow, allowAll),
				pol("block", "web", "BLOCK", allowAll),
			},
			req:  webCaller("GET", "/"),
			want: deniedBy("default/block", 0),
		},
		{
			name: "first_policy_by_name_decides",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("zz", "web", config.ActionAllow, allowAll),
				pol("aa", "web", config.ActionAllow, allowAll),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/aa", 0),
		},

		// Selection.
		{
			name: "policy_in_other_namespace_does_not_apply",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				polNS("other", "allow-web", "web", config.ActionAllow, allowAll),
			},
			req:  webCaller("GET", "/"),
			want: noAllowPolicy(),
		},
		{
			name: "policy_for_other_service_does_not_apply",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-api", "api", config.ActionAllow, allowAll),
			},
			req:  webCaller("GET", "/"),
			want: noAllowPolicy(),
		},
		{
			name: "deny_for_other_service_does_not_apply",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-web", "web", config.ActionAllow, allowAll),
				pol("deny-api", "api", config.ActionDeny, allowAll),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow-web", 0),
		},
		{
			name: "namespace_wide_selector_applies_to_web",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-ns", "", config.ActionAllow, allowAll),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow-ns", 0),
		},
		{
			name: "namespace_wide_selector_applies_to_api",
			svc:  svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-ns", "", config.ActionAllow, allowAll),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow-ns", 0),
		},

		// Rules.
		{
			name: "rule_without_from_and_to_matches_unknown_caller",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-all", "web", config.ActionAllow, allowAll),
			},
			req:  policy.Request{Method: "PURGE", Path: "/x"},
			want: allowed("default/allow-all", 0),
		},
		{
			name: "any_rule_matches",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow,
					config.Rule{To: to(list("POST"), nil)},
					config.Rule{To: to(list("GET"), nil)},
				),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow", 1),
		},
		{
			name: "rule_needs_from_and_to",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow,
					config.Rule{From: from(nil, list(idAPI)), To: to(list("GET"), nil)},
				),
			},
			req:  webCaller("GET", "/"),
			want: noAllowMatch(),
		},

		// from.
		{
			name: "from_services_and_identities_both_match",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/web"), list(idWeb))}),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "from_services_match_identities_do_not",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/web"), list(idAPI))}),
			},
			req:  webCaller("GET", "/"),
			want: noAllowMatch(),
		},
		{
			name: "from_identities_match_services_do_not",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/api"), list(idWeb))}),
			},
			req:  webCaller("GET", "/"),
			want: noAllowMatch(),
		},
		{
			name: "from_services_any_entry",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/api", "default/web"), nil)}),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "from_services_any_caller_service",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/api"), nil)}),
			},
			req: policy.Request{
				Source: policy.Source{ID: idWeb, Services: list("default/web", "default/api")},
				Method: "GET", Path: "/",
			},
			want: allowed("default/allow", 0),
		},
		{
			name: "from_identities_any_entry",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list(idAPI, idWeb))}),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "from_service_star_matches_any_service",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("*"), nil)}),
			},
			req: policy.Request{
				Source: policy.Source{ID: idOtherWeb, Services: list("other/web")},
				Method: "GET", Path: "/",
			},
			want: allowed("default/allow", 0),
		},
		{
			name: "from_service_star_does_not_match_caller_without_services",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("*"), nil)}),
			},
			req:  policy.Request{Source: policy.Source{ID: idWeb}, Method: "GET", Path: "/"},
			want: noAllowMatch(),
		},
		{
			name: "from_service_glob_name",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/*"), nil)}),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "from_service_glob_namespace",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("*/web"), nil)}),
			},
			req: policy.Request{
				Source: policy.Source{ID: idOtherWeb, Services: list("other/web")},
				Method: "GET", Path: "/",
			},
			want: allowed("default/allow", 0),
		},
		{
			name: "from_service_glob_inner",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("de*lt/w*b"), nil)}),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "from_service_glob_star_matches_empty_run",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/web*"), nil)}),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "from_service_glob_no_match",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/a*"), nil)}),
			},
			req:  webCaller("GET", "/"),
			want: noAllowMatch(),
		},
		{
			name: "from_service_glob_never_crosses_slash",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("d*b"), nil)}),
			},
			req:  webCaller("GET", "/"),
			want: noAllowMatch(),
		},
		{
			name: "from_service_exact_is_not_prefix",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(list("default/web"), nil)}),
			},
			req: policy.Request{
				Source: policy.Source{ID: idWeb, Services: list("default/webapp")},
				Method: "GET", Path: "/",
			},
			want: noAllowMatch(),
		},
		{
			name: "from_identity_star_matches_any_identity",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list("*"))}),
			},
			req:  policy.Request{Source: policy.Source{ID: idForeign}, Method: "GET", Path: "/"},
			want: allowed("default/allow", 0),
		},
		{
			name: "from_identity_star_does_not_match_unknown_caller",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list("*"))}),
			},
			req:  policy.Request{Method: "GET", Path: "/"},
			want: noAllowMatch(),
		},
		{
			name: "from_identity_glob_last_segment",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list("spiffe://bulwark.local/ns/default/sa/*"))}),
			},
			req:  webCaller("GET", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "from_identity_glob_never_crosses_slash",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list("spiffe://bulwark.local/ns/default/sa/*"))}),
			},
			req:  policy.Request{Source: policy.Source{ID: idWeb + "/extra"}, Method: "GET", Path: "/"},
			want: noAllowMatch(),
		},
		{
			name: "from_identity_glob_middle_segment",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list("spiffe://bulwark.local/ns/*/sa/web"))}),
			},
			req:  policy.Request{Source: policy.Source{ID: idOtherWeb}, Method: "GET", Path: "/"},
			want: allowed("default/allow", 0),
		},
		{
			name: "from_identity_glob_middle_segment_never_crosses_slash",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list("spiffe://bulwark.local/ns/*/sa/web"))}),
			},
			req:  policy.Request{Source: policy.Source{ID: "spiffe://bulwark.local/ns/a/b/sa/web"}, Method: "GET", Path: "/"},
			want: noAllowMatch(),
		},
		{
			name: "from_identity_glob_trust_domain",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list("spiffe://*/ns/default/sa/web"))}),
			},
			req:  policy.Request{Source: policy.Source{ID: idForeign}, Method: "GET", Path: "/"},
			want: allowed("default/allow", 0),
		},
		{
			name: "from_identity_exact_other_identity",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{From: from(nil, list(idWeb))}),
			},
			req:  policy.Request{Source: policy.Source{ID: idForeign}, Method: "GET", Path: "/"},
			want: noAllowMatch(),
		},

		// to: methods.
		{
			name: "method_exact",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{To: to(list("GET", "HEAD"), nil)}),
			},
			req:  webCaller("HEAD", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "method_is_case_sensitive",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{To: to(list("GET"), nil)}),
			},
			req:  webCaller("get", "/"),
			want: noAllowMatch(),
		},
		{
			name: "method_star_matches_any",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{To: to(list("*"), nil)}),
			},
			req:  webCaller("PROPFIND", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "method_extension",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{To: to(list("GET", "PURGE"), nil)}),
			},
			req:  webCaller("PURGE", "/"),
			want: allowed("default/allow", 0),
		},
		{
			name: "method_extension_is_case_sensitive",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{To: to(list("PURGE"), nil)}),
			},
			req:  webCaller("purge", "/"),
			want: noAllowMatch(),
		},
		{
			name: "methods_and_paths_both_required",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{To: to(list("GET"), list("/hello"))}),
			},
			req:  webCaller("GET", "/other"),
			want: noAllowMatch(),
		},
		{
			name: "methods_and_paths_both_match",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{To: to(list("GET"), list("/other", "/hello"))}),
			},
			req:  webCaller("GET", "/hello"),
			want: allowed("default/allow", 0),
		},
	}

	// to: paths, against ALLOW ["/public/*", "/hello", "/root/*"... ].
	pathCases := []struct {
		name    string
		pattern string
		path    string
		allow   bool
	}{
		{name: "prefix_matches_bare", pattern: "/public/*", path: "/public", allow: true},
		{name: "prefix_matches_slash", pattern: "/public/*", path: "/public/", allow: true},
		{name: "prefix_matches_child", pattern: "/public/*", path: "/public/a", allow: true},
		{name: "prefix_matches_grandchild", pattern: "/public/*", path: "/public/a/b/", allow: true},
		{name: "prefix_never_matches_longer_segment", pattern: "/public/*", path: "/publicity", allow: false},
		{name: "prefix_never_matches_parent", pattern: "/public/*", path: "/", allow: false},
		{name: "prefix_is_case_sensitive", pattern: "/public/*", path: "/Public/a", allow: false},
		{name: "nested_prefix_bare", pattern: "/a/b/*", path: "/a/b", allow: true},
		{name: "nested_prefix_sibling", pattern: "/a/b/*", path: "/a/bc", allow: false},
		{name: "root_prefix_matches_root", pattern: "/*", path: "/", allow: true},
		{name: "root_prefix_matches_all", pattern: "/*", path: "/x/y", allow: true},
		{name: "star_matches_all", pattern: "*", path: "/x/y", allow: true},
		{name: "exact_matches", pattern: "/hello", path: "/hello", allow: true},
		{name: "exact_not_trailing_slash", pattern: "/hello", path: "/hello/", allow: false},
		{name: "exact_not_child", pattern: "/hello", path: "/hello/x", allow: false},
		{name: "exact_trailing_slash_not_bare", pattern: "/hello/", path: "/hello", allow: false},
		{name: "exact_matrix_param_is_literal", pattern: "/admin", path: "/admin;x=1", allow: false},
	}
	for _, pc := range pathCases {
		want := noAllowMatch()
		if pc.allow {
			want = allowed("default/allow", 0)
		}
		tests = append(tests, struct {
			name     string
			svc      identity.ServiceRef
			policies []*config.AuthorizationPolicy
			req      policy.Request
			want     policy.Decision
		}{
			name: "path_" + pc.name,
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "web", config.ActionAllow, config.Rule{To: to(nil, list(pc.pattern))}),
			},
			req:  webCaller("GET", pc.path),
			want: want,
		})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := mustCompile(t, tt.svc, tt.policies)
			got := ix.Decide(&tt.req)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide(%+v) mismatch (-want +got):\n%s", tt.req, diff)
			}
		})
	}
}

func TestDecideNil(t *testing.T) {
	var ix *policy.Index
	if got := ix.Decide(&policy.Request{Method: "GET", Path: "/"}); got != noAllowPolicy() {
		t.Errorf("nil Index Decide: got %+v, want %+v", got, noAllowPolicy())
	}
	ix = mustCompile(t, svcWeb(), []*config.AuthorizationPolicy{nil, pol("allow", "", config.ActionAllow, config.Rule{})})
	if got := ix.Decide(nil); got.Allow {
		t.Errorf("Decide(nil): got %+v, want a denial", got)
	}
	if got := (policy.Decision{}); got.Allow || got.Reason != policy.ReasonNoAllowPolicy {
		t.Errorf("zero Decision: got %+v, want a denial with ReasonNoAllowPolicy", got)
	}
}

func TestReasonString(t *testing.T) {
	tests := []struct {
		name   string
		reason policy.Reason
		want   string
	}{
		{name: "allowed", reason: policy.ReasonAllowed, want: "allowed"},
		{name: "deny_rule", reason: policy.ReasonDenyRule, want: "denied by policy"},
		{name: "no_allow_match", reason: policy.ReasonNoAllowMatch, want: "no ALLOW rule matched"},
		{name: "no_allow_policy", reason: policy.ReasonNoAllowPolicy, want: "no ALLOW policy selects the service"},
		{name: "unknown", reason: policy.Reason(200), want: "Reason(200)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.reason.String(); got != tt.want {
				t.Errorf("String(): got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMatchesServicePattern(t *testing.T) {
	policies := []*config.AuthorizationPolicy{
		pol("allow", "web", config.ActionAllow,
			config.Rule{From: from(list("default/api", "front*/*"), nil)},
			config.Rule{From: from(nil, list(idOtherWeb))},
			config.Rule{},
		),
		pol("deny", "", config.ActionDeny, config.Rule{From: from(list("evil/x"), nil)}),
		pol("other-svc", "api", config.ActionAllow, config.Rule{From: from(list("*"), nil)}),
		polNS("other", "other-ns", "web", config.ActionAllow, config.Rule{From: from(list("*"), nil)}),
	}
	ix := mustCompile(t, svcWeb(), policies)
	tests := []struct {
		name    string
		service string
		want    bool
	}{
		{name: "allow_exact", service: "default/api", want: true},
		{name: "allow_glob", service: "frontend/ui", want: true},
		{name: "deny_exact", service: "evil/x", want: true},
		{name: "unmatched", service: "default/db", want: false},
		{name: "glob_never_crosses_slash", service: "front/a/b", want: false},
		{name: "empty", service: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ix.MatchesServicePattern(tt.service); got != tt.want {
				t.Errorf("MatchesServicePattern(%q): got %v, want %v", tt.service, got, tt.want)
			}
		})
	}
	t.Run("nil_index", func(t *testing.T) {
		var nilIx *policy.Index
		if got := nilIx.MatchesServicePattern("default/api"); got {
			t.Errorf("nil MatchesServicePattern: got %v, want false", got)
		}
	})
	t.Run("star", func(t *testing.T) {
		star := mustCompile(t, svcAPI(), policies)
		if got := star.MatchesServicePattern("any/thing"); !got {
			t.Errorf("MatchesServicePattern with \"*\": got %v, want true", got)
		}
	})
}

// TestNormalizedPathsNeverReachAdmin runs raw request paths through
// pathnorm.Normalize and Decide, as the sidecar does, against
// ALLOW GET ["/hello", "/public/*"]: no encoding trick reaches "/admin".
func TestNormalizedPathsNeverReachAdmin(t *testing.T) {
	ix := mustCompile(t, svcWeb(), []*config.AuthorizationPolicy{
		pol("allow-public", "web", config.ActionAllow, config.Rule{To: to(list("GET"), list("/hello", "/public/*"))}),
	})
	const (
		rejected = "rejected"
		denied   = "denied"
		allow    = "allowed"
	)
	tests := []struct {
		name     string
		raw      string
		wantPath string // normalized path; "" when rejected
		want     string
	}{
		{name: "dotdot_out_of_public", raw: "/public/../admin", wantPath: "/admin", want: denied},
		{name: "double_slash", raw: "//admin", wantPath: "/admin", want: denied},
		{name: "encoded_letter", raw: "/%61dmin", wantPath: "/admin", want: denied},
		{name: "encoded_slash", raw: "/admin%2f", want: rejected},
		{name: "encoded_dotdot_out_of_public", raw: "/public/%2e%2e/admin", wantPath: "/admin", want: denied},
		{name: "encoded_slash_dotdot", raw: "/public/..%2fadmin", want: rejected},
		{name: "encoded_backslash_dotdot", raw: "/public/..%5cadmin", want: rejected},
		{name: "backslash_dotdot", raw: "/public/..\\admin", want: rejected},
		{name: "dot_then_dotdot", raw: "/public/./../admin", wantPath: "/admin", want: denied},
		{name: "dotdot_out_of_hello", raw: "/hello/../admin", wantPath: "/admin", want: denied},
		{name: "nul_truncation", raw: "/public/%00/../admin", want: rejected},
		{name: "public_child_allowed", raw: "/public/a", wantPath: "/public/a", want: allow},
		{name: "public_bare_allowed", raw: "/public", wantPath: "/public", want: allow},
		{name: "hello_allowed", raw: "/hello", wantPath: "/hello", want: allow},
		{name: "encoded_hello_allowed", raw: "/%68ello", wantPath: "/hello", want: allow},
		{name: "publicity_denied", raw: "/publicity", wantPath: "/publicity", want: denied},
		{name: "dotdot_stays_in_public", raw: "/public/a/../b", wantPath: "/public/b", want: allow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			norm, err := pathnorm.Normalize(tt.raw)
			got := rejected
			if err == nil {
				r := webCaller("GET", norm)
				if ix.Decide(&r).Allow {
					got = allow
				} else {
					got = denied
				}
			}
			if got != tt.want || norm != tt.wantPath {
				t.Errorf("%q: got %s (path %q), want %s (path %q)", tt.raw, got, norm, tt.want, tt.wantPath)
			}
			if got == allow && norm == "/admin" {
				t.Errorf("%q reached an allow of /admin", tt.raw)
			}
		})
	}
}
