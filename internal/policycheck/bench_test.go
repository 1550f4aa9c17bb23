package policycheck_test

import (
	"fmt"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

// benchMesh is n services in 10 namespaces, each callable by the next one
// of its namespace, and n callers, one per service.
func benchMesh(n int) (policycheck.Mesh, []*config.AuthorizationPolicy) {
	var m policycheck.Mesh
	var pols []*config.AuthorizationPolicy
	for i := range n {
		ns := fmt.Sprintf("ns%d", i%10)
		svc := fmt.Sprintf("svc%d", i)
		caller := fmt.Sprintf("svc%d", (i+10)%n)
		m.Destinations = append(m.Destinations, policycheck.Destination{Service: identity.ServiceRef{Namespace: ns, Name: svc}})
		m.Callers = append(m.Callers, policycheck.Caller{ID: "spiffe://bulwark.local/ns/" + ns + "/sa/" + svc, Services: []string{ns + "/" + svc}})
		pols = append(pols, &config.AuthorizationPolicy{
			Metadata: config.ObjectMeta{Name: svc + "-callers", Namespace: ns},
			Spec: config.AuthorizationPolicySpec{Action: config.ActionAllow, Selector: config.PolicySelector{Service: svc},
				Rules: []config.Rule{{From: &config.Source{Services: []string{ns + "/" + caller}}, To: &config.Operation{Methods: []string{"GET"}}}}},
		})
	}
	return m, pols
}

// BenchmarkLockouts: the lock-out check of one apply in a mesh of 1000
// services and 1000 callers, for a change of one service's policy and for a
// mesh-wide DENY (which every service's check must consider).
func BenchmarkLockouts(b *testing.B) {
	m, pols := benchMesh(1000)
	one := policycheck.Replace(pols, []*config.AuthorizationPolicy{{
		Metadata: config.ObjectMeta{Name: "svc5-callers", Namespace: "ns5"},
		Spec: config.AuthorizationPolicySpec{Action: config.ActionAllow, Selector: config.PolicySelector{Service: "svc5"},
			Rules: []config.Rule{{From: &config.Source{Services: []string{"ns5/svc15", "ns5/svc25"}}}}},
	}})
	meshWide := policycheck.Replace(pols, []*config.AuthorizationPolicy{{
		Metadata: config.ObjectMeta{Name: "no-deletes", Namespace: config.RootNamespace},
		Spec: config.AuthorizationPolicySpec{Action: config.ActionDeny,
			Rules: []config.Rule{{To: &config.Operation{Methods: []string{"DELETE"}}}}},
	}})
	for _, bc := range []struct {
		name string
		next []*config.AuthorizationPolicy
	}{{"one_service", one}, {"mesh_wide_deny", meshWide}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if got := policycheck.Lockouts(m, pols, bc.next); len(got) != 0 {
					b.Fatalf("lockouts: %v", got)
				}
			}
		})
	}
}

// BenchmarkAllowedEdges: the edges of `policy diff` for 1000 services and
// 1000 callers.
func BenchmarkAllowedEdges(b *testing.B) {
	m, pols := benchMesh(1000)
	for b.Loop() {
		if got := policycheck.AllowedEdges(m, pols); len(got) != 1000 {
			b.Fatalf("got %d edges, want 1000", len(got))
		}
	}
}
