package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
)

// LoginIssuer issues one-time dashboard login links (internal/dashboard).
type LoginIssuer interface {
	// IssueLogin returns a single-use login token bound to operator that
	// expires after ttl (the issuer's default when 0, capped by it).
	IssueLogin(operator string, ttl time.Duration) (token string, expires time.Time, err error)
}

// MaxLoginTTL bounds the lifetime of a dashboard login link.
const MaxLoginTTL = 15 * time.Minute

// DashboardLoginRequest is the body of POST /v1/dashboard/login.
type DashboardLoginRequest struct {
	// TTL is a Go duration ("2m"); "" for the dashboard's default.
	TTL string `json:"ttl,omitempty"`
}

// DashboardLogin is a one-time dashboard login link.
type DashboardLogin struct {
	// Path is "/ui/login?token=...", to join to the admin API's URL.
	Path      string    `json:"path"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Me is what GET /v1/me answers: who the operator is and where it may read
// what the dashboard shows.
type Me struct {
	Operator string `json:"operator"`
	// Rights maps a kind to where the operator may read it: list for
	// Proxy, Service, AuthorizationPolicy, Edge, Denial and Alert; get
	// (mesh-wide only) for AuditLog and CA.
	Rights map[string]Scope `json:"rights"`
}

// Scope is where an operator holds a right.
type Scope struct {
	Everywhere bool     `json:"everywhere"`
	Namespaces []string `json:"namespaces"`
}

// dashboardRoutes registers the routes of the dashboard's sessions:
//
//	POST /v1/dashboard/login  {"ttl":"2m"} -> DashboardLogin
//	GET  /v1/me                            -> Me
func (s *Server) dashboardRoutes() {
	s.mux.Handle("POST /v1/dashboard/login", s.operator(s.dashboardLogin))
	s.mux.Handle("GET /v1/me", s.operator(s.me))
}

// viaSession reports whether a request came in through ServeOperator (a
// dashboard session) rather than with a client certificate.
func viaSession(r *http.Request) bool {
	op, ok := r.Context().Value(operatorKey{}).(string)
	return ok && op != ""
}

func (s *Server) dashboardLogin(w http.ResponseWriter, r *http.Request, op string) error {
	// Any operator may make a link for itself: the session gets exactly
	// its rights. A session may not mint links: only a certificate can.
	if viaSession(r) {
		return forbidden("a dashboard session cannot create login links")
	}
	markAuthorized(r.Context())
	if s.cfg.Logins == nil {
		return &apiError{status: http.StatusNotImplemented, msg: "this server has no dashboard"}
	}
	var req DashboardLoginRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Second || d > MaxLoginTTL {
			return badRequest(fmt.Sprintf("ttl: %q: want a duration from 1s to %s", req.TTL, MaxLoginTTL))
		}
		ttl = d
	}
	tok, exp, err := s.cfg.Logins.IssueLogin(op, ttl)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, DashboardLogin{Path: "/ui/login?token=" + tok, ExpiresAt: exp.UTC()})
}

// meKinds are the kinds and verbs GET /v1/me reports.
var meKinds = []struct{ kind, verb string }{
	{config.KindProxy, config.VerbList},
	{config.KindService, config.VerbList},
	{config.KindAuthorizationPolicy, config.VerbList},
	{config.KindEdge, config.VerbList},
	{config.KindDenial, config.VerbList},
	{config.KindAlert, config.VerbList},
	{config.KindAuditLog, config.VerbGet},
	{config.KindCA, config.VerbGet},
}

func (s *Server) me(w http.ResponseWriter, r *http.Request, op string) error {
	// Every operator may learn its own rights.
	markAuthorized(r.Context())
	a, err := s.authorizer(r.Context(), op)
	if err != nil {
		return err
	}
	m := Me{Operator: op, Rights: map[string]Scope{}}
	for _, k := range meKinds {
		if k.verb == config.VerbGet {
			if a.Allowed(op, k.verb, k.kind, rbac.MeshWide) {
				m.Rights[k.kind] = Scope{Everywhere: true, Namespaces: []string{}}
			}
			continue
		}
		ns, everywhere := a.Namespaces(op, k.verb, k.kind)
		if everywhere || len(ns) > 0 {
			if ns == nil {
				ns = []string{}
			}
			m.Rights[k.kind] = Scope{Everywhere: everywhere, Namespaces: ns}
		}
	}
	return writeJSON(w, http.StatusOK, m)
}

// DashboardLogin creates a one-time dashboard login link for the client's
// operator, valid for ttl (0: the server's default).
func (c *Client) DashboardLogin(ctx context.Context, ttl time.Duration) (DashboardLogin, error) {
	var req DashboardLoginRequest
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	b, _, err := c.do(ctx, http.MethodPost, "/v1/dashboard/login", req, http.StatusOK)
	if err != nil {
		return DashboardLogin{}, err
	}
	var l DashboardLogin
	if err := json.Unmarshal(b, &l); err != nil {
		return DashboardLogin{}, fmt.Errorf("decode login link: %w", err)
	}
	return l, nil
}

// Me returns the client's operator and its read rights.
func (c *Client) Me(ctx context.Context) (Me, error) {
	b, _, err := c.do(ctx, http.MethodGet, "/v1/me", nil, http.StatusOK)
	if err != nil {
		return Me{}, err
	}
	var m Me
	if err := json.Unmarshal(b, &m); err != nil {
		return Me{}, fmt.Errorf("decode me: %w", err)
	}
	return m, nil
}
