package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/buildinfo"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Headers of a webhook delivery.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, keyed with the
	// webhook's secret, of HeaderTimestamp's value, ".", and the body.
	HeaderSignature = "X-Bulwark-Signature"
	// HeaderTimestamp is the Unix time of the attempt, in seconds: a
	// receiver refuses a delivery whose timestamp is too old (replay).
	HeaderTimestamp = "X-Bulwark-Timestamp"
	// HeaderDelivery is the alert's name, the same on every attempt: a
	// receiver ignores a delivery it already processed.
	HeaderDelivery = "X-Bulwark-Delivery"
)

// Values of the result label of bulwark_alert_webhook_deliveries_total.
const (
	// ResultDelivered: a 2xx answer.
	ResultDelivered = "delivered"
	// ResultRejected: a 3xx or 4xx answer other than 408 and 429, which
	// is not retried.
	ResultRejected = "rejected"
	// ResultFailed: every attempt failed (5xx, 408, 429, timeout,
	// connection error).
	ResultFailed = "failed"
)

// Sign returns the value of HeaderSignature for body sent at timestamp
// (the value of HeaderTimestamp) with secret.
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a delivery as a receiver should: the signature matches
// (compared in constant time) and the timestamp is within maxAge of now,
// either way. It is what docs/alerts.md shows receivers.
func Verify(secret []byte, signature, timestamp string, body []byte, now time.Time, maxAge time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("verify webhook: bad timestamp")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > maxAge || d < -maxAge {
		return errors.New("verify webhook: timestamp outside the accepted window")
	}
	if !hmac.Equal([]byte(signature), []byte(Sign(secret, timestamp, body))) {
		return errors.New("verify webhook: signature mismatch")
	}
	return nil
}

// metrics are the Engine's metrics.
type metrics struct {
	alerts     *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	dropped    prometheus.Counter
}

// newMetrics makes the metrics and registers them with reg when it is not
// nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_alerts_total",
			Help: "Alerts fired, by rule (namespace/name), detector and severity.",
		}, []string{"rule", "detector", "severity"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_alert_webhook_deliveries_total",
			Help: "Webhook deliveries of alerts by final result: delivered, rejected (3xx/4xx, not retried), failed (every attempt failed).",
		}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_alert_webhook_dropped_total",
			Help: "Alerts not queued to a webhook because its queue was full.",
		}),
	}
	for _, r := range []string{ResultDelivered, ResultRejected, ResultFailed} {
		m.deliveries.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.alerts, m.deliveries, m.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register alert metrics: %w", err)
			}
		}
	}
	return m, nil
}

// sinkKey identifies a webhook: a change of any part makes a new one.
type sinkKey struct {
	rule, url string
	secret    [32]byte
	timeout   time.Duration
}

func newSinkKey(rule string, w config.AlertWebhook) sinkKey {
	return sinkKey{rule: rule, url: w.URL, secret: sha256.Sum256([]byte(w.Secret)), timeout: config.AlertDuration(w.Timeout)}
}

// delivery is one alert to send.
type delivery struct {
	id   string
	body []byte
}

// sink is one webhook of one rule with its queue and worker.
type sink struct {
	rule    string
	url     string
	host    string
	secret  []byte
	timeout time.Duration
	queue   chan delivery
	cancel  context.CancelFunc
	dropped atomic.Int64
}

// startSink starts the worker of a webhook. e.mu is held.
func (e *Engine) startSink(k sinkKey, rule string, w config.AlertWebhook) *sink {
	ctx, cancel := context.WithCancel(e.ctx)
	s := &sink{
		rule: rule, url: w.URL, host: safeHost(w.URL), secret: []byte(w.Secret), timeout: k.timeout,
		queue: make(chan delivery, e.cfg.QueueSize), cancel: cancel,
	}
	if s.timeout <= 0 {
		s.timeout = config.DefaultWebhookTimeout
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-s.queue:
				e.deliver(ctx, s, d)
			}
		}
	}()
	return s
}

// enqueue queues d to s, or drops it when the queue is full. It never
// blocks.
func (e *Engine) enqueue(s *sink, d delivery) {
	select {
	case s.queue <- d:
	default:
		e.metrics.dropped.Inc()
		// Log the 1st, 2nd, 4th, 8th... drop of a webhook, not each.
		if n := s.dropped.Add(1); n&(n-1) == 0 {
			e.logger.Warn("alert webhook queue full: alert dropped", telemetry.KeyRule, s.rule, telemetry.KeyURL, s.host,
				telemetry.KeyCount, n)
		}
	}
}

// deliver sends d to s with bounded retries: 2xx is delivered; 3xx and
// 4xx other than 408 and 429 are rejected at once; anything else is tried
// again after a backoff, up to Config.Attempts attempts.
func (e *Engine) deliver(ctx context.Context, s *sink, d delivery) {
	var lastErr error
	for attempt := 1; attempt <= e.cfg.Attempts; attempt++ {
		code, retryAfter, err := e.post(ctx, s, d)
		switch {
		case err == nil && code >= 200 && code < 300:
			e.metrics.deliveries.WithLabelValues(ResultDelivered).Inc()
			return
		case err == nil && code >= 300 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
			e.metrics.deliveries.WithLabelValues(ResultRejected).Inc()
			e.logger.Warn("alert webhook rejected the alert", telemetry.KeyRule, s.rule, telemetry.KeyURL, s.host,
				telemetry.KeyStatus, code, telemetry.KeyName, d.id)
			return
		case err == nil:
			lastErr = fmt.Errorf("status %d", code)
		default:
			lastErr = err
		}
		if ctx.Err() != nil {
			return
		}
		if attempt == e.cfg.Attempts {
			break
		}
		wait := e.backoff(attempt)
		if retryAfter > wait {
			wait = min(retryAfter, e.cfg.BackoffMax)
		}
		e.logger.Debug("alert webhook attempt failed", telemetry.KeyRule, s.rule, telemetry.KeyURL, s.host,
			telemetry.KeyAttempt, attempt, telemetry.KeyBackoff, wait, telemetry.KeyErr, lastErr)
		t := e.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
	e.metrics.deliveries.WithLabelValues(ResultFailed).Inc()
	e.logger.Warn("alert webhook failed", telemetry.KeyRule, s.rule, telemetry.KeyURL, s.host,
		telemetry.KeyAttempts, e.cfg.Attempts, telemetry.KeyName, d.id, telemetry.KeyErr, lastErr)
}

// backoff is the wait after attempt n: between half and all of
// min(base*2^(n-1), max).
func (e *Engine) backoff(n int) time.Duration {
	bound := e.cfg.BackoffBase << min(n-1, 30)
	if bound <= 0 || bound > e.cfg.BackoffMax {
		bound = e.cfg.BackoffMax
	}
	half := bound / 2
	return half + time.Duration(rand.Int64N(int64(bound-half)+1))
}

// post makes one attempt, bounded by the webhook's timeout, and returns
// the status and a Retry-After in seconds, if any.
func (e *Engine) post(ctx context.Context, s *sink, d delivery) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(d.body))
	if err != nil {
		// Not err: it would quote the URL, which may hold a token.
		return 0, 0, errors.New("build request: invalid url")
	}
	ts := strconv.FormatInt(e.clock.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "bulwark-alerts/"+buildinfo.Version)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(s.secret, ts, d.body))
	req.Header.Set(HeaderDelivery, d.id)
	resp, err := e.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// The URL may carry a token in its path or query: never
			// log it.
			err = ue.Err
		}
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	var retryAfter time.Duration
	if v, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && v > 0 {
		retryAfter = time.Duration(min(v, 3600)) * time.Second
	}
	return resp.StatusCode, retryAfter, nil
}

// safeHost is what logs say of a webhook URL: its scheme and host, never
// its path or query (which may hold a token).
func safeHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	return u.Scheme + "://" + u.Host
}
