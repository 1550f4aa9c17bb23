package policycheck_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		policy  *config.AuthorizationPolicy
		selects string
		rules   []string
	}{
		{"service, services and paths", pol("shop", config.PolicySelector{Service: "web"}, config.ActionAllow, false,
			config.Rule{From: &config.Source{Services: []string{"shop/visitor"}}, To: &config.Operation{Methods: []string{"GET", "POST"}, Paths: []string{"/", "/order"}}}),
			"the workloads of service shop/web",
			[]string{"allow callers with services shop/visitor to methods GET or POST, paths / or /order"}},
		{"namespace-wide deny with exceptions", pol("shop", config.PolicySelector{}, config.ActionDeny, false,
			config.Rule{To: &config.Operation{Paths: []string{"/admin/*"}, NotMethods: []string{"GET"}}}),
			"every workload in namespace shop",
			[]string{"deny any caller to methods any except GET, paths /admin/*"}},
		{"mesh-wide with labels, identities, when", pol(config.RootNamespace, config.PolicySelector{Labels: map[string]string{"tier": "db", "env": "prod"}}, config.ActionAllow, true,
			config.Rule{From: &config.Source{Identities: []string{"spiffe://td/ns/a/sa/b"}, NotNamespaces: []string{"dev"}}, To: &config.Operation{Ports: []int{5432}}, When: []string{"request.headers['x'] == 'y'"}}),
			"every workload of the mesh labelled env=prod, tier=db",
			[]string{"allow callers with identities spiffe://td/ns/a/sa/b and callers in namespaces any except dev to ports 5432 when request.headers['x'] == 'y' (dry run: logged, not enforced)"}},
		{"no rules", pol("shop", config.PolicySelector{Service: "db"}, config.ActionAllow, false),
			"the workloads of service shop/db", []string{"no rules: allows nothing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			selects, rules := policycheck.Describe(tc.policy)
			if selects != tc.selects {
				t.Errorf("selects: got %q, want %q", selects, tc.selects)
			}
			if diff := cmp.Diff(tc.rules, rules); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
		})
	}
}

func pol(ns string, sel config.PolicySelector, action config.Action, dry bool, rules ...config.Rule) *config.AuthorizationPolicy {
	name := "p"
	if dry {
		name = "dry"
	}
	return &config.AuthorizationPolicy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAuthorizationPolicy},
		Metadata: config.ObjectMeta{Name: name, Namespace: ns},
		Spec:     config.AuthorizationPolicySpec{Selector: sel, Action: action, DryRun: dry, Rules: rules},
	}
}

func summaryEdge(src, dst, method, path string, n int64) *config.Edge {
	return &config.Edge{Status: config.EdgeStatus{Source: "spiffe://td/ns/shop/sa/" + src, SourceService: "shop/" + src,
		Destination: dst, Method: method, Path: path, Requests: n}}
}

// TestSummarize attributes each observed edge to the policy that decided
// it, and lists what a dry-run policy would deny.
func TestSummarize(t *testing.T) {
	allow := pol("shop", config.PolicySelector{Service: "api"}, config.ActionAllow, false,
		config.Rule{From: &config.Source{Services: []string{"shop/web"}}, To: &config.Operation{Paths: []string{"/items/*"}}})
	allow.Metadata.Name = "web-to-api"
	deny := pol("shop", config.PolicySelector{Service: "api"}, config.ActionDeny, false,
		config.Rule{To: &config.Operation{Paths: []string{"/items/secret"}}})
	deny.Metadata.Name = "no-secret"
	dry := pol("shop", config.PolicySelector{Service: "api"}, config.ActionDeny, true,
		config.Rule{To: &config.Operation{Methods: []string{"DELETE"}}})
	dry.Metadata.Name = "dry-no-delete"
	edges := []*config.Edge{
		summaryEdge("web", "shop/api", "GET", "/items/*", 10),
		summaryEdge("web", "shop/api", "DELETE", "/items/*", 3),
		summaryEdge("web", "shop/api", "GET", "/items/secret", 1),
		summaryEdge("rogue", "shop/api", "GET", "/items/*", 4),
		summaryEdge("web", "example.com:443", "CONNECT", "", 2),
	}
	got := policycheck.Summarize([]*config.AuthorizationPolicy{allow, deny, dry}, edges)
	byName := map[string]policycheck.PolicySummary{}
	for _, s := range got {
		byName[s.Policy] = s
	}
	paths := func(es []policycheck.ObservedEdge) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.SourceService+" "+e.Method+" "+e.Path)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		got  []string
		want []string
	}{
		{"web-to-api allows", paths(byName["shop/web-to-api"].AllowsObserved), []string{"shop/web DELETE /items/*", "shop/web GET /items/*"}},
		{"no-secret denies", paths(byName["shop/no-secret"].DeniesObserved), []string{"shop/web GET /items/secret"}},
		{"dry-no-delete would deny", paths(byName["shop/dry-no-delete"].WouldDeny), []string{"shop/web DELETE /items/*"}},
		{"dry-no-delete allows", paths(byName["shop/dry-no-delete"].AllowsObserved), nil},
	} {
		if diff := cmp.Diff(tc.want, tc.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	if s := byName["shop/dry-no-delete"]; !s.DryRun || s.Action != "DENY" {
		t.Errorf("dry-no-delete: got action %s dryRun %v", s.Action, s.DryRun)
	}
}
