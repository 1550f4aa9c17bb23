package e2e_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// redactionSecret returns a random secret, distinct in every run.
func redactionSecret(t *testing.T, what string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return what + hex.EncodeToString(b)
}

// redactionJWT returns a JWT-shaped token whose payload carries a random
// secret; the test searches for the encoded payload (and the secret).
func redactionJWT(t *testing.T, secret string) (token, payload string) {
	t.Helper()
	enc := base64.RawURLEncoding
	payload = enc.EncodeToString([]byte(`{"sub":"` + secret + `"}`))
	return enc.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + payload + "." + enc.EncodeToString([]byte(secret+"-signature")), payload
}

// redactionApp answers every request and sets a cookie carrying secret.
func redactionApp(t *testing.T, setCookie string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: setCookie, HttpOnly: true})
		fmt.Fprintln(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestRedaction sends distinct random secrets in every place a request can
// carry one (Authorization with a bearer JWT, Cookie, X-Api-Key, a header
// named by --redact-header, the query parameters token, api_key and one
// named by --redact-query, a JWT in a path segment) and in the app's
// Set-Cookie, to allowed and denied destinations, then checks that none
// appears in the proxies' logs, the access log files, the /metrics of both
// proxies and of the control plane, the exported spans, `get denials` and
// `get edges`.
func TestRedaction(t *testing.T) {
	t.Parallel()
	recv := tracingStartReceiver(t)
	controlMetrics := freeAddr(t)
	m := startControl(t, "--metrics", controlMetrics)

	bearer, bearerPayload := redactionJWT(t, redactionSecret(t, "bearer"))
	pathJWT, pathPayload := redactionJWT(t, redactionSecret(t, "pathjwt"))
	secrets := map[string]string{
		"authorization bearer jwt": bearerPayload,
		"path jwt":                 pathPayload,
		"cookie":                   redactionSecret(t, "cookie"),
		"set-cookie":               redactionSecret(t, "setcookie"),
		"x-api-key":                redactionSecret(t, "apikey"),
		"configured header":        redactionSecret(t, "custom"),
		"query token":              redactionSecret(t, "qtoken"),
		"query api_key":            redactionSecret(t, "qapikey"),
		"configured query":         redactionSecret(t, "qmagic"),
	}
	dir := t.TempDir()
	flags := func(name string) []string {
		return append(tracingFlags(recv, "1"),
			"--access-log", filepath.Join(dir, name+"-access.log"),
			"--redact-header", "X-Custom-Secret", "--redact-query", "magic",
			"--log-header", "Authorization", "--log-header", "X-Custom-Secret", "--log-header", "Cookie",
			"--log-header", "X-Api-Key", "--log-header", "X-Plain")
	}
	apiMetrics, clientMetrics := freeAddr(t), freeAddr(t)
	api := m.startProxy("default/api", redactionApp(t, secrets["set-cookie"]), append(flags("api"), "--metrics", apiMetrics)...)
	client := m.startClientProxy("default/client", append(flags("client"), "--metrics", clientMetrics)...)
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policies.yaml", denialPolicies))

	send := func(path string) int {
		q := "token=" + secrets["query token"] + "&api_key=" + secrets["query api_key"] + "&magic=" + secrets["configured query"] + "&page=1"
		req, err := http.NewRequest(http.MethodGet, "http://api.default"+path+"?"+q, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Cookie", "sid="+secrets["cookie"])
		req.Header.Set("X-Api-Key", secrets["x-api-key"])
		req.Header.Set("X-Custom-Secret", secrets["configured header"])
		req.Header.Set("X-Plain", "visible-value")
		resp, err := client.client().Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	eventually(t, 15*time.Second, "policies in force", func() error {
		if code := send("/ok/" + pathJWT); code != http.StatusOK {
			return fmt.Errorf("/ok: got %d, want 200", code)
		}
		if code := send("/admin/" + pathJWT); code != http.StatusForbidden {
			return fmt.Errorf("/admin: got %d, want 403", code)
		}
		return nil
	})
	if code := send("/debug/" + pathJWT); code != http.StatusForbidden {
		t.Fatalf("/debug: got %d, want 403", code)
	}
	// Everything the requests produce has arrived: the denials reported
	// (both directions) and the spans exported.
	var denials string
	eventually(t, 30*time.Second, "both denials reported", func() error {
		out, errOut, code := cli(t, m.env, "", "get", "denials", "-A", "-o", "json")
		if code != 0 {
			return fmt.Errorf("get denials: exit %d: %s", code, errOut)
		}
		if !strings.Contains(out, `"outbound"`) || !strings.Contains(out, `"inbound"`) {
			return fmt.Errorf("got %s", out)
		}
		denials = out
		return nil
	})
	eventually(t, 20*time.Second, "spans of the denials", func() error {
		seen := map[string]bool{}
		for _, s := range recv.Spans() {
			for _, p := range []string{"/ok/", "/admin/", "/debug/"} {
				if strings.HasPrefix(s.Attrs["url.path"], p) {
					seen[p+s.Kind.String()] = true
				}
			}
		}
		// /admin is denied by the client's proxy: no server span.
		if len(seen) != 5 {
			return fmt.Errorf("got spans %v, want 5 kinds", seen)
		}
		return nil
	})

	places := map[string]string{
		"api proxy output":    api.proc.out.String(),
		"client proxy output": client.proc.out.String(),
		"control output":      m.control.out.String(),
		"spans":               recv.Raw(),
		"get denials":         denials,
	}
	// Access log files are written in batches (every 100 ms): wait for
	// both the allowed and the denied requests' lines.
	eventually(t, 10*time.Second, "access log lines flushed", func() error {
		for _, name := range []string{"api", "client"} {
			b, err := os.ReadFile(filepath.Join(dir, name+"-access.log"))
			if err != nil {
				return err
			}
			if !strings.Contains(string(b), `"status":200`) || (name == "client" && !strings.Contains(string(b), `"status":403`)) {
				return fmt.Errorf("%s access log: no 200 (or, client, 403) line yet:\n%s", name, b)
			}
		}
		return nil
	})
	for _, name := range []string{"api", "client"} {
		b, err := os.ReadFile(filepath.Join(dir, name+"-access.log"))
		if err != nil {
			t.Fatal(err)
		}
		places[name+" access log"] = string(b)
		st, err := os.Stat(filepath.Join(dir, name+"-access.log"))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != 0o600 {
			t.Errorf("%s access log mode: got %o, want 600", name, got)
		}
	}
	for name, addr := range map[string]string{"api": apiMetrics, "client": clientMetrics, "control": controlMetrics} {
		places[name+" metrics"] = redactionFetch(t, "http://"+addr+"/metrics")
	}
	if out, _, code := cli(t, m.env, "", "get", "edges", "-A", "-o", "json"); code == 0 {
		places["get edges"] = out
	} else {
		t.Log("get edges is not available: not checked")
	}
	for where, text := range places {
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("the %s secret appears in %s", what, where)
			}
		}
	}

	// The access log lines are there, masked: the client's proxy logged
	// the allowed request with the query, headers and path masked.
	log := places["client access log"]
	for _, want := range []string{
		`"path":"/ok/[REDACTED]"`, `"query":"token=[REDACTED]&api_key=[REDACTED]&magic=[REDACTED]&page=1"`,
		`"authorization":"[REDACTED]"`, `"x-custom-secret":"[REDACTED]"`, `"cookie":"[REDACTED]"`, `"x-api-key":"[REDACTED]"`,
		`"x-plain":"visible-value"`, `"trace_id":"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("client access log: no %s in\n%s", want, log)
		}
	}
	// The access log went to the file, not to the process log.
	if strings.Contains(client.proc.out.String(), `"msg":"request"`) {
		t.Error("client process log has access log lines, want them in the file only")
	}
}

func redactionFetch(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	return string(b)
}
