package admin_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// tlsSecretJSON returns a kubernetes.io/tls Secret of ns/name with a fresh
// self-signed pair, and the pair's key PEM.
func tlsSecretJSON(t testing.TB, ns, name string) (json.RawMessage, []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shop.example.com"}, DNSNames: []string{"shop.example.com"},
		NotBefore: start.Add(-time.Hour), NotAfter: start.Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := []byte(pemKey(t, key))
	b, err := json.Marshal(map[string]any{
		"apiVersion": config.APIVersion, "kind": config.KindSecret,
		"metadata": map[string]any{"name": name, "namespace": ns},
		"type":     config.SecretTypeTLS,
		"data":     map[string][]byte{config.SecretKeyTLSCert: certPEM, config.SecretKeyTLSKey: keyPEM},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b, keyPEM
}

// TestSecretNeverShown: every read of a Secret through the admin API, by
// the built-in admin, a mesh-wide reader and a namespace reader, shows its
// keys without values; the output cannot be applied back; nothing the
// server logged holds the key.
func TestSecretNeverShown(t *testing.T) {
	a := newAPI(t)
	doc, keyPEM := tlsSecretJSON(t, "team-a", "web-tls")
	a.mustApply(t, doc,
		roleJSON(config.RootNamespace, "reader", `[{"verbs":["get","list"],"kinds":["Secret"]}]`),
		bindingJSON(config.RootNamespace, "carol-reads", "reader", "carol"),
		roleJSON("team-a", "reader", `[{"verbs":["get","list"],"kinds":["Secret"]}]`),
		bindingJSON("team-a", "alice-reads", "reader", "alice"),
	)
	// The store holds the data (the internal API opens it).
	o, err := a.resources.Get(context.Background(), config.KindSecret, "team-a", "web-tls")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(o.(*config.Secret).Data[config.SecretKeyTLSKey], keyPEM) {
		t.Fatalf("the internal API does not give the applied key")
	}
	leaks := [][]byte{keyPEM, []byte(base64.StdEncoding.EncodeToString(keyPEM)), []byte("PRIVATE KEY")}
	clients := map[string]*http.Client{"admin": a.operator, "mesh reader": a.as(t, "carol"), "namespace reader": a.as(t, "alice")}
	paths := []string{"/v1/namespaces/team-a/secrets/web-tls", "/v1/secrets?namespace=team-a", "/v1/secrets"}
	for who, c := range clients {
		for _, path := range paths {
			if who == "namespace reader" && path == "/v1/secrets" {
				continue // across namespaces needs mesh-wide rights
			}
			got := send(t, c, "GET", a.srv.URL+path, "", nil)
			if got.status != http.StatusOK {
				t.Errorf("%s GET %s: got %d %s, want 200", who, path, got.status, got.body)
				continue
			}
			for _, l := range leaks {
				if bytes.Contains(got.body, l) {
					t.Errorf("%s GET %s shows the key: %s", who, path, got.body)
				}
			}
			if !bytes.Contains(got.body, []byte(`"tls.key":""`)) || !bytes.Contains(got.body, []byte(`"tls.crt":""`)) {
				t.Errorf("%s GET %s: want the data's keys with empty values, got %s", who, path, got.body)
			}
		}
	}
	// What get shows cannot be applied back over the Secret.
	got := send(t, a.operator, "GET", a.srv.URL+"/v1/namespaces/team-a/secrets/web-tls", "", nil)
	back := send(t, a.operator, "POST", a.srv.URL+"/v1/apply", "application/json", applyBody(t, got.body))
	if back.status != http.StatusUnprocessableEntity {
		t.Errorf("apply of the redacted Secret: got %d %s, want 422", back.status, back.body)
	}
	o, err = a.resources.Get(context.Background(), config.KindSecret, "team-a", "web-tls")
	if err != nil || !bytes.Equal(o.(*config.Secret).Data[config.SecretKeyTLSKey], keyPEM) {
		t.Errorf("the Secret changed after a refused apply (%v)", err)
	}
	for _, l := range leaks {
		if bytes.Contains([]byte(a.logs.String()), l) {
			t.Errorf("the server's logs hold the key")
		}
	}
}
