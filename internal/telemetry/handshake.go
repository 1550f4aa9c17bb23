package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
)

// Results of a TLS handshake: the result label of
// bulwark_tls_handshakes_total. The set is fixed; a failure whose cause is
// none of the others is HandshakeOther.
const (
	// HandshakeOK: the handshake completed and the peer was accepted.
	HandshakeOK = "ok"
	// HandshakeBadCertificate: the peer's certificate was refused for
	// anything but its issuer or its validity period: not an SVID, the
	// wrong identity, revoked (or the peer refused ours with that alert).
	HandshakeBadCertificate = "bad_certificate"
	// HandshakeUnknownAuthority: the peer's chain does not end in a
	// trusted root.
	HandshakeUnknownAuthority = "unknown_authority"
	// HandshakeExpired: the peer's certificate expired or is not valid
	// yet.
	HandshakeExpired = "expired"
	// HandshakeNoCertificate: a client certificate was required and none
	// was sent.
	HandshakeNoCertificate = "no_certificate"
	// HandshakeProtocol: not TLS, an unsupported version, no shared
	// cipher suite or application protocol (ALPN).
	HandshakeProtocol = "protocol"
	// HandshakeTimeout: the peer did not finish the handshake in time.
	HandshakeTimeout = "timeout"
	// HandshakeEOF: the peer closed the connection during the handshake.
	HandshakeEOF = "eof"
	// HandshakeOther: any other failure.
	HandshakeOther = "other"
)

// HandshakeResults returns every value of the result label, HandshakeOK
// first.
func HandshakeResults() []string {
	return []string{
		HandshakeOK, HandshakeBadCertificate, HandshakeUnknownAuthority, HandshakeExpired,
		HandshakeNoCertificate, HandshakeProtocol, HandshakeTimeout, HandshakeEOF, HandshakeOther,
	}
}

// errNoClientCertificate is the handshake error of a client that sent no
// certificate where one is required (see CountHandshakes).
var errNoClientCertificate = errors.New("tls: client didn't provide a certificate")

// HandshakeResult classifies the error of a TLS handshake (nil: HandshakeOK)
// into one of HandshakeResults: by the x509 error of a certificate check,
// by the alert the peer sent, by a timeout or an early end of the
// connection. Only the class is kept, never the error's text.
func HandshakeResult(err error) string {
	if err == nil {
		return HandshakeOK
	}
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var record tls.RecordHeaderError
	var netErr net.Error
	switch {
	case errors.Is(err, errNoClientCertificate):
		return HandshakeNoCertificate
	case errors.As(err, &unknown):
		return HandshakeUnknownAuthority
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return HandshakeExpired
		}
		return HandshakeBadCertificate
	case errors.As(err, &hostname):
		return HandshakeBadCertificate
	case errors.As(err, &record):
		return HandshakeProtocol
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return HandshakeTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return HandshakeEOF
	}
	// What crypto/tls reports only as text: its own checks and the alerts
	// a peer sends ("remote error: tls: bad certificate").
	msg := err.Error()
	for _, c := range handshakeTexts {
		if strings.Contains(msg, c.text) {
			return c.result
		}
	}
	return HandshakeOther
}

// handshakeTexts map the fixed texts of crypto/tls errors and alerts to
// results, in the order they are tried.
var handshakeTexts = []struct{ text, result string }{
	{"didn't provide a certificate", HandshakeNoCertificate},
	{"tls: certificate required", HandshakeNoCertificate},
	{"tls: unknown certificate authority", HandshakeUnknownAuthority},
	{"tls: expired certificate", HandshakeExpired},
	{"certificate has expired", HandshakeExpired},
	{"tls: bad certificate", HandshakeBadCertificate},
	{"tls: revoked certificate", HandshakeBadCertificate},
	{"tls: unsupported certificate", HandshakeBadCertificate},
	{"tls: unknown certificate", HandshakeBadCertificate},
	{"x509svid:", HandshakeBadCertificate},
	{"is revoked", HandshakeBadCertificate},
	{"unexpected ID", HandshakeBadCertificate},
	{"connection reset", HandshakeEOF},
	{"broken pipe", HandshakeEOF},
	{"tls: ", HandshakeProtocol},
	{"ALPN", HandshakeProtocol},
	{"application protocol", HandshakeProtocol},
}

// HandshakeCounter counts the handshakes of a TLS server by result, for a
// server that does the handshakes itself (http.Server.ServeTLS, which
// wraps the listener with the config): the listener it accepts from goes
// through Listener, and the config it serves with through Config. Other
// layers may sit between (a listener that wraps the accepted connections,
// a config whose GetConfigForClient returns another); a connection that
// did not come through Listener is not counted.
//
// The result is read from the config's callbacks (certificate checks,
// VerifyConnection) and from the connection (the peer closed it, a
// timeout); a connection closed before any callback ran and without an
// error of its own failed the TLS layer's checks (not TLS, no shared
// version or suite): HandshakeProtocol. With ClientAuth
// RequireAnyClientCert the config asks for a certificate
// (RequestClientCert) and then requires one itself, so that a client
// without one is counted (HandshakeNoCertificate); the handshake fails as
// before. A server that verifies client certificates with ClientCAs
// (VerifyClientCertIfGiven, RequireAndVerifyClientCert) reports its
// verification failures as HandshakeBadCertificate, the TLS layer not
// saying more.
type HandshakeCounter struct {
	observe func(remote net.Addr, result string)
}

// NewHandshakeCounter returns a counter that calls observe once per
// connection that started a handshake, with the peer's address and a value
// of HandshakeResults, on the handshake's goroutine; observe must not
// block.
func NewHandshakeCounter(observe func(remote net.Addr, result string)) *HandshakeCounter {
	return &HandshakeCounter{observe: observe}
}

// Listener returns ln with its connections counted. They keep their
// RemoteAddr's text; its type is this package's.
func (h *HandshakeCounter) Listener(ln net.Listener) net.Listener {
	return &countingListener{Listener: ln, observe: h.observe}
}

// Config returns a copy of cfg that records the handshakes of the
// Listener's connections. cfg's own GetConfigForClient, if any, is
// honoured.
func (h *HandshakeCounter) Config(cfg *tls.Config) *tls.Config {
	out := cfg.Clone()
	inner := cfg.GetConfigForClient
	out.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		hc := countedConn(hello.Conn)
		var c *tls.Config
		if inner != nil {
			got, err := inner(hello)
			if err != nil {
				if hc != nil {
					hc.result(HandshakeResult(err))
				}
				return nil, err
			}
			c = got
		}
		if c == nil {
			c = cfg
		}
		if hc == nil {
			return c, nil
		}
		hc.hello.Store(true)
		return hc.wrap(c), nil
	}
	return out
}

// countingListener wraps the connections it accepts in countingConns.
type countingListener struct {
	net.Listener
	observe func(net.Addr, string)
}

// Accept waits for and returns the next connection.
func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	hc := &countingConn{Conn: c, observe: l.observe}
	hc.addr = &countingAddr{Addr: c.RemoteAddr(), c: hc}
	return hc, nil
}

// countingAddr is the RemoteAddr of a countingConn: it leads the config's
// callbacks, which see the connection only through the layers wrapped
// around it, back to it.
type countingAddr struct {
	net.Addr
	c *countingConn
}

// countedConn returns the countingConn under c, or nil.
func countedConn(c net.Conn) *countingConn {
	if c == nil {
		return nil
	}
	if a, ok := c.RemoteAddr().(*countingAddr); ok {
		return a.c
	}
	return nil
}

// countingConn records the result of its handshake once.
type countingConn struct {
	net.Conn
	observe func(net.Addr, string)
	addr    *countingAddr
	// done is set once the result is recorded; hello once the
	// ClientHello was read; tlsVerifies when the TLS layer itself checks
	// client certificates; readErr is the result a failed read implies.
	done        atomic.Bool
	hello       atomic.Bool
	tlsVerifies atomic.Bool
	readErr     atomic.Pointer[string]
}

// RemoteAddr returns the peer's address (its String is the network's).
func (c *countingConn) RemoteAddr() net.Addr { return c.addr }

func (c *countingConn) result(r string) {
	if c.done.CompareAndSwap(false, true) && c.observe != nil {
		c.observe(c.Conn.RemoteAddr(), r)
	}
}

// Read reads from the connection, noting how a read during the handshake
// failed.
func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && !c.done.Load() && c.readErr.Load() == nil {
		r := HandshakeResult(err)
		c.readErr.Store(&r)
	}
	return n, err
}

// Close closes the connection; one closed during its handshake counts as
// failed.
func (c *countingConn) Close() error {
	if !c.done.Load() {
		r := HandshakeProtocol
		if c.tlsVerifies.Load() {
			r = HandshakeBadCertificate
		}
		if p := c.readErr.Load(); p != nil {
			r = *p
		}
		c.result(r)
	}
	return c.Conn.Close()
}

// wrap returns a copy of cfg whose callbacks record the result.
func (c *countingConn) wrap(cfg *tls.Config) *tls.Config {
	w := cfg.Clone()
	w.GetConfigForClient = nil
	requireCert := false
	if w.ClientAuth == tls.RequireAnyClientCert {
		w.ClientAuth, requireCert = tls.RequestClientCert, true
	}
	// The TLS layer fails the handshake before any callback for a
	// certificate it does not verify.
	c.tlsVerifies.Store(w.ClientAuth == tls.VerifyClientCertIfGiven || w.ClientAuth == tls.RequireAndVerifyClientCert)
	verifyPeer := w.VerifyPeerCertificate
	w.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if requireCert && len(raw) == 0 {
			c.result(HandshakeNoCertificate)
			return errNoClientCertificate
		}
		if verifyPeer == nil {
			return nil
		}
		err := verifyPeer(raw, chains)
		if err != nil {
			c.result(HandshakeResult(err))
		}
		return err
	}
	verifyConn := w.VerifyConnection
	w.VerifyConnection = func(cs tls.ConnectionState) error {
		if requireCert && len(cs.PeerCertificates) == 0 {
			c.result(HandshakeNoCertificate)
			return errNoClientCertificate
		}
		if verifyConn != nil {
			if err := verifyConn(cs); err != nil {
				c.result(HandshakeResult(err))
				return err
			}
		}
		c.result(HandshakeOK)
		return nil
	}
	return w
}
