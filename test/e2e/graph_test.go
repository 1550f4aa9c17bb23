package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// graphEdge is what the test reads of an Edge in `get edges -o json`.
type graphEdge struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Status struct {
		Source        string  `json:"source"`
		SourceService string  `json:"sourceService"`
		Destination   string  `json:"destination"`
		Method        string  `json:"method"`
		Path          string  `json:"path"`
		Requests      int64   `json:"requests"`
		Errors        int64   `json:"errors"`
		Denied        int64   `json:"denied"`
		RPS           float64 `json:"rps"`
		P50MS         float64 `json:"p50ms"`
		P99MS         float64 `json:"p99ms"`
		MTLS          bool    `json:"mtls"`
		FirstSeen     string  `json:"firstSeen"`
		LastSeen      string  `json:"lastSeen"`
	} `json:"status"`
}

// graphEdges runs `bulwark get edges -o json` with args.
func graphEdges(m *mesh, args ...string) ([]graphEdge, string, error) {
	out, errOut, code := cli(m.t, m.env, "", append([]string{"get", "edges", "-o", "json"}, args...)...)
	if code != 0 {
		return nil, out, fmt.Errorf("get edges: exit %d: %s", code, errOut)
	}
	var list struct {
		Kind  string      `json:"kind"`
		Items []graphEdge `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, out, fmt.Errorf("decode %q: %v", out, err)
	}
	return list.Items, out, nil
}

// graphFind returns the edge from source (a service) with method and path.
func graphFind(edges []graphEdge, source, method, path string) *graphEdge {
	for i := range edges {
		s := edges[i].Status
		if s.SourceService == source && s.Method == method && s.Path == path {
			return &edges[i]
		}
	}
	return nil
}

// graphGet sends GET url through c and returns the status.
func graphGet(c *http.Client, url string) (int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestServiceGraph: web calls api on /items/1, /items/2 and /items/3 and
// `bulwark get edges` shows one edge GET /items/* with 3 requests (both
// proxies report it; it is counted once), mTLS and latencies; a rogue
// caller's denied calls show as a denied edge; `bulwark graph` (table and
// dot) and `bulwark top --once` print them.
func TestServiceGraph(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	m.startProxy("default/api", startApp(t, "api").addr)
	web := m.startClientProxy("default/web")
	rogue := m.startClientProxy("default/rogue")
	m.apply(allowAll("api", "default/web"))

	wc, rc := web.client(), rogue.client()
	eventually(t, 15*time.Second, "policy in force", func() error {
		if code, err := graphGet(wc, "http://api.default/health"); err != nil || code != http.StatusOK {
			return fmt.Errorf("web /health: %d %v", code, err)
		}
		if code, err := graphGet(rc, "http://api.default/health"); err != nil || code != http.StatusForbidden {
			return fmt.Errorf("rogue /health: %d %v", code, err)
		}
		return nil
	})
	for _, p := range []string{"/items/1", "/items/2?token=s3cr3t-q", "/items/3"} {
		if code, err := graphGet(wc, "http://api.default"+p); err != nil || code != http.StatusOK {
			t.Fatalf("web GET %s: got %d %v, want 200", p, code, err)
		}
	}
	for i := range 4 {
		if code, err := graphGet(rc, fmt.Sprintf("http://api.default/admin/%d", 1000+i)); err != nil || code != http.StatusForbidden {
			t.Fatalf("rogue GET /admin/%d: got %d %v, want 403", 1000+i, code, err)
		}
	}

	var (
		edges []graphEdge
		raw   string
	)
	sent := time.Now()
	eventually(t, 30*time.Second, "get edges shows both callers", func() error {
		var err error
		if edges, raw, err = graphEdges(m); err != nil {
			return err
		}
		items, admin := graphFind(edges, "default/web", "GET", "/items/*"), graphFind(edges, "default/rogue", "GET", "/admin/*")
		if items == nil || items.Status.Requests != 3 || admin == nil || admin.Status.Denied != 4 {
			return fmt.Errorf("got %s", raw)
		}
		return nil
	})
	t.Logf("edges listed %s after the requests", time.Since(sent).Round(time.Millisecond))

	t.Run("templated_edge", func(t *testing.T) {
		e := graphFind(edges, "default/web", "GET", "/items/*")
		s := e.Status
		if e.Kind != "Edge" || e.Metadata.Namespace != "default" || !strings.HasPrefix(e.Metadata.Name, "e-") ||
			s.Destination != "default/api" || s.Source != "spiffe://bulwark.local/ns/default/sa/web" ||
			s.Errors != 0 || s.Denied != 0 || !s.MTLS || s.RPS <= 0 || s.P99MS <= 0 || s.P50MS > s.P99MS ||
			s.FirstSeen == "" || s.LastSeen == "" {
			t.Errorf("got %+v, want web -> default/api GET /items/* over mTLS with rps and latencies", e)
		}
		for _, e := range edges {
			if strings.HasPrefix(e.Status.Path, "/items/") && e.Status.Path != "/items/*" {
				t.Errorf("got an edge of path %q, want every /items/N in /items/*", e.Status.Path)
			}
		}
		if strings.Contains(raw, "s3cr3t-q") || strings.Contains(raw, "token") {
			t.Errorf("get edges shows the query string:\n%s", raw)
		}
	})
	t.Run("denied_edge", func(t *testing.T) {
		s := graphFind(edges, "default/rogue", "GET", "/admin/*").Status
		if s.Destination != "default/api" || s.Requests != 4 || s.Denied != 4 || s.Errors != 0 {
			t.Errorf("got %+v, want rogue's 4 GETs of /admin/* denied", s)
		}
	})
	t.Run("namespace_filter", func(t *testing.T) {
		other, _, err := graphEdges(m, "-n", "other")
		if err != nil || len(other) != 0 {
			t.Errorf("get edges -n other: got %v %v, want none", other, err)
		}
		if _, errOut, code := cli(t, m.env, "", "get", "edges", "--since", "-5m"); code != 2 {
			t.Errorf("get edges --since -5m: got exit %d (%s), want 2", code, errOut)
		}
	})
	t.Run("get_table", func(t *testing.T) {
		out := mustCLI(t, m.env, "get", "edges", "--since", "10m")
		if !strings.HasPrefix(out, "SOURCE") || !strings.Contains(out, "/items/*") || !strings.Contains(out, "default/rogue") {
			t.Errorf("get edges table: got\n%s", out)
		}
	})
	t.Run("graph", func(t *testing.T) {
		out := mustCLI(t, m.env, "graph")
		var web, rogueRow string
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) == 8 && f[1] == "default/api" {
				switch f[0] {
				case "default/web":
					web = l
				case "default/rogue":
					rogueRow = l
				}
			}
		}
		// The web row merges /health (denied until the policy arrived)
		// and /items/*.
		if f := strings.Fields(web); len(f) != 8 || f[3] == "0.0%" || f[7] != "true" {
			t.Errorf("graph: web row %q, want successes over mTLS; got\n%s", web, out)
		}
		if f := strings.Fields(rogueRow); len(f) != 8 || f[3] != "0.0%" || atoi(t, f[4]) < 4 {
			t.Errorf("graph: rogue row %q, want 0.0%% success and at least 4 denied; got\n%s", rogueRow, out)
		}
		dot := mustCLI(t, m.env, "graph", "-o", "dot")
		if !strings.HasPrefix(dot, "digraph bulwark {") || !strings.Contains(dot, `"default/web" -> "default/api"`) ||
			!strings.Contains(dot, `"default/rogue" -> "default/api"`) || !strings.Contains(dot, "color=red") {
			t.Errorf("graph -o dot: got\n%s", dot)
		}
		if _, errOut, code := cli(t, m.env, "", "graph", "-o", "svg"); code != 2 || !strings.Contains(errOut, "-o") {
			t.Errorf("graph -o svg: got exit %d (%s), want 2 naming -o", code, errOut)
		}
	})
	t.Run("top_once", func(t *testing.T) {
		out := mustCLI(t, m.env, "top", "--once")
		if !strings.HasPrefix(out, "bulwark top: namespace default") || !strings.Contains(out, "/items/*") ||
			!strings.Contains(out, "/admin/*") || strings.Contains(out, "\x1b[") {
			t.Errorf("top --once: got\n%q", out)
		}
	})
}
