package push_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// TestGatewayNamedLikeServiceWithEndpoints: a Gateway whose name is a
// service with endpoints (shop/other here: a workload registered an
// address, a gateway never does) gets no gateway section, and its identity
// leaves Inbound.gateways; the other Gateways are served as before.
func TestGatewayNamedLikeServiceWithEndpoints(t *testing.T) {
	st := gatewayState(t, "v1")
	st.Endpoints = map[string][]push.Endpoint{"shop/other": {{Address: "10.0.0.9:15001", SPIFFEID: otherID, Instance: "other-1"}}}
	st.Seal()
	if !st.ShadowedGateway(st.Gateways[1].Gateway) || st.ShadowedGateway(st.Gateways[0].Gateway) {
		t.Fatalf("ShadowedGateway: got %v, %v, want false for shop/edge, true for shop/other",
			st.ShadowedGateway(st.Gateways[0].Gateway), st.ShadowedGateway(st.Gateways[1].Gateway))
	}
	for _, tt := range []struct {
		node        push.Node
		wantGateway bool
	}{
		{push.Node{ID: edgeID, Service: identity.ServiceRef{Namespace: "shop", Name: "edge"}}, true},
		{push.Node{ID: otherID, Service: identity.ServiceRef{Namespace: "shop", Name: "other"}}, false},
	} {
		snap, err := push.Compile(st, tt.node)
		if err != nil {
			t.Fatal(err)
		}
		if got := snap.GetGateway() != nil; got != tt.wantGateway {
			t.Errorf("%s: got a gateway section %v, want %v", tt.node.ID, got, tt.wantGateway)
		}
		if diff := cmp.Diff([]string{edgeID}, snap.GetInbound().GetGateways()); diff != "" {
			t.Errorf("%s: Inbound.gateways (-want +got):\n%s", tt.node.ID, diff)
		}
	}
}
