// Package dashboard owns the control plane's web dashboard under /ui/ on
// the admin listener: who may see it (an operator client certificate or a
// session made by a one-time login link), the browser-facing guards (Host
// and Origin checks, a strict Content-Security-Policy and the other
// security headers), the embedded front end of package web, a read-only
// bridge from /ui/api/v1/... to the admin API's routes served as the
// session's operator, and live updates over Server-Sent Events.
//
// The dashboard holds no data and decides no rights of its own: every
// answer comes from an admin route, authorized with the operator's RBAC
// rights (docs/rbac.md) exactly as `bulwark get` is. A session may read and
// run `policy explain`; it can never write, mint login links or export the
// audit log. Sessions live in memory: a restart of the control plane logs
// every browser out. docs/dashboard.md describes the model and its
// trade-offs.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
	"github.com/bulwarkmesh/bulwark/web"
)

// API is the admin API, served as an operator (*admin.Server implements
// it).
type API interface {
	ServeOperator(w http.ResponseWriter, r *http.Request, operator string)
}

// Config configures the dashboard.
type Config struct {
	// API and CertOperator are required. CertOperator returns the operator
	// of a request's verified client certificate (admin.CertificateOperator).
	API          API
	CertOperator func(r *http.Request) (string, error)
	// Hosts are the host names and IP literals the listener is reached
	// by; a request whose Host (port ignored) is not one of them gets 421,
	// a guard against DNS rebinding. Empty: localhost, 127.0.0.1 and ::1.
	Hosts []string
	// LoginTTL is the default lifetime and the maximum of a login link;
	// 0: 5 minutes.
	LoginTTL time.Duration
	// SessionTTL is the absolute lifetime of a session (0: 8 hours) and
	// SessionIdle its idle timeout (0: 1 hour).
	SessionTTL  time.Duration
	SessionIdle time.Duration
	// Failure records a failed authentication; nil drops them.
	Failure func(remoteAddr, reason string)
	// Assets are the front end's files; nil: web.Assets().
	Assets fs.FS
	Clock  clock.Clock
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultLoginTTL    = 5 * time.Minute
	DefaultSessionTTL  = 8 * time.Hour
	DefaultSessionIdle = time.Hour
)

// CookieName is the session cookie's name; the __Host- prefix makes the
// browser refuse it unless it is Secure, has Path=/ and no Domain.
const CookieName = "__Host-bulwark_session"

// maxBody bounds the body of the one POST the bridge forwards.
const maxBody = 64 << 10

// csp is the Content-Security-Policy of every answer: the front end loads
// only its own scripts and styles, and connects only to its own origin.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Server serves /ui/.
type Server struct {
	cfg      Config
	clock    clock.Clock
	logger   *slog.Logger
	assets   fs.FS
	hosts    map[string]bool
	sessions *sessions
	streams  streams
	// failures counts refused requests: only the 1st, 2nd, 4th, 8th...
	// are logged, so that anonymous clients cannot flood the log.
	failures atomic.Int64
}

// New returns the dashboard.
func New(cfg Config) (*Server, error) {
	if cfg.API == nil || cfg.CertOperator == nil {
		return nil, errors.New("dashboard: api and cert operator are required")
	}
	cfg.LoginTTL = orDefault(cfg.LoginTTL, DefaultLoginTTL)
	cfg.SessionTTL = orDefault(cfg.SessionTTL, DefaultSessionTTL)
	cfg.SessionIdle = orDefault(cfg.SessionIdle, DefaultSessionIdle)
	s := &Server{cfg: cfg, clock: clock.OrReal(cfg.Clock), logger: telemetry.OrDiscard(cfg.Logger), assets: cfg.Assets, hosts: map[string]bool{}}
	if s.assets == nil {
		s.assets = web.Assets()
	}
	hosts := cfg.Hosts
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	for _, h := range hosts {
		s.hosts[strings.ToLower(strings.Trim(h, "[]"))] = true
	}
	s.sessions = newSessions(s.clock, cfg)
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// IssueLogin implements admin.LoginIssuer: a single-use login link token
// bound to operator, valid for ttl (LoginTTL when 0, at most LoginTTL).
func (s *Server) IssueLogin(operator string, ttl time.Duration) (string, time.Time, error) {
	if operator == "" {
		return "", time.Time{}, errors.New("issue login: no operator")
	}
	if ttl < 0 {
		return "", time.Time{}, fmt.Errorf("issue login: ttl %s: must not be negative", ttl)
	}
	if ttl == 0 || ttl > s.cfg.LoginTTL {
		ttl = s.cfg.LoginTTL
	}
	tok, exp, err := s.sessions.issueLogin(operator, ttl)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue login: %w", err)
	}
	s.logger.Info("dashboard login link issued", telemetry.KeyOperator, operator, telemetry.KeyExpiry, exp)
	return tok, exp, nil
}

// ServeHTTP implements http.Handler for everything under /ui/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
	h.Set("Strict-Transport-Security", "max-age=31536000")
	h.Set("Cache-Control", "no-store")

	if !s.hostAllowed(r.Host) {
		s.refuse(w, r, http.StatusMisdirectedRequest, "unknown host", "421 misdirected request\n")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		h.Set("Allow", "GET, HEAD, POST")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !s.originAllowed(r) {
		s.refuse(w, r, http.StatusForbidden, "cross-origin request", "403 forbidden\n")
		return
	}
	if r.URL.Path == "/ui/login" {
		s.login(w, r)
		return
	}
	op, sess, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	switch p := r.URL.Path; {
	case p == "/ui/logout":
		s.logout(w, r, sess)
	case p == "/ui/api/me":
		s.me(w, r, op, sess)
	case p == "/ui/api/events":
		s.events(w, r, op, sess)
	case strings.HasPrefix(p, "/ui/api/"):
		s.bridge(w, r, op)
	default:
		s.static(w, r)
	}
}

// hostAllowed reports whether host (with or without port) names this
// listener.
func (s *Server) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return host != "" && s.hosts[strings.ToLower(strings.Trim(host, "[]"))]
}

// originAllowed checks where a request comes from: a POST must carry this
// origin, and any request with an Origin or Sec-Fetch-Site header must come
// from this origin or from the user typing the URL, except a top-level
// navigation to a page.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if r.Method == http.MethodPost && origin == "" {
		return false
	}
	if origin != "" && origin != "https://"+r.Host {
		return false
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	// A link from another site may open the dashboard's page (without
	// its cookie: SameSite=Strict), never read the API or redeem a login
	// link.
	return r.Method == http.MethodGet && r.Header.Get("Sec-Fetch-Mode") == "navigate" &&
		!strings.HasPrefix(r.URL.Path, "/ui/api/") && r.URL.Path != "/ui/login"
}

// authenticate returns the request's operator from its client certificate
// or its session; without either it answers 401.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, *session, bool) {
	if op, err := s.cfg.CertOperator(r); err == nil {
		return op, nil, true
	}
	c, err := r.Cookie(CookieName)
	if err != nil {
		s.refuse(w, r, http.StatusUnauthorized, "no operator certificate or session", unauthorized)
		return "", nil, false
	}
	sess, reason := s.sessions.lookup(c.Value)
	if sess == nil {
		clearCookie(w)
		s.refuse(w, r, http.StatusUnauthorized, reason, unauthorized)
		return "", nil, false
	}
	return sess.operator, sess, true
}

const unauthorized = "401 unauthorized: present an operator certificate or run `bulwark dashboard login`\n"

// refuse answers a refused request with a short text and records the
// failure.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, reason, body string) {
	if s.cfg.Failure != nil && status == http.StatusUnauthorized {
		s.cfg.Failure(r.RemoteAddr, "dashboard: "+reason)
	}
	if n := s.failures.Add(1); n&(n-1) == 0 {
		s.logger.Warn("dashboard request refused", telemetry.KeyRemote, r.RemoteAddr, telemetry.KeyReason, reason,
			telemetry.KeyStatus, status, telemetry.KeyCount, n)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// login redeems a one-time login link.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	tok := r.URL.Query().Get("token")
	if !loopback(r.RemoteAddr) {
		// Consume the link all the same: it leaked off this machine.
		s.sessions.redeem(tok)
		s.refuse(w, r, http.StatusUnauthorized, "login link used from a non-loopback address", unauthorized)
		return
	}
	op, reason := s.sessions.redeem(tok)
	if op == "" {
		s.refuse(w, r, http.StatusUnauthorized, reason, unauthorized)
		return
	}
	value, err := s.sessions.create(op)
	if err != nil {
		s.logger.Error("dashboard session", telemetry.KeyErr, err)
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: value, Path: "/", MaxAge: int(s.cfg.SessionTTL / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	s.logger.Info("dashboard session started", telemetry.KeyOperator, op, telemetry.KeyRemote, r.RemoteAddr)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// loopback reports whether a remote address is on this machine.
func loopback(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if r.Method != http.MethodPost {
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if sess != nil {
		s.sessions.end(sess)
		clearCookie(w)
	}
	w.WriteHeader(http.StatusNoContent)
}

// static serves the front end's files.
func (s *Server) static(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/ui/")
	if name == "" {
		name = "index.html"
	}
	if strings.Contains(name, "..") || path.Clean(name) != name || !fs.ValidPath(name) {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(s.assets, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js":
		ctype = "text/javascript; charset=utf-8"
	case ".svg":
		ctype = "image/svg+xml"
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ctype)
	if name != "index.html" {
		w.Header().Set("Cache-Control", "private, no-cache")
		w.Header().Set("ETag", fmt.Sprintf(`"%x"`, sha256.Sum256(b)))
		if r.Header.Get("If-None-Match") == w.Header().Get("ETag") {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// bridge forwards /ui/api/v1/... to the admin API's /v1/... as the
// operator: every GET, and the one POST that changes nothing (policy
// explain). A session can never write, mint login links or export the
// audit log.
func (s *Server) bridge(w http.ResponseWriter, r *http.Request, op string) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/ui/api/v1/")
	if !ok || rest == "" {
		http.NotFound(w, r)
		return
	}
	target := "/v1/" + rest
	switch {
	case target == "/v1/audit/export" || strings.HasPrefix(target, "/v1/dashboard/"):
		s.refuse(w, r, http.StatusForbidden, "route closed to the dashboard", "403 forbidden: not available in the dashboard\n")
		return
	case r.Method == http.MethodPost && target != "/v1/policy/explain":
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed: the dashboard is read-only", http.StatusMethodNotAllowed)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = target, ""
	r2.RequestURI = target
	if r.URL.RawQuery != "" {
		r2.RequestURI += "?" + r.URL.RawQuery
	}
	r2.Body = http.MaxBytesReader(w, r.Body, maxBody)
	s.cfg.API.ServeOperator(w, r2, op)
}
