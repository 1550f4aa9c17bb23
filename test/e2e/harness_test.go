package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// bin is the bulwark binary built once for the whole run.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bulwark-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "bulwark")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/bulwark")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build bulwark:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a goroutine-safe buffer for a process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a started bulwark process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	// done is closed when the process exited; err is its exit error,
	// set before done is closed.
	done chan struct{}
	err  error
}

// hasExited reports whether the process exited (and p.err is set).
func (p *proc) hasExited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs the binary with args; the process is stopped by its PID when
// the test ends, and its output is printed if the test failed.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("----- output of %s (pid %d) -----\n%s", name, p.cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM to the process group, then SIGKILL after 10s, and
// waits for the process.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// wait waits for the process to exit by itself and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// cli runs a bulwark command to completion and returns stdout, stderr and
// the exit code.
func cli(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("bulwark %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), code
}

// mustCLI runs a bulwark command that must succeed.
func mustCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, env, "", args...)
	if code != 0 {
		t.Fatalf("bulwark %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// freeAddr returns a free loopback host:port.
func freeAddr(t *testing.T) string {
	t.Helper()
	// Ports are handed out below the kernel's ephemeral range, where no
	// client connection of this or another test takes a port between
	// the check and the process binding it (which made a control plane
	// fail with "address already in use" now and then).
	for range portRange {
		p := portBase + int(nextPort.Add(1))%portRange
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return ln.Addr().String()
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// Listen ports of the processes the tests start: [portBase,
// portBase+portRange) lies below Linux's default ephemeral range
// (32768-60999). nextPort starts at a per-process offset so that two test
// binaries running at once rarely probe the same ports.
const (
	portBase  = 20000
	portRange = 12000
)

var nextPort = func() *atomic.Int32 {
	var n atomic.Int32
	n.Store(int32(os.Getpid() * 97 % portRange))
	return &n
}()

// eventually retries f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

// mesh is a running control plane.
type mesh struct {
	t       *testing.T
	dir     string
	grpc    string
	admin   string
	env     []string
	control *proc
}

// startControl starts `bulwark control` in a temp data dir and waits until
// its admin API answers.
func startControl(t *testing.T, extra ...string) *mesh {
	t.Helper()
	m := &mesh{t: t, dir: t.TempDir(), grpc: freeAddr(t), admin: freeAddr(t)}
	args := append([]string{"control", "--data-dir", filepath.Join(m.dir, "control"),
		"--listen", m.grpc, "--admin-listen", m.admin, "--log-level", "debug"}, extra...)
	m.control = start(t, "control", nil, args...)
	cred := filepath.Join(m.dir, "control", "operator", "admin.yaml")
	m.env = []string{"BULWARK_CONFIG=" + cred, "HOME=" + m.dir}
	eventually(t, 20*time.Second, "control plane ready", func() error {
		if m.control.hasExited() {
			t.Fatalf("control plane exited: %v", m.control.err)
		}
		if _, err := os.Stat(cred); err != nil {
			return err
		}
		_, _, code := cli(t, m.env, "", "get", "policies")
		if code != 0 {
			return fmt.Errorf("get policies: exit %d", code)
		}
		return nil
	})
	return m
}

// token creates a join token and writes it to a file.
func (m *mesh) token(service string, extra ...string) string {
	m.t.Helper()
	out := mustCLI(m.t, m.env, append([]string{"token", "create", "--service", service}, extra...)...)
	tok := strings.TrimSpace(out)
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(tok, "bwjt.") {
		m.t.Fatalf("token create printed %q, want only the token", out)
	}
	f := filepath.Join(m.t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
		m.t.Fatal(err)
	}
	return f
}

// sidecar is a running `bulwark proxy`.
type sidecar struct {
	proc     *proc
	service  string
	inbound  string
	outbound string
	admin    string
	dataDir  string
}

// startProxy starts a proxy for service in front of app and waits until it
// is ready.
func (m *mesh) startProxy(service, app string, extra ...string) *sidecar {
	m.t.Helper()
	s := &sidecar{service: service, inbound: freeAddr(m.t), outbound: freeAddr(m.t), admin: freeAddr(m.t),
		dataDir: filepath.Join(m.t.TempDir(), "proxy")}
	args := append([]string{"proxy", "--control", m.grpc, "--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"),
		"--token-file", m.token(service), "--service", service, "--app", app,
		"--inbound", s.inbound, "--outbound", s.outbound, "--admin", s.admin, "--data-dir", s.dataDir,
		"--log-level", "debug"}, extra...)
	s.proc = start(m.t, "proxy "+service, nil, args...)
	eventually(m.t, 20*time.Second, "proxy "+service+" ready", func() error {
		if s.proc.hasExited() {
			m.t.Fatalf("proxy %s exited: %v", service, s.proc.err)
		}
		resp, err := http.Get("http://" + s.admin + "/ready")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("ready: %d %s", resp.StatusCode, b)
		}
		return nil
	})
	return s
}

// client returns an HTTP client that sends every request through the
// sidecar's outbound listener, as an app with HTTP_PROXY does.
func (s *sidecar) client() *http.Client {
	u, _ := url.Parse("http://" + s.outbound)
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: false}, Timeout: 10 * time.Second}
}

// do sends a request and returns the status and body.
func do(t *testing.T, c *http.Client, method, u, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// app is a tiny upstream app on loopback that answers with its name and
// what it received.
type app struct {
	name string
	addr string
	srv  *http.Server
}

func startApp(t *testing.T, name string) *app {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{name: name, addr: ln.Addr().String()}
	a.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"app":    name,
			"method": r.Method,
			"path":   r.URL.EscapedPath(),
			"query":  r.URL.RawQuery,
			"host":   r.Host,
			"xfcc":   r.Header.Values("X-Forwarded-Client-Cert"),
			"spoof":  r.Header.Get("X-Bulwark-Identity"),
			"body":   string(body),
		})
	})}
	go func() { _ = a.srv.Serve(ln) }()
	t.Cleanup(func() { a.srv.Close() })
	return a
}

// appAnswer is what startApp's handler answers.
type appAnswer struct {
	App    string   `json:"app"`
	Method string   `json:"method"`
	Path   string   `json:"path"`
	Query  string   `json:"query"`
	Host   string   `json:"host"`
	XFCC   []string `json:"xfcc"`
	Spoof  string   `json:"spoof"`
	Body   string   `json:"body"`
}

func decodeAnswer(t *testing.T, body string) appAnswer {
	t.Helper()
	var a appAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("app answer %q: %v", body, err)
	}
	return a
}

// writeFile writes content to a temp file and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsClientFromPEM returns a client that presents the certificate and key in
// pemFile (an SVID file of a proxy's data dir) and trusts nothing in
// particular (the test inspects the server itself).
func tlsConfigFromPEM(t *testing.T, pemFile string) *tls.Config {
	t.Helper()
	b, err := os.ReadFile(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(b, b)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} //nolint:gosec // the test only needs to present a client cert
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
