package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/credentials"
)

// DefaultTraceSampling is TracingConfig.Sampling's default: one trace in
// a hundred is recorded (Istio's default), unless the caller's traceparent
// says it is sampled.
const DefaultTraceSampling = 0.01

// TracingConfig configures the OpenTelemetry tracer provider of a process.
type TracingConfig struct {
	// Endpoint is the OTLP/gRPC collector, host:port; "" turns tracing off
	// (a no-op provider: spans cost nothing and are not recording).
	Endpoint string
	// Insecure sends spans in plaintext. Default: TLS, verified against
	// CAFile or the system roots.
	Insecure bool
	// CAFile is a PEM file of the roots that verify the collector;
	// "" for the system roots. Not with Insecure.
	CAFile string
	// Sampling is the ratio of new traces recorded, 0 to 1; a request
	// whose parent (the caller's traceparent) is sampled is recorded
	// whatever the ratio (ParentBased(TraceIDRatioBased)). Zero means 0:
	// callers set DefaultTraceSampling.
	Sampling float64
	// Service is the mesh service ("namespace/name") the process serves;
	// it becomes the resource's service.name ("name.namespace") and
	// service.namespace.
	Service string
	// Attributes are more resource attributes (the SPIFFE ID, the
	// instance).
	Attributes []attribute.KeyValue
	// BatchTimeout is how long spans wait to be exported in a batch.
	// Default: 1s.
	BatchTimeout time.Duration
	// ExportTimeout bounds one export to the collector (retries
	// included). Default: 10s.
	ExportTimeout time.Duration
	// Logger receives export failures (a Warn when exporting starts
	// failing, Debug while it keeps failing, Info when it recovers).
	// Default: discard.
	Logger *slog.Logger
}

// Tracing owns a process's tracer provider: the OTLP exporter and batch
// processor when tracing is on, a no-op provider when it is off. Nothing is
// registered globally: components get the provider from the composition
// root.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider
	once     sync.Once
	err      error
}

// maxQueuedSpans bounds the spans waiting for export: past it, spans are
// dropped (the data path never waits for the collector).
const maxQueuedSpans = 2048

// ValidateTracing checks cfg as NewTracing would, naming the bad field.
func ValidateTracing(cfg TracingConfig) error {
	if math.IsNaN(cfg.Sampling) || cfg.Sampling < 0 || cfg.Sampling > 1 {
		return fmt.Errorf("trace-sampling: %v: want a ratio from 0 to 1", cfg.Sampling)
	}
	if cfg.Endpoint == "" {
		if cfg.Insecure || cfg.CAFile != "" {
			return errors.New("trace-endpoint: required with trace-insecure or trace-ca")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(cfg.Endpoint)
	if err != nil || host == "" {
		return fmt.Errorf("trace-endpoint: %q: want host:port", cfg.Endpoint)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("trace-endpoint: %q: the port must be a number from 1 to 65535", cfg.Endpoint)
	}
	if cfg.Insecure && cfg.CAFile != "" {
		return errors.New("trace-insecure and trace-ca: give one")
	}
	return nil
}

// NewTracing returns the tracer provider cfg describes. It does not
// connect: the exporter dials the collector when it first exports, and
// retries; a collector that is down costs dropped spans, never requests.
func NewTracing(cfg TracingConfig) (*Tracing, error) {
	if err := ValidateTracing(cfg); err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		return &Tracing{provider: noop.NewTracerProvider()}, nil
	}
	export := cfg.ExportTimeout
	if export <= 0 {
		export = 10 * time.Second
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint), otlptracegrpc.WithTimeout(export)}
	switch {
	case cfg.Insecure:
		opts = append(opts, otlptracegrpc.WithInsecure())
	default:
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pemBytes, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("trace-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemBytes) {
				return nil, fmt.Errorf("trace-ca: %s: no PEM certificates", cfg.CAFile)
			}
			tc.RootCAs = pool
		}
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tc)))
	}
	exp, err := otlptracegrpc.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("trace exporter: %w", err)
	}
	batch := cfg.BatchTimeout
	if batch <= 0 {
		batch = time.Second
	}
	attrs := append([]attribute.KeyValue{}, cfg.Attributes...)
	if ns, name, ok := cutService(cfg.Service); ok {
		attrs = append(attrs, attribute.String("service.name", name+"."+ns), attribute.String("service.namespace", ns))
	} else {
		attrs = append(attrs, attribute.String("service.name", "bulwark"))
	}
	sdk := sdktrace.NewTracerProvider(
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.Sampling))),
		sdktrace.WithBatcher(&loggingExporter{SpanExporter: exp, logger: OrDiscard(cfg.Logger)},
			sdktrace.WithBatchTimeout(batch), sdktrace.WithMaxQueueSize(maxQueuedSpans), sdktrace.WithExportTimeout(export)),
	)
	return &Tracing{provider: sdk, sdk: sdk}, nil
}

func cutService(s string) (ns, name string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:], i > 0 && i < len(s)-1
		}
	}
	return "", "", false
}

// Provider returns the tracer provider (a no-op one when tracing is off).
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// Shutdown exports the spans still queued, within ctx, and stops the
// exporter. It is idempotent: later calls return the first call's error.
func (t *Tracing) Shutdown(ctx context.Context) error {
	t.once.Do(func() {
		if t.sdk != nil {
			t.err = t.sdk.Shutdown(ctx)
		}
	})
	return t.err
}

// loggingExporter reports export failures to the process log instead of
// OpenTelemetry's global error handler, once per change of state.
type loggingExporter struct {
	sdktrace.SpanExporter
	logger  *slog.Logger
	failing atomic.Bool
}

// ExportSpans exports spans; a failure is logged and swallowed (the spans
// are dropped).
func (e *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	switch {
	case err != nil && !e.failing.Swap(true):
		e.logger.Warn("trace export failing: spans are dropped", KeyCount, len(spans), KeyErr, err)
	case err != nil:
		e.logger.Debug("trace export failed", KeyCount, len(spans), KeyErr, err)
	case e.failing.Swap(false):
		e.logger.Info("trace export recovered")
	}
	return nil
}
