package e2e_test

// Attacks on the ingress gateway from outside, against the real binary:
// slow clients (slowloris on headers, handshakes and bodies; HTTP/2 header
// blocks never finished), HTTP/2 rapid reset and CONTINUATION floods,
// oversized requests, request smuggling, Host tricks, and a gateway that no
// policy selects. Each attack runs while a legitimate client keeps being
// served where that matters, with bounded loops and no timing assertions
// beyond "closed within a bound".

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// gwFixture is a mesh with api's app behind its sidecar and a gateway
// with one HTTPS listener for *.example.test routing api.example.test (and
// big.example.test, whose body limit is 8 KiB) to api.
type gwFixture struct {
	m    *mesh
	api  *gwApp
	gw   *gwGateway
	cert gwCert
	addr string
	// metrics is the address of the gateway's /metrics.
	metrics string
}

// gwSetup starts a gwFixture whose Gateway has limits (YAML lines under
// "limits:", indented by four spaces; empty for the defaults); with
// policy, the gateway lets loopback clients through.
func gwSetup(t *testing.T, limits string, policy bool) *gwFixture {
	t.Helper()
	return gwSetupRoutesOn(t, startControl(t), limits, policy, "", "")
}

// gwSetupRoutesOn is gwSetup on a running control plane, with more
// resources, and more routes (YAML list items under "routes:", indented by
// two spaces) before the fixture's own.
func gwSetupRoutesOn(t *testing.T, m *mesh, limits string, policy bool, resources, routes string) *gwFixture {
	t.Helper()
	f := &gwFixture{m: m, api: gwStartApp(t, "api", nil), cert: gwNewCert(t, 4300, "*.example.test")}
	f.m.startProxy("default/api", f.api.addr)
	resources += gwSecret("edge-cert", f.cert) + "---\n" + allowAll("api", "default/edge") + "---\n"
	if policy {
		resources += gwEdgePolicy + "---\n"
	}
	if limits != "" {
		limits = "  limits:\n" + limits
	}
	f.m.apply(resources + `apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificates: [{secret: edge-cert}]
  routes:
` + routes + `  - name: big
    hosts: [big.example.test]
    service: default/api
    maxRequestBodyBytes: 8192
  - name: api
    hosts: [api.example.test]
    service: default/api
` + limits)
	f.metrics = freeAddr(t)
	f.gw = f.m.gwStartFlags([]string{"https"}, []string{"--metrics", f.metrics})
	f.addr = f.gw.addrs["https"]
	if policy {
		gwWaitStatus(t, f.client("h2", nil), "https://api.example.test/public/ready", nil, http.StatusOK)
	}
	return f
}

// client is a gwClient of the fixture's gateway.
func (f *gwFixture) client(proto string, local net.IP) *http.Client {
	return gwClient(f.addr, f.cert.pool, gwTransportOpts{proto: proto, local: local})
}

// dialTLS opens a TLS connection to the gateway from local (nil: any)
// with SNI api.example.test offering protos.
func (f *gwFixture) dialTLS(t *testing.T, local net.IP, protos ...string) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	conn, err := tls.DialWithDialer(d, "tcp", f.addr, &tls.Config{ServerName: "api.example.test", RootCAs: f.cert.pool,
		NextProtos: protos, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS to the gateway: %v", err)
	}
	if len(protos) > 0 && conn.ConnectionState().NegotiatedProtocol != protos[0] {
		conn.Close()
		t.Fatalf("ALPN: got %q, want %q", conn.ConnectionState().NegotiatedProtocol, protos[0])
	}
	return conn
}

// rawHTTP1 writes raw on a new HTTP/1.1 TLS connection to the gateway and
// returns the answers ("status body") it read before the gateway closed
// the connection; a test failure if it is not closed within 10s.
func (f *gwFixture) rawHTTP1(t *testing.T, raw string) []string {
	t.Helper()
	conn := f.dialTLS(t, nil, "http/1.1")
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	all, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("the connection was not closed: %v (read %q)", err, all)
	}
	var out []string
	br := bufio.NewReader(bytes.NewReader(all))
	for {
		if _, err := br.Peek(1); err != nil {
			return out
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answers %q: %v", all, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b))))
	}
}

// gwLegit is a legitimate client that keeps sending requests, one every
// 100ms, until stopped, and counts how they were answered.
type gwLegit struct {
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	ok       int
	failures []string
}

// gwStartLegit starts a gwLegit on c; stopped when the test ends at the
// latest.
func gwStartLegit(t *testing.T, c *http.Client, u string) *gwLegit {
	l := &gwLegit{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			r, err := gwDo(c, http.MethodGet, u+"?n="+strconv.Itoa(i), nil, "")
			l.mu.Lock()
			switch {
			case err != nil:
				l.failures = append(l.failures, err.Error())
			case r.status != http.StatusOK:
				l.failures = append(l.failures, fmt.Sprintf("%d %.100q", r.status, r.body))
			default:
				l.ok++
			}
			l.mu.Unlock()
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(l.finish)
	return l
}

// finish stops the client and waits for its last request; it may be
// called more than once.
func (l *gwLegit) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// check stops the client and fails the test unless every one of its
// requests, at least min, got 200.
func (l *gwLegit) check(t *testing.T, min int) {
	t.Helper()
	l.finish()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > 0 || l.ok < min {
		t.Errorf("legitimate client: %d answered 200, failures %q; want every request (at least %d) answered 200", l.ok, l.failures, min)
	}
}

// gwClosedWithin reads conn until the gateway closes it; it returns what
// it read and an error if conn is still open after bound.
func gwClosedWithin(conn net.Conn, bound time.Duration) ([]byte, error) {
	_ = conn.SetReadDeadline(time.Now().Add(bound))
	b, err := io.ReadAll(conn)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return b, fmt.Errorf("still open after %s", bound)
	}
	return b, nil
}

// gwDrip writes prefix, then one byte of drip every second, until the
// gateway closes the connection or maxDrip bytes of drip were written. It
// returns the number of drip bytes written before the gateway closed the
// connection, and whether it did.
func gwDrip(conn net.Conn, prefix, drip string, maxDrip int) (int, bool) {
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = conn.SetReadDeadline(time.Now().Add(time.Duration(maxDrip+5) * time.Second))
		_, _ = io.Copy(io.Discard, conn)
	}()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Duration(maxDrip+5) * time.Second))
	if _, err := io.WriteString(conn, prefix); err != nil {
		<-closed
		return 0, true
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := range maxDrip {
		select {
		case <-closed:
			return i, true
		case <-tick.C:
		}
		if _, err := io.WriteString(conn, drip[i%len(drip):i%len(drip)+1]); err != nil {
			<-closed
			return i, true
		}
	}
	select {
	case <-closed:
		return maxDrip, true
	case <-time.After(2 * time.Second):
		return maxDrip, false
	}
}

// gwIsTimeout reports whether err is a deadline's.
func gwIsTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// TestGatewaySlowloris: with requestHeaderTimeout and requestBodyTimeout
// of 2s, a client sending its headers one byte a second, one that never
// starts its TLS handshake or drips it, one sending its body one byte a
// second (HTTP/1.1 and HTTP/2), fifty connections stalled in their headers
// at once, and an HTTP/2 client that never finishes a header block are all
// disconnected (or, for an HTTP/2 body, answered) within a few bytes and
// seconds, while a legitimate client from another
// address keeps getting 200s.
func TestGatewaySlowloris(t *testing.T) {
	t.Parallel()
	f := gwSetup(t, "    requestHeaderTimeout: 2s\n    requestBodyTimeout: 2s\n", true)
	legit := gwStartLegit(t, f.client("h2", net.IPv4(127, 0, 0, 5)), "https://api.example.test/public/legit")
	attacker := net.IPv4(127, 0, 0, 9)
	const maxBytes = 8 // a 2s timeout closes the connection after 2 or 3

	// The attacks run at once, each in its own goroutine (t.Run may be
	// called concurrently; -parallel does not limit these), and
	// t.Run("attacks") returns when all have.
	var wg sync.WaitGroup
	run := func(parent *testing.T, name string, attack func(t *testing.T)) {
		wg.Go(func() { parent.Run(name, attack) })
	}
	t.Run("attacks", func(t *testing.T) {
		defer wg.Wait()
		run(t, "headers_one_byte_a_second", func(t *testing.T) {
			conn := f.dialTLS(t, attacker, "http/1.1")
			defer conn.Close()
			n, closed := gwDrip(conn, "GET /public/slowloris HTTP/1.1\r\nHost: api.example.test\r\nX-Slow: ", "abcdefghijklmnop", maxBytes)
			if !closed {
				t.Errorf("a header byte every second: still open after %d bytes", n)
			}
			t.Logf("closed after %d header bytes", n)
		})
		run(t, "request_line_one_byte_a_second", func(t *testing.T) {
			conn := f.dialTLS(t, attacker, "http/1.1")
			defer conn.Close()
			n, closed := gwDrip(conn, "", "GET /public/slowloris-line HTTP/1.1\r\n", maxBytes)
			if !closed {
				t.Errorf("a request-line byte every second: still open after %d bytes", n)
			}
		})
		run(t, "handshake_never_started", func(t *testing.T) {
			d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: attacker}}
			conn, err := d.Dial("tcp", f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := gwClosedWithin(conn, 10*time.Second); err != nil {
				t.Errorf("a TCP connection without a ClientHello: %v, want it closed by the 2s header timeout", err)
			}
		})
		run(t, "handshake_one_byte_a_second", func(t *testing.T) {
			d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: attacker}}
			conn, err := d.Dial("tcp", f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// The start of a TLS record holding a ClientHello.
			n, closed := gwDrip(conn, "", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", maxBytes)
			if !closed {
				t.Errorf("a ClientHello byte every second: still open after %d bytes", n)
			}
		})
		run(t, "body_one_byte_a_second", func(t *testing.T) {
			conn := f.dialTLS(t, attacker, "http/1.1")
			defer conn.Close()
			n, closed := gwDrip(conn, "POST /public/slowbody HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 100\r\n\r\n", "0123456789", maxBytes)
			if !closed {
				t.Errorf("a body byte every second: still open after %d bytes", n)
			}
		})
		run(t, "fifty_stalled_connections", func(t *testing.T) {
			var conns []*tls.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for i := range 50 {
				c := f.dialTLS(t, net.IPv4(127, 0, 2, byte(1+i)), "http/1.1")
				conns = append(conns, c)
				if _, err := io.WriteString(c, "GET /public/stalled HTTP/1.1\r\nHost: api.example.test\r\n"); err != nil {
					t.Fatal(err)
				}
			}
			for i, c := range conns {
				if _, err := gwClosedWithin(c, 10*time.Second); err != nil {
					t.Errorf("stalled connection %d: %v", i, err)
				}
			}
		})
		run(t, "h2_header_block_never_finished", func(t *testing.T) {
			conn := f.dialTLS(t, attacker, "h2")
			defer conn.Close()
			fr := gwH2Start(t, conn)
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			for _, hf := range gwH2Request("/public/h2-slow") {
				_ = enc.WriteField(hf)
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes()[:buf.Len()/2], EndStream: true}); err != nil {
				t.Fatal(err)
			}
			if reason, err := gwH2WaitClosed(conn, fr, 10*time.Second); err != nil {
				t.Errorf("an HTTP/2 header block never finished: %v, want the connection closed", err)
			} else {
				t.Logf("unfinished header block: %s", reason)
			}
		})
		run(t, "h2_body_one_frame_a_second", func(t *testing.T) {
			conn := f.dialTLS(t, attacker, "h2")
			defer conn.Close()
			fr := gwH2Start(t, conn)
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			for _, hf := range append(gwH2Request("/public/h2-slowbody"), hpack.HeaderField{Name: "content-length", Value: "100"}) {
				if hf.Name == ":method" {
					hf.Value = "POST"
				}
				_ = enc.WriteField(hf)
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				for range maxBytes {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if fr.WriteData(1, false, []byte("x")) != nil {
						return
					}
				}
			}()
			// The stream ends (an answer or RST_STREAM) or the connection.
			_ = conn.SetReadDeadline(time.Now().Add(time.Duration(maxBytes+4) * time.Second))
			for {
				fm, err := fr.ReadFrame()
				if err != nil {
					if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
						t.Errorf("an HTTP/2 body byte every second: stream still open after %d bytes", maxBytes)
					}
					return
				}
				switch fm := fm.(type) {
				case *http2.RSTStreamFrame:
					t.Logf("slow h2 body: RST_STREAM %s", fm.ErrCode)
					return
				case *http2.HeadersFrame:
					t.Logf("slow h2 body: answered")
					return
				case *http2.GoAwayFrame:
					t.Logf("slow h2 body: GOAWAY %s", fm.ErrCode)
					return
				}
			}
		})
	})
	legit.check(t, 5)
	if f.api.received("/public/slowloris") || f.api.received("/public/h2-slow") || f.api.received("/public/stalled") {
		t.Errorf("the app received a request whose headers never completed: %q", f.api.requests())
	}
}

// gwH2Request is the header list of a GET of path on api.example.test.
func gwH2Request(path string) []hpack.HeaderField {
	return []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "api.example.test"}, {Name: ":path", Value: path},
	}
}

// gwH2Start sends the client preface and SETTINGS on conn, acknowledges
// the gateway's SETTINGS, and returns the framer.
func gwH2Start(t *testing.T, conn net.Conn) *http2.Framer {
	t.Helper()
	fr, _ := gwH2StartSettings(t, conn)
	return fr
}

// gwH2StartSettings is gwH2Start that also returns the gateway's
// SETTINGS.
func gwH2StartSettings(t *testing.T, conn net.Conn) (*http2.Framer, map[http2.SettingID]uint32) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	settings := map[http2.SettingID]uint32{}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the gateway's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			_ = sf.ForeachSetting(func(s http2.Setting) error {
				settings[s.ID] = s.Val
				return nil
			})
			break
		}
	}
	if err := fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return fr, settings
}

// gwH2WaitClosed reads frames until a GOAWAY or the end of the
// connection, and says which; an error if neither came within bound. It
// writes nothing (a client in the middle of a header block may send only
// CONTINUATION frames).
func gwH2WaitClosed(conn net.Conn, fr *http2.Framer, bound time.Duration) (string, error) {
	deadline := time.Now().Add(bound)
	_ = conn.SetReadDeadline(deadline)
	for time.Now().Before(deadline) {
		f, err := fr.ReadFrame()
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				break
			}
			return "connection ended: " + err.Error(), nil
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return "GOAWAY " + ga.ErrCode.String(), nil
		}
	}
	return "", fmt.Errorf("neither GOAWAY nor the end of the connection within %s", bound)
}

// TestGatewayRapidReset: an HTTP/2 client opening streams and resetting
// them at once, as fast as it can (CVE-2023-44487), gets its connection
// closed (GOAWAY or EOF) within a bounded number of streams; one sending an
// endless CONTINUATION sequence (CVE-2024-27316) too; a legitimate client
// from another address keeps getting 200s.
func TestGatewayRapidReset(t *testing.T) {
	t.Parallel()
	f := gwSetup(t, "", true)
	legit := gwStartLegit(t, f.client("h2", net.IPv4(127, 0, 0, 5)), "https://api.example.test/public/legit")
	attacker := net.IPv4(127, 0, 0, 9)

	t.Run("settings_advertised", func(t *testing.T) {
		conn := f.dialTLS(t, attacker, "h2")
		defer conn.Close()
		_, settings := gwH2StartSettings(t, conn)
		if got, ok := settings[http2.SettingMaxConcurrentStreams]; !ok || got != 100 {
			t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS: got %d (sent %v), want the default limit 100", got, ok)
		}
		if got, ok := settings[http2.SettingMaxHeaderListSize]; !ok || got == 0 || got > 1<<20 {
			t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE: got %d (sent %v), want a bound", got, ok)
		}
	})
	t.Run("rapid_reset", func(t *testing.T) {
		conn := f.dialTLS(t, attacker, "h2")
		defer conn.Close()
		fr := gwH2Start(t, conn)
		var wmu sync.Mutex
		closed := make(chan string, 1)
		go func() {
			for {
				fm, err := fr.ReadFrame()
				if err != nil {
					closed <- "connection ended: " + err.Error()
					return
				}
				switch fm := fm.(type) {
				case *http2.GoAwayFrame:
					closed <- "GOAWAY " + fm.ErrCode.String()
					return
				case *http2.SettingsFrame:
					if !fm.IsAck() {
						wmu.Lock()
						_ = fr.WriteSettingsAck()
						wmu.Unlock()
					}
				}
			}
		}()
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		const maxStreams = 20000
		sent := 0
		var reason string
	attack:
		for sent < maxStreams {
			select {
			case reason = <-closed:
				break attack
			default:
			}
			id := uint32(2*sent + 1)
			buf.Reset()
			for _, hf := range gwH2Request("/public/rapid-reset") {
				_ = enc.WriteField(hf)
			}
			wmu.Lock()
			err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndStream: true, EndHeaders: true})
			if err == nil {
				err = fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
			wmu.Unlock()
			if err != nil {
				// The gateway closed the connection, or stopped reading
				// it: the reader tells which.
				break
			}
			sent++
		}
		if reason == "" {
			select {
			case reason = <-closed:
			case <-time.After(10 * time.Second):
				t.Errorf("%d streams opened and reset: the connection is still open, want GOAWAY or its end", sent)
				return
			}
		}
		t.Logf("rapid reset: %d streams sent, then %s", sent, reason)
	})

	t.Run("continuation_flood", func(t *testing.T) {
		conn := f.dialTLS(t, attacker, "h2")
		defer conn.Close()
		fr := gwH2Start(t, conn)
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, hf := range gwH2Request("/public/continuation") {
			_ = enc.WriteField(hf)
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndStream: true}); err != nil {
			t.Fatal(err)
		}
		// Fragments of whole never-indexed literal fields (so the block
		// stays valid however many are sent), never END_HEADERS: up to
		// 64 MiB unless the gateway stops it.
		buf.Reset()
		_ = enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("a", 200), Sensitive: true})
		field := slices.Clone(buf.Bytes())
		frag := bytes.Repeat(field, (16<<10)/len(field))
		written := 0
		var werr error
		for written < (64<<20)/len(frag) {
			if werr = fr.WriteContinuation(1, false, frag); werr != nil {
				break
			}
			written++
		}
		if ne, ok := errors.AsType[net.Error](werr); ok && ne.Timeout() {
			t.Errorf("CONTINUATION flood: the gateway stopped reading after %d frames without closing the connection", written)
		}
		if werr == nil {
			if _, err := gwH2WaitClosed(conn, fr, 10*time.Second); err != nil {
				t.Errorf("%d CONTINUATION frames (%d MiB) without END_HEADERS: %v", written, written*len(frag)>>20, err)
			}
		}
		t.Logf("continuation flood: %d frames of %d bytes written, then %v", written, len(frag), werr)
	})
	legit.check(t, 3)
	if f.api.received("/public/continuation") {
		t.Errorf("the app received the CONTINUATION flood's request")
	}
	if gwExited(f.gw.proc) {
		t.Errorf("the gateway exited: %v", f.gw.proc.err)
	}
}

// TestGatewayHeaderLimits: over HTTP/2 and HTTP/1.1, more header fields
// than the limit get 431, a header block over the byte limit 431, a URL
// over the limit 414, a body over the Gateway's maxRequestBodyBytes 413
// (with a Content-Length or streamed), and the app receives none of them;
// a route's own larger limit lets the same body through.
func TestGatewayHeaderLimits(t *testing.T) {
	t.Parallel()
	f := gwSetup(t, "    maxRequestBodyBytes: 1024\n    maxConnectionsPerIP: 8\n", true)
	many := map[string]string{}
	for i := range 150 {
		many["X-Many-"+strconv.Itoa(i)] = "v"
	}
	body := strings.Repeat("b", 4096)
	for _, proto := range []string{"h2", "h1"} {
		c := f.client(proto, nil)
		t.Run(proto+"/too_many_headers_431", func(t *testing.T) {
			gwWant(t, c, http.MethodGet, "https://api.example.test/public/many-headers", many, "", http.StatusRequestHeaderFieldsTooLarge)
		})
		t.Run(proto+"/header_bytes_431", func(t *testing.T) {
			r, err := gwDo(c, http.MethodGet, "https://api.example.test/public/huge-header", map[string]string{"X-Huge": strings.Repeat("h", 40<<10)}, "")
			switch {
			case err != nil && proto == "h2" && strings.Contains(err.Error(), "larger than peer's advertised limit"):
				// The gateway advertised SETTINGS_MAX_HEADER_LIST_SIZE
				// and the client kept to it.
			case err != nil:
				t.Errorf("a 40 KiB header: %v, want 431", err)
			case r.status != http.StatusRequestHeaderFieldsTooLarge:
				t.Errorf("a 40 KiB header: got %d, want 431", r.status)
			}
		})
		t.Run(proto+"/long_url_414", func(t *testing.T) {
			gwWant(t, c, http.MethodGet, "https://api.example.test/public/long-url/"+strings.Repeat("u", 10000), nil, "", http.StatusRequestURITooLong)
		})
		t.Run(proto+"/body_with_length_413", func(t *testing.T) {
			gwWant(t, c, http.MethodPost, "https://api.example.test/public/big-body", nil, body, http.StatusRequestEntityTooLarge)
		})
		t.Run(proto+"/body_streamed_413", func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, "https://api.example.test/public/big-stream", io.NopCloser(strings.NewReader(body)))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = -1
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("a streamed body over the limit: %v, want 413", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("a streamed body over the limit: got %d, want 413", resp.StatusCode)
			}
		})
		t.Run(proto+"/route_limit_allows", func(t *testing.T) {
			s := gwWant(t, c, http.MethodPost, "https://big.example.test/public/route-limit", nil, body, http.StatusOK).seen(t)
			if s.Body != body {
				t.Errorf("the app got %d bytes, want %d", len(s.Body), len(body))
			}
		})
		t.Run(proto+"/within_limits_200", func(t *testing.T) {
			gwWant(t, c, http.MethodPost, "https://api.example.test/public/small", nil, "small", http.StatusOK)
		})
	}
	t.Run("connections_per_ip", func(t *testing.T) {
		greedy := net.IPv4(127, 0, 0, 7)
		var conns []*tls.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 8 {
			conns = append(conns, f.dialTLS(t, greedy, "h2"))
		}
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: greedy}}
		cfg := &tls.Config{ServerName: "api.example.test", RootCAs: f.cert.pool, NextProtos: []string{"h2"}}
		if c, err := tls.DialWithDialer(d, "tcp", f.addr, cfg); err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || gwIsTimeout(err) {
				t.Errorf("a 9th connection from one address with maxConnectionsPerIP 8: open (%v), want it closed at once", err)
			}
			c.Close()
		}
		gwWant(t, f.client("h2", net.IPv4(127, 0, 0, 8)), http.MethodGet, "https://api.example.test/public/other-ip", nil, "", http.StatusOK)
		for _, c := range conns {
			c.Close()
		}
		conns = nil
		eventually(t, 10*time.Second, "a connection from the address once its others closed", func() error {
			r, err := gwDo(f.client("h2", greedy), http.MethodGet, "https://api.example.test/public/greedy-again", nil, "")
			if err != nil {
				return err
			}
			if r.status != http.StatusOK {
				return fmt.Errorf("got %d", r.status)
			}
			return nil
		})
	})
	for _, r := range f.api.requests() {
		for _, marker := range []string{"many-headers", "huge-header", "long-url", "/public/big-body"} {
			if strings.Contains(r, marker) {
				t.Errorf("the app received %.80q, which the gateway must refuse", r)
			}
		}
		if strings.Contains(r, "big-stream") && !strings.Contains(r, "(body cut)") {
			t.Errorf("the app received a whole streamed body over the limit: %.80q", r)
		}
	}
}

// TestGatewayNoPolicyDenies: a gateway that no AuthorizationPolicy selects
// answers 403 to every request of a valid route, which never reaches the
// app; a policy selecting it then lets the same request through. A route
// to a service whose policies do not allow the gateway gets 403, one to a
// service that does not exist 503; every error body is opaque (no
// identity, policy or service name) and no answer carries X-Bulwark-*
// headers.
func TestGatewayNoPolicyDenies(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	locked := gwStartApp(t, "locked", nil)
	m.startProxy("default/locked", locked.addr)
	f := gwSetupRoutesOn(t, m, "", false, allowAll("locked", "default/api")+"---\n", `  - name: locked
    hosts: [locked.example.test]
    service: default/locked
  - name: missing
    hosts: [missing.example.test]
    service: default/missing
`)
	gwWaitStatus(t, f.client("h2", nil), "https://api.example.test/public/denied-h2", nil, http.StatusForbidden)
	gwWant(t, f.client("h1", nil), http.MethodGet, "https://api.example.test/public/denied-h1", nil, "", http.StatusForbidden)
	if f.api.received("/public/denied") {
		t.Errorf("the app received a request no policy allowed")
	}
	f.m.apply(gwEdgePolicy)
	c := f.client("h2", nil)
	gwWaitStatus(t, c, "https://api.example.test/public/allowed", nil, http.StatusOK)

	for _, tc := range []struct {
		url  string
		want int
	}{
		{"https://locked.example.test/public/x", http.StatusForbidden},
		{"https://missing.example.test/public/x", http.StatusServiceUnavailable},
		{"https://nope.example.test/public/x", http.StatusNotFound},
		{"https://api.example.test/public/ok", http.StatusOK},
	} {
		r := gwWant(t, c, http.MethodGet, tc.url, nil, "", tc.want)
		for k, v := range r.header {
			if strings.HasPrefix(strings.ToLower(k), "x-bulwark-") || strings.EqualFold(k, "Server") {
				t.Errorf("%s: the answer carries %s: %q", tc.url, k, v)
			}
		}
		if tc.want == http.StatusOK {
			continue
		}
		for _, leak := range []string{"spiffe", "bulwark.local", "default/", "policy", "sa/edge", "127.0.0.1"} {
			if strings.Contains(strings.ToLower(r.body), leak) {
				t.Errorf("%s: the %d body %q names %q", tc.url, tc.want, r.body, leak)
			}
		}
	}
	if len(locked.requests()) != 0 {
		t.Errorf("locked's app received %q, which its policies do not allow", locked.requests())
	}
}

// TestGatewayRequestHygiene: request smuggling over HTTP/1.1 (CL+TE,
// duplicate or listed Content-Length, obfuscated Transfer-Encoding, ...)
// gets one 400 and the connection closed, and neither the request nor what
// it smuggles reaches the app; Host written with upper case, a port or a
// trailing dot still takes its route, a missing or duplicated Host is 400,
// and an absolute-form target naming another host does not ride the Host
// header's route.
func TestGatewayRequestHygiene(t *testing.T) {
	t.Parallel()
	f := gwSetup(t, "", true)
	const (
		h        = "POST /public/attack HTTP/1.1\r\nHost: api.example.test\r\n"
		smuggled = "GET /public/smuggled HTTP/1.1\r\nHost: api.example.test\r\n\r\n"
	)
	// Unsupported transfer codings may be 501 (RFC 9112 6.1) rather than
	// 400; every attack gets one answer and the connection closed.
	attacks := []struct {
		name, raw string
		want      []string
	}{
		{"cl_te", h + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, nil},
		{"te_cl", h + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n39\r\n" + smuggled + "\r\n0\r\n\r\n", nil},
		{"duplicate_cl", h + "Content-Length: 4\r\nContent-Length: 57\r\n\r\n" + smuggled, nil},
		{"duplicate_equal_cl", h + "Content-Length: 57\r\nContent-Length: 57\r\n\r\n" + smuggled, nil},
		{"cl_list", h + "Content-Length: 57, 57\r\n\r\n" + smuggled, nil},
		{"cl_signed", h + "Content-Length: +57\r\n\r\n" + smuggled, nil},
		{"te_xchunked", h + "Transfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled, []string{"400 ", "501 "}},
		{"te_space_before_colon", h + "Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled, nil},
		{"te_chunked_identity", h + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled, []string{"400 ", "501 "}},
		{"te_obs_fold", h + "Content-Length: 4\r\nX-Pad: x\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, nil},
		{"nul_in_value", "GET /public/attack HTTP/1.1\r\nHost: api.example.test\r\nX-A: a\x00b\r\n\r\n" + smuggled, nil},
		{"chunk_size_not_hex", h + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + smuggled, nil},
		{"missing_host", "GET /public/attack HTTP/1.1\r\n\r\n" + smuggled, nil},
		{"duplicate_host", "GET /public/attack HTTP/1.1\r\nHost: api.example.test\r\nHost: big.example.test\r\n\r\n" + smuggled, nil},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			want := a.want
			if want == nil {
				want = []string{"400 "}
			}
			got := f.rawHTTP1(t, a.raw)
			if len(got) != 1 || !slices.ContainsFunc(want, func(p string) bool { return strings.HasPrefix(got[0], p) }) {
				t.Errorf("got %q, want one answer %q and the connection closed", got, want)
			}
		})
	}
	t.Run("pipelined_requests_served", func(t *testing.T) {
		got := f.rawHTTP1(t, "POST /public/p1 HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 5\r\n\r\nhello"+
			"GET /public/p2 HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
		if len(got) != 2 || !strings.HasPrefix(got[0], "200 ") || !strings.HasPrefix(got[1], "200 ") {
			t.Errorf("got %q, want two 200s", got)
		}
	})

	for _, tc := range []struct{ name, host string }{
		{"upper_case", "API.Example.TEST"},
		{"port", "api.example.test:443"},
		{"other_port", "api.example.test:8443"},
		{"trailing_dot", "api.example.test."},
	} {
		t.Run("host_"+tc.name, func(t *testing.T) {
			got := f.rawHTTP1(t, "GET /public/host-"+tc.name+" HTTP/1.1\r\nHost: "+tc.host+"\r\nConnection: close\r\n\r\n")
			if len(got) != 1 || !strings.HasPrefix(got[0], "200 ") || !strings.Contains(got[0], `"app":"api"`) {
				t.Errorf("Host %q: got %q, want 200 from api", tc.host, got)
			}
		})
	}
	t.Run("h2_authority_upper_case_and_port", func(t *testing.T) {
		r := gwWant(t, f.client("h2", nil), http.MethodGet, "https://api.example.test/public/h2-host", map[string]string{"Host": "API.example.test:443"}, "", http.StatusOK)
		if s := r.seen(t); s.App != "api" {
			t.Errorf("got app %q, want api", s.App)
		}
	})
	t.Run("absolute_form_other_host", func(t *testing.T) {
		got := f.rawHTTP1(t, "GET https://nope.example.test/public/absolute HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
		if len(got) != 1 || !(strings.HasPrefix(got[0], "400 ") || strings.HasPrefix(got[0], "404 ") || strings.HasPrefix(got[0], "421 ")) {
			t.Errorf("got %q, want 400, 404 or 421: the target names a host no route takes", got)
		}
		if f.api.received("/public/absolute") {
			t.Errorf("the app received an absolute-form request for another host")
		}
	})
	t.Run("absolute_form_same_host", func(t *testing.T) {
		got := f.rawHTTP1(t, "GET https://api.example.test/public/absolute-same HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
		if len(got) != 1 || !(strings.HasPrefix(got[0], "200 ") || strings.HasPrefix(got[0], "400 ")) {
			t.Errorf("got %q, want 200 or 400", got)
		}
	})

	for _, r := range f.api.requests() {
		if strings.Contains(r, "/public/smuggled") || strings.Contains(r, "/public/attack") && !strings.Contains(r, "(body cut)") {
			t.Errorf("the app received %q from an attack", r)
		}
	}
	if gwExited(f.gw.proc) {
		t.Errorf("the gateway exited: %v", f.gw.proc.err)
	}
}

// h2Exchange sends one request with the header list hfs (and body, if
// any) on a new HTTP/2 connection to the gateway and returns how it ended:
// "status NNN", "RST_STREAM CODE", "GOAWAY CODE" or "closed: ...".
func (f *gwFixture) h2Exchange(t *testing.T, hfs []hpack.HeaderField, body string) string {
	t.Helper()
	conn := f.dialTLS(t, nil, "h2")
	defer conn.Close()
	fr := gwH2Start(t, conn)
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, hf := range hfs {
		_ = enc.WriteField(hf)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: buf.Bytes(), EndHeaders: true, EndStream: body == ""}); err != nil {
		return "closed: " + err.Error()
	}
	if body != "" {
		if err := fr.WriteData(1, true, []byte(body)); err != nil {
			return "closed: " + err.Error()
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := hpack.NewDecoder(4096, nil)
	for {
		fm, err := fr.ReadFrame()
		if err != nil {
			if gwIsTimeout(err) {
				t.Fatalf("no answer, reset or close within 10s")
			}
			return "closed: " + err.Error()
		}
		switch fm := fm.(type) {
		case *http2.HeadersFrame:
			if fm.StreamID != 1 {
				continue
			}
			fields, err := dec.DecodeFull(fm.HeaderBlockFragment())
			if err != nil {
				return "bad answer: " + err.Error()
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					return "status " + hf.Value
				}
			}
		case *http2.RSTStreamFrame:
			if fm.StreamID == 1 {
				return "RST_STREAM " + fm.ErrCode.String()
			}
		case *http2.GoAwayFrame:
			return "GOAWAY " + fm.ErrCode.String()
		}
	}
}

// TestGatewayNotAnOpenProxy: the gateway forwards only what its routes
// take: CONNECT (HTTP/1.1 and HTTP/2), absolute-form and Host values naming
// mesh services or the app's own address, an HTTP/2 :authority no route
// takes with a Host that one does, and malformed HTTP/2 requests (header
// values with CR LF, connection-specific fields, a body longer than its
// content-length, an HPACK bomb) never reach an app or open a tunnel.
func TestGatewayNotAnOpenProxy(t *testing.T) {
	t.Parallel()
	f := gwSetup(t, "", true)
	isRefused := func(got []string) bool {
		return len(got) == 1 && (strings.HasPrefix(got[0], "4") || strings.HasPrefix(got[0], "5"))
	}
	// A refused CONNECT may leave the connection open (it stays HTTP):
	// the first answer must be a refusal, and what follows is read as
	// HTTP, never tunneled.
	for _, tc := range []struct{ name, target string }{
		{"connect_service", "api.default:80"},
		{"connect_app_address", f.api.addr},
		{"connect_route_host", "api.example.test:443"},
	} {
		t.Run("h1/"+tc.name, func(t *testing.T) {
			conn := f.dialTLS(t, nil, "http/1.1")
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, "CONNECT "+tc.target+" HTTP/1.1\r\nHost: "+tc.target+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatalf("CONNECT %s: %v, want a refusal", tc.target, err)
			}
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Fatalf("CONNECT %s: got %d, want a refusal", tc.target, resp.StatusCode)
			}
			if _, err := io.WriteString(conn, "GET /public/after-connect HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n"); err != nil {
				return // closed after the refusal
			}
			if resp, err := http.ReadResponse(br, nil); err == nil {
				resp.Body.Close()
			}
		})
	}
	for _, tc := range []struct{ name, raw string }{
		{"absolute_form_service", "GET http://api.default/public/open-proxy HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"},
		{"host_service", "GET /public/open-proxy HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"},
		{"host_app_address", "GET /public/open-proxy HTTP/1.1\r\nHost: " + f.api.addr + "\r\nConnection: close\r\n\r\n"},
		{"host_spiffe", "GET /public/open-proxy HTTP/1.1\r\nHost: api.default.svc\r\nConnection: close\r\n\r\n"},
	} {
		t.Run("h1/"+tc.name, func(t *testing.T) {
			if got := f.rawHTTP1(t, tc.raw); !isRefused(got) {
				t.Errorf("got %q, want one refusal (4xx or 5xx) and the connection closed", got)
			}
		})
	}
	h2Base := func(method, authority, path string) []hpack.HeaderField {
		return []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: authority}, {Name: ":path", Value: path}}
	}
	for _, tc := range []struct {
		name string
		hfs  []hpack.HeaderField
		body string
	}{
		{"connect_service", []hpack.HeaderField{{Name: ":method", Value: "CONNECT"}, {Name: ":authority", Value: "api.default:80"}}, ""},
		{"connect_app_address", []hpack.HeaderField{{Name: ":method", Value: "CONNECT"}, {Name: ":authority", Value: f.api.addr}}, ""},
		{"authority_service", h2Base("GET", "api.default", "/public/open-proxy"), ""},
		{"authority_unrouted_host_routed", append(h2Base("GET", "nope.example.test", "/public/open-proxy"), hpack.HeaderField{Name: "host", Value: "api.example.test"}), ""},
		{"crlf_in_value", append(h2Base("GET", "api.example.test", "/public/open-proxy"), hpack.HeaderField{Name: "x-a", Value: "a\r\nx-bulwark-identity: spiffe://bulwark.local/ns/default/sa/admin"}), ""},
		{"transfer_encoding", append(h2Base("POST", "api.example.test", "/public/open-proxy"), hpack.HeaderField{Name: "transfer-encoding", Value: "chunked"}), "0\r\n\r\n"},
		{"connection_header", append(h2Base("GET", "api.example.test", "/public/open-proxy"), hpack.HeaderField{Name: "connection", Value: "keep-alive"}), ""},
		{"upper_case_name", append(h2Base("GET", "api.example.test", "/public/open-proxy"), hpack.HeaderField{Name: "X-Upper", Value: "1"}), ""},
		{"body_over_content_length", append(h2Base("POST", "api.example.test", "/public/open-proxy"), hpack.HeaderField{Name: "content-length", Value: "2"}), "more than two bytes"},
		{"path_not_absolute", h2Base("GET", "api.example.test", "public/open-proxy"), ""},
		// An HPACK bomb: one 4000-byte field in the dynamic table, then
		// referenced a thousand times (one byte each): 4 MB decoded from
		// 5 KB sent.
		{"hpack_bomb", append(h2Base("GET", "api.example.test", "/public/open-proxy"),
			slices.Repeat([]hpack.HeaderField{{Name: "x-bomb", Value: strings.Repeat("b", 4000)}}, 1000)...), ""},
	} {
		t.Run("h2/"+tc.name, func(t *testing.T) {
			got := f.h2Exchange(t, tc.hfs, tc.body)
			if strings.HasPrefix(got, "status 2") || strings.HasPrefix(got, "status 3") {
				t.Errorf("got %s, want a refusal (4xx or 5xx, RST_STREAM, GOAWAY)", got)
			}
		})
	}
	if got := f.api.requests(); slices.ContainsFunc(got, func(r string) bool { return strings.Contains(r, "open-proxy") || strings.HasPrefix(r, "CONNECT") }) {
		t.Errorf("the app received %q", got)
	}
	// The same connection setup with a valid request is served: the
	// refusals are about the requests.
	if got := f.h2Exchange(t, h2Base("GET", "api.example.test", "/public/fine"), ""); got != "status 200" {
		t.Errorf("a valid raw HTTP/2 request: got %s, want status 200", got)
	}

	t.Run("metrics_bounded", func(t *testing.T) {
		// Hosts, paths and methods chosen by clients are not labels: a
		// client cannot make the gateway's metrics grow.
		c := f.client("h2", nil)
		for i := range 100 {
			marker := fmt.Sprintf("zq%dx", i)
			for _, u := range []string{"https://" + marker + ".example.test/public/x", "https://api.example.test/public/" + marker} {
				if _, err := gwDo(c, http.MethodGet, u, nil, ""); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := gwDo(c, "M"+strings.ToUpper(marker), "https://api.example.test/public/m", nil, ""); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.Get("http://" + f.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "bulwark_") {
			t.Fatalf("gateway /metrics: %d %.200q, want its metrics", resp.StatusCode, b)
		}
		if strings.Contains(strings.ToLower(string(b)), "zq") {
			i := strings.Index(strings.ToLower(string(b)), "zq")
			t.Errorf("the metrics carry values clients chose: ...%s...", b[max(0, i-120):min(len(b), i+40)])
		}
	})
}
