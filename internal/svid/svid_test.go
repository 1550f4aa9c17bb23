package svid_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/svid"
)

func TestNewRequires(t *testing.T) {
	cp := newControlPlane(t, 0)
	tests := []struct {
		name string
		cfg  svid.Config
	}{
		{name: "no_issuer", cfg: svid.Config{Service: apiSvc}},
		{name: "no_service", cfg: svid.Config{Issuer: cp}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := svid.New(tt.cfg); err == nil {
				t.Errorf("New: got nil error, want an error")
			}
		})
	}
}

func TestAttestInstallsSVID(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
	if isReady(h.mgr) {
		t.Errorf("Ready before Run: got closed, want open")
	}
	if _, err := h.mgr.GetX509SVID(); err == nil {
		t.Errorf("GetX509SVID before Run: got nil error, want an error")
	}
	h.start(t)

	if !isReady(h.mgr) {
		t.Errorf("Ready after attestation: got open, want closed")
	}
	s := h.current(t)
	if want := workloadID(t, "default", "api"); s.ID != want || h.mgr.ID() != want {
		t.Errorf("SVID ID: got %s (ID() %s), want %s", s.ID, h.mgr.ID(), want)
	}
	if got, want := h.mgr.Expiry(), start.Add(time.Hour); !got.Equal(want) {
		t.Errorf("Expiry: got %s, want %s", got, want)
	}
	if inst := h.mgr.Instance(); !strings.HasPrefix(inst, "api-") || identity.ValidateName(inst) != nil {
		t.Errorf("Instance: got %q, want a valid name starting with api-", inst)
	}
	b, err := h.mgr.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatalf("GetX509BundleForTrustDomain: %v", err)
	}
	if !certsEqual(b.X509Authorities(), cp.ca.Roots()) {
		t.Errorf("bundle: got %d authorities, want the CA's roots", len(b.X509Authorities()))
	}
	if _, _, err := x509svid.Verify(s.Certificates, h.mgr, x509svid.WithTime(cp.clock.Now())); err != nil {
		t.Errorf("SVID does not verify against the Manager's own bundle: %v", err)
	}
	if _, err := h.mgr.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.test")); err == nil {
		t.Errorf("GetX509BundleForTrustDomain(other.test): got nil error, want an error")
	}
	if got := h.rotations.Load(); got != 1 {
		t.Errorf("OnRotate calls after attestation: got %d, want 1", got)
	}
}

func TestRenewalTime(t *testing.T) {
	// Renewal starts at 50% of the SVID's lifetime plus Jitter()*10%.
	const margin = time.Millisecond
	tests := []struct {
		name     string
		jitter   float64
		wantFrac float64
	}{
		{name: "no_jitter_at_50pct", jitter: 0, wantFrac: 0.50},
		{name: "half_jitter_at_55pct", jitter: 0.5, wantFrac: 0.55},
		{name: "max_jitter_below_60pct", jitter: 0.9999, wantFrac: 0.59999},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := newControlPlane(t, time.Hour)
			h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), Jitter: func() float64 { return tt.jitter }})
			h.start(t)
			old := h.current(t)
			at := renewAt(old, tt.wantFrac)

			h.wait(t, at.Add(-margin).Sub(cp.clock.Now()))
			if renew, _ := cp.calls(); len(renew) != 0 {
				t.Fatalf("renewals before %.3f of the lifetime: got %d, want 0", tt.wantFrac, len(renew))
			}
			h.step(t, 2*margin)
			renew, _ := cp.calls()
			if len(renew) != 1 {
				t.Fatalf("renewals by %.3f of the lifetime: got %d, want 1", tt.wantFrac, len(renew))
			}
			s := h.current(t)
			if serial(s) == serial(old) {
				t.Errorf("SVID after renewal: got the old serial %s, want a new SVID", serial(old))
			}
			if s.ID != old.ID {
				t.Errorf("renewed SVID: got ID %s, want %s", s.ID, old.ID)
			}
			if got, want := h.mgr.Expiry(), renew[0].Add(time.Hour); !got.Equal(want.Truncate(time.Second)) {
				t.Errorf("Expiry after renewal: got %s, want %s", got, want)
			}
			if got := h.rotations.Load(); got != 2 {
				t.Errorf("OnRotate calls: got %d, want 2 (attest, renew)", got)
			}
		})
	}
}

// TestRenewalRepeats: each renewed SVID is renewed at 50% of its own
// lifetime, without attesting again.
func TestRenewalRepeats(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
	h.start(t)
	for i := range 4 {
		h.stepTo(t, renewAt(h.current(t), 0.5))
		if renew, _ := cp.calls(); len(renew) != i+1 {
			t.Fatalf("renewal %d: got %d Renew calls, want %d", i+1, len(renew), i+1)
		}
	}
	renew, attests := cp.calls()
	// NotBefore is backdated 30s: a 1h SVID lives 3630s and is renewed
	// 1815s after its NotBefore, which is 1785s after it was issued.
	want := []time.Duration{1785 * time.Second, 1785 * time.Second, 1785 * time.Second}
	if diff := cmp.Diff(want, gaps(renew)); diff != "" {
		t.Errorf("time between renewals (-want +got):\n%s", diff)
	}
	if len(attests) != 1 {
		t.Errorf("Attest calls: got %d, want 1", len(attests))
	}
}

func TestRenewalBackoff(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
		failures int
		want     []time.Duration // between attempts
	}{
		{name: "defaults_1s_to_30s", failures: 7, want: secs(1, 2, 4, 8, 16, 30, 30)},
		{name: "capped_at_8s", min: time.Second, max: 8 * time.Second, failures: 6, want: secs(1, 2, 4, 8, 8, 8)},
		{name: "from_250ms", min: 250 * time.Millisecond, max: time.Second, failures: 4, want: []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, time.Second}},
		{name: "one_failure", failures: 1, want: secs(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const margin = time.Millisecond
			cp := newControlPlane(t, time.Hour)
			h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), MinBackoff: tt.min, MaxBackoff: tt.max})
			h.start(t)
			old := h.current(t)
			cp.set(func(cp *controlPlane) {
				for range tt.failures {
					cp.renewErrs = append(cp.renewErrs, errUnreachable)
				}
			})

			h.stepTo(t, renewAt(old, 0.5))
			for i, g := range tt.want {
				// Not retried before the backoff is over ...
				h.wait(t, g-margin)
				if renew, _ := cp.calls(); len(renew) != i+1 {
					t.Fatalf("attempt %d: got %d Renew calls %s before its backoff %s ended, want %d", i+2, len(renew), margin, g, i+1)
				}
				// ... and the old SVID stays in use meanwhile.
				if s := h.current(t); serial(s) != serial(old) {
					t.Fatalf("during retries: got SVID %s, want the old one %s", serial(s), serial(old))
				}
				h.step(t, margin)
			}

			renew, _ := cp.calls()
			if diff := cmp.Diff(tt.want, gaps(renew)); diff != "" {
				t.Errorf("time between Renew attempts (-want +got):\n%s", diff)
			}
			if s := h.current(t); serial(s) == serial(old) {
				t.Errorf("after the control plane recovered: got the old SVID, want a renewed one")
			}
			if got := h.rotations.Load(); got != 2 {
				t.Errorf("OnRotate calls: got %d, want 2 (attest, one renewal)", got)
			}
			// The backoff starts over for the next renewal.
			h.stepTo(t, renewAt(h.current(t), 0.5))
			if renew2, _ := cp.calls(); len(renew2) != len(renew)+1 {
				t.Errorf("next renewal: got %d Renew calls, want %d", len(renew2), len(renew)+1)
			}
		})
	}
}

func secs(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n) * time.Second
	}
	return out
}

// TestRenewalKeepsOldSVIDWhileInFlight: while a renewal is in flight,
// handshakes keep getting the old SVID.
func TestRenewalKeepsOldSVIDWhileInFlight(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
	h.start(t)
	old := h.current(t)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	cp.set(func(cp *controlPlane) { cp.gate, cp.entered = gate, entered })

	armed := cp.clock.TimerCreated()
	cp.clock.Advance(renewAt(old, 0.5).Sub(cp.clock.Now()))
	select {
	case <-entered:
	case <-time.After(hangGuard):
		t.Fatalf("no Renew call after the renewal time")
	}
	if s := h.current(t); serial(s) != serial(old) {
		t.Errorf("during Renew: got SVID %s, want the old one %s", serial(s), serial(old))
	}
	close(gate)
	select {
	case <-armed:
	case <-time.After(hangGuard):
		t.Fatalf("Manager armed no timer after the renewal")
	}
	if s := h.current(t); serial(s) == serial(old) {
		t.Errorf("after Renew: got the old SVID, want the new one")
	}
}

// TestControlPlaneDownPastHalfLife: the control plane is unreachable from
// just after attestation until 40 minutes into a 1h SVID's life, longer
// than half of it; renewal then succeeds while the old SVID is still valid.
func TestControlPlaneDownPastHalfLife(t *testing.T) {
	const maxBackoff = 30 * time.Second
	cp := newControlPlane(t, time.Hour)
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), MaxBackoff: maxBackoff})
	h.start(t)
	old := h.current(t)
	cp.set(func(cp *controlPlane) { cp.down = true })

	h.stepTo(t, renewAt(old, 0.5))
	back := start.Add(40 * time.Minute)
	for cp.clock.Now().Before(back) {
		// Every retry is at most maxBackoff after the previous one.
		h.step(t, maxBackoff)
		if s := h.current(t); serial(s) != serial(old) {
			t.Fatalf("while down: got SVID %s, want the old one %s", serial(s), serial(old))
		}
	}
	failed, _ := cp.calls()
	cp.set(func(cp *controlPlane) { cp.down = false })
	h.step(t, maxBackoff)

	renew, _ := cp.calls()
	if len(renew) != len(failed)+1 {
		t.Fatalf("after the control plane is back: got %d Renew calls, want %d", len(renew), len(failed)+1)
	}
	if down := cp.clock.Now().Sub(start); down <= 30*time.Minute {
		t.Fatalf("bad test: down for %s, want more than half the TTL", down)
	}
	s := h.current(t)
	if serial(s) == serial(old) {
		t.Fatalf("after the control plane is back: got the old SVID, want a renewed one")
	}
	if got, want := s.Certificates[0].NotAfter, renew[len(renew)-1].Add(time.Hour); !got.Equal(want) {
		t.Errorf("renewed SVID: got NotAfter %s, want %s", got, want)
	}
	for i, g := range gaps(failed) {
		if g > maxBackoff {
			t.Errorf("retry %d: got %s after the previous one, want at most %s", i+1, g, maxBackoff)
		}
	}
}

func TestAttestRetriesWhileUnreachable(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	cp.set(func(cp *controlPlane) { cp.attestErrs = []error{errUnreachable, errUnreachable, errUnreachable} })
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
	h.start(t) // armed the first retry
	if isReady(h.mgr) {
		t.Fatalf("Ready after a failed attestation: got closed, want open")
	}
	for _, d := range secs(1, 2, 4) {
		h.step(t, d)
	}
	_, attests := cp.calls()
	if diff := cmp.Diff(secs(1, 2, 4), gaps(attests)); diff != "" {
		t.Errorf("time between Attest attempts (-want +got):\n%s", diff)
	}
	if !isReady(h.mgr) {
		t.Errorf("Ready after attestation succeeded: got open, want closed")
	}
}

func TestAttestRejected(t *testing.T) {
	tests := []struct {
		name  string
		token func(t *testing.T, cp *controlPlane) string
	}{
		{
			name: "unknown_token",
			token: func(t *testing.T, _ *controlPlane) string {
				return attest.TokenPrefix + "." + base64.RawURLEncoding.EncodeToString(make([]byte, attest.SecretLen))
			},
		},
		{
			name: "used_token",
			token: func(t *testing.T, cp *controlPlane) string {
				tok := cp.token(t, apiSvc)
				if _, err := cp.tokens.Attest(context.Background(), attest.Evidence{JoinToken: tok, Service: apiSvc}); err != nil {
					t.Fatal(err)
				}
				return tok
			},
		},
		{
			name: "expired_token",
			token: func(t *testing.T, cp *controlPlane) string {
				tok, _, err := cp.tokens.Create(context.Background(), jointoken.CreateRequest{Service: apiSvc, TTL: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				cp.clock.Advance(time.Minute)
				return tok
			},
		},
		{
			name:  "token_for_other_service",
			token: func(t *testing.T, cp *controlPlane) string { return cp.token(t, webSvc) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := newControlPlane(t, time.Hour)
			h := newHarness(t, cp, svid.Config{Token: tt.token(t, cp)})
			h.run(t)
			err := h.result(t)
			if !errors.Is(err, svid.ErrRejected) {
				t.Errorf("Run: got %v, want an error wrapping svid.ErrRejected", err)
			}
			if _, attests := cp.calls(); len(attests) != 1 {
				t.Errorf("Attest calls: got %d, want 1 (a rejection is not retried)", len(attests))
			}
			if isReady(h.mgr) {
				t.Errorf("Ready: got closed, want open")
			}
			if _, err := h.mgr.GetX509SVID(); err == nil {
				t.Errorf("GetX509SVID: got an SVID, want an error")
			}
		})
	}
}

// TestAttestBadAnswer: an SVID the Manager cannot use ends Run with an
// error instead of being installed or retried blindly.
func TestAttestBadAnswer(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	issuer := &answeringIssuer{controlPlane: cp, attest: func(pub crypto.PublicKey) (*svid.Issued, error) {
		chain, err := cp.ca.SignSVID(pub, identity.ControlPlaneID(td), 0)
		if err != nil {
			return nil, err
		}
		return &svid.Issued{Chain: chain, Bundle: cp.ca.Roots(), Instance: "api-x"}, nil
	}}
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), Issuer: issuer})
	h.run(t)
	if err := h.result(t); err == nil {
		t.Errorf("Run with an SVID of the control plane's identity: got nil, want an error")
	}
	if _, err := h.mgr.GetX509SVID(); err == nil {
		t.Errorf("GetX509SVID: got an SVID, want none installed")
	}
}

// answeringIssuer is a controlPlane whose Attest answer is replaced.
type answeringIssuer struct {
	*controlPlane
	attest func(pub crypto.PublicKey) (*svid.Issued, error)
}

func (a *answeringIssuer) Attest(_ context.Context, _ string, csr []byte, _ identity.ServiceRef) (*svid.Issued, error) {
	key, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, err
	}
	return a.attest(key.PublicKey)
}

func TestNoIdentity(t *testing.T) {
	tests := []struct {
		name    string
		dataDir func(t *testing.T) string
	}{
		{name: "no_data_dir", dataDir: func(*testing.T) string { return "" }},
		{name: "empty_data_dir", dataDir: func(t *testing.T) string { return t.TempDir() }},
		{name: "missing_data_dir", dataDir: func(t *testing.T) string { return filepath.Join(t.TempDir(), "proxy") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := newControlPlane(t, time.Hour)
			h := newHarness(t, cp, svid.Config{DataDir: tt.dataDir(t)})
			h.run(t)
			if err := h.result(t); !errors.Is(err, svid.ErrNoIdentity) {
				t.Errorf("Run without token or stored SVID: got %v, want an error wrapping svid.ErrNoIdentity", err)
			}
			if _, attests := cp.calls(); len(attests) != 0 {
				t.Errorf("Attest calls: got %d, want 0", len(attests))
			}
		})
	}
}

// attestToDir runs a Manager with a token and a data dir until it holds an
// SVID, stops it, and returns what it held.
func attestToDir(t *testing.T, cp *controlPlane, dir string) (*x509svid.SVID, string) {
	t.Helper()
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), DataDir: dir})
	h.start(t)
	s, inst := h.current(t), h.mgr.Instance()
	h.stop(t)
	return s, inst
}

func TestDataDirRestart(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	dir := filepath.Join(t.TempDir(), "proxy")
	first, inst := attestToDir(t, cp, dir)
	cp.clock.Advance(10 * time.Minute)

	// A restarted proxy without a token uses the stored SVID at once.
	h := newHarness(t, cp, svid.Config{DataDir: dir})
	h.start(t)
	if !isReady(h.mgr) {
		t.Errorf("Ready with a stored SVID: got open, want closed")
	}
	s := h.current(t)
	if serial(s) != serial(first) || s.ID != first.ID {
		t.Errorf("loaded SVID: got %s %s, want the stored %s %s", s.ID, serial(s), first.ID, serial(first))
	}
	if got := h.mgr.Instance(); got != inst {
		t.Errorf("Instance: got %q, want the stored %q", got, inst)
	}
	if _, attests := cp.calls(); len(attests) != 1 {
		t.Errorf("Attest calls: got %d, want 1 (only the first proxy's)", len(attests))
	}

	// It renews the stored SVID on schedule, and stores the new one.
	h.stepTo(t, renewAt(first, 0.5))
	renewed := h.current(t)
	if serial(renewed) == serial(first) {
		t.Fatalf("after the renewal time: got the stored SVID, want a renewed one")
	}
	stored, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.pem"))
	if err != nil {
		t.Fatalf("load svid.pem: %v", err)
	}
	if serial(stored) != serial(renewed) {
		t.Errorf("svid.pem after renewal: got serial %s, want the renewed %s", serial(stored), serial(renewed))
	}
	if got := h.mgr.Instance(); got != inst {
		t.Errorf("Instance after renewal: got %q, want %q", got, inst)
	}
}

// TestDataDirRestartPastRenewalTime: a proxy restarted after its stored
// SVID's renewal time renews at once, before arming any timer.
func TestDataDirRestartPastRenewalTime(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	dir := filepath.Join(t.TempDir(), "proxy")
	first, inst := attestToDir(t, cp, dir)
	cp.clock.Advance(45 * time.Minute)

	h := newHarness(t, cp, svid.Config{DataDir: dir})
	h.start(t)
	renew, attests := cp.calls()
	if len(renew) != 1 || !renew[0].Equal(start.Add(45*time.Minute)) {
		t.Errorf("Renew calls: got %v, want one at once (%s)", renew, start.Add(45*time.Minute))
	}
	if len(attests) != 1 {
		t.Errorf("Attest calls: got %d, want 1 (only the first proxy's)", len(attests))
	}
	if s := h.current(t); serial(s) == serial(first) || s.ID != first.ID {
		t.Errorf("SVID: got %s %s, want a renewed one for %s", s.ID, serial(s), first.ID)
	}
	if got := h.mgr.Instance(); got != inst {
		t.Errorf("Instance: got %q, want %q", got, inst)
	}
}

func TestDataDirFiles(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	dir := filepath.Join(t.TempDir(), "proxy")
	s, _ := attestToDir(t, cp, dir)

	tests := []struct {
		name string
		file string
		want fs.FileMode
	}{
		{name: "data_dir", file: "", want: fs.ModeDir | 0o700},
		{name: "svid_and_key", file: "svid.pem", want: 0o600},
		{name: "state", file: "state.json", want: 0o600},
		{name: "bundle", file: "bundle.pem", want: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fi, err := os.Stat(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatalf("stat: %v", err)
			}
			if got := fi.Mode(); got != tt.want {
				t.Errorf("mode of %s: got %v, want %v", filepath.Join(dir, tt.file), got, tt.want)
			}
		})
	}
	t.Run("svid_pem_holds_chain_and_key", func(t *testing.T) {
		stored, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.pem"))
		if err != nil {
			t.Fatalf("load svid.pem: %v", err)
		}
		if serial(stored) != serial(s) || len(stored.Certificates) != len(s.Certificates) {
			t.Errorf("svid.pem: got serial %s with %d certificates, want %s with %d", serial(stored), len(stored.Certificates), serial(s), len(s.Certificates))
		}
	})
	t.Run("bundle_pem_holds_roots", func(t *testing.T) {
		b, err := x509bundle.Load(td, filepath.Join(dir, "bundle.pem"))
		if err != nil {
			t.Fatalf("load bundle.pem: %v", err)
		}
		if !certsEqual(b.X509Authorities(), cp.ca.Roots()) {
			t.Errorf("bundle.pem: got %d certificates, want the CA's roots", len(b.X509Authorities()))
		}
	})
	t.Run("no_temp_files_left", func(t *testing.T) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if diff := cmp.Diff([]string{"bundle.pem", "state.json", "svid.pem"}, names); diff != "" {
			t.Errorf("data dir entries (-want +got):\n%s", diff)
		}
	})
}

// TestDataDirUnusable: a stored SVID that cannot be used makes a proxy
// without a token fail with ErrNoIdentity, and one with a token attest
// again.
func TestDataDirUnusable(t *testing.T) {
	otherRoot := func(t *testing.T, cp *controlPlane, dir string) {
		other := newCA(t, cp.clock, time.Hour)
		writeBundle(t, filepath.Join(dir, "bundle.pem"), other.Roots())
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, cp *controlPlane, dir string)
	}{
		{name: "expired_svid", damage: func(t *testing.T, cp *controlPlane, _ string) { cp.clock.Advance(time.Hour + time.Second) }},
		{name: "corrupt_svid_pem", damage: func(t *testing.T, _ *controlPlane, dir string) {
			write(t, filepath.Join(dir, "svid.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n")
		}},
		{name: "missing_svid_pem", damage: func(t *testing.T, _ *controlPlane, dir string) { remove(t, filepath.Join(dir, "svid.pem")) }},
		{name: "missing_bundle_pem", damage: func(t *testing.T, _ *controlPlane, dir string) { remove(t, filepath.Join(dir, "bundle.pem")) }},
		{name: "bundle_of_another_ca", damage: otherRoot},
	}
	for _, tt := range tests {
		for _, withToken := range []bool{false, true} {
			name := tt.name + "/without_token"
			if withToken {
				name = tt.name + "/with_token"
			}
			t.Run(name, func(t *testing.T) {
				cp := newControlPlane(t, time.Hour)
				dir := filepath.Join(t.TempDir(), "proxy")
				first, _ := attestToDir(t, cp, dir)
				tt.damage(t, cp, dir)

				cfg := svid.Config{DataDir: dir}
				if withToken {
					cfg.Token = cp.token(t, apiSvc)
				}
				h := newHarness(t, cp, cfg)
				h.run(t)
				if !withToken {
					if err := h.result(t); !errors.Is(err, svid.ErrNoIdentity) {
						t.Errorf("Run: got %v, want an error wrapping svid.ErrNoIdentity", err)
					}
					return
				}
				select {
				case err := <-h.done:
					h.stopped = true
					t.Fatalf("Run: returned %v, want it to attest again and run", err)
				default:
				}
				if _, attests := cp.calls(); len(attests) != 2 {
					t.Errorf("Attest calls: got %d, want 2 (attested again)", len(attests))
				}
				s := h.current(t)
				if serial(s) == serial(first) {
					t.Errorf("SVID: got the stored one, want a new one")
				}
				stored, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.pem"))
				if err != nil || serial(stored) != serial(s) {
					t.Errorf("svid.pem after attesting again: got %v, %v, want the new SVID %s", stored, err, serial(s))
				}
			})
		}
	}
}

func TestDataDirOfAnotherService(t *testing.T) {
	for _, withToken := range []bool{false, true} {
		name := "without_token"
		if withToken {
			name = "with_token"
		}
		t.Run(name, func(t *testing.T) {
			cp := newControlPlane(t, time.Hour)
			dir := filepath.Join(t.TempDir(), "proxy")
			attestToDir(t, cp, dir)
			before := read(t, filepath.Join(dir, "svid.pem"))

			cfg := svid.Config{Service: webSvc, DataDir: dir}
			if withToken {
				cfg.Token = cp.token(t, webSvc)
			}
			h := newHarness(t, cp, cfg)
			h.run(t)
			err := h.result(t)
			if err == nil {
				t.Fatalf("Run for default/web on default/api's data dir: got nil, want an error")
			}
			if !strings.Contains(err.Error(), "default/api") {
				t.Errorf("Run error %q: want it to name the dir's service default/api", err)
			}
			if _, attests := cp.calls(); len(attests) != 1 {
				t.Errorf("Attest calls: got %d, want 1 (only the first proxy's)", len(attests))
			}
			if after := read(t, filepath.Join(dir, "svid.pem")); after != before {
				t.Errorf("svid.pem: got it rewritten, want the other service's files left alone")
			}
		})
	}
}

// TestRenewalRefusesBadSVID: a renewal answer the Manager cannot trust is
// refused; the old SVID stays in use and renewal is retried.
func TestRenewalRefusesBadSVID(t *testing.T) {
	tests := []struct {
		name   string
		answer func(t *testing.T, cp *controlPlane) func(pub crypto.PublicKey, id spiffeid.ID) (*svid.Issued, error)
	}{
		{
			name: "other_identity",
			answer: func(t *testing.T, cp *controlPlane) func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
				return signFor(cp, workloadID(t, "default", "admin"))
			},
		},
		{
			name: "other_namespace",
			answer: func(t *testing.T, cp *controlPlane) func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
				return signFor(cp, workloadID(t, "kube-system", "api"))
			},
		},
		{
			name: "control_plane_identity",
			answer: func(t *testing.T, cp *controlPlane) func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
				return signFor(cp, identity.ControlPlaneID(td))
			},
		},
		{
			name: "chain_not_under_bundle",
			answer: func(t *testing.T, cp *controlPlane) func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
				other := newCA(t, cp.clock, time.Hour)
				return func(pub crypto.PublicKey, id spiffeid.ID) (*svid.Issued, error) {
					chain, err := other.SignSVID(pub, id, 0)
					if err != nil {
						return nil, err
					}
					return &svid.Issued{Chain: chain, Bundle: cp.ca.Roots()}, nil
				}
			},
		},
		{
			name: "not_for_the_csr_key",
			answer: func(t *testing.T, cp *controlPlane) func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				return func(_ crypto.PublicKey, id spiffeid.ID) (*svid.Issued, error) {
					chain, err := cp.ca.SignSVID(key.Public(), id, 0)
					if err != nil {
						return nil, err
					}
					return &svid.Issued{Chain: chain, Bundle: cp.ca.Roots()}, nil
				}
			},
		},
		{
			name: "empty_chain",
			answer: func(t *testing.T, cp *controlPlane) func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
				return func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
					return &svid.Issued{Bundle: cp.ca.Roots()}, nil
				}
			},
		},
		{
			name: "empty_bundle",
			answer: func(t *testing.T, cp *controlPlane) func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
				return func(pub crypto.PublicKey, id spiffeid.ID) (*svid.Issued, error) {
					chain, err := cp.ca.SignSVID(pub, id, 0)
					return &svid.Issued{Chain: chain}, err
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := newControlPlane(t, time.Hour)
			dir := filepath.Join(t.TempDir(), "proxy")
			h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), DataDir: dir})
			h.start(t)
			old := h.current(t)
			oldBundle, err := h.mgr.GetX509BundleForTrustDomain(td)
			if err != nil {
				t.Fatal(err)
			}
			cp.set(func(cp *controlPlane) { cp.answer = tt.answer(t, cp) })

			h.stepTo(t, renewAt(old, 0.5))
			if s := h.current(t); serial(s) != serial(old) || s.ID != old.ID {
				t.Errorf("after a bad answer: got SVID %s %s, want the old %s %s", s.ID, serial(s), old.ID, serial(old))
			}
			if b, _ := h.mgr.GetX509BundleForTrustDomain(td); b == nil || !b.Equal(oldBundle) {
				t.Errorf("after a bad answer: got the bundle changed, want it kept")
			}
			if got := h.rotations.Load(); got != 1 {
				t.Errorf("OnRotate calls after a bad answer: got %d, want 1 (attest only)", got)
			}
			stored, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.pem"))
			if err != nil || serial(stored) != serial(old) {
				t.Errorf("svid.pem after a bad answer: got %v, %v, want the old SVID", stored, err)
			}

			// Retried: the next good answer is installed.
			cp.set(func(cp *controlPlane) { cp.answer = nil })
			h.step(t, time.Second)
			if s := h.current(t); serial(s) == serial(old) || s.ID != old.ID {
				t.Errorf("after a good answer: got SVID %s %s, want a new one for %s", s.ID, serial(s), old.ID)
			}
			if renew, _ := cp.calls(); len(renew) != 2 {
				t.Errorf("Renew calls: got %d, want 2", len(renew))
			}
		})
	}
}

// signFor answers a renewal with an SVID for id instead of the caller's.
func signFor(cp *controlPlane, id spiffeid.ID) func(crypto.PublicKey, spiffeid.ID) (*svid.Issued, error) {
	return func(pub crypto.PublicKey, _ spiffeid.ID) (*svid.Issued, error) {
		chain, err := cp.ca.SignSVID(pub, id, 0)
		if err != nil {
			return nil, err
		}
		return &svid.Issued{Chain: chain, Bundle: cp.ca.Roots()}, nil
	}
}

func TestOnRotateOrder(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
	var calls []string
	// Listeners run on the Manager's goroutine, one after the other; the
	// step waits read calls only once the Manager is idle again.
	h.mgr.OnRotate(func() { calls = append(calls, "first:"+serial(h.current(t))) })
	h.mgr.OnRotate(func() { calls = append(calls, "second:"+serial(h.current(t))) })
	h.start(t)
	s1 := serial(h.current(t))
	h.stepTo(t, renewAt(h.current(t), 0.5))
	s2 := serial(h.current(t))

	want := []string{"first:" + s1, "second:" + s1, "first:" + s2, "second:" + s2}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("OnRotate calls (-want +got):\n%s", diff)
	}
}

func TestSetBundle(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	other := newCA(t, cp.clock, time.Hour)
	both := append(append([]*x509.Certificate(nil), cp.ca.Roots()...), other.Roots()...)

	t.Run("before_first_svid", func(t *testing.T) {
		h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
		if err := h.mgr.SetBundle(cp.ca.Roots()); err == nil {
			t.Errorf("SetBundle before any SVID: got nil error, want an error")
		}
		if _, err := h.mgr.GetX509BundleForTrustDomain(td); err == nil {
			t.Errorf("GetX509BundleForTrustDomain before any SVID: got a bundle, want an error")
		}
	})

	tests := []struct {
		name    string
		roots   []*x509.Certificate
		wantErr bool
		want    []*x509.Certificate
	}{
		{name: "nil_set_ignored", roots: nil, wantErr: true, want: cp.ca.Roots()},
		{name: "empty_set_ignored", roots: []*x509.Certificate{}, wantErr: true, want: cp.ca.Roots()},
		{name: "same_roots", roots: cp.ca.Roots(), want: cp.ca.Roots()},
		{name: "root_added", roots: both, want: both},
		{name: "roots_replaced", roots: other.Roots(), want: other.Roots()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "proxy")
			h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), DataDir: dir})
			h.start(t)
			err := h.mgr.SetBundle(tt.roots)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("SetBundle: got error %v, want error %v", err, tt.wantErr)
			}
			b, err := h.mgr.GetX509BundleForTrustDomain(td)
			if err != nil {
				t.Fatalf("GetX509BundleForTrustDomain: %v", err)
			}
			if !certsEqual(b.X509Authorities(), tt.want) {
				t.Errorf("bundle: got %d authorities, want %d (%s)", len(b.X509Authorities()), len(tt.want), tt.name)
			}
			stored, err := x509bundle.Load(td, filepath.Join(dir, "bundle.pem"))
			if err != nil {
				t.Fatalf("load bundle.pem: %v", err)
			}
			if !certsEqual(stored.X509Authorities(), tt.want) {
				t.Errorf("bundle.pem: got %d certificates, want %d", len(stored.X509Authorities()), len(tt.want))
			}
		})
	}
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeBundle(t testing.TB, path string, roots []*x509.Certificate) {
	t.Helper()
	b, err := x509bundle.FromX509Authorities(td, roots).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, string(b))
}

func remove(t testing.TB, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func read(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
