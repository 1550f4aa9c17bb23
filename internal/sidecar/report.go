package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Defaults of the reporter.
const (
	// reportEvery is how often denials, edges and authentication failures
	// are reported.
	reportEvery = 10 * time.Second
	// reportEarly is how long after the first denial of a burst the
	// reporter reports early, and so the least time between two early
	// reports: an attack reaches the control plane's alerts within
	// seconds, and a long one costs one report per second.
	reportEarly = time.Second
	// reportMaxKinds bounds the kinds of denial held between reports
	// (failed reports included); graph.Recorder bounds edges the same way.
	reportMaxKinds = 1000
	// reportBatch is the most entries (denials, edges and authentication
	// failures together) one Report call carries (the control plane takes
	// at most 500 of each), and reportBatchBytes the most bytes of them
	// (it takes at most 256 KiB per message).
	reportBatch      = 200
	reportBatchBytes = 192 << 10
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

// reporter aggregates what the engine observes and reports it to the
// control plane with the Report RPC, on the connection of the current
// Subscribe stream: denials by kind (every field of proxy.Denial), every
// answered request as an edge of the service graph, and failed
// authentications on the inbound listener (both in a graph.Recorder). It
// reports every interval, and early after a denial: at most reportEarly
// after the first denial of a burst, and then at most once per
// reportEarly, so that the control plane's denial-spike alert sees an
// attack within seconds.
//
// It never blocks the data path: recording takes a short lock, and what
// it holds is bounded (maxKinds kinds of denial, graph.Recorder's bounds);
// what does not fit is counted as dropped, and for denials logged. A
// report that fails for want of a connection is merged back and sent with
// the next one (within the same bounds); one the control plane refuses is
// dropped. On shutdown it sends what it holds, best effort, on a
// connection of its own.
type reporter struct {
	// send reports on the current stream's connection (errNotConnected
	// without one); sendFinal on a new connection, at shutdown.
	send, sendFinal func(ctx context.Context, req *apiv1.ReportRequest) error
	clock           clock.Clock
	logger          *slog.Logger
	every           time.Duration
	maxKinds        int
	// graph aggregates the edges and authentication failures.
	graph *graph.Recorder
	// kick wakes run for an early report after a denial.
	kick chan struct{}
	// reports counts Report calls by result; dropped counts denials that
	// were never reported; refusedEdges and refusedAuth what refused
	// reports carried of edges (requests) and authentication failures.
	reports                   *prometheus.CounterVec
	dropped                   prometheus.Counter
	refusedEdges, refusedAuth atomic.Int64

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
	c = clock.OrReal(c)
	r := &reporter{
		send: send, sendFinal: sendFinal, clock: c, logger: logger, every: reportEvery, maxKinds: reportMaxKinds,
		graph:   graph.NewRecorder(graph.RecorderConfig{Clock: c}),
		kick:    make(chan struct{}, 1),
		pending: map[proxy.Denial]*denialCount{},
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_denial_reports_total",
			Help: "Reports of denials, edges and authentication failures sent to the control plane, by result (ok, error: kept for the next report, refused: dropped).",
		}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_denials_dropped_total",
			Help: "Denials never reported to the control plane: too many kinds between reports, or a refused report.",
		}),
	}
	for _, res := range []string{reportOK, reportFailed, reportRefused} {
		r.reports.WithLabelValues(res)
	}
	edgesDropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "bulwark_edges_dropped_total",
		Help: "Requests never reported in the service graph: too many kinds of request between reports, or a refused report.",
	}, func() float64 { return float64(r.graph.Dropped() + r.refusedEdges.Load()) })
	edgesFolded := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "bulwark_edges_folded_total",
		Help: "Requests reported in a folded edge (path /**) because 1000 kinds of request were held between reports.",
	}, func() float64 { return float64(r.graph.Folded()) })
	authDropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "bulwark_auth_failures_dropped_total",
		Help: "Failed authentications on the inbound listener never reported: too many kinds between reports, or a refused report.",
	}, func() float64 { return float64(r.graph.DroppedAuthFailures() + r.refusedAuth.Load()) })
	if reg != nil {
		for _, c := range []prometheus.Collector{r.reports, r.dropped, edgesDropped, edgesFolded, authDropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// record counts one denial and asks for an early report; it is the
// engine's OnDeny.
func (r *reporter) record(d proxy.Denial) {
	now := r.clock.Now()
	r.mu.Lock()
	r.mergeLocked(d, denialCount{count: 1, first: now, last: now})
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// observe counts one answered request in the service graph; it is the
// engine's OnRequest.
func (r *reporter) observe(o graph.Observation) { r.graph.Record(o) }

// authFailure counts one failed authentication on the inbound listener;
// it is the engine's OnAuthFailure.
func (r *reporter) authFailure(addr, source, reason string) {
	r.graph.RecordAuthFailure(addr, source, reason)
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

// take empties what is pending and returns it as Report requests, each
// within reportBatch entries and reportBatchBytes bytes.
func (r *reporter) take() []*apiv1.ReportRequest {
	r.mu.Lock()
	pending := r.pending
	r.pending = make(map[proxy.Denial]*denialCount, len(pending))
	lost := r.lost
	r.lost = 0
	r.mu.Unlock()
	if lost > 0 {
		r.logger.Warn("denials not reported: too many kinds between reports", telemetry.KeyCount, lost)
	}
	edges, auth := r.graph.Take()

	var (
		out       []*apiv1.ReportRequest
		cur       = &apiv1.ReportRequest{}
		n, nbytes int
	)
	// room starts a new request when the current one cannot take an entry
	// of size bytes more.
	room := func(size int) {
		if n > 0 && (n >= reportBatch || nbytes+size > reportBatchBytes) {
			out = append(out, cur)
			cur, n, nbytes = &apiv1.ReportRequest{}, 0, 0
		}
		n++
		nbytes += size
	}
	for d, c := range pending {
		e := &apiv1.Denial{
			Direction: d.Direction, Source: d.Source, Destination: d.Destination, Method: d.Method, Path: d.Path,
			Policy: d.Policy, Rule: int32(d.Rule), Reason: d.Reason, Status: int32(d.Status), Count: c.count,
			FirstSeenUnixNano: c.first.UnixNano(), LastSeenUnixNano: c.last.UnixNano(),
		}
		room(proto.Size(e) + 4)
		cur.Denials = append(cur.Denials, e)
	}
	for _, e := range edges {
		room(proto.Size(e) + 4)
		cur.Edges = append(cur.Edges, e)
	}
	for _, a := range auth {
		room(proto.Size(a) + 4)
		cur.AuthFailures = append(cur.AuthFailures, a)
	}
	if n > 0 {
		out = append(out, cur)
	}
	return out
}

// giveBack merges an unsent report back into what is pending.
func (r *reporter) giveBack(req *apiv1.ReportRequest) {
	r.mu.Lock()
	for _, d := range req.GetDenials() {
		r.mergeLocked(proxy.Denial{
			Direction: d.GetDirection(), Source: d.GetSource(), Destination: d.GetDestination(), Method: d.GetMethod(),
			Path: d.GetPath(), Policy: d.GetPolicy(), Rule: int(d.GetRule()), Reason: d.GetReason(), Status: int(d.GetStatus()),
		}, denialCount{count: d.GetCount(), first: time.Unix(0, d.GetFirstSeenUnixNano()), last: time.Unix(0, d.GetLastSeenUnixNano())})
	}
	r.mu.Unlock()
	r.graph.GiveBack(req.GetEdges(), req.GetAuthFailures())
}

// flush reports what is pending with send. Reports that fail for a reason
// retrying can fix are kept for the next report.
func (r *reporter) flush(ctx context.Context, send func(context.Context, *apiv1.ReportRequest) error) {
	for _, req := range r.take() {
		err := send(ctx, req)
		switch code := status.Code(err); {
		case err == nil:
			r.reports.WithLabelValues(reportOK).Inc()
		case code == codes.InvalidArgument || code == codes.PermissionDenied:
			// Retrying cannot change the answer.
			var denials, requests, failures int64
			for _, d := range req.GetDenials() {
				denials += d.GetCount()
			}
			for _, e := range req.GetEdges() {
				requests += e.GetRequests()
			}
			for _, a := range req.GetAuthFailures() {
				failures += a.GetCount()
			}
			r.reports.WithLabelValues(reportRefused).Inc()
			r.dropped.Add(float64(denials))
			r.refusedEdges.Add(requests)
			r.refusedAuth.Add(failures)
			r.logger.Warn("report refused by the control plane", telemetry.KeyCount, denials, telemetry.KeyErr, err)
		default:
			r.reports.WithLabelValues(reportFailed).Inc()
			if !errors.Is(err, errNotConnected) {
				r.logger.Debug("report failed, keeping it for the next one", telemetry.KeyErr, err)
			}
			r.giveBack(req)
		}
	}
}

// run reports every interval, and early after denials (see reporter),
// until ctx is done, then once more, best effort, with sendFinal.
func (r *reporter) run(ctx context.Context) error {
	next := r.clock.NewTimer(r.every)
	var early clock.Timer // armed by a denial; nil when not
	for {
		var earlyC <-chan time.Time
		if early != nil {
			earlyC = early.C()
		}
		select {
		case <-ctx.Done():
			next.Stop()
			if early != nil {
				early.Stop()
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportFinalTimeout)
			r.flush(fctx, r.sendFinal)
			cancel()
			return nil
		case <-r.kick:
			if early == nil {
				early = r.clock.NewTimer(reportEarly)
			}
			continue
		case <-earlyC:
			early = nil
			// Denials recorded so far go with this report: their kicks
			// must not arm another.
			select {
			case <-r.kick:
			default:
			}
		case <-next.C():
			next = r.clock.NewTimer(r.every)
		}
		r.flush(ctx, r.send)
	}
}
