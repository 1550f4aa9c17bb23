package authn

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/authn/keyset"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Fetch limits.
const (
	// FetchTimeout bounds one JWKS fetch, from dialing to the last byte.
	FetchTimeout = 10 * time.Second
	// minBackoff is the first retry delay after a failed fetch; it doubles
	// on each failure in a row, up to the provider's refresh interval.
	minBackoff = time.Second
	// maxRedirects bounds the redirects followed by one fetch.
	maxRedirects = 5
)

// Results of a fetch, the result label of bulwark_jwks_fetch_total.
const (
	FetchOK      = "ok"
	FetchError   = "error"
	FetchInvalid = "invalid"
)

// FetcherConfig configures a Fetcher.
type FetcherConfig struct {
	// Clock schedules the refreshes. Default: the wall clock.
	Clock clock.Clock
	// Logger, default discard.
	Logger *slog.Logger
	// Registerer, if set, gets the fetcher's metrics:
	// bulwark_jwks_fetch_total{provider,result},
	// bulwark_jwks_keys{provider} and
	// bulwark_jwks_last_success_timestamp_seconds{provider}.
	Registerer prometheus.Registerer
	// OnChange, if set, is called with the provider ("namespace/name")
	// whose keys changed (first fetch included), from Run's goroutine and
	// without locks held; it must not block for long.
	OnChange func(ref string)
}

// Fetcher keeps the keys of JWT providers current: it fetches each
// provider's jwksURI at its refresh interval (with jitter) over HTTPS and
// keeps the last good keys when a fetch fails or returns something that is
// not a valid JWKS. Providers with inline keys need no fetch. A Fetcher is
// safe for concurrent use.
type Fetcher struct {
	cfg    FetcherConfig
	logger *slog.Logger

	fetches     *prometheus.CounterVec
	keyCount    *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec

	wake chan struct{}

	mu        sync.Mutex
	providers map[string]*fetchState
	gen       uint64
}

// fetchState is what the Fetcher knows of one provider.
type fetchState struct {
	// source identifies what the keys come from; a change of it drops them.
	source  string
	uri     string
	client  *http.Client
	refresh time.Duration
	// gen identifies this state: results of fetches started for an older
	// state of the same provider are dropped.
	gen uint64

	keys     []byte
	next     time.Time
	backoff  time.Duration
	inflight bool
	// failing: the last fetch failed; a failure is logged only when it
	// starts a streak.
	failing bool
}

// NewFetcher returns a Fetcher with no providers; Update sets them and Run
// fetches them.
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	cfg.Clock = clock.OrReal(cfg.Clock)
	f := &Fetcher{
		cfg:    cfg,
		logger: telemetry.OrDiscard(cfg.Logger),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_jwks_fetch_total",
			Help: "JWKS fetches by JWT provider (namespace/name) and result: ok, error (unreachable, TLS, HTTP status), invalid (not a usable JWKS).",
		}, []string{"provider", "result"}),
		keyCount: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bulwark_jwks_keys",
			Help: "Usable keys currently pushed for a JWT provider.",
		}, []string{"provider"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bulwark_jwks_last_success_timestamp_seconds",
			Help: "When the JWKS of a JWT provider was last fetched successfully, Unix seconds.",
		}, []string{"provider"}),
		wake:      make(chan struct{}, 1),
		providers: map[string]*fetchState{},
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{f.fetches, f.keyCount, f.lastSuccess} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register jwks metrics: %w", err)
			}
		}
	}
	return f, nil
}

// Update sets the providers to keep keys for, which must be validated. A
// provider whose key source (jwksURI and jwksCA, or inline jwks) is
// unchanged keeps its keys and schedule; a new or changed one is fetched at
// once. It never blocks on a fetch, and does not call OnChange: the caller
// reads Keys after it.
func (f *Fetcher) Update(providers []*config.JWTProvider) {
	now := f.cfg.Clock.Now()
	f.mu.Lock()
	seen := make(map[string]bool, len(providers))
	for _, p := range providers {
		ref := config.Ref(p)
		seen[ref] = true
		spec := &p.Spec
		source := "uri\x00" + spec.JWKSURI + "\x00" + spec.JWKSCA
		if spec.JWKSURI == "" {
			source = "inline\x00" + spec.JWKS
		}
		st, ok := f.providers[ref]
		if ok && st.source == source {
			if r := spec.Refresh(); r != st.refresh {
				st.refresh = r
				if st.uri != "" && !st.failing && st.next.After(now.Add(r)) {
					st.next = now.Add(jitter(r))
				}
			}
			continue
		}
		if ok && st.client != nil {
			st.client.CloseIdleConnections()
		}
		f.gen++
		st = &fetchState{source: source, refresh: spec.Refresh(), gen: f.gen}
		if spec.JWKSURI == "" {
			st.keys, st.next = f.inline(ref, spec.JWKS), time.Time{}
		} else {
			client, err := newClient(spec.JWKSCA)
			if err != nil {
				// Validate refuses such a CA: this is a provider that was
				// never validated.
				f.logger.Error("jwks client", telemetry.KeyProvider, ref, telemetry.KeyErr, err)
				continue
			}
			st.uri, st.client, st.next = spec.JWKSURI, client, now
		}
		f.providers[ref] = st
	}
	for ref, st := range f.providers {
		if seen[ref] {
			continue
		}
		if st.client != nil {
			st.client.CloseIdleConnections()
		}
		delete(f.providers, ref)
		f.fetches.DeletePartialMatch(prometheus.Labels{"provider": ref})
		f.keyCount.DeleteLabelValues(ref)
		f.lastSuccess.DeleteLabelValues(ref)
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// inline returns the canonical form of an inline JWKS, nil when it does not
// parse (Validate refuses that).
func (f *Fetcher) inline(ref, jwks string) []byte {
	set, err := keyset.Parse([]byte(jwks))
	if err != nil {
		f.logger.Error("inline jwks", telemetry.KeyProvider, ref, telemetry.KeyErr, err)
		return nil
	}
	b, err := set.Marshal()
	if err != nil {
		f.logger.Error("inline jwks", telemetry.KeyProvider, ref, telemetry.KeyErr, err)
		return nil
	}
	f.keyCount.WithLabelValues(ref).Set(float64(set.Len()))
	return b
}

// Keys returns the current keys of the provider ref ("namespace/name"), a
// JWKS document holding only its usable keys; nil when it has none yet.
// The slice must not be modified.
func (f *Fetcher) Keys(ref string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.providers[ref]; ok {
		return st.keys
	}
	return nil
}

// fetchResult is the outcome of one fetch.
type fetchResult struct {
	ref  string
	gen  uint64
	keys []byte
	n    int
	// result is FetchOK, FetchError or FetchInvalid; err says why not ok.
	result string
	err    error
}

// Run fetches every provider with a jwksURI when it is due until ctx is
// done, then waits for the fetches in flight (cancelled with ctx) and
// returns nil.
func (f *Fetcher) Run(ctx context.Context) error {
	results := make(chan fetchResult)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		now := f.cfg.Clock.Now()
		var wait time.Duration = -1
		f.mu.Lock()
		for ref, st := range f.providers {
			if st.uri == "" || st.inflight {
				continue
			}
			if d := st.next.Sub(now); d > 0 {
				if wait < 0 || d < wait {
					wait = d
				}
				continue
			}
			st.inflight = true
			wg.Add(1)
			go func(ref string, gen uint64, uri string, client *http.Client) {
				defer wg.Done()
				res := fetch(ctx, client, uri)
				res.ref, res.gen = ref, gen
				select {
				case results <- res:
				case <-ctx.Done():
				}
			}(ref, st.gen, st.uri, st.client)
		}
		f.mu.Unlock()
		var timer clock.Timer
		var fire <-chan time.Time
		if wait >= 0 {
			timer = f.cfg.Clock.NewTimer(wait)
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-f.wake:
		case <-fire:
		case res := <-results:
			if f.record(res) && f.cfg.OnChange != nil {
				f.cfg.OnChange(res.ref)
			}
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// record applies the result of a fetch and reports whether the provider's
// keys changed.
func (f *Fetcher) record(res fetchResult) bool {
	now := f.cfg.Clock.Now()
	f.fetches.WithLabelValues(res.ref, res.result).Inc()
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.providers[res.ref]
	if !ok || st.gen != res.gen {
		return false // removed or changed while in flight
	}
	st.inflight = false
	if res.err != nil {
		if !st.failing {
			f.logger.Warn("jwks fetch failed; keeping the last good keys", telemetry.KeyProvider, res.ref,
				telemetry.KeyURL, st.uri, telemetry.KeyReason, res.result, telemetry.KeyErr, res.err,
				telemetry.KeyCount, keyCountOf(st.keys))
		}
		st.failing = true
		st.backoff = min(max(2*st.backoff, minBackoff), st.refresh)
		st.next = now.Add(st.backoff)
		return false
	}
	if st.failing {
		f.logger.Info("jwks fetch recovered", telemetry.KeyProvider, res.ref, telemetry.KeyURL, st.uri)
	}
	st.failing, st.backoff = false, 0
	st.next = now.Add(jitter(st.refresh))
	f.keyCount.WithLabelValues(res.ref).Set(float64(res.n))
	f.lastSuccess.WithLabelValues(res.ref).Set(float64(now.UnixNano()) / 1e9)
	if bytes.Equal(st.keys, res.keys) {
		return false
	}
	if st.keys != nil {
		f.logger.Info("jwks keys changed", telemetry.KeyProvider, res.ref, telemetry.KeyCount, res.n)
	}
	st.keys = res.keys
	return true
}

// keyCountOf counts the keys of a canonical JWKS, for logs.
func keyCountOf(jwks []byte) int {
	if jwks == nil {
		return 0
	}
	set, err := keyset.Parse(jwks)
	if err != nil {
		return 0
	}
	return set.Len()
}

// jitter spreads a refresh interval over [0.9d, 1.1d), so that control
// planes and providers do not fetch in step.
func jitter(d time.Duration) time.Duration {
	spread := d / 5
	if spread <= 0 {
		return d
	}
	return d - d/10 + rand.N(spread)
}

// fetch gets and checks one JWKS document.
func fetch(ctx context.Context, client *http.Client, uri string) fetchResult {
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return fetchResult{result: FetchError, err: err}
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fetchResult{result: FetchError, err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return fetchResult{result: FetchError, err: fmt.Errorf("http status %s", resp.Status)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, keyset.MaxSize+1))
	if err != nil {
		return fetchResult{result: FetchError, err: fmt.Errorf("read body: %w", err)}
	}
	if len(body) > keyset.MaxSize {
		return fetchResult{result: FetchInvalid, err: fmt.Errorf("body over the limit of %d bytes", keyset.MaxSize)}
	}
	set, err := keyset.Parse(body)
	if err != nil {
		return fetchResult{result: FetchInvalid, err: err}
	}
	keys, err := set.Marshal()
	if err != nil {
		return fetchResult{result: FetchInvalid, err: err}
	}
	return fetchResult{result: FetchOK, keys: keys, n: set.Len()}
}

// newClient returns the HTTPS client of one provider: TLS 1.2 or later,
// verified against caPEM (the system roots when empty), redirects followed
// only to https.
func newClient(caPEM string) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("jwksCA: no certificate")
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		TLSClientConfig:        tlsCfg,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    FetchTimeout,
		ResponseHeaderTimeout:  FetchTimeout,
		MaxIdleConns:           2,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   FetchTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s refused: jwks must be fetched over https", req.URL.Scheme)
			}
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			return nil
		},
	}, nil
}
