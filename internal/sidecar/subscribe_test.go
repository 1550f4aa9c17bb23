package sidecar_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
	"github.com/bulwarkmesh/bulwark/internal/svid"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// hangGuard bounds every wait so that a bug fails rather than hangs; it is
// never a timing assertion.
const hangGuard = 30 * time.Second

var (
	td     = spiffeid.RequireTrustDomainFromString("bulwark.test")
	apiSvc = identity.ServiceRef{Namespace: "default", Name: "api"}
	start  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func newCA(t testing.TB) *ca.CA {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: st, Keys: keymanager.NewMemory(), Clock: clock.NewFake(start)})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return c
}

// issuer signs every request with a real CA, as the control plane would.
type issuer struct{ ca *ca.CA }

var _ svid.Issuer = (*issuer)(nil)

func (i *issuer) sign(csr []byte) (*svid.Issued, error) {
	pub, err := ca.ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	id, err := identity.WorkloadID(td, apiSvc.Namespace, apiSvc.Name)
	if err != nil {
		return nil, err
	}
	chain, err := i.ca.SignSVID(pub, id, 0)
	if err != nil {
		return nil, err
	}
	return &svid.Issued{Chain: chain, Bundle: i.ca.Roots(), Instance: "api-1"}, nil
}

func (i *issuer) Attest(_ context.Context, _ string, csr []byte, _ identity.ServiceRef) (*svid.Issued, error) {
	return i.sign(csr)
}

func (i *issuer) Renew(_ context.Context, csr []byte) (*svid.Issued, error) { return i.sign(csr) }

func (i *issuer) SignJWT(context.Context, []string) (string, error) {
	return "", errors.New("not in this test")
}

// proxyNode is an SVID manager (attested, its clock stopped) and an engine
// of default/api.
type proxyNode struct {
	mgr    *svid.Manager
	engine *proxy.Engine
}

func newProxyNode(t *testing.T, c *ca.CA) *proxyNode {
	t.Helper()
	mgr, err := svid.New(svid.Config{
		Service: apiSvc, Token: "unused", Issuer: &issuer{ca: c}, Clock: clock.NewFake(start),
		Jitter: func() float64 { return 0.5 },
	})
	if err != nil {
		t.Fatalf("svid.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-mgr.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("no SVID")
	}
	engine, err := proxy.New(proxy.Config{Service: apiSvc, SVID: mgr, Bundle: mgr})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(engine.Close)
	return &proxyNode{mgr: mgr, engine: engine}
}

func (n *proxyNode) authority(t *testing.T) []byte {
	t.Helper()
	s, err := n.mgr.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return s.Certificates[0].AuthorityKeyId
}

func derOf(certs ...[]*x509.Certificate) [][]byte {
	var out [][]byte
	for _, cs := range certs {
		for _, c := range cs {
			out = append(out, c.Raw)
		}
	}
	return out
}

func jwks(t *testing.T, kids ...string) []byte {
	t.Helper()
	keys := map[string]crypto.PublicKey{}
	for _, kid := range kids {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[kid] = k.Public()
	}
	b, err := jwtbundle.FromJWTAuthorities(td, keys).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// state is what a snapshot put in force.
type state struct {
	Version, BundleVersion int64
	LastKnownGood          bool
	Roots                  int
	JWTKeys                []string
	Revoked                []string
	EarlyRenewal           bool
}

func stateOf(n *proxyNode) state {
	d := n.engine.Dump()
	st := n.mgr.Status()
	s := state{
		Version: d.Version, BundleVersion: d.BundleVersion, LastKnownGood: d.LastKnownGood,
		Roots: st.BundleRoots, Revoked: d.RevokedSerials, EarlyRenewal: !st.EarlyRenewal.IsZero(),
	}
	if b, err := n.mgr.GetJWTBundleForTrustDomain(td); err == nil {
		for kid := range b.JWTAuthorities() {
			s.JWTKeys = append(s.JWTKeys, kid)
		}
	}
	return s
}

// TestApplySnapshot: each applied snapshot puts its trust bundle, JWT
// bundle, revoked serials and bundle version in force, and schedules an
// early renewal when it names another signing authority. A malformed
// snapshot changes nothing.
func TestApplySnapshot(t *testing.T) {
	c, next := newCA(t), newCA(t)
	type step struct {
		name    string
		snap    func(n *proxyNode) *apiv1.Snapshot
		wantErr string
		want    state
	}
	keys := jwks(t, "k1")
	steps := []step{
		{
			name: "first",
			snap: func(n *proxyNode) *apiv1.Snapshot {
				return &apiv1.Snapshot{Version: 1, BundleVersion: 1, TrustBundle: derOf(c.Roots()), SigningAuthority: n.authority(t)}
			},
			want: state{Version: 1, BundleVersion: 1, Roots: 1},
		},
		{
			name: "root_added_jwt_keys_revocation",
			snap: func(n *proxyNode) *apiv1.Snapshot {
				return &apiv1.Snapshot{
					Version: 2, BundleVersion: 2, TrustBundle: derOf(c.Roots(), next.Roots()), SigningAuthority: n.authority(t),
					RevokedSerials: []string{"1a2b"}, JwtBundle: keys,
				}
			},
			want: state{Version: 2, BundleVersion: 2, Roots: 2, JWTKeys: []string{"k1"}, Revoked: []string{"1a2b"}},
		},
		{
			name: "bad_jwt_bundle_changes_nothing",
			snap: func(n *proxyNode) *apiv1.Snapshot {
				return &apiv1.Snapshot{Version: 3, BundleVersion: 3, TrustBundle: derOf(next.Roots()), JwtBundle: []byte("{")}
			},
			wantErr: "jwt bundle",
			want:    state{Version: 2, BundleVersion: 2, Roots: 2, JWTKeys: []string{"k1"}, Revoked: []string{"1a2b"}},
		},
		{
			name: "bad_revoked_serial_changes_nothing",
			snap: func(n *proxyNode) *apiv1.Snapshot {
				return &apiv1.Snapshot{Version: 3, BundleVersion: 3, TrustBundle: derOf(next.Roots()), RevokedSerials: []string{"zz"}}
			},
			wantErr: "revoked_serials",
			want:    state{Version: 2, BundleVersion: 2, Roots: 2, JWTKeys: []string{"k1"}, Revoked: []string{"1a2b"}},
		},
		{
			name: "signing_authority_changed",
			snap: func(n *proxyNode) *apiv1.Snapshot {
				return &apiv1.Snapshot{
					Version: 4, BundleVersion: 2, TrustBundle: derOf(c.Roots(), next.Roots()), SigningAuthority: []byte("next intermediate"),
					RevokedSerials: []string{"1a2b"},
				}
			},
			// No JWT bundle in the snapshot: the current one stays.
			want: state{Version: 4, BundleVersion: 2, Roots: 2, JWTKeys: []string{"k1"}, Revoked: []string{"1a2b"}, EarlyRenewal: true},
		},
		{
			name: "old_root_removed",
			snap: func(n *proxyNode) *apiv1.Snapshot {
				return &apiv1.Snapshot{Version: 5, BundleVersion: 3, TrustBundle: derOf(next.Roots()), SigningAuthority: []byte("next intermediate")}
			},
			want: state{Version: 5, BundleVersion: 3, Roots: 1, JWTKeys: []string{"k1"}, EarlyRenewal: true},
		},
	}
	n := newProxyNode(t, c)
	dir := t.TempDir()
	sub := sidecar.NewSubscriber(n.mgr, n.engine, apiSvc, dir, telemetry.Discard())
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			err := sub.Apply(st.snap(n))
			if st.wantErr == "" && err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)) {
				t.Fatalf("Apply: got %v, want an error containing %q", err, st.wantErr)
			}
			if diff := cmp.Diff(st.want, stateOf(n)); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
		})
	}

	// A restarted proxy serves the last snapshot from the data dir, with
	// the same effects.
	t.Run("last_known_good", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(dir, "snapshot.pb")); err != nil {
			t.Fatalf("snapshot.pb: %v", err)
		}
		n2 := newProxyNode(t, c)
		sub2 := sidecar.NewSubscriber(n2.mgr, n2.engine, apiSvc, dir, telemetry.Discard())
		sub2.LoadLastKnownGood()
		want := state{Version: 5, BundleVersion: 3, LastKnownGood: true, Roots: 1, EarlyRenewal: true}
		if diff := cmp.Diff(want, stateOf(n2)); diff != "" {
			t.Errorf("state (-want +got):\n%s", diff)
		}
		if _, lkg, _ := sub2.Status(); !lkg {
			t.Errorf("status: got lkg false, want true")
		}
	})

	t.Run("last_known_good_with_jwt_and_revocations", func(t *testing.T) {
		dir := t.TempDir()
		n1 := newProxyNode(t, c)
		snap := &apiv1.Snapshot{
			Version: 9, BundleVersion: 7, TrustBundle: derOf(c.Roots()), SigningAuthority: n1.authority(t),
			RevokedSerials: []string{"ff"}, JwtBundle: keys,
		}
		if err := sidecar.NewSubscriber(n1.mgr, n1.engine, apiSvc, dir, telemetry.Discard()).Apply(snap); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		n2 := newProxyNode(t, c)
		sidecar.NewSubscriber(n2.mgr, n2.engine, apiSvc, dir, telemetry.Discard()).LoadLastKnownGood()
		want := state{Version: 9, BundleVersion: 7, LastKnownGood: true, Roots: 1, JWTKeys: []string{"k1"}, Revoked: []string{"ff"}}
		if diff := cmp.Diff(want, stateOf(n2)); diff != "" {
			t.Errorf("state (-want +got):\n%s", diff)
		}
		if a1, a2 := n1.authority(t), n2.authority(t); !bytes.Equal(a1, a2) {
			t.Fatalf("bad test: the two proxies' SVIDs have authorities %x and %x", a1, a2)
		}
	})
}
