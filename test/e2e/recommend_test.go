package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recommendOriginal lets web read items and health on api; nothing else
// may call api.
const recommendOriginal = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: ["default/web"]}
    to: {methods: ["GET"], paths: ["/items/*", "/health"]}
`

// recommendStatus sends GET path to api through the client and returns
// the status.
func recommendStatus(c *http.Client, method, path string) (int, error) {
	req, err := http.NewRequest(method, "http://api.default"+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// TestRecommend: web's traffic to api and a rogue scanning 50 paths of api
// are observed; `bulwark policy recommend` writes a policy that allows
// exactly web's traffic (rogue appears only in the "denied" comment),
// which lints, diffs without cutting anything, and, applied in place of
// the original policy, still lets web's traffic through and denies rogue
// and what web never did.
func TestRecommend(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	api := m.startProxy("default/api", startApp(t, "api").addr)
	web := m.startClientProxy("default/web")
	rogue := m.startClientProxy("default/rogue")
	// rogue's view does not change (it may call nothing): no new snapshot.
	m.applyAndWait(recommendOriginal, api, web)

	wc, rc := web.client(), rogue.client()
	for _, p := range []string{"/items/1", "/items/2", "/items/3", "/health"} {
		if code, err := recommendStatus(wc, "GET", p); err != nil || code != http.StatusOK {
			t.Fatalf("web GET %s: got %d %v, want 200", p, code, err)
		}
	}
	for i := range 50 {
		p := fmt.Sprintf("/scan/path%02d", i)
		if code, err := recommendStatus(rc, "GET", p); err != nil || code != http.StatusForbidden {
			t.Fatalf("rogue GET %s: got %d %v, want 403", p, code, err)
		}
	}

	// The proxies report within their report interval.
	out := filepath.Join(t.TempDir(), "recommended.yaml")
	eventually(t, 30*time.Second, "recommend sees web's edges and rogue's denials", func() error {
		_, errOut, code := cli(t, m.env, "", "policy", "recommend", "--namespace", "default", "--since", "10m", "-o", out)
		if code != 0 {
			return fmt.Errorf("policy recommend: exit %d: %s", code, errOut)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		y := string(b)
		if !strings.Contains(y, `"/items/*"`) || !strings.Contains(y, `"/health"`) || !strings.Contains(y, "default/rogue") {
			return fmt.Errorf("not all traffic reported yet:\n%s", y)
		}
		return nil
	})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	y := string(b)
	t.Logf("recommended:\n%s", y)

	t.Run("yaml", func(t *testing.T) {
		for _, want := range []string{
			"name: recommended-api\n",
			`identities: ["spiffe://bulwark.local/ns/default/sa/web"]`,
			`methods: ["GET"]`,
			`paths: ["/health", "/items/*"]`,
			"# observed but denied (not allowed here):\n",
		} {
			if !strings.Contains(y, want) {
				t.Errorf("the YAML lacks %q", want)
			}
		}
		for i, line := range strings.Split(y, "\n") {
			if strings.Contains(line, "rogue") && !strings.HasPrefix(line, "#   default/rogue ") {
				t.Errorf("line %d names rogue outside the denied list: %q", i+1, line)
			}
		}
		if strings.Contains(y, "recommended-web") || strings.Contains(y, "recommended-rogue") {
			t.Errorf("a policy for a service that received no traffic:\n%s", y)
		}
	})
	t.Run("lint_and_diff", func(t *testing.T) {
		mustCLI(t, m.env, "policy", "lint", "--strict", "-f", out)
		diff := mustCLI(t, m.env, "policy", "diff", "-f", out)
		for _, line := range strings.Split(diff, "\n") {
			if strings.HasPrefix(line, "- ") || strings.HasPrefix(line, "lock-out") {
				t.Errorf("policy diff: the recommendation cuts an edge: %q\n%s", line, diff)
			}
		}
	})

	// Apply the recommendation, then delete the original (in this order,
	// the lock-out guard lets the delete through: web keeps its access).
	before := []int64{api.snapshotVersion(t), web.snapshotVersion(t)}
	mustCLI(t, m.env, "apply", "-f", out)
	for i, p := range []*sidecar{api, web} {
		p.waitSnapshotAfter(t, before[i])
	}
	before = []int64{api.snapshotVersion(t), web.snapshotVersion(t)}
	mustCLI(t, m.env, "delete", "policy", "web-reads-api")
	for i, p := range []*sidecar{api, web} {
		p.waitSnapshotAfter(t, before[i])
	}
	if got := mustCLI(t, m.env, "get", "policies"); strings.Contains(got, "web-reads-api") || !strings.Contains(got, "recommended-api") {
		t.Fatalf("get policies: got\n%s\nwant recommended-api only", got)
	}

	for _, c := range []struct {
		who    string
		client *http.Client
		method string
		path   string
		want   int
	}{
		{"web", wc, "GET", "/items/1", http.StatusOK},
		{"web", wc, "GET", "/items/42", http.StatusOK},
		{"web", wc, "GET", "/health", http.StatusOK},
		{"web", wc, "HEAD", "/health", http.StatusOK},
		{"web", wc, "POST", "/items/1", http.StatusForbidden},
		{"web", wc, "GET", "/admin", http.StatusForbidden},
		{"rogue", rc, "GET", "/scan/path00", http.StatusForbidden},
		{"rogue", rc, "GET", "/items/1", http.StatusForbidden},
		{"rogue", rc, "GET", "/health", http.StatusForbidden},
	} {
		if code, err := recommendStatus(c.client, c.method, c.path); err != nil || code != c.want {
			t.Errorf("%s %s %s after the switch: got %d %v, want %d", c.who, c.method, c.path, code, err, c.want)
		}
	}
}

// TestRecommendNothingObserved: a fresh mesh has no traffic, so recommend
// says so on stderr and exits 1 rather than writing a deny-all.
func TestRecommendNothingObserved(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	out := filepath.Join(t.TempDir(), "none.yaml")
	stdout, stderr, code := cli(t, m.env, "", "policy", "recommend", "-n", "default", "-o", out)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "nothing to recommend") {
		t.Errorf("got exit %d, stdout %q, stderr %q, want 1 and nothing to recommend", code, stdout, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a file was written: %v", err)
	}
	if _, stderr, code := cli(t, m.env, "", "policy", "recommend", "--since", "25h"); code != 2 || !strings.Contains(stderr, "--since") {
		t.Errorf("--since 25h: got exit %d, stderr %q, want 2 naming --since", code, stderr)
	}
}
