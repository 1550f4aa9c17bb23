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
			Selector: config.PolicySelector{Service: "api", Labels: map[string]string{"version": "v2", "bulwark.dev/tier": "gold", "empty": ""}},
			Action:   config.ActionAllow,
			Rules: []config.Rule{
				{
					From: &config.Source{
						Services:             []string{"default/web", "*", "front*/*", "*/web-*"},
						NotServices:          []string{"default/web-canary", "test-*/*"},
						Identities:           []string{"spiffe://bulwark.local/ns/default/sa/web", "*", "spiffe://bulwark.local/ns/*/sa/web", "spiffe://*/ns/default/sa/a*b"},
						NotIdentities:        []string{"spiffe://bulwark.local/ns/default/sa/batch"},
						Namespaces:           []string{"default", "*", "team-*", "prod-*-eu"},
						NotNamespaces:        []string{"kube-*"},
						RequestPrincipals:    []string{"*", "https://idp.example.com/alice", "https://idp.example.com/*", "*/alice", "issuer/sub/with/slashes"},
						NotRequestPrincipals: []string{"https://idp.example.com/robot-*"},
						IPBlocks:             []string{"10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1", "0.0.0.0/0", "10.1.2.3/32"},
						NotIPBlocks:          []string{"10.9.0.0/16"},
					},
					To: &config.Operation{
						Methods:    []string{"GET", "*", "PURGE", "M-SEARCH"},
						NotMethods: []string{"DELETE"},
						Hosts:      []string{"api.default", "*", "*.example.com", "api.*", "10.0.0.1", "2001:db8::1", "under_score.local", "localhost"},
						NotHosts:   []string{"admin.example.com"},
						Ports:      []int{80, 8080, 1, 65535},
						NotPorts:   []int{9090},
						Paths:      []string{"/hello", "*", "/public/*", "/*", "/caf%C3%A9", "/a;b=c/", "/", "/users/*/profile", "/img/*.png", "/a/*/b", "/public*", "/*/*", "/v*/x*y"},
						NotPaths:   []string{"/admin/*"},
					},
					When: []string{
						`request.headers['x-tenant'] == 'acme'`,
						`'admin' in jwt.claims.groups && time.now.getHours('Europe/Paris') < 18`,
					},
				},
				{},
				{From: &config.Source{Identities: []string{"*"}}},
				{To: &config.Operation{Paths: []string{"/x"}}},
				{From: &config.Source{NotRequestPrincipals: []string{"*"}}, To: &config.Operation{NotPorts: []int{22}}},
				{When: []string{"request.method == 'GET'"}},
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
		{name: "valid_audit", mutate: func(p *config.AuthorizationPolicy) { p.Spec.Action = config.ActionAudit }},
		{name: "valid_audit_dry_run", mutate: func(p *config.AuthorizationPolicy) { p.Spec.Action = config.ActionAudit; p.Spec.DryRun = true }},
		{name: "valid_deny_dry_run", mutate: func(p *config.AuthorizationPolicy) { p.Spec.Action = config.ActionDeny; p.Spec.DryRun = true }},
		{
			name: "valid_mesh_wide_by_labels",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Metadata.Namespace = config.RootNamespace
				p.Spec.Selector.Service = ""
			},
		},
		{
			name: "valid_mesh_wide_everything",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Metadata.Namespace = config.RootNamespace
				p.Spec.Selector = config.PolicySelector{}
			},
		},

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
			name:     "action_audit_lower_case",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Action = "audit" },
			wantPath: "spec.action", wantMsg: `unsupported value "audit": must be one of ALLOW, DENY, AUDIT`,
		},
		{
			name:     "action_log",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Action = "LOG" },
			wantPath: "spec.action", wantMsg: "must be one of ALLOW, DENY, AUDIT",
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
			name:     "selector_service_in_root_namespace",
			mutate:   func(p *config.AuthorizationPolicy) { p.Metadata.Namespace = config.RootNamespace },
			wantPath: "spec.selector.service", wantMsg: "not allowed in the root namespace bulwark-system: a mesh-wide resource applies to every namespace",
		},
		{
			name:     "selector_label_key_invalid",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Selector.Labels["bad key"] = "x" },
			wantPath: "spec.selector.labels", wantMsg: `label key "bad key"`,
		},
		{
			name:     "selector_label_key_too_long",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Selector.Labels[strings.Repeat("k", 64)] = "x" },
			wantPath: "spec.selector.labels", wantMsg: "label key",
		},
		{
			name:     "selector_label_key_empty",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Selector.Labels[""] = "x" },
			wantPath: "spec.selector.labels", wantMsg: `label key ""`,
		},
		{
			name:     "selector_label_prefix_invalid",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Selector.Labels["Example.com/tier"] = "x" },
			wantPath: "spec.selector.labels", wantMsg: "prefix must be a DNS subdomain",
		},
		{
			name:     "selector_label_value_invalid",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Selector.Labels["version"] = "v2 beta" },
			wantPath: "spec.selector.labels", wantMsg: `value "v2 beta"`,
		},
		{
			name:     "selector_label_value_too_long",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Selector.Labels["version"] = strings.Repeat("v", 64) },
			wantPath: "spec.selector.labels", wantMsg: "value",
		},
		{
			name:     "rules_missing",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules = nil },
			wantPath: "spec.rules", wantMsg: "at least one rule is required",
		},
		{
			name:     "from_empty",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[1].From = &config.Source{} },
			wantPath: "spec.rules[1].from", wantMsg: "(or their notX) is required; omit from to match every caller",
		},
		{
			name:     "to_empty",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[3].To = &config.Operation{} },
			wantPath: "spec.rules[3].to", wantMsg: "(or their notX) is required; omit to to match every operation",
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
			name:     "path_double_star",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/a/**" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `"**" is not supported`,
		},
		{
			name:     "path_double_star_in_segment",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/a/x**.png" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `"**" is not supported`,
		},
		{
			name:     "path_glob_not_normalized",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/a/*/../b" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `is not normalized (requests are matched after normalization): use "/a/b"`,
		},
		{
			name:     "path_glob_double_slash",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/users//*" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `use "/users/*"`,
		},
		{
			name:     "path_glob_escape",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "/%61pi/*.png" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: `use "/api/*.png"`,
		},
		{
			name:     "path_glob_relative",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Paths[1] = "*.png" },
			wantPath: "spec.rules[0].to.paths[1]", wantMsg: "must be \"*\" or a path starting with '/'",
		},
		{
			name:     "not_path_not_normalized",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.NotPaths[0] = "/admin/./*" },
			wantPath: "spec.rules[0].to.notPaths[0]", wantMsg: `use "/admin/*"`,
		},
		{
			name:     "not_path_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.NotPaths[0] = "" },
			wantPath: "spec.rules[0].to.notPaths[0]", wantMsg: "must not be empty",
		},
		// notX lists are checked like their lists
		{
			name:     "not_service_without_namespace",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.NotServices[0] = "web" },
			wantPath: "spec.rules[0].from.notServices[0]", wantMsg: `must be "*" or "namespace/name"`,
		},
		{
			name:     "not_identity_not_spiffe",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.NotIdentities[0] = "default/batch" },
			wantPath: "spec.rules[0].from.notIdentities[0]", wantMsg: "SPIFFE ID",
		},
		{
			name:     "not_method_lower_case",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.NotMethods[0] = "delete" },
			wantPath: "spec.rules[0].to.notMethods[0]", wantMsg: `use "DELETE"`,
		},
		{
			name: "from_only_not_lists_is_not_empty",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[1].From = &config.Source{NotNamespaces: []string{"test"}}
			},
		},
		{
			name: "from_empty_lists",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[1].From = &config.Source{Namespaces: []string{}, IPBlocks: []string{}}
			},
			wantPath: "spec.rules[1].from", wantMsg: "at least one of services, identities, namespaces, requestPrincipals, ipBlocks",
		},
		{
			name:     "to_empty_lists",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[3].To = &config.Operation{Ports: []int{}} },
			wantPath: "spec.rules[3].to", wantMsg: "at least one of methods, hosts, ports, paths",
		},

		// from.namespaces
		{
			name:     "namespace_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Namespaces[0] = "" },
			wantPath: "spec.rules[0].from.namespaces[0]", wantMsg: "must not be empty",
		},
		{
			name:     "namespace_upper_case",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Namespaces[0] = "Default" },
			wantPath: "spec.rules[0].from.namespaces[0]", wantMsg: "lowercase letters, digits, '-' and '*'",
		},
		{
			name:     "namespace_with_slash",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Namespaces[0] = "default/web" },
			wantPath: "spec.rules[0].from.namespaces[0]", wantMsg: "a namespace pattern",
		},
		{
			name:     "namespace_question_mark",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.Namespaces[0] = "team-?" },
			wantPath: "spec.rules[0].from.namespaces[0]", wantMsg: "a namespace pattern",
		},
		{
			name:     "not_namespace_invalid",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.NotNamespaces[0] = "kube_system" },
			wantPath: "spec.rules[0].from.notNamespaces[0]", wantMsg: "a namespace pattern",
		},

		// from.requestPrincipals
		{
			name:     "principal_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.RequestPrincipals[1] = "" },
			wantPath: "spec.rules[0].from.requestPrincipals[1]", wantMsg: "must not be empty",
		},
		{
			name:     "principal_without_slash",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.RequestPrincipals[1] = "alice" },
			wantPath: "spec.rules[0].from.requestPrincipals[1]", wantMsg: `must be "*" or "<iss>/<sub>" of a JWT`,
		},
		{
			name: "principal_empty_subject",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[0].From.RequestPrincipals[1] = "https://idp.example.com/"
			},
			wantPath: "spec.rules[0].from.requestPrincipals[1]", wantMsg: "around the last '/' must not be empty",
		},
		{
			name:     "principal_empty_issuer",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.RequestPrincipals[1] = "/alice" },
			wantPath: "spec.rules[0].from.requestPrincipals[1]", wantMsg: "around the last '/' must not be empty",
		},
		{
			name: "principal_space",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[0].From.RequestPrincipals[1] = "https://idp.example.com/ alice"
			},
			wantPath: "spec.rules[0].from.requestPrincipals[1]", wantMsg: "no spaces or control characters",
		},
		{
			name:     "not_principal_without_slash",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.NotRequestPrincipals[0] = "robot" },
			wantPath: "spec.rules[0].from.notRequestPrincipals[0]", wantMsg: `"<iss>/<sub>"`,
		},

		// from.ipBlocks
		{
			name:     "ip_block_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.IPBlocks[0] = "" },
			wantPath: "spec.rules[0].from.ipBlocks[0]", wantMsg: "must not be empty",
		},
		{
			name:     "ip_block_host_bits",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.IPBlocks[0] = "10.0.0.1/8" },
			wantPath: "spec.rules[0].from.ipBlocks[0]", wantMsg: `"10.0.0.1/8" has host bits set: use "10.0.0.0/8" (or the address alone, "10.0.0.1")`,
		},
		{
			name:     "ip_block_v6_host_bits",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.IPBlocks[0] = "2001:db8::1/32" },
			wantPath: "spec.rules[0].from.ipBlocks[0]", wantMsg: `use "2001:db8::/32"`,
		},
		{
			name:     "ip_block_bad_length",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.IPBlocks[0] = "10.0.0.0/33" },
			wantPath: "spec.rules[0].from.ipBlocks[0]", wantMsg: "is not an IP address or a CIDR range",
		},
		{
			name:     "ip_block_host_name",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.IPBlocks[0] = "example.com" },
			wantPath: "spec.rules[0].from.ipBlocks[0]", wantMsg: "is not an IP address or a CIDR range",
		},
		{
			name:     "ip_block_glob",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.IPBlocks[0] = "10.0.*.*" },
			wantPath: "spec.rules[0].from.ipBlocks[0]", wantMsg: "is not an IP address or a CIDR range",
		},
		{
			name:     "ip_block_zone",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.IPBlocks[0] = "fe80::1%eth0" },
			wantPath: "spec.rules[0].from.ipBlocks[0]", wantMsg: "an IPv6 zone is not allowed",
		},
		{
			name:     "not_ip_block_host_bits",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].From.NotIPBlocks[0] = "10.9.1.0/16" },
			wantPath: "spec.rules[0].from.notIpBlocks[0]", wantMsg: `use "10.9.0.0/16"`,
		},

		// to.hosts
		{
			name:     "host_empty_entry",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: "must not be empty",
		},
		{
			name:     "host_with_port",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "api.default:8080" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `a host has no port (hosts are matched without it): use hosts: ["api.default"] and ports: [8080]`,
		},
		{
			name:     "host_suffix_with_port",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "*.example.com:443" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `use hosts: ["*.example.com"] and ports: [443]`,
		},
		{
			name:     "host_ipv6_with_port",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "[2001:db8::1]:8443" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `use hosts: ["2001:db8::1"] and ports: [8443]`,
		},
		{
			name:     "host_ipv6_brackets",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "[2001:db8::1]" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `canonical form, without brackets: "2001:db8::1"`,
		},
		{
			name:     "host_ipv6_not_canonical",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "2001:DB8:0:0::1" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `canonical form, without brackets: "2001:db8::1"`,
		},
		{
			name:     "host_upper_case",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "API.default" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `must be lower case (hosts are matched in lower case): use "api.default"`,
		},
		{
			name:     "host_trailing_dot",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "api.default." },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `no trailing dot (hosts are matched without it): use "api.default"`,
		},
		{
			name:     "host_glob_in_middle",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "api.*.example.com" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `'*' is only allowed as "*", a leading "*."`,
		},
		{
			name:     "host_glob_partial_label",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "*example.com" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `'*' is only allowed as "*", a leading "*."`,
		},
		{
			name:     "host_glob_twice",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "*.api.*" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: `'*' is only allowed as "*"`,
		},
		{
			name:     "host_suffix_empty",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "*." },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: "no empty label",
		},
		{
			name:     "host_empty_label",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "api..default" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: "no empty label",
		},
		{
			name:     "host_url",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Hosts[0] = "https://api.default/" },
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: "letters, digits, '-', '_' and '.'",
		},
		{
			name: "host_label_too_long",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[0].To.Hosts[0] = strings.Repeat("a", 64) + ".default"
			},
			wantPath: "spec.rules[0].to.hosts[0]", wantMsg: "at most 63 characters",
		},
		{
			name:     "not_host_with_port",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.NotHosts[0] = "admin.example.com:80" },
			wantPath: "spec.rules[0].to.notHosts[0]", wantMsg: "a host has no port",
		},

		// to.ports
		{
			name:     "port_zero",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Ports[0] = 0 },
			wantPath: "spec.rules[0].to.ports[0]", wantMsg: "0 is not a port: must be 1 to 65535",
		},
		{
			name:     "port_too_large",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.Ports[1] = 65536 },
			wantPath: "spec.rules[0].to.ports[1]", wantMsg: "65536 is not a port",
		},
		{
			name:     "not_port_negative",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].To.NotPorts[0] = -1 },
			wantPath: "spec.rules[0].to.notPorts[0]", wantMsg: "-1 is not a port",
		},

		// when
		{
			name:     "when_typo",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].When[1] = "request.methd == 'GET'" },
			wantPath: "spec.rules[0].when[1]", wantMsg: "1:8: undeclared reference to 'request.methd' (did you mean 'request.method'?)",
		},
		{
			name:     "when_syntax_error",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[5].When[0] = "request.method == " },
			wantPath: "spec.rules[5].when[0]", wantMsg: "1:19: Syntax error",
		},
		{
			name:     "when_not_bool",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].When[0] = "request.path" },
			wantPath: "spec.rules[0].when[0]", wantMsg: "want bool",
		},
		{
			name: "when_second_line",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[0].When[0] = "request.method == 'GET' &&\n  request.heders['x'] == 'y'"
			},
			wantPath: "spec.rules[0].when[0]", wantMsg: "2:10: undeclared reference to 'request.heders'",
		},
		{
			name:     "when_header_upper_case",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].When[0] = "request.headers['X-Tenant'] == 'acme'" },
			wantPath: "spec.rules[0].when[0]", wantMsg: `use "x-tenant"`,
		},
		{
			name:     "when_empty",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].When[0] = " " },
			wantPath: "spec.rules[0].when[0]", wantMsg: "must not be empty",
		},
		{
			name: "when_too_long",
			mutate: func(p *config.AuthorizationPolicy) {
				p.Spec.Rules[0].When[0] = strings.Repeat("true && ", 600) + "true"
			},
			wantPath: "spec.rules[0].when[0]", wantMsg: "more than the 4096 allowed",
		},
		{
			name:     "when_unknown_time_zone",
			mutate:   func(p *config.AuthorizationPolicy) { p.Spec.Rules[0].When[1] = "time.now.getHours('Europe/Pari') < 18" },
			wantPath: "spec.rules[0].when[1]", wantMsg: `1:19: unknown time zone "Europe/Pari"`,
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

// TestAuthorizationPolicyValidateConditionIssues pins that each issue of a
// when expression is its own error at the expression's path, with its
// line and column.
func TestAuthorizationPolicyValidateConditionIssues(t *testing.T) {
	p := validPolicy()
	p.Spec.Rules[5].When[0] = "request.methd == 'GET' &&\n  request.paht == '/'"
	var got []string
	for _, e := range p.Validate() {
		got = append(got, e.Error())
	}
	want := []string{
		"spec.rules[5].when[0]: 1:8: undeclared reference to 'request.methd' (did you mean 'request.method'?)",
		"spec.rules[5].when[0]: 2:10: undeclared reference to 'request.paht' (did you mean 'request.path'?)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors mismatch (-want +got):\n%s", diff)
	}
}

// TestDecodePolicyConditionError pins what `bulwark apply` prints for a
// policy whose condition does not type-check: the document, the field path
// and the position in the expression.
func TestDecodePolicyConditionError(t *testing.T) {
	_, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: tenant-only
spec:
  rules:
  - when:
    - request.headers['x-tenant'] == 'acme' && request.methd == 'GET'
`))
	if err == nil {
		t.Fatal("Decode: got nil, want an error")
	}
	want := "document 1 (AuthorizationPolicy default/tenant-only): spec.rules[0].when[0]: 1:49: undeclared reference to 'request.methd' (did you mean 'request.method'?)"
	if got := err.Error(); got != want {
		t.Errorf("Decode:\ngot  %q\nwant %q", got, want)
	}
}

// TestAuthorizationPolicyValidateMeshWide pins the root-namespace rules: a
// mesh-wide policy may select by labels, never by service name.
func TestAuthorizationPolicyValidateMeshWide(t *testing.T) {
	p := validPolicy()
	p.Metadata.Namespace = config.RootNamespace
	p.Spec.Selector = config.PolicySelector{Service: "api", Labels: map[string]string{"bad key": "x"}}
	var got []string
	for _, e := range p.Validate() {
		got = append(got, e.Path)
	}
	want := []string{"spec.selector.service", "spec.selector.labels"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error paths mismatch (-want +got):\n%s", diff)
	}
}
