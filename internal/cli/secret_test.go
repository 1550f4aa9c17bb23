package cli_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

// tlsFiles writes a self-signed certificate for host and its key (PKCS#8)
// to PEM files and returns their paths and the key's PEM.
func tlsFiles(t *testing.T, host string) (certFile, keyFile, keyPEM string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	certFile = writeFile(t, "tls.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, "tls.key", keyPEM)
	return certFile, keyFile, keyPEM
}

// pemBodyLines are the base64 lines of a PEM document.
func pemBodyLines(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	return out
}

func TestCreateSecretTLS(t *testing.T) {
	cp := newControlPlane(t)
	certFile, keyFile, keyPEM := tlsFiles(t, "shop.example.com")

	r := cp.runOK(t, "create", "secret", "tls", "shop-tls", "-n", "shop", "--cert", certFile, "--key", keyFile)
	if r.out != "secret shop/shop-tls created\n" {
		t.Errorf("create: got %q, want %q", r.out, "secret shop/shop-tls created\n")
	}
	if r := cp.runOK(t, "create", "secret", "tls", "shop-tls", "-n", "shop", "--cert", certFile, "--key", keyFile); r.out != "secret shop/shop-tls unchanged\n" {
		t.Errorf("create again: got %q, want unchanged", r.out)
	}

	t.Run("get_table_shows_keys_only", func(t *testing.T) {
		r := cp.runOK(t, "get", "secrets", "-n", "shop")
		want := "NAME      TYPE               KEYS             AGE\nshop-tls  kubernetes.io/tls  tls.crt,tls.key  <age>\n"
		if got := ageColumn.ReplaceAllString(r.out, " <age>"); got != want {
			t.Errorf("got:\n%s\nwant:\n%s", got, want)
		}
	})
	for _, args := range [][]string{
		{"get", "secrets", "-n", "shop", "-o", "yaml"},
		{"get", "secret", "shop-tls", "-n", "shop", "-o", "json"},
		{"get", "secrets", "-A", "-o", "json"},
	} {
		t.Run("no_values_"+strings.Join(args[1:], "_"), func(t *testing.T) {
			r := cp.runOK(t, args...)
			for _, line := range pemBodyLines(keyPEM) {
				if strings.Contains(r.out, line) {
					t.Fatalf("`bulwark %s` shows the key:\n%s", strings.Join(args, " "), r.out)
				}
			}
			if !strings.Contains(r.out, "tls.key") {
				t.Errorf("`bulwark %s` does not show the keys of data:\n%s", strings.Join(args, " "), r.out)
			}
		})
	}
	t.Run("redacted_read_cannot_be_applied", func(t *testing.T) {
		out := cp.runOK(t, "get", "secret", "shop-tls", "-n", "shop", "-o", "yaml").out
		r := run(t, "", "--config", cp.credPath, "apply", "-f", writeFile(t, "s.yaml", out))
		if r.code != 1 || !strings.Contains(r.err, "redacted") || !strings.Contains(r.err, "nothing was sent") {
			t.Errorf("apply of the read: got exit %d, stderr %q; want 1 saying the data was redacted", r.code, r.err)
		}
	})
}

func TestCreateSecretTLSErrors(t *testing.T) {
	cp := newControlPlane(t)
	certFile, keyFile, keyPEM := tlsFiles(t, "shop.example.com")
	_, otherKey, otherPEM := tlsFiles(t, "other.example.com")
	big := writeFile(t, "big.pem", strings.Repeat("x", 300<<10))
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "key_mismatch", args: []string{"shop-tls", "--cert", certFile, "--key", otherKey}, code: 1, want: "--key " + otherKey + ": does not match the public key of the leaf"},
		{name: "key_is_cert", args: []string{"shop-tls", "--cert", certFile, "--key", certFile}, code: 1, want: "holds a CERTIFICATE"},
		{name: "cert_is_key", args: []string{"shop-tls", "--cert", keyFile, "--key", keyFile}, code: 1, want: "--cert " + keyFile + ": PEM block 1"},
		{name: "missing_key_flag", args: []string{"shop-tls", "--cert", certFile}, code: 2, want: "--cert and --key are required"},
		{name: "missing_name", args: []string{"--cert", certFile, "--key", keyFile}, code: 2, want: "accepts 1 arg"},
		{name: "bad_name", args: []string{"Shop_TLS", "--cert", certFile, "--key", keyFile}, code: 2, want: `NAME "Shop_TLS"`},
		{name: "bad_namespace", args: []string{"shop-tls", "-n", "Shop", "--cert", certFile, "--key", keyFile}, code: 2, want: "--namespace"},
		{name: "no_such_file", args: []string{"shop-tls", "--cert", certFile, "--key", certFile + ".missing"}, code: 1, want: "--key: open"},
		{name: "file_too_big", args: []string{"shop-tls", "--cert", big, "--key", keyFile}, code: 1, want: "larger than 262144 bytes"},
		{name: "key_from_command_line", args: []string{"shop-tls", "--cert", certFile, "--key-data", "x"}, code: 2, want: "unknown flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", append([]string{"--config", cp.credPath, "create", "secret", "tls"}, tt.args...)...)
			if r.code != tt.code || !strings.Contains(r.err, tt.want) {
				t.Fatalf("got exit %d, stderr %q; want %d containing %q", r.code, r.err, tt.code, tt.want)
			}
			for _, line := range append(pemBodyLines(keyPEM), pemBodyLines(otherPEM)...) {
				if strings.Contains(r.err+r.out, line) {
					t.Fatalf("the output carries key material: %q", r.err)
				}
			}
		})
	}
	if r := cp.runOK(t, "get", "secrets", "-A"); r.out != "No resources found.\n" {
		t.Errorf("after failed creates: got %q, want no secrets", r.out)
	}
}

func TestGetGateways(t *testing.T) {
	cp := newControlPlane(t)
	const gw = `apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  listeners:
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secret: shop-tls}]}}
  - {name: http, port: 8080, protocol: HTTP}
  - {name: tls, port: 9443, protocol: TLS}
  routes:
  - {name: web, service: web}
  - {name: api, matches: [{path: {prefix: /api}}], service: api}
  tlsRoutes:
  - {name: db, hosts: [db.example.com], service: db}
`
	if r := cp.runOK(t, "apply", "-f", writeFile(t, "gw.yaml", gw)); r.out != "gateway shop/edge created\n" {
		t.Errorf("apply: got %q", r.out)
	}
	r := cp.runOK(t, "get", "gateways", "-n", "shop")
	want := "NAME  LISTENERS                      ROUTES   AGE\nedge  https:8443,http:8080,tls:9443  2+1 tls  <age>\n"
	if got := ageColumn.ReplaceAllString(r.out, " <age>"); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	r = cp.runOK(t, "get", "gw", "-A")
	if !strings.HasPrefix(r.out, "NAMESPACE  NAME  LISTENERS") || !strings.Contains(r.out, "shop       edge") {
		t.Errorf("get gw -A: got\n%s", r.out)
	}
	// The stored form carries the defaults, and applies back unchanged.
	out := cp.runOK(t, "get", "gateway", "edge", "-n", "shop", "-o", "yaml").out
	if !strings.Contains(out, "redirectToHTTPS: true") || !strings.Contains(out, "maxConnectionsPerIP: 256") {
		t.Errorf("stored form without defaults:\n%s", out)
	}
	if r := cp.runOK(t, "apply", "-f", writeFile(t, "back.yaml", out)); r.out != "gateway shop/edge unchanged\n" {
		t.Errorf("apply of the read: got %q, want unchanged", r.out)
	}
}
