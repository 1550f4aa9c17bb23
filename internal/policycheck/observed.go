package policycheck

import (
	"slices"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// Observed is one kind of request that proxies observed (a service-graph
// edge, config.Edge): a caller identity, a destination service, a method
// and a path template.
type Observed struct {
	// Source is the caller's SPIFFE ID.
	Source string
	// Destination is the called service.
	Destination identity.ServiceRef
	Method      string
	// Path is the path template ("*" for identifier segments, matched as
	// the literal segment "*"); "" for a TCP tunnel (method CONNECT).
	Path string
}

// ObservedFromEdges returns the requests of edges that a proxy let
// through (at least one request not denied), skipping egress hosts and
// edges of callers without a SPIFFE ID.
func ObservedFromEdges(edges []*config.Edge) []Observed {
	var out []Observed
	for _, e := range edges {
		st := &e.Status
		if st.Requests <= st.Denied || st.Source == "" {
			continue
		}
		dest, err := identity.ParseServiceRef(st.Destination, "")
		if err != nil || dest.String() != st.Destination {
			continue // an egress host
		}
		out = append(out, Observed{Source: st.Source, Destination: dest, Method: st.Method, Path: st.Path})
	}
	return out
}

// ObservedSource is the EdgeSource of observed traffic ("observed"):
// before are the caller -> destination edges of the observed requests that
// the live policies allow, after those of them that the changed policies
// still allow. Each request is decided as the callee's proxy decides it
// (Index.Decide) with what an edge records: the caller's identity (and the
// services m says it serves), the method and the path template. What an
// edge does not record (JWT principals, client IPs, hosts, headers for
// when conditions) is unknown, so rules that need it match nothing, as in
// the proxy; a destination whose instances carry labels counts as allowing
// a request when one of its instances does.
func ObservedSource(observed []Observed) EdgeSource {
	return EdgeSource{
		Name: "observed",
		Edges: func(m Mesh, live, next []*config.AuthorizationPolicy) (before, after []Edge) {
			services := make(map[string][]string, len(m.Callers))
			for _, c := range m.Callers {
				services[c.ID] = c.Services
			}
			instances := make(map[identity.ServiceRef][]map[string]string, len(m.Destinations))
			for _, d := range m.Destinations {
				instances[d.Service] = d.Instances
			}
			liveSet, nextSet := newDecider(live), newDecider(next)
			for _, o := range observed {
				req := &policy.Request{
					Source: policy.Source{ID: o.Source, Services: services[o.Source]},
					Method: o.Method, Path: o.Path,
				}
				if !liveSet.allows(o.Destination, instances[o.Destination], req) {
					continue
				}
				edges := observedEdges(o, services[o.Source])
				before = append(before, edges...)
				if nextSet.allows(o.Destination, instances[o.Destination], req) {
					after = append(after, edges...)
				}
			}
			slices.SortFunc(before, compareEdges)
			slices.SortFunc(after, compareEdges)
			return slices.Compact(before), slices.Compact(after)
		},
	}
}

// observedEdges names the edges of one observed request as AllowedEdges
// names them: per service of the caller, or by its SPIFFE ID.
func observedEdges(o Observed, services []string) []Edge {
	names := callerNames(Caller{ID: o.Source, Services: services})
	out := make([]Edge, len(names))
	for i, n := range names {
		out[i] = Edge{From: n, To: o.Destination.String()}
	}
	return out
}

// decider decides requests against one policy set, compiling each
// workload's index once.
type decider struct {
	set     *policy.Set
	indexes map[string]*policy.Index
}

func newDecider(policies []*config.AuthorizationPolicy) *decider {
	return &decider{set: policy.NewSet(policies), indexes: map[string]*policy.Index{}}
}

// allows reports whether one instance of dest (any of instances; one
// without labels when there are none) allows req. A policy set that does
// not compile allows nothing.
func (d *decider) allows(dest identity.ServiceRef, instances []map[string]string, req *policy.Request) bool {
	if len(instances) == 0 {
		instances = []map[string]string{nil}
	}
	for _, labels := range instances {
		w := policy.Workload{Service: dest, Labels: labels}
		key := dest.String() + "\x00" + labelsKey(labels)
		ix, ok := d.indexes[key]
		if !ok {
			var err error
			if ix, err = d.set.Compile(w); err != nil {
				ix = nil
			}
			d.indexes[key] = ix
		}
		if ix != nil && ix.Decide(req).Allow {
			return true
		}
	}
	return false
}

// labelsKey is a stable key of a label set.
func labelsKey(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b []byte
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, labels[k]...)
		b = append(b, 0)
	}
	return string(b)
}
