package e2e_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const webToAPI = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-to-api, namespace: default}
spec:
  selector: {service: api}
  action: ALLOW
  rules:
  - from: {services: ["default/web"]}
    to: {methods: ["GET"], paths: ["/hello", "/public/*"]}
`

// TestSkeleton is the walking skeleton's acceptance scenario: a control
// plane and three proxies (web, api, rogue) with tiny apps on loopback, and
// the web-to-api policy applied through the CLI.
func TestSkeleton(t *testing.T) {
	m := startControl(t)
	webApp, apiApp, rogueApp := startApp(t, "web"), startApp(t, "api"), startApp(t, "rogue")
	web := m.startProxy("default/web", webApp.addr)
	api := m.startProxy("default/api", apiApp.addr)
	rogue := m.startProxy("default/rogue", rogueApp.addr)

	out := mustCLI(t, m.env, "apply", "-f", writeFile(t, "policy.yaml", webToAPI))
	if !strings.Contains(out, "default/web-to-api created") {
		t.Fatalf("apply printed %q, want it to report the policy created", out)
	}
	wc, rc := web.client(), rogue.client()

	// The policy reaches web's sidecar: web -> api GET /hello is 200 with
	// the body from api's app.
	eventually(t, 10*time.Second, "web may call api", func() error {
		code, body := do(t, wc, http.MethodGet, "http://api.default/hello", "")
		if code != http.StatusOK {
			return errors.New(body)
		}
		return nil
	})

	t.Run("web_to_api_allowed", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://api.default/hello?x=1", nil)
		req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://evil/x;URI=spiffe://bulwark.local/ns/default/sa/admin")
		req.Header.Set("X-Bulwark-Identity", "admin")
		resp, err := wc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got status %d (%s), want 200", resp.StatusCode, b)
		}
		a := decodeAnswer(t, string(b))
		if a.App != "api" || a.Path != "/hello" || a.Query != "x=1" {
			t.Errorf("got app %q path %q query %q, want api /hello x=1", a.App, a.Path, a.Query)
		}
		if a.Host != "api.default" {
			t.Errorf("got Host %q, want api.default", a.Host)
		}
		wantXFCC := "By=spiffe://bulwark.local/ns/default/sa/api;URI=spiffe://bulwark.local/ns/default/sa/web"
		if len(a.XFCC) != 1 || a.XFCC[0] != wantXFCC {
			t.Errorf("got X-Forwarded-Client-Cert %q, want only %q (client-supplied values removed)", a.XFCC, wantXFCC)
		}
		if a.Spoof != "" {
			t.Errorf("got X-Bulwark-Identity %q at the app, want it removed", a.Spoof)
		}
	})

	t.Run("forms_of_the_service_host", func(t *testing.T) {
		for _, u := range []string{"http://api/hello", "http://api.default.svc/hello", "http://api.default.svc.cluster.local:8080/hello"} {
			if code, body := do(t, wc, http.MethodGet, u, ""); code != http.StatusOK {
				t.Errorf("GET %s: got %d (%s), want 200", u, code, body)
			}
		}
		// Origin form with a Host header, as an app without HTTP_PROXY
		// support but pointed at the outbound port would send.
		req, _ := http.NewRequest(http.MethodGet, "http://"+web.outbound+"/hello", nil)
		req.Host = "api.default"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("origin form with Host api.default: got %d, want 200", resp.StatusCode)
		}
	})

	t.Run("web_post_denied", func(t *testing.T) {
		code, body := do(t, wc, http.MethodPost, "http://api.default/hello", "x")
		if code != http.StatusForbidden {
			t.Fatalf("got %d (%s), want 403", code, body)
		}
		if strings.TrimSpace(body) != "forbidden" {
			t.Errorf("got body %q, want the opaque %q", body, "forbidden")
		}
	})

	t.Run("rogue_denied_by_its_own_sidecar", func(t *testing.T) {
		code, _ := do(t, rc, http.MethodGet, "http://api.default/hello", "")
		if code != http.StatusForbidden {
			t.Fatalf("got %d, want 403", code)
		}
		eventually(t, 5*time.Second, "rogue's denial logged", func() error {
			if !strings.Contains(rogue.proc.out.String(), `"decision":"deny"`) {
				return errors.New("no deny access log line")
			}
			return nil
		})
	})

	t.Run("rogue_svid_straight_to_api_inbound", func(t *testing.T) {
		cfg := tlsConfigFromPEM(t, filepath.Join(rogue.dataDir, "svid.pem"))
		for _, proto := range []string{"h2", "http/1.1"} {
			c := cfg.Clone()
			c.NextProtos = []string{proto}
			tr := &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: proto == "h2"}
			t.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			if proto != "h2" {
				// The inbound speaks HTTP/2 only: the handshake fails.
				if resp, err := client.Get("https://" + api.inbound + "/hello"); err == nil {
					resp.Body.Close()
					t.Errorf("%s: got %d, want the handshake refused", proto, resp.StatusCode)
				}
				continue
			}
			code, body := do(t, client, http.MethodGet, "https://"+api.inbound+"/hello", "")
			if code != http.StatusForbidden {
				t.Errorf("%s: got %d (%s), want 403", proto, code, body)
			}
		}
		// web's SVID straight to the inbound is allowed: the callee
		// enforces by itself.
		if code, body := do(t, svidClient(t, web.dataDir), http.MethodGet, "https://"+api.inbound+"/hello", ""); code != http.StatusOK {
			t.Errorf("web's SVID straight to api: got %d (%s), want 200", code, body)
		}
	})

	t.Run("path_normalization_cannot_reach_admin", func(t *testing.T) {
		client := svidClient(t, web.dataDir)
		for _, p := range []string{"/public/../admin", "//admin", "/%61dmin", "/admin%2f", "/public/%2e%2e/admin", "/public%2f..%2fadmin", "/hello/..", "/public/..%5cadmin"} {
			for _, base := range []string{"http://api.default", "https://" + api.inbound} {
				c := wc
				if strings.HasPrefix(base, "https") {
					c = client
				}
				req, err := http.NewRequest(http.MethodGet, base+"/", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.URL.Opaque = "" // send the raw path as written
				req.URL.RawPath = p
				req.URL.Path, _ = url.PathUnescape(p)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s%s: %v", base, p, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Errorf("%s%s: got 200 (%s), want 400 or 403", base, p, b)
				}
			}
		}
		// A path that normalizes to an allowed one reaches the app in its
		// normalized form.
		code, body := do(t, wc, http.MethodGet, "http://api.default/public/./x/../y", "")
		if code != http.StatusOK || decodeAnswer(t, body).Path != "/public/y" {
			t.Errorf("got %d %s, want 200 with path /public/y", code, body)
		}
	})

	t.Run("connection_header_cannot_drop_identity", func(t *testing.T) {
		// An app naming the identity header in Connection must not make
		// the proxies drop it on the way to the callee's app. Connection
		// is an HTTP/1.1 header, so it is sent where HTTP/1.1 is spoken:
		// web's outbound (the inbound speaks HTTP/2 only, which forbids
		// it).
		conn, err := net.DialTimeout("tcp", web.outbound, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(conn, "GET /hello HTTP/1.1\r\nHost: api.default\r\nConnection: close, X-Forwarded-Client-Cert\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s, want 200 from api's app", resp.StatusCode, b)
		}
		if a := decodeAnswer(t, string(b)); len(a.XFCC) != 1 || !strings.HasSuffix(a.XFCC[0], "URI=spiffe://bulwark.local/ns/default/sa/web") {
			t.Errorf("got X-Forwarded-Client-Cert %q at the app, want api's proxy's value", a.XFCC)
		}
	})

	t.Run("userinfo_cannot_redirect", func(t *testing.T) {
		conn, err := net.Dial("tcp", web.outbound)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(conn, "GET http://api.default:x@nosuch.default/hello HTTP/1.1\r\nHost: nosuch.default\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("got %d, want 400 for an authority with userinfo", resp.StatusCode)
		}
	})

	t.Run("unknown_service_is_503", func(t *testing.T) {
		code, body := do(t, wc, http.MethodGet, "http://nosuch.default/", "")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "no such service") {
			t.Errorf("got %d %q, want 503 no such service", code, body)
		}
	})

	t.Run("foreign_ca_rejected_in_handshake", func(t *testing.T) {
		// Both clients offer h2, so that only the certificate can fail the
		// handshake.
		cfg := &tls.Config{Certificates: []tls.Certificate{foreignCert(t)}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}} //nolint:gosec // inspecting the server
		conn, err := tls.Dial("tcp", api.inbound, cfg)
		if err == nil {
			// With TLS 1.3 the client learns of the rejection on its first read.
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		var alert tls.AlertError
		if err == nil || !(errors.As(err, &alert) || strings.Contains(err.Error(), "bad certificate") || strings.Contains(err.Error(), "unknown certificate authority")) {
			t.Fatalf("got %v, want a TLS alert rejecting the client certificate", err)
		}
		// No client certificate at all is rejected too.
		conn, err = tls.Dial("tcp", api.inbound, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}) //nolint:gosec // inspecting the server
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no client certificate: got %v, want the handshake refused", err)
		}
	})

	t.Run("reused_token_refused", func(t *testing.T) {
		tok := m.token("default/web")
		p1 := start(t, "proxy web 2", nil, "proxy", "--control", m.grpc, "--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"),
			"--token-file", tok, "--service", "default/web", "--admin", freeAddr(t))
		eventually(t, 15*time.Second, "second web proxy attested", func() error {
			if !strings.Contains(p1.out.String(), `"msg":"attested"`) {
				return errors.New("not attested")
			}
			return nil
		})
		p2 := start(t, "proxy web reused token", nil, "proxy", "--control", m.grpc, "--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"),
			"--token-file", tok, "--service", "default/web")
		if code := p2.wait(t, 20*time.Second); code == 0 {
			t.Fatalf("a proxy with a used token exited 0, want non-zero")
		}
		if out := p2.out.String(); !strings.Contains(out, "join token rejected") {
			t.Errorf("output %q does not say the join token was rejected", out)
		}
	})

	t.Run("get_proxies_lists_three", func(t *testing.T) {
		out := mustCLI(t, m.env, "get", "proxies", "-o", "json")
		var list struct {
			Kind  string `json:"kind"`
			Items []struct {
				Status struct {
					Service   string `json:"service"`
					Identity  string `json:"identity"`
					Connected bool   `json:"connected"`
					Address   string `json:"address"`
				} `json:"status"`
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("get proxies -o json: %v\n%s", err, out)
		}
		if list.Kind != "List" {
			t.Errorf("got kind %q, want List", list.Kind)
		}
		seen := map[string]bool{}
		for _, it := range list.Items {
			if it.Status.Address != "" && it.Status.Connected {
				seen[it.Status.Service] = true
			}
		}
		for _, s := range []string{"default/web", "default/api", "default/rogue"} {
			if !seen[s] {
				t.Errorf("get proxies: %s not listed as connected with an address in %s", s, out)
			}
		}
		table := mustCLI(t, m.env, "get", "proxies")
		for _, s := range []string{"default/web", "default/api", "default/rogue", "spiffe://bulwark.local/ns/default/sa/api"} {
			if !strings.Contains(table, s) {
				t.Errorf("table output lacks %s:\n%s", s, table)
			}
		}
	})
}

// foreignCert is a client certificate with a SPIFFE ID of the mesh's trust
// domain, signed by a CA the mesh has never seen.
func foreignCert(t *testing.T) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := url.Parse("spiffe://bulwark.local/ns/default/sa/web")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{id}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
