package keymanagertest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
)

// NewSealerFunc returns a fresh Sealer for one test.
type NewSealerFunc func(t *testing.T) keymanager.Sealer

// RunSealer runs the contract suite of keymanager.Sealer against the Sealer
// that newSealer makes, each case as a subtest.
func RunSealer(t *testing.T, newSealer NewSealerFunc) {
	t.Helper()
	t.Run("RoundTrip", func(t *testing.T) { testSealRoundTrip(t, newSealer(t)) })
	t.Run("FreshNonce", func(t *testing.T) { testSealFreshNonce(t, newSealer(t)) })
	t.Run("WrongPurpose", func(t *testing.T) { testSealWrongPurpose(t, newSealer(t)) })
	t.Run("Tampered", func(t *testing.T) { testSealTampered(t, newSealer(t)) })
	t.Run("Truncated", func(t *testing.T) { testSealTruncated(t, newSealer(t)) })
	t.Run("OtherSealer", func(t *testing.T) { testSealOtherSealer(t, newSealer(t), newSealer(t)) })
	t.Run("BadPurpose", func(t *testing.T) { testSealBadPurpose(t, newSealer(t)) })
}

// sealPlaintext is what the cases seal: recognisable, so a test can check
// that no error and no sealed blob carries it.
var sealPlaintext = []byte("-----BEGIN PRIVATE KEY-----\nsealer-contract-plaintext\n-----END PRIVATE KEY-----\n")

// mustSeal seals sealPlaintext for purpose.
func mustSeal(t *testing.T, s keymanager.Sealer, purpose string) []byte {
	t.Helper()
	sealed, err := s.Seal(context.Background(), purpose, sealPlaintext)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if bytes.Contains(sealed, []byte("sealer-contract-plaintext")) {
		t.Fatalf("sealed blob holds the plaintext")
	}
	return sealed
}

// checkUnseal checks that opening sealed for purpose fails with ErrUnseal
// and an error free of plaintext.
func checkUnseal(t *testing.T, s keymanager.Sealer, what, purpose string, sealed []byte) {
	t.Helper()
	got, err := s.Open(context.Background(), purpose, sealed)
	if err == nil {
		t.Fatalf("%s: Open succeeded (%d bytes), want an error", what, len(got))
	}
	if !errors.Is(err, keymanager.ErrUnseal) {
		t.Errorf("%s: Open error %v, want one wrapping ErrUnseal", what, err)
	}
	if strings.Contains(err.Error(), "sealer-contract-plaintext") {
		t.Errorf("%s: Open error carries the plaintext: %v", what, err)
	}
}

func testSealRoundTrip(t *testing.T, s keymanager.Sealer) {
	ctx := context.Background()
	for _, plain := range [][]byte{sealPlaintext, {}, bytes.Repeat([]byte{0}, 300<<10)} {
		sealed, err := s.Seal(ctx, "/resources/Secret/shop/tls", plain)
		if err != nil {
			t.Fatalf("Seal of %d bytes: %v", len(plain), err)
		}
		got, err := s.Open(ctx, "/resources/Secret/shop/tls", sealed)
		if err != nil {
			t.Fatalf("Open of %d bytes: %v", len(plain), err)
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("Open gave %d bytes, want the %d sealed", len(got), len(plain))
		}
	}
}

func testSealFreshNonce(t *testing.T, s keymanager.Sealer) {
	a, b := mustSeal(t, s, "p"), mustSeal(t, s, "p")
	if bytes.Equal(a, b) {
		t.Errorf("two seals of the same plaintext are equal, want a fresh nonce each time")
	}
}

func testSealWrongPurpose(t *testing.T, s keymanager.Sealer) {
	sealed := mustSeal(t, s, "/resources/Secret/shop/tls")
	for _, p := range []string{"/resources/Secret/shop/tls2", "/resources/Secret/other/tls", "/resources/Secret/shop/tl"} {
		checkUnseal(t, s, "purpose "+p, p, sealed)
	}
}

func testSealTampered(t *testing.T, s keymanager.Sealer) {
	sealed := mustSeal(t, s, "p")
	for i := range sealed {
		c := bytes.Clone(sealed)
		c[i] ^= 0x01
		checkUnseal(t, s, "byte flipped", "p", c)
	}
}

func testSealTruncated(t *testing.T, s keymanager.Sealer) {
	sealed := mustSeal(t, s, "p")
	for n := 0; n < len(sealed); n++ {
		checkUnseal(t, s, "truncated", "p", sealed[:n])
	}
	checkUnseal(t, s, "extended", "p", append(bytes.Clone(sealed), 0))
	checkUnseal(t, s, "nil", "p", nil)
}

func testSealOtherSealer(t *testing.T, s, other keymanager.Sealer) {
	checkUnseal(t, other, "sealed by another sealer", "p", mustSeal(t, s, "p"))
}

func testSealBadPurpose(t *testing.T, s keymanager.Sealer) {
	ctx := context.Background()
	if _, err := s.Seal(ctx, "", sealPlaintext); err == nil {
		t.Errorf("Seal with an empty purpose succeeded, want an error")
	}
	if _, err := s.Seal(ctx, strings.Repeat("p", 2000), sealPlaintext); err == nil {
		t.Errorf("Seal with a 2000-byte purpose succeeded, want an error")
	}
	if _, err := s.Open(ctx, "", mustSeal(t, s, "p")); err == nil {
		t.Errorf("Open with an empty purpose succeeded, want an error")
	}
}
