package gateway

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// limits are a Gateway's GatewayLimits, parsed, with the defaults filled
// in.
type limits struct {
	maxHeaderBytes       int
	headerTimeout        time.Duration
	bodyTimeout          time.Duration
	idleTimeout          time.Duration
	writeTimeout         time.Duration
	maxConcurrentStreams int
	maxConnsPerIP        int
}

// parseLimits reads l (nil: every default). Zero fields take their
// defaults; a duration that does not parse is an error naming its field
// (config validation refuses it first: this is a second line).
func parseLimits(l *config.GatewayLimits) (limits, error) {
	var in config.GatewayLimits
	if l != nil {
		in = *l
	}
	out := limits{
		maxHeaderBytes:       orDefault(in.MaxRequestHeaderBytes, config.DefaultGatewayMaxHeaderBytes),
		maxConcurrentStreams: orDefault(in.MaxConcurrentStreams, config.DefaultGatewayMaxStreams),
		maxConnsPerIP:        orDefault(in.MaxConnectionsPerIP, config.DefaultGatewayMaxConnectionsPerIP),
	}
	for _, d := range []struct {
		field, value, def string
		to                *time.Duration
	}{
		{"requestHeaderTimeout", in.RequestHeaderTimeout, config.DefaultGatewayHeaderTimeout, &out.headerTimeout},
		{"requestBodyTimeout", in.RequestBodyTimeout, config.DefaultGatewayBodyTimeout, &out.bodyTimeout},
		{"idleTimeout", in.IdleTimeout, config.DefaultGatewayIdleTimeout, &out.idleTimeout},
		{"responseWriteTimeout", in.ResponseWriteTimeout, config.DefaultGatewayWriteTimeout, &out.writeTimeout},
	} {
		v := d.value
		if v == "" {
			v = d.def
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur <= 0 {
			return limits{}, fmt.Errorf("spec.limits.%s: %q is not a positive duration", d.field, v)
		}
		*d.to = dur
	}
	if out.maxHeaderBytes < 0 || out.maxConcurrentStreams < 0 || out.maxConnsPerIP < 0 {
		return limits{}, errors.New("spec.limits: negative limit")
	}
	return out, nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// HTTP/2 settings of the edge's servers beyond GatewayLimits.
const (
	// h2MaxReadFrameSize is the largest frame a client may send: the
	// protocol's minimum, so one connection cannot make the server
	// allocate large frame buffers.
	h2MaxReadFrameSize = 16 << 10
	// h2MaxDecoderHeaderTableSize is the HPACK table a client may use
	// (the protocol's default).
	h2MaxDecoderHeaderTableSize = 4 << 10
)

// http2Config is the HTTP/2 configuration of an edge server.
func (l limits) http2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:      l.maxConcurrentStreams,
		MaxReadFrameSize:          h2MaxReadFrameSize,
		MaxDecoderHeaderTableSize: h2MaxDecoderHeaderTableSize,
		MaxEncoderHeaderTableSize: h2MaxDecoderHeaderTableSize,
		// A client that stops reading the connection (or keeps its window
		// at zero while the server has frames to send) loses it.
		WriteByteTimeout: l.writeTimeout,
	}
}

// withBodyDeadline bounds the reading of each request's body (slow
// uploads): a request with a body gets a read deadline of now+timeout
// before next sees it, lifted once the body was read to its end (so that a
// long answer streamed after it is not cut; HTTP/1.1 keeps reading the
// connection in the background then). net/http applies it to the
// connection for HTTP/1.1 and to the stream for HTTP/2.
//
// It also bounds each write of the answer to writeTimeout (slow readers,
// a zero HTTP/2 window): the write deadline is moved before every write
// and flush, so an answer streamed for a long time lives as long as the
// client keeps reading. A connection taken over for a tunnel (WebSocket)
// is handed on without deadlines: the tunnel manages its own.
func withBodyDeadline(next http.Handler, timeout, writeTimeout time.Duration, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if writeTimeout > 0 {
			w = &deadlineWriter{ResponseWriter: w, rc: rc, timeout: writeTimeout, now: now}
		}
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if err := rc.SetReadDeadline(now().Add(timeout)); err == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineWriter moves the write deadline before each write of an answer.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	now     func() time.Time
}

func (d *deadlineWriter) extend() { _ = d.rc.SetWriteDeadline(d.now().Add(d.timeout)) }

func (d *deadlineWriter) WriteHeader(code int) {
	d.extend()
	d.ResponseWriter.WriteHeader(code)
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	d.extend()
	return d.ResponseWriter.Write(b)
}

// FlushError flushes under a fresh deadline (http.ResponseController
// calls it).
func (d *deadlineWriter) FlushError() error {
	d.extend()
	return d.rc.Flush()
}

// Hijack hands the connection on with no deadline left on it.
func (d *deadlineWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := d.rc.Hijack()
	if err == nil {
		_ = c.SetDeadline(time.Time{})
	}
	return c, brw, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// deadlineBody lifts the read deadline once the body is read to its end.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.lifted {
		b.lifted = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// ipLimiter counts the open connections of each client (clientKey). Its
// memory is bounded by the open connections: a client's entry goes with its
// last connection.
type ipLimiter struct {
	max int

	mu    sync.Mutex
	conns map[netip.Addr]int
}

func newIPLimiter(max int) *ipLimiter {
	return &ipLimiter{max: max, conns: map[netip.Addr]int{}}
}

// setMax changes the limit for the connections accepted from now on.
func (l *ipLimiter) setMax(max int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max = max
}

// acquire counts a new connection of addr; it reports false (counting
// nothing) when addr already holds the maximum.
func (l *ipLimiter) acquire(addr netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.conns[addr] >= l.max {
		return false
	}
	l.conns[addr]++
	return true
}

func (l *ipLimiter) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.conns[addr]; n <= 1 {
		delete(l.conns, addr)
	} else {
		l.conns[addr] = n - 1
	}
}

// clientAddr is the client a connection's connections are counted under
// (clientKey of its peer's address), or the zero Addr.
func clientAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return clientKey(ta.AddrPort().Addr())
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return clientKey(ap.Addr())
}

// clientKey is what one client's connections are counted under: its IPv4
// address (IPv4-mapped IPv6 addresses as IPv4), or the /64 prefix of its
// IPv6 address, as one host commonly holds a whole /64 and could otherwise
// open maxConnectionsPerIP connections from each of its addresses.
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return a
}

// limitedConn releases its address's count once, on the first Close.
type limitedConn struct {
	net.Conn
	release func()
	once    sync.Once
	// served is the certificate the TLS handshake of an HTTPS
	// connection presented (recordServed), nil before it; set by the
	// handshake's goroutine before the connection reaches a server.
	served *tls.Certificate
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Reasons a connection is closed by the gateway's guards, the reason label
// of bulwark_gateway_connections_closed_total.
const (
	reasonPerIPLimit        = "per_ip_limit"
	reasonRapidReset        = "rapid_reset"
	reasonContinuationFlood = "continuation_flood"
	reasonHeaderTimeout     = "header_timeout"
	reasonBadFraming        = "bad_framing"
)

// HTTP/2 frame types and flags the guard reads (RFC 9113 section 6).
const (
	h2FrameHeaders      = 0x1
	h2FrameRSTStream    = 0x3
	h2FrameContinuation = 0x9
	h2FlagEndHeaders    = 0x4
	h2FrameHeaderLen    = 9
	h2Preface           = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2PrefaceLen        = len(h2Preface)
)

// Thresholds of the HTTP/2 guard.
const (
	// resetMinimum is how many RST_STREAM frames a connection may send
	// before its reset ratio is judged (Envoy judges after 500 streams;
	// rapid reset opens thousands per second).
	resetMinimum = 100
	// maxContinuationFrames bounds the CONTINUATION frames of one header
	// block: clients fill frames (16 KiB each), so a legitimate block
	// needs a few; a flood sends endless small or empty ones.
	maxContinuationFrames = 32
)

// errGuardClosed is what a guarded connection's reads return once the guard
// closed it.
var errGuardClosed = errors.New("http2 guard: connection closed")

// h2Guard watches the frames an HTTP/2 client sends on one connection and
// closes it on abuse the net/http server lets through (and a connection
// that does not start with the HTTP/2 preface, which net/http would read
// as HTTP/1.1):
//
//   - rapid reset (CVE-2023-44487): net/http bounds the handlers a
//     connection runs at once, but a client that opens streams and resets
//     them at once may go on forever, each stream costing a handler. As in
//     Envoy ("premature resets"), a connection that has reset at least
//     resetMinimum streams, and at least half of those it opened, is
//     closed. Streams the server resets on a client's stream error
//     ("MadeYouReset", CVE-2025-8671: the guard also follows the frames
//     the server writes) count as the client's resets.
//   - CONTINUATION flood (CVE-2024-27316): net/http closes a connection
//     whose header block outgrows the header limit, but empty
//     CONTINUATION frames add nothing to it. A header block is refused
//     beyond maxContinuationFrames frames, beyond twice the header limit
//     (plus one frame) in bytes, or when it is not complete within the
//     request header timeout (a timer on the injected clock: one at most
//     per connection, as only one header block can be open).
//
// The guard reads only frame headers (9 bytes each), never payloads, and
// holds a fixed amount of state.
type h2Guard struct {
	net.Conn
	tc       *tls.Conn
	maxBlock int
	timeout  time.Duration
	clock    clock.Clock
	onClose  func(reason string)

	mu sync.Mutex
	// prefaceLeft bytes of the client preface are still to come.
	prefaceLeft int
	hdr         [h2FrameHeaderLen]byte
	hdrLen      int
	payloadLeft int
	lastStream  uint32
	streams     int
	resets      int
	// inBlock: a header block is open; blockFrames and blockBytes count
	// its CONTINUATION frames and its bytes, since blockStart.
	inBlock     bool
	blockFrames int
	blockBytes  int
	blockStart  time.Time
	// blockStop stops the timer of the open header block.
	blockStop chan struct{}
	closed    string

	// The frames the server writes, followed like the client's: outHdr
	// gathers a frame header, outPayloadLeft skips a payload, and outRST
	// gathers the error code of a RST_STREAM the server sends.
	outHdr         [h2FrameHeaderLen]byte
	outHdrLen      int
	outPayloadLeft int
	outRST         []byte
}

// newH2Guard guards tc, an HTTP/2 connection whose TLS handshake is done.
// onClose is called (once) before the guard closes the connection.
func newH2Guard(tc *tls.Conn, l limits, c clock.Clock, onClose func(string)) *h2Guard {
	return &h2Guard{
		Conn: tc, tc: tc, prefaceLeft: h2PrefaceLen,
		maxBlock: 2*max(l.maxHeaderBytes, 4096) + h2MaxReadFrameSize,
		timeout:  l.headerTimeout, clock: c, onClose: onClose,
	}
}

// Close closes the connection and stops the header block timer.
func (g *h2Guard) Close() error {
	g.mu.Lock()
	g.stopBlockTimer()
	g.mu.Unlock()
	return g.Conn.Close()
}

// closeFor closes the connection for reason unless the guard already
// did.
func (g *h2Guard) closeFor(reason string) {
	g.mu.Lock()
	if g.closed != "" {
		g.mu.Unlock()
		return
	}
	g.closed = reason
	g.stopBlockTimer()
	g.mu.Unlock()
	if g.onClose != nil {
		g.onClose(reason)
	}
	g.Conn.Close()
}

// startBlockTimer closes the connection if the header block just opened
// is not complete within the timeout: a client that stops sending in the
// middle of one holds the connection otherwise (it opens no stream, so
// only the idle timeout would end it). g.mu is held.
func (g *h2Guard) startBlockTimer() {
	g.stopBlockTimer()
	stop := make(chan struct{})
	g.blockStop = stop
	t := g.clock.NewTimer(g.timeout)
	go func() {
		select {
		case <-t.C():
			g.closeFor(reasonHeaderTimeout)
		case <-stop:
			t.Stop()
		}
	}()
}

// stopBlockTimer stops the header block's timer, if any. g.mu is held.
func (g *h2Guard) stopBlockTimer() {
	if g.blockStop != nil {
		close(g.blockStop)
		g.blockStop = nil
	}
}

// Read reads from the connection and checks the frames read.
func (g *h2Guard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if n > 0 {
		g.mu.Lock()
		already, reason := g.closed != "", ""
		if !already {
			reason = g.scan(p[:n])
		}
		g.mu.Unlock()
		if already {
			return 0, errGuardClosed
		}
		if reason != "" {
			g.closeFor(reason)
			return 0, errGuardClosed
		}
	}
	return n, err
}

// Write writes to the connection, counting the streams the server resets
// because of a client's stream error (MadeYouReset, CVE-2025-8671: a
// WINDOW_UPDATE of 0, a frame on a half-closed stream, ... make the server
// reset the stream itself) into the same budget as the client's own
// resets.
func (g *h2Guard) Write(p []byte) (int, error) {
	g.mu.Lock()
	reason := ""
	if g.closed == "" {
		reason = g.scanOut(p)
	}
	g.mu.Unlock()
	if reason != "" {
		g.closeFor(reason)
		return 0, errGuardClosed
	}
	return g.Conn.Write(p)
}

// scanOut follows the frame boundaries of what the server writes; it
// returns the reason to close the connection, or "". g.mu is held.
func (g *h2Guard) scanOut(b []byte) string {
	for len(b) > 0 {
		if g.outPayloadLeft > 0 {
			k := min(g.outPayloadLeft, len(b))
			if g.outRST != nil {
				need := min(4-len(g.outRST), k)
				g.outRST = append(g.outRST, b[:need]...)
				if len(g.outRST) == 4 {
					code := uint32(g.outRST[0])<<24 | uint32(g.outRST[1])<<16 | uint32(g.outRST[2])<<8 | uint32(g.outRST[3])
					g.outRST = nil
					if clientCausedReset(code) {
						if reason := g.frame(h2FrameRSTStream, 0, 0, 4); reason != "" {
							return reason
						}
					}
				}
			}
			g.outPayloadLeft -= k
			b = b[k:]
			continue
		}
		k := copy(g.outHdr[g.outHdrLen:], b)
		g.outHdrLen += k
		b = b[k:]
		if g.outHdrLen < h2FrameHeaderLen {
			break
		}
		g.outHdrLen = 0
		g.outPayloadLeft = int(g.outHdr[0])<<16 | int(g.outHdr[1])<<8 | int(g.outHdr[2])
		if g.outHdr[3] == h2FrameRSTStream && g.outPayloadLeft >= 4 {
			g.outRST = make([]byte, 0, 4)
		}
	}
	return ""
}

// clientCausedReset reports whether a RST_STREAM error code the server
// sends answers a client's stream error (PROTOCOL_ERROR, FLOW_CONTROL_ERROR,
// STREAM_CLOSED, FRAME_SIZE_ERROR, COMPRESSION_ERROR); NO_ERROR, CANCEL,
// REFUSED_STREAM and INTERNAL_ERROR are the server's own doing.
func clientCausedReset(code uint32) bool {
	switch code {
	case 0x1, 0x3, 0x5, 0x6, 0x9:
		return true
	}
	return false
}

// scan follows the frame boundaries through b; it returns the reason to
// close the connection, or "".
func (g *h2Guard) scan(b []byte) string {
	if g.prefaceLeft > 0 {
		// ALPN said h2: anything but the preface would be served as
		// HTTP/1.1, outside the framing guard.
		k := min(g.prefaceLeft, len(b))
		at := h2PrefaceLen - g.prefaceLeft
		if string(b[:k]) != h2Preface[at:at+k] {
			return reasonBadFraming
		}
		g.prefaceLeft -= k
		b = b[k:]
	}
	for len(b) > 0 {
		if g.payloadLeft > 0 {
			k := min(g.payloadLeft, len(b))
			g.payloadLeft -= k
			b = b[k:]
			continue
		}
		k := copy(g.hdr[g.hdrLen:], b)
		g.hdrLen += k
		b = b[k:]
		if g.hdrLen < h2FrameHeaderLen {
			break
		}
		g.hdrLen = 0
		length := int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
		typ, flags := g.hdr[3], g.hdr[4]
		stream := (uint32(g.hdr[5])<<24 | uint32(g.hdr[6])<<16 | uint32(g.hdr[7])<<8 | uint32(g.hdr[8])) & (1<<31 - 1)
		g.payloadLeft = length
		if reason := g.frame(typ, flags, stream, length); reason != "" {
			return reason
		}
	}
	if g.inBlock && g.clock.Now().Sub(g.blockStart) > g.timeout {
		return reasonHeaderTimeout
	}
	return ""
}

func (g *h2Guard) frame(typ, flags byte, stream uint32, length int) string {
	switch typ {
	case h2FrameHeaders:
		if stream > g.lastStream {
			g.lastStream = stream
			g.streams++
		}
		if flags&h2FlagEndHeaders == 0 {
			g.inBlock, g.blockFrames, g.blockBytes, g.blockStart = true, 0, length, g.clock.Now()
			g.startBlockTimer()
		}
	case h2FrameContinuation:
		if !g.inBlock {
			return "" // a protocol error the server answers itself
		}
		g.blockFrames++
		g.blockBytes += length
		if g.blockFrames > maxContinuationFrames || g.blockBytes > g.maxBlock {
			return reasonContinuationFlood
		}
		if flags&h2FlagEndHeaders != 0 {
			g.inBlock = false
			g.stopBlockTimer()
		}
	case h2FrameRSTStream:
		g.resets++
		if g.resets >= resetMinimum && 2*g.resets >= g.streams {
			return reasonRapidReset
		}
	}
	return ""
}
