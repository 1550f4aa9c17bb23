package push_test

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// jwtProviders are the JWT providers of the test mesh, each with a
// distinct fake key document:
//   - default/api-idp: issuer a, selects service api.
//   - default/ns-wide: issuer b, every workload of default.
//   - bulwark-system/mesh-b: issuer b, every workload of the mesh; for
//     default's workloads ns-wide (same issuer, own namespace) applies.
//   - default/canary: issuer c, workloads labeled track=canary.
//   - shop/shop-idp: issuer d, every workload of shop.
const jwtProviders = `apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: api-idp}
spec: {selector: {service: api}, issuer: a, jwksURI: "https://a.example/jwks"}
---
apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: ns-wide}
spec: {issuer: b, jwksURI: "https://b.example/jwks"}
---
apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: mesh-b, namespace: bulwark-system}
spec: {issuer: b, jwksURI: "https://b.example/jwks"}
---
apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: canary}
spec: {selector: {labels: {track: canary}}, issuer: c, jwksURI: "https://c.example/jwks"}
---
apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: shop-idp, namespace: shop}
spec: {issuer: d, jwksURI: "https://d.example/jwks"}
`

// jwtState returns a sealed State holding jwtProviders, each with keys
// "keys of <ns/name>" (keysOf overrides them).
func jwtState(t *testing.T, keysOf map[string]string) *push.State {
	t.Helper()
	objs, err := config.Decode([]byte(jwtProviders))
	if err != nil {
		t.Fatal(err)
	}
	st := &push.State{Revision: 7}
	for _, o := range objs {
		p := o.(*config.JWTProvider)
		js, err := config.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		keys := "keys of " + config.Ref(p)
		if k, ok := keysOf[config.Ref(p)]; ok {
			keys = k
		}
		st.JWTProviders = append(st.JWTProviders, push.JWTProvider{Provider: p, JSON: js, JWKS: []byte(keys)})
	}
	st.Seal()
	return st
}

func TestCompileJWTProviders(t *testing.T) {
	st := jwtState(t, nil)
	tests := []struct {
		name string
		node push.Node
		want []string // refs of the providers in the snapshot, in order
	}{
		{name: "api_canary", node: push.Node{ID: apiID, Service: identity.ServiceRef{Namespace: "default", Name: "api"}, Labels: map[string]string{"track": "canary"}}, want: []string{"default/api-idp", "default/canary", "default/ns-wide"}},
		{name: "api_stable", node: push.Node{ID: apiID, Service: identity.ServiceRef{Namespace: "default", Name: "api"}, Labels: map[string]string{"track": "stable"}}, want: []string{"default/api-idp", "default/ns-wide"}},
		{name: "web", node: push.Node{ID: webID, Service: identity.ServiceRef{Namespace: "default", Name: "web"}}, want: []string{"default/ns-wide"}},
		{name: "shop_cart", node: push.Node{ID: cartID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}}, want: []string{"shop/shop-idp", "bulwark-system/mesh-b"}},
		{name: "other_namespace", node: push.Node{ID: "spiffe://bulwark.local/ns/ops/sa/x", Service: identity.ServiceRef{Namespace: "ops", Name: "x"}}, want: []string{"bulwark-system/mesh-b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := push.Compile(st, tt.node)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range snap.GetJwtProviders() {
				o, err := config.DecodeObject(p.GetResource())
				if err != nil {
					t.Fatalf("a pushed provider does not decode: %v", err)
				}
				ref := config.Ref(o)
				if want := "keys of " + ref; string(p.GetJwks()) != want {
					t.Errorf("%s: got keys %q, want %q", ref, p.GetJwks(), want)
				}
				got = append(got, ref)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("providers (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCompileJWTKeysChangeSnapshot pins that a key rotation reaches the
// proxies: the snapshot's content (what the hub hashes to decide whether
// to send) changes with the keys of a provider that selects the node, and
// only then.
func TestCompileJWTKeysChangeSnapshot(t *testing.T) {
	api := push.Node{ID: apiID, Service: identity.ServiceRef{Namespace: "default", Name: "api"}}
	shop := push.Node{ID: cartID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}}
	before, after := jwtState(t, nil), jwtState(t, map[string]string{"default/api-idp": "rotated keys"})
	content := func(st *push.State, node push.Node) []byte {
		snap, err := push.Compile(st, node)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if bytes.Equal(content(before, api), content(after, api)) {
		t.Error("the snapshot of api did not change with the keys of its provider")
	}
	if !bytes.Equal(content(before, shop), content(after, shop)) {
		t.Error("the snapshot of shop/cart changed with the keys of a provider that does not select it")
	}
}
