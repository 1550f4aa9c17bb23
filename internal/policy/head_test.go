package policy_test

import (
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// TestHeadIsCoveredByGet pins that a rule naming GET also matches HEAD
// (servers answer HEAD with their GET handlers, so a DENY of GET must cover
// it), and that a rule naming only HEAD does not match GET.
func TestHeadIsCoveredByGet(t *testing.T) {
	decode := func(t *testing.T, doc string) *config.AuthorizationPolicy {
		t.Helper()
		objs, err := config.Decode([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return objs[0].(*config.AuthorizationPolicy)
	}
	allowAll := decode(t, `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: default}
spec:
  selector: {service: api}
  rules:
  - to: {paths: ["*"]}
`)
	denyGet := decode(t, `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-get, namespace: default}
spec:
  selector: {service: api}
  action: DENY
  rules:
  - to: {methods: [GET], paths: ["/export"]}
`)
	allowHead := decode(t, `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-head, namespace: default}
spec:
  selector: {service: api}
  rules:
  - to: {methods: [HEAD]}
`)
	api := identity.ServiceRef{Namespace: "default", Name: "api"}
	tests := []struct {
		name     string
		policies []*config.AuthorizationPolicy
		method   string
		path     string
		want     bool
	}{
		{"deny_get_denies_head", []*config.AuthorizationPolicy{allowAll, denyGet}, "HEAD", "/export", false},
		{"deny_get_denies_get", []*config.AuthorizationPolicy{allowAll, denyGet}, "GET", "/export", false},
		{"deny_get_leaves_post", []*config.AuthorizationPolicy{allowAll, denyGet}, "POST", "/export", true},
		{"allow_head_does_not_allow_get", []*config.AuthorizationPolicy{allowHead}, "GET", "/", false},
		{"allow_head_allows_head", []*config.AuthorizationPolicy{allowHead}, "HEAD", "/", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := mustCompile(t, api, tt.policies)
			got := ix.Decide(&policy.Request{Source: policy.Source{ID: "spiffe://td/ns/default/sa/web", Services: []string{"default/web"}}, Method: tt.method, Path: tt.path})
			if got.Allow != tt.want {
				t.Errorf("%s %s: got allow=%v (%s), want %v", tt.method, tt.path, got.Allow, got.Reason, tt.want)
			}
		})
	}
}
