package e2e_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLastKnownGoodRestart: a proxy restarted while the control plane is
// down serves the snapshot it persisted (0600) before: its policy is in
// force, its peers reachable, and /ready says it serves the last-known-good
// config until the control plane is back.
func TestLastKnownGoodRestart(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	m.startProxy("default/api", startApp(t, "api").addr)
	webApp := startApp(t, "web")
	web := m.startProxy("default/web", webApp.addr)
	m.apply(webToAPI)
	eventually(t, 15*time.Second, "web may call api", func() error {
		if code, body := do(t, web.client(), http.MethodGet, "http://api.default/hello", ""); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	snap := filepath.Join(web.dataDir, "snapshot.pb")
	fi, err := os.Stat(snap)
	if err != nil {
		t.Fatalf("persisted snapshot: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("persisted snapshot mode: got %o, want 600", perm)
	}

	m.stopControl()
	web.proc.stop()
	web.proc = start(t, "proxy web restarted", nil, "proxy", "--control", m.grpc,
		"--service", "default/web", "--app", webApp.addr, "--inbound", web.inbound, "--outbound", web.outbound,
		"--admin", web.admin, "--data-dir", web.dataDir, "--log-level", "debug")
	waitProxyReady(t, web)
	ri, _, err := ready(web.admin)
	if err != nil {
		t.Fatal(err)
	}
	if ri.Connected || !slices.ContainsFunc(ri.Warnings, func(w string) bool { return strings.Contains(w, "last-known-good") }) {
		t.Errorf("/ready of the restarted proxy: got connected %v, warnings %q; want not connected, with a last-known-good warning", ri.Connected, ri.Warnings)
	}
	c := web.pooledClient()
	for i := range 10 {
		if code, body := do(t, c, http.MethodGet, "http://api.default/hello", ""); code != http.StatusOK {
			t.Fatalf("request %d from the restarted proxy: got %d %s, want 200", i, code, body)
		}
	}
	// The stored policy is enforced too, not just the endpoints.
	if code, _ := do(t, c, http.MethodPost, "http://api.default/hello", ""); code != http.StatusForbidden {
		t.Errorf("POST from the restarted proxy: got %d, want 403", code)
	}
	if !strings.Contains(web.proc.out.String(), "last-known-good") {
		t.Errorf("the restarted proxy did not log that it serves the last-known-good snapshot")
	}

	// The control plane comes back: the proxy reconnects and the warning
	// goes.
	m.control = start(t, "control restarted", nil, m.controlArgs()...)
	m.waitControlReady()
	eventually(t, 30*time.Second, "proxy back on a live snapshot", func() error {
		ri, _, err := ready(web.admin)
		if err != nil {
			return err
		}
		if !ri.Connected || slices.ContainsFunc(ri.Warnings, func(w string) bool { return strings.Contains(w, "last-known-good") }) {
			return fmt.Errorf("connected %v, warnings %q", ri.Connected, ri.Warnings)
		}
		return nil
	})
}

// drainPolicy spreads api's requests by round robin, so both instances
// get some before one is drained.
const drainPolicy = `apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: default}
spec:
  service: api
  loadBalancer: {policy: RoundRobin}
`

// TestDrainAndShutdown: `bulwark proxy drain` moves new requests off an
// instance within seconds; SIGTERM lets a request in flight finish, the
// proxy exits 0, and its endpoint is gone from `bulwark get services` at
// once rather than after the disconnect grace period.
func TestDrainAndShutdown(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	g := newGate(t)
	a, b := startCountingApp(t, "api-a", nil), startCountingApp(t, "api-b", g)
	flags := []string{"--drain-delay", "2s", "--shutdown-timeout", "15s"}
	pa := m.startProxy("default/api", a.addr, flags...)
	pb := m.startProxy("default/api", b.addr, flags...)
	web := m.startClientProxy("default/web")
	m.apply(allowAll("api", "default/web"))
	c := web.pooledClient()
	c.Timeout = 30 * time.Second // the held request outlives the default
	eventually(t, 15*time.Second, "web may call api", func() error {
		if code, _, err := getApp(c, "http://api.default/warm", nil); code != http.StatusOK {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})
	m.applyAndWait(drainPolicy, web)
	if sp := send(c, "http://api.default/both", nil, 20, 2); sp.ByApp[a.name] == 0 || sp.ByApp[b.name] == 0 {
		t.Fatalf("round robin over two instances: got answers %v (status %v), want both", sp.ByApp, sp.ByStatus)
	}

	// Drain a: new requests go to b only.
	drained := time.Now()
	mustCLI(t, m.env, "proxy", "drain", "--admin", pa.admin)
	var failed []string
	eventually(t, 10*time.Second, "drained instance gets no new requests", func() error {
		before := a.hits.Load()
		sp := send(c, "http://api.default/during-drain", nil, 20, 2)
		if sp.ByStatus[http.StatusOK] != 20 {
			failed = append(failed, fmt.Sprint(sp.ByStatus, sp.Errors))
		}
		if got := a.hits.Load() - before; got != 0 {
			return fmt.Errorf("drained instance answered %d of 20", got)
		}
		return nil
	})
	t.Logf("requests off the drained instance %s after `proxy drain`", time.Since(drained).Round(100*time.Millisecond))
	if len(failed) > 0 {
		t.Errorf("requests failed while an instance drained: %v", failed)
	}

	// SIGTERM b while it holds a request: b stops accepting, the request
	// completes, b exits 0 and deregisters.
	if eps, err := m.serviceEndpoints("api"); err != nil || !slices.Contains(eps, pb.inbound) {
		t.Fatalf("get services api: got %v %v, want %s listed", eps, err, pb.inbound)
	}
	type result struct {
		status int
		app    string
		err    error
	}
	held := make(chan result, 1)
	go func() {
		status, app, err := getApp(c, "http://api.default/hold/slow", nil)
		held <- result{status, app, err}
	}()
	select {
	case <-g.arrived:
	case r := <-held:
		t.Fatalf("slow request answered before the app held it: %d %s %v", r.status, r.app, r.err)
	}
	terminated := time.Now()
	if err := syscall.Kill(pb.proc.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "terminated proxy stops accepting", func() error {
		conn, err := net.DialTimeout("tcp", pb.inbound, time.Second)
		if err != nil {
			return nil
		}
		conn.Close()
		return fmt.Errorf("inbound %s still accepts", pb.inbound)
	})
	t.Logf("inbound closed %s after SIGTERM, with a request in flight", time.Since(terminated).Round(100*time.Millisecond))
	g.open()
	if r := <-held; r.status != http.StatusOK || r.app != b.name {
		t.Errorf("request in flight at SIGTERM: got %d from %q (%v), want 200 from %s", r.status, r.app, r.err, b.name)
	}
	if code := pb.proc.wait(t, 20*time.Second); code != 0 {
		t.Errorf("proxy after SIGTERM: exit %d, want 0", code)
	}
	exited := time.Since(terminated)
	eventually(t, 10*time.Second, "terminated endpoint deregistered", func() error {
		eps, err := m.serviceEndpoints("api")
		if err != nil {
			return err
		}
		if slices.Contains(eps, pb.inbound) {
			return fmt.Errorf("get services api still lists %s: %v", pb.inbound, eps)
		}
		return nil
	})
	t.Logf("after SIGTERM: exited in %s, endpoint gone from get services in %s", exited.Round(100*time.Millisecond), time.Since(terminated).Round(100*time.Millisecond))
}
