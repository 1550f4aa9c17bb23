package policycheck

import (
	"cmp"
	"slices"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// Caller is a registered workload identity, which may call services.
type Caller struct {
	// ID is the identity's SPIFFE ID.
	ID string
	// Services are the services ("namespace/name") the identity was
	// attested for; from.services patterns match them.
	Services []string
}

// Destination is a running service that callers may call.
type Destination struct {
	// Service is the destination service.
	Service identity.ServiceRef
	// Instances are the labels of each running instance; empty means one
	// instance without labels.
	Instances []map[string]string
}

// Mesh is the registered part of a mesh that edges are computed over: the
// identities that may call, and the services they may call.
type Mesh struct {
	Callers      []Caller
	Destinations []Destination
}

// Edge is a caller service that may call a destination service: some
// identity serving From may send To at least one request that To's
// policies would allow.
type Edge struct {
	// From is the caller's service, "namespace/name"; the caller's SPIFFE
	// ID when its identity serves no service.
	From string `json:"from"`
	// To is the destination service, "namespace/name".
	To string `json:"to"`
}

// String returns "from -> to".
func (e Edge) String() string { return e.From + " -> " + e.To }

// compareEdges orders edges by destination, then caller.
func compareEdges(a, b Edge) int {
	return cmp.Or(strings.Compare(a.To, b.To), strings.Compare(a.From, b.From))
}

// callerNames returns what a caller is called in edges: its services, or
// its SPIFFE ID when it serves none.
func callerNames(c Caller) []string {
	if len(c.Services) == 0 {
		return []string{c.ID}
	}
	return c.Services
}

// callableBy reports whether caller may send dest at least one request that
// the policies of set allow; froms are those policies' allowIndex.froms of
// dest, which rule out first, cheaply, the callers that no ALLOW rule can
// name. It then takes the control plane's answer (Set.ForCaller: the
// caller's view of dest's policies holds an ALLOW policy) and also counts
// as not callable a caller every ALLOW rule of whose view an enforced DENY
// rule of the view provably overrides (see ruleCovers), such as a DENY of
// every request from that caller. The answer errs towards callable, never
// towards not callable.
func callableBy(set *policy.Set, froms []*config.Source, dest Destination, caller Caller) bool {
	if !slices.ContainsFunc(froms, func(f *config.Source) bool { return fromMayMatch(f, caller) }) {
		return false
	}
	ok, view := set.ForCaller(dest.Service, policy.Source{ID: caller.ID, Services: caller.Services})
	if !ok {
		return false
	}
	for _, a := range view {
		if !isAllow(a) || a.Spec.DryRun {
			continue
		}
		for r := range a.Spec.Rules {
			if !deniedInView(view, a, &a.Spec.Rules[r]) {
				return true
			}
		}
	}
	return false
}

// allowIndex holds the enforced ALLOW policies of a mesh by the service
// or namespace they select, to rule callers out cheaply: a caller that no
// identity-based from of an ALLOW rule selecting a destination can match
// cannot call it.
type allowIndex struct {
	byService   map[identity.ServiceRef][]*config.AuthorizationPolicy
	byNamespace map[string][]*config.AuthorizationPolicy // no selector service
}

// newAllowIndex indexes the enforced ALLOW policies among policies.
func newAllowIndex(policies []*config.AuthorizationPolicy) *allowIndex {
	x := &allowIndex{
		byService:   map[identity.ServiceRef][]*config.AuthorizationPolicy{},
		byNamespace: map[string][]*config.AuthorizationPolicy{},
	}
	for _, p := range policies {
		if p == nil || !isAllow(p) || p.Spec.DryRun {
			continue
		}
		switch svc, ok := p.SelectedService(); {
		case !ok:
			x.byNamespace[p.Metadata.Namespace] = append(x.byNamespace[p.Metadata.Namespace], p)
		case p.Metadata.Namespace != config.RootNamespace:
			x.byService[svc] = append(x.byService[svc], p)
		}
	}
	return x
}

// froms returns the from of every enforced ALLOW rule that selects dest
// (labels ignored, as policy.Set.ForCaller ignores them): a caller that
// none of them may match (fromMayMatch) cannot call dest.
func (x *allowIndex) froms(dest Destination) []*config.Source {
	lists := [3][]*config.AuthorizationPolicy{x.byService[dest.Service], x.byNamespace[dest.Service.Namespace]}
	if dest.Service.Namespace != config.RootNamespace {
		lists[2] = x.byNamespace[config.RootNamespace]
	}
	var out []*config.Source
	for _, l := range lists {
		for _, p := range l {
			for r := range p.Spec.Rules {
				out = append(out, p.Spec.Rules[r].From)
			}
		}
	}
	return out
}

// fromMayMatch reports whether the positive identity-based lists of from
// may match caller: each list given has an entry matching the caller's
// services, SPIFFE ID or namespace. Unknown values match no entry, as in
// the evaluator.
func fromMayMatch(from *config.Source, caller Caller) bool {
	if from == nil {
		return true
	}
	if len(from.Services) > 0 && !slices.ContainsFunc(from.Services, func(p string) bool {
		return slices.ContainsFunc(caller.Services, func(s string) bool { return p == "*" || globMatch(p, s, '/') })
	}) {
		return false
	}
	if len(from.Identities) > 0 && !slices.ContainsFunc(from.Identities, func(p string) bool {
		return caller.ID != "" && (p == "*" || globMatch(p, caller.ID, '/'))
	}) {
		return false
	}
	if len(from.Namespaces) > 0 {
		ns := identityNamespace(caller.ID)
		if ns == "" || !slices.ContainsFunc(from.Namespaces, func(p string) bool { return globMatch(p, ns, 0) }) {
			return false
		}
	}
	return true
}

// deniedInView reports whether an enforced DENY rule of view, of a policy
// selecting at least the workloads allow selects, matches every request
// that rule matches.
func deniedInView(view []*config.AuthorizationPolicy, allow *config.AuthorizationPolicy, rule *config.Rule) bool {
	for _, d := range view {
		if d.Spec.Action != config.ActionDeny || d.Spec.DryRun || !selectionCovers(d, allow) {
			continue
		}
		for dr := range d.Spec.Rules {
			if ruleCovers(&d.Spec.Rules[dr], rule) {
				return true
			}
		}
	}
	return false
}

// selectingAny returns the policies that select one of dests or may select
// one of their instances (whatever their labels), so that a Set of them
// answers for dests as the whole mesh's would. It costs
// O(len(dests) + len(policies)).
func selectingAny(dests []Destination, policies []*config.AuthorizationPolicy) []*config.AuthorizationPolicy {
	services := make(map[identity.ServiceRef]bool, len(dests))
	namespaces := make(map[string]bool, len(dests))
	for _, d := range dests {
		services[d.Service] = true
		namespaces[d.Service.Namespace] = true
	}
	var out []*config.AuthorizationPolicy
	for _, p := range policies {
		if p == nil {
			continue
		}
		ns, svc := p.Metadata.Namespace, p.Spec.Selector.Service
		switch {
		case ns == config.RootNamespace && svc == "":
		case svc == "" && namespaces[ns]:
		case svc != "" && ns != config.RootNamespace && services[identity.ServiceRef{Namespace: ns, Name: svc}]:
		default:
			continue
		}
		out = append(out, p)
	}
	return out
}

// mightSelect reports whether p selects dest or one of its instances. A
// destination without instance labels counts as selected by label
// selectors too, so that the answer errs towards selected.
func mightSelect(p *config.AuthorizationPolicy, dest Destination) bool {
	ns, svc := p.Metadata.Namespace, p.Spec.Selector.Service
	if ns != config.RootNamespace && ns != dest.Service.Namespace {
		return false
	}
	if svc != "" && (ns == config.RootNamespace || svc != dest.Service.Name) {
		return false
	}
	if len(dest.Instances) == 0 || len(p.Spec.Selector.Labels) == 0 {
		return true
	}
	return slices.ContainsFunc(dest.Instances, func(labels map[string]string) bool {
		return p.Selects(dest.Service, labels)
	})
}

// AllowedEdges returns the edges that policies allow between the callers
// and destinations of m, sorted by destination then caller, without
// duplicates.
func AllowedEdges(m Mesh, policies []*config.AuthorizationPolicy) []Edge {
	set, idx := policy.NewSet(policies), newAllowIndex(policies)
	var out []Edge
	for _, d := range m.Destinations {
		froms := idx.froms(d)
		if len(froms) == 0 {
			continue // no ALLOW rule: nobody may call it (fails closed)
		}
		for _, c := range m.Callers {
			if callableBy(set, froms, d, c) {
				for _, from := range callerNames(c) {
					out = append(out, Edge{From: from, To: d.Service.String()})
				}
			}
		}
	}
	slices.SortFunc(out, compareEdges)
	return slices.Compact(out)
}

// DiffEdges compares two edge sets: opened are in after only, cut in
// before only; both sorted by destination then caller.
func DiffEdges(before, after []Edge) (opened, cut []Edge) {
	in := func(set []Edge) map[Edge]bool {
		m := make(map[Edge]bool, len(set))
		for _, e := range set {
			m[e] = true
		}
		return m
	}
	b, a := in(before), in(after)
	for e := range a {
		if !b[e] {
			opened = append(opened, e)
		}
	}
	for e := range b {
		if !a[e] {
			cut = append(cut, e)
		}
	}
	slices.SortFunc(opened, compareEdges)
	slices.SortFunc(cut, compareEdges)
	return opened, cut
}

// Replace returns the policies of current with those of changes put in:
// a policy of changes replaces the one of current with the same namespace
// and name, or is added; the others of current stay. The result is sorted
// by namespace and name. Neither input is modified.
func Replace(current, changes []*config.AuthorizationPolicy) []*config.AuthorizationPolicy {
	byRef := map[string]*config.AuthorizationPolicy{}
	for _, p := range current {
		if p != nil {
			byRef[config.Ref(p)] = p
		}
	}
	for _, p := range changes {
		if p != nil {
			byRef[config.Ref(p)] = p
		}
	}
	return sortedPolicies(byRef)
}

// Remove returns the policies of current without those named by refs
// ("namespace/name"), sorted by namespace and name.
func Remove(current []*config.AuthorizationPolicy, refs []string) []*config.AuthorizationPolicy {
	byRef := map[string]*config.AuthorizationPolicy{}
	for _, p := range current {
		if p != nil {
			byRef[config.Ref(p)] = p
		}
	}
	for _, r := range refs {
		delete(byRef, r)
	}
	return sortedPolicies(byRef)
}

// sortedPolicies returns the values of byRef in order of ref.
func sortedPolicies(byRef map[string]*config.AuthorizationPolicy) []*config.AuthorizationPolicy {
	out := make([]*config.AuthorizationPolicy, 0, len(byRef))
	for _, p := range byRef {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *config.AuthorizationPolicy) int { return strings.Compare(config.Ref(a), config.Ref(b)) })
	return out
}

// EdgeSource is one origin of the edges that `bulwark policy diff`
// compares: its edges under the live policies (before) and under the
// changed ones (after). The policy source (PolicySource) computes both
// from the policies; the observed source (ObservedSource) from the
// requests proxies reported, decided under both.
type EdgeSource struct {
	// Name labels the source in the output, such as "policy".
	Name string
	// Edges returns the source's edges before and after the change.
	Edges func(m Mesh, live, next []*config.AuthorizationPolicy) (before, after []Edge)
}

// PolicySource is the EdgeSource of the edges that the policies allow
// between the registered callers and the running services of the mesh.
func PolicySource() EdgeSource {
	return EdgeSource{
		Name: "policy",
		Edges: func(m Mesh, live, next []*config.AuthorizationPolicy) (before, after []Edge) {
			return AllowedEdges(m, live), AllowedEdges(m, next)
		},
	}
}
