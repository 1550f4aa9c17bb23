package e2e_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
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
// BULWARK_CONFIG works, and Ctrl-C stops every process.
func TestUpShop(t *testing.T) {
	listen := freeAddr(t)
	p := start(t, "up", nil, "up", "-f", "../../examples/shop/mesh.yaml", "--listen", listen)

	var url, cred string
	eventually(t, 60*time.Second, "up prints the URL", func() error {
		if p.exited {
			t.Fatalf("up exited: %v", p.err)
		}
		out := p.out.String()
		if m := regexp.MustCompile(`Open the shop:\s+(http://\S+)`).FindStringSubmatch(out); m != nil {
			url = m[1]
		}
		if m := regexp.MustCompile(`export BULWARK_CONFIG=(\S+)`).FindStringSubmatch(out); m != nil {
			cred = m[1]
		}
		if url == "" || cred == "" {
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
