package attest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/attest"
)

// secretOf returns the unpadded base64url encoding of n bytes of b, the
// secret part of a join token when n is attest.SecretLen.
func secretOf(b byte, n int) string {
	return base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{b}, n))
}

// pinOf returns a well-formed CA pin: "sha256:" and the base64url SHA-256
// of data.
func pinOf(data string) string {
	sum := sha256.Sum256([]byte(data))
	return "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

func TestParseToken(t *testing.T) {
	secret := secretOf(0xab, attest.SecretLen)
	pin := pinOf("root spki")
	tests := []struct {
		name  string
		token string
		want  attest.ParsedToken
	}{
		{name: "no_pin", token: "bwjt." + secret, want: attest.ParsedToken{Secret: secret}},
		{name: "with_pin", token: "bwjt." + secret + "." + pin, want: attest.ParsedToken{Secret: secret, Pin: pin}},
		{name: "surrounding_whitespace_trimmed", token: "  bwjt." + secret + "\n", want: attest.ParsedToken{Secret: secret}},
		{name: "url_safe_alphabet", token: "bwjt." + secretOf(0xff, attest.SecretLen), want: attest.ParsedToken{Secret: secretOf(0xff, attest.SecretLen)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := attest.ParseToken(tt.token)
			if err != nil {
				t.Fatalf("ParseToken: got error %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseToken (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseTokenMalformed(t *testing.T) {
	secret := secretOf(0xab, attest.SecretLen)
	pin := pinOf("root spki")
	tests := []struct {
		name  string
		token string
	}{
		{name: "empty", token: ""},
		{name: "whitespace_only", token: " \n"},
		{name: "prefix_only", token: "bwjt"},
		{name: "bare_secret", token: secret},
		{name: "wrong_prefix", token: "bwxt." + secret},
		{name: "uppercase_prefix", token: "BWJT." + secret},
		{name: "empty_secret", token: "bwjt."},
		{name: "padded_base64", token: "bwjt." + secret + "="},
		{name: "std_base64_alphabet", token: "bwjt." + strings.ReplaceAll(strings.ReplaceAll(secretOf(0xff, attest.SecretLen), "_", "/"), "-", "+")},
		{name: "not_base64", token: "bwjt." + strings.Repeat("*", 43)},
		{name: "secret_too_short", token: "bwjt." + secretOf(0xab, attest.SecretLen-1)},
		{name: "secret_too_long", token: "bwjt." + secretOf(0xab, attest.SecretLen+1)},
		{name: "empty_pin", token: "bwjt." + secret + "."},
		{name: "pin_without_sha256_prefix", token: "bwjt." + secret + ".md5:abc"},
		{name: "pin_bare_digest", token: "bwjt." + secret + "." + strings.TrimPrefix(pin, "sha256:")},
		{name: "too_many_parts", token: "bwjt." + secret + "." + pin + ".extra"},
		{name: "inner_space", token: "bwjt. " + secret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := attest.ParseToken(tt.token)
			if err == nil {
				t.Fatalf("ParseToken(%q): got %+v, nil error, want an error", tt.token, got)
			}
			if got != (attest.ParsedToken{}) {
				t.Errorf("ParseToken(%q): got %+v with the error, want the zero ParsedToken", tt.token, got)
			}
			// The message must not echo the token: it may be logged.
			if strings.Contains(err.Error(), secret) {
				t.Errorf("ParseToken error %q: got the secret in it, want it absent", err)
			}
		})
	}
}

// TestParseTokenPinDigest pins the documented pin format: "sha256:" and the
// base64url SHA-256 (32 bytes) of the root's SubjectPublicKeyInfo. A token
// with any other pin can never match a CA, so it is malformed.
func TestParseTokenPinDigest(t *testing.T) {
	secret := secretOf(0xab, attest.SecretLen)
	tests := []struct {
		name string
		pin  string
	}{
		{name: "empty_digest", pin: "sha256:"},
		{name: "digest_not_base64url", pin: "sha256:" + strings.Repeat("*", 43)},
		{name: "digest_too_short", pin: "sha256:" + secretOf(1, 16)},
		{name: "digest_too_long", pin: "sha256:" + secretOf(1, 33)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := attest.ParseToken("bwjt." + secret + "." + tt.pin)
			if err == nil {
				t.Errorf("ParseToken with pin %q: got %+v, nil error, want an error", tt.pin, got)
			}
		})
	}
}

func ExampleParseToken() {
	secret := base64.RawURLEncoding.EncodeToString(make([]byte, attest.SecretLen))
	sum := sha256.Sum256([]byte("the root CA's SubjectPublicKeyInfo"))
	pin := "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])

	p, err := attest.ParseToken(attest.TokenPrefix + "." + secret + "." + pin)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("secret:", p.Secret == secret)
	fmt.Println("pin:", p.Pin == pin)

	_, err = attest.ParseToken("bwjt.not-a-secret")
	fmt.Println(err)
	// Output:
	// secret: true
	// pin: true
	// malformed join token secret
}
