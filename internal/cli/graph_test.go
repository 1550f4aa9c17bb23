package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// edgesFixture is what the admin API of the graph tests serves.
func edgesFixture(now time.Time) []*config.Edge {
	mk := func(ns, source, svc, dest, method, path string, requests, errs, denied int64, rps, p50, p99 float64) *config.Edge {
		return &config.Edge{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindEdge},
			Metadata: config.ObjectMeta{Name: "e-" + strings.Repeat("0", 11) + string(rune('a'+len(path)%26)), Namespace: ns},
			Status: config.EdgeStatus{Source: source, SourceService: svc, Destination: dest, Method: method, Path: path,
				Requests: requests, Errors: errs, Denied: denied, RPS: rps, P50MS: p50, P99MS: p99, MTLS: true,
				FirstSeen: now.Add(-20 * time.Minute).Format(time.RFC3339Nano), LastSeen: now.Add(-10*time.Minute - 30*time.Second).Format(time.RFC3339Nano)},
		}
	}
	return []*config.Edge{
		mk("default", "spiffe://bulwark.test/ns/shop/sa/web", "shop/web", "default/api", "GET", "/items/*", 100, 1, 0, 2, 1.5, 20),
		mk("default", "spiffe://bulwark.test/ns/shop/sa/web", "shop/web", "default/api", "POST", "/items", 50, 0, 0, 1, 3, 40),
		mk("default", "spiffe://bulwark.test/ns/default/sa/rogue", "default/rogue", "default/api", "GET", "/admin/*", 10, 0, 10, 0.5, 0.2, 0.4),
		mk("team-b", "spiffe://bulwark.test/ns/team-b/sa/x", "team-b/\"x\"\n", "team-b/db", "CONNECT", "", 1, 0, 0, 0.01, 0, 0),
	}
}

// edgesAdmin serves a real admin API whose edges come from source, and
// returns the built-in admin's credential file for it.
func edgesAdmin(t *testing.T, source admin.EdgeSource) string {
	return viewsAdmin(t, func(c *admin.Config) { c.Edges = source })
}

// TestGraphCommands: `get edges`, `graph` and `top --once` print the edges
// the admin API serves; bad flags are usage errors naming the flag.
func TestGraphCommands(t *testing.T) {
	now := time.Now()
	var gotWithin []time.Duration
	credPath := edgesAdmin(t, func(include func(string) bool, within time.Duration) []*config.Edge {
		gotWithin = append(gotWithin, within)
		var out []*config.Edge
		for _, e := range edgesFixture(now) {
			if include == nil || include(e.Metadata.Namespace) {
				out = append(out, e)
			}
		}
		return out
	})
	ok := func(t *testing.T, args ...string) string {
		t.Helper()
		r := run(t, "", append([]string{"--config", credPath}, args...)...)
		if r.code != 0 {
			t.Fatalf("%s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.err)
		}
		return r.out
	}

	t.Run("get_edges_table", func(t *testing.T) {
		gotWithin = nil
		out := ok(t, "get", "edges", "--since", "1h")
		want := "SOURCE         DESTINATION  METHOD  PATH      REQUESTS  ERRORS  DENIED  RPS   P50    P99     MTLS  LAST SEEN\n" +
			"shop/web       default/api  GET     /items/*  100       1       0       2.00  1.5ms  20.0ms  true  10m\n" +
			"shop/web       default/api  POST    /items    50        0       0       1.00  3.0ms  40.0ms  true  10m\n" +
			"default/rogue  default/api  GET     /admin/*  10        0       10      0.50  0.2ms  0.4ms   true  10m\n"
		if out != want {
			t.Errorf("got\n%s\nwant\n%s", out, want)
		}
		if len(gotWithin) != 1 || gotWithin[0] != time.Hour {
			t.Errorf("the server got since %v, want [1h]", gotWithin)
		}
	})
	t.Run("get_edges_json", func(t *testing.T) {
		objs, err := config.UnmarshalList([]byte(ok(t, "get", "edge", "-A", "-o", "json")))
		if err != nil || len(objs) != 4 || objs[3].(*config.Edge).Status.Method != "CONNECT" {
			t.Errorf("got %v, %v, want the 4 edges", objs, err)
		}
	})
	t.Run("graph_table", func(t *testing.T) {
		out := ok(t, "graph")
		want := "SOURCE         DESTINATION  RPS   SUCCESS  DENIED  P50    P99     MTLS\n" +
			"default/rogue  default/api  0.50  0.0%     10      0.2ms  0.4ms   true\n" +
			"shop/web       default/api  3.00  99.3%    0       3.0ms  40.0ms  true\n"
		if out != want {
			t.Errorf("got\n%s\nwant\n%s", out, want)
		}
		if gotWithin[len(gotWithin)-1] != 15*time.Minute {
			t.Errorf("graph's default window: got %v, want 15m", gotWithin[len(gotWithin)-1])
		}
	})
	t.Run("graph_dot_escapes", func(t *testing.T) {
		out := ok(t, "graph", "-A", "-o", "dot")
		for _, want := range []string{"digraph bulwark {", `"shop/web" -> "default/api" [label="3.00 rps, 99.3% ok", color=orange];`,
			`"default/rogue" -> "default/api" [label="0.50 rps, 0.0% ok, 10 denied", color=red];`, `"team-b/\"x\"\\x0a" -> "team-b/db"`} {
			if !strings.Contains(out, want) {
				t.Errorf("got\n%s\nwant it to contain %s", out, want)
			}
		}
		if strings.Count(out, "\n") != 7 {
			t.Errorf("got %d lines, want 7 (a forged name must not add one):\n%s", strings.Count(out, "\n"), out)
		}
	})
	t.Run("graph_json", func(t *testing.T) {
		var g struct {
			Edges []struct {
				Source         string  `json:"source"`
				Requests       int64   `json:"requests"`
				SuccessPercent float64 `json:"successPercent"`
			} `json:"edges"`
		}
		if err := json.Unmarshal([]byte(ok(t, "graph", "-o", "json", "--since", "1h")), &g); err != nil {
			t.Fatal(err)
		}
		if len(g.Edges) != 2 || g.Edges[1].Source != "shop/web" || g.Edges[1].Requests != 150 {
			t.Errorf("got %+v, want rogue then web with 150 requests", g.Edges)
		}
	})
	t.Run("top_once", func(t *testing.T) {
		gotWithin = nil
		out := ok(t, "top")
		lines := strings.Split(out, "\n")
		if !strings.HasPrefix(lines[0], "bulwark top: namespace default, last 1m0s") || !strings.HasPrefix(lines[2], "SOURCE") ||
			!strings.Contains(lines[3], "/items/*") || !strings.Contains(lines[5], "/admin/*") || strings.Contains(out, "\x1b") {
			t.Errorf("got\n%s\nwant a header and the edges by rps, without terminal codes (stdout is not a terminal)", out)
		}
		if len(gotWithin) != 1 || gotWithin[0] != time.Minute {
			t.Errorf("the server got since %v, want [1m]", gotWithin)
		}
	})
	for _, c := range []struct {
		name string
		args []string
		flag string
	}{
		{"graph_output", []string{"graph", "-o", "svg"}, "-o"},
		{"graph_since", []string{"graph", "--since", "48h"}, "--since"},
		{"graph_namespace", []string{"graph", "-n", "Bad_NS"}, "--namespace"},
		{"top_interval", []string{"top", "--interval", "1ms"}, "--interval"},
		{"get_edges_since_negative", []string{"get", "edges", "--since", "-1m"}, "--since"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, "", append([]string{"--config", credPath}, c.args...)...)
			if r.code != 2 || !strings.Contains(r.err, c.flag) {
				t.Errorf("got exit %d, stderr %q, want 2 naming %s", r.code, r.err, c.flag)
			}
		})
	}
}
