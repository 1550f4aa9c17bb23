// Package browsertest drives a headless Debian chromium for the tests of
// the dashboard (chromedp): it trusts exactly one server certificate, by
// its public key, records what a page must never do (console errors,
// uncaught exceptions, Content-Security-Policy violations, failed
// requests), and writes screenshots to the artifact folder. It is used by
// tests only.
package browsertest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Browser is a headless Debian chromium driven by chromedp.
type Browser struct {
	// t is the test that Must, WaitReady and Screenshot fail: see For.
	t *testing.T
	*chromium
}

// chromium is the browser process and what it reported.
type chromium struct {
	ctx     context.Context
	cancel  context.CancelFunc
	pid     int
	profile string

	mu       sync.Mutex
	problems []string
}

// For returns the same browser failing t, for use in a subtest.
func (b *Browser) For(t *testing.T) *Browser { return &Browser{t: t, chromium: b.chromium} }

// New starts chromium trusting the TLS certificate served at addr.
// It is stopped, and its process checked gone, when the test ends.
func New(t *testing.T, addr string) *Browser {
	t.Helper()
	exe, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed: run `make deps` (as root it installs Debian's chromium): %v", err)
	}
	// The profile is removed by stop once chromium is gone: t.TempDir's
	// cleanup can race with chromium's helpers still writing to it.
	profile, err := os.MkdirTemp("", "bulwark-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("ignore-certificate-errors-spki-list", SPKIHash(t, addr)),
		chromedp.UserDataDir(profile),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &Browser{t: t, chromium: &chromium{ctx: ctx, profile: profile}}
	b.cancel = func() { cancel(); acancel() }
	chromedp.ListenTarget(ctx, b.observe)
	if err := chromedp.Run(ctx, network.Enable(), log.Enable(), runtime.Enable()); err != nil {
		b.cancel()
		t.Fatalf("start chromium: %v", err)
	}
	if c := chromedp.FromContext(ctx); c != nil && c.Browser != nil && c.Browser.Process() != nil {
		b.pid = c.Browser.Process().Pid
	}
	t.Cleanup(b.stop)
	return b
}

// stop ends chromium and checks that its process is gone.
func (b *Browser) stop() {
	b.cancel()
	defer func() {
		for range 50 {
			if os.RemoveAll(b.profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if b.pid == 0 {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(b.pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(b.pid, syscall.SIGKILL)
	b.t.Errorf("chromium (pid %d) still running 10 s after it was stopped", b.pid)
}

func (b *chromium) observe(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.APITypeError || ev.Type == runtime.APITypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			b.problem("console %s: %s", ev.Type, strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		b.problem("uncaught exception: %s", ev.ExceptionDetails.Error())
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.LevelError {
			b.problem("log %s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		}
	case *network.EventLoadingFailed:
		// A navigation cancels the previous page's event stream: that
		// is no failure.
		if !ev.Canceled {
			b.problem("request failed: %s (%s)", ev.ErrorText, ev.Type)
		}
	case *network.EventResponseReceived:
		if ev.Response.Status >= 400 {
			b.problem("request answered %d: %s", ev.Response.Status, ev.Response.URL)
		}
	}
}

func (b *chromium) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

// TakeProblems returns and forgets what went wrong so far.
func (b *chromium) TakeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// Run runs chromedp actions with a timeout.
func (b *Browser) Run(timeout time.Duration, actions ...chromedp.Action) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Run(ctx, actions...)
}

func (b *Browser) Must(what string, actions ...chromedp.Action) {
	b.t.Helper()
	if err := b.Run(30*time.Second, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Eval evaluates a JavaScript expression into out.
func (b *Browser) Eval(expr string, out any) error {
	return b.Run(10*time.Second, chromedp.Evaluate(expr, out))
}

// WaitReady waits until the page named page rendered its first data.
func (b *Browser) WaitReady(page string) {
	b.t.Helper()
	b.Must("page "+page+" ready", chromedp.WaitVisible(`body[data-ready="`+page+`"]`, chromedp.ByQuery))
}

// Screenshot writes the page to the artifact folder.
func (b *Browser) Screenshot(name string) {
	b.t.Helper()
	var png []byte
	b.Must("screenshot "+name, chromedp.FullScreenshot(&png, 100))
	dir := ArtifactDir(b.t)
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", filepath.Join(dir, name))
}

// ArtifactDir is where browser tests leave screenshots:
// $BULWARK_ARTIFACTS/dashboard, or artifacts/dashboard in the repository.
func ArtifactDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("BULWARK_ARTIFACTS")
	if root == "" {
		root = filepath.Join(repoRoot(t), "artifacts")
	}
	dir := filepath.Join(root, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// SPKIHash is the base64 SHA-256 of the public key of the certificate
// served at addr, for chromium's --ignore-certificate-errors-spki-list.
func SPKIHash(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) // only to read the certificate to pin
	if err != nil {
		t.Fatalf("read the certificate of %s: %v", addr, err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Attrs returns the attribute attr of every element matching selector.
func (b *Browser) Attrs(selector, attr string) []string {
	b.t.Helper()
	var out []string
	var nodes []*cdp.Node
	if err := b.Run(10*time.Second, chromedp.Nodes(selector, &nodes, chromedp.ByQueryAll, chromedp.AtLeast(0))); err != nil {
		b.t.Fatalf("query %s: %v", selector, err)
	}
	for _, n := range nodes {
		out = append(out, n.AttributeValue(attr))
	}
	return out
}

// NoProblems fails t with what went wrong in the browser since the last
// check.
func (b *Browser) NoProblems(t *testing.T) {
	t.Helper()
	for _, p := range b.TakeProblems() {
		t.Errorf("browser: %s", p)
	}
}

// repoRoot is the directory of the module's go.mod above the working
// directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}
