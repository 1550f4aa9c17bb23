package up_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/up"
)

// fakeGatewayEnv makes the test binary act as `bulwark gateway`: "listen"
// logs a "gateway listening" line per --listen (binding each) and runs
// until SIGTERM; "exit" fails at once.
const fakeGatewayEnv = "UP_TEST_FAKE_GATEWAY"

func TestMain(m *testing.M) {
	switch os.Getenv(fakeGatewayEnv) {
	case "":
		os.Exit(m.Run())
	case "exit":
		fmt.Fprintln(os.Stderr, "bulwark: --gateway: required")
		os.Exit(2)
	case "listen":
		fakeGateway(os.Args[1:])
		os.Exit(0)
	}
}

// fakeGateway checks the token file it is given (mode 0600), then binds
// every --listen and logs it as slog's JSON handler would.
func fakeGateway(args []string) {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	enc := json.NewEncoder(os.Stderr)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--token-file":
			st, err := os.Stat(args[i+1])
			b, _ := os.ReadFile(args[i+1])
			if err != nil || st.Mode().Perm() != 0o600 || strings.TrimSpace(string(b)) != "the-token" {
				fmt.Fprintln(os.Stderr, "bad token file")
				os.Exit(3)
			}
		case "--listen":
			name, addr, _ := strings.Cut(args[i+1], "=")
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				os.Exit(4)
			}
			defer ln.Close()
			_ = enc.Encode(map[string]string{"time": time.Now().Format(time.RFC3339Nano), "level": "INFO",
				"msg": "gateway listening", "listener": name, "address": ln.Addr().String()})
		}
	}
	fmt.Fprintln(os.Stderr, "args: "+strings.Join(args, " "))
	<-stop
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRunGateway runs a real child process as the gateway: bulwark up
// passes it its token in a 0600 file and every listener's address, learns
// the bound addresses from its log, removes the spent token, renders its
// log, and stops the process when the mesh stops.
func TestRunGateway(t *testing.T) {
	t.Setenv(fakeGatewayEnv, "listen")
	_, resources, err := loadDoc(t, meshHead+gatewayDoc("a", 9443, 9080, "a-tls"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var log lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyc := make(chan map[string]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- up.RunGatewayOn(ctx, os.Args[0], dir, resources, map[string]string{"https": "127.0.0.1:0", "http": "127.0.0.1:0"},
			"the-token", &log, func(b map[string]string) { readyc <- b })
	}()
	var bound map[string]string
	select {
	case bound = <-readyc:
	case err := <-done:
		t.Fatalf("runGateway returned %v before ready; log:\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("not ready; log:\n%s", log.String())
	}
	names := slices.Sorted(maps.Keys(bound))
	if !slices.Equal(names, []string{"http", "https"}) {
		t.Fatalf("bound: got %v, want https and http", bound)
	}
	for _, addr := range bound {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Errorf("dial %s: %v", addr, err)
			continue
		}
		c.Close()
	}
	tokenFile := filepath.Join(dir, "edge_a", "token")
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Errorf("the spent join token file is still there: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runGateway after the mesh stopped: got %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runGateway did not return after ctx was done")
	}
	out := log.String()
	for _, want := range []string{"a                gateway listening address=127.0.0.1:", " listener=https\n",
		"args: gateway --control 127.0.0.1:1 --ca-bundle /nonexistent --token-file " + tokenFile + " --gateway edge/a ",
		" --access-log stderr ", " --listen https=127.0.0.1:0 --listen http=127.0.0.1:0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	for _, addr := range bound {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s still accepts after the mesh stopped: the gateway process was not stopped", addr)
		}
	}
}

// TestRunGatewayExitsAtStart: a gateway that exits before it listens fails
// bulwark up with its log.
func TestRunGatewayExitsAtStart(t *testing.T) {
	t.Setenv(fakeGatewayEnv, "exit")
	_, resources, err := loadDoc(t, meshHead+gatewayDoc("a", 9443, 9080, "a-tls"))
	if err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	err = up.RunGatewayOn(context.Background(), os.Args[0], t.TempDir(), resources, nil, "the-token", &log, func(map[string]string) {
		t.Error("ready called for a gateway that exited")
	})
	if want := "gateway edge/a exited at start: exit status 2 (its log is above)"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	if !strings.Contains(log.String(), "a                bulwark: --gateway: required") {
		t.Errorf("the gateway's own words are not in the log:\n%s", log.String())
	}
}

// TestRunRefusesEarly: what bulwark up cannot run as asked fails before
// anything starts, saying which flag to use.
func TestRunRefusesEarly(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	withGateway := meshHead + gatewayDoc("a", 9443, 9080, "a-tls")
	withIssuer := meshHead + "  demoIssuer: {provider: edge/users}\n"
	tests := []struct {
		name, doc string
		cfg       up.Config
		want      string
	}{
		{name: "unknown_listener", doc: withGateway, cfg: up.Config{GatewayListen: map[string]string{"admin": "127.0.0.1:0"}},
			want: "--gateway-listen admin: no Gateway of the file has that listener"},
		{name: "gateway_port_taken", doc: withGateway, cfg: up.Config{GatewayListen: map[string]string{"https": taken.Addr().String(), "http": "127.0.0.1:0"}},
			want: "gateway edge/a listener https: listen tcp " + taken.Addr().String() + ": bind: address already in use (pick another address with --gateway-listen https=127.0.0.1:PORT)"},
		{name: "issuer_without_demo_issuer", doc: withGateway, cfg: up.Config{IssuerListen: "127.0.0.1:0", GatewayListen: map[string]string{"https": "127.0.0.1:0", "http": "127.0.0.1:0"}},
			want: "--issuer-listen: the mesh file has no spec.demoIssuer"},
		{name: "issuer_not_loopback", doc: withIssuer, cfg: up.Config{IssuerListen: "0.0.0.0:8079"},
			want: "--issuer-listen 0.0.0.0:8079: want a loopback IP address and a port"},
		{name: "issuer_port_taken", doc: withIssuer, cfg: up.Config{IssuerListen: taken.Addr().String()},
			want: "demo issuer address " + taken.Addr().String() + ": listen tcp " + taken.Addr().String() + ": bind: address already in use (pick another with --issuer-listen)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "mesh.yaml")
			if err := os.WriteFile(p, []byte(tt.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			tt.cfg.File, tt.cfg.Listen, tt.cfg.DataDir = p, "127.0.0.1:0", t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := up.Run(ctx, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(tt.cfg.DataDir); len(entries) != 0 {
				t.Errorf("the data dir is not empty: something started")
			}
		})
	}
}
