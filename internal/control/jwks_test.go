package control_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// jwksFixture is a state builder with its JWKS keeper over a real store,
// and a real HTTPS JWKS server.
type jwksFixture struct {
	raw       *bolt.Store
	resources *resource.Store
	hub       *push.Hub
	builder   *control.StateBuilder
	clock     *clock.Fake
	metrics   *prometheus.Registry
	srv       *httptest.Server

	mu   sync.Mutex
	keys []*ecdsa.PrivateKey // what the server publishes, kid "k<index>"
}

func newJWKSFixture(t *testing.T) *jwksFixture {
	t.Helper()
	raw, err := bolt.Open(filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	c, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: raw, Keys: keymanager.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	f := &jwksFixture{raw: raw, resources: resource.New(raw, nil), clock: clock.NewFake(time.Now()), metrics: prometheus.NewRegistry()}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(f.jwks(t))
	}))
	t.Cleanup(f.srv.Close)
	f.hub = push.NewHub(nil)
	f.builder = control.NewStateBuilder(t, raw, mustRegistry(t, raw), c, f.hub, td)
	run := f.builder.WithJWKS(t, f.clock, f.metrics)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("jwks keeper: %v", err)
		}
	})
	return f
}

// publish sets the keys the server publishes.
func (f *jwksFixture) publish(keys ...*ecdsa.PrivateKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = keys
}

func (f *jwksFixture) jwks(t *testing.T) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	set := jwk.NewSet()
	for _, k := range f.keys {
		pub, err := jwk.Import(k.Public())
		if err != nil {
			t.Error(err)
			return nil
		}
		_ = pub.Set(jwk.KeyIDKey, kidOf(k))
		_ = set.AddKey(pub)
	}
	b, _ := json.Marshal(set)
	return b
}

var (
	ecA = mustECKey()
	ecB = mustECKey()
)

func mustECKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func kidOf(k *ecdsa.PrivateKey) string {
	if k == ecA {
		return "a"
	}
	return "b"
}

// applyProvider applies the provider default/idp fetching path from the
// fixture's server.
func (f *jwksFixture) applyProvider(t *testing.T, path string) {
	t.Helper()
	p := &config.JWTProvider{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindJWTProvider},
		Metadata: config.ObjectMeta{Namespace: "default", Name: "idp"},
		Spec: config.JWTProviderSpec{
			Issuer: "https://issuer.example", JWKSURI: f.srv.URL + path,
			JWKSCA: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})),
		},
	}
	if errs := p.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if _, err := f.resources.Apply(context.Background(), []config.Object{p}); err != nil {
		t.Fatal(err)
	}
}

// watch returns the changes to the stored keys from now on.
func (f *jwksFixture) watch(t *testing.T) <-chan store.Event {
	t.Helper()
	_, rev, err := f.raw.List(context.Background(), control.JWKSPrefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err := f.raw.Watch(ctx, control.JWKSPrefix, rev)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// await returns the next event, or fails the test.
func await[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// pushedKIDs rebuilds and returns the state's revision and the kids of the
// keys it pushes for default/idp (nil for no keys).
func pushedKIDs(t *testing.T, b *control.StateBuilder, hub *push.Hub) (int64, []string) {
	t.Helper()
	if _, err := b.Rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := hub.State()
	if len(st.JWTProviders) != 1 {
		t.Fatalf("got %d jwt providers in the state, want 1", len(st.JWTProviders))
	}
	jwks := st.JWTProviders[0].JWKS
	if jwks == nil {
		return st.Revision, nil
	}
	set, err := authn.ParseJWKS(jwks)
	if err != nil {
		t.Fatalf("pushed keys do not parse: %v", err)
	}
	var kids []string
	for _, k := range set.Keys() {
		kids = append(kids, k.KID)
	}
	return st.Revision, kids
}

// TestJWKSKeysReachTheState follows a provider's keys from its JWKS server
// to the state snapshots are compiled from: fetched, stored, rotated (with
// a new state revision, so proxies take it), kept when the server goes
// away (across a restart of the control plane too) and dropped with the
// provider.
func TestJWKSKeysReachTheState(t *testing.T) {
	f := newJWKSFixture(t)
	events := f.watch(t)
	f.publish(ecA)

	armed := f.clock.TimerCreated()
	f.applyProvider(t, "/jwks")
	rev0, kids := pushedKIDs(t, f.builder, f.hub)
	if kids != nil {
		t.Fatalf("got keys %v before the first fetch, want none", kids)
	}
	if ev := await(t, events, "the first keys stored"); ev.Type != store.EventPut || ev.KV.Key != control.JWKSPrefix+"default/idp" {
		t.Fatalf("got event %+v, want a put of default/idp", ev)
	}
	await(t, armed, "the next refresh")
	rev1, kids := pushedKIDs(t, f.builder, f.hub)
	if diff := cmp.Diff([]string{"a"}, kids); diff != "" {
		t.Fatalf("kids after the first fetch (-want +got):\n%s", diff)
	}
	if rev1 <= rev0 {
		t.Errorf("got revision %d after the keys changed, want more than %d", rev1, rev0)
	}

	t.Run("rotation", func(t *testing.T) {
		f.publish(ecA, ecB)
		armed := f.clock.TimerCreated()
		f.clock.Advance(6 * time.Minute)
		await(t, events, "the rotated keys stored")
		await(t, armed, "the next refresh")
		rev2, kids := pushedKIDs(t, f.builder, f.hub)
		if diff := cmp.Diff([]string{"a", "b"}, kids); diff != "" {
			t.Errorf("kids after rotation (-want +got):\n%s", diff)
		}
		if rev2 <= rev1 {
			t.Errorf("got revision %d after rotation, want more than %d", rev2, rev1)
		}
	})
	t.Run("same_keys_write_nothing", func(t *testing.T) {
		kv, err := f.raw.Get(context.Background(), control.JWKSPrefix+"default/idp")
		if err != nil {
			t.Fatal(err)
		}
		armed := f.clock.TimerCreated()
		f.clock.Advance(6 * time.Minute)
		await(t, armed, "the next refresh")
		after, err := f.raw.Get(context.Background(), control.JWKSPrefix+"default/idp")
		if err != nil {
			t.Fatal(err)
		}
		if after.ModRevision != kv.ModRevision {
			t.Errorf("the stored keys were rewritten (revision %d -> %d) for the same keys", kv.ModRevision, after.ModRevision)
		}
	})
	t.Run("server_down_keeps_keys", func(t *testing.T) {
		f.srv.Close()
		armed := f.clock.TimerCreated()
		f.clock.Advance(6 * time.Minute)
		await(t, armed, "the retry")
		if _, kids := pushedKIDs(t, f.builder, f.hub); len(kids) != 2 {
			t.Errorf("got kids %v after the server went down, want the last good ones", kids)
		}
		if got := gathered(t, f.metrics, "bulwark_jwks_fetch_total", "error"); got < 1 {
			t.Errorf("got %v error fetches, want at least 1", got)
		}
	})
	t.Run("restart_without_server", func(t *testing.T) {
		// A control plane that starts over the stored resources and keys
		// (and cannot reach the server) pushes the stored keys.
		raw, err := bolt.Open(filepath.Join(t.TempDir(), "bulwark.db"), bolt.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		for _, prefix := range []string{resource.Prefix, control.JWKSPrefix} {
			kvs, _, err := f.raw.List(context.Background(), prefix)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range kvs {
				if _, err := store.Put(context.Background(), raw, kv.Key, kv.Value); err != nil {
					t.Fatal(err)
				}
			}
		}
		c, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: raw, Keys: keymanager.NewMemory()})
		if err != nil {
			t.Fatal(err)
		}
		hub := push.NewHub(nil)
		b := control.NewStateBuilder(t, raw, mustRegistry(t, raw), c, hub, td)
		_ = b.WithJWKS(t, f.clock, nil) // not run: the server is gone anyway
		if _, kids := pushedKIDs(t, b, hub); len(kids) != 2 {
			t.Errorf("got kids %v after a restart, want the stored ones", kids)
		}
	})
	t.Run("new_source_drops_old_keys", func(t *testing.T) {
		f.applyProvider(t, "/other-jwks")
		if _, kids := pushedKIDs(t, f.builder, f.hub); kids != nil {
			t.Errorf("got kids %v of the old jwksURI, want none", kids)
		}
	})
	t.Run("deleted_provider_drops_stored_keys", func(t *testing.T) {
		if _, err := f.resources.Delete(context.Background(), []resource.Result{{Kind: config.KindJWTProvider, Namespace: "default", Name: "idp"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.builder.Rebuild(context.Background()); err != nil {
			t.Fatal(err)
		}
		for {
			ev := await(t, events, "the stored keys deleted")
			if ev.Type == store.EventDelete {
				break
			}
		}
		if got := len(f.hub.State().JWTProviders); got != 0 {
			t.Errorf("got %d providers, want 0", got)
		}
	})
}

// gathered returns the sum of a metric's samples whose labels include the
// value want.
func gathered(t *testing.T, reg *prometheus.Registry, name, want string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == want {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
