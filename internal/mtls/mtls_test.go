package mtls_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
)

// meshCAs are the CAs the handshake tests draw certificates from: the
// mesh's CA, an unrelated CA of the same trust domain, and the CA of
// another trust domain.
type meshCAs struct {
	main, impostor, other *ca.CA
	// bundles holds the bundles of td (main CA) and of otherTD, so that an
	// SVID of otherTD verifies as a chain and only the authorizer can
	// refuse it.
	bundles *x509bundle.Set
}

func newMeshCAs(t testing.TB) *meshCAs {
	t.Helper()
	m := &meshCAs{main: newWorkloadCA(t, td), impostor: newWorkloadCA(t, td), other: newWorkloadCA(t, otherTD)}
	m.bundles = x509bundle.NewSet(m.main.Bundle(), m.other.Bundle())
	return m
}

func TestServerConfig(t *testing.T) {
	m := newMeshCAs(t)
	server := newSVID(t, m.main, workloadID(t, td, "default", "api"))
	serverCfg := mtls.ServerConfig(server, m.bundles, td)
	// Every client offers h2, so that only its certificate or version can
	// fail the handshake (TestServerConfigALPN covers the protocol).
	h2 := func(c *tls.Config) *tls.Config {
		c.NextProtos = []string{mtls.ProtoH2}
		return c
	}
	withSVID := func(s svid) *tls.Config {
		return h2(tlsconfig.MTLSClientConfig(s, m.bundles, tlsconfig.AuthorizeAny()))
	}

	tests := []struct {
		name   string
		client *tls.Config
		wantOK bool
	}{
		{name: "workload_svid", client: withSVID(newSVID(t, m.main, workloadID(t, td, "shop", "web"))), wantOK: true},
		{name: "no_client_certificate", client: h2(tlsconfig.TLSClientConfig(m.bundles, tlsconfig.AuthorizeAny()))},
		{name: "svid_from_another_ca", client: withSVID(newSVID(t, m.impostor, workloadID(t, td, "shop", "web")))},
		{name: "control_plane_id", client: withSVID(newSVID(t, m.main, identity.ControlPlaneID(td)))},
		{name: "namespace_without_account", client: withSVID(newSVID(t, m.main, mustID(t, "spiffe://bulwark.test/ns/shop")))},
		{name: "extra_path_segment", client: withSVID(newSVID(t, m.main, mustID(t, "spiffe://bulwark.test/ns/shop/sa/web/extra")))},
		{name: "svid_of_another_trust_domain", client: withSVID(newSVID(t, m.other, workloadID(t, otherTD, "shop", "web")))},
		{name: "tls_1_2", client: func() *tls.Config {
			c := withSVID(newSVID(t, m.main, workloadID(t, td, "shop", "web")))
			c.MaxVersion = tls.VersionTLS12
			return c
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := exchange(t, serverCfg, tt.client)
			res.check(t, tt.wantOK)
			if tt.wantOK && res.state.Version != tls.VersionTLS13 {
				t.Errorf("version: got %x, want TLS 1.3", res.state.Version)
			}
		})
	}
}

// TestServerConfigALPN: the inbound speaks HTTP/2 only. A client that does
// not negotiate h2 (it offers only http/1.1, or no ALPN, which crypto/tls
// would accept without a protocol) fails the handshake.
func TestServerConfigALPN(t *testing.T) {
	m := newMeshCAs(t)
	serverCfg := mtls.ServerConfig(newSVID(t, m.main, workloadID(t, td, "default", "api")), m.bundles, td)
	client := newSVID(t, m.main, workloadID(t, td, "shop", "web"))
	tests := []struct {
		name   string
		offers []string
		wantOK bool
	}{
		{name: "h2", offers: []string{mtls.ProtoH2}, wantOK: true},
		{name: "h2_among_others", offers: []string{mtls.ProtoHTTP1, mtls.ProtoH2}, wantOK: true},
		{name: "http1", offers: []string{mtls.ProtoHTTP1}},
		{name: "no_alpn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tlsconfig.MTLSClientConfig(client, m.bundles, tlsconfig.AuthorizeAny())
			cfg.NextProtos = tt.offers
			res := exchange(t, serverCfg, cfg)
			res.check(t, tt.wantOK)
			if !tt.wantOK {
				if res.server == nil || !strings.Contains(res.server.Error(), "HTTP/2 only") {
					t.Errorf("server error: got %v, want the HTTP/2-only refusal", res.server)
				}
				return
			}
			if got := res.state.NegotiatedProtocol; got != mtls.ProtoH2 {
				t.Errorf("negotiated protocol: got %q, want %q", got, mtls.ProtoH2)
			}
		})
	}
}

func TestClientConfig(t *testing.T) {
	m := newMeshCAs(t)
	apiID := workloadID(t, td, "default", "api")
	client := newSVID(t, m.main, workloadID(t, td, "shop", "web"))
	tests := []struct {
		name   string
		server svid
		want   spiffeid.ID
		wantOK bool
	}{
		{name: "expected_identity", server: newSVID(t, m.main, apiID), want: apiID, wantOK: true},
		{name: "other_identity", server: newSVID(t, m.main, apiID), want: workloadID(t, td, "default", "api-v2")},
		{name: "same_account_other_namespace", server: newSVID(t, m.main, workloadID(t, td, "shop", "api")), want: apiID},
		{name: "expected_identity_from_another_ca", server: newSVID(t, m.impostor, apiID), want: apiID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverCfg := mtls.ServerConfig(tt.server, m.bundles, td)
			res := exchange(t, serverCfg, mtls.ClientConfig(client, m.main.Bundle(), tt.want))
			res.check(t, tt.wantOK)
			if !tt.wantOK {
				return
			}
			if res.state.Version != tls.VersionTLS13 || res.state.NegotiatedProtocol != mtls.ProtoH2 {
				t.Errorf("got version %x protocol %q, want TLS 1.3 and %q", res.state.Version, res.state.NegotiatedProtocol, mtls.ProtoH2)
			}
		})
	}
}

func TestBootstrapControlConfig(t *testing.T) {
	m := newMeshCAs(t)
	controlCert, _ := servingCert(t, m.main, identity.ControlPlaneID(td))
	workloadCert, _ := servingCert(t, m.main, workloadID(t, td, "default", "api"))
	otherTDCert, _ := servingCert(t, m.other, identity.ControlPlaneID(otherTD))
	impostorCert, impostorChain := servingCert(t, m.impostor, identity.ControlPlaneID(td))
	root := m.main.Roots()[0]
	pin := mtls.SPKIPin(root)

	// The impostor's chain with the mesh's real root in place of its own,
	// so that the pin finds an anchor.
	forged := impostorCert
	forged.Certificate = [][]byte{impostorChain[0].Raw, impostorChain[1].Raw, root.Raw}

	roots := func(rs ...*x509.Certificate) func([]*x509.Certificate) ([]*x509.Certificate, error) {
		return func([]*x509.Certificate) ([]*x509.Certificate, error) { return rs, nil }
	}
	pinned := func(pin string) func([]*x509.Certificate) ([]*x509.Certificate, error) {
		return func(chain []*x509.Certificate) ([]*x509.Certificate, error) {
			a, err := mtls.PinnedAnchor(chain, pin)
			if err != nil {
				return nil, err
			}
			return []*x509.Certificate{a}, nil
		}
	}
	tests := []struct {
		name    string
		cert    tls.Certificate
		anchors func([]*x509.Certificate) ([]*x509.Certificate, error)
		wantTD  spiffeid.TrustDomain
		// wantVerified is the trust domain onVerified must get; zero: the
		// handshake must fail and onVerified must not be called.
		wantVerified spiffeid.TrustDomain
	}{
		{name: "right_roots", cert: controlCert, anchors: roots(m.main.Roots()...), wantVerified: td},
		{name: "right_roots_and_trust_domain", cert: controlCert, anchors: roots(m.main.Roots()...), wantTD: td, wantVerified: td},
		{name: "pinned_root", cert: controlCert, anchors: pinned(pin), wantVerified: td},
		{name: "learns_other_trust_domain", cert: otherTDCert, anchors: roots(m.other.Roots()...), wantVerified: otherTD},
		{name: "wrong_roots", cert: controlCert, anchors: roots(m.impostor.Roots()...)},
		{name: "roots_of_another_trust_domain", cert: controlCert, anchors: roots(m.other.Roots()...)},
		{name: "wrong_pin", cert: controlCert, anchors: pinned(mtls.SPKIPin(m.impostor.Roots()[0]))},
		{name: "workload_leaf", cert: workloadCert, anchors: roots(m.main.Roots()...)},
		{name: "trust_domain_mismatch", cert: controlCert, anchors: roots(m.main.Roots()...), wantTD: otherTD},
		{name: "anchors_fail", cert: controlCert, anchors: func([]*x509.Certificate) ([]*x509.Certificate, error) { return nil, errNoAnchors }},
		{name: "forged_chain_with_real_root", cert: forged, anchors: pinned(pin)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var verified []spiffeid.TrustDomain
			client := mtls.BootstrapControlConfig(tt.anchors, tt.wantTD, func(got spiffeid.TrustDomain) {
				mu.Lock()
				defer mu.Unlock()
				verified = append(verified, got)
			})
			server := &tls.Config{Certificates: []tls.Certificate{tt.cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{mtls.ProtoH2}}
			res := exchange(t, server, client)
			wantOK := !tt.wantVerified.IsZero()
			res.check(t, wantOK)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case wantOK && (len(verified) != 1 || verified[0] != tt.wantVerified):
				t.Errorf("onVerified: got %v, want [%s]", verified, tt.wantVerified)
			case !wantOK && len(verified) != 0:
				t.Errorf("onVerified: got %v, want no call", verified)
			}
		})
	}
}

func TestBootstrapControlConfigRequiresTLS13(t *testing.T) {
	m := newMeshCAs(t)
	controlCert, _ := servingCert(t, m.main, identity.ControlPlaneID(td))
	client := mtls.BootstrapControlConfig(func([]*x509.Certificate) ([]*x509.Certificate, error) { return m.main.Roots(), nil }, td, nil)
	server := &tls.Config{Certificates: []tls.Certificate{controlCert}, MaxVersion: tls.VersionTLS12}
	exchange(t, server, client).check(t, false)
}

func TestPinnedAnchor(t *testing.T) {
	m := newMeshCAs(t)
	_, chain := servingCert(t, m.main, identity.ControlPlaneID(td))
	if len(chain) != 3 {
		t.Fatalf("SignServing: got a chain of %d certificates, want [leaf, intermediate, root]", len(chain))
	}
	leaf, inter, root := chain[0], chain[1], chain[2]
	tests := []struct {
		name    string
		chain   []*x509.Certificate
		pin     string
		want    *x509.Certificate
		wantErr bool
	}{
		{name: "root", chain: chain, pin: mtls.SPKIPin(root), want: root},
		{name: "intermediate", chain: chain, pin: mtls.SPKIPin(inter), want: inter},
		{name: "root_anywhere_in_chain", chain: []*x509.Certificate{root, leaf}, pin: mtls.SPKIPin(root), want: root},
		{name: "nil_entries_skipped", chain: []*x509.Certificate{nil, leaf, nil, root}, pin: mtls.SPKIPin(root), want: root},
		{name: "leaf_is_not_a_ca", chain: chain, pin: mtls.SPKIPin(leaf), wantErr: true},
		{name: "root_absent", chain: chain[:2], pin: mtls.SPKIPin(root), wantErr: true},
		{name: "other_ca", chain: chain, pin: mtls.SPKIPin(m.impostor.Roots()[0]), wantErr: true},
		{name: "empty_chain", chain: nil, pin: mtls.SPKIPin(root), wantErr: true},
		{name: "no_prefix", chain: chain, pin: strings.TrimPrefix(mtls.SPKIPin(root), "sha256:"), wantErr: true},
		{name: "other_hash_prefix", chain: chain, pin: "sha384:" + strings.TrimPrefix(mtls.SPKIPin(root), "sha256:"), wantErr: true},
		{name: "empty_pin", chain: chain, pin: "", wantErr: true},
		{name: "truncated_pin", chain: chain, pin: mtls.SPKIPin(root)[:20], wantErr: true},
		{name: "prefix_only", chain: chain, pin: "sha256:", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mtls.PinnedAnchor(tt.chain, tt.pin)
			if tt.wantErr {
				if !errors.Is(err, mtls.ErrPinMismatch) {
					t.Errorf("got %v, %v; want an error wrapping ErrPinMismatch", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %s", got, err, tt.want.Subject)
			}
		})
	}
}

func TestSPKIPin(t *testing.T) {
	m := newMeshCAs(t)
	root := m.main.Roots()[0]
	pin := mtls.SPKIPin(root)
	// "sha256:" and 43 characters: the unpadded base64url of 32 bytes.
	if !strings.HasPrefix(pin, "sha256:") || len(pin) != len("sha256:")+43 || strings.ContainsAny(pin, "+/=") {
		t.Errorf("SPKIPin: got %q, want sha256: and 43 unpadded base64url characters", pin)
	}
	if again := mtls.SPKIPin(root); again != pin {
		t.Errorf("SPKIPin is not deterministic: got %q, then %q", pin, again)
	}
	if other := mtls.SPKIPin(m.impostor.Roots()[0]); other == pin {
		t.Errorf("SPKIPin of two different roots: got %q twice, want different pins", pin)
	}
}

func TestControlServerConfig(t *testing.T) {
	m := newMeshCAs(t)
	controlCert, _ := servingCert(t, m.main, identity.ControlPlaneID(td))
	workloadServer, _ := servingCert(t, m.main, workloadID(t, td, "default", "api"))
	web := newSVID(t, m.main, workloadID(t, td, "shop", "web"))
	tests := []struct {
		name string
		// serverCert is what the server presents; default controlCert.
		serverCert *tls.Certificate
		client     svid // zero: no client certificate
		maxVersion uint16
		wantOK     bool
		wantPeer   bool // the server saw a client certificate
	}{
		{name: "no_client_certificate", wantOK: true},
		{name: "workload_svid", client: web, wantOK: true, wantPeer: true},
		{name: "svid_from_another_ca", client: newSVID(t, m.impostor, workloadID(t, td, "shop", "web"))},
		{name: "control_plane_id_as_client", client: newSVID(t, m.main, identity.ControlPlaneID(td))},
		{name: "svid_of_another_trust_domain", client: newSVID(t, m.other, workloadID(t, otherTD, "shop", "web"))},
		{name: "server_is_not_the_control_plane", serverCert: &workloadServer, client: web},
		{name: "tls_1_2", client: web, maxVersion: tls.VersionTLS12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &controlCert
			if tt.serverCert != nil {
				cert = tt.serverCert
			}
			getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }
			server := mtls.ControlServerConfig(getCert, m.bundles, td)
			var client *tls.Config
			if tt.client.s == nil {
				client = mtls.ControlClientConfig(nil, m.main.Bundle(), td)
			} else {
				client = mtls.ControlClientConfig(tt.client, m.main.Bundle(), td)
			}
			client.MaxVersion = tt.maxVersion
			res := exchange(t, server, client)
			res.check(t, tt.wantOK)
			if tt.wantOK {
				if got := len(res.serverState.PeerCertificates) > 0; got != tt.wantPeer {
					t.Errorf("server saw a client certificate: got %v, want %v", got, tt.wantPeer)
				}
			}
		})
	}
}

func TestAdminServerConfig(t *testing.T) {
	op := newOperatorCA(t)
	otherOp := newOperatorCA(t)
	m := newMeshCAs(t)

	serverKey := newKey(t)
	serverLeaf, err := op.SignServer(&serverKey.PublicKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	serverCert := tlsCert([]*x509.Certificate{serverLeaf}, serverKey)
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serverCert, nil }
	operator := func(o *ca.OperatorCA, name string) tls.Certificate {
		k := newKey(t)
		c, err := o.SignClient(&k.PublicKey, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		return tlsCert([]*x509.Certificate{c}, k)
	}
	web := newSVID(t, m.main, workloadID(t, td, "shop", "web")).s
	workloadCert := tlsCert(web.Certificates, newKey(t))
	workloadCert.PrivateKey = web.PrivateKey

	roots := x509.NewCertPool()
	roots.AddCert(op.Root())
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(otherOp.Root())

	withCert := func(pool *x509.CertPool, c tls.Certificate) *tls.Config {
		cfg := mtls.AdminClientConfig(pool, c)
		cfg.ServerName = "localhost"
		// crypto/tls withholds a certificate whose issuer is not among the
		// server's acceptable CAs; a hostile client sends it anyway.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		return cfg
	}
	tests := []struct {
		name         string
		client       *tls.Config
		wantOK       bool
		wantOperator string // the operator the server authenticated; "" none
	}{
		{name: "no_client_certificate", client: &tls.Config{RootCAs: roots, ServerName: "localhost"}, wantOK: true},
		{name: "operator_certificate", client: withCert(roots, operator(op, "alice")), wantOK: true, wantOperator: "alice"},
		{name: "operator_certificate_tls_1_2", client: func() *tls.Config {
			c := withCert(roots, operator(op, "bob"))
			c.MaxVersion = tls.VersionTLS12
			return c
		}(), wantOK: true, wantOperator: "bob"},
		{name: "workload_svid", client: withCert(roots, workloadCert)},
		{name: "operator_of_another_ca", client: withCert(roots, operator(otherOp, "mallory"))},
		{name: "server_not_signed_by_credential_ca", client: withCert(otherRoots, operator(op, "alice"))},
		{name: "tls_1_2_legacy_suite", client: func() *tls.Config {
			c := withCert(roots, operator(op, "alice"))
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}
			return c
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := exchange(t, mtls.AdminServerConfig(getCert, roots), tt.client)
			res.check(t, tt.wantOK)
			if !tt.wantOK {
				return
			}
			got := ""
			if len(res.serverState.VerifiedChains) > 0 {
				name, err := ca.OperatorName(res.serverState.PeerCertificates[0])
				if err != nil {
					t.Fatalf("OperatorName: %v", err)
				}
				got = name
			}
			if got != tt.wantOperator {
				t.Errorf("authenticated operator: got %q, want %q", got, tt.wantOperator)
			}
		})
	}
}

func TestAuthorizeWorkload(t *testing.T) {
	tests := []struct {
		name   string
		id     string
		wantOK bool
	}{
		{name: "workload", id: "spiffe://bulwark.test/ns/default/sa/web", wantOK: true},
		{name: "other_trust_domain", id: "spiffe://other.test/ns/default/sa/web"},
		{name: "subdomain_trust_domain", id: "spiffe://x.bulwark.test/ns/default/sa/web"},
		{name: "control_plane", id: "spiffe://bulwark.test/bulwark/control"},
		{name: "trust_domain_only", id: "spiffe://bulwark.test"},
		{name: "extra_segment", id: "spiffe://bulwark.test/ns/default/sa/web/x"},
		{name: "empty_namespace", id: "spiffe://bulwark.test/ns//sa/web"},
		{name: "bad_account", id: "spiffe://bulwark.test/ns/default/sa/Web_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := spiffeid.FromString(tt.id)
			if err != nil {
				// go-spiffe itself refuses it: nothing to authorize.
				if tt.wantOK {
					t.Fatalf("FromString(%q): %v", tt.id, err)
				}
				return
			}
			err = mtls.AuthorizeWorkload(td)(id, nil)
			if (err == nil) != tt.wantOK {
				t.Errorf("AuthorizeWorkload(%s): got error %v, want ok %v", id, err, tt.wantOK)
			}
		})
	}
}
