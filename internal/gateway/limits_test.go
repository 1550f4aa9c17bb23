package gateway_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
)

// limitedGateway serves an HTTPS and a plain HTTP listener (routes, no
// redirect) with limits.
func limitedGateway(t *testing.T, limits *config.GatewayLimits) (*fixture, map[string]string) {
	t.Helper()
	f := startServer(t, nil, "https", "http")
	g := gw(httpsListener("https", 443, secretCert("a")),
		config.GatewayListener{Name: "http", Port: 80, Protocol: config.ListenerHTTP, RedirectToHTTPS: ptr(false)})
	g.Spec.Limits = limits
	addrs := f.apply(t, g, map[string]*apiv1.TLSSecret{"a": secretOf("a", newPair(t, "a.example.com"))})
	return f, addrs
}

// legitClient GETs url in a loop until stop is closed and counts the
// answers that are 200 and those that are not.
type legitClient struct {
	ok, bad atomic.Int64
	lastErr atomic.Value
	done    chan struct{}
}

func startLegit(t *testing.T, c *http.Client, url string, stop <-chan struct{}) *legitClient {
	t.Helper()
	l := &legitClient{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			code, _, err := get(c, url)
			if err != nil || code != http.StatusOK {
				l.bad.Add(1)
				if err != nil {
					l.lastErr.Store(err.Error())
				}
				continue
			}
			l.ok.Add(1)
		}
	}()
	return l
}

// check stops waiting for l and reports its failures; it wants at least
// one 200.
func (l *legitClient) check(t *testing.T) {
	t.Helper()
	<-l.done
	if l.bad.Load() != 0 || l.ok.Load() == 0 {
		t.Errorf("legitimate client: got %d ok and %d failed (last error %v), want only 200s", l.ok.Load(), l.bad.Load(), l.lastErr.Load())
	}
}

func TestSlowloris(t *testing.T) {
	_, addrs := limitedGateway(t, &config.GatewayLimits{RequestHeaderTimeout: "2s"})
	for _, tc := range []struct {
		name string
		dial func(t *testing.T) net.Conn
	}{
		{"http1_plain", func(t *testing.T) net.Conn {
			c, err := net.DialTimeout("tcp", addrs["http"], hangGuard)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"http1_over_tls", func(t *testing.T) net.Conn {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addrs["https"], &tls.Config{
				InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, //nolint:gosec // self-signed
			})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop := make(chan struct{})
			legit := startLegit(t, client(true), "https://"+addrs["https"]+"/", stop)
			c := tc.dial(t)
			defer c.Close()
			// One header byte per second (the read that waits for the
			// close is the pause); the server must close the connection
			// long before 30 bytes.
			const maxBytes = 30
			head := []byte("GET / HTTP/1.1\r\nHost: a.example.com\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
			closed := false
			for i := 0; i < maxBytes && !closed; i++ {
				if _, err := c.Write(head[i : i+1]); err != nil {
					closed = true
					break
				}
				closed = waitClosed(c, time.Second, 1)
			}
			close(stop)
			if !closed {
				t.Errorf("the connection accepted %d header bytes at one per second without being closed", maxBytes)
			}
			legit.check(t)
		})
	}
	t.Run("silent_tls_handshake", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", addrs["https"], hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !waitClosed(c, time.Second, 30) {
			t.Error("a client that never starts its TLS handshake kept its connection for 30s")
		}
	})
}

func TestBodyTimeout(t *testing.T) {
	_, addrs := limitedGateway(t, &config.GatewayLimits{RequestBodyTimeout: "1s"})
	c, err := net.DialTimeout("tcp", addrs["http"], hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nx"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a body that stops coming: got %v, want an answer", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("status: got %d, want the edge's 408 (its body read failed)", resp.StatusCode)
	}
}

func TestBodyDeadlineLiftedAfterBody(t *testing.T) {
	// A request whose body is complete is not cut by the body deadline
	// while it waits for its answer (here: a second request on the same
	// connection after longer than the deadline would be refused if the
	// deadline stuck).
	_, addrs := limitedGateway(t, &config.GatewayLimits{RequestBodyTimeout: "1s"})
	c := client(false)
	defer c.CloseIdleConnections()
	for i := range 2 {
		resp, err := c.Post("http://"+addrs["http"]+"/", "text/plain", bytes.NewReader([]byte("hello")))
		if err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "http false HTTP/1.1 5 false" {
			t.Errorf("POST %d: got %q", i, b)
		}
	}
}

func TestConnectionsPerIP(t *testing.T) {
	f, addrs := limitedGateway(t, &config.GatewayLimits{MaxConnectionsPerIP: 2})
	// Two connections, each proven accepted by an answer.
	var open []net.Conn
	for range 2 {
		c, err := net.DialTimeout("tcp", addrs["http"], hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(hangGuard))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		drain(resp)
		open = append(open, c)
	}
	// The third is closed at once, on any listener.
	for _, l := range []string{"http", "https"} {
		c, err := net.DialTimeout("tcp", addrs[l], hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		if !waitClosed(c, hangGuard, 1) {
			t.Errorf("%s: the connection over the limit stayed open", l)
		}
		c.Close()
	}
	if got := f.closedCount("http", "per_ip_limit") + f.closedCount("https", "per_ip_limit"); got != 2 {
		t.Errorf("per_ip_limit closes: got %v, want 2", got)
	}
	// Once one closes, a new one is served.
	open[0].Close()
	deadline := time.Now().Add(hangGuard)
	for {
		code, _, err := get(client(false), "http://"+addrs["http"]+"/")
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection accepted after one closed: %d %v", code, err)
		}
	}
}

// h2Attacker is an HTTP/2 client made of raw frames.
type h2Attacker struct {
	conn   *tls.Conn
	fr     *http2.Framer
	block  []byte
	closed chan struct{} // closed when reading ends (GOAWAY, EOF, reset)
	goAway atomic.Bool
	// pingAck receives the server's PING acknowledgements.
	pingAck chan struct{}
	// settings receives the server's first SETTINGS frame.
	settings chan map[http2.SettingID]uint32
}

func dialH2(t *testing.T, addr string) *h2Attacker {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addr, &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{"h2"}, ServerName: "a.example.com", //nolint:gosec // self-signed
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN: got %q, want h2", p)
	}
	_ = c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	a := &h2Attacker{conn: c, fr: http2.NewFramer(c, c), closed: make(chan struct{}), pingAck: make(chan struct{}, 1),
		settings: make(chan map[http2.SettingID]uint32, 1)}
	if err := a.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":path", Value: "/"}, {Name: ":authority", Value: "a.example.com"},
	} {
		_ = enc.WriteField(f)
	}
	a.block = buf.Bytes()
	// Read (and drop) what the server sends, so that it never blocks on
	// writing, until the connection ends.
	rd := http2.NewFramer(io.Discard, c)
	go func() {
		defer close(a.closed)
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					m := map[http2.SettingID]uint32{}
					_ = f.ForeachSetting(func(s http2.Setting) error {
						m[s.ID] = s.Val
						return nil
					})
					select {
					case a.settings <- m:
					default:
					}
				}
			case *http2.GoAwayFrame:
				a.goAway.Store(true)
			case *http2.PingFrame:
				if f.IsAck() {
					select {
					case a.pingAck <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return a
}

// wait reports whether the server ended the connection (bounded).
func (a *h2Attacker) wait() bool {
	select {
	case <-a.closed:
		return true
	case <-time.After(hangGuard):
		return false
	}
}

func TestHTTP2RapidReset(t *testing.T) {
	f, addrs := limitedGateway(t, nil)
	stop := make(chan struct{})
	legit := startLegit(t, client(true), "https://"+addrs["https"]+"/", stop)
	a := dialH2(t, addrs["https"])
	const attempts = 20_000
	sent := 0
	for ; sent < attempts; sent++ {
		id := uint32(2*sent + 1)
		if err := a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.block, EndStream: true, EndHeaders: true}); err != nil {
			break
		}
		if err := a.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
	}
	if !a.wait() {
		t.Fatalf("the connection survived %d opened and reset streams", sent)
	}
	close(stop)
	legit.check(t)
	if got := f.closedCount("https", "rapid_reset"); got != 1 {
		t.Errorf("rapid_reset closes: got %v, want 1", got)
	}
	t.Logf("closed after %d of %d stream resets sent (GOAWAY %v)", sent, attempts, a.goAway.Load())
}

func TestHTTP2ContinuationFlood(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frag   []byte
		reason string
	}{
		// Empty frames add nothing to the header list: only the guard
		// stops them.
		{"empty_frames", nil, "continuation_flood"},
		// Frames of whole header fields outgrow the header limit.
		{"growing_block", hpackField("x-flood", string(bytes.Repeat([]byte("a"), 1000))), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, addrs := limitedGateway(t, nil)
			stop := make(chan struct{})
			legit := startLegit(t, client(true), "https://"+addrs["https"]+"/", stop)
			a := dialH2(t, addrs["https"])
			if err := a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block, EndStream: true}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 10_000; i++ {
				if err := a.fr.WriteContinuation(1, false, tc.frag); err != nil {
					break
				}
			}
			if !a.wait() {
				t.Fatal("the connection survived 10000 CONTINUATION frames")
			}
			close(stop)
			legit.check(t)
			if tc.reason != "" {
				if got := f.closedCount("https", tc.reason); got != 1 {
					t.Errorf("%s closes: got %v, want 1", tc.reason, got)
				}
			}
		})
	}
}

func hpackField(name, value string) []byte {
	var buf bytes.Buffer
	_ = hpack.NewEncoder(&buf).WriteField(hpack.HeaderField{Name: name, Value: value})
	return buf.Bytes()
}

func TestHTTP2LegitimateResetsKept(t *testing.T) {
	// A client that cancels a few of its requests keeps its connection.
	_, addrs := limitedGateway(t, nil)
	a := dialH2(t, addrs["https"])
	for i := range 300 {
		id := uint32(2*i + 1)
		if err := a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.block, EndStream: true, EndHeaders: true}); err != nil {
			t.Fatalf("stream %d: %v", id, err)
		}
		if i%10 == 0 {
			if err := a.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				t.Fatalf("reset %d: %v", id, err)
			}
		}
	}
	// The server reads frames in order: the answer to a PING sent after
	// them proves it went through them all without closing.
	if err := a.fr.WritePing(false, [8]byte{1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.pingAck:
	case <-a.closed:
		t.Error("the connection was closed")
	case <-time.After(hangGuard):
		t.Error("no PING answer")
	}
}

// nowWatch is a fake clock that tells when Now is read.
type nowWatch struct {
	*clock.Fake
	read chan struct{}
}

func (w *nowWatch) Now() time.Time {
	select {
	case w.read <- struct{}{}:
	default:
	}
	return w.Fake.Now()
}

func TestHTTP2HeaderBlockTimeout(t *testing.T) {
	// On the server's fake clock, a header block whose next frame comes
	// after requestHeaderTimeout closes the connection.
	clk := &nowWatch{Fake: clock.NewFake(time.Now()), read: make(chan struct{}, 16)}
	f := startServer(t, clk, "https")
	g := gw(httpsListener("https", 443, secretCert("a")))
	g.Spec.Limits = &config.GatewayLimits{RequestHeaderTimeout: "2s"}
	addrs := f.apply(t, g, map[string]*apiv1.TLSSecret{"a": secretOf("a", newPair(t, "a.example.com"))})
	a := dialH2(t, addrs["https"])
	// Drop the reads made so far; the guard reads the time when the
	// header block starts.
	for len(clk.read) > 0 {
		<-clk.read
	}
	// The guard arms the block's timer once it has read the HEADERS frame:
	// only then may the clock move (a read of the time made for an
	// earlier frame would let it move too early).
	armed := clk.TimerCreated()
	if err := a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block[:1], EndStream: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-armed:
	case <-time.After(hangGuard):
		t.Fatal("the header block was never read")
	}
	clk.Advance(3 * time.Second)
	if err := a.fr.WriteContinuation(1, false, nil); err != nil {
		t.Fatal(err)
	}
	if !a.wait() {
		t.Fatal("the connection survived a late header block")
	}
	if got := f.closedCount("https", "header_timeout"); got != 1 {
		t.Errorf("header_timeout closes: got %v, want 1", got)
	}
}

func TestHTTP2SilentHeaderBlock(t *testing.T) {
	// A header block left unfinished, with nothing more sent, is closed
	// when requestHeaderTimeout runs out on the server's fake clock.
	clk := &nowWatch{Fake: clock.NewFake(time.Now()), read: make(chan struct{}, 16)}
	f := startServer(t, clk, "https")
	g := gw(httpsListener("https", 443, secretCert("a")))
	g.Spec.Limits = &config.GatewayLimits{RequestHeaderTimeout: "2s"}
	addrs := f.apply(t, g, map[string]*apiv1.TLSSecret{"a": secretOf("a", newPair(t, "a.example.com"))})
	a := dialH2(t, addrs["https"])
	for len(clk.read) > 0 {
		<-clk.read
	}
	if err := a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block[:1], EndStream: true}); err != nil {
		t.Fatal(err)
	}
	// The guard reads the time when the block starts, arms its timer,
	// and reads the time again at the end of the read.
	for range 2 {
		select {
		case <-clk.read:
		case <-time.After(hangGuard):
			t.Fatal("the header block was never read")
		}
	}
	clk.Advance(3 * time.Second)
	if !a.wait() {
		t.Fatal("the connection survived an unfinished header block")
	}
	if got := f.closedCount("https", "header_timeout"); got != 1 {
		t.Errorf("header_timeout closes: got %v, want 1", got)
	}
}

func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"ipv4", "192.0.2.7", "192.0.2.7"},
		{"ipv4_mapped", "::ffff:192.0.2.7", "192.0.2.7"},
		{"ipv6_host_bits_dropped", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
		{"ipv6_zone_dropped", "fe80::1%eth0", "fe80::"},
		{"loopback6", "::1", "::"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gateway.ClientKey(netip.MustParseAddr(tc.in)).String(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestHTTP2Settings(t *testing.T) {
	_, addrs := limitedGateway(t, &config.GatewayLimits{MaxConcurrentStreams: 7, MaxRequestHeaderBytes: 8192})
	a := dialH2(t, addrs["https"])
	var got map[http2.SettingID]uint32
	select {
	case got = <-a.settings:
	case <-time.After(hangGuard):
		t.Fatal("no SETTINGS from the server")
	}
	for id, want := range map[http2.SettingID]uint32{
		http2.SettingMaxConcurrentStreams: 7,
		http2.SettingMaxFrameSize:         16 << 10,
	} {
		if got[id] != want {
			t.Errorf("%v: got %d, want %d", id, got[id], want)
		}
	}
	if v := got[http2.SettingMaxHeaderListSize]; v < 8192 || v > 8192+8192 {
		t.Errorf("%v: got %d, want about 8192", http2.SettingMaxHeaderListSize, v)
	}
}
