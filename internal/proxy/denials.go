package proxy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Denial is one request the engine denied: answered 401 (authentication)
// or 403 (authorization), in either direction. It never holds the query or
// any header value.
type Denial struct {
	// Direction is telemetry.DirectionInbound (this proxy is the callee)
	// or telemetry.DirectionOutbound (this proxy's app is the caller).
	Direction string
	// Source is the caller's SPIFFE ID.
	Source string
	// Destination is the called service, "namespace/name".
	Destination string
	Method      string
	// Path is the normalized path, cut at MaxDenialPath bytes.
	Path string
	// Policy is "namespace/name" of the deciding policy, "" when no rule
	// decided; Rule is the index of the deciding rule, -1 when none did.
	Policy string
	Rule   int
	// Reason says why, as the access log says it.
	Reason string
	// Status is 401 or 403.
	Status int
}

// MaxDenialPath is the longest path a Denial carries: longer ones are cut
// (at a UTF-8 boundary).
const MaxDenialPath = 256

// Defaults of the denial log.
const (
	// denyLogEvery is how often the denials of one edge are logged at
	// most.
	denyLogEvery = 10 * time.Second
	// denyLogEdges bounds the edges the denial log tracks.
	denyLogEdges = 1024
)

// edgeKey is what makes two denials the same for the denial log.
type edgeKey struct {
	direction, source, destination, policy string
	rule                                   int
	reason                                 string
	status                                 int
}

// edgeState is the denial log's memory of one edge.
type edgeState struct {
	// logged is when the edge was last logged; suppressed is how many of
	// its denials were not logged since.
	logged     time.Time
	suppressed int64
}

// denyLog writes each denial to the process log at most once per edge
// (direction, source, destination, policy, rule, reason, status) per
// interval, with the number of denials of the edge it did not log since.
// A caller retrying a forbidden call in a loop thus costs one line per
// interval. Edges quiet for an interval are forgotten (a line says how
// many of their denials went unlogged), and at most max edges are tracked:
// denials of further edges are counted and the count logged with the next
// line. 403s are logged at Warn, 401s at Info.
type denyLog struct {
	logger *slog.Logger
	clock  clock.Clock
	every  time.Duration
	max    int

	mu    sync.Mutex
	edges map[edgeKey]*edgeState
	// swept is when stale edges were last forgotten.
	swept time.Time
	// untracked counts denials not logged because max edges were tracked.
	untracked int64
}

func newDenyLog(logger *slog.Logger, c clock.Clock, every time.Duration, max int) *denyLog {
	return &denyLog{logger: logger, clock: c, every: every, max: max, edges: map[edgeKey]*edgeState{}, swept: c.Now()}
}

// quiet is an edge forgotten with denials that were not logged.
type quiet struct {
	key        edgeKey
	suppressed int64
}

// log logs d unless its edge was logged less than an interval ago.
func (l *denyLog) log(d *Denial) {
	now := l.clock.Now()
	k := edgeKey{direction: d.Direction, source: d.Source, destination: d.Destination, policy: d.Policy,
		rule: d.Rule, reason: d.Reason, status: d.Status}

	l.mu.Lock()
	var forgotten []quiet
	if now.Sub(l.swept) >= l.every {
		forgotten = l.sweep(now, k)
	}
	var (
		emit       bool
		suppressed int64
	)
	st, ok := l.edges[k]
	switch {
	case ok && now.Sub(st.logged) < l.every:
		st.suppressed++
	case ok:
		emit, suppressed = true, st.suppressed
		st.logged, st.suppressed = now, 0
	case len(l.edges) >= l.max:
		l.untracked++
	default:
		l.edges[k] = &edgeState{logged: now}
		emit = true
	}
	var untracked int64
	if emit {
		untracked, l.untracked = l.untracked, 0
	}
	l.mu.Unlock()

	ctx := context.Background()
	for _, q := range forgotten {
		l.logger.LogAttrs(ctx, levelOf(q.key.status), "request denials not logged",
			append(edgeAttrs(q.key), slog.Int64(telemetry.KeyCount, q.suppressed))...)
	}
	if emit {
		attrs := append(edgeAttrs(k), slog.String(telemetry.KeyMethod, d.Method), slog.String(telemetry.KeyPath, d.Path))
		if suppressed > 0 {
			attrs = append(attrs, slog.Int64(telemetry.KeySuppressed, suppressed))
		}
		l.logger.LogAttrs(ctx, levelOf(d.Status), "request denied", attrs...)
	}
	if untracked > 0 {
		l.logger.LogAttrs(ctx, slog.LevelWarn, "request denials not logged: too many edges",
			slog.Int64(telemetry.KeyCount, untracked))
	}
}

// sweep forgets the edges not logged for an interval, except keep (the
// edge about to be logged), and returns those with unlogged denials. l.mu
// is held.
func (l *denyLog) sweep(now time.Time, keep edgeKey) []quiet {
	l.swept = now
	var out []quiet
	for k, st := range l.edges {
		if k == keep || now.Sub(st.logged) < l.every {
			continue
		}
		if st.suppressed > 0 {
			out = append(out, quiet{key: k, suppressed: st.suppressed})
		}
		delete(l.edges, k)
	}
	return out
}

func levelOf(status int) slog.Level {
	if status == 401 {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

func edgeAttrs(k edgeKey) []slog.Attr {
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs,
		slog.String(telemetry.KeyDirection, k.direction),
		slog.String(telemetry.KeySource, k.source),
		slog.String(telemetry.KeyDestination, k.destination),
		slog.Int(telemetry.KeyStatus, k.status),
		slog.String(telemetry.KeyReason, k.reason),
	)
	if k.policy != "" {
		attrs = append(attrs, slog.String(telemetry.KeyPolicy, policyRule(k.policy, k.rule)))
	}
	return attrs
}

// cutPath returns p cut at MaxDenialPath bytes, at a UTF-8 boundary
// (normalized paths are ASCII).
func cutPath(p string) string { return cut(p, MaxDenialPath) }
