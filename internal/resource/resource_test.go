package resource_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// start is the fake clock's start time.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const kind = config.KindAuthorizationPolicy

type fixture struct {
	store store.Store
	clock *clock.Fake
	res   *resource.Store
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c := clock.NewFake(start)
	return &fixture{store: s, clock: c, res: resource.New(s, c)}
}

func (f *fixture) revision(t testing.TB) int64 {
	t.Helper()
	rev, err := f.store.Txn(context.Background(), nil, nil)
	if err != nil {
		t.Fatalf("read revision: %v", err)
	}
	return rev
}

func (f *fixture) apply(t testing.TB, docs ...string) []resource.Result {
	t.Helper()
	res, err := f.res.Apply(context.Background(), decode(t, docs...))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

// decode decodes and validates YAML documents, as `bulwark apply` does.
func decode(t testing.TB, docs ...string) []config.Object {
	t.Helper()
	objs, err := config.Decode([]byte(strings.Join(docs, "\n---\n")))
	if err != nil {
		t.Fatalf("bad fixture: Decode: %v", err)
	}
	return objs
}

// policy returns an AuthorizationPolicy document selecting service api and
// allowing default/web the methods.
func policy(ns, name string, methods ...string) string {
	nsLine := ""
	if ns != "" {
		nsLine = "\n  namespace: " + ns
	}
	return fmt.Sprintf(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: %s%s
spec:
  selector:
    service: api
  rules:
  - from:
      services: ["default/web"]
    to:
      methods: [%s]
`, name, nsLine, `"`+strings.Join(methods, `", "`)+`"`)
}

// withMeta adds server-set metadata to a policy document, as `bulwark get
// -o yaml` prints it.
func withMeta(doc, resourceVersion, created string) string {
	return strings.Replace(doc, "metadata:\n", fmt.Sprintf("metadata:\n  resourceVersion: %q\n  creationTimestamp: %q\n", resourceVersion, created), 1)
}

func result(ns, name string, o resource.Outcome) resource.Result {
	return resource.Result{Kind: kind, Namespace: ns, Name: name, Outcome: o}
}

// methodsOf returns "ns/name: methods" for each listed policy.
func methodsOf(t testing.TB, objs []config.Object) []string {
	t.Helper()
	var out []string
	for _, o := range objs {
		p, ok := o.(*config.AuthorizationPolicy)
		if !ok {
			t.Fatalf("listed %T, want *config.AuthorizationPolicy", o)
		}
		out = append(out, config.Ref(p)+": "+strings.Join(p.Spec.Rules[0].To.Methods, ","))
	}
	return out
}

func TestApply(t *testing.T) {
	tests := []struct {
		name      string
		initial   []string
		apply     []string
		want      []resource.Result
		wantBump  bool // one store revision more
		wantAfter []string
	}{
		{
			name:      "all_new",
			apply:     []string{policy("", "a", "GET"), policy("default", "b", "GET"), policy("shop", "c", "POST")},
			want:      []resource.Result{result("default", "a", resource.Created), result("default", "b", resource.Created), result("shop", "c", resource.Created)},
			wantBump:  true,
			wantAfter: []string{"default/a: GET", "default/b: GET", "shop/c: POST"},
		},
		{
			name:      "created_configured_unchanged",
			initial:   []string{policy("", "a", "GET"), policy("", "b", "GET")},
			apply:     []string{policy("", "a", "GET"), policy("", "b", "GET", "PUT"), policy("", "c", "DELETE")},
			want:      []resource.Result{result("default", "a", resource.Unchanged), result("default", "b", resource.Configured), result("default", "c", resource.Created)},
			wantBump:  true,
			wantAfter: []string{"default/a: GET", "default/b: GET,PUT", "default/c: DELETE"},
		},
		{
			name:      "reapply_same_documents",
			initial:   []string{policy("", "a", "GET"), policy("", "b", "GET")},
			apply:     []string{policy("", "a", "GET"), policy("", "b", "GET")},
			want:      []resource.Result{result("default", "a", resource.Unchanged), result("default", "b", resource.Unchanged)},
			wantAfter: []string{"default/a: GET", "default/b: GET"},
		},
		{
			name:    "same_content_other_spelling",
			initial: []string{policy("", "a", "GET")},
			apply: []string{`{"apiVersion": "bulwark.dev/v1alpha1", "kind": "AuthorizationPolicy",
			 "metadata": {"namespace": "default", "name": "a"},
			 "spec": {"action": "ALLOW", "rules": [{"to": {"methods": ["GET"]}, "from": {"services": ["default/web"]}}],
			          "selector": {"service": "api"}}}`},
			want:      []resource.Result{result("default", "a", resource.Unchanged)},
			wantAfter: []string{"default/a: GET"},
		},
		{
			name:      "input_server_metadata_ignored",
			initial:   []string{policy("", "a", "GET")},
			apply:     []string{withMeta(policy("", "a", "GET"), "999", "2000-01-01T00:00:00Z")},
			want:      []resource.Result{result("default", "a", resource.Unchanged)},
			wantAfter: []string{"default/a: GET"},
		},
		{
			name:      "same_name_other_namespace_is_another_resource",
			initial:   []string{policy("", "a", "GET")},
			apply:     []string{policy("shop", "a", "POST")},
			want:      []resource.Result{result("shop", "a", resource.Created)},
			wantBump:  true,
			wantAfter: []string{"default/a: GET", "shop/a: POST"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			if len(tt.initial) > 0 {
				f.apply(t, tt.initial...)
			}
			rev := f.revision(t)

			got, err := f.res.Apply(ctx, decode(t, tt.apply...))
			if err != nil {
				t.Fatalf("Apply: got error %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Apply results (-want +got):\n%s", diff)
			}
			wantRev := rev
			if tt.wantBump {
				wantRev++
			}
			if got := f.revision(t); got != wantRev {
				t.Errorf("store revision after Apply: got %d, want %d (one transaction, none when nothing changed)", got, wantRev)
			}
			objs, _, err := f.res.List(ctx, kind, "")
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if diff := cmp.Diff(tt.wantAfter, methodsOf(t, objs)); diff != "" {
				t.Errorf("stored policies (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyServerMetadata(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	created := start.Format(time.RFC3339)

	// A creationTimestamp and resourceVersion in the input are ignored.
	f.apply(t, withMeta(policy("", "a", "GET"), "999", "2000-01-01T00:00:00Z"))
	rev1 := f.revision(t)
	checkMeta(t, f, "a", strconv.FormatInt(rev1, 10), created)

	// An update an hour later keeps the creation time.
	f.clock.Advance(time.Hour)
	got := f.apply(t, withMeta(policy("", "a", "GET", "HEAD"), "1", "2001-01-01T00:00:00Z"))
	if diff := cmp.Diff([]resource.Result{result("default", "a", resource.Configured)}, got); diff != "" {
		t.Errorf("update (-want +got):\n%s", diff)
	}
	rev2 := f.revision(t)
	checkMeta(t, f, "a", strconv.FormatInt(rev2, 10), created)

	// What Get returns applies again as unchanged, like `bulwark get -o
	// yaml | bulwark apply -f -`.
	o, err := f.res.Get(ctx, kind, "default", "a")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	y, err := config.MarshalYAML(o)
	if err != nil {
		t.Fatalf("MarshalYAML: %v", err)
	}
	f.clock.Advance(time.Hour)
	got = f.apply(t, string(y))
	if diff := cmp.Diff([]resource.Result{result("default", "a", resource.Unchanged)}, got); diff != "" {
		t.Errorf("re-apply of Get's output (-want +got):\n%s", diff)
	}
	if got := f.revision(t); got != rev2 {
		t.Errorf("store revision after re-apply: got %d, want %d", got, rev2)
	}
}

// checkMeta checks the server-set metadata of default/name.
func checkMeta(t testing.TB, f *fixture, name, wantRV, wantCreated string) {
	t.Helper()
	o, err := f.res.Get(context.Background(), kind, "default", name)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	m := o.GetMetadata()
	if m.ResourceVersion != wantRV {
		t.Errorf("resourceVersion: got %q, want %q", m.ResourceVersion, wantRV)
	}
	if m.CreationTimestamp != wantCreated {
		t.Errorf("creationTimestamp: got %q, want %q", m.CreationTimestamp, wantCreated)
	}
}

func TestApplyDoesNotModifyInput(t *testing.T) {
	f := newFixture(t)
	objs := decode(t, withMeta(policy("", "a", "GET"), "999", "2000-01-01T00:00:00Z"))
	if _, err := f.res.Apply(context.Background(), objs); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	m := objs[0].GetMetadata()
	if m.ResourceVersion != "999" || m.CreationTimestamp != "2000-01-01T00:00:00Z" {
		t.Errorf("input metadata after Apply: got %q, %q, want the caller's %q, %q", m.ResourceVersion, m.CreationTimestamp, "999", "2000-01-01T00:00:00Z")
	}
}

func TestApplyDuplicate(t *testing.T) {
	tests := []struct {
		name  string
		apply []string
	}{
		{name: "same_document_twice", apply: []string{policy("", "a", "GET"), policy("", "b", "GET"), policy("", "a", "GET")}},
		{name: "same_name_other_spec", apply: []string{policy("", "a", "GET"), policy("", "a", "POST")}},
		{name: "implicit_and_explicit_default_namespace", apply: []string{policy("", "a", "GET"), policy("default", "a", "GET")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			f.apply(t, policy("", "existing", "GET"))
			rev := f.revision(t)

			got, err := f.res.Apply(ctx, decode(t, tt.apply...))
			if !errors.Is(err, resource.ErrDuplicate) {
				t.Fatalf("Apply: got %v, %v, want an error wrapping ErrDuplicate", got, err)
			}
			if got != nil {
				t.Errorf("Apply: got results %v with the error, want nil", got)
			}
			if !strings.Contains(err.Error(), "default/a") {
				t.Errorf("Apply error %q: want it to name default/a", err)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d (nothing written)", got, rev)
			}
			objs, _, err := f.res.List(ctx, kind, "")
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if diff := cmp.Diff([]string{"default/existing: GET"}, methodsOf(t, objs)); diff != "" {
				t.Errorf("stored policies (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyConcurrentDifferentResources(t *testing.T) {
	const n = 8
	ctx := context.Background()
	f := newFixture(t)
	var (
		wg    sync.WaitGroup
		begin = make(chan struct{})
		want  []string
	)
	for i := range n {
		name := fmt.Sprintf("p%d", i)
		want = append(want, "default/"+name+": GET")
		objs := decode(t, policy("", name, "GET"))
		wg.Go(func() {
			<-begin
			got, err := f.res.Apply(ctx, objs)
			if err != nil {
				t.Errorf("Apply %s: %v", name, err)
				return
			}
			if got[0].Outcome != resource.Created {
				t.Errorf("Apply %s: got outcome %q, want %q", name, got[0].Outcome, resource.Created)
			}
		})
	}
	close(begin)
	wg.Wait()
	objs, _, err := f.res.List(ctx, kind, "default")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff(want, methodsOf(t, objs)); diff != "" {
		t.Errorf("stored policies (-want +got):\n%s", diff)
	}
}

func TestApplyConcurrentSameResource(t *testing.T) {
	const n = 8
	ctx := context.Background()
	f := newFixture(t)
	var (
		wg       sync.WaitGroup
		begin    = make(chan struct{})
		mu       sync.Mutex
		outcomes = map[resource.Outcome]int{}
	)
	for i := range n {
		objs := decode(t, policy("", "a", fmt.Sprintf("M%d", i)))
		wg.Go(func() {
			<-begin
			got, err := f.res.Apply(ctx, objs)
			if err != nil {
				t.Errorf("Apply %d: %v", i, err)
				return
			}
			mu.Lock()
			outcomes[got[0].Outcome]++
			mu.Unlock()
		})
	}
	close(begin)
	wg.Wait()
	if outcomes[resource.Created] != 1 {
		t.Errorf("outcomes of %d concurrent applies of one new resource: got %v, want exactly one %q", n, outcomes, resource.Created)
	}
	if got := outcomes[resource.Created] + outcomes[resource.Configured] + outcomes[resource.Unchanged]; got != n {
		t.Errorf("outcomes: got %v, want %d in all", outcomes, n)
	}
}

func TestDelete(t *testing.T) {
	ref := func(ns, name string) resource.Result { return resource.Result{Kind: kind, Namespace: ns, Name: name} }
	tests := []struct {
		name      string
		refs      []resource.Result
		want      []resource.Result
		wantBump  bool
		wantAfter []string
	}{
		{
			name:      "existing_and_missing",
			refs:      []resource.Result{ref("default", "a"), ref("default", "missing"), ref("shop", "c")},
			want:      []resource.Result{result("default", "a", resource.Deleted), result("default", "missing", resource.NotFound), result("shop", "c", resource.Deleted)},
			wantBump:  true,
			wantAfter: []string{"default/b: GET"},
		},
		{
			name:      "all_missing",
			refs:      []resource.Result{ref("default", "missing"), ref("other", "a")},
			want:      []resource.Result{result("default", "missing", resource.NotFound), result("other", "a", resource.NotFound)},
			wantAfter: []string{"default/a: GET", "default/b: GET", "shop/c: GET"},
		},
		{
			name:      "outcome_in_input_ignored",
			refs:      []resource.Result{result("default", "b", resource.NotFound)},
			want:      []resource.Result{result("default", "b", resource.Deleted)},
			wantBump:  true,
			wantAfter: []string{"default/a: GET", "shop/c: GET"},
		},
		{
			name:      "none",
			refs:      nil,
			want:      []resource.Result{},
			wantAfter: []string{"default/a: GET", "default/b: GET", "shop/c: GET"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			f.apply(t, policy("", "a", "GET"), policy("", "b", "GET"), policy("shop", "c", "GET"))
			rev := f.revision(t)

			got, err := f.res.Delete(ctx, tt.refs)
			if err != nil {
				t.Fatalf("Delete: got error %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Delete results (-want +got):\n%s", diff)
			}
			wantRev := rev
			if tt.wantBump {
				wantRev++
			}
			if got := f.revision(t); got != wantRev {
				t.Errorf("store revision after Delete: got %d, want %d", got, wantRev)
			}
			objs, _, err := f.res.List(ctx, kind, "")
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if diff := cmp.Diff(tt.wantAfter, methodsOf(t, objs)); diff != "" {
				t.Errorf("remaining policies (-want +got):\n%s", diff)
			}
		})
	}
}

func TestList(t *testing.T) {
	f := newFixture(t)
	f.apply(t, policy("", "b", "GET"), policy("shop-eu", "eu", "GET"), policy("", "a", "GET"), policy("shop", "x", "GET"))
	f.apply(t, policy("", "b", "POST"))
	revAll := f.revision(t)
	tests := []struct {
		name      string
		kind      string
		namespace string
		want      []string
	}{
		{name: "all_namespaces", kind: kind, namespace: "", want: []string{"default/a: GET", "default/b: POST", "shop/x: GET", "shop-eu/eu: GET"}},
		{name: "default", kind: kind, namespace: "default", want: []string{"default/a: GET", "default/b: POST"}},
		{name: "namespace_is_not_a_prefix", kind: kind, namespace: "shop", want: []string{"shop/x: GET"}},
		{name: "empty_namespace", kind: kind, namespace: "nothing", want: nil},
		{name: "other_kind", kind: config.KindMesh, namespace: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, rev, err := f.res.List(context.Background(), tt.kind, tt.namespace)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if diff := cmp.Diff(tt.want, methodsOf(t, objs)); diff != "" {
				t.Errorf("List(%s, %q) (-want +got):\n%s", tt.kind, tt.namespace, diff)
			}
			if rev != revAll {
				t.Errorf("List: got revision %d, want %d", rev, revAll)
			}
			for _, o := range objs {
				m := o.GetMetadata()
				want := strconv.FormatInt(revAll-1, 10)
				if m.Name == "b" {
					want = strconv.FormatInt(revAll, 10)
				}
				if m.ResourceVersion != want {
					t.Errorf("%s: got resourceVersion %q, want %q", config.Ref(o), m.ResourceVersion, want)
				}
			}
		})
	}
}

func TestGet(t *testing.T) {
	f := newFixture(t)
	f.apply(t, policy("", "a", "GET"))
	tests := []struct {
		name      string
		kind      string
		namespace string
		resource  string
		wantErr   error
	}{
		{name: "present", kind: kind, namespace: "default", resource: "a"},
		{name: "missing_name", kind: kind, namespace: "default", resource: "b", wantErr: store.ErrNotFound},
		{name: "other_namespace", kind: kind, namespace: "shop", resource: "a", wantErr: store.ErrNotFound},
		{name: "other_kind", kind: config.KindMesh, namespace: "default", resource: "a", wantErr: store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := f.res.Get(context.Background(), tt.kind, tt.namespace, tt.resource)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Get: got %v, %v, want an error wrapping %v", o, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Get: got error %v, want nil", err)
			}
			if got, want := config.Ref(o), tt.namespace+"/"+tt.resource; got != want {
				t.Errorf("Get: got %s, want %s", got, want)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	tests := []struct {
		name      string
		key       string
		wantKind  string
		wantNS    string
		wantName  string
		wantValid bool
	}{
		{name: "round_trip", key: resource.Key(kind, "default", "a"), wantKind: kind, wantNS: "default", wantName: "a", wantValid: true},
		{name: "other_prefix", key: "/registry/proxies/default/a", wantValid: false},
		{name: "kind_prefix_only", key: resource.KindPrefix(kind, ""), wantValid: false},
		{name: "empty_name", key: resource.KindPrefix(kind, "default"), wantValid: false},
		{name: "empty_namespace", key: resource.Prefix + kind + "//a", wantValid: false},
		{name: "too_deep", key: resource.Prefix + kind + "/default/a/b", wantValid: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, ns, name, ok := resource.ParseKey(tt.key)
			if ok != tt.wantValid {
				t.Fatalf("ParseKey(%q): got ok %v, want %v", tt.key, ok, tt.wantValid)
			}
			if ok && (k != tt.wantKind || ns != tt.wantNS || name != tt.wantName) {
				t.Errorf("ParseKey(%q): got %q, %q, %q, want %q, %q, %q", tt.key, k, ns, name, tt.wantKind, tt.wantNS, tt.wantName)
			}
		})
	}
}
