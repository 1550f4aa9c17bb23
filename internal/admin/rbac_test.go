package admin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/resource"
)

func roleJSON(ns, name, rules string) json.RawMessage {
	return json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Role",` +
		`"metadata":{"name":"` + name + `","namespace":"` + ns + `"},"spec":{"rules":` + rules + `}}`)
}

func bindingJSON(ns, name, role string, operators ...string) json.RawMessage {
	ops, _ := json.Marshal(operators)
	return json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"RoleBinding",` +
		`"metadata":{"name":"` + name + `","namespace":"` + ns + `"},"spec":{"role":"` + role + `","operators":` + string(ops) + `}}`)
}

// meshPolicyJSON returns a valid mesh-wide AuthorizationPolicy (in the
// root namespace, no selector).
func meshPolicyJSON(name string) json.RawMessage {
	return json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy",` +
		`"metadata":{"name":"` + name + `","namespace":"` + config.RootNamespace + `"},` +
		`"spec":{"action":"DENY","rules":[{"to":{"paths":["/debug/*"]}}]}}`)
}

// editor is the rules of a namespace policy editor that may also manage
// RBAC and join tokens in its namespace.
const editor = `[{"verbs":["get","list","apply","delete"],"kinds":["AuthorizationPolicy","Role","RoleBinding"]},{"verbs":["create"],"kinds":["JoinToken"]}]`

// as returns an HTTP client presenting a fresh certificate of operator.
func (a *api) as(t testing.TB, operator string) *http.Client {
	t.Helper()
	cred := a.credential(t, operator)
	cert, err := tls.X509KeyPair([]byte(cred.Certificate), []byte(cred.Key))
	if err != nil {
		t.Fatal(err)
	}
	return a.httpClient(t, mtls.AdminClientConfig(a.roots, cert))
}

// mustApply applies docs as the built-in admin.
func (a *api) mustApply(t testing.TB, docs ...json.RawMessage) {
	t.Helper()
	if _, err := a.client.Apply(context.Background(), docs); err != nil {
		t.Fatalf("apply as admin: %v", err)
	}
}

// namespaceAdmins makes alice the editor of team-a and bob of team-b.
func (a *api) namespaceAdmins(t testing.TB) {
	t.Helper()
	a.mustApply(t,
		roleJSON("team-a", "editor", editor), bindingJSON("team-a", "alice-edits", "editor", "alice"),
		roleJSON("team-b", "editor", editor), bindingJSON("team-b", "bob-edits", "editor", "bob"),
	)
}

// route is one admin API request with a valid body.
type route struct {
	name, method, path, body string
}

// routes is every route of the admin API, with a request that an operator
// with every right would get a non-403 answer for. The test below fails
// when a route is added here without authorization.
func routes(t testing.TB) []route {
	t.Helper()
	return []route{
		{"apply", "POST", "/v1/apply", string(applyBody(t, policyJSON("team-a", "p", "GET")))},
		{"apply_role", "POST", "/v1/apply", string(applyBody(t, roleJSON("team-a", "r", editor)))},
		{"delete_many", "POST", "/v1/delete", `{"items":[{"kind":"AuthorizationPolicy","namespace":"team-a","name":"p"}]}`},
		{"delete_one", "DELETE", "/v1/namespaces/team-a/policies/p", ""},
		{"list_namespace", "GET", "/v1/policies?namespace=team-a", ""},
		{"list_all", "GET", "/v1/policies", ""},
		{"list_roles", "GET", "/v1/roles?namespace=team-a", ""},
		{"list_proxies", "GET", "/v1/proxies?namespace=team-a", ""},
		{"list_services", "GET", "/v1/services", ""},
		{"get", "GET", "/v1/namespaces/team-a/policies/p", ""},
		{"get_rolebinding", "GET", "/v1/namespaces/team-a/rolebindings/b", ""},
		{"tokens", "POST", "/v1/tokens", `{"service":"team-a/web"}`},
		{"ca_status", "GET", "/v1/ca", ""},
		{"ca_rotate", "POST", "/v1/ca/rotate", `{"target":"intermediate"}`},
		{"ca_jwks", "GET", "/v1/ca/jwks", ""},
		{"revoke", "POST", "/v1/proxies/revoke", `{"namespace":"team-a","service":"web"}`},
		{"operators", "POST", "/v1/operators", `{"name":"carol","csr":"x"}`},
		{"denials", "GET", "/v1/denials", ""},
		{"denials_namespace", "GET", "/v1/denials?namespace=team-a", ""},
		{"policy_summary", "GET", "/v1/policy/summary", ""},
		{"policy_explain", "POST", "/v1/policy/explain", `{"from":"team-a/web","to":"team-a/api","path":"/"}`},
	}
}

func TestEveryRouteDeniesAnOperatorWithoutRights(t *testing.T) {
	a := newAPI(t)
	a.mustApply(t, policyJSON("team-a", "p", "GET"), roleJSON("team-a", "editor", editor),
		bindingJSON("team-a", "alice-edits", "editor", "alice"))
	nobody := a.as(t, "nobody")
	for _, rt := range routes(t) {
		t.Run(rt.name, func(t *testing.T) {
			var body []byte
			if rt.body != "" {
				body = []byte(rt.body)
			}
			got := send(t, nobody, rt.method, a.srv.URL+rt.path, "application/json", body)
			if got.status != http.StatusForbidden {
				t.Fatalf("status: got %d %s, want 403", got.status, got.body)
			}
			if eb := got.errorBody(t); !strings.HasPrefix(eb.Error, "operator nobody may not ") || len(eb.Details) != 0 {
				t.Errorf("error: got %q, want it to start with %q", eb.Error, "operator nobody may not ")
			}
		})
	}
	if got, want := a.policyNames(t), []string{"team-a/p"}; !cmp.Equal(got, want) {
		t.Errorf("policies after denied requests: got %v, want %v", got, want)
	}
	if strings.Contains(a.logs.String(), `"msg":"admin route answered without authorization"`) {
		t.Error("a route answered without authorization")
	}
}

func TestNamespaceAdmin(t *testing.T) {
	a := newAPI(t)
	a.namespaceAdmins(t)
	a.mustApply(t, policyJSON("team-b", "bobs", "GET"))
	alice, bob := a.as(t, "alice"), a.as(t, "bob")
	tests := []struct {
		name         string
		client       *http.Client
		method, path string
		body         string
		wantCode     int
		wantError    string
	}{
		{name: "apply_own_namespace", client: alice, method: "POST", path: "/v1/apply",
			body: string(applyBody(t, policyJSON("team-a", "alices", "GET"))), wantCode: 200},
		{name: "apply_other_namespace", client: alice, method: "POST", path: "/v1/apply",
			body: string(applyBody(t, policyJSON("team-b", "x", "GET"))), wantCode: 403,
			wantError: "operator alice may not apply AuthorizationPolicy in namespace team-b; nothing was applied"},
		{name: "apply_root_namespace", client: alice, method: "POST", path: "/v1/apply",
			body: string(applyBody(t, meshPolicyJSON("x"))), wantCode: 403,
			wantError: "operator alice may not apply AuthorizationPolicy in namespace bulwark-system"},
		{name: "apply_binding_in_root", client: alice, method: "POST", path: "/v1/apply",
			body: string(applyBody(t, bindingJSON(config.RootNamespace, "x", "editor", "alice"))), wantCode: 403,
			wantError: "operator alice may not apply RoleBinding in namespace bulwark-system"},
		{name: "list_own_namespace", client: alice, method: "GET", path: "/v1/policies?namespace=team-a", wantCode: 200},
		{name: "list_other_namespace", client: alice, method: "GET", path: "/v1/policies?namespace=team-b", wantCode: 403,
			wantError: "operator alice may not list AuthorizationPolicy in namespace team-b"},
		{name: "list_all_namespaces", client: alice, method: "GET", path: "/v1/policies", wantCode: 403,
			wantError: "operator alice may not list AuthorizationPolicy mesh-wide"},
		{name: "list_kind_not_granted", client: alice, method: "GET", path: "/v1/proxies?namespace=team-a", wantCode: 403,
			wantError: "operator alice may not list Proxy in namespace team-a"},
		{name: "get_other_namespace", client: alice, method: "GET", path: "/v1/namespaces/team-b/policies/bobs", wantCode: 403},
		{name: "get_own_role", client: alice, method: "GET", path: "/v1/namespaces/team-a/roles/editor", wantCode: 200},
		{name: "bob_deletes_in_team_a", client: bob, method: "DELETE", path: "/v1/namespaces/team-a/policies/alices", wantCode: 403,
			wantError: "operator bob may not delete AuthorizationPolicy in namespace team-a"},
		{name: "bob_deletes_many_mixed", client: bob, method: "POST", path: "/v1/delete",
			body:     `{"items":[{"kind":"AuthorizationPolicy","namespace":"team-b","name":"bobs"},{"kind":"AuthorizationPolicy","namespace":"team-a","name":"alices"}]}`,
			wantCode: 403, wantError: "may not delete AuthorizationPolicy in namespace team-a; nothing was deleted"},
		{name: "token_own_namespace", client: alice, method: "POST", path: "/v1/tokens", body: `{"service":"team-a/web"}`, wantCode: 201},
		{name: "token_other_namespace", client: alice, method: "POST", path: "/v1/tokens", body: `{"service":"team-b/web"}`, wantCode: 403,
			wantError: "operator alice may not create JoinToken in namespace team-b"},
		{name: "ca_status", client: alice, method: "GET", path: "/v1/ca", wantCode: 403, wantError: "operator alice may not get CA mesh-wide"},
		{name: "ca_rotate", client: alice, method: "POST", path: "/v1/ca/rotate", body: `{"target":"root"}`, wantCode: 403,
			wantError: "operator alice may not rotate CA mesh-wide"},
		{name: "revoke", client: alice, method: "POST", path: "/v1/proxies/revoke", body: `{"namespace":"team-a","service":"web"}`, wantCode: 403,
			wantError: "operator alice may not revoke Proxy in namespace team-a"},
		{name: "create_operator", client: alice, method: "POST", path: "/v1/operators", body: `{"name":"eve","csr":""}`, wantCode: 403,
			wantError: "operator alice may not create Operator mesh-wide"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			got := send(t, tt.client, tt.method, a.srv.URL+tt.path, "application/json", body)
			if got.status != tt.wantCode {
				t.Fatalf("status: got %d %s, want %d", got.status, got.body, tt.wantCode)
			}
			if tt.wantError != "" {
				if eb := got.errorBody(t); !strings.Contains(eb.Error, tt.wantError) {
					t.Errorf("error: got %q, want it to contain %q", eb.Error, tt.wantError)
				}
			}
		})
	}
	want := []string{"team-a/alices", "team-b/bobs"}
	if diff := cmp.Diff(want, a.policyNames(t)); diff != "" {
		t.Errorf("policies (-want +got):\n%s", diff)
	}
}

func TestApplyMixedNamespacesIsRefusedWhole(t *testing.T) {
	a := newAPI(t)
	a.namespaceAdmins(t)
	c := a.clientAs(t, "alice")
	_, err := c.Apply(context.Background(), []json.RawMessage{
		policyJSON("team-a", "ok", "GET"), policyJSON("team-b", "no", "GET"), policyJSON("team-c", "no", "GET"),
	})
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("Apply: got %v, want a 403 APIError", err)
	}
	wantMsg := "operator alice may not apply AuthorizationPolicy in namespace team-b (and 1 more); nothing was applied"
	if ae.Message != wantMsg {
		t.Errorf("message: got %q, want %q", ae.Message, wantMsg)
	}
	wantDetails := []string{
		"document 2 (AuthorizationPolicy team-b/no): operator alice may not apply AuthorizationPolicy in namespace team-b",
		"document 3 (AuthorizationPolicy team-c/no): operator alice may not apply AuthorizationPolicy in namespace team-c",
	}
	if diff := cmp.Diff(wantDetails, ae.Details); diff != "" {
		t.Errorf("details (-want +got):\n%s", diff)
	}
	if names := a.policyNames(t); len(names) != 0 {
		t.Errorf("policies: got %v, want none (nothing applied)", names)
	}
}

func TestNoEscalation(t *testing.T) {
	a := newAPI(t)
	a.namespaceAdmins(t)
	a.mustApply(t, roleJSON(config.RootNamespace, "mesh-admin", `[{"verbs":["*"],"kinds":["*"]}]`),
		roleJSON("team-a", "reader", `[{"verbs":["get","list"],"kinds":["AuthorizationPolicy"]}]`))
	c := a.clientAs(t, "alice")
	tests := []struct {
		name      string
		docs      []json.RawMessage
		wantError string // "" when allowed
	}{
		{name: "role_within_own_rights", docs: []json.RawMessage{roleJSON("team-a", "viewer", `[{"verbs":["get"],"kinds":["AuthorizationPolicy","Role"]}]`)}},
		{name: "bind_role_within_own_rights", docs: []json.RawMessage{bindingJSON("team-a", "carol-reads", "reader", "carol")}},
		{name: "role_and_binding_together", docs: []json.RawMessage{
			roleJSON("team-a", "tokens", `[{"verbs":["create"],"kinds":["JoinToken"]}]`), bindingJSON("team-a", "dave-tokens", "tokens", "dave"),
		}},
		{
			name:      "role_with_more_verbs",
			docs:      []json.RawMessage{roleJSON("team-a", "more", `[{"verbs":["get","revoke"],"kinds":["Proxy"]}]`)},
			wantError: "operator alice may not grant rights it does not hold: get Proxy, revoke Proxy in namespace team-a; nothing was applied",
		},
		{
			name:      "role_with_wildcards",
			docs:      []json.RawMessage{roleJSON("team-a", "all", `[{"verbs":["*"],"kinds":["AuthorizationPolicy"]}]`)},
			wantError: "may not grant rights it does not hold: watch AuthorizationPolicy, create AuthorizationPolicy, rotate AuthorizationPolicy, revoke AuthorizationPolicy in namespace team-a",
		},
		{
			name:      "binding_names_a_root_role",
			docs:      []json.RawMessage{bindingJSON("team-a", "alice-root", "mesh-admin", "alice")},
			wantError: "may not grant rights it does not hold",
		},
		{
			name: "binding_to_a_widened_role_in_the_same_apply",
			docs: []json.RawMessage{
				roleJSON("team-a", "reader", `[{"verbs":["get","list","revoke"],"kinds":["AuthorizationPolicy","Proxy"]}]`),
				bindingJSON("team-a", "carol-reads", "reader", "carol"),
			},
			wantError: "(and 1 more); nothing was applied",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Apply(context.Background(), tt.docs)
			if tt.wantError == "" {
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				return
			}
			var ae *admin.APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !strings.Contains(ae.Message, tt.wantError) {
				t.Fatalf("Apply: got %v, want a 403 containing %q", err, tt.wantError)
			}
		})
	}
	// Even bound by the admin, a root Role named from team-a grants
	// nothing: the binding's Role is looked up in team-a.
	a.mustApply(t, bindingJSON("team-a", "alice-root", "mesh-admin", "alice"))
	alice := a.as(t, "alice")
	for _, rt := range []route{
		{"ca_status", "GET", "/v1/ca", ""},
		{"list_all", "GET", "/v1/policies", ""},
		{"revoke", "POST", "/v1/proxies/revoke", `{"namespace":"team-a","service":"web"}`},
	} {
		if got := send(t, alice, rt.method, a.srv.URL+rt.path, "application/json", []byte(rt.body)); got.status != http.StatusForbidden {
			t.Errorf("%s after binding a root role name in team-a: got %d %s, want 403", rt.name, got.status, got.body)
		}
	}
}

func TestMeshWideRoles(t *testing.T) {
	a := newAPI(t)
	a.mustApply(t,
		policyJSON("team-a", "p", "GET"), policyJSON("team-b", "q", "GET"),
		roleJSON(config.RootNamespace, "auditor", `[{"verbs":["get","list"],"kinds":["*"]}]`),
		bindingJSON(config.RootNamespace, "auditors", "auditor", "carol"),
		roleJSON(config.RootNamespace, "operator-manager", `[{"verbs":["create"],"kinds":["Operator"]}]`),
		bindingJSON(config.RootNamespace, "managers", "operator-manager", "dave"),
	)
	carol, dave := a.as(t, "carol"), a.as(t, "dave")
	tests := []struct {
		name         string
		client       *http.Client
		method, path string
		body         string
		wantCode     int
	}{
		{"auditor_lists_all", carol, "GET", "/v1/policies", "", 200},
		{"auditor_lists_roles", carol, "GET", "/v1/roles", "", 200},
		{"auditor_gets_in_root", carol, "GET", "/v1/namespaces/bulwark-system/roles/auditor", "", 200},
		{"auditor_ca_status", carol, "GET", "/v1/ca", "", 501}, // authorized; this server has no CA
		{"auditor_cannot_apply", carol, "POST", "/v1/apply", string(applyBody(t, policyJSON("team-a", "x", "GET"))), 403},
		{"auditor_cannot_delete", carol, "DELETE", "/v1/namespaces/team-a/policies/p", "", 403},
		{"auditor_cannot_rotate", carol, "POST", "/v1/ca/rotate", `{"target":"root"}`, 403},
		{"auditor_cannot_create_operators", carol, "POST", "/v1/operators", `{"name":"x","csr":""}`, 403},
		{"manager_creates_operators", dave, "POST", "/v1/operators", `{"name":"x","csr":""}`, 400}, // authorized; bad CSR
		{"manager_cannot_list", dave, "GET", "/v1/policies?namespace=team-a", "", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			got := send(t, tt.client, tt.method, a.srv.URL+tt.path, "application/json", body)
			if got.status != tt.wantCode {
				t.Fatalf("status: got %d %s, want %d", got.status, got.body, tt.wantCode)
			}
		})
	}
	t.Run("auditor_list_is_complete", func(t *testing.T) {
		b, err := a.clientAs(t, "carol").List(context.Background(), "policies", "")
		if err != nil {
			t.Fatal(err)
		}
		objs, err := config.UnmarshalList(b)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range objs {
			names = append(names, config.Ref(o))
		}
		if diff := cmp.Diff([]string{"team-a/p", "team-b/q"}, names); diff != "" {
			t.Errorf("items (-want +got):\n%s", diff)
		}
	})
}

// TestRemovedRightsStopAtOnce: Roles and RoleBindings are read on every
// request, so a deleted binding denies the very next request.
func TestRemovedRightsStopAtOnce(t *testing.T) {
	a := newAPI(t)
	a.namespaceAdmins(t)
	alice := a.as(t, "alice")
	list := func() int {
		return send(t, alice, "GET", a.srv.URL+"/v1/policies?namespace=team-a", "", nil).status
	}
	if got := list(); got != http.StatusOK {
		t.Fatalf("before: got %d, want 200", got)
	}
	if _, err := a.client.Delete(context.Background(), []resource.Result{{Kind: config.KindRoleBinding, Namespace: "team-a", Name: "alice-edits"}}); err != nil {
		t.Fatal(err)
	}
	if got := list(); got != http.StatusForbidden {
		t.Errorf("after deleting the binding: got %d, want 403", got)
	}
	// Restoring the binding restores the rights; deleting the Role
	// removes them too.
	a.mustApply(t, bindingJSON("team-a", "alice-edits", "editor", "alice"))
	if got := list(); got != http.StatusOK {
		t.Errorf("binding restored: got %d, want 200", got)
	}
	if _, err := a.client.Delete(context.Background(), []resource.Result{{Kind: config.KindRole, Namespace: "team-a", Name: "editor"}}); err != nil {
		t.Fatal(err)
	}
	if got := list(); got != http.StatusForbidden {
		t.Errorf("after deleting the role: got %d, want 403", got)
	}
}

func TestDenialsAreAudited(t *testing.T) {
	a := newAPI(t)
	a.namespaceAdmins(t)
	send(t, a.as(t, "alice"), "POST", a.srv.URL+"/v1/apply", "application/json", applyBody(t, policyJSON("prod", "x", "GET")))
	var found bool
	for line := range strings.Lines(a.logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] != "admin request denied" {
			continue
		}
		found = true
		want := map[string]any{"level": "WARN", "operator": "alice", "verb": "apply", "kind": "AuthorizationPolicy", "namespace": "prod"}
		for k, v := range want {
			if rec[k] != v {
				t.Errorf("log field %s: got %v, want %v", k, rec[k], v)
			}
		}
	}
	if !found {
		t.Errorf("no denial logged; logs:\n%s", a.logs.String())
	}
}

// clientAs returns an admin.Client presenting a fresh certificate of
// operator.
func (a *api) clientAs(t testing.TB, operator string) *admin.Client {
	t.Helper()
	c, err := admin.NewClient(a.credential(t, operator))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// csrPEM returns a PEM CSR of key.
func csrPEM(t testing.TB, key any) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestCreateOperator(t *testing.T) {
	a := newAPI(t)
	key := newKey(t)
	csr := csrPEM(t, key)
	ctx := context.Background()

	resp, err := a.client.CreateOperator(ctx, admin.OperatorRequest{Name: "alice", CSR: csr, TTL: "24h"})
	if err != nil {
		t.Fatalf("CreateOperator: %v", err)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	if block == nil {
		t.Fatalf("certificate: no PEM in %q", resp.Certificate)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	name, err := ca.OperatorName(cert)
	if err != nil || name != "alice" || resp.Name != "alice" {
		t.Errorf("operator name: got %q (response %q), %v; want alice", name, resp.Name, err)
	}
	if got, want := cert.NotAfter.Sub(cert.NotBefore), 24*time.Hour; got < want-time.Minute || got > want+time.Minute {
		t.Errorf("lifetime: got %s, want about %s", got, want)
	}
	if !resp.ExpiresAt.Equal(cert.NotAfter) || resp.CA != pemCert(a.op.Root()) {
		t.Errorf("expiresAt %v / ca mismatch: want %v and the operator root", resp.ExpiresAt, cert.NotAfter)
	}
	if !cert.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
		t.Error("certificate is not for the CSR's key")
	}
	if !strings.Contains(a.logs.String(), `"msg":"operator created","operator":"admin","name":"alice"`) {
		t.Errorf("creation not logged; logs:\n%s", a.logs.String())
	}

	// The new credential authenticates, and has no rights yet.
	cred := &admin.Credential{APIVersion: config.APIVersion, Kind: admin.CredentialKind, Operator: "alice",
		Server: a.srv.URL, CA: resp.CA, Certificate: resp.Certificate, Key: pemKey(t, key)}
	c, err := admin.NewClient(cred)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(ctx, "policies", "default")
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("List as the new operator: got %v, want 403 (no rights yet)", err)
	}

	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherCSR := csrPEM(t, newKey(t))
	tests := []struct {
		name, body, wantError string
	}{
		{"reserved_admin", fmt.Sprintf(`{"name":"admin","csr":%q}`, csr), `name: "admin" is reserved`},
		{"invalid_name", fmt.Sprintf(`{"name":"alice smith","csr":%q}`, csr), "name: operator name"},
		{"empty_name", fmt.Sprintf(`{"name":"","csr":%q}`, csr), "name: operator name"},
		{"no_csr", `{"name":"bob"}`, `csr: want one PEM "CERTIFICATE REQUEST" block`},
		{"certificate_not_csr", fmt.Sprintf(`{"name":"bob","csr":%q}`, resp.Certificate), `csr: want one PEM "CERTIFICATE REQUEST" block`},
		{"two_csrs", fmt.Sprintf(`{"name":"bob","csr":%q}`, csr+otherCSR), "got several"},
		{"garbage_csr", `{"name":"bob","csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`, "csr: ca: invalid csr"},
		{"unsupported_key", fmt.Sprintf(`{"name":"bob","csr":%q}`, csrPEM(t, p224)), "csr:"},
		{"ttl_too_long", fmt.Sprintf(`{"name":"bob","csr":%q,"ttl":"8761h"}`, csr), "ttl: must be a duration between 1h0m0s and 8760h0m0s"},
		{"ttl_too_short", fmt.Sprintf(`{"name":"bob","csr":%q,"ttl":"59m"}`, csr), "ttl:"},
		{"ttl_garbage", fmt.Sprintf(`{"name":"bob","csr":%q,"ttl":"soon"}`, csr), "ttl:"},
		{"unknown_field", fmt.Sprintf(`{"name":"bob","csr":%q,"key":"x"}`, csr), "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := send(t, a.operator, "POST", a.srv.URL+"/v1/operators", "application/json", []byte(tt.body))
			if got.status != http.StatusBadRequest {
				t.Fatalf("status: got %d %s, want 400", got.status, got.body)
			}
			if eb := got.errorBody(t); !strings.Contains(eb.Error, tt.wantError) {
				t.Errorf("error: got %q, want it to contain %q", eb.Error, tt.wantError)
			}
		})
	}
}

func TestCreateOperatorDefaultTTL(t *testing.T) {
	a := newAPI(t)
	resp, err := a.client.CreateOperator(context.Background(), admin.OperatorRequest{Name: "ci-bot@example.com", CSR: csrPEM(t, newKey(t))})
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Until(resp.ExpiresAt); got < admin.DefaultOperatorTTL-time.Hour || got > admin.DefaultOperatorTTL+time.Hour {
		t.Errorf("lifetime: got %s, want about %s", got, admin.DefaultOperatorTTL)
	}
}

func TestCreateOperatorWithoutCA(t *testing.T) {
	a := newAPI(t)
	h, err := admin.New(admin.Config{Resources: a.resources, Registry: a.registry, Tokens: a.tokens})
	if err != nil {
		t.Fatal(err)
	}
	req := newOperatorRequest(t, "POST", "/v1/operators", `{"name":"bob","csr":""}`, a.cred)
	rec := serve(h, req)
	if rec.Code != http.StatusNotImplemented {
		t.Errorf("got %d %s, want 501", rec.Code, rec.Body)
	}
}

// newOperatorRequest returns a request as the TLS layer would hand it to
// the handler after verifying cred's certificate.
func newOperatorRequest(t testing.TB, method, path, body string, cred *admin.Credential) *http.Request {
	t.Helper()
	block, _ := pem.Decode([]byte(cred.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}
	return req
}

func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestRouteWithoutAuthorizationIsBlocked: a route that answers with
// success without having authorized the request gets a 500 instead, and
// its answer never leaves the server.
func TestRouteWithoutAuthorizationIsBlocked(t *testing.T) {
	a := newAPI(t)
	a.server.HandleUnauthorized("GET /v1/forgotten")
	got := send(t, a.operator, "GET", a.srv.URL+"/v1/forgotten", "", nil)
	if got.status != http.StatusInternalServerError || strings.Contains(string(got.body), "leaked") {
		t.Errorf("got %d %s, want 500 without the answer", got.status, got.body)
	}
	if !strings.Contains(a.logs.String(), `"msg":"admin route answered without authorization","path":"/v1/forgotten"`) {
		t.Errorf("not logged; logs:\n%s", a.logs.String())
	}
}

// BenchmarkAuthorize measures one authorization as every admin request
// does it, with n Roles and RoleBindings in the store (bolt): cached (the
// control plane's setup: list their keys and revisions, reuse the
// Authorizer) and decoded (no Config.Store: decode every document).
func BenchmarkAuthorize(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("cached/bindings=%d", n), func(b *testing.B) {
			a := newAPI(b)
			benchmarkAuthorize(b, a, a.server, n)
		})
		b.Run(fmt.Sprintf("decoded/bindings=%d", n), func(b *testing.B) {
			a := newAPI(b)
			h, err := admin.New(admin.Config{Resources: a.resources, Registry: a.registry, Tokens: a.tokens})
			if err != nil {
				b.Fatal(err)
			}
			benchmarkAuthorize(b, a, h, n)
		})
	}
}

func benchmarkAuthorize(b *testing.B, a *api, s *admin.Server, n int) {
	var docs []json.RawMessage
	for i := range n {
		ns := fmt.Sprintf("team-%d", i)
		docs = append(docs, roleJSON(ns, "editor", editor), bindingJSON(ns, "edits", "editor", fmt.Sprintf("op-%d", i)))
	}
	a.mustApply(b, docs...)
	ctx := context.Background()
	if err := s.Authorize(ctx, "op-7", config.VerbApply, config.KindAuthorizationPolicy, "team-7"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Authorize(ctx, "op-7", config.VerbApply, config.KindAuthorizationPolicy, "team-7"); err != nil {
			b.Fatal(err)
		}
	}
}
