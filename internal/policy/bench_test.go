package policy_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// benchService is the service the benchmarks decide for.
func benchService() identity.ServiceRef {
	return identity.ServiceRef{Namespace: "default", Name: "bench"}
}

// benchWorkload is the instance of benchService the benchmarks decide
// for.
func benchWorkload() policy.Workload {
	return policy.Workload{Service: benchService(), Labels: map[string]string{"app": "bench", "version": "v2"}}
}

// benchSelecting returns the policies that select benchWorkload (and a few
// that select other instances of it): service-selected, namespace-wide,
// mesh-wide and label-selected; DENY, ALLOW, AUDIT and dry-run; with
// services, identities, namespaces, principals, IP blocks, globs, notX,
// methods, hosts, ports, exact paths, prefixes and path globs.
func benchSelecting() []*config.AuthorizationPolicy {
	root := func(name string, action config.Action, rules ...config.Rule) *config.AuthorizationPolicy {
		return polNS(config.RootNamespace, name, "", action, rules...)
	}
	labelled := func(p *config.AuthorizationPolicy, version string) *config.AuthorizationPolicy {
		p.Spec.Selector.Labels = map[string]string{"version": version}
		return p
	}
	ps := []*config.AuthorizationPolicy{
		pol("deny-evil-ids", "bench", config.ActionDeny,
			config.Rule{From: from(nil, list("spiffe://bulwark.local/ns/evil/sa/*", "spiffe://other.example/*"))}),
		pol("deny-admin-writes", "bench", config.ActionDeny,
			config.Rule{To: to(list("POST", "PUT", "DELETE", "PATCH"), list("/admin/*"))}),
		pol("deny-debug", "", config.ActionDeny,
			config.Rule{From: from(list("*/batch-*"), nil), To: to(nil, list("/debug/*", "/metrics"))}),
		root("mesh-deny-foreign", config.ActionDeny,
			config.Rule{From: &config.Source{NotIdentities: list("spiffe://bulwark.local/ns/*/sa/*")}}),
		root("mesh-deny-internal-paths", config.ActionDeny,
			config.Rule{From: &config.Source{NotNamespaces: list("ops", "bulwark-system")}, To: to(nil, list("/internal/*"))}),
		labelled(pol("deny-v1-exports", "bench", config.ActionDeny, config.Rule{To: to(nil, list("/export/*"))}), "v1"),
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
		root("mesh-allow-health", config.ActionAllow,
			config.Rule{From: from(list("*"), nil), To: to(list("GET"), list("/healthz", "/readyz"))}),
		pol("allow-profiles", "bench", config.ActionAllow,
			config.Rule{From: &config.Source{Namespaces: list("default", "front*")}, To: to(list("GET"), list("/users/*/profile", "/img/*.png"))}),
		pol("allow-partners", "bench", config.ActionAllow,
			config.Rule{From: &config.Source{RequestPrincipals: list("https://idp.example.com/*"), IPBlocks: list("10.0.0.0/8", "192.168.0.0/16")},
				To: &config.Operation{Methods: list("GET"), Hosts: list("bench.default", "*.example.com"), Ports: []int{80, 8080}, Paths: list("/partner/*")}}),
		labelled(pol("allow-v2-beta", "bench", config.ActionAllow,
			config.Rule{From: from(list("default/*"), nil), To: &config.Operation{Paths: list("/beta/*"), NotMethods: list("DELETE")}}), "v2"),
		pol("audit-admin-paths", "", config.ActionAudit, config.Rule{To: to(nil, list("/admin/*"))}),
		root("mesh-audit-deletes", config.ActionAudit, config.Rule{To: to(list("DELETE"), nil)}),
		dryRun(pol("dry-deny-cache", "bench", config.ActionDeny, config.Rule{To: to(list("PURGE"), nil)})),
		dryRun(pol("dry-allow-reports", "bench", config.ActionAllow, config.Rule{From: from(list("default/*"), nil), To: to(list("GET"), list("/reports/*"))})),
	}
	// Narrow ALLOW rules for one caller service each, as meshes grow them.
	for i := range 12 {
		ps = append(ps, pol(fmt.Sprintf("allow-caller-%02d", i), "bench", config.ActionAllow,
			config.Rule{From: from(list(fmt.Sprintf("team-%d/svc-%d", i, i)), nil), To: to(list("GET", "POST"), list(fmt.Sprintf("/team-%d/*", i)))}))
	}
	return ps
}

// benchMesh returns n policies (at least those of benchSelecting): the
// rest select services of other namespaces, and one in ten of them is
// namespace-wide.
func benchMesh(n int) []*config.AuthorizationPolicy {
	mesh := benchSelecting()
	if n < len(mesh) {
		return mesh[:n]
	}
	for i := len(mesh); i < n; i++ {
		ns := fmt.Sprintf("ns-%d", i%97)
		svc := fmt.Sprintf("svc-%d", i)
		if i%10 == 0 {
			svc = ""
		}
		mesh = append(mesh, polNS(ns, fmt.Sprintf("p-%d", i), svc, config.ActionAllow,
			config.Rule{From: from(list(ns+"/*"), nil), To: to(list("GET"), list("/api/*"))}))
	}
	return mesh
}

// benchRequests are decided in turn: allowed, denied by a DENY rule, and
// denied for lack of an ALLOW rule; some audited, one a dry-run change.
func benchRequests() []policy.Request {
	src := func(id string, services ...string) policy.Source {
		return policy.Source{ID: id, Services: services, IP: netip.MustParseAddr("10.1.2.3")}
	}
	partner := src("spiffe://bulwark.local/ns/partners/sa/gw", "partners/gw")
	partner.Principal = "https://idp.example.com/acme"
	return []policy.Request{
		{Source: src(idWeb, "default/web"), Method: "GET", Path: "/api/users/42", Host: "bench.default", Port: 80},
		{Source: src("spiffe://bulwark.local/ns/frontend/sa/ui", "frontend/ui"), Method: "POST", Path: "/api/cart", Host: "bench.default", Port: 80},
		{Source: src("spiffe://bulwark.local/ns/ops/sa/oncall", "ops/oncall"), Method: "DELETE", Path: "/admin/cache", Host: "bench.default", Port: 80},
		{Source: src("spiffe://bulwark.local/ns/evil/sa/x", "evil/x"), Method: "GET", Path: "/public/index.html", Host: "bench.default", Port: 80},
		{Source: src(idAPI, "default/api"), Method: "GET", Path: "/v1/k/7", Host: "bench.default", Port: 80},
		{Source: src(idAPI, "default/api"), Method: "GET", Path: "/nowhere", Host: "bench.default", Port: 80},
		{Source: src("spiffe://bulwark.local/ns/jobs/sa/batch-1", "jobs/batch-1"), Method: "GET", Path: "/debug/pprof", Host: "bench.default", Port: 80},
		{Source: src(idWeb, "default/web"), Method: "get", Path: "/api/users/42", Host: "bench.default", Port: 80},
		{Source: src("spiffe://bulwark.local/ns/frontend/sa/ui", "frontend/ui"), Method: "GET", Path: "/users/alice/profile", Host: "bench.default", Port: 80},
		{Source: partner, Method: "GET", Path: "/partner/orders", Host: "api.example.com", Port: 8080},
		{Source: src(idWeb, "default/web"), Method: "GET", Path: "/reports/q3", Host: "bench.default", Port: 80},
		{Source: src("spiffe://bulwark.local/ns/team-7/sa/svc-7", "team-7/svc-7"), Method: "POST", Path: "/team-7/jobs", Host: "bench.default", Port: 80},
	}
}

// TestBenchMeshDecisions pins what the benchmark requests decide, so the
// benchmark keeps measuring a mix of allows, DENY matches and no-matches,
// whatever the size of the mesh.
func TestBenchMeshDecisions(t *testing.T) {
	audit := func(d policy.Decision, ref string) policy.Decision {
		d.Audit, d.AuditPolicy = true, ref
		return d
	}
	wouldAllow := noAllowMatch()
	wouldAllow.DryRun = policy.DryRun{Differs: true, Allow: true, Reason: policy.ReasonAllowed, Policy: "default/dry-allow-reports", Rule: 0}
	want := []policy.Decision{
		allowed("default/allow-web", 0),
		allowed("default/allow-frontend", 0),
		audit(deniedBy("default/deny-admin-writes", 0), "default/audit-admin-paths"),
		deniedBy("default/deny-evil-ids", 0),
		allowed("default/allow-many-paths", 0),
		noAllowMatch(),
		deniedBy("default/deny-debug", 0),
		noAllowMatch(),
		allowed("default/allow-profiles", 0),
		allowed("default/allow-partners", 0),
		wouldAllow,
		allowed("default/allow-caller-07", 0),
	}
	for _, n := range []int{10, 1000, 10000} {
		if n < len(benchSelecting()) {
			continue
		}
		t.Run(fmt.Sprintf("policies=%d", n), func(t *testing.T) {
			ix, err := policy.Compile(benchWorkload(), benchMesh(n))
			if err != nil {
				t.Fatal(err)
			}
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

func TestDecideDoesNotAllocate(t *testing.T) {
	ix, err := policy.Compile(benchWorkload(), benchMesh(1000))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range benchRequests() {
		t.Run(r.Method+"_"+r.Path, func(t *testing.T) {
			allocs := testing.AllocsPerRun(100, func() { ix.Decide(&r) })
			if allocs != 0 {
				t.Errorf("Decide allocations: got %v, want 0", allocs)
			}
			// The data path builds a Request on its stack for each
			// decision: Decide must not move it to the heap.
			allocs = testing.AllocsPerRun(100, func() {
				req := policy.Request{Source: r.Source, Method: r.Method, Host: r.Host, Port: r.Port, Path: r.Path, Headers: r.Headers}
				ix.Decide(&req)
			})
			if allocs != 0 {
				t.Errorf("Decide of a fresh Request: got %v allocations, want 0 (does Decide leak its *Request?)", allocs)
			}
		})
	}
}

// BenchmarkDecide decides benchRequests in turn for benchWorkload in
// meshes of n policies (the first ten benchSelecting's, for n=10). ns/op
// is the mean of one decision.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			ix, err := policy.Compile(benchWorkload(), benchMesh(n))
			if err != nil {
				b.Fatal(err)
			}
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

// BenchmarkDecideCondition decides requests that reach a rule with a CEL
// condition (a header comparison, a claim check), in a mesh of 1000
// policies: the cost of building the condition variables once and
// evaluating.
func BenchmarkDecideCondition(b *testing.B) {
	mesh := append(benchMesh(1000),
		pol("allow-prod-header", "bench", config.ActionAllow,
			config.Rule{To: to(list("GET"), list("/cel/header")), When: list("request.headers['x-env'] == 'prod'")}),
		pol("allow-admin-claim", "bench", config.ActionAllow,
			config.Rule{To: to(list("GET"), list("/cel/claims")), When: list("'admins' in jwt.claims.groups", "time.now.getHours('UTC') < 24")}),
	)
	ix, err := policy.Compile(benchWorkload(), mesh)
	if err != nil {
		b.Fatal(err)
	}
	src := policy.Source{ID: idWeb, Services: list("default/web"), Principal: "https://idp.example.com/alice",
		Claims: map[string]any{"groups": []any{"dev", "admins"}}}
	for _, tc := range []struct {
		name string
		req  policy.Request
	}{
		{"header", policy.Request{Source: src, Method: "GET", Path: "/cel/header", Headers: http.Header{"X-Env": {"prod"}, "Accept": {"*/*"}}, Time: time.Unix(1e9, 0)}},
		{"claims", policy.Request{Source: src, Method: "GET", Path: "/cel/claims", Time: time.Unix(1e9, 0)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if d := ix.Decide(&tc.req); !d.Allow {
				b.Fatalf("Decide: got %v, want an allow", d)
			}
			b.ReportAllocs()
			for b.Loop() {
				ix.Decide(&tc.req)
			}
		})
	}
}

// BenchmarkCompile compiles benchWorkload's Index from meshes of n
// policies.
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			mesh := benchMesh(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := policy.Compile(benchWorkload(), mesh); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSet measures indexing a mesh of n policies (new), then finding
// (selecting) and compiling (compile) one workload's policies from the Set.
func BenchmarkSet(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		mesh := benchMesh(n)
		b.Run(fmt.Sprintf("policies=%d/new", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				policy.NewSet(mesh)
			}
		})
		set := policy.NewSet(mesh)
		b.Run(fmt.Sprintf("policies=%d/selecting", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.Selecting(benchWorkload())
			}
		})
		b.Run(fmt.Sprintf("policies=%d/compile", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := set.Compile(benchWorkload()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("policies=%d/for-caller", n), func(b *testing.B) {
			caller := policy.Source{ID: idWeb, Services: list("default/web")}
			b.ReportAllocs()
			for b.Loop() {
				set.ForCaller(benchService(), caller)
			}
		})
	}
}
