package e2e_test

// Request smuggling against the real sidecar's outbound listener, over raw
// TCP as a compromised or buggy app would send it, and the same bytes at
// the inbound, which speaks HTTP/2 only and so never parses them. The
// internal/proxy attack tests cover HTTP/2 tricks on the inbound;
// internal/framing covers every rule on its own.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// smugglePolicies: web may GET and POST /public/* on api.
const smugglePolicies = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-to-api, namespace: default}
spec:
  selector: {service: api}
  action: ALLOW
  rules:
  - from: {services: ["default/web"]}
    to: {methods: ["GET", "POST"], paths: ["/public/*"]}
`

// recordingApp answers "METHOD PATH BODY" and records each request it
// received, and whether its body arrived whole.
type recordingApp struct {
	addr string
	mu   sync.Mutex
	seen []string
}

func startRecordingApp(t *testing.T) *recordingApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &recordingApp{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		entry := r.Method + " " + r.URL.Path + " " + string(body)
		if err != nil {
			entry += " (body cut: " + err.Error() + ")"
		}
		a.mu.Lock()
		a.seen = append(a.seen, entry)
		a.mu.Unlock()
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *recordingApp) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// rawStream writes raw on a new connection to addr and returns the
// responses (status and body) the server sent before closing it; it fails
// if the server does not close the connection.
func rawStream(t *testing.T, addr, raw string) []string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the connection was not closed: %v (read %q)", err, all)
	}
	var out []string
	br := bufio.NewReader(strings.NewReader(string(all)))
	for {
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			return out
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("responses %q: %v", all, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b))))
	}
}

// TestSmuggling: every smuggling attack on the app's outbound listener is
// answered 400 and its connection closed, and the app never receives a
// request from it (the "smuggled" one least of all); valid keep-alive
// pipelining still works. At the inbound, even with a valid SVID, HTTP/1.1
// fails the handshake.
func TestSmuggling(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	apiApp := startRecordingApp(t)
	web := m.startProxy("default/web", startApp(t, "web").addr)
	api := m.startProxy("default/api", apiApp.addr)
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policies.yaml", smugglePolicies))
	eventually(t, 10*time.Second, "web may call api", func() error {
		if code, body := do(t, web.client(), http.MethodGet, "http://api.default/public/ready", ""); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	baseline := len(apiApp.requests())

	const (
		h        = "POST /public/attack HTTP/1.1\r\nHost: api.default\r\n"
		smuggled = "GET /public/smuggled HTTP/1.1\r\nHost: api.default\r\n\r\n"
	)
	attacks := []struct{ name, raw string }{
		{"cl_te", h + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"te_cl", h + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n35\r\n" + smuggled + "\r\n0\r\n\r\n"},
		{"duplicate_equal_cl", h + "Content-Length: 51\r\nContent-Length: 51\r\n\r\n" + smuggled},
		{"cl_list", h + "Content-Length: 51, 51\r\n\r\n" + smuggled},
		{"te_xchunked", h + "Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled},
		{"te_space_before_colon", h + "Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled},
		{"te_chunked_identity", h + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled},
		{"te_twice", h + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smuggled},
		{"te_obs_fold", h + "Content-Length: 4\r\nX-Pad: x\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"te_http10", "POST /public/attack HTTP/1.0\r\nHost: api.default\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n" + smuggled},
		{"bare_lf", "GET /public/attack HTTP/1.1\nHost: api.default\n\n" + smuggled},
		{"nul_in_value", "GET /public/attack HTTP/1.1\r\nHost: api.default\r\nX-A: a\x00b\r\n\r\n" + smuggled},
		{"h2c_upgrade", "GET /public/attack HTTP/1.1\r\nHost: api.default\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + smuggled},
		// The complete HTTP/2 preface starts h2c (gRPC clients; see
		// TestGRPCThroughSidecars); a broken one is no HTTP/1.1 either.
		{"h2_preface_broken", "PRI * HTTP/2.0\r\n\r\nXM\r\n\r\n" + smuggled},
		{"absolute_form_other_host", "GET http://secret.default/public/attack HTTP/1.1\r\nHost: api.default\r\n\r\n" + smuggled},
		{"duplicate_host", "GET /public/attack HTTP/1.1\r\nHost: api.default\r\nHost: secret.default\r\n\r\n" + smuggled},
		{"chunk_size_not_hex", h + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + smuggled},
		{"chunk_size_overflow", h + "Transfer-Encoding: chunked\r\n\r\n10000000000000033\r\n" + smuggled + "\r\n0\r\n\r\n"},
		{"chunk_missing_crlf", h + "Transfer-Encoding: chunked\r\n\r\n1\r\nx" + smuggled},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			if got := rawStream(t, web.outbound, a.raw); len(got) != 1 || !strings.HasPrefix(got[0], "400 ") {
				t.Errorf("got %q, want one 400 and the connection closed", got)
			}
		})
	}
	t.Run("pipelined_keep_alive", func(t *testing.T) {
		before := len(apiApp.requests())
		got := rawStream(t, web.outbound,
			"POST /public/a HTTP/1.1\r\nHost: api.default\r\nContent-Length: 5\r\n\r\nhello"+
				"POST /public/b HTTP/1.1\r\nHost: api.default\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"+
				"GET http://api.default/public/c HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n")
		want := []string{"200 POST /public/a hello", "200 POST /public/b abcde", "200 GET /public/c"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("got %q, want %q", got, want)
		}
		if seen := notAttacks(apiApp.requests()[before:]); len(seen) != 3 {
			t.Errorf("api's app received %q, want exactly the 3 requests", seen)
		}
	})

	t.Run("pipelined_then_attack", func(t *testing.T) {
		before := len(apiApp.requests())
		got := rawStream(t, web.outbound, "GET /public/first HTTP/1.1\r\nHost: api.default\r\n\r\n"+
			h+"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+smuggled)
		if len(got) != 2 || got[0] != "200 GET /public/first" || !strings.HasPrefix(got[1], "400 ") {
			t.Errorf("got %q, want the first request answered, then 400", got)
		}
		if seen := notAttacks(apiApp.requests()[before:]); len(seen) != 1 || !strings.HasPrefix(seen[0], "GET /public/first") {
			t.Errorf("api's app received %q, want only GET /public/first", seen)
		}
	})

	// The same attacks, and a valid request, straight at api's inbound with
	// web's SVID (web may call api): the inbound speaks HTTP/2 only, so a
	// client that offers only http/1.1, or no ALPN, fails the handshake
	// (with TLS 1.3 it learns so on its first read) and nothing it sends
	// is parsed, let alone forwarded.
	t.Run("inbound_refuses_http1", func(t *testing.T) {
		before := len(apiApp.requests())
		svid := filepath.Join(web.dataDir, "svid.pem")
		inputs := slices.Concat(attacks, []struct{ name, raw string }{{"valid_request", "GET /public/http1 HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"}})
		for _, offer := range []struct {
			name   string
			protos []string
		}{{"http1", []string{"http/1.1"}}, {"no_alpn", nil}} {
			for _, in := range inputs {
				t.Run(offer.name+"/"+in.name, func(t *testing.T) {
					cfg := tlsConfigFromPEM(t, svid)
					cfg.NextProtos = offer.protos
					got, err := tlsFirstRead(api.inbound, cfg, in.raw)
					var ne net.Error
					if err == nil || len(got) != 0 || errors.As(err, &ne) && ne.Timeout() {
						t.Errorf("got %q, %v; want the handshake refused and nothing answered", got, err)
					}
				})
			}
		}
		// h2 with the same SVID is served: the refusals are about the
		// protocol, not the caller.
		if code, body := do(t, svidClient(t, web.dataDir), http.MethodGet, "https://"+api.inbound+"/public/h2", ""); code != http.StatusOK {
			t.Errorf("h2 with web's SVID: got %d %s, want 200", code, body)
		}
		if seen := notAttacks(apiApp.requests()[before:]); len(seen) != 1 || !strings.HasPrefix(seen[0], "GET /public/h2 ") {
			t.Errorf("api's app received %q, want only the h2 request", seen)
		}
	})

	// A chunked attack's head may be forwarded before its body turns out
	// bad (the proxy streams bodies): the app then sees that request cut,
	// possibly late, never whole, and never what it smuggles.
	for _, r := range apiApp.requests()[baseline:] {
		if strings.Contains(r, "/public/smuggled") || strings.Contains(r, "/public/attack") && !strings.Contains(r, "(body cut") {
			t.Errorf("api's app received %q from an attack", r)
		}
	}
}

// notAttacks drops the cut requests of chunked attacks, which may reach the
// app after the attack's own subtest.
func notAttacks(seen []string) []string {
	var out []string
	for _, r := range seen {
		if !strings.Contains(r, "/public/attack") {
			out = append(out, r)
		}
	}
	return out
}

// tlsFirstRead dials addr over TLS with cfg, writes raw, and reads until
// the server closes the connection. It returns what it read and the error
// that ended the exchange: the handshake's, the write's, or the read's
// (io.ReadAll's nil for a clean close).
func tlsFirstRead(addr string, cfg *tls.Config, raw string) ([]byte, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		return nil, err
	}
	return io.ReadAll(conn)
}
