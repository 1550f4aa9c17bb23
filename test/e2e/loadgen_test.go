package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Load generator defaults.
const (
	// loadWorkers bounds the requests in flight.
	loadWorkers = 32
	// loadTimeout is each request's deadline.
	loadTimeout = 5 * time.Second
	// loadTick is how often the generator releases the requests due.
	loadTick = 5 * time.Millisecond
	// loadSamples is how many failures are kept with their time.
	loadSamples = 20
)

// load sends GET requests at a fixed rate through a proxy's outbound
// listener (as an app with HTTP_PROXY does, on keep-alive connections) and
// checks every answer: status 200 from the app, with exactly the
// X-Forwarded-Client-Cert value the callee's proxy sets for the expected
// caller. It never retries: every request that does not pass counts as a
// failure, with its reason. It makes no timing assertions; a request that
// finds all workers busy is not sent and is counted as skipped.
type load struct {
	rate     int
	url      string
	wantXFCC string
	client   *http.Client
	began    time.Time

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	sent, ok, failed, skipped atomic.Int64

	mu      sync.Mutex
	reasons map[string]int
	samples []string
}

// loadStats is a point-in-time count of a load's requests.
type loadStats struct {
	Sent, OK, Failed, Skipped int64
	Elapsed                   time.Duration
	// Reasons counts failures by reason.
	Reasons map[string]int
	// Samples are the first failures, with their time since the start.
	Samples []string
}

// startLoad starts sending rate requests per second to target through the
// HTTP proxy at outbound. wantXFCC is the exact X-Forwarded-Client-Cert
// value the app must see. The load stops when the test ends, if not before.
func startLoad(t *testing.T, outbound, target, wantXFCC string, rate int) *load {
	t.Helper()
	proxyURL, err := url.Parse("http://" + outbound)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{
		rate: rate, url: target, wantXFCC: wantXFCC,
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyURL(proxyURL),
				MaxIdleConns:        loadWorkers,
				MaxIdleConnsPerHost: loadWorkers,
				IdleConnTimeout:     90 * time.Second,
			},
			Timeout: loadTimeout,
		},
		began:   time.Now(),
		cancel:  cancel,
		done:    make(chan struct{}),
		reasons: map[string]int{},
	}
	jobs := make(chan struct{}, loadWorkers)
	var workers sync.WaitGroup
	for range loadWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for range jobs {
				l.one()
			}
		}()
	}
	go func() {
		defer close(l.done)
		defer workers.Wait()
		defer close(jobs)
		tick := time.NewTicker(loadTick)
		defer tick.Stop()
		var issued int64
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				due := int64(now.Sub(l.began).Seconds()*float64(rate)) - issued
				for ; due > 0; due-- {
					issued++
					select {
					case jobs <- struct{}{}:
					default:
						l.skipped.Add(1)
					}
				}
			}
		}
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

// one sends one request and records its outcome.
func (l *load) one() {
	l.sent.Add(1)
	resp, err := l.client.Get(l.url)
	if err != nil {
		l.fail("transport: " + err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		l.fail(fmt.Sprintf("status %d, reading body: %v", resp.StatusCode, err))
		return
	}
	if resp.StatusCode != http.StatusOK {
		l.fail(fmt.Sprintf("status %d: %.120s", resp.StatusCode, strings.TrimSpace(string(body))))
		return
	}
	var a appAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		l.fail(fmt.Sprintf("status 200 with a body that is not the app's answer: %.120s", body))
		return
	}
	if len(a.XFCC) != 1 || a.XFCC[0] != l.wantXFCC {
		l.fail(fmt.Sprintf("caller identity: got X-Forwarded-Client-Cert %q, want [%q]", a.XFCC, l.wantXFCC))
		return
	}
	l.ok.Add(1)
}

func (l *load) fail(reason string) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reasons[reason]++
	if len(l.samples) < loadSamples {
		l.samples = append(l.samples, fmt.Sprintf("%s (at %s): %s",
			time.Now().Format("15:04:05.000"), time.Since(l.began).Round(time.Millisecond), reason))
	}
}

// stats returns the counts so far.
func (l *load) stats() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := loadStats{
		Sent: l.sent.Load(), OK: l.ok.Load(), Failed: l.failed.Load(), Skipped: l.skipped.Load(),
		Elapsed: time.Since(l.began), Reasons: make(map[string]int, len(l.reasons)), Samples: slices.Clone(l.samples),
	}
	for k, v := range l.reasons {
		st.Reasons[k] = v
	}
	return st
}

// stop stops sending, waits for the requests in flight and returns the
// final counts. It may be called more than once.
func (l *load) stop() loadStats {
	l.once.Do(func() {
		l.cancel()
		<-l.done
		l.client.CloseIdleConnections()
	})
	return l.stats()
}

// String summarizes st for a test log.
func (st loadStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests in %s (%.0f/s): %d ok, %d failed, %d skipped (all %d workers busy)",
		st.Sent, st.Elapsed.Round(time.Millisecond), float64(st.Sent)/st.Elapsed.Seconds(), st.OK, st.Failed, st.Skipped, loadWorkers)
	reasons := make([]string, 0, len(st.Reasons))
	for r := range st.Reasons {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		fmt.Fprintf(&b, "\n  %6d x %s", st.Reasons[r], r)
	}
	for _, s := range st.Samples {
		fmt.Fprintf(&b, "\n  first failures: %s", s)
	}
	return b.String()
}

// phases records the phases of a test run under load: their durations and
// the requests and failures in each.
type phases struct {
	t    *testing.T
	load *load
	list []phase
}

type phase struct {
	name           string
	start, end     time.Time
	sent0, failed0 int64
	sent, failed   int64
}

// begin ends the current phase, if any, and starts one called name.
func (p *phases) begin(name string) {
	p.end()
	p.t.Logf("phase %q begins", name)
	p.list = append(p.list, phase{name: name, start: time.Now(), sent0: p.load.sent.Load(), failed0: p.load.failed.Load()})
}

// end ends the current phase.
func (p *phases) end() {
	if n := len(p.list); n > 0 && p.list[n-1].end.IsZero() {
		ph := &p.list[n-1]
		ph.end = time.Now()
		ph.sent, ph.failed = p.load.sent.Load()-ph.sent0, p.load.failed.Load()-ph.failed0
	}
}

// String is a table of the phases.
func (p *phases) String() string {
	var b strings.Builder
	for _, ph := range p.list {
		fmt.Fprintf(&b, "\n  %-44s %9s  %7d requests  %d failed  (from %s)", ph.name, ph.end.Sub(ph.start).Round(100*time.Millisecond),
			ph.sent, ph.failed, ph.start.Format("15:04:05.000"))
	}
	return b.String()
}
