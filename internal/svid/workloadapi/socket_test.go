package workloadapi_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	wlclient "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwarkmesh/bulwark/internal/svid/workloadapi"
)

// nobody is a uid (and gid) that is not the test process's.
const nobody = 65534

// requireRoot skips tests that chown the socket to another user.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns the socket to another uid")
	}
}

func owner(t *testing.T, path string) (fs.FileMode, int, int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), int(st.Uid), int(st.Gid)
}

// The SO_PEERCRED check: only the configured uid (or, unset, the proxy's
// own) gets anything; root gets no exception.
func TestPeerCredentials(t *testing.T) {
	tests := []struct {
		name   string
		uid    int
		root   bool // the case chowns to another uid
		wantOK bool
	}{
		{"uid_of_caller", os.Getuid(), false, true},
		{"uid_not_set_allows_own_uid", workloadapi.NotSet, false, true},
		{"uid_of_another_user", nobody, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				requireRoot(t)
			}
			src := newFakeSource(fakeNow())
			r := start(t, src, fakeNow(), func(c *workloadapi.Config) { c.UID = tc.uid })
			ctx := timeout(t)

			_, err := wlclient.FetchX509SVID(ctx, wlclient.WithAddr(r.addr))
			if tc.wantOK {
				if err != nil {
					t.Fatalf("FetchX509SVID: %v", err)
				}
				if got := r.logs.matching("connection rejected"); len(got) != 0 {
					t.Errorf("got rejections %q, want none", got)
				}
				return
			}
			if got := status.Code(err); got != codes.Unavailable {
				t.Fatalf("got %v (%v), want Unavailable", got, err)
			}
			// The same fails for every RPC, JWT too.
			if _, err := wlclient.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}, wlclient.WithAddr(r.addr)); err == nil {
				t.Error("FetchJWTSVID succeeded for a rejected peer")
			}
			if src.mintCount() != 0 {
				t.Errorf("got %d mints for a rejected peer, want 0", src.mintCount())
			}
			want := []string{
				"pid=" + strconv.Itoa(os.Getpid()),
				"uid=" + strconv.Itoa(os.Getuid()),
				"allowed_uid=" + strconv.Itoa(tc.uid),
			}
			if got := r.logs.matching(append([]string{"workload api connection rejected"}, want...)...); len(got) == 0 {
				t.Errorf("got logs %q, want a rejection with %q", r.logs.matching(), want)
			}
		})
	}
}

// Rejections are logged at most once per period, with a count of the
// suppressed ones.
func TestRejectionsAreRateLimited(t *testing.T) {
	requireRoot(t)
	c := fakeNow()
	r := start(t, newFakeSource(c), c, func(cfg *workloadapi.Config) { cfg.UID = nobody })
	ctx := timeout(t)
	for range 3 {
		if _, err := wlclient.FetchX509SVID(ctx, wlclient.WithAddr(r.addr)); err == nil {
			t.Fatal("FetchX509SVID succeeded for a rejected peer")
		}
	}
	if got := r.logs.matching("connection rejected"); len(got) != 1 {
		t.Fatalf("got %d rejection warnings, want 1: %q", len(got), got)
	}
	c.Advance(workloadapi.RejectWarnEvery)
	if _, err := wlclient.FetchX509SVID(ctx, wlclient.WithAddr(r.addr)); err == nil {
		t.Fatal("FetchX509SVID succeeded for a rejected peer")
	}
	got := r.logs.matching("connection rejected")
	if len(got) != 2 {
		t.Fatalf("got %d rejection warnings, want 2: %q", len(got), got)
	}
	if strings.Contains(got[1], "suppressed=0 ") || strings.Contains(got[1], "suppressed=1 ") {
		t.Errorf("got %q, want at least 2 suppressed", got[1])
	}
}

func TestSocketModeAndOwner(t *testing.T) {
	tests := []struct {
		name     string
		uid, gid int
		root     bool
		wantMode fs.FileMode
		wantUID  int
		wantGID  int
	}{
		{"not_set", workloadapi.NotSet, workloadapi.NotSet, false, 0o600, os.Geteuid(), os.Getegid()},
		{"gid_set", workloadapi.NotSet, os.Getegid(), false, 0o660, os.Geteuid(), os.Getegid()},
		{"uid_set", os.Geteuid(), workloadapi.NotSet, false, 0o600, os.Geteuid(), os.Getegid()},
		{"other_uid_and_gid", nobody, nobody, true, 0o660, nobody, nobody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				requireRoot(t)
			}
			r := start(t, newFakeSource(fakeNow()), fakeNow(), func(c *workloadapi.Config) {
				c.UID, c.GID = tc.uid, tc.gid
			})
			mode, uid, gid := owner(t, r.socket)
			if mode.Type() != fs.ModeSocket {
				t.Fatalf("got type %v, want a socket", mode.Type())
			}
			if mode.Perm() != tc.wantMode {
				t.Errorf("got mode %v, want %v", mode.Perm(), tc.wantMode)
			}
			if uid != tc.wantUID || gid != tc.wantGID {
				t.Errorf("got owner %d:%d, want %d:%d", uid, gid, tc.wantUID, tc.wantGID)
			}
		})
	}
}

// Without the privilege to chown, Run says so instead of serving a socket
// the workload cannot use.
func TestChownWithoutPrivilege(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("needs a non-root uid")
	}
	path := filepath.Join(t.TempDir(), "api.sock")
	srv, err := workloadapi.New(workloadapi.Config{Socket: path, UID: nobody + 1, GID: workloadapi.NotSet, Source: newFakeSource(fakeNow())})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	err = srv.Run(timeout(t))
	if err == nil || !strings.Contains(err.Error(), "needs root or CAP_CHOWN") {
		t.Fatalf("got %v, want an error explaining the missing privilege", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after the failure: got %v, want it removed", err)
	}
}

func TestSocketDirectory(t *testing.T) {
	t.Run("missing_is_created_0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run")
		start(t, newFakeSource(fakeNow()), fakeNow(), func(c *workloadapi.Config) {
			c.Socket = filepath.Join(dir, "api.sock")
		})
		if mode, _, _ := owner(t, dir); mode.Perm() != 0o700 {
			t.Errorf("got mode %v, want 0700", mode.Perm())
		}
	})
	t.Run("missing_for_another_uid_is_traversable", func(t *testing.T) {
		requireRoot(t)
		dir := filepath.Join(t.TempDir(), "run")
		start(t, newFakeSource(fakeNow()), fakeNow(), func(c *workloadapi.Config) {
			c.Socket = filepath.Join(dir, "api.sock")
			c.UID = nobody
		})
		if mode, uid, _ := owner(t, dir); mode.Perm() != 0o711 || uid != os.Geteuid() {
			t.Errorf("got mode %v owner %d, want 0711 owned by %d", mode.Perm(), uid, os.Geteuid())
		}
	})
	t.Run("world_writable_is_refused", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "shared")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		err := runOnce(t, filepath.Join(dir, "api.sock"))
		if !errors.Is(err, workloadapi.ErrUnsafeDirectory) {
			t.Fatalf("got %v, want ErrUnsafeDirectory", err)
		}
	})
	t.Run("missing_parent_is_an_error", func(t *testing.T) {
		err := runOnce(t, filepath.Join(t.TempDir(), "a", "b", "api.sock"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("got %v, want a not-exist error", err)
		}
	})
}

// runOnce runs a server on socket and returns Run's error, which the test
// expects to come before the server listens.
func runOnce(t *testing.T, socket string) error {
	t.Helper()
	srv, err := workloadapi.New(workloadapi.Config{Socket: socket, UID: workloadapi.NotSet, GID: workloadapi.NotSet, Source: newFakeSource(fakeNow())})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-srv.Ready():
		cancel()
		<-done
		t.Fatal("Run served, want an error")
	case <-time.After(hangGuard):
		t.Fatal("Run neither failed nor served")
	}
	return nil
}

// Nothing but a stale socket is ever removed from the socket path.
func TestSocketPathOccupied(t *testing.T) {
	t.Run("regular_file_fails_new", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "api.sock")
		writeFile(t, path, "keep me")
		_, err := workloadapi.New(workloadapi.Config{Socket: path, UID: -1, GID: -1, Source: newFakeSource(fakeNow())})
		if !errors.Is(err, workloadapi.ErrNotSocket) {
			t.Fatalf("got %v, want ErrNotSocket", err)
		}
		wantFile(t, path, "keep me")
	})
	t.Run("regular_file_fails_run", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "api.sock")
		srv, err := workloadapi.New(workloadapi.Config{Socket: path, UID: -1, GID: -1, Source: newFakeSource(fakeNow())})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		writeFile(t, path, "keep me")
		if err := srv.Run(timeout(t)); !errors.Is(err, workloadapi.ErrNotSocket) {
			t.Fatalf("got %v, want ErrNotSocket", err)
		}
		wantFile(t, path, "keep me")
	})
	t.Run("symlink_to_a_socket_fails", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "real.sock")
		staleSocket(t, target)
		path := filepath.Join(dir, "api.sock")
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		if err := runOnce(t, path); !errors.Is(err, workloadapi.ErrNotSocket) {
			t.Fatalf("got %v, want ErrNotSocket", err)
		}
		if _, err := os.Lstat(target); err != nil {
			t.Errorf("symlink target: %v", err)
		}
	})
	t.Run("directory_fails", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "api.sock")
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := runOnce(t, path); !errors.Is(err, workloadapi.ErrNotSocket) {
			t.Fatalf("got %v, want ErrNotSocket", err)
		}
	})
	t.Run("stale_socket_is_replaced", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "api.sock")
		staleSocket(t, path)
		r := start(t, newFakeSource(fakeNow()), fakeNow(), func(c *workloadapi.Config) { c.Socket = path })
		if _, err := wlclient.FetchX509SVID(timeout(t), wlclient.WithAddr(r.addr)); err != nil {
			t.Fatalf("FetchX509SVID: %v", err)
		}
		if len(r.logs.matching("workload api removed a stale socket")) != 1 {
			t.Errorf("got logs %q, want the stale socket's removal", r.logs.matching())
		}
	})
	t.Run("live_socket_is_left_alone", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "api.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := runOnce(t, path); !errors.Is(err, workloadapi.ErrSocketInUse) {
			t.Fatalf("got %v, want ErrSocketInUse", err)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("the other server's socket is gone: %v", err)
		}
		c.Close()
	})
}

// staleSocket leaves a socket file at path that nobody listens on, as a
// crashed server would.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the file at the socket path: %v", err)
	}
	if string(got) != want {
		t.Errorf("got content %q, want %q", got, want)
	}
}

// Shutdown ends streams, returns nil, removes the socket, and leaves no
// goroutine of the package behind.
func TestShutdown(t *testing.T) {
	src := newFakeSource(fakeNow())
	r := start(t, src, fakeNow(), nil)
	ctx := withHeader(timeout(t))
	raw := rawClient(t, r.socket)

	// Streams of every kind are open, and a unary call was made.
	x509s, err := raw.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509s.Recv(); err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	bundles, err := raw.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.Recv(); err != nil {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
	jwtb, err := raw.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtb.Recv(); err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	if _, err := raw.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"db"}}); err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}

	if err := r.stop(); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	if _, err := os.Lstat(r.socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket after shutdown: got %v, want it removed", err)
	}
	if got := packageGoroutines(); len(got) != 0 {
		t.Errorf("goroutines outlive Run:\n%s", strings.Join(got, "\n\n"))
	}
	if err := r.srv.Run(timeout(t)); err == nil {
		t.Error("second Run: got nil, want an error")
	}
}

func TestStreamsEndAtShutdown(t *testing.T) {
	src := newFakeSource(fakeNow())
	r := start(t, src, fakeNow(), nil)
	ctx := withHeader(timeout(t))
	raw := rawClient(t, r.socket)

	stream, err := raw.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first answer: %v", err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		ended <- err
	}()
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case err := <-ended:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("stream ended with %v, want Unavailable", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("stream did not end at shutdown")
	}
}

// packageGoroutines returns the stacks of goroutines running code of the
// package (not its tests), waiting briefly for exiting ones.
func packageGoroutines() []string {
	const pkg = "github.com/bulwarkmesh/bulwark/internal/svid/workloadapi."
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var found []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, pkg) {
				found = append(found, g)
			}
		}
		if len(found) == 0 || time.Now().After(deadline) {
			return found
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	ok := workloadapi.Config{Socket: filepath.Join(dir, "api.sock"), UID: -1, GID: -1, Source: newFakeSource(fakeNow())}
	tests := []struct {
		name string
		edit func(*workloadapi.Config)
		want string
	}{
		{"socket_missing", func(c *workloadapi.Config) { c.Socket = "" }, "socket: required"},
		{"socket_relative", func(c *workloadapi.Config) { c.Socket = "run/api.sock" }, "socket: "},
		{"socket_too_long", func(c *workloadapi.Config) { c.Socket = "/" + strings.Repeat("a", 107) }, "socket: path is 108 bytes"},
		{"uid_invalid", func(c *workloadapi.Config) { c.UID = -2 }, "uid: -2"},
		{"gid_invalid", func(c *workloadapi.Config) { c.GID = -5 }, "gid: -5"},
		{"source_missing", func(c *workloadapi.Config) { c.Source = nil }, "source: required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			_, err := workloadapi.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := workloadapi.New(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}
