package registry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// start is the fake clock's start time.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var td = spiffeid.RequireTrustDomainFromString("bulwark.test")

// Registry timings of the fixture.
const (
	grace     = 30 * time.Second
	retention = time.Hour
)

type fixture struct {
	store store.Store
	clock *clock.Fake
	reg   *registry.Registry
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	f := &fixture{store: s, clock: clock.NewFake(start)}
	f.reg, err = registry.New(registry.Config{Store: s, Clock: f.clock, Grace: grace, Retention: retention})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return f
}

func (f *fixture) revision(t testing.TB) int64 {
	t.Helper()
	rev, err := f.store.Txn(context.Background(), nil, nil)
	if err != nil {
		t.Fatalf("read revision: %v", err)
	}
	return rev
}

func (f *fixture) addService(t testing.TB, account string, svc identity.ServiceRef) {
	t.Helper()
	if err := f.reg.AddService(context.Background(), account, svc); err != nil {
		t.Fatalf("AddService(%s, %s): %v", account, svc, err)
	}
}

func (f *fixture) update(t testing.TB, ns, instance string, fn func(p *registry.Proxy)) {
	t.Helper()
	if err := f.reg.UpdateProxy(context.Background(), ns, instance, fn); err != nil {
		t.Fatalf("UpdateProxy(%s/%s): %v", ns, instance, err)
	}
}

// proxies returns the proxy records keyed by "namespace/instance".
func (f *fixture) proxies(t testing.TB) map[string]registry.Proxy {
	t.Helper()
	list, _, err := f.reg.Proxies(context.Background())
	if err != nil {
		t.Fatalf("Proxies: %v", err)
	}
	out := make(map[string]registry.Proxy, len(list))
	for _, p := range list {
		out[p.Namespace+"/"+p.Instance] = p
	}
	return out
}

func svc(ns, name string) identity.ServiceRef { return identity.ServiceRef{Namespace: ns, Name: name} }

func workload(t testing.TB, ns, account string) identity.Workload {
	t.Helper()
	id, err := identity.WorkloadID(td, ns, account)
	if err != nil {
		t.Fatal(err)
	}
	return identity.Workload{ID: id, Namespace: ns, Account: account}
}

func TestNewDefaults(t *testing.T) {
	if _, err := registry.New(registry.Config{}); err == nil {
		t.Errorf("New without a store: got nil error, want an error")
	}
	f := newFixture(t)
	reg, err := registry.New(registry.Config{Store: f.store})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if got, want := reg.Grace(), 30*time.Second; got != want {
		t.Errorf("default Grace: got %s, want %s", got, want)
	}
}

func TestAddServiceIdempotent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.addService(t, "api", svc("default", "api"))
	rev := f.revision(t)

	f.addService(t, "api", svc("default", "api"))
	if got := f.revision(t); got != rev {
		t.Errorf("store revision after adding a known service again: got %d, want %d (no write)", got, rev)
	}
	f.addService(t, "api", svc("default", "api-admin"))

	got, err := f.reg.Identities(ctx)
	if err != nil {
		t.Fatalf("Identities: %v", err)
	}
	want := map[string][]string{"default/api": {"default/api", "default/api-admin"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Identities (-want +got):\n%s", diff)
	}
}

func TestAddServiceConcurrent(t *testing.T) {
	const n = 8
	ctx := context.Background()
	f := newFixture(t)
	var (
		wg    sync.WaitGroup
		begin = make(chan struct{})
		errs  = make([]error, n)
		want  []string
	)
	for i := range n {
		s := svc("default", fmt.Sprintf("svc-%d", i))
		want = append(want, s.String())
		wg.Go(func() {
			<-begin
			errs[i] = f.reg.AddService(ctx, "shared", s)
		})
	}
	close(begin)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("AddService %d: got error %v, want nil", i, err)
		}
	}

	got, err := f.reg.Identities(ctx)
	if err != nil {
		t.Fatalf("Identities: %v", err)
	}
	slices.Sort(want)
	if diff := cmp.Diff(map[string][]string{"default/shared": want}, got); diff != "" {
		t.Errorf("Identities after concurrent adds (-want +got):\n%s", diff)
	}
}

func TestServes(t *testing.T) {
	f := newFixture(t)
	f.addService(t, "api", svc("default", "api"))
	f.addService(t, "api", svc("default", "api-admin"))
	f.addService(t, "api", svc("other", "api"))

	tests := []struct {
		name string
		w    identity.Workload
		svc  identity.ServiceRef
		want bool
	}{
		{name: "attested_service", w: workload(t, "default", "api"), svc: svc("default", "api"), want: true},
		{name: "second_attested_service", w: workload(t, "default", "api"), svc: svc("default", "api-admin"), want: true},
		{name: "other_service_same_namespace", w: workload(t, "default", "api"), svc: svc("default", "db"), want: false},
		{name: "namespace_mismatch", w: workload(t, "default", "api"), svc: svc("other", "api"), want: false},
		{name: "same_account_other_namespace", w: workload(t, "other", "api"), svc: svc("other", "api"), want: true},
		{name: "other_namespace_cannot_claim_default", w: workload(t, "other", "api"), svc: svc("default", "api"), want: false},
		{name: "unknown_identity", w: workload(t, "default", "web"), svc: svc("default", "api"), want: false},
		{name: "service_prefix_is_not_service", w: workload(t, "default", "api"), svc: svc("default", "ap"), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.reg.Serves(context.Background(), tt.w, tt.svc)
			if err != nil {
				t.Fatalf("Serves: got error %v, want nil", err)
			}
			if got != tt.want {
				t.Errorf("Serves(%s/%s, %s): got %v, want %v", tt.w.Namespace, tt.w.Account, tt.svc, got, tt.want)
			}
		})
	}
}

func TestUpdateProxy(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()

	// Create: a missing record starts as a zero record with its name.
	rev0 := f.revision(t)
	f.update(t, "default", "api-abc", func(p *registry.Proxy) {
		p.Service = "api"
		p.Address = "127.0.0.1:15006"
		p.Connected = true
		p.Live = true
		p.LastSeen = now
	})
	want := registry.Proxy{Instance: "api-abc", Namespace: "default", Service: "api", Address: "127.0.0.1:15006", Connected: true, Live: true, LastSeen: now}
	if diff := cmp.Diff(map[string]registry.Proxy{"default/api-abc": want}, f.proxies(t)); diff != "" {
		t.Errorf("after create (-want +got):\n%s", diff)
	}
	rev1 := f.revision(t)
	if rev1 != rev0+1 {
		t.Errorf("revision after create: got %d, want %d", rev1, rev0+1)
	}

	// Update: fn sees the stored record.
	var seen registry.Proxy
	f.update(t, "default", "api-abc", func(p *registry.Proxy) {
		seen = *p
		p.SnapshotVersion = 7
	})
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("record passed to fn (-want +got):\n%s", diff)
	}
	want.SnapshotVersion = 7
	if diff := cmp.Diff(map[string]registry.Proxy{"default/api-abc": want}, f.proxies(t)); diff != "" {
		t.Errorf("after update (-want +got):\n%s", diff)
	}
	rev2 := f.revision(t)
	if rev2 != rev1+1 {
		t.Errorf("revision after update: got %d, want %d", rev2, rev1+1)
	}

	// No-op: fn that changes nothing writes nothing.
	tests := []struct {
		name string
		fn   func(p *registry.Proxy)
	}{
		{name: "fn_does_nothing", fn: func(*registry.Proxy) {}},
		{name: "fn_sets_same_values", fn: func(p *registry.Proxy) {
			p.Connected = true
			p.LastSeen = now
			p.SnapshotVersion = 7
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.update(t, "default", "api-abc", tt.fn)
			if got := f.revision(t); got != rev2 {
				t.Errorf("revision after a no-op update: got %d, want %d", got, rev2)
			}
		})
	}
}

func TestUpdateProxyConcurrent(t *testing.T) {
	const n = 8
	f := newFixture(t)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := f.reg.UpdateProxy(context.Background(), "default", "api-abc", func(p *registry.Proxy) { p.SnapshotVersion++ }); err != nil {
				t.Errorf("UpdateProxy: %v", err)
			}
		})
	}
	wg.Wait()
	if got := f.proxies(t)["default/api-abc"].SnapshotVersion; got != n {
		t.Errorf("after %d concurrent increments: got %d, want %d (no lost update)", n, got, n)
	}
}

func TestProxiesSorted(t *testing.T) {
	f := newFixture(t)
	for _, key := range []string{"shop/cart-1", "shop-eu/cart-1", "default/web-2", "default/api-1", "default/web-1", "default/web"} {
		ns, inst, _ := strings.Cut(key, "/")
		f.update(t, ns, inst, func(p *registry.Proxy) { p.Service = "x" })
	}
	list, _, err := f.reg.Proxies(context.Background())
	if err != nil {
		t.Fatalf("Proxies: %v", err)
	}
	var got []string
	for _, p := range list {
		got = append(got, p.Namespace+"/"+p.Instance)
	}
	// By namespace, then instance: "shop" before "shop-eu".
	want := []string{"default/api-1", "default/web", "default/web-1", "default/web-2", "shop/cart-1", "shop-eu/cart-1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Proxies order (-want +got):\n%s", diff)
	}
}

func TestMarkAllDisconnected(t *testing.T) {
	f := newFixture(t)
	old := start.Add(-time.Hour)
	f.update(t, "default", "connected", func(p *registry.Proxy) {
		p.Connected, p.Live, p.LastSeen, p.Address = true, true, old, "10.0.0.1:15006"
	})
	f.update(t, "default", "client-only", func(p *registry.Proxy) {
		p.Connected, p.Live, p.LastSeen = true, false, old
	})
	f.update(t, "default", "gone", func(p *registry.Proxy) {
		p.Connected, p.Live, p.LastSeen = false, false, old
	})
	f.clock.Advance(time.Minute)
	now := f.clock.Now()

	if err := f.reg.MarkAllDisconnected(context.Background()); err != nil {
		t.Fatalf("MarkAllDisconnected: %v", err)
	}
	want := map[string]registry.Proxy{
		// Stays an endpoint for the grace period.
		"default/connected":   {Namespace: "default", Instance: "connected", Connected: false, Live: true, LastSeen: now, Address: "10.0.0.1:15006"},
		"default/client-only": {Namespace: "default", Instance: "client-only", Connected: false, Live: false, LastSeen: now},
		// Untouched: it was already disconnected.
		"default/gone": {Namespace: "default", Instance: "gone", Connected: false, Live: false, LastSeen: old},
	}
	if diff := cmp.Diff(want, f.proxies(t)); diff != "" {
		t.Errorf("after MarkAllDisconnected (-want +got):\n%s", diff)
	}

	// Nothing connected: a second call writes nothing.
	rev := f.revision(t)
	if err := f.reg.MarkAllDisconnected(context.Background()); err != nil {
		t.Fatalf("MarkAllDisconnected: %v", err)
	}
	if got := f.revision(t); got != rev {
		t.Errorf("revision after a second MarkAllDisconnected: got %d, want %d", got, rev)
	}
}

func TestSweep(t *testing.T) {
	tests := []struct {
		name      string
		connected bool
		live      bool
		gone      time.Duration // since LastSeen
		wantNext  time.Duration
		wantLive  bool
		wantSaved bool // the record still exists
	}{
		{name: "connected", connected: true, live: true, gone: 2 * retention, wantNext: 0, wantLive: true, wantSaved: true},
		{name: "just_disconnected", live: true, gone: 0, wantNext: grace, wantLive: true, wantSaved: true},
		{name: "within_grace", live: true, gone: 10 * time.Second, wantNext: grace - 10*time.Second, wantLive: true, wantSaved: true},
		{name: "just_before_grace_ends", live: true, gone: grace - time.Nanosecond, wantNext: time.Nanosecond, wantLive: true, wantSaved: true},
		{name: "grace_ends", live: true, gone: grace, wantNext: retention - grace, wantLive: false, wantSaved: true},
		{name: "past_grace", live: true, gone: grace + time.Minute, wantNext: retention - grace - time.Minute, wantLive: false, wantSaved: true},
		{name: "not_live_within_retention", live: false, gone: 30 * time.Minute, wantNext: retention - 30*time.Minute, wantSaved: true},
		{name: "just_before_retention_ends", live: false, gone: retention - time.Nanosecond, wantNext: time.Nanosecond, wantSaved: true},
		{name: "retention_ends", live: false, gone: retention, wantNext: 0, wantSaved: false},
		{name: "long_gone", live: false, gone: 10 * retention, wantNext: 0, wantSaved: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.update(t, "default", "api-1", func(p *registry.Proxy) {
				p.Connected, p.Live, p.LastSeen = tt.connected, tt.live, f.clock.Now()
			})
			f.clock.Advance(tt.gone)
			next, err := f.reg.Sweep(context.Background())
			if err != nil {
				t.Fatalf("Sweep: %v", err)
			}
			if next != tt.wantNext {
				t.Errorf("Sweep: got next due in %s, want %s", next, tt.wantNext)
			}
			p, ok := f.proxies(t)["default/api-1"]
			if ok != tt.wantSaved {
				t.Fatalf("record exists: got %v, want %v", ok, tt.wantSaved)
			}
			if ok && p.Live != tt.wantLive {
				t.Errorf("Live: got %v, want %v", p.Live, tt.wantLive)
			}
		})
	}
}

// TestSweepFollowsNextDue sweeps again each time Sweep said the next sweep
// is due, as the control plane's janitor does: a disconnected proxy stops
// being an endpoint after Grace and its record is gone after Retention.
func TestSweepFollowsNextDue(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.update(t, "default", "api-1", func(p *registry.Proxy) {
		p.Connected, p.Live, p.LastSeen, p.Address = false, true, f.clock.Now(), "10.0.0.1:15006"
	})
	type state struct {
		At     time.Duration // since the disconnect
		Next   time.Duration
		Exists bool
		Live   bool
	}
	var got []state
	for range 5 {
		next, err := f.reg.Sweep(ctx)
		if err != nil {
			t.Fatalf("Sweep: %v", err)
		}
		p, ok := f.proxies(t)["default/api-1"]
		got = append(got, state{At: f.clock.Now().Sub(start), Next: next, Exists: ok, Live: p.Live})
		if next == 0 {
			break
		}
		f.clock.Advance(next)
	}
	want := []state{
		{At: 0, Next: grace, Exists: true, Live: true},
		{At: grace, Next: retention - grace, Exists: true, Live: false},
		{At: retention, Next: 0, Exists: false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sweeps (-want +got):\n%s", diff)
	}
}

func TestSweepNextIsEarliest(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	now := f.clock.Now()
	// Disconnected 20s ago (grace ends in 10s), 5s ago (in 25s), a
	// connected one, and one out of grace for 59m (deleted in 1m).
	f.update(t, "default", "a", func(p *registry.Proxy) { p.Live, p.LastSeen = true, now.Add(-20*time.Second) })
	f.update(t, "default", "b", func(p *registry.Proxy) { p.Live, p.LastSeen = true, now.Add(-5*time.Second) })
	f.update(t, "default", "c", func(p *registry.Proxy) { p.Connected, p.Live, p.LastSeen = true, true, now.Add(-time.Hour) })
	f.update(t, "default", "d", func(p *registry.Proxy) { p.Live, p.LastSeen = false, now.Add(-59*time.Minute) })

	next, err := f.reg.Sweep(ctx)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if want := 10 * time.Second; next != want {
		t.Errorf("Sweep: got next due in %s, want %s (the earliest)", next, want)
	}
	got := f.proxies(t)
	for name, wantLive := range map[string]bool{"default/a": true, "default/b": true, "default/c": true, "default/d": false} {
		if got[name].Live != wantLive {
			t.Errorf("%s: got Live %v, want %v", name, got[name].Live, wantLive)
		}
	}
}

// TestSweepReconnectedInGrace: a proxy that reconnects within the grace
// period stays live and is not swept.
func TestSweepReconnectedInGrace(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.update(t, "default", "a", func(p *registry.Proxy) { p.Live, p.LastSeen = true, f.clock.Now() })
	f.clock.Advance(10 * time.Second)
	f.update(t, "default", "a", func(p *registry.Proxy) { p.Connected, p.LastSeen = true, f.clock.Now() })
	f.clock.Advance(2 * retention)

	next, err := f.reg.Sweep(ctx)
	if err != nil || next != 0 {
		t.Errorf("Sweep: got %s, %v, want 0, nil", next, err)
	}
	if p, ok := f.proxies(t)["default/a"]; !ok || !p.Live || !p.Connected {
		t.Errorf("reconnected proxy: got %+v (exists %v), want it connected and live", p, ok)
	}
}

// TestSweepLiveRecordPastRetention: a record still marked live whose proxy
// has been gone for longer than the retention (say the control plane was
// down for that long during its grace period) must be deleted, as Sweep's
// doc says, and not left behind with "nothing pending".
func TestSweepLiveRecordPastRetention(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.update(t, "default", "stale", func(p *registry.Proxy) { p.Live, p.LastSeen = true, f.clock.Now() })
	f.clock.Advance(2 * retention)

	next, err := f.reg.Sweep(ctx)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	p, exists := f.proxies(t)["default/stale"]
	switch {
	case !exists:
		// Deleted at once: what the doc says.
	case next == 0:
		t.Errorf("Sweep: got record %+v kept and next due 0 (nothing pending), want it deleted or a sweep scheduled", p)
	}
}

func TestNewInstanceName(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		name       string
		service    string
		wantPrefix string
	}{
		{name: "short", service: "api", wantPrefix: "api-"},
		{name: "one_char", service: "a", wantPrefix: "a-"},
		{name: "54_chars", service: strings.Repeat("b", 54), wantPrefix: strings.Repeat("b", 54) + "-"},
		{name: "55_chars_cut", service: strings.Repeat("c", 55), wantPrefix: strings.Repeat("c", 54) + "-"},
		{name: "63_chars_cut", service: long, wantPrefix: strings.Repeat("a", 54) + "-"},
		{name: "cut_at_dash", service: strings.Repeat("d", 53) + "-" + strings.Repeat("e", 9), wantPrefix: strings.Repeat("d", 53) + "-"},
		{name: "cut_at_dashes", service: strings.Repeat("f", 50) + "-----" + strings.Repeat("g", 8), wantPrefix: strings.Repeat("f", 50) + "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := identity.ValidateName(tt.service); err != nil {
				t.Fatalf("bad fixture: service %q: %v", tt.service, err)
			}
			s := svc("default", tt.service)
			got := registry.NewInstanceName(s)
			if err := identity.ValidateName(got); err != nil {
				t.Errorf("NewInstanceName(%q) = %q: got invalid name (%v), want a DNS label", tt.service, got, err)
			}
			if len(got) > 63 {
				t.Errorf("NewInstanceName(%q) = %q: got %d characters, want at most 63", tt.service, got, len(got))
			}
			suffix, ok := strings.CutPrefix(got, tt.wantPrefix)
			if !ok {
				t.Fatalf("NewInstanceName(%q) = %q: want prefix %q", tt.service, got, tt.wantPrefix)
			}
			if len(suffix) != 8 || strings.Trim(suffix, "abcdefghijklmnopqrstuvwxyz234567") != "" {
				t.Errorf("NewInstanceName(%q) = %q: got suffix %q, want 8 characters of [a-z2-7]", tt.service, got, suffix)
			}
			if again := registry.NewInstanceName(s); again == got {
				t.Errorf("NewInstanceName twice: got %q both times, want fresh names", got)
			}
		})
	}
}

// TestSweepKeepsLabelsAsLongAsAnSVID: the record of an instance with labels
// (bound at attestation, before the proxy ever subscribes) outlives the
// normal retention, so a proxy that comes back with a valid SVID finds its
// labels; it goes once LabelRetention has passed.
func TestSweepKeepsLabelsAsLongAsAnSVID(t *testing.T) {
	tests := []struct {
		name      string
		lastSeen  bool // the proxy subscribed once; else it only attested
		gone      time.Duration
		wantSaved bool
	}{
		{name: "attested_never_seen", gone: 2 * retention, wantSaved: true},
		{name: "attested_never_seen_expired", gone: registry.LabelRetention, wantSaved: false},
		{name: "seen_past_retention", lastSeen: true, gone: 2 * retention, wantSaved: true},
		{name: "seen_past_label_retention", lastSeen: true, gone: registry.LabelRetention, wantSaved: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.update(t, "default", "api-1", func(p *registry.Proxy) {
				p.Labels = map[string]string{"version": "v2"}
				p.AttestedAt = f.clock.Now()
				if tt.lastSeen {
					p.LastSeen = f.clock.Now()
				}
			})
			f.clock.Advance(tt.gone)
			if _, err := f.reg.Sweep(context.Background()); err != nil {
				t.Fatalf("Sweep: %v", err)
			}
			p, ok := f.proxies(t)["default/api-1"]
			if ok != tt.wantSaved {
				t.Fatalf("record exists: got %v, want %v", ok, tt.wantSaved)
			}
			if ok && p.Labels["version"] != "v2" {
				t.Errorf("labels: got %v, want version=v2", p.Labels)
			}
		})
	}
}
