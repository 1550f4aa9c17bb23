package config_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// meshWithIssuer is a valid Mesh whose spec.demoIssuer is the YAML issuer.
func meshWithIssuer(issuer string) []byte {
	return []byte(`apiVersion: bulwark.dev/v1alpha1
kind: Mesh
metadata: {name: shop}
spec:
  entry: web
  services: [{name: web, example: web}]
  demoIssuer: ` + issuer + "\n")
}

func TestDemoIssuerDefaults(t *testing.T) {
	objs, err := config.Decode(meshWithIssuer("{provider: edge/shop-users}"))
	if err != nil {
		t.Fatal(err)
	}
	got := objs[0].(*config.Mesh).Spec.DemoIssuer
	want := &config.DemoIssuer{Provider: "edge/shop-users", Issuer: "bulwark-up-demo", Listen: "127.0.0.1:8079"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("demoIssuer (-want +got):\n%s", diff)
	}

	objs, err = config.Decode(meshWithIssuer(`{provider: shop-users, issuer: "https://id.example", listen: "[::1]:0", scope: "orders read:all"}`))
	if err != nil {
		t.Fatal(err)
	}
	got = objs[0].(*config.Mesh).Spec.DemoIssuer
	want = &config.DemoIssuer{Provider: "default/shop-users", Issuer: "https://id.example", Listen: "[::1]:0", Scope: "orders read:all"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("demoIssuer (-want +got):\n%s", diff)
	}
}

func TestDemoIssuerRejects(t *testing.T) {
	for _, tc := range []struct {
		name, issuer, want string
	}{
		{"missing-provider", "{listen: 127.0.0.1:8079}", "spec.demoIssuer.provider: required"},
		{"bad-provider", "{provider: Edge/Users}", "spec.demoIssuer.provider: "},
		{"provider-three-parts", "{provider: a/b/c}", "spec.demoIssuer.provider: "},
		{"wildcard-listen", `{provider: edge/u, listen: "0.0.0.0:8079"}`, "spec.demoIssuer.listen: \"0.0.0.0:8079\": the host must be a loopback IP address"},
		{"public-listen", `{provider: edge/u, listen: "192.0.2.1:8079"}`, "the host must be a loopback IP address"},
		{"hostname-listen", `{provider: edge/u, listen: "localhost:8079"}`, "the host must be a loopback IP address"},
		{"no-port", `{provider: edge/u, listen: "127.0.0.1"}`, "spec.demoIssuer.listen: \"127.0.0.1\": want a loopback address and a port"},
		{"port-out-of-range", `{provider: edge/u, listen: "127.0.0.1:70000"}`, "the port must be between 0 and 65535"},
		{"issuer-with-space", `{provider: edge/u, issuer: "a b"}`, "spec.demoIssuer.issuer: must not contain spaces"},
		{"issuer-too-long", `{provider: edge/u, issuer: "` + strings.Repeat("i", 257) + `"}`, "spec.demoIssuer.issuer: longer than 256 bytes"},
		{"scope-with-quote", `{provider: edge/u, scope: "orders 'x"}`, "spec.demoIssuer.scope: \"'x\": a scope is at most 64 of letters"},
		{"unknown-field", `{provider: edge/u, key: x}`, "spec.demoIssuer.key: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Decode(meshWithIssuer(tc.issuer))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
