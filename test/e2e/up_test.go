package e2e_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUpShop runs the README's demo command the way a new user does and
// checks what the README promises: the printed URL reaches the shop through
// sidecars, the rogue's calls are denied and visible in the log, the printed
// BULWARK_CONFIG works, the front door (the shop's gateway) serves HTTPS
// with the self-signed certificate and its JWT route takes tokens of the
// demo issuer, and Ctrl-C stops every process.
func TestUpShop(t *testing.T) {
	listen := freeAddr(t)
	httpsAddr, httpAddr, issuerAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	p := start(t, "up", nil, "up", "-f", "../../examples/shop/mesh.yaml", "--listen", listen, "--admin-listen", freeAddr(t),
		"--gateway-listen", "https="+httpsAddr, "--gateway-listen", "http="+httpAddr, "--issuer-listen", issuerAddr)

	var url, cred, front, cacert, tokenURL string
	eventually(t, 60*time.Second, "up prints the URL", func() error {
		if p.hasExited() {
			t.Fatalf("up exited: %v", p.err)
		}
		out := p.out.String()
		if m := regexp.MustCompile(`Open the shop:\s+(http://\S+)`).FindStringSubmatch(out); m != nil {
			url = m[1]
		}
		if m := regexp.MustCompile(`export BULWARK_CONFIG=(\S+)`).FindStringSubmatch(out); m != nil {
			cred = m[1]
		}
		if m := regexp.MustCompile(`Front door:\s+(https://\S+)/`).FindStringSubmatch(out); m != nil {
			front = m[1]
		}
		if m := regexp.MustCompile(`curl --cacert (\S+) https://`).FindStringSubmatch(out); m != nil {
			cacert = m[1]
		}
		if m := regexp.MustCompile(`TOKEN=\$\(curl -s '(http://[^?']+)\?sub=alice&scope=orders'\)`).FindStringSubmatch(out); m != nil {
			tokenURL = m[1]
		}
		if url == "" || cred == "" || front == "" || cacert == "" || tokenURL == "" {
			return errors.New("no banner yet")
		}
		return nil
	})
	if url != "http://"+listen {
		t.Errorf("got URL %s, want http://%s", url, listen)
	}

	code, body := do(t, http.DefaultClient, http.MethodGet, url+"/", "")
	if code != http.StatusOK || !strings.Contains(body, "Desk lamp") || !strings.Contains(body, "shipped") {
		t.Fatalf("GET /: got %d %q, want 200 with products and orders", code, body)
	}
	code, body = do(t, http.DefaultClient, http.MethodPost, url+"/order", `{"product":"mug"}`)
	if code != http.StatusCreated || !strings.Contains(body, `"status":"paid"`) {
		t.Fatalf("POST /order: got %d %q, want 201 paid (web -> orders -> payments)", code, body)
	}
	code, _ = do(t, http.DefaultClient, http.MethodGet, url+"/admin", "")
	if code != http.StatusForbidden {
		t.Errorf("GET /admin through the visitor: got %d, want 403", code)
	}
	upFrontDoor(t, front, cacert, tokenURL, httpsAddr, httpAddr, issuerAddr)

	eventually(t, 20*time.Second, "rogue's denials in the log", func() error {
		out := p.out.String()
		if !strings.Contains(out, "DENIED outbound spiffe://shop.bulwark.local/ns/default/sa/rogue") {
			return errors.New("no DENIED line for rogue")
		}
		if !strings.Contains(out, "rogue: GET http://payments.default/balance -> 403") {
			return errors.New("rogue app did not report its 403")
		}
		return nil
	})

	out := mustCLI(t, []string{"BULWARK_CONFIG=" + cred}, "get", "proxies", "-A", "-o", "json")
	var list struct {
		Items []struct {
			Status struct {
				Service   string `json:"service"`
				Connected bool   `json:"connected"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	services := map[string]bool{}
	for _, it := range list.Items {
		if it.Status.Connected {
			services[it.Status.Service] = true
		}
	}
	for _, s := range []string{"default/web", "default/catalog", "default/orders", "default/payments", "default/rogue", "default/visitor"} {
		if !services[s] {
			t.Errorf("get proxies -A: %s not connected: %s", s, out)
		}
	}

	// What the banner's "See it" lines promise: the graph has the shop's
	// edges, the rogue's denials raised an alert, the audit log verifies.
	env := []string{"BULWARK_CONFIG=" + cred}
	eventually(t, 30*time.Second, "the graph and the rogue's alert", func() error {
		if out, errOut, code := cli(t, env, "", "graph", "-A"); code != 0 || !strings.Contains(out, "default/web") || !strings.Contains(out, "default/catalog") {
			return fmt.Errorf("bulwark graph -A: exit %d %s\n%s", code, errOut, out)
		}
		if out, errOut, code := cli(t, env, "", "get", "alerts", "-A"); code != 0 || !strings.Contains(out, "rogue") {
			return fmt.Errorf("bulwark get alerts -A: exit %d %s\n%s", code, errOut, out)
		}
		return nil
	})
	if out, errOut, code := cli(t, env, "", "audit", "verify"); code != 0 {
		t.Errorf("bulwark audit verify: exit %d %s\n%s", code, errOut, out)
	}

	// The catalog canary: all of it to v2, which also sells a desk.
	mustCLI(t, env, "route", "set-weights", "default/catalog-canary", "v1=0", "v2=100")
	eventually(t, 20*time.Second, "the catalog canary at 100% v2", func() error {
		for range 5 {
			if code, body := do(t, http.DefaultClient, http.MethodGet, url+"/", ""); code != http.StatusOK || !strings.Contains(body, "Standing desk") {
				return fmt.Errorf("GET /: got %d %q, want the desk of catalog v2", code, body)
			}
		}
		return nil
	})
	mustCLI(t, env, "route", "set-weights", "default/catalog-canary", "v1=100", "v2=0")
	eventually(t, 20*time.Second, "the catalog canary back at 100% v1", func() error {
		for range 5 {
			if code, body := do(t, http.DefaultClient, http.MethodGet, url+"/", ""); code != http.StatusOK || strings.Contains(body, "Standing desk") {
				return fmt.Errorf("GET /: got %d %q, want catalog v1 only", code, body)
			}
		}
		return nil
	})

	children := descendants(p.cmd.Process.Pid)
	if len(children) < 6 {
		t.Errorf("found %d child processes of up, want at least the 6 apps", len(children))
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Errorf("up exited %d after Ctrl-C, want 0", code)
	}
	for _, pid := range children {
		if alive(pid) {
			t.Errorf("process %d started by up is still running after Ctrl-C", pid)
		}
	}
	if _, err := os.Stat(cred); err == nil {
		t.Errorf("temporary data dir %s left behind", cred)
	}
}

// upFrontDoor checks the shop's gateway as the banner presents it: HTTPS
// with the self-signed certificate (trusted with --cacert, for localhost),
// the HTTP listener's redirect, and the JWT route of the orders API with
// tokens of the demo issuer.
func upFrontDoor(t *testing.T, front, cacert, tokenURL, httpsAddr, httpAddr, issuerAddr string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(httpsAddr)
	if want := "https://localhost:" + port; front != want {
		t.Errorf("front door URL: got %s, want %s", front, want)
	}
	if want := "http://" + issuerAddr + "/token"; tokenURL != want {
		t.Errorf("token URL: got %s, want %s", tokenURL, want)
	}
	pemBytes, err := os.ReadFile(cacert)
	if err != nil {
		t.Fatalf("the banner's --cacert file: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no certificate", cacert)
	}
	if strings.Contains(string(pemBytes), "PRIVATE KEY") {
		t.Fatalf("%s holds a private key", cacert)
	}
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true,
	}}
	// The gateway learns the shop's endpoints from its snapshots.
	eventually(t, 30*time.Second, "GET / through the front door", func() error {
		code, body := do(t, c, http.MethodGet, front+"/", "")
		if code != http.StatusOK || !strings.Contains(body, "Desk lamp") {
			return fmt.Errorf("got %d %q, want 200 with the products", code, body)
		}
		return nil
	})
	if code, body := do(t, c, http.MethodPost, front+"/order", `{"product":"mug"}`); code != http.StatusCreated || !strings.Contains(body, `"status":"paid"`) {
		t.Errorf("POST /order through the front door: got %d %q, want 201 paid", code, body)
	}
	if code, _ := do(t, c, http.MethodGet, front+"/nothing-here", ""); code != http.StatusNotFound {
		t.Errorf("GET /nothing-here through the front door: got %d, want 404 (no route)", code)
	}

	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get("http://" + httpAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// bulwark up points the redirects at the HTTPS listener it moved.
	if loc, want := resp.Header.Get("Location"), "https://127.0.0.1:"+port+"/"; resp.StatusCode != http.StatusPermanentRedirect || loc != want {
		t.Errorf("GET / on the HTTP listener: got %d Location %q, want 308 to %s", resp.StatusCode, loc, want)
	}

	token := func(query string) string {
		code, body := do(t, http.DefaultClient, http.MethodGet, tokenURL+query, "")
		if code != http.StatusOK {
			t.Fatalf("demo issuer %s: got %d %q", query, code, body)
		}
		return strings.TrimSpace(body)
	}
	withToken := func(tok string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, front+"/api/orders", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET /api/orders: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := withToken(""); code != http.StatusUnauthorized {
		t.Errorf("GET /api/orders without a token: got %d %q, want 401", code, body)
	}
	if code, body := withToken(token("?sub=alice&scope=orders")); code != http.StatusOK || !strings.Contains(body, "lamp") {
		t.Errorf("GET /api/orders with a token of the demo issuer: got %d %q, want 200 with the orders", code, body)
	}
	if code, body := withToken(token("?sub=bob")); code != http.StatusForbidden {
		t.Errorf("GET /api/orders with a token without the scope orders: got %d %q, want 403", code, body)
	}
	if code, body := withToken("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2ln"); code != http.StatusUnauthorized {
		t.Errorf("GET /api/orders with a forged token: got %d %q, want 401", code, body)
	}
}

// descendants returns the PIDs of every process below pid.
func descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, task := range tasks {
			f, err := os.Open(fmt.Sprintf("/proc/%d/task/%s/children", p, task.Name()))
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(f)
			sc.Split(bufio.ScanWords)
			for sc.Scan() {
				if c, err := strconv.Atoi(sc.Text()); err == nil {
					out = append(out, c)
					queue = append(queue, c)
				}
			}
			f.Close()
		}
	}
	return out
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b))
	return len(fields) > 2 && fields[2] != "Z"
}
