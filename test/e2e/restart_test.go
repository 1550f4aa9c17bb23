package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestarts: a control plane that goes away does not stop traffic; one
// that restarts on its data dir keeps every accepted write and its CA; a
// proxy restarted with its data dir renews with its stored SVID instead of
// needing a new token, and keeps its instance name.
func TestRestarts(t *testing.T) {
	m := startControl(t)
	webApp, apiApp := startApp(t, "web"), startApp(t, "api")
	web := m.startProxy("default/web", webApp.addr)
	m.startProxy("default/api", apiApp.addr)
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policy.yaml", webToAPI))
	wc := web.client()
	eventually(t, 10*time.Second, "web may call api", func() error {
		if code, body := do(t, wc, http.MethodGet, "http://api.default/hello", ""); code != http.StatusOK {
			return errors.New(body)
		}
		return nil
	})
	instanceBefore := readyField(t, web.admin, "instance")

	// The control plane goes away: proxies keep their snapshots and keep
	// serving.
	m.control.stop()
	for i := 0; i < 20; i++ {
		if code, body := do(t, wc, http.MethodGet, "http://api.default/hello", ""); code != http.StatusOK {
			t.Fatalf("request %d with the control plane down: got %d %s, want 200", i, code, body)
		}
	}
	if code, _ := do(t, wc, http.MethodPost, "http://api.default/hello", ""); code != http.StatusForbidden {
		t.Errorf("POST with the control plane down: got %d, want 403 (policy still enforced)", code)
	}

	// It comes back on the same data dir and ports: same CA, same
	// policies, proxies reconnect by themselves.
	m.control = start(t, "control restarted", nil, "control", "--data-dir", filepath.Join(m.dir, "control"),
		"--listen", m.grpc, "--admin-listen", m.admin, "--log-level", "debug")
	eventually(t, 30*time.Second, "proxies reconnected", func() error {
		out, _, code := cli(t, m.env, "", "get", "proxies", "-o", "json")
		if code != 0 {
			return errors.New("get proxies failed")
		}
		if n := strings.Count(out, `"connected":true`); n != 2 {
			return fmt.Errorf("%d connected proxies", n)
		}
		return nil
	})
	if out := mustCLI(t, m.env, "get", "policies"); !strings.Contains(out, "web-to-api") {
		t.Errorf("policy lost across a control-plane restart:\n%s", out)
	}
	if code, body := do(t, wc, http.MethodGet, "http://api.default/hello", ""); code != http.StatusOK {
		t.Errorf("after the control plane restarted: got %d %s, want 200", code, body)
	}

	// The web proxy restarts with its data dir and no token.
	web.proc.stop()
	web.proc = start(t, "proxy web restarted", nil, "proxy", "--control", m.grpc,
		"--service", "default/web", "--app", webApp.addr, "--outbound", web.outbound, "--admin", web.admin,
		"--data-dir", web.dataDir, "--log-level", "debug")
	eventually(t, 20*time.Second, "restarted web proxy ready", func() error {
		if web.proc.hasExited() {
			t.Fatalf("restarted proxy exited: %v", web.proc.err)
		}
		resp, err := http.Get("http://" + web.admin + "/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
	if !strings.Contains(web.proc.out.String(), "using stored svid") {
		t.Errorf("restarted proxy did not use its stored SVID")
	}
	if got := readyField(t, web.admin, "instance"); got != instanceBefore {
		t.Errorf("instance after restart: got %q, want %q", got, instanceBefore)
	}
	if code, body := do(t, web.client(), http.MethodGet, "http://api.default/hello", ""); code != http.StatusOK {
		t.Errorf("after the web proxy restarted: got %d %s, want 200", code, body)
	}
}

// TestExposedAppWarning: a proxy warns when its app also listens on a
// non-loopback address, since callers could then bypass the sidecar.
func TestExposedAppWarning(t *testing.T) {
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	m := startControl(t)
	p := m.startProxy("default/exposed", fmt.Sprintf("127.0.0.1:%d", port))
	eventually(t, 10*time.Second, "exposure warning", func() error {
		if !strings.Contains(p.proc.out.String(), "app also listens on a non-loopback address") {
			return errors.New("no warning logged")
		}
		resp, err := http.Get("http://" + p.admin + "/ready")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "bypass the sidecar") {
			return fmt.Errorf("ready detail lacks the warning: %s", b)
		}
		return nil
	})
}

// readyField returns a string field of a proxy's /ready answer.
func readyField(t *testing.T, admin, field string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	s, _ := m[field].(string)
	return s
}
