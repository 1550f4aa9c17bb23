package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/bulwarkmesh/bulwark/internal/mtls"
)

// poolKey identifies a peer: an address and the identity it must present.
// The identity is part of the key so that a connection verified for one
// identity is never reused for another.
type poolKey struct {
	addr string
	id   spiffeid.ID
}

// pool keeps long-lived HTTP/2 connections over mTLS to peer sidecars, so
// requests are multiplexed and handshakes are rare. A connection is opened
// when no existing one can take a new stream; concurrent callers wait for
// one dial instead of each dialing.
type pool struct {
	tlsConfig func(want spiffeid.ID) *tls.Config
	transport *http2.Transport
	dialer    net.Dialer

	mu      sync.Mutex
	conns   map[poolKey][]*http2.ClientConn
	dialing map[poolKey]chan struct{}
	// keep is the set of peers of the current snapshot (nil: all, before
	// the first retain). A dial that completes for a peer no longer in it
	// serves its one request and is then shut down.
	keep   map[poolKey]bool
	closed bool
}

func newPool(tlsConfig func(spiffeid.ID) *tls.Config) *pool {
	return &pool{
		tlsConfig: tlsConfig,
		transport: &http2.Transport{
			// Health checks of idle connections: a peer that vanished is
			// noticed within ReadIdleTimeout+PingTimeout.
			ReadIdleTimeout:    30 * time.Second,
			PingTimeout:        10 * time.Second,
			DisableCompression: true,
		},
		dialer:  net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		conns:   map[poolKey][]*http2.ClientConn{},
		dialing: map[poolKey]chan struct{}{},
	}
}

// errPoolClosed is returned after close.
var errPoolClosed = errors.New("connection pool closed")

// roundTrip sends req on a connection to key.
func (p *pool) roundTrip(req *http.Request, key poolKey) (*http.Response, error) {
	cc, pooled, err := p.get(req.Context(), key)
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
func (p *pool) get(ctx context.Context, key poolKey) (cc *http2.ClientConn, pooled bool, err error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, false, errPoolClosed
		}
		live := p.conns[key][:0]
		var usable *http2.ClientConn
		for _, cc := range p.conns[key] {
			st := cc.State()
			if st.Closed || (st.Closing && st.StreamsActive == 0) {
				continue
			}
			live = append(live, cc)
			if usable == nil && cc.CanTakeNewRequest() {
				usable = cc
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

		cc, err := p.dial(ctx, key)

		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.dialing, key)
		close(done)
		switch {
		case err != nil:
			return nil, false, err
		case p.closed:
			cc.Close()
			return nil, false, errPoolClosed
		case p.keep != nil && !p.keep[key]:
			return cc, false, nil
		}
		p.conns[key] = append(p.conns[key], cc)
		return cc, true, nil
	}
}

func (p *pool) dial(ctx context.Context, key poolKey) (*http2.ClientConn, error) {
	raw, err := p.dialer.DialContext(ctx, "tcp", key.addr)
	if err != nil {
		return nil, &connectError{err: err}
	}
	conn := tls.Client(raw, p.tlsConfig(key.id))
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, &connectError{err: fmt.Errorf("mtls handshake with %s (%s): %w", key.addr, key.id, err)}
	}
	if proto := conn.ConnectionState().NegotiatedProtocol; proto != mtls.ProtoH2 {
		conn.Close()
		return nil, &connectError{err: fmt.Errorf("peer %s did not negotiate h2 (got %q)", key.addr, proto)}
	}
	cc, err := p.transport.NewClientConn(conn)
	if err != nil {
		conn.Close()
		return nil, &connectError{err: err}
	}
	// The peer's certificate was checked at the handshake only: retire the
	// connection when it expires (the peer will have rotated long before).
	if certs := conn.ConnectionState().PeerCertificates; len(certs) > 0 {
		time.AfterFunc(time.Until(certs[0].NotAfter), func() { shutdown(cc) })
	}
	return cc, nil
}

// retain closes connections to peers that are no longer endpoints (or whose
// identity changed), letting their in-flight streams finish.
func (p *pool) retain(keep map[poolKey]bool) {
	p.mu.Lock()
	p.keep = keep
	var drop []*http2.ClientConn
	for k, ccs := range p.conns {
		if !keep[k] {
			drop = append(drop, ccs...)
			delete(p.conns, k)
		}
	}
	p.mu.Unlock()
	for _, cc := range drop {
		go shutdown(cc)
	}
}

// retire gracefully closes every pooled connection; in-flight requests
// finish and new requests dial new connections.
func (p *pool) retire() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[poolKey][]*http2.ClientConn{}
	p.mu.Unlock()
	for _, ccs := range conns {
		for _, cc := range ccs {
			go shutdown(cc)
		}
	}
}

// close closes every connection; it is idempotent.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[poolKey][]*http2.ClientConn{}
	p.mu.Unlock()
	for _, ccs := range conns {
		for _, cc := range ccs {
			cc.Close()
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
