package admin

import (
	"context"
	"net/http"
)

// Authorize exposes authorize to the benchmarks.
func (s *Server) Authorize(ctx context.Context, op, verb, kind, namespace string) error {
	return s.authorize(ctx, op, verb, kind, namespace)
}

// HandleUnauthorized registers a route that answers with success without
// authorizing: a route that forgot to, for the test of the guard.
func (s *Server) HandleUnauthorized(pattern string) {
	s.mux.Handle(pattern, s.operator(func(w http.ResponseWriter, _ *http.Request, _ string) error {
		return writeJSON(w, http.StatusOK, map[string]string{"secret": "leaked"})
	}))
}
