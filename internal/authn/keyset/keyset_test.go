package keyset_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/bulwarkmesh/bulwark/internal/authn/keyset"
)

var (
	rsa2048 = mustKey(rsa.GenerateKey(rand.Reader, 2048))
	rsa1024 = mustKey(rsa.GenerateKey(rand.Reader, 1024))
	p256    = mustKey(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	p384    = mustKey(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	p521    = mustKey(ecdsa.GenerateKey(elliptic.P521(), rand.Reader))
)

func mustKey[K any](k K, err error) K {
	if err != nil {
		panic(err)
	}
	return k
}

// jwkJSON returns the JWK of raw (public or private) with extra members.
func jwkJSON(t *testing.T, raw any, extra map[string]any) map[string]any {
	t.Helper()
	k, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for name, v := range extra {
		m[name] = v
	}
	return m
}

func set(t *testing.T, keys ...map[string]any) []byte {
	t.Helper()
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pub(k crypto.Signer) any { return k.Public() }

func TestParse(t *testing.T) {
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ KID, Alg string }
	tests := []struct {
		name    string
		doc     []byte
		want    []key // usable keys
		wantErr string
	}{
		{name: "rsa_inferred_rs256", doc: set(t, jwkJSON(t, pub(rsa2048), map[string]any{"kid": "r"})), want: []key{{"r", "RS256"}}},
		{name: "rsa_alg_ps384", doc: set(t, jwkJSON(t, pub(rsa2048), map[string]any{"kid": "r", "alg": "PS384"})), want: []key{{"r", "PS384"}}},
		{name: "ec_curves_inferred", doc: set(t,
			jwkJSON(t, pub(p256), map[string]any{"kid": "a"}),
			jwkJSON(t, pub(p384), map[string]any{"kid": "b"}),
			jwkJSON(t, pub(p521), map[string]any{"kid": "c"}),
		), want: []key{{"a", "ES256"}, {"b", "ES384"}, {"c", "ES512"}}},
		{name: "ed25519_inferred", doc: set(t, jwkJSON(t, edPub, nil)), want: []key{{"", "EdDSA"}}},
		{name: "use_sig", doc: set(t, jwkJSON(t, pub(p256), map[string]any{"use": "sig", "key_ops": []string{"verify"}})), want: []key{{"", "ES256"}}},
		{name: "encryption_key_skipped", doc: set(t,
			jwkJSON(t, pub(rsa2048), map[string]any{"kid": "enc", "use": "enc", "alg": "RSA-OAEP"}),
			jwkJSON(t, pub(rsa2048), map[string]any{"kid": "enc2", "alg": "RSA-OAEP-256"}),
			jwkJSON(t, pub(p256), map[string]any{"kid": "sig"}),
		), want: []key{{"sig", "ES256"}}},
		{name: "unknown_kty_skipped", doc: set(t,
			map[string]any{"kty": "XYZ", "kid": "odd"},
			jwkJSON(t, pub(p256), map[string]any{"kid": "sig"}),
		), want: []key{{"sig", "ES256"}}},

		{name: "symmetric_key", doc: set(t, map[string]any{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "h"}), wantErr: `keys[0] (kid "h"): symmetric (oct) keys are not allowed`},
		{name: "rsa_private_key", doc: set(t, jwkJSON(t, rsa2048, map[string]any{"kid": "p"})), wantErr: "private keys are not allowed"},
		{name: "ec_private_key", doc: set(t, jwkJSON(t, p256, nil)), wantErr: "private keys are not allowed"},
		{name: "ed25519_private_key", doc: set(t, jwkJSON(t, edPriv, nil)), wantErr: "private keys are not allowed"},
		{name: "rsa_1024", doc: set(t, rsaJWK(rsa1024)), wantErr: "1024 bits"},
		{name: "rsa_malformed", doc: set(t, map[string]any{"kty": "RSA", "n": "AQAB"}), wantErr: "unusable RSA key"},
		{name: "ec_malformed", doc: set(t, map[string]any{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}), wantErr: "unusable EC key"},
		{name: "duplicate_kid", doc: set(t, jwkJSON(t, pub(p256), map[string]any{"kid": "d"}), jwkJSON(t, pub(p384), map[string]any{"kid": "d"})), wantErr: `duplicate "kid" "d"`},
		{name: "alg_none", doc: set(t, jwkJSON(t, pub(rsa2048), map[string]any{"alg": "none"})), wantErr: `alg "none" does not suit the key`},
		{name: "alg_hs256_on_rsa", doc: set(t, jwkJSON(t, pub(rsa2048), map[string]any{"alg": "HS256"})), wantErr: `alg "HS256" does not suit the key`},
		{name: "alg_es384_on_p256", doc: set(t, jwkJSON(t, pub(p256), map[string]any{"alg": "ES384"})), wantErr: `alg "ES384" does not suit the key`},
		{name: "alg_unknown", doc: set(t, jwkJSON(t, pub(p256), map[string]any{"alg": "XX999"})), wantErr: `"XX999": invalid key algorithm`},
		{name: "no_usable_key", doc: set(t, jwkJSON(t, pub(rsa2048), map[string]any{"use": "enc"})), wantErr: "no usable signature verification key"},
		{name: "empty_set", doc: set(t), wantErr: "no usable signature verification key"},
		{name: "bare_jwk", doc: mustJSON(t, jwkJSON(t, pub(p256), nil)), wantErr: `the "keys" list is missing`},
		{name: "not_json", doc: []byte("<html>"), wantErr: "syntax error at byte 1"},
		{name: "keys_not_a_list", doc: []byte(`{"keys":{}}`), wantErr: "keys has the wrong type"},
		{name: "too_big", doc: append(set(t, jwkJSON(t, pub(p256), nil))[:0:0], []byte(`{"keys":[],"x":"`+strings.Repeat("a", keyset.MaxSize)+`"}`)...), wantErr: "over the limit"},
		{name: "too_many_keys", doc: func() []byte {
			var keys []map[string]any
			for i := range keyset.MaxKeys + 1 {
				keys = append(keys, jwkJSON(t, pub(p256), map[string]any{"kid": fmt.Sprint(i)}))
			}
			return set(t, keys...)
		}(), wantErr: "101 keys is over the limit of 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := keyset.Parse(tt.doc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), `"k"`) || strings.Contains(err.Error(), `"d"`) && !strings.Contains(tt.name, "duplicate") {
					t.Errorf("the error quotes key material: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			var got []key
			for _, k := range s.Keys() {
				got = append(got, key{k.KID, k.Alg.String()})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
		})
	}
}

// rsaJWK writes the JWK of an RSA public key by hand: jwx refuses to import
// a weak one.
func rsaJWK(k *rsa.PrivateKey) map[string]any {
	enc := base64.RawURLEncoding
	return map[string]any{"kty": "RSA", "n": enc.EncodeToString(k.N.Bytes()), "e": enc.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMarshalIsCanonical(t *testing.T) {
	a := set(t,
		jwkJSON(t, pub(rsa2048), map[string]any{"kid": "r", "use": "sig", "x5t": "abc"}),
		jwkJSON(t, pub(rsa2048), map[string]any{"kid": "enc", "use": "enc"}),
		jwkJSON(t, pub(p256), map[string]any{"kid": "e"}),
	)
	b := set(t,
		jwkJSON(t, pub(rsa2048), map[string]any{"kid": "r", "alg": "RS256"}),
		jwkJSON(t, pub(p256), map[string]any{"kid": "e", "alg": "ES256"}),
	)
	ma, mb := marshal(t, a), marshal(t, b)
	if string(ma) != string(mb) {
		t.Errorf("got\n%s\nand\n%s\nwant equal documents", ma, mb)
	}
	back, err := keyset.Parse(ma)
	if err != nil {
		t.Fatal(err)
	}
	if back.Len() != 2 {
		t.Errorf("got %d keys back, want 2", back.Len())
	}
	if k, ok := back.KID("e"); !ok || k.Alg.String() != "ES256" {
		t.Errorf("got %+v, %v, want key e with ES256", k, ok)
	}
}

func marshal(t *testing.T, doc []byte) []byte {
	t.Helper()
	s, err := keyset.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AAAA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","alg":"ES256"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := keyset.Parse(b)
		if err != nil {
			return
		}
		if s.Len() == 0 {
			t.Fatal("a set without usable keys parsed")
		}
		out, err := s.Marshal()
		if err != nil {
			t.Fatalf("marshal a parsed set: %v", err)
		}
		back, err := keyset.Parse(out)
		if err != nil {
			t.Fatalf("parse a marshaled set: %v", err)
		}
		if back.Len() != s.Len() {
			t.Fatalf("got %d keys back, want %d", back.Len(), s.Len())
		}
	})
}
