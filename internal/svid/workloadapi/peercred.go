package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// rejectWarnEvery bounds how often a rejected connection is logged; the
// next warning counts the ones suppressed in between.
const rejectWarnEvery = 10 * time.Second

// errPeerNotAllowed is the handshake error of a connection from a uid that
// may not use the socket. gRPC closes the connection; the client sees
// Unavailable.
var errPeerNotAllowed = errors.New("unauthorized: peer uid may not use the workload api")

// peerCred is who is at the other end of a Unix socket, as the kernel saw
// them when they connected. The pid is only logged: it may have been reused
// since.
type peerCred struct {
	pid, uid, gid int
}

// peerCredentials are the server side of gRPC transport credentials for a
// Unix socket: the handshake reads the peer's credentials with SO_PEERCRED
// and lets through only allowUID, before any byte of gRPC is read. The
// credentials become the connection's AuthInfo. It fails closed: a
// connection whose credentials cannot be read is closed too.
type peerCredentials struct {
	allowUID int
	// reject is told about each rejected connection (cred is nil when
	// it could not be read).
	reject func(cred *peerCred, err error)
}

var _ credentials.TransportCredentials = (*peerCredentials)(nil)

// ServerHandshake checks the peer's uid. On error gRPC closes conn.
func (c *peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cred, err := peerCredOf(conn)
	if err != nil {
		err = fmt.Errorf("read workload api peer credentials: %w", err)
		c.reject(nil, err)
		return nil, nil, err
	}
	if cred.uid != c.allowUID {
		c.reject(&cred, errPeerNotAllowed)
		return nil, nil, errPeerNotAllowed
	}
	return conn, authInfo{cred: cred}, nil
}

// ClientHandshake fails: these credentials are for the server only.
func (c *peerCredentials) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn.Close()
	return nil, nil, errors.New("workload api peer credentials are server-side only")
}

// Info describes the protocol.
func (c *peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: authType}
}

// Clone returns a copy.
func (c *peerCredentials) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName does nothing: there is no server name on a Unix socket.
func (c *peerCredentials) OverrideServerName(string) error { return nil }

const authType = "bulwark-peercred"

// authInfo carries the peer's credentials into RPC contexts.
type authInfo struct {
	credentials.CommonAuthInfo
	cred peerCred
}

// AuthType names the credentials.
func (authInfo) AuthType() string { return authType }

// peerOf returns the credentials of the RPC's peer.
func peerOf(ctx context.Context) (peerCred, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return peerCred{}, false
	}
	ai, ok := p.AuthInfo.(authInfo)
	return ai.cred, ok
}

// logRejected warns about a rejected connection, at most once per
// rejectWarnEvery.
func (s *Server) logRejected(cred *peerCred, err error) {
	ok, suppressed := s.rejected.allow()
	if !ok {
		return
	}
	args := []any{keyAllowedUID, s.allowUID, keySuppressed, suppressed, telemetry.KeyErr, err}
	if cred != nil {
		args = append(args, telemetry.KeyPID, cred.pid, keyUID, cred.uid)
	}
	s.logger.Warn(msgPeerRejected, args...)
}

// warnLimiter lets one event through per period and counts the rest.
type warnLimiter struct {
	clock clock.Clock
	every time.Duration

	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether to log now, and how many events were suppressed
// since the last one logged.
func (w *warnLimiter) allow() (bool, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clock.Now()
	if now.Before(w.next) {
		w.suppressed++
		return false, 0
	}
	n := w.suppressed
	w.suppressed = 0
	w.next = now.Add(w.every)
	return true, n
}
