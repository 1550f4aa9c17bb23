package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// profile is what a certificate profile test compares.
type profile struct {
	IsCA                  bool
	BasicConstraintsValid bool
	MaxPathLen            int
	MaxPathLenZero        bool
	KeyUsage              x509.KeyUsage
	ExtKeyUsage           []x509.ExtKeyUsage
	URIs                  []string
	DNSNames              []string
	IPs                   []string
	Subject               string
	PermittedURIDomains   []string
	NameConstraintsCrit   bool
	NotBefore, NotAfter   time.Time
	SignatureAlgorithm    x509.SignatureAlgorithm
}

func profileOf(c *x509.Certificate) profile {
	p := profile{
		IsCA:                  c.IsCA,
		BasicConstraintsValid: c.BasicConstraintsValid,
		MaxPathLen:            c.MaxPathLen,
		MaxPathLenZero:        c.MaxPathLenZero,
		KeyUsage:              c.KeyUsage,
		ExtKeyUsage:           c.ExtKeyUsage,
		DNSNames:              c.DNSNames,
		Subject:               c.Subject.String(),
		PermittedURIDomains:   c.PermittedURIDomains,
		NameConstraintsCrit:   c.PermittedDNSDomainsCritical,
		NotBefore:             c.NotBefore,
		NotAfter:              c.NotAfter,
		SignatureAlgorithm:    c.SignatureAlgorithm,
	}
	for _, u := range c.URIs {
		p.URIs = append(p.URIs, u.String())
	}
	for _, ip := range c.IPAddresses {
		p.IPs = append(p.IPs, ip.String())
	}
	return p
}

// checkSerial checks a serial is positive and at most 128 bits.
func checkSerial(t *testing.T, what string, c *x509.Certificate) {
	t.Helper()
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("%s serial: got %d bits (sign %d), want a positive serial of at most 128 bits", what, c.SerialNumber.BitLen(), c.SerialNumber.Sign())
	}
}

func TestNewConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*ca.Config)
	}{
		{"missing-trust-domain", func(c *ca.Config) { c.TrustDomain = spiffeid.TrustDomain{} }},
		{"missing-store", func(c *ca.Config) { c.Store = nil }},
		{"missing-keys", func(c *ca.Config) { c.Keys = nil }},
		{"svid-ttl-below-minimum", func(c *ca.Config) { c.SVIDTTL = 59 * time.Second }},
		{"svid-ttl-negative", func(c *ca.Config) { c.SVIDTTL = -time.Hour }},
		{"root-ttl-negative", func(c *ca.Config) { c.RootTTL = -time.Hour }},
		{"intermediate-ttl-negative", func(c *ca.Config) { c.IntermediateTTL = -time.Hour }},
		{"intermediate-ttl-exceeds-root-ttl", func(c *ca.Config) { c.RootTTL, c.IntermediateTTL = 24*time.Hour, 48*time.Hour }},
		{"svid-ttl-exceeds-intermediate-ttl", func(c *ca.Config) { c.IntermediateTTL, c.SVIDTTL = time.Hour, 2*time.Hour }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.config()
			tt.modify(&cfg)
			if _, err := ca.New(context.Background(), cfg); err == nil {
				t.Fatal("New: got no error, want one")
			}
			if got := f.records(t); len(got) != 0 {
				t.Errorf("records after a config error: got %d, want 0", len(got))
			}
		})
	}
}

func TestWorkloadProfiles(t *testing.T) {
	f := newFixture(t)
	c := f.newCA(t)
	now := startTime()
	tdURI := "spiffe://" + testTrustDomain

	roots := c.Roots()
	if len(roots) != 1 {
		t.Fatalf("Roots: got %d certificates, want 1", len(roots))
	}
	root := roots[0]
	rootCert, _ := f.record(t, keyWorkloadRoot)
	if !root.Equal(rootCert) {
		t.Error("Roots()[0] is not the stored root")
	}
	interCert, _ := f.record(t, keyWorkloadIntermediate)

	id := workloadID(t, "default", "api")
	chain, err := c.SignSVID(&newKey(t).PublicKey, id, 0)
	if err != nil {
		t.Fatalf("SignSVID: %v", err)
	}
	if len(chain) != 2 {
		t.Fatalf("SignSVID: got a chain of %d, want 2", len(chain))
	}
	if !chain[1].Equal(interCert) {
		t.Error("SignSVID chain[1] is not the stored intermediate")
	}

	tests := []struct {
		name string
		cert *x509.Certificate
		want profile
	}{
		{"root", root, profile{
			IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
			KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			URIs:      []string{tdURI},
			Subject:   "CN=Bulwark workload root (bulwark.test),O=Bulwark",
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ca.DefaultRootTTL),
			SignatureAlgorithm: x509.ECDSAWithSHA256,
		}},
		{"intermediate", chain[1], profile{
			IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true,
			KeyUsage:            x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			URIs:                []string{tdURI},
			Subject:             "CN=Bulwark workload intermediate (bulwark.test),O=Bulwark",
			PermittedURIDomains: []string{testTrustDomain}, NameConstraintsCrit: true,
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ca.DefaultIntermediateTTL),
			SignatureAlgorithm: x509.ECDSAWithSHA256,
		}},
		{"svid", chain[0], profile{
			BasicConstraintsValid: true, MaxPathLen: -1,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			URIs:        []string{id.String()},
			Subject:     "O=Bulwark",
			NotBefore:   now.Add(-30 * time.Second), NotAfter: now.Add(time.Hour),
			SignatureAlgorithm: x509.ECDSAWithSHA256,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, profileOf(tt.cert)); diff != "" {
				t.Errorf("profile (-want +got):\n%s", diff)
			}
			checkSerial(t, tt.name, tt.cert)
			if got := len(tt.cert.SubjectKeyId); got != 20 {
				t.Errorf("SubjectKeyId: got %d bytes, want 20", got)
			}
		})
	}

	t.Run("chaining", func(t *testing.T) {
		if err := root.CheckSignatureFrom(root); err != nil {
			t.Errorf("root is not self-signed: %v", err)
		}
		if err := chain[1].CheckSignatureFrom(root); err != nil {
			t.Errorf("intermediate is not signed by the root: %v", err)
		}
		if err := chain[0].CheckSignatureFrom(chain[1]); err != nil {
			t.Errorf("svid is not signed by the intermediate: %v", err)
		}
		if !bytes.Equal(chain[1].AuthorityKeyId, root.SubjectKeyId) {
			t.Errorf("intermediate AuthorityKeyId: got %x, want the root's SubjectKeyId %x", chain[1].AuthorityKeyId, root.SubjectKeyId)
		}
		if !bytes.Equal(chain[0].AuthorityKeyId, chain[1].SubjectKeyId) {
			t.Errorf("svid AuthorityKeyId: got %x, want the intermediate's SubjectKeyId %x", chain[0].AuthorityKeyId, chain[1].SubjectKeyId)
		}
		for _, cert := range []*x509.Certificate{root, chain[1]} {
			pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("%s key: got %T, want ECDSA P-256", cert.Subject.CommonName, cert.PublicKey)
			}
		}
	})
}

func TestSignSVIDVerifies(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		pub          crypto.PublicKey
		wantKeyUsage x509.KeyUsage
	}{
		{"ecdsa-p256", &newKey(t).PublicKey, x509.KeyUsageDigitalSignature},
		{"ecdsa-p384", &p384.PublicKey, x509.KeyUsageDigitalSignature},
		{"ed25519", edPub, x509.KeyUsageDigitalSignature},
		{"rsa-2048", &rsaKey.PublicKey, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	}
	f := newFixture(t)
	c := f.newCA(t)
	id := workloadID(t, "shop", "checkout")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := c.SignSVID(tt.pub, id, 0)
			if err != nil {
				t.Fatalf("SignSVID: %v", err)
			}
			gotID, _, err := x509svid.Verify(chain, c.Bundle(), x509svid.WithTime(f.clock.Now()))
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if gotID != id {
				t.Errorf("verified id: got %s, want %s", gotID, id)
			}
			if got := chain[0].KeyUsage; got != tt.wantKeyUsage {
				t.Errorf("KeyUsage: got %v, want %v", got, tt.wantKeyUsage)
			}
			if !publicKeyEqual(chain[0].PublicKey, tt.pub) {
				t.Error("leaf public key: got another key, want the requested one")
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
				_, err := chain[0].Verify(x509.VerifyOptions{
					Roots: pool(c.Roots()...), Intermediates: pool(chain[1:]...),
					CurrentTime: f.clock.Now(), KeyUsages: []x509.ExtKeyUsage{usage},
				})
				if err != nil {
					t.Errorf("crypto/x509 Verify for %v: %v", usage, err)
				}
			}
		})
	}
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func TestSignSVIDSerialsDiffer(t *testing.T) {
	c := newFixture(t).newCA(t)
	id := workloadID(t, "default", "api")
	seen := map[string]bool{}
	for range 20 {
		chain, err := c.SignSVID(&newKey(t).PublicKey, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		s := chain[0].SerialNumber.Text(16)
		if seen[s] {
			t.Fatalf("serial %s issued twice", s)
		}
		seen[s] = true
	}
}

func TestSignSVIDRejects(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := &newKey(t).PublicKey
	td := spiffeid.RequireTrustDomainFromString(testTrustDomain)
	tests := []struct {
		name    string
		pub     crypto.PublicKey
		id      spiffeid.ID
		ttl     time.Duration
		wantErr error
	}{
		{"other-trust-domain", good, spiffeid.RequireFromString("spiffe://evil.test/ns/default/sa/api"), 0, ca.ErrNotMember},
		{"parent-trust-domain", good, spiffeid.RequireFromString("spiffe://test/ns/default/sa/api"), 0, ca.ErrNotMember},
		{"sub-trust-domain", good, spiffeid.RequireFromString("spiffe://x.bulwark.test/ns/default/sa/api"), 0, ca.ErrNotMember},
		{"trust-domain-id", good, td.ID(), 0, ca.ErrNotMember},
		{"zero-id", good, spiffeid.ID{}, 0, ca.ErrNotMember},
		{"ecdsa-p224-key", &p224.PublicKey, workloadID(t, "default", "api"), 0, ca.ErrUnsupportedKey},
		{"rsa-1024-key", &rsa1024.PublicKey, workloadID(t, "default", "api"), 0, ca.ErrUnsupportedKey},
		{"private-key-not-public", newKey(t), workloadID(t, "default", "api"), 0, ca.ErrUnsupportedKey},
		{"nil-key", nil, workloadID(t, "default", "api"), 0, ca.ErrUnsupportedKey},
		{"negative-ttl", good, workloadID(t, "default", "api"), -time.Minute, nil},
	}
	c := newFixture(t).newCA(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := c.SignSVID(tt.pub, tt.id, tt.ttl)
			if err == nil {
				t.Fatalf("SignSVID: got a chain of %d, want an error", len(chain))
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("SignSVID: got error %v, want one wrapping %v", err, tt.wantErr)
			}
		})
	}
}

// TestSignSVIDIgnoresCSRNames checks that an SVID names the id it is
// signed for, whatever the CSR asked for.
func TestSignSVIDIgnoresCSRNames(t *testing.T) {
	key := newKey(t)
	evil, _ := url.Parse("spiffe://bulwark.test/bulwark/control")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "admin", Organization: []string{ca.OperatorOrganization}},
		URIs:     []*url.URL{evil},
		DNSNames: []string{"control.bulwark.test"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ca.ParseCSR(der)
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	c := newFixture(t).newCA(t)
	id := workloadID(t, "default", "api")
	chain, err := c.SignSVID(pub, id, 0)
	if err != nil {
		t.Fatalf("SignSVID: %v", err)
	}
	want := profile{URIs: []string{id.String()}, Subject: "O=Bulwark"}
	got := profile{URIs: profileOf(chain[0]).URIs, DNSNames: chain[0].DNSNames, Subject: chain[0].Subject.String()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("names of the SVID (-want +got):\n%s", diff)
	}
}

func TestSignSVIDTTL(t *testing.T) {
	tests := []struct {
		name    string
		cfg     func(*ca.Config)
		advance time.Duration
		ttl     time.Duration
		// want returns the wanted NotAfter from the issuance time and
		// the intermediate.
		want func(now time.Time, inter *x509.Certificate) time.Time
	}{
		{"default", nil, 0, 0, func(now time.Time, _ *x509.Certificate) time.Time { return now.Add(time.Hour) }},
		{"config-svid-ttl", func(c *ca.Config) { c.SVIDTTL = 5 * time.Minute }, 0, 0,
			func(now time.Time, _ *x509.Certificate) time.Time { return now.Add(5 * time.Minute) }},
		{"custom-ttl", nil, 0, 10 * time.Minute, func(now time.Time, _ *x509.Certificate) time.Time { return now.Add(10 * time.Minute) }},
		{"custom-ttl-longer-than-default", nil, 0, 6 * time.Hour, func(now time.Time, _ *x509.Certificate) time.Time { return now.Add(6 * time.Hour) }},
		{"custom-ttl-beyond-intermediate", nil, 0, 2 * ca.DefaultIntermediateTTL,
			func(_ time.Time, inter *x509.Certificate) time.Time { return inter.NotAfter }},
		{"capped-near-intermediate-expiry", func(c *ca.Config) { c.IntermediateTTL = 2 * time.Hour }, 90 * time.Minute, 0,
			func(_ time.Time, inter *x509.Certificate) time.Time { return inter.NotAfter }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.config()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			c, err := ca.New(context.Background(), cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			f.clock.Advance(tt.advance)
			now := f.clock.Now()
			chain, err := c.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), tt.ttl)
			if err != nil {
				t.Fatalf("SignSVID: %v", err)
			}
			if got, want := chain[0].NotAfter, tt.want(now, chain[1]); !got.Equal(want) {
				t.Errorf("NotAfter: got %v, want %v", got, want)
			}
			if got, want := chain[0].NotBefore, now.Add(-30*time.Second); !got.Equal(want) {
				t.Errorf("NotBefore: got %v, want %v", got, want)
			}
			if _, _, err := x509svid.Verify(chain, c.Bundle(), x509svid.WithTime(now)); err != nil {
				t.Errorf("x509svid.Verify: %v", err)
			}
		})
	}
}

func TestSVIDTTLAccessor(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"default", 0, time.Hour},
		{"minimum", time.Minute, time.Minute},
		{"custom", 15 * time.Minute, 15 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.config()
			cfg.SVIDTTL = tt.ttl
			c, err := ca.New(context.Background(), cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := c.SVIDTTL(); got != tt.want {
				t.Errorf("SVIDTTL: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSignSVIDIntermediateExpired(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.IntermediateTTL = 2 * time.Hour
	c, err := ca.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(3 * time.Hour)
	if _, err := c.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0); !errors.Is(err, ca.ErrExpired) {
		t.Fatalf("SignSVID after the intermediate expired: got %v, want an error wrapping %v", err, ca.ErrExpired)
	}
}

// TestIntermediateNameConstraint signs, with the intermediate's key but by
// hand, SVIDs the CA would refuse, and checks that crypto/x509 refuses the
// foreign ones because of the intermediate's name constraint, and that
// x509svid.Verify refuses them too.
func TestIntermediateNameConstraint(t *testing.T) {
	f := newFixture(t)
	c := f.newCA(t)
	inter, keyID := f.record(t, keyWorkloadIntermediate)
	signer, err := f.keys.GetKey(context.Background(), keyID)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		uri  string
		// wantX509 is whether crypto/x509 accepts the chain, wantSVID
		// whether x509svid.Verify with the CA's bundle does.
		wantX509, wantSVID bool
	}{
		{"own-trust-domain", "spiffe://bulwark.test/ns/default/sa/api", true, true},
		{"other-trust-domain", "spiffe://evil.test/ns/default/sa/api", false, false},
		{"suffix-lookalike", "spiffe://notbulwark.test/ns/default/sa/api", false, false},
		// crypto/x509 matches URI constraints like DNS ones, so a
		// subdomain passes it (RFC 5280 says a constraint without a
		// leading period is one host); the SPIFFE check refuses it
		// because the bundle is looked up by the exact trust domain.
		{"subdomain-of-trust-domain", "spiffe://x.bulwark.test/ns/default/sa/api", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.uri)
			if err != nil {
				t.Fatal(err)
			}
			now := f.clock.Now()
			tmpl := &x509.Certificate{
				SerialNumber:          big.NewInt(42),
				Subject:               pkix.Name{Organization: []string{"Bulwark"}},
				URIs:                  []*url.URL{u},
				NotBefore:             now.Add(-time.Minute),
				NotAfter:              now.Add(time.Hour),
				KeyUsage:              x509.KeyUsageDigitalSignature,
				ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				BasicConstraintsValid: true,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, &newKey(t).PublicKey, signer)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			_, err = leaf.Verify(x509.VerifyOptions{
				Roots: pool(c.Roots()...), Intermediates: pool(inter),
				CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			if got := err == nil; got != tt.wantX509 {
				t.Fatalf("crypto/x509 Verify: got error %v, want verified=%v", err, tt.wantX509)
			}
			var invalid x509.CertificateInvalidError
			if !tt.wantX509 && (!errors.As(err, &invalid) || invalid.Reason != x509.CANotAuthorizedForThisName) {
				t.Errorf("crypto/x509 Verify: got %v, want a CANotAuthorizedForThisName error", err)
			}
			_, _, err = x509svid.Verify([]*x509.Certificate{leaf, inter}, c.Bundle(), x509svid.WithTime(now))
			if got := err == nil; got != tt.wantSVID {
				t.Errorf("x509svid.Verify: got error %v, want verified=%v", err, tt.wantSVID)
			}
		})
	}
}

func TestBundle(t *testing.T) {
	f := newFixture(t)
	c := f.newCA(t)
	b := c.Bundle()
	if got, want := b.TrustDomain(), f.td; got != want {
		t.Errorf("bundle trust domain: got %s, want %s", got, want)
	}
	got := b.X509Authorities()
	if len(got) != 1 || !got[0].Equal(c.Roots()[0]) {
		t.Errorf("bundle authorities: got %d certificates, want the one root", len(got))
	}
	// The bundle is the caller's: changing it does not change the CA's.
	b.RemoveX509Authority(got[0])
	if c.Bundle().Empty() {
		t.Error("Bundle after the caller emptied an earlier one: got empty, want the root")
	}
}

func TestRestartKeepsCA(t *testing.T) {
	tests := []struct {
		name       string
		newFixture func(testing.TB) *fixture
	}{
		{"memory-keys", newFixture},
		{"disk-keys", newDiskFixture},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.newFixture(t)
			first := f.newCA(t)
			chain1, err := first.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
			if err != nil {
				t.Fatal(err)
			}
			rev := f.revision(t)
			f.clock.Advance(24 * time.Hour)
			if f.keyDir != "" {
				// A restarted process opens a new Disk on the dir.
				f.keys = openDisk(t, f.keyDir)
			}
			second := f.newCA(t)
			if !second.Roots()[0].Equal(first.Roots()[0]) {
				t.Error("root after restart: got a new root, want the stored one")
			}
			chain2, err := second.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
			if err != nil {
				t.Fatal(err)
			}
			if !chain2[1].Equal(chain1[1]) {
				t.Error("intermediate after restart: got a new intermediate, want the stored one")
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision after restart: got %d, want %d (nothing written)", got, rev)
			}
			// The SVID of the first process verifies with the second's bundle.
			if _, _, err := x509svid.Verify(chain1, second.Bundle(), x509svid.WithTime(f.clock.Now().Add(-24*time.Hour))); err != nil {
				t.Errorf("x509svid.Verify of an SVID from before the restart: %v", err)
			}
		})
	}
}

// TestStartFailsClosed damages the key custody of a started CA and checks
// that the next start fails and writes nothing: no record, no key.
func TestStartFailsClosed(t *testing.T) {
	tests := []struct {
		name     string
		record   string
		damage   func(t *testing.T, f *fixture, keyID string)
		start    func(context.Context, ca.Config) error
		wantErr  error
		wantText string
	}{
		{"workload-root-key-missing", keyWorkloadRoot, removeKey, startWorkload, keymanager.ErrNotFound, keyWorkloadRoot},
		{"workload-intermediate-key-missing", keyWorkloadIntermediate, removeKey, startWorkload, keymanager.ErrNotFound, keyWorkloadIntermediate},
		{"operator-root-key-missing", keyOperatorRoot, removeKey, startOperator, keymanager.ErrNotFound, keyOperatorRoot},
		{"workload-root-key-mismatch", keyWorkloadRoot, replaceKey, startWorkload, ca.ErrKeyMismatch, keyWorkloadRoot},
		{"workload-intermediate-key-mismatch", keyWorkloadIntermediate, replaceKey, startWorkload, ca.ErrKeyMismatch, keyWorkloadIntermediate},
		{"operator-root-key-mismatch", keyOperatorRoot, replaceKey, startOperator, ca.ErrKeyMismatch, keyOperatorRoot},
		{"workload-root-key-corrupted", keyWorkloadRoot, corruptKey, startWorkload, nil, keyWorkloadRoot},
		{"all-keys-missing", keyWorkloadRoot, removeAllKeys, startWorkload, keymanager.ErrNotFound, keyWorkloadRoot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newDiskFixture(t)
			f.newCA(t)
			f.newOperatorCA(t)
			_, keyID := f.record(t, tt.record)
			tt.damage(t, f, keyID)

			recordsBefore, rev, filesBefore := f.records(t), f.revision(t), keyFiles(t, f.keyDir)
			err := tt.start(context.Background(), f.config())
			if err == nil {
				t.Fatal("start: got no error, want one")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("start: got error %v, want one wrapping %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("start: got error %q, want it to name %s", err, tt.wantText)
			}
			if diff := cmp.Diff(recordsBefore, f.records(t)); diff != "" {
				t.Errorf("records changed by a failed start (-before +after):\n%s", diff)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d", got, rev)
			}
			if diff := cmp.Diff(filesBefore, keyFiles(t, f.keyDir)); diff != "" {
				t.Errorf("key files changed by a failed start (-before +after):\n%s", diff)
			}
		})
	}
}

func startWorkload(ctx context.Context, cfg ca.Config) error {
	_, err := ca.New(ctx, cfg)
	return err
}

func startOperator(ctx context.Context, cfg ca.Config) error {
	_, err := ca.NewOperatorCA(ctx, cfg)
	return err
}

func removeKey(t *testing.T, f *fixture, keyID string) {
	t.Helper()
	if err := os.Remove(filepath.Join(f.keyDir, keyID+".key")); err != nil {
		t.Fatal(err)
	}
}

func removeAllKeys(t *testing.T, f *fixture, _ string) {
	t.Helper()
	for name := range keyFiles(t, f.keyDir) {
		if err := os.Remove(filepath.Join(f.keyDir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func replaceKey(t *testing.T, f *fixture, keyID string) {
	t.Helper()
	if _, err := f.keys.GenerateKey(context.Background(), keyID); err != nil {
		t.Fatal(err)
	}
}

func corruptKey(t *testing.T, f *fixture, keyID string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.keyDir, keyID+".key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// keyFiles returns the contents of every file in dir by name.
func keyFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(data)
	}
	return files
}

func TestCorruptedRecord(t *testing.T) {
	// A valid record of another CA, and an SVID, to build defects from.
	other := newFixture(t)
	otherCA := other.newCA(t)
	foreignInter, _ := other.record(t, keyWorkloadIntermediate)
	leafChain, err := otherCA.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		key    string
		start  func(context.Context, ca.Config) error
		mutate func(t *testing.T, f *fixture, rec storedRecord) []byte
	}{
		{"not-json", keyWorkloadRoot, startWorkload, raw("{")},
		{"empty-value", keyWorkloadIntermediate, startWorkload, raw("")},
		{"json-array", keyOperatorRoot, startOperator, raw("[]")},
		{"trailing-data", keyWorkloadRoot, startWorkload, func(t *testing.T, _ *fixture, rec storedRecord) []byte {
			return append(marshal(t, rec), `{}`...)
		}},
		{"unknown-field", keyWorkloadRoot, startWorkload, raw(`{"certificate":"","keyID":"workload-root-00000000","extra":1}`)},
		{"no-pem", keyWorkloadIntermediate, startWorkload, func(t *testing.T, _ *fixture, rec storedRecord) []byte {
			rec.Certificate = "not pem"
			return marshal(t, rec)
		}},
		{"bad-der", keyOperatorRoot, startOperator, func(t *testing.T, _ *fixture, rec storedRecord) []byte {
			rec.Certificate = pemCert([]byte("not der"))
			return marshal(t, rec)
		}},
		{"invalid-key-id", keyWorkloadRoot, startWorkload, func(t *testing.T, _ *fixture, rec storedRecord) []byte {
			rec.KeyID = "../../etc/passwd"
			return marshal(t, rec)
		}},
		{"leaf-not-ca", keyWorkloadIntermediate, startWorkload, func(t *testing.T, _ *fixture, rec storedRecord) []byte {
			rec.Certificate = pemCert(leafChain[0].Raw)
			return marshal(t, rec)
		}},
		{"root-as-intermediate", keyWorkloadIntermediate, startWorkload, func(t *testing.T, f *fixture, _ storedRecord) []byte {
			kv, err := f.store.Get(context.Background(), keyWorkloadRoot)
			if err != nil {
				t.Fatal(err)
			}
			return kv.Value
		}},
		{"intermediate-of-another-root", keyWorkloadIntermediate, startWorkload, func(t *testing.T, _ *fixture, rec storedRecord) []byte {
			rec.Certificate = pemCert(foreignInter.Raw)
			return marshal(t, rec)
		}},
		{"workload-root-as-operator-root", keyOperatorRoot, startOperator, func(t *testing.T, f *fixture, _ storedRecord) []byte {
			kv, err := f.store.Get(context.Background(), keyWorkloadRoot)
			if err != nil {
				t.Fatal(err)
			}
			return kv.Value
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.newCA(t)
			f.newOperatorCA(t)
			cert, keyID := f.record(t, tt.key)
			value := tt.mutate(t, f, storedRecord{Certificate: pemCert(cert.Raw), KeyID: keyID})
			if _, err := store.Put(context.Background(), f.store, tt.key, value); err != nil {
				t.Fatal(err)
			}
			before, rev := f.records(t), f.revision(t)
			err := tt.start(context.Background(), f.config())
			if !errors.Is(err, ca.ErrCorruptRecord) {
				t.Fatalf("start: got error %v, want one wrapping %v", err, ca.ErrCorruptRecord)
			}
			if !strings.Contains(err.Error(), tt.key) {
				t.Errorf("start: got error %q, want it to name %s", err, tt.key)
			}
			if diff := cmp.Diff(before, f.records(t)); diff != "" {
				t.Errorf("records changed by a failed start (-before +after):\n%s", diff)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d", got, rev)
			}
		})
	}
}

func raw(s string) func(*testing.T, *fixture, storedRecord) []byte {
	return func(*testing.T, *fixture, storedRecord) []byte { return []byte(s) }
}

func marshal(t *testing.T, rec storedRecord) []byte {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pemCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestTrustDomainMismatch(t *testing.T) {
	f := newFixture(t)
	f.newCA(t)
	cfg := f.config()
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("other.test")
	before := f.records(t)
	_, err := ca.New(context.Background(), cfg)
	if !errors.Is(err, ca.ErrTrustDomainMismatch) {
		t.Fatalf("New with another trust domain: got %v, want an error wrapping %v", err, ca.ErrTrustDomainMismatch)
	}
	if diff := cmp.Diff(before, f.records(t)); diff != "" {
		t.Errorf("records changed (-before +after):\n%s", diff)
	}
}

func TestRootExpired(t *testing.T) {
	f := newFixture(t)
	f.newCA(t)
	f.newOperatorCA(t)
	f.clock.Advance(ca.DefaultRootTTL + time.Hour)
	if _, err := ca.New(context.Background(), f.config()); !errors.Is(err, ca.ErrExpired) {
		t.Errorf("New after the root expired: got %v, want an error wrapping %v", err, ca.ErrExpired)
	}
	if _, err := ca.NewOperatorCA(context.Background(), f.config()); !errors.Is(err, ca.ErrExpired) {
		t.Errorf("NewOperatorCA after the root expired: got %v, want an error wrapping %v", err, ca.ErrExpired)
	}
}

func TestIntermediateRenewal(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name        string
		advance     time.Duration
		wantRenewed bool
	}{
		{"fresh", 0, false},
		{"half-used", 182 * day, false},
		{"seven-months", 213 * day, false},
		{"less-than-a-third-left", 250 * day, true},
		{"nine-months", 274 * day, true},
		{"expired", 366 * day, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.newCA(t)
			oldRoot, _ := f.record(t, keyWorkloadRoot)
			oldInter, oldKeyID := f.record(t, keyWorkloadIntermediate)

			f.clock.Advance(tt.advance)
			now := f.clock.Now()
			c := f.newCA(t)
			inter, keyID := f.record(t, keyWorkloadIntermediate)
			root, _ := f.record(t, keyWorkloadRoot)
			if !root.Equal(oldRoot) {
				t.Fatal("root changed, want the stored one")
			}
			if gotRenewed := !inter.Equal(oldInter); gotRenewed != tt.wantRenewed {
				t.Fatalf("intermediate renewed: got %v, want %v", gotRenewed, tt.wantRenewed)
			}
			chain, err := c.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
			if err != nil {
				t.Fatalf("SignSVID: %v", err)
			}
			if !chain[1].Equal(inter) {
				t.Error("SignSVID chain[1]: got another intermediate than the stored one")
			}
			if _, _, err := x509svid.Verify(chain, c.Bundle(), x509svid.WithTime(now)); err != nil {
				t.Errorf("x509svid.Verify: %v", err)
			}
			if !tt.wantRenewed {
				return
			}
			if keyID == oldKeyID {
				t.Errorf("key id of the renewed intermediate: got the old %q, want a new one", keyID)
			}
			if got, want := inter.NotAfter, now.Add(ca.DefaultIntermediateTTL); !got.Equal(want) {
				t.Errorf("renewed intermediate NotAfter: got %v, want %v", got, want)
			}
			if err := inter.CheckSignatureFrom(root); err != nil {
				t.Errorf("renewed intermediate is not signed by the root: %v", err)
			}
			// The old key is deleted: it signs nothing any more, and
			// SVIDs under the old intermediate carry its certificate,
			// which stays valid.
			if _, err := f.keys.GetKey(context.Background(), oldKeyID); !errors.Is(err, keymanager.ErrNotFound) {
				t.Errorf("old intermediate key after renewal: got %v, want ErrNotFound", err)
			}
		})
	}
}

// racingStore runs race once, just before the first Txn reaches the store:
// another control plane writing first.
type racingStore struct {
	store.Store
	once sync.Once
	race func()
}

func (s *racingStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	s.once.Do(s.race)
	return s.Store.Txn(ctx, cmps, ops)
}

func TestStartRace(t *testing.T) {
	tests := []struct {
		name string
		// before runs on the store before the racing start.
		before func(t *testing.T, f *fixture)
	}{
		{"first-start", func(*testing.T, *fixture) {}},
		{"intermediate-renewal", func(t *testing.T, f *fixture) {
			f.newCA(t)
			f.clock.Advance(274 * 24 * time.Hour)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tt.before(t, f)
			var winner *ca.CA
			racing := &racingStore{Store: f.store, race: func() { winner = f.newCA(t) }}
			cfg := f.config()
			cfg.Store = racing
			loser, err := ca.New(context.Background(), cfg)
			if err != nil {
				t.Fatalf("New losing the race: %v", err)
			}
			if winner == nil {
				t.Fatal("the racing start did not run")
			}
			if !loser.Roots()[0].Equal(winner.Roots()[0]) {
				t.Error("root: got the loser's own, want the winner's")
			}
			lc, err := loser.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
			if err != nil {
				t.Fatal(err)
			}
			wc, err := winner.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
			if err != nil {
				t.Fatal(err)
			}
			if !lc[1].Equal(wc[1]) {
				t.Error("intermediate: got the loser's own, want the winner's")
			}
			stored, _ := f.record(t, keyWorkloadIntermediate)
			if !stored.Equal(wc[1]) {
				t.Error("stored intermediate: got another one than the winner's")
			}
		})
	}
}

func TestConcurrentFirstStart(t *testing.T) {
	f := newFixture(t)
	const replicas = 4
	cas := make([]*ca.CA, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { cas[i], errs[i] = ca.New(context.Background(), f.config()) })
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: New: %v", i, errs[i])
		}
		if !cas[i].Roots()[0].Equal(cas[0].Roots()[0]) {
			t.Errorf("replica %d: got another root than replica 0", i)
		}
		chain, err := cas[i].SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := x509svid.Verify(chain, cas[0].Bundle(), x509svid.WithTime(f.clock.Now())); err != nil {
			t.Errorf("replica %d: its SVID does not verify with replica 0's bundle: %v", i, err)
		}
	}
}

func TestSignServing(t *testing.T) {
	f := newFixture(t)
	c := f.newCA(t)
	controlID := identity.ControlPlaneID(f.td)
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	chain, err := c.SignServing(&newKey(t).PublicKey, controlID, []string{"localhost", "control.example"}, ips, 24*time.Hour)
	if err != nil {
		t.Fatalf("SignServing: %v", err)
	}
	if len(chain) != 3 {
		t.Fatalf("SignServing: got a chain of %d, want 3 (leaf, intermediate, root)", len(chain))
	}
	if !chain[2].Equal(c.Roots()[0]) {
		t.Error("SignServing chain[2]: got another certificate than the root")
	}
	now := f.clock.Now()
	want := profile{
		BasicConstraintsValid: true, MaxPathLen: -1,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs:        []string{controlID.String()},
		DNSNames:    []string{"localhost", "control.example"},
		IPs:         []string{"127.0.0.1", "::1"},
		Subject:     "O=Bulwark",
		NotBefore:   now.Add(-30 * time.Second), NotAfter: now.Add(24 * time.Hour),
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}
	if diff := cmp.Diff(want, profileOf(chain[0])); diff != "" {
		t.Errorf("serving certificate profile (-want +got):\n%s", diff)
	}

	t.Run("verifies-as-svid", func(t *testing.T) {
		id, _, err := x509svid.Verify(chain, c.Bundle(), x509svid.WithTime(now))
		if err != nil {
			t.Fatalf("x509svid.Verify: %v", err)
		}
		if id != controlID {
			t.Errorf("verified id: got %s, want %s", id, controlID)
		}
	})
	t.Run("verifies-for-host-names", func(t *testing.T) {
		for _, host := range []string{"localhost", "control.example", "127.0.0.1", "::1"} {
			_, err := chain[0].Verify(x509.VerifyOptions{
				DNSName: host, Roots: pool(c.Roots()...), Intermediates: pool(chain[1]), CurrentTime: now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				t.Errorf("Verify for %s: %v", host, err)
			}
		}
	})
	t.Run("not-a-client-certificate", func(t *testing.T) {
		_, err := chain[0].Verify(x509.VerifyOptions{
			Roots: pool(c.Roots()...), Intermediates: pool(chain[1]), CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err == nil {
			t.Error("Verify for ClientAuth: got no error, want one")
		}
	})
	t.Run("pin-finds-root", func(t *testing.T) {
		got, err := mtls.PinnedAnchor(chain, mtls.SPKIPin(c.Roots()[0]))
		if err != nil {
			t.Fatalf("PinnedAnchor: %v", err)
		}
		if !got.Equal(c.Roots()[0]) {
			t.Error("PinnedAnchor: got another certificate than the root")
		}
		// What a proxy does next: verify the chain against the anchor.
		if _, err := chain[0].Verify(x509.VerifyOptions{
			Roots: pool(got), Intermediates: pool(chain[1:]...), CurrentTime: now,
		}); err != nil {
			t.Errorf("Verify against the pinned anchor: %v", err)
		}
	})
	t.Run("rejects", func(t *testing.T) {
		tests := []struct {
			name string
			id   spiffeid.ID
			dns  []string
			ips  []net.IP
			ttl  time.Duration
		}{
			{"other-trust-domain", spiffeid.RequireFromString("spiffe://evil.test/bulwark/control"), []string{"localhost"}, nil, 0},
			{"empty-dns-name", controlID, []string{""}, nil, 0},
			{"nil-ip", controlID, nil, []net.IP{nil}, 0},
			{"negative-ttl", controlID, []string{"localhost"}, nil, -time.Second},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if _, err := c.SignServing(&newKey(t).PublicKey, tt.id, tt.dns, tt.ips, tt.ttl); err == nil {
					t.Error("SignServing: got no error, want one")
				}
			})
		}
	})
}

// TestSubjectKeyID checks every SubjectKeyId is RFC 7093 method 1 (what
// crypto/x509 computes for CAs) and every AuthorityKeyId its issuer's.
func TestSubjectKeyID(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	c := f.newCA(t)
	o := f.newOperatorCA(t)
	certs := map[string]*x509.Certificate{"root": c.Roots()[0], "operator-root": o.Root()}
	for name, pub := range map[string]crypto.PublicKey{"ecdsa": &newKey(t).PublicKey, "rsa": &rsaKey.PublicKey, "ed25519": edPub} {
		chain, err := c.SignSVID(pub, workloadID(t, "default", "api"), 0)
		if err != nil {
			t.Fatal(err)
		}
		certs["svid-"+name] = chain[0]
		certs["intermediate"] = chain[1]
	}
	for name, cert := range certs {
		t.Run(name, func(t *testing.T) {
			var spki struct {
				Algorithm pkix.AlgorithmIdentifier
				PublicKey asn1.BitString
			}
			if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(spki.PublicKey.Bytes)
			if got, want := cert.SubjectKeyId, sum[:20]; !bytes.Equal(got, want) {
				t.Errorf("SubjectKeyId: got %x, want %x", got, want)
			}
		})
	}
}

// TestRootRecordMissing checks that a lost root record is an error, not a
// new root that would orphan the stored intermediate.
func TestRootRecordMissing(t *testing.T) {
	f := newFixture(t)
	f.newCA(t)
	if _, err := store.Delete(context.Background(), f.store, keyWorkloadRoot); err != nil {
		t.Fatal(err)
	}
	before, rev := f.records(t), f.revision(t)
	_, err := ca.New(context.Background(), f.config())
	if !errors.Is(err, ca.ErrCorruptRecord) {
		t.Fatalf("New: got %v, want an error wrapping %v", err, ca.ErrCorruptRecord)
	}
	for _, key := range []string{keyWorkloadRoot, keyWorkloadIntermediate} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("New: got error %q, want it to name %s", err, key)
		}
	}
	if diff := cmp.Diff(before, f.records(t)); diff != "" {
		t.Errorf("records changed by a failed start (-before +after):\n%s", diff)
	}
	if got := f.revision(t); got != rev {
		t.Errorf("store revision: got %d, want %d", got, rev)
	}
}
