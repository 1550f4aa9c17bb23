package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// ecJWKS is the public EC P-256 key of RFC 7517 appendix A.1.
const ecJWKS = `{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","kid":"1"}]}`

// certPEM returns a self-signed certificate, a CA one when isCA is true.
func certPEM(t *testing.T, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "jwks ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: isCA, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// validJWTProvider uses every field validly; each case below carries one
// defect.
func validJWTProvider(t *testing.T) *config.JWTProvider {
	return &config.JWTProvider{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindJWTProvider},
		Metadata: config.ObjectMeta{Namespace: "default", Name: "idp"},
		Spec: config.JWTProviderSpec{
			Selector:        config.PolicySelector{Service: "api", Labels: map[string]string{"track": "canary"}},
			Issuer:          "https://issuer.example",
			JWKSURI:         "https://issuer.example/.well-known/jwks.json",
			JWKSCA:          certPEM(t, true),
			Audiences:       []string{"api", "https://api.example"},
			FromHeaders:     []config.TokenHeader{{Name: "Authorization", Prefix: "Bearer "}, {Name: "X-Token"}},
			FromCookies:     []string{"session"},
			FromParams:      []string{"access_token"},
			ForwardToken:    true,
			ClaimsToHeaders: []config.ClaimToHeader{{Claim: "sub", Header: "X-User"}, {Claim: "groups", Header: "x-groups"}},
			Required:        true,
			RefreshInterval: "1s",
			ClockSkew:       "0s",
		},
	}
}

func TestJWTProviderValidate(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(p *config.JWTProvider)
		wantPath string // "" for a valid provider
		wantMsg  string // a part of the message
	}{
		{name: "valid", mutate: func(*config.JWTProvider) {}},
		{name: "valid_inline", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI, p.Spec.JWKSCA, p.Spec.JWKS = "", "", ecJWKS }},
		{name: "valid_mesh_wide_by_labels", mutate: func(p *config.JWTProvider) {
			p.Metadata.Namespace, p.Spec.Selector.Service = config.RootNamespace, ""
		}},
		{name: "valid_max_durations", mutate: func(p *config.JWTProvider) { p.Spec.RefreshInterval, p.Spec.ClockSkew = "24h", "5m" }},

		{name: "metadata_name_missing", mutate: func(p *config.JWTProvider) { p.Metadata.Name = "" }, wantPath: "metadata.name", wantMsg: "required"},
		{name: "selector_service_invalid", mutate: func(p *config.JWTProvider) { p.Spec.Selector.Service = "Api" }, wantPath: "spec.selector.service", wantMsg: "lowercase"},
		{name: "selector_service_in_root_namespace", mutate: func(p *config.JWTProvider) { p.Metadata.Namespace = config.RootNamespace }, wantPath: "spec.selector.service", wantMsg: "not allowed in the root namespace bulwark-system"},
		{name: "selector_label_invalid", mutate: func(p *config.JWTProvider) { p.Spec.Selector.Labels["bad key!"] = "x" }, wantPath: "spec.selector.labels", wantMsg: "bad key!"},
		{name: "issuer_missing", mutate: func(p *config.JWTProvider) { p.Spec.Issuer = "" }, wantPath: "spec.issuer", wantMsg: "required"},
		{name: "issuer_too_long", mutate: func(p *config.JWTProvider) { p.Spec.Issuer = strings.Repeat("i", 1025) }, wantPath: "spec.issuer", wantMsg: "longer than 1024"},
		{name: "no_keys", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI, p.Spec.JWKSCA = "", "" }, wantPath: "spec", wantMsg: "one of jwksURI and jwks is required"},
		{name: "both_uri_and_inline", mutate: func(p *config.JWTProvider) { p.Spec.JWKS = ecJWKS }, wantPath: "spec", wantMsg: "mutually exclusive"},
		{name: "jwks_uri_plain_http", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI = "http://issuer.example/jwks" }, wantPath: "spec.jwksURI", wantMsg: "must use the HTTPS protocol"},
		{name: "jwks_uri_no_scheme", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI = "issuer.example/jwks" }, wantPath: "spec.jwksURI", wantMsg: "must use the HTTPS protocol"},
		{name: "jwks_uri_no_host", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI = "https:///jwks" }, wantPath: "spec.jwksURI", wantMsg: "has no host"},
		{name: "jwks_uri_user_info", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI = "https://u:p@issuer.example/jwks" }, wantPath: "spec.jwksURI", wantMsg: "user info"},
		{name: "jwks_uri_fragment", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI = "https://issuer.example/jwks#x" }, wantPath: "spec.jwksURI", wantMsg: "fragment"},
		{name: "jwks_not_json", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI, p.Spec.JWKSCA, p.Spec.JWKS = "", "", "not json" }, wantPath: "spec.jwks", wantMsg: "not a JSON object"},
		{name: "jwks_symmetric", mutate: func(p *config.JWTProvider) {
			p.Spec.JWKSURI, p.Spec.JWKSCA, p.Spec.JWKS = "", "", `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`
		}, wantPath: "spec.jwks", wantMsg: "symmetric (oct) keys are not allowed"},
		{name: "jwks_private", mutate: func(p *config.JWTProvider) {
			p.Spec.JWKSURI, p.Spec.JWKSCA = "", ""
			p.Spec.JWKS = `{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}]}`
		}, wantPath: "spec.jwks", wantMsg: "private keys are not allowed"},
		{name: "jwks_empty", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI, p.Spec.JWKSCA, p.Spec.JWKS = "", "", `{"keys":[]}` }, wantPath: "spec.jwks", wantMsg: "no usable"},
		{name: "jwks_ca_without_uri", mutate: func(p *config.JWTProvider) { p.Spec.JWKSURI, p.Spec.JWKS = "", ecJWKS }, wantPath: "spec.jwksCA", wantMsg: "only allowed with jwksURI"},
		{name: "jwks_ca_not_pem", mutate: func(p *config.JWTProvider) { p.Spec.JWKSCA = "not pem" }, wantPath: "spec.jwksCA", wantMsg: "no PEM CERTIFICATE block"},
		{name: "jwks_ca_not_a_ca", mutate: func(p *config.JWTProvider) { p.Spec.JWKSCA = certPEM(t, false) }, wantPath: "spec.jwksCA", wantMsg: "is not a CA certificate"},
		{name: "jwks_ca_trailing_garbage", mutate: func(p *config.JWTProvider) { p.Spec.JWKSCA += "garbage" }, wantPath: "spec.jwksCA", wantMsg: "content after the last PEM block"},
		{name: "audience_empty", mutate: func(p *config.JWTProvider) { p.Spec.Audiences[1] = "" }, wantPath: "spec.audiences[1]", wantMsg: "must not be empty"},
		{name: "audience_twice", mutate: func(p *config.JWTProvider) { p.Spec.Audiences[1] = "api" }, wantPath: "spec.audiences[1]", wantMsg: "listed twice"},
		{name: "header_name_missing", mutate: func(p *config.JWTProvider) { p.Spec.FromHeaders[1].Name = "" }, wantPath: "spec.fromHeaders[1].name", wantMsg: "required"},
		{name: "header_name_invalid", mutate: func(p *config.JWTProvider) { p.Spec.FromHeaders[1].Name = "X Token" }, wantPath: "spec.fromHeaders[1].name", wantMsg: "not an HTTP header name"},
		{name: "header_twice_other_case", mutate: func(p *config.JWTProvider) { p.Spec.FromHeaders[1].Name = "authorization" }, wantPath: "spec.fromHeaders[1].name", wantMsg: "listed twice"},
		{name: "header_prefix_newline", mutate: func(p *config.JWTProvider) { p.Spec.FromHeaders[0].Prefix = "Bearer\n" }, wantPath: "spec.fromHeaders[0].prefix", wantMsg: "CR, LF or NUL"},
		{name: "cookie_invalid", mutate: func(p *config.JWTProvider) { p.Spec.FromCookies[0] = "a;b" }, wantPath: "spec.fromCookies[0]", wantMsg: "not a cookie name"},
		{name: "param_invalid", mutate: func(p *config.JWTProvider) { p.Spec.FromParams[0] = "a=b" }, wantPath: "spec.fromParams[0]", wantMsg: "query parameter name"},
		{name: "param_empty", mutate: func(p *config.JWTProvider) { p.Spec.FromParams[0] = "" }, wantPath: "spec.fromParams[0]", wantMsg: "must not be empty"},
		{name: "claim_missing", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[0].Claim = "" }, wantPath: "spec.claimsToHeaders[0].claim", wantMsg: "required"},
		{name: "claim_header_authorization", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[0].Header = "authorization" }, wantPath: "spec.claimsToHeaders[0].header", wantMsg: "cannot carry a claim"},
		{name: "claim_header_x_forwarded", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[0].Header = "X-Forwarded-User" }, wantPath: "spec.claimsToHeaders[0].header", wantMsg: "X-Forwarded-* headers are set by the proxy only"},
		{name: "claim_header_x_bulwark", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[0].Header = "x-bulwark-user" }, wantPath: "spec.claimsToHeaders[0].header", wantMsg: "X-Bulwark-* headers"},
		{name: "claim_header_forwarded", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[0].Header = "Forwarded" }, wantPath: "spec.claimsToHeaders[0].header", wantMsg: "cannot carry a claim"},
		{name: "claim_header_content_length", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[0].Header = "Content-Length" }, wantPath: "spec.claimsToHeaders[0].header", wantMsg: "cannot carry a claim"},
		{name: "claim_header_invalid", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[0].Header = "X-User:" }, wantPath: "spec.claimsToHeaders[0].header", wantMsg: "not an HTTP header name"},
		{name: "claim_header_is_token_location", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[0].Header = "x-token" }, wantPath: "spec.claimsToHeaders[0].header", wantMsg: "where the token is read from"},
		{name: "claim_header_twice", mutate: func(p *config.JWTProvider) { p.Spec.ClaimsToHeaders[1].Header = "X-USER" }, wantPath: "spec.claimsToHeaders[1].header", wantMsg: "set by another claim"},
		{name: "refresh_below_minimum", mutate: func(p *config.JWTProvider) { p.Spec.RefreshInterval = "500ms" }, wantPath: "spec.refreshInterval", wantMsg: "below the minimum 1s"},
		{name: "refresh_above_maximum", mutate: func(p *config.JWTProvider) { p.Spec.RefreshInterval = "25h" }, wantPath: "spec.refreshInterval", wantMsg: "above the maximum 24h0m0s"},
		{name: "refresh_not_a_duration", mutate: func(p *config.JWTProvider) { p.Spec.RefreshInterval = "5 minutes" }, wantPath: "spec.refreshInterval", wantMsg: "not a Go duration"},
		{name: "skew_above_maximum", mutate: func(p *config.JWTProvider) { p.Spec.ClockSkew = "6m" }, wantPath: "spec.clockSkew", wantMsg: "above the maximum 5m0s"},
		{name: "skew_negative", mutate: func(p *config.JWTProvider) { p.Spec.ClockSkew = "-1s" }, wantPath: "spec.clockSkew", wantMsg: "below the minimum 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validJWTProvider(t)
			tt.mutate(p)
			errs := p.Validate()
			var gotPaths []string
			for _, e := range errs {
				gotPaths = append(gotPaths, e.Path)
			}
			var wantPaths []string
			if tt.wantPath != "" {
				wantPaths = []string{tt.wantPath}
			}
			if diff := cmp.Diff(wantPaths, gotPaths); diff != "" {
				t.Fatalf("error paths mismatch (-want +got):\n%s\nerrors: %v", diff, errs)
			}
			if tt.wantPath != "" && !strings.Contains(errs[0].Msg, tt.wantMsg) {
				t.Errorf("message: got %q, want it to contain %q", errs[0].Msg, tt.wantMsg)
			}
		})
	}
}

func TestJWTProviderDecodeDefaults(t *testing.T) {
	objs, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp}
spec:
  issuer: https://issuer.example
  jwks: '` + ecJWKS + `'
`))
	if err != nil {
		t.Fatal(err)
	}
	p := objs[0].(*config.JWTProvider)
	want := config.JWTProviderSpec{
		Issuer:          "https://issuer.example",
		JWKS:            ecJWKS,
		FromHeaders:     []config.TokenHeader{{Name: "Authorization", Prefix: "Bearer "}},
		RefreshInterval: "5m0s",
		ClockSkew:       "1m0s",
	}
	if diff := cmp.Diff(want, p.Spec); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	if got, want := p.Metadata.Namespace, "default"; got != want {
		t.Errorf("got namespace %q, want %q", got, want)
	}
	if got, want := p.Spec.Refresh(), 5*time.Minute; got != want {
		t.Errorf("got Refresh %v, want %v", got, want)
	}
	if got, want := p.Spec.Skew(), time.Minute; got != want {
		t.Errorf("got Skew %v, want %v", got, want)
	}
	// What Marshal writes decodes again to the same object.
	b, err := config.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.DecodeObject(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestJWTProviderDecodeStrict(t *testing.T) {
	_, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp}
spec:
  issuer: https://issuer.example
  jwksUri: https://issuer.example/jwks
  required: "yes"
`))
	if err == nil {
		t.Fatal("got no error, want unknown and mistyped fields")
	}
	for _, want := range []string{"spec.jwksUri: unknown field", "spec.required: expected a boolean"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to contain %q", err, want)
		}
	}
}

func TestJWTProviderSelects(t *testing.T) {
	api := identity.ServiceRef{Namespace: "default", Name: "api"}
	web := identity.ServiceRef{Namespace: "default", Name: "web"}
	shop := identity.ServiceRef{Namespace: "shop", Name: "api"}
	tests := []struct {
		name   string
		ns     string
		sel    config.PolicySelector
		svc    identity.ServiceRef
		labels map[string]string
		want   bool
	}{
		{name: "service", ns: "default", sel: config.PolicySelector{Service: "api"}, svc: api, want: true},
		{name: "other_service", ns: "default", sel: config.PolicySelector{Service: "api"}, svc: web, want: false},
		{name: "namespace_wide", ns: "default", svc: web, want: true},
		{name: "other_namespace", ns: "default", svc: shop, want: false},
		{name: "mesh_wide", ns: config.RootNamespace, svc: shop, want: true},
		{name: "labels_match", ns: "default", sel: config.PolicySelector{Labels: map[string]string{"track": "canary"}}, svc: api, labels: map[string]string{"track": "canary", "x": "y"}, want: true},
		{name: "labels_differ", ns: "default", sel: config.PolicySelector{Labels: map[string]string{"track": "canary"}}, svc: api, labels: map[string]string{"track": "stable"}, want: false},
		{name: "labels_missing", ns: "default", sel: config.PolicySelector{Labels: map[string]string{"track": "canary"}}, svc: api, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &config.JWTProvider{Metadata: config.ObjectMeta{Namespace: tt.ns, Name: "idp"}, Spec: config.JWTProviderSpec{Selector: tt.sel}}
			if got := p.Selects(tt.svc, tt.labels); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
