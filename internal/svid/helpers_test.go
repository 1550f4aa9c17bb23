package svid_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
	"github.com/bulwarkmesh/bulwark/internal/svid"
)

// start is the fake clock's start: whole seconds, so certificate times
// (second precision) compare exactly.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var td = spiffeid.RequireTrustDomainFromString("bulwark.test")

var (
	apiSvc = identity.ServiceRef{Namespace: "default", Name: "api"}
	webSvc = identity.ServiceRef{Namespace: "default", Name: "web"}
)

// hangGuard bounds every wait for the Manager, so that a bug shows as a
// failure rather than a hung test. It is never a timing assertion.
const hangGuard = 30 * time.Second

// errUnreachable is what the fake control plane returns while it is down.
var errUnreachable = errors.New("rpc error: code = Unavailable desc = connection refused")

func newStore(t testing.TB) store.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newCA returns a real workload CA of td in its own store.
func newCA(t testing.TB, c clock.Clock, svidTTL time.Duration) *ca.CA {
	t.Helper()
	authority, err := ca.New(context.Background(), ca.Config{
		TrustDomain: td,
		Store:       newStore(t),
		Keys:        keymanager.NewMemory(),
		Clock:       c,
		SVIDTTL:     svidTTL,
	})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return authority
}

// controlPlane implements svid.Issuer as the real control plane does, with
// a real CA and real join tokens, minus the transport. The test can take it
// down, make calls fail, and replace its answers.
type controlPlane struct {
	clock  *clock.Fake
	ca     *ca.CA
	tokens *jointoken.JoinTokens

	mu sync.Mutex
	// presented returns the SVID the caller presents in TLS on Renew.
	presented func() (*x509svid.SVID, error)
	// down makes every call fail with errUnreachable.
	down bool
	// renewErrs and attestErrs fail the next calls, one error each.
	renewErrs, attestErrs []error
	// answer, if set, replaces the SVID a Renew returns.
	answer func(pub crypto.PublicKey, id spiffeid.ID) (*svid.Issued, error)
	// gate, if set, holds each Renew until it is closed; entered is
	// signalled when a Renew waits on it.
	gate    chan struct{}
	entered chan struct{}

	renewCalls, attestCalls []time.Time
	// jwtErr fails every SignJWT; jwtAudiences records each call's.
	jwtErr       error
	jwtAudiences [][]string
}

var _ svid.Issuer = (*controlPlane)(nil)

func newControlPlane(t testing.TB, svidTTL time.Duration) *controlPlane {
	t.Helper()
	c := clock.NewFake(start)
	tokens, err := jointoken.New(jointoken.Config{Store: newStore(t), Clock: c})
	if err != nil {
		t.Fatalf("jointoken.New: %v", err)
	}
	return &controlPlane{clock: c, ca: newCA(t, c, svidTTL), tokens: tokens}
}

// token creates a join token for svc.
func (cp *controlPlane) token(t testing.TB, svc identity.ServiceRef) string {
	t.Helper()
	tok, _, err := cp.tokens.Create(context.Background(), jointoken.CreateRequest{Service: svc})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return tok
}

func (cp *controlPlane) set(fn func(cp *controlPlane)) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	fn(cp)
}

func (cp *controlPlane) calls() (renew, attest []time.Time) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]time.Time(nil), cp.renewCalls...), append([]time.Time(nil), cp.attestCalls...)
}

// Attest implements svid.Issuer like the control plane's Attest RPC.
func (cp *controlPlane) Attest(ctx context.Context, token string, csr []byte, service identity.ServiceRef) (*svid.Issued, error) {
	cp.mu.Lock()
	cp.attestCalls = append(cp.attestCalls, cp.clock.Now())
	if cp.down {
		cp.mu.Unlock()
		return nil, errUnreachable
	}
	if len(cp.attestErrs) > 0 {
		err := cp.attestErrs[0]
		cp.attestErrs = cp.attestErrs[1:]
		cp.mu.Unlock()
		return nil, err
	}
	cp.mu.Unlock()

	pub, err := ca.ParseCSR(csr)
	if err != nil {
		return nil, fmt.Errorf("%w: csr: %v", svid.ErrRejected, err)
	}
	res, err := cp.tokens.Attest(ctx, attest.Evidence{JoinToken: token, Service: service})
	if errors.Is(err, attest.ErrRejected) {
		return nil, fmt.Errorf("%w: join token rejected", svid.ErrRejected)
	}
	if err != nil {
		return nil, err
	}
	id, err := identity.WorkloadID(td, res.Service.Namespace, res.Account)
	if err != nil {
		return nil, err
	}
	chain, err := cp.ca.SignSVID(pub, id, 0)
	if err != nil {
		return nil, err
	}
	return &svid.Issued{Chain: chain, Bundle: cp.ca.Roots(), Instance: registry.NewInstanceName(res.Service)}, nil
}

// Renew implements svid.Issuer like the control plane's SignSVID RPC: the
// identity is the presented SVID's, which must verify and be unexpired.
func (cp *controlPlane) Renew(ctx context.Context, csr []byte) (*svid.Issued, error) {
	cp.mu.Lock()
	now := cp.clock.Now()
	cp.renewCalls = append(cp.renewCalls, now)
	gate, entered, presented, answer := cp.gate, cp.entered, cp.presented, cp.answer
	if cp.down {
		cp.mu.Unlock()
		return nil, errUnreachable
	}
	if len(cp.renewErrs) > 0 {
		err := cp.renewErrs[0]
		cp.renewErrs = cp.renewErrs[1:]
		cp.mu.Unlock()
		return nil, err
	}
	cp.mu.Unlock()

	if gate != nil {
		entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cur, err := presented()
	if err != nil {
		return nil, fmt.Errorf("tls: no client certificate: %v", err)
	}
	if _, _, err := x509svid.Verify(cur.Certificates, cp.ca.Bundle(), x509svid.WithTime(now)); err != nil {
		return nil, fmt.Errorf("tls: bad client certificate: %v", err)
	}
	pub, err := ca.ParseCSR(csr)
	if err != nil {
		return nil, fmt.Errorf("%w: csr: %v", svid.ErrRejected, err)
	}
	if answer != nil {
		return answer(pub, cur.ID)
	}
	chain, err := cp.ca.SignSVID(pub, cur.ID, 0)
	if err != nil {
		return nil, err
	}
	return &svid.Issued{Chain: chain, Bundle: cp.ca.Roots()}, nil
}

// SignJWT implements svid.Issuer like the control plane's SignJWTSVID RPC,
// minus the signature: the token names the presented SVID's ID and the
// audience.
func (cp *controlPlane) SignJWT(_ context.Context, audience []string) (string, error) {
	cp.mu.Lock()
	cp.jwtAudiences = append(cp.jwtAudiences, append([]string(nil), audience...))
	presented, down, jwtErr := cp.presented, cp.down, cp.jwtErr
	cp.mu.Unlock()
	if down {
		return "", errUnreachable
	}
	if jwtErr != nil {
		return "", jwtErr
	}
	cur, err := presented()
	if err != nil {
		return "", fmt.Errorf("tls: no client certificate: %v", err)
	}
	return "jwt-svid." + cur.ID.String() + "." + strings.Join(audience, ","), nil
}

// harness runs one Manager against a controlPlane.
type harness struct {
	cp        *controlPlane
	mgr       *svid.Manager
	done      chan error
	cancel    context.CancelFunc
	rotations atomic.Int32
	stopped   bool
}

// zeroJitter renews at exactly 50% of the lifetime.
func zeroJitter() float64 { return 0 }

// newHarness makes a Manager for cfg (Service, Issuer, Clock and Jitter
// default to apiSvc, cp, cp.clock and zeroJitter) without running it.
func newHarness(t testing.TB, cp *controlPlane, cfg svid.Config) *harness {
	t.Helper()
	if cfg.Service.IsZero() {
		cfg.Service = apiSvc
	}
	if cfg.Issuer == nil {
		cfg.Issuer = cp
	}
	if cfg.Clock == nil {
		cfg.Clock = cp.clock
	}
	if cfg.Jitter == nil {
		cfg.Jitter = zeroJitter
	}
	mgr, err := svid.New(cfg)
	if err != nil {
		t.Fatalf("svid.New: %v", err)
	}
	h := &harness{cp: cp, mgr: mgr, done: make(chan error, 1)}
	mgr.OnRotate(func() { h.rotations.Add(1) })
	cp.set(func(cp *controlPlane) { cp.presented = mgr.GetX509SVID })
	return h
}

// run starts Run and waits until the Manager has armed its first timer
// (renewal, or a retry), or Run has returned.
func (h *harness) run(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	t.Cleanup(func() { h.stop(t) })
	armed := h.cp.clock.TimerCreated()
	go func() { h.done <- h.mgr.Run(ctx) }()
	select {
	case <-armed:
	case err := <-h.done:
		h.done <- err // for result
	case <-time.After(hangGuard):
		t.Fatalf("Manager neither armed a timer nor returned")
	}
}

// start runs the Manager and fails the test unless it is running.
func (h *harness) start(t testing.TB) {
	t.Helper()
	h.run(t)
	select {
	case err := <-h.done:
		t.Fatalf("Run: returned %v at start, want it running", err)
	default:
	}
}

// result waits for Run to return and returns its error.
func (h *harness) result(t testing.TB) error {
	t.Helper()
	select {
	case err := <-h.done:
		h.stopped = true
		return err
	case <-time.After(hangGuard):
		t.Fatalf("Run did not return")
		return nil
	}
}

// stop cancels Run and checks that it returns nil (or the cancellation).
func (h *harness) stop(t testing.TB) {
	t.Helper()
	if h.stopped {
		return
	}
	h.stopped = true
	h.cancel()
	select {
	case err := <-h.done:
		// Cancelled while still attesting, Run may report the cause.
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run after cancel: got %v, want nil", err)
		}
	case <-time.After(hangGuard):
		t.Errorf("Run did not return after cancel")
	}
}

// step advances the clock by d, which must fire the Manager's timer, and
// waits until the Manager has armed its next one.
func (h *harness) step(t testing.TB, d time.Duration) {
	t.Helper()
	armed := h.cp.clock.TimerCreated()
	h.cp.clock.Advance(d)
	select {
	case <-armed:
	case err := <-h.done:
		t.Fatalf("Run returned %v after advancing %s, want it running", err, d)
	case <-time.After(hangGuard):
		t.Fatalf("after advancing the clock %s: the Manager armed no new timer", d)
	}
}

// stepTo advances the clock to t0 with step.
func (h *harness) stepTo(t testing.TB, t0 time.Time) {
	t.Helper()
	h.step(t, t0.Sub(h.cp.clock.Now()))
}

// wait advances the clock by d, which must not fire the Manager's timer.
func (h *harness) wait(t testing.TB, d time.Duration) {
	t.Helper()
	h.cp.clock.Advance(d)
	if got := h.cp.clock.Timers(); got != 1 {
		t.Fatalf("after advancing %s: got %d pending timers, want the Manager's 1 still pending", d, got)
	}
}

// current returns the Manager's SVID.
func (h *harness) current(t testing.TB) *x509svid.SVID {
	t.Helper()
	s, err := h.mgr.GetX509SVID()
	if err != nil {
		t.Fatalf("GetX509SVID: %v", err)
	}
	return s
}

func serial(s *x509svid.SVID) string { return s.Certificates[0].SerialNumber.Text(16) }

// renewAt returns the time at fraction frac of s's lifetime.
func renewAt(s *x509svid.SVID, frac float64) time.Time {
	leaf := s.Certificates[0]
	return leaf.NotBefore.Add(time.Duration(float64(leaf.NotAfter.Sub(leaf.NotBefore)) * frac))
}

// gaps returns the durations between consecutive times.
func gaps(ts []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]))
	}
	return out
}

func isReady(m *svid.Manager) bool {
	select {
	case <-m.Ready():
		return true
	default:
		return false
	}
}

func workloadID(t testing.TB, ns, account string) spiffeid.ID {
	t.Helper()
	id, err := identity.WorkloadID(td, ns, account)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func certsEqual(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
