package config_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// validRole returns a Role of namespace team-a that uses every field
// validly; each case below carries one defect.
func validRole() *config.Role {
	return &config.Role{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindRole},
		Metadata: config.ObjectMeta{Namespace: "team-a", Name: "policy-editor"},
		Spec: config.RoleSpec{Rules: []config.RoleRule{
			{Verbs: []string{"get", "list", "apply", "delete"}, Kinds: []string{"AuthorizationPolicy", "Role", "RoleBinding"}},
			{Verbs: []string{"*"}, Kinds: []string{"*"}},
			{Verbs: []string{"create"}, Kinds: []string{"JoinToken"}},
			{Verbs: []string{"revoke", "get"}, Kinds: []string{"Proxy", "Service"}},
		}},
	}
}

func validBinding() *config.RoleBinding {
	return &config.RoleBinding{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindRoleBinding},
		Metadata: config.ObjectMeta{Namespace: "team-a", Name: "alice-edits"},
		Spec:     config.RoleBindingSpec{Role: "policy-editor", Operators: []string{"alice", "bob.smith@example.com", "ci_bot-2"}},
	}
}

func TestRoleValidate(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(r *config.Role)
		wantPath string // "" for a valid role
		wantMsg  string // a part of the message
	}{
		{name: "valid", mutate: func(*config.Role) {}},
		{
			name: "valid_mesh_wide_kinds_in_root",
			mutate: func(r *config.Role) {
				r.Metadata.Namespace = config.RootNamespace
				r.Spec.Rules[0].Kinds = []string{"CA", "Operator"}
				r.Spec.Rules[0].Verbs = []string{"rotate", "create", "get"}
			},
		},
		{
			name:     "no_rules",
			mutate:   func(r *config.Role) { r.Spec.Rules = nil },
			wantPath: "spec.rules", wantMsg: "at least one rule is required",
		},
		{
			name:     "no_verbs",
			mutate:   func(r *config.Role) { r.Spec.Rules[1].Verbs = nil },
			wantPath: "spec.rules[1].verbs", wantMsg: "at least one verb is required",
		},
		{
			name:     "unknown_verb",
			mutate:   func(r *config.Role) { r.Spec.Rules[0].Verbs[2] = "update" },
			wantPath: "spec.rules[0].verbs[2]", wantMsg: `unknown verb "update": must be one of get, list, watch, apply, delete, create, rotate, revoke, or "*"`,
		},
		{
			name:     "verb_upper_case",
			mutate:   func(r *config.Role) { r.Spec.Rules[0].Verbs[0] = "GET" },
			wantPath: "spec.rules[0].verbs[0]", wantMsg: `unknown verb "GET"`,
		},
		{
			name:     "verb_glob",
			mutate:   func(r *config.Role) { r.Spec.Rules[0].Verbs[0] = "g*" },
			wantPath: "spec.rules[0].verbs[0]", wantMsg: `unknown verb "g*"`,
		},
		{
			name:     "no_kinds",
			mutate:   func(r *config.Role) { r.Spec.Rules[2].Kinds = []string{} },
			wantPath: "spec.rules[2].kinds", wantMsg: "at least one kind is required",
		},
		{
			name:     "unknown_kind",
			mutate:   func(r *config.Role) { r.Spec.Rules[0].Kinds[1] = "Policy" },
			wantPath: "spec.rules[0].kinds[1]", wantMsg: `unknown kind "Policy": must be one of AuthorizationPolicy, `,
		},
		{
			name:     "kind_mesh_is_not_rbac",
			mutate:   func(r *config.Role) { r.Spec.Rules[0].Kinds[0] = config.KindMesh },
			wantPath: "spec.rules[0].kinds[0]", wantMsg: `unknown kind "Mesh"`,
		},
		{
			name:     "kind_lower_case",
			mutate:   func(r *config.Role) { r.Spec.Rules[3].Kinds[0] = "proxy" },
			wantPath: "spec.rules[3].kinds[0]", wantMsg: `unknown kind "proxy"`,
		},
		{
			name:     "ca_outside_root",
			mutate:   func(r *config.Role) { r.Spec.Rules[3].Kinds[1] = config.KindCA },
			wantPath: "spec.rules[3].kinds[1]", wantMsg: "CA rights are mesh-wide: grant them with a Role in namespace bulwark-system",
		},
		{
			name:     "operator_outside_root",
			mutate:   func(r *config.Role) { r.Spec.Rules[2].Kinds[0] = config.KindOperator },
			wantPath: "spec.rules[2].kinds[0]", wantMsg: "Operator rights are mesh-wide",
		},
		{
			name:     "name_invalid",
			mutate:   func(r *config.Role) { r.Metadata.Name = "Editor" },
			wantPath: "metadata.name", wantMsg: "lowercase",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRole()
			tt.mutate(r)
			checkFieldErrors(t, r.Validate(), tt.wantPath, tt.wantMsg)
		})
	}
}

func TestRoleBindingValidate(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(b *config.RoleBinding)
		wantPath string
		wantMsg  string
	}{
		{name: "valid", mutate: func(*config.RoleBinding) {}},
		{
			name:     "role_missing",
			mutate:   func(b *config.RoleBinding) { b.Spec.Role = "" },
			wantPath: "spec.role", wantMsg: "required: the name of a Role in namespace team-a",
		},
		{
			name:     "role_in_other_namespace",
			mutate:   func(b *config.RoleBinding) { b.Spec.Role = "bulwark-system/admin" },
			wantPath: "spec.role", wantMsg: "lowercase letters, digits and '-'",
		},
		{
			name:     "no_operators",
			mutate:   func(b *config.RoleBinding) { b.Spec.Operators = nil },
			wantPath: "spec.operators", wantMsg: "at least one operator is required",
		},
		{
			name:     "operator_empty",
			mutate:   func(b *config.RoleBinding) { b.Spec.Operators[1] = "" },
			wantPath: "spec.operators[1]", wantMsg: "must be 1 to 64 characters",
		},
		{
			name:     "operator_too_long",
			mutate:   func(b *config.RoleBinding) { b.Spec.Operators[0] = strings.Repeat("a", 65) },
			wantPath: "spec.operators[0]", wantMsg: "must be 1 to 64 characters",
		},
		{
			name:     "operator_starts_with_dot",
			mutate:   func(b *config.RoleBinding) { b.Spec.Operators[2] = ".alice" },
			wantPath: "spec.operators[2]", wantMsg: "starting with a letter or digit",
		},
		{
			name:     "operator_with_space",
			mutate:   func(b *config.RoleBinding) { b.Spec.Operators[2] = "alice smith" },
			wantPath: "spec.operators[2]", wantMsg: `only letters, digits and ".-_@" allowed`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := validBinding()
			tt.mutate(b)
			checkFieldErrors(t, b.Validate(), tt.wantPath, tt.wantMsg)
		})
	}
}

// checkFieldErrors checks that errs is exactly one error at wantPath whose
// message contains wantMsg, or nothing when wantPath is "".
func checkFieldErrors(t *testing.T, errs config.FieldErrors, wantPath, wantMsg string) {
	t.Helper()
	var gotPaths, wantPaths []string
	for _, e := range errs {
		gotPaths = append(gotPaths, e.Path)
	}
	if wantPath != "" {
		wantPaths = []string{wantPath}
	}
	if diff := cmp.Diff(wantPaths, gotPaths); diff != "" {
		t.Fatalf("error paths mismatch (-want +got):\n%s\nerrors: %v", diff, errs)
	}
	if wantPath != "" && !strings.Contains(errs[0].Msg, wantMsg) {
		t.Errorf("message: got %q, want it to contain %q", errs[0].Msg, wantMsg)
	}
}

func TestDecodeRBAC(t *testing.T) {
	const doc = `apiVersion: bulwark.dev/v1alpha1
kind: Role
metadata: {name: editor, namespace: team-a}
spec:
  rules:
  - verbs: [get, list, apply]
    kinds: [AuthorizationPolicy]
---
apiVersion: bulwark.dev/v1alpha1
kind: RoleBinding
metadata: {name: alice-edits}
spec: {role: editor, operators: [alice]}
`
	objs, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want 2", len(objs))
	}
	role, ok := objs[0].(*config.Role)
	if !ok {
		t.Fatalf("got %T, want *config.Role", objs[0])
	}
	want := []config.RoleRule{{Verbs: []string{"get", "list", "apply"}, Kinds: []string{"AuthorizationPolicy"}}}
	if diff := cmp.Diff(want, role.Spec.Rules); diff != "" {
		t.Errorf("rules mismatch (-want +got):\n%s", diff)
	}
	rb, ok := objs[1].(*config.RoleBinding)
	if !ok {
		t.Fatalf("got %T, want *config.RoleBinding", objs[1])
	}
	if rb.Metadata.Namespace != "default" {
		t.Errorf("binding namespace: got %q, want the default %q", rb.Metadata.Namespace, "default")
	}
	// Round trip: what the control plane stores decodes to the same.
	for _, o := range objs {
		b, err := config.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		back, err := config.DecodeObject(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if diff := cmp.Diff(o, back); diff != "" {
			t.Errorf("round trip mismatch (-want +got):\n%s", diff)
		}
	}
}

func TestDecodeRBACRejects(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{
			name: "unknown_field",
			doc:  "apiVersion: bulwark.dev/v1alpha1\nkind: Role\nmetadata: {name: r}\nspec: {rules: [{verbs: [get], kinds: [Role], namespaces: [x]}]}\n",
			want: "spec.rules[0].namespaces: unknown field",
		},
		{
			name: "verbs_not_a_list",
			doc:  "apiVersion: bulwark.dev/v1alpha1\nkind: Role\nmetadata: {name: r}\nspec: {rules: [{verbs: get, kinds: [Role]}]}\n",
			want: "spec.rules[0].verbs: expected a list of strings, got a string",
		},
		{
			name: "binding_role_object",
			doc:  "apiVersion: bulwark.dev/v1alpha1\nkind: RoleBinding\nmetadata: {name: b}\nspec: {role: {name: r}, operators: [alice]}\n",
			want: "spec.role: expected a string, got a mapping",
		},
		{
			name: "binding_unknown_verb_field",
			doc:  "apiVersion: bulwark.dev/v1alpha1\nkind: RoleBinding\nmetadata: {name: b}\nspec: {role: r, operators: [alice], subjects: [bob]}\n",
			want: "spec.subjects: unknown field",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Decode([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRBACKinds(t *testing.T) {
	kinds := config.RBACKinds()
	for _, want := range []string{config.KindAuthorizationPolicy, config.KindRole, config.KindRoleBinding,
		config.KindProxy, config.KindService, config.KindJoinToken, config.KindCA, config.KindOperator} {
		if !slices.Contains(kinds, want) {
			t.Errorf("RBACKinds() = %v, want it to contain %s", kinds, want)
		}
	}
	if slices.Contains(kinds, config.KindMesh) || slices.Contains(kinds, config.KindList) {
		t.Errorf("RBACKinds() = %v, want neither Mesh nor List", kinds)
	}
}

func TestIsApplicable(t *testing.T) {
	tests := []struct {
		kind string
		want bool
	}{
		{config.KindAuthorizationPolicy, true},
		{config.KindRole, true},
		{config.KindRoleBinding, true},
		{config.KindMesh, false},
		{config.KindProxy, false},
		{config.KindService, false},
		{config.KindCA, false},
		{config.KindJoinToken, false},
		{"role", false},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			if got := config.IsApplicable(tt.kind); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestResourceKindRBAC(t *testing.T) {
	for name, want := range map[string]string{"roles": config.KindRole, "Role": config.KindRole,
		"rolebindings": config.KindRoleBinding, "RoleBinding": config.KindRoleBinding} {
		if got, ok := config.ResourceKind(name); !ok || got != want {
			t.Errorf("ResourceKind(%q) = %q, %v; want %q, true", name, got, ok, want)
		}
	}
	for kind, want := range map[string]string{config.KindRole: "roles", config.KindRoleBinding: "rolebindings"} {
		if got := config.ResourcePlural(kind); got != want {
			t.Errorf("ResourcePlural(%q) = %q, want %q", kind, got, want)
		}
	}
}
