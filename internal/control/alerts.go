package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/run"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// knownEdgesPrefix is the store prefix of the edges the NewEdge detector
// knows: one key per edge, named by a digest of it.
const knownEdgesPrefix = "/alerts/edges/"

// saveEdgesBatch bounds the keys written by one transaction.
const saveEdgesBatch = 256

// newAlerts returns the alert engine of the control plane, with the known
// edges loaded from st, and the task that keeps its rules in step with the
// stored AlertRules and runs it.
func newAlerts(ctx context.Context, st store.Store, resources *resource.Store, reg *registry.Registry,
	metrics *prometheus.Registry, c clock.Clock, logger *slog.Logger) (*alert.Engine, run.Task, error) {
	logger = telemetry.OrDiscard(logger)
	eng, err := alert.New(ctx, alert.Config{
		Clock: c, Logger: logger, Registerer: metrics, Gatherer: metrics,
		Proxies:    registryProxies(reg),
		KnownEdges: storeEdges{st: st},
	})
	if err != nil {
		return nil, nil, err
	}
	w := &alertRuleWatcher{store: st, resources: resources, engine: eng, logger: logger}
	task := func(ctx context.Context) error {
		return run.Group(ctx, eng.Run, w.Run)
	}
	return eng, task, nil
}

// registryProxies lists the registry for the engine.
func registryProxies(reg *registry.Registry) func(context.Context) ([]alert.ProxyState, error) {
	return func(ctx context.Context) ([]alert.ProxyState, error) {
		recs, _, err := reg.Proxies(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]alert.ProxyState, len(recs))
		for i, p := range recs {
			out[i] = alert.ProxyState{
				Namespace: p.Namespace, Instance: p.Instance, Service: p.Service, Identity: p.Identity,
				Connected: p.Connected, SVIDExpiry: p.SVIDExpiry,
				SnapshotVersion: p.SnapshotVersion, AckedVersion: p.AckedVersion,
			}
		}
		return out, nil
	}
}

// alertRuleWatcher loads the AlertRules into the engine, and again after
// every change of one.
type alertRuleWatcher struct {
	store     store.Store
	resources *resource.Store
	engine    *alert.Engine
	logger    *slog.Logger
}

// Run keeps the engine's rules current until ctx is done.
func (w *alertRuleWatcher) Run(ctx context.Context) error {
	prefix := resource.KindPrefix(config.KindAlertRule, "")
	for {
		rev, err := w.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("load alert rules: %w", err)
		}
		events, err := w.store.Watch(ctx, prefix, rev)
		if errors.Is(err, store.ErrCompacted) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch alert rules: %w", err)
		}
	follow:
		for {
			select {
			case <-ctx.Done():
				return nil
			case _, ok := <-events:
				if !ok {
					break follow
				}
				// Drain the burst, then list once.
				for drained := false; !drained; {
					select {
					case _, ok := <-events:
						if !ok {
							break follow
						}
					default:
						drained = true
					}
				}
				if _, err := w.load(ctx); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("load alert rules: %w", err)
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// load lists the AlertRules into the engine and returns the revision read.
func (w *alertRuleWatcher) load(ctx context.Context) (int64, error) {
	objs, rev, err := w.resources.List(ctx, config.KindAlertRule, "")
	if err != nil {
		return 0, err
	}
	rules := make([]*config.AlertRule, 0, len(objs))
	for _, o := range objs {
		if r, ok := o.(*config.AlertRule); ok {
			rules = append(rules, r)
		}
	}
	w.engine.SetRules(rules)
	w.logger.Debug("alert rules loaded", telemetry.KeyCount, len(rules))
	return rev, nil
}

// storeEdges keeps the known edges in the store.
type storeEdges struct{ st store.Store }

var _ alert.EdgeStore = storeEdges{}

// LoadEdges implements alert.EdgeStore.
func (s storeEdges) LoadEdges(ctx context.Context) ([]alert.Edge, error) {
	kvs, _, err := s.st.List(ctx, knownEdgesPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]alert.Edge, 0, len(kvs))
	for _, kv := range kvs {
		var e alert.Edge
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("known edge %s: %w", kv.Key, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// SaveEdges implements alert.EdgeStore, in transactions of at most
// saveEdgesBatch keys.
func (s storeEdges) SaveEdges(ctx context.Context, edges []alert.Edge) error {
	for len(edges) > 0 {
		n := min(len(edges), saveEdgesBatch)
		ops := make([]store.Op, 0, n)
		seen := map[string]bool{}
		for _, e := range edges[:n] {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			k := knownEdgeKey(e)
			if seen[k] {
				continue
			}
			seen[k] = true
			ops = append(ops, store.Op{Key: k, Value: b})
		}
		if _, err := s.st.Txn(ctx, nil, ops); err != nil {
			return fmt.Errorf("save known edges: %w", err)
		}
		edges = edges[n:]
	}
	return nil
}

// knownEdgeKey is the store key of an edge.
func knownEdgeKey(e alert.Edge) string {
	h := sha256.Sum256([]byte(e.Source + "\x00" + e.Destination))
	return knownEdgesPrefix + hex.EncodeToString(h[:16])
}

// alertSource is the admin API's view of the engine's alerts.
func alertSource(eng *alert.Engine, c clock.Clock) admin.AlertSource {
	return func(include func(string) bool, within time.Duration) []*config.Alert {
		var since time.Time
		if within > 0 {
			since = c.Now().Add(-within)
		}
		return eng.Alerts(include, since)
	}
}
