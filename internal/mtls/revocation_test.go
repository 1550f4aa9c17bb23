package mtls_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/mtls"
)

func certWithSerial(t testing.TB, hex string) *x509.Certificate {
	t.Helper()
	n, ok := new(big.Int).SetString(hex, 16)
	if !ok {
		t.Fatalf("bad test serial %q", hex)
	}
	return &x509.Certificate{SerialNumber: n}
}

func TestSerialSet(t *testing.T) {
	long := strings.Repeat("ab", 20)    // 20 octets, the RFC 5280 maximum
	tooLong := strings.Repeat("cd", 21) // 21 octets
	tests := []struct {
		name    string
		serials []string
		wantErr bool
		in      []string // serials of certificates in the set
		out     []string // and not in it
	}{
		{name: "empty", out: []string{"1", "1a2b"}},
		{name: "lowercase", serials: []string{"1a2b", "ff"}, in: []string{"1a2b", "ff", "001a2b"}, out: []string{"1a2c", "1a2b00", "fe"}},
		{name: "uppercase_read_the_same", serials: []string{"1A2B"}, in: []string{"1a2b"}},
		{name: "leading_zeros_read_the_same", serials: []string{"00ff"}, in: []string{"ff"}, out: []string{"ff00"}},
		{name: "twenty_octets", serials: []string{long}, in: []string{long}, out: []string{long[2:]}},
		{name: "over_twenty_octets", serials: []string{tooLong}, in: []string{tooLong}, out: []string{tooLong[2:]}},
		{name: "not_hex", serials: []string{"1a2b", "xyz"}, wantErr: true},
		{name: "empty_serial", serials: []string{""}, wantErr: true},
		{name: "zero", serials: []string{"0"}, wantErr: true},
		{name: "negative", serials: []string{"-1a"}, wantErr: true},
		{name: "plus_sign", serials: []string{"+1a"}, wantErr: true},
		{name: "hex_prefix", serials: []string{"0x1a"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := mtls.NewSerialSet(tt.serials)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("NewSerialSet(%q): got error %v, want error %v", tt.serials, err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "serial ") {
					t.Errorf("error %q: want it to name the serial", err)
				}
				return
			}
			if got := set.Len(); got != len(tt.serials) {
				t.Errorf("Len: got %d, want %d", got, len(tt.serials))
			}
			for _, s := range tt.in {
				if !set.Contains(certWithSerial(t, s)) {
					t.Errorf("Contains(%s): got false, want true", s)
				}
			}
			for _, s := range tt.out {
				if set.Contains(certWithSerial(t, s)) {
					t.Errorf("Contains(%s): got true, want false", s)
				}
			}
		})
	}
	t.Run("nil_and_negative_certificates", func(t *testing.T) {
		set, err := mtls.NewSerialSet([]string{"1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*x509.Certificate{nil, {}, {SerialNumber: big.NewInt(-1)}} {
			if set.Contains(c) {
				t.Errorf("Contains(%v): got true, want false", c)
			}
		}
	})
}

// TestSerialSetContainsDoesNotAllocate: the check runs in every handshake.
func TestSerialSetContainsDoesNotAllocate(t *testing.T) {
	set, err := mtls.NewSerialSet([]string{"1a2b", strings.Repeat("7f", 16)})
	if err != nil {
		t.Fatal(err)
	}
	in, out := certWithSerial(t, strings.Repeat("7f", 16)), certWithSerial(t, strings.Repeat("7e", 20))
	if got := testing.AllocsPerRun(100, func() {
		if !set.Contains(in) || set.Contains(out) {
			t.Fatal("wrong answer")
		}
	}); got != 0 {
		t.Errorf("allocations per Contains: got %v, want 0", got)
	}
}

// revocationList is a Revoked whose set can be replaced, as a proxy's is by
// each snapshot.
type revocationList struct {
	set atomic.Pointer[mtls.SerialSet]
}

func (r *revocationList) revoke(t testing.TB, serials ...string) {
	t.Helper()
	s, err := mtls.NewSerialSet(serials)
	if err != nil {
		t.Fatal(err)
	}
	r.set.Store(&s)
}

func (r *revocationList) revoked(leaf *x509.Certificate) bool {
	s := r.set.Load()
	return s != nil && s.Contains(leaf)
}

func serialOf(s svid) string { return s.s.Certificates[0].SerialNumber.Text(16) }

// TestMeshRevoked: a revoked peer fails the handshake in both directions,
// and a revoked client cannot come back by resuming a session.
func TestMeshRevoked(t *testing.T) {
	c := newWorkloadCA(t, td)
	bundle := &mutableBundle{td: td}
	bundle.set(c.Roots()...)
	serverID, clientID := workloadID(t, td, "default", "api"), workloadID(t, td, "shop", "web")
	server, client := newSVID(t, c, serverID), newSVID(t, c, clientID)
	other := newSVID(t, c, clientID) // the same identity, another serial

	tests := []struct {
		name    string
		revoked []string
		// server is revoked by the client, client by the server.
		wantOK bool
	}{
		{name: "none_revoked", wantOK: true},
		{name: "another_serial_revoked", revoked: []string{serialOf(other)}, wantOK: true},
		{name: "client_revoked", revoked: []string{serialOf(client)}},
		{name: "server_revoked", revoked: []string{serialOf(server)}},
		{name: "client_revoked_with_leading_zero", revoked: []string{"0" + serialOf(client)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list := &revocationList{}
			list.revoke(t, tt.revoked...)
			serverCfg := mtls.Mesh{SVID: server, Bundle: bundle, TrustDomain: td, Revoked: list.revoked}.ServerConfig()
			clientCfg := mtls.Mesh{SVID: client, Bundle: bundle, Revoked: list.revoked}.ClientConfig(serverID)
			exchange(t, serverCfg, clientCfg).check(t, tt.wantOK)
		})
	}

	t.Run("outbound_to_revoked_server", func(t *testing.T) {
		list := &revocationList{}
		list.revoke(t, serialOf(server))
		// The server does not check revocation; the client must.
		serverCfg := mtls.ServerConfig(server, bundle, td)
		clientCfg := mtls.Mesh{SVID: client, Bundle: bundle, Revoked: list.revoked}.ClientConfig(serverID)
		res := exchange(t, serverCfg, clientCfg)
		if res.client == nil || !strings.Contains(res.client.Error(), "revoked") {
			t.Errorf("client: got %v, want the handshake refused as revoked", res.client)
		}
	})

	t.Run("revoked_client_cannot_resume", func(t *testing.T) {
		list := &revocationList{}
		list.revoke(t)
		serverCfg := mtls.Mesh{SVID: server, Bundle: bundle, TrustDomain: td, Revoked: list.revoked}.ServerConfig()
		clientCfg := mtls.ClientConfig(client, bundle, serverID)
		clientCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		clientCfg.ServerName = "api.default"
		exchange(t, serverCfg, clientCfg).check(t, true)

		// Resumption works with this config: a second exchange resumes.
		if res := exchange(t, serverCfg, clientCfg); !res.serverState.DidResume {
			t.Fatalf("second exchange: got a full handshake, want a resumed one (server error %v)", res.server)
		}
		list.revoke(t, serialOf(client))
		res := exchange(t, serverCfg, clientCfg)
		if res.client == nil && res.server == nil {
			t.Errorf("revoked client (resumed: %v): got accepted, want refused", res.serverState.DidResume)
		}
	})
}

// TestTrustBundleRotation: peers chaining to any root of the current bundle
// are accepted, in both directions; a new bundle is used by the next
// handshake; a removed root's peers fail new handshakes.
func TestTrustBundleRotation(t *testing.T) {
	rootA, rootB := newWorkloadCA(t, td), newWorkloadCA(t, td)
	serverID, clientID := workloadID(t, td, "default", "api"), workloadID(t, td, "shop", "web")
	svids := map[string]map[string]svid{
		"A": {"server": newSVID(t, rootA, serverID), "client": newSVID(t, rootA, clientID)},
		"B": {"server": newSVID(t, rootB, serverID), "client": newSVID(t, rootB, clientID)},
	}
	// Each side has its own bundle, changed between handshakes.
	serverBundle, clientBundle := &mutableBundle{td: td}, &mutableBundle{td: td}
	type step struct {
		name                       string
		serverTrusts, clientTrusts string // roots, "A", "B" or "AB"
		server, client             string // the root each side's SVID chains to
		wantOK                     bool
	}
	steps := []step{
		{name: "both_on_A", serverTrusts: "A", clientTrusts: "A", server: "A", client: "A", wantOK: true},
		{name: "B_added_server_on_A_client_on_A", serverTrusts: "AB", clientTrusts: "AB", server: "A", client: "A", wantOK: true},
		{name: "server_on_B_client_on_A", serverTrusts: "AB", clientTrusts: "AB", server: "B", client: "A", wantOK: true},
		{name: "server_on_A_client_on_B", serverTrusts: "AB", clientTrusts: "AB", server: "A", client: "B", wantOK: true},
		{name: "both_on_B", serverTrusts: "AB", clientTrusts: "AB", server: "B", client: "B", wantOK: true},
		{name: "server_on_B_client_trusts_only_A", serverTrusts: "AB", clientTrusts: "A", server: "B", client: "A"},
		{name: "A_removed_client_still_on_A", serverTrusts: "B", clientTrusts: "B", server: "B", client: "A"},
		{name: "A_removed_server_still_on_A", serverTrusts: "B", clientTrusts: "B", server: "A", client: "B"},
		{name: "A_removed_both_on_B", serverTrusts: "B", clientTrusts: "B", server: "B", client: "B", wantOK: true},
	}
	roots := func(names string) []*x509.Certificate {
		var out []*x509.Certificate
		if strings.Contains(names, "A") {
			out = append(out, rootA.Roots()...)
		}
		if strings.Contains(names, "B") {
			out = append(out, rootB.Roots()...)
		}
		return out
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			serverBundle.set(roots(st.serverTrusts)...)
			clientBundle.set(roots(st.clientTrusts)...)
			serverCfg := mtls.ServerConfig(svids[st.server]["server"], serverBundle, td)
			clientCfg := mtls.ClientConfig(svids[st.client]["client"], clientBundle, serverID)
			exchange(t, serverCfg, clientCfg).check(t, st.wantOK)
		})
	}
}

// TestExpiringListenerClosePeers: ClosePeers closes the established
// connections of the peers it matches, and only those.
func TestExpiringListenerClosePeers(t *testing.T) {
	c := newWorkloadCA(t, td)
	bundle := &mutableBundle{td: td}
	bundle.set(c.Roots()...)
	serverID := workloadID(t, td, "default", "api")
	list := &revocationList{}
	list.revoke(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, cfg := mtls.ExpireConnections(raw, mtls.Mesh{SVID: newSVID(t, c, serverID), Bundle: bundle, TrustDomain: td, Revoked: list.revoked}.ServerConfig())
	tlsLn := tls.NewListener(ln, cfg)
	t.Cleanup(func() { tlsLn.Close() })
	go func() {
		for {
			conn, err := tlsLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn) // echo
			}()
		}
	}()

	dial := func(s svid) *tls.Conn {
		t.Helper()
		conn, err := tls.Dial("tcp", raw.Addr().String(), mtls.ClientConfig(s, bundle, serverID))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(hangGuard))
		return conn
	}
	echo := func(conn *tls.Conn) error {
		if _, err := conn.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(conn, buf)
		return err
	}
	bad, good := newSVID(t, c, workloadID(t, td, "shop", "web")), newSVID(t, c, workloadID(t, td, "shop", "web"))
	badConn, goodConn := dial(bad), dial(good)
	for _, conn := range []*tls.Conn{badConn, goodConn} {
		if err := echo(conn); err != nil {
			t.Fatalf("echo before revocation: %v", err)
		}
	}

	list.revoke(t, serialOf(bad))
	if got := ln.ClosePeers(list.revoked); got != 1 {
		t.Errorf("ClosePeers: got %d closed, want 1", got)
	}
	if err := echo(badConn); err == nil {
		t.Errorf("echo on the revoked peer's connection: got success, want it closed")
	}
	if err := echo(goodConn); err != nil {
		t.Errorf("echo on another peer's connection: got %v, want success", err)
	}
	if got := ln.ClosePeers(list.revoked); got != 0 {
		t.Errorf("ClosePeers again: got %d closed, want 0", got)
	}
	// New handshakes with the revoked SVID fail.
	conn, err := tls.Dial("tcp", raw.Addr().String(), mtls.ClientConfig(bad, bundle, serverID))
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(hangGuard))
		err = echo(conn)
		conn.Close()
	}
	if err == nil {
		t.Errorf("new connection with the revoked SVID: got success, want it refused")
	}
}

// TestClientConfigRechecksResumedSessions: a client resuming a session
// checks the server against the current bundle and revocation list again.
func TestClientConfigRechecksResumedSessions(t *testing.T) {
	oldCA, newCA := newWorkloadCA(t, td), newWorkloadCA(t, td)
	serverID := workloadID(t, td, "default", "api")
	serverBundle := &mutableBundle{td: td}
	serverBundle.set(rootsOf(oldCA, newCA)...)
	server := newSVID(t, oldCA, serverID)
	serverCfg := mtls.ServerConfig(server, serverBundle, td)

	tests := []struct {
		name   string
		change func(b *mutableBundle, l *revocationList)
		wantOK bool
	}{
		{name: "nothing_changed", change: func(*mutableBundle, *revocationList) {}, wantOK: true},
		{name: "root_removed", change: func(b *mutableBundle, _ *revocationList) { b.set(rootsOf(newCA)...) }},
		{name: "server_revoked", change: func(_ *mutableBundle, l *revocationList) { l.revoke(t, serialOf(server)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clientBundle := &mutableBundle{td: td}
			clientBundle.set(rootsOf(oldCA, newCA)...)
			list := &revocationList{}
			list.revoke(t)
			clientCfg := mtls.Mesh{SVID: newSVID(t, newCA, workloadID(t, td, "shop", "web")), Bundle: clientBundle, Revoked: list.revoked}.ClientConfig(serverID)
			clientCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
			clientCfg.ServerName = "api.default"
			exchange(t, serverCfg, clientCfg).check(t, true)

			tt.change(clientBundle, list)
			res := exchange(t, serverCfg, clientCfg)
			if tt.wantOK {
				// The case the others rely on: the session is resumed.
				if res.client != nil || !res.state.DidResume {
					t.Errorf("client: got error %v, resumed %v; want a resumed session", res.client, res.state.DidResume)
				}
				return
			}
			if res.client == nil {
				t.Errorf("client (resumed: %v): got success, want the server refused", res.state.DidResume)
			}
		})
	}
}
