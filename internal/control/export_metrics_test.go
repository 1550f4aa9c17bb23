package control

import (
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// ControlMetrics wraps the control plane's metrics.
type ControlMetrics struct{ m *controlMetrics }

// NewControlMetrics is newControlMetrics.
func NewControlMetrics(reg prometheus.Registerer, c clock.Clock) (*ControlMetrics, error) {
	m, err := newControlMetrics(reg, c)
	return &ControlMetrics{m}, err
}

// MeterStream returns stream as Subscribe meters it.
func (m *ControlMetrics) MeterStream(stream apiv1.Control_SubscribeServer) apiv1.Control_SubscribeServer {
	return &meteredStream{Control_SubscribeServer: stream, m: m.m}
}

// GRPCCreds returns creds counted as the gRPC listener's.
func (m *ControlMetrics) GRPCCreds(creds credentials.TransportCredentials) credentials.TransportCredentials {
	return countHandshakes(creds, m.m.handshakeObserver(listenerGRPC, nil))
}

// Attested counts an Attest result.
func (m *ControlMetrics) Attested(err error) { m.m.attested(err) }

// Signed counts a CA signature.
func (m *ControlMetrics) Signed(kind string, err error) { m.m.signed(kind, err) }

// RegisterHub is registerHub.
func RegisterHub(reg prometheus.Registerer, hub *push.Hub) error { return registerHub(reg, hub) }
