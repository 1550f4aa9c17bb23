package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Defaults of the reporter.
const (
	// reportEvery is how often denials are reported.
	reportEvery = 10 * time.Second
	// reportMaxKinds bounds the kinds of denial held between reports
	// (failed reports included).
	reportMaxKinds = 1000
	// reportBatch is the most entries one Report call carries (the control
	// plane takes at most 500, and 256 KiB per message).
	reportBatch = 200
	// reportTimeout bounds one Report call.
	reportTimeout = 5 * time.Second
	// reportFinalTimeout bounds the report sent at shutdown.
	reportFinalTimeout = 2 * time.Second
)

// errNotConnected: there is no stream to the control plane to report on.
var errNotConnected = errors.New("not connected to the control plane")

// denialCount is what the reporter holds of one kind of denial.
type denialCount struct {
	count       int64
	first, last time.Time
}

// reporter aggregates the engine's denials by kind (every field of
// proxy.Denial) and reports them to the control plane every interval with
// the Report RPC, on the connection of the current Subscribe stream. It
// never blocks the data path: record takes a short lock, and at most
// maxKinds kinds are held; the denials of further kinds are counted as
// dropped and logged. A report that fails for want of a connection is
// merged back and sent with the next one (within the same bound); one the
// control plane refuses is dropped. On shutdown it sends what it holds,
// best effort, on a connection of its own.
type reporter struct {
	// send reports on the current stream's connection (errNotConnected
	// without one); sendFinal on a new connection, at shutdown.
	send, sendFinal func(ctx context.Context, req *apiv1.ReportRequest) error
	clock           clock.Clock
	logger          *slog.Logger
	every           time.Duration
	maxKinds        int
	// reports counts Report calls by result; dropped counts denials that
	// were never reported.
	reports *prometheus.CounterVec
	dropped prometheus.Counter

	mu      sync.Mutex
	pending map[proxy.Denial]*denialCount
	// lost counts denials dropped since the last log line saying so.
	lost int64
}

// Values of the result label of bulwark_denial_reports_total.
const (
	reportOK      = "ok"
	reportFailed  = "error"
	reportRefused = "refused"
)

func newReporter(send, sendFinal func(context.Context, *apiv1.ReportRequest) error, c clock.Clock, logger *slog.Logger, reg prometheus.Registerer) (*reporter, error) {
	r := &reporter{
		send: send, sendFinal: sendFinal, clock: c, logger: logger, every: reportEvery, maxKinds: reportMaxKinds,
		pending: map[proxy.Denial]*denialCount{},
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_denial_reports_total",
			Help: "Denial reports sent to the control plane, by result (ok, error: kept for the next report, refused: dropped).",
		}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_denials_dropped_total",
			Help: "Denials never reported to the control plane: too many kinds between reports, or a refused report.",
		}),
	}
	for _, res := range []string{reportOK, reportFailed, reportRefused} {
		r.reports.WithLabelValues(res)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.reports, r.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// record counts one denial; it is the engine's OnDeny.
func (r *reporter) record(d proxy.Denial) {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mergeLocked(d, denialCount{count: 1, first: now, last: now})
}

// mergeLocked adds c to the kind d, unless the bound is reached. r.mu is
// held.
func (r *reporter) mergeLocked(d proxy.Denial, c denialCount) {
	p, ok := r.pending[d]
	if !ok {
		if len(r.pending) >= r.maxKinds {
			r.lost += c.count
			r.dropped.Add(float64(c.count))
			return
		}
		cc := c
		r.pending[d] = &cc
		return
	}
	p.count += c.count
	if c.first.Before(p.first) {
		p.first = c.first
	}
	if c.last.After(p.last) {
		p.last = c.last
	}
}

// take empties the pending denials and returns them as Report batches.
func (r *reporter) take() [][]*apiv1.Denial {
	r.mu.Lock()
	pending := r.pending
	r.pending = make(map[proxy.Denial]*denialCount, len(pending))
	lost := r.lost
	r.lost = 0
	r.mu.Unlock()
	if lost > 0 {
		r.logger.Warn("denials not reported: too many kinds between reports", telemetry.KeyCount, lost)
	}
	var (
		batches [][]*apiv1.Denial
		cur     []*apiv1.Denial
	)
	for d, c := range pending {
		cur = append(cur, &apiv1.Denial{
			Direction: d.Direction, Source: d.Source, Destination: d.Destination, Method: d.Method, Path: d.Path,
			Policy: d.Policy, Rule: int32(d.Rule), Reason: d.Reason, Status: int32(d.Status), Count: c.count,
			FirstSeenUnixNano: c.first.UnixNano(), LastSeenUnixNano: c.last.UnixNano(),
		})
		if len(cur) == reportBatch {
			batches = append(batches, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	return batches
}

// giveBack merges an unsent batch back into the pending denials.
func (r *reporter) giveBack(batch []*apiv1.Denial) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range batch {
		r.mergeLocked(proxy.Denial{
			Direction: d.GetDirection(), Source: d.GetSource(), Destination: d.GetDestination(), Method: d.GetMethod(),
			Path: d.GetPath(), Policy: d.GetPolicy(), Rule: int(d.GetRule()), Reason: d.GetReason(), Status: int(d.GetStatus()),
		}, denialCount{count: d.GetCount(), first: time.Unix(0, d.GetFirstSeenUnixNano()), last: time.Unix(0, d.GetLastSeenUnixNano())})
	}
}

// flush reports the pending denials with send. Batches that fail for a
// reason retrying can fix are kept for the next report.
func (r *reporter) flush(ctx context.Context, send func(context.Context, *apiv1.ReportRequest) error) {
	for _, batch := range r.take() {
		err := send(ctx, &apiv1.ReportRequest{Denials: batch})
		switch code := status.Code(err); {
		case err == nil:
			r.reports.WithLabelValues(reportOK).Inc()
		case code == codes.InvalidArgument || code == codes.PermissionDenied:
			// Retrying cannot change the answer.
			var n int64
			for _, d := range batch {
				n += d.GetCount()
			}
			r.reports.WithLabelValues(reportRefused).Inc()
			r.dropped.Add(float64(n))
			r.logger.Warn("denial report refused by the control plane", telemetry.KeyCount, n, telemetry.KeyErr, err)
		default:
			r.reports.WithLabelValues(reportFailed).Inc()
			if !errors.Is(err, errNotConnected) {
				r.logger.Debug("denial report failed, keeping it for the next one", telemetry.KeyErr, err)
			}
			r.giveBack(batch)
		}
	}
}

// run reports every interval until ctx is done, then once more, best
// effort, with sendFinal.
func (r *reporter) run(ctx context.Context) error {
	for {
		t := r.clock.NewTimer(r.every)
		select {
		case <-ctx.Done():
			t.Stop()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportFinalTimeout)
			r.flush(fctx, r.sendFinal)
			cancel()
			return nil
		case <-t.C():
		}
		r.flush(ctx, r.send)
	}
}
