package control_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// stateFixture is a state builder over a real store.
type stateFixture struct {
	raw       *bolt.Store
	reg       *registry.Registry
	resources *resource.Store
	hub       *push.Hub
	builder   *control.StateBuilder
}

// newStateFixture builds a state builder over a bbolt store in a temporary
// directory, seen through wrap when it is not nil.
func newStateFixture(t testing.TB, wrap func(store.Store) store.Store) *stateFixture {
	t.Helper()
	raw, err := bolt.Open(filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { raw.Close() })
	var st store.Store = raw
	if wrap != nil {
		st = wrap(raw)
	}
	c, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: raw, Keys: keymanager.NewMemory()})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	reg, err := registry.New(registry.Config{Store: raw})
	if err != nil {
		t.Fatal(err)
	}
	hub := push.NewHub(nil)
	sealer := keymanager.NewMemory()
	return &stateFixture{
		raw: raw, reg: reg, resources: resource.New(raw, nil).WithSealer(sealer), hub: hub,
		builder: control.NewStateBuilder(t, st, mustRegistry(t, st), c, hub, td).WithSealer(sealer),
	}
}

func mustRegistry(t testing.TB, st store.Store) *registry.Registry {
	t.Helper()
	reg, err := registry.New(registry.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func (f *stateFixture) applyPolicy(t testing.TB, ns, name, service string, from ...string) {
	t.Helper()
	if _, err := f.resources.Apply(context.Background(), []config.Object{policyObject(t, ns, name, service, from...)}); err != nil {
		t.Fatalf("apply policy %s/%s: %v", ns, name, err)
	}
}

func (f *stateFixture) addService(t testing.TB, account, service string) {
	t.Helper()
	ref, err := identity.ParseServiceRef(service, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.reg.AddService(context.Background(), account, ref); err != nil {
		t.Fatalf("add service: %v", err)
	}
}

func (f *stateFixture) updateProxy(t testing.TB, instance string, fn func(p *registry.Proxy)) {
	t.Helper()
	if err := f.reg.UpdateProxy(context.Background(), "shop", instance, fn); err != nil {
		t.Fatalf("update proxy: %v", err)
	}
}

func (f *stateFixture) rebuild(t testing.TB) int64 {
	t.Helper()
	rev, err := f.builder.Rebuild(context.Background())
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	return rev
}

// liveProxy sets a connected, live proxy record of shop/<service>.
func liveProxy(service, addr string) func(p *registry.Proxy) {
	return func(p *registry.Proxy) {
		p.Service = service
		p.Identity = "spiffe://bulwark.test/ns/shop/sa/" + service
		p.Address = addr
		p.Connected, p.Live = true, true
		p.LastSeen = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		p.SVIDSerial = "1"
	}
}

// TestRebuild changes the store one way at a time and checks whether the
// builder installs a new state: only for changes to what snapshots are
// compiled from, never for a proxy's bookkeeping (ACKs, versions, times).
func TestRebuild(t *testing.T) {
	tests := []struct {
		name        string
		change      func(t testing.TB, f *stateFixture)
		wantRebuild bool
	}{
		{"AckedVersion", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.AckedVersion = 7 })
		}, false},
		{"SnapshotVersion", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.SnapshotVersion = 8 })
		}, false},
		{"Nack", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.LastNack = "bad route" })
		}, false},
		{"LastSeen", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.LastSeen = p.LastSeen.Add(time.Minute) })
		}, false},
		{"SVIDRenewed", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.SVIDSerial, p.SVIDExpiry = "2", time.Now() })
		}, false},
		{"ProxyVersion", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.Version = "v2" })
		}, false},
		{"DisconnectedWithinGrace", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.Connected = false })
		}, false},
		{"ClientOnlyProxyAdded", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "visitor-1", liveProxy("visitor", ""))
		}, false},
		{"PolicyReapplied", func(t testing.TB, f *stateFixture) {
			f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api")
		}, false},
		{"UnrelatedKey", func(t testing.TB, f *stateFixture) {
			if _, err := store.Put(context.Background(), f.raw, "/other/key", []byte("x")); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"PolicyAdded", func(t testing.TB, f *stateFixture) {
			f.applyPolicy(t, "shop", "orders-to-web", "web", "shop/orders")
		}, true},
		{"PolicyChanged", func(t testing.TB, f *stateFixture) {
			f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api", "shop/orders")
		}, true},
		{"PolicyDeleted", func(t testing.TB, f *stateFixture) {
			ref := resource.Result{Kind: config.KindAuthorizationPolicy, Namespace: "shop", Name: "api-to-web"}
			if _, err := f.resources.Delete(context.Background(), []resource.Result{ref}); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"IdentityServesAnotherService", func(t testing.TB, f *stateFixture) {
			f.addService(t, "api", "shop/api-v2")
		}, true},
		{"NewIdentity", func(t testing.TB, f *stateFixture) {
			f.addService(t, "orders", "shop/orders")
		}, true},
		{"ProxyAdded", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-2", liveProxy("web", "127.0.0.1:15007"))
		}, true},
		{"ProxyAddressChanged", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.Address = "127.0.0.1:16006" })
		}, true},
		{"ProxyNoLongerLive", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.Connected, p.Live = false, false })
		}, true},
		{"ProxyDraining", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.Draining = true })
		}, true},
		{"ProxyLocality", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.Locality = "eu/a" })
		}, true},
		{"ProxyProtocol", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.Protocol = "grpc" })
		}, true},
		{"ProxyLabels", func(t testing.TB, f *stateFixture) {
			f.updateProxy(t, "web-1", func(p *registry.Proxy) { p.Labels = map[string]string{"version": "v2"} })
		}, true},
		{"TrafficPolicyAdded", func(t testing.TB, f *stateFixture) {
			f.applyDocs(t, trafficDocs)
		}, true},
		// A Secret no Gateway names is not part of the state.
		{"SecretNobodyNames", func(t testing.TB, f *stateFixture) {
			certPEM, keyPEM := tlsPair(t, "shop.example.com")
			f.applyJSON(t, secretJSON("shop", "web-tls", certPEM, keyPEM))
		}, false},
		{"GatewayAdded", func(t testing.TB, f *stateFixture) {
			f.applyJSON(t, gatewayJSON("shop", "edge", []string{"web-tls"}, nil))
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newStateFixture(t, nil)
			f.addService(t, "web", "shop/web")
			f.addService(t, "api", "shop/api")
			f.updateProxy(t, "web-1", liveProxy("web", "127.0.0.1:15006"))
			f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api")
			f.rebuild(t)
			before := f.hub.State()
			hashBefore := control.InputsHash(before)

			tt.change(t, f)
			f.rebuild(t)
			after := f.hub.State()
			if got := after != before; got != tt.wantRebuild {
				t.Errorf("new state installed: got %v, want %v", got, tt.wantRebuild)
			}
			if got := control.InputsHash(after) != hashBefore; got != tt.wantRebuild {
				t.Errorf("inputs hash changed: got %v, want %v", got, tt.wantRebuild)
			}
		})
	}
}

func TestRebuildState(t *testing.T) {
	f := newStateFixture(t, nil)
	f.addService(t, "web", "shop/web")
	f.updateProxy(t, "web-1", liveProxy("web", "127.0.0.1:15006"))
	f.updateProxy(t, "web-2", func(p *registry.Proxy) { liveProxy("web", "127.0.0.1:15007")(p); p.Live = false })
	f.updateProxy(t, "visitor-1", liveProxy("visitor", ""))
	f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api")
	rev := f.rebuild(t)
	st := f.hub.State()
	if st.Revision != rev || rev != revision(t, f.raw) {
		t.Errorf("revision: got state %d, rebuild %d, want the store's %d", st.Revision, rev, revision(t, f.raw))
	}
	type view struct {
		Services   []string
		Endpoints  map[string][]push.Endpoint
		Identities map[string][]string
		Policies   []string
	}
	got := view{Services: st.Services, Endpoints: st.Endpoints, Identities: st.Identities}
	for _, p := range st.Policies {
		got.Policies = append(got.Policies, p.Policy.Metadata.Namespace+"/"+p.Policy.Metadata.Name)
		if p.Policy.Metadata.ResourceVersion != "" {
			t.Errorf("policy %s: got resourceVersion %q, want none in the state", p.Policy.Metadata.Name, p.Policy.Metadata.ResourceVersion)
		}
	}
	want := view{
		Services: []string{"shop/web"},
		Endpoints: map[string][]push.Endpoint{"shop/web": {
			{Address: "127.0.0.1:15006", SPIFFEID: "spiffe://bulwark.test/ns/shop/sa/web", Instance: "web-1"},
		}},
		Identities: map[string][]string{"spiffe://bulwark.test/ns/shop/sa/web": {"shop/web"}},
		Policies:   []string{"shop/api-to-web"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	if len(st.Bundle) != 1 {
		t.Errorf("bundle: got %d roots, want 1", len(st.Bundle))
	}
}

// hookedStore is the real store with hooks on List and Watch, to drop or
// fail watches and to write between the reads of a rebuild.
type hookedStore struct {
	store.Store

	mu sync.Mutex
	// compact is how many Watch calls still fail with ErrCompacted.
	compact int
	// afterList, if set, runs after each List.
	afterList func(prefix string)
	lists     int
	// listErr, txnErr and watchErr, if set, fail List, Txn and Watch.
	listErr  func(prefix string) error
	txnErr   func(ops []store.Op) error
	watchErr error

	// watches receives every Watch call.
	watches chan *hookedWatch
}

// hookedWatch is one Watch call.
type hookedWatch struct {
	afterRev int64
	lists    int // List calls before this Watch
	err      error
	pause    chan struct{} // close: stop forwarding events
	paused   chan struct{} // closed once forwarding stopped
	closeOut chan struct{} // close (after pause): close the caller's channel
}

func newHookedStore(s store.Store) *hookedStore {
	return &hookedStore{Store: s, watches: make(chan *hookedWatch, 64)}
}

// set changes the hooks under the lock.
func (h *hookedStore) set(fn func(h *hookedStore)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fn(h)
}

func (h *hookedStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	h.mu.Lock()
	fail := h.txnErr
	h.mu.Unlock()
	if fail != nil {
		if err := fail(ops); err != nil {
			return 0, err
		}
	}
	return h.Store.Txn(ctx, cmps, ops)
}

func (h *hookedStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	h.mu.Lock()
	fail := h.listErr
	h.mu.Unlock()
	if fail != nil {
		if err := fail(prefix); err != nil {
			return nil, 0, err
		}
	}
	kvs, rev, err := h.Store.List(ctx, prefix)
	h.mu.Lock()
	h.lists++
	fn := h.afterList
	h.mu.Unlock()
	if fn != nil {
		fn(prefix)
	}
	return kvs, rev, err
}

func (h *hookedStore) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	w := &hookedWatch{afterRev: afterRev, pause: make(chan struct{}), paused: make(chan struct{}), closeOut: make(chan struct{})}
	h.mu.Lock()
	w.lists = h.lists
	compact := h.compact > 0
	if compact {
		h.compact--
	}
	watchErr := h.watchErr
	h.mu.Unlock()
	if watchErr != nil {
		w.err = watchErr
		h.watches <- w
		return nil, watchErr
	}
	if compact {
		w.err = store.ErrCompacted
		h.watches <- w
		return nil, w.err
	}
	in, err := h.Store.Watch(ctx, prefix, afterRev)
	if err != nil {
		w.err = err
		h.watches <- w
		return nil, err
	}
	out := make(chan store.Event)
	go func() {
		defer close(out)
		held := func() {
			close(w.paused)
			select {
			case <-w.closeOut:
			case <-ctx.Done():
			}
		}
		for {
			select {
			case <-w.pause:
				held()
				return
			case ev, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- ev:
				case <-w.pause:
					held()
					return
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	h.watches <- w
	return out, nil
}

// nextWatch returns the next Watch call.
func (h *hookedStore) nextWatch(t testing.TB) *hookedWatch {
	t.Helper()
	select {
	case w := <-h.watches:
		return w
	case <-time.After(hangGuard):
		t.Fatal("the state builder never watched the store")
		return nil
	}
}

// runBuilder runs the builder until the test ends; the test fails if Run
// returns anything but nil.
func runBuilder(t testing.TB, f *stateFixture) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.builder.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("state builder Run: got %v, want nil", err)
			}
		case <-time.After(hangGuard):
			t.Error("state builder Run did not return after cancel")
		}
	})
	t.Cleanup(stop)
	return stop
}

func TestStateBuilderRun(t *testing.T) {
	t.Run("FollowsChanges", func(t *testing.T) {
		f := newStateFixture(t, nil)
		runBuilder(t, f)
		waitState(t, f.hub, func(*push.State) bool { return true })
		f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api")
		waitState(t, f.hub, hasPolicy("shop", "api-to-web"))
		f.updateProxy(t, "web-1", liveProxy("web", "127.0.0.1:15006"))
		waitState(t, f.hub, func(st *push.State) bool { return len(st.Endpoints["shop/web"]) == 1 })
	})

	t.Run("RelistsAfterCompacted", func(t *testing.T) {
		var h *hookedStore
		f := newStateFixture(t, func(s store.Store) store.Store { h = newHookedStore(s); h.compact = 1; return h })
		stop := runBuilder(t, f)
		first := h.nextWatch(t)
		if first.err != store.ErrCompacted {
			t.Fatalf("first watch: got %v, want the injected ErrCompacted", first.err)
		}
		second := h.nextWatch(t)
		if second.err != nil {
			t.Fatalf("second watch: %v", second.err)
		}
		// A rebuild reads policies, proxies and identities.
		if got := second.lists - first.lists; got < 3 {
			t.Errorf("store lists between the compacted watch and the next: got %d, want a full relist (3)", got)
		}
		f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api")
		waitState(t, f.hub, hasPolicy("shop", "api-to-web"))
		stop() // fails the test unless Run returns nil
	})

	t.Run("RelistsAfterWatchClosed", func(t *testing.T) {
		var h *hookedStore
		f := newStateFixture(t, func(s store.Store) store.Store { h = newHookedStore(s); return h })
		stop := runBuilder(t, f)
		w := h.nextWatch(t)
		waitState(t, f.hub, func(*push.State) bool { return true })
		// The watch stops delivering (the watcher fell behind); a policy
		// is written that the builder can only see by listing again;
		// then the channel is closed.
		close(w.pause)
		<-w.paused
		f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api")
		close(w.closeOut)
		if w2 := h.nextWatch(t); w2.err != nil {
			t.Fatalf("watch after the drop: %v", w2.err)
		}
		waitState(t, f.hub, hasPolicy("shop", "api-to-web"))
		// And it follows the new watch.
		f.applyPolicy(t, "shop", "orders-to-web", "web", "shop/orders")
		waitState(t, f.hub, hasPolicy("shop", "orders-to-web"))
		stop()
	})
}

var errBroken = errors.New("disk on fire")

func TestStateBuilderStopsOnStoreError(t *testing.T) {
	failList := func(h *hookedStore) { h.listErr = func(string) error { return errBroken } }
	tests := []struct {
		name       string
		before     func(h *hookedStore) // before Run
		after      func(t *testing.T, h *hookedStore, f *stateFixture)
		wantPrefix string
	}{
		{"FirstRead", failList, nil, "build mesh state: "},
		{"Watch", func(h *hookedStore) { h.watchErr = errBroken }, nil, "watch store: "},
		{"ReadAfterAChange", nil, func(t *testing.T, h *hookedStore, f *stateFixture) {
			h.nextWatch(t)
			h.set(failList)
			f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api")
		}, "build mesh state: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h *hookedStore
			f := newStateFixture(t, func(s store.Store) store.Store { h = newHookedStore(s); return h })
			if tt.before != nil {
				h.set(tt.before)
			}
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- f.builder.Run(ctx) }()
			if tt.after != nil {
				tt.after(t, h, f)
			}
			err := <-done
			if !errors.Is(err, errBroken) || !strings.HasPrefix(err.Error(), tt.wantPrefix) {
				t.Errorf("Run: got %v, want an error starting %q wrapping the store's", err, tt.wantPrefix)
			}
		})
	}
}

// TestStateBuilderSeesPolicyWrittenDuringRead checks that a policy written
// between the store reads of a (re)list still reaches the state.
//
// Regression: a rebuild reads the policies and the proxies in two store
// reads, and the builder used to watch from the later read's revision; a
// policy written between the two reads was in neither the state nor the
// watch, and reached no proxy until some other change. The builder relists
// when the store is busy (start, dropped watch), when such a write is
// likely.
func TestStateBuilderSeesPolicyWrittenDuringRead(t *testing.T) {
	t.Parallel()
	var h *hookedStore
	f := newStateFixture(t, func(s store.Store) store.Store { h = newHookedStore(s); return h })
	var policyRev int64
	var once sync.Once
	h.afterList = func(prefix string) {
		if !strings.HasPrefix(prefix, resource.Prefix) {
			return
		}
		once.Do(func() {
			f.applyPolicy(t, "shop", "api-to-web", "web", "shop/api")
			policyRev = revision(t, f.raw)
		})
	}
	runBuilder(t, f)
	w := h.nextWatch(t)
	// 5s is a hang guard: with the fix the policy's event arrives at once.
	if !waitStateWithin(f.hub, 5*time.Second, hasPolicy("shop", "api-to-web")) {
		t.Errorf("policy written (revision %d) between the reads of a rebuild never reached the state; the builder watches after revision %d", policyRev, w.afterRev)
	}
	if w.afterRev >= policyRev {
		t.Errorf("watch: got after revision %d, want before the policy's revision %d", w.afterRev, policyRev)
	}
}

// waitStateWithin is waitState with a bound; it reports whether the state
// got there.
func waitStateWithin(hub *push.Hub, d time.Duration, ok func(*push.State) bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if st := hub.State(); st != nil && ok(st) {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// trafficDocs are a TrafficPolicy and a Route for shop/web and an
// ExternalService.
const trafficDocs = `apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-tp, namespace: shop}
spec: {service: web, timeout: 2s}
---
apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: web-split, namespace: shop}
spec:
  service: web
  rules:
  - backends: [{version: v1, weight: 100}]
---
apiVersion: bulwark.dev/v1alpha1
kind: ExternalService
metadata: {name: payments, namespace: shop}
spec:
  hosts: [pay.example.com]
  ports: [{port: 443, protocol: tls}]
`

func (f *stateFixture) applyDocs(t testing.TB, yaml string) {
	t.Helper()
	objs, err := config.Decode([]byte(yaml))
	if err != nil {
		t.Fatalf("bad fixture: %v", err)
	}
	if _, err := f.resources.Apply(context.Background(), objs); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// TestRebuildTrafficState checks what the state carries for traffic
// management: the traffic resources without their resource version, the
// external services among the services, each endpoint's locality and
// draining, and each service's protocol ("http" when its instances
// disagree, which is logged).
func TestRebuildTrafficState(t *testing.T) {
	f := newStateFixture(t, nil)
	f.addService(t, "web", "shop/web")
	f.addService(t, "api", "shop/api")
	f.updateProxy(t, "web-1", func(p *registry.Proxy) {
		liveProxy("web", "127.0.0.1:15006")(p)
		p.Locality, p.Draining, p.Protocol = "eu/a", true, "grpc"
	})
	f.updateProxy(t, "web-2", func(p *registry.Proxy) { liveProxy("web", "127.0.0.1:15007")(p); p.Protocol = "grpc" })
	f.updateProxy(t, "api-1", func(p *registry.Proxy) { liveProxy("api", "127.0.0.1:15008")(p); p.Protocol = "http2" })
	f.updateProxy(t, "api-2", func(p *registry.Proxy) { liveProxy("api", "127.0.0.1:15009")(p); p.Protocol = "tcp" })
	f.applyDocs(t, trafficDocs)
	f.rebuild(t)
	st := f.hub.State()

	if diff := cmp.Diff(map[string]string{"shop/web": "grpc"}, st.Protocols); diff != "" {
		t.Errorf("protocols (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"shop/api", "shop/payments", "shop/web"}, st.Services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	var eps []string
	for _, ep := range st.Endpoints["shop/web"] {
		eps = append(eps, fmt.Sprintf("%s %q %v", ep.Instance, ep.Locality, ep.Draining))
	}
	if diff := cmp.Diff([]string{`web-1 "eu/a" true`, `web-2 "" false`}, eps); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if len(st.TrafficPolicies) != 1 || len(st.Routes) != 1 || len(st.ExternalServices) != 1 {
		t.Fatalf("traffic resources: got %d, %d, %d, want one of each", len(st.TrafficPolicies), len(st.Routes), len(st.ExternalServices))
	}
	for _, js := range [][]byte{st.TrafficPolicies[0].JSON, st.Routes[0].JSON, st.ExternalServices[0].JSON} {
		if strings.Contains(string(js), "resourceVersion") {
			t.Errorf("document pushed to proxies has a resource version: %s", js)
		}
	}
}
