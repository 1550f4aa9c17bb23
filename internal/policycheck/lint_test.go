package policycheck_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

// policies reads YAML documents separated by "---" into policies, strictly,
// with the defaults validation fills in (namespace "default", action
// ALLOW). It does not validate, so these tests do not depend on which
// validation rules exist: Lint's input is already validated.
func policies(t testing.TB, docs string) []*config.AuthorizationPolicy {
	t.Helper()
	var out []*config.AuthorizationPolicy
	for _, doc := range strings.Split(docs, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		p := &config.AuthorizationPolicy{}
		if err := yaml.UnmarshalStrict([]byte(doc), p); err != nil {
			t.Fatalf("test policy: %v\n%s", err, doc)
		}
		p.APIVersion, p.Kind = config.APIVersion, config.KindAuthorizationPolicy
		if p.Metadata.Namespace == "" {
			p.Metadata.Namespace = "default"
		}
		if p.Spec.Action == "" {
			p.Spec.Action = config.ActionAllow
		}
		out = append(out, p)
	}
	return out
}

// documents wraps policies as the documents of one file "p.yaml".
func documents(t testing.TB, docs string) []policycheck.Document {
	t.Helper()
	var out []policycheck.Document
	for i, p := range policies(t, docs) {
		out = append(out, policycheck.Document{File: "p.yaml", Index: i + 1, Policy: p})
	}
	return out
}

// got is the part of a finding the table pins.
type got struct {
	Severity policycheck.Severity
	Check    policycheck.Check
	Policy   string
	Path     string
}

func TestLint(t *testing.T) {
	tests := []struct {
		name string
		docs string
		want []got
		// msg, when set, must appear in the first finding's message.
		msg string
	}{
		{
			name: "clean_policy_has_no_findings",
			docs: `
metadata: {name: web-reads-api}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET], paths: [/v1/*]}
  - from: {services: [default/admin]}
    to: {methods: [GET, POST]}`,
		},
		{
			name: "value_in_methods_and_not_methods_is_unreachable",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET, POST], notMethods: [GET]}`,
			want: []got{{"warning", "unreachable", "default/p", "spec.rules[0].to.methods[0]"}},
			msg:  `"GET" can never match: to.notMethods[0] "GET" excludes it`,
		},
		{
			name: "rule_whose_every_method_is_excluded_never_matches",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET], notMethods: ["*"]}`,
			want: []got{
				{"warning", "never-matches", "default/p", "spec.rules"},
				{"warning", "unreachable", "default/p", "spec.rules[0]"},
				{"warning", "unreachable", "default/p", "spec.rules[0].to.notMethods[0]"},
			},
			msg: "no rule of this policy can match",
		},
		{
			name: "path_below_an_excluded_prefix_is_unreachable",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {paths: [/admin/users, /public/*], notPaths: [/admin/*]}`,
			want: []got{{"warning", "unreachable", "default/p", "spec.rules[0].to.paths[0]"}},
		},
		{
			name: "excluded_cidr_host_and_port_are_unreachable",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web], ipBlocks: [10.1.0.0/16], notIpBlocks: [10.0.0.0/8]}
  - from: {services: [default/web]}
    to: {hosts: [api.internal], notHosts: ["*.internal"]}
  - from: {services: [default/web]}
    to: {ports: [8080], notPorts: [8080]}`,
			want: []got{
				{"warning", "never-matches", "default/p", "spec.rules"},
				{"warning", "unreachable", "default/p", "spec.rules[0]"},
				{"warning", "unreachable", "default/p", "spec.rules[0].from.ipBlocks[0]"},
				{"warning", "unreachable", "default/p", "spec.rules[1]"},
				{"warning", "unreachable", "default/p", "spec.rules[1].to.hosts[0]"},
				{"warning", "unreachable", "default/p", "spec.rules[2]"},
				{"warning", "unreachable", "default/p", "spec.rules[2].to.ports[0]"},
			},
		},
		{
			name: "allow_rule_excluding_every_principal_never_matches",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web], notRequestPrincipals: ["*"]}
  - from: {services: [default/admin]}`,
			want: []got{
				{"warning", "unreachable", "default/p", "spec.rules[0]"},
				{"warning", "unreachable", "default/p", "spec.rules[0].from.notRequestPrincipals[0]"},
			},
			msg: "this rule can never match any request",
		},
		{
			name: "deny_rule_excluding_every_principal_denies_requests_without_a_token",
			docs: `
metadata: {name: require-jwt}
spec:
  action: DENY
  rules:
  - from: {notRequestPrincipals: ["*"]}`,
		},
		{
			name: "identity_outside_the_namespaces_of_the_rule_is_unreachable",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from:
      identities: [spiffe://bulwark.local/ns/shop/sa/web]
      services: [shop/web, prod/web]
      namespaces: [prod]`,
			want: []got{
				{"warning", "never-matches", "default/p", "spec.rules"},
				{"warning", "unreachable", "default/p", "spec.rules[0]"},
				{"warning", "unreachable", "default/p", "spec.rules[0].from.identities[0]"},
				{"warning", "unreachable", "default/p", "spec.rules[0].from.services[0]"},
			},
		},
		{
			name: "deny_that_can_never_match_is_reported",
			docs: `
metadata: {name: block-admin}
spec:
  action: DENY
  rules:
  - to: {paths: [/admin/x], notPaths: ["/admin/*"]}`,
			want: []got{
				{"warning", "never-matches", "default/block-admin", "spec.rules"},
				{"warning", "unreachable", "default/block-admin", "spec.rules[0]"},
				{"warning", "unreachable", "default/block-admin", "spec.rules[0].to.paths[0]"},
			},
			msg: "no rule of this DENY policy can match: it denies nothing",
		},
		{
			name: "allow_rule_overridden_by_a_namespace_wide_deny_is_unreachable",
			docs: `
metadata: {name: web-reads-users}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET], paths: [/v1/users]}
  - from: {services: [default/web]}
    to: {methods: [GET], paths: [/healthz]}
---
metadata: {name: no-v1}
spec:
  action: DENY
  rules:
  - to: {paths: ["/v1/*"]}`,
			want: []got{{"warning", "unreachable", "default/web-reads-users", "spec.rules[0]"}},
			msg:  "this ALLOW rule can never allow a request: DENY default/no-v1 rule 0 matches every request it matches",
		},
		{
			name: "mesh_wide_deny_overrides_allow_in_any_namespace",
			docs: `
metadata: {name: web, namespace: shop}
spec:
  rules:
  - from: {services: [shop/web]}
    to: {methods: [DELETE]}
---
metadata: {name: no-deletes, namespace: bulwark-system}
spec:
  action: DENY
  rules:
  - to: {methods: [DELETE]}`,
			want: []got{{"warning", "unreachable", "shop/web", "spec.rules[0]"}},
		},
		{
			name: "deny_selecting_fewer_workloads_or_with_conditions_does_not_override",
			docs: `
metadata: {name: web-reads-users}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET], paths: [/v1/users]}
---
metadata: {name: deny-v2}
spec:
  action: DENY
  selector: {labels: {version: v2}}
  rules:
  - to: {paths: ["/v1/*"]}
---
metadata: {name: deny-prod}
spec:
  action: DENY
  rules:
  - to: {paths: ["/v1/*"]}
    when: ["request.headers['x-env'] == 'prod'"]
---
metadata: {name: deny-dry, namespace: default}
spec:
  action: DENY
  dryRun: true
  rules:
  - to: {paths: ["/v1/*"]}`,
			want: []got{{"info", "dry-run", "default/deny-dry", "spec.dryRun"}},
		},
		{
			name: "rule_covered_by_an_earlier_rule_is_shadowed",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: ["default/web-*"]}
    to: {methods: [GET], paths: [/v1/*]}
  - from: {services: [default/web-eu]}
    to: {methods: [HEAD], paths: [/v1/users/*]}
  - from: {services: [default/web-eu]}
    to: {methods: [POST], paths: [/v1/users]}`,
			want: []got{{"warning", "shadowed", "default/p", "spec.rules[1]"}},
			msg:  "spec.rules[0] matches every request this rule matches",
		},
		{
			name: "later_rule_does_not_shadow_an_earlier_one",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET], paths: [/v1/users]}
  - from: {services: [default/web]}
    to: {methods: [GET]}`,
		},
		{
			name: "same_rule_in_two_policies_reports_the_later_one",
			docs: `
metadata: {name: b-web}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
---
metadata: {name: a-web}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}`,
			want: []got{{"warning", "shadowed", "default/b-web", "spec.rules[0]"}},
			msg:  "ALLOW default/a-web rule 0 already allows every request this rule allows",
		},
		{
			name: "rule_covered_by_a_namespace_wide_allow_is_shadowed",
			docs: `
metadata: {name: a-api}
spec:
  selector: {service: api}
  rules:
  - from: {identities: [spiffe://bulwark.local/ns/default/sa/web]}
    to: {methods: [GET]}
---
metadata: {name: z-ns}
spec:
  rules:
  - from: {identities: ["spiffe://bulwark.local/ns/default/sa/*"]}
    to: {methods: [GET, POST]}`,
			want: []got{{"warning", "shadowed", "default/a-api", "spec.rules[0]"}},
		},
		{
			name: "allow_with_conditions_is_not_covered_by_a_narrower_condition",
			docs: `
metadata: {name: a}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    when: ["request.headers['x-env'] == 'prod'"]
---
metadata: {name: b}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    when: ["request.headers['x-env'] == 'prod'", "request.method == 'GET'"]`,
			want: []got{{"warning", "shadowed", "default/b", "spec.rules[0]"}},
		},
		{
			name: "allow_without_from_is_too_wide",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - to: {methods: [GET], paths: [/healthz]}`,
			want: []got{{"warning", "too-wide", "default/p", "spec.rules[0]"}},
			msg:  "no from: any caller in the mesh may call this workload with GET on /healthz",
		},
		{
			name: "allow_from_every_service_or_identity_is_too_wide",
			docs: `
metadata: {name: p}
spec:
  rules:
  - from: {services: ["*"]}
    to: {methods: [GET]}
  - from: {identities: ["spiffe://bulwark.local/ns/*/sa/*"]}
    to: {methods: [POST]}`,
			want: []got{
				{"warning", "too-wide", "default/p", "spec.rules[0].from.services[0]"},
				{"warning", "too-wide", "default/p", "spec.rules[1].from.identities[0]"},
			},
			msg: `"*": any caller in the mesh may call every workload of namespace default with GET`,
		},
		{
			name: "allow_from_every_service_of_one_namespace_is_not_too_wide",
			docs: `
metadata: {name: p}
spec:
  rules:
  - from: {services: ["*"], namespaces: [shop]}
  - from: {services: ["*"]}
    when: ["source.namespace == 'shop'"]`,
		},
		{
			name: "allow_in_the_root_namespace_without_labels_selects_the_mesh",
			docs: `
metadata: {name: p, namespace: bulwark-system}
spec:
  rules:
  - from: {services: [monitoring/prometheus]}
    to: {paths: [/metrics]}`,
			want: []got{{"warning", "too-wide", "bulwark-system/p", "spec.selector"}},
			msg:  "selects every workload of the mesh",
		},
		{
			name: "dry_run_policy_gets_a_reminder",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  dryRun: true
  rules:
  - from: {services: [default/web]}`,
			want: []got{{"info", "dry-run", "default/p", "spec.dryRun"}},
		},
		{
			name: "policy_defined_twice_is_an_error",
			docs: `
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
---
metadata: {name: p}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/admin]}`,
			want: []got{{"error", "duplicate", "default/p", "metadata.name"}},
			msg:  "policy default/p is already defined by default/p",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := policycheck.Lint(documents(t, tt.docs))
			var gotFs []got
			for _, f := range fs {
				gotFs = append(gotFs, got{f.Severity, f.Check, f.Policy, f.Path})
				if f.File != "p.yaml" || f.Document == 0 {
					t.Errorf("finding %v: got file %q document %d, want p.yaml and an index", f, f.File, f.Document)
				}
			}
			if diff := cmp.Diff(tt.want, gotFs); diff != "" {
				t.Errorf("findings (-want +got):\n%s\nall:\n%s", diff, dump(fs))
			}
			if tt.msg != "" && len(fs) > 0 && !strings.Contains(fs[0].Message, tt.msg) {
				t.Errorf("first message: got %q, want it to contain %q", fs[0].Message, tt.msg)
			}
		})
	}
}

func dump(fs []policycheck.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestLintDoesNotModifyPolicies(t *testing.T) {
	docs := documents(t, `
metadata: {name: p}
spec:
  rules:
  - to: {methods: [GET], notMethods: [GET]}`)
	before := policies(t, `
metadata: {name: p}
spec:
  rules:
  - to: {methods: [GET], notMethods: [GET]}`)
	policycheck.Lint(docs)
	if diff := cmp.Diff(before[0], docs[0].Policy); diff != "" {
		t.Errorf("policy changed by Lint (-before +after):\n%s", diff)
	}
}

func TestDecodeFindings(t *testing.T) {
	_, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: web
spec:
  rules:
  - to:
      methodz: [GET]
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ok}
spec:
  rules:
  - to: {methods: [GET]}
---
: not yaml [
`))
	if err == nil {
		t.Fatal("Decode: got no error, want one")
	}
	fs := policycheck.DecodeFindings("bad.yaml", err)
	if len(fs) != 2 {
		t.Fatalf("got %d findings, want 2:\n%s", len(fs), dump(fs))
	}
	want := policycheck.Finding{Severity: "error", Check: "invalid", File: "bad.yaml", Document: 1,
		Policy: "default/web", Path: "spec.rules[0].to.methodz", Message: "unknown field"}
	if diff := cmp.Diff(want, fs[0]); diff != "" {
		t.Errorf("first finding (-want +got):\n%s", diff)
	}
	if fs[1].Document != 3 || fs[1].Path != "" || fs[1].Message == "" {
		t.Errorf("second finding: got %+v, want document 3 without a path and with a message", fs[1])
	}
	if got := policycheck.DecodeFindings("x.yaml", nil); got != nil {
		t.Errorf("nil error: got %v, want no findings", got)
	}
}

func TestSortFindingsOrdersRuleIndexesNumerically(t *testing.T) {
	fs := []policycheck.Finding{
		{File: "a", Document: 1, Path: "spec.rules[10]", Message: "x"},
		{File: "a", Document: 1, Path: "spec.rules[2].to.methods[0]", Message: "x"},
		{File: "a", Document: 1, Path: "spec.rules[2]", Message: "x"},
	}
	policycheck.SortFindings(fs)
	var paths []string
	for _, f := range fs {
		paths = append(paths, f.Path)
	}
	want := []string{"spec.rules[2]", "spec.rules[2].to.methods[0]", "spec.rules[10]"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}
