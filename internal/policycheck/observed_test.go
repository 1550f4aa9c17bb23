package policycheck_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

func observedEdge(source, dest, method, path string, requests, denied int64) *config.Edge {
	return &config.Edge{Status: config.EdgeStatus{Source: source, Destination: dest, Method: method, Path: path, Requests: requests, Denied: denied}}
}

const (
	webID   = "spiffe://bulwark.local/ns/shop/sa/web"
	batchID = "spiffe://bulwark.local/ns/shop/sa/batch"
	apiID   = "spiffe://bulwark.local/ns/shop/sa/api"
	rogueID = "spiffe://bulwark.local/ns/shop/sa/rogue"
)

// The observed source cuts what real traffic would lose, at the level of
// requests: narrowing web's rule to GET keeps nothing web was seen doing
// if web only sent GETs, and cuts batch's observed POST.
func TestObservedSource(t *testing.T) {
	observed := policycheck.ObservedFromEdges([]*config.Edge{
		observedEdge(webID, "shop/api", "GET", "/items/*", 120, 0),
		observedEdge(batchID, "shop/api", "POST", "/import", 5, 0),
		observedEdge(apiID, "shop/db", "CONNECT", "", 3, 0),
		// Denied on every request: not traffic a change can cut.
		observedEdge(rogueID, "shop/api", "GET", "/admin", 50, 50),
		// Egress: not a mesh service.
		observedEdge(webID, "example.com:443", "CONNECT", "", 2, 0),
	})
	if got, want := len(observed), 3; got != want {
		t.Fatalf("got %d observed requests, want %d: %+v", got, want, observed)
	}
	src := policycheck.ObservedSource(observed)
	if src.Name != "observed" {
		t.Errorf("got name %q, want observed", src.Name)
	}
	live := policies(t, shopPolicies)
	tests := []struct {
		name       string
		change     string
		wantBefore []policycheck.Edge
		wantCut    []policycheck.Edge
	}{
		{
			name: "web narrowed to what it does: nothing cut",
			change: `
metadata: {name: api-callers, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
    to: {methods: [GET], paths: ["/items/*"]}
  - from: {services: [shop/batch]}
    to: {methods: [POST]}`,
		},
		{
			name: "batch's POST no longer allowed: batch -> api cut",
			change: `
metadata: {name: api-callers, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
  - from: {services: [shop/batch]}
    to: {methods: [GET]}`,
			wantCut: []policycheck.Edge{{From: "shop/batch", To: "shop/api"}},
		},
		{
			name: "a DENY of /items for everyone cuts web but not batch",
			change: `
metadata: {name: no-items, namespace: shop}
spec:
  selector: {service: api}
  action: DENY
  rules:
  - to: {paths: ["/items/*"]}`,
			wantCut: []policycheck.Edge{{From: "shop/web", To: "shop/api"}},
		},
	}
	wantBefore := []policycheck.Edge{
		{From: "shop/batch", To: "shop/api"},
		{From: "shop/web", To: "shop/api"},
		{From: "shop/api", To: "shop/db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, after := src.Edges(shop, live, policycheck.Replace(live, policies(t, tt.change)))
			if diff := cmp.Diff(wantBefore, before); diff != "" {
				t.Errorf("before (-want +got):\n%s", diff)
			}
			opened, cut := policycheck.DiffEdges(before, after)
			if opened != nil {
				t.Errorf("got opened %v, want none (observed traffic only shrinks)", opened)
			}
			if diff := cmp.Diff(tt.wantCut, cut); diff != "" {
				t.Errorf("cut (-want +got):\n%s", diff)
			}
		})
	}
}
