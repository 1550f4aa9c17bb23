package control

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/run"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// NewAlerts is newAlerts.
func NewAlerts(ctx context.Context, st store.Store, resources *resource.Store, reg *registry.Registry,
	metrics *prometheus.Registry, c clock.Clock, logger *slog.Logger) (*alert.Engine, run.Task, error) {
	return newAlerts(ctx, st, resources, reg, metrics, c, logger)
}

// StoreEdges is the store-backed alert.EdgeStore.
func StoreEdges(st store.Store) alert.EdgeStore { return storeEdges{st: st} }
