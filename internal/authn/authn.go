// Package authn owns end-user authentication with JWTs: the verification of
// tokens against the JWTProvider resources that select a workload
// (Authenticator, used by the proxy on its inbound path), and the fetching of
// the providers' JWKS by the control plane (Fetcher), which pushes the keys
// to proxies in their snapshots: proxies never fetch keys.
//
// JOSE is done by github.com/lestrrat-go/jwx/v3; this package decides what
// is acceptable. An Authenticator accepts a token only when all of these
// hold, and otherwise answers with an *Error (401):
//
//   - There is one token: every location (header, cookie, query parameter)
//     of every provider is read, and two different tokens are refused.
//   - The token is at most MaxTokenSize bytes (larger ones are not parsed)
//     and is a JWS in compact serialization: no JWE, no JSON serialization.
//   - Its unverified "iss" names a provider exactly, and it was found in a
//     location of that provider.
//   - The key is the provider's key of the token's "kid"; without a kid,
//     the provider's only key whose algorithm is the token's "alg". The
//     algorithm is the key's (see internal/authn/keyset): a token whose
//     "alg" differs is refused, so "none", HS256 signed with an RSA public
//     key, and every other algorithm confusion fail.
//   - No "crit" header: this package understands no JWS extension.
//   - "exp" is present, and exp, nbf and iat hold at the clock's time with
//     the provider's clock skew.
//   - "aud" contains one of the provider's audiences, when it has some.
//
// A request without a token passes unauthenticated (an empty Result)
// unless a provider is required. Whatever the outcome, the headers that
// any provider fills from claims are first removed from the request, so a
// client can never set them; after success they are set from the token, and
// the token is removed from where it was found unless its provider forwards
// it.
package authn

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/bulwarkmesh/bulwark/internal/authn/keyset"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// MaxTokenSize is the largest token accepted, in bytes; a larger one is
// refused without being parsed.
const MaxTokenSize = 16 << 10

// KeySet is the usable keys of a JWKS document.
type KeySet = keyset.Set

// ParseJWKS reads a JWKS document with the rules of internal/authn/keyset:
// public signature keys only, each with the one algorithm it verifies.
func ParseJWKS(b []byte) (*KeySet, error) { return keyset.Parse(b) }

// Provider is a JWTProvider with its current keys.
type Provider struct {
	// Spec is the validated resource.
	Spec *config.JWTProvider
	// JWKS is its keys, a JWKS document; empty when none were fetched yet
	// (tokens of its issuer are then refused).
	JWKS []byte
}

// Result is the outcome of a successful authentication. The zero Result
// says the request carried no token.
type Result struct {
	// Principal is "<iss>/<sub>" of the token ("<iss>/" for a token
	// without sub).
	Principal string
	// Claims are the token's claims as JSON decodes them (numbers are
	// float64).
	Claims map[string]any
	// Provider is "namespace/name" of the provider that accepted it.
	Provider string
}

// Authenticator verifies the tokens of requests to one workload. It is
// immutable and safe for concurrent use. A nil *Authenticator has no
// provider and lets every request through unauthenticated.
type Authenticator struct {
	clock     jwt.Clock
	providers []*provider
	byIssuer  map[string]*provider
	// locations are where tokens are read, each with the providers that
	// read it.
	locations []*location
	hasParams bool
	// claimHeaders are the headers any provider sets from claims (lower
	// case, '_' read as '-'), removed from every request under any
	// spelling: CGI-style apps (WSGI, PHP, Rack) read X_Team as X-Team.
	claimHeaders map[string]bool
	// required: some provider refuses requests without a token.
	required bool
	// cache holds tokens already verified, by digest.
	cache verifiedCache
}

type provider struct {
	ref       string
	issuer    string
	keys      *keyset.Set
	audiences []string
	skew      time.Duration
	forward   bool
	claims    []claimHeader
}

type claimHeader struct {
	claim  string
	header string // canonical
}

type locationKind int

const (
	inHeader locationKind = iota
	inCookie
	inParam
)

// location is one place a token is read from.
type location struct {
	kind   locationKind
	name   string // canonical for headers
	prefix string // headers only
	owners []*provider
}

func (l *location) String() string {
	switch l.kind {
	case inHeader:
		return "header " + l.name
	case inCookie:
		return "cookie " + l.name
	}
	return "query parameter " + l.name
}

// New returns an Authenticator for providers, which must be validated. Two
// providers with the same issuer, or a JWKS that does not parse, are
// errors (the proxy refuses the snapshot); a provider without keys is not.
// c is the clock tokens are checked against (default: the wall clock). With
// no provider, New returns nil, which authenticates nothing.
func New(providers []Provider, c clock.Clock) (*Authenticator, error) {
	if len(providers) == 0 {
		return nil, nil
	}
	c = clock.OrReal(c)
	a := &Authenticator{clock: jwt.ClockFunc(c.Now), byIssuer: make(map[string]*provider, len(providers))}
	type locKey struct {
		kind         locationKind
		name, prefix string
	}
	locs := map[locKey]*location{}
	for i, pr := range providers {
		if pr.Spec == nil {
			return nil, fmt.Errorf("jwt provider %d: no resource", i)
		}
		spec := &pr.Spec.Spec
		ref := config.Ref(pr.Spec)
		if prev, ok := a.byIssuer[spec.Issuer]; ok {
			return nil, fmt.Errorf("jwt providers %s and %s: both have issuer %q", prev.ref, ref, spec.Issuer)
		}
		p := &provider{ref: ref, issuer: spec.Issuer, audiences: spec.Audiences, skew: spec.Skew(), forward: spec.ForwardToken}
		if len(pr.JWKS) > 0 {
			keys, err := keyset.Parse(pr.JWKS)
			if err != nil {
				return nil, fmt.Errorf("jwt provider %s: %w", ref, err)
			}
			p.keys = keys
		}
		for _, ch := range spec.ClaimsToHeaders {
			h := http.CanonicalHeaderKey(ch.Header)
			p.claims = append(p.claims, claimHeader{claim: ch.Claim, header: h})
			if a.claimHeaders == nil {
				a.claimHeaders = map[string]bool{}
			}
			a.claimHeaders[headerKey(h)] = true
		}
		add := func(l location) {
			k := locKey{l.kind, l.name, strings.ToLower(l.prefix)}
			if got, ok := locs[k]; ok {
				if !slices.Contains(got.owners, p) {
					got.owners = append(got.owners, p)
				}
				return
			}
			l.owners = []*provider{p}
			locs[k] = &l
			a.locations = append(a.locations, &l)
		}
		for _, h := range spec.FromHeaders {
			add(location{kind: inHeader, name: http.CanonicalHeaderKey(h.Name), prefix: h.Prefix})
		}
		for _, name := range spec.FromCookies {
			add(location{kind: inCookie, name: name})
		}
		for _, name := range spec.FromParams {
			add(location{kind: inParam, name: name})
			a.hasParams = true
		}
		if len(spec.FromHeaders)+len(spec.FromCookies)+len(spec.FromParams) == 0 {
			add(location{kind: inHeader, name: config.DefaultTokenHeader, prefix: config.DefaultTokenPrefix})
		}
		a.required = a.required || spec.Required
		a.providers = append(a.providers, p)
		a.byIssuer[spec.Issuer] = p
	}
	return a, nil
}

// found is one occurrence of a token in a request.
type found struct {
	loc   *location
	token string
}

// headerKey is a header name as claimHeaders holds it: lower case, '_'
// read as '-'.
func headerKey(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "_", "-"))
}

// Authenticate authenticates r and prepares it for the app: see the package
// documentation for the rules. It changes r's headers and, when a token is
// removed from the query, r.URL.RawQuery and r.RequestURI (consistently), so
// the caller must read the query after it. On failure the error is an
// *Error and the request must not be forwarded.
func (a *Authenticator) Authenticate(r *http.Request) (Result, error) {
	if a == nil {
		return Result{}, nil
	}
	if len(a.claimHeaders) > 0 {
		for k := range r.Header {
			if a.claimHeaders[headerKey(k)] {
				delete(r.Header, k)
			}
		}
	}
	occ, err := a.find(r)
	if err != nil {
		return Result{}, err
	}
	if len(occ) == 0 {
		if a.required {
			return Result{}, &Error{Status: http.StatusUnauthorized, Reason: "token required", Missing: true}
		}
		return Result{}, nil
	}
	p, tok, claims, err := a.verify(occ[0].token)
	if err != nil {
		return Result{}, err
	}
	for _, o := range occ {
		if !slices.Contains(o.loc.owners, p) {
			return Result{}, unauthorized("token of issuer %q in %s, which its provider %s does not read", p.issuer, o.loc, p.ref)
		}
	}
	sub, _ := tok.Subject()
	for _, ch := range p.claims {
		if v, ok := claimValue(claims[ch.claim]); ok {
			r.Header.Set(ch.header, v)
		}
	}
	if !p.forward {
		for _, o := range occ {
			remove(r, o)
		}
	}
	return Result{Principal: p.issuer + "/" + sub, Claims: claims, Provider: p.ref}, nil
}

// find returns every occurrence of a token in r. Occurrences of different
// tokens, or of an oversized one, are an error.
func (a *Authenticator) find(r *http.Request) ([]found, error) {
	var occ []found
	var query string
	if a.hasParams {
		query = r.URL.RawQuery
	}
	for _, l := range a.locations {
		switch l.kind {
		case inHeader:
			for _, v := range r.Header.Values(l.name) {
				if len(v) < len(l.prefix) || !strings.EqualFold(v[:len(l.prefix)], l.prefix) {
					continue
				}
				occ = append(occ, found{loc: l, token: strings.TrimSpace(v[len(l.prefix):])})
			}
		case inCookie:
			for _, c := range r.CookiesNamed(l.name) {
				occ = append(occ, found{loc: l, token: c.Value})
			}
		case inParam:
			for part := range strings.SplitSeq(query, "&") {
				k, v, _ := strings.Cut(part, "=")
				if key, err := url.QueryUnescape(k); err != nil || key != l.name {
					continue
				}
				val, err := url.QueryUnescape(v)
				if err != nil {
					return nil, unauthorized("malformed query parameter %s", l.name)
				}
				occ = append(occ, found{loc: l, token: val})
			}
		}
	}
	for i, o := range occ {
		if len(o.token) > MaxTokenSize {
			return nil, unauthorized("token in %s is %d bytes, over the limit of %d", o.loc, len(o.token), MaxTokenSize)
		}
		if i > 0 && o.token != occ[0].token {
			return nil, unauthorized("more than one token (%s and %s)", occ[0].loc, o.loc)
		}
	}
	return occ, nil
}

// verify checks one token and returns its provider, the parsed token and
// its claims.
func (a *Authenticator) verify(token string) (*provider, jwt.Token, map[string]any, error) {
	digest := sha256.Sum256([]byte(token))
	if v, ok := a.cache.get(digest); ok {
		// Signature, issuer, key and audience do not change; time does.
		if err := a.validateTimes(v.p, v.tok); err != nil {
			return nil, nil, nil, err
		}
		return v.p, v.tok, v.claims, nil
	}
	p, tok, claims, err := a.verifyUncached(token)
	if err != nil {
		return nil, nil, nil, err
	}
	a.cache.put(digest, &verified{p: p, tok: tok, claims: claims})
	return p, tok, claims, nil
}

// validateTimes checks exp (required), nbf and iat of tok against the clock
// with p's skew.
func (a *Authenticator) validateTimes(p *provider, tok jwt.Token) error {
	if err := jwt.Validate(tok, jwt.WithClock(a.clock), jwt.WithAcceptableSkew(p.skew), jwt.WithRequiredClaim(jwt.ExpirationKey)); err != nil {
		return unauthorized("%s", validationReason(err))
	}
	return nil
}

// verifyUncached verifies token from scratch: its form, issuer, key,
// signature, time claims and audience.
func (a *Authenticator) verifyUncached(token string) (*provider, jwt.Token, map[string]any, error) {
	switch n := strings.Count(token, "."); {
	case token == "":
		return nil, nil, nil, unauthorized("empty token")
	case token[0] == '{':
		return nil, nil, nil, unauthorized("JWS JSON serialization is not accepted")
	case n == 4:
		return nil, nil, nil, unauthorized("JWE (encrypted) tokens are not accepted")
	case n != 2:
		return nil, nil, nil, unauthorized("malformed token: not a JWS compact serialization")
	}
	raw := []byte(token)
	msg, err := jws.Parse(raw, jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, nil, nil, unauthorized("malformed token")
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Has(jws.CriticalKey) {
		return nil, nil, nil, unauthorized("unsupported critical header (crit)")
	}
	alg, ok := hdr.Algorithm()
	if !ok {
		return nil, nil, nil, unauthorized("no alg header")
	}
	payload := msg.Payload()
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return nil, nil, nil, unauthorized("malformed claims")
	}
	// The registered claims jwt.Validate checks, from the claims decoded
	// once; a claim of the wrong type is refused by Set.
	tok := jwt.New()
	for _, name := range [...]string{jwt.IssuerKey, jwt.SubjectKey, jwt.AudienceKey, jwt.ExpirationKey, jwt.NotBeforeKey, jwt.IssuedAtKey} {
		if v, ok := claims[name]; ok {
			if err := tok.Set(name, v); err != nil {
				return nil, nil, nil, unauthorized("malformed claim %s", name)
			}
		}
	}
	iss, _ := tok.Issuer()
	p, ok := a.byIssuer[iss]
	if !ok {
		return nil, nil, nil, unauthorized("unknown issuer %q", truncate(iss))
	}
	if p.keys.Len() == 0 {
		return nil, nil, nil, unauthorized("provider %s has no keys yet", p.ref)
	}
	var key keyset.Key
	if kid, ok := hdr.KeyID(); ok && kid != "" {
		key, ok = p.keys.KID(kid)
		if !ok {
			return nil, nil, nil, unauthorized("unknown kid %q for provider %s", truncate(kid), p.ref)
		}
		if key.Alg != alg {
			return nil, nil, nil, unauthorized("alg %q is not the alg %s of key %q", truncate(alg.String()), key.Alg, kid)
		}
	} else {
		n := 0
		for _, k := range p.keys.Keys() {
			if k.Alg == alg {
				key = k
				n++
			}
		}
		switch {
		case n == 0:
			return nil, nil, nil, unauthorized("no key of provider %s has alg %q", p.ref, truncate(alg.String()))
		case n > 1:
			return nil, nil, nil, unauthorized("token has no kid and %d keys of provider %s have alg %s", n, p.ref, alg)
		}
	}
	if _, err := jws.VerifyCompactFast(key.Public, raw, key.Alg); err != nil {
		return nil, nil, nil, unauthorized("signature verification failed")
	}
	if err := a.validateTimes(p, tok); err != nil {
		return nil, nil, nil, err
	}
	if len(p.audiences) > 0 {
		auds, _ := tok.Audience()
		if !slices.ContainsFunc(auds, func(a string) bool { return slices.Contains(p.audiences, a) }) {
			return nil, nil, nil, unauthorized("audience not accepted by provider %s", p.ref)
		}
	}
	return p, tok, claims, nil
}

// validationReason names why jwt.Validate refused a token.
func validationReason(err error) string {
	switch {
	case errors.Is(err, jwt.TokenExpiredError()):
		return "token expired"
	case errors.Is(err, jwt.TokenNotYetValidError()):
		return "token not yet valid (nbf)"
	case errors.Is(err, jwt.InvalidIssuedAtError()):
		return "token issued in the future (iat)"
	case errors.Is(err, jwt.MissingRequiredClaimError()):
		return "token has no exp"
	}
	return "invalid claims"
}

// claimValue formats a claim for a header: strings as they are, numbers
// and booleans formatted, lists of those joined with ",".
func claimValue(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return headerSafe(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			switch e.(type) {
			case []any, map[string]any, nil:
				return "", false
			}
			s, ok := claimValue(e)
			if !ok {
				return "", false
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), true
	}
	return "", false
}

// headerSafe refuses a value that cannot be a header value.
func headerSafe(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", false
		}
	}
	return s, true
}

// remove takes the token of o out of r.
func remove(r *http.Request, o found) {
	l := o.loc
	switch l.kind {
	case inHeader:
		vals := r.Header.Values(l.name)
		keep := vals[:0:0]
		for _, v := range vals {
			if len(v) >= len(l.prefix) && strings.EqualFold(v[:len(l.prefix)], l.prefix) && strings.TrimSpace(v[len(l.prefix):]) == o.token {
				continue
			}
			keep = append(keep, v)
		}
		if len(keep) == 0 {
			r.Header.Del(l.name)
		} else {
			r.Header[l.name] = keep
		}
	case inCookie:
		var keep []string
		for _, line := range r.Header.Values("Cookie") {
			var parts []string
			for part := range strings.SplitSeq(line, ";") {
				part = strings.TrimSpace(part)
				if name, _, _ := strings.Cut(part, "="); part == "" || name == l.name {
					continue
				}
				parts = append(parts, part)
			}
			if len(parts) > 0 {
				keep = append(keep, strings.Join(parts, "; "))
			}
		}
		if len(keep) == 0 {
			r.Header.Del("Cookie")
		} else {
			r.Header["Cookie"] = keep
		}
	case inParam:
		var parts []string
		for part := range strings.SplitSeq(r.URL.RawQuery, "&") {
			k, _, _ := strings.Cut(part, "=")
			if key, err := url.QueryUnescape(k); err == nil && key == l.name {
				continue
			}
			parts = append(parts, part)
		}
		r.URL.RawQuery = strings.Join(parts, "&")
		path, _, _ := strings.Cut(r.RequestURI, "?")
		r.RequestURI = path
		if r.URL.RawQuery != "" {
			r.RequestURI += "?" + r.URL.RawQuery
		}
	}
}

// truncate bounds what a log line quotes from a token.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
