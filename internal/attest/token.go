package attest

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// Join token format: "bwjt.<secret>" or "bwjt.<secret>.<pin>", where secret
// is SecretLen random bytes in unpadded base64url and pin is "sha256:" and the
// base64url SHA-256 of the root CA's SubjectPublicKeyInfo. The prefix lets
// secret scanners find leaked tokens.
const (
	// TokenPrefix starts every join token.
	TokenPrefix = "bwjt"
	// SecretLen is the number of random bytes of a token's secret.
	SecretLen = 32
)

// ParsedToken is a join token split into its parts.
type ParsedToken struct {
	// Secret is the base64url secret.
	Secret string
	// Pin is the root CA pin, "" when the token carries none.
	Pin string
}

// ParseToken splits a token without checking it against any store.
func ParseToken(token string) (ParsedToken, error) {
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) < 2 || len(parts) > 3 || parts[0] != TokenPrefix {
		return ParsedToken{}, errors.New("malformed join token: want bwjt.<secret>[.<pin>]")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || len(raw) != SecretLen {
		return ParsedToken{}, errors.New("malformed join token secret")
	}
	p := ParsedToken{Secret: parts[1]}
	if len(parts) == 3 {
		digest, ok := strings.CutPrefix(parts[2], "sha256:")
		if !ok {
			return ParsedToken{}, errors.New("malformed join token CA pin: want sha256:<base64url digest>")
		}
		if d, err := base64.RawURLEncoding.DecodeString(digest); err != nil || len(d) != sha256.Size {
			return ParsedToken{}, errors.New("malformed join token CA pin: want sha256:<base64url digest>")
		}
		p.Pin = parts[2]
	}
	return p, nil
}
