package authn_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/bulwarkmesh/bulwark/internal/authn"
)

// BenchmarkAuthenticate verifies tokens with a warm key set: the
// Authenticator is built once, as the proxy builds it once per snapshot.
// "repeat" sends the same token every time (a client reusing its token: the
// verified-token cache answers); "distinct" cycles through more tokens than
// the cache holds, so every one is verified from scratch.
func BenchmarkAuthenticate(b *testing.B) {
	for _, bc := range []struct {
		name string
		key  signingKey
	}{
		{name: "ES256", key: signingKey{kid: "e1", alg: jwa.ES256(), priv: ecKey1}},
		{name: "RS256_2048", key: signingKey{kid: "r1", alg: jwa.RS256(), priv: rsaKey1}},
	} {
		p := provider(b, "idp", jwksOf(b, false, bc.key), nil)
		distinct := make([][]string, 2*authn.MaxVerified)
		for i := range distinct {
			cl := claims("alice")
			cl["jti"] = i
			distinct[i] = []string{"Bearer " + sign(b, bc.key, cl, nil)}
		}
		for _, mode := range []string{"repeat", "distinct"} {
			b.Run(bc.name+"/"+mode, func(b *testing.B) {
				a := newAuthenticator(b, p)
				r := bearer("")
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					v := distinct[0]
					if mode == "distinct" {
						v = distinct[i%len(distinct)]
						i++
					}
					r.Header["Authorization"] = v
					res, err := a.Authenticate(r)
					if err != nil || res.Principal == "" {
						b.Fatalf("got %+v, %v", res, err)
					}
				}
			})
		}
	}
}

// BenchmarkSignatureOnly is the peer of BenchmarkAuthenticate in the same
// run: the bare signature check of the same tokens with crypto/ecdsa and
// crypto/rsa, without parsing, key lookup or claim checks. The difference
// is what the JOSE library and the validation rules cost.
func BenchmarkSignatureOnly(b *testing.B) {
	for _, bc := range []struct {
		name   string
		key    signingKey
		verify func(input, sig []byte) bool
	}{
		{name: "ES256", key: signingKey{kid: "e1", alg: jwa.ES256(), priv: ecKey1}, verify: func(input, sig []byte) bool {
			h := sha256.Sum256(input)
			r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
			return ecdsa.Verify(&ecKey1.PublicKey, h[:], r, s)
		}},
		{name: "RS256_2048", key: signingKey{kid: "r1", alg: jwa.RS256(), priv: rsaKey1}, verify: func(input, sig []byte) bool {
			h := sha256.Sum256(input)
			return rsa.VerifyPKCS1v15(&rsaKey1.PublicKey, crypto.SHA256, h[:], sig) == nil
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tok := sign(b, bc.key, claims("alice"), nil)
			dot := strings.LastIndexByte(tok, '.')
			input := []byte(tok[:dot])
			sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if !bc.verify(input, sig) {
					b.Fatal("signature does not verify")
				}
			}
		})
	}
}
