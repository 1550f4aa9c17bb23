package control_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// ctlGathered returns the series of name on reg: "label=value,..." -> the
// counter's or gauge's value, or the histogram's sample count and sum.
func ctlGathered(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for i, lp := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += lp.GetName() + "=" + lp.GetValue()
			}
			switch {
			case m.GetHistogram() != nil:
				out[key+"count"] = float64(m.GetHistogram().GetSampleCount())
				out[key+"sum"] = m.GetHistogram().GetSampleSum()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			default:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// fakeStream is the server side of a Subscribe stream: Send records,
// Recv returns the queued messages, then io.EOF.
type fakeStream struct {
	grpc.ServerStream
	in   []*apiv1.SubscribeRequest
	sent []int64
}

func (f *fakeStream) Send(s *apiv1.Snapshot) error {
	f.sent = append(f.sent, s.GetVersion())
	return nil
}

func (f *fakeStream) Recv() (*apiv1.SubscribeRequest, error) {
	if len(f.in) == 0 {
		return nil, io.EOF
	}
	m := f.in[0]
	f.in = f.in[1:]
	return m, nil
}

// TestSnapshotAcks: the first answer to the snapshot last sent counts as
// ack or nack, with the time from its send on the control plane's clock;
// repeated answers and answers to other versions count nothing.
func TestSnapshotAcks(t *testing.T) {
	reg := prometheus.NewRegistry()
	fake := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	m, err := control.NewControlMetrics(reg, fake)
	if err != nil {
		t.Fatal(err)
	}
	raw := &fakeStream{}
	s := m.MeterStream(raw)
	recv := func(req *apiv1.SubscribeRequest) {
		t.Helper()
		raw.in = append(raw.in, req)
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Send(&apiv1.Snapshot{Version: 5}); err != nil {
		t.Fatal(err)
	}
	fake.Advance(250 * time.Millisecond)
	recv(ackMsg(5, ""))
	recv(ackMsg(5, "")) // repeated
	recv(ackMsg(4, "")) // stray
	recv(&apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Status{Status: &apiv1.Status{Draining: true}}})
	if err := s.Send(&apiv1.Snapshot{Version: 6}); err != nil {
		t.Fatal(err)
	}
	fake.Advance(2 * time.Second)
	recv(ackMsg(6, "bad snapshot"))
	recv(ackMsg(6, "bad snapshot"))
	if diff := cmp.Diff(map[string]float64{"result=ack": 1, "result=nack": 1}, ctlGathered(t, reg, "bulwark_snapshot_acks_total")); diff != "" {
		t.Errorf("bulwark_snapshot_acks_total (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"count": 2, "sum": 2.25}, ctlGathered(t, reg, "bulwark_snapshot_push_duration_seconds")); diff != "" {
		t.Errorf("bulwark_snapshot_push_duration_seconds (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int64{5, 6}, raw.sent); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
}

// TestAttestationsAndSignatures: Attest results by class, CA signatures
// by kind and result; every series exists from the start.
func TestAttestationsAndSignatures(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := control.NewControlMetrics(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Attested(nil)
	m.Attested(status.Error(codes.PermissionDenied, "join token rejected"))
	m.Attested(status.Error(codes.InvalidArgument, "csr"))
	m.Attested(status.Error(codes.Internal, "attest: internal error"))
	m.Attested(status.Error(codes.Unavailable, "audit log unavailable"))
	m.Signed("x509_svid", nil)
	m.Signed("jwt_svid", errors.New("key manager down"))
	m.Signed("not_a_kind", nil) // ignored: the set is fixed
	if diff := cmp.Diff(map[string]float64{"result=ok": 1, "result=denied": 2, "result=error": 2}, ctlGathered(t, reg, "bulwark_attestations_total")); diff != "" {
		t.Errorf("bulwark_attestations_total (-want +got):\n%s", diff)
	}
	want := map[string]float64{}
	for _, k := range []string{"x509_svid", "jwt_svid", "intermediate", "root"} {
		want["kind="+k+",result=ok"], want["kind="+k+",result=error"] = 0, 0
	}
	want["kind=x509_svid,result=ok"], want["kind=jwt_svid,result=error"] = 1, 1
	if diff := cmp.Diff(want, ctlGathered(t, reg, "bulwark_ca_signatures_total")); diff != "" {
		t.Errorf("bulwark_ca_signatures_total (-want +got):\n%s", diff)
	}
}

// TestHubGauges: the mesh state's version and the subscribed proxies, read
// at scrape time.
func TestHubGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	hub := push.NewHub(nil)
	if err := control.RegisterHub(reg, hub); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]float64{"": 0}, ctlGathered(t, reg, "bulwark_snapshot_version")); diff != "" {
		t.Errorf("before the first state (-want +got):\n%s", diff)
	}
	st := &push.State{Revision: 42}
	st.Seal()
	hub.SetState(st)
	if diff := cmp.Diff(map[string]float64{"": 42}, ctlGathered(t, reg, "bulwark_snapshot_version")); diff != "" {
		t.Errorf("bulwark_snapshot_version (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"": 0}, ctlGathered(t, reg, "bulwark_connected_proxies")); diff != "" {
		t.Errorf("bulwark_connected_proxies (-want +got):\n%s", diff)
	}
}

// TestGRPCHandshakes: the gRPC listener's handshakes count by result, on
// real sockets.
func TestGRPCHandshakes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := control.NewControlMetrics(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(nil) // for its certificate only
	srv.StartTLS()
	cert := srv.TLS.Certificates
	srv.Close()
	creds := m.GRPCCreds(credentials.NewTLS(&tls.Config{Certificates: cert, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan struct{}, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if conn, _, err := creds.ServerHandshake(c); err == nil {
					conn.Close()
				} else {
					c.Close()
				}
				done <- struct{}{}
			}()
		}
	}()
	tests := []struct {
		name string
		want string
		try  func(c net.Conn)
	}{
		{name: "ok", want: telemetry.HandshakeOK, try: func(c net.Conn) {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			_ = tc.Handshake()
		}},
		{name: "not_tls", want: telemetry.HandshakeProtocol, try: func(c net.Conn) {
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
		}},
		{name: "eof", want: telemetry.HandshakeEOF, try: func(c net.Conn) { _ = c.(*net.TCPConn).CloseWrite() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tt.try(c)
			<-done
			got := ctlGathered(t, reg, "bulwark_tls_handshakes_total")["listener=grpc,result="+tt.want]
			if got != 1 {
				t.Errorf("grpc %s: got %v, want 1", tt.want, got)
			}
		})
	}
}
