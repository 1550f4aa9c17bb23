package authn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// An Authenticator built from a JWTProvider with inline keys accepts a
// token of its issuer, gives the request the principal "<iss>/<sub>", and
// answers 401 for anything else.
func ExampleAuthenticator_Authenticate() {
	// The issuer's signing key and its public JWKS.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := jwk.Import(key.Public())
	_ = pub.Set(jwk.KeyIDKey, "k1")
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	jwks, _ := json.Marshal(set)

	objs, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: default}
spec:
  issuer: https://idp.example
  jwks: '` + string(jwks) + `'
  claimsToHeaders: [{claim: sub, header: X-User}]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	a, err := authn.New([]authn.Provider{{Spec: objs[0].(*config.JWTProvider), JWKS: jwks}}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}

	tok, _ := jwt.NewBuilder().Issuer("https://idp.example").Subject("alice").Expiration(time.Now().Add(time.Hour)).Build()
	priv, _ := jwk.Import(key)
	_ = priv.Set(jwk.KeyIDKey, "k1")
	signed, _ := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), priv))

	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+string(signed))
	res, err := a.Authenticate(r)
	fmt.Println(res.Principal, res.Provider, err)
	fmt.Printf("X-User: %s, Authorization: %q\n", r.Header.Get("X-User"), r.Header.Get("Authorization"))

	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer not-a-token")
	_, err = a.Authenticate(r)
	var ae *authn.Error
	if errors.As(err, &ae) {
		fmt.Println(ae.Status, ae.Challenge())
	}
	// Output:
	// https://idp.example/alice default/idp <nil>
	// X-User: alice, Authorization: ""
	// 401 Bearer error="invalid_token"
}
