package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Source is what the server serves: the proxy's identity. The proxy's
// svid.Manager implements it. Errors of the getters mean "not available
// (yet)": clients are told Unavailable and retry.
type Source interface {
	// GetX509SVID returns the proxy's current X509-SVID.
	GetX509SVID() (*x509svid.SVID, error)
	// GetX509BundleForTrustDomain returns the X.509 roots of td.
	GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error)
	// GetJWTBundleForTrustDomain returns the JWT signing keys of td.
	GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error)
	// MintJWTSVID asks the control plane for a JWT-SVID of the proxy's
	// identity for these audiences (compact JWS).
	MintJWTSVID(ctx context.Context, audience []string) (string, error)
	// Changed returns a channel that is closed at the next change of the
	// X509-SVID, the X.509 bundle or the JWT bundle.
	Changed() <-chan struct{}
}

// Interface guards: a Source is a go-spiffe source of each kind, so it can be
// handed to go-spiffe validation directly.
var (
	_ x509svid.Source   = Source(nil)
	_ x509bundle.Source = Source(nil)
	_ jwtbundle.Source  = Source(nil)
)

// NotSet is the value of Config.UID and Config.GID that leaves them unset.
const NotSet = -1

// maxSocketPath is the longest path a Unix socket can be bound to on Linux
// (sun_path is 108 bytes with its terminating NUL).
const maxSocketPath = 107

// Config configures a Server.
type Config struct {
	// Socket is the filesystem path of the Unix socket; absolute, at most
	// 107 bytes. Required. (The CLI parses unix:///path into this.)
	Socket string
	// UID is the workload's uid: the only uid allowed to connect, and the
	// socket's owner. NotSet (-1) allows only the proxy's own uid and
	// leaves the owner alone. Note that 0 means root, not "unset".
	UID int
	// GID, when set, becomes the socket's group and makes it 0660 (else
	// 0600). It grants no access on its own: the uid check still applies.
	// NotSet (-1) leaves the group alone. Note that 0 means root's group.
	GID int
	// Source is what is served. Required.
	Source Source
	// Logger, default discard.
	Logger *slog.Logger
	// Clock dates the JWT-SVID cache and rate-limits warnings; default the
	// wall clock.
	Clock clock.Clock
}

// Server serves the SPIFFE Workload API on a Unix socket.
type Server struct {
	cfg       Config
	allowUID  int
	logger    *slog.Logger
	clock     clock.Clock
	jwts      *jwtCache
	rejected  *warnLimiter
	ready     chan struct{}
	stopping  chan struct{}
	runOnce   sync.Once
	closeOnce sync.Once
}

// Log messages.
const (
	msgListening     = "workload api listening"
	msgStopped       = "workload api stopped"
	msgStaleSocket   = "workload api removed a stale socket"
	msgPeerRejected  = "workload api connection rejected"
	msgNotReady      = "workload api identity not available"
	msgMintFailed    = "workload api jwt-svid mint failed"
	msgBadMintedJWT  = "workload api minted jwt-svid is unusable"
	msgMarshalFailed = "workload api response marshal failed"
	msgRemoveFailed  = "workload api socket removal failed"
)

// Plain log keys, for which internal/telemetry has no constant.
const (
	keyUID        = "uid"
	keyAllowedUID = "allowed_uid"
	keySuppressed = "suppressed"
)

// New validates cfg and returns a Server; Run listens. It fails when
// something other than a socket exists at cfg.Socket.
func New(cfg Config) (*Server, error) {
	if err := validate(cfg); err != nil {
		return nil, fmt.Errorf("workload api config: %w", err)
	}
	if !peerCredSupported {
		return nil, errors.New("workload api: peer credentials (SO_PEERCRED) are not supported on this platform")
	}
	if err := checkSocketPath(cfg.Socket); err != nil {
		return nil, err
	}
	allow := cfg.UID
	if allow == NotSet {
		allow = os.Getuid()
	}
	c := clock.OrReal(cfg.Clock)
	return &Server{
		cfg:      cfg,
		allowUID: allow,
		logger:   telemetry.OrDiscard(cfg.Logger),
		clock:    c,
		jwts:     newJWTCache(c, maxCachedJWTSVIDs),
		rejected: &warnLimiter{clock: c, every: rejectWarnEvery},
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
	}, nil
}

func validate(cfg Config) error {
	switch {
	case cfg.Socket == "":
		return errors.New("socket: required")
	case !filepath.IsAbs(cfg.Socket):
		return fmt.Errorf("socket: %q is not an absolute path", cfg.Socket)
	case len(cfg.Socket) > maxSocketPath:
		return fmt.Errorf("socket: path is %d bytes, longer than the %d a unix socket allows", len(cfg.Socket), maxSocketPath)
	case cfg.UID < NotSet:
		return fmt.Errorf("uid: %d is neither a uid nor -1 (not set)", cfg.UID)
	case cfg.GID < NotSet:
		return fmt.Errorf("gid: %d is neither a gid nor -1 (not set)", cfg.GID)
	case cfg.Source == nil:
		return errors.New("source: required")
	}
	return nil
}

// Ready is closed once Run listens on the socket with its final mode and
// owner.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run sets up the socket and serves until ctx is done. Then it stops:
// streams end with Unavailable (go-spiffe clients retry), in-flight calls
// are cancelled, Run waits for every handler to return, and it removes the
// socket. It returns nil after a shutdown caused by ctx, or the error that
// kept it from serving; once the socket exists, every return path removes
// it. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	first := false
	s.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("workload api: run called more than once")
	}
	defer s.stop()

	l, sock, err := s.listen()
	if err != nil {
		return err
	}
	defer s.removeSocket(sock)

	gs := grpc.NewServer(
		grpc.Creds(&peerCredentials{allowUID: s.allowUID, reject: s.logRejected}),
		grpc.ChainUnaryInterceptor(unaryHeaderCheck),
		grpc.ChainStreamInterceptor(streamHeaderCheck),
		// Stop returns only once every handler has, so nothing outlives Run.
		grpc.WaitForHandlers(true),
	)
	workload.RegisterSpiffeWorkloadAPIServer(gs, &handler{s: s})

	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(l) }()
	s.logger.Info(msgListening, telemetry.KeyAddress, s.cfg.Socket, keyAllowedUID, s.allowUID)
	close(s.ready)

	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve workload api: %w", err)
	case <-ctx.Done():
		err = nil
	}
	s.stop()
	gs.Stop()
	s.logger.Info(msgStopped, telemetry.KeyAddress, s.cfg.Socket)
	return err
}

// stop tells streaming handlers to end. It is idempotent.
func (s *Server) stop() { s.closeOnce.Do(func() { close(s.stopping) }) }

// listen prepares the directory, clears a stale socket and listens, with the
// socket's mode and owner set before Run reports Ready. sock identifies the
// socket file it created, for removeSocket.
func (s *Server) listen() (*net.UnixListener, fs.FileInfo, error) {
	path := s.cfg.Socket
	if err := s.prepareDir(filepath.Dir(path)); err != nil {
		return nil, nil, err
	}
	if err := s.clearStale(path); err != nil {
		return nil, nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on workload api socket: %w", err)
	}
	// removeSocket removes it, and only if it is still ours.
	l.SetUnlinkOnClose(false)
	sock, err := os.Lstat(path)
	if err == nil {
		err = s.secureSocket(path)
	}
	if err != nil {
		l.Close()
		if sock != nil {
			s.removeSocket(sock)
		}
		return nil, nil, err
	}
	return l, sock, nil
}

// prepareDir creates the socket's directory (only the last path element)
// or checks that an existing one is not world-writable.
func (s *Server) prepareDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// 0700 keeps everyone else out; a workload running as another
		// user must be able to traverse to the socket (not list or write).
		mode := fs.FileMode(0o700)
		if s.allowUID != os.Geteuid() {
			mode = 0o711
		}
		if err := os.Mkdir(dir, mode); err != nil {
			return fmt.Errorf("create workload api socket directory: %w", err)
		}
		// Mkdir's mode is filtered by the umask.
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("set mode of workload api socket directory: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("workload api socket directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("workload api socket directory %s: not a directory", dir)
	case fi.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("%w: %s (mode %v)", ErrUnsafeDirectory, dir, fi.Mode())
	}
	return nil
}

// checkSocketPath fails when something other than a socket is at path.
func checkSocketPath(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("workload api socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%w: %s (mode %v)", ErrNotSocket, path, fi.Mode())
	}
	return nil
}

// clearStale removes a socket at path that nobody listens on. A live socket
// is left alone (ErrSocketInUse), and so is anything that is not a socket
// (ErrNotSocket).
func (s *Server) clearStale(path string) error {
	if err := checkSocketPath(path); err != nil {
		return err
	}
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.Dial("unix", path)
	switch {
	case err == nil:
		conn.Close()
		return fmt.Errorf("%w: %s", ErrSocketInUse, path)
	case errors.Is(err, syscall.ECONNREFUSED):
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale workload api socket: %w", err)
		}
		s.logger.Info(msgStaleSocket, telemetry.KeyAddress, path)
		return nil
	case errors.Is(err, syscall.ENOENT):
		return nil
	default:
		return fmt.Errorf("probe existing workload api socket: %w", err)
	}
}

// secureSocket sets the socket's mode, then its owner. Lchown never follows
// a symlink, and Chmod could only be redirected by someone who can write the
// directory, which prepareDir made sure is not everyone.
func (s *Server) secureSocket(path string) error {
	mode := fs.FileMode(0o600)
	if s.cfg.GID != NotSet {
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("set mode of workload api socket: %w", err)
	}
	if s.cfg.UID == NotSet && s.cfg.GID == NotSet {
		return nil
	}
	if err := os.Lchown(path, s.cfg.UID, s.cfg.GID); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("chown workload api socket to uid %d gid %d: %w (the proxy runs as uid %d; changing a file's owner needs root or CAP_CHOWN)",
				s.cfg.UID, s.cfg.GID, err, os.Geteuid())
		}
		return fmt.Errorf("chown workload api socket to uid %d gid %d: %w", s.cfg.UID, s.cfg.GID, err)
	}
	return nil
}

// removeSocket removes the socket file Run created, unless it has been
// replaced by something else since.
func (s *Server) removeSocket(sock fs.FileInfo) {
	fi, err := os.Lstat(s.cfg.Socket)
	if err != nil || !os.SameFile(fi, sock) {
		return
	}
	if err := os.Remove(s.cfg.Socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.logger.Warn(msgRemoveFailed, telemetry.KeyAddress, s.cfg.Socket, telemetry.KeyErr, err)
	}
}
