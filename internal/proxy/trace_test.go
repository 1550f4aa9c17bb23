package proxy_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// tracedMesh is newMesh with a tracer provider (every trace sampled,
// spans exported synchronously to spans) and the given redaction and
// logged headers on both engines.
type tracedMesh struct {
	*mesh
	spans *tracetest.InMemoryExporter
}

func newTracedMesh(t *testing.T, sampler sdktrace.Sampler, redactor *telemetry.Redactor, logHeaders []string) *tracedMesh {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	cfg := func(c *proxy.Config) { c.Tracer, c.Redactor, c.LogHeaders = tp, redactor, logHeaders }
	m := &mesh{auth: newAuthority(t)}
	m.apiApp = newApp(t, "default/api")
	m.api = tracedNode(t, m.auth, apiSvc, m.apiApp.addr(), cfg)
	m.apiAddr = m.api.serveInbound(t)
	m.api.apply(t, apiSnapshot(t, m.auth, 1))
	m.web = tracedNode(t, m.auth, webSvc, "", cfg)
	m.web.apply(t, webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()))
	m.outbound = servePlain(t, m.web.engine.Outbound())
	return &tracedMesh{mesh: m, spans: exp}
}

func tracedNode(t testing.TB, a *authority, svc identity.ServiceRef, appAddr string, set func(*proxy.Config)) *node {
	t.Helper()
	n := &node{svc: svc, src: a.svid(t, workloadID(t, svc.Namespace, svc.Name)), log: newLogBuffer(), plog: newLogBuffer()}
	cfg := proxy.Config{
		Service: svc, App: appAddr, SVID: n.src, Bundle: n.src,
		Logger:    slog.New(slog.NewJSONHandler(n.plog, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AccessLog: slog.New(slog.NewJSONHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	set(&cfg)
	e, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(e.Close)
	n.engine = e
	return n
}

// sendVia sends a GET for target to host through the outbound listener
// with the given headers.
func sendVia(t *testing.T, outbound, host, target string, h http.Header) int {
	t.Helper()
	u, _ := url.Parse("http://" + outbound)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, "http://"+host+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func attrs(s tracetest.SpanStub) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

func TestTracingPair(t *testing.T) {
	m := newTracedMesh(t, sdktrace.AlwaysSample(), nil, nil)
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	t.Run("allowed", func(t *testing.T) {
		m.spans.Reset()
		if got := sendVia(t, m.outbound, "api.default", "/public/traced?token=s3cr3t", http.Header{"Traceparent": {parent}}); got != 200 {
			t.Fatalf("status: got %d, want 200", got)
		}
		spans := m.spans.GetSpans()
		if len(spans) != 2 {
			t.Fatalf("got %d spans, want 2 (client, server)", len(spans))
		}
		var client, server tracetest.SpanStub
		for _, s := range spans {
			switch s.SpanKind {
			case trace.SpanKindClient:
				client = s
			case trace.SpanKindServer:
				server = s
			}
		}
		if got, want := client.SpanContext.TraceID().String(), "0af7651916cd43dd8448eb211c80319c"; got != want {
			t.Errorf("client trace id: got %s, want the app's %s", got, want)
		}
		if got, want := client.Parent.SpanID().String(), "b7ad6b7169203331"; got != want {
			t.Errorf("client parent: got %s, want the app's span %s", got, want)
		}
		if server.SpanContext.TraceID() != client.SpanContext.TraceID() || server.Parent.SpanID() != client.SpanContext.SpanID() {
			t.Errorf("server span: got trace %s parent %s, want trace %s parent %s", server.SpanContext.TraceID(), server.Parent.SpanID(),
				client.SpanContext.TraceID(), client.SpanContext.SpanID())
		}
		ca, sa := attrs(client), attrs(server)
		for k, want := range map[string]any{
			"bulwark.source": m.web.id().String(), "bulwark.destination": "default/api", "bulwark.decision": "allow",
			"bulwark.policy": "default/api-allow-web#rule0", "http.response.status_code": int64(200), "url.path": "/public/traced",
			"bulwark.upstream": m.apiAddr, "http.request.method": "GET",
		} {
			if ca[k] != want {
				t.Errorf("client %s: got %v, want %v", k, ca[k], want)
			}
		}
		for k, want := range map[string]any{
			"bulwark.source": m.web.id().String(), "bulwark.destination": "default/api", "bulwark.decision": "allow",
			"bulwark.direction": "inbound",
		} {
			if sa[k] != want {
				t.Errorf("server %s: got %v, want %v", k, sa[k], want)
			}
		}
		// The app gets the server span as its parent.
		reqs := m.apiApp.requests()
		tp := reqs[len(reqs)-1].Header.Get("Traceparent")
		if want := "00-" + server.SpanContext.TraceID().String() + "-" + server.SpanContext.SpanID().String() + "-01"; tp != want {
			t.Errorf("app's traceparent: got %q, want %q", tp, want)
		}
		// The access log lines carry the trace id.
		line := m.web.log.waitFor(t, "the traced request", func(l map[string]any) bool { return l["path"] == "/public/traced" })
		if line["trace_id"] != client.SpanContext.TraceID().String() {
			t.Errorf("trace_id: got %v, want %s", line["trace_id"], client.SpanContext.TraceID())
		}
		for _, s := range spans {
			for _, kv := range s.Attributes {
				if strings.Contains(kv.Value.Emit(), "s3cr3t") || strings.Contains(kv.Value.Emit(), "token") {
					t.Errorf("span attribute %s carries the query: %q", kv.Key, kv.Value.Emit())
				}
			}
		}
	})
	t.Run("denied_inbound", func(t *testing.T) {
		m.spans.Reset()
		if got := sendVia(t, m.outbound, "api.default", "/private", nil); got != 403 {
			t.Fatalf("status: got %d, want 403", got)
		}
		var found bool
		for _, s := range m.spans.GetSpans() {
			if s.SpanKind == trace.SpanKindServer {
				found = true
				a := attrs(s)
				if a["bulwark.decision"] != "deny" || a["http.response.status_code"] != int64(403) || s.Status.Code.String() != "Error" {
					t.Errorf("denied server span: got %v status %v, want decision deny, 403, Error", a, s.Status)
				}
			}
		}
		if !found {
			t.Error("no server span for the denied request")
		}
	})
	t.Run("denied_outbound", func(t *testing.T) {
		m.spans.Reset()
		if got := sendVia(t, m.outbound, "secret.default", "/x", nil); got != 403 {
			t.Fatalf("status: got %d, want 403", got)
		}
		spans := m.spans.GetSpans()
		if len(spans) != 1 || spans[0].SpanKind != trace.SpanKindClient || attrs(spans[0])["bulwark.decision"] != "deny" || spans[0].Status.Code.String() != "Error" {
			t.Errorf("got %+v, want one client span with the denial", spans)
		}
	})
}

// TestTracingUnsampled: a trace that is not sampled records no span, and
// its context still reaches the app, marked not sampled.
func TestTracingUnsampled(t *testing.T) {
	m := newTracedMesh(t, sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0)), nil, nil)
	if got := sendVia(t, m.outbound, "api.default", "/public/unsampled", nil); got != 200 {
		t.Fatalf("status: got %d, want 200", got)
	}
	if spans := m.spans.GetSpans(); len(spans) != 0 {
		t.Errorf("got %d spans, want none", len(spans))
	}
	reqs := m.apiApp.requests()
	if tp := reqs[len(reqs)-1].Header.Get("Traceparent"); !strings.HasSuffix(tp, "-00") {
		t.Errorf("app's traceparent: got %q, want one flagged not sampled", tp)
	}
}

// TestTracingOffPassesTraceparent: without a tracer, the app's
// traceparent reaches the peer's app untouched.
func TestTracingOffPassesTraceparent(t *testing.T) {
	m := newMesh(t)
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if got := sendVia(t, m.outbound, "api.default", "/public/off", http.Header{"Traceparent": {parent}}); got != 200 {
		t.Fatalf("status: got %d, want 200", got)
	}
	reqs := m.apiApp.requests()
	if tp := reqs[len(reqs)-1].Header.Get("Traceparent"); tp != parent {
		t.Errorf("app's traceparent: got %q, want %q", tp, parent)
	}
}

// TestAccessLogRedaction: secrets in headers, the query and the path
// appear in no access log line, process log line or span; the logged
// headers are there, masked where sensitive.
func TestAccessLogRedaction(t *testing.T) {
	red, err := telemetry.NewRedactor([]string{"X-Custom-Secret"}, []string{"magic"})
	if err != nil {
		t.Fatal(err)
	}
	m := newTracedMesh(t, sdktrace.AlwaysSample(), red, []string{"Authorization", "X-Custom-Secret", "X-Tenant", "Cookie"})
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtandoIn0.c2VjcmV0LXNpZ25hdHVyZQ"
	secrets := []string{"hdr-bearer-1", "cookie-val-2", "custom-val-3", "query-tok-4", "magic-val-5", "sUbJwT", jwt}
	h := http.Header{
		"Authorization":   {"Bearer hdr-bearer-1"},
		"Cookie":          {"sid=cookie-val-2"},
		"X-Custom-Secret": {"custom-val-3"},
		"X-Tenant":        {"acme"},
		"X-Request-Id":    {"req-42"},
		"User-Agent":      {"tester/1.0 Bearer " + jwt},
	}
	for _, target := range []string{"/public/r/" + jwt + "?token=query-tok-4&magic=magic-val-5&page=2", "/private/" + jwt + "?token=query-tok-4"} {
		sendVia(t, m.outbound, "api.default", target, h)
	}
	line := m.web.log.waitFor(t, "the allowed request", func(l map[string]any) bool {
		p, _ := l["path"].(string)
		return strings.HasPrefix(p, "/public/r/")
	})
	if got, want := line["path"], "/public/r/"+telemetry.Redacted; got != want {
		t.Errorf("path: got %v, want %q", got, want)
	}
	if got, want := line["query"], "token="+telemetry.Redacted+"&magic="+telemetry.Redacted+"&page=2"; got != want {
		t.Errorf("query: got %v, want %q", got, want)
	}
	if got, want := line["request_id"], "req-42"; got != want {
		t.Errorf("request_id: got %v, want %q", got, want)
	}
	if got, want := line["user_agent"], "tester/1.0 Bearer "+telemetry.Redacted; got != want {
		t.Errorf("user_agent: got %v, want %q", got, want)
	}
	hs, _ := line["headers"].(map[string]any)
	for k, want := range map[string]any{"authorization": telemetry.Redacted, "x-custom-secret": telemetry.Redacted, "cookie": telemetry.Redacted, "x-tenant": "acme"} {
		if hs[k] != want {
			t.Errorf("headers[%s]: got %v, want %v", k, hs[k], want)
		}
	}
	m.web.log.waitFor(t, "the denied request", func(l map[string]any) bool { return l["status"] == 403.0 })
	var all bytes.Buffer
	for _, n := range []*node{m.web, m.api} {
		all.WriteString(n.log.String())
		all.WriteString(n.plog.String())
	}
	for _, s := range m.spans.GetSpans() {
		all.WriteString(s.Name)
		for _, kv := range s.Attributes {
			all.WriteString(kv.Value.Emit())
		}
		all.WriteString(s.Status.Description)
	}
	for _, s := range secrets {
		if strings.Contains(all.String(), s) {
			t.Errorf("%q appears in a log line or a span:\n%s", s, all.String())
		}
	}
}

// BenchmarkPairTraced is BenchmarkPair with tracing at a 10% sampling
// ratio (spans batched to an exporter that drops them), access logs as
// JSON to io.Discard and metrics registered: the cost of observability
// on the data path, to compare with BenchmarkPair (all of it off).
func BenchmarkPairTraced(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))))
	b.Cleanup(func() { _ = tp.Shutdown(b.Context()) })
	benchPair(b, false, func(c *proxy.Config) {
		c.Tracer = tp
		c.AccessLog = slog.New(slog.NewJSONHandler(io.Discard, nil))
		c.Metrics = prometheus.NewRegistry()
	})
}

// BenchmarkPairTracedOnly is BenchmarkPairTraced with tracing alone.
func BenchmarkPairTracedOnly(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))))
	b.Cleanup(func() { _ = tp.Shutdown(b.Context()) })
	benchPair(b, false, func(c *proxy.Config) { c.Tracer = tp })
}
