package rbac_test

import (
	"fmt"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
)

// A namespace admin: alice may edit policies in team-a, and nowhere else.
func ExampleAuthorizer_Allowed() {
	editor := &config.Role{
		Metadata: config.ObjectMeta{Namespace: "team-a", Name: "policy-editor"},
		Spec: config.RoleSpec{Rules: []config.RoleRule{
			{Verbs: []string{"get", "list", "apply", "delete"}, Kinds: []string{config.KindAuthorizationPolicy}},
		}},
	}
	binding := &config.RoleBinding{
		Metadata: config.ObjectMeta{Namespace: "team-a", Name: "alice-edits"},
		Spec:     config.RoleBindingSpec{Role: "policy-editor", Operators: []string{"alice"}},
	}
	a := rbac.New([]*config.Role{editor}, []*config.RoleBinding{binding})

	fmt.Println(a.Allowed("alice", "apply", config.KindAuthorizationPolicy, "team-a"))
	fmt.Println(a.Allowed("alice", "apply", config.KindAuthorizationPolicy, "team-b"))
	fmt.Println(a.Allowed("alice", "apply", config.KindAuthorizationPolicy, config.RootNamespace))
	fmt.Println(a.Allowed("alice", "rotate", config.KindCA, rbac.MeshWide))
	fmt.Println(a.Allowed(rbac.BuiltinAdmin, "rotate", config.KindCA, rbac.MeshWide))
	// Output:
	// true
	// false
	// false
	// false
	// true
}
