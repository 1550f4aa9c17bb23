package control_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// TestGatewayNamedLikeServiceNote: a Gateway named like a service with
// endpoints is noted once (and nothing else is noted about it: it is not
// served).
func TestGatewayNamedLikeServiceNote(t *testing.T) {
	objs, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: cart, namespace: shop}
spec:
  listeners:
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secret: gone}]}}
  routes:
  - {name: a, service: orders}
`))
	if err != nil {
		t.Fatal(err)
	}
	st := &push.State{
		Gateways:  []push.Gateway{{Gateway: objs[0].(*config.Gateway)}},
		Endpoints: map[string][]push.Endpoint{"shop/cart": {{Address: "10.0.0.7:15001", SPIFFEID: "spiffe://bulwark.test/ns/shop/sa/cart"}}},
	}
	want := []string{"shop/cart: gateway has the name of a service with endpoints; it gets no gateway configuration: "}
	if diff := cmp.Diff(want, control.GatewayNotes(st)); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
}
