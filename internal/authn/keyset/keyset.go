// Package keyset owns the reading of JWKS documents (RFC 7517) into the
// public keys that verify JWTs, with the algorithm each key may be used
// with fixed by the key itself, never by a token.
//
// It is a leaf below internal/authn so that internal/config can validate an
// inline JWKS at apply time with exactly the rules the proxy enforces.
//
// The rules, each of which makes Parse fail:
//
//   - The document is a JSON object with a "keys" list, at most MaxSize
//     bytes and MaxKeys keys (a bare JWK is not a JWKS).
//   - No symmetric ("oct") key and no private key: a JWKS is published, so
//     a secret in it is a leak, and an HMAC key would let anyone who reads
//     it mint tokens.
//   - RSA keys have at least MinRSABits bits.
//   - No two keys share a "kid".
//   - A key's "alg", when present, is an asymmetric signature algorithm
//     that suits the key (RS*, PS* for RSA; the curve's ES* for EC; EdDSA or
//     Ed25519 for Ed25519). Without "alg", the algorithm is inferred: RSA
//     RS256, EC P-256 ES256, P-384 ES384, P-521 ES512, OKP Ed25519 EdDSA.
//   - At least one key is usable.
//
// Keys that are not for signatures ("use": "enc", an encryption "alg",
// "key_ops" without "verify") and keys of types or curves this build does
// not support (secp256k1, X25519, Ed448, unknown "kty") are skipped, not
// refused: identity providers publish them next to their signing keys.
package keyset

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Limits of a JWKS document.
const (
	// MaxSize is the largest JWKS document accepted, in bytes.
	MaxSize = 1 << 20
	// MaxKeys is the most keys one document may hold.
	MaxKeys = 100
	// MinRSABits is the smallest RSA modulus accepted.
	MinRSABits = 2048
)

// Key is one usable verification key.
type Key struct {
	// KID is the key's "kid"; "" when it has none.
	KID string
	// Alg is the only algorithm the key verifies.
	Alg jwa.SignatureAlgorithm
	// Public is the raw public key: *rsa.PublicKey, *ecdsa.PublicKey or
	// ed25519.PublicKey.
	Public any
}

// Set is the usable keys of a JWKS document. It is immutable and safe for
// concurrent use. The zero Set holds no key.
type Set struct {
	keys  []Key
	byKID map[string]int
}

// Len returns the number of usable keys.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}

// Keys returns the usable keys in document order. The slice must not be
// modified.
func (s *Set) Keys() []Key {
	if s == nil {
		return nil
	}
	return s.keys
}

// KID returns the key whose "kid" is kid.
func (s *Set) KID(kid string) (Key, bool) {
	if s == nil {
		return Key{}, false
	}
	i, ok := s.byKID[kid]
	if !ok {
		return Key{}, false
	}
	return s.keys[i], true
}

// Marshal returns the usable keys as a JWKS document, each key with its
// "kid" (when it has one) and its "alg", and nothing else that was in the
// source document: two documents with the same usable keys marshal alike,
// whatever else they hold.
func (s *Set) Marshal() ([]byte, error) {
	out := jwk.NewSet()
	for _, k := range s.Keys() {
		pub, err := jwk.Import(k.Public)
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		if k.KID != "" {
			if err := pub.Set(jwk.KeyIDKey, k.KID); err != nil {
				return nil, fmt.Errorf("jwks: %w", err)
			}
		}
		if err := pub.Set(jwk.AlgorithmKey, k.Alg); err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		if err := out.AddKey(pub); err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return b, nil
}

// Parse reads a JWKS document and returns its usable keys. The error names
// the offending key by its index and kid, and never quotes key material.
func Parse(b []byte) (*Set, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("jwks: %d bytes is over the limit of %d", len(b), MaxSize)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("jwks: not a JSON object with a list of keys: %v", jsonProblem(err))
	}
	if doc.Keys == nil {
		return nil, errors.New(`jwks: the "keys" list is missing`)
	}
	if len(doc.Keys) > MaxKeys {
		return nil, fmt.Errorf("jwks: %d keys is over the limit of %d", len(doc.Keys), MaxKeys)
	}
	parsed, err := jwk.Parse(b, jwk.WithStrictKeySetParsing(false), jwk.WithRejectDuplicateKID(true), jwk.WithMaxKeys(MaxKeys))
	if err != nil {
		return nil, fmt.Errorf("jwks: %v", err)
	}
	s := &Set{byKID: map[string]int{}}
	for i := range parsed.Len() {
		k, _ := parsed.Key(i)
		key, usable, err := usableKey(k)
		if err != nil {
			kid, _ := k.KeyID()
			return nil, fmt.Errorf("jwks: keys[%d] (kid %q): %w", i, kid, err)
		}
		if !usable {
			continue
		}
		if key.KID != "" {
			if _, dup := s.byKID[key.KID]; dup {
				return nil, fmt.Errorf("jwks: keys[%d]: duplicate kid %q", i, key.KID)
			}
			s.byKID[key.KID] = len(s.keys)
		}
		s.keys = append(s.keys, key)
	}
	if len(s.keys) == 0 {
		return nil, errors.New("jwks: no usable signature verification key (RSA, EC P-256/P-384/P-521 or Ed25519 public key)")
	}
	return s, nil
}

// jsonProblem shortens a JSON error without quoting the document.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s has the wrong type", te.Field)
	}
	return err.Error()
}

// usableKey classifies one key of a set: an error refuses the whole set,
// usable=false skips the key.
func usableKey(k jwk.Key) (key Key, usable bool, err error) {
	if uk, ok := k.(jwk.UnsupportedKey); ok {
		return Key{}, false, unsupported(uk)
	}
	kty := k.KeyType()
	if kty == jwa.OctetSeq() {
		return Key{}, false, errors.New("symmetric (oct) keys are not allowed: a JWKS is public")
	}
	if priv, perr := jwk.IsPrivateKey(k); perr == nil && priv {
		return Key{}, false, errors.New("private keys are not allowed: publish only the public key")
	}
	if use, ok := k.KeyUsage(); ok && use != "sig" {
		return Key{}, false, nil
	}
	if ops, ok := k.KeyOps(); ok && !containsVerify(ops) {
		return Key{}, false, nil
	}
	var alg jwa.SignatureAlgorithm
	if ka, ok := k.Algorithm(); ok {
		sa, isSig := jwa.LookupSignatureAlgorithm(ka.String())
		if !isSig {
			// An encryption algorithm ("RSA-OAEP"): not for us.
			if _, isEnc := jwa.LookupKeyEncryptionAlgorithm(ka.String()); isEnc {
				return Key{}, false, nil
			}
			return Key{}, false, fmt.Errorf("alg %q is not a supported signature algorithm", ka.String())
		}
		alg = sa
	}
	var raw any
	if err := jwk.Export(k, &raw); err != nil {
		return Key{}, false, fmt.Errorf("read %s key: %v", kty, err)
	}
	kid, _ := k.KeyID()
	key = Key{KID: kid, Public: raw}
	switch pub := raw.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < MinRSABits {
			return Key{}, false, fmt.Errorf("RSA key of %d bits is below the minimum of %d", bits, MinRSABits)
		}
		key.Alg, err = pick(alg, jwa.RS256(), jwa.RS256(), jwa.RS384(), jwa.RS512(), jwa.PS256(), jwa.PS384(), jwa.PS512())
	case *ecdsa.PublicKey:
		var want jwa.SignatureAlgorithm
		switch pub.Curve {
		case elliptic.P256():
			want = jwa.ES256()
		case elliptic.P384():
			want = jwa.ES384()
		case elliptic.P521():
			want = jwa.ES512()
		default:
			return Key{}, false, nil // secp256k1 and other curves: not supported
		}
		key.Alg, err = pick(alg, want, want)
	case ed25519.PublicKey:
		key.Alg, err = pick(alg, jwa.EdDSA(), jwa.EdDSA(), jwa.EdDSAEd25519())
	default:
		return Key{}, false, nil // X25519, Ed448, ...
	}
	if err != nil {
		return Key{}, false, err
	}
	return key, true, nil
}

// unsupported classifies a key jwx could not parse: one of a type and curve
// this package verifies with is refused (a malformed or weak key, such as
// RSA below 2048 bits), any other is skipped.
func unsupported(uk jwk.UnsupportedKey) error {
	raw, err := json.Marshal(uk)
	if err != nil {
		return fmt.Errorf("unreadable key: %v", uk.Reason())
	}
	var m struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		Use string `json:"use"`
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil
	}
	if m.Use != "" && m.Use != "sig" {
		return nil
	}
	if _, isEnc := jwa.LookupKeyEncryptionAlgorithm(m.Alg); isEnc {
		return nil
	}
	switch {
	case m.Kty == "oct":
		return errors.New("symmetric (oct) keys are not allowed: a JWKS is public")
	case m.Kty == "RSA",
		m.Kty == "EC" && (m.Crv == "P-256" || m.Crv == "P-384" || m.Crv == "P-521"),
		m.Kty == "OKP" && m.Crv == "Ed25519":
		return fmt.Errorf("unusable %s key: %v", m.Kty, uk.Reason())
	}
	return nil
}

// pick returns alg when it is among allowed, def when alg is unset.
func pick(alg, def jwa.SignatureAlgorithm, allowed ...jwa.SignatureAlgorithm) (jwa.SignatureAlgorithm, error) {
	if alg == (jwa.SignatureAlgorithm{}) {
		return def, nil
	}
	for _, a := range allowed {
		if a == alg {
			return alg, nil
		}
	}
	return jwa.SignatureAlgorithm{}, fmt.Errorf("alg %q does not suit the key (allowed: %v)", alg.String(), allowed)
}

// containsVerify reports whether key_ops allows verification.
func containsVerify(ops jwk.KeyOperationList) bool {
	for _, op := range ops {
		if op == jwk.KeyOpVerify {
			return true
		}
	}
	return false
}
