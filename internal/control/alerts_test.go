package control_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"

	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

func TestAlertStoreEdges(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	es := control.StoreEdges(st)
	ctx := context.Background()
	var edges []alert.Edge
	for i := 0; i < 300; i++ {
		edges = append(edges, alert.Edge{Source: fmt.Sprintf("spiffe://bulwark.local/ns/default/sa/s%d", i), Destination: "default/api"})
	}
	// More than one transaction's worth, with a duplicate.
	if err := es.SaveEdges(ctx, append(edges, edges[0])); err != nil {
		t.Fatal(err)
	}
	if err := es.SaveEdges(ctx, edges[:10]); err != nil {
		t.Fatal(err)
	}
	got, err := es.LoadEdges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 300 {
		t.Fatalf("got %d edges, want 300", len(got))
	}
	for _, e := range edges {
		if !slices.Contains(got, e) {
			t.Fatalf("edge %v not loaded", e)
		}
	}
}

func TestAlertRulesFollowStore(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg, err := registry.New(registry.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	resources := resource.New(st, nil)
	ctx, cancel := context.WithCancel(context.Background())
	eng, task, err := control.NewAlerts(ctx, st, resources, reg, prometheus.NewRegistry(), clock.Real(), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- task(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("task: %v", err)
		}
	}()
	o, err := config.DecodeObject([]byte("apiVersion: bulwark.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: new, namespace: default}\nspec: {detector: NewEdge}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resources.Apply(ctx, []config.Object{o}); err != nil {
		t.Fatal(err)
	}
	waitRules := func(want []string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !slices.Equal(eng.Rules(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("rules: got %v, want %v", eng.Rules(), want)
			}
			<-tick.C
		}
	}
	waitRules([]string{"default/new"})
	if _, err := resources.Delete(ctx, []resource.Result{{Kind: config.KindAlertRule, Namespace: "default", Name: "new"}}); err != nil {
		t.Fatal(err)
	}
	waitRules([]string{})
}

// TestAlertNewEdgeSurvivesRestart: the engine of a restarted control plane
// (a new engine over the same store) does not fire for an edge the first
// one knew.
func TestAlertNewEdgeSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	rule, err := config.DecodeObject([]byte("apiVersion: bulwark.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: new, namespace: default}\nspec: {detector: NewEdge}\n"))
	if err != nil {
		t.Fatal(err)
	}
	const src = "spiffe://bulwark.local/ns/default/sa/rogue"
	reporter, _ := spiffeid.FromString("spiffe://bulwark.local/ns/default/sa/api")
	report := &apiv1.ReportRequest{Edges: []*apiv1.Edge{{Direction: "inbound", Source: src, Destination: "default/api", Method: "GET", Requests: 1}}}
	life := func() int {
		st, err := bolt.Open(filepath.Join(dir, "bulwark.db"), bolt.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		reg, err := registry.New(registry.Config{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		resources := resource.New(st, nil)
		if _, err := resources.Apply(t.Context(), []config.Object{rule}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		eng, task, err := control.NewAlerts(ctx, st, resources, reg, prometheus.NewRegistry(), clock.Real(), nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- task(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for len(eng.Rules()) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // the watcher loads the rule
		}
		eng.ObserveReport(reporter, report, time.Now())
		n := len(eng.Alerts(nil, time.Time{}))
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := life(); n != 1 {
		t.Fatalf("first life: got %d alerts, want 1", n)
	}
	if n := life(); n != 0 {
		t.Errorf("after a restart: got %d alerts, want 0", n)
	}
}
