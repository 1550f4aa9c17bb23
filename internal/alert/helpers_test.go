package alert_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// t0 is the fake clock's start.
var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

const (
	rogueID = "spiffe://bulwark.local/ns/default/sa/rogue"
	webID   = "spiffe://bulwark.local/ns/default/sa/web"
	apiID   = "spiffe://bulwark.local/ns/default/sa/api"
)

// fixture is an Engine on a fake clock with its own metrics registry.
type fixture struct {
	engine *alert.Engine
	clock  *clock.Fake
	reg    *prometheus.Registry
}

func newFixture(t *testing.T, cfg alert.Config) *fixture {
	t.Helper()
	f := &fixture{clock: clock.NewFake(t0), reg: prometheus.NewRegistry()}
	if cfg.Clock == nil {
		cfg.Clock = f.clock
	}
	cfg.Registerer = f.reg
	e, err := alert.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	f.engine = e
	return f
}

// rule decodes an AlertRule document (validated, defaults written) and
// gives it a creation time of t0.
func rule(t *testing.T, ns, name, spec string) *config.AlertRule {
	t.Helper()
	doc := "apiVersion: bulwark.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n" + spec
	o, err := config.DecodeObject([]byte(doc))
	if err != nil {
		t.Fatalf("rule %s: %v", name, err)
	}
	r := o.(*config.AlertRule)
	r.Metadata.CreationTimestamp = t0.Format(time.RFC3339)
	return r
}

// denials is a report of n outbound denials of source to dest.
func denials(source, dest string, n int64) *apiv1.ReportRequest {
	return &apiv1.ReportRequest{Denials: []*apiv1.Denial{{
		Direction: "outbound", Source: source, Destination: dest, Method: "GET", Path: "/x", Rule: -1,
		Reason: "no ALLOW rule matched", Status: 403, Count: n, FirstSeenUnixNano: 1, LastSeenUnixNano: 1,
	}}}
}

// edges is a report of one edge of source to dest.
func edges(source, dest string) *apiv1.ReportRequest {
	return &apiv1.ReportRequest{Edges: []*apiv1.Edge{{Direction: "inbound", Source: source, Destination: dest, Method: "GET", Path: "/", Requests: 1}}}
}

func id(t *testing.T, s string) spiffeid.ID {
	t.Helper()
	v, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// alertsOf returns the alerts of rule ref, oldest first.
func (f *fixture) alertsOf(ref string) []*config.Alert {
	var out []*config.Alert
	all := f.engine.Alerts(nil, time.Time{})
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Status.Rule == ref {
			out = append(out, all[i])
		}
	}
	return out
}

// counter returns the value of a counter series of the fixture's registry.
func (f *fixture) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// waitFor polls cond until it holds or 10 seconds pass: for what webhook
// workers do on their own goroutines.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		<-tick.C
	}
}

// memEdges is an in-memory EdgeStore.
type memEdges struct {
	mu    sync.Mutex
	edges []alert.Edge
	fail  error
}

func (m *memEdges) LoadEdges(context.Context) ([]alert.Edge, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]alert.Edge(nil), m.edges...), nil
}

func (m *memEdges) SaveEdges(_ context.Context, es []alert.Edge) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.edges = append(m.edges, es...)
	return nil
}
