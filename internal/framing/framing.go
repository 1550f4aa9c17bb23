// Package framing owns strict HTTP/1.1 request framing on the proxy's plain
// listeners: it reads the bytes net/http is about to parse and refuses, on
// the raw stream, every request whose boundaries two HTTP implementations
// could read differently (request smuggling, RFC 9112 §11.2).
//
// net/http alone cannot be trusted with this: it silently merges identical
// Content-Length fields, drops Content-Length when Transfer-Encoding is
// chunked, ignores Transfer-Encoding in HTTP/1.0 requests, unfolds obs-fold
// lines and accepts bare LF line endings, so its handlers never see the
// attack. A Listener made by NewListener wraps every accepted connection in a
// Conn that follows the framing of each request exactly as RFC 9112 §6
// defines it (a single Transfer-Encoding: chunked, whose chunk sizes,
// extensions and trailers it parses; else a single Content-Length, whose
// bytes it skips; else no body), request after request on a keep-alive or
// pipelined connection. It fails closed: the first byte that breaks the rules
// below is never passed to net/http; the connection is answered
// "400 Bad Request" and closed.
//
// Refused: several Content-Length fields (even equal, even "5, 5" in one);
// a Content-Length that is not a decimal number below 2^63;
// Transfer-Encoding other than exactly one "chunked" (case-insensitive, as
// RFC 9112 says of coding names), with Content-Length, or in an HTTP/1.0
// request; a version other than HTTP/1.1 and HTTP/1.0 (so the HTTP/2
// preface); a method that is not a token; a request-target with a space or
// a control character; an absolute-form request-target whose authority is
// not the Host value (ignoring case and an explicit ":80"); several Host
// fields; obs-fold; whitespace between a field name and its colon; a bare
// CR or LF anywhere in a head, a chunk line or a trailer section; NUL or any
// other control character but HTAB in a field value; "Upgrade: h2c"; a chunk
// size that is not 1 to 16 hex digits below 2^63; a malformed chunk
// extension or whitespace after a chunk size; chunk data not followed by
// CRLF; a chunk line over 1024 bytes; and a head or trailer section over
// MaxHeaderBytes plus 4096 bytes (net/http's own bound). The only tolerance is net/http's: one CRLF before
// the request line after a POST. Everything net/http checks by itself (the
// path, Host's presence and characters) is left to it.
//
// What is accepted is framed the way net/http frames it (a differential
// fuzz test holds the two to the same request boundaries), so the proxy and
// the app, which gets each request re-serialized, never disagree on where a
// request ends.
//
// The 400 is written only when no response can interleave with it. The
// server must therefore report its connection states with ConnState
// (http.Server.ConnState): a violation in a pipelined request that arrives
// while net/http still answers an earlier one is held back, as a read that
// has no data yet, until that answer is complete. A violation in a chunked
// body, whose head net/http has already passed to the handler, fails the
// handler's body read; the 400 replaces the handler's answer when that has
// not begun. (A proxy streams bodies: such a request may already be on its
// way, and its destination then sees it cut short, never whole.) Without ConnState the 400 is written at once, and can cut short
// the answer to an earlier pipelined request.
//
// A connection a handler hijacks (a protocol upgrade, a CONNECT tunnel) is
// no longer followed: its bytes are the handler's from then on. Bytes a
// client sends before the 101 (or the 200 of a CONNECT) are read as HTTP
// (clients wait for it).
//
// With Config.AllowH2Preface, a connection whose first 24 bytes are the
// HTTP/2 connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") is
// passed through unguarded, for a server that serves HTTP/2 with prior
// knowledge (http.Protocols.SetUnencryptedHTTP2): HTTP/2 frames every
// message with explicit lengths, so there is no boundary to disagree on,
// and net/http's HTTP/2 server validates the frames itself. The bytes of a
// partial preface are held back until the preface is complete or broken; a
// broken one is then read as HTTP/1.1 and refused like any other HTTP/2.0
// request line. An Upgrade to h2c stays refused.
package framing

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Config configures a Listener.
type Config struct {
	// MaxHeaderBytes is the server's http.Server.MaxHeaderBytes: a request
	// head (request line and header section) or a trailer section longer
	// than it plus 4096 bytes is refused, as net/http refuses it. Default:
	// http.DefaultMaxHeaderBytes (1 MiB).
	MaxHeaderBytes int
	// OnReject, if set, is called once for every rejected connection,
	// from the goroutine reading it; it must not block. Default: none.
	OnReject func(Reason)
	// Logger gets one Debug line per rejected connection (its reason and
	// remote address, never request bytes). Default: discard.
	Logger *slog.Logger
	// AllowH2Preface passes through unguarded a connection that starts
	// with the full HTTP/2 connection preface (see the package doc).
	// Default: refused, as any version but HTTP/1.1 and HTTP/1.0.
	AllowH2Preface bool
}

// h2Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// headSlack is what net/http allows above MaxHeaderBytes.
const headSlack = 4096

// lingerTimeout bounds how long a rejected connection is drained after the
// 400, so that the peer reads it before the close resets the connection.
const lingerTimeout = 500 * time.Millisecond

// badRequest is the answer to a rejected request.
const badRequest = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 12\r\n\r\nbad request\n"

// errAnswered is the write error net/http gets once the 400 has been sent.
var errAnswered = errors.New("framing: connection answered with 400")

// Listener is a net.Listener whose connections are Conns.
type Listener struct {
	net.Listener
	cfg      Config
	limit    int
	logger   *slog.Logger
	rejected [numReasons]atomic.Uint64
}

// NewListener returns ln with strict framing on every accepted connection.
// Serve it with an http.Server whose ConnState is ConnState (or calls it).
func NewListener(ln net.Listener, cfg Config) *Listener {
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	return &Listener{Listener: ln, cfg: cfg, limit: cfg.MaxHeaderBytes + headSlack, logger: telemetry.OrDiscard(cfg.Logger)}
}

// Accept waits for the next connection and returns it as a *Conn.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, l: l, p: newParser(l.limit), preface: !l.cfg.AllowH2Preface}, nil
}

// Rejected returns how many connections were rejected for r.
func (l *Listener) Rejected(r Reason) uint64 {
	if int(r) >= numReasons {
		return 0
	}
	return l.rejected[r].Load()
}

// Connection states, in Conn.state.
const (
	tracked  uint32 = 1 << iota // the server reports states
	busy                        // a handler is answering a request
	hijacked                    // a handler took the connection over
)

// Conn is a connection accepted by a Listener.
type Conn struct {
	net.Conn
	l *Listener

	// Read side, used by one reader at a time (net/http serializes them).
	p       parser
	rej     *Error // why the connection was rejected, once it is
	readErr error  // what Read returns after that

	// The HTTP/2 preface, with Config.AllowH2Preface: preface is true once
	// it is decided whether the connection starts with it (always true
	// without the option), h2 when it does. held are the first bytes read
	// while undecided, then the bytes still to return once decided (as
	// read from the connection); heldErr the read error that came with
	// them.
	preface bool
	h2      bool
	held    []byte
	heldErr error

	state atomic.Uint32

	wmu      sync.Mutex
	written  int64 // bytes written since the current request started
	answered bool  // the 400 was written: writes fail from then on

	closeOnce sync.Once
	closeErr  error
}

// ConnState tracks the state of a Conn; set http.Server.ConnState to it, or
// call it from yours. Other connections are ignored.
func ConnState(nc net.Conn, s http.ConnState) {
	c, ok := nc.(*Conn)
	if !ok {
		return
	}
	switch s {
	case http.StateNew, http.StateIdle:
		c.state.Store(tracked)
	case http.StateActive:
		c.wmu.Lock()
		c.written = 0
		c.wmu.Unlock()
		c.state.Store(tracked | busy)
	case http.StateHijacked:
		c.state.Store(tracked | hijacked)
	}
}

// Read reads the next bytes of the request stream. Bytes from the first
// one that breaks the framing rules on are never returned: Read returns a
// *net.OpError wrapping an *Error (and ErrRejected) instead, which net/http
// treats as a dead connection and closes without answering.
func (c *Conn) Read(b []byte) (int, error) {
	if c.rej != nil {
		return c.afterReject(b)
	}
	n, err := c.readRaw(b)
	if n <= 0 || c.h2 || c.state.Load()&hijacked != 0 {
		return n, err
	}
	k, rerr := c.p.scan(b[:n])
	if rerr == nil {
		return n, err
	}
	c.reject(rerr)
	if k > 0 {
		return k, nil // the acceptable bytes first
	}
	return c.afterReject(b)
}

// readRaw reads the next bytes of the connection as sent: with
// AllowH2Preface, the bytes held while the preface was undecided first.
func (c *Conn) readRaw(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for !c.preface {
		n, err := c.Conn.Read(b)
		c.held = append(c.held, b[:n]...)
		k := min(len(c.held), len(h2Preface))
		switch {
		case string(c.held[:k]) != h2Preface[:k]:
			c.preface = true
		case k == len(h2Preface):
			c.preface, c.h2 = true, true
		}
		if err != nil {
			c.heldErr = err
			c.preface = true
		}
	}
	if len(c.held) == 0 {
		if c.heldErr != nil {
			err := c.heldErr
			c.heldErr = nil
			return 0, err
		}
		return c.Conn.Read(b)
	}
	n := copy(b, c.held)
	if c.held = c.held[n:]; len(c.held) == 0 {
		c.held = nil
		err := c.heldErr
		c.heldErr = nil
		return n, err
	}
	return n, nil
}

// reject records why the connection is refused.
func (c *Conn) reject(e *Error) {
	c.rej = e
	c.readErr = &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: e}
	c.l.rejected[e.Reason].Add(1)
	if c.l.cfg.OnReject != nil {
		c.l.cfg.OnReject(e.Reason)
	}
	c.l.logger.Debug("request framing rejected", telemetry.KeyReason, e.Reason.String(),
		telemetry.KeyDetail, e.msg, telemetry.KeyRemote, c.RemoteAddr().String())
}

// afterReject is Read once the connection is rejected.
func (c *Conn) afterReject(b []byte) (int, error) {
	st := c.state.Load()
	switch {
	case st&tracked == 0:
		// Without states, answer at once: net/http may be writing the
		// answer to an earlier pipelined request, which the 400 cuts.
		c.answer(false)
	case c.rej.body:
		// The handler of this request reads its body: answer unless it
		// already began its own answer.
		c.answer(true)
	default:
		// A bad head after a pipelined request whose handler is still
		// running (this is net/http's background read): no data yet, as
		// far as net/http can tell, until it interrupts the read (a
		// deadline in the past) once its answer is written. What the
		// peer sends meanwhile is discarded.
		for c.state.Load()&busy != 0 {
			if len(b) == 0 {
				return 0, nil
			}
			if _, err := c.Conn.Read(b); err != nil {
				return 0, err
			}
		}
		c.answer(false)
	}
	return 0, c.readErr
}

// answer writes the 400, unless it was written, or, when ifSilent, net/http
// has written part of an answer to the current request.
func (c *Conn) answer(ifSilent bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.answered || ifSilent && c.written > 0 {
		return
	}
	c.writeAnswer()
}

// writeAnswer writes the 400; c.wmu is held.
func (c *Conn) writeAnswer() {
	c.answered = true
	// Socket deadlines are wall-clock time.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.WriteString(c.Conn, badRequest)
}

// Write writes b, unless the connection was answered with 400.
func (c *Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	if c.answered {
		c.wmu.Unlock()
		return 0, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errAnswered}
	}
	n, err := c.Conn.Write(b)
	c.written += int64(n)
	c.wmu.Unlock()
	return n, err
}

// CloseWrite shuts down the writing side of the connection, if the
// underlying connection supports it (net/http uses it before closing).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the connection; one answered with 400 is drained for a
// moment first, so that the peer can read the answer. Close is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		answered := c.answered
		c.wmu.Unlock()
		if answered {
			c.linger()
		}
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

// linger half-closes the connection and reads what the peer still sends,
// for at most lingerTimeout: closing a socket with unread data resets it,
// and the peer could lose the 400.
func (c *Conn) linger() {
	if err := c.CloseWrite(); err != nil {
		return
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, 1<<20))
}
