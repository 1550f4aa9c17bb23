package control_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// runOnce runs control.Run with cfg, expecting it to fail before Ready.
func runOnce(t testing.TB, cfg control.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	cfg.Ready = func(control.Endpoints) {
		t.Error("Ready called, want Run to fail")
		cancel()
	}
	done := make(chan error, 1)
	go func() { done <- control.Run(ctx, cfg) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		t.Fatal("Run did not fail")
		return nil
	}
}

func TestRunConfigErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name       string
		cfg        func(c *control.Config)
		wantPrefix string
	}{
		{"MissingDataDir", func(c *control.Config) { c.DataDir = "" }, "control plane config: data-dir: "},
		{"BadTrustDomain", func(c *control.Config) { c.TrustDomain = "Bulwark Local" }, "control plane config: trust-domain: "},
		{"TrustDomainWithPort", func(c *control.Config) { c.TrustDomain = "bulwark.local:8443" }, "control plane config: trust-domain: "},
		{"SVIDTTLBelowMinimum", func(c *control.Config) { c.SVIDTTL = 59 * time.Second }, "control plane config: svid-ttl: "},
		{"SVIDTTLNegative", func(c *control.Config) { c.SVIDTTL = -time.Hour }, "control plane config: svid-ttl: "},
		{"SVIDTTLAboveIntermediate", func(c *control.Config) { c.SVIDTTL = 2 * 365 * 24 * time.Hour }, "control plane config: svid-ttl: "},
		{"ListenWithoutPort", func(c *control.Config) { c.Listen = "127.0.0.1" }, "control plane config: listen: "},
		{"AdminListenWithoutPort", func(c *control.Config) { c.AdminListen = "localhost" }, "control plane config: admin-listen: "},
		{"ListenBadPort", func(c *control.Config) { c.Listen = "127.0.0.1:99999" }, "listen: "},
		{"AdminListenBadPort", func(c *control.Config) { c.AdminListen = "127.0.0.1:99999" }, "admin-listen: "},
		{"ListenInUse", func(c *control.Config) { c.Listen = busy.Addr().String() }, "listen: "},
		{"AdminListenInUse", func(c *control.Config) { c.AdminListen = busy.Addr().String() }, "admin-listen: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := control.Config{
				DataDir:     filepath.Join(t.TempDir(), "data"),
				TrustDomain: td.Name(),
				Listen:      "127.0.0.1:0",
				AdminListen: "127.0.0.1:0",
				Clock:       clock.NewFake(time.Now()),
			}
			tt.cfg(&cfg)
			err := runOnce(t, cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantPrefix) {
				t.Errorf("got error %v, want one starting %q", err, tt.wantPrefix)
			}
			// An invalid config writes nothing.
			if _, err := os.Stat(cfg.DataDir); strings.HasPrefix(tt.wantPrefix, "control plane config: ") && cfg.DataDir != "" && err == nil {
				t.Errorf("data dir %s: got created, want nothing written for an invalid config", cfg.DataDir)
			}
		})
	}
}

func TestRunDataDir(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "a", "b")
	p := startRun(t, runOptions{dataDir: dataDir})

	for path, want := range map[string]os.FileMode{
		dataDir:                                       0o700,
		filepath.Join(dataDir, "bulwark.db"):          0o600,
		filepath.Join(dataDir, "operator"):            0o700,
		filepath.Join(dataDir, "operator/admin.yaml"): 0o600,
		filepath.Join(dataDir, "bundle.pem"):          0o644,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("stat: %v", err)
			continue
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode: got %o, want %o", path, got, want)
		}
	}

	if got, want := p.ep.BundlePath, filepath.Join(dataDir, "bundle.pem"); got != want {
		t.Errorf("BundlePath: got %s, want %s", got, want)
	}
	if got, want := p.ep.CredentialPath, filepath.Join(dataDir, "operator", "admin.yaml"); got != want {
		t.Errorf("CredentialPath: got %s, want %s", got, want)
	}
	if p.ep.TrustDomain != td.Name() {
		t.Errorf("TrustDomain: got %s, want %s", p.ep.TrustDomain, td.Name())
	}
	for _, addr := range []string{p.ep.GRPC, p.ep.Admin} {
		if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
			t.Errorf("endpoint %q: want 127.0.0.1:<port>", addr)
		}
	}

	// bundle.pem holds the workload root, whose pin is Endpoints.Pin.
	b, err := os.ReadFile(p.ep.BundlePath)
	if err != nil {
		t.Fatal(err)
	}
	var roots []*x509.Certificate
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c)
	}
	if len(roots) != 1 || !roots[0].IsCA || len(roots[0].URIs) != 1 || roots[0].URIs[0].String() != "spiffe://bulwark.test" {
		t.Fatalf("bundle.pem: got %d certificates, want the one workload root of spiffe://bulwark.test", len(roots))
	}
	if got := mtls.SPKIPin(roots[0]); got != p.ep.Pin {
		t.Errorf("Pin: got %s, want the pin of bundle.pem's root %s", p.ep.Pin, got)
	}
	// A join token made through the admin API carries the pin.
	if tok := p.token(t, "shop/web", ""); !strings.HasSuffix(tok, "."+p.ep.Pin) {
		t.Errorf("join token %q: want it to end with the root pin", tok)
	}

	// The bootstrap credential works against the admin API.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if _, err := p.admin.List(ctx, "policies", ""); err != nil {
		t.Errorf("admin API with the bootstrap credential: %v", err)
	}
	if got, want := p.admin.Server(), "https://"+p.ep.Admin; got != want {
		t.Errorf("credential server: got %s, want %s", got, want)
	}
}

func TestRunSecondInstanceLocked(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	err := runOnce(t, control.Config{
		DataDir: p.dataDir, TrustDomain: td.Name(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
	})
	if !errors.Is(err, bolt.ErrLocked) || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second Run on the same data dir: got %v, want the store's ErrLocked", err)
	}
	// The first one is unharmed.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if _, err := p.admin.List(ctx, "policies", ""); err != nil {
		t.Errorf("first control plane after the second failed: %v", err)
	}
}

func TestRunStopAndRestart(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startRun(t, runOptions{dataDir: dataDir})
	web := p.attest(t, "shop/web", "")
	s := subscribe(t, web.client, nodeMsg(web.node(web.listen(t, p.mesh))))
	s.recv(t)
	bundleBefore, err := os.ReadFile(p.ep.BundlePath)
	if err != nil {
		t.Fatal(err)
	}
	credBefore, err := admin.LoadCredential(p.ep.CredentialPath)
	if err != nil {
		t.Fatal(err)
	}

	if err := p.stop(); err != nil {
		t.Fatalf("Run after cancel: got %v, want nil", err)
	}
	// The open stream ends; the ports are free again.
	if code, _ := s.recvErr(t); code != codes.Unavailable && code != codes.Canceled {
		t.Errorf("proxy stream after stop: got code %s, want Unavailable", code)
	}
	for _, addr := range []string{p.ep.GRPC, p.ep.Admin} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port %s after Run returned: %v", addr, err)
		}
		ln.Close()
	}

	// A restart on the same data dir and gRPC port, with the admin API on
	// another port, keeps the CA and the operator's certificate.
	q := startRun(t, runOptions{dataDir: dataDir, listen: p.ep.GRPC})
	if q.ep.GRPC != p.ep.GRPC {
		t.Errorf("gRPC endpoint after restart: got %s, want %s", q.ep.GRPC, p.ep.GRPC)
	}
	bundleAfter, err := os.ReadFile(q.ep.BundlePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bundleBefore, bundleAfter) || q.ep.Pin != p.ep.Pin {
		t.Error("bundle after restart: got another root, want the same CA")
	}
	credAfter, err := admin.LoadCredential(q.ep.CredentialPath)
	if err != nil {
		t.Fatal(err)
	}
	if credAfter.Certificate != credBefore.Certificate || credAfter.Key != credBefore.Key {
		t.Error("operator credential after restart: got a new certificate, want the same one")
	}
	if want := "https://" + q.ep.Admin; credAfter.Server != want {
		t.Errorf("operator credential server after restart: got %s, want %s", credAfter.Server, want)
	}

	// The old control plane's proxy record is disconnected but still an
	// endpoint (grace), and its SVID still renews.
	if got := q.proxyView(t, "shop", web.instance); got.Connected {
		t.Error("proxy record after restart: got connected, want disconnected")
	}
	if got := q.endpoints(t, web.service); len(got) != 1 {
		t.Errorf("endpoints after restart: got %v, want the proxy's (grace)", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if _, err := q.dial(t, web.svid).SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)}); err != nil {
		t.Errorf("SignSVID with an SVID issued before the restart: %v", err)
	}
}
