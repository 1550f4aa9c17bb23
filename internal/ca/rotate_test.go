package ca_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// keyWorkloadRotation is the store key of the rotation record, as
// documented in the package.
const keyWorkloadRotation = "/ca/workload/rotation"

// retireSkew is what RetireAfter adds to the SVID lifetime (rotate.go).
const retireSkew = 30 * time.Second

// trackedKeys is a KeyManager that remembers every key created through it,
// so that a test can count the keys still held (Memory cannot list them).
type trackedKeys struct {
	keymanager.KeyManager

	mu  sync.Mutex
	ids []string
}

var _ keymanager.KeyManager = (*trackedKeys)(nil)

func (k *trackedKeys) GenerateKey(ctx context.Context, id string) (crypto.Signer, error) {
	s, err := k.KeyManager.GenerateKey(ctx, id)
	if err == nil {
		k.add(id)
	}
	return s, err
}

func (k *trackedKeys) ImportKey(ctx context.Context, id string, key crypto.Signer) (crypto.Signer, error) {
	s, err := k.KeyManager.ImportKey(ctx, id, key)
	if err == nil {
		k.add(id)
	}
	return s, err
}

func (k *trackedKeys) add(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !slices.Contains(k.ids, id) {
		k.ids = append(k.ids, id)
	}
}

// live returns the ids of the keys created through k that it still holds,
// sorted.
func (k *trackedKeys) live(t testing.TB) []string {
	t.Helper()
	k.mu.Lock()
	ids := slices.Clone(k.ids)
	k.mu.Unlock()
	var out []string
	for _, id := range ids {
		_, err := k.KeyManager.GetKey(context.Background(), id)
		switch {
		case err == nil:
			out = append(out, id)
		case !errors.Is(err, keymanager.ErrNotFound):
			t.Fatalf("GetKey(%q): %v", id, err)
		}
	}
	slices.Sort(out)
	return out
}

// newTrackedFixture returns a fixture whose Memory key manager counts its
// keys.
func newTrackedFixture(t testing.TB) (*fixture, *trackedKeys) {
	t.Helper()
	f := newFixture(t)
	keys := &trackedKeys{KeyManager: f.keys}
	f.keys = keys
	return f, keys
}

// caView is what a test compares to see that an operation changed nothing
// in a CA, or that two CAs agree. Certificates are named by their (random)
// serials.
type caView struct {
	Phase            ca.Phase
	BundleVersion    int64
	Roots            []string
	SigningRoot      string
	SigningAuthority string
	Started          time.Time
	PhaseSince       time.Time
	RetireAfter      time.Time
}

func viewOf(c *ca.CA) caView {
	r := c.Rotation()
	v := caView{
		Phase: r.Phase, BundleVersion: c.BundleVersion(),
		SigningRoot:      c.SigningRoot().SerialNumber.Text(16),
		SigningAuthority: ca.KeyID(c.SigningAuthority()),
		Started:          r.Started, PhaseSince: r.PhaseSince, RetireAfter: r.RetireAfter,
	}
	for _, root := range c.Roots() {
		v.Roots = append(v.Roots, root.SerialNumber.Text(16))
	}
	return v
}

// signAPI signs an X509-SVID for default/api with a fresh key.
func signAPI(t testing.TB, c *ca.CA) []*x509.Certificate {
	t.Helper()
	chain, err := c.SignSVID(&newKey(t).PublicKey, workloadID(t, "default", "api"), 0)
	if err != nil {
		t.Fatalf("SignSVID: %v", err)
	}
	return chain
}

// verify verifies an X509-SVID chain at time at against roots, as a proxy
// holding that trust bundle does.
func verify(chain []*x509.Certificate, at time.Time, roots ...*x509.Certificate) error {
	b := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(testTrustDomain), roots)
	_, _, err := x509svid.Verify(chain, b, x509svid.WithTime(at))
	return err
}

// mustPrepare, mustActivate and mustRetire run one phase of a root
// rotation.
func mustPrepare(t testing.TB, c *ca.CA) {
	t.Helper()
	if err := c.PrepareRoot(context.Background()); err != nil {
		t.Fatalf("PrepareRoot: %v", err)
	}
}

func mustActivate(t testing.TB, c *ca.CA) {
	t.Helper()
	if err := c.ActivateRoot(context.Background()); err != nil {
		t.Fatalf("ActivateRoot: %v", err)
	}
}

func mustRetire(t testing.TB, f *fixture, c *ca.CA) {
	t.Helper()
	if d := c.Rotation().RetireAfter.Sub(f.clock.Now()); d > 0 {
		f.clock.Advance(d)
	}
	if err := c.RetireRoot(context.Background()); err != nil {
		t.Fatalf("RetireRoot: %v", err)
	}
}

// rootsEqual reports whether got and want are the same certificates in the
// same order.
func rootsEqual(got, want []*x509.Certificate) bool {
	return slices.EqualFunc(got, want, (*x509.Certificate).Equal)
}

func TestRootRotationPhases(t *testing.T) {
	ctx := context.Background()
	f, keys := newTrackedFixture(t)
	c := f.newCA(t)
	oldRoot := c.SigningRoot()
	oldInter, oldInterKeyID := f.record(t, keyWorkloadIntermediate)
	_, oldRootKeyID := f.record(t, keyWorkloadRoot)
	oldAuthority := c.SigningAuthority()
	if got := c.BundleVersion(); got != 1 {
		t.Fatalf("BundleVersion before any rotation: got %d, want 1", got)
	}
	if got := c.Rotation().Phase; got != ca.PhaseNone {
		t.Fatalf("Phase before any rotation: got %q, want none", got)
	}
	preChain := signAPI(t, c)
	preIssued := f.clock.Now()

	// prepared: the new root joins the bundle, the old intermediate signs.
	f.clock.Advance(5 * time.Minute)
	prepared := f.clock.Now()
	mustPrepare(t, c)
	roots := c.Roots()
	if len(roots) != 2 {
		t.Fatalf("prepared: Roots: got %d certificates, want 2", len(roots))
	}
	if !roots[0].Equal(oldRoot) {
		t.Error("prepared: Roots()[0]: got another certificate, want the old root (oldest first)")
	}
	newRoot := roots[1]
	if newRoot.Equal(oldRoot) || publicKeyEqual(newRoot.PublicKey, oldRoot.PublicKey) {
		t.Fatal("prepared: the second root is the old one or has its key")
	}
	if err := newRoot.CheckSignatureFrom(newRoot); err != nil {
		t.Errorf("prepared: new root is not self-signed: %v", err)
	}
	if got, want := newRoot.URIs, oldRoot.URIs; len(got) != 1 || got[0].String() != want[0].String() {
		t.Errorf("prepared: new root URI SANs: got %v, want %v", got, want)
	}
	if got, want := newRoot.NotAfter, prepared.Add(ca.DefaultRootTTL); !got.Equal(want) {
		t.Errorf("prepared: new root NotAfter: got %v, want %v", got, want)
	}
	if got := c.BundleVersion(); got != 2 {
		t.Errorf("prepared: BundleVersion: got %d, want 2", got)
	}
	if got := c.SigningAuthority(); !slices.Equal(got, oldAuthority) {
		t.Errorf("prepared: SigningAuthority: got %x, want the old %x", got, oldAuthority)
	}
	if !c.SigningRoot().Equal(oldRoot) {
		t.Error("prepared: SigningRoot: got another root, want the old one")
	}
	r := c.Rotation()
	if r.Phase != ca.PhasePrepared || !r.Started.Equal(prepared) || !r.PhaseSince.Equal(prepared) || !r.RetireAfter.IsZero() {
		t.Errorf("prepared: Rotation: got phase %q started %v since %v retire after %v, want %q started and since %v, no retire time",
			r.Phase, r.Started, r.PhaseSince, r.RetireAfter, ca.PhasePrepared, prepared)
	}
	if got := len(c.Bundle().X509Authorities()); got != 2 {
		t.Errorf("prepared: Bundle: got %d authorities, want 2", got)
	}
	preparedChain := signAPI(t, c)
	if !preparedChain[1].Equal(oldInter) {
		t.Error("prepared: SignSVID chain[1]: got another intermediate, want the old one")
	}
	if err := verify(preparedChain, prepared, oldRoot); err != nil {
		t.Errorf("prepared: SVID does not verify against the old root alone (proxies that lack the new root): %v", err)
	}
	if err := verify(preparedChain, prepared, newRoot); err == nil {
		t.Error("prepared: SVID verifies against the new root alone, want it to chain to the old root")
	}
	if got := len(keys.live(t)); got != 3 {
		t.Errorf("prepared: keys held: got %d, want 3 (old root, old intermediate, new root)", got)
	}

	// activated: a new intermediate under the new root signs; both roots
	// stay in the bundle.
	f.clock.Advance(10 * time.Minute)
	activated := f.clock.Now()
	mustActivate(t, c)
	if got := c.SigningAuthority(); slices.Equal(got, oldAuthority) {
		t.Error("activated: SigningAuthority: got the old one, want a new one")
	}
	if !c.SigningRoot().Equal(newRoot) {
		t.Error("activated: SigningRoot: got another root, want the new one")
	}
	if !rootsEqual(c.Roots(), []*x509.Certificate{oldRoot, newRoot}) {
		t.Error("activated: Roots: want [old root, new root]")
	}
	if got := c.BundleVersion(); got != 2 {
		t.Errorf("activated: BundleVersion: got %d, want 2 (the roots did not change)", got)
	}
	r = c.Rotation()
	if want := activated.Add(ca.DefaultSVIDTTL + retireSkew); r.Phase != ca.PhaseActivated || !r.RetireAfter.Equal(want) ||
		!r.Started.Equal(prepared) || !r.PhaseSince.Equal(activated) {
		t.Errorf("activated: Rotation: got phase %q started %v since %v retire after %v, want %q started %v since %v retire after %v",
			r.Phase, r.Started, r.PhaseSince, r.RetireAfter, ca.PhaseActivated, prepared, activated, want)
	}
	storedRoot, _ := f.record(t, keyWorkloadRoot)
	if !storedRoot.Equal(newRoot) {
		t.Error("activated: stored root: got another certificate, want the new root")
	}
	newChain := signAPI(t, c)
	if got := newChain[1].SubjectKeyId; !slices.Equal(got, c.SigningAuthority()) {
		t.Errorf("activated: SVID issuer: got %x, want the signing authority %x", got, c.SigningAuthority())
	}
	if err := newChain[1].CheckSignatureFrom(newRoot); err != nil {
		t.Errorf("activated: new intermediate is not signed by the new root: %v", err)
	}
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		roots []*x509.Certificate
		ok    bool
	}{
		{"new-svid-new-root", newChain, []*x509.Certificate{newRoot}, true},
		{"new-svid-bundle", newChain, c.Bundle().X509Authorities(), true},
		{"new-svid-old-root", newChain, []*x509.Certificate{oldRoot}, false},
		{"pre-rotation-svid-bundle", preChain, c.Bundle().X509Authorities(), true},
		{"prepared-svid-bundle", preparedChain, c.Bundle().X509Authorities(), true},
	} {
		if err := verify(tc.chain, activated, tc.roots...); (err == nil) != tc.ok {
			t.Errorf("activated: %s: verify: got error %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	serving, err := c.SignServing(&newKey(t).PublicKey, identity.ControlPlaneID(f.td), []string{"localhost"}, nil, 0)
	if err != nil {
		t.Fatalf("activated: SignServing: %v", err)
	}
	if !serving[len(serving)-1].Equal(newRoot) {
		t.Error("activated: SignServing chain ends in another root, want the new one")
	}
	if !serving[1].Equal(newChain[1]) {
		t.Error("activated: SignServing chain[1]: got another intermediate, want the new one")
	}

	// Retiring before RetireAfter changes nothing.
	for _, early := range []time.Duration{0, ca.DefaultSVIDTTL, ca.DefaultSVIDTTL + retireSkew - time.Second} {
		f.clock.Advance(activated.Add(early).Sub(f.clock.Now()))
		before, rev := viewOf(c), f.revision(t)
		if err := c.RetireRoot(ctx); !errors.Is(err, ca.ErrTooEarly) {
			t.Fatalf("RetireRoot %s after activation: got %v, want an error wrapping %v", early, err, ca.ErrTooEarly)
		}
		if diff := cmp.Diff(before, viewOf(c)); diff != "" {
			t.Errorf("RetireRoot too early changed the CA (-before +after):\n%s", diff)
		}
		if got := f.revision(t); got != rev {
			t.Errorf("RetireRoot too early: store revision: got %d, want %d", got, rev)
		}
	}

	// retired: exactly at RetireAfter the old root leaves the bundle.
	f.clock.Advance(time.Second)
	if err := c.RetireRoot(ctx); err != nil {
		t.Fatalf("RetireRoot at RetireAfter: %v", err)
	}
	if !rootsEqual(c.Roots(), []*x509.Certificate{newRoot}) {
		t.Errorf("retired: Roots: got %d certificates, want only the new root", len(c.Roots()))
	}
	if got := c.BundleVersion(); got != 3 {
		t.Errorf("retired: BundleVersion: got %d, want 3", got)
	}
	r = c.Rotation()
	if r.Phase != ca.PhaseNone || !r.Started.IsZero() || !r.RetireAfter.IsZero() {
		t.Errorf("retired: Rotation: got phase %q started %v retire after %v, want none and zero times", r.Phase, r.Started, r.RetireAfter)
	}
	for name, id := range map[string]string{"old root": oldRootKeyID, "old intermediate": oldInterKeyID} {
		if _, err := f.keys.GetKey(ctx, id); !errors.Is(err, keymanager.ErrNotFound) {
			t.Errorf("retired: GetKey of the %s's key %q: got %v, want an error wrapping %v", name, id, err, keymanager.ErrNotFound)
		}
	}
	if got := len(keys.live(t)); got != 2 {
		t.Errorf("retired: keys held: got %d (%v), want 2 (new root, new intermediate)", got, keys.live(t))
	}
	// At the time it was issued, so that only the missing root fails it.
	if err := verify(preChain, preIssued, c.Bundle().X509Authorities()...); err == nil {
		t.Error("retired: a pre-rotation SVID still verifies against Bundle()")
	}
	if err := verify(signAPI(t, c), f.clock.Now(), c.Bundle().X509Authorities()...); err != nil {
		t.Errorf("retired: a new SVID does not verify against Bundle(): %v", err)
	}

	// A restart sees the finished rotation.
	if diff := cmp.Diff(viewOf(c), viewOf(f.newCA(t))); diff != "" {
		t.Errorf("restart after retirement (-running +restarted):\n%s", diff)
	}

	// A second rotation starts from version 3.
	mustPrepare(t, c)
	if got := c.BundleVersion(); got != 4 {
		t.Errorf("second rotation prepared: BundleVersion: got %d, want 4", got)
	}
}

// phaseSetup brings a CA into a phase of a root rotation.
type phaseSetup struct {
	name  string
	setup func(t *testing.T, f *fixture, c *ca.CA)
}

var phaseSetups = []phaseSetup{
	{"none", func(*testing.T, *fixture, *ca.CA) {}},
	{"prepared", func(t *testing.T, _ *fixture, c *ca.CA) { mustPrepare(t, c) }},
	{"activated", func(t *testing.T, _ *fixture, c *ca.CA) { mustPrepare(t, c); mustActivate(t, c) }},
	// Activated with RetireAfter passed, so RetireRoot would apply.
	{"activated-due", func(t *testing.T, f *fixture, c *ca.CA) {
		mustPrepare(t, c)
		mustActivate(t, c)
		f.clock.Advance(c.Rotation().RetireAfter.Sub(f.clock.Now()))
	}},
}

func TestRotationWrongPhase(t *testing.T) {
	ops := map[string]func(context.Context, *testing.T, *fixture, *ca.CA) error{
		"PrepareRoot":        func(ctx context.Context, _ *testing.T, _ *fixture, c *ca.CA) error { return c.PrepareRoot(ctx) },
		"ActivateRoot":       func(ctx context.Context, _ *testing.T, _ *fixture, c *ca.CA) error { return c.ActivateRoot(ctx) },
		"RetireRoot":         func(ctx context.Context, _ *testing.T, _ *fixture, c *ca.CA) error { return c.RetireRoot(ctx) },
		"RotateIntermediate": func(ctx context.Context, _ *testing.T, _ *fixture, c *ca.CA) error { return c.RotateIntermediate(ctx) },
		"PrepareRootFrom": func(ctx context.Context, t *testing.T, f *fixture, c *ca.CA) error {
			cert, key := ownRoot(t, f, nil)
			return c.PrepareRootFrom(ctx, cert, key)
		},
	}
	tests := []struct {
		phase string
		op    string
		want  error
	}{
		{"none", "ActivateRoot", ca.ErrWrongPhase},
		{"none", "RetireRoot", ca.ErrWrongPhase},
		{"prepared", "PrepareRoot", ca.ErrRotationInProgress},
		{"prepared", "PrepareRootFrom", ca.ErrRotationInProgress},
		{"prepared", "RetireRoot", ca.ErrWrongPhase},
		{"prepared", "RotateIntermediate", ca.ErrRotationInProgress},
		{"activated", "PrepareRoot", ca.ErrRotationInProgress},
		{"activated", "PrepareRootFrom", ca.ErrRotationInProgress},
		{"activated", "ActivateRoot", ca.ErrWrongPhase},
		{"activated", "RotateIntermediate", ca.ErrRotationInProgress},
		{"activated-due", "PrepareRoot", ca.ErrRotationInProgress},
		{"activated-due", "ActivateRoot", ca.ErrWrongPhase},
		{"activated-due", "RotateIntermediate", ca.ErrRotationInProgress},
	}
	for _, tt := range tests {
		t.Run(tt.phase+"-"+tt.op, func(t *testing.T) {
			f, keys := newTrackedFixture(t)
			c := f.newCA(t)
			i := slices.IndexFunc(phaseSetups, func(p phaseSetup) bool { return p.name == tt.phase })
			phaseSetups[i].setup(t, f, c)
			before, records, rev, held := viewOf(c), f.records(t), f.revision(t), keys.live(t)

			err := ops[tt.op](context.Background(), t, f, c)
			if !errors.Is(err, tt.want) {
				t.Fatalf("%s in phase %s: got %v, want an error wrapping %v", tt.op, tt.phase, err, tt.want)
			}
			if diff := cmp.Diff(before, viewOf(c)); diff != "" {
				t.Errorf("CA changed (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(records, f.records(t)); diff != "" {
				t.Errorf("records changed (-before +after):\n%s", diff)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d", got, rev)
			}
			if diff := cmp.Diff(held, keys.live(t)); diff != "" {
				t.Errorf("keys held changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestRotationRestart(t *testing.T) {
	tests := []struct {
		name  string
		phase string
		disk  bool
	}{
		{"prepared-memory", "prepared", false},
		{"prepared-disk", "prepared", true},
		{"activated-memory", "activated", false},
		{"activated-disk", "activated", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			if tt.disk {
				f = newDiskFixture(t)
			}
			first := f.newCA(t)
			oldRoot := first.SigningRoot()
			preChain := signAPI(t, first)
			i := slices.IndexFunc(phaseSetups, func(p phaseSetup) bool { return p.name == tt.phase })
			phaseSetups[i].setup(t, f, first)
			want := viewOf(first)
			f.clock.Advance(time.Minute)

			// The restarted control plane: a new CA and, for a Disk,
			// a new key manager reading the same directory.
			if tt.disk {
				f.keys = openDisk(t, f.keyDir)
			}
			c := f.newCA(t)
			if diff := cmp.Diff(want, viewOf(c)); diff != "" {
				t.Fatalf("restarted CA (-before +after):\n%s", diff)
			}
			if err := verify(signAPI(t, c), f.clock.Now(), first.Bundle().X509Authorities()...); err != nil {
				t.Errorf("SVID of the restarted CA does not verify against the bundle before the restart: %v", err)
			}

			// It carries the rotation on to the end.
			if tt.phase == "prepared" {
				mustActivate(t, c)
			}
			mustRetire(t, f, c)
			if got := c.Rotation().Phase; got != ca.PhaseNone {
				t.Errorf("after RetireRoot: Phase: got %q, want none", got)
			}
			if !rootsEqual(c.Roots(), []*x509.Certificate{c.SigningRoot()}) || c.SigningRoot().Equal(oldRoot) {
				t.Error("after RetireRoot: Roots: want only the new root")
			}
			if err := verify(preChain, startTime(), c.Bundle().X509Authorities()...); err == nil {
				t.Error("after RetireRoot: a pre-rotation SVID still verifies against Bundle()")
			}
			if tt.disk {
				// Only the new root's and the new intermediate's key
				// files are left, and a third start loads them.
				if got := len(keyFiles(t, f.keyDir)); got != 3 {
					t.Errorf("key dir after RetireRoot: got %d files (%v), want 3 (keyring and two keys)", got, keyNames(t, f.keyDir))
				}
				f.keys = openDisk(t, f.keyDir)
			}
			if diff := cmp.Diff(viewOf(c), viewOf(f.newCA(t))); diff != "" {
				t.Errorf("start after retirement (-running +restarted):\n%s", diff)
			}
			if err := first.Reload(ctx); err != nil {
				t.Fatalf("Reload of the CA from before the restart: %v", err)
			}
			if diff := cmp.Diff(viewOf(c), viewOf(first)); diff != "" {
				t.Errorf("CA from before the restart after Reload (-restarted +first):\n%s", diff)
			}
		})
	}
}

// keyNames returns the names of the files in dir.
func keyNames(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	for n := range keyFiles(t, dir) {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func TestRotationReplicas(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	a, b := f.newCA(t), f.newCA(t)
	oldRoot := b.SigningRoot()

	mustPrepare(t, a)
	if got := len(b.Roots()); got != 1 {
		t.Errorf("replica b before Reload: Roots: got %d, want 1", got)
	}
	if err := b.Reload(ctx); err != nil {
		t.Fatalf("replica b: Reload: %v", err)
	}
	if diff := cmp.Diff(viewOf(a), viewOf(b)); diff != "" {
		t.Fatalf("replica b after Reload of prepared (-a +b):\n%s", diff)
	}

	// b activates what a prepared without a Reload of its own: every
	// rotation step starts from the stored records.
	f.clock.Advance(time.Minute)
	mustActivate(t, b)
	if !a.SigningRoot().Equal(oldRoot) {
		t.Error("replica a before Reload: SigningRoot: got the new root, want the old one")
	}
	// Before it reloads, a still signs under the old root; those SVIDs
	// verify against b's bundle, which holds both roots.
	if err := verify(signAPI(t, a), f.clock.Now(), b.Bundle().X509Authorities()...); err != nil {
		t.Errorf("SVID of the not yet reloaded replica a against b's bundle: %v", err)
	}
	if err := a.Reload(ctx); err != nil {
		t.Fatalf("replica a: Reload: %v", err)
	}
	if diff := cmp.Diff(viewOf(b), viewOf(a)); diff != "" {
		t.Fatalf("replica a after Reload of activated (-b +a):\n%s", diff)
	}
	if err := verify(signAPI(t, a), f.clock.Now(), b.SigningRoot()); err != nil {
		t.Errorf("SVID of replica a after Reload against the new root: %v", err)
	}

	// a retires; b follows.
	mustRetire(t, f, a)
	if err := b.Reload(ctx); err != nil {
		t.Fatalf("replica b: Reload: %v", err)
	}
	if diff := cmp.Diff(viewOf(a), viewOf(b)); diff != "" {
		t.Errorf("replica b after Reload of retirement (-a +b):\n%s", diff)
	}
	if got := len(b.Roots()); got != 1 {
		t.Errorf("replica b after retirement: Roots: got %d, want 1", got)
	}
	// A Reload with nothing changed is a no-op.
	before := viewOf(b)
	if err := b.Reload(ctx); err != nil {
		t.Fatalf("replica b: second Reload: %v", err)
	}
	if diff := cmp.Diff(before, viewOf(b)); diff != "" {
		t.Errorf("Reload without changes changed the CA (-before +after):\n%s", diff)
	}
}

func TestConcurrentPrepareRoot(t *testing.T) {
	t.Run("racing-write", func(t *testing.T) {
		// a prepares between b's read of the records and b's write.
		f, keys := newTrackedFixture(t)
		a := f.newCA(t)
		var raceErr error
		racing := &racingStore{Store: f.store, race: func() { raceErr = a.PrepareRoot(context.Background()) }}
		cfg := f.config()
		cfg.Store = racing
		b, err := ca.New(context.Background(), cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		err = b.PrepareRoot(context.Background())
		if raceErr != nil {
			t.Fatalf("the winner's PrepareRoot: %v", raceErr)
		}
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("the loser's PrepareRoot: got %v, want an error wrapping %v", err, store.ErrConflict)
		}
		if got := keys.live(t); len(got) != 3 {
			t.Errorf("keys held: got %d (%v), want 3: the loser's new root key must be deleted", len(got), got)
		}
		if err := b.Reload(context.Background()); err != nil {
			t.Fatalf("the loser's Reload: %v", err)
		}
		if diff := cmp.Diff(viewOf(a), viewOf(b)); diff != "" {
			t.Errorf("the loser's view after Reload (-winner +loser):\n%s", diff)
		}
		mustActivate(t, b)
	})

	t.Run("replicas", func(t *testing.T) {
		const replicas = 4
		f, keys := newTrackedFixture(t)
		cas := make([]*ca.CA, replicas)
		for i := range cas {
			cas[i] = f.newCA(t)
		}
		errs := make([]error, replicas)
		var wg sync.WaitGroup
		for i := range replicas {
			wg.Go(func() { errs[i] = cas[i].PrepareRoot(context.Background()) })
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, store.ErrConflict), errors.Is(err, ca.ErrRotationInProgress):
			default:
				t.Errorf("replica %d: PrepareRoot: got %v, want nil, a conflict or %v", i, err, ca.ErrRotationInProgress)
			}
		}
		if won != 1 {
			t.Errorf("PrepareRoot succeeded on %d replicas, want exactly 1 (errors %v)", won, errs)
		}
		if got := keys.live(t); len(got) != 3 {
			t.Errorf("keys held: got %d (%v), want 3: every loser's new root key must be deleted", len(got), got)
		}
		for i, c := range cas {
			if err := c.Reload(context.Background()); err != nil {
				t.Fatalf("replica %d: Reload: %v", i, err)
			}
			if got := c.BundleVersion(); got != 2 {
				t.Errorf("replica %d: BundleVersion: got %d, want 2", i, got)
			}
		}
	})
}

func TestRotateIntermediate(t *testing.T) {
	ctx := context.Background()
	f, keys := newTrackedFixture(t)
	c := f.newCA(t)
	root := c.SigningRoot()
	oldAuthority := c.SigningAuthority()
	_, oldKeyID := f.record(t, keyWorkloadIntermediate)
	preChain := signAPI(t, c)

	f.clock.Advance(time.Minute)
	if err := c.RotateIntermediate(ctx); err != nil {
		t.Fatalf("RotateIntermediate: %v", err)
	}
	if got := c.SigningAuthority(); slices.Equal(got, oldAuthority) {
		t.Error("SigningAuthority: got the old one, want a new one")
	}
	if !c.SigningRoot().Equal(root) || !rootsEqual(c.Roots(), []*x509.Certificate{root}) {
		t.Error("roots changed, want the same single root")
	}
	if got := c.BundleVersion(); got != 1 {
		t.Errorf("BundleVersion: got %d, want 1 (unchanged)", got)
	}
	inter, keyID := f.record(t, keyWorkloadIntermediate)
	if keyID == oldKeyID {
		t.Errorf("key id of the new intermediate: got the old %q, want a new one", keyID)
	}
	if got, want := inter.NotAfter, f.clock.Now().Add(ca.DefaultIntermediateTTL); !got.Equal(want) {
		t.Errorf("new intermediate NotAfter: got %v, want %v", got, want)
	}
	newChain := signAPI(t, c)
	if !newChain[1].Equal(inter) {
		t.Error("SignSVID chain[1]: got another intermediate, want the stored new one")
	}
	for name, chain := range map[string][]*x509.Certificate{"pre-rotation": preChain, "new": newChain} {
		if err := verify(chain, f.clock.Now(), c.Bundle().X509Authorities()...); err != nil {
			t.Errorf("%s SVID does not verify against Bundle(): %v", name, err)
		}
	}
	if _, err := f.keys.GetKey(ctx, oldKeyID); !errors.Is(err, keymanager.ErrNotFound) {
		t.Errorf("GetKey of the old intermediate's key: got %v, want an error wrapping %v", err, keymanager.ErrNotFound)
	}
	if got := len(keys.live(t)); got != 2 {
		t.Errorf("keys held: got %d, want 2", got)
	}
	if diff := cmp.Diff(viewOf(c), viewOf(f.newCA(t))); diff != "" {
		t.Errorf("restart after RotateIntermediate (-running +restarted):\n%s", diff)
	}
	// During a root rotation it is refused: TestRotationWrongPhase.
}

// rotationRecordOf reads the rotation record as a generic JSON object.
func rotationRecordOf(t *testing.T, f *fixture) map[string]any {
	t.Helper()
	kv, err := f.store.Get(context.Background(), keyWorkloadRotation)
	if err != nil {
		t.Fatalf("get %s: %v", keyWorkloadRotation, err)
	}
	var m map[string]any
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		t.Fatalf("decode %s: %v", keyWorkloadRotation, err)
	}
	return m
}

// recordOf returns the JSON form of a record of cert.
func recordOf(cert *x509.Certificate, keyID string) map[string]any {
	return map[string]any{"certificate": pemCert(cert.Raw), "keyID": keyID}
}

func TestRotationRecordCorrupted(t *testing.T) {
	// Certificates to build defects from: another trust domain's root,
	// and an SVID.
	other := newFixture(t)
	other.td = spiffeid.RequireTrustDomainFromString("other.test")
	other.newCA(t)
	foreignRoot, _ := other.record(t, keyWorkloadRoot)

	tests := []struct {
		name string
		// mutate returns the corrupted rotation record of a prepared
		// rotation, m.
		mutate func(t *testing.T, f *fixture, m map[string]any) []byte
	}{
		{"not-json", func(*testing.T, *fixture, map[string]any) []byte { return []byte("{") }},
		{"json-array", func(*testing.T, *fixture, map[string]any) []byte { return []byte("[]") }},
		{"phase-not-a-string", func(t *testing.T, _ *fixture, m map[string]any) []byte {
			m["phase"] = 7
			return marshalAny(t, m)
		}},
		{"unknown-phase", func(t *testing.T, _ *fixture, m map[string]any) []byte {
			m["phase"] = "retiring"
			return marshalAny(t, m)
		}},
		{"prepared-without-root", func(t *testing.T, _ *fixture, m map[string]any) []byte {
			delete(m, "root")
			return marshalAny(t, m)
		}},
		{"second-root-without-phase", func(t *testing.T, _ *fixture, m map[string]any) []byte {
			delete(m, "phase")
			return marshalAny(t, m)
		}},
		{"root-not-pem", func(t *testing.T, _ *fixture, m map[string]any) []byte {
			m["root"].(map[string]any)["certificate"] = "not pem"
			return marshalAny(t, m)
		}},
		{"root-bad-der", func(t *testing.T, _ *fixture, m map[string]any) []byte {
			m["root"].(map[string]any)["certificate"] = pemCert([]byte("not der"))
			return marshalAny(t, m)
		}},
		{"root-not-self-signed", func(t *testing.T, f *fixture, m map[string]any) []byte {
			inter, keyID := f.record(t, keyWorkloadIntermediate)
			m["root"] = recordOf(inter, keyID)
			return marshalAny(t, m)
		}},
		{"root-of-another-trust-domain", func(t *testing.T, _ *fixture, m map[string]any) []byte {
			m["root"].(map[string]any)["certificate"] = pemCert(foreignRoot.Raw)
			return marshalAny(t, m)
		}},
		{"root-is-a-leaf", func(t *testing.T, f *fixture, m map[string]any) []byte {
			m["root"].(map[string]any)["certificate"] = pemCert(signAPI(t, f.newCA(t))[0].Raw)
			return marshalAny(t, m)
		}},
		{"root-has-the-signing-roots-key", func(t *testing.T, f *fixture, m map[string]any) []byte {
			root, keyID := f.record(t, keyWorkloadRoot)
			m["root"] = recordOf(root, keyID)
			return marshalAny(t, m)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			c := f.newCA(t)
			mustPrepare(t, c)
			before := viewOf(c)
			value := tt.mutate(t, f, rotationRecordOf(t, f))
			if _, err := store.Put(ctx, f.store, keyWorkloadRotation, value); err != nil {
				t.Fatal(err)
			}
			records, rev := f.records(t), f.revision(t)

			_, err := ca.New(ctx, f.config())
			if !errors.Is(err, ca.ErrCorruptRecord) {
				t.Fatalf("New: got %v, want an error wrapping %v", err, ca.ErrCorruptRecord)
			}

			// The running CA refuses the record and keeps its
			// generation: it still signs, under the same bundle.
			if err := c.Reload(ctx); !errors.Is(err, ca.ErrCorruptRecord) {
				t.Fatalf("Reload: got %v, want an error wrapping %v", err, ca.ErrCorruptRecord)
			}
			if diff := cmp.Diff(before, viewOf(c)); diff != "" {
				t.Errorf("CA after a failed Reload (-before +after):\n%s", diff)
			}
			if err := verify(signAPI(t, c), f.clock.Now(), c.Bundle().X509Authorities()...); err != nil {
				t.Errorf("SVID after a failed Reload: %v", err)
			}
			// Rotation steps read the records first, and refuse them.
			for name, op := range map[string]func(context.Context) error{
				"PrepareRoot": c.PrepareRoot, "ActivateRoot": c.ActivateRoot,
				"RetireRoot": c.RetireRoot, "RotateIntermediate": c.RotateIntermediate,
			} {
				if err := op(ctx); !errors.Is(err, ca.ErrCorruptRecord) {
					t.Errorf("%s: got %v, want an error wrapping %v", name, err, ca.ErrCorruptRecord)
				}
			}
			if diff := cmp.Diff(records, f.records(t)); diff != "" {
				t.Errorf("records changed (-before +after):\n%s", diff)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d", got, rev)
			}
		})
	}
}

func marshalAny(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRetireRootKeepsLiveKeys corrupts the key ids an activated rotation
// record holds for deletion so that they name a key in use. RetireRoot
// deletes those keys; a key a record refers to must never be among them,
// or the CA cannot start again. Either the record is refused as corrupted
// or the CA still starts after the retirement.
func TestRetireRootKeepsLiveKeys(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m map[string]any, rootKeyID, interKeyID string)
	}{
		{"old-root-key-is-the-signing-roots", func(m map[string]any, rootKeyID, _ string) {
			m["root"].(map[string]any)["keyID"] = rootKeyID
		}},
		{"old-intermediate-key-is-the-signing-intermediates", func(m map[string]any, _, interKeyID string) {
			m["oldIntermediateKeyID"] = interKeyID
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			c := f.newCA(t)
			mustPrepare(t, c)
			mustActivate(t, c)
			_, rootKeyID := f.record(t, keyWorkloadRoot)
			_, interKeyID := f.record(t, keyWorkloadIntermediate)
			m := rotationRecordOf(t, f)
			tt.mutate(m, rootKeyID, interKeyID)
			if _, err := store.Put(ctx, f.store, keyWorkloadRotation, marshalAny(t, m)); err != nil {
				t.Fatal(err)
			}
			err := c.Reload(ctx)
			if errors.Is(err, ca.ErrCorruptRecord) {
				return // refused: nothing will be deleted
			}
			if err != nil {
				t.Fatalf("Reload: %v", err)
			}
			f.clock.Advance(c.Rotation().RetireAfter.Sub(f.clock.Now()))
			if err := c.RetireRoot(ctx); err != nil {
				t.Fatalf("RetireRoot: %v", err)
			}
			if _, err := ca.New(ctx, f.config()); err != nil {
				t.Errorf("New after RetireRoot of a record naming a live key: %v; want the record refused as corrupted", err)
			}
		})
	}
}

// pausingStore holds one List, once armed, after it has read the store and
// before it returns: a Reload that read the records and is slow to install
// them.
type pausingStore struct {
	store.Store

	armed   atomic.Bool
	listed  chan struct{}
	release chan struct{}
}

func newPausingStore(s store.Store) *pausingStore {
	return &pausingStore{Store: s, listed: make(chan struct{}), release: make(chan struct{})}
}

func (s *pausingStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	kvs, rev, err := s.Store.List(ctx, prefix)
	if s.armed.CompareAndSwap(true, false) {
		close(s.listed)
		<-s.release
	}
	return kvs, rev, err
}

// TestReloadNeverGoesBack runs two Reloads of one CA concurrently, as the
// control plane's watch and a rotation step do: the one that read the
// older records must not install them over the newer ones.
func TestReloadNeverGoesBack(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	a := f.newCA(t)
	paused := newPausingStore(f.store)
	cfg := f.config()
	cfg.Store = paused
	c, err := ca.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mustPrepare(t, a)
	if err := c.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}

	paused.armed.Store(true)
	slow := make(chan error, 1)
	go func() { slow <- c.Reload(ctx) }()
	<-paused.listed // the slow Reload has read the prepared records

	mustActivate(t, a)
	if err := c.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if diff := cmp.Diff(viewOf(a), viewOf(c)); diff != "" {
		t.Fatalf("after the fast Reload (-store +c):\n%s", diff)
	}
	close(paused.release)
	if err := <-slow; err != nil {
		t.Fatalf("slow Reload: %v", err)
	}
	if diff := cmp.Diff(viewOf(a), viewOf(c)); diff != "" {
		t.Errorf("after the slow Reload the CA went back to older records (-store +c):\n%s", diff)
	}
}

// unknownOutcomeStore applies the next Txn, once armed, and then reports an
// error, as an etcd client does when the connection drops after the commit:
// the caller cannot tell whether it was applied.
type unknownOutcomeStore struct {
	store.Store

	armed atomic.Bool
}

var errLostReply = errors.New("txn: connection lost before the reply")

func (s *unknownOutcomeStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	rev, err := s.Store.Txn(ctx, cmps, ops)
	if err == nil && len(ops) > 0 && s.armed.CompareAndSwap(true, false) {
		return 0, errLostReply
	}
	return rev, err
}

// TestRotationWriteOutcomeUnknown: a rotation write whose outcome is
// unknown (applied, but reported as failed) must not delete the key it
// generated, since a record may now refer to it.
func TestRotationWriteOutcomeUnknown(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *ca.CA)
		op    func(*ca.CA, context.Context) error
		// next is the step after op, on a CA started afresh.
		next func(t *testing.T, f *fixture, c *ca.CA)
	}{
		{"PrepareRoot", func(*testing.T, *ca.CA) {}, (*ca.CA).PrepareRoot,
			func(t *testing.T, _ *fixture, c *ca.CA) { mustActivate(t, c) }},
		{"ActivateRoot", func(t *testing.T, c *ca.CA) { mustPrepare(t, c) }, (*ca.CA).ActivateRoot,
			func(t *testing.T, f *fixture, c *ca.CA) { mustRetire(t, f, c) }},
		{"RotateIntermediate", func(*testing.T, *ca.CA) {}, (*ca.CA).RotateIntermediate,
			func(t *testing.T, f *fixture, c *ca.CA) {
				if err := verify(signAPI(t, c), f.clock.Now(), c.Roots()...); err != nil {
					t.Errorf("SVID: %v", err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			flaky := &unknownOutcomeStore{Store: f.store}
			cfg := f.config()
			cfg.Store = flaky
			c, err := ca.New(ctx, cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			tt.setup(t, c)
			flaky.armed.Store(true)
			if err := tt.op(c, ctx); !errors.Is(err, errLostReply) {
				t.Fatalf("%s: got %v, want an error wrapping %v", tt.name, err, errLostReply)
			}
			// The write was applied: a control plane starting now
			// must find every key the records name.
			restarted, err := ca.New(ctx, f.config())
			if err != nil {
				t.Fatalf("New after a write of unknown outcome: %v", err)
			}
			tt.next(t, f, restarted)
		})
	}
}

// TestPrepareRootFromFullRotation carries a rotation to an operator's root
// through retirement (external_test.go covers preparing and activating).
func TestPrepareRootFromFullRotation(t *testing.T) {
	ctx := context.Background()
	f, keys := newTrackedFixture(t)
	c := f.newCA(t)
	preChain := signAPI(t, c)
	cert, key := ownRoot(t, f, nil)
	if err := c.PrepareRootFrom(ctx, cert, key); err != nil {
		t.Fatalf("PrepareRootFrom: %v", err)
	}
	if got := c.Roots(); len(got) != 2 || !got[0].Equal(cert) {
		t.Errorf("Roots: want 2 with the external root first (its NotBefore is older)")
	}
	if got := len(keys.live(t)); got != 3 {
		t.Errorf("keys held: got %d, want 3 (the external root's key imported)", got)
	}
	mustActivate(t, c)
	if !c.SigningRoot().Equal(cert) {
		t.Error("SigningRoot after ActivateRoot: got another root, want the external one")
	}
	chain := signAPI(t, c)
	if err := verify(chain, f.clock.Now(), cert); err != nil {
		t.Errorf("SVID against the external root: %v", err)
	}
	if err := verify(preChain, f.clock.Now(), c.Roots()...); err != nil {
		t.Errorf("pre-rotation SVID against the bundle: %v", err)
	}
	mustRetire(t, f, c)
	if !rootsEqual(c.Roots(), []*x509.Certificate{cert}) {
		t.Error("Roots after RetireRoot: want only the external root")
	}
	if diff := cmp.Diff(viewOf(c), viewOf(f.newCA(t))); diff != "" {
		t.Errorf("restart (-running +restarted):\n%s", diff)
	}
}

// TestPrepareRootFromRejectsChangesNothing adds to external_test.go's
// TestPrepareRootFromRejects the cases it lacks, and checks that no key is
// imported.
func TestPrepareRootFromRejectsChangesNothing(t *testing.T) {
	other := spiffeid.RequireTrustDomainFromString("other.test")
	tests := []struct {
		name string
		// root returns the root and key to offer.
		root func(t *testing.T, f *fixture, c *ca.CA) (*x509.Certificate, crypto.Signer)
	}{
		{"no-cert-sign-usage", func(t *testing.T, f *fixture, _ *ca.CA) (*x509.Certificate, crypto.Signer) {
			return ownRoot(t, f, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })
		}},
		{"expires-now", func(t *testing.T, f *fixture, _ *ca.CA) (*x509.Certificate, crypto.Signer) {
			return ownRoot(t, f, func(c *x509.Certificate) { c.NotAfter = f.clock.Now() })
		}},
		{"not-yet-valid", func(t *testing.T, f *fixture, _ *ca.CA) (*x509.Certificate, crypto.Signer) {
			return ownRoot(t, f, func(c *x509.Certificate) { c.NotBefore = f.clock.Now().Add(time.Hour) })
		}},
		{"workload-uri-san", func(t *testing.T, f *fixture, _ *ca.CA) (*x509.Certificate, crypto.Signer) {
			return ownRoot(t, f, func(c *x509.Certificate) { c.URIs = []*url.URL{workloadID(t, "default", "api").URL()} })
		}},
		{"another-trust-domain", func(t *testing.T, f *fixture, _ *ca.CA) (*x509.Certificate, crypto.Signer) {
			return ownRoot(t, f, func(c *x509.Certificate) { c.URIs = []*url.URL{other.ID().URL()} })
		}},
		{"the-current-root", func(t *testing.T, f *fixture, c *ca.CA) (*x509.Certificate, crypto.Signer) {
			_, keyID := f.record(t, keyWorkloadRoot)
			key, err := f.keys.GetKey(context.Background(), keyID)
			if err != nil {
				t.Fatal(err)
			}
			return c.SigningRoot(), key
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, keys := newTrackedFixture(t)
			c := f.newCA(t)
			cert, key := tt.root(t, f, c)
			before, rev, held := viewOf(c), f.revision(t), keys.live(t)
			if err := c.PrepareRootFrom(context.Background(), cert, key); !errors.Is(err, ca.ErrBadRoot) {
				t.Fatalf("PrepareRootFrom: got %v, want an error wrapping %v", err, ca.ErrBadRoot)
			}
			if diff := cmp.Diff(before, viewOf(c)); diff != "" {
				t.Errorf("CA changed (-before +after):\n%s", diff)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d", got, rev)
			}
			if diff := cmp.Diff(held, keys.live(t)); diff != "" {
				t.Errorf("keys held changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestDue(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name             string
		advance          time.Duration
		wantIntermediate bool
		wantRoot         bool
	}{
		{"fresh", 0, false, false},
		{"intermediate-two-thirds-minus-a-day", 243 * day, false, false},
		{"intermediate-two-thirds-plus-a-day", 244 * day, true, false},
		{"root-two-thirds-minus-a-day", 2433 * day, true, false},
		{"root-two-thirds-plus-a-day", 2434 * day, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			c := f.newCA(t)
			f.clock.Advance(tt.advance)
			if got := c.IntermediateDue(); got != tt.wantIntermediate {
				t.Errorf("IntermediateDue: got %v, want %v", got, tt.wantIntermediate)
			}
			if got := c.RootDue(); got != tt.wantRoot {
				t.Errorf("RootDue: got %v, want %v", got, tt.wantRoot)
			}
		})
	}
}

func TestKeyID(t *testing.T) {
	if got, want := ca.KeyID([]byte{0x00, 0xab, 0xff}), "00abff"; got != want {
		t.Errorf("KeyID: got %q, want %q", got, want)
	}
}
