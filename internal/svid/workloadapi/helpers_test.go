package workloadapi_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/svid/workloadapi"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("bulwark.test")
	appID = spiffeid.RequireFromPath(td, "/ns/default/sa/api")
)

// hangGuard bounds every wait, so that a bug shows as a failure rather than
// a hung test. It is never a timing assertion.
const hangGuard = 30 * time.Second

// must panics on errors that cannot happen with a working crypto/rand; it
// lets the CA serve the Example too, which has no testing.TB.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// testCA is a real CA: an ECDSA P-256 root that signs X509-SVIDs directly,
// and an ECDSA P-256 JWT signing key, made fresh for each test.
type testCA struct {
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	jwtKey  *ecdsa.PrivateKey
	jwtKID  string
}

func newTestCA() *testCA {
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "bulwark test root"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key))
	return &testCA{
		root:    must(x509.ParseCertificate(der)),
		rootKey: key,
		jwtKey:  must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)),
		jwtKID:  "jwt-key-1",
	}
}

func newSerial() *big.Int {
	return must(rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)))
}

// issue signs a fresh X509-SVID of id.
func (ca *testCA) issue(id spiffeid.ID) *x509svid.SVID {
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, ca.root, key.Public(), ca.rootKey))
	return &x509svid.SVID{
		ID:           id,
		Certificates: []*x509.Certificate{must(x509.ParseCertificate(der))},
		PrivateKey:   key,
	}
}

func (ca *testCA) x509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.root})
}

func (ca *testCA) jwtBundle() *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(td, map[string]crypto.PublicKey{ca.jwtKID: ca.jwtKey.Public()})
}

// signJWT signs a JWT-SVID of sub for audience, expiring at exp, with key
// under kid.
func signJWT(key crypto.Signer, kid string, sub spiffeid.ID, audience []string, exp time.Time) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		new(jose.SignerOptions).WithType("JWT"),
	)
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(jwt.Claims{
		Subject:  sub.String(),
		Audience: jwt.Audience(audience),
		Expiry:   jwt.NewNumericDate(exp),
	}).Serialize()
}

// fakeSource is the Source seam of the design: what svid.Manager provides,
// on a real CA and a real JWT signer, with the control plane's minting done
// in process. Tests rotate the SVID, signal changes, count mints and make
// the Source unavailable.
type fakeSource struct {
	ca     *testCA
	id     spiffeid.ID
	clock  clock.Clock
	jwtTTL time.Duration

	mu       sync.Mutex
	svid     *x509svid.SVID // nil: not ready
	changed  chan struct{}
	mints    [][]string
	tokens   []string
	mintWith func(audience []string) (string, error) // overrides signing
}

var _ workloadapi.Source = (*fakeSource)(nil)

// newFakeSource returns a ready Source of appID. Tokens expire jwtTTL after
// c's time, so the JWT-SVID cache can be driven by a fake clock.
func newFakeSource(c clock.Clock) *fakeSource {
	ca := newTestCA()
	return &fakeSource{
		ca:      ca,
		id:      appID,
		clock:   c,
		jwtTTL:  5 * time.Minute,
		svid:    ca.issue(appID),
		changed: make(chan struct{}),
	}
}

func (f *fakeSource) GetX509SVID() (*x509svid.SVID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.svid == nil {
		return nil, errors.New("no svid yet")
	}
	return f.svid, nil
}

func (f *fakeSource) GetX509BundleForTrustDomain(d spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if d != td {
		return nil, fmt.Errorf("no x509 bundle for %s", d)
	}
	return f.ca.x509Bundle(), nil
}

func (f *fakeSource) GetJWTBundleForTrustDomain(d spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	if d != td {
		return nil, fmt.Errorf("no jwt bundle for %s", d)
	}
	return f.ca.jwtBundle(), nil
}

func (f *fakeSource) MintJWTSVID(ctx context.Context, audience []string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mints = append(f.mints, audience)
	var (
		tok string
		err error
	)
	if f.mintWith != nil {
		tok, err = f.mintWith(audience)
	} else {
		tok, err = signJWT(f.ca.jwtKey, f.ca.jwtKID, f.id, audience, f.clock.Now().Add(f.jwtTTL))
	}
	if err == nil {
		f.tokens = append(f.tokens, tok)
	}
	return tok, err
}

func (f *fakeSource) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// notifyLocked closes the Changed channel.
func (f *fakeSource) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// rotate installs a new SVID and returns it.
func (f *fakeSource) rotate() *x509svid.SVID {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svid = f.ca.issue(f.id)
	f.notifyLocked()
	return f.svid
}

// notify signals a change without changing anything.
func (f *fakeSource) notify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifyLocked()
}

// setReady installs an SVID (ready) or removes it (not ready).
func (f *fakeSource) setReady(ready bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svid = nil
	if ready {
		f.svid = f.ca.issue(f.id)
	}
	f.notifyLocked()
}

func (f *fakeSource) current() *x509svid.SVID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.svid
}

func (f *fakeSource) mintCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mints)
}

func (f *fakeSource) mintedTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

// logSink records log lines as text.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(sinkWriter{s}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type sinkWriter struct{ s *logSink }

func (w sinkWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.lines = append(w.s.lines, string(p))
	return len(p), nil
}

// matching returns the lines that contain every one of parts.
func (s *logSink) matching(parts ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// mustNotContain fails when a log line contains one of the secrets.
func (s *logSink) mustNotContain(t *testing.T, secrets ...string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		for _, sec := range secrets {
			if sec != "" && strings.Contains(l, sec) {
				t.Errorf("log line contains a secret: %q", l)
			}
		}
	}
}

// running is a Server being Run by a test.
type running struct {
	srv    *workloadapi.Server
	socket string
	addr   string // go-spiffe address: unix:///path
	clock  *clock.Fake
	logs   *logSink
	cancel context.CancelFunc
	done   chan error

	once   sync.Once
	runErr error
}

// testConfig is a Config for src on a socket in a fresh directory: UID and
// GID not set, a fake clock, a recording logger.
func testConfig(t *testing.T, src workloadapi.Source, c *clock.Fake, logs *logSink) workloadapi.Config {
	return workloadapi.Config{
		Socket: filepath.Join(t.TempDir(), "api.sock"),
		UID:    workloadapi.NotSet,
		GID:    workloadapi.NotSet,
		Source: src,
		Logger: logs.logger(),
		Clock:  c,
	}
}

// start runs a Server with testConfig changed by edit (may be nil) and waits
// until it listens. The server is stopped at cleanup.
func start(t *testing.T, src workloadapi.Source, c *clock.Fake, edit func(*workloadapi.Config)) *running {
	t.Helper()
	logs := &logSink{}
	cfg := testConfig(t, src, c, logs)
	if edit != nil {
		edit(&cfg)
	}
	srv, err := workloadapi.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{
		srv: srv, socket: cfg.Socket, addr: "unix://" + cfg.Socket,
		clock: c, logs: logs, cancel: cancel, done: make(chan error, 1),
	}
	go func() { r.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-r.done:
		cancel()
		t.Fatalf("Run returned before listening: %v", err)
	case <-time.After(hangGuard):
		cancel()
		t.Fatal("server not ready")
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// stop cancels Run and returns its error. It is idempotent.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.runErr = <-r.done:
		case <-time.After(hangGuard):
			r.runErr = errors.New("Run did not return after cancel")
		}
	})
	return r.runErr
}

// rawClient is a plain gRPC client of the socket, for requests go-spiffe
// would not send.
func rawClient(t *testing.T, socket string) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

// withHeader adds the Workload API security header to ctx.
func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

// withHeaderValue adds the security header with value v to ctx.
func withHeaderValue(ctx context.Context, v string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", v)
}

// timeout returns a context bounded by hangGuard.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	t.Cleanup(cancel)
	return ctx
}

// fakeNow is a fake clock's start: now, in whole seconds, because JWT
// expiry has second precision and the go-spiffe client checks it against
// the wall clock.
func fakeNow() *clock.Fake {
	return clock.NewFake(time.Now().Truncate(time.Second))
}
