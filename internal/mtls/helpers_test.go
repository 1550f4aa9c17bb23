package mtls_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// hangGuard bounds every network wait so that a bug fails rather than hangs;
// it is never a timing assertion.
const hangGuard = 30 * time.Second

var (
	td      = spiffeid.RequireTrustDomainFromString("bulwark.test")
	otherTD = spiffeid.RequireTrustDomainFromString("other.test")
)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newWorkloadCA(t testing.TB, d spiffeid.TrustDomain) *ca.CA {
	t.Helper()
	c, err := ca.New(context.Background(), ca.Config{TrustDomain: d, Store: newStore(t), Keys: keymanager.NewMemory()})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return c
}

func newOperatorCA(t testing.TB) *ca.OperatorCA {
	t.Helper()
	o, err := ca.NewOperatorCA(context.Background(), ca.Config{TrustDomain: td, Store: newStore(t), Keys: keymanager.NewMemory()})
	if err != nil {
		t.Fatalf("ca.NewOperatorCA: %v", err)
	}
	return o
}

func newStore(t testing.TB) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func mustID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func workloadID(t testing.TB, d spiffeid.TrustDomain, ns, sa string) spiffeid.ID {
	t.Helper()
	id, err := identity.WorkloadID(d, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// svid is an x509svid.Source of one SVID.
type svid struct{ s *x509svid.SVID }

func (v svid) GetX509SVID() (*x509svid.SVID, error) { return v.s, nil }

// newSVID issues an SVID for id from c.
func newSVID(t testing.TB, c *ca.CA, id spiffeid.ID) svid {
	t.Helper()
	key := newKey(t)
	chain, err := c.SignSVID(&key.PublicKey, id, 0)
	if err != nil {
		t.Fatalf("SignSVID(%s): %v", id, err)
	}
	return svid{&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}}
}

// tlsCert returns chain and key as a tls.Certificate.
func tlsCert(chain []*x509.Certificate, key *ecdsa.PrivateKey) tls.Certificate {
	c := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// servingCert issues the control plane's serving certificate for id.
func servingCert(t testing.TB, c *ca.CA, id spiffeid.ID) (tls.Certificate, []*x509.Certificate) {
	t.Helper()
	key := newKey(t)
	chain, err := c.SignServing(&key.PublicKey, id, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	if err != nil {
		t.Fatalf("SignServing(%s): %v", id, err)
	}
	return tlsCert(chain, key), chain
}

// result is what each end of a handshake saw.
type result struct {
	server error // handshake error on the server
	client error // error of the client's handshake or first read
	// state is the client's connection state after a successful exchange.
	state tls.ConnectionState
	// serverState is the server's connection state.
	serverState tls.ConnectionState
}

// exchange runs one real TLS connection over loopback: the server
// handshakes with serverCfg and writes "ok"; the client handshakes with
// clientCfg and reads. With TLS 1.3 the client's handshake completes before
// the server has checked the client certificate, so a rejection shows on
// the client's first read.
func exchange(t testing.TB, serverCfg, clientCfg *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type srvResult struct {
		err   error
		state tls.ConnectionState
	}
	srvDone := make(chan srvResult, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			srvDone <- srvResult{err: err}
			return
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(hangGuard))
		conn := tls.Server(raw, serverCfg)
		if err := conn.Handshake(); err != nil {
			srvDone <- srvResult{err: err}
			return
		}
		_, err = conn.Write([]byte("ok"))
		st := conn.ConnectionState()
		conn.Close()
		srvDone <- srvResult{err: err, state: st}
	}()

	var res result
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(hangGuard))
	conn := tls.Client(raw, clientCfg)
	res.client = conn.Handshake()
	if res.client == nil {
		buf := make([]byte, 2)
		if _, err := io.ReadFull(conn, buf); err != nil {
			res.client = fmt.Errorf("first read: %w", err)
		} else if string(buf) != "ok" {
			res.client = fmt.Errorf("first read: got %q, want %q", buf, "ok")
		}
		res.state = conn.ConnectionState()
	}
	conn.Close()
	sr := <-srvDone
	res.server, res.serverState = sr.err, sr.state
	return res
}

// check fails t unless the exchange succeeded on both ends (wantOK) or
// failed on both (!wantOK).
func (r result) check(t testing.TB, wantOK bool) {
	t.Helper()
	if wantOK {
		if r.server != nil || r.client != nil {
			t.Errorf("got server error %v, client error %v; want success", r.server, r.client)
		}
		return
	}
	if r.client == nil {
		t.Errorf("client: got success, want a failed handshake (server error: %v)", r.server)
	}
	if r.server == nil {
		t.Errorf("server: got success, want a failed handshake (client error: %v)", r.client)
	}
}

var errNoAnchors = errors.New("no anchors")
