package control_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// start is the fake clock's start in tests that never do TLS.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func tcpAddr(t testing.TB, s string) *net.TCPAddr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func TestSans(t *testing.T) {
	tests := []struct {
		name    string
		addr    net.Addr
		wantDNS []string
		wantIPs []string
	}{
		{"LoopbackIPv4", tcpAddr(t, "127.0.0.1:8443"), []string{"localhost"}, []string{"127.0.0.1", "::1"}},
		{"LoopbackOtherIPv4", tcpAddr(t, "127.0.0.2:8443"), []string{"localhost"}, []string{"127.0.0.2", "127.0.0.1", "::1"}},
		{"LoopbackIPv6", tcpAddr(t, "[::1]:8443"), []string{"localhost"}, []string{"::1", "127.0.0.1"}},
		{"SpecificIPv4", tcpAddr(t, "192.0.2.10:8443"), nil, []string{"192.0.2.10"}},
		{"SpecificIPv6", tcpAddr(t, "[2001:db8::1]:8443"), nil, []string{"2001:db8::1"}},
		{"NotTCP", &net.UnixAddr{Name: "/run/bulwark.sock", Net: "unix"}, []string{"localhost"}, []string{"127.0.0.1", "::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dns, ips := control.Sans(tt.addr)
			if diff := cmp.Diff(tt.wantDNS, dns); diff != "" {
				t.Errorf("dns names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantIPs, ipStrings(ips)); diff != "" {
				t.Errorf("ip addresses (-want +got):\n%s", diff)
			}
		})
	}

	wildcards := []struct {
		name string
		addr string
	}{
		{"WildcardIPv4", "0.0.0.0:8443"},
		{"WildcardIPv6", "[::]:8443"},
	}
	host, _ := os.Hostname()
	ifaces, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range wildcards {
		t.Run(tt.name, func(t *testing.T) {
			dns, ips := control.Sans(tcpAddr(t, tt.addr))
			wantDNS := []string{"localhost"}
			if host != "" {
				wantDNS = append(wantDNS, host)
			}
			if diff := cmp.Diff(wantDNS, dns); diff != "" {
				t.Errorf("dns names (-want +got):\n%s", diff)
			}
			got := ipStrings(ips)
			want := []string{"127.0.0.1", "::1"}
			for _, a := range ifaces {
				if n, ok := a.(*net.IPNet); ok {
					want = append(want, n.IP.String())
				}
			}
			sortUniq := cmpopts.SortSlices(func(a, b string) bool { return a < b })
			if diff := cmp.Diff(slices.Compact(slices.Sorted(slices.Values(want))), got, sortUniq); diff != "" {
				t.Errorf("ip addresses: want loopback and every interface address once (-want +got):\n%s", diff)
			}
			for _, ip := range ips {
				if ip.IsUnspecified() {
					t.Errorf("ip addresses: got the unspecified address %s", ip)
				}
			}
		})
	}
}

func TestDialable(t *testing.T) {
	tests := []struct {
		name string
		addr net.Addr
		want string
	}{
		{"WildcardIPv4", tcpAddr(t, "0.0.0.0:8443"), "127.0.0.1:8443"},
		{"WildcardIPv6", tcpAddr(t, "[::]:8443"), "127.0.0.1:8443"},
		{"LoopbackIPv4", tcpAddr(t, "127.0.0.1:8443"), "127.0.0.1:8443"},
		{"LoopbackIPv6", tcpAddr(t, "[::1]:8443"), "[::1]:8443"},
		{"SpecificIPv4", tcpAddr(t, "192.0.2.10:1"), "192.0.2.10:1"},
		{"NotTCP", &net.UnixAddr{Name: "/run/bulwark.sock", Net: "unix"}, "/run/bulwark.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := control.Dialable(tt.addr); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSansCoverDialable checks the contract between the two: a serving
// certificate with the names sans gives verifies for the host dialable
// gives, as a client following Endpoints dials it.
func TestSansCoverDialable(t *testing.T) {
	c := newCA(t, clock.NewFake(start))
	tests := []struct{ name, addr string }{
		{"LoopbackIPv4", "127.0.0.1:8443"},
		{"LoopbackIPv6", "[::1]:8443"},
		{"WildcardIPv4", "0.0.0.0:8443"},
		{"WildcardIPv6", "[::]:8443"},
		{"SpecificIPv4", "192.0.2.10:8443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tcpAddr(t, tt.addr)
			dns, ips := control.Sans(a)
			key := newKey(t)
			chain, err := c.SignServing(&key.PublicKey, identity.ControlPlaneID(td), dns, ips, time.Hour)
			if err != nil {
				t.Fatalf("SignServing: %v", err)
			}
			host, _, err := net.SplitHostPort(control.Dialable(a))
			if err != nil {
				t.Fatal(err)
			}
			if err := chain[0].VerifyHostname(host); err != nil {
				t.Errorf("serving certificate for %s does not cover the dialable host %s: %v", tt.addr, host, err)
			}
		})
	}
}

func TestCheckAdvertise(t *testing.T) {
	tests := []struct {
		name, addr string
		ok         bool
	}{
		{"EmptyMeansNoInbound", "", true},
		{"LoopbackIPv4", "127.0.0.1:15006", true},
		{"LoopbackIPv6", "[::1]:15006", true},
		{"LowestPort", "10.0.0.1:1", true},
		{"HighestPort", "10.0.0.1:65535", true},
		{"HostName", "web.shop.svc:15006", true},
		{"UnspecifiedIPv4", "0.0.0.0:1", false},
		{"UnspecifiedIPv6", "[::]:1", false},
		{"NoPort", "10.0.0.1", false},
		{"NoHost", ":15006", false},
		{"PortZero", "10.0.0.1:0", false},
		{"PortTooLarge", "10.0.0.1:65536", false},
		{"PortNegative", "10.0.0.1:-1", false},
		{"PortNamed", "10.0.0.1:http", false},
		{"IPv6NoPort", "[::1]", false},
		{"TooManyColons", "10.0.0.1:1:2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := control.CheckAdvertise(tt.addr)
			if (err == nil) != tt.ok {
				t.Errorf("CheckAdvertise(%q): got error %v, want ok %v", tt.addr, err, tt.ok)
			}
		})
	}
}

func newStore(t testing.TB) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newCA(t testing.TB, c clock.Clock) *ca.CA {
	t.Helper()
	w, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: newStore(t), Keys: keymanager.NewMemory(), Clock: c})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return w
}

func newOperatorCA(t testing.TB, c clock.Clock) *ca.OperatorCA {
	t.Helper()
	o, err := ca.NewOperatorCA(context.Background(), ca.Config{TrustDomain: td, Store: newStore(t), Keys: keymanager.NewMemory(), Clock: c})
	if err != nil {
		t.Fatalf("ca.NewOperatorCA: %v", err)
	}
	return o
}

// issuer issues serving certificates from a CA, counting its calls, and
// fails while failing is set.
type issuer struct {
	ca *ca.CA

	mu      sync.Mutex
	calls   int
	failing bool
}

var errIssuerDown = errors.New("issuer down")

func (i *issuer) issue(pub *ecdsa.PublicKey) ([]*x509.Certificate, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.calls++
	if i.failing {
		return nil, errIssuerDown
	}
	return i.ca.SignServing(pub, identity.ControlPlaneID(td), []string{"localhost"}, nil, 24*time.Hour)
}

func (i *issuer) set(failing bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.failing = failing
}

func (i *issuer) count() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.calls
}

func TestServingCert(t *testing.T) {
	fake := clock.NewFake(start)
	iss := &issuer{ca: newCA(t, fake)}
	sc, err := control.NewServingCert(fake, iss.issue)
	if err != nil {
		t.Fatalf("NewServingCert: %v", err)
	}
	get := func(t *testing.T) *x509.Certificate {
		t.Helper()
		c, err := sc.GetCertificate(nil)
		if err != nil {
			t.Fatalf("GetCertificate: %v", err)
		}
		if len(c.Certificate) != 3 || !bytes.Equal(c.Certificate[0], c.Leaf.Raw) {
			t.Fatalf("certificate: got %d DER certs, want leaf, intermediate, root with Leaf set", len(c.Certificate))
		}
		key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
		if !ok || !key.PublicKey.Equal(c.Leaf.PublicKey) {
			t.Fatal("certificate: private key does not match the leaf")
		}
		return c.Leaf
	}

	// The steps share the clock and the certificate: each starts where
	// the previous one ended.
	first := get(t)
	var second *x509.Certificate
	steps := []struct {
		name      string
		advance   time.Duration
		failing   bool
		wantCalls int
		want      func(got *x509.Certificate) bool
	}{
		{"KeptBeforeHalfLife", 12*time.Hour - time.Minute, false, 1, func(c *x509.Certificate) bool { return c.Equal(first) }},
		{"RenewedAtHalfLife", 2 * time.Minute, false, 2, func(c *x509.Certificate) bool { second = c; return !c.Equal(first) }},
		{"KeptWhileRenewedOne", time.Hour, false, 2, func(c *x509.Certificate) bool { return c.Equal(second) }},
		{"KeptWhileIssuerFails", 11*time.Hour + time.Minute, true, 3, func(c *x509.Certificate) bool { return c.Equal(second) }},
		{"NoRetryWithinAMinute", 30 * time.Second, true, 3, func(c *x509.Certificate) bool { return c.Equal(second) }},
		{"RetriedAfterAMinute", 31 * time.Second, true, 4, func(c *x509.Certificate) bool { return c.Equal(second) }},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			iss.set(s.failing)
			fake.Advance(s.advance)
			got := get(t)
			if !s.want(got) {
				t.Errorf("certificate serial %s: not the one wanted", got.SerialNumber.Text(16))
			}
			if c := iss.count(); c != s.wantCalls {
				t.Errorf("issue calls: got %d, want %d", c, s.wantCalls)
			}
			if now := fake.Now(); now.After(got.NotAfter) {
				t.Errorf("served a certificate that expired at %s (now %s)", got.NotAfter, now)
			}
		})
	}

	t.Run("ErrorOnceExpired", func(t *testing.T) {
		iss.set(true)
		fake.Advance(second.NotAfter.Sub(fake.Now()) + time.Second)
		if c, err := sc.GetCertificate(nil); !errors.Is(err, errIssuerDown) {
			t.Fatalf("GetCertificate after expiry with the issuer down: got %v, %v; want the issuer's error", c, err)
		}
	})

	t.Run("RecoversWithTheIssuer", func(t *testing.T) {
		iss.set(false)
		got := get(t)
		if got.Equal(second) || !fake.Now().Before(got.NotAfter) {
			t.Errorf("certificate after the issuer recovered: got serial %s valid until %s, want a new valid one", got.SerialNumber.Text(16), got.NotAfter)
		}
	})

	t.Run("FirstIssueFails", func(t *testing.T) {
		down := &issuer{ca: iss.ca, failing: true}
		if _, err := control.NewServingCert(fake, down.issue); !errors.Is(err, errIssuerDown) {
			t.Errorf("NewServingCert with the issuer down: got %v, want the issuer's error", err)
		}
	})
}

const adminURL = "https://127.0.0.1:8444"

// credentialCert returns the parsed certificate of a credential file.
func credentialCert(t testing.TB, path string) (*admin.Credential, *x509.Certificate) {
	t.Helper()
	cred, err := admin.LoadCredential(path)
	if err != nil {
		t.Fatalf("load credential: %v", err)
	}
	block, _ := pem.Decode([]byte(cred.Certificate))
	if block == nil {
		t.Fatal("credential certificate: no PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cred, cert
}

func bootstrap(t testing.TB, path string, op *ca.OperatorCA, server string, now time.Time) {
	t.Helper()
	if err := control.BootstrapOperator(path, op, server, now, telemetry.OrDiscard(nil)); err != nil {
		t.Fatalf("bootstrapOperator: %v", err)
	}
}

func sameFile(t testing.TB, a, b os.FileInfo) bool {
	t.Helper()
	return os.SameFile(a, b)
}

func stat(t testing.TB, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func TestBootstrapOperator(t *testing.T) {
	credPath := func(t *testing.T) string { return filepath.Join(t.TempDir(), "operator", "admin.yaml") }

	t.Run("Creates", func(t *testing.T) {
		fake := clock.NewFake(start)
		op := newOperatorCA(t, fake)
		path := credPath(t)
		bootstrap(t, path, op, adminURL, fake.Now())
		if got := stat(t, path).Mode().Perm(); got != 0o600 {
			t.Errorf("credential mode: got %o, want 600", got)
		}
		if got := stat(t, filepath.Dir(path)).Mode().Perm(); got != 0o700 {
			t.Errorf("credential directory mode: got %o, want 700", got)
		}
		cred, cert := credentialCert(t, path)
		if cred.Server != adminURL || cred.Operator != "admin" {
			t.Errorf("credential: got server %q operator %q, want %q admin", cred.Server, cred.Operator, adminURL)
		}
		if want := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: op.Root().Raw})); cred.CA != want {
			t.Error("credential CA: got another certificate, want the operator root")
		}
		pool := x509.NewCertPool()
		pool.AddCert(op.Root())
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: fake.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("credential certificate does not verify as a client of the operator CA: %v", err)
		}
		if name, err := ca.OperatorName(cert); err != nil || name != "admin" {
			t.Errorf("operator name: got %q, %v; want admin", name, err)
		}
		if want := fake.Now().Add(365 * 24 * time.Hour).Truncate(time.Second); !cert.NotAfter.Equal(want) {
			t.Errorf("NotAfter: got %s, want %s (1 year)", cert.NotAfter, want)
		}
	})

	t.Run("KeepsAUsableCredential", func(t *testing.T) {
		fake := clock.NewFake(start)
		op := newOperatorCA(t, fake)
		path := credPath(t)
		bootstrap(t, path, op, adminURL, fake.Now())
		before, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fi := stat(t, path)
		fake.Advance(300 * 24 * time.Hour) // 65 days left
		bootstrap(t, path, op, adminURL, fake.Now())
		after, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) || !sameFile(t, fi, stat(t, path)) {
			t.Error("credential: got rewritten, want the file left alone")
		}
	})

	t.Run("RewritesOnlyTheServer", func(t *testing.T) {
		fake := clock.NewFake(start)
		op := newOperatorCA(t, fake)
		path := credPath(t)
		bootstrap(t, path, op, adminURL, fake.Now())
		before, _ := credentialCert(t, path)
		const moved = "https://127.0.0.1:9444"
		bootstrap(t, path, op, moved, fake.Now())
		after, _ := credentialCert(t, path)
		want := *before
		want.Server = moved
		if diff := cmp.Diff(&want, after); diff != "" {
			t.Errorf("credential after the admin address moved (-want +got):\n%s", diff)
		}
		if got := stat(t, path).Mode().Perm(); got != 0o600 {
			t.Errorf("credential mode: got %o, want 600", got)
		}
	})

	reissued := func(t *testing.T, path string, op *ca.OperatorCA, now time.Time, old *x509.Certificate) {
		t.Helper()
		bootstrap(t, path, op, adminURL, now)
		cred, cert := credentialCert(t, path)
		if old != nil && cert.Equal(old) {
			t.Fatal("credential certificate: got the old one, want a new one")
		}
		pool := x509.NewCertPool()
		pool.AddCert(op.Root())
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("new credential does not verify against the operator CA: %v", err)
		}
		if cred.Server != adminURL {
			t.Errorf("server: got %q, want %q", cred.Server, adminURL)
		}
		if got := stat(t, path).Mode().Perm(); got != 0o600 {
			t.Errorf("credential mode: got %o, want 600", got)
		}
	}

	t.Run("ReissuesCorrupt", func(t *testing.T) {
		fake := clock.NewFake(start)
		op := newOperatorCA(t, fake)
		// A credential of the same CA whose key belongs to another one.
		donorPath := credPath(t)
		bootstrap(t, donorPath, op, adminURL, fake.Now())
		donor, _ := credentialCert(t, donorPath)
		tests := []struct {
			name    string
			corrupt func(t *testing.T, path string)
		}{
			{"Garbage", func(t *testing.T, path string) { writeFile(t, path, []byte("\x00\x01 not yaml: [")) }},
			{"Empty", func(t *testing.T, path string) { writeFile(t, path, nil) }},
			{"WrongKind", func(t *testing.T, path string) {
				c, _ := credentialCert(t, path)
				c.Kind = "Secret"
				writeCred(t, path, c)
			}},
			{"KeyOfAnotherCredential", func(t *testing.T, path string) {
				c, _ := credentialCert(t, path)
				c.Key = donor.Key
				writeCred(t, path, c)
			}},
			{"CertificateNotPEM", func(t *testing.T, path string) {
				c, _ := credentialCert(t, path)
				c.Certificate = "not a certificate"
				writeCred(t, path, c)
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				path := credPath(t)
				bootstrap(t, path, op, adminURL, fake.Now())
				_, old := credentialCert(t, path)
				tt.corrupt(t, path)
				reissued(t, path, op, fake.Now(), old)
			})
		}
	})

	t.Run("ReissuesCredentialOfAnotherCA", func(t *testing.T) {
		fake := clock.NewFake(start)
		other := newOperatorCA(t, fake)
		op := newOperatorCA(t, fake)
		path := credPath(t)
		bootstrap(t, path, other, adminURL, fake.Now())
		_, old := credentialCert(t, path)
		reissued(t, path, op, fake.Now(), old)
	})

	t.Run("ExpiryWindow", func(t *testing.T) {
		tests := []struct {
			name    string
			left    time.Duration // lifetime left when bootstrapOperator runs again
			reissue bool
		}{
			{"31DaysLeft", 31 * 24 * time.Hour, false},
			{"29DaysLeft", 29 * 24 * time.Hour, true},
			{"1HourLeft", time.Hour, true},
			{"Expired", -time.Hour, true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				fake := clock.NewFake(start)
				op := newOperatorCA(t, fake)
				path := credPath(t)
				bootstrap(t, path, op, adminURL, fake.Now())
				_, old := credentialCert(t, path)
				fake.Advance(old.NotAfter.Sub(fake.Now()) - tt.left)
				if !tt.reissue {
					bootstrap(t, path, op, adminURL, fake.Now())
					if _, got := credentialCert(t, path); !got.Equal(old) {
						t.Error("credential certificate: got a new one, want the old one kept")
					}
					return
				}
				reissued(t, path, op, fake.Now(), old)
			})
		}
	})
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeCred(t testing.TB, path string, c *admin.Credential) {
	t.Helper()
	// Write validates nothing, so it can write a broken credential.
	if err := c.Write(path); err != nil {
		t.Fatal(err)
	}
}
