package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// egressResources declare two external services, plain HTTP on port 80 of
// api.example.test and TLS on port 443 of secure.example.test (the test's
// servers stand in for them at the given addresses), and let web, and
// only web, reach each.
func egressResources(httpAddr, tlsAddr string) string {
	return fmt.Sprintf(`apiVersion: bulwark.dev/v1alpha1
kind: ExternalService
metadata: {name: example-api, namespace: default}
spec:
  hosts: [api.example.test]
  ports: [{port: 80, protocol: http}]
  addresses: [%q]
---
apiVersion: bulwark.dev/v1alpha1
kind: ExternalService
metadata: {name: example-secure, namespace: default}
spec:
  hosts: [secure.example.test]
  ports: [{port: 443, protocol: tls}]
  addresses: [%q]
---
`, httpAddr, tlsAddr) + allowAll("example-api", "default/web") + "---\n" + allowAll("example-secure", "default/web")
}

// TestEgress: the outbound reaches a declared external host (plain HTTP,
// and TLS the app originates through CONNECT) for a caller that policy
// allows; an undeclared host, an undeclared port and a caller without a
// policy get 403, and the denial is listed by `bulwark get denials`.
func TestEgress(t *testing.T) {
	t.Parallel()
	ext := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "external %s %s", r.Host, r.URL.Path)
	})}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ext.Serve(httpLn) }()
	t.Cleanup(func() { ext.Close() })

	cert, roots := selfSignedCert(t, "secure.example.test")
	tlsLn, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	secure := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "secure %s %s", r.Host, r.URL.Path)
	})}
	go func() { _ = secure.Serve(tlsLn) }()
	t.Cleanup(func() { secure.Close() })

	m := startControl(t)
	web := m.startClientProxy("default/web")
	rogue := m.startClientProxy("default/rogue")
	m.apply(egressResources(httpLn.Addr().String(), tlsLn.Addr().String()))

	c := web.client()
	eventually(t, 15*time.Second, "declared external host reachable", func() error {
		code, body, err := getBody(c, "http://api.example.test/hello")
		if err != nil || code != http.StatusOK || body != "external api.example.test /hello" {
			return fmt.Errorf("got %d %q %v", code, body, err)
		}
		return nil
	})
	if code, body, err := getBody(c, "http://other.example.test/steal"); err != nil || code != http.StatusForbidden {
		t.Errorf("undeclared host: got %d %q %v, want 403", code, body, err)
	}
	if code, body, err := getBody(rogue.client(), "http://api.example.test/hello"); err != nil || code != http.StatusForbidden {
		t.Errorf("declared host, caller without a policy: got %d %q %v, want 403", code, body, err)
	}

	// TLS the app originates, through a CONNECT tunnel: the sidecar never
	// sees inside, the app verifies the external server itself.
	outbound, _ := url.Parse("http://" + web.outbound)
	tc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(outbound),
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	if code, body, err := getBody(tc, "https://secure.example.test/vault"); err != nil || code != http.StatusOK || body != "secure secure.example.test /vault" {
		t.Errorf("CONNECT to a declared tls host: got %d %q %v, want 200 from the external server", code, body, err)
	}
	for _, u := range []string{"https://undeclared.example.test/", "https://secure.example.test:8443/"} {
		if _, _, err := getBody(tc, u); err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Errorf("CONNECT for %s: got %v, want the tunnel refused with 403 Forbidden", u, err)
		}
	}

	// The denial reaches the control plane with the next report.
	eventually(t, 25*time.Second, "denial of the undeclared host listed", func() error {
		out, errOut, code := cli(t, m.env, "", "get", "denials", "-o", "json")
		if code != 0 {
			return fmt.Errorf("get denials: exit %d: %s", code, errOut)
		}
		var list struct {
			Items []denialItem `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return fmt.Errorf("get denials -o json: %v\n%s", err, out)
		}
		for _, d := range list.Items {
			if strings.Contains(d.Status.Destination, "other.example.test") && strings.HasSuffix(d.Status.Source, "/sa/web") {
				t.Logf("denial: %s -> %s %s %s: %s (%d)", d.Status.Source, d.Status.Destination, d.Status.Method, d.Status.Path, d.Status.Reason, d.Status.HTTPStatus)
				return nil
			}
		}
		return fmt.Errorf("no denial of web for other.example.test: %s", out)
	})
}

// getBody sends a GET and returns the status and body.
func getBody(c *http.Client, u string) (int, string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// selfSignedCert returns a certificate for host, valid for an hour, and a
// pool that trusts it.
func selfSignedCert(t *testing.T, host string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
