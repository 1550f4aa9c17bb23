package control

import (
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// A failed certificate check on a control-plane listener is a failed
// authentication: it goes to the audit log's aggregator with the peer's
// address. A port scan (protocol, eof) or a good handshake does not.
func TestHandshakeObserverAuditsCertificateFailures(t *testing.T) {
	m, err := newControlMetrics(prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	type failure struct{ addr, reason string }
	var got []failure
	observe := m.handshakeObserver(listenerAdmin, func(addr, reason string) { got = append(got, failure{addr, reason}) })
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
	for _, r := range telemetry.HandshakeResults() {
		observe(remote, r)
	}
	want := []failure{
		{"192.0.2.7:40000", "tls handshake: " + telemetry.HandshakeBadCertificate},
		{"192.0.2.7:40000", "tls handshake: " + telemetry.HandshakeUnknownAuthority},
		{"192.0.2.7:40000", "tls handshake: " + telemetry.HandshakeExpired},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(failure{})); diff != "" {
		t.Errorf("audited failures (-want +got):\n%s", diff)
	}
}
