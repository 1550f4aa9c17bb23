package policy_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

func TestForCaller(t *testing.T) {
	webSrc := policy.Source{ID: idWeb, Services: list("default/web")}
	tests := []struct {
		name         string
		dest         identity.ServiceRef
		policies     []*config.AuthorizationPolicy
		caller       policy.Source
		wantCallable bool
		wantView     []*config.AuthorizationPolicy
	}{
		{
			name:   "no_policies_not_callable",
			dest:   svcAPI(),
			caller: webSrc,
		},
		{
			name: "keeps_matching_rules_without_from",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "api", config.ActionAllow,
					config.Rule{From: from(list("default/web"), nil), To: to(list("GET"), list("/a"))},
					config.Rule{From: from(list("default/db"), nil), To: to(list("POST"), nil)},
					config.Rule{To: to(nil, list("/health"))},
				),
			},
			caller:       webSrc,
			wantCallable: true,
			wantView: []*config.AuthorizationPolicy{
				pol("allow", "api", config.ActionAllow,
					config.Rule{To: to(list("GET"), list("/a"))},
					config.Rule{To: to(nil, list("/health"))},
				),
			},
		},
		{
			name: "drops_policies_left_without_rules",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-db", "api", config.ActionAllow, config.Rule{From: from(nil, list(idOtherWeb))}),
				pol("allow-web", "api", config.ActionAllow, config.Rule{From: from(nil, list(idWeb))}),
			},
			caller:       webSrc,
			wantCallable: true,
			wantView: []*config.AuthorizationPolicy{
				pol("allow-web", "api", config.ActionAllow, config.Rule{}),
			},
		},
		{
			name: "only_deny_left_not_callable",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-db", "api", config.ActionAllow, config.Rule{From: from(list("default/db"), nil)}),
				pol("deny-web", "api", config.ActionDeny, config.Rule{From: from(list("default/web"), nil), To: to(nil, list("/admin/*"))}),
			},
			caller: webSrc,
			wantView: []*config.AuthorizationPolicy{
				pol("deny-web", "api", config.ActionDeny, config.Rule{To: to(nil, list("/admin/*"))}),
			},
		},
		{
			name: "ignores_policies_not_selecting_dest",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-web-svc", "web", config.ActionAllow, config.Rule{}),
				polNS("other", "allow-other-ns", "", config.ActionAllow, config.Rule{}),
			},
			caller: webSrc,
		},
		{
			name: "namespace_wide_policy_applies",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-ns", "", config.ActionAllow, config.Rule{From: from(list("default/*"), nil)}),
			},
			caller:       webSrc,
			wantCallable: true,
			wantView: []*config.AuthorizationPolicy{
				pol("allow-ns", "", config.ActionAllow, config.Rule{}),
			},
		},
		{
			name: "unknown_caller_keeps_only_rules_without_from",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "api", config.ActionAllow,
					config.Rule{From: from(list("*"), list("*"))},
					config.Rule{To: to(list("GET"), nil)},
				),
			},
			caller:       policy.Source{},
			wantCallable: true,
			wantView: []*config.AuthorizationPolicy{
				pol("allow", "api", config.ActionAllow, config.Rule{To: to(list("GET"), nil)}),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			callable, view := policy.ForCaller(tt.dest, tt.policies, tt.caller)
			if callable != tt.wantCallable {
				t.Errorf("callable: got %v, want %v", callable, tt.wantCallable)
			}
			if diff := cmp.Diff(tt.wantView, view); diff != "" {
				t.Errorf("view mismatch (-want +got):\n%s", diff)
			}
			// The view travels to the caller's sidecar as documents that
			// are validated again.
			for _, p := range view {
				if errs := p.Validate(); errs != nil {
					t.Errorf("view policy %s: Validate: got %v, want no errors", config.Ref(p), errs)
				}
			}
		})
	}
}

// TestForCallerSharesNoMemory changes every part of a view and checks that
// the input policies did not change.
func TestForCallerSharesNoMemory(t *testing.T) {
	in := []*config.AuthorizationPolicy{
		pol("allow", "api", config.ActionAllow,
			config.Rule{From: from(list("default/web"), nil), To: to(list("GET", "POST"), list("/a", "/b/*"))},
		),
	}
	in[0].Metadata.Labels = map[string]string{"team": "core"}
	before := clonePolicies(t, in)
	_, view := policy.ForCaller(svcAPI(), in, policy.Source{ID: idWeb, Services: list("default/web")})
	if len(view) != 1 {
		t.Fatalf("view policies: got %d, want 1", len(view))
	}
	v := view[0]
	v.Metadata.Name = "changed"
	v.Metadata.Labels["team"] = "changed"
	v.Spec.Action = config.ActionDeny
	v.Spec.Rules[0].To.Methods[0] = "DELETE"
	v.Spec.Rules[0].To.Paths[1] = "/changed"
	v.Spec.Rules = append(v.Spec.Rules, config.Rule{})
	if diff := cmp.Diff(before, in); diff != "" {
		t.Errorf("changing the view changed the input (-before +after):\n%s", diff)
	}
}
