package rotation_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/ca/rotation"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// fakeFleet is the connected proxies, set by the test. It counts the calls
// of Connected, so a test sees when the Manager checked.
type fakeFleet struct {
	mu      sync.Mutex
	proxies []rotation.Proxy
	err     error
	calls   int
}

var _ rotation.Fleet = (*fakeFleet)(nil)

func (f *fakeFleet) Connected(context.Context) ([]rotation.Proxy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return append([]rotation.Proxy(nil), f.proxies...), nil
}

func (f *fakeFleet) set(proxies ...rotation.Proxy) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.proxies = proxies
}

func (f *fakeFleet) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeFleet) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// env is one control plane: a workload CA on a real store with a fake
// clock, and a Manager over a fake fleet.
type env struct {
	store store.Store
	clock *clock.Fake
	ca    *ca.CA
	fleet *fakeFleet
	m     *rotation.Manager
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	c, err := ca.New(context.Background(), ca.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("bulwark.test"),
		Store:       st, Keys: keymanager.NewMemory(), Clock: clk,
	})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	fleet := &fakeFleet{}
	m, err := rotation.New(rotation.Config{CA: c, Fleet: fleet, Clock: clk})
	if err != nil {
		t.Fatalf("rotation.New: %v", err)
	}
	return &env{store: st, clock: clk, ca: c, fleet: fleet, m: m}
}

// revision returns the store's current revision.
func (e *env) revision(t *testing.T) int64 {
	t.Helper()
	rev, err := e.store.Txn(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// step runs one Step and fails the test on error.
func (e *env) step(t *testing.T) {
	t.Helper()
	if err := e.m.Step(context.Background()); err != nil {
		t.Fatalf("Step: %v", err)
	}
}

// authority is the hex authority key ID of the CA's signing intermediate,
// what a proxy holding a current SVID reports.
func (e *env) authority() string { return ca.KeyID(e.ca.SigningAuthority()) }

// state is what a test compares to see whether a Step changed the CA.
type state struct {
	Phase         ca.Phase
	BundleVersion int64
	Authority     string
	Roots         int
}

func (e *env) state() state {
	return state{Phase: e.ca.Rotation().Phase, BundleVersion: e.ca.BundleVersion(), Authority: e.authority(), Roots: len(e.ca.Roots())}
}

func TestNewConfigErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		cfg  rotation.Config
	}{
		{"missing-ca", rotation.Config{Fleet: e.fleet}},
		{"missing-fleet", rotation.Config{CA: e.ca}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := rotation.New(tt.cfg); err == nil {
				t.Error("New: got no error, want one")
			}
		})
	}
}

func TestStepIdle(t *testing.T) {
	e := newEnv(t)
	e.fleet.set(rotation.Proxy{Name: "default/web-1", BundleVersion: 1, SVIDAuthority: e.authority()})
	before, rev := e.state(), e.revision(t)
	e.clock.Advance(30 * 24 * time.Hour)
	e.step(t)
	if diff := cmp.Diff(before, e.state()); diff != "" {
		t.Errorf("CA changed by an idle Step (-before +after):\n%s", diff)
	}
	if got := e.revision(t); got != rev {
		t.Errorf("store revision: got %d, want %d", got, rev)
	}
}

func TestStepDue(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name    string
		advance time.Duration
		// wantPhase and wantNewIntermediate are the CA after one Step.
		wantPhase           ca.Phase
		wantNewIntermediate bool
	}{
		{"intermediate-fresh", 0, ca.PhaseNone, false},
		{"intermediate-just-under-two-thirds", 243 * day, ca.PhaseNone, false},
		{"intermediate-past-two-thirds", 244 * day, ca.PhaseNone, true},
		{"intermediate-expired", 400 * day, ca.PhaseNone, true},
		// The root goes first: its rotation replaces the intermediate.
		{"root-past-two-thirds", 2434 * day, ca.PhasePrepared, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			before := e.state()
			e.clock.Advance(tt.advance)
			e.step(t)
			after := e.state()
			if after.Phase != tt.wantPhase {
				t.Errorf("Phase: got %q, want %q", after.Phase, tt.wantPhase)
			}
			if got := after.Authority != before.Authority; got != tt.wantNewIntermediate {
				t.Errorf("new intermediate: got %v, want %v", got, tt.wantNewIntermediate)
			}
			if tt.wantNewIntermediate {
				if after.Roots != 1 || after.BundleVersion != before.BundleVersion {
					t.Errorf("after an intermediate rotation: got %d roots, bundle version %d, want 1 and %d", after.Roots, after.BundleVersion, before.BundleVersion)
				}
				if e.ca.IntermediateDue() {
					t.Error("IntermediateDue after the rotation: got true, want false")
				}
				// The next Step has nothing to do.
				mid := e.state()
				e.step(t)
				if diff := cmp.Diff(mid, e.state()); diff != "" {
					t.Errorf("second Step changed the CA (-before +after):\n%s", diff)
				}
			}
		})
	}
}

func TestStepPrepared(t *testing.T) {
	tests := []struct {
		name string
		// proxies returns the fleet; v is the prepared bundle version.
		proxies      func(v int64) []rotation.Proxy
		wantActivate bool
		wantWaiting  []string
	}{
		{"no-proxies", func(int64) []rotation.Proxy { return nil }, true, nil},
		{"all-acked", func(v int64) []rotation.Proxy {
			return []rotation.Proxy{{Name: "default/web-1", BundleVersion: v}, {Name: "default/api-1", BundleVersion: v}}
		}, true, nil},
		{"acked-a-later-version", func(v int64) []rotation.Proxy {
			return []rotation.Proxy{{Name: "default/web-1", BundleVersion: v + 1}}
		}, true, nil},
		{"one-laggard", func(v int64) []rotation.Proxy {
			return []rotation.Proxy{{Name: "default/web-1", BundleVersion: v}, {Name: "default/api-1", BundleVersion: v - 1}}
		}, false, []string{"default/api-1"}},
		{"laggards-sorted", func(v int64) []rotation.Proxy {
			return []rotation.Proxy{{Name: "shop/cart-1", BundleVersion: v - 1}, {Name: "default/web-1", BundleVersion: v}, {Name: "default/api-1"}}
		}, false, []string{"default/api-1", "shop/cart-1"}},
		{"never-acked", func(int64) []rotation.Proxy {
			return []rotation.Proxy{{Name: "default/new-1"}}
		}, false, []string{"default/new-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if err := e.m.StartRoot(context.Background()); err != nil {
				t.Fatalf("StartRoot: %v", err)
			}
			v := e.ca.BundleVersion()
			e.fleet.set(tt.proxies(v)...)
			st, err := e.m.Status(context.Background())
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			if diff := cmp.Diff(tt.wantWaiting, st.Waiting, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Status().Waiting (-want +got):\n%s", diff)
			}
			before, rev := e.state(), e.revision(t)
			e.step(t)
			after := e.state()
			if !tt.wantActivate {
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("Step while waiting changed the CA (-before +after):\n%s", diff)
				}
				if got := e.revision(t); got != rev {
					t.Errorf("store revision: got %d, want %d", got, rev)
				}
				return
			}
			if after.Phase != ca.PhaseActivated {
				t.Errorf("Phase: got %q, want %q", after.Phase, ca.PhaseActivated)
			}
			if after.Authority == before.Authority {
				t.Error("SigningAuthority: unchanged, want the new intermediate's")
			}
		})
	}
}

func TestStepActivated(t *testing.T) {
	tests := []struct {
		name string
		// sinceRetireAfter is the time of the Step relative to
		// RetireAfter.
		sinceRetireAfter time.Duration
		// laggard adds a proxy still on the old intermediate.
		laggard    bool
		wantRetire bool
	}{
		{"renewed-before-retire-after", -time.Second, false, false},
		{"renewed-at-retire-after", 0, false, true},
		{"laggard-before-retire-after", -time.Second, true, false},
		{"laggard-at-retire-after", 0, true, false},
		{"laggard-grace-almost-over", time.Minute - time.Second, true, false},
		{"laggard-grace-over", time.Minute, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			oldAuthority := e.authority()
			if err := e.ca.PrepareRoot(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := e.ca.ActivateRoot(context.Background()); err != nil {
				t.Fatal(err)
			}
			v := e.ca.BundleVersion()
			proxies := []rotation.Proxy{{Name: "default/web-1", BundleVersion: v, SVIDAuthority: e.authority()}}
			var wantWaiting []string
			if tt.laggard {
				proxies = append(proxies, rotation.Proxy{Name: "default/api-1", BundleVersion: v, SVIDAuthority: oldAuthority})
				wantWaiting = []string{"default/api-1"}
			}
			e.fleet.set(proxies...)
			e.clock.Advance(e.ca.Rotation().RetireAfter.Add(tt.sinceRetireAfter).Sub(e.clock.Now()))

			st, err := e.m.Status(context.Background())
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			if diff := cmp.Diff(wantWaiting, st.Waiting, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Status().Waiting (-want +got):\n%s", diff)
			}
			before, rev := e.state(), e.revision(t)
			e.step(t)
			after := e.state()
			if !tt.wantRetire {
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("Step while waiting changed the CA (-before +after):\n%s", diff)
				}
				if got := e.revision(t); got != rev {
					t.Errorf("store revision: got %d, want %d", got, rev)
				}
				return
			}
			if after.Phase != ca.PhaseNone || after.Roots != 1 || after.BundleVersion != v+1 {
				t.Errorf("after retirement: got phase %q, %d roots, bundle version %d, want none, 1, %d", after.Phase, after.Roots, after.BundleVersion, v+1)
			}
		})
	}
}

func TestStepFleetError(t *testing.T) {
	errFleet := errors.New("registry unavailable")
	tests := []struct {
		name  string
		setup func(t *testing.T, e *env)
	}{
		// Each setup leaves a rotation that would move on with an
		// empty fleet.
		{"prepared", func(t *testing.T, e *env) {
			if err := e.ca.PrepareRoot(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
		{"activated-past-grace", func(t *testing.T, e *env) {
			if err := e.ca.PrepareRoot(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := e.ca.ActivateRoot(context.Background()); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(e.ca.Rotation().RetireAfter.Add(time.Hour).Sub(e.clock.Now()))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tt.setup(t, e)
			e.fleet.fail(errFleet)
			before, rev := e.state(), e.revision(t)
			if err := e.m.Step(context.Background()); !errors.Is(err, errFleet) {
				t.Fatalf("Step: got %v, want an error wrapping %v", err, errFleet)
			}
			if _, err := e.m.Status(context.Background()); !errors.Is(err, errFleet) {
				t.Errorf("Status: got %v, want an error wrapping %v", err, errFleet)
			}
			if diff := cmp.Diff(before, e.state()); diff != "" {
				t.Errorf("CA changed (-before +after):\n%s", diff)
			}
			if got := e.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d", got, rev)
			}
			// Once the fleet answers, the same Step moves on.
			e.fleet.fail(nil)
			e.step(t)
			if diff := cmp.Diff(before, e.state()); diff == "" {
				t.Error("Step after the fleet recovered changed nothing, want the next phase")
			}
		})
	}
}

func TestStatusCounts(t *testing.T) {
	e := newEnv(t)
	if err := e.ca.PrepareRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	auth := e.authority()
	e.fleet.set(
		rotation.Proxy{Name: "default/web-1", BundleVersion: 2, SVIDAuthority: auth},
		rotation.Proxy{Name: "default/web-2", BundleVersion: 2, SVIDAuthority: auth},
		rotation.Proxy{Name: "default/api-1", BundleVersion: 1, SVIDAuthority: "00ff"},
	)
	st, err := e.m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := rotation.Status{
		Connected:      3,
		BundleVersions: map[int64]int{1: 1, 2: 2},
		Authorities:    map[string]int{auth: 2, "00ff": 1},
		Waiting:        []string{"default/api-1"},
	}
	if diff := cmp.Diff(want, st, cmpopts.IgnoreFields(rotation.Status{}, "Rotation")); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
	if st.Rotation.Phase != ca.PhasePrepared || st.Rotation.BundleVersion != 2 || len(st.Rotation.Roots) != 2 {
		t.Errorf("Status().Rotation: got phase %q, version %d, %d roots, want prepared, 2, 2", st.Rotation.Phase, st.Rotation.BundleVersion, len(st.Rotation.Roots))
	}
}

// TestFullRotation drives a root rotation with Steps only, the fleet
// following the snapshots as proxies do.
func TestFullRotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	oldAuthority := e.authority()
	fleetAt := func(version int64, authority string) {
		e.fleet.set(
			rotation.Proxy{Name: "default/web-1", BundleVersion: version, SVIDAuthority: authority},
			rotation.Proxy{Name: "default/api-1", BundleVersion: version, SVIDAuthority: authority},
		)
	}
	fleetAt(1, oldAuthority)
	if err := e.m.StartRoot(ctx); err != nil {
		t.Fatalf("StartRoot: %v", err)
	}
	e.step(t)
	if got := e.ca.Rotation().Phase; got != ca.PhasePrepared {
		t.Fatalf("before the proxies ACK: Phase: got %q, want prepared", got)
	}
	fleetAt(2, oldAuthority)
	e.step(t)
	if got := e.ca.Rotation().Phase; got != ca.PhaseActivated {
		t.Fatalf("after the proxies ACKed: Phase: got %q, want activated", got)
	}
	newAuthority := e.authority()
	e.step(t) // waits: RetireAfter is ahead and the proxies are on the old chain
	fleetAt(2, newAuthority)
	e.clock.Advance(e.ca.Rotation().RetireAfter.Sub(e.clock.Now()))
	e.step(t)
	if got, want := e.state(), (state{Phase: ca.PhaseNone, BundleVersion: 3, Authority: newAuthority, Roots: 1}); got != want {
		t.Errorf("after the rotation: got %+v, want %+v", got, want)
	}
}

// waitFor waits for c, failing the test after a (wall-clock) safety
// timeout rather than hanging.
func waitFor(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestRun(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	armed := e.clock.TimerCreated()
	go func() { done <- e.m.Run(ctx) }()

	// Run steps at once, then arms its interval timer.
	waitFor(t, armed, "the first interval timer")
	if got := e.ca.Rotation().Phase; got != ca.PhaseNone {
		t.Fatalf("Phase: got %q, want none", got)
	}

	// StartRoot nudges: Run steps without waiting for the interval, and
	// the fleet (a laggard) holds the rotation in prepared.
	e.fleet.set(rotation.Proxy{Name: "default/web-1", BundleVersion: 1})
	calls := e.fleet.callCount()
	armed = e.clock.TimerCreated()
	if err := e.m.StartRoot(ctx); err != nil {
		t.Fatalf("StartRoot: %v", err)
	}
	waitFor(t, armed, "the timer after the nudge")
	if got := e.fleet.callCount(); got != calls+1 {
		t.Errorf("fleet checks after the nudge: got %d, want %d", got, calls+1)
	}
	if got := e.ca.Rotation().Phase; got != ca.PhasePrepared {
		t.Fatalf("Phase after the nudge: got %q, want prepared (the laggard holds it)", got)
	}

	// The proxy ACKs; a Nudge (as the control plane sends on an ACK)
	// activates at once, the clock standing still.
	e.fleet.set(rotation.Proxy{Name: "default/web-1", BundleVersion: 2})
	armed = e.clock.TimerCreated()
	e.m.Nudge()
	waitFor(t, armed, "the timer after the second nudge")
	if got := e.ca.Rotation().Phase; got != ca.PhaseActivated {
		t.Fatalf("Phase after the ACK and a nudge: got %q, want activated", got)
	}

	// Without a nudge, the interval timer makes the next check.
	e.fleet.set(rotation.Proxy{Name: "default/web-1", BundleVersion: 2, SVIDAuthority: e.authority()})
	armed = e.clock.TimerCreated()
	e.clock.Advance(e.ca.Rotation().RetireAfter.Sub(e.clock.Now()))
	waitFor(t, armed, "the timer after the interval")
	if got := e.ca.Rotation().Phase; got != ca.PhaseNone {
		t.Errorf("Phase after RetireAfter: got %q, want none (retired)", got)
	}

	// Run ends when ctx is cancelled, and leaves no timer behind.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: got %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if got := e.clock.Timers(); got != 0 {
		t.Errorf("timers left after Run returned: got %d, want 0", got)
	}
}

func TestRunFailedStepRetries(t *testing.T) {
	e := newEnv(t)
	if err := e.ca.PrepareRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.fleet.fail(errors.New("registry unavailable"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	armed := e.clock.TimerCreated()
	go func() { done <- e.m.Run(ctx) }()
	waitFor(t, armed, "the first interval timer")
	if got := e.ca.Rotation().Phase; got != ca.PhasePrepared {
		t.Fatalf("Phase after a failed step: got %q, want prepared", got)
	}
	e.fleet.fail(nil)
	armed = e.clock.TimerCreated()
	e.clock.Advance(rotation.DefaultInterval)
	waitFor(t, armed, "the timer after the retry")
	if got := e.ca.Rotation().Phase; got != ca.PhaseActivated {
		t.Errorf("Phase after the retry: got %q, want activated", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
