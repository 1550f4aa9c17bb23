package proxy

import (
	"errors"
	"fmt"
	"net/http"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// compileJWTProviders builds the Authenticator of a snapshot's JWT
// providers. Each resource is decoded and validated again, and its keys
// parsed: a provider this proxy cannot fully understand rejects the whole
// snapshot. No provider gives a nil Authenticator, which authenticates
// nothing.
func compileJWTProviders(list []*apiv1.JWTProvider, c clock.Clock) (*authn.Authenticator, error) {
	providers := make([]authn.Provider, 0, len(list))
	for i, p := range list {
		o, err := config.DecodeObject(p.GetResource())
		if err != nil {
			return nil, fmt.Errorf("jwt_providers[%d]: %w", i, err)
		}
		spec, ok := o.(*config.JWTProvider)
		if !ok {
			return nil, fmt.Errorf("jwt_providers[%d]: kind %s is not a JWTProvider", i, o.GetTypeMeta().Kind)
		}
		providers = append(providers, authn.Provider{Spec: spec, JWKS: p.GetJwks()})
	}
	a, err := authn.New(providers, c)
	if err != nil {
		return nil, fmt.Errorf("jwt_providers: %w", err)
	}
	return a, nil
}

// unauthenticatedBody is the whole body of a 401: why goes to the access
// log only.
const unauthenticatedBody = "unauthorized\n"

// unauthenticated answers a request whose JWT authentication failed (err,
// from authn.Authenticator.Authenticate) with 401, an opaque body and the
// RFC 6750 challenge of authn.Error.Challenge:
//
//	WWW-Authenticate: Bearer error="invalid_token"
//
// for a refused token, "Bearer" alone when a required token is missing. The
// reason goes to the access log and the denial accounting, never to the
// client.
func (e *Engine) unauthenticated(rw *recorder, info *logInfo, err error) {
	challenge, reason := `Bearer error="invalid_token"`, "unauthenticated"
	var ae *authn.Error
	if errors.As(err, &ae) {
		challenge, reason = ae.Challenge(), "unauthenticated: "+ae.Reason
	}
	info.decision, info.reason, info.label, info.denied = telemetry.DecisionDeny, reason, labelUnauthenticated, http.StatusUnauthorized
	h := rw.Header()
	h.Set("WWW-Authenticate", challenge)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	rw.WriteHeader(http.StatusUnauthorized)
	_, _ = rw.Write([]byte(unauthenticatedBody))
}

// authenticate runs the JWT providers of t on an inbound request. On
// failure it answers 401 and returns ok=false. On success it returns the
// result and the request's raw query, which changes when the token was
// taken out of it: the caller forwards that query.
func (e *Engine) authenticate(t *table, rw *recorder, r *http.Request, info *logInfo, query string) (res authn.Result, newQuery string, ok bool) {
	target := r.RequestURI
	res, err := t.authn.Authenticate(r)
	if err != nil {
		e.unauthenticated(rw, info, err)
		return authn.Result{}, query, false
	}
	if r.RequestURI != target {
		query = r.URL.RawQuery
	}
	return res, query, true
}
