package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// denialPolicies: client may call api, except /admin/* (a DENY the
// caller's own proxy sees and enforces: outbound) and /debug/* from a
// loopback address (a DENY on the peer's IP, which only the callee knows:
// inbound).
const denialPolicies = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: client-to-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/client]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {service: api}
  action: DENY
  rules:
  - from: {services: [default/client]}
    to: {paths: ["/admin/*"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-loopback-debug, namespace: default}
spec:
  selector: {service: api}
  action: DENY
  rules:
  - from: {ipBlocks: ["127.0.0.0/8"]}
    to: {paths: ["/debug/*"]}
`

// denialItem is what the test reads of a Denial in `get denials -o json`.
type denialItem struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Status struct {
		Direction   string   `json:"direction"`
		Source      string   `json:"source"`
		Destination string   `json:"destination"`
		Method      string   `json:"method"`
		Path        string   `json:"path"`
		Policy      string   `json:"policy"`
		Rule        *int     `json:"rule"`
		Reason      string   `json:"reason"`
		HTTPStatus  int      `json:"httpStatus"`
		Count       int64    `json:"count"`
		LastSeen    string   `json:"lastSeen"`
		Reporters   []string `json:"reporters"`
	} `json:"status"`
}

// TestDenials: a denial by the caller's proxy (outbound) and one by the
// callee's (inbound) are listed by `bulwark get denials` within a report
// interval, with source, destination, policy, reason and count; each proxy
// counts them in bulwark_authz_decisions_total and logs each edge once.
func TestDenials(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	apiMetrics, clientMetrics := freeAddr(t), freeAddr(t)
	api := m.startProxy("default/api", startApp(t, "api").addr, "--metrics", apiMetrics)
	client := m.startClientProxy("default/client", "--metrics", clientMetrics)
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policies.yaml", denialPolicies))
	td := m.mustCAStatus().TrustDomain
	clientID := fmt.Sprintf("spiffe://%s/ns/default/sa/client", td)
	apiID := fmt.Sprintf("spiffe://%s/ns/default/sa/api", td)

	c := client.client()
	status := func(path string) (int, error) {
		resp, err := c.Get("http://api.default" + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	// The policies reach both proxies: /ok is allowed, /debug denied by
	// api (the client's proxy lets it through: it cannot know the IP).
	eventually(t, 15*time.Second, "policies in force", func() error {
		if code, err := status("/ok"); err != nil || code != http.StatusOK {
			return fmt.Errorf("/ok: %d %v", code, err)
		}
		if code, err := status("/admin/probe"); err != nil || code != http.StatusForbidden {
			return fmt.Errorf("/admin/probe: %d %v", code, err)
		}
		return nil
	})
	sent := time.Now()
	for range 3 {
		if code, err := status("/admin/users?token=s3cr3t"); err != nil || code != http.StatusForbidden {
			t.Fatalf("/admin/users: got %d %v, want 403", code, err)
		}
	}
	for range 2 {
		if code, err := status("/debug/vars"); err != nil || code != http.StatusForbidden {
			t.Fatalf("/debug/vars: got %d %v, want 403", code, err)
		}
	}

	var items []denialItem
	eventually(t, 25*time.Second, "get denials lists both", func() error {
		out, errOut, code := cli(t, m.env, "", "get", "denials", "-o", "json")
		if code != 0 {
			return fmt.Errorf("get denials: exit %d: %s", code, errOut)
		}
		var list struct {
			Kind  string       `json:"kind"`
			Items []denialItem `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return fmt.Errorf("decode %q: %v", out, err)
		}
		items = list.Items
		if find(items, "outbound", "/admin/users") == nil || find(items, "inbound", "/debug/vars") == nil {
			return fmt.Errorf("got %s", out)
		}
		return nil
	})
	t.Logf("denials listed %s after the requests", time.Since(sent).Round(time.Millisecond))

	t.Run("outbound", func(t *testing.T) {
		d := find(items, "outbound", "/admin/users")
		s := d.Status
		if d.Kind != "Denial" || d.Metadata.Namespace != "default" || s.Source != clientID || s.Destination != "default/api" ||
			s.Method != "GET" || s.Policy != "default/deny-admin" || s.Rule == nil || *s.Rule != 0 ||
			s.Reason != "denied by policy" || s.HTTPStatus != 403 || s.Count != 3 || !slices.Equal(s.Reporters, []string{clientID}) {
			t.Errorf("got %+v, want the client's 3 GETs of /admin/users denied by default/deny-admin rule 0, reported by the client", d)
		}
	})
	t.Run("inbound", func(t *testing.T) {
		d := find(items, "inbound", "/debug/vars")
		s := d.Status
		if s.Source != clientID || s.Destination != "default/api" || s.Policy != "default/deny-loopback-debug" ||
			s.Reason != "denied by policy" || s.Count != 2 || !slices.Equal(s.Reporters, []string{apiID}) {
			t.Errorf("got %+v, want the client's 2 GETs of /debug/vars denied by default/deny-loopback-debug, reported by api", d)
		}
	})
	t.Run("no_query_anywhere", func(t *testing.T) {
		out := mustCLI(t, m.env, "get", "denials", "-A", "-o", "yaml")
		for name, text := range map[string]string{"get denials": out, "client proxy": client.proc.out.String(), "api proxy": api.proc.out.String()} {
			if strings.Contains(text, "s3cr3t") {
				t.Errorf("%s shows the query string", name)
			}
		}
	})
	t.Run("table", func(t *testing.T) {
		out := mustCLI(t, m.env, "get", "denials", "--since", "10m")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !strings.HasPrefix(lines[0], "LAST SEEN") || !strings.Contains(lines[0], "REASON") || !strings.HasSuffix(lines[0], "COUNT") {
			t.Errorf("header: got %q, want LAST SEEN ... REASON COUNT", lines[0])
		}
		if !strings.Contains(out, "/admin/users") || !strings.Contains(out, "default/deny-admin#rule0") {
			t.Errorf("table: got\n%s\nwant a row of /admin/users by default/deny-admin#rule0", out)
		}
		if out := mustCLI(t, m.env, "get", "denials", "-n", "other"); strings.TrimSpace(out) != "No resources found." {
			t.Errorf("get denials -n other: got %q, want none", out)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		// At least: the client's proxy denied the three GETs of /admin/users
		// and the probe; api's denied the two GETs of /debug/vars.
		for _, c := range []struct {
			addr, series string
			atLeast      float64
		}{
			{clientMetrics, `bulwark_authz_decisions_total{decision="deny",direction="outbound",reason="deny_rule"}`, 4},
			{apiMetrics, `bulwark_authz_decisions_total{decision="deny",direction="inbound",reason="deny_rule"}`, 2},
			{apiMetrics, `bulwark_authz_decisions_total{decision="allow",direction="inbound",reason="allowed"}`, 1},
			{apiMetrics, `bulwark_denial_reports_total{result="ok"}`, 1},
			{clientMetrics, `bulwark_denial_reports_total{result="ok"}`, 1},
		} {
			body := scrape(t, c.addr)
			if got, ok := metricValue(body, c.series); !ok || got < c.atLeast {
				t.Errorf("%s: got %v (present: %v), want at least %v; metrics:\n%s", c.series, got, ok, c.atLeast,
					grepLines(body, "bulwark_authz_decisions_total", "bulwark_denial"))
			}
		}
	})
	t.Run("logged_once_per_edge", func(t *testing.T) {
		// The client's four or more denials of /admin (the probe and
		// three retries, within seconds) are one edge: logged once per
		// 10 seconds, not once per request.
		lines := logLines(client.proc.out.String(), `"msg":"request denied"`, "default/deny-admin")
		if len(lines) < 1 || len(lines) > 2 {
			t.Errorf("got %d process log lines for the edge, want 1 (2 if the probe was 10s before the retries):\n%s", len(lines), strings.Join(lines, "\n"))
		}
	})
}

func find(items []denialItem, direction, path string) *denialItem {
	for i := range items {
		if items[i].Status.Direction == direction && items[i].Status.Path == path {
			return &items[i]
		}
	}
	return nil
}

// metricValue returns the value of series (name{labels} exactly as
// Prometheus prints it) in a /metrics body.
func metricValue(body, series string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// scrape returns the body of /metrics at addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatal(errors.New("metrics: " + resp.Status))
	}
	return string(b)
}

// grepLines returns the lines of text that contain any of subs.
func grepLines(text string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
