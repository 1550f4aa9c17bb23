package control_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// attestRaw calls Attest without a client certificate.
func attestRaw(t testing.TB, m mesh, token, service string, csr []byte) (*apiv1.AttestResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	return m.dial(t, nil).Attest(ctx, &apiv1.AttestRequest{JoinToken: token, Csr: csr, Service: service})
}

// wantCode fails the test unless err carries code.
func wantCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got code %s (%v), want %s", got, err, want)
	}
}

// rootsDER returns the DER of the bundle's roots.
func rootsDER(m mesh) [][]byte {
	var out [][]byte
	for _, c := range m.bundle.X509Authorities() {
		out = append(out, c.Raw)
	}
	return out
}

func TestAttest(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	now := p.clock.Now()

	t.Run("IssuesTheTokenIdentity", func(t *testing.T) {
		tests := []struct {
			name, service, account string
			wantID, wantInstance   string
		}{
			{name: "DefaultAccount", service: "shop/web", wantID: "spiffe://bulwark.test/ns/shop/sa/web", wantInstance: "web-"},
			{name: "ExplicitAccount", service: "shop/api", account: "backend", wantID: "spiffe://bulwark.test/ns/shop/sa/backend", wantInstance: "api-"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				key := newKey(t)
				resp, err := attestRaw(t, p.mesh, p.token(t, tt.service, tt.account), tt.service, newCSR(t, key, nil))
				if err != nil {
					t.Fatalf("Attest: %v", err)
				}
				s := p.svidFrom(t, resp.GetSvid(), key) // verifies the chain against bundle.pem
				if got := s.ID.String(); got != tt.wantID {
					t.Errorf("SPIFFE ID: got %s, want %s", got, tt.wantID)
				}
				leaf := s.Certificates[0]
				if !key.PublicKey.Equal(leaf.PublicKey) {
					t.Error("leaf public key: got another key, want the CSR's")
				}
				if got, want := leaf.NotAfter, now.Add(control.DefaultSVIDTTL).Truncate(time.Second); !got.Equal(want) {
					t.Errorf("NotAfter: got %s, want %s (the default SVID TTL on the injected clock)", got, want)
				}
				if err := identity.ValidateName(resp.GetInstance()); err != nil || !strings.HasPrefix(resp.GetInstance(), tt.wantInstance) {
					t.Errorf("instance: got %q, want a valid name starting %q", resp.GetInstance(), tt.wantInstance)
				}
				if diff := cmp.Diff(rootsDER(p.mesh), resp.GetBundle()); diff != "" {
					t.Errorf("bundle: differs from bundle.pem (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("IgnoresNamesInTheCSR", func(t *testing.T) {
		admin := spiffeid.RequireFromString("spiffe://bulwark.test/ns/kube-system/sa/admin")
		key := newKey(t)
		csr := newCSR(t, key, &x509.CertificateRequest{
			Subject:        pkix.Name{CommonName: admin.String(), Organization: []string{ca.OperatorOrganization}},
			DNSNames:       []string{"control.bulwark.test", "localhost"},
			IPAddresses:    []net.IP{net.IPv4(127, 0, 0, 1)},
			EmailAddresses: []string{"root@bulwark.test"},
			URIs:           []*url.URL{admin.URL()},
		})
		resp, err := attestRaw(t, p.mesh, p.token(t, "shop/web", ""), "shop/web", csr)
		if err != nil {
			t.Fatalf("Attest: %v", err)
		}
		leaf := p.svidFrom(t, resp.GetSvid(), key).Certificates[0]
		type names struct {
			URIs, DNS, IPs, Emails []string
			CN                     string
		}
		got := names{DNS: leaf.DNSNames, Emails: leaf.EmailAddresses, CN: leaf.Subject.CommonName}
		for _, u := range leaf.URIs {
			got.URIs = append(got.URIs, u.String())
		}
		for _, ip := range leaf.IPAddresses {
			got.IPs = append(got.IPs, ip.String())
		}
		want := names{URIs: []string{"spiffe://bulwark.test/ns/shop/sa/web"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("SVID names (-want +got):\n%s", diff)
		}
		if name, err := ca.OperatorName(leaf); err == nil {
			t.Errorf("ca.OperatorName(svid): got operator %q, want an error", name)
		}
	})

	t.Run("MalformedCSRKeepsTheToken", func(t *testing.T) {
		good := newCSR(t, newKey(t), nil)
		badSig := slices.Clone(good)
		badSig[len(badSig)-1] ^= 1 // last byte of the signature
		p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			csr  []byte
		}{
			{"Empty", nil},
			{"Garbage", []byte("not a certificate request")},
			{"Truncated", good[:len(good)/2]},
			{"BadSignature", badSig},
			{"UnsupportedKeyP521", newCSR(t, p521, nil)},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				token := p.token(t, "shop/web", "")
				_, err := attestRaw(t, p.mesh, token, "shop/web", tt.csr)
				wantCode(t, err, codes.InvalidArgument)
				if _, err := attestRaw(t, p.mesh, token, "shop/web", newCSR(t, newKey(t), nil)); err != nil {
					t.Fatalf("Attest with the same token and a good CSR: got %v, want success (token not consumed)", err)
				}
			})
		}
	})

	t.Run("AnotherServiceKeepsTheToken", func(t *testing.T) {
		token := p.token(t, "shop/web", "")
		for _, svc := range []string{"shop/api", "other/web"} {
			_, err := attestRaw(t, p.mesh, token, svc, newCSR(t, newKey(t), nil))
			wantCode(t, err, codes.PermissionDenied)
		}
		if _, err := attestRaw(t, p.mesh, token, "shop/web", newCSR(t, newKey(t), nil)); err != nil {
			t.Fatalf("Attest as the token's service: got %v, want success (token not consumed)", err)
		}
	})

	t.Run("MalformedServiceKeepsTheToken", func(t *testing.T) {
		token := p.token(t, "shop/web", "")
		for _, svc := range []string{"", "web", "shop/", "/web", "shop/web/extra", "Shop/web", "shop/web "} {
			_, err := attestRaw(t, p.mesh, token, svc, newCSR(t, newKey(t), nil))
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Errorf("service %q: got code %s (%v), want InvalidArgument", svc, got, err)
			}
		}
		if _, err := attestRaw(t, p.mesh, token, "shop/web", newCSR(t, newKey(t), nil)); err != nil {
			t.Fatalf("Attest as the token's service: got %v, want success (token not consumed)", err)
		}
	})

	t.Run("ReusedToken", func(t *testing.T) {
		token := p.token(t, "shop/web", "")
		if _, err := attestRaw(t, p.mesh, token, "shop/web", newCSR(t, newKey(t), nil)); err != nil {
			t.Fatalf("first Attest: %v", err)
		}
		_, err := attestRaw(t, p.mesh, token, "shop/web", newCSR(t, newKey(t), nil))
		wantCode(t, err, codes.PermissionDenied)
	})

	t.Run("UnknownToken", func(t *testing.T) {
		for _, token := range []string{"", "garbage", "bwjt." + strings.Repeat("A", 43)} {
			_, err := attestRaw(t, p.mesh, token, "shop/web", newCSR(t, newKey(t), nil))
			if got := status.Code(err); got != codes.PermissionDenied {
				t.Errorf("token %q: got code %s (%v), want PermissionDenied", token, got, err)
			}
		}
	})
}

func TestSignSVID(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")

	t.Run("NoClientCertificate", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		_, err := p.dial(t, nil).SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)})
		wantCode(t, err, codes.Unauthenticated)
	})

	t.Run("RenewsTheCallersIdentity", func(t *testing.T) {
		key := newKey(t)
		csr := newCSR(t, key, &x509.CertificateRequest{
			Subject:  pkix.Name{CommonName: "admin"},
			DNSNames: []string{"api.shop"},
			URIs:     []*url.URL{spiffeid.RequireFromString("spiffe://bulwark.test/ns/kube-system/sa/admin").URL()},
		})
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		resp, err := web.client.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: csr})
		if err != nil {
			t.Fatalf("SignSVID: %v", err)
		}
		renewed := p.svidFrom(t, resp.GetSvid(), key)
		if renewed.ID != web.svid.ID {
			t.Errorf("renewed SPIFFE ID: got %s, want %s", renewed.ID, web.svid.ID)
		}
		leaf := renewed.Certificates[0]
		if len(leaf.URIs) != 1 || len(leaf.DNSNames) != 0 || leaf.Subject.CommonName != "" {
			t.Errorf("renewed SVID names: got URIs %v DNS %v CN %q, want only the caller's ID", leaf.URIs, leaf.DNSNames, leaf.Subject.CommonName)
		}
		if !key.PublicKey.Equal(leaf.PublicKey) {
			t.Error("renewed leaf public key: got another key, want the CSR's")
		}
		if leaf.SerialNumber.Cmp(web.svid.Certificates[0].SerialNumber) == 0 {
			t.Error("renewed serial: got the old SVID's serial, want a new one")
		}
		if diff := cmp.Diff(rootsDER(p.mesh), resp.GetBundle()); diff != "" {
			t.Errorf("bundle (-want +got):\n%s", diff)
		}
		// The renewed SVID renews in turn.
		if _, err := p.dial(t, renewed).SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)}); err != nil {
			t.Errorf("SignSVID with the renewed SVID: %v", err)
		}
	})

	t.Run("MalformedCSR", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		_, err := web.client.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: []byte("junk")})
		wantCode(t, err, codes.InvalidArgument)
	})

	t.Run("ForeignSVIDFailsTheHandshake", func(t *testing.T) {
		tests := []struct {
			name string
			td   spiffeid.TrustDomain
		}{
			{"AnotherCAOfTheTrustDomain", td},
			{"AnotherTrustDomain", spiffeid.RequireTrustDomainFromString("other.test")},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				st, err := bolt.Open(filepath.Join(t.TempDir(), "other.db"), bolt.Config{})
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				other, err := ca.New(context.Background(), ca.Config{TrustDomain: tt.td, Store: st, Keys: keymanager.NewMemory()})
				if err != nil {
					t.Fatal(err)
				}
				id := spiffeid.RequireFromSegments(tt.td, "ns", "shop", "sa", "web")
				key := newKey(t)
				chain, err := other.SignSVID(&key.PublicKey, id, 0)
				if err != nil {
					t.Fatal(err)
				}
				forged := &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
				ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
				defer cancel()
				resp, err := p.dial(t, forged).SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)})
				if err == nil {
					t.Fatalf("SignSVID with an SVID of another CA: got SVID %s, want a failed handshake", resp.GetSvid().GetSpiffeId())
				}
				// The TLS handshake fails, so the RPC never reaches the
				// service: the client sees an unavailable connection.
				wantCode(t, err, codes.Unavailable)
			})
		}
	})
}

func TestSubscribeRefused(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	p.attest(t, "shop/api", "")
	addr := web.listen(t, p.mesh)
	with := func(fn func(n *apiv1.Node)) *apiv1.SubscribeRequest {
		n := web.node(addr)
		fn(n)
		return nodeMsg(n)
	}
	tests := []struct {
		name   string
		client apiv1.ControlClient
		first  *apiv1.SubscribeRequest
		want   codes.Code
	}{
		{"NoClientCertificate", p.dial(t, nil), nodeMsg(web.node(addr)), codes.Unauthenticated},
		{"FirstMessageIsAnAck", web.client, ackMsg(1, ""), codes.InvalidArgument},
		{"FirstMessageIsEmpty", web.client, &apiv1.SubscribeRequest{}, codes.InvalidArgument},
		{"ServiceNotAttested", web.client, with(func(n *apiv1.Node) { n.Service = "shop/api" }), codes.PermissionDenied},
		{"ServiceInAnotherNamespace", web.client, with(func(n *apiv1.Node) { n.Service = "other/web" }), codes.PermissionDenied},
		{"ServiceWithoutNamespace", web.client, with(func(n *apiv1.Node) { n.Service = "web" }), codes.InvalidArgument},
		{"ServiceEmpty", web.client, with(func(n *apiv1.Node) { n.Service = "" }), codes.InvalidArgument},
		{"InstanceEmpty", web.client, with(func(n *apiv1.Node) { n.Instance = "" }), codes.InvalidArgument},
		{"InstanceNotAName", web.client, with(func(n *apiv1.Node) { n.Instance = "Web_1" }), codes.InvalidArgument},
		{"InstanceWithSlash", web.client, with(func(n *apiv1.Node) { n.Instance = "web/../api" }), codes.InvalidArgument},
		{"InstanceTooLong", web.client, with(func(n *apiv1.Node) { n.Instance = strings.Repeat("a", 64) }), codes.InvalidArgument},
		{"AddressUnspecifiedIPv4", web.client, with(func(n *apiv1.Node) { n.Address = "0.0.0.0:1" }), codes.InvalidArgument},
		{"AddressUnspecifiedIPv6", web.client, with(func(n *apiv1.Node) { n.Address = "[::]:8080" }), codes.InvalidArgument},
		{"AddressWithoutPort", web.client, with(func(n *apiv1.Node) { n.Address = "127.0.0.1" }), codes.InvalidArgument},
		{"AddressPortZero", web.client, with(func(n *apiv1.Node) { n.Address = "127.0.0.1:0" }), codes.InvalidArgument},
		{"AddressPortTooLarge", web.client, with(func(n *apiv1.Node) { n.Address = "127.0.0.1:65536" }), codes.InvalidArgument},
		{"AddressNamedPort", web.client, with(func(n *apiv1.Node) { n.Address = "127.0.0.1:http" }), codes.InvalidArgument},
		{"AddressWithoutHost", web.client, with(func(n *apiv1.Node) { n.Address = ":8080" }), codes.InvalidArgument},
		{"LocalityThreeParts", web.client, with(func(n *apiv1.Node) { n.Locality = "eu/west/a" }), codes.InvalidArgument},
		{"LocalityUpperCase", web.client, with(func(n *apiv1.Node) { n.Locality = "EU/a" }), codes.InvalidArgument},
		{"LocalityPartTooLong", web.client, with(func(n *apiv1.Node) { n.Locality = "eu/" + strings.Repeat("a", 64) }), codes.InvalidArgument},
		{"LocalityControlCharacter", web.client, with(func(n *apiv1.Node) { n.Locality = "eu/a\n" }), codes.InvalidArgument},
		{"ProtocolUnknown", web.client, with(func(n *apiv1.Node) { n.Protocol = "udp" }), codes.InvalidArgument},
		{"ProtocolUpperCase", web.client, with(func(n *apiv1.Node) { n.Protocol = "HTTP" }), codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := subscribe(t, tt.client, tt.first)
			if code, msg := s.recvErr(t); code != tt.want {
				t.Errorf("got code %s (%s), want %s", code, msg, tt.want)
			}
		})
	}

	t.Run("NoRecordLeft", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		b, err := p.admin.List(ctx, "proxies", "")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), web.instance) {
			t.Errorf("proxies after refused subscriptions: got %s, want no record of %s", b, web.instance)
		}
	})
}

func TestSubscribeInstanceOfAnotherIdentity(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	api := p.attest(t, "shop/api", "")

	owner := subscribe(t, web.client, nodeMsg(web.node(web.listen(t, p.mesh))))
	snap := owner.recv(t)
	for !slices.Contains(snap.GetServices(), "shop/web") {
		snap = owner.recv(t)
	}
	before := p.waitView(t, "shop", web.instance, func(s config.ProxyStatus) bool { return s.SnapshotVersion == snap.GetVersion() })

	n := api.node(api.listen(t, p.mesh))
	n.Instance = web.instance
	s := subscribe(t, api.client, nodeMsg(n))
	if code, msg := s.recvErr(t); code != codes.PermissionDenied {
		t.Errorf("subscribe with another identity's instance: got code %s (%s), want PermissionDenied", code, msg)
	}
	after := p.proxyView(t, "shop", web.instance)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("record of %s changed by another identity (-before +after):\n%s", web.instance, diff)
	}
	// The owner's stream is unaffected.
	owner.end(t)
}

func TestSubscribeLifecycle(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	addr := web.listen(t, p.mesh)
	s := subscribe(t, web.client, nodeMsg(web.node(addr)))

	// The first snapshot comes at once, with no policy in the mesh.
	snap := s.recv(t)
	if snap.GetVersion() <= 0 {
		t.Errorf("first snapshot version: got %d, want > 0", snap.GetVersion())
	}
	if diff := cmp.Diff(rootsDER(p.mesh), snap.GetTrustBundle()); diff != "" {
		t.Errorf("trust bundle (-want +got):\n%s", diff)
	}
	if n := len(snap.GetInbound().GetPolicies()) + len(snap.GetDestinations()); n != 0 {
		t.Errorf("first snapshot: got %d policies and destinations, want none", n)
	}
	// The proxy's own endpoint makes the mesh's state change; the proxy
	// gets that as a later version.
	for !slices.Contains(snap.GetServices(), "shop/web") {
		snap = s.recv(t)
	}

	leaf := web.svid.Certificates[0]
	got := p.proxyView(t, "shop", web.instance)
	want := got // LastSeen and SnapshotVersion are checked below
	want.Identity = web.svid.ID.String()
	want.Service = "shop/web"
	want.Address = addr
	want.Connected = true
	want.SVIDSerial = leaf.SerialNumber.Text(16)
	want.SVIDExpiry = leaf.NotAfter.UTC().Format(time.RFC3339)
	want.Version = "test"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record while connected (-want +got):\n%s", diff)
	}
	if got := p.endpoints(t, web.service); !slices.Equal(got, []string{addr}) {
		t.Errorf("endpoints of shop/web: got %v, want [%s] (live)", got, addr)
	}

	s.send(t, ackMsg(snap.GetVersion(), ""))
	s.end(t)
	got = p.proxyView(t, "shop", web.instance)
	if !(got.AckedVersion == snap.GetVersion() && got.SnapshotVersion == snap.GetVersion() && !got.Connected && got.LastNack == "") {
		t.Errorf("record after ACK and close: got acked %d, sent %d, connected %v, nack %q; want acked %d, sent %d, disconnected, no nack",
			got.AckedVersion, got.SnapshotVersion, got.Connected, got.LastNack, snap.GetVersion(), snap.GetVersion())
	}
	// Disconnected, it stays an endpoint for the grace period.
	if got := p.endpoints(t, web.service); !slices.Equal(got, []string{addr}) {
		t.Errorf("endpoints of shop/web after disconnect: got %v, want [%s] (grace)", got, addr)
	}
}

func TestSubscribeClientOnlyProxyIsNoEndpoint(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/visitor", "")
	s := subscribe(t, web.client, nodeMsg(web.node("")))
	s.recv(t)
	if got := p.proxyView(t, "shop", web.instance); !got.Connected || got.Address != "" {
		t.Errorf("record: got connected %v address %q, want connected with no address", got.Connected, got.Address)
	}
	if got := p.endpoints(t, web.service); len(got) != 0 {
		t.Errorf("endpoints of a client-only proxy's service: got %v, want none", got)
	}
	s.end(t)
}

func TestSubscribeAcks(t *testing.T) {
	t.Parallel()
	// Client-only proxies and no policy: each gets exactly one snapshot.
	p := startRun(t, runOptions{})
	long := strings.Repeat("x", 5000)
	tests := []struct {
		name      string
		answers   func(v int64) []*apiv1.SubscribeRequest
		wantAcked func(v int64) int64
		wantNack  string
	}{
		{
			name:      "AckOfTheSentVersion",
			answers:   func(v int64) []*apiv1.SubscribeRequest { return []*apiv1.SubscribeRequest{ackMsg(v, "")} },
			wantAcked: func(v int64) int64 { return v },
		},
		{
			name: "AckOfVersionsNeverSent",
			answers: func(v int64) []*apiv1.SubscribeRequest {
				return []*apiv1.SubscribeRequest{ackMsg(v+1, ""), ackMsg(v+1000, ""), ackMsg(v-1, ""), ackMsg(0, "")}
			},
			wantAcked: func(int64) int64 { return 0 },
		},
		{
			name:      "Nack",
			answers:   func(v int64) []*apiv1.SubscribeRequest { return []*apiv1.SubscribeRequest{ackMsg(v, "bad route")} },
			wantAcked: func(int64) int64 { return 0 },
			wantNack:  "bad route",
		},
		{
			name:      "NackTruncated",
			answers:   func(v int64) []*apiv1.SubscribeRequest { return []*apiv1.SubscribeRequest{ackMsg(v, long)} },
			wantAcked: func(int64) int64 { return 0 },
			wantNack:  long[:control.MaxNack],
		},
		{
			// Cut at a rune boundary: 341 three-byte runes fill 1023 of
			// the 1024 bytes.
			name: "NackTruncatedWithinARune",
			answers: func(v int64) []*apiv1.SubscribeRequest {
				return []*apiv1.SubscribeRequest{ackMsg(v, strings.Repeat("€", 600))}
			},
			wantAcked: func(int64) int64 { return 0 },
			wantNack:  strings.Repeat("€", control.MaxNack/3),
		},
		{
			name: "NackOfVersionNeverSent",
			answers: func(v int64) []*apiv1.SubscribeRequest {
				return []*apiv1.SubscribeRequest{ackMsg(v+1, "bad route")}
			},
			wantAcked: func(int64) int64 { return 0 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := p.attest(t, "shop/visitor", "")
			s := subscribe(t, w.client, nodeMsg(w.node("")))
			v := s.recv(t).GetVersion()
			for _, m := range tt.answers(v) {
				s.send(t, m)
			}
			s.end(t)
			got := p.proxyView(t, "shop", w.instance)
			if got.AckedVersion != tt.wantAcked(v) {
				t.Errorf("AckedVersion: got %d, want %d", got.AckedVersion, tt.wantAcked(v))
			}
			if got.LastNack != tt.wantNack {
				t.Errorf("LastNack: got %s, want %s", short(got.LastNack), short(tt.wantNack))
			}
			if got.SnapshotVersion != v || got.Connected {
				t.Errorf("record: got sent %d connected %v, want sent %d, disconnected", got.SnapshotVersion, got.Connected, v)
			}
		})
	}
}

// TestSubscribeAckFloodWritesOnce reads the store directly, so it runs the
// proxy-facing half of the control plane (control.StartPlane) rather than
// Run, which holds the store's file lock.
func TestSubscribeAckFloodWritesOnce(t *testing.T) {
	p := control.StartPlane(t, control.PlaneConfig{})
	m := planeMesh(p)
	w := m.attest(t, "shop/visitor", "")
	s := subscribe(t, w.client, nodeMsg(w.node("")))
	v := s.recv(t).GetVersion()
	// The record of the version sent is written after the send; wait for it
	// so that it is not counted below.
	waitRecord(t, p.Store, p.Registry, "shop", w.instance, func(r registry.Proxy) bool { return r.SnapshotVersion == v })

	before := revision(t, p.Store)
	for range 1000 {
		s.send(t, ackMsg(v, ""))
	}
	// Anything but an ACK ends the stream; the server handles it after
	// every ACK before it, and records the disconnect before the stream's
	// status reaches the proxy.
	s.send(t, nodeMsg(w.node("")))
	if code, msg := s.recvErr(t); code != codes.InvalidArgument {
		t.Fatalf("stream end after a second Node: got code %s (%s), want InvalidArgument", code, msg)
	}
	writes := revision(t, p.Store) - before
	// One write for the first ACK, none for the other 999, one for the
	// disconnect.
	if writes != 2 {
		t.Errorf("store writes for 1000 identical ACKs and a disconnect: got %d, want 2", writes)
	}
	rec, _ := proxyRecord(t, p.Registry, "shop", w.instance)
	if rec.AckedVersion != v || rec.Connected {
		t.Errorf("record: got acked %d connected %v, want acked %d, disconnected", rec.AckedVersion, rec.Connected, v)
	}
}

// TestRPCStoreFailureIsOpaque checks that a store failure behind an RPC
// reaches the proxy as Internal with no detail.
func TestRPCStoreFailureIsOpaque(t *testing.T) {
	var h *hookedStore
	p := control.StartPlane(t, control.PlaneConfig{WrapStore: func(s store.Store) store.Store { h = newHookedStore(s); return h }})
	m := planeMesh(p)
	w := m.attest(t, "shop/web", "")
	token := m.token(t, "shop/api", "") // a new identity: Attest must write it
	h.set(func(h *hookedStore) {
		h.txnErr = func(ops []store.Op) error {
			for _, op := range ops {
				if strings.HasPrefix(op.Key, registry.Prefix) {
					return errBroken
				}
			}
			return nil
		}
	})
	t.Run("Attest", func(t *testing.T) {
		_, err := attestRaw(t, m, token, "shop/api", newCSR(t, newKey(t), nil))
		if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "attest: internal error" {
			t.Errorf("got %v, want Internal %q", err, "attest: internal error")
		}
	})
	t.Run("Subscribe", func(t *testing.T) {
		s := subscribe(t, w.client, nodeMsg(w.node("")))
		if code, msg := s.recvErr(t); code != codes.Internal || msg != "subscribe: internal error" {
			t.Errorf("got %s %q, want Internal %q", code, msg, "subscribe: internal error")
		}
	})
}

// short describes a possibly long string by its length and its ends.
func short(s string) string {
	if len(s) <= 40 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%d bytes %q...%q", len(s), s[:12], s[len(s)-12:])
}
