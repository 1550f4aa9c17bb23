package gateway_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// TestServedNamesMisdirected: through the whole gateway and its engine, a
// request whose host the certificate served on its connection does not
// cover gets 421 (domain fronting: a handshake for one name, requests for
// another, even one a different certificate of the listener covers);
// hosts the served certificate covers (a wildcard included, as browsers
// coalesce connections) reach authorization (403: no policy allows them),
// whatever the server name the client asked for.
func TestServedNamesMisdirected(t *testing.T) {
	ep, client := startPlane(t)
	edge := newPair(t, "edge.example.test", "*.edge.example.test")
	other := newPair(t, "other.example.test")
	apply(t, client, secretDoc("edge-cert", edge), secretDoc("other-cert", other),
		gatewayDoc(`[{"name":"https","port":443,"protocol":"HTTPS","tls":{"certificates":[{"secret":"edge-cert"},{"secret":"other-cert"}]}}]`))
	addr := runGateway(t, ep.GRPC, ep.BundlePath, client)

	tests := []struct {
		name, sni, host string
		want            int
	}{
		{"same name", "edge.example.test", "edge.example.test", http.StatusForbidden},
		{"wildcard of the served certificate", "edge.example.test", "api.edge.example.test", http.StatusForbidden},
		{"host of another certificate", "edge.example.test", "other.example.test", http.StatusMisdirectedRequest},
		{"the other way round", "other.example.test", "edge.example.test", http.StatusMisdirectedRequest},
		{"host nobody serves", "edge.example.test", "b.other.net", http.StatusMisdirectedRequest},
		{"wildcard two labels down", "edge.example.test", "a.b.edge.example.test", http.StatusMisdirectedRequest},
		{"unknown server name, first certificate served", "unknown.test", "edge.example.test", http.StatusForbidden},
		{"unknown server name, host it does not cover", "unknown.test", "other.example.test", http.StatusMisdirectedRequest},
		{"no server name", "", "edge.example.test", http.StatusForbidden},
		{"no server name, host of another certificate", "", "other.example.test", http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		for _, h2 := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: " http1", true: " h2"}[h2], func(t *testing.T) {
				c := sniClient(tt.sni, h2)
				defer c.CloseIdleConnections()
				req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Host = tt.host
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("sni %q, host %q: got %d, want %d", tt.sni, tt.host, resp.StatusCode, tt.want)
				}
				if wantProto := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != wantProto {
					t.Errorf("got HTTP/%d, want HTTP/%d", resp.ProtoMajor, wantProto)
				}
			})
		}
	}
}

// runGateway runs gateway.Run as default/edge until the end of the test
// and returns the address of its https listener once it is ready.
func runGateway(t *testing.T, control, bundle string, client *admin.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	tok, err := client.CreateToken(ctx, admin.TokenRequest{Service: "default/edge"})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan gateway.Addrs, 1)
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- gateway.Run(rctx, gateway.Config{
			Control: control, CABundle: bundle, Token: tok.Token,
			Gateway: identity.ServiceRef{Namespace: "default", Name: "edge"},
			Listen:  map[string]string{"https": "127.0.0.1:0"},
			DataDir: t.TempDir(),
			Ready:   func(a gateway.Addrs) { ready <- a },
		})
	}()
	t.Cleanup(func() {
		rcancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(hangGuard):
			t.Error("Run did not return")
		}
	})
	select {
	case a := <-ready:
		return a.Listeners["https"]
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("the gateway was never ready")
	}
	return ""
}

// sniClient is an HTTPS client (HTTP/2 when h2, else HTTP/1.1) that asks
// for the server name sni ("" for none) and does not verify certificates.
func sniClient(sni string, h2 bool) *http.Client {
	c := client(h2)
	tr := c.Transport.(*http.Transport)
	tr.TLSClientConfig.ServerName = sni
	return c
}
