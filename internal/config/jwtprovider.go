package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/authn/keyset"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// KindJWTProvider is the kind of JWTProvider resources.
const KindJWTProvider = "JWTProvider"

// Defaults and bounds of a JWTProvider.
const (
	DefaultJWKSRefresh = 5 * time.Minute
	MinJWKSRefresh     = time.Second
	MaxJWKSRefresh     = 24 * time.Hour
	DefaultClockSkew   = 60 * time.Second
	MaxClockSkew       = 5 * time.Minute
	// DefaultTokenHeader and DefaultTokenPrefix are where a token is read
	// when a provider names no location.
	DefaultTokenHeader = "Authorization"
	DefaultTokenPrefix = "Bearer "
)

// JWTProvider tells the proxies of the workloads it selects how to
// authenticate end users: which issuer's tokens to accept, with which keys,
// read from where, and which claims to pass to the app. A request with an
// invalid token is answered 401; a valid token gives the request a principal
// "<iss>/<sub>" that AuthorizationPolicy from.requestPrincipals match.
// The control plane fetches jwksURI and pushes the keys to the proxies:
// proxies never fetch keys themselves.
type JWTProvider struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta      `json:"metadata"`
	Spec     JWTProviderSpec `json:"spec"`
}

// JWTProviderSpec is the body of a JWTProvider.
type JWTProviderSpec struct {
	// Selector picks the workloads the provider applies to, as an
	// AuthorizationPolicy's does: in the provider's namespace, or in every
	// namespace for a provider in RootNamespace. Empty: every workload of
	// the namespace (of the mesh, in RootNamespace).
	Selector PolicySelector `json:"selector,omitzero"`
	// Issuer is the token's "iss", matched exactly. Required.
	Issuer string `json:"issuer"`
	// JWKSURI is the https:// URL of the issuer's keys, fetched by the
	// control plane every RefreshInterval. Exactly one of JWKSURI and JWKS
	// is required.
	JWKSURI string `json:"jwksURI,omitempty"`
	// JWKS is the issuer's keys inline, a JWKS document (JSON): public
	// signature keys only.
	JWKS string `json:"jwks,omitempty"`
	// JWKSCA is PEM of the CA certificates that JWKSURI's server
	// certificate must chain to. Default: the system roots.
	JWKSCA string `json:"jwksCA,omitempty"`
	// Audiences: when given, the token's "aud" must contain one of them.
	// Empty: "aud" is not checked.
	Audiences []string `json:"audiences,omitempty"`
	// FromHeaders are headers that carry the token, after a prefix. When
	// none of FromHeaders, FromCookies and FromParams is given:
	// [{name: Authorization, prefix: "Bearer "}].
	FromHeaders []TokenHeader `json:"fromHeaders,omitempty"`
	// FromCookies are names of cookies that carry the token.
	FromCookies []string `json:"fromCookies,omitempty"`
	// FromParams are names of query parameters that carry the token.
	FromParams []string `json:"fromParams,omitempty"`
	// ForwardToken passes the token on to the app. Default: false, the
	// token is removed from where it was found before the request reaches
	// the app.
	ForwardToken bool `json:"forwardToken,omitzero"`
	// ClaimsToHeaders copies claims of a valid token into request headers
	// for the app. The proxy always removes these headers from what the
	// client sent, with or without a token, so the app can trust them.
	ClaimsToHeaders []ClaimToHeader `json:"claimsToHeaders,omitempty"`
	// Required: a request without a token is answered 401. Default:
	// false, a request without a token goes on unauthenticated (no
	// request principal) and the policies decide.
	Required bool `json:"required,omitzero"`
	// RefreshInterval is how often JWKSURI is fetched, a Go duration.
	// Default: "5m"; minimum "1s", maximum "24h".
	RefreshInterval string `json:"refreshInterval,omitempty"`
	// ClockSkew is the tolerance on exp, nbf and iat, a Go duration.
	// Default: "60s"; maximum "5m".
	ClockSkew string `json:"clockSkew,omitempty"`
}

// TokenHeader is a header that carries a token.
type TokenHeader struct {
	// Name of the header. Required.
	Name string `json:"name"`
	// Prefix before the token, matched case-insensitively, such as
	// "Bearer ". Empty: the whole value is the token.
	Prefix string `json:"prefix,omitempty"`
}

// ClaimToHeader copies one claim into one request header.
type ClaimToHeader struct {
	// Claim is the name of a top-level claim. A string is copied as is,
	// a number or a boolean formatted, a list of those joined with ",";
	// a claim of any other type sets no header.
	Claim string `json:"claim"`
	// Header is the name of the header to set.
	Header string `json:"header"`
}

// GetTypeMeta implements Object.
func (p *JWTProvider) GetTypeMeta() *TypeMeta { return &p.TypeMeta }

// GetMetadata implements Object.
func (p *JWTProvider) GetMetadata() *ObjectMeta { return &p.Metadata }

// Selects reports whether the provider applies to the workload of svc whose
// instance carries labels, by the rules of AuthorizationPolicy.Selects.
func (p *JWTProvider) Selects(svc identity.ServiceRef, labels map[string]string) bool {
	return selects(p.Metadata.Namespace, p.Spec.Selector, svc, labels)
}

// Refresh returns RefreshInterval as a duration; the default for a spec
// that was not validated or has none.
func (s *JWTProviderSpec) Refresh() time.Duration {
	d, err := time.ParseDuration(s.RefreshInterval)
	if err != nil || d < MinJWKSRefresh || d > MaxJWKSRefresh {
		return DefaultJWKSRefresh
	}
	return d
}

// Skew returns ClockSkew as a duration; the default for a spec that was not
// validated or has none.
func (s *JWTProviderSpec) Skew() time.Duration {
	d, err := time.ParseDuration(s.ClockSkew)
	if err != nil || d < 0 || d > MaxClockSkew {
		return DefaultClockSkew
	}
	return d
}

// Validate implements Object. It fills in the defaults (metadata.namespace,
// fromHeaders, refreshInterval, clockSkew) and refuses anything that could
// weaken authentication:
//
//   - spec.issuer: required.
//   - spec.jwksURI: an https:// URL without user info or fragment; exactly
//     one of jwksURI and jwks.
//   - spec.jwks: a JWKS with at least one usable public signature key and
//     no symmetric or private key (see internal/authn/keyset).
//   - spec.jwksCA: PEM CA certificates, only with jwksURI.
//   - header names: HTTP tokens; a claim header must not be a token location
//     of the provider, nor Authorization, Cookie, Host, a hop-by-hop or
//     framing header, Forwarded, X-Forwarded-* or X-Bulwark-* (the proxy's
//     own identity headers).
//   - spec.refreshInterval: 1s to 24h; spec.clockSkew: 0 to 5m.
//
// No list entry may be empty or repeated.
func (p *JWTProvider) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&p.Metadata, &errs)
	s := &p.Spec
	validatePolicySelector(p.Metadata.Namespace, &s.Selector, &errs)
	if s.Issuer == "" {
		errs.add("spec.issuer", "required")
	} else if len(s.Issuer) > 1024 {
		errs.add("spec.issuer", "longer than 1024 bytes")
	}
	switch {
	case s.JWKSURI == "" && s.JWKS == "":
		errs.add("spec", "one of jwksURI and jwks is required")
	case s.JWKSURI != "" && s.JWKS != "":
		errs.add("spec", "jwksURI and jwks are mutually exclusive")
	case s.JWKSURI != "":
		if msg := jwtCheckJWKSURI(s.JWKSURI); msg != "" {
			errs.add("spec.jwksURI", "%s", msg)
		}
	default:
		if _, err := keyset.Parse([]byte(s.JWKS)); err != nil {
			errs.add("spec.jwks", "%v", err)
		}
	}
	if s.JWKSCA != "" {
		if s.JWKSURI == "" {
			errs.add("spec.jwksCA", "only allowed with jwksURI")
		} else if msg := checkCAPEM(s.JWKSCA); msg != "" {
			errs.add("spec.jwksCA", "%s", msg)
		}
	}
	validateList("spec.audiences", s.Audiences, func(string) string { return "" }, &errs)
	jwtCheckUnique("spec.audiences", s.Audiences, &errs)

	if len(s.FromHeaders) == 0 && len(s.FromCookies) == 0 && len(s.FromParams) == 0 {
		s.FromHeaders = []TokenHeader{{Name: DefaultTokenHeader, Prefix: DefaultTokenPrefix}}
	}
	locations := map[string]bool{}
	for i, h := range s.FromHeaders {
		path := fmt.Sprintf("spec.fromHeaders[%d]", i)
		if msg := jwtCheckHeaderName(h.Name); msg != "" {
			errs.add(path+".name", "%s", msg)
			continue
		}
		canon := http.CanonicalHeaderKey(h.Name)
		if locations[canon] {
			errs.add(path+".name", "%q is listed twice", h.Name)
		}
		locations[canon] = true
		if strings.ContainsAny(h.Prefix, "\r\n\x00") {
			errs.add(path+".prefix", "must not contain CR, LF or NUL")
		}
	}
	validateList("spec.fromCookies", s.FromCookies, jwtCheckCookieName, &errs)
	jwtCheckUnique("spec.fromCookies", s.FromCookies, &errs)
	validateList("spec.fromParams", s.FromParams, jwtCheckParamName, &errs)
	jwtCheckUnique("spec.fromParams", s.FromParams, &errs)

	claimHeaders := map[string]bool{}
	for i, c := range s.ClaimsToHeaders {
		path := fmt.Sprintf("spec.claimsToHeaders[%d]", i)
		if c.Claim == "" {
			errs.add(path+".claim", "required")
		}
		msg := jwtCheckHeaderName(c.Header)
		if msg == "" {
			msg = jwtCheckClaimHeader(c.Header)
		}
		if msg != "" {
			errs.add(path+".header", "%s", msg)
			continue
		}
		canon := http.CanonicalHeaderKey(c.Header)
		switch {
		case locations[canon]:
			errs.add(path+".header", "%q is where the token is read from", c.Header)
		case claimHeaders[canon]:
			errs.add(path+".header", "%q is set by another claim", c.Header)
		}
		claimHeaders[canon] = true
	}

	if s.RefreshInterval == "" {
		s.RefreshInterval = DefaultJWKSRefresh.String()
	} else if msg := jwtCheckDuration(s.RefreshInterval, MinJWKSRefresh, MaxJWKSRefresh); msg != "" {
		errs.add("spec.refreshInterval", "%s", msg)
	}
	if s.ClockSkew == "" {
		s.ClockSkew = DefaultClockSkew.String()
	} else if msg := jwtCheckDuration(s.ClockSkew, 0, MaxClockSkew); msg != "" {
		errs.add("spec.clockSkew", "%s", msg)
	}
	return errs
}

// jwtCheckJWKSURI checks a jwksURI.
func jwtCheckJWKSURI(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Sprintf("not a URL: %v", err)
	case u.Scheme != "https":
		return fmt.Sprintf("%q must use the HTTPS protocol (https://): keys fetched over plain HTTP can be replaced on the way", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Sprintf("%q has no host", s)
	case u.User != nil:
		return fmt.Sprintf("%q must not carry user info", s)
	case u.Fragment != "" || strings.Contains(s, "#"):
		return fmt.Sprintf("%q must not have a fragment", s)
	}
	return ""
}

// checkCAPEM checks that s is PEM of one or more CA certificates.
func checkCAPEM(s string) string { return checkCertificatesPEM(s, true) }

// checkCertificatesPEM checks that s is PEM of one or more certificates,
// CA certificates only when requireCA (an external service's roots may
// pin a self-signed server certificate).
func checkCertificatesPEM(s string, requireCA bool) string {
	rest := []byte(s)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Sprintf("PEM block %d is a %q, want CERTIFICATE", n+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Sprintf("certificate %d: %v", n+1, err)
		}
		if requireCA && !c.IsCA {
			return fmt.Sprintf("certificate %d (%s) is not a CA certificate", n+1, c.Subject)
		}
		n++
	}
	if n == 0 {
		return "no PEM CERTIFICATE block"
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return "content after the last PEM block"
	}
	return ""
}

// jwtCheckHeaderName checks an HTTP header name.
func jwtCheckHeaderName(s string) string {
	if s == "" {
		return "required"
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return fmt.Sprintf("%q is not an HTTP header name (RFC 9110 token)", s)
		}
	}
	return ""
}

// jwtCheckClaimHeader refuses header names the proxy must own or that would
// change how the request is framed or routed.
func jwtCheckClaimHeader(s string) string {
	l := strings.ToLower(s)
	switch l {
	case "authorization", "proxy-authorization", "cookie", "host", "content-length", "transfer-encoding",
		"connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection", "forwarded", "expect":
		return fmt.Sprintf("%q cannot carry a claim", s)
	}
	for _, p := range []string{"x-forwarded-", "x-bulwark-"} {
		if strings.HasPrefix(l, p) {
			return fmt.Sprintf("%q cannot carry a claim: %s* headers are set by the proxy only", s, http.CanonicalHeaderKey(p))
		}
	}
	return ""
}

// jwtCheckCookieName checks a fromCookies entry.
func jwtCheckCookieName(s string) string {
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return fmt.Sprintf("%q is not a cookie name (RFC 6265 token)", s)
		}
	}
	return ""
}

// jwtCheckParamName checks a fromParams entry.
func jwtCheckParamName(s string) string {
	if strings.ContainsAny(s, "&=#% \t\r\n\x00") {
		return fmt.Sprintf("%q: a query parameter name must not contain '&', '=', '#', '%%' or white space", s)
	}
	return ""
}

// jwtCheckDuration checks a Go duration between lo and hi.
func jwtCheckDuration(s string, lo, hi time.Duration) string {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a Go duration such as \"5m\"", s)
	case d < lo:
		return fmt.Sprintf("%s is below the minimum %s", d, lo)
	case d > hi:
		return fmt.Sprintf("%s is above the maximum %s", d, hi)
	}
	return ""
}

// jwtCheckUnique reports entries of list given more than once.
func jwtCheckUnique(path string, list []string, errs *FieldErrors) {
	seen := make(map[string]bool, len(list))
	for i, v := range list {
		if v != "" && seen[v] {
			errs.add(fmt.Sprintf("%s[%d]", path, i), "%q is listed twice", v)
		}
		seen[v] = true
	}
}
