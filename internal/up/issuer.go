package up

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Limits of the demo issuer's requests and tokens.
const (
	// issuerTokenTTL is the lifetime of a demo token.
	issuerTokenTTL = time.Hour
	// maxSubject bounds sub; maxScopes and maxScope the scope list.
	maxSubject = 64
	maxScopes  = 16
	maxScope   = 64
	// issuerPath is the only path the issuer serves.
	issuerPath = "/token"
)

// Messages of the issuer's log.
const (
	msgTokenIssued    = "demo token issued"
	msgIssuerListen   = "demo issuer listening"
	msgIssuerShutdown = "demo issuer stopped"
)

// issuer is the demo token issuer of a mesh file's spec.demoIssuer (see
// config.DemoIssuer): an ES256 key made at start that never leaves the
// process, and an HTTP handler that signs a token for whoever asks on
// loopback. It exists for examples only.
type issuer struct {
	spec  config.DemoIssuer
	key   jwk.Key // private, with its kid
	jwks  []byte  // the public key set
	clock clock.Clock
	log   *slog.Logger
}

// newIssuer makes the issuer's key. A nil clock is the wall clock, a nil
// logger discards.
func newIssuer(spec config.DemoIssuer, c clock.Clock, log *slog.Logger) (*issuer, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("demo issuer key: %w", err)
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("demo issuer key id: %w", err)
	}
	kid := "up-" + hex.EncodeToString(id[:])
	priv, err := jwk.Import(raw)
	if err != nil {
		return nil, fmt.Errorf("demo issuer key: %w", err)
	}
	pub, err := jwk.Import(raw.Public())
	if err != nil {
		return nil, fmt.Errorf("demo issuer public key: %w", err)
	}
	for _, k := range []jwk.Key{priv, pub} {
		if err := k.Set(jwk.KeyIDKey, kid); err != nil {
			return nil, fmt.Errorf("demo issuer key id: %w", err)
		}
		if err := k.Set(jwk.AlgorithmKey, jwa.ES256()); err != nil {
			return nil, fmt.Errorf("demo issuer key algorithm: %w", err)
		}
	}
	if err := pub.Set(jwk.KeyUsageKey, "sig"); err != nil {
		return nil, fmt.Errorf("demo issuer key use: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("demo issuer key set: %w", err)
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("demo issuer key set: %w", err)
	}
	if log == nil {
		log = telemetry.Discard()
	}
	return &issuer{spec: spec, key: priv, jwks: jwks, clock: clock.OrReal(c), log: log}, nil
}

// provider returns the JWTProvider of spec.demoIssuer.provider: the
// issuer's public key inline. It selects every workload of its namespace,
// as a provider with no selector does; a gateway uses the providers its
// routes name whatever their selectors.
func (is *issuer) provider() *config.JWTProvider {
	ref, _ := identity.ParseServiceRef(is.spec.Provider, identity.DefaultNamespace) // validated by Decode
	return &config.JWTProvider{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindJWTProvider},
		Metadata: config.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace},
		Spec:     config.JWTProviderSpec{Issuer: is.spec.Issuer, JWKS: string(is.jwks)},
	}
}

// token signs a token for sub with the scopes, valid issuerTokenTTL.
func (is *issuer) token(sub string, scopes []string) (string, error) {
	now := is.clock.Now().Truncate(time.Second)
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	b := jwt.NewBuilder().Issuer(is.spec.Issuer).Subject(sub).IssuedAt(now).NotBefore(now).
		Expiration(now.Add(issuerTokenTTL)).JwtID(hex.EncodeToString(id[:]))
	if len(scopes) > 0 {
		b = b.Claim("scope", strings.Join(scopes, " "))
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("build token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), is.key))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return string(signed), nil
}

// ServeHTTP answers GET /token?sub=NAME[&scope=A+B] with a signed token in
// text/plain. Only loopback clients are served (403 otherwise); a bad
// request gets 400 saying what is wrong.
func (is *issuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !ap.Addr().Unmap().IsLoopback() {
		http.Error(w, "forbidden: the demo issuer serves loopback clients only", http.StatusForbidden)
		return
	}
	if r.URL.Path != issuerPath {
		http.Error(w, "not found: the demo issuer serves GET /token?sub=NAME&scope=A+B", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed: use GET", http.StatusMethodNotAllowed)
		return
	}
	sub, scopes, err := parseTokenQuery(r.URL.RawQuery)
	if err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	tok, err := is.token(sub, scopes)
	if err != nil {
		is.log.Error(msgTokenIssued, telemetry.KeyErr, err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	is.log.Info(msgTokenIssued, telemetry.KeySubject, sub, "scope", strings.Join(scopes, " "))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, tok)
}

// parseTokenQuery reads sub (required) and scope (optional, scopes
// separated by spaces) from a query; any other parameter, a repeated one,
// or a value outside the allowed characters is an error.
func parseTokenQuery(raw string) (sub string, scopes []string, err error) {
	q, err := parseQueryStrict(raw)
	if err != nil {
		return "", nil, err
	}
	for k, vs := range q {
		if k != "sub" && k != "scope" {
			return "", nil, fmt.Errorf("unknown parameter %q (want sub and scope)", k)
		}
		if len(vs) > 1 {
			return "", nil, fmt.Errorf("parameter %s given %d times", k, len(vs))
		}
	}
	sub = first(q["sub"])
	switch {
	case sub == "":
		return "", nil, errors.New("sub is required, such as ?sub=alice&scope=orders")
	case len(sub) > maxSubject:
		return "", nil, fmt.Errorf("sub is longer than %d bytes", maxSubject)
	case !tokenChars(sub, "@"):
		return "", nil, errors.New("sub may contain letters, digits and . _ - @ only")
	}
	for s := range strings.FieldsSeq(first(q["scope"])) {
		switch {
		case len(scopes) == maxScopes:
			return "", nil, fmt.Errorf("more than %d scopes", maxScopes)
		case len(s) > maxScope:
			return "", nil, fmt.Errorf("a scope is longer than %d bytes", maxScope)
		case !tokenChars(s, ":/"):
			return "", nil, errors.New("scopes may contain letters, digits and . _ - : / only, separated by spaces")
		}
		scopes = append(scopes, s)
	}
	return sub, scopes, nil
}

// parseQueryStrict is url.ParseQuery that refuses what it would skip.
func parseQueryStrict(raw string) (map[string][]string, error) {
	q := map[string][]string{}
	if raw == "" {
		return q, nil
	}
	for part := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err := errors.Join(err1, err2); err != nil {
			return nil, errors.New("the query is not valid URL encoding")
		}
		if key == "" {
			return nil, errors.New("empty parameter name in the query")
		}
		q[key] = append(q[key], val)
	}
	return q, nil
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// tokenChars reports whether s holds only ASCII letters, digits, ".", "_",
// "-" and the bytes of extra.
func tokenChars(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		case strings.IndexByte(extra, c) >= 0:
		default:
			return false
		}
	}
	return true
}

// serve runs the issuer's HTTP server on ln until ctx is done.
func (is *issuer) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           is,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(is.log.Handler(), slog.LevelWarn),
	}
	is.log.Info(msgIssuerListen, telemetry.KeyAddress, ln.Addr().String(), telemetry.KeyProvider, is.spec.Provider)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("demo issuer: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		is.log.Debug(msgIssuerShutdown)
		return nil
	}
}

// checkLoopback checks that addr is a loopback IP address and a port.
func checkLoopback(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() || ap.Addr().Zone() != "" {
		return errors.New("want a loopback IP address and a port, such as 127.0.0.1:8079 (the issuer signs a token for anyone who asks)")
	}
	return nil
}
