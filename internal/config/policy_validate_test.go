package config_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// validPolicy returns a policy that uses every field validly; each case
// below carries one defect.
func validPolicy() *config.AuthorizationPolicy {
	return &config.AuthorizationPolicy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAuthorizationPolicy},
		Metadata: config.ObjectMeta{Namespace: "default", Name: "web-to-api"},
		Spec: config.AuthorizationPolicySpec{
			Selector: config.PolicySelector{Service: "api"},
			Action:   config.ActionAllow,
			Rules: []config.Rule{
				{
					From: &config.Source{
						Services:   []string{"default/web", "*", "front*/*", "*/web-*"},
						Identities: []string{"spiffe://bulwark.local/ns/default/sa/web", "*", "spiffe://bulwark.local/ns/*/sa/web", "spiffe://*/ns/default/sa/a*b"},
					},
					To: &config.Operation{
						Methods: []string{"GET", "*", "PURGE", "M-SEARCH"},
						Paths:   []string{"/hello", "*", "/public/*", "/*", "/caf%C3%A9", "/a;b=c/", "/"},
					},
				},
				{},
				{From: &config.Source{Identities: []string{"*"}}},
				{To: &config.Operation{Paths: []string{"/x"}}},
			},
		},
	}
}

func TestAuthorizationPolicyValidate(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(p *config.AuthorizationPolicy)
		wantPath string // "" for a valid policy
		wantMsg  string // a part of the message
	}{
		{name: "valid", mutate: func(*config.AuthorizationPolicy) {}},
		{name: "valid_deny", mutate: func(p *config.AuthorizationPolicy) { p.Spec.Action = config.ActionDeny }},
		{name: "valid_namespace_wide", mutate: func(p *config.AuthorizationPolicy) { p.Spec.Selector.Service = "" }},

		{
			name:     "metadata_name_missing",
			mutate:   func(p *config.AuthorizationPolicy) { p.Metadata.Name = "" },
			wantPath: "metadata.name", wantMsg: "required",
		},
		{
			name:     "metadata_namespace_invalid",
			mutate:   func(p *config.AuthorizationPolicy) { p.Metadata.Namespace = "Default" },
			wantPath: "metadata.namespace", wantMsg: "lowercase",
		},
		{
			name:     "action_lower_case",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Action = "allow" },
			wantPath: "spec.action", wantMsg: `unsupported value "allow": must be one of ALLOW, DENY`,
		},
		{
			name:     "action_audit_not_supported",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Action = "AUDIT" },
			wantPath: "spec.action", wantMsg: "must be one of ALLOW, DENY",
		},
		{
			name:     "selector_service_invalid",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Selector.Service = "Api" },
			wantPath: "spec.selector.service", wantMsg: "lowercase",
		},
		{
			name:     "selector_service_glob",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Selector.Service = "api-*" },
			wantPath: "spec.selector.service", wantMsg: "lowercase",
		},
		{
			name:     "rules_missing",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules = nil },
			wantPath: "spec.rules", wantMsg: "at least one rule is required",
		},
		{
			name:     "from_empty",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[1].From = &config.Source{} },
			wantPath: "spec.rules[1].from", wantMsg: "omit from to match every caller",
		},
		{
			name:     "to_empty",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[3].To = &config.Operation{} },
			wantPath: "spec.rules[3].to", wantMsg: "omit to to match every operation",
		},

		// from.services
		{
			name:     "service_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Services[1] = "" },
			wantPath: "spec.rules[0].from.services[1]", wantMsg: "must not be empty",
		},
		{
			name:     "service_without_namespace",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Services[1] = "web" },
			wantPath: "spec.rules[0].from.services[1]", wantMsg: `must be "*" or "namespace/name"`,
		},
		{
			name:     "service_three_parts",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Services[1] = "a/b/c" },
			wantPath: "spec.rules[0].from.services[1]", wantMsg: `must be "*" or "namespace/name"`,
		},
		{
			name:     "service_empty_namespace",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Services[1] = "/web" },
			wantPath: "spec.rules[0].from.services[1]", wantMsg: "namespace must not be empty",
		},
		{
			name:     "service_empty_name",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Services[1] = "default/" },
			wantPath: "spec.rules[0].from.services[1]", wantMsg: "name must not be empty",
		},
		{
			name:     "service_upper_case",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Services[1] = "default/Web" },
			wantPath: "spec.rules[0].from.services[1]", wantMsg: "lowercase letters, digits, '-' and '*'",
		},
		{
			name:     "service_question_mark",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Services[1] = "default/we?" },
			wantPath: "spec.rules[0].from.services[1]", wantMsg: "lowercase letters, digits, '-' and '*'",
		},

		// from.identities
		{
			name:     "identity_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Identities[1] = "" },
			wantPath: "spec.rules[0].from.identities[1]", wantMsg: "must not be empty",
		},
		{
			name:     "identity_not_spiffe",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Identities[1] = "default/web" },
			wantPath: "spec.rules[0].from.identities[1]", wantMsg: `must be "*" or a SPIFFE ID`,
		},
		{
			name: "identity_trailing_slash",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[0].From.Identities[1] = "spiffe://bulwark.local/ns/default/sa/web/"
			},
			wantPath: "spec.rules[0].from.identities[1]", wantMsg: "SPIFFE ID",
		},
		{
			name: "identity_dot_segment",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[0].From.Identities[1] = "spiffe://bulwark.local/ns/*/../sa/web"
			},
			wantPath: "spec.rules[0].from.identities[1]", wantMsg: "SPIFFE ID",
		},
		{
			name: "identity_glob_in_scheme",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[0].From.Identities[1] = "spiff*://bulwark.local/ns/default/sa/web"
			},
			wantPath: "spec.rules[0].from.identities[1]", wantMsg: "SPIFFE ID",
		},
		{
			name: "identity_upper_case",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[2].From.Identities[0] = "spiffe://Bulwark.local/ns/default/sa/web"
			},
			wantPath: "spec.rules[2].from.identities[0]", wantMsg: "SPIFFE ID",
		},

		// to.methods
		{
			name:     "method_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Methods[1] = "" },
			wantPath: "spec.rules[0].to.methods[1]", wantMsg: "must not be empty",
		},
		{
			name:     "method_lower_case",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Methods[1] = "get" },
			wantPath: "spec.rules[0].to.methods[1]", wantMsg: `must be upper case (methods are case-sensitive): use "GET"`,
		},
		{
			name:     "method_not_token",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Methods[1] = "GET POST" },
			wantPath: "spec.rules[0].to.methods[1]", wantMsg: "not an HTTP method token",
		},
		{
			name:     "method_glob",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Methods[1] = "P*" },
			wantPath: "spec.rules[0].to.methods[1]", wantMsg: "'*' is not a glob in methods",
		},

		// to.paths
		{
			name:     "path_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: "must not be empty",
		},
		{
			name:     "path_relative",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "admin" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: "must be \"*\" or a path starting with '/'",
		},
		{
			name:     "path_not_normalized_dotdot",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/public/../admin" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `is not normalized (requests are matched after normalization): use "/admin"`,
		},
		{
			name:     "path_not_normalized_double_slash",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "//admin" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `use "/admin"`,
		},
		{
			name:     "path_not_normalized_escape",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/%61dmin" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `use "/admin"`,
		},
		{
			name:     "path_not_normalized_lower_hex",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/caf%c3%a9" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `use "/caf%C3%A9"`,
		},
		{
			name:     "path_not_normalized_prefix",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/a/./b/*" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `use "/a/b/*"`,
		},
		{
			name:     "path_rejected_encoded_slash",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/a%2Fb" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: "can never match a request",
		},
		{
			name:     "path_rejected_raw_non_ascii",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/café" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: "can never match a request",
		},
		{
			name:     "path_glob_not_final",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/a/*/b" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `'*' is only allowed as a final "/*"`,
		},
		{
			name:     "path_glob_without_slash",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/public*" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `'*' is only allowed as a final "/*"`,
		},
		{
			name:     "path_glob_twice",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/*/*" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `'*' is only allowed as a final "/*"`,
		},
		{
			name:     "path_in_later_rule",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[3].To.Paths[0] = "/x/" + "." },
			wantPath: "spec.rules[3].to.paths[0]", wantMsg: `use "/x/"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validPolicy()
			tt.mutate(p)
			errs := p.Validate()
			var gotPaths []string
			for _, e := range errs {
				gotPaths = append(gotPaths, e.Path)
			}
			var wantPaths []string
			if tt.wantPath != "" {
				wantPaths = []string{tt.wantPath}
			}
			if diff := cmp.Diff(wantPaths, gotPaths); diff != "" {
				t.Fatalf("error paths mismatch (-want +got):\n%s\nerrors: %v", diff, errs)
			}
			if tt.wantPath != "" && !strings.Contains(errs[0].Msg, tt.wantMsg) {
				t.Errorf("message: got %q, want it to contain %q", errs[0].Msg, tt.wantMsg)
			}
		})
	}
}

func TestAuthorizationPolicyValidateDefaults(t *testing.T) {
	p := validPolicy()
	p.Metadata.Namespace = ""
	p.Spec.Action = ""
	if errs := p.Validate(); errs != nil {
		t.Fatalf("Validate: got %v, want no errors", errs)
	}
	if got, want := p.Spec.Action, config.ActionAllow; got != want {
		t.Errorf("spec.action: got %q, want %q", got, want)
	}
	if got, want := p.Metadata.Namespace, "default"; got != want {
		t.Errorf("metadata.namespace: got %q, want %q", got, want)
	}
}

func TestAuthorizationPolicyValidateReportsEveryError(t *testing.T) {
	p := validPolicy()
	p.Spec.Action = "PERMIT"
	p.Spec.Rules[0].From.Services[0] = "web"
	p.Spec.Rules[0].To.Methods[2] = "get"
	p.Spec.Rules[0].To.Paths[0] = "/a/../b"
	var got []string
	for _, e := range p.Validate() {
		got = append(got, e.Path)
	}
	want := []string{
		"spec.action",
		"spec.rules[0].from.services[0]",
		"spec.rules[0].to.methods[2]",
		"spec.rules[0].to.paths[0]",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error paths mismatch (-want +got):\n%s", diff)
	}
}
