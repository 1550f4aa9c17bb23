package push_test

// Attacks on what the control plane sends gateways, from a review of the
// ingress gateway. Tests whose name ends in "Holds" pin leaks that do not
// happen; the others reproduce defects and fail until the defect is
// fixed.

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// cartGatewayYAML is a Gateway that takes the name of the mesh service
// shop/cart, whose sidecars hold spiffe://bulwark.local/ns/shop/sa/cart.
const cartGatewayYAML = `apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: cart, namespace: shop}
spec:
  listeners:
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secret: web-tls}]}}
  routes:
  - {name: a, service: orders}
`

// TestAttackGatewayNamedLikeWorkloadService: nothing tells a gateway
// process from a sidecar (both attest with a join token for a service), so
// a Gateway named like an existing mesh service (shop/cart) makes every
// sidecar of that service "the gateway": each gets the Gateway's TLS
// private keys in its snapshot (and keeps them in its data directory), and
// every service of the mesh then treats shop/cart's identity as an edge
// (Inbound.gateways) whose X-Forwarded-For it keeps. The policies
// selecting cart, written for mesh callers, then also decide on requests
// from the internet. Want: the control plane refuses (or at least does
// not serve) a Gateway whose namespace/name is a service with workloads
// other than gateways (push has st.Endpoints: a gateway registers no
// address), or gateways attest as such (a token kind).
func TestAttackGatewayNamedLikeWorkloadService(t *testing.T) {
	st := jwtState(t, nil)
	objs, err := config.Decode([]byte(cartGatewayYAML))
	if err != nil {
		t.Fatal(err)
	}
	js, err := config.Marshal(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	st.Gateways = []push.Gateway{{Gateway: objs[0].(*config.Gateway), JSON: js}}
	st.Secrets = map[string]*config.Secret{"shop/web-tls": tlsSecret("shop", "web-tls", "shop/web-tls")}
	st.GatewayIDs = []string{cartID}
	st.Services = append(st.Services, "shop/cart", "shop/orders")
	// The sidecar registered an address for its app: a gateway never
	// does.
	st.Endpoints = map[string][]push.Endpoint{"shop/cart": {{Address: "10.0.0.7:15001", SPIFFEID: cartID, Instance: "cart-1"}}}
	st.Seal()
	if !containsString(st.Services, "shop/cart") {
		t.Fatalf("bad fixture: shop/cart is not a mesh service: %v", st.Services)
	}
	snap, err := push.Compile(st, push.Node{ID: cartID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("KEY shop/web-tls")) {
		t.Errorf("a sidecar of the mesh service shop/cart received the TLS key of the Gateway shop/cart")
	}
}

// TestAttackGatewaySecretsOfOtherNamespaceHolds: a Gateway names Secrets
// by name only, in its own namespace: a Secret of the same name in
// another namespace never reaches it, nor do Secrets no Gateway names.
func TestAttackGatewaySecretsOfOtherNamespaceHolds(t *testing.T) {
	st := gatewayState(t, "v1")
	st.Secrets["default/web-tls"] = tlsSecret("default", "web-tls", "default/web-tls v1")
	st.Secrets["shop/unnamed"] = tlsSecret("shop", "unnamed", "shop/unnamed v1")
	st.Seal()
	for _, node := range []push.Node{
		{ID: edgeID, Service: identity.ServiceRef{Namespace: "shop", Name: "edge"}},
		{ID: otherID, Service: identity.ServiceRef{Namespace: "shop", Name: "other"}},
		{ID: cartID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}},
		// The gateway's account in another trust domain is not it.
		{ID: "spiffe://evil.example/ns/shop/sa/edge", Service: identity.ServiceRef{Namespace: "shop", Name: "edge"}},
	} {
		snap, err := push.Compile(st, node)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range []string{"default/web-tls", "shop/unnamed", "default/gone"} {
			if bytes.Contains(b, []byte("KEY "+ref)) {
				t.Errorf("%s: the snapshot holds the key of %s", node.ID, ref)
			}
		}
		if node.ID == "spiffe://evil.example/ns/shop/sa/edge" && snap.GetGateway() != nil {
			t.Errorf("%s: got the Gateway of spiffe://bulwark.local/ns/shop/sa/edge", node.ID)
		}
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
