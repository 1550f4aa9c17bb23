package proxy

// TLS passthrough at the edge. A connection of a TLS listener is not
// terminated: the gateway reads the client's ClientHello (without
// consuming it), routes on its server name (GatewaySpec.TLSRoutes),
// decides with the policies selecting the gateway on what it knows (the
// client's IP address, the server name as host and SNI, the listener's
// port), and tunnels the connection, ClientHello first, to the route's
// service as a TCP tunnel of the gateway's identity (tunnel.go). A
// connection without a server name, or that no route takes, or that the
// policies deny, is closed.

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// maxEdgeHello bounds what the gateway reads of a connection before
// routing it: one TLS record of 16 KiB and its 5-byte header.
const maxEdgeHello = 5 + 16<<10

// peekClientHello reads c's ClientHello, until deadline, and returns its
// server name (lower case, without a trailing dot; "" when it names none)
// and the bytes read, which the tunnel sends first. An Encrypted Client
// Hello is refused (its real server name is hidden).
func peekClientHello(c net.Conn, deadline time.Time) (sni string, peeked []byte, err error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return "", nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	sni, peeked, err = clientHelloSNI(io.LimitReader(c, maxEdgeHello))
	if err != nil {
		return "", nil, err
	}
	return strings.TrimSuffix(strings.ToLower(sni), "."), peeked, nil
}

// replayConn is a connection whose first bytes are peeked ones.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite half-closes the underlying connection when it can.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ServePassthrough serves one connection accepted on the TLS
// (passthrough) listener named listener, until it ends or ctx is done; it
// closes c.
func (e *Engine) ServePassthrough(ctx context.Context, c net.Conn, listener string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	ip := remoteIP(c.RemoteAddr().String())
	info := &logInfo{direction: telemetry.DirectionOutbound, source: e.selfID(), start: time.Now(), edge: true, listener: listener}
	if ip.IsValid() {
		info.clientIP = ip.String()
	}
	r := (&http.Request{Method: http.MethodConnect, Header: http.Header{}, RemoteAddr: c.RemoteAddr().String()}).WithContext(ctx)
	rw := &recorder{}
	defer e.finish(r, rw, info)
	fail := func(status int, detail string) {
		rw.code = status
		info.detail = detail
	}

	t := e.table.Load()
	if t == nil || t.gateway == nil {
		fail(http.StatusServiceUnavailable, "no gateway in the snapshot")
		return
	}
	g := t.gateway
	sni, peeked, err := peekClientHello(c, time.Now().Add(g.headerTimeout))
	if err != nil {
		fail(http.StatusBadRequest, "read client hello: "+err.Error())
		return
	}
	if sni == "" {
		fail(http.StatusBadRequest, "client hello without a server name")
		return
	}
	if !DNSName(sni) {
		fail(http.StatusBadRequest, "client hello: the server name is not a dns name")
		return
	}
	r.Host = sni
	route := g.matchTLS(listener, sni)
	if route == nil {
		fail(http.StatusNotFound, "no tls route for "+sni)
		return
	}
	info.gatewayRoute, info.destination = route.name, route.svc.String()
	// Policies see the port the Gateway declares for the listener, not
	// the one it is bound to (--listen may move it): the same policy holds
	// wherever the gateway runs.
	port := 0
	if l := g.listeners[listener]; l != nil {
		port = l.Port
	} else if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		port = la.Port
	}
	req := policy.Request{Source: policy.Source{IP: ip}, Host: sni, Port: port, SNI: sni, Time: info.start}
	dec := t.inbound.Decide(&req)
	info.setDecision(&dec)
	if !dec.Allow {
		rw.code, info.denied = http.StatusForbidden, http.StatusForbidden
		return
	}
	// The gateway's own decision is logged; openTCP's (caller side) then
	// replaces it.
	status, tt := e.openTCP(ctx, info, route.svc.String(), route.port)
	rw.code = status
	if tt == nil {
		return
	}
	var n byteCounter
	tt.run(&replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(peeked), c)}, &n)
	info.detail = n.detail()
}
