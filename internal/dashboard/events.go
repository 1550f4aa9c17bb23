package dashboard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// recorder is an in-memory http.ResponseWriter for the admin answers the
// dashboard reads itself.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

// call serves GET target as op and returns the status and body.
func (s *Server) call(ctx context.Context, from *http.Request, op, target string) (int, []byte) {
	u, err := url.Parse(target)
	if err != nil {
		return http.StatusInternalServerError, nil
	}
	r := from.Clone(ctx)
	r.Method, r.URL, r.RequestURI, r.Body, r.ContentLength = http.MethodGet, u, target, http.NoBody, 0
	rec := newRecorder()
	s.cfg.API.ServeOperator(rec, r, op)
	return rec.status, rec.body.Bytes()
}

// me answers GET /ui/api/me: admin's GET /v1/me and the session's end.
func (s *Server) me(w http.ResponseWriter, r *http.Request, op string, sess *session) {
	status, body := s.call(r.Context(), r, op, "/v1/me")
	if status != http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	m["session"] = sess != nil
	m["expiresAt"] = nil
	if sess != nil {
		m["expiresAt"] = s.sessions.expires(sess).UTC().Format(time.RFC3339)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m)
}

// rights is the part of admin's GET /v1/me the stream needs.
type rights struct {
	Rights map[string]struct {
		Everywhere bool     `json:"everywhere"`
		Namespaces []string `json:"namespaces"`
	} `json:"rights"`
}

// view is one kind of data the event stream sends.
type view struct {
	name  string
	every time.Duration
	// fetch returns the view's JSON, or ok=false when the operator may
	// not read it (the view is then dropped from the stream).
	fetch func(ctx context.Context) (body []byte, ok bool)
	last  [32]byte
	due   time.Time
}

// Stream limits.
const (
	maxStreamsPerOperator = 8
	pingEvery             = 15 * time.Second
	tick                  = time.Second
	writeTimeout          = 30 * time.Second
)

// streams counts the open event streams per operator.
type streams struct {
	mu sync.Mutex
	n  map[string]int
}

func (st *streams) acquire(op string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.n == nil {
		st.n = map[string]int{}
	}
	if st.n[op] >= maxStreamsPerOperator {
		return false
	}
	st.n[op]++
	return true
}

func (st *streams) release(op string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.n[op]--; st.n[op] <= 0 {
		delete(st.n, op)
	}
}

// views returns the views of the event stream that op may read: asking
// for the others would only record RBAC denials.
func (s *Server) views(r *http.Request, op string) []*view {
	status, body := s.call(r.Context(), r, op, "/v1/me")
	var me rights
	if status != http.StatusOK || json.Unmarshal(body, &me) != nil {
		return nil
	}
	may := func(kind string) bool {
		sc, ok := me.Rights[kind]
		return ok && (sc.Everywhere || len(sc.Namespaces) > 0)
	}
	get := func(target string) func(ctx context.Context) ([]byte, bool) {
		return func(ctx context.Context) ([]byte, bool) {
			status, body := s.call(ctx, r, op, target)
			return body, status == http.StatusOK
		}
	}
	var vs []*view
	add := func(kind, name string, every time.Duration, fetch func(ctx context.Context) ([]byte, bool)) {
		if may(kind) {
			vs = append(vs, &view{name: name, every: every, fetch: fetch})
		}
	}
	add("Denial", "denials", time.Second, get("/v1/denials?since=1h"))
	add("Alert", "alerts", time.Second, get("/v1/alerts?since=24h"))
	add("Edge", "edges", 5*time.Second, get("/v1/edges?since=15m"))
	proxies := me.Rights["Proxy"]
	add("Proxy", "proxies", 5*time.Second, func(ctx context.Context) ([]byte, bool) {
		return s.proxies(ctx, r, op, proxies.Everywhere, proxies.Namespaces)
	})
	add("CA", "ca", 5*time.Second, get("/v1/ca"))
	return vs
}

// proxies lists the proxies of every namespace op may list them in, as one
// List.
func (s *Server) proxies(ctx context.Context, r *http.Request, op string, everywhere bool, namespaces []string) ([]byte, bool) {
	if everywhere {
		status, body := s.call(ctx, r, op, "/v1/proxies")
		return body, status == http.StatusOK
	}
	items := []json.RawMessage{}
	for _, ns := range namespaces {
		status, body := s.call(ctx, r, op, "/v1/proxies?namespace="+url.QueryEscape(ns))
		if status != http.StatusOK {
			continue
		}
		var l struct {
			Items []json.RawMessage `json:"items"`
		}
		if json.Unmarshal(body, &l) == nil {
			items = append(items, l.Items...)
		}
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "bulwark.dev/v1alpha1", "kind": "List", "items": items})
	return b, err == nil
}

// events serves the Server-Sent Events stream: each view the operator may
// read, at once and then whenever it changes.
func (s *Server) events(w http.ResponseWriter, r *http.Request, op string, sess *session) {
	if r.Method != http.MethodGet {
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !s.streams.acquire(op) {
		http.Error(w, "429 too many event streams", http.StatusTooManyRequests)
		return
	}
	defer s.streams.release(op)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	write := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 3000\n\n") {
		return
	}
	vs := s.views(r, op)
	lastPing := s.clock.Now()
	for {
		now := s.clock.Now()
		if sess != nil {
			if !s.sessions.alive(sess) {
				_ = write("event: logout\ndata: {}\n\n")
				return
			}
			s.sessions.touch(sess)
		}
		kept := vs[:0]
		for _, v := range vs {
			if now.Before(v.due) {
				kept = append(kept, v)
				continue
			}
			v.due = now.Add(v.every)
			body, ok := v.fetch(ctx)
			if !ok {
				continue // not readable: dropped for this stream
			}
			kept = append(kept, v)
			body = bytes.TrimSpace(body)
			if sum := sha256.Sum256(body); sum != v.last {
				v.last = sum
				if bytes.ContainsAny(body, "\r\n") {
					body = compact(body)
				}
				if !write("event: %s\ndata: %s\n\n", v.name, body) {
					return
				}
			}
		}
		vs = kept
		if now.Sub(lastPing) >= pingEvery {
			lastPing = now
			if !write(": ping\n\n") {
				return
			}
		}
		t := s.clock.NewTimer(tick)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// compact puts JSON on one line, as an SSE data field needs.
func compact(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r"), nil), []byte("\n"), nil)
	}
	return out.Bytes()
}
