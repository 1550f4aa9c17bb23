package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
)

// gatewayGoroutines returns the stacks of the goroutines running code of
// package gateway (not its tests).
func gatewayGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "bulwark/internal/gateway.") {
			out = append(out, g)
		}
	}
	return out
}

// TestRunLeavesNoGoroutine: once Run returns, no goroutine of the server
// is left, with connections of every kind open when it stopped (HTTP/1.1,
// HTTP/2, a passthrough tunnel, an unfinished TLS handshake).
func TestRunLeavesNoGoroutine(t *testing.T) {
	if n := len(gatewayGoroutines()); n != 0 {
		t.Fatalf("%d gateway goroutines before the test", n)
	}
	srv, err := gateway.NewServer(gateway.ServerConfig{
		Edge:            fakeEdge{},
		Listen:          map[string]string{"https": "127.0.0.1:0", "http": "127.0.0.1:0", "tls": "127.0.0.1:0"},
		ShutdownTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	err = srv.Apply(gw(httpsListener("https", 443, secretCert("a")),
		config.GatewayListener{Name: "http", Port: 80, Protocol: config.ListenerHTTP, RedirectToHTTPS: ptr(false)},
		config.GatewayListener{Name: "tls", Port: 8443, Protocol: config.ListenerTLS},
	), map[string]*apiv1.TLSSecret{"a": secretOf("a", newPair(t, "a.example.com"))})
	if err != nil {
		t.Fatal(err)
	}
	addrs := srv.Status().Listeners
	for _, c := range []*http.Client{client(true), client(false)} {
		if code, _, err := get(c, "https://"+addrs["https"]+"/"); err != nil || code != 200 {
			t.Fatalf("https: %d %v", code, err)
		}
		defer c.CloseIdleConnections()
	}
	if code, _, err := get(client(false), "http://"+addrs["http"]+"/"); err != nil || code != 200 {
		t.Fatalf("http: %d %v", code, err)
	}
	var conns []net.Conn
	for _, l := range []string{"tls", "https"} {
		c, err := net.DialTimeout("tcp", addrs[l], hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	if _, err := io.WriteString(conns[0], "x"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	_ = conns[0].SetReadDeadline(time.Now().Add(hangGuard))
	if _, err := io.ReadFull(conns[0], buf); err != nil {
		t.Fatalf("tunnel echo: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Run did not return")
	}
	deadline := time.Now().Add(hangGuard)
	for {
		left := gatewayGoroutines()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond) // goroutines that saw their connection close are still returning
	}
}
