package proxy_test

import (
	"crypto/tls"
	"io"
	"net"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// serviceMesh is shop/web calling default/api (apiSnapshot, webSnapshot),
// both engines with their metrics on a registry.
type serviceMesh struct {
	auth     *authority
	api, web *watchedNode
	apiAddr  string
	outbound string
}

func newServiceMesh(t *testing.T) *serviceMesh {
	t.Helper()
	m := &serviceMesh{auth: newAuthority(t)}
	apiApp := newApp(t, "default/api")
	m.api = newWatchedNode(t, m.auth, apiSvc, apiApp.addr())
	m.apiAddr = m.api.serveInbound(t)
	m.api.apply(t, apiSnapshot(t, m.auth, 1))
	m.web = newWatchedNode(t, m.auth, webSvc, "")
	m.web.apply(t, webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()))
	m.outbound = servePlain(t, m.web.engine.Outbound())
	return m
}

// series returns the label sets of name's series on reg, each as
// "k=v,k=v" in label order, with their counter value (or histogram
// sample count).
func series(t testing.TB, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var key string
			for i, lp := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += lp.GetName() + "=" + lp.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				out[key] = float64(h.GetSampleCount())
			} else {
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// labelValues returns the sorted distinct values of label in name's series.
func labelValues(t testing.TB, reg *prometheus.Registry, name, label string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && !slices.Contains(out, lp.GetValue()) {
					out = append(out, lp.GetValue())
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestServiceRequestMetrics: every request the engines answer counts by
// direction, source and destination service, method class, status class
// and gRPC status, and its latency by direction and destination.
func TestServiceRequestMetrics(t *testing.T) {
	m := newServiceMesh(t)
	for _, tt := range []struct {
		name, req string
		want      int
	}{
		{name: "allowed", req: "GET /public/a HTTP/1.1\r\nHost: api.default", want: 200},
		{name: "allowed_again", req: "GET /public/b HTTP/1.1\r\nHost: api.default", want: 200},
		{name: "caller_denies_post", req: "POST /public/a HTTP/1.1\r\nHost: api.default\r\nContent-Length: 0", want: 403},
		{name: "callee_denies_private", req: "GET /private HTTP/1.1\r\nHost: api.default", want: 403},
		{name: "extension_method", req: "PROPFIND /public/a HTTP/1.1\r\nHost: api.default", want: 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := plainRaw(t, m.outbound, tt.req+"\r\nConnection: close\r\n\r\n"); got.status != tt.want {
				t.Fatalf("got %d %q, want %d", got.status, got.body, tt.want)
			}
		})
	}
	t.Run("web", func(t *testing.T) {
		want := map[string]float64{
			"code_class=2xx,destination=default/api,direction=outbound,grpc_status=,method=GET,source=shop/web":   2,
			"code_class=4xx,destination=default/api,direction=outbound,grpc_status=,method=GET,source=shop/web":   1,
			"code_class=4xx,destination=default/api,direction=outbound,grpc_status=,method=POST,source=shop/web":  1,
			"code_class=4xx,destination=default/api,direction=outbound,grpc_status=,method=other,source=shop/web": 1,
		}
		if diff := cmp.Diff(want, series(t, m.web.reg, "bulwark_service_requests_total")); diff != "" {
			t.Errorf("bulwark_service_requests_total (-want +got):\n%s", diff)
		}
	})
	t.Run("api", func(t *testing.T) {
		want := map[string]float64{
			"code_class=2xx,destination=default/api,direction=inbound,grpc_status=,method=GET,source=shop/web": 2,
			"code_class=4xx,destination=default/api,direction=inbound,grpc_status=,method=GET,source=shop/web": 1,
		}
		if diff := cmp.Diff(want, series(t, m.api.reg, "bulwark_service_requests_total")); diff != "" {
			t.Errorf("bulwark_service_requests_total (-want +got):\n%s", diff)
		}
	})
	t.Run("latency", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			reg  *prometheus.Registry
			want map[string]float64
		}{
			{"web", m.web.reg, map[string]float64{"destination=default/api,direction=outbound": 5}},
			{"api", m.api.reg, map[string]float64{"destination=default/api,direction=inbound": 3}},
		} {
			if diff := cmp.Diff(tt.want, series(t, tt.reg, "bulwark_request_duration_seconds")); diff != "" {
				t.Errorf("%s: bulwark_request_duration_seconds sample counts (-want +got):\n%s", tt.name, diff)
			}
		}
	})
	t.Run("buckets", func(t *testing.T) {
		mfs, err := m.web.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got []float64
		for _, mf := range mfs {
			if mf.GetName() == "bulwark_request_duration_seconds" {
				for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
					got = append(got, b.GetUpperBound()*1000)
				}
			}
		}
		want := telemetry.LatencyBucketsMS()
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })); diff != "" {
			t.Errorf("bucket bounds in ms (-want +got):\n%s", diff)
		}
	})
}

// TestServiceMetricsLabelsBounded: what a request says (its Host, an
// identity header, its method) never becomes a label value: only services
// of the snapshot, "unknown" and "egress".
func TestServiceMetricsLabelsBounded(t *testing.T) {
	m := newServiceMesh(t)
	forged := "X-Forwarded-Client-Cert: By=spiffe://bulwark.local/ns/default/sa/api;URI=spiffe://bulwark.local/ns/evil/sa/mallory\r\n" +
		"X-Bulwark-Source: evil/mallory\r\nForwarded: for=evil\r\n"
	reqs := []struct {
		name, req string
		want      int
	}{
		{name: "forged_identity_headers", req: "GET /public/a HTTP/1.1\r\nHost: api.default\r\n" + forged, want: 200},
		{name: "host_outside_mesh", req: "GET /x HTTP/1.1\r\nHost: attacker-chosen-1.example.com", want: 403},
		{name: "other_host_outside_mesh", req: "GET /x HTTP/1.1\r\nHost: attacker-chosen-2.example.com", want: 403},
		{name: "unknown_service", req: "GET /x HTTP/1.1\r\nHost: nosuch.default", want: 503},
		{name: "unknown_service_other_namespace", req: "GET /x HTTP/1.1\r\nHost: random-42.shop", want: 503},
		{name: "bad_host", req: "GET /x HTTP/1.1\r\nHost: [::1", want: 400},
		{name: "existing_not_callable", req: "GET /x HTTP/1.1\r\nHost: secret.default", want: 403},
	}
	for _, tt := range reqs {
		t.Run(tt.name, func(t *testing.T) {
			if got := plainRaw(t, m.outbound, tt.req+"\r\nConnection: close\r\n\r\n"); got.status != tt.want {
				t.Fatalf("got %d %q, want %d", got.status, got.body, tt.want)
			}
		})
	}
	// A peer presenting its own SVID directly, with forged headers.
	resp := mtlsH2(t, m.apiAddr, m.web.src, m.api.id(), rawH2{fields: apiFields("GET", "/public/direct", [2]string{"x-forwarded-client-cert", "URI=spiffe://bulwark.local/ns/evil/sa/mallory"})})
	if resp.status != 200 {
		t.Fatalf("direct request: got %d, want 200", resp.status)
	}
	for _, tt := range []struct {
		name, label string
		reg         *prometheus.Registry
		want        []string
	}{
		{"web_source", "source", m.web.reg, []string{"shop/web"}},
		{"web_destination", "destination", m.web.reg, []string{"default/api", "default/secret", "egress", "unknown"}},
		{"api_source", "source", m.api.reg, []string{"shop/web"}},
		{"api_destination", "destination", m.api.reg, []string{"default/api"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, labelValues(t, tt.reg, "bulwark_service_requests_total", tt.label)); diff != "" {
				t.Errorf("%s values (-want +got):\n%s", tt.label, diff)
			}
		})
	}
}

// TestServiceMetricsUnknownPeer: a caller whose identity serves no service
// of the callee's snapshot counts as source "unknown", not as its SPIFFE
// ID.
func TestServiceMetricsUnknownPeer(t *testing.T) {
	m := newServiceMesh(t)
	stranger := m.auth.svid(t, workloadID(t, "evil", "mallory"))
	resp := mtlsH2(t, m.apiAddr, stranger, m.api.id(), rawH2{fields: apiFields("GET", "/public/a")})
	if resp.status != 403 {
		t.Fatalf("got %d, want 403", resp.status)
	}
	if diff := cmp.Diff([]string{"unknown"}, labelValues(t, m.api.reg, "bulwark_service_requests_total", "source")); diff != "" {
		t.Errorf("source values (-want +got):\n%s", diff)
	}
}

// TestServiceMetricsDepartedService: a service's series are deleted when
// it leaves the snapshot, and a request naming it afterwards counts as
// unknown.
func TestServiceMetricsDepartedService(t *testing.T) {
	m := newServiceMesh(t)
	if got := plainRaw(t, m.outbound, "GET /public/a HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"); got.status != 200 {
		t.Fatalf("got %d, want 200", got.status)
	}
	m.web.apply(t, &apiv1.Snapshot{
		Version: 2, TrustBundle: m.auth.rootDER(), Inbound: &apiv1.Inbound{}, Services: []string{"default/other", "shop/web"},
	})
	if got := plainRaw(t, m.outbound, "GET /public/a HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"); got.status != 503 {
		t.Fatalf("after removal: got %d, want 503", got.status)
	}
	for _, name := range []string{"bulwark_service_requests_total", "bulwark_request_duration_seconds"} {
		if diff := cmp.Diff([]string{"unknown"}, labelValues(t, m.web.reg, name, "destination")); diff != "" {
			t.Errorf("%s destination values (-want +got):\n%s", name, diff)
		}
	}
}

// handshakeCount returns bulwark_tls_handshakes_total{direction, result}.
func handshakeCount(t testing.TB, reg *prometheus.Registry, direction, result string) float64 {
	t.Helper()
	return counter(t, reg, "bulwark_tls_handshakes_total", map[string]string{"direction": direction, "result": result})
}

// readToEnd reads c until the server closes it (or fails it), so that
// the server has recorded the handshake's result.
func readToEnd(t testing.TB, c net.Conn) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, c)
}

// TestHandshakeMetricsInbound: each way a handshake with the inbound
// listener fails counts under its reason, and a good one as ok.
func TestHandshakeMetricsInbound(t *testing.T) {
	m := newServiceMesh(t)
	other := newAuthority(t)
	tests := []struct {
		name string
		want string
		try  func(t *testing.T)
	}{
		{name: "ok", want: telemetry.HandshakeOK, try: func(t *testing.T) {
			if got := plainRaw(t, m.outbound, "GET /public/a HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"); got.status != 200 {
				t.Fatalf("got %d, want 200", got.status)
			}
		}},
		{name: "no_certificate", want: telemetry.HandshakeNoCertificate, try: func(t *testing.T) {
			c, err := tls.Dial("tcp", m.apiAddr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{mtls.ProtoH2}, MinVersion: tls.VersionTLS13})
			if err != nil {
				t.Fatalf("dial: %v", err) // TLS 1.3: the client finishes first
			}
			defer c.Close()
			readToEnd(t, c)
		}},
		{name: "unknown_authority", want: telemetry.HandshakeUnknownAuthority, try: func(t *testing.T) {
			src := other.svid(t, workloadID(t, "shop", "web"))
			cfg := mtls.ClientConfig(src, m.web.src, m.api.id())
			c, err := tls.Dial("tcp", m.apiAddr, cfg)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			readToEnd(t, c)
		}},
		{name: "not_tls", want: telemetry.HandshakeProtocol, try: func(t *testing.T) {
			c, err := net.Dial("tcp", m.apiAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.default\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			readToEnd(t, c)
		}},
		{name: "no_alpn", want: telemetry.HandshakeProtocol, try: func(t *testing.T) {
			cfg := mtls.ClientConfig(m.web.src, m.web.src, m.api.id())
			cfg.NextProtos = []string{"http/1.1"}
			c, err := tls.Dial("tcp", m.apiAddr, cfg)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			readToEnd(t, c)
		}},
		{name: "eof", want: telemetry.HandshakeEOF, try: func(t *testing.T) {
			c, err := net.Dial("tcp", m.apiAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			readToEnd(t, c)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := handshakeCount(t, m.api.reg, "inbound", tt.want)
			tt.try(t)
			if got := handshakeCount(t, m.api.reg, "inbound", tt.want); got != before+1 {
				t.Errorf("inbound %s: got %v, want %v", tt.want, got, before+1)
			}
		})
	}
	// Every result exists from the start.
	if got := len(series(t, m.api.reg, "bulwark_tls_handshakes_total")); got != 2*len(telemetry.HandshakeResults()) {
		t.Errorf("handshake series: got %d, want %d", got, 2*len(telemetry.HandshakeResults()))
	}
}

// TestHandshakeMetricsOutbound: a dial to a peer that presents another
// identity than the snapshot names counts as bad_certificate on the
// caller; a good one as ok.
func TestHandshakeMetricsOutbound(t *testing.T) {
	m := newServiceMesh(t)
	if got := plainRaw(t, m.outbound, "GET /public/a HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"); got.status != 200 {
		t.Fatalf("got %d, want 200", got.status)
	}
	if got := handshakeCount(t, m.web.reg, "outbound", telemetry.HandshakeOK); got != 1 {
		t.Errorf("outbound ok: got %v, want 1", got)
	}
	m.web.apply(t, webSnapshot(t, m.auth, 2, m.apiAddr, workloadID(t, "default", "impostor")))
	if got := plainRaw(t, m.outbound, "GET /public/a HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n"); got.status != 503 {
		t.Fatalf("wrong identity: got %d, want 503", got.status)
	}
	if got := handshakeCount(t, m.web.reg, "outbound", telemetry.HandshakeBadCertificate); got < 1 {
		t.Errorf("outbound bad_certificate: got %v, want >= 1", got)
	}
}
