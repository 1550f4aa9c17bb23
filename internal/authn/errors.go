package authn

import (
	"fmt"
	"net/http"
)

// Error is an authentication failure: the request must be answered with
// Status (401) and an opaque body, and Reason goes to the access log only.
//
// The answer carries the RFC 6750 challenge that Challenge returns:
//
//	WWW-Authenticate: Bearer error="invalid_token"
//
// for a token that was refused, and
//
//	WWW-Authenticate: Bearer
//
// (no error code, RFC 6750 §3.1) when a required token is missing.
type Error struct {
	// Status is the HTTP status to answer: 401.
	Status int
	// Reason says why, in a few words, for logs. It never holds the token.
	Reason string
	// Missing: the request carried no token and one is required.
	Missing bool
}

// Error implements error.
func (e *Error) Error() string { return "unauthenticated: " + e.Reason }

// Challenge returns the value of the WWW-Authenticate header to answer with.
func (e *Error) Challenge() string {
	if e.Missing {
		return "Bearer"
	}
	return `Bearer error="invalid_token"`
}

// unauthorized returns a 401 *Error.
func unauthorized(format string, args ...any) *Error {
	return &Error{Status: http.StatusUnauthorized, Reason: fmt.Sprintf(format, args...)}
}
