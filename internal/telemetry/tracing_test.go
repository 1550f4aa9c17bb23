package telemetry_test

import (
	"context"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

func TestValidateTracing(t *testing.T) {
	tests := []struct {
		name string
		cfg  telemetry.TracingConfig
		want string // "" for valid
	}{
		{"off", telemetry.TracingConfig{}, ""},
		{"on", telemetry.TracingConfig{Endpoint: "collector:4317", Sampling: 0.1}, ""},
		{"sampling_negative", telemetry.TracingConfig{Sampling: -0.1}, "trace-sampling"},
		{"sampling_above_one", telemetry.TracingConfig{Sampling: 1.5}, "trace-sampling"},
		{"sampling_nan", telemetry.TracingConfig{Sampling: math.NaN()}, "trace-sampling"},
		{"no_port", telemetry.TracingConfig{Endpoint: "collector"}, "trace-endpoint"},
		{"no_host", telemetry.TracingConfig{Endpoint: ":4317"}, "trace-endpoint"},
		{"bad_port", telemetry.TracingConfig{Endpoint: "collector:0"}, "trace-endpoint"},
		{"url_not_host_port", telemetry.TracingConfig{Endpoint: "http://collector:4317"}, "trace-endpoint"},
		{"insecure_and_ca", telemetry.TracingConfig{Endpoint: "c:4317", Insecure: true, CAFile: "ca.pem"}, "trace-insecure and trace-ca"},
		{"insecure_without_endpoint", telemetry.TracingConfig{Insecure: true}, "trace-endpoint: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := telemetry.ValidateTracing(tt.cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewTracingCAFile(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"missing": filepath.Join(dir, "nope.pem"), "not_pem": notPEM} {
		t.Run(name, func(t *testing.T) {
			_, err := telemetry.NewTracing(telemetry.TracingConfig{Endpoint: "127.0.0.1:4317", CAFile: file})
			if err == nil || !strings.Contains(err.Error(), "trace-ca") {
				t.Errorf("got %v, want a trace-ca error", err)
			}
		})
	}
}

func TestTracingOff(t *testing.T) {
	tr, err := telemetry.NewTracing(telemetry.TracingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Error("Enabled: got true, want false")
	}
	_, sp := tr.Provider().Tracer("x").Start(context.Background(), "span")
	if sp.IsRecording() {
		t.Error("span of a disabled provider is recording")
	}
	for range 2 {
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: got %v, want nil", err)
		}
	}
}

// collector is an OTLP trace service on a real loopback gRPC server.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu       sync.Mutex
	names    []string
	services []string
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				c.services = append(c.services, kv.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.names = append(c.names, s.GetName())
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// TestTracingExports: spans reach a real OTLP/gRPC collector, at the
// latest when Shutdown flushes them; Shutdown is idempotent.
func TestTracingExports(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	tr, err := telemetry.NewTracing(telemetry.TracingConfig{Endpoint: ln.Addr().String(), Insecure: true, Sampling: 1, Service: "default/api"})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("Enabled: got false, want true")
	}
	_, sp := tr.Provider().Tracer("test").Start(context.Background(), "inbound GET")
	if !sp.IsRecording() {
		t.Fatal("span at sampling 1 is not recording")
	}
	sp.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: got %v, want nil", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.names) != 1 || c.names[0] != "inbound GET" || len(c.services) != 1 || c.services[0] != "api.default" {
		t.Errorf("got spans %v of services %v, want [inbound GET] of [api.default]", c.names, c.services)
	}
}

// TestTracingCollectorDown: a collector that is not there costs the
// spans, not an error on the caller's side.
func TestTracingCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var log strings.Builder
	tr, err := telemetry.NewTracing(telemetry.TracingConfig{Endpoint: addr, Insecure: true, Sampling: 1, Service: "default/api",
		ExportTimeout: 200 * time.Millisecond, Logger: telemetry.NewJSON(&log, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	_, sp := tr.Provider().Tracer("test").Start(context.Background(), "span")
	sp.End()
	// The export fails and is logged; Shutdown itself succeeds.
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: got %v, want nil", err)
	}
	if !strings.Contains(log.String(), "trace export failing") {
		t.Errorf("log: got %q, want the export failure", log.String())
	}
}
