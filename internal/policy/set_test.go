package policy_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

func TestSetSelecting(t *testing.T) {
	policies := []*config.AuthorizationPolicy{
		pol("web-only", "web", config.ActionAllow, config.Rule{}),
		pol("ns-wide", "", config.ActionAllow, config.Rule{}),
		withLabels(pol("web-v2", "web", config.ActionAllow, config.Rule{}), map[string]string{"version": "v2"}),
		withLabels(pol("ns-canary", "", config.ActionAllow, config.Rule{}), map[string]string{"track": "canary"}),
		polNS("other", "other-ns", "", config.ActionAllow, config.Rule{}),
		rootPol("mesh-wide", config.ActionDeny, config.Rule{}),
		withLabels(rootPol("mesh-v2", config.ActionDeny, config.Rule{}), map[string]string{"version": "v2"}),
		polNS(config.RootNamespace, "root-with-service", "web", config.ActionAllow, config.Rule{}),
		nil,
	}
	set := policy.NewSet(policies)
	refs := func(ps []*config.AuthorizationPolicy) []string {
		var out []string
		for _, p := range ps {
			out = append(out, config.Ref(p))
		}
		return out
	}
	root := config.RootNamespace + "/"
	tests := []struct {
		name string
		w    policy.Workload
		want []string
	}{
		{name: "web_without_labels", w: policy.Workload{Service: svcWeb()}, want: []string{root + "mesh-wide", "default/ns-wide", "default/web-only"}},
		{
			name: "web_v2_canary",
			w:    policy.Workload{Service: svcWeb(), Labels: map[string]string{"version": "v2", "track": "canary"}},
			want: []string{root + "mesh-v2", root + "mesh-wide", "default/ns-canary", "default/ns-wide", "default/web-only", "default/web-v2"},
		},
		{name: "api", w: policy.Workload{Service: svcAPI()}, want: []string{root + "mesh-wide", "default/ns-wide"}},
		{name: "other_namespace", w: policy.Workload{Service: identity.ServiceRef{Namespace: "other", Name: "x"}}, want: []string{root + "mesh-wide", "other/other-ns"}},
		{name: "root_namespace_workload", w: policy.Workload{Service: identity.ServiceRef{Namespace: config.RootNamespace, Name: "web"}}, want: []string{root + "mesh-wide"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, refs(set.Selecting(tt.w))); diff != "" {
				t.Errorf("Selecting mismatch (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("nil_set", func(t *testing.T) {
		var s *policy.Set
		if got := s.Selecting(policy.Workload{Service: svcWeb()}); got != nil {
			t.Errorf("nil Set Selecting: got %v, want nil", refs(got))
		}
		ix, err := s.Compile(policy.Workload{Service: svcWeb()})
		if err != nil {
			t.Fatalf("nil Set Compile: %v", err)
		}
		if d := ix.Decide(&policy.Request{Method: "GET", Path: "/"}); d != noAllowPolicy() {
			t.Errorf("nil Set Compile then Decide: got %v, want %v", d, noAllowPolicy())
		}
	})
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name    string
		rule    config.Rule
		wantErr string
	}{
		{
			name:    "cel_syntax",
			rule:    config.Rule{When: list("request.method == 'GET'", "request.method ==")},
			wantErr: "policy default/bad: spec.rules[1].when[1]: ",
		},
		{
			name:    "cel_undeclared",
			rule:    config.Rule{When: list("request.methd == 'GET'")},
			wantErr: "policy default/bad: spec.rules[1].when[0]: ",
		},
		{
			name:    "ip_block",
			rule:    config.Rule{From: &config.Source{IPBlocks: list("10.0.0.0/8", "10.0.0.0/33")}},
			wantErr: "policy default/bad: spec.rules[1].from.ipBlocks[1]: ",
		},
		{
			name:    "not_ip_block",
			rule:    config.Rule{From: &config.Source{NotIPBlocks: list("not-an-ip")}},
			wantErr: "policy default/bad: spec.rules[1].from.notIpBlocks[0]: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policies := []*config.AuthorizationPolicy{
				pol("good", "web", config.ActionAllow, config.Rule{}),
				pol("bad", "api", config.ActionAllow, config.Rule{}, tt.rule),
			}
			_, err := policy.Compile(policy.Workload{Service: svcAPI()}, policies)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("Compile: got error %v, want one starting with %q", err, tt.wantErr)
			}
			if _, err := policy.Compile(policy.Workload{Service: svcWeb()}, policies); err != nil {
				t.Errorf("Compile for a workload the bad policy does not select: got %v, want no error", err)
			}
			set := policy.NewSet(policies)
			if _, err := set.Compile(policy.Workload{Service: svcAPI()}); err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("Set.Compile: got error %v, want one starting with %q", err, tt.wantErr)
			}
			if _, err := set.Compile(policy.Workload{Service: svcWeb()}); err != nil {
				t.Errorf("Set.Compile for a workload the bad policy does not select: got %v, want no error", err)
			}
			// The caller's view keeps the ALLOW policy's rules, stripped of
			// what does not compile.
			callable, view := set.ForCaller(svcAPI(), policy.Source{ID: idWeb, Services: list("default/web")})
			if !callable || len(view) != 1 || len(view[0].Spec.Rules) != 2 {
				t.Errorf("ForCaller: got callable %v, view %s; want callable with both rules of default/bad", callable, dump(view))
			}
		})
	}
}

func TestMatchesServicePatternNotServices(t *testing.T) {
	ix := mustCompile(t, svcWeb(), []*config.AuthorizationPolicy{
		pol("allow", "", config.ActionAllow, config.Rule{From: &config.Source{NotServices: list("evil/*")}}),
	})
	for _, svc := range []string{"evil/x", "default/api", "any/thing"} {
		if !ix.MatchesServicePattern(svc) {
			t.Errorf("MatchesServicePattern(%q) with a notServices list: got false, want true (every caller's services decide)", svc)
		}
	}
	if ix.MatchesServicePattern("") {
		t.Errorf("MatchesServicePattern(\"\"): got true, want false")
	}
}
