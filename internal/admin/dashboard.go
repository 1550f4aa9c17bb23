package admin

import "time"

// LoginIssuer issues one-time dashboard login links (internal/dashboard).
type LoginIssuer interface {
	// IssueLogin returns a single-use login token bound to operator that
	// expires after ttl (the issuer's default when 0, capped by it).
	IssueLogin(operator string, ttl time.Duration) (token string, expires time.Time, err error)
}

// dashboardRoutes registers the routes of the dashboard's sessions:
//
//	POST /v1/dashboard/login  {"ttl":"2m"} -> DashboardLogin
//	GET  /v1/me                            -> Me
func (s *Server) dashboardRoutes() {}
