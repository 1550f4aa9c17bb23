package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// recommendEdges is the service graph of the recommend tests: web reads
// api, rogue was denied on api, and team-b has an edge of its own.
func recommendEdges() []*config.Edge {
	mk := func(ns, src, dest, method, path string, requests, denied int64) *config.Edge {
		return &config.Edge{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindEdge},
			Metadata: config.ObjectMeta{Name: "e-" + src + "-" + strings.ReplaceAll(path, "/", "-"), Namespace: ns},
			Status: config.EdgeStatus{Source: "spiffe://bulwark.test/ns/" + ns + "/sa/" + src, SourceService: ns + "/" + src,
				Destination: ns + "/" + dest, Method: method, Path: path, Requests: requests, Denied: denied, MTLS: true},
		}
	}
	return []*config.Edge{
		mk("default", "web", "api", "GET", "/items/*", 3, 0),
		mk("default", "web", "api", "GET", "/health", 1, 0),
		mk("default", "rogue", "api", "GET", "/admin", 50, 50),
		mk("team-b", "job", "db", "GET", "/x", 5, 0),
	}
}

// TestPolicyRecommend drives `bulwark policy recommend` against a real admin
// API serving a fixed graph.
func TestPolicyRecommend(t *testing.T) {
	var gotWithin []time.Duration
	credPath := recommendAdmin(t, func(include func(string) bool, within time.Duration) []*config.Edge {
		gotWithin = append(gotWithin, within)
		var out []*config.Edge
		for _, e := range recommendEdges() {
			if include == nil || include(e.Metadata.Namespace) {
				out = append(out, e)
			}
		}
		return out
	})
	rec := func(args ...string) result {
		return run(t, "", append([]string{"--config", credPath, "policy", "recommend"}, args...)...)
	}

	t.Run("stdout", func(t *testing.T) {
		gotWithin = nil
		r := rec("--since", "10m")
		if r.code != 0 {
			t.Fatalf("got exit %d, stderr %q, want 0", r.code, r.err)
		}
		if len(gotWithin) != 1 || gotWithin[0] != 10*time.Minute {
			t.Errorf("the server got since %v, want [10m]", gotWithin)
		}
		objs, err := config.Decode([]byte(r.out))
		if err != nil {
			t.Fatalf("decode the output: %v\n%s", err, r.out)
		}
		if len(objs) != 1 || config.Ref(objs[0]) != "default/recommended-api" {
			t.Fatalf("got %d documents, want default/recommended-api only:\n%s", len(objs), r.out)
		}
		for _, line := range strings.Split(r.out, "\n") {
			if strings.Contains(line, "rogue") && !strings.HasPrefix(line, "#   ") {
				t.Errorf("rogue named outside the denied list: %q", line)
			}
		}
		if !strings.Contains(r.out, "# between ") || !strings.Contains(r.out, "(10m)") {
			t.Errorf("the header does not give the window:\n%s", r.out)
		}
	})
	t.Run("live_requirements", func(t *testing.T) {
		live := writeFile(t, "live.yaml", `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: ["default/web"], requestPrincipals: ["https://idp.example.com/*"]}
`)
		if r := run(t, "", "--config", credPath, "apply", "-f", live); r.code != 0 {
			t.Fatalf("apply: exit %d, %s", r.code, r.err)
		}
		r := rec()
		if r.code != 0 || !strings.Contains(r.out, "# live policy default/web-reads-api rule 0 requires from.requestPrincipals;") {
			t.Errorf("got exit %d, stderr %q, want a note on the live rule's requestPrincipals in\n%s", r.code, r.err, r.out)
		}
	})
	t.Run("file_lints_and_dry_run", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rec.yaml")
		r := rec("-n", "team-b", "--dry-run", "-o", path)
		if r.code != 0 || r.out != "" || !strings.Contains(r.err, "wrote 1 policy allowing 5 observed requests to "+path) {
			t.Fatalf("got exit %d, stdout %q, stderr %q, want 0 and a note on stderr", r.code, r.out, r.err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "  dryRun: true\n") {
			t.Errorf("no dryRun: true in\n%s", data)
		}
		lint := run(t, "", "policy", "lint", "-f", path)
		if lint.code != 0 {
			t.Errorf("policy lint: exit %d, %s%s", lint.code, lint.out, lint.err)
		}
	})
	t.Run("nothing_to_recommend", func(t *testing.T) {
		r := rec("--service", "nope")
		if r.code != 1 || r.out != "" || !strings.Contains(r.err, "nothing to recommend") {
			t.Errorf("got exit %d, stdout %q, stderr %q, want 1 and nothing on stdout", r.code, r.out, r.err)
		}
		r = rec("-n", "empty")
		if r.code != 1 || !strings.Contains(r.err, "nothing to recommend") {
			t.Errorf("empty namespace: got exit %d, stderr %q, want 1", r.code, r.err)
		}
	})
	t.Run("only_denied_lists_them", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "never.yaml")
		r := rec("--min-requests", "10", "-o", path)
		if r.code != 1 || !strings.Contains(r.err, "observed but denied: default/rogue") {
			t.Errorf("got exit %d, stderr %q, want 1 and the denied edge on stderr", r.code, r.err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("the file was written: %v", err)
		}
	})
	for _, tt := range []struct {
		name string
		args []string
		flag string
	}{
		{"since_zero", []string{"--since", "0s"}, "--since"},
		{"since_too_long", []string{"--since", "48h"}, "--since"},
		{"output_format", []string{"-o", "json"}, "-o"},
		{"bad_namespace", []string{"-n", "Bad_NS"}, "--namespace"},
		{"bad_service", []string{"--service", "a/b"}, "--service"},
		{"min_requests_zero", []string{"--min-requests", "0"}, "--min-requests"},
		{"collapse_negative", []string{"--collapse", "-1"}, "--collapse"},
		{"argument", []string{"extra"}, "unknown command"},
	} {
		t.Run("usage_"+tt.name, func(t *testing.T) {
			r := rec(tt.args...)
			if r.code != 2 || !strings.Contains(r.err, tt.flag) {
				t.Errorf("got exit %d, stderr %q, want 2 naming %s", r.code, r.err, tt.flag)
			}
		})
	}
}

// recommendAdmin serves a real admin API whose service graph comes from
// source, and returns the built-in admin's credential file for it.
func recommendAdmin(t *testing.T, source admin.EdgeSource) string {
	return viewsAdmin(t, func(c *admin.Config) { c.Edges = source })
}
