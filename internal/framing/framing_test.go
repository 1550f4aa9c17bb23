package framing_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/framing"
)

// hangGuard bounds every wait, so that a bug shows as a failure rather than
// a hung test. It is never a timing assertion.
const hangGuard = 30 * time.Second

// badRequest is what a rejected connection receives.
const badRequest = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 12\r\n\r\nbad request\n"

// server is a real HTTP server on loopback behind a framing Listener,
// configured as the sidecar's plain servers are.
type server struct {
	addr string
	ln   *framing.Listener

	mu      sync.Mutex
	seen    []string // "METHOD URI body" of each request the handler saw
	bodyErr []error  // body read errors the handler saw
	reasons []framing.Reason
}

// echo answers "METHOD URI body".
func echo(w http.ResponseWriter, r *http.Request, body []byte) {
	fmt.Fprintf(w, "%s %s %s", r.Method, r.RequestURI, body)
}

// startServer serves h (default: echo) behind a framing listener; tracked
// says whether the server reports connection states.
func startServer(t *testing.T, tracked bool, h func(w http.ResponseWriter, r *http.Request, body []byte)) *server {
	t.Helper()
	if h == nil {
		h = echo
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: raw.Addr().String()}
	s.ln = framing.NewListener(raw, framing.Config{
		MaxHeaderBytes: 64 << 10,
		OnReject: func(r framing.Reason) {
			s.mu.Lock()
			s.reasons = append(s.reasons, r)
			s.mu.Unlock()
		},
	})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			s.mu.Lock()
			s.seen = append(s.seen, r.Method+" "+r.RequestURI+" "+string(body))
			if err != nil {
				s.bodyErr = append(s.bodyErr, err)
			}
			s.mu.Unlock()
			if err != nil {
				http.Error(w, "bad gateway", http.StatusBadGateway)
				return
			}
			h(w, r, body)
		}),
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            10 * time.Second,
		MaxHeaderBytes:               64 << 10,
		ErrorLog:                     slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	if tracked {
		srv.ConnState = framing.ConnState
	}
	go func() { _ = srv.Serve(s.ln) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *server) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func (s *server) bodyErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.bodyErr...)
}

func (s *server) rejections() []framing.Reason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]framing.Reason(nil), s.reasons...)
}

// exchange writes raw on a new connection and returns everything the
// server sends until it closes the connection.
func (s *server) exchange(t *testing.T, raw string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.addr, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read until close: %v (got %q)", err, got)
	}
	return string(got)
}

// responses splits what a server sent into status lines and bodies.
func responses(t *testing.T, got string) []string {
	t.Helper()
	var out []string
	br := bufio.NewReader(strings.NewReader(got))
	for {
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			return out
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("responses %q: %v", got, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("response body: %v", err)
		}
		out = append(out, fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
}

// TestConnRefusesAttacks: each attack is answered with exactly the 400 and
// the connection closed; the handler never runs.
func TestConnRefusesAttacks(t *testing.T) {
	for _, tracked := range []bool{true, false} {
		t.Run(fmt.Sprintf("tracked_%v", tracked), func(t *testing.T) {
			s := startServer(t, tracked, nil)
			tests := []struct {
				name   string
				raw    string
				reason framing.Reason
			}{
				{name: "cl_te", raw: "POST /public/x HTTP/1.1\r\nHost: api.default\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /private HTTP/1.1\r\nHost: api.default\r\n\r\n", reason: framing.ReasonTransferEncoding},
				{name: "te_cl", raw: "POST /public/x HTTP/1.1\r\nHost: api.default\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", reason: framing.ReasonTransferEncoding},
				{name: "duplicate_equal_cl", raw: "POST /public/x HTTP/1.1\r\nHost: api.default\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", reason: framing.ReasonContentLength},
				{name: "cl_list", raw: "POST /public/x HTTP/1.1\r\nHost: api.default\r\nContent-Length: 5, 5\r\n\r\nhello", reason: framing.ReasonContentLength},
				{name: "te_xchunked", raw: "POST /public/x HTTP/1.1\r\nHost: api.default\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", reason: framing.ReasonTransferEncoding},
				{name: "te_gzip", raw: "POST /public/x HTTP/1.1\r\nHost: api.default\r\nTransfer-Encoding: gzip\r\n\r\n", reason: framing.ReasonTransferEncoding},
				{name: "te_http10", raw: "POST /public/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", reason: framing.ReasonTransferEncoding},
				{name: "obs_fold", raw: "GET /public/x HTTP/1.1\r\nHost: api.default\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n", reason: framing.ReasonFieldSyntax},
				{name: "space_before_colon", raw: "GET /public/x HTTP/1.1\r\nHost: api.default\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", reason: framing.ReasonFieldSyntax},
				{name: "bare_lf", raw: "GET /public/x HTTP/1.1\nHost: api.default\n\nGET /private HTTP/1.1\nHost: api.default\n\n", reason: framing.ReasonFieldSyntax},
				{name: "nul_in_value", raw: "GET /public/x HTTP/1.1\r\nHost: api.default\r\nX-A: a\x00b\r\n\r\n", reason: framing.ReasonFieldValue},
				{name: "h2c_upgrade", raw: "GET /public/x HTTP/1.1\r\nHost: api.default\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", reason: framing.ReasonUpgrade},
				{name: "h2_preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", reason: framing.ReasonVersion},
				{name: "absolute_form_other_host", raw: "GET http://secret.default/x HTTP/1.1\r\nHost: api.default\r\n\r\n", reason: framing.ReasonHost},
				{name: "duplicate_host", raw: "GET /public/x HTTP/1.1\r\nHost: api.default\r\nHost: secret.default\r\n\r\n", reason: framing.ReasonHost},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					before := len(s.rejections())
					if got := s.exchange(t, tt.raw); got != badRequest {
						t.Errorf("got %q, want only the 400", got)
					}
					if got := s.requests(); len(got) != 0 {
						t.Errorf("handler saw %q", got)
					}
					if got := s.rejections(); len(got) != before+1 || got[before] != tt.reason {
						t.Errorf("rejections: got %v, want one more: %s", got, tt.reason)
					}
				})
			}
			if got := s.ln.Rejected(framing.ReasonTransferEncoding); got != 5 {
				t.Errorf("Rejected(transfer_encoding): got %d, want 5", got)
			}
		})
	}
}

// TestConnPipelinedValid: pipelined keep-alive requests (Content-Length,
// chunked, none) pass untouched and are answered in order.
func TestConnPipelinedValid(t *testing.T) {
	s := startServer(t, true, nil)
	raw := "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n" +
		"\r\n" + // tolerated after a POST
		"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
	got := responses(t, s.exchange(t, raw))
	want := []string{"200 POST /a hello", "200 POST /b abcde", "200 GET /c "}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
	if r := s.rejections(); len(r) != 0 {
		t.Errorf("rejections: %v", r)
	}
}

// TestConnKeepAliveClient: a real client's keep-alive traffic passes.
func TestConnKeepAliveClient(t *testing.T) {
	s := startServer(t, true, nil)
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: hangGuard}
	for i := range 20 {
		body := strings.Repeat("x", i*100)
		resp, err := c.Post("http://"+s.addr+"/p", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "POST /p " + body; resp.StatusCode != http.StatusOK || string(b) != want {
			t.Fatalf("request %d: got %d %q", i, resp.StatusCode, b)
		}
	}
}

// TestConnPipelinedThenAttack: a valid request followed, in the same
// write, by an attack: the valid one is answered while the attack is held
// back, then the 400 follows and the connection closes. The handler sees
// only the valid request, and its answer is not cut short.
func TestConnPipelinedThenAttack(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, true, func(w http.ResponseWriter, r *http.Request, body []byte) {
		<-release // still answering when the attack is read
		echo(w, r, body)
	})
	go func() {
		// Release the handler once it runs: the attack bytes are then
		// already with the server.
		for len(s.requests()) == 0 {
			time.Sleep(time.Millisecond)
		}
		close(release)
	}()
	raw := "GET /first HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
	got := responses(t, s.exchange(t, raw))
	want := []string{"200 GET /first ", "400 bad request\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := s.requests(); len(got) != 1 {
		t.Errorf("handler saw %q, want only GET /first", got)
	}
}

// TestConnBadChunkedBody: a malformed chunk in a body whose head the
// handler has: the handler's body read fails with ErrRejected, and the
// client gets the 400 (the handler had not answered).
func TestConnBadChunkedBody(t *testing.T) {
	for name, raw := range map[string]string{
		"not_hex":      "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
		"missing_crlf": "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
		"overflow":     "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			s := startServer(t, true, nil)
			if got := s.exchange(t, raw); got != badRequest {
				t.Errorf("got %q, want only the 400", got)
			}
			errs := s.bodyErrors()
			if len(errs) != 1 || !errors.Is(errs[0], framing.ErrRejected) {
				t.Errorf("handler body errors: got %v, want one wrapping ErrRejected", errs)
			}
			for _, r := range s.requests() {
				if strings.Contains(r, "admin") {
					t.Errorf("handler saw %q", r)
				}
			}
		})
	}
}

// TestConnBadChunkedBodyAfterAnswer: when the handler answered before
// reading the body (full duplex), its answer stands and no 400 is added to
// it.
func TestConnBadChunkedBodyAfterAnswer(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := framing.NewListener(raw, framing.Config{})
	bodyErr := make(chan error, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Otherwise net/http reads the body before the header.
			_ = http.NewResponseController(w).EnableFullDuplex()
			w.Header().Set("Content-Length", "2")
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, "ok")
			_ = http.NewResponseController(w).Flush()
			_, err := io.ReadAll(r.Body)
			bodyErr <- err
		}),
		ConnState: framing.ConnState,
		ErrorLog:  slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	s := &server{addr: raw.Addr().String()}
	got := s.exchange(t, "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
	if r := responses(t, got); len(r) != 1 || r[0] != "202 ok" {
		t.Errorf("got %q, want only the handler's 202", got)
	}
	if err := <-bodyErr; !errors.Is(err, framing.ErrRejected) {
		t.Errorf("handler body error: got %v, want ErrRejected", err)
	}
}

// TestConnCloseIdempotent: Close may be called many times, concurrently.
func TestConnCloseIdempotent(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := framing.NewListener(raw, framing.Config{})
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err == nil {
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n")
			_, _ = io.ReadAll(c)
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	var rerr error
	for rerr == nil {
		_, rerr = c.Read(buf)
	}
	var oe *net.OpError
	if !errors.As(rerr, &oe) || oe.Op != "read" || !errors.Is(rerr, framing.ErrRejected) {
		t.Fatalf("read error: got %v, want a read *net.OpError wrapping ErrRejected", rerr)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close()
		}()
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after the 400: got nil error")
	}
}

// TestConnHijackedPassesThrough: once a handler hijacks the connection (a
// protocol upgrade), its bytes are no longer read as HTTP.
func TestConnHijackedPassesThrough(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			line, _ := brw.ReadString('\n')
			_, _ = io.WriteString(conn, line)
		}),
		ConnState: framing.ConnState,
		ErrorLog:  slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	go func() { _ = srv.Serve(framing.NewListener(raw, framing.Config{})) }()
	t.Cleanup(func() { srv.Close() })
	conn, err := net.DialTimeout("tcp", raw.Addr().String(), hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(hangGuard))
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got %v, %v; want 101", resp, err)
	}
	// As clients do, the tunnel starts after the 101.
	_, _ = io.WriteString(conn, "\x00\x01 not http\r\r\n")
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "\x00\x01 not http\r\r\n" {
		t.Errorf("tunnel: got %q, %v; want the bytes echoed", got, err)
	}
}
