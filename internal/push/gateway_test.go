package push_test

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// gatewayYAML are the Gateways of the test mesh:
//   - shop/edge names the Secrets web-tls, api-tls (twice) and gone (which
//     does not exist), and the JWTProviders shop-idp (in shop), mesh-b (in
//     bulwark-system only) and nope (nowhere);
//   - shop/other names the Secret other-tls only.
const gatewayYAML = `apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  listeners:
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secret: web-tls}, {secret: api-tls}, {secret: gone}]}}
  - {name: alt, port: 9443, protocol: HTTPS, tls: {certificates: [{secret: api-tls}]}}
  - {name: http, port: 8080, protocol: HTTP}
  routes:
  - {name: a, service: cart, jwt: {providers: [shop-idp, mesh-b]}}
  - {name: b, service: cart, hosts: [b.example.com], jwt: {providers: [nope, shop-idp]}}
---
apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: other, namespace: shop}
spec:
  listeners:
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secret: other-tls}]}}
  routes:
  - {name: a, service: cart}
`

const (
	edgeID  = "spiffe://bulwark.local/ns/shop/sa/edge"
	otherID = "spiffe://bulwark.local/ns/shop/sa/other"
)

// tlsSecret returns a Secret of ns/name whose data are marked with mark.
func tlsSecret(ns, name, mark string) *config.Secret {
	return &config.Secret{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindSecret},
		Metadata: config.ObjectMeta{Namespace: ns, Name: name},
		Type:     config.SecretTypeTLS,
		Data: map[string][]byte{
			config.SecretKeyTLSCert: []byte("CERT " + mark),
			config.SecretKeyTLSKey:  []byte("KEY " + mark),
		},
	}
}

// gatewayState returns the JWT test mesh with gatewayYAML's Gateways and
// the Secrets shop/web-tls, shop/api-tls, shop/other-tls and default/gone
// (another namespace's), each marked with its ref and mark.
func gatewayState(t *testing.T, mark string) *push.State {
	t.Helper()
	st := jwtState(t, nil)
	objs, err := config.Decode([]byte(gatewayYAML))
	if err != nil {
		t.Fatalf("bad fixture: %v", err)
	}
	for _, o := range objs {
		js, err := config.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		st.Gateways = append(st.Gateways, push.Gateway{Gateway: o.(*config.Gateway), JSON: js})
	}
	st.Secrets = map[string]*config.Secret{}
	for _, ref := range [][2]string{{"shop", "web-tls"}, {"shop", "api-tls"}, {"shop", "other-tls"}, {"default", "gone"}} {
		st.Secrets[ref[0]+"/"+ref[1]] = tlsSecret(ref[0], ref[1], ref[0]+"/"+ref[1]+" "+mark)
	}
	// A Secret that did not open (data nil) is not sent.
	st.Secrets["shop/sealed"] = &config.Secret{Metadata: config.ObjectMeta{Namespace: "shop", Name: "sealed"}, Type: config.SecretTypeTLS}
	st.GatewayIDs = []string{otherID, edgeID}
	st.Seal()
	return st
}

// gatewayView is the gateway section of a snapshot in a comparable form.
type gatewayView struct {
	Resource  string   // ref of the Gateway
	Secrets   []string // "name: cert | key"
	Providers []string // refs
}

func viewGateway(t *testing.T, g *apiv1.GatewayConfig) *gatewayView {
	t.Helper()
	if g == nil {
		return nil
	}
	o, err := config.DecodeObject(g.GetResource())
	if err != nil {
		t.Fatalf("the pushed Gateway does not decode: %v", err)
	}
	v := &gatewayView{Resource: config.Ref(o)}
	for _, s := range g.GetSecrets() {
		v.Secrets = append(v.Secrets, s.GetName()+": "+string(s.GetCertPem())+" | "+string(s.GetKeyPem()))
	}
	for _, p := range g.GetJwtProviders() {
		o, err := config.DecodeObject(p.GetResource())
		if err != nil {
			t.Fatalf("a pushed provider does not decode: %v", err)
		}
		if want := "keys of " + config.Ref(o); string(p.GetJwks()) != want {
			t.Errorf("%s: got keys %q, want %q", config.Ref(o), p.GetJwks(), want)
		}
		v.Providers = append(v.Providers, config.Ref(o))
	}
	return v
}

func TestCompileGateway(t *testing.T) {
	st := gatewayState(t, "v1")
	edge := identity.ServiceRef{Namespace: "shop", Name: "edge"}
	tests := []struct {
		name string
		node push.Node
		want *gatewayView
	}{
		{name: "edge", node: push.Node{ID: edgeID, Service: edge}, want: &gatewayView{
			Resource: "shop/edge",
			Secrets:  []string{"api-tls: CERT shop/api-tls v1 | KEY shop/api-tls v1", "web-tls: CERT shop/web-tls v1 | KEY shop/web-tls v1"},
			// mesh-b from bulwark-system (none in shop); nope is nowhere.
			Providers: []string{"bulwark-system/mesh-b", "shop/shop-idp"},
		}},
		{name: "other", node: push.Node{ID: otherID, Service: identity.ServiceRef{Namespace: "shop", Name: "other"}}, want: &gatewayView{
			Resource: "shop/other",
			Secrets:  []string{"other-tls: CERT shop/other-tls v1 | KEY shop/other-tls v1"},
		}},
		// A sidecar of the gateway's namespace gets nothing.
		{name: "sidecar", node: push.Node{ID: cartID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}}},
		// A workload attested for the gateway's service under another
		// account is not the gateway.
		{name: "impostor_account", node: push.Node{ID: "spiffe://bulwark.local/ns/shop/sa/cart", Service: edge}},
		// The gateway's identity for another service is not the gateway
		// either (its service decides).
		{name: "gateway_id_other_service", node: push.Node{ID: edgeID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}}},
		// Same name, another namespace: no Gateway there.
		{name: "other_namespace", node: push.Node{ID: "spiffe://bulwark.local/ns/default/sa/edge", Service: identity.ServiceRef{Namespace: "default", Name: "edge"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := push.Compile(st, tt.node)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, viewGateway(t, snap.GetGateway())); diff != "" {
				t.Errorf("gateway (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{edgeID, otherID}, snap.GetInbound().GetGateways()); diff != "" {
				t.Errorf("inbound gateways (-want +got):\n%s", diff)
			}
			// Least knowledge: no key of a Secret the node was not sent
			// appears anywhere in its snapshot.
			b, err := proto.Marshal(snap)
			if err != nil {
				t.Fatal(err)
			}
			sent := map[string]bool{}
			for _, s := range snap.GetGateway().GetSecrets() {
				sent["shop/"+s.GetName()] = true
			}
			for ref := range st.Secrets {
				if !sent[ref] && bytes.Contains(b, []byte("KEY "+ref)) {
					t.Errorf("the snapshot holds the key of %s", ref)
				}
			}
		})
	}
}

// TestCompileGatewayChanges: a Secret's rotation changes the gateway's
// snapshot (the hub pushes it) and no other node's.
func TestCompileGatewayChanges(t *testing.T) {
	before, after := gatewayState(t, "v1"), gatewayState(t, "v2")
	nodes := map[string]push.Node{
		"edge":    {ID: edgeID, Service: identity.ServiceRef{Namespace: "shop", Name: "edge"}},
		"other":   {ID: otherID, Service: identity.ServiceRef{Namespace: "shop", Name: "other"}},
		"sidecar": {ID: cartID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}},
	}
	// Every Secret is marked v2 in after: edge and other change, the
	// sidecar does not.
	want := map[string]bool{"edge": true, "other": true, "sidecar": false}
	for name, node := range nodes {
		a, err := push.Compile(before, node)
		if err != nil {
			t.Fatal(err)
		}
		b, err := push.Compile(after, node)
		if err != nil {
			t.Fatal(err)
		}
		if got := !proto.Equal(a, b); got != want[name] {
			t.Errorf("%s: snapshot changed = %v, want %v", name, got, want[name])
		}
	}
}

func TestGatewayNames(t *testing.T) {
	objs, err := config.Decode([]byte(gatewayYAML))
	if err != nil {
		t.Fatal(err)
	}
	g := objs[0].(*config.Gateway)
	if diff := cmp.Diff([]string{"api-tls", "gone", "web-tls"}, push.GatewaySecretNames(g)); diff != "" {
		t.Errorf("secret names (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"mesh-b", "nope", "shop-idp"}, push.GatewayJWTProviderNames(g)); diff != "" {
		t.Errorf("provider names (-want +got):\n%s", diff)
	}
}
