// Package rbac owns the control plane's authorization of operators: from the
// Role and RoleBinding resources it answers whether an operator may do a
// verb on a kind in a namespace, or mesh-wide. It is pure: no I/O, no clock,
// no logging; the admin API reads the resources and asks.
//
// The model (docs/rbac.md):
//
//   - Deny by default: an operator no RoleBinding names may do nothing.
//   - A RoleBinding grants the Role of the same name in its own namespace
//     (never a Role of another namespace) to the operators it lists. A
//     binding whose Role does not exist grants nothing.
//   - A binding in config.RootNamespace grants its Role's rights in every
//     namespace and mesh-wide (namespace ""): CA status and rotation,
//     creating operators. A binding anywhere else grants them only in its
//     namespace, so a namespace admin can neither act in another namespace
//     nor write in the root namespace, whatever it binds.
//   - The operator BuiltinAdmin, whose credential the control plane writes
//     at its first start, may always do everything, so no Role change can
//     lock the mesh out of its own control plane.
package rbac

import (
	"slices"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// BuiltinAdmin is the operator of the bootstrap credential
// (<data-dir>/operator/admin.yaml): it may do everything, everywhere,
// whatever the Roles say. No other operator can be issued this name.
const BuiltinAdmin = "admin"

// MeshWide is the namespace of an action that is not in one namespace
// (CA status and rotation, creating operators, listing across namespaces).
const MeshWide = ""

// grant is what one RoleBinding gives one operator: the rules of a Role,
// in a namespace or (meshWide) everywhere.
type grant struct {
	namespace string
	meshWide  bool
	rules     []config.RoleRule
}

// Authorizer answers authorization questions for one set of Roles and
// RoleBindings. It is immutable after New and safe for concurrent use.
type Authorizer struct {
	grants map[string][]grant
}

// New returns the Authorizer of roles and bindings. Nil entries are
// skipped; the objects are not modified and must not be modified later.
func New(roles []*config.Role, bindings []*config.RoleBinding) *Authorizer {
	type ref struct{ ns, name string }
	byRef := make(map[ref][]config.RoleRule, len(roles))
	for _, r := range roles {
		if r == nil {
			continue
		}
		k := ref{r.Metadata.Namespace, r.Metadata.Name}
		byRef[k] = append(byRef[k], r.Spec.Rules...)
	}
	a := &Authorizer{grants: map[string][]grant{}}
	for _, b := range bindings {
		if b == nil {
			continue
		}
		ns := b.Metadata.Namespace
		rules, ok := byRef[ref{ns, b.Spec.Role}]
		if !ok || ns == MeshWide {
			continue
		}
		g := grant{namespace: ns, meshWide: ns == config.RootNamespace, rules: rules}
		for _, op := range b.Spec.Operators {
			if op != "" {
				a.grants[op] = append(a.grants[op], g)
			}
		}
	}
	return a
}

// Allowed reports whether operator may do verb on kind in namespace
// (MeshWide for an action outside any namespace). It fails closed: an
// unknown operator, verb or kind is refused, and so is everything for a nil
// Authorizer except for BuiltinAdmin.
func (a *Authorizer) Allowed(operator, verb, kind, namespace string) bool {
	if operator == BuiltinAdmin {
		return true
	}
	if a == nil || operator == "" || verb == "" || kind == "" || verb == config.Wildcard || kind == config.Wildcard {
		return false
	}
	for _, g := range a.grants[operator] {
		if !g.meshWide && g.namespace != namespace {
			continue
		}
		for _, r := range g.rules {
			if matches(r.Verbs, verb) && matches(r.Kinds, kind) {
				return true
			}
		}
	}
	return false
}

// matches reports whether list names v or the wildcard.
func matches(list []string, v string) bool {
	for _, x := range list {
		if x == v || x == config.Wildcard {
			return true
		}
	}
	return false
}

// Right is one verb on one kind.
type Right struct {
	Verb, Kind string
}

// Missing returns the rights that rules would grant in namespace (through a
// Role there, bound there) that operator does not hold there itself,
// wildcards expanded to every known verb and kind; nil when operator holds
// them all. The admin API refuses a Role or RoleBinding that would grant
// rights its author lacks, so that a right to write RBAC resources is no
// way to gain more rights (no escalation). Rights that cannot exist in
// namespace (CA and Operator outside the root namespace) are not counted.
func (a *Authorizer) Missing(operator string, rules []config.RoleRule, namespace string) []Right {
	where := namespace
	if namespace == config.RootNamespace {
		// A root Role grants mesh-wide: only mesh-wide rights cover it.
		where = MeshWide
	}
	var out []Right
	for _, r := range rules {
		for _, kind := range expand(r.Kinds, config.RBACKinds()) {
			if config.IsMeshWideKind(kind) && namespace != config.RootNamespace {
				continue
			}
			for _, verb := range expand(r.Verbs, config.Verbs()) {
				right := Right{Verb: verb, Kind: kind}
				if !a.Allowed(operator, verb, kind, where) && !slices.Contains(out, right) {
					out = append(out, right)
				}
			}
		}
	}
	return out
}

// expand returns list with the wildcard replaced by all.
func expand(list, all []string) []string {
	if slices.Contains(list, config.Wildcard) {
		return all
	}
	return list
}

// Namespaces returns the namespaces in which operator may do verb on kind
// by a namespaced grant, and whether it may do so everywhere (a root
// grant, or BuiltinAdmin). Callers filter list answers with it.
func (a *Authorizer) Namespaces(operator, verb, kind string) (namespaces []string, everywhere bool) {
	if a.Allowed(operator, verb, kind, MeshWide) {
		return nil, true
	}
	if a == nil {
		return nil, false
	}
	for _, g := range a.grants[operator] {
		if slices.Contains(namespaces, g.namespace) {
			continue
		}
		if a.Allowed(operator, verb, kind, g.namespace) {
			namespaces = append(namespaces, g.namespace)
		}
	}
	slices.Sort(namespaces)
	return namespaces, false
}
