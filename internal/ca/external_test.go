package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
)

// ownRoot makes an operator's root for the fixture's trust domain; mutate
// changes the template before signing.
func ownRoot(t *testing.T, f *fixture, mutate func(*x509.Certificate)) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	now := f.clock.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(4242),
		Subject:               pkix.Name{CommonName: "Example Corp mesh root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{f.td.ID().URL()},
	}
	if mutate != nil {
		mutate(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestPrepareRootFromOperatorRoot(t *testing.T) {
	f := newDiskFixture(t)
	c := f.newCA(t)
	ctx := context.Background()
	root, key := ownRoot(t, f, nil)
	if err := c.PrepareRootFrom(ctx, root, key); err != nil {
		t.Fatalf("PrepareRootFrom: %v", err)
	}
	if got := len(c.Roots()); got != 2 {
		t.Fatalf("roots after prepare: got %d, want 2", got)
	}
	if err := c.ActivateRoot(ctx); err != nil {
		t.Fatalf("ActivateRoot: %v", err)
	}
	if !c.SigningRoot().Equal(root) {
		t.Fatal("signing root after activation: got another root, want the operator's")
	}
	chain, err := c.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, chains, err := x509svid.Verify(chain, c.Bundle(), x509svid.WithTime(f.clock.Now())); err != nil {
		t.Fatalf("verify svid under the operator's root: %v", err)
	} else if got := chains[0][len(chains[0])-1]; !got.Equal(root) {
		t.Errorf("svid chain ends in serial %s, want the operator's root", got.SerialNumber)
	}
	// The imported key is in the (encrypted) key manager: a restarted
	// control plane keeps signing under the operator's root.
	f.keys = openDisk(t, f.keyDir)
	if again := f.newCA(t); !again.SigningRoot().Equal(root) {
		t.Error("signing root after restart: want the operator's root")
	}
}

func TestPrepareRootFromRejects(t *testing.T) {
	f := newFixture(t)
	c := f.newCA(t)
	other := newKey(t)
	tests := []struct {
		name    string
		mutate  func(*x509.Certificate)
		key     func(*ecdsa.PrivateKey) *ecdsa.PrivateKey
		wantErr string
	}{
		{name: "not_ca", mutate: func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature }, wantErr: "not a CA"},
		{name: "path_len_zero", mutate: func(c *x509.Certificate) { c.MaxPathLen = 0; c.MaxPathLenZero = true }, wantErr: "path length 0"},
		{name: "expired", mutate: func(c *x509.Certificate) { c.NotAfter = f.clock.Now().Add(-time.Minute) }, wantErr: "not valid now"},
		{name: "no_uri_san", mutate: func(c *x509.Certificate) { c.URIs = nil }, wantErr: "URI SAN"},
		{name: "wrong_key", key: func(*ecdsa.PrivateKey) *ecdsa.PrivateKey { return other }, wantErr: "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, key := ownRoot(t, f, tt.mutate)
			if tt.key != nil {
				key = tt.key(key)
			}
			rev := f.revision(t)
			err := c.PrepareRootFrom(context.Background(), root, key)
			if !errors.Is(err, ca.ErrBadRoot) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("PrepareRootFrom: got %v, want ErrBadRoot mentioning %q", err, tt.wantErr)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d (nothing written)", got, rev)
			}
		})
	}
}

func TestParseRootPEM(t *testing.T) {
	f := newFixture(t)
	root, key := ownRoot(t, f, nil)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		cert, keyPEM []byte
		wantErr      string
	}{
		{name: "pkcs8", cert: certPEM, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})},
		{name: "sec1", cert: certPEM, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
		{name: "no_cert", cert: []byte("nope"), keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), wantErr: "no PEM CERTIFICATE"},
		{name: "bad_key_type", cert: certPEM, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1}}), wantErr: "want PRIVATE KEY"},
		{name: "garbage_key", cert: certPEM, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("secret-bytes")}), wantErr: "cannot parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, signer, err := ca.ParseRootPEM(tt.cert, tt.keyPEM)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error mentioning %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret-bytes") {
					t.Errorf("error leaks key material: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !cert.Equal(root) || !signer.Public().(*ecdsa.PublicKey).Equal(&key.PublicKey) {
				t.Error("got another certificate or key")
			}
		})
	}
}
