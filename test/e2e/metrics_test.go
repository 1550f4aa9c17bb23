package e2e_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// metricsPolicy lets default/client call default/api.
const metricsPolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: client-to-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/client]}
`

// TestMetricsEndToEnd: with --metrics on every daemon, a request from
// default/client to default/api shows up by service, with its latency and
// the handshakes and snapshots behind it, and the control plane counts its
// pushes, attestations, signatures, store operations and handshakes. A
// request that names a host of its choosing, or forges identity headers,
// adds no label value.
func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	controlMetrics := freeAddr(t)
	m := startControl(t, "--metrics", controlMetrics)
	apiMetrics, clientMetrics := freeAddr(t), freeAddr(t)
	api := m.startProxy("default/api", startApp(t, "api").addr, "--metrics", apiMetrics)
	client := m.startClientProxy("default/client", "--metrics", clientMetrics)
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policy.yaml", metricsPolicy))

	c := client.client()
	eventually(t, 15*time.Second, "policy in force", func() error {
		resp, err := c.Get("http://api.default/hello")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("got %d, want 200", resp.StatusCode)
		}
		return nil
	})
	// Requests whose Host and headers try to mint label values.
	for i := range 3 {
		req, err := http.NewRequest("GET", fmt.Sprintf("http://attacker-%d.example.com/x", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		req, err = http.NewRequest("GET", "http://api.default/forged", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-Client-Cert", fmt.Sprintf("URI=spiffe://evil/ns/x/sa/forged-%d", i))
		req.Header.Set("X-Bulwark-Source", fmt.Sprintf("evil/forged-%d", i))
		if resp, err = c.Do(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// A TLS client without a certificate at api's inbound listener.
	if conn, err := tls.Dial("tcp", api.inbound, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}); err == nil {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, conn)
		conn.Close()
	}
	// And a plain TCP client that says nothing at the gRPC listener.
	if conn, err := net.Dial("tcp", m.grpc); err == nil {
		conn.Close()
	}

	checks := []struct {
		name, addr, series string
		atLeast            float64
	}{
		{"client_requests", clientMetrics, `bulwark_service_requests_total{code_class="2xx",destination="default/api",direction="outbound",grpc_status="",method="GET",source="default/client"}`, 4},
		{"client_egress", clientMetrics, `bulwark_service_requests_total{code_class="4xx",destination="egress",direction="outbound",grpc_status="",method="GET",source="default/client"}`, 3},
		{"api_requests", apiMetrics, `bulwark_service_requests_total{code_class="2xx",destination="default/api",direction="inbound",grpc_status="",method="GET",source="default/client"}`, 4},
		{"client_latency", clientMetrics, `bulwark_request_duration_seconds_count{destination="default/api",direction="outbound"}`, 4},
		{"api_latency", apiMetrics, `bulwark_request_duration_seconds_count{destination="default/api",direction="inbound"}`, 4},
		{"client_dial", clientMetrics, `bulwark_tls_handshakes_total{direction="outbound",result="ok"}`, 1},
		{"api_accept", apiMetrics, `bulwark_tls_handshakes_total{direction="inbound",result="ok"}`, 1},
		{"api_no_certificate", apiMetrics, `bulwark_tls_handshakes_total{direction="inbound",result="no_certificate"}`, 1},
		{"api_snapshot", apiMetrics, `bulwark_snapshot_updates_total{result="applied"}`, 2},
		{"api_version", apiMetrics, `bulwark_snapshot_version`, 1},
		{"control_connected", controlMetrics, `bulwark_connected_proxies`, 2},
		{"control_version", controlMetrics, `bulwark_snapshot_version`, 1},
		{"control_acks", controlMetrics, `bulwark_snapshot_acks_total{result="ack"}`, 4},
		{"control_push", controlMetrics, `bulwark_snapshot_push_duration_seconds_count`, 4},
		{"control_attestations", controlMetrics, `bulwark_attestations_total{result="ok"}`, 2},
		{"control_signatures", controlMetrics, `bulwark_ca_signatures_total{kind="x509_svid",result="ok"}`, 3},
		{"control_store", controlMetrics, `bulwark_store_operations_total{op="txn",result="ok"}`, 1},
		{"control_grpc_tls", controlMetrics, `bulwark_tls_handshakes_total{listener="grpc",result="ok"}`, 2},
		{"control_grpc_eof", controlMetrics, `bulwark_tls_handshakes_total{listener="grpc",result="eof"}`, 1},
		{"control_admin_tls", controlMetrics, `bulwark_tls_handshakes_total{listener="admin",result="ok"}`, 1},
	}
	eventually(t, 15*time.Second, "metrics", func() error {
		for _, c := range checks {
			if got, ok := metricValue(scrape(t, c.addr), c.series); !ok || got < c.atLeast {
				return fmt.Errorf("%s: %s: got %v (present: %v), want at least %v", c.name, c.series, got, ok, c.atLeast)
			}
		}
		return nil
	})
	for _, addr := range []string{clientMetrics, apiMetrics} {
		body := scrape(t, addr)
		for _, l := range strings.Split(body, "\n") {
			if !strings.HasPrefix(l, "bulwark_service_requests_total{") && !strings.HasPrefix(l, "bulwark_request_duration_seconds") {
				continue
			}
			for _, bad := range []string{"attacker", "forged", "evil", "spiffe://"} {
				if strings.Contains(l, bad) {
					t.Errorf("a request minted a label value: %s", l)
				}
			}
		}
	}
}
