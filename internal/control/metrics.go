package control

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Listeners of the control plane, the listener label of
// bulwark_tls_handshakes_total.
const (
	listenerGRPC  = "grpc"
	listenerAdmin = "admin"
)

// Values of the result labels of the control plane's counters.
const (
	resultOK     = "ok"
	resultError  = "error"
	resultDenied = "denied"
	resultAck    = "ack"
	resultNack   = "nack"
)

// controlMetrics are the control plane's own metrics (docs/metrics.md):
// snapshot pushes and their answers, attestations, CA signatures and TLS
// handshakes. Every label is a fixed set; every series exists from the
// start. A nil *controlMetrics records nothing.
type controlMetrics struct {
	clock        clock.Clock
	acks         map[string]prometheus.Counter
	push         prometheus.Observer
	attestations map[string]prometheus.Counter
	signatures   map[string]map[string]prometheus.Counter
	handshakes   map[string]map[string]prometheus.Counter
}

// newControlMetrics registers the control plane's metrics on reg.
func newControlMetrics(reg prometheus.Registerer, c clock.Clock) (*controlMetrics, error) {
	acks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_snapshot_acks_total",
		Help: "Answers of proxies to the snapshot last sent on their stream, by result (ack, nack); repeated answers are not counted.",
	}, []string{"result"})
	push := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "bulwark_snapshot_push_duration_seconds",
		Help:    "Time from the start of a snapshot's send to a proxy to the proxy's ACK or NACK of it: delivery, the proxy's compile and apply, and the answer's way back.",
		Buckets: latencyBucketsSeconds(),
	})
	attestations := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_attestations_total",
		Help: "Attest calls, by result: ok (an SVID was issued), denied (join token rejected, bad request), error (the control plane failed).",
	}, []string{"result"})
	signatures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_ca_signatures_total",
		Help: "Signatures of the workload CA and the JWT-SVID authority, by kind (x509_svid, jwt_svid, intermediate, root) and result (ok, error).",
	}, []string{"kind", "result"})
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_tls_handshakes_total",
		Help: "TLS handshakes of the control plane's listeners, by listener (grpc, admin) and result (ok, or a failure reason).",
	}, []string{"listener", "result"})
	for _, col := range []prometheus.Collector{acks, push, attestations, signatures, handshakes} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	m := &controlMetrics{
		clock:        clock.OrReal(c),
		acks:         map[string]prometheus.Counter{},
		push:         push,
		attestations: map[string]prometheus.Counter{},
		signatures:   map[string]map[string]prometheus.Counter{},
		handshakes:   map[string]map[string]prometheus.Counter{},
	}
	for _, r := range []string{resultAck, resultNack} {
		m.acks[r] = acks.WithLabelValues(r)
	}
	for _, r := range []string{resultOK, resultDenied, resultError} {
		m.attestations[r] = attestations.WithLabelValues(r)
	}
	for _, k := range ca.SignatureKinds() {
		m.signatures[k] = map[string]prometheus.Counter{}
		for _, r := range []string{resultOK, resultError} {
			m.signatures[k][r] = signatures.WithLabelValues(k, r)
		}
	}
	for _, l := range []string{listenerGRPC, listenerAdmin} {
		m.handshakes[l] = map[string]prometheus.Counter{}
		for _, r := range telemetry.HandshakeResults() {
			m.handshakes[l][r] = handshakes.WithLabelValues(l, r)
		}
	}
	return m, nil
}

// latencyBucketsSeconds are telemetry.LatencyBucketsMS in seconds.
func latencyBucketsSeconds() []float64 {
	b := telemetry.LatencyBucketsMS()
	for i := range b {
		b[i] /= 1000
	}
	return b
}

// registerHub registers the gauges read from the hub at scrape time: the
// version of the mesh state (every proxy's snapshot is compiled from it)
// and the proxies subscribed.
func registerHub(reg prometheus.Registerer, hub *push.Hub) error {
	version := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bulwark_snapshot_version",
		Help: "Version of the mesh state snapshots are compiled from now (the store revision it was read at; 0 before the first).",
	}, func() float64 {
		if st := hub.State(); st != nil {
			return float64(st.Revision)
		}
		return 0
	})
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bulwark_connected_proxies",
		Help: "Proxies with an open Subscribe stream to this control plane.",
	}, func() float64 { return float64(hub.Subscribers()) })
	for _, col := range []prometheus.Collector{version, connected} {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// signed counts a CA signature (ca.Config.Signed).
func (m *controlMetrics) signed(kind string, err error) {
	if m == nil {
		return
	}
	r := resultOK
	if err != nil {
		r = resultError
	}
	if c := m.signatures[kind][r]; c != nil {
		c.Inc()
	}
}

// handshake counts a TLS handshake of listener.
func (m *controlMetrics) handshake(listener, result string) {
	if m == nil {
		return
	}
	if c := m.handshakes[listener][result]; c != nil {
		c.Inc()
	}
}

// attested counts an Attest call by its error: a refusal of the caller
// (a rejected token, a bad request) is denied, anything else an error.
func (m *controlMetrics) attested(err error) {
	if m == nil {
		return
	}
	r := resultOK
	if err != nil {
		r = resultError
		switch status.Code(err) {
		case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated:
			r = resultDenied
		}
	}
	m.attestations[r].Inc()
}

// countingCreds counts the server handshakes of gRPC transport
// credentials.
type countingCreds struct {
	credentials.TransportCredentials
	observe func(remote net.Addr, result string)
}

// countHandshakes returns creds whose server handshakes are passed to
// observe (which counts them, see handshakeObserver).
func countHandshakes(creds credentials.TransportCredentials, observe func(remote net.Addr, result string)) credentials.TransportCredentials {
	return countingCreds{TransportCredentials: creds, observe: observe}
}

// handshakeObserver returns what to do with each handshake of listener:
// count it, and pass a failed certificate check to failed (the audit log's
// failed authentications), with the peer's address.
func (m *controlMetrics) handshakeObserver(listener string, failed func(addr, reason string)) func(net.Addr, string) {
	return func(remote net.Addr, result string) {
		m.handshake(listener, result)
		switch result {
		case telemetry.HandshakeBadCertificate, telemetry.HandshakeUnknownAuthority, telemetry.HandshakeExpired:
			if failed != nil && remote != nil {
				failed(remote.String(), "tls handshake: "+result)
			}
		}
	}
}

// ServerHandshake does the handshake of the wrapped credentials and counts
// its result.
func (c countingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	c.observe(raw.RemoteAddr(), telemetry.HandshakeResult(err))
	return conn, info, err
}

// Clone returns a copy that counts to the same place.
func (c countingCreds) Clone() credentials.TransportCredentials {
	return countingCreds{TransportCredentials: c.TransportCredentials.Clone(), observe: c.observe}
}

// meteredControl is the Control service with its calls metered: Attest by
// result, and on each Subscribe stream the answers to snapshots and the
// time from a snapshot's send to its answer. It changes nothing in what
// the service does.
type meteredControl struct {
	*controlService
	metrics *controlMetrics
}

// Attest implements apiv1.ControlServer.
func (s meteredControl) Attest(ctx context.Context, req *apiv1.AttestRequest) (*apiv1.AttestResponse, error) {
	resp, err := s.controlService.Attest(ctx, req)
	s.metrics.attested(err)
	return resp, err
}

// Subscribe implements apiv1.ControlServer.
func (s meteredControl) Subscribe(stream apiv1.Control_SubscribeServer) error {
	if s.metrics == nil {
		return s.controlService.Subscribe(stream)
	}
	return s.controlService.Subscribe(&meteredStream{Control_SubscribeServer: stream, m: s.metrics})
}

// sent is a snapshot version and when its send started.
type sent struct {
	version int64
	at      time.Time
}

// meteredStream times each snapshot sent from the start of its send to the
// proxy's answer. As the hub does, it counts only the first answer to the
// version last sent, so a proxy cannot inflate the counters by repeating
// ACKs.
type meteredStream struct {
	apiv1.Control_SubscribeServer
	m *controlMetrics
	// last is the snapshot being (or last) sent; answered the version
	// last answered.
	last     atomic.Pointer[sent]
	answered atomic.Int64
}

// Send sends a snapshot, noting when it started.
func (s *meteredStream) Send(snap *apiv1.Snapshot) error {
	s.last.Store(&sent{version: snap.GetVersion(), at: s.m.clock.Now()})
	return s.Control_SubscribeServer.Send(snap)
}

// Recv receives the proxy's next message, counting an answer to the
// snapshot last sent.
func (s *meteredStream) Recv() (*apiv1.SubscribeRequest, error) {
	req, err := s.Control_SubscribeServer.Recv()
	if err != nil {
		return req, err
	}
	ack := req.GetAck()
	if ack == nil {
		return req, nil
	}
	last := s.last.Load()
	v := ack.GetVersion()
	if last == nil || v != last.version || s.answered.Swap(v) == v {
		return req, nil
	}
	r := resultAck
	if ack.GetError() != "" {
		r = resultNack
	}
	s.m.acks[r].Inc()
	s.m.push.Observe(max(s.m.clock.Now().Sub(last.at), 0).Seconds())
	return req, nil
}
