package rbac_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
)

func role(ns, name string, rules ...config.RoleRule) *config.Role {
	return &config.Role{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindRole},
		Metadata: config.ObjectMeta{Namespace: ns, Name: name},
		Spec:     config.RoleSpec{Rules: rules},
	}
}

func binding(ns, name, roleName string, operators ...string) *config.RoleBinding {
	return &config.RoleBinding{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindRoleBinding},
		Metadata: config.ObjectMeta{Namespace: ns, Name: name},
		Spec:     config.RoleBindingSpec{Role: roleName, Operators: operators},
	}
}

func rule(verbs []string, kinds ...string) config.RoleRule {
	return config.RoleRule{Verbs: verbs, Kinds: kinds}
}

var (
	editVerbs = []string{"get", "list", "apply", "delete"}
	readVerbs = []string{"get", "list"}
	all       = []string{"*"}
)

// fixture is a mesh with two namespace admins (alice in team-a, bob in
// team-b), a mesh-wide auditor (carol), a mesh-wide operator manager
// (dave), and a few traps.
func fixture() *rbac.Authorizer {
	roles := []*config.Role{
		role("team-a", "policy-editor", rule(editVerbs, config.KindAuthorizationPolicy, config.KindRole, config.KindRoleBinding),
			rule([]string{"create"}, config.KindJoinToken)),
		role("team-b", "policy-editor", rule(editVerbs, config.KindAuthorizationPolicy)),
		role(config.RootNamespace, "auditor", rule(readVerbs, all...), rule([]string{"get"}, config.KindCA)),
		role(config.RootNamespace, "operator-manager", rule([]string{"create"}, config.KindOperator)),
		role(config.RootNamespace, "mesh-admin", rule(all, all...)),
		role("team-c", "everything", rule(all, all...)),
		role("team-d", "proxy-revoker", rule([]string{"revoke"}, config.KindProxy)),
	}
	bindings := []*config.RoleBinding{
		binding("team-a", "alice-edits", "policy-editor", "alice"),
		binding("team-b", "bob-edits", "policy-editor", "bob"),
		binding(config.RootNamespace, "auditors", "auditor", "carol"),
		binding(config.RootNamespace, "managers", "operator-manager", "dave"),
		// alice names a root Role from her namespace: the Role is looked
		// up in team-a, where it does not exist, so it grants nothing.
		binding("team-a", "alice-escalates", "mesh-admin", "alice"),
		// A binding to a Role that does not exist grants nothing.
		binding("team-d", "ghost", "no-such-role", "erin"),
		// A Role with wildcards, bound in its namespace only.
		binding("team-c", "frank-all", "everything", "frank"),
		// A binding in team-d to team-c's Role name grants nothing in
		// team-d (no Role of that name there) nor in team-c.
		binding("team-d", "frank-elsewhere", "everything", "frank"),
		binding("team-d", "revokers", "proxy-revoker", "grace"),
		nil,
	}
	return rbac.New(append(roles, nil), bindings)
}

func TestAllowed(t *testing.T) {
	a := fixture()
	tests := []struct {
		name                            string
		operator, verb, kind, namespace string
		want                            bool
	}{
		// Namespace admins.
		{"alice_applies_policy_in_team_a", "alice", "apply", config.KindAuthorizationPolicy, "team-a", true},
		{"alice_deletes_policy_in_team_a", "alice", "delete", config.KindAuthorizationPolicy, "team-a", true},
		{"alice_lists_policies_in_team_a", "alice", "list", config.KindAuthorizationPolicy, "team-a", true},
		{"alice_applies_rolebinding_in_team_a", "alice", "apply", config.KindRoleBinding, "team-a", true},
		{"alice_creates_token_in_team_a", "alice", "create", config.KindJoinToken, "team-a", true},
		{"alice_cannot_apply_in_team_b", "alice", "apply", config.KindAuthorizationPolicy, "team-b", false},
		{"alice_cannot_list_in_team_b", "alice", "list", config.KindAuthorizationPolicy, "team-b", false},
		{"alice_cannot_create_token_in_team_b", "alice", "create", config.KindJoinToken, "team-b", false},
		{"alice_cannot_write_in_root", "alice", "apply", config.KindAuthorizationPolicy, config.RootNamespace, false},
		{"alice_cannot_bind_in_root", "alice", "apply", config.KindRoleBinding, config.RootNamespace, false},
		{"alice_cannot_list_mesh_wide", "alice", "list", config.KindAuthorizationPolicy, rbac.MeshWide, false},
		{"alice_cannot_rotate_ca", "alice", "rotate", config.KindCA, rbac.MeshWide, false},
		{"alice_cannot_create_operators", "alice", "create", config.KindOperator, rbac.MeshWide, false},
		{"alice_verb_not_granted", "alice", "revoke", config.KindProxy, "team-a", false},
		{"alice_kind_not_granted", "alice", "apply", config.KindService, "team-a", false},
		{"alice_root_role_named_from_team_a_gives_nothing", "alice", "get", config.KindCA, rbac.MeshWide, false},
		{"alice_root_role_named_from_team_a_gives_nothing_in_team_a", "alice", "revoke", config.KindProxy, "team-a", false},
		{"bob_applies_in_team_b", "bob", "apply", config.KindAuthorizationPolicy, "team-b", true},
		{"bob_cannot_delete_in_team_a", "bob", "delete", config.KindAuthorizationPolicy, "team-a", false},
		{"bob_same_role_name_other_namespace", "bob", "apply", config.KindRoleBinding, "team-b", false},

		// Root bindings are mesh-wide.
		{"carol_lists_everywhere", "carol", "list", config.KindAuthorizationPolicy, "team-a", true},
		{"carol_lists_mesh_wide", "carol", "list", config.KindProxy, rbac.MeshWide, true},
		{"carol_gets_in_root", "carol", "get", config.KindRole, config.RootNamespace, true},
		{"carol_gets_ca", "carol", "get", config.KindCA, rbac.MeshWide, true},
		{"carol_cannot_apply", "carol", "apply", config.KindAuthorizationPolicy, "team-a", false},
		{"carol_cannot_rotate", "carol", "rotate", config.KindCA, rbac.MeshWide, false},
		{"dave_creates_operators", "dave", "create", config.KindOperator, rbac.MeshWide, true},
		{"dave_cannot_read_policies", "dave", "get", config.KindAuthorizationPolicy, "team-a", false},

		// Wildcards.
		{"frank_wildcard_verb_and_kind", "frank", "revoke", config.KindProxy, "team-c", true},
		{"frank_wildcard_future_kind", "frank", "list", "Denial", "team-c", true},
		{"frank_wildcard_stays_in_namespace", "frank", "get", config.KindAuthorizationPolicy, "team-d", false},
		{"frank_wildcard_not_mesh_wide", "frank", "rotate", config.KindCA, rbac.MeshWide, false},
		{"frank_wildcard_not_root", "frank", "apply", config.KindRole, config.RootNamespace, false},
		{"frank_wildcard_query_is_not_a_verb", "frank", "*", config.KindProxy, "team-c", false},
		{"frank_wildcard_query_is_not_a_kind", "frank", "get", "*", "team-c", false},

		// Missing Roles, unknown operators, empty input.
		{"binding_to_missing_role", "erin", "get", config.KindAuthorizationPolicy, "team-d", false},
		{"unknown_operator", "mallory", "get", config.KindAuthorizationPolicy, "team-a", false},
		{"empty_operator", "", "get", config.KindAuthorizationPolicy, "team-a", false},
		{"empty_verb", "alice", "", config.KindAuthorizationPolicy, "team-a", false},
		{"empty_kind", "alice", "get", "", "team-a", false},
		{"grace_revokes_in_team_d", "grace", "revoke", config.KindProxy, "team-d", true},
		{"operator_names_are_case_sensitive", "Alice", "apply", config.KindAuthorizationPolicy, "team-a", false},

		// The built-in admin.
		{"admin_everything", "admin", "rotate", config.KindCA, rbac.MeshWide, true},
		{"admin_in_any_namespace", "admin", "apply", config.KindRoleBinding, config.RootNamespace, true},
		{"admin_is_exact", "admin2", "get", config.KindCA, rbac.MeshWide, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.Allowed(tt.operator, tt.verb, tt.kind, tt.namespace); got != tt.want {
				t.Errorf("Allowed(%q, %q, %q, %q): got %v, want %v", tt.operator, tt.verb, tt.kind, tt.namespace, got, tt.want)
			}
		})
	}
}

func TestAllowedWithoutRBAC(t *testing.T) {
	for name, a := range map[string]*rbac.Authorizer{"nil": nil, "empty": rbac.New(nil, nil)} {
		t.Run(name, func(t *testing.T) {
			if a.Allowed("alice", "get", config.KindAuthorizationPolicy, "default") {
				t.Error("alice: got allowed, want denied by default")
			}
			if !a.Allowed(rbac.BuiltinAdmin, "rotate", config.KindCA, rbac.MeshWide) {
				t.Error("admin: got denied, want allowed")
			}
		})
	}
}

// TestRemovedBindingRemovesRights: an Authorizer built without a binding
// grants nothing of it (the admin API builds one per request).
func TestRemovedBindingRemovesRights(t *testing.T) {
	r := role("team-a", "editor", rule(editVerbs, config.KindAuthorizationPolicy))
	b := binding("team-a", "alice", "editor", "alice")
	if !rbac.New([]*config.Role{r}, []*config.RoleBinding{b}).Allowed("alice", "apply", config.KindAuthorizationPolicy, "team-a") {
		t.Fatal("with the binding: got denied, want allowed")
	}
	if rbac.New([]*config.Role{r}, nil).Allowed("alice", "apply", config.KindAuthorizationPolicy, "team-a") {
		t.Error("without the binding: got allowed, want denied")
	}
	if rbac.New(nil, []*config.RoleBinding{b}).Allowed("alice", "apply", config.KindAuthorizationPolicy, "team-a") {
		t.Error("without the role: got allowed, want denied")
	}
}

func TestMissing(t *testing.T) {
	a := fixture()
	tests := []struct {
		name      string
		operator  string
		rules     []config.RoleRule
		namespace string
		want      []rbac.Right
	}{
		{
			name: "alice_grants_what_she_holds", operator: "alice", namespace: "team-a",
			rules: []config.RoleRule{rule([]string{"get", "apply"}, config.KindAuthorizationPolicy)},
		},
		{
			name: "alice_grants_more_verbs", operator: "alice", namespace: "team-a",
			rules: []config.RoleRule{rule([]string{"get", "revoke"}, config.KindAuthorizationPolicy, config.KindProxy)},
			want:  []rbac.Right{{"revoke", config.KindAuthorizationPolicy}, {"get", config.KindProxy}, {"revoke", config.KindProxy}},
		},
		{
			name: "alice_wildcard_expands", operator: "alice", namespace: "team-a",
			rules: []config.RoleRule{rule(all, config.KindJoinToken)},
			want: []rbac.Right{
				{"get", config.KindJoinToken}, {"list", config.KindJoinToken}, {"watch", config.KindJoinToken},
				{"apply", config.KindJoinToken}, {"delete", config.KindJoinToken}, {"rotate", config.KindJoinToken},
				{"revoke", config.KindJoinToken},
			},
		},
		{
			name: "alice_in_another_namespace", operator: "alice", namespace: "team-b",
			rules: []config.RoleRule{rule([]string{"get"}, config.KindAuthorizationPolicy)},
			want:  []rbac.Right{{"get", config.KindAuthorizationPolicy}},
		},
		{
			name: "alice_in_root_needs_mesh_wide", operator: "alice", namespace: config.RootNamespace,
			rules: []config.RoleRule{rule([]string{"get"}, config.KindAuthorizationPolicy, config.KindCA)},
			want:  []rbac.Right{{"get", config.KindAuthorizationPolicy}, {"get", config.KindCA}},
		},
		{
			name: "carol_root_reads", operator: "carol", namespace: config.RootNamespace,
			rules: []config.RoleRule{rule(readVerbs, config.KindProxy), rule([]string{"get"}, config.KindCA)},
		},
		{
			name: "mesh_wide_kinds_do_not_count_outside_root", operator: "frank", namespace: "team-c",
			rules: []config.RoleRule{rule(all, all...)},
		},
		{
			name: "admin_grants_anything", operator: "admin", namespace: config.RootNamespace,
			rules: []config.RoleRule{rule(all, all...)},
		},
		{
			name: "duplicates_reported_once", operator: "bob", namespace: "team-b",
			rules: []config.RoleRule{rule([]string{"revoke"}, config.KindProxy), rule([]string{"revoke"}, config.KindProxy)},
			want:  []rbac.Right{{"revoke", config.KindProxy}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := a.Missing(tt.operator, tt.rules, tt.namespace)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Missing mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNamespaces(t *testing.T) {
	a := fixture()
	tests := []struct {
		name           string
		operator, verb string
		kind           string
		wantNS         []string
		wantEverywhere bool
	}{
		{"alice_policies", "alice", "list", config.KindAuthorizationPolicy, []string{"team-a"}, false},
		{"alice_proxies", "alice", "list", config.KindProxy, nil, false},
		{"carol_everywhere", "carol", "list", config.KindProxy, nil, true},
		{"admin_everywhere", "admin", "list", "Denial", nil, true},
		{"frank_one_namespace", "frank", "list", "Denial", []string{"team-c"}, false},
		{"unknown_operator", "mallory", "list", config.KindProxy, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, everywhere := a.Namespaces(tt.operator, tt.verb, tt.kind)
			if everywhere != tt.wantEverywhere {
				t.Errorf("everywhere: got %v, want %v", everywhere, tt.wantEverywhere)
			}
			if diff := cmp.Diff(tt.wantNS, ns); diff != "" {
				t.Errorf("namespaces mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
