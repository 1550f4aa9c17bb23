package alert_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

const hookSecret = "hook-secret-0123456789"

// receiver is a webhook receiver on a real loopback server.
type receiver struct {
	srv   *httptest.Server
	hits  atomic.Int64
	mu    sync.Mutex
	got   []received
	reply func(w http.ResponseWriter, r *http.Request)
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, reply func(w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{reply: reply}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), body: body})
		rc.mu.Unlock()
		rc.hits.Add(1)
		rc.reply(w, r)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) received() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// hookRule is a NewEdge rule of namespace default with a webhook to url.
func hookRule(t *testing.T, name, url, timeout string) *config.AlertRule {
	return rule(t, "default", name, "  detector: NewEdge\n  cooldown: 0s\n  webhooks: [{url: '"+url+"', secret: "+hookSecret+", timeout: "+timeout+"}]\n")
}

// realFixture is a fixture on the wall clock with a fast backoff: webhook
// workers wait on real timers of a millisecond.
func realFixture(t *testing.T, attempts int) *fixture {
	return newFixture(t, alert.Config{Clock: clock.Real(), Attempts: attempts, BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond})
}

func TestWebhookSigned(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	f := realFixture(t, 5)
	f.engine.SetRules([]*config.AlertRule{hookRule(t, "new", rc.srv.URL+"/hook?team=sec", "5s")})
	f.engine.ObserveReport(id(t, rogueID), edges(rogueID, "default/api"), time.Now())
	waitFor(t, "delivered", func() bool { return f.counter(t, "bulwark_alert_webhook_deliveries_total", "result", "delivered") == 1 })

	got := rc.received()
	if len(got) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(got))
	}
	h, body := got[0].header, got[0].body
	if err := alert.Verify([]byte(hookSecret), h.Get(alert.HeaderSignature), h.Get(alert.HeaderTimestamp), body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("signature: %v", err)
	}
	if err := alert.Verify([]byte("another-secret-0123456"), h.Get(alert.HeaderSignature), h.Get(alert.HeaderTimestamp), body, time.Now(), 5*time.Minute); err == nil {
		t.Errorf("signature with another secret: got valid, want a mismatch")
	}
	if err := alert.Verify([]byte(hookSecret), h.Get(alert.HeaderSignature), h.Get(alert.HeaderTimestamp), body, time.Now().Add(time.Hour), 5*time.Minute); err == nil {
		t.Errorf("an hour later: got valid, want the timestamp refused (replay)")
	}
	tampered := append([]byte(nil), body...)
	tampered[len(tampered)-2] ^= 1
	if err := alert.Verify([]byte(hookSecret), h.Get(alert.HeaderSignature), h.Get(alert.HeaderTimestamp), tampered, time.Now(), 5*time.Minute); err == nil {
		t.Errorf("tampered body: got valid, want a mismatch")
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var a config.Alert
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("payload %s: %v", body, err)
	}
	if a.Kind != config.KindAlert || a.Status.Rule != "default/new" || a.Status.Source != rogueID || a.Status.Destination != "default/api" ||
		a.Status.Summary == "" || a.Status.FiredAt == "" || h.Get(alert.HeaderDelivery) != a.Metadata.Name {
		t.Errorf("payload: got %+v (delivery %q), want the alert of rule default/new for rogue -> default/api", a, h.Get(alert.HeaderDelivery))
	}
}

func TestWebhookRetriesThenGivesUp(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	f := realFixture(t, 4)
	f.engine.SetRules([]*config.AlertRule{hookRule(t, "new", rc.srv.URL, "5s")})
	f.engine.ObserveReport(id(t, rogueID), edges(rogueID, "default/api"), time.Now())
	waitFor(t, "given up", func() bool { return f.counter(t, "bulwark_alert_webhook_deliveries_total", "result", "failed") == 1 })
	if n := rc.hits.Load(); n != 4 {
		t.Errorf("attempts: got %d, want 4", n)
	}
	// Each attempt is signed anew, with the same delivery id.
	got := rc.received()
	for _, r := range got {
		if err := alert.Verify([]byte(hookSecret), r.header.Get(alert.HeaderSignature), r.header.Get(alert.HeaderTimestamp), r.body, time.Now(), time.Minute); err != nil {
			t.Errorf("retry signature: %v", err)
		}
		if r.header.Get(alert.HeaderDelivery) != got[0].header.Get(alert.HeaderDelivery) {
			t.Errorf("delivery id: got %q and %q, want the same", r.header.Get(alert.HeaderDelivery), got[0].header.Get(alert.HeaderDelivery))
		}
	}
}

func TestWebhookRetryableStatuses(t *testing.T) {
	for _, tt := range []struct {
		name     string
		status   int
		attempts int64
		result   string
	}{
		{"bad_request", http.StatusBadRequest, 1, alert.ResultRejected},
		{"unauthorized", http.StatusUnauthorized, 1, alert.ResultRejected},
		{"request_timeout", http.StatusRequestTimeout, 3, alert.ResultFailed},
		{"too_many_requests", http.StatusTooManyRequests, 3, alert.ResultFailed},
		{"bad_gateway", http.StatusBadGateway, 3, alert.ResultFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(tt.status) })
			f := realFixture(t, 3)
			f.engine.SetRules([]*config.AlertRule{hookRule(t, "new", rc.srv.URL, "5s")})
			f.engine.ObserveReport(id(t, rogueID), edges(rogueID, "default/api"), time.Now())
			waitFor(t, tt.result, func() bool { return f.counter(t, "bulwark_alert_webhook_deliveries_total", "result", tt.result) == 1 })
			if n := rc.hits.Load(); n != tt.attempts {
				t.Errorf("attempts: got %d, want %d", n, tt.attempts)
			}
		})
	}
}

func TestWebhookRedirectNotFollowed(t *testing.T) {
	var followed atomic.Bool
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Store(true)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	f := realFixture(t, 3)
	f.engine.SetRules([]*config.AlertRule{hookRule(t, "new", rc.srv.URL+"/hook", "5s")})
	f.engine.ObserveReport(id(t, rogueID), edges(rogueID, "default/api"), time.Now())
	waitFor(t, "rejected", func() bool { return f.counter(t, "bulwark_alert_webhook_deliveries_total", "result", "rejected") == 1 })
	if followed.Load() || rc.hits.Load() != 1 {
		t.Errorf("got followed=%v hits=%d, want the redirect not followed", followed.Load(), rc.hits.Load())
	}
}

func TestWebhookHangingReceiver(t *testing.T) {
	release := make(chan struct{})
	hung := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	ok := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {})
	f := newFixture(t, alert.Config{Clock: clock.Real(), Attempts: 2, BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond, QueueSize: 4})
	f.engine.SetRules([]*config.AlertRule{
		hookRule(t, "hangs", hung.srv.URL, "100ms"),
		hookRule(t, "works", ok.srv.URL, "5s"),
	})
	// While the first receiver hangs, the engine keeps taking reports:
	// each new edge fires both rules; the hanging webhook's queue fills
	// and overflows (dropped, counted); the working one gets every alert.
	const edgesSent = 20
	for i := 0; i < edgesSent; i++ {
		src := "spiffe://bulwark.local/ns/default/sa/s" + string(rune('a'+i))
		f.engine.ObserveReport(id(t, src), edges(src, "default/api"), time.Now())
		// The working webhook delivers each alert while the other hangs.
		waitFor(t, "the working receiver got the alert", func() bool { return ok.hits.Load() == int64(i+1) })
	}
	if got := f.counter(t, "bulwark_alert_webhook_dropped_total"); got == 0 {
		t.Errorf("dropped: got 0, want the hanging webhook's overflow counted")
	}
	// The hanging receiver's attempts time out (100ms each) and end.
	waitFor(t, "the first delivery to the hanging receiver given up", func() bool {
		return f.counter(t, "bulwark_alert_webhook_deliveries_total", "result", "failed") >= 1
	})
	if n := len(f.alertsOf("default/hangs")); n != edgesSent {
		t.Errorf("alerts of the hanging rule: got %d, want %d (kept and logged even when not delivered)", n, edgesSent)
	}
}

func TestWebhookStoppedWithRule(t *testing.T) {
	release := make(chan struct{})
	hung := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	f := newFixture(t, alert.Config{Clock: clock.Real()})
	f.engine.SetRules([]*config.AlertRule{hookRule(t, "hangs", hung.srv.URL, "30s")})
	f.engine.ObserveReport(id(t, rogueID), edges(rogueID, "default/api"), time.Now())
	waitFor(t, "attempt started", func() bool { return hung.hits.Load() == 1 })
	// Removing the rule stops its worker at once, in-flight attempt
	// included; Close then returns without waiting for the 30s timeout.
	f.engine.SetRules(nil)
	done := make(chan struct{})
	go func() { f.engine.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a delivery hung")
	}
}

// TestCloseStopsWorkers: Close ends every webhook worker, also one waiting
// out a backoff (no goroutine is left behind).
func TestCloseStopsWorkers(t *testing.T) {
	before := runtime.NumGoroutine()
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	e, err := alert.New(t.Context(), alert.Config{BackoffBase: time.Hour, BackoffMax: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var rules []*config.AlertRule
	for _, name := range []string{"a", "b", "c"} {
		rules = append(rules, hookRule(t, name, rc.srv.URL+"/"+name, "5s"))
	}
	e.SetRules(rules)
	e.ObserveReport(id(t, rogueID), edges(rogueID, "default/api"), time.Now())
	waitFor(t, "first attempts", func() bool { return rc.hits.Load() == 3 })
	e.Close()
	rc.srv.Close()
	rc.srv.Client().CloseIdleConnections()
	waitFor(t, "goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
}
