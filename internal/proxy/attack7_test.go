package proxy_test

// Attack tests of what the proxy logs, traces and counts of a request: a
// client picks every byte of its request line and headers, and none of the
// secrets it hides there, in any encoding, may come out in the access log,
// the process log, a span or a metric; a hostile traceparent or tracestate
// is not a way to crash the proxy or to push unbounded state through it.

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// attack7Mesh is newTracedMesh with a metrics registry on each engine.
type attack7Mesh struct {
	*mesh
	spans *tracetest.InMemoryExporter
	regs  []*prometheus.Registry
}

func newAttack7Mesh(t *testing.T, sampler sdktrace.Sampler, logHeaders []string) *attack7Mesh {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	am := &attack7Mesh{spans: exp}
	cfg := func(c *proxy.Config) {
		reg := prometheus.NewRegistry()
		am.regs = append(am.regs, reg)
		c.Tracer, c.LogHeaders, c.Metrics = tp, logHeaders, reg
	}
	m := &mesh{auth: newAuthority(t)}
	m.apiApp = newApp(t, "default/api")
	m.api = tracedNode(t, m.auth, apiSvc, m.apiApp.addr(), cfg)
	m.apiAddr = m.api.serveInbound(t)
	m.api.apply(t, apiSnapshot(t, m.auth, 1))
	m.web = tracedNode(t, m.auth, webSvc, "", cfg)
	m.web.apply(t, webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()))
	m.outbound = servePlain(t, m.web.engine.Outbound())
	am.mesh = m
	return am
}

// everything is what the mesh said: both engines' access and process
// logs, every span (name, attributes, events, status) and every metric.
func (m *attack7Mesh) everything(t *testing.T) string {
	t.Helper()
	var all bytes.Buffer
	for _, n := range []*node{m.web, m.api} {
		all.WriteString(n.log.String())
		all.WriteString(n.plog.String())
	}
	for _, s := range m.spans.GetSpans() {
		all.WriteString(s.Name + "\n")
		for _, kv := range s.Attributes {
			all.WriteString(string(kv.Key) + "=" + kv.Value.Emit() + "\n")
		}
		for _, ev := range s.Events {
			all.WriteString(ev.Name + "\n")
			for _, kv := range ev.Attributes {
				all.WriteString(kv.Value.Emit() + "\n")
			}
		}
		all.WriteString(s.Status.Description + "\n")
		all.WriteString(s.SpanContext.TraceState().String() + "\n")
	}
	for _, reg := range m.regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&all, mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	return all.String()
}

// a7pct percent-encodes every byte of s.
func a7pct(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// TestAttackSecretsNowhere sends secrets in every place and encoding a
// client controls, allowed and denied, and looks for them in everything
// the proxies said.
func TestAttackSecretsNowhere(t *testing.T) {
	m := newAttack7Mesh(t, sdktrace.AlwaysSample(), []string{"Authorization", "Cookie", "X-Amz-Security-Token", "Proxy-Authorization"})
	const (
		sig    = "SiGnAtUrE7777"
		jwt    = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9." + sig
		pwd    = "pAsSwOrD7777"
		sess   = "sEsSiOn7777"
		bearer = "bEaReRtOkEn7777"
		cookie = "cOoKiE7777"
		amz    = "aMzToKeN7777"
		long   = "lOnGnAmE7777"
		rid    = "rEqId7777"
	)
	secrets := []string{sig, pwd, sess, bearer, cookie, amz, long, rid}
	double := strings.ReplaceAll(a7pct(jwt), "%", "%25")
	targets := []string{
		"/public/a/" + double,
		"/public/a;jsessionid=" + sess + "/b",
		"/public/a?x=" + double + "&" + strings.Repeat("q", 200) + "_password=" + long,
		"/public/a?Pass%2577ord=" + pwd + "&t=Bearer%2520" + bearer,
		"/public/a?x=" + strings.Repeat("%2541", 2000) + double,
		"/private/" + double + "?token=" + pwd,
		"/private/x;session=" + sess,
	}
	h := http.Header{
		"Authorization":        {"Bearer " + bearer, "bearer\t" + bearer},
		"Proxy-Authorization":  {"Basic " + bearer},
		"Cookie":               {strings.Repeat("a=b; ", 50) + "sid=" + cookie, "x=" + cookie},
		"X-Amz-Security-Token": {amz},
		"X-Request-Id":         {"Bearer " + rid},
		"User-Agent":           {"evil/1.0 (" + jwt + ")\tBEARER  " + bearer},
	}
	for _, target := range targets {
		sendVia(t, m.outbound, "api.default", target, h)
	}
	m.web.log.waitFor(t, "the last request", func(l map[string]any) bool {
		p, _ := l["path"].(string)
		return strings.HasPrefix(p, "/private/x")
	})
	// The requests were served and logged, masked.
	for _, want := range []string{"/public/a/" + telemetry.Redacted, "/public/a;jsessionid=" + telemetry.Redacted + "/b", "/private/x;session=" + telemetry.Redacted} {
		m.web.log.waitFor(t, want, func(l map[string]any) bool { return l["path"] == want })
	}
	all := m.everything(t)
	for _, s := range secrets {
		if strings.Contains(all, s) {
			i := strings.Index(all, s)
			t.Errorf("secret %q appears in what the proxies said: ...%s...", s, all[max(0, i-200):min(len(all), i+60)])
		}
	}
}

// TestAttackBadRequestsLogNoSecret: a request refused before its path is
// trusted (400: an encoded slash, a lower-case method, a bad authority)
// logs no part of its target or headers' secrets.
func TestAttackBadRequestsLogNoSecret(t *testing.T) {
	m := newAttack7Mesh(t, sdktrace.AlwaysSample(), []string{"Authorization"})
	const secret = "bAdReQuEsT7777"
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9." + secret
	for _, req := range []string{
		"GET http://api.default/a%2F" + jwt + "?token=" + secret + " HTTP/1.1\r\nHost: api.default\r\n\r\n",
		"GET http://api.default/a/..%5C" + jwt + " HTTP/1.1\r\nHost: api.default\r\nAuthorization: Bearer " + secret + "\r\n\r\n",
		"get http://api.default/" + jwt + " HTTP/1.1\r\nHost: api.default\r\n\r\n",
		"GET http://" + secret + ":" + secret + "@api.default/ HTTP/1.1\r\nHost: api.default\r\n\r\n",
		"GET http://api.default/ HTTP/1.1\r\nHost: api.default\r\nHost: " + secret + "\r\n\r\n",
	} {
		resp := plainRaw(t, m.outbound, req)
		if resp.status < 400 || resp.status >= 500 {
			t.Errorf("%.60q: got status %d, want a 4xx", req, resp.status)
		}
	}
	if all := m.everything(t); strings.Contains(all, secret) {
		i := strings.Index(all, secret)
		t.Errorf("secret appears in what the proxies said: ...%s...", all[max(0, i-200):min(len(all), i+60)])
	}
}

// TestAttackHostileTraceContext: malformed, huge or crowded traceparent
// and tracestate headers from the app are served, and what the callee's
// app receives is a valid traceparent and a bounded tracestate.
func TestAttackHostileTraceContext(t *testing.T) {
	m := newAttack7Mesh(t, sdktrace.AlwaysSample(), nil)
	crowded := make([]string, 200)
	for i := range crowded {
		crowded[i] = fmt.Sprintf("k%d=v%d", i, i)
	}
	tests := []struct {
		name   string
		parent []string
		state  []string
	}{
		{"garbage", []string{"garbage"}, []string{"=,,=;;"}},
		{"zero_ids", []string{"00-00000000000000000000000000000000-0000000000000000-01"}, nil},
		{"version_ff", []string{"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, nil},
		{"future_version_extra", []string{"cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-" + strings.Repeat("x", 4000)}, nil},
		{"repeated", []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, nil},
		{"huge_state", []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, []string{"a=" + strings.Repeat("b", 30000)}},
		{"crowded_state", []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, []string{strings.Join(crowded, ",")}},
		{"many_state_headers", []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, crowded},
		{"state_injection", []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, []string{"a=b\r\nX-Bulwark-Identity: spiffe://evil"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Traceparent": tt.parent}
			if tt.state != nil && !strings.ContainsAny(strings.Join(tt.state, ""), "\r\n") {
				h["Tracestate"] = tt.state
			}
			before := len(m.apiApp.requests())
			if got := sendVia(t, m.outbound, "api.default", "/public/trace-"+tt.name, h); got != http.StatusOK {
				t.Fatalf("status: got %d, want 200", got)
			}
			reqs := m.apiApp.requests()
			if len(reqs) != before+1 {
				t.Fatalf("the app got %d requests, want 1", len(reqs)-before)
			}
			got := reqs[len(reqs)-1].Header
			if tp := got.Values("Traceparent"); len(tp) != 1 || len(tp[0]) != 55 || !strings.HasPrefix(tp[0], "00-") {
				t.Errorf("traceparent at the app: got %q, want one valid version-00 header", tp)
			}
			if ts := got.Values("Tracestate"); len(ts) > 1 || len(strings.Join(ts, "")) > 512*32 || strings.Count(strings.Join(ts, ""), ",") >= 32 {
				t.Errorf("tracestate at the app: got %d headers, %d bytes, want one of at most 32 members", len(ts), len(strings.Join(ts, "")))
			}
			if got.Get("X-Bulwark-Identity") != "" {
				t.Errorf("an injected identity header reached the app")
			}
		})
	}
	// The raw injection attempt on the wire: a bare LF in a header value is
	// refused by the HTTP parser, and nothing reaches the app.
	before := len(m.apiApp.requests())
	resp := plainRaw(t, m.outbound, "GET http://api.default/public/x HTTP/1.1\r\nHost: api.default\r\nTracestate: a=b\nX-Bulwark-Identity: spiffe://evil\r\n\r\n")
	if resp.status == http.StatusOK {
		for _, r := range m.apiApp.requests()[before:] {
			if r.Header.Get("X-Bulwark-Identity") != "" {
				t.Errorf("an injected identity header reached the app")
			}
		}
	}
}
