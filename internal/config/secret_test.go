package config_test

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// tlsPair is a certificate chain and its key, PEM.
type tlsPair struct {
	crt, key string
}

// issue makes a certificate for pub signed by parent with parentKey (self-
// signed when parent is nil), a CA when isCA.
func issue(t *testing.T, cn string, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, isCA bool) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              []string{cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if isCA {
		tmpl.DNSNames = nil
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certBlock(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func keyBlock(t *testing.T, typ string, der []byte) string {
	t.Helper()
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func pkcs8(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// rsaKeys are generated once: RSA generation is slow.
var rsaKeys = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsaKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// secretDoc is a Secret document (JSON) "web-tls" of type typ with data
// (values base64-encoded by encoding/json) and stringData.
func secretDoc(t *testing.T, typ string, data map[string]string, stringData map[string]string) []byte {
	t.Helper()
	doc := map[string]any{"apiVersion": config.APIVersion, "kind": config.KindSecret, "metadata": map[string]any{"name": "web-tls", "namespace": "shop"}}
	if typ != "" {
		doc["type"] = typ
	}
	if data != nil {
		bin := make(map[string][]byte, len(data))
		for k, v := range data {
			bin[k] = []byte(v)
		}
		doc["data"] = bin
	}
	if stringData != nil {
		doc["stringData"] = stringData
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeSecret decodes a Secret document with config.DecodeObject.
func decodeSecret(doc []byte) (*config.Secret, error) {
	o, err := config.DecodeObject(doc)
	if err != nil {
		return nil, err
	}
	return o.(*config.Secret), nil
}

// keyLines are the base64 lines of the PEM bodies of keys: no error may
// carry one.
func keyLines(keys ...string) []string {
	var out []string
	for _, k := range keys {
		for _, line := range strings.Split(k, "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				out = append(out, line)
			}
		}
	}
	return out
}

func TestSecretValidate(t *testing.T) {
	ec := ecKey(t)
	ecLeaf := issue(t, "shop.example.com", ec.Public(), nil, ec, false)
	ecSEC1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	rk := rsaKey(t)
	rsaLeaf := issue(t, "rsa.example.com", rk.Public(), nil, rk, false)
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edLeaf := issue(t, "ed.example.com", edPriv.Public(), nil, edPriv, false)
	caKey := ecKey(t)
	ca := issue(t, "Test CA", caKey.Public(), nil, caKey, true)
	leafKey := ecKey(t)
	chainLeaf := issue(t, "chain.example.com", leafKey.Public(), ca, caKey, false)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallLeaf := issue(t, "small.example.com", small.Public(), nil, small, false)
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	ecPKCS8 := keyBlock(t, "PRIVATE KEY", pkcs8(t, ec))
	ecPEM := keyBlock(t, "EC PRIVATE KEY", ecSEC1)
	rsaPKCS1 := keyBlock(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk))
	rsaPKCS8 := keyBlock(t, "PRIVATE KEY", pkcs8(t, rk))
	edPKCS8 := keyBlock(t, "PRIVATE KEY", pkcs8(t, edPriv))
	leafPKCS8 := keyBlock(t, "PRIVATE KEY", pkcs8(t, leafKey))
	otherKey := keyBlock(t, "PRIVATE KEY", pkcs8(t, ecKey(t)))
	secrets := keyLines(ecPKCS8, ecPEM, rsaPKCS1, rsaPKCS8, edPKCS8, leafPKCS8, otherKey)

	tlsData := func(crt, key string) map[string]string {
		return map[string]string{config.SecretKeyTLSCert: crt, config.SecretKeyTLSKey: key}
	}
	const crtPath, keyPath = `data["tls.crt"]`, `data["tls.key"]`
	tests := []struct {
		name       string
		typ        string
		data       map[string]string
		stringData map[string]string
		path       string
		msg        string
	}{
		{name: "ecdsa_pkcs8", data: tlsData(certBlock(ecLeaf), ecPKCS8)},
		{name: "ecdsa_sec1", data: tlsData(certBlock(ecLeaf), ecPEM)},
		{name: "ecdsa_sec1_with_parameters", data: tlsData(certBlock(ecLeaf), "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"+ecPEM)},
		{name: "rsa_pkcs1", data: tlsData(certBlock(rsaLeaf), rsaPKCS1)},
		{name: "rsa_pkcs8", data: tlsData(certBlock(rsaLeaf), rsaPKCS8)},
		{name: "ed25519", data: tlsData(certBlock(edLeaf), edPKCS8)},
		{name: "chain", data: tlsData(certBlock(chainLeaf)+certBlock(ca), leafPKCS8)},
		{name: "string_data", stringData: tlsData(certBlock(ecLeaf), ecPKCS8)},
		{name: "string_data_overrides", data: tlsData(certBlock(ecLeaf), otherKey), stringData: map[string]string{config.SecretKeyTLSKey: ecPKCS8}},
		{name: "type_missing", typ: "-", data: tlsData(certBlock(ecLeaf), ecPKCS8), path: "type", msg: "required"},
		{name: "type_opaque", typ: "Opaque", data: tlsData(certBlock(ecLeaf), ecPKCS8), path: "type", msg: `unsupported value "Opaque"`},
		{name: "unknown_key", data: map[string]string{config.SecretKeyTLSCert: certBlock(ecLeaf), config.SecretKeyTLSKey: ecPKCS8, "ca.crt": certBlock(ca)}, path: `data["ca.crt"]`, msg: "unknown key"},
		{name: "no_data", path: "data", msg: "required: tls.crt"},
		{name: "redacted", data: tlsData("", ""), path: "data", msg: "redacted"},
		{name: "key_missing", data: map[string]string{config.SecretKeyTLSCert: certBlock(ecLeaf)}, path: keyPath, msg: "required"},
		{name: "key_empty", data: tlsData(certBlock(ecLeaf), ""), path: keyPath, msg: "empty"},
		{name: "crt_missing", data: map[string]string{config.SecretKeyTLSKey: ecPKCS8}, path: crtPath, msg: "required"},
		{name: "crt_not_pem", data: tlsData("hello", ecPKCS8), path: crtPath, msg: "no PEM CERTIFICATE block"},
		{name: "crt_holds_key", data: tlsData(ecPKCS8, ecPKCS8), path: crtPath, msg: `"PRIVATE KEY", want CERTIFICATE`},
		{name: "crt_bad_der", data: tlsData(keyBlock(t, "CERTIFICATE", []byte{0x30, 0x03, 1, 2, 3}), ecPKCS8), path: crtPath, msg: "certificate 1:"},
		{name: "crt_trailing", data: tlsData(certBlock(ecLeaf)+"junk", ecPKCS8), path: crtPath, msg: "content after the last PEM block"},
		{name: "crt_too_many", data: tlsData(strings.Repeat(certBlock(ecLeaf), 11), ecPKCS8), path: crtPath, msg: "more than 10 certificates"},
		{name: "crt_too_big", data: tlsData(keyBlock(t, "CERTIFICATE", make([]byte, 65*1024)), ecPKCS8), path: crtPath, msg: "at most 65536"},
		{name: "data_too_big", data: tlsData(strings.Repeat("x", 300<<10), ecPKCS8), path: "data", msg: "at most 262144"},
		{name: "chain_reversed", data: tlsData(certBlock(ca)+certBlock(chainLeaf), leafPKCS8), path: crtPath, msg: "leaf first"},
		{name: "key_mismatch", data: tlsData(certBlock(ecLeaf), otherKey), path: keyPath, msg: "does not match the public key of the leaf"},
		{name: "key_of_ca", data: tlsData(certBlock(chainLeaf)+certBlock(ca), keyBlock(t, "PRIVATE KEY", pkcs8(t, caKey))), path: keyPath, msg: "does not match"},
		{name: "key_rsa_for_ec", data: tlsData(certBlock(ecLeaf), rsaPKCS1), path: keyPath, msg: "does not match"},
		{name: "key_rsa_small", data: tlsData(certBlock(smallLeaf), keyBlock(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(small))), path: keyPath, msg: "1024 bits: must be 2048 to 8192"},
		{name: "key_x25519", data: tlsData(certBlock(ecLeaf), keyBlock(t, "PRIVATE KEY", pkcs8(t, x))), path: keyPath, msg: "not a signature key"},
		{name: "key_p224", data: tlsData(certBlock(ecLeaf), keyBlock(t, "PRIVATE KEY", pkcs8(t, p224))), path: keyPath, msg: "unsupported curve"},
		{name: "key_encrypted_pkcs8", data: tlsData(certBlock(ecLeaf), keyBlock(t, "ENCRYPTED PRIVATE KEY", []byte{1, 2, 3})), path: keyPath, msg: "encrypted private key is not supported"},
		{name: "key_encrypted_legacy", data: tlsData(certBlock(rsaLeaf), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1, 2, 3}}))), path: keyPath, msg: "encrypted private key is not supported"},
		{name: "key_two", data: tlsData(certBlock(ecLeaf), ecPKCS8+ecPEM), path: keyPath, msg: "more than one private key"},
		{name: "key_holds_cert", data: tlsData(certBlock(ecLeaf), certBlock(ecLeaf)), path: keyPath, msg: "holds a CERTIFICATE"},
		{name: "key_not_pem", data: tlsData(certBlock(ecLeaf), "secret"), path: keyPath, msg: "no PEM private key block"},
		{name: "key_other_block", data: tlsData(certBlock(ecLeaf), keyBlock(t, "PUBLIC KEY", []byte{1})), path: keyPath, msg: `PEM block of type "PUBLIC KEY"`},
		{name: "key_bad_der", data: tlsData(certBlock(ecLeaf), keyBlock(t, "EC PRIVATE KEY", pkcs8(t, ec))), path: keyPath, msg: "not a valid private key"},
		{name: "key_trailing", data: tlsData(certBlock(ecLeaf), ecPKCS8+"x"), path: keyPath, msg: "content after the last PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := tt.typ
			switch typ {
			case "":
				typ = config.SecretTypeTLS
			case "-":
				typ = ""
			}
			s, err := decodeSecret(secretDoc(t, typ, tt.data, tt.stringData))
			if tt.path == "" {
				if err != nil {
					t.Fatalf("got error %v, want nil", err)
				}
				if s.StringData != nil {
					t.Errorf("got stringData %v, want it merged into data", s.StringData)
				}
				want := map[string]string{}
				for k, v := range tt.data {
					want[k] = v
				}
				for k, v := range tt.stringData {
					want[k] = v
				}
				got := map[string]string{}
				for k, v := range s.Data {
					got[k] = string(v)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("data mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one at %s", tt.path)
			}
			for _, line := range secrets {
				if strings.Contains(err.Error(), line) {
					t.Fatalf("the error carries key material: %v", err)
				}
			}
			var de *config.DocumentError
			if !asDocumentError(err, &de) {
				t.Fatalf("got %T %v, want a DocumentError", err, err)
			}
			fes, _ := de.Err.(config.FieldErrors)
			if len(fes) != 1 || fes[0].Path != tt.path || !strings.Contains(fes[0].Msg, tt.msg) {
				t.Fatalf("got errors %v, want exactly one at %s containing %q", de.Err, tt.path, tt.msg)
			}
		})
	}
}

func asDocumentError(err error, de **config.DocumentError) bool {
	d, ok := err.(*config.DocumentError)
	*de = d
	return ok
}

func TestSecretRedacted(t *testing.T) {
	ec := ecKey(t)
	leaf := issue(t, "shop.example.com", ec.Public(), nil, ec, false)
	key := keyBlock(t, "PRIVATE KEY", pkcs8(t, ec))
	s, err := decodeSecret(secretDoc(t, config.SecretTypeTLS, map[string]string{config.SecretKeyTLSCert: certBlock(leaf), config.SecretKeyTLSKey: key}, nil))
	if err != nil {
		t.Fatal(err)
	}
	s.Metadata.Labels = map[string]string{"team": "shop"}
	red := config.Redact(s)
	b, err := config.MarshalYAML(red)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range keyLines(key, certBlock(leaf)) {
		if strings.Contains(string(b), line) {
			t.Fatalf("the redacted form carries data:\n%s", b)
		}
	}
	rs := red.(*config.Secret)
	if rs == s {
		t.Fatal("Redact returned the Secret itself, want a copy")
	}
	wantData := map[string][]byte{config.SecretKeyTLSCert: {}, config.SecretKeyTLSKey: {}}
	if diff := cmp.Diff(wantData, rs.Data); diff != "" {
		t.Errorf("redacted data mismatch (-want +got):\n%s", diff)
	}
	if rs.Type != config.SecretTypeTLS || rs.Metadata.Name != "web-tls" || rs.Metadata.Labels["team"] != "shop" {
		t.Errorf("got %+v, want the type and metadata kept", rs)
	}
	if string(s.Data[config.SecretKeyTLSKey]) != key {
		t.Error("Redact changed the original Secret")
	}
	rs.Metadata.Labels["team"] = "x"
	if s.Metadata.Labels["team"] != "shop" {
		t.Error("the redacted copy shares its labels with the original")
	}

	// What a read shows cannot be applied back over the real Secret.
	_, err = config.Decode(b)
	if err == nil || !strings.Contains(err.Error(), "redacted") {
		t.Errorf("applying the redacted form: got %v, want an error saying the data was redacted", err)
	}

	if got := (*config.Secret)(nil).Redacted(); got != nil {
		t.Errorf("Redacted of nil: got %v, want nil", got)
	}
}

func TestSecretDecodeErrorsCarryNoData(t *testing.T) {
	// Invalid base64 in data, and a wrong type: the decoder's messages
	// never quote the value.
	doc := `{"apiVersion":"bulwark.dev/v1alpha1","kind":"Secret","metadata":{"name":"x"},"type":"kubernetes.io/tls","data":{"tls.key":"c2VjcmV0LXZhbHVl!!"},"stringData":{"tls.crt":7}}`
	_, err := config.DecodeObject([]byte(doc))
	if err == nil {
		t.Fatal("got no error")
	}
	for _, s := range []string{"c2VjcmV0LXZhbHVl", "secret-value"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q carries the value", err)
		}
	}
	if !strings.Contains(err.Error(), `data["tls.key"]`) || !strings.Contains(err.Error(), `stringData["tls.crt"]`) {
		t.Errorf("got %v, want errors naming both fields", err)
	}
}

func ExampleSecret_Redacted() {
	s := &config.Secret{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindSecret},
		Metadata: config.ObjectMeta{Name: "shop-tls", Namespace: "shop"},
		Type:     config.SecretTypeTLS,
		Data: map[string][]byte{
			config.SecretKeyTLSCert: []byte("-----BEGIN CERTIFICATE-----\n..."),
			config.SecretKeyTLSKey:  []byte("-----BEGIN PRIVATE KEY-----\n..."),
		},
	}
	b, err := config.MarshalYAML(config.Redact(s))
	if err != nil {
		panic(err)
	}
	fmt.Print(string(b))
	// Output:
	// apiVersion: bulwark.dev/v1alpha1
	// data:
	//   tls.crt: ""
	//   tls.key: ""
	// kind: Secret
	// metadata:
	//   name: shop-tls
	//   namespace: shop
	// type: kubernetes.io/tls
}
