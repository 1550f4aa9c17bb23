package ca_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
)

func TestSPKIPin(t *testing.T) {
	root := newFixture(t).newCA(t).Roots()[0]
	sum := sha256.Sum256(root.RawSubjectPublicKeyInfo)
	want := "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
	if got := mtls.SPKIPin(root); got != want {
		t.Errorf("SPKIPin: got %q, want %q", got, want)
	}
	if got := mtls.SPKIPin(root); strings.ContainsAny(got, "=+/") || len(got) != len("sha256:")+43 {
		t.Errorf("SPKIPin: got %q, want unpadded base64url of 32 bytes", got)
	}
}

func TestVerifyPin(t *testing.T) {
	f := newFixture(t)
	c := f.newCA(t)
	chain, err := c.SignServing(&newKey(t).PublicKey, identity.ControlPlaneID(f.td), []string{"localhost"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, inter, root := chain[0], chain[1], chain[2]
	otherRoot := newFixture(t).newCA(t).Roots()[0]
	tests := []struct {
		name  string
		chain []*x509.Certificate
		pin   string
		want  *x509.Certificate
	}{
		{"root", chain, mtls.SPKIPin(root), root},
		{"intermediate", chain, mtls.SPKIPin(inter), inter},
		{"root-first-in-chain", []*x509.Certificate{root, leaf}, mtls.SPKIPin(root), root},
		{"leaf-is-not-an-anchor", chain, mtls.SPKIPin(leaf), nil},
		{"other-root", chain, mtls.SPKIPin(otherRoot), nil},
		{"chain-without-root", chain[:2], mtls.SPKIPin(root), nil},
		{"empty-chain", nil, mtls.SPKIPin(root), nil},
		{"nil-certificate", []*x509.Certificate{nil}, mtls.SPKIPin(root), nil},
		{"empty-pin", chain, "", nil},
		{"pin-without-prefix", chain, strings.TrimPrefix(mtls.SPKIPin(root), "sha256:"), nil},
		{"pin-other-hash", chain, "sha1:" + strings.TrimPrefix(mtls.SPKIPin(root), "sha256:"), nil},
		{"pin-truncated", chain, mtls.SPKIPin(root)[:20], nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mtls.PinnedAnchor(tt.chain, tt.pin)
			if tt.want == nil {
				if !errors.Is(err, mtls.ErrPinMismatch) {
					t.Fatalf("PinnedAnchor: got (%v, %v), want an error wrapping %v", got != nil, err, mtls.ErrPinMismatch)
				}
				return
			}
			if err != nil {
				t.Fatalf("PinnedAnchor: %v", err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("PinnedAnchor: got %q, want %q", got.Subject, tt.want.Subject)
			}
		})
	}
}
