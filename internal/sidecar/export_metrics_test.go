package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// CountSnapshots makes s count the snapshots it applies on reg, stamped
// with c.
func (s *Subscriber) CountSnapshots(reg prometheus.Registerer, c clock.Clock) error {
	m, err := newSnapshotMetrics(reg, s.s.engine.Version)
	if err != nil {
		return err
	}
	s.s.snapshots, s.s.clock = m, c
	return nil
}

// EngineMetrics is engineMetrics.
var EngineMetrics = engineMetrics
