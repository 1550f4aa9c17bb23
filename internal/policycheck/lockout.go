package policycheck

import (
	"reflect"
	"slices"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// Lockout is a service that a policy change would leave without any
// caller, although it has at least one now.
type Lockout struct {
	// Service is the destination, "namespace/name".
	Service string `json:"service"`
	// Lost are the callers it has now (their services, or SPIFFE IDs for
	// identities that serve none), sorted.
	Lost []string `json:"lost"`
}

// String returns "ns/svc would lose every caller: ns/a, ns/b".
func (l Lockout) String() string {
	return l.Service + " would lose every caller: " + strings.Join(l.Lost, ", ")
}

// Lockouts returns the destinations of m that have at least one caller
// under current and would have none under next, sorted by service. A
// caller of m is a caller of a destination when policy.Set.ForCaller finds
// it callable and the DENY rules of its view do not provably override
// every ALLOW rule of it (so a DENY of every request from a caller cuts it
// too). Only destinations that a changed policy selects (in either
// version) are examined, so the cost follows the size of the change, not
// of the mesh. A service that has no caller now is never reported: a
// change cannot lock out what is already closed.
func Lockouts(m Mesh, current, next []*config.AuthorizationPolicy) []Lockout {
	changed := changedPolicies(current, next)
	if len(changed) == 0 {
		return nil
	}
	var affected []Destination
	for _, d := range m.Destinations {
		if slices.ContainsFunc(changed, func(p *config.AuthorizationPolicy) bool { return mightSelect(p, d) }) {
			affected = append(affected, d)
		}
	}
	if len(affected) == 0 {
		return nil
	}
	cur, nxt := selectingAny(affected, current), selectingAny(affected, next)
	before, beforeIdx := policy.NewSet(cur), newAllowIndex(cur)
	after, afterIdx := policy.NewSet(nxt), newAllowIndex(nxt)
	var out []Lockout
	for _, d := range affected {
		beforeFroms, afterFroms := beforeIdx.froms(d), afterIdx.froms(d)
		if slices.ContainsFunc(m.Callers, func(c Caller) bool { return callableBy(after, afterFroms, d, c) }) {
			continue // it keeps a caller
		}
		var lost []string
		for _, c := range m.Callers {
			if callableBy(before, beforeFroms, d, c) {
				lost = append(lost, callerNames(c)...)
			}
		}
		if len(lost) == 0 {
			continue // it had none: nothing to lose
		}
		slices.Sort(lost)
		out = append(out, Lockout{Service: d.Service.String(), Lost: slices.Compact(lost)})
	}
	slices.SortFunc(out, func(a, b Lockout) int { return strings.Compare(a.Service, b.Service) })
	return out
}

// changedPolicies returns the policies that differ between a and b: the
// versions in a and b of every policy added, removed or changed.
func changedPolicies(a, b []*config.AuthorizationPolicy) []*config.AuthorizationPolicy {
	index := func(ps []*config.AuthorizationPolicy) map[string]*config.AuthorizationPolicy {
		m := make(map[string]*config.AuthorizationPolicy, len(ps))
		for _, p := range ps {
			if p != nil {
				m[config.Ref(p)] = p
			}
		}
		return m
	}
	ia, ib := index(a), index(b)
	var out []*config.AuthorizationPolicy
	for ref, pa := range ia {
		pb, ok := ib[ref]
		switch {
		case !ok:
			out = append(out, pa)
		case !reflect.DeepEqual(pa.Spec, pb.Spec):
			out = append(out, pa, pb)
		}
	}
	for ref, pb := range ib {
		if _, ok := ia[ref]; !ok {
			out = append(out, pb)
		}
	}
	return out
}
