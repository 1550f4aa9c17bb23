package authn_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// jwksServer is a real HTTPS JWKS endpoint whose answer a test changes.
type jwksServer struct {
	*httptest.Server
	mu       sync.Mutex
	status   int
	body     []byte
	redirect string
	hits     atomic.Int64
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK, body: body}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		status, body, redirect := s.status, s.body, s.redirect
		s.mu.Unlock()
		if redirect != "" {
			http.Redirect(w, r, redirect, http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body, s.redirect = status, body, ""
}

func (s *jwksServer) redirectTo(url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirect = url
}

// caPEM is the PEM of the server's certificate, its own CA.
func (s *jwksServer) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
}

// otherCA returns the PEM of a fresh self-signed CA.
func otherCA(t *testing.T) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ecKey2.Public(), ecKey2)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// uriProvider returns a validated provider fetching uri with caPEM.
func uriProvider(t *testing.T, name, uri, caPEM string) *config.JWTProvider {
	t.Helper()
	return provider(t, name, nil, func(s *config.JWTProviderSpec) {
		s.JWKSURI, s.JWKSCA, s.RefreshInterval = uri, caPEM, "1m"
	})
}

// logCounter counts log records by message.
type logCounter struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs[r.Message]++
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }
func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msgs[msg]
}

// fetcherRig runs a Fetcher on a fake clock.
type fetcherRig struct {
	f       *authn.Fetcher
	clock   *clock.Fake
	reg     *prometheus.Registry
	logs    *logCounter
	changes atomic.Int64
}

func newFetcherRig(t *testing.T) *fetcherRig {
	t.Helper()
	rig := &fetcherRig{clock: clock.NewFake(now), reg: prometheus.NewRegistry(), logs: &logCounter{msgs: map[string]int{}}}
	f, err := authn.NewFetcher(authn.FetcherConfig{
		Clock: rig.clock, Registerer: rig.reg, Logger: slog.New(rig.logs),
		OnChange: func(string) { rig.changes.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	rig.f = f
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	})
	return rig
}

// settle runs do and waits until the fetcher has handled the fetch it
// causes: handling a result arms the timer of the next fetch.
func (rig *fetcherRig) settle(t *testing.T, do func()) {
	t.Helper()
	armed := rig.clock.TimerCreated()
	do()
	select {
	case <-armed:
	case <-time.After(20 * time.Second):
		t.Fatal("the fetcher did not handle a fetch")
	}
}

// advance moves past the next refresh (1m with up to 10% jitter).
func (rig *fetcherRig) advance(t *testing.T) {
	t.Helper()
	rig.settle(t, func() { rig.clock.Advance(70 * time.Second) })
}

func (rig *fetcherRig) fetches(ref, result string) float64 {
	return metricValue(rig.reg, "bulwark_jwks_fetch_total", map[string]string{"provider": ref, "result": result})
}

// metricValue reads one sample of reg; 0 when absent.
func metricValue(reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// seriesCount counts the series of one metric of reg.
func seriesCount(reg prometheus.Gatherer, name string) int {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// verifies reports whether the keys verify a token signed by k.
func verifies(t *testing.T, p *config.JWTProvider, keys []byte, k signingKey) error {
	t.Helper()
	a, err := authn.New([]authn.Provider{{Spec: p, JWKS: keys}}, clock.NewFake(now))
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Authenticate(bearer(sign(t, k, claims("alice"), nil)))
	return err
}

func TestFetcherRotation(t *testing.T) {
	k1 := rsaSigner("k1")
	k2 := signingKey{kid: "k2", alg: jwa.ES256(), priv: ecKey2}
	srv := newJWKSServer(t, jwksOf(t, false, k1))
	rig := newFetcherRig(t)
	p := uriProvider(t, "idp", srv.URL+"/jwks", srv.caPEM())
	ref := "default/idp"

	rig.settle(t, func() { rig.f.Update([]*config.JWTProvider{p}) })
	if got := rig.changes.Load(); got != 1 {
		t.Fatalf("got %d OnChange calls after the first fetch, want 1", got)
	}
	if err := verifies(t, p, rig.f.Keys(ref), k1); err != nil {
		t.Fatalf("k1 before rotation: %v", err)
	}
	if err := verifies(t, p, rig.f.Keys(ref), k2); err == nil {
		t.Fatal("k2 before rotation: accepted, want refused")
	}
	if got := metricValue(rig.reg, "bulwark_jwks_keys", map[string]string{"provider": ref}); got != 1 {
		t.Errorf("got bulwark_jwks_keys %v, want 1", got)
	}
	if got := metricValue(rig.reg, "bulwark_jwks_last_success_timestamp_seconds", nil); got != float64(now.Unix()) {
		t.Errorf("got last success %v, want %v", got, now.Unix())
	}

	t.Run("unchanged_keys_do_not_call_OnChange", func(t *testing.T) {
		rig.advance(t)
		if got := rig.changes.Load(); got != 1 {
			t.Errorf("got %d OnChange calls, want 1", got)
		}
	})
	t.Run("new_kid_is_accepted", func(t *testing.T) {
		srv.serve(http.StatusOK, jwksOf(t, false, k1, k2))
		rig.advance(t)
		if got := rig.changes.Load(); got != 2 {
			t.Errorf("got %d OnChange calls, want 2", got)
		}
		if err := verifies(t, p, rig.f.Keys(ref), k2); err != nil {
			t.Errorf("k2 after it was added: %v", err)
		}
		if err := verifies(t, p, rig.f.Keys(ref), k1); err != nil {
			t.Errorf("k1 while still published: %v", err)
		}
	})
	t.Run("removed_kid_is_refused", func(t *testing.T) {
		srv.serve(http.StatusOK, jwksOf(t, false, k2))
		rig.advance(t)
		if err := verifies(t, p, rig.f.Keys(ref), k1); err == nil || !strings.Contains(err.Error(), `unknown kid "k1"`) {
			t.Errorf("k1 after it was removed: got %v, want unknown kid", err)
		}
		if err := verifies(t, p, rig.f.Keys(ref), k2); err != nil {
			t.Errorf("k2: %v", err)
		}
	})
	if got := rig.fetches(ref, authn.FetchOK); got != 4 {
		t.Errorf("got %v ok fetches, want 4", got)
	}
}

func TestFetcherKeepsLastGoodKeys(t *testing.T) {
	k1 := rsaSigner("k1")
	good := jwksOf(t, false, k1)
	srv := newJWKSServer(t, good)
	rig := newFetcherRig(t)
	p := uriProvider(t, "idp", srv.URL, srv.caPEM())
	ref := "default/idp"
	rig.settle(t, func() { rig.f.Update([]*config.JWTProvider{p}) })
	want := rig.f.Keys(ref)
	if want == nil {
		t.Fatal("no keys after the first fetch")
	}

	tests := []struct {
		name   string
		serve  func()
		result string
	}{
		{name: "garbage_body", serve: func() { srv.serve(http.StatusOK, []byte("<html>garbage</html>")) }, result: authn.FetchInvalid},
		{name: "secret_key_body", serve: func() { srv.serve(http.StatusOK, []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)) }, result: authn.FetchInvalid},
		{name: "empty_set", serve: func() { srv.serve(http.StatusOK, []byte(`{"keys":[]}`)) }, result: authn.FetchInvalid},
		{name: "over_one_mebibyte", serve: func() { srv.serve(http.StatusOK, bytes.Repeat([]byte(" "), 1<<20+1)) }, result: authn.FetchInvalid},
		{name: "http_500", serve: func() { srv.serve(http.StatusInternalServerError, good) }, result: authn.FetchError},
		{name: "redirect_to_plain_http", serve: func() { srv.redirectTo("http://127.0.0.1:1/jwks") }, result: authn.FetchError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.serve()
			before := rig.fetches(ref, tt.result)
			rig.advance(t)
			if got := rig.fetches(ref, tt.result); got != before+1 {
				t.Errorf("got %v %s fetches, want %v", got, tt.result, before+1)
			}
			if got := rig.f.Keys(ref); !bytes.Equal(got, want) {
				t.Errorf("got keys %s, want the last good ones %s", got, want)
			}
			// Recover, so that the next case starts from a good state.
			srv.serve(http.StatusOK, good)
			rig.advance(t)
			if got := rig.fetches(ref, authn.FetchOK); got == 0 {
				t.Fatal("no ok fetch")
			}
		})
	}

	t.Run("server_down", func(t *testing.T) {
		srv.Close()
		before := rig.fetches(ref, authn.FetchError)
		logged := rig.logs.count("jwks fetch failed; keeping the last good keys")
		hits := srv.hits.Load()
		rig.advance(t) // fails, retries after 1s
		rig.settle(t, func() { rig.clock.Advance(time.Second) })
		if got := rig.fetches(ref, authn.FetchError); got != before+2 {
			t.Errorf("got %v error fetches, want %v", got, before+2)
		}
		if got := rig.logs.count("jwks fetch failed; keeping the last good keys"); got != logged+1 {
			t.Errorf("got %d failure logs for one streak, want %d", got, logged+1)
		}
		if got := rig.f.Keys(ref); !bytes.Equal(got, want) {
			t.Errorf("got keys %s, want the last good ones", got)
		}
		if err := verifies(t, p, rig.f.Keys(ref), k1); err != nil {
			t.Errorf("token after the server went down: %v", err)
		}
		if srv.hits.Load() != hits {
			t.Errorf("a closed server was reached")
		}
	})
}

func TestFetcherBackoffDoubles(t *testing.T) {
	srv := newJWKSServer(t, nil)
	srv.serve(http.StatusServiceUnavailable, nil)
	rig := newFetcherRig(t)
	p := uriProvider(t, "idp", srv.URL, srv.caPEM())
	rig.settle(t, func() { rig.f.Update([]*config.JWTProvider{p}) }) // fails at once
	rig.settle(t, func() { rig.clock.Advance(time.Second) })         // retry after 1s
	rig.clock.Advance(time.Second)                                   // backoff is now 2s: nothing is due
	rig.settle(t, func() { rig.clock.Advance(time.Second) })         // due
	if got := srv.hits.Load(); got != 3 {
		t.Errorf("got %d fetches, want 3 (after 0s, 1s and 3s)", got)
	}
	if got := rig.f.Keys("default/idp"); got != nil {
		t.Errorf("got keys %s, want none", got)
	}
}

func TestFetcherRefusesUntrustedServer(t *testing.T) {
	srv := newJWKSServer(t, jwksOf(t, false, rsaSigner("k1")))
	rig := newFetcherRig(t)
	// The server's certificate does not chain to jwksCA (another CA), nor
	// to the system roots.
	for _, p := range []*config.JWTProvider{
		uriProvider(t, "wrong-ca", srv.URL, otherCA(t)),
		uriProvider(t, "system-roots", srv.URL, ""),
	} {
		rig.settle(t, func() { rig.f.Update([]*config.JWTProvider{p}) })
		ref := config.Ref(p)
		if got := rig.fetches(ref, authn.FetchError); got != 1 {
			t.Errorf("%s: got %v error fetches, want 1", ref, got)
		}
		if got := rig.f.Keys(ref); got != nil {
			t.Errorf("%s: got keys %s, want none", ref, got)
		}
	}
	if got := srv.hits.Load(); got != 0 {
		t.Errorf("got %d requests served, want none over an unverified connection", got)
	}
}

func TestFetcherUpdate(t *testing.T) {
	srv := newJWKSServer(t, jwksOf(t, false, rsaSigner("k1")))
	rig := newFetcherRig(t)
	fetched := uriProvider(t, "fetched", srv.URL, srv.caPEM())
	inline := provider(t, "inline", jwksOf(t, false, ecSigner("e1")), nil)

	rig.settle(t, func() { rig.f.Update([]*config.JWTProvider{fetched, inline}) })
	if rig.f.Keys("default/inline") == nil || rig.f.Keys("default/fetched") == nil {
		t.Fatal("missing keys after the first update")
	}
	t.Run("same_source_keeps_keys", func(t *testing.T) {
		again := uriProvider(t, "fetched", srv.URL, srv.caPEM())
		again.Spec.Audiences = []string{"new"}
		hits := srv.hits.Load()
		rig.f.Update([]*config.JWTProvider{again, inline})
		if rig.f.Keys("default/fetched") == nil {
			t.Error("keys dropped by an update that kept the source")
		}
		if srv.hits.Load() != hits {
			t.Error("an update that kept the source fetched again")
		}
	})
	t.Run("removed_provider", func(t *testing.T) {
		rig.f.Update([]*config.JWTProvider{inline})
		if got := rig.f.Keys("default/fetched"); got != nil {
			t.Errorf("got keys %s for a removed provider, want none", got)
		}
		if got := seriesCount(rig.reg, "bulwark_jwks_fetch_total"); got != 0 {
			t.Errorf("got %d fetch series after removal, want 0", got)
		}
	})
	t.Run("unknown_provider", func(t *testing.T) {
		if got := rig.f.Keys("default/nope"); got != nil {
			t.Errorf("got %s, want nil", got)
		}
	})
}

func TestNewFetcherRegistersOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := authn.NewFetcher(authn.FetcherConfig{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	_, err := authn.NewFetcher(authn.FetcherConfig{Registerer: reg})
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Fatalf("got %v, want AlreadyRegisteredError", err)
	}
}
