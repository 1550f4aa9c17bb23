package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/registry"
)

// routeJSON is a Route on shop/api with one rule per list of backends,
// each backend "version:weight".
func routeJSON(name string, rules ...[]string) json.RawMessage {
	var rs []string
	for _, backends := range rules {
		var bs []string
		for _, b := range backends {
			v, w, _ := strings.Cut(b, ":")
			bs = append(bs, `{"version":"`+v+`","weight":`+w+`}`)
		}
		rs = append(rs, `{"backends":[`+strings.Join(bs, ",")+`]}`)
	}
	return json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Route","metadata":{"name":"` + name + `","namespace":"shop"},` +
		`"spec":{"service":"api","rules":[` + strings.Join(rs, ",") + `]}}`)
}

// trafficPolicyJSON is a TrafficPolicy of namespace shop for service.
func trafficPolicyJSON(name, service string) json.RawMessage {
	return json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"` + name + `","namespace":"shop"},` +
		`"spec":{"service":"` + service + `","timeout":"2s"}}`)
}

// versionedMesh registers shop/api instances: v1 connected, v2 gone (its
// record retained), and one without a version label.
func versionedMesh(t *testing.T) *api {
	t.Helper()
	a := newAPI(t)
	ctx := context.Background()
	recs := []registry.Proxy{
		{Instance: "api-1", Namespace: "shop", Service: "api", Labels: map[string]string{"version": "v1"}, Address: "127.0.0.1:2001", Connected: true, Live: true, LastSeen: start},
		{Instance: "api-2", Namespace: "shop", Service: "api", Labels: map[string]string{"version": "v2"}, Address: "127.0.0.1:2002", LastSeen: start},
		{Instance: "api-3", Namespace: "shop", Service: "api", Labels: map[string]string{"team": "x"}, Address: "127.0.0.1:2003", Connected: true, Live: true, LastSeen: start},
		{Instance: "web-1", Namespace: "shop", Service: "web", Labels: map[string]string{"version": "v3"}, Address: "127.0.0.1:2004", Connected: true, Live: true, LastSeen: start},
	}
	for _, r := range recs {
		if err := a.registry.UpdateProxy(ctx, r.Namespace, r.Instance, func(p *registry.Proxy) { *p = r }); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func (a *api) names(t *testing.T, kind string) []string {
	t.Helper()
	objs, _, err := a.resources.List(context.Background(), kind, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, config.Ref(o))
	}
	return out
}

func TestApplyRouteVersions(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name        string
		docs        []json.RawMessage
		force       bool
		wantStatus  int // 0: applied
		wantDetails []string
		wantRoutes  []string
	}{
		{
			name:       "known_versions_including_a_disconnected_instance",
			docs:       []json.RawMessage{routeJSON("canary", []string{"v1:90", "v2:10"})},
			wantRoutes: []string{"shop/canary"},
		},
		{
			name:       "unknown_version_with_field_path",
			docs:       []json.RawMessage{routeJSON("canary", []string{"v1:100"}, []string{"v1:50", "v3:50"})},
			wantStatus: http.StatusUnprocessableEntity,
			wantDetails: []string{
				`route shop/canary: spec.rules[1].backends[1].version: no instance of shop/api has version "v3" (known: v1, v2)`,
			},
		},
		{
			// web's v3 is not api's; every bad reference of every route is
			// reported, and nothing is applied.
			name: "several_routes_all_reported_nothing_applied",
			docs: []json.RawMessage{
				routeJSON("good", []string{"v2:100"}),
				routeJSON("bad", []string{"v3:50", "v4:50"}),
			},
			wantStatus: http.StatusUnprocessableEntity,
			wantDetails: []string{
				`route shop/bad: spec.rules[0].backends[0].version: no instance of shop/api has version "v3" (known: v1, v2)`,
				`route shop/bad: spec.rules[0].backends[1].version: no instance of shop/api has version "v4" (known: v1, v2)`,
			},
		},
		{
			name:       "force_applies_unknown_versions",
			docs:       []json.RawMessage{routeJSON("ahead", []string{"v9:100"})},
			force:      true,
			wantRoutes: []string{"shop/ahead"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := versionedMesh(t)
			_, err := a.client.ApplyWithOptions(ctx, tt.docs, admin.WriteOptions{Force: tt.force})
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("apply: got %v, want it applied", err)
				}
			} else {
				var ae *admin.APIError
				if !errors.As(err, &ae) || ae.Status != tt.wantStatus {
					t.Fatalf("apply: got %v, want a %d APIError", err, tt.wantStatus)
				}
				if diff := cmp.Diff(tt.wantDetails, ae.Details); diff != "" {
					t.Errorf("details (-want +got):\n%s", diff)
				}
				if !strings.Contains(ae.Message, "--force") || !strings.Contains(ae.Message, "nothing was applied") {
					t.Errorf("message: got %q, want it to say nothing was applied and name --force", ae.Message)
				}
			}
			if diff := cmp.Diff(tt.wantRoutes, a.names(t, config.KindRoute)); diff != "" {
				t.Errorf("stored routes (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("service_without_instances", func(t *testing.T) {
		a := newAPI(t)
		_, err := a.client.Apply(ctx, []json.RawMessage{routeJSON("canary", []string{"v1:100"})})
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity {
			t.Fatalf("apply: got %v, want 422", err)
		}
		want := []string{`route shop/canary: spec.rules[0].backends[0].version: no instance of shop/api has version "v1" (known: none)`}
		if diff := cmp.Diff(want, ae.Details); diff != "" {
			t.Errorf("details (-want +got):\n%s", diff)
		}
	})
	t.Run("forced_apply_is_logged", func(t *testing.T) {
		a := versionedMesh(t)
		if _, err := a.client.ApplyWithOptions(ctx, []json.RawMessage{routeJSON("ahead", []string{"v9:100"})}, admin.WriteOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		if logs := a.logs.String(); !strings.Contains(logs, "route applied despite unknown versions") || !strings.Contains(logs, `\"v9\"`) {
			t.Errorf("log: got %s, want a warning naming v9", logs)
		}
	})
}

func TestApplyOneTrafficPolicyPerService(t *testing.T) {
	ctx := context.Background()
	t.Run("second_policy_for_a_service_is_refused", func(t *testing.T) {
		a := newAPI(t)
		a.mustApply(t, trafficPolicyJSON("api-tp", "api"))
		_, err := a.client.Apply(ctx, []json.RawMessage{trafficPolicyJSON("api-tp-2", "api")})
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			t.Fatalf("apply: got %v, want a 409 APIError", err)
		}
		want := []string{"trafficpolicy shop/api-tp-2: spec.service: shop/api is already selected by trafficpolicy shop/api-tp: at most one TrafficPolicy may select a service (edit that one, or delete it first)"}
		if diff := cmp.Diff(want, ae.Details); diff != "" {
			t.Errorf("details (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"shop/api-tp"}, a.names(t, config.KindTrafficPolicy)); diff != "" {
			t.Errorf("stored (-want +got):\n%s", diff)
		}
	})
	t.Run("two_in_one_apply_are_refused", func(t *testing.T) {
		a := newAPI(t)
		_, err := a.client.Apply(ctx, []json.RawMessage{trafficPolicyJSON("a", "api"), trafficPolicyJSON("b", "api")})
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict || len(ae.Details) != 2 {
			t.Fatalf("apply: got %v, want a 409 naming both", err)
		}
		if got := a.names(t, config.KindTrafficPolicy); len(got) != 0 {
			t.Errorf("stored: got %v, want none", got)
		}
	})
	t.Run("updating_the_same_policy_and_moving_one_are_fine", func(t *testing.T) {
		a := newAPI(t)
		a.mustApply(t, trafficPolicyJSON("api-tp", "api"))
		if _, err := a.client.Apply(ctx, []json.RawMessage{trafficPolicyJSON("api-tp", "api")}); err != nil {
			t.Errorf("re-apply: %v", err)
		}
		// One apply moves api-tp to web and adds a new one for api.
		if _, err := a.client.Apply(ctx, []json.RawMessage{trafficPolicyJSON("api-tp", "web"), trafficPolicyJSON("api-new", "api")}); err != nil {
			t.Errorf("move and add: %v", err)
		}
		if _, err := a.client.Apply(ctx, []json.RawMessage{trafficPolicyJSON("other", "db")}); err != nil {
			t.Errorf("another service: %v", err)
		}
	})
	t.Run("force_does_not_bypass_it", func(t *testing.T) {
		a := newAPI(t)
		a.mustApply(t, trafficPolicyJSON("api-tp", "api"))
		_, err := a.client.ApplyWithOptions(ctx, []json.RawMessage{trafficPolicyJSON("api-tp-2", "api")}, admin.WriteOptions{Force: true})
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			t.Fatalf("forced apply: got %v, want 409", err)
		}
	})
}
