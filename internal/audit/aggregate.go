package audit

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Defaults of AggregatorConfig.
const (
	// DefaultFlushPeriod is AggregatorConfig.Period when it is zero.
	DefaultFlushPeriod = 10 * time.Second
	// DefaultMaxFailureKeys is AggregatorConfig.MaxFailureKeys when it is
	// zero.
	DefaultMaxFailureKeys = 256
	// DefaultMaxSigners is AggregatorConfig.MaxSigners when it is zero.
	DefaultMaxSigners = 4096
)

// Failure kinds, as Aggregator.Failure records them.
const (
	// FailureOperator: an admin API request without a valid operator
	// certificate.
	FailureOperator = "operator.authn"
	// FailureForbidden: an operator's request RBAC denied.
	FailureForbidden = "operator.authz"
	// FailureJoinToken: an attestation with a bad join token.
	FailureJoinToken = "proxy.attest"
	// FailureProxy: a proxy RPC with a revoked, unknown or expired SVID.
	FailureProxy = "proxy.authn"
)

// Appender appends entries; *Log is one.
type Appender interface {
	Append(ctx context.Context, entries ...Entry) error
}

var _ Appender = (*Log)(nil)

// AggregatorConfig configures NewAggregator.
type AggregatorConfig struct {
	// Log receives the aggregated entries. Required.
	Log Appender
	// Period between flushes. Default: 10s.
	Period time.Duration
	// MaxFailureKeys bounds the distinct (kind, source, identity, reason)
	// failures kept per period; the rest are counted in one "other" entry.
	// Default: 256.
	MaxFailureKeys int
	// MaxSigners bounds the distinct identities whose signings are counted
	// per period; the rest are counted in one "other" entry. Default: 4096.
	MaxSigners int
	// OnFailure, if set, is called for every failure as it happens, with
	// the source IP, the claimed identity ("" if none) and the reason (the
	// alert engine subscribes to it). It is called on the failing
	// request's goroutine and must not block.
	OnFailure func(addr, identity, reason string)
	// Clock drives the flushes. Default: the wall clock.
	Clock clock.Clock
	// Logger, default discard.
	Logger *slog.Logger
}

// failureKey identifies one aggregated failure.
type failureKey struct {
	kind, source, identity, reason string
}

// signKey identifies one aggregated signing.
type signKey struct {
	identity, what string
}

// Aggregator counts frequent events (authentication failures, SVID
// signings) and appends one counted entry per distinct event and period,
// so that the log and the memory they take stay bounded however many
// events come. It is safe for concurrent use.
type Aggregator struct {
	cfg    AggregatorConfig
	logger *slog.Logger

	mu            sync.Mutex
	failures      map[failureKey]int64
	otherFailures int64
	signs         map[signKey]int64
	otherSigns    int64
}

// NewAggregator returns an Aggregator; Run flushes it.
func NewAggregator(cfg AggregatorConfig) (*Aggregator, error) {
	switch {
	case cfg.Log == nil:
		return nil, fmt.Errorf("audit aggregator: log is required")
	case cfg.Period < 0:
		return nil, fmt.Errorf("audit aggregator: Period: negative duration %v", cfg.Period)
	case cfg.MaxFailureKeys < 0 || cfg.MaxSigners < 0:
		return nil, fmt.Errorf("audit aggregator: MaxFailureKeys, MaxSigners: negative count")
	}
	if cfg.Period == 0 {
		cfg.Period = DefaultFlushPeriod
	}
	if cfg.MaxFailureKeys == 0 {
		cfg.MaxFailureKeys = DefaultMaxFailureKeys
	}
	if cfg.MaxSigners == 0 {
		cfg.MaxSigners = DefaultMaxSigners
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	return &Aggregator{
		cfg: cfg, logger: telemetry.OrDiscard(cfg.Logger),
		failures: map[failureKey]int64{}, signs: map[signKey]int64{},
	}, nil
}

// Failure counts one failed authentication or authorization of kind (the
// Failure constants) from addr ("host:port" or a bare IP; only the IP is
// kept), by the claimed identity ("" when none), for reason. Nothing in it
// may be a secret.
func (a *Aggregator) Failure(kind, addr, identity, reason string) {
	if a == nil {
		return
	}
	ip := SourceIP(addr)
	k := failureKey{kind: clip(kind, 64), source: clip(ip, 64), identity: clip(identity, maxField), reason: clip(reason, 200)}
	a.mu.Lock()
	if _, ok := a.failures[k]; ok || len(a.failures) < a.cfg.MaxFailureKeys {
		a.failures[k]++
	} else {
		a.otherFailures++
	}
	a.mu.Unlock()
	if a.cfg.OnFailure != nil {
		a.cfg.OnFailure(k.source, k.identity, k.reason)
	}
}

// Signed counts one signing for identity (what: "x509-svid" or
// "jwt-svid").
func (a *Aggregator) Signed(identity, what string) {
	if a == nil {
		return
	}
	k := signKey{identity: clip(identity, maxField), what: clip(what, 64)}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.signs[k]; ok || len(a.signs) < a.cfg.MaxSigners {
		a.signs[k]++
		return
	}
	a.otherSigns++
}

// SourceIP returns the host of a "host:port" address, or addr: what
// entries record as their source.
func SourceIP(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// take empties the counters and returns their entries, sorted.
func (a *Aggregator) take() []Entry {
	a.mu.Lock()
	failures, otherF, signs, otherS := a.failures, a.otherFailures, a.signs, a.otherSigns
	a.failures, a.otherFailures = map[failureKey]int64{}, 0
	a.signs, a.otherSigns = map[signKey]int64{}, 0
	a.mu.Unlock()

	var out []Entry
	fks := make([]failureKey, 0, len(failures))
	for k := range failures {
		fks = append(fks, k)
	}
	slices.SortFunc(fks, func(x, y failureKey) int {
		return cmp.Or(cmp.Compare(x.kind, y.kind), cmp.Compare(x.source, y.source), cmp.Compare(x.identity, y.identity), cmp.Compare(x.reason, y.reason))
	})
	for _, k := range fks {
		actor := k.identity
		if actor == "" {
			actor = "anonymous"
		}
		out = append(out, Entry{Actor: actor, Action: ActionAuthFailure, Source: k.source, Outcome: OutcomeFailed,
			Detail: k.kind + ": " + k.reason, Count: failures[k]})
	}
	if otherF > 0 {
		out = append(out, Entry{Actor: "*", Action: ActionAuthFailure, Source: "*", Outcome: OutcomeFailed,
			Detail: fmt.Sprintf("other failures: more than %d distinct sources in one period", a.cfg.MaxFailureKeys), Count: otherF})
	}
	sks := make([]signKey, 0, len(signs))
	for k := range signs {
		sks = append(sks, k)
	}
	slices.SortFunc(sks, func(x, y signKey) int {
		return cmp.Or(cmp.Compare(x.identity, y.identity), cmp.Compare(x.what, y.what))
	})
	for _, k := range sks {
		out = append(out, Entry{Actor: k.identity, Action: ActionSVIDSign, Outcome: OutcomeOK, Detail: k.what, Count: signs[k]})
	}
	if otherS > 0 {
		out = append(out, Entry{Actor: "*", Action: ActionSVIDSign, Outcome: OutcomeOK,
			Detail: fmt.Sprintf("other identities: more than %d in one period", a.cfg.MaxSigners), Count: otherS})
	}
	return out
}

// putBack returns the counts of entries that could not be appended, within
// the bounds, so the next flush tries again.
func (a *Aggregator) putBack(entries []Entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range entries {
		switch {
		case e.Action == ActionAuthFailure && e.Source == "*" && e.Actor == "*":
			a.otherFailures += e.Count
		case e.Action == ActionAuthFailure:
			ident := e.Actor
			if ident == "anonymous" {
				ident = ""
			}
			kind, reason, _ := cutDetail(e.Detail)
			k := failureKey{kind: kind, source: e.Source, identity: ident, reason: reason}
			if _, ok := a.failures[k]; ok || len(a.failures) < a.cfg.MaxFailureKeys {
				a.failures[k] += e.Count
			} else {
				a.otherFailures += e.Count
			}
		case e.Actor == "*":
			a.otherSigns += e.Count
		default:
			k := signKey{identity: e.Actor, what: e.Detail}
			if _, ok := a.signs[k]; ok || len(a.signs) < a.cfg.MaxSigners {
				a.signs[k] += e.Count
			} else {
				a.otherSigns += e.Count
			}
		}
	}
}

func cutDetail(d string) (kind, reason string, ok bool) {
	for i := 0; i+1 < len(d); i++ {
		if d[i] == ':' && d[i+1] == ' ' {
			return d[:i], d[i+2:], true
		}
	}
	return d, "", false
}

// Flush appends the entries of the counts so far. On failure the counts
// are kept (within the bounds) for the next flush.
func (a *Aggregator) Flush(ctx context.Context) error {
	entries := a.take()
	if len(entries) == 0 {
		return nil
	}
	if err := a.cfg.Log.Append(ctx, entries...); err != nil {
		a.putBack(entries)
		return err
	}
	return nil
}

// Run flushes every Period until ctx is done, then flushes a last time
// (with a context that is not cancelled, bounded to 5s) and returns nil.
func (a *Aggregator) Run(ctx context.Context) error {
	for {
		t := a.cfg.Clock.NewTimer(a.cfg.Period)
		select {
		case <-ctx.Done():
			t.Stop()
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := a.Flush(fctx); err != nil {
				a.logger.Warn("audit flush at shutdown failed", telemetry.KeyErr, err)
			}
			return nil
		case <-t.C():
		}
		if err := a.Flush(ctx); err != nil && ctx.Err() == nil {
			a.logger.Warn("audit flush failed, will retry", telemetry.KeyErr, err)
		}
	}
}
