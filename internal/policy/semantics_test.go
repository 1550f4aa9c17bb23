package policy_test

import (
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// semanticsCase decides req for an instance of svc with labels.
type semanticsCase struct {
	name     string
	svc      identity.ServiceRef
	labels   map[string]string
	policies []*config.AuthorizationPolicy
	req      policy.Request
	want     policy.Decision
}

// mesh-wide policies live in the root namespace.
func rootPol(name string, action config.Action, rules ...config.Rule) *config.AuthorizationPolicy {
	return polNS(config.RootNamespace, name, "", action, rules...)
}

// dryRun marks p as a dry-run policy.
func dryRun(p *config.AuthorizationPolicy) *config.AuthorizationPolicy {
	p.Spec.DryRun = true
	return p
}

// withLabels sets p's selector labels.
func withLabels(p *config.AuthorizationPolicy, labels map[string]string) *config.AuthorizationPolicy {
	p.Spec.Selector.Labels = labels
	return p
}

// when returns a rule with conditions only.
func when(exprs ...string) config.Rule { return config.Rule{When: exprs} }

// audited adds an audit by policy ref to d.
func audited(d policy.Decision, ref string) policy.Decision {
	d.Audit, d.AuditPolicy = true, ref
	return d
}

// withCondError marks d as involving a condition error.
func withCondError(d policy.Decision) policy.Decision {
	d.ConditionError = true
	return d
}

// semanticsCases pins every line of the semantics in the package
// documentation; each name appears there in brackets.
func semanticsCases() []semanticsCase {
	allowAll := config.Rule{}
	web := svcWeb()
	get := webCaller("GET", "/")
	withPrincipal := func(r policy.Request, principal string) policy.Request {
		r.Source.Principal = principal
		return r
	}
	withIP := func(r policy.Request, ip string) policy.Request {
		r.Source.IP = netip.MustParseAddr(ip)
		return r
	}
	withHost := func(r policy.Request, host string) policy.Request {
		r.Host = host
		return r
	}
	withPort := func(r policy.Request, port int) policy.Request {
		r.Port = port
		return r
	}
	anonymous := policy.Request{Method: "GET", Path: "/"}
	return []semanticsCase{
		// Selection.
		{
			name:     "root_namespace_applies_everywhere",
			svc:      identity.ServiceRef{Namespace: "team-b", Name: "db"},
			policies: []*config.AuthorizationPolicy{rootPol("mesh-allow", config.ActionAllow, allowAll), rootPol("mesh-deny-admin", config.ActionDeny, config.Rule{To: to(nil, list("/admin/*"))})},
			req:      webCaller("GET", "/admin/x"),
			want:     deniedBy(config.RootNamespace+"/mesh-deny-admin", 0),
		},
		{
			name:     "other_namespace_does_not_select",
			svc:      web,
			policies: []*config.AuthorizationPolicy{polNS("other", "allow", "", config.ActionAllow, allowAll)},
			req:      get,
			want:     noAllowPolicy(),
		},
		{
			name:     "service_selector",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow-api", "api", config.ActionAllow, allowAll), pol("allow-web", "web", config.ActionAllow, config.Rule{To: to(list("POST"), nil)})},
			req:      get,
			want:     noAllowMatch(),
		},
		{
			name:     "root_namespace_service_selector_selects_nothing",
			svc:      web,
			policies: []*config.AuthorizationPolicy{polNS(config.RootNamespace, "allow-web", "web", config.ActionAllow, allowAll)},
			req:      get,
			want:     noAllowPolicy(),
		},
		{
			name:     "labels_all_required",
			svc:      web,
			labels:   map[string]string{"version": "v2", "track": "canary", "team": "x"},
			policies: []*config.AuthorizationPolicy{withLabels(pol("allow-canary", "web", config.ActionAllow, allowAll), map[string]string{"version": "v2", "track": "canary"})},
			req:      get,
			want:     allowed("default/allow-canary", 0),
		},
		{
			name:     "label_missing_does_not_select",
			svc:      web,
			labels:   map[string]string{"version": "v2"},
			policies: []*config.AuthorizationPolicy{withLabels(pol("allow-canary", "web", config.ActionAllow, allowAll), map[string]string{"version": "v2", "track": "canary"})},
			req:      get,
			want:     noAllowPolicy(),
		},

		// Decision.
		{
			name: "no_allow_policy_denies",
			svc:  web,
			req:  get,
			want: noAllowPolicy(),
		},
		{
			name:     "dry_run_allow_is_not_an_allow_policy",
			svc:      web,
			policies: []*config.AuthorizationPolicy{dryRun(pol("allow", "", config.ActionAllow, allowAll))},
			req:      get,
			want: policy.Decision{Reason: policy.ReasonNoAllowPolicy, Rule: -1,
				DryRun: policy.DryRun{Differs: true, Allow: true, Reason: policy.ReasonAllowed, Policy: "default/allow", Rule: 0}},
		},
		{
			name:     "audit_is_not_an_allow_policy",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("audit", "", config.ActionAudit, allowAll)},
			req:      get,
			want:     audited(noAllowPolicy(), "default/audit"),
		},
		{
			name: "deny_wins_over_allow",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("a-allow", "", config.ActionAllow, allowAll),
				pol("z-deny", "", config.ActionDeny, config.Rule{To: to(nil, list("/admin"))}),
			},
			req:  webCaller("GET", "/admin"),
			want: deniedBy("default/z-deny", 0),
		},
		{
			name:     "matching_allow_allows",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{To: to(list("GET"), nil)})},
			req:      get,
			want:     allowed("default/allow", 0),
		},
		{
			name:     "no_allow_match_denies",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{To: to(list("POST"), nil)})},
			req:      get,
			want:     noAllowMatch(),
		},
		{
			name:     "unknown_action_denies",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, allowAll), pol("block", "", "BLOCK", allowAll)},
			req:      get,
			want:     deniedBy("default/block", 0),
		},
		{
			name: "first_policy_by_name_decides",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("b", "", config.ActionAllow, allowAll),
				rootPol("c", config.ActionAllow, allowAll),
				rootPol("a", config.ActionAllow, allowAll),
			},
			req:  get,
			want: allowed(config.RootNamespace+"/a", 0),
		},
		{
			name: "first_rule_decides",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, config.Rule{To: to(list("POST"), nil)}, config.Rule{To: to(list("GET"), nil)}, allowAll),
			},
			req:  get,
			want: allowed("default/allow", 1),
		},
		{
			name:     "audit_does_not_allow",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow-post", "", config.ActionAllow, config.Rule{To: to(list("POST"), nil)}), pol("audit", "", config.ActionAudit, allowAll)},
			req:      get,
			want:     audited(noAllowMatch(), "default/audit"),
		},
		{
			name:     "audit_does_not_deny",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, allowAll), pol("audit", "", config.ActionAudit, allowAll)},
			req:      get,
			want:     audited(allowed("default/allow", 0), "default/audit"),
		},
		{
			name: "audit_reports_first_match",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("audit-c", "", config.ActionAudit, allowAll),
				pol("audit-a", "", config.ActionAudit, config.Rule{To: to(list("POST"), nil)}),
				pol("audit-b", "", config.ActionAudit, config.Rule{To: to(list("GET"), nil)}),
				dryRun(pol("audit-0", "", config.ActionAudit, allowAll)),
			},
			req:  get,
			want: audited(allowed("default/allow", 0), "default/audit-b"),
		},
		{
			name:     "dry_run_deny_not_enforced",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, allowAll), dryRun(pol("deny", "", config.ActionDeny, config.Rule{To: to(list("POST"), nil)}))},
			req:      webCaller("POST", "/"),
			want: policy.Decision{Allow: true, Reason: policy.ReasonAllowed, Policy: "default/allow", Rule: 0,
				DryRun: policy.DryRun{Differs: true, Reason: policy.ReasonDenyRule, Policy: "default/deny", Rule: 0}},
		},
		{
			name: "dry_run_deny_would_deny",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				dryRun(pol("deny-a", "", config.ActionDeny, config.Rule{To: to(list("POST"), nil)})),
				dryRun(pol("deny-b", "", config.ActionDeny, config.Rule{To: to(list("PUT"), nil)}, config.Rule{To: to(list("GET"), nil)})),
			},
			req: get,
			want: policy.Decision{Allow: true, Reason: policy.ReasonAllowed, Policy: "default/allow", Rule: 0,
				DryRun: policy.DryRun{Differs: true, Reason: policy.ReasonDenyRule, Policy: "default/deny-b", Rule: 1}},
		},
		{
			name: "dry_run_allow_would_allow",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow-post", "", config.ActionAllow, config.Rule{To: to(list("POST"), nil)}),
				dryRun(pol("allow-get", "", config.ActionAllow, config.Rule{To: to(list("GET"), nil)})),
			},
			req: get,
			want: policy.Decision{Reason: policy.ReasonNoAllowMatch, Rule: -1,
				DryRun: policy.DryRun{Differs: true, Allow: true, Reason: policy.ReasonAllowed, Policy: "default/allow-get", Rule: 0}},
		},
		{
			name: "dry_run_same_decision_not_reported",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("deny", "", config.ActionDeny, config.Rule{To: to(list("GET"), nil)}),
				dryRun(pol("allow-dry", "", config.ActionAllow, allowAll)),
				dryRun(pol("deny-dry", "", config.ActionDeny, config.Rule{To: to(list("GET"), nil)})),
			},
			req:  get,
			want: deniedBy("default/deny", 0),
		},

		// Rules.
		{
			name:     "empty_rule_matches_all",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, allowAll)},
			req:      policy.Request{Method: "PURGE", Path: "/x"},
			want:     allowed("default/allow", 0),
		},
		{
			name:     "rule_needs_from_and_to",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: from(list("default/web"), nil), To: to(list("POST"), nil)})},
			req:      get,
			want:     noAllowMatch(),
		},
		{
			name: "fields_all_required",
			svc:  web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{
				From: &config.Source{Services: list("default/web"), Namespaces: list("default"), RequestPrincipals: list("*")},
			})},
			req:  get,
			want: noAllowMatch(),
		},
		{
			name:     "list_any_entry",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{To: &config.Operation{Hosts: list("a.example", "web.default"), Ports: []int{8080, 80}}})},
			req:      withPort(withHost(get, "web.default"), 80),
			want:     allowed("default/allow", 0),
		},
		{
			name:     "not_list_no_entry",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{NotNamespaces: list("evil", "default")}})},
			req:      get,
			want:     noAllowMatch(),
		},
		{
			name:     "unknown_identity_star",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{Identities: list("*")}}, config.Rule{From: &config.Source{Namespaces: list("*")}})},
			req:      anonymous,
			want:     noAllowMatch(),
		},
		{
			name:     "unknown_principal_star",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{RequestPrincipals: list("*")}})},
			req:      get,
			want:     noAllowMatch(),
		},
		{
			name:     "unknown_ip_block",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{IPBlocks: list("0.0.0.0/0", "::/0")}})},
			req:      get,
			want:     noAllowMatch(),
		},
		{
			name:     "allow_not_principals_needs_principal",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{NotRequestPrincipals: list("https://evil.example/*")}})},
			req:      get,
			want:     noAllowMatch(),
		},
		{
			name: "deny_not_principals_denies_without_principal",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("require-idp", "", config.ActionDeny, config.Rule{From: &config.Source{NotRequestPrincipals: list("https://idp.example.com/*")}}),
			},
			req:  get,
			want: deniedBy("default/require-idp", 0),
		},
		{
			name:     "allow_not_identities_needs_identity",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{NotIdentities: list(idAPI)}}, config.Rule{From: &config.Source{NotServices: list("evil/*")}})},
			req:      anonymous,
			want:     noAllowMatch(),
		},
		{
			name: "deny_not_identities_unknown",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("deny-others", "", config.ActionDeny, config.Rule{From: &config.Source{NotIdentities: list(idWeb)}}),
			},
			req:  anonymous,
			want: deniedBy("default/deny-others", 0),
		},
		{
			name:     "condition_error_allow_does_not_match",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, when("request.headers['x-env'] == 'prod'"))},
			req:      get,
			want:     withCondError(noAllowMatch()),
		},
		{
			name: "condition_error_deny_matches",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("deny-dev", "", config.ActionDeny, when("request.headers['x-env'] == 'dev'", "request.method == 'GET'")),
			},
			req:  get,
			want: withCondError(deniedBy("default/deny-dev", 0)),
		},

		// Patterns.
		{
			name:     "service_glob",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: from(list("def*/w*"), nil)})},
			req:      get,
			want:     allowed("default/allow", 0),
		},
		{
			name:     "identity_glob_within_segment",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: from(nil, list("spiffe://bulwark.local/ns/*/sa/web"))})},
			req:      policy.Request{Source: policy.Source{ID: "spiffe://bulwark.local/ns/a/b/sa/web"}, Method: "GET", Path: "/"},
			want:     noAllowMatch(),
		},
		{
			name:     "namespace_glob",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{Namespaces: list("de*t")}})},
			req:      get,
			want:     allowed("default/allow", 0),
		},
		{
			name:     "principal_glob",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{RequestPrincipals: list("https://idp.example.com/*")}})},
			req:      withPrincipal(get, "https://idp.example.com/users/alice"),
			want:     allowed("default/allow", 0),
		},
		{
			name: "ipv4_mapped_matches_ipv4_block",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("deny-internal", "", config.ActionDeny, config.Rule{From: &config.Source{IPBlocks: list("10.0.0.0/8")}}),
			},
			req:  withIP(get, "::ffff:10.1.2.3"),
			want: deniedBy("default/deny-internal", 0),
		},
		{
			name: "host_case_and_trailing_dot",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("deny-admin-host", "", config.ActionDeny, config.Rule{To: &config.Operation{Hosts: list("admin.default")}}),
			},
			req:  withHost(get, "ADMIN.Default."),
			want: deniedBy("default/deny-admin-host", 0),
		},
		{
			name:     "ports",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{To: &config.Operation{Ports: []int{8080}}})},
			req:      withPort(get, 80),
			want:     noAllowMatch(),
		},
		{
			name:     "prefix_not_longer_segment",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{To: to(nil, list("/api/*"))})},
			req:      webCaller("GET", "/apifoo"),
			want:     noAllowMatch(),
		},
		{
			name:     "path_glob_within_segment",
			svc:      web,
			policies: []*config.AuthorizationPolicy{pol("allow", "", config.ActionAllow, config.Rule{To: to(nil, list("/users/*/profile"))})},
			req:      webCaller("GET", "/users/a/b/profile"),
			want:     noAllowMatch(),
		},
		{
			name: "deny_get_denies_head",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("deny-get", "", config.ActionDeny, config.Rule{To: to(list("GET"), list("/export"))}),
			},
			req:  webCaller("HEAD", "/export"),
			want: deniedBy("default/deny-get", 0),
		},
		{
			name: "lower_case_method",
			svc:  web,
			policies: []*config.AuthorizationPolicy{
				pol("allow", "", config.ActionAllow, allowAll),
				pol("deny-get", "", config.ActionDeny, config.Rule{To: to(list("GET"), list("/export"))}),
			},
			req:  webCaller("get", "/export"),
			want: deniedBy("default/deny-get", 0),
		},
	}
}

func TestSemantics(t *testing.T) {
	for _, tt := range semanticsCases() {
		t.Run(tt.name, func(t *testing.T) {
			ix, err := policy.Compile(policy.Workload{Service: tt.svc, Labels: tt.labels}, tt.policies)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			got := ix.Decide(&tt.req)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide(%+v) mismatch (-want +got):\n%s", tt.req, diff)
			}
			// A Set compiles the same Index.
			fromSet, err := policy.NewSet(tt.policies).Compile(policy.Workload{Service: tt.svc, Labels: tt.labels})
			if err != nil {
				t.Fatalf("Set.Compile: %v", err)
			}
			if got := fromSet.Decide(&tt.req); got != tt.want {
				t.Errorf("Set.Compile then Decide: got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestSemanticsDocumented checks that the package documentation names a
// TestSemantics case for each line, and that each case is named there.
func TestSemanticsDocumented(t *testing.T) {
	src, err := os.ReadFile("policy.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, _, _ := strings.Cut(string(src), "\npackage policy")
	var documented []string
	for _, m := range regexp.MustCompile(`\[([a-z0-9_,\s/]+)\]`).FindAllStringSubmatch(doc, -1) {
		for _, name := range strings.Split(m[1], ",") {
			documented = append(documented, strings.Join(strings.Fields(strings.ReplaceAll(name, "/", " ")), ""))
		}
	}
	var tested []string
	for _, c := range semanticsCases() {
		tested = append(tested, c.name)
	}
	slices.Sort(documented)
	slices.Sort(tested)
	if diff := cmp.Diff(documented, tested); diff != "" {
		t.Errorf("semantics documented in brackets vs TestSemantics cases (-documented +tested):\n%s", diff)
	}
}

// TestBypass tries one request per known bypass class against policies
// meant to stop it: each must be denied.
func TestBypass(t *testing.T) {
	allowAll := config.Rule{}
	allowAllPol := pol("allow-all", "", config.ActionAllow, allowAll)
	tests := []struct {
		name     string
		svc      identity.ServiceRef
		labels   map[string]string
		policies []*config.AuthorizationPolicy
		req      policy.Request
	}{
		{
			// Tomcat and Jetty route /admin;x/secret as /admin/secret.
			name: "deny_prefix_with_matrix_params",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-admin", "", config.ActionDeny, config.Rule{To: &config.Operation{Paths: list("/admin/*")}})},
			req: webCaller("GET", "/admin;x/secret"),
		},
		{
			name: "deny_exact_with_matrix_params",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-admin", "", config.ActionDeny, config.Rule{To: &config.Operation{Paths: list("/admin")}})},
			req: webCaller("GET", "/admin;jsessionid=1"),
		},
		{
			name: "deny_with_matrix_params_in_an_empty_segment",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-admin", "", config.ActionDeny, config.Rule{To: &config.Operation{Paths: list("/admin/*")}})},
			req: webCaller("GET", "/;x/admin/users"),
		},
		{
			name: "deny_not_paths_with_matrix_params",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("only-public", "", config.ActionDeny, config.Rule{To: &config.Operation{NotPaths: list("/public/*")}})},
			req: webCaller("GET", "/public;x/file"),
		},
		{
			// An app that does not strip parameters sees the segment
			// "public;x", not "public": both readings must be allowed.
			name: "allow_prefix_with_matrix_params_in_the_prefix",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-public", "", config.ActionAllow, config.Rule{To: &config.Operation{Paths: list("/public/*")}})},
			req: webCaller("GET", "/public;x/file"),
		},
		{
			name: "allow_not_paths_with_matrix_params",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-but-admin", "", config.ActionAllow, config.Rule{To: &config.Operation{NotPaths: list("/admin/*")}})},
			req: webCaller("GET", "/admin;x/secret"),
		},
		{
			name:     "allow_not_principals_without_principal",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-but-evil", "", config.ActionAllow, config.Rule{From: &config.Source{NotRequestPrincipals: list("https://evil.example/*")}})},
			req:      webCaller("GET", "/"),
		},
		{
			name:     "allow_not_identities_without_identity",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-but-api", "", config.ActionAllow, config.Rule{From: &config.Source{NotIdentities: list(idAPI)}})},
			req:      policy.Request{Method: "GET", Path: "/"},
		},
		{
			name:     "allow_not_ip_blocks_without_ip",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-but-outside", "", config.ActionAllow, config.Rule{From: &config.Source{NotIPBlocks: list("0.0.0.0/0")}})},
			req:      webCaller("GET", "/"),
		},
		{
			name: "deny_not_principals_without_principal",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("require-jwt", "", config.ActionDeny, config.Rule{From: &config.Source{NotRequestPrincipals: list("*")}})},
			req: webCaller("GET", "/"),
		},
		{
			name: "ipv4_mapped_ipv6_vs_ipv4_block",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-internal", "", config.ActionDeny, config.Rule{From: &config.Source{IPBlocks: list("10.0.0.0/8")}})},
			req: policy.Request{Source: policy.Source{ID: idWeb, IP: netip.MustParseAddr("::ffff:10.9.9.9")}, Method: "GET", Path: "/"},
		},
		{
			name: "ipv4_vs_ipv4_mapped_block",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-internal", "", config.ActionDeny, config.Rule{From: &config.Source{IPBlocks: list("::ffff:10.0.0.0/104")}})},
			req: policy.Request{Source: policy.Source{ID: idWeb, IP: netip.MustParseAddr("10.9.9.9")}, Method: "GET", Path: "/"},
		},
		{
			name: "host_upper_case_and_trailing_dot",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-admin", "", config.ActionDeny, config.Rule{To: &config.Operation{Hosts: list("admin.example.com", "*.internal")}})},
			req: policy.Request{Source: policy.Source{ID: idWeb}, Method: "GET", Path: "/", Host: "ADMIN.example.COM."},
		},
		{
			name: "host_suffix_upper_case",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-internal", "", config.ActionDeny, config.Rule{To: &config.Operation{Hosts: list("*.internal")}})},
			req: policy.Request{Source: policy.Source{ID: idWeb}, Method: "GET", Path: "/", Host: "DB.Internal"},
		},
		{
			name: "host_ipv6_literal_other_form",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-literal", "", config.ActionDeny, config.Rule{To: &config.Operation{Hosts: list("2001:db8::1")}})},
			req: policy.Request{Source: policy.Source{ID: idWeb}, Method: "GET", Path: "/", Host: "[2001:DB8:0::1]"},
		},
		{
			name:     "path_glob_does_not_cross_slash",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-profiles", "", config.ActionAllow, config.Rule{To: to(nil, list("/users/*/profile", "/img/*.png"))})},
			req:      webCaller("GET", "/users/alice/admin/profile"),
		},
		{
			name:     "path_glob_suffix_does_not_cross_slash",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-images", "", config.ActionAllow, config.Rule{To: to(nil, list("/img/*.png"))})},
			req:      webCaller("GET", "/img/a/x.png"),
		},
		{
			name:     "prefix_vs_prefixfoo",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-api", "", config.ActionAllow, config.Rule{To: to(nil, list("/api/*"))})},
			req:      webCaller("GET", "/apifoo/secret"),
		},
		{
			name: "head_vs_get_deny",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-export", "", config.ActionDeny, config.Rule{To: to(list("GET"), list("/export"))})},
			req: webCaller("HEAD", "/export"),
		},
		{
			name: "lower_case_method_deny",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-delete", "", config.ActionDeny, config.Rule{To: to(list("DELETE", "PURGE"), nil)})},
			req: webCaller("delete", "/x"),
		},
		{
			name: "lower_case_extension_method_deny",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-purge", "", config.ActionDeny, config.Rule{To: to(list("PURGE"), nil)})},
			req: webCaller("Purge", "/x"),
		},
		{
			name:     "lower_case_method_allow_not_methods",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-but-delete", "", config.ActionAllow, config.Rule{To: &config.Operation{NotMethods: list("DELETE")}})},
			req:      webCaller("delete", "/x"),
		},
		{
			name:     "lower_case_method_allow",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-get", "", config.ActionAllow, config.Rule{To: to(list("GET"), nil)})},
			req:      webCaller("get", "/x"),
		},
		{
			name:     "cel_error_allow_fails_closed",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("allow-admins", "", config.ActionAllow, when("jwt.claims.admin == true"))},
			req:      webCaller("GET", "/"),
		},
		{
			name: "cel_error_deny_fails_closed",
			svc:  svcWeb(),
			policies: []*config.AuthorizationPolicy{allowAllPol,
				pol("deny-non-prod", "", config.ActionDeny, when("request.headers['x-env'] != 'prod'"))},
			req: webCaller("GET", "/"),
		},
		{
			name:     "dry_run_allow_is_no_allow_policy",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{dryRun(pol("allow-all", "", config.ActionAllow, allowAll))},
			req:      webCaller("GET", "/"),
		},
		{
			name:     "audit_does_not_allow",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{pol("audit-all", "", config.ActionAudit, allowAll)},
			req:      webCaller("GET", "/"),
		},
		{
			name: "root_namespace_deny_applies_to_every_namespace",
			svc:  identity.ServiceRef{Namespace: "payments", Name: "ledger"},
			policies: []*config.AuthorizationPolicy{polNS("payments", "allow-all", "", config.ActionAllow, allowAll),
				rootPol("deny-foreign", config.ActionDeny, config.Rule{From: &config.Source{NotIdentities: list("spiffe://bulwark.local/ns/*/sa/*")}})},
			req: policy.Request{Source: policy.Source{ID: idForeign}, Method: "GET", Path: "/"},
		},
		{
			name:     "label_selector_missing_label",
			svc:      svcWeb(),
			labels:   map[string]string{"version": "v1"},
			policies: []*config.AuthorizationPolicy{withLabels(pol("allow-v2", "web", config.ActionAllow, allowAll), map[string]string{"version": "v2"})},
			req:      webCaller("GET", "/"),
		},
		{
			name:     "policy_in_other_namespace",
			svc:      svcWeb(),
			policies: []*config.AuthorizationPolicy{polNS("other", "allow-all", "", config.ActionAllow, allowAll)},
			req:      webCaller("GET", "/"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix, err := policy.Compile(policy.Workload{Service: tt.svc, Labels: tt.labels}, tt.policies)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if got := ix.Decide(&tt.req); got.Allow {
				t.Errorf("Decide(%+v): got %v, want a denial", tt.req, got)
			}
		})
	}
}

// TestConditionsAllocateOnce checks that rules without conditions never
// build the condition variables, and that a request reaching several
// conditions builds them once.
func TestConditionsAllocateOnce(t *testing.T) {
	policies := []*config.AuthorizationPolicy{
		pol("a-deny-dev", "", config.ActionDeny, config.Rule{To: to(list("DELETE"), nil), When: list("request.headers['x-env'] == 'dev'")}),
		pol("b-allow", "", config.ActionAllow,
			config.Rule{To: to(list("GET"), nil), When: list("request.headers['x-env'] == 'prod'")},
			config.Rule{To: to(list("GET"), nil), When: list("source.namespace == 'default'")},
		),
	}
	ix := mustCompile(t, svcWeb(), policies)
	post := webCaller("POST", "/")
	if allocs := testing.AllocsPerRun(100, func() { ix.Decide(&post) }); allocs != 0 {
		t.Errorf("Decide of a request reaching no condition: got %v allocations, want 0", allocs)
	}
	get := webCaller("GET", "/")
	get.Headers = http.Header{"X-Env": {"dev"}}
	if d := ix.Decide(&get); !d.Allow || d.Rule != 1 {
		t.Errorf("Decide(GET): got %v, want allow by rule 1", d)
	}
}
