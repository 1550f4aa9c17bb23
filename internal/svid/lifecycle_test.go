package svid_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/svid"
	"github.com/bulwarkmesh/bulwark/internal/svid/workloadapi"
)

// The Manager is the Source of the proxy's Workload API server.
var _ workloadapi.Source = (*svid.Manager)(nil)

// msgNearExpiry is the error logged once per SVID when renewal keeps
// failing in the last 10% of its lifetime.
const msgNearExpiry = "svid near expiry without a successful renewal"

// logSink collects a Manager's JSON log lines.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the lines whose message is msg.
func (l *logSink) lines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// authorityOf returns the authority key ID of SVIDs c signs now.
func authorityOf(t testing.TB, c *ca.CA) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.SignSVID(key.Public(), workloadID(t, "default", "probe"), 0)
	if err != nil {
		t.Fatalf("SignSVID: %v", err)
	}
	return chain[0].AuthorityKeyId
}

// jwks returns a JWKS document of td with one P-256 key per key ID.
func jwks(t testing.TB, kids ...string) []byte {
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

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestRenewalFailsThenRecovers: failed attempts are counted and the SVID is
// not overdue while there is time left; the first success resets it.
func TestRenewalFailsThenRecovers(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
	h.start(t)
	old := h.current(t)
	cp.set(func(cp *controlPlane) { cp.renewErrs = []error{errUnreachable, errUnreachable, errUnreachable} })

	h.stepTo(t, renewAt(old, 0.5))
	h.step(t, time.Second)
	h.step(t, 2*time.Second)
	st := h.mgr.Status()
	if st.RenewalsFailed != 3 || st.RenewalsOK != 0 || st.Overdue {
		t.Errorf("while failing: got failed %d ok %d overdue %v, want 3, 0, false", st.RenewalsFailed, st.RenewalsOK, st.Overdue)
	}
	h.step(t, 4*time.Second)
	st = h.mgr.Status()
	if st.RenewalsFailed != 3 || st.RenewalsOK != 1 || st.Overdue {
		t.Errorf("after recovering: got failed %d ok %d overdue %v, want 3, 1, false", st.RenewalsFailed, st.RenewalsOK, st.Overdue)
	}
	s := h.current(t)
	if serial(s) == serial(old) {
		t.Fatalf("after recovering: got the old SVID, want a renewed one")
	}
	if !st.Expiry.Equal(s.Certificates[0].NotAfter) {
		t.Errorf("Status().Expiry: got %s, want %s", st.Expiry, s.Certificates[0].NotAfter)
	}
	if st.BundleRoots != len(cp.ca.Roots()) {
		t.Errorf("Status().BundleRoots: got %d, want %d", st.BundleRoots, len(cp.ca.Roots()))
	}
}

// TestControlPlaneDownUntilNearExpiry: the control plane is down from
// before the renewal time until well into the last 10% of the SVID's
// lifetime. The SVID keeps serving, retries stay within MaxBackoff, the
// error is logged once for this SVID and the renewal is overdue; the
// renewal succeeds before expiry once the control plane is back. The next
// SVID gets its own error line.
func TestControlPlaneDownUntilNearExpiry(t *testing.T) {
	const maxBackoff = 2 * time.Minute
	cp := newControlPlane(t, time.Hour)
	logs := &logSink{}
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), MaxBackoff: maxBackoff, Logger: logs.logger()})
	h.start(t)
	old := h.current(t)
	cp.set(func(cp *controlPlane) { cp.down = true })

	// downUntil lets retries fail until just before until.
	downUntil := func(until time.Time) {
		for cp.clock.Now().Add(maxBackoff).Before(until) {
			h.step(t, maxBackoff)
		}
	}
	h.stepTo(t, renewAt(old, 0.5))
	downUntil(renewAt(old, 0.9))
	if n := len(logs.lines(t, msgNearExpiry)); n != 0 {
		t.Errorf("near-expiry errors before 90%% of the lifetime: got %d, want 0", n)
	}
	if h.mgr.Status().Overdue {
		t.Errorf("Status().Overdue before 90%% of the lifetime: got true, want false")
	}

	downUntil(renewAt(old, 0.98))
	if s := h.current(t); serial(s) != serial(old) {
		t.Fatalf("while down: got SVID %s, want the old one %s", serial(s), serial(old))
	}
	lines := logs.lines(t, msgNearExpiry)
	if len(lines) != 1 {
		t.Fatalf("near-expiry errors after many failures in the last 10%%: got %d, want 1", len(lines))
	}
	if lines[0]["level"] != "ERROR" || lines[0]["serial"] != serial(old) {
		t.Errorf("near-expiry line: got level %v serial %v, want ERROR and %s", lines[0]["level"], lines[0]["serial"], serial(old))
	}
	if !h.mgr.Status().Overdue {
		t.Errorf("Status().Overdue in the last 10%% after failures: got false, want true")
	}
	failed, _ := cp.calls()
	for i, g := range gaps(failed) {
		if g > maxBackoff {
			t.Errorf("retry %d: got %s after the previous one, want at most %s", i+1, g, maxBackoff)
		}
	}

	cp.set(func(cp *controlPlane) { cp.down = false })
	h.step(t, maxBackoff)
	s := h.current(t)
	if serial(s) == serial(old) {
		t.Fatalf("after the control plane is back: got the old SVID, want a renewed one")
	}
	if renew, _ := cp.calls(); !renew[len(renew)-1].Before(old.Certificates[0].NotAfter) {
		t.Errorf("renewed at %s, want before the old SVID's expiry %s", renew[len(renew)-1], old.Certificates[0].NotAfter)
	}
	if h.mgr.Status().Overdue {
		t.Errorf("Status().Overdue after a successful renewal: got true, want false")
	}

	// The next SVID runs into the same outage: one more line, for it.
	cp.set(func(cp *controlPlane) { cp.down = true })
	h.stepTo(t, renewAt(s, 0.5))
	downUntil(renewAt(s, 0.98))
	lines = logs.lines(t, msgNearExpiry)
	if len(lines) != 2 || lines[1]["serial"] != serial(s) {
		t.Errorf("near-expiry errors after the second SVID's outage: got %d (last %v), want 2 (last for %s)", len(lines), lines[len(lines)-1]["serial"], serial(s))
	}
}

// TestNearExpiryAttemptAtWindowStart: with a short SVID and a long
// backoff, an attempt is made as the last 10% of the lifetime begins, so
// the error is logged then and not after the SVID has expired.
func TestNearExpiryAttemptAtWindowStart(t *testing.T) {
	const maxBackoff = 30 * time.Second
	cp := newControlPlane(t, time.Minute)
	logs := &logSink{}
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), MaxBackoff: maxBackoff, Logger: logs.logger()})
	h.start(t)
	old := h.current(t)
	cp.set(func(cp *controlPlane) { cp.down = true })

	window := renewAt(old, 0.9)
	h.stepTo(t, renewAt(old, 0.5))
	// Each retry is after its backoff (1s doubling, capped), or at the
	// window if that is sooner.
	for backoff := time.Second; cp.clock.Now().Before(window); backoff = min(2*backoff, maxBackoff) {
		h.step(t, min(backoff, window.Sub(cp.clock.Now())))
	}
	renew, _ := cp.calls()
	if last := renew[len(renew)-1]; !last.Equal(window) {
		t.Errorf("last attempt: got %s, want one as the last 10%% begins, %s (attempts %v)", last, window, renew)
	}
	if n := len(logs.lines(t, msgNearExpiry)); n != 1 {
		t.Errorf("near-expiry errors: got %d, want 1", n)
	}
	if !h.mgr.Status().Overdue {
		t.Errorf("Status().Overdue: got false, want true")
	}
	if !cp.clock.Now().Before(old.Certificates[0].NotAfter) {
		t.Errorf("bad test: at %s the SVID (NotAfter %s) has expired", cp.clock.Now(), old.Certificates[0].NotAfter)
	}
}

func TestRenewSoon(t *testing.T) {
	const margin = time.Millisecond
	tests := []struct {
		name   string
		ttl    time.Duration
		jitter float64
		// authority is what the snapshot announces: "other" (a CA the
		// control plane switched to), "current" (the SVID's own), "none"
		// (empty) or "unknown" (one the control plane does not sign with).
		authority string
		// wantAfter is when the early renewal happens after RenewSoon; < 0
		// for none.
		wantAfter time.Duration
	}{
		{name: "other_authority_capped_at_30s", ttl: time.Hour, jitter: 0.9, authority: "other", wantAfter: 27 * time.Second},
		{name: "other_authority_10pct_of_short_svid", ttl: 2 * time.Minute, jitter: 0.9, authority: "other", wantAfter: 13500 * time.Millisecond},
		{name: "other_authority_no_jitter", ttl: time.Hour, jitter: 0, authority: "other", wantAfter: 0},
		{name: "unknown_authority_renews_once", ttl: time.Hour, jitter: 0.5, authority: "unknown", wantAfter: 15 * time.Second},
		{name: "same_authority", ttl: time.Hour, jitter: 0.9, authority: "current", wantAfter: -1},
		{name: "empty_authority", ttl: time.Hour, jitter: 0.9, authority: "none", wantAfter: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := newControlPlane(t, tt.ttl)
			h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), Jitter: func() float64 { return tt.jitter }})
			h.start(t)
			old := h.current(t)
			var authority []byte
			switch tt.authority {
			case "other":
				// The control plane now signs with another CA, whose root
				// the bundle already holds.
				next := newCA(t, cp.clock, tt.ttl)
				authority = authorityOf(t, next)
				roots := append(append([]*x509.Certificate(nil), cp.ca.Roots()...), next.Roots()...)
				cp.set(func(cp *controlPlane) {
					cp.answer = func(pub crypto.PublicKey, id spiffeid.ID) (*svid.Issued, error) {
						chain, err := next.SignSVID(pub, id, 0)
						if err != nil {
							return nil, err
						}
						return &svid.Issued{Chain: chain, Bundle: roots}, nil
					}
				})
			case "current":
				authority = old.Certificates[0].AuthorityKeyId
			case "unknown":
				authority = bytes.Repeat([]byte{0xab}, 20)
			}

			if tt.wantAfter < 0 {
				h.mgr.RenewSoon(authority)
				if at := h.mgr.Status().EarlyRenewal; !at.IsZero() {
					t.Errorf("Status().EarlyRenewal: got %s, want none", at)
				}
				regular := renewAt(old, 0.5+0.1*tt.jitter)
				h.wait(t, regular.Add(-margin).Sub(cp.clock.Now()))
				if renew, _ := cp.calls(); len(renew) != 0 {
					t.Errorf("renewals before the regular time: got %d, want 0", len(renew))
				}
				return
			}

			at := start.Add(tt.wantAfter)
			armed := cp.clock.TimerCreated()
			h.mgr.RenewSoon(authority)
			h.mgr.RenewSoon(authority) // idempotent while pending
			select {
			case <-armed:
			case <-time.After(hangGuard):
				t.Fatalf("RenewSoon: the Manager armed no timer")
			}
			if tt.wantAfter > 0 {
				if got := h.mgr.Status().EarlyRenewal; !got.Equal(at) {
					t.Errorf("Status().EarlyRenewal: got %s, want %s", got, at)
				}
				h.wait(t, tt.wantAfter-margin)
				if renew, _ := cp.calls(); len(renew) != 0 {
					t.Fatalf("renewals %s before the early renewal time: got %d, want 0", margin, len(renew))
				}
				h.step(t, margin)
			}
			renew, _ := cp.calls()
			if want := []time.Time{at}; !cmp.Equal(want, renew) {
				t.Fatalf("Renew calls: got %v, want %v", renew, want)
			}
			s := h.current(t)
			if serial(s) == serial(old) {
				t.Fatalf("after the early renewal: got the old SVID, want a new one")
			}
			if tt.authority == "other" && !bytes.Equal(s.Certificates[0].AuthorityKeyId, authority) {
				t.Errorf("renewed SVID: got authority %x, want %x", s.Certificates[0].AuthorityKeyId, authority)
			}

			if got := h.mgr.Status().EarlyRenewal; !got.IsZero() {
				t.Errorf("Status().EarlyRenewal after the early renewal: got %s, want none", got)
			}

			// Announcing it again changes nothing: the new SVID has it, or
			// (unknown) an early renewal for it was already tried.
			h.mgr.RenewSoon(authority)
			if got := h.mgr.Status().EarlyRenewal; !got.IsZero() {
				t.Errorf("Status().EarlyRenewal after announcing the authority again: got %s, want none", got)
			}
			h.wait(t, renewAt(s, 0.5).Add(-margin).Sub(cp.clock.Now()))
			if renew, _ := cp.calls(); len(renew) != 1 {
				t.Errorf("renewals after announcing the authority again: got %d, want 1", len(renew))
			}
		})
	}
}

// TestRenewSoonBeforeSVID: RenewSoon before the first SVID does nothing.
func TestRenewSoonBeforeSVID(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
	h.mgr.RenewSoon([]byte{1, 2, 3})
	h.start(t)
	if renew, _ := cp.calls(); len(renew) != 0 {
		t.Errorf("Renew calls: got %d, want 0", len(renew))
	}
}

// TestChanged: Changed fires on every change of the SVID, the X.509 bundle
// and the JWT bundle, and on nothing else.
func TestChanged(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	other := newCA(t, cp.clock, time.Hour)
	both := append(append([]*x509.Certificate(nil), cp.ca.Roots()...), other.Roots()...)
	h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
	first := h.mgr.Changed()
	h.start(t)
	if !closed(first) {
		t.Fatalf("Changed after attestation: got open, want closed")
	}
	keys1, keys2 := jwks(t, "k1"), jwks(t, "k1", "k2")

	steps := []struct {
		name string
		do   func(t *testing.T)
		want bool
	}{
		{name: "svid_renewed", do: func(t *testing.T) { h.stepTo(t, renewAt(h.current(t), 0.5)) }, want: true},
		{name: "same_bundle", do: func(t *testing.T) { _ = h.mgr.SetBundle(cp.ca.Roots()) }},
		{name: "root_added", do: func(t *testing.T) { _ = h.mgr.SetBundle(both) }, want: true},
		{name: "root_removed", do: func(t *testing.T) { _ = h.mgr.SetBundle(cp.ca.Roots()) }, want: true},
		{name: "empty_bundle", do: func(t *testing.T) { _ = h.mgr.SetBundle(nil) }},
		{name: "jwt_bundle_set", do: func(t *testing.T) { _ = h.mgr.SetJWTBundle(keys1) }, want: true},
		{name: "same_jwt_bundle", do: func(t *testing.T) { _ = h.mgr.SetJWTBundle(keys1) }},
		{name: "empty_jwt_bundle", do: func(t *testing.T) { _ = h.mgr.SetJWTBundle(nil) }},
		{name: "bad_jwt_bundle", do: func(t *testing.T) { _ = h.mgr.SetJWTBundle([]byte("{")) }},
		{name: "jwt_key_added", do: func(t *testing.T) { _ = h.mgr.SetJWTBundle(keys2) }, want: true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			c := h.mgr.Changed()
			st.do(t)
			if got := closed(c); got != st.want {
				t.Errorf("Changed closed: got %v, want %v", got, st.want)
			}
			if closed(h.mgr.Changed()) {
				t.Errorf("Changed after the change: got a closed channel, want a new open one")
			}
		})
	}
}

func TestSetJWTBundle(t *testing.T) {
	cp := newControlPlane(t, time.Hour)
	t.Run("before_first_svid", func(t *testing.T) {
		h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
		if err := h.mgr.SetJWTBundle(jwks(t, "k1")); err == nil {
			t.Errorf("SetJWTBundle before any SVID: got nil error, want an error")
		}
		if _, err := h.mgr.GetJWTBundleForTrustDomain(td); err == nil {
			t.Errorf("GetJWTBundleForTrustDomain before any bundle: got a bundle, want an error")
		}
	})

	good := jwks(t, "k1", "k2")
	tests := []struct {
		name     string
		jwks     []byte
		wantErr  bool
		wantKIDs []string // nil: no bundle
	}{
		{name: "jwks", jwks: good, wantKIDs: []string{"k1", "k2"}},
		{name: "empty_ignored", jwks: nil},
		{name: "not_json", jwks: []byte("{"), wantErr: true},
		{name: "key_without_kid", jwks: []byte(`{"keys":[{"kty":"EC","crv":"P-256","use":"jwt-svid","x":"AA","y":"AA"}]}`), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "proxy")
			h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc), DataDir: dir})
			h.start(t)
			err := h.mgr.SetJWTBundle(tt.jwks)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("SetJWTBundle: got error %v, want error %v", err, tt.wantErr)
			}
			b, err := h.mgr.GetJWTBundleForTrustDomain(td)
			if tt.wantKIDs == nil {
				if err == nil {
					t.Errorf("GetJWTBundleForTrustDomain: got a bundle, want an error")
				}
				if _, err := os.Stat(filepath.Join(dir, "jwt_bundle.json")); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("jwt_bundle.json: got stat error %v, want it absent", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetJWTBundleForTrustDomain: %v", err)
			}
			if diff := cmp.Diff(tt.wantKIDs, kids(b)); diff != "" {
				t.Errorf("key IDs (-want +got):\n%s", diff)
			}
			if _, err := h.mgr.GetJWTBundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.test")); err == nil {
				t.Errorf("GetJWTBundleForTrustDomain(other.test): got a bundle, want an error")
			}

			// Kept in the data dir and loaded by a restarted proxy.
			fi, err := os.Stat(filepath.Join(dir, "jwt_bundle.json"))
			if err != nil || fi.Mode() != 0o644 {
				t.Fatalf("jwt_bundle.json: got %v, %v, want mode 0644", fi, err)
			}
			h.stop(t)
			h2 := newHarness(t, cp, svid.Config{DataDir: dir})
			h2.start(t)
			b2, err := h2.mgr.GetJWTBundleForTrustDomain(td)
			if err != nil {
				t.Fatalf("restarted: GetJWTBundleForTrustDomain: %v", err)
			}
			if !b2.Equal(b) {
				t.Errorf("restarted: got key IDs %v, want the stored %v", kids(b2), kids(b))
			}
		})
	}
}

func kids(b *jwtbundle.Bundle) []string {
	var out []string
	for kid := range b.JWTAuthorities() {
		out = append(out, kid)
	}
	slices.Sort(out)
	return out
}

func TestMintJWTSVID(t *testing.T) {
	errDenied := errors.New("rpc error: code = PermissionDenied desc = revoked")
	tests := []struct {
		name      string
		audience  []string
		issuerErr error
		want      string // token; "" for an error
		wantCalls int
	}{
		{name: "one_audience", audience: []string{"spiffe://bulwark.test/ns/shop/sa/api"}, want: "jwt-svid.spiffe://bulwark.test/ns/default/sa/api.spiffe://bulwark.test/ns/shop/sa/api", wantCalls: 1},
		{name: "two_audiences", audience: []string{"a", "b"}, want: "jwt-svid.spiffe://bulwark.test/ns/default/sa/api.a,b", wantCalls: 1},
		{name: "no_audience", audience: nil},
		{name: "issuer_error", audience: []string{"a"}, issuerErr: errDenied, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := newControlPlane(t, time.Hour)
			cp.set(func(cp *controlPlane) { cp.jwtErr = tt.issuerErr })
			h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
			h.start(t)
			got, err := h.mgr.MintJWTSVID(context.Background(), tt.audience)
			if tt.want == "" {
				if err == nil {
					t.Errorf("MintJWTSVID: got %q, want an error", got)
				}
				if tt.issuerErr != nil && !errors.Is(err, tt.issuerErr) {
					t.Errorf("MintJWTSVID: got %v, want it to wrap %v", err, tt.issuerErr)
				}
			} else if err != nil || got != tt.want {
				t.Errorf("MintJWTSVID: got %q, %v, want %q", got, err, tt.want)
			}
			cp.mu.Lock()
			calls := len(cp.jwtAudiences)
			cp.mu.Unlock()
			if calls != tt.wantCalls {
				t.Errorf("SignJWT calls: got %d, want %d", calls, tt.wantCalls)
			}
		})
	}

	t.Run("before_first_svid", func(t *testing.T) {
		cp := newControlPlane(t, time.Hour)
		h := newHarness(t, cp, svid.Config{Token: cp.token(t, apiSvc)})
		if _, err := h.mgr.MintJWTSVID(context.Background(), []string{"a"}); err == nil {
			t.Errorf("MintJWTSVID before any SVID: got nil error, want an error")
		}
	})
}
