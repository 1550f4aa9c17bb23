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
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
)

// callersPolicy is an ALLOW policy on shop/api from the given services.
func callersPolicy(name string, services ...string) json.RawMessage {
	rules := make([]string, len(services))
	for i, s := range services {
		rules[i] = `{"from":{"services":["` + s + `"]}}`
	}
	return json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy",` +
		`"metadata":{"name":"` + name + `","namespace":"shop"},` +
		`"spec":{"selector":{"service":"api"},"rules":[` + strings.Join(rules, ",") + `]}}`)
}

// lockoutMesh registers web and batch as callers and one running api
// instance, and allows both callers to call api.
func lockoutMesh(t *testing.T) *api {
	t.Helper()
	a := newAPI(t)
	ctx := context.Background()
	for _, name := range []string{"web", "batch", "api"} {
		if err := a.registry.AddService(ctx, name, identity.ServiceRef{Namespace: "shop", Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	rec := registry.Proxy{Instance: "api-1", Namespace: "shop", Service: "api", Identity: "spiffe://bulwark.test/ns/shop/sa/api",
		Address: "127.0.0.1:2001", Connected: true, Live: true, LastSeen: start}
	if err := a.registry.UpdateProxy(ctx, "shop", "api-1", func(p *registry.Proxy) { *p = rec }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.Apply(ctx, []json.RawMessage{callersPolicy("api-callers", "shop/web", "shop/batch")}); err != nil {
		t.Fatalf("first apply (no callers yet, nothing to lock out): %v", err)
	}
	return a
}

// apiCallers returns the from.services of the stored shop/api-callers.
func (a *api) apiCallers(t *testing.T) []string {
	t.Helper()
	o, err := a.resources.Get(context.Background(), config.KindAuthorizationPolicy, "shop", "api-callers")
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range o.(*config.AuthorizationPolicy).Spec.Rules {
		out = append(out, r.From.Services...)
	}
	return out
}

func TestLockoutGuardApply(t *testing.T) {
	ctx := context.Background()
	t.Run("cutting_every_caller_is_refused_and_changes_nothing", func(t *testing.T) {
		a := lockoutMesh(t)
		_, err := a.client.Apply(ctx, []json.RawMessage{callersPolicy("api-callers", "shop/admin")})
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			t.Fatalf("got %v, want a 409 APIError", err)
		}
		want := []string{"shop/api would lose every caller: shop/batch, shop/web"}
		if diff := cmp.Diff(want, ae.Details); diff != "" {
			t.Errorf("details (-want +got):\n%s", diff)
		}
		if !strings.Contains(ae.Message, "--force") || !strings.Contains(ae.Message, "nothing was changed") {
			t.Errorf("message: got %q, want it to say nothing changed and name --force", ae.Message)
		}
		if diff := cmp.Diff([]string{"shop/web", "shop/batch"}, a.apiCallers(t)); diff != "" {
			t.Errorf("stored policy changed (-want +got):\n%s", diff)
		}
	})
	t.Run("a_refused_apply_writes_none_of_its_documents", func(t *testing.T) {
		a := lockoutMesh(t)
		_, err := a.client.Apply(ctx, []json.RawMessage{
			callersPolicy("other", "shop/web"),
			json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"freeze","namespace":"shop"},` +
				`"spec":{"action":"DENY","selector":{"service":"api"},"rules":[{"from":{"services":["shop/*"]}}]}}`),
		})
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			t.Fatalf("got %v, want a 409 APIError", err)
		}
		if diff := cmp.Diff([]string{"shop/api-callers"}, a.policyNames(t)); diff != "" {
			t.Errorf("policies (-want +got):\n%s", diff)
		}
	})
	t.Run("cutting_one_of_two_callers_is_applied", func(t *testing.T) {
		a := lockoutMesh(t)
		if _, err := a.client.Apply(ctx, []json.RawMessage{callersPolicy("api-callers", "shop/web")}); err != nil {
			t.Fatalf("apply: %v", err)
		}
		if diff := cmp.Diff([]string{"shop/web"}, a.apiCallers(t)); diff != "" {
			t.Errorf("stored policy (-want +got):\n%s", diff)
		}
	})
	t.Run("force_applies_it_and_logs_the_lockout", func(t *testing.T) {
		a := lockoutMesh(t)
		_, err := a.client.ApplyWithOptions(ctx, []json.RawMessage{callersPolicy("api-callers", "shop/admin")}, admin.WriteOptions{Force: true})
		if err != nil {
			t.Fatalf("forced apply: %v", err)
		}
		if diff := cmp.Diff([]string{"shop/admin"}, a.apiCallers(t)); diff != "" {
			t.Errorf("stored policy (-want +got):\n%s", diff)
		}
		logs := a.logs.String()
		if !strings.Contains(logs, "policy change forced despite lock-out") || !strings.Contains(logs, `"service":"shop/api"`) {
			t.Errorf("log: got %s, want a forced lock-out warning naming shop/api", logs)
		}
	})
	t.Run("invalid_force_value_is_a_bad_request", func(t *testing.T) {
		a := lockoutMesh(t)
		r := send(t, a.operator, http.MethodPost, a.srv.URL+"/v1/apply?force=yes", "application/json",
			applyBody(t, callersPolicy("api-callers", "shop/admin")))
		if r.status != http.StatusBadRequest || !strings.Contains(r.errorBody(t).Error, "force") {
			t.Errorf("got %d %s, want 400 naming force", r.status, r.body)
		}
	})
	t.Run("a_namespace_operator_is_not_told_callers_from_elsewhere", func(t *testing.T) {
		a := lockoutMesh(t)
		if err := a.registry.AddService(ctx, "web", identity.ServiceRef{Namespace: "other", Name: "web"}); err != nil {
			t.Fatal(err)
		}
		a.mustApply(t, callersPolicy("api-callers", "shop/web", "other/web"),
			roleJSON("shop", "editor", `[{"verbs":["get","list","apply"],"kinds":["AuthorizationPolicy","Service"]}]`),
			bindingJSON("shop", "alice-edits", "editor", "alice"))
		r := send(t, a.as(t, "alice"), http.MethodPost, a.srv.URL+"/v1/apply", "application/json",
			applyBody(t, callersPolicy("api-callers", "shop/admin")))
		if r.status != http.StatusConflict {
			t.Fatalf("got %d %s, want 409", r.status, r.body)
		}
		want := []string{"shop/api would lose every caller: shop/web, 1 in namespaces you may not list"}
		if diff := cmp.Diff(want, r.errorBody(t).Details); diff != "" {
			t.Errorf("details (-want +got):\n%s", diff)
		}
	})
	t.Run("a_service_that_is_not_running_is_not_guarded", func(t *testing.T) {
		a := lockoutMesh(t)
		err := a.registry.UpdateProxy(ctx, "shop", "api-1", func(p *registry.Proxy) { p.Live, p.Connected = false, false })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.client.Apply(ctx, []json.RawMessage{callersPolicy("api-callers", "shop/admin")}); err != nil {
			t.Errorf("apply: got %v, want it applied", err)
		}
	})
}

func TestLockoutGuardDelete(t *testing.T) {
	ctx := context.Background()
	ref := []resource.Result{{Kind: config.KindAuthorizationPolicy, Namespace: "shop", Name: "api-callers"}}
	t.Run("deleting_the_last_allow_policy_is_refused", func(t *testing.T) {
		a := lockoutMesh(t)
		_, err := a.client.Delete(ctx, ref)
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
			t.Fatalf("got %v, want a 409 APIError", err)
		}
		if diff := cmp.Diff([]string{"shop/api-callers"}, a.policyNames(t)); diff != "" {
			t.Errorf("policies (-want +got):\n%s", diff)
		}
		r := send(t, a.operator, http.MethodDelete, a.srv.URL+"/v1/namespaces/shop/policies/api-callers", "", nil)
		if r.status != http.StatusConflict {
			t.Errorf("DELETE one: got %d %s, want 409", r.status, r.body)
		}
	})
	t.Run("force_deletes_it", func(t *testing.T) {
		a := lockoutMesh(t)
		res, err := a.client.DeleteWithOptions(ctx, ref, admin.WriteOptions{Force: true})
		if err != nil || len(res) != 1 || res[0].Outcome != resource.Deleted {
			t.Fatalf("forced delete: got %v, %v, want deleted", res, err)
		}
		r := send(t, a.operator, http.MethodDelete, a.srv.URL+"/v1/namespaces/shop/policies/api-callers?force=true", "", nil)
		if r.status != http.StatusNotFound {
			t.Errorf("DELETE one again: got %d %s, want 404", r.status, r.body)
		}
	})
	t.Run("deleting_one_of_two_allow_policies_is_fine", func(t *testing.T) {
		a := lockoutMesh(t)
		if _, err := a.client.Apply(ctx, []json.RawMessage{callersPolicy("web-too", "shop/web")}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.client.Delete(ctx, ref); err != nil {
			t.Errorf("delete: got %v, want it deleted", err)
		}
	})
}
