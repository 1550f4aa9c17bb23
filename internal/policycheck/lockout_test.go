package policycheck_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

// shop is a mesh of web and batch calling api, and api calling db.
var shop = policycheck.Mesh{
	Callers: []policycheck.Caller{
		{ID: "spiffe://bulwark.local/ns/shop/sa/web", Services: []string{"shop/web"}},
		{ID: "spiffe://bulwark.local/ns/shop/sa/batch", Services: []string{"shop/batch"}},
		{ID: "spiffe://bulwark.local/ns/shop/sa/api", Services: []string{"shop/api"}},
	},
	Destinations: []policycheck.Destination{
		{Service: identity.ServiceRef{Namespace: "shop", Name: "api"}},
		{Service: identity.ServiceRef{Namespace: "shop", Name: "db"}},
		{Service: identity.ServiceRef{Namespace: "shop", Name: "web"}},
	},
}

// shopPolicies: web and batch may call api, api may call db; nothing may
// call web.
const shopPolicies = `
metadata: {name: api-callers, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
  - from: {services: [shop/batch]}
    to: {methods: [POST]}
---
metadata: {name: db-callers, namespace: shop}
spec:
  selector: {service: db}
  rules:
  - from: {services: [shop/api]}`

func TestLockouts(t *testing.T) {
	tests := []struct {
		name string
		// next is the change: applied documents, or deleted refs.
		apply  string
		delete []string
		want   []policycheck.Lockout
	}{
		{
			name: "cutting_every_caller_is_a_lockout",
			apply: `
metadata: {name: api-callers, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/admin]}`,
			want: []policycheck.Lockout{{Service: "shop/api", Lost: []string{"shop/batch", "shop/web"}}},
		},
		{
			name: "cutting_one_of_two_callers_is_fine",
			apply: `
metadata: {name: api-callers, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}`,
		},
		{
			name:   "deleting_the_last_allow_policy_is_a_lockout",
			delete: []string{"shop/db-callers"},
			want:   []policycheck.Lockout{{Service: "shop/db", Lost: []string{"shop/api"}}},
		},
		{
			name: "deny_of_every_caller_is_a_lockout",
			apply: `
metadata: {name: freeze, namespace: shop}
spec:
  action: DENY
  selector: {service: db}
  rules:
  - from: {services: ["shop/*"]}`,
			want: []policycheck.Lockout{{Service: "shop/db", Lost: []string{"shop/api"}}},
		},
		{
			name: "mesh_wide_deny_reports_every_service_it_closes",
			apply: `
metadata: {name: freeze, namespace: bulwark-system}
spec:
  action: DENY
  rules:
  - from: {namespaces: [shop]}`,
			want: []policycheck.Lockout{
				{Service: "shop/api", Lost: []string{"shop/batch", "shop/web"}},
				{Service: "shop/db", Lost: []string{"shop/api"}},
			},
		},
		{
			name: "service_without_callers_now_cannot_be_locked_out",
			apply: `
metadata: {name: web-callers, namespace: shop}
spec:
  selector: {service: web}
  action: DENY
  rules:
  - to: {methods: [GET]}`,
		},
		{
			name: "unchanged_policies_are_not_a_change",
			apply: `
metadata: {name: db-callers, namespace: shop}
spec:
  selector: {service: db}
  rules:
  - from: {services: [shop/api]}`,
		},
		{
			name: "replacing_callers_is_not_a_lockout",
			apply: `
metadata: {name: db-callers, namespace: shop}
spec:
  selector: {service: db}
  rules:
  - from: {services: [shop/batch]}`,
		},
		{
			name:   "deleting_a_policy_that_does_not_exist_is_not_a_change",
			delete: []string{"shop/nothing"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			current := policies(t, shopPolicies)
			next := policycheck.Remove(policycheck.Replace(current, policies(t, tt.apply)), tt.delete)
			got := policycheck.Lockouts(shop, current, next)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("lockouts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLockoutString(t *testing.T) {
	l := policycheck.Lockout{Service: "shop/api", Lost: []string{"shop/batch", "shop/web"}}
	if got, want := l.String(), "shop/api would lose every caller: shop/batch, shop/web"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestAllowedEdgesAndDiff(t *testing.T) {
	before := policycheck.AllowedEdges(shop, policies(t, shopPolicies))
	want := []policycheck.Edge{
		{From: "shop/batch", To: "shop/api"},
		{From: "shop/web", To: "shop/api"},
		{From: "shop/api", To: "shop/db"},
	}
	if diff := cmp.Diff(want, before); diff != "" {
		t.Fatalf("edges (-want +got):\n%s", diff)
	}
	after := policycheck.AllowedEdges(shop, policycheck.Replace(policies(t, shopPolicies), policies(t, `
metadata: {name: db-callers, namespace: shop}
spec:
  selector: {service: db}
  rules:
  - from: {services: [shop/batch]}`)))
	opened, cut := policycheck.DiffEdges(before, after)
	if diff := cmp.Diff([]policycheck.Edge{{From: "shop/batch", To: "shop/db"}}, opened); diff != "" {
		t.Errorf("opened (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]policycheck.Edge{{From: "shop/api", To: "shop/db"}}, cut); diff != "" {
		t.Errorf("cut (-want +got):\n%s", diff)
	}
	if o, c := policycheck.DiffEdges(before, before); o != nil || c != nil {
		t.Errorf("same edges: got opened %v cut %v, want none", o, c)
	}
}

func TestAllowedEdgesCallerWithoutServiceIsNamedByIdentity(t *testing.T) {
	m := policycheck.Mesh{
		Callers:      []policycheck.Caller{{ID: "spiffe://bulwark.local/ns/shop/sa/cron"}},
		Destinations: []policycheck.Destination{{Service: identity.ServiceRef{Namespace: "shop", Name: "api"}}},
	}
	got := policycheck.AllowedEdges(m, policies(t, `
metadata: {name: p, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - from: {identities: [spiffe://bulwark.local/ns/shop/sa/cron]}`))
	want := []policycheck.Edge{{From: "spiffe://bulwark.local/ns/shop/sa/cron", To: "shop/api"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("edges (-want +got):\n%s", diff)
	}
}

func TestReplaceAndRemoveDoNotModifyInputs(t *testing.T) {
	current := policies(t, shopPolicies)
	orig := append([]*config.AuthorizationPolicy(nil), current...)
	_ = policycheck.Replace(current, policies(t, `
metadata: {name: a, namespace: shop}
spec:
  rules:
  - from: {services: [shop/web]}`))
	_ = policycheck.Remove(current, []string{"shop/api-callers"})
	if diff := cmp.Diff(orig, current); diff != "" {
		t.Errorf("input changed (-before +after):\n%s", diff)
	}
}
