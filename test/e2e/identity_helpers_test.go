package e2e_test

// Helpers of the identity-lifecycle tests (rotation, revocation, Workload
// API, keys at rest): typed views of `bulwark ca status` and `bulwark get
// proxies`, a client-only proxy, and a control-plane restart.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clientToAPI lets default/client call api with any method and path.
const clientToAPI = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: client-to-api, namespace: default}
spec:
  selector: {service: api}
  action: ALLOW
  rules:
  - from: {services: ["default/client"]}
`

// caStatus is what `bulwark ca status -o json` prints.
type caStatus struct {
	TrustDomain   string    `json:"trustDomain"`
	Phase         string    `json:"phase"`
	BundleVersion int64     `json:"bundleVersion"`
	PhaseSince    time.Time `json:"phaseSince"`
	RetireAfter   time.Time `json:"retireAfter"`
	WaitingFor    string    `json:"waitingFor"`
	Waiting       []string  `json:"waiting"`
	Roots         []caCert  `json:"roots"`
	Intermediate  caCert    `json:"intermediate"`
	Proxies       struct {
		Connected          int            `json:"connected"`
		ByBundleVersion    map[string]int `json:"byBundleVersion"`
		OnSigningAuthority int            `json:"onSigningAuthority"`
	} `json:"proxies"`
}

// caCert is a root or intermediate in caStatus.
type caCert struct {
	Serial       string    `json:"serial"`
	SubjectKeyID string    `json:"subjectKeyID"`
	NotBefore    time.Time `json:"notBefore"`
	NotAfter     time.Time `json:"notAfter"`
	Signing      bool      `json:"signing"`
}

// rootSerials lists the serials of st's roots.
func (st caStatus) rootSerials() []string {
	out := make([]string, 0, len(st.Roots))
	for _, r := range st.Roots {
		out = append(out, r.Serial)
	}
	return out
}

// caStatus runs `bulwark ca status -o json`; an error (not a test failure)
// when the CLI fails, so that it can be polled across a restart.
func (m *mesh) caStatus() (caStatus, error) {
	m.t.Helper()
	out, errOut, code := cli(m.t, m.env, "", "ca", "status", "-o", "json")
	if code != 0 {
		return caStatus{}, fmt.Errorf("ca status: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	var st caStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return caStatus{}, fmt.Errorf("ca status -o json: %v\n%s", err, out)
	}
	return st, nil
}

// mustCAStatus is caStatus that fails the test on error.
func (m *mesh) mustCAStatus() caStatus {
	m.t.Helper()
	st, err := m.caStatus()
	if err != nil {
		m.t.Fatal(err)
	}
	return st
}

// proxyStatus is one item of `bulwark get proxies -o json`: its status,
// and its name (the instance) from its metadata.
type proxyStatus struct {
	Instance      string    `json:"-"`
	Service       string    `json:"service"` // namespace/name
	Identity      string    `json:"identity"`
	Address       string    `json:"address"`
	Connected     bool      `json:"connected"`
	SVIDSerial    string    `json:"svidSerial"`
	SVIDExpiry    time.Time `json:"svidExpiry"`
	SVIDAuthority string    `json:"svidAuthority"`
	BundleVersion int64     `json:"bundleVersion"`
}

// proxies runs `bulwark get proxies -o json`; an error (not a test failure)
// when the CLI fails.
func (m *mesh) proxies() ([]proxyStatus, error) {
	m.t.Helper()
	out, errOut, code := cli(m.t, m.env, "", "get", "proxies", "-o", "json")
	if code != 0 {
		return nil, fmt.Errorf("get proxies: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status proxyStatus `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("get proxies -o json: %v\n%s", err, out)
	}
	ps := make([]proxyStatus, 0, len(list.Items))
	for _, it := range list.Items {
		it.Status.Instance = it.Metadata.Name
		ps = append(ps, it.Status)
	}
	return ps, nil
}

// connectedProxy returns the connected proxy record of service (ns/name);
// an error when there is none, or more than one.
func (m *mesh) connectedProxy(service string) (proxyStatus, error) {
	m.t.Helper()
	ps, err := m.proxies()
	if err != nil {
		return proxyStatus{}, err
	}
	var found []proxyStatus
	for _, p := range ps {
		if p.Service == service && p.Connected {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		return proxyStatus{}, fmt.Errorf("%d connected proxies of %s", len(found), service)
	}
	return found[0], nil
}

// startClientProxy starts a client-only proxy for service: an outbound
// listener for the test and an admin listener, no app and no inbound.
func (m *mesh) startClientProxy(service string, extra ...string) *sidecar {
	m.t.Helper()
	s := &sidecar{service: service, outbound: freeAddr(m.t), admin: freeAddr(m.t),
		dataDir: filepath.Join(m.t.TempDir(), "proxy")}
	args := append([]string{"proxy", "--control", m.grpc, "--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"),
		"--token-file", m.token(service), "--service", service,
		"--outbound", s.outbound, "--admin", s.admin, "--data-dir", s.dataDir,
		"--log-level", "debug"}, extra...)
	s.proc = start(m.t, "proxy "+service, nil, args...)
	waitProxyReady(m.t, s)
	return s
}

// waitProxyReady waits until the proxy's /ready answers 200.
func waitProxyReady(t *testing.T, s *sidecar) {
	t.Helper()
	eventually(t, 20*time.Second, "proxy "+s.service+" ready", func() error {
		if s.proc.hasExited() {
			t.Fatalf("proxy %s exited: %v", s.service, s.proc.err)
		}
		resp, err := http.Get("http://" + s.admin + "/ready")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("ready: %d %s", resp.StatusCode, b)
		}
		return nil
	})
}

// startControlEnv is startControl with env for the control plane's
// process (e.g. the CA key passphrase).
func startControlEnv(t *testing.T, env []string, extra ...string) *mesh {
	t.Helper()
	m := &mesh{t: t, dir: t.TempDir(), grpc: freeAddr(t), admin: freeAddr(t)}
	m.env = []string{"BULWARK_CONFIG=" + filepath.Join(m.dir, "control", "operator", "admin.yaml"), "HOME=" + m.dir}
	m.control = start(t, "control", env, m.controlArgs(extra...)...)
	m.waitControlReady()
	return m
}

// controlArgs are the arguments of `bulwark control` on the mesh's data
// dir and ports, with extra flags.
func (m *mesh) controlArgs(extra ...string) []string {
	return append([]string{"control", "--data-dir", filepath.Join(m.dir, "control"),
		"--listen", m.grpc, "--admin-listen", m.admin, "--log-level", "debug"}, extra...)
}

// waitControlReady waits until the control plane's admin API answers.
func (m *mesh) waitControlReady() {
	m.t.Helper()
	eventually(m.t, 30*time.Second, "control plane ready", func() error {
		if m.control.hasExited() {
			m.t.Fatalf("control plane exited: %v", m.control.err)
		}
		if _, _, code := cli(m.t, m.env, "", "get", "policies"); code != 0 {
			return fmt.Errorf("get policies: exit %d", code)
		}
		return nil
	})
}

// stopControl stops the control plane with SIGTERM and waits for it; a
// test failure unless it exits cleanly.
func (m *mesh) stopControl() {
	m.t.Helper()
	m.control.stop()
	if m.control.err != nil {
		m.t.Errorf("control plane stopped by SIGTERM: %v, want a clean exit", m.control.err)
	}
}

// restartControl stops the control plane with SIGTERM, waits for it to
// exit, and starts it again on the same data dir and ports with env and
// extra flags, then waits until its admin API answers. It returns how long
// the admin API was unavailable.
func (m *mesh) restartControl(env []string, extra ...string) time.Duration {
	m.t.Helper()
	began := time.Now()
	m.stopControl()
	m.control = start(m.t, "control restarted", env, m.controlArgs(extra...)...)
	m.waitControlReady()
	return time.Since(began)
}

// waitConnected waits until every service in services has exactly one
// connected proxy.
func (m *mesh) waitConnected(timeout time.Duration, services ...string) {
	m.t.Helper()
	eventually(m.t, timeout, "proxies connected", func() error {
		for _, s := range services {
			if _, err := m.connectedProxy(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// poll calls f every interval until it returns true or an error, or the
// timeout passes (a test failure). Unlike eventually, an error of f is
// final: f reports with it a state that must not happen.
func poll(t *testing.T, timeout, interval time.Duration, what string, f func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, err := f()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(interval)
	}
}
