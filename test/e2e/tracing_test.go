package e2e_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// tracingPolicies: front (and front0) may call mid, except /admin/*; mid
// may call back.
const tracingPolicies = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: front-to-mid, namespace: default}
spec:
  selector: {service: mid}
  rules:
  - from: {services: [default/front, default/front0]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: mid-deny-admin, namespace: default}
spec:
  selector: {service: mid}
  action: DENY
  rules:
  - to: {paths: ["/admin/*"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: mid-to-back, namespace: default}
spec:
  selector: {service: back}
  rules:
  - from: {services: [default/mid]}
`

// tracingForwarder is an app that, for every request, calls back through
// its sidecar (outbound, set once the sidecar runs), forwarding only the
// traceparent and tracestate it received, as an instrumented app would.
func tracingForwarder(t *testing.T, outbound *atomic.Pointer[string]) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ob := outbound.Load()
		if ob == nil {
			http.Error(w, "no sidecar yet", http.StatusServiceUnavailable)
			return
		}
		u, _ := url.Parse("http://" + *ob)
		c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}, Timeout: 10 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, "http://back.default/leaf", nil)
		for _, h := range []string{"Traceparent", "Tracestate"} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		resp, err := c.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(b)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// tracingFlags are the proxy flags that export every trace to r.
func tracingFlags(r *otlpReceiver, sampling string) []string {
	return []string{"--trace-endpoint", r.addr, "--trace-insecure", "--trace-sampling", sampling}
}

// TestTracing: front -> mid -> back, where mid's app only forwards
// traceparent: the four spans (front's CLIENT, mid's SERVER and CLIENT,
// back's SERVER) form one trace, each server span the child of its
// caller's client span, with identities and decisions; a denied request
// has a span saying so; a trace that is not sampled exports nothing.
func TestTracing(t *testing.T) {
	t.Parallel()
	recv := tracingStartReceiver(t)
	m := startControl(t)
	var midOutbound atomic.Pointer[string]
	back := m.startProxy("default/back", startApp(t, "back").addr, tracingFlags(recv, "1")...)
	mid := m.startProxy("default/mid", tracingForwarder(t, &midOutbound), tracingFlags(recv, "1")...)
	midOutbound.Store(&mid.outbound)
	front := m.startClientProxy("default/front", tracingFlags(recv, "1")...)
	front0 := m.startClientProxy("default/front0", tracingFlags(recv, "0")...)
	_ = back
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policies.yaml", tracingPolicies))
	td := m.mustCAStatus().TrustDomain
	frontID := fmt.Sprintf("spiffe://%s/ns/default/sa/front", td)
	midID := fmt.Sprintf("spiffe://%s/ns/default/sa/mid", td)

	eventually(t, 15*time.Second, "policies in force", func() error {
		code, body := tracingGet(front, "/chain")
		if code != http.StatusOK {
			return fmt.Errorf("/chain: %d %s", code, body)
		}
		return nil
	})
	// The trace of one request, started by front's proxy (the test sends
	// no traceparent).
	if code, body := tracingGet(front, "/chain/traced"); code != http.StatusOK {
		t.Fatalf("/chain/traced: got %d %s, want 200", code, body)
	}
	var chain []otlpSpan
	eventually(t, 20*time.Second, "the four spans of /chain/traced", func() error {
		chain = tracingTrace(recv.Spans(), "/chain/traced")
		if len(chain) != 4 {
			return fmt.Errorf("got %d spans of the trace, want 4", len(chain))
		}
		return nil
	})
	byKind := func(service string, kind tracepb.Span_SpanKind) otlpSpan {
		for _, s := range chain {
			if s.Service == service && s.Kind == kind {
				return s
			}
		}
		t.Fatalf("no %v span of %s in %+v", kind, service, chain)
		return otlpSpan{}
	}
	frontClient := byKind("front.default", tracepb.Span_SPAN_KIND_CLIENT)
	midServer := byKind("mid.default", tracepb.Span_SPAN_KIND_SERVER)
	midClient := byKind("mid.default", tracepb.Span_SPAN_KIND_CLIENT)
	backServer := byKind("back.default", tracepb.Span_SPAN_KIND_SERVER)
	for _, link := range []struct {
		name          string
		child, parent otlpSpan
	}{
		{"mid_server_of_front_client", midServer, frontClient},
		{"mid_client_of_mid_server_through_the_app", midClient, midServer},
		{"back_server_of_mid_client", backServer, midClient},
	} {
		if link.child.ParentSpanID != link.parent.SpanID {
			t.Errorf("%s: got parent %s, want %s", link.name, link.child.ParentSpanID, link.parent.SpanID)
		}
	}
	if frontClient.ParentSpanID != "" {
		t.Errorf("front's client span: got parent %q, want a root span", frontClient.ParentSpanID)
	}
	for _, c := range []struct {
		name string
		span otlpSpan
		want map[string]string
	}{
		{"front_client", frontClient, map[string]string{"bulwark.source": frontID, "bulwark.destination": "default/mid",
			"bulwark.decision": "allow", "bulwark.policy": "default/front-to-mid#rule0", "http.response.status_code": "200",
			"bulwark.upstream": mid.inbound, "url.path": "/chain/traced"}},
		{"mid_server", midServer, map[string]string{"bulwark.source": frontID, "bulwark.destination": "default/mid",
			"bulwark.decision": "allow", "bulwark.policy": "default/front-to-mid#rule0", "bulwark.direction": "inbound"}},
		{"back_server", backServer, map[string]string{"bulwark.source": midID, "bulwark.destination": "default/back",
			"bulwark.decision": "allow", "url.path": "/leaf"}},
	} {
		for k, want := range c.want {
			if got := c.span.Attrs[k]; got != want {
				t.Errorf("%s %s: got %q, want %q", c.name, k, got, want)
			}
		}
	}

	t.Run("denied", func(t *testing.T) {
		if code, _ := tracingGet(front, "/admin/users"); code != http.StatusForbidden {
			t.Fatalf("/admin/users: got %d, want 403", code)
		}
		eventually(t, 20*time.Second, "the span of the denial", func() error {
			for _, s := range recv.Spans() {
				if s.Attrs["url.path"] == "/admin/users" && s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
					if s.Attrs["bulwark.decision"] != "deny" || s.Attrs["bulwark.policy"] != "default/mid-deny-admin#rule0" ||
						s.StatusCode != tracepb.Status_STATUS_CODE_ERROR || s.Attrs["bulwark.source"] != frontID {
						return fmt.Errorf("got %+v, want a denial by default/mid-deny-admin with status error", s)
					}
					return nil
				}
			}
			return fmt.Errorf("no span yet")
		})
	})

	t.Run("sampling_zero", func(t *testing.T) {
		if code, body := tracingGet(front0, "/chain/unsampled"); code != http.StatusOK {
			t.Fatalf("/chain/unsampled: got %d %s, want 200", code, body)
		}
		// A sampled request after it: once its spans are in, any span
		// of the unsampled one (exported by the same proxies, earlier)
		// would be too.
		if code, body := tracingGet(front, "/chain/marker"); code != http.StatusOK {
			t.Fatalf("/chain/marker: got %d %s, want 200", code, body)
		}
		eventually(t, 20*time.Second, "the spans of the marker", func() error {
			if n := len(tracingTrace(recv.Spans(), "/chain/marker")); n != 4 {
				return fmt.Errorf("got %d spans, want 4", n)
			}
			return nil
		})
		for _, s := range recv.Spans() {
			if s.Service == "front0.default" || s.Attrs["url.path"] == "/chain/unsampled" {
				t.Errorf("got a span of the unsampled request: %+v", s)
			}
		}
	})
}

// tracingGet sends GET path to mid through the sidecar's outbound
// listener.
func tracingGet(s *sidecar, path string) (int, string) {
	resp, err := s.client().Get("http://mid.default" + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// tracingTrace returns the spans of the trace whose first span has path.
func tracingTrace(spans []otlpSpan, path string) []otlpSpan {
	var id string
	for _, s := range spans {
		if s.Attrs["url.path"] == path {
			id = s.TraceID
			break
		}
	}
	if id == "" {
		return nil
	}
	var out []otlpSpan
	for _, s := range spans {
		if s.TraceID == id {
			out = append(out, s)
		}
	}
	return out
}

// TestTracingBadFlags: bad tracing, redaction and access log flags are
// refused at start, with an error naming the flag.
func TestTracingBadFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"sampling_above_one", []string{"--trace-endpoint", "127.0.0.1:4317", "--trace-sampling", "2"}, "--trace-sampling"},
		{"sampling_negative", []string{"--trace-sampling", "-0.5"}, "--trace-sampling"},
		{"sampling_nan", []string{"--trace-sampling", "NaN"}, "--trace-sampling"},
		{"endpoint_without_port", []string{"--trace-endpoint", "collector"}, "--trace-endpoint"},
		{"endpoint_url", []string{"--trace-endpoint", "http://collector:4317"}, "--trace-endpoint"},
		{"insecure_without_endpoint", []string{"--trace-insecure"}, "--trace-endpoint: required"},
		{"insecure_and_ca", []string{"--trace-endpoint", "127.0.0.1:4317", "--trace-insecure", "--trace-ca", "ca.pem"}, "--trace-insecure and trace-ca"},
		{"redact_header_with_space", []string{"--redact-header", "X Bad"}, "--redact-header"},
		{"redact_query_empty", []string{"--redact-query", ""}, "--redact-query"},
		{"log_header_bad", []string{"--log-header", "Bad:Name"}, "--log-header"},
		{"access_log_empty", []string{"--access-log", ""}, "--access-log"},
		{"access_log_in_missing_dir", []string{"--access-log", filepath.Join(dir, "nope", "access.log")}, "--access-log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"proxy", "--service", "default/x", "--token", "bwjt.x", "--control", "127.0.0.1:1"}, tt.args...)
			_, errOut, code := cli(t, nil, "", args...)
			if code == 0 || !strings.Contains(errOut, tt.want) {
				t.Errorf("got exit %d, stderr %q; want a failure naming %q", code, errOut, tt.want)
			}
		})
	}
}
