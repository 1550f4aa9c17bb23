package policy

import (
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// Set is a mesh's policies indexed by the workloads they can select: by
// selected service, by namespace (namespace-wide policies) and mesh-wide
// (config.RootNamespace), each policy compiled once. Finding the policies
// of one workload costs in proportion to the policies that select its
// service, not to the size of the mesh. A Set is immutable and safe for
// concurrent use; a nil *Set holds no policies.
type Set struct {
	// byService holds the policies with a selector.service; byNamespace
	// the others, by namespace (RootNamespace: mesh-wide). Each list is in
	// order of name, then namespace.
	byService   map[identity.ServiceRef][]*setEntry
	byNamespace map[string][]*setEntry
}

// setEntry is one policy of a Set and its compiled form, or the error
// compiling it gave.
type setEntry struct {
	p   *config.AuthorizationPolicy
	cp  *compiledPolicy
	err error
}

// NewSet indexes and compiles policies (nil entries are skipped). The
// policies must be validated and must not change afterwards: the Set refers
// to them. A policy that does not compile (see Compile) is kept, and its
// error returned by Set.Compile for the workloads it selects. A policy of
// the root namespace that names a service selects nothing (validation
// rejects it) and is left out.
func NewSet(policies []*config.AuthorizationPolicy) *Set {
	s := &Set{
		byService:   make(map[identity.ServiceRef][]*setEntry),
		byNamespace: make(map[string][]*setEntry),
	}
	for _, p := range policies {
		if p == nil {
			continue
		}
		e := &setEntry{p: p}
		e.cp, e.err = compilePolicy(p)
		switch svc, ok := p.SelectedService(); {
		case !ok:
			s.byNamespace[p.Metadata.Namespace] = append(s.byNamespace[p.Metadata.Namespace], e)
		case p.Metadata.Namespace != config.RootNamespace:
			s.byService[svc] = append(s.byService[svc], e)
		}
	}
	for _, l := range s.byService {
		sortPolicies(l, entryKey)
	}
	for _, l := range s.byNamespace {
		sortPolicies(l, entryKey)
	}
	return s
}

// entryKey is the sort key of a set entry.
func entryKey(e *setEntry) (name, namespace string) { return policyKey(e.p) }

// eachCandidate yields the entries that select some instance of svc, in
// order of name, then namespace, merging the set's sorted lists without
// allocating.
func (s *Set) eachCandidate(svc identity.ServiceRef) func(yield func(*setEntry) bool) {
	return func(yield func(*setEntry) bool) {
		if s == nil {
			return
		}
		lists := [3][]*setEntry{s.byService[svc], s.byNamespace[svc.Namespace]}
		if svc.Namespace != config.RootNamespace {
			lists[2] = s.byNamespace[config.RootNamespace]
		}
		for {
			next := -1
			for i, l := range lists {
				if len(l) > 0 && (next < 0 || entryLess(l[0], lists[next][0])) {
					next = i
				}
			}
			if next < 0 {
				return
			}
			e := lists[next][0]
			lists[next] = lists[next][1:]
			if !yield(e) {
				return
			}
		}
	}
}

// entryLess orders entries by name, then namespace.
func entryLess(a, b *setEntry) bool {
	if a.p.Metadata.Name != b.p.Metadata.Name {
		return a.p.Metadata.Name < b.p.Metadata.Name
	}
	return a.p.Metadata.Namespace < b.p.Metadata.Namespace
}

// selecting returns the entries that select w.
func (s *Set) selecting(w Workload) []*setEntry {
	var out []*setEntry
	for e := range s.eachCandidate(w.Service) {
		if e.p.Selects(w.Service, w.Labels) {
			out = append(out, e)
		}
	}
	return out
}

// Selecting returns the policies that select w, in order of name, then
// namespace: those Compile(w, every policy of the set) would keep.
func (s *Set) Selecting(w Workload) []*config.AuthorizationPolicy {
	es := s.selecting(w)
	if len(es) == 0 {
		return nil
	}
	out := make([]*config.AuthorizationPolicy, len(es))
	for i, e := range es {
		out[i] = e.p
	}
	return out
}

// Compile returns the Index of the policies that select w, as Compile(w,
// every policy of the set) does, reusing the set's compiled policies.
func (s *Set) Compile(w Workload) (*Index, error) {
	es := s.selecting(w)
	cps := make([]*compiledPolicy, 0, len(es))
	for _, e := range es {
		if e.err != nil {
			return nil, e.err
		}
		cps = append(cps, e.cp)
	}
	return newIndex(cps), nil
}
