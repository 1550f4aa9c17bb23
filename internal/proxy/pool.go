package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// poolKey identifies a peer: an address and the identity it must present.
// The identity is part of the key so that a connection verified for one
// identity is never reused for another.
type poolKey struct {
	addr string
	id   spiffeid.ID
}

// pooledConn is a connection to a peer and the certificate the peer
// presented at its handshake.
type pooledConn struct {
	cc   *http2.ClientConn
	leaf *x509.Certificate
}

// pool keeps long-lived HTTP/2 connections over mTLS to peer sidecars, so
// requests are multiplexed and handshakes are rare. A connection is opened
// when no existing one can take a new stream; concurrent callers wait for
// one dial instead of each dialing. A connection whose peer is revoked is
// closed (see retain).
type pool struct {
	tlsConfig func(want spiffeid.ID) *tls.Config
	// revoked reports whether a peer's certificate is revoked now.
	revoked   func(leaf *x509.Certificate) bool
	transport *http2.Transport
	dialer    net.Dialer

	mu      sync.Mutex
	conns   map[poolKey][]pooledConn
	dialing map[poolKey]chan struct{}
	// keep is the set of peers of the current snapshot (nil: all, before
	// the first retain). A dial that completes for a peer no longer in it
	// serves its one request and is then shut down.
	keep   map[poolKey]bool
	closed bool
	// perRequest dials a connection for every request (benchmarks only).
	perRequest bool
	// onHandshake, if set, is told the result of each mTLS handshake
	// (a value of telemetry.HandshakeResults).
	onHandshake func(result string)
}

func newPool(tlsConfig func(spiffeid.ID) *tls.Config, revoked func(*x509.Certificate) bool) *pool {
	return &pool{
		tlsConfig: tlsConfig,
		revoked:   revoked,
		transport: &http2.Transport{
			// Health checks of idle connections: a peer that vanished is
			// noticed within ReadIdleTimeout+PingTimeout.
			ReadIdleTimeout:    30 * time.Second,
			PingTimeout:        10 * time.Second,
			DisableCompression: true,
		},
		dialer:  net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		conns:   map[poolKey][]pooledConn{},
		dialing: map[poolKey]chan struct{}{},
	}
}

// errPoolClosed is returned after close.
var errPoolClosed = errors.New("connection pool closed")

// roundTrip sends req on a connection to key. A request that has to wait
// for a connection to be dialed holds one of pending (nil: no limit) while
// it waits, and fails at once with an overflowError when there is none; a
// new connection is not dialed when maxConns (0: no limit) connections to
// key are open and none can take the stream.
func (p *pool) roundTrip(req *http.Request, key poolKey, pending *resilience.Limiter, maxConns int) (*http.Response, error) {
	cc, pooled, err := p.get(req.Context(), key, pending, maxConns)
	if err != nil {
		return nil, err
	}
	resp, err := cc.RoundTrip(req)
	if !pooled {
		go shutdown(cc) // graceful: waits for this request's stream
	}
	return resp, err
}

// get returns a connection to key that can take a new stream, dialing one
// when none can. pooled is false for a connection dialed for a peer that
// left the snapshot meanwhile.
func (p *pool) get(ctx context.Context, key poolKey, pending *resilience.Limiter, maxConns int) (cc *http2.ClientConn, pooled bool, err error) {
	waiting := false
	defer func() {
		if waiting {
			pending.Release()
		}
	}()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, errPoolClosed
		}
		live := p.conns[key][:0]
		var usable *http2.ClientConn
		for _, pc := range p.conns[key] {
			st := pc.cc.State()
			if st.Closed || (st.Closing && st.StreamsActive == 0) {
				continue
			}
			live = append(live, pc)
			if usable == nil && pc.cc.CanTakeNewRequest() {
				usable = pc.cc
			}
		}
		if len(live) == 0 {
			delete(p.conns, key)
		} else {
			p.conns[key] = live
		}
		if usable != nil {
			p.mu.Unlock()
			return usable, true, nil
		}
		if maxConns > 0 && len(live) >= maxConns {
			p.mu.Unlock()
			return nil, false, &overflowError{what: "maxConnections"}
		}
		if pending != nil && !waiting {
			if !pending.TryAcquire() {
				p.mu.Unlock()
				return nil, false, &overflowError{what: "maxPendingRequests"}
			}
			waiting = true
		}
		if wait, ok := p.dialing[key]; ok {
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		done := make(chan struct{})
		p.dialing[key] = done
		p.mu.Unlock()

		pc, err := p.dial(ctx, key)

		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.dialing, key)
		close(done)
		switch {
		case err != nil:
			return nil, false, err
		case p.closed:
			pc.cc.Close()
			return nil, false, errPoolClosed
		case p.revoked(pc.leaf):
			// Revoked after its handshake was verified: a retain that ran
			// meanwhile could not see this connection.
			pc.cc.Close()
			return nil, false, &connectError{err: fmt.Errorf("peer %s (%s) presented a revoked certificate", key.addr, key.id)}
		case p.keep != nil && !p.keep[key], p.perRequest:
			return pc.cc, false, nil
		}
		p.conns[key] = append(p.conns[key], pc)
		return pc.cc, true, nil
	}
}

func (p *pool) dial(ctx context.Context, key poolKey) (pooledConn, error) {
	raw, err := p.dialer.DialContext(ctx, "tcp", key.addr)
	if err != nil {
		return pooledConn{}, &connectError{err: err}
	}
	conn := tls.Client(raw, p.tlsConfig(key.id))
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		p.handshake(telemetry.HandshakeResult(err))
		return pooledConn{}, &connectError{err: fmt.Errorf("mtls handshake with %s (%s): %w", key.addr, key.id, err)}
	}
	state := conn.ConnectionState()
	if state.NegotiatedProtocol != mtls.ProtoH2 {
		p.handshake(telemetry.HandshakeProtocol)
		conn.Close()
		return pooledConn{}, &connectError{err: fmt.Errorf("peer %s did not negotiate h2 (got %q)", key.addr, state.NegotiatedProtocol)}
	}
	if len(state.PeerCertificates) == 0 {
		conn.Close() // cannot happen: the config requires a verified SVID
		return pooledConn{}, &connectError{err: fmt.Errorf("peer %s presented no certificate", key.addr)}
	}
	p.handshake(telemetry.HandshakeOK)
	cc, err := p.transport.NewClientConn(conn)
	if err != nil {
		conn.Close()
		return pooledConn{}, &connectError{err: err}
	}
	// The peer's certificate was checked at the handshake only: retire the
	// connection when it expires (the peer will have rotated long before).
	leaf := state.PeerCertificates[0]
	time.AfterFunc(time.Until(leaf.NotAfter), func() { shutdown(cc) })
	return pooledConn{cc: cc, leaf: leaf}, nil
}

// retain closes connections to peers that are no longer endpoints (or whose
// identity changed), letting their in-flight streams finish, and closes
// those to peers whose certificate is now revoked at once; it returns how
// many of the latter it closed.
func (p *pool) retain(keep map[poolKey]bool) int {
	p.mu.Lock()
	p.keep = keep
	var drop, kill []*http2.ClientConn
	for k, pcs := range p.conns {
		if !keep[k] {
			for _, pc := range pcs {
				drop = append(drop, pc.cc)
			}
			delete(p.conns, k)
			continue
		}
		live := pcs[:0]
		for _, pc := range pcs {
			if p.revoked(pc.leaf) {
				kill = append(kill, pc.cc)
				continue
			}
			live = append(live, pc)
		}
		if len(live) == 0 {
			delete(p.conns, k)
		} else {
			p.conns[k] = live
		}
	}
	p.mu.Unlock()
	for _, cc := range drop {
		go shutdown(cc)
	}
	for _, cc := range kill {
		cc.Close()
	}
	return len(kill)
}

// retire gracefully closes every pooled connection; in-flight requests
// finish and new requests dial new connections.
func (p *pool) retire() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[poolKey][]pooledConn{}
	p.mu.Unlock()
	for _, pcs := range conns {
		for _, pc := range pcs {
			go shutdown(pc.cc)
		}
	}
}

// close closes every connection; it is idempotent.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[poolKey][]pooledConn{}
	p.mu.Unlock()
	for _, pcs := range conns {
		for _, pc := range pcs {
			pc.cc.Close()
		}
	}
}

func shutdown(cc *http2.ClientConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cc.Shutdown(ctx); err != nil {
		cc.Close()
	}
}

// connectError is a failure to reach a peer at all (the request was not
// sent).
type connectError struct{ err error }

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// handshake reports the result of a handshake to onHandshake.
func (p *pool) handshake(result string) {
	if p.onHandshake != nil {
		p.onHandshake(result)
	}
}
