package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/ca"
)

// newCSR returns a DER CSR signed by key.
func newCSR(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "proxy"}}, key)
	if err != nil {
		t.Fatalf("create csr: %v", err)
	}
	return der
}

func TestParseCSR(t *testing.T) {
	p256 := newKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}

	badSignature := newCSR(t, p256)
	badSignature[len(badSignature)-1] ^= 0xff
	// A CSR carrying the signature of another key's CSR: the requester
	// does not hold the key it asks a certificate for.
	var own, forged struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}
	if _, err := asn1.Unmarshal(newCSR(t, p256), &own); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(newCSR(t, newKey(t)), &forged); err != nil {
		t.Fatal(err)
	}
	own.Signature = forged.Signature
	otherKeySignature, err := asn1.Marshal(own)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		der     []byte
		wantPub crypto.PublicKey
		wantErr error
	}{
		{"ecdsa-p256", newCSR(t, p256), &p256.PublicKey, nil},
		{"ecdsa-p384", newCSR(t, p384), &p384.PublicKey, nil},
		{"ed25519", newCSR(t, ed), ed.Public(), nil},
		{"rsa-2048", newCSR(t, rsa2048), &rsa2048.PublicKey, nil},
		{"ecdsa-p224", newCSR(t, p224), nil, ca.ErrUnsupportedKey},
		{"rsa-1024", newCSR(t, rsa1024), nil, ca.ErrUnsupportedKey},
		{"bad-signature", badSignature, nil, ca.ErrInvalidCSR},
		{"signature-of-another-key", otherKeySignature, nil, ca.ErrInvalidCSR},
		{"garbage", []byte("this is not a csr"), nil, ca.ErrInvalidCSR},
		{"empty", nil, nil, ca.ErrInvalidCSR},
		{"trailing-data", append(newCSR(t, p256), 0), nil, ca.ErrInvalidCSR},
		{"truncated", newCSR(t, p256)[:40], nil, ca.ErrInvalidCSR},
		{"certificate-not-csr", newFixture(t).newCA(t).Roots()[0].Raw, nil, ca.ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := ca.ParseCSR(tt.der)
			if tt.wantErr != nil {
				t.Logf("ParseCSR: %v", err)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseCSR: got (%T, %v), want an error wrapping %v", pub, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCSR: %v", err)
			}
			if !publicKeyEqual(pub, tt.wantPub) {
				t.Errorf("ParseCSR: got public key %T, want the CSR's key %T", pub, tt.wantPub)
			}
		})
	}
}
