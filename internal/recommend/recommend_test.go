package recommend_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
	"github.com/bulwarkmesh/bulwark/internal/recommend"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const td = "spiffe://bulwark.local/ns/"

// edge builds an observed edge of the default namespace's graph.
func edge(src, dest, method, path string, requests, errs, denied int64) *config.Edge {
	e := &config.Edge{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindEdge},
		Metadata: config.ObjectMeta{Name: "e", Namespace: "default"},
		Status: config.EdgeStatus{
			Destination: dest, Method: method, Path: path,
			Requests: requests, Errors: errs, Denied: denied, MTLS: true,
		},
	}
	if src != "" {
		ns, name, _ := strings.Cut(src, "/")
		e.Status.Source = td + ns + "/sa/" + name
		e.Status.SourceService = src
	}
	return e
}

var (
	windowFrom = time.Date(2026, 11, 23, 17, 0, 0, 0, time.UTC)
	windowTo   = windowFrom.Add(10 * time.Minute)
)

// shopEdges is web and batch calling api and db, a rogue scanning api, an
// egress call, a call from outside the mesh and a failing edge.
func shopEdges() []*config.Edge {
	es := []*config.Edge{
		edge("default/web", "default/api", "GET", "/items/*", 30, 0, 0),
		edge("default/web", "default/api", "GET", "/health", 10, 0, 0),
		edge("default/web", "default/api", "POST", "/items", 5, 1, 0),
		edge("default/web", "default/api", "HEAD", "/health", 2, 0, 0),
		edge("default/web", "default/api", "GET", "/items/*/reviews", 4, 0, 0),
		edge("default/batch", "default/api", "PUT", "/items/*", 3, 0, 0),
		edge("default/batch", "default/api", "DELETE", "/items/*", 2, 2, 0),
		edge("default/web", "default/db", "", "", 7, 0, 0),
		edge("default/web", "api.example.com:443", "GET", "/v1", 3, 0, 0),
		edge("", "default/api", "GET", "/health", 4, 0, 0),
	}
	for i := range 3 {
		es = append(es, edge("default/rogue", "default/api", "GET", fmt.Sprintf("/admin/page%d", i), 50-int64(i), 0, 50-int64(i)))
	}
	// Part of web's orders were denied (a DENY rule on some of them).
	es = append(es, edge("default/web", "default/api", "GET", "/orders/*", 10, 0, 4))
	// web was denied below its allowed prefix: the policy must still deny it.
	es = append(es, edge("default/web", "default/api", "GET", "/items/secret/raw", 6, 0, 6))
	return es
}

// opts are the options of the golden cases.
func opts(mod func(*recommend.Options)) recommend.Options {
	o := recommend.Options{Namespace: "default", From: windowFrom, To: windowTo}
	if mod != nil {
		mod(&o)
	}
	return o
}

func TestRecommendGolden(t *testing.T) {
	static := []*config.Edge{edge("default/web", "default/api", "GET", "/health", 1, 0, 0)}
	for i := range 25 {
		static = append(static, edge("default/web", "default/api", "GET", fmt.Sprintf("/static/f%02d.css", i), 1, 0, 0))
	}
	static = append(static, edge("default/web", "default/api", "POST", "/static/upload", 1, 0, 0))
	tests := []struct {
		name  string
		edges []*config.Edge
		opts  recommend.Options
	}{
		{"shop", shopEdges(), opts(nil)},
		{"shop_dry_run", shopEdges(), opts(func(o *recommend.Options) { o.DryRun = true })},
		{"shop_service_api_include_errors", shopEdges(), opts(func(o *recommend.Options) { o.Service = "api"; o.IncludeErrors = true })},
		{"shop_min_requests", shopEdges(), opts(func(o *recommend.Options) { o.MinRequests = 5 })},
		{"shop_live_requirements", shopEdges(), opts(func(o *recommend.Options) { o.Live = livePolicies(t) })},
		{"static_collapse", static, opts(func(o *recommend.Options) { o.Collapse = 20 })},
		{"static_no_collapse", static, opts(nil)},
		{"root_identifier_skipped", []*config.Edge{
			edge("default/web", "default/api", "GET", "/*", 3, 0, 0),
			edge("default/web", "default/api", "GET", "/ok", 3, 0, 0),
			edge("default/web", "default/api", "GET", "/**", 3, 0, 0),
			edge("default/web", "default/api", "GET", "/a*b", 3, 0, 0),
			edge("default/web", "default/api", "get", "/lower", 3, 0, 0),
			edge("default/web", "default/api", "GET", "/long/"+strings.Repeat("x", 250), 3, 0, 0),
			edge("default/web", "default/api", "GET", "/bad path", 3, 0, 0),
		}, opts(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := recommend.Recommend(tt.edges, tt.opts)
			if err != nil {
				t.Fatalf("Recommend: %v", err)
			}
			got := rec.YAML()
			golden := filepath.Join("testdata", tt.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden file (run with -update): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("YAML differs from %s (-want +got):\n%s", golden, diff)
			}
			roundTrip(t, rec)
		})
	}
}

// roundTrip decodes the YAML, compares it with the policies, and lints it
// as `bulwark policy lint` does: no finding but dry-run infos.
func roundTrip(t *testing.T, rec *recommend.Recommendation) {
	t.Helper()
	objs, err := config.Decode(rec.YAML())
	if err != nil {
		t.Fatalf("decode the YAML: %v", err)
	}
	if got, want := len(objs), len(rec.Policies); got != want {
		t.Fatalf("got %d documents, want %d", got, want)
	}
	var docs []policycheck.Document
	for i, o := range objs {
		pol, ok := o.(*config.AuthorizationPolicy)
		if !ok {
			t.Fatalf("document %d: got %T, want an AuthorizationPolicy", i+1, o)
		}
		if diff := cmp.Diff(rec.Policies[i].Policy, pol); diff != "" {
			t.Errorf("document %d decodes differently (-want +got):\n%s", i+1, diff)
		}
		docs = append(docs, policycheck.Document{File: "recommended.yaml", Index: i + 1, Policy: pol})
	}
	for _, f := range policycheck.Lint(docs) {
		if f.Check != policycheck.CheckDryRun {
			t.Errorf("lint: got %s, want no finding", f)
		}
	}
}

func TestRecommendDeterministic(t *testing.T) {
	want := mustRecommend(t, shopEdges(), opts(nil)).YAML()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		es := shopEdges()
		r.Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
		if got := mustRecommend(t, es, opts(nil)).YAML(); string(got) != string(want) {
			t.Fatalf("shuffle %d: got different output:\n%s\nwant:\n%s", i, got, want)
		}
	}
}

func mustRecommend(t *testing.T, es []*config.Edge, o recommend.Options) *recommend.Recommendation {
	t.Helper()
	rec, err := recommend.Recommend(es, o)
	if err != nil {
		t.Fatalf("Recommend: %v", err)
	}
	return rec
}

func TestRecommendDeniedNeverAllowed(t *testing.T) {
	rec := mustRecommend(t, shopEdges(), opts(nil))
	out := string(rec.YAML())
	for i, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "rogue") && !strings.HasPrefix(line, "#   default/rogue") {
			t.Errorf("line %d names rogue outside the denied list: %q", i+1, line)
		}
	}
	if !strings.Contains(out, "#   default/rogue (spiffe://bulwark.local/ns/default/sa/rogue) -> default/api GET /admin/page0 x50\n") {
		t.Errorf("the denied list lacks rogue's edge:\n%s", out)
	}
	for _, p := range rec.Policies {
		for i, r := range p.Policy.Spec.Rules {
			for _, id := range r.From.Identities {
				if strings.Contains(id, "rogue") {
					t.Errorf("%s rule %d allows %s", p.Policy.Metadata.Name, i, id)
				}
			}
		}
	}
}

func TestRecommendNothing(t *testing.T) {
	tests := []struct {
		name  string
		edges []*config.Edge
		opts  recommend.Options
	}{
		{"no_edges", nil, opts(nil)},
		{"only_denied", []*config.Edge{edge("default/rogue", "default/api", "GET", "/admin", 50, 0, 50)}, opts(nil)},
		{"only_errors", []*config.Edge{edge("default/web", "default/api", "GET", "/x", 5, 5, 0)}, opts(nil)},
		{"only_outside", []*config.Edge{edge("", "default/api", "GET", "/x", 5, 0, 0)}, opts(nil)},
		{"only_egress", []*config.Edge{edge("default/web", "example.com:443", "GET", "/x", 5, 0, 0)}, opts(nil)},
		{"other_service", shopEdges(), opts(func(o *recommend.Options) { o.Service = "nope" })},
		{"other_namespace", shopEdges(), opts(func(o *recommend.Options) { o.Namespace = "shop" })},
		{"below_min_requests", shopEdges(), opts(func(o *recommend.Options) { o.MinRequests = 1000 })},
		{"only_root_identifier", []*config.Edge{edge("default/web", "default/api", "GET", "/*", 5, 0, 0)}, opts(nil)},
		{"bad_counts", []*config.Edge{edge("default/web", "default/api", "GET", "/x", 5, 3, 3)}, opts(nil)},
		{"negative_counts", []*config.Edge{edge("default/web", "default/api", "GET", "/x", -5, 0, 0)}, opts(nil)},
		{"nil_edge", []*config.Edge{nil}, opts(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := recommend.Recommend(tt.edges, tt.opts)
			if !errors.Is(err, recommend.ErrNothingToRecommend) {
				t.Fatalf("got error %v, want ErrNothingToRecommend", err)
			}
			if rec == nil || len(rec.Policies) != 0 {
				t.Fatalf("got %v, want a recommendation without policies", rec)
			}
		})
	}
}

func TestRecommendInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opts recommend.Options
		want string
	}{
		{"no_namespace", recommend.Options{}, "namespace: required"},
		{"bad_namespace", recommend.Options{Namespace: "Bad_NS"}, "namespace:"},
		{"bad_service", recommend.Options{Namespace: "default", Service: "a/b"}, "service:"},
		{"negative_min_requests", recommend.Options{Namespace: "default", MinRequests: -1}, "min-requests:"},
		{"negative_collapse", recommend.Options{Namespace: "default", Collapse: -1}, "collapse:"},
		{"window_backwards", recommend.Options{Namespace: "default", From: windowTo, To: windowFrom}, "window:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := recommend.Recommend(shopEdges(), tt.opts)
			if !errors.Is(err, recommend.ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want ErrInvalidOptions naming %q", err, tt.want)
			}
		})
	}
}

// TestRecommendHostileValues: values a proxy reported cannot change the
// structure of the YAML: line breaks and quotes in paths, identities and
// service names stay inside comments or quoted scalars.
func TestRecommendHostileValues(t *testing.T) {
	es := []*config.Edge{
		edge("default/web", "default/api", "GET", "/ok", 3, 0, 0),
		edge("default/web", "default/api", "GET", "/x\nkind: Role", 3, 0, 0),
		edge("default/web", "default/api", "GET", "/q\"uote'd: [x]", 3, 0, 0),
		edge("default/evil", "default/api", "GET", "/y\n---\napiVersion: x", 3, 0, 3),
	}
	es[3].Status.SourceService = "default/evil\n- from: {identities: [\"*\"]}"
	es = append(es, &config.Edge{Status: config.EdgeStatus{Source: "spiffe://bulwark.local/ns/default/sa/x\n#", Destination: "default/api", Method: "GET", Path: "/z", Requests: 2}})
	rec := mustRecommend(t, es, opts(nil))
	roundTrip(t, rec)
	for i, line := range strings.Split(string(rec.YAML()), "\n") {
		if strings.Contains(line, "evil") && !strings.HasPrefix(line, "#") {
			t.Errorf("line %d: a hostile value escaped its comment: %q", i+1, line)
		}
	}
	var paths []string
	for _, r := range rec.Policies[0].Policy.Spec.Rules {
		paths = append(paths, r.To.Paths...)
	}
	if diff := cmp.Diff([]string{"/ok"}, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
}

func TestPolicyName(t *testing.T) {
	long := strings.Repeat("a", 30) + "-" + strings.Repeat("b", 32)
	tests := []struct{ service, want string }{
		{"api", "recommended-api"},
		{strings.Repeat("s", 51), "recommended-" + strings.Repeat("s", 51)},
		{long, "rec-" + strings.Repeat("a", 30) + "-" + strings.Repeat("b", 19) + "-"},
	}
	for _, tt := range tests {
		t.Run(tt.want[:min(len(tt.want), 20)], func(t *testing.T) {
			got := recommend.PolicyName(tt.service)
			if len(got) > 63 || !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q (%d characters), want %q... of at most 63", got, len(got), tt.want)
			}
			if got != recommend.PolicyName(tt.service) {
				t.Errorf("PolicyName is not stable")
			}
		})
	}
}

// TestRecommendStillAllowedWarns: a denied path that the allowed patterns
// cover and that cannot be excluded without excluding observed traffic is
// flagged in the header.
func TestRecommendStillAllowedWarns(t *testing.T) {
	es := []*config.Edge{
		edge("default/web", "default/api", "GET", "/a/*", 3, 0, 0),
		edge("default/web", "default/api", "GET", "/a/*/c", 3, 0, 0),
		edge("default/web", "default/api", "GET", "/a/*/*", 2, 0, 2), // notPaths "/a/*/*" would exclude /a/*/c
		edge("default/batch", "default/db", "CONNECT", "", 3, 0, 0),
		edge("default/batch", "default/db", "GET", "/admin", 1, 0, 1), // the tunnel rule allows it
	}
	rec := mustRecommend(t, es, opts(nil))
	roundTrip(t, rec)
	var got []string
	for _, p := range rec.Policies {
		for _, o := range p.StillAllowed {
			got = append(got, o.Destination+" "+o.Method+" "+o.Path)
		}
	}
	want := []string{"default/api GET /a/*/*", "default/db GET /admin"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("StillAllowed (-want +got):\n%s", diff)
	}
	if y := string(rec.YAML()); strings.Count(y, "# WARNING: denied but allowed here:") != 2 {
		t.Errorf("got\n%s\nwant two warnings", y)
	}
}

// livePolicies are policies in force: some of their ALLOW rules require
// what the graph does not record.
func livePolicies(t *testing.T) []*config.AuthorizationPolicy {
	t.Helper()
	objs, err := config.Decode([]byte(`
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: ["default/web"], requestPrincipals: ["https://idp.example.com/*"]}
    to: {methods: ["GET"], ports: [8080]}
    when: ["request.headers[?'x-env'].orValue('') == 'prod'"]
  - from: {services: ["default/batch"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - from: {ipBlocks: ["10.0.0.0/8"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: canary, namespace: default}
spec:
  dryRun: true
  rules:
  - when: ["true"]
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: v2-only, namespace: bulwark-system}
spec:
  selector: {labels: {version: v2}}
  rules:
  - from: {namespaces: ["default"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-hosts, namespace: default}
spec:
  selector: {service: db}
  rules:
  - to: {hosts: ["db.default"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: shop}
spec:
  rules:
  - from: {ipBlocks: ["10.0.0.0/8"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	var out []*config.AuthorizationPolicy
	for _, o := range objs {
		out = append(out, o.(*config.AuthorizationPolicy))
	}
	return out
}

// TestRecommendHugeCounts: counts near the limit of int64 saturate instead
// of overflowing into negative numbers.
func TestRecommendHugeCounts(t *testing.T) {
	const huge = int64(1) << 62
	es := []*config.Edge{
		edge("default/web", "default/api", "GET", "/a", huge, 0, 0),
		edge("default/web", "default/api", "GET", "/a", huge, 0, 0),
		edge("default/web", "default/api", "GET", "/b", huge, 0, 0),
		edge("default/batch", "default/api", "GET", "/a", huge, 0, 0),
	}
	rec := mustRecommend(t, es, opts(nil))
	if got := rec.Requests; got <= 0 {
		t.Errorf("got %d requests, want a saturated positive count", got)
	}
	for _, s := range rec.Policies[0].Sources {
		if s.Requests <= 0 {
			t.Errorf("source %s: got %d requests, want positive", s.ID, s.Requests)
		}
	}
}
