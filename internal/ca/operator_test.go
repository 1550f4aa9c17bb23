package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

func TestOperatorProfiles(t *testing.T) {
	f := newFixture(t)
	o := f.newOperatorCA(t)
	w := f.newCA(t)
	now := f.clock.Now()

	client, err := o.SignClient(&newKey(t).PublicKey, "alice", 0)
	if err != nil {
		t.Fatalf("SignClient: %v", err)
	}
	server, err := o.SignServer(&newKey(t).PublicKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	if err != nil {
		t.Fatalf("SignServer: %v", err)
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		want profile
	}{
		{"root", o.Root(), profile{
			IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true,
			KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			Subject:   "CN=Bulwark operator CA (bulwark.test),O=Bulwark",
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ca.DefaultRootTTL),
			SignatureAlgorithm: x509.ECDSAWithSHA256,
		}},
		{"client", client, profile{
			BasicConstraintsValid: true, MaxPathLen: -1,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			Subject:     "CN=alice,O=bulwark-operators",
			NotBefore:   now.Add(-30 * time.Second), NotAfter: now.Add(ca.DefaultOperatorClientTTL),
			SignatureAlgorithm: x509.ECDSAWithSHA256,
		}},
		{"server", server, profile{
			BasicConstraintsValid: true, MaxPathLen: -1,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames:    []string{"localhost"},
			IPs:         []string{"127.0.0.1"},
			Subject:     "CN=Bulwark admin API,O=Bulwark",
			NotBefore:   now.Add(-30 * time.Second), NotAfter: now.Add(ca.DefaultOperatorServerTTL),
			SignatureAlgorithm: x509.ECDSAWithSHA256,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, profileOf(tt.cert)); diff != "" {
				t.Errorf("profile (-want +got):\n%s", diff)
			}
			checkSerial(t, tt.name, tt.cert)
		})
	}
	t.Run("separate-key", func(t *testing.T) {
		if publicKeyEqual(o.Root().PublicKey, w.Roots()[0].PublicKey) {
			t.Error("operator root and workload root share a key")
		}
	})
	t.Run("client-verifies", func(t *testing.T) {
		if _, err := client.Verify(x509.VerifyOptions{
			Roots: pool(o.Root()), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}); err != nil {
			t.Errorf("Verify client certificate for ClientAuth: %v", err)
		}
		if _, err := client.Verify(x509.VerifyOptions{
			Roots: pool(o.Root()), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err == nil {
			t.Error("Verify client certificate for ServerAuth: got no error, want one")
		}
	})
	t.Run("server-verifies", func(t *testing.T) {
		for _, host := range []string{"localhost", "127.0.0.1"} {
			if _, err := server.Verify(x509.VerifyOptions{
				DNSName: host, Roots: pool(o.Root()), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				t.Errorf("Verify server certificate for %s: %v", host, err)
			}
		}
		if _, err := server.Verify(x509.VerifyOptions{
			Roots: pool(o.Root()), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}); err == nil {
			t.Error("Verify server certificate for ClientAuth: got no error, want one")
		}
	})
}

func TestSignClientTTL(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
		want func(now time.Time, root *x509.Certificate) time.Time
	}{
		{"default", 0, func(now time.Time, _ *x509.Certificate) time.Time { return now.Add(365 * 24 * time.Hour) }},
		{"custom", 8 * time.Hour, func(now time.Time, _ *x509.Certificate) time.Time { return now.Add(8 * time.Hour) }},
		{"capped-at-root", 20 * 365 * 24 * time.Hour, func(_ time.Time, root *x509.Certificate) time.Time { return root.NotAfter }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			o := f.newOperatorCA(t)
			cert, err := o.SignClient(&newKey(t).PublicKey, "ci-bot", tt.ttl)
			if err != nil {
				t.Fatalf("SignClient: %v", err)
			}
			if got, want := cert.NotAfter, tt.want(f.clock.Now(), o.Root()); !got.Equal(want) {
				t.Errorf("NotAfter: got %v, want %v", got, want)
			}
		})
	}
}

func TestSignClientRejects(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := &newKey(t).PublicKey
	tests := []struct {
		name     string
		pub      any
		operator string
		ttl      time.Duration
	}{
		{"empty-name", good, "", 0},
		{"name-too-long", good, strings.Repeat("a", 65), 0},
		{"name-with-space", good, "alice smith", 0},
		{"name-with-comma", good, "alice,O=x", 0},
		{"name-with-slash", good, "a/b", 0},
		{"name-starting-with-dot", good, ".alice", 0},
		{"name-non-ascii", good, "zoë", 0},
		{"unsupported-key", &p224.PublicKey, "alice", 0},
		{"negative-ttl", good, "alice", -time.Hour},
	}
	o := newFixture(t).newOperatorCA(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if cert, err := o.SignClient(tt.pub, tt.operator, tt.ttl); err == nil {
				t.Fatalf("SignClient: got certificate for %q, want an error", cert.Subject)
			}
		})
	}
}

func TestSignServerRejects(t *testing.T) {
	o := newFixture(t).newOperatorCA(t)
	tests := []struct {
		name string
		dns  []string
		ips  []net.IP
	}{
		{"no-names", nil, nil},
		{"empty-dns-name", []string{""}, nil},
		{"nil-ip", nil, []net.IP{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := o.SignServer(&newKey(t).PublicKey, tt.dns, tt.ips, 0); err == nil {
				t.Fatal("SignServer: got no error, want one")
			}
		})
	}
}

func TestOperatorRestart(t *testing.T) {
	f := newDiskFixture(t)
	first := f.newOperatorCA(t)
	rev := f.revision(t)
	second := f.newOperatorCA(t)
	if !second.Root().Equal(first.Root()) {
		t.Error("operator root after restart: got a new root, want the stored one")
	}
	if got := f.revision(t); got != rev {
		t.Errorf("store revision after restart: got %d, want %d", got, rev)
	}
	cert, err := first.SignClient(&newKey(t).PublicKey, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: pool(second.Root()), CurrentTime: f.clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Errorf("certificate from before the restart: %v", err)
	}
}

func TestOperatorCAConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*ca.Config)
	}{
		{"missing-store", func(c *ca.Config) { c.Store = nil }},
		{"missing-keys", func(c *ca.Config) { c.Keys = nil }},
		{"root-ttl-negative", func(c *ca.Config) { c.RootTTL = -time.Hour }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.config()
			tt.modify(&cfg)
			if _, err := ca.NewOperatorCA(context.Background(), cfg); err == nil {
				t.Fatal("NewOperatorCA: got no error, want one")
			}
		})
	}
}

// TestCASeparation checks that certificates of one CA never authenticate
// where the other's are expected.
func TestCASeparation(t *testing.T) {
	f := newFixture(t)
	w := f.newCA(t)
	o := f.newOperatorCA(t)
	now := f.clock.Now()

	svid, err := w.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "admin"), 0)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := w.SignServing(&newKey(t).PublicKey, identity.ControlPlaneID(f.td), []string{"localhost"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	client, err := o.SignClient(&newKey(t).PublicKey, "admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	adminServer, err := o.SignServer(&newKey(t).PublicKey, []string{"localhost"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("workload-certs-not-trusted-by-operator-root", func(t *testing.T) {
		for name, chain := range map[string][]*x509.Certificate{"svid": svid, "serving": serving} {
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
				_, err := chain[0].Verify(x509.VerifyOptions{
					Roots: pool(o.Root()), Intermediates: pool(chain[1:]...), CurrentTime: now,
					KeyUsages: []x509.ExtKeyUsage{usage},
				})
				if err == nil {
					t.Errorf("%s verified against the operator root for %v, want an error", name, usage)
				}
			}
		}
	})
	t.Run("operator-certs-not-svids", func(t *testing.T) {
		for name, cert := range map[string]*x509.Certificate{"client": client, "admin-server": adminServer} {
			if _, _, err := x509svid.Verify([]*x509.Certificate{cert}, w.Bundle(), x509svid.WithTime(now)); err == nil {
				t.Errorf("%s verified as an SVID, want an error", name)
			}
			_, err := cert.Verify(x509.VerifyOptions{
				Roots: pool(w.Roots()...), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			if err == nil {
				t.Errorf("%s verified against the workload root, want an error", name)
			}
		}
	})
	t.Run("operator-root-not-in-workload-bundle", func(t *testing.T) {
		if w.Bundle().HasX509Authority(o.Root()) {
			t.Error("workload bundle holds the operator root")
		}
	})
	t.Run("operator-name-of-workload-certs", func(t *testing.T) {
		for name, cert := range map[string]*x509.Certificate{"svid": svid[0], "serving": serving[0], "admin-server": adminServer, "operator-root": o.Root()} {
			if got, err := ca.OperatorName(cert); !errors.Is(err, ca.ErrNotOperator) {
				t.Errorf("OperatorName of %s: got (%q, %v), want an error wrapping %v", name, got, err, ca.ErrNotOperator)
			}
		}
	})
}

func TestOperatorName(t *testing.T) {
	o := newFixture(t).newOperatorCA(t)
	client, err := o.SignClient(&newKey(t).PublicKey, "alice@example.com", 0)
	if err != nil {
		t.Fatal(err)
	}
	spiffeURI, _ := url.Parse("spiffe://bulwark.test/ns/default/sa/alice")
	operatorSubject := func(cn string) pkix.Name {
		return pkix.Name{CommonName: cn, Organization: []string{ca.OperatorOrganization}}
	}
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"signed-client", client, "alice@example.com"},
		{"nil", nil, ""},
		{"wrong-organization", selfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "alice", Organization: []string{"Bulwark"}}, ExtKeyUsage: clientAuth}), ""},
		{"extra-organization", selfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "alice", Organization: []string{ca.OperatorOrganization, "x"}}, ExtKeyUsage: clientAuth}), ""},
		{"no-client-auth", selfSigned(t, &x509.Certificate{Subject: operatorSubject("alice"), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), ""},
		{"any-usage-only", selfSigned(t, &x509.Certificate{Subject: operatorSubject("alice"), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}), ""},
		{"empty-common-name", selfSigned(t, &x509.Certificate{Subject: operatorSubject(""), ExtKeyUsage: clientAuth}), ""},
		{"invalid-common-name", selfSigned(t, &x509.Certificate{Subject: operatorSubject("alice smith"), ExtKeyUsage: clientAuth}), ""},
		{"has-spiffe-id", selfSigned(t, &x509.Certificate{Subject: operatorSubject("alice"), ExtKeyUsage: clientAuth, URIs: []*url.URL{spiffeURI}}), ""},
		{"ca-certificate", selfSigned(t, &x509.Certificate{Subject: operatorSubject("alice"), ExtKeyUsage: clientAuth, IsCA: true, KeyUsage: x509.KeyUsageCertSign}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ca.OperatorName(tt.cert)
			if tt.want == "" {
				if !errors.Is(err, ca.ErrNotOperator) {
					t.Fatalf("OperatorName: got (%q, %v), want an error wrapping %v", got, err, ca.ErrNotOperator)
				}
				return
			}
			if err != nil {
				t.Fatalf("OperatorName: %v", err)
			}
			if got != tt.want {
				t.Errorf("OperatorName: got %q, want %q", got, tt.want)
			}
		})
	}
}

// selfSigned completes tmpl and signs it with a fresh key: a certificate
// OperatorName looks at without any CA behind it.
func selfSigned(t *testing.T, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = big.NewInt(1)
	tmpl.NotBefore = startTime()
	tmpl.NotAfter = startTime().Add(time.Hour)
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
