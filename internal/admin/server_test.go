package admin_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
)

func TestNewRequires(t *testing.T) {
	a := newAPI(t)
	tests := []struct {
		name string
		cfg  admin.Config
	}{
		{name: "no_resources", cfg: admin.Config{Registry: a.registry, Tokens: a.tokens}},
		{name: "no_registry", cfg: admin.Config{Resources: a.resources, Tokens: a.tokens}},
		{name: "no_tokens", cfg: admin.Config{Resources: a.resources, Registry: a.registry}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := admin.New(tt.cfg); err == nil {
				t.Errorf("got no error, want one")
			}
		})
	}
}

func TestWithoutClientCertificate(t *testing.T) {
	a := newAPI(t)
	body := applyBody(t, policyJSON("default", "x", "GET"))
	tests := []struct {
		name     string
		method   string
		path     string
		body     []byte
		wantCode int
	}{
		{name: "healthz", method: "GET", path: "/healthz", wantCode: 200},
		{name: "readyz", method: "GET", path: "/readyz", wantCode: 200},
		{name: "apply", method: "POST", path: "/v1/apply", body: body, wantCode: 401},
		{name: "delete_many", method: "POST", path: "/v1/delete", body: []byte(`{"items":[]}`), wantCode: 401},
		{name: "list", method: "GET", path: "/v1/policies", wantCode: 401},
		{name: "list_unknown_type", method: "GET", path: "/v1/widgets", wantCode: 401},
		{name: "get", method: "GET", path: "/v1/namespaces/default/policies/x", wantCode: 401},
		{name: "delete_one", method: "DELETE", path: "/v1/namespaces/default/policies/x", wantCode: 401},
		{name: "tokens", method: "POST", path: "/v1/tokens", body: []byte(`{"service":"default/web"}`), wantCode: 401},
		{name: "unknown_route", method: "GET", path: "/v1/namespaces/default", wantCode: 401},
		{name: "wrong_method", method: "PUT", path: "/v1/apply", body: body, wantCode: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := send(t, a.anonymous, tt.method, a.srv.URL+tt.path, "application/json", tt.body)
			if got.status != tt.wantCode {
				t.Fatalf("status: got %d %q, want %d", got.status, got.body, tt.wantCode)
			}
			if tt.wantCode == 200 {
				if string(got.body) != "ok\n" {
					t.Errorf("body: got %q, want %q", got.body, "ok\n")
				}
				return
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type: got %q, want application/json", ct)
			}
			if eb := got.errorBody(t); !strings.Contains(eb.Error, "operator client certificate") {
				t.Errorf("error: got %q, want it to ask for an operator client certificate", eb.Error)
			}
		})
	}
	if got := a.policyNames(t); len(got) != 0 {
		t.Errorf("policies after unauthenticated requests: got %v, want none", got)
	}
}

func TestWorkloadSVIDIsNotAnOperator(t *testing.T) {
	a := newAPI(t)
	key := newKey(t)
	chain, err := a.workload.SignSVID(&key.PublicKey, mustWorkloadID(t, "default", "web"), 0)
	if err != nil {
		t.Fatal(err)
	}
	svid := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		svid.Certificate = append(svid.Certificate, c.Raw)
	}

	t.Run("handshake_fails", func(t *testing.T) {
		// A client that sends the SVID whatever CAs the server asks for.
		cfg := &tls.Config{RootCAs: a.roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &svid, nil }}
		c := a.httpClient(t, cfg)
		resp, err := c.Get(a.srv.URL + "/v1/policies")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got %s, want a failed handshake", resp.Status)
		}
	})
	t.Run("credential_with_svid_gets_401", func(t *testing.T) {
		// crypto/tls withholds a certificate the server's CA list does not
		// cover: the request arrives without one.
		cred := *a.cred
		cred.Certificate, cred.Key = pemCert(chain[0])+pemCert(chain[1]), pemKey(t, key)
		c, err := admin.NewClient(&cred)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.List(context.Background(), "policies", "")
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Errorf("List: got %v, want an APIError with status 401", err)
		}
	})
}

func TestApply(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	results, err := a.client.Apply(ctx, []json.RawMessage{policyJSON("default", "a", "GET"), policyJSON("shop", "b", "GET")})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := []resource.Result{
		{Kind: "AuthorizationPolicy", Namespace: "default", Name: "a", Outcome: resource.Created},
		{Kind: "AuthorizationPolicy", Namespace: "shop", Name: "b", Outcome: resource.Created},
	}
	if diff := cmp.Diff(want, results); diff != "" {
		t.Errorf("first apply (-want +got):\n%s", diff)
	}
	results, err = a.client.Apply(ctx, []json.RawMessage{policyJSON("default", "a", "GET"), policyJSON("shop", "b", "POST")})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want[0].Outcome, want[1].Outcome = resource.Unchanged, resource.Configured
	if diff := cmp.Diff(want, results); diff != "" {
		t.Errorf("second apply (-want +got):\n%s", diff)
	}
}

func TestApplyRejects(t *testing.T) {
	invalid := json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"bad","namespace":"default"},"spec":{"rules":[{"to":{"methods":["get"]}}]}}`)
	unknownField := json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"bad","namespace":"default"},"spec":{"rules":[{}],"colour":"red"}}`)
	mesh := json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Mesh","metadata":{"name":"m"},"spec":{"entry":"api","services":[{"name":"api","example":"api"}]}}`)
	proxyDoc := json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Proxy","metadata":{"name":"p","namespace":"default"},"status":{"identity":"x","service":"default/x","address":"","connected":false}}`)
	good := policyJSON("default", "good", "GET")
	tests := []struct {
		name        string
		body        []byte
		wantCode    int
		wantError   string
		wantDetails []string // substrings, one per detail line
	}{
		{
			name: "invalid_document_among_valid", body: applyBody(t, good, invalid, policyJSON("default", "good2", "GET")),
			wantCode: 422, wantError: "nothing was applied",
			wantDetails: []string{"document 2", "spec.rules[0].to.methods[0]"},
		},
		{
			name: "unknown_field", body: applyBody(t, good, unknownField),
			wantCode: 422, wantError: "nothing was applied", wantDetails: []string{"document 2", "spec.colour"},
		},
		{
			name: "mesh_kind", body: applyBody(t, good, mesh),
			wantCode: 422, wantError: "nothing was applied", wantDetails: []string{"document 2", "Mesh"},
		},
		{
			name: "proxy_kind", body: applyBody(t, proxyDoc, good),
			wantCode: 422, wantError: "nothing was applied", wantDetails: []string{"document 1", "Proxy"},
		},
		{
			name: "duplicate_resource", body: applyBody(t, good, policyJSON("default", "good", "POST")),
			wantCode: 400, wantError: "nothing was applied",
		},
		{name: "no_items", body: []byte(`{"items":[]}`), wantCode: 400, wantError: "at least one document"},
		{name: "unknown_request_field", body: []byte(`{"items":[` + string(good) + `],"force":true}`), wantCode: 400, wantError: "malformed request body"},
		{name: "trailing_data", body: append(applyBody(t, good), []byte(`{}`)...), wantCode: 400, wantError: "trailing data"},
		{name: "not_json", body: []byte(`items: []`), wantCode: 400, wantError: "malformed request body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAPI(t)
			got := send(t, a.operator, "POST", a.srv.URL+"/v1/apply", "application/json", tt.body)
			if got.status != tt.wantCode {
				t.Fatalf("status: got %d %s, want %d", got.status, got.body, tt.wantCode)
			}
			eb := got.errorBody(t)
			if !strings.Contains(eb.Error, tt.wantError) {
				t.Errorf("error: got %q, want it to contain %q", eb.Error, tt.wantError)
			}
			if tt.wantDetails != nil {
				if len(eb.Details) != 1 {
					t.Fatalf("details: got %q, want one line", eb.Details)
				}
				for _, w := range tt.wantDetails {
					if !strings.Contains(eb.Details[0], w) {
						t.Errorf("details: got %q, want it to contain %q", eb.Details[0], w)
					}
				}
			}
			if names := a.policyNames(t); len(names) != 0 {
				t.Errorf("policies after a rejected apply: got %v, want none", names)
			}
		})
	}
}

func TestRequestBodyLimits(t *testing.T) {
	a := newAPI(t)
	big := []byte(`{"items":["` + strings.Repeat("x", 5<<20) + `"]}`)
	tests := []struct {
		name        string
		path        string
		contentType string
		body        []byte
		wantCode    int
	}{
		{name: "over_4MiB", path: "/v1/apply", contentType: "application/json", body: big, wantCode: 413},
		{name: "over_4MiB_delete", path: "/v1/delete", contentType: "application/json", body: big, wantCode: 413},
		{name: "text_plain", path: "/v1/apply", contentType: "text/plain", body: applyBody(t, policyJSON("default", "x", "GET")), wantCode: 415},
		{name: "yaml", path: "/v1/tokens", contentType: "application/yaml", body: []byte(`{"service":"web"}`), wantCode: 415},
		{name: "json_with_charset", path: "/v1/apply", contentType: "application/json; charset=utf-8", body: applyBody(t, policyJSON("default", "x", "GET")), wantCode: 200},
		{name: "no_content_type", path: "/v1/apply", body: applyBody(t, policyJSON("default", "y", "GET")), wantCode: 200},
		{name: "unknown_field_tokens", path: "/v1/tokens", contentType: "application/json", body: []byte(`{"service":"web","ttl":"1m","admin":true}`), wantCode: 400},
		{name: "unknown_field_delete_item", path: "/v1/delete", contentType: "application/json", body: []byte(`{"items":[{"kind":"AuthorizationPolicy","namespace":"default","name":"x","uid":"1"}]}`), wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := send(t, a.operator, "POST", a.srv.URL+tt.path, tt.contentType, tt.body)
			if got.status != tt.wantCode {
				t.Errorf("status: got %d %.200s, want %d", got.status, got.body, tt.wantCode)
			}
		})
	}
}

func TestListGetDelete(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	if _, err := a.client.Apply(ctx, []json.RawMessage{policyJSON("default", "a", "GET"), policyJSON("shop", "b", "GET")}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		method    string
		path      string
		body      string
		wantCode  int
		wantNames []string // for lists: "ns/name" of the items
		wantError string
	}{
		{name: "list_all", method: "GET", path: "/v1/policies", wantCode: 200, wantNames: []string{"default/a", "shop/b"}},
		{name: "list_by_short_name", method: "GET", path: "/v1/ap", wantCode: 200, wantNames: []string{"default/a", "shop/b"}},
		{name: "list_namespace", method: "GET", path: "/v1/policies?namespace=shop", wantCode: 200, wantNames: []string{"shop/b"}},
		{name: "list_empty_namespace", method: "GET", path: "/v1/policies?namespace=none", wantCode: 200, wantNames: []string{}},
		{name: "list_bad_namespace", method: "GET", path: "/v1/policies?namespace=Bad_NS", wantCode: 400, wantError: "namespace"},
		{name: "list_unknown_type", method: "GET", path: "/v1/widgets", wantCode: 404, wantError: "unknown resource type widgets"},
		{name: "get", method: "GET", path: "/v1/namespaces/shop/policies/b", wantCode: 200},
		{name: "get_missing", method: "GET", path: "/v1/namespaces/shop/policies/a", wantCode: 404, wantError: "not found"},
		{name: "get_bad_name", method: "GET", path: "/v1/namespaces/shop/policies/B_", wantCode: 400, wantError: "invalid"},
		{name: "get_unknown_type", method: "GET", path: "/v1/namespaces/shop/widgets/b", wantCode: 404},
		{name: "unknown_route", method: "GET", path: "/v2/policies", wantCode: 404, wantError: "no such route"},
		{name: "delete_missing", method: "DELETE", path: "/v1/namespaces/default/policies/nope", wantCode: 404},
		{name: "delete_read_only_proxy", method: "DELETE", path: "/v1/namespaces/default/proxies/p", wantCode: 400, wantError: "read-only"},
		{name: "delete_read_only_service", method: "DELETE", path: "/v1/namespaces/default/services/web", wantCode: 400, wantError: "read-only"},
		{name: "delete_bad_name", method: "DELETE", path: "/v1/namespaces/default/policies/Bad", wantCode: 400, wantError: "name"},
		{name: "delete_unknown_type", method: "DELETE", path: "/v1/namespaces/default/widgets/x", wantCode: 404},
		{name: "delete_many_read_only", method: "POST", path: "/v1/delete", body: `{"items":[{"kind":"Service","namespace":"default","name":"web"}]}`, wantCode: 400, wantError: "items[0]: kind: Service is read-only"},
		{name: "delete_many_unknown_kind", method: "POST", path: "/v1/delete", body: `{"items":[{"kind":"Widget","name":"x"}]}`, wantCode: 400, wantError: "unknown kind"},
		{name: "delete_many_empty", method: "POST", path: "/v1/delete", body: `{"items":[]}`, wantCode: 400, wantError: "at least one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			got := send(t, a.operator, tt.method, a.srv.URL+tt.path, "application/json", body)
			if got.status != tt.wantCode {
				t.Fatalf("status: got %d %s, want %d", got.status, got.body, tt.wantCode)
			}
			if tt.wantError != "" {
				if eb := got.errorBody(t); !strings.Contains(eb.Error, tt.wantError) {
					t.Errorf("error: got %q, want it to contain %q", eb.Error, tt.wantError)
				}
			}
			if tt.wantNames == nil {
				return
			}
			objs, err := config.UnmarshalList(got.body)
			if err != nil {
				t.Fatalf("UnmarshalList(%s): %v", got.body, err)
			}
			names := []string{}
			for _, o := range objs {
				names = append(names, config.Ref(o))
			}
			if diff := cmp.Diff(tt.wantNames, names); diff != "" {
				t.Errorf("items (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("get_is_one_object", func(t *testing.T) {
		b, err := a.client.Get(ctx, "policies", "shop", "b")
		if err != nil {
			t.Fatal(err)
		}
		o, err := config.DecodeObject(b)
		if err != nil {
			t.Fatalf("DecodeObject(%s): %v", b, err)
		}
		m := o.GetMetadata()
		if config.Ref(o) != "shop/b" || m.ResourceVersion == "" || m.CreationTimestamp != start.Format(time.RFC3339) {
			t.Errorf("got %s with resourceVersion %q creationTimestamp %q; want shop/b with a version, created at %s",
				config.Ref(o), m.ResourceVersion, m.CreationTimestamp, start.Format(time.RFC3339))
		}
	})
	t.Run("delete_one_then_missing", func(t *testing.T) {
		got := send(t, a.operator, "DELETE", a.srv.URL+"/v1/namespaces/shop/policies/b", "", nil)
		var rl admin.ResultList
		if err := json.Unmarshal(got.body, &rl); err != nil || got.status != 200 {
			t.Fatalf("got %d %s, want 200 and results", got.status, got.body)
		}
		want := []resource.Result{{Kind: "AuthorizationPolicy", Namespace: "shop", Name: "b", Outcome: resource.Deleted}}
		if diff := cmp.Diff(want, rl.Results); diff != "" {
			t.Errorf("results (-want +got):\n%s", diff)
		}
		if got := send(t, a.operator, "GET", a.srv.URL+"/v1/namespaces/shop/policies/b", "", nil); got.status != 404 {
			t.Errorf("get after delete: got %d, want 404", got.status)
		}
	})
	t.Run("delete_many_with_missing", func(t *testing.T) {
		results, err := a.client.Delete(ctx, []resource.Result{
			{Kind: "AuthorizationPolicy", Name: "a"}, // namespace defaults to "default"
			{Kind: "AuthorizationPolicy", Namespace: "shop", Name: "gone"},
		})
		if err != nil {
			t.Fatalf("Delete: %v", err)
		}
		want := []resource.Result{
			{Kind: "AuthorizationPolicy", Namespace: "default", Name: "a", Outcome: resource.Deleted},
			{Kind: "AuthorizationPolicy", Namespace: "shop", Name: "gone", Outcome: resource.NotFound},
		}
		if diff := cmp.Diff(want, results); diff != "" {
			t.Errorf("results (-want +got):\n%s", diff)
		}
		if names := a.policyNames(t); len(names) != 0 {
			t.Errorf("policies left: got %v, want none", names)
		}
	})
}

func TestClientAPIError(t *testing.T) {
	a := newAPI(t)
	_, err := a.client.Apply(context.Background(), []json.RawMessage{json.RawMessage(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"x"},"spec":{"rules":[{"to":{"methods":["get"]}}]}}`)})
	var ae *admin.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("Apply: got %v, want an *admin.APIError", err)
	}
	if ae.Status != 422 || len(ae.Details) != 1 || !strings.Contains(ae.Error(), "document 1") {
		t.Errorf("got status %d, details %q, message %q; want 422 with one detail naming document 1", ae.Status, ae.Details, ae.Error())
	}
	if a.client.Server() != a.srv.URL {
		t.Errorf("Server: got %q, want %q", a.client.Server(), a.srv.URL)
	}
}

func TestClientUnreachable(t *testing.T) {
	a := newAPI(t)
	cred := *a.cred
	a.srv.Close()
	c, err := admin.NewClient(&cred)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(context.Background(), "policies", ""); !errors.Is(err, admin.ErrUnreachable) {
		t.Errorf("List: got %v, want ErrUnreachable", err)
	}
}

func TestCreateToken(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		wantCode     int
		wantService  identity.ServiceRef
		wantIdentity string
		wantTTL      time.Duration
	}{
		{name: "defaults", body: `{"service":"default/web"}`, wantCode: 201,
			wantService: identity.ServiceRef{Namespace: "default", Name: "web"}, wantIdentity: "spiffe://bulwark.test/ns/default/sa/web", wantTTL: 10 * time.Minute},
		{name: "bare_service_is_default_namespace", body: `{"service":"web"}`, wantCode: 201,
			wantService: identity.ServiceRef{Namespace: "default", Name: "web"}, wantIdentity: "spiffe://bulwark.test/ns/default/sa/web", wantTTL: 10 * time.Minute},
		{name: "identity_and_ttl", body: `{"service":"shop/api","identity":"api-sa","ttl":"1h"}`, wantCode: 201,
			wantService: identity.ServiceRef{Namespace: "shop", Name: "api"}, wantIdentity: "spiffe://bulwark.test/ns/shop/sa/api-sa", wantTTL: time.Hour},
		{name: "ttl_max", body: `{"service":"web","ttl":"168h"}`, wantCode: 201,
			wantService: identity.ServiceRef{Namespace: "default", Name: "web"}, wantIdentity: "spiffe://bulwark.test/ns/default/sa/web", wantTTL: 168 * time.Hour},
		{name: "ttl_1s", body: `{"service":"web","ttl":"1s"}`, wantCode: 201,
			wantService: identity.ServiceRef{Namespace: "default", Name: "web"}, wantIdentity: "spiffe://bulwark.test/ns/default/sa/web", wantTTL: time.Second},
		{name: "ttl_over_max", body: `{"service":"web","ttl":"168h1s"}`, wantCode: 400},
		{name: "ttl_zero", body: `{"service":"web","ttl":"0s"}`, wantCode: 400},
		{name: "ttl_negative", body: `{"service":"web","ttl":"-1m"}`, wantCode: 400},
		{name: "ttl_not_a_duration", body: `{"service":"web","ttl":"ten minutes"}`, wantCode: 400},
		{name: "ttl_number", body: `{"service":"web","ttl":600}`, wantCode: 400},
		{name: "no_service", body: `{}`, wantCode: 400},
		{name: "bad_service", body: `{"service":"Shop/API"}`, wantCode: 400},
		{name: "service_three_parts", body: `{"service":"a/b/c"}`, wantCode: 400},
		{name: "bad_identity", body: `{"service":"web","identity":"sa/web"}`, wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAPI(t)
			got := send(t, a.operator, "POST", a.srv.URL+"/v1/tokens", "application/json", []byte(tt.body))
			if got.status != tt.wantCode {
				t.Fatalf("status: got %d %s, want %d", got.status, got.body, tt.wantCode)
			}
			if tt.wantCode != 201 {
				return
			}
			var tr admin.TokenResponse
			dec := json.NewDecoder(bytes.NewReader(got.body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&tr); err != nil {
				t.Fatalf("decode %s: %v", got.body, err)
			}
			if tr.Service != tt.wantService.String() || tr.Identity != tt.wantIdentity || !tr.ExpiresAt.Equal(start.Add(tt.wantTTL)) {
				t.Errorf("got service %q identity %q expiresAt %v; want %q %q %v",
					tr.Service, tr.Identity, tr.ExpiresAt, tt.wantService, tt.wantIdentity, start.Add(tt.wantTTL))
			}
			p, err := attest.ParseToken(tr.Token)
			if err != nil || p.Pin != testPin {
				t.Errorf("ParseToken: got %+v, %v; want the server's pin %q", p, err, testPin)
			}

			// The token works, once, for its service only.
			ctx := context.Background()
			if _, err := a.tokens.Attest(ctx, attest.Evidence{JoinToken: tr.Token, Service: identity.ServiceRef{Namespace: "default", Name: "other"}}); err == nil {
				t.Errorf("Attest for another service: got no error, want rejection")
			}
			res, err := a.tokens.Attest(ctx, attest.Evidence{JoinToken: tr.Token, Service: tt.wantService})
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			wantAccount := tt.wantIdentity[strings.LastIndex(tt.wantIdentity, "/")+1:]
			if res.Service != tt.wantService || res.Account != wantAccount {
				t.Errorf("Attest: got %+v, want service %v account %q", res, tt.wantService, wantAccount)
			}
			if _, err := a.tokens.Attest(ctx, attest.Evidence{JoinToken: tr.Token, Service: tt.wantService}); !errors.Is(err, attest.ErrRejected) {
				t.Errorf("second Attest: got %v, want ErrRejected", err)
			}
		})
	}
}

func TestCreateTokenExpires(t *testing.T) {
	a := newAPI(t)
	tr, err := a.client.CreateToken(context.Background(), admin.TokenRequest{Service: "default/web", TTL: "2m"})
	if err != nil {
		t.Fatal(err)
	}
	a.clock.Advance(2*time.Minute + time.Second)
	if _, err := a.tokens.Attest(context.Background(), attest.Evidence{JoinToken: tr.Token, Service: identity.ServiceRef{Namespace: "default", Name: "web"}}); !errors.Is(err, attest.ErrRejected) {
		t.Errorf("Attest after expiry: got %v, want ErrRejected", err)
	}
}

func TestProxyAndServiceViews(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	expiry := start.Add(time.Hour)
	records := []registry.Proxy{
		{Instance: "web-aaaa", Namespace: "default", Service: "web", Identity: "spiffe://bulwark.test/ns/default/sa/web", Address: "127.0.0.1:1001",
			Connected: true, Live: true, LastSeen: start, SVIDExpiry: expiry, SVIDSerial: "01", SnapshotVersion: 7, AckedVersion: 7, Version: "0.1.0"},
		// Disconnected within the grace period: still an endpoint, not ready.
		{Instance: "web-bbbb", Namespace: "default", Service: "web", Identity: "spiffe://bulwark.test/ns/default/sa/web-v2", Address: "127.0.0.1:1002",
			Connected: false, Live: true, LastSeen: start, LastNack: "bad policy", SnapshotVersion: 7, AckedVersion: 6},
		// Gone: not an endpoint, its identity still listed.
		{Instance: "web-cccc", Namespace: "default", Service: "web", Identity: "spiffe://bulwark.test/ns/default/sa/web-old", Address: "127.0.0.1:1003",
			Connected: false, Live: false, LastSeen: start},
		// Client-only: no address, never a service endpoint.
		{Instance: "client-dddd", Namespace: "default", Service: "client", Identity: "spiffe://bulwark.test/ns/default/sa/client",
			Connected: true, Live: true, LastSeen: start},
		{Instance: "api-eeee", Namespace: "shop", Service: "api", Identity: "spiffe://bulwark.test/ns/shop/sa/api", Address: "127.0.0.1:2001",
			Connected: true, Live: true, LastSeen: start},
	}
	for _, r := range records {
		if err := a.registry.UpdateProxy(ctx, r.Namespace, r.Instance, func(p *registry.Proxy) { *p = r }); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("services", func(t *testing.T) {
		raw, err := a.client.List(ctx, "services", "")
		if err != nil {
			t.Fatal(err)
		}
		objs, err := config.UnmarshalList(raw)
		if err != nil {
			t.Fatal(err)
		}
		svc := func(ns, name string, st config.ServiceStatus) config.Object {
			return &config.Service{
				TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindService},
				Metadata: config.ObjectMeta{Name: name, Namespace: ns}, Status: st,
			}
		}
		want := []config.Object{
			svc("default", "web", config.ServiceStatus{
				Identities: []string{"spiffe://bulwark.test/ns/default/sa/web", "spiffe://bulwark.test/ns/default/sa/web-old", "spiffe://bulwark.test/ns/default/sa/web-v2"},
				Endpoints:  []string{"127.0.0.1:1001", "127.0.0.1:1002"},
				Ready:      1,
			}),
			svc("shop", "api", config.ServiceStatus{
				Identities: []string{"spiffe://bulwark.test/ns/shop/sa/api"}, Endpoints: []string{"127.0.0.1:2001"}, Ready: 1,
			}),
		}
		if diff := cmp.Diff(want, objs); diff != "" {
			t.Errorf("services (-want +got):\n%s", diff)
		}
	})
	t.Run("services_in_namespace", func(t *testing.T) {
		raw, err := a.client.List(ctx, "svc", "shop")
		if err != nil {
			t.Fatal(err)
		}
		objs, err := config.UnmarshalList(raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 1 || config.Ref(objs[0]) != "shop/api" {
			t.Errorf("got %d services, want only shop/api", len(objs))
		}
	})
	t.Run("get_service", func(t *testing.T) {
		if _, err := a.client.Get(ctx, "services", "default", "web"); err != nil {
			t.Errorf("Get default/web: %v", err)
		}
		_, err := a.client.Get(ctx, "services", "default", "client")
		var ae *admin.APIError
		if !errors.As(err, &ae) || ae.Status != 404 {
			t.Errorf("Get of a client-only service: got %v, want 404", err)
		}
	})
	t.Run("proxies", func(t *testing.T) {
		raw, err := a.client.List(ctx, "proxies", "")
		if err != nil {
			t.Fatal(err)
		}
		objs, err := config.UnmarshalList(raw)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range objs {
			got = append(got, config.Ref(o))
		}
		want := []string{"default/client-dddd", "default/web-aaaa", "default/web-bbbb", "default/web-cccc", "shop/api-eeee"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("proxies (-want +got):\n%s", diff)
		}
		first := objs[1].(*config.Proxy)
		wantStatus := config.ProxyStatus{
			Identity: "spiffe://bulwark.test/ns/default/sa/web", Service: "default/web", Address: "127.0.0.1:1001", Connected: true,
			LastSeen: start.Format(time.RFC3339), SVIDExpiry: expiry.Format(time.RFC3339), SVIDSerial: "01",
			SnapshotVersion: 7, AckedVersion: 7, Version: "0.1.0",
		}
		if diff := cmp.Diff(wantStatus, first.Status); diff != "" {
			t.Errorf("status of web-aaaa (-want +got):\n%s", diff)
		}
	})
}

func TestProxyView(t *testing.T) {
	v := admin.ProxyView(registry.Proxy{Instance: "web-1", Namespace: "default", Service: "web"})
	if v.Status.LastSeen != "" || v.Status.SVIDExpiry != "" {
		t.Errorf("zero times: got lastSeen %q svidExpiry %q, want both empty", v.Status.LastSeen, v.Status.SVIDExpiry)
	}
	if _, err := config.Marshal(v); err != nil {
		t.Errorf("Marshal(ProxyView): %v", err)
	}
}

func mustWorkloadID(t testing.TB, ns, sa string) spiffeid.ID {
	t.Helper()
	id, err := identity.WorkloadID(td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
