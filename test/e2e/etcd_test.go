package e2e_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/store/etcd/etcdtest"
)

// TestControlOnEtcd: a control plane on an etcd store (client mTLS)
// serves a mesh like one on bbolt, keeps every accepted write in etcd
// (its data dir holds no store), and a restart on the same etcd finds the
// policies, the CA and the proxies' registrations again.
func TestControlOnEtcd(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t, true)
	etcdFlags := []string{"--store", "etcd", "--etcd-endpoints", srv.Endpoint, "--etcd-ca", srv.CAFile,
		"--etcd-cert", srv.CertFile, "--etcd-key", srv.KeyFile, "--etcd-prefix", "/e2e-mesh/"}
	m := startControl(t, etcdFlags...)
	if _, err := os.Stat(filepath.Join(m.dir, "control", "bulwark.db")); err == nil {
		t.Errorf("a bbolt store was created next to the etcd store")
	}
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
	if code, _ := do(t, wc, http.MethodPost, "http://api.default/hello", ""); code != http.StatusForbidden {
		t.Errorf("POST: got %d, want 403", code)
	}

	// Restart on the same etcd: the same CA (proxies reconnect with their
	// SVIDs), the policy, the audit chain.
	m.control.stop()
	m.control = start(t, "control restarted", nil, append([]string{"control", "--data-dir", filepath.Join(m.dir, "control"),
		"--listen", m.grpc, "--admin-listen", m.admin, "--log-level", "debug"}, etcdFlags...)...)
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
		t.Errorf("policy lost across a restart on etcd:\n%s", out)
	}
	if code, body := do(t, wc, http.MethodGet, "http://api.default/hello", ""); code != http.StatusOK {
		t.Errorf("after the restart: got %d %s, want 200", code, body)
	}
	if out := mustCLI(t, m.env, "audit", "verify"); !strings.Contains(out, "ok") {
		t.Errorf("audit verify on etcd: %s", out)
	}

	// Without mTLS material the control plane refuses to start.
	_, stderr, code := cli(t, nil, "", "control", "--data-dir", t.TempDir(), "--store", "etcd", "--etcd-endpoints", srv.Endpoint)
	if code == 0 || !strings.Contains(stderr, "etcd-ca, etcd-cert and etcd-key: required") {
		t.Errorf("--store etcd without certificates: exit %d, %q", code, stderr)
	}
}
