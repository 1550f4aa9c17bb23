package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"

	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// Bounds of what the dashboard keeps in memory.
const (
	maxLoginsPerOperator = 64
	maxLogins            = 4096
	maxSessions          = 1024
)

// sessions holds the pending login links and the live sessions. Only the
// SHA-256 of a token or session value is kept: a memory dump does not
// give a usable credential.
type sessions struct {
	clock clock.Clock
	ttl   time.Duration
	idle  time.Duration

	mu       sync.Mutex
	logins   map[[32]byte]*loginLink
	sessions map[[32]byte]*session
}

type loginLink struct {
	operator string
	created  time.Time
	expires  time.Time
}

// session is one browser's login.
type session struct {
	key      [32]byte
	operator string
	created  time.Time
	lastUsed time.Time
}

func newSessions(c clock.Clock, cfg Config) *sessions {
	return &sessions{clock: c, ttl: cfg.SessionTTL, idle: cfg.SessionIdle,
		logins: map[[32]byte]*loginLink{}, sessions: map[[32]byte]*session{}}
}

// secret returns 32 random bytes, base64url, and their SHA-256.
func secret() (string, [32]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [32]byte{}, err
	}
	v := base64.RawURLEncoding.EncodeToString(b[:])
	return v, sha256.Sum256([]byte(v)), nil
}

func (s *sessions) issueLogin(operator string, ttl time.Duration) (string, time.Time, error) {
	tok, key, err := secret()
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	// Bound the pending links: per operator, then in total, dropping the
	// oldest.
	for _, only := range []string{operator, ""} {
		limit := maxLogins
		if only != "" {
			limit = maxLoginsPerOperator
		}
		for s.countLocked(only) >= limit {
			s.dropOldestLocked(only)
		}
	}
	exp := now.Add(ttl)
	s.logins[key] = &loginLink{operator: operator, created: now, expires: exp}
	return tok, exp, nil
}

func (s *sessions) countLocked(operator string) int {
	n := 0
	for _, l := range s.logins {
		if operator == "" || l.operator == operator {
			n++
		}
	}
	return n
}

func (s *sessions) dropOldestLocked(operator string) {
	var oldest [32]byte
	var at time.Time
	for k, l := range s.logins {
		if (operator == "" || l.operator == operator) && (at.IsZero() || l.created.Before(at)) {
			oldest, at = k, l.created
		}
	}
	delete(s.logins, oldest)
}

// redeem consumes a login token and returns its operator, or "" and why
// it was refused. A token is removed at its first use, whatever happens
// next.
func (s *sessions) redeem(tok string) (operator, reason string) {
	if tok == "" || len(tok) > 128 {
		return "", "login link without a valid token"
	}
	key := sha256.Sum256([]byte(tok))
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.logins[key]
	if !ok {
		return "", "unknown or used login link"
	}
	delete(s.logins, key)
	if !now.Before(l.expires) {
		return "", "expired login link"
	}
	return l.operator, ""
}

// create starts a session of operator and returns the cookie value.
func (s *sessions) create(operator string) (string, error) {
	v, key, err := secret()
	if err != nil {
		return "", err
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	for len(s.sessions) >= maxSessions {
		var oldest *session
		for _, x := range s.sessions {
			if oldest == nil || x.created.Before(oldest.created) {
				oldest = x
			}
		}
		delete(s.sessions, oldest.key)
	}
	s.sessions[key] = &session{key: key, operator: operator, created: now, lastUsed: now}
	return v, nil
}

// lookup returns the live session of a cookie value and marks it used, or
// nil and why not.
func (s *sessions) lookup(value string) (*session, string) {
	if value == "" || len(value) > 128 {
		return nil, "malformed session cookie"
	}
	key := sha256.Sum256([]byte(value))
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.sessions[key]
	if !ok {
		return nil, "unknown session"
	}
	if !s.aliveLocked(x, now) {
		delete(s.sessions, key)
		return nil, "expired session"
	}
	x.lastUsed = now
	return x, ""
}

// alive reports whether a session has neither ended nor expired.
func (s *sessions) alive(x *session) bool {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[x.key]; !ok {
		return false
	}
	if !s.aliveLocked(x, now) {
		delete(s.sessions, x.key)
		return false
	}
	return true
}

// touch marks a session used (a live stream keeps its session from idling
// out).
func (s *sessions) touch(x *session) {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	x.lastUsed = now
}

func (s *sessions) aliveLocked(x *session, now time.Time) bool {
	return now.Before(x.created.Add(s.ttl)) && now.Before(x.lastUsed.Add(s.idle))
}

// expires returns when a session ends at the latest.
func (s *sessions) expires(x *session) time.Time { return x.created.Add(s.ttl) }

func (s *sessions) end(x *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, x.key)
}

// pruneLocked drops expired links and sessions.
func (s *sessions) pruneLocked(now time.Time) {
	for k, l := range s.logins {
		if !now.Before(l.expires) {
			delete(s.logins, k)
		}
	}
	for k, x := range s.sessions {
		if !s.aliveLocked(x, now) {
			delete(s.sessions, k)
		}
	}
}
