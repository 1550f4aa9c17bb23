package policy_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// benchService is the service the benchmarks decide for.
func benchService() identity.ServiceRef {
	return identity.ServiceRef{Namespace: "default", Name: "bench"}
}

// benchSelecting returns the ten policies that select benchService: DENY
// and ALLOW, with services, identities, globs, methods and paths.
func benchSelecting() []*config.AuthorizationPolicy {
	return []*config.AuthorizationPolicy{
		pol("deny-evil-ids", "bench", config.ActionDeny,
			config.Rule{From: from(nil, list("spiffe://bulwark.local/ns/evil/sa/*", "spiffe://other.example/*"))}),
		pol("deny-admin-writes", "bench", config.ActionDeny,
			config.Rule{To: to(list("POST", "PUT", "DELETE", "PATCH"), list("/admin/*"))}),
		pol("deny-debug", "", config.ActionDeny,
			config.Rule{From: from(list("*/batch-*"), nil), To: to(nil, list("/debug/*", "/metrics"))}),
		pol("allow-web", "bench", config.ActionAllow,
			config.Rule{From: from(list("default/web"), nil), To: to(list("GET", "HEAD"), list("/api/*", "/health"))},
			config.Rule{From: from(list("default/web"), nil), To: to(list("POST"), list("/api/orders/*"))}),
		pol("allow-frontend", "bench", config.ActionAllow,
			config.Rule{From: from(list("frontend/*"), list("spiffe://bulwark.local/ns/frontend/sa/*")), To: to(list("GET", "POST"), list("/api/*"))}),
		pol("allow-admins", "bench", config.ActionAllow,
			config.Rule{From: from(nil, list(
				"spiffe://bulwark.local/ns/ops/sa/admin",
				"spiffe://bulwark.local/ns/ops/sa/oncall",
				"spiffe://bulwark.local/ns/ops/sa/deployer",
			)), To: to(list("*"), list("/admin/*"))}),
		pol("allow-public", "", config.ActionAllow,
			config.Rule{To: to(list("GET"), list("/public/*", "/favicon.ico", "/robots.txt"))}),
		pol("allow-batch", "bench", config.ActionAllow,
			config.Rule{From: from(list("jobs/batch-*", "jobs/cron"), nil), To: to(list("PUT", "PURGE"), list("/cache/*"))}),
		pol("allow-many-paths", "bench", config.ActionAllow,
			config.Rule{From: from(list("default/api"), nil), To: to(list("GET"), list(
				"/v1/a", "/v1/b", "/v1/c", "/v1/d", "/v1/e", "/v1/f", "/v1/g", "/v1/h", "/v1/i", "/v1/j", "/v1/k/*",
			))}),
		pol("allow-mesh-health", "", config.ActionAllow,
			config.Rule{From: from(list("*"), nil), To: to(list("GET"), list("/healthz"))}),
	}
}

// benchMesh returns n policies of which (up to) ten select benchService
// and the rest select services in other namespaces.
func benchMesh(n int) []*config.AuthorizationPolicy {
	mesh := benchSelecting()
	if n < len(mesh) {
		return mesh[:n]
	}
	for i := len(mesh); i < n; i++ {
		ns := fmt.Sprintf("ns-%d", i%97)
		svc := fmt.Sprintf("svc-%d", i)
		mesh = append(mesh, polNS(ns, "p-"+svc, svc, config.ActionAllow,
			config.Rule{From: from(list(ns+"/*"), nil), To: to(list("GET"), list("/api/*"))}))
	}
	return mesh
}

// benchRequests are decided in turn: allowed, denied by a DENY rule, and
// denied for lack of an ALLOW rule.
func benchRequests() []policy.Request {
	src := func(id string, services ...string) policy.Source {
		return policy.Source{ID: id, Services: services}
	}
	return []policy.Request{
		{Source: src(idWeb, "default/web"), Method: "GET", Path: "/api/users/42"},
		{Source: src("spiffe://bulwark.local/ns/frontend/sa/ui", "frontend/ui"), Method: "POST", Path: "/api/cart"},
		{Source: src("spiffe://bulwark.local/ns/ops/sa/oncall", "ops/oncall"), Method: "DELETE", Path: "/admin/cache"},
		{Source: src("spiffe://bulwark.local/ns/evil/sa/x", "evil/x"), Method: "GET", Path: "/public/index.html"},
		{Source: src(idAPI, "default/api"), Method: "GET", Path: "/v1/k/7"},
		{Source: src(idAPI, "default/api"), Method: "GET", Path: "/nowhere"},
		{Source: src("spiffe://bulwark.local/ns/jobs/sa/batch-1", "jobs/batch-1"), Method: "GET", Path: "/debug/pprof"},
		{Source: src(idWeb, "default/web"), Method: "get", Path: "/api/users/42"},
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			ix := policy.Compile(benchService(), benchMesh(n))
			reqs := benchRequests()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ix.Decide(&reqs[i%len(reqs)])
				i++
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			mesh := benchMesh(n)
			b.ReportAllocs()
			for b.Loop() {
				policy.Compile(benchService(), mesh)
			}
		})
	}
}

// TestBenchMeshDecisions pins what the benchmark requests decide, so the
// benchmark keeps measuring a mix of allows, DENY matches and no-matches,
// whatever the size of the mesh.
func TestBenchMeshDecisions(t *testing.T) {
	want := []policy.Decision{
		allowed("default/allow-web", 0),
		allowed("default/allow-frontend", 0),
		deniedBy("default/deny-admin-writes", 0),
		deniedBy("default/deny-evil-ids", 0),
		allowed("default/allow-many-paths", 0),
		noAllowMatch(),
		deniedBy("default/deny-debug", 0),
		noAllowMatch(),
	}
	for _, n := range []int{10, 1000, 10000} {
		t.Run(fmt.Sprintf("policies=%d", n), func(t *testing.T) {
			ix := policy.Compile(benchService(), benchMesh(n))
			var got []policy.Decision
			for _, r := range benchRequests() {
				got = append(got, ix.Decide(&r))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decisions mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
