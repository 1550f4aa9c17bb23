package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// Kinds of control-plane RBAC resources.
const (
	KindRole        = "Role"
	KindRoleBinding = "RoleBinding"
)

// Kinds a Role rule names that are not resources: things the admin API
// does that are not reads or writes of a stored document.
const (
	// KindJoinToken: `create` a join token for a service of a namespace.
	KindJoinToken = "JoinToken"
	// KindCA: `get` the workload CA's status and JWKS, `rotate` it.
	// Mesh-wide only.
	KindCA = "CA"
	// KindOperator: `create` an operator credential. Mesh-wide only.
	KindOperator = "Operator"
)

// Verbs of control-plane RBAC: what an operator does to a kind.
const (
	VerbGet    = "get"
	VerbList   = "list"
	VerbWatch  = "watch"
	VerbApply  = "apply"
	VerbDelete = "delete"
	VerbCreate = "create"
	VerbRotate = "rotate"
	VerbRevoke = "revoke"
)

// Wildcard in a Role rule's verbs or kinds matches every verb or kind.
const Wildcard = "*"

// maxOperatorName is the longest operator name, the upper bound of a
// certificate's CommonName (RFC 5280 ub-common-name).
const maxOperatorName = 64

// Verbs returns every verb a Role rule may name, except Wildcard.
func Verbs() []string {
	return []string{VerbGet, VerbList, VerbWatch, VerbApply, VerbDelete, VerbCreate, VerbRotate, VerbRevoke}
}

// RBACKinds returns every kind a Role rule may name, except Wildcard: the
// kinds of resources the control plane stores or serves (every known kind
// but Mesh, which only `bulwark up` reads) and the pseudo-kinds JoinToken,
// CA and Operator.
func RBACKinds() []string {
	var out []string
	for _, k := range knownKinds() {
		if k.name != KindMesh {
			out = append(out, k.name)
		}
	}
	return append(out, KindJoinToken, KindCA, KindOperator, KindAuditLog)
}

// IsMeshWideKind reports whether rights on kind exist only mesh-wide (CA,
// Operator, AuditLog): a Role outside RootNamespace cannot grant them.
func IsMeshWideKind(kind string) bool {
	return kind == KindCA || kind == KindOperator || kind == KindAuditLog
}

// IsApplicable reports whether kind is a resource that an operator applies
// to (and deletes from) a control plane: a known kind that is neither
// read-only nor Mesh.
func IsApplicable(kind string) bool {
	k, ok := lookupKind(kind)
	return ok && !k.readOnly && kind != KindMesh
}

// ValidateOperatorName checks an operator name as operator certificates
// carry it: 1 to 64 characters of letters, digits and ".-_@", starting with
// a letter or digit.
func ValidateOperatorName(name string) error {
	if name == "" || len(name) > maxOperatorName {
		return fmt.Errorf("operator name %q: must be 1 to %d characters", name, maxOperatorName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && (i == 0 || c != '.' && c != '-' && c != '_' && c != '@') {
			return fmt.Errorf("operator name %q: only letters, digits and \".-_@\" allowed, starting with a letter or digit", name)
		}
	}
	return nil
}

// Role is a set of rights of operators on the control plane: verbs on
// kinds. A RoleBinding grants them to operators. A Role in RootNamespace,
// bound there, grants its rights in every namespace and mesh-wide (CA,
// operators); anywhere else only in its own namespace. See docs/rbac.md.
type Role struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     RoleSpec   `json:"spec"`
}

// RoleSpec is the body of a Role.
type RoleSpec struct {
	// Rules: the role grants every verb of a rule on every kind of the
	// same rule. At least one rule is required.
	Rules []RoleRule `json:"rules"`
}

// RoleRule grants Verbs on Kinds.
type RoleRule struct {
	// Verbs: get, list, watch, apply, delete, create, rotate, revoke, or
	// "*" for all. At least one is required.
	Verbs []string `json:"verbs"`
	// Kinds: the resource kinds (AuthorizationPolicy, Role, Proxy, ...)
	// and JoinToken, CA, Operator, or "*" for all. At least one is
	// required. CA and Operator only in RootNamespace.
	Kinds []string `json:"kinds"`
}

// GetTypeMeta implements Object.
func (r *Role) GetTypeMeta() *TypeMeta { return &r.TypeMeta }

// GetMetadata implements Object.
func (r *Role) GetMetadata() *ObjectMeta { return &r.Metadata }

// Validate implements Object: every verb and kind must be known.
func (r *Role) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&r.Metadata, &errs)
	if len(r.Spec.Rules) == 0 {
		errs.add("spec.rules", "at least one rule is required")
	}
	verbs, kinds := Verbs(), RBACKinds()
	for i, rule := range r.Spec.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		if len(rule.Verbs) == 0 {
			errs.add(path+".verbs", "at least one verb is required (or %q for all)", Wildcard)
		}
		for j, v := range rule.Verbs {
			if v != Wildcard && !slices.Contains(verbs, v) {
				errs.add(fmt.Sprintf("%s.verbs[%d]", path, j), "unknown verb %q: must be one of %s, or %q", v, strings.Join(verbs, ", "), Wildcard)
			}
		}
		if len(rule.Kinds) == 0 {
			errs.add(path+".kinds", "at least one kind is required (or %q for all)", Wildcard)
		}
		for j, k := range rule.Kinds {
			kpath := fmt.Sprintf("%s.kinds[%d]", path, j)
			switch {
			case k == Wildcard:
			case !slices.Contains(kinds, k):
				errs.add(kpath, "unknown kind %q: must be one of %s, or %q", k, strings.Join(kinds, ", "), Wildcard)
			case IsMeshWideKind(k) && r.Metadata.Namespace != RootNamespace:
				errs.add(kpath, "%s rights are mesh-wide: grant them with a Role in namespace %s", k, RootNamespace)
			}
		}
	}
	return errs
}

// RoleBinding grants the rights of a Role of its namespace to operators.
type RoleBinding struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta      `json:"metadata"`
	Spec     RoleBindingSpec `json:"spec"`
}

// RoleBindingSpec is the body of a RoleBinding.
type RoleBindingSpec struct {
	// Role is the name of a Role in the binding's namespace (never in
	// another one). A binding to a Role that does not exist grants
	// nothing.
	Role string `json:"role"`
	// Operators are the names of the operators granted the role, as their
	// client certificates carry them. At least one is required.
	Operators []string `json:"operators"`
}

// GetTypeMeta implements Object.
func (b *RoleBinding) GetTypeMeta() *TypeMeta { return &b.TypeMeta }

// GetMetadata implements Object.
func (b *RoleBinding) GetMetadata() *ObjectMeta { return &b.Metadata }

// Validate implements Object.
func (b *RoleBinding) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&b.Metadata, &errs)
	if b.Spec.Role == "" {
		errs.add("spec.role", "required: the name of a Role in namespace %s", b.Metadata.Namespace)
	} else if err := identity.ValidateName(b.Spec.Role); err != nil {
		errs.add("spec.role", "%v", err)
	}
	if len(b.Spec.Operators) == 0 {
		errs.add("spec.operators", "at least one operator is required")
	}
	for i, op := range b.Spec.Operators {
		if err := ValidateOperatorName(op); err != nil {
			errs.add(fmt.Sprintf("spec.operators[%d]", i), "%v", err)
		}
	}
	return errs
}
