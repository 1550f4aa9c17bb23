package control

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Bounds of a Report: what one proxy may make the control plane hold.
const (
	// maxReportDenials is the most entries one Report may carry (proxies
	// send at most 200 per call).
	maxReportDenials = 500
	// maxDenialPath is the longest path of an entry: proxies cut paths at
	// 256 bytes.
	maxDenialPath = 256
	// maxDenialID bounds the source (a SPIFFE ID is at most 2048 bytes).
	maxDenialID = 2048
	// maxDenialMethod bounds the method.
	maxDenialMethod = 32
	// maxDenialReason bounds the reason.
	maxDenialReason = 128
	// maxDenialCount bounds the count of one entry, so that sums cannot
	// overflow.
	maxDenialCount = 1 << 40
)

// defaultMaxDenials is how many denials the control plane keeps.
const defaultMaxDenials = 1000

// maxReporters bounds the reporters remembered per denial.
const maxReporters = 8

// denialKey identifies one kind of denial: requests denied with the same
// key are one entry with a count.
type denialKey struct {
	direction, source, destination, method, path, policy string
	rule                                                 int32
	reason                                               string
	status                                               int32
}

// denialEntry is one kind of denial the control plane keeps.
type denialEntry struct {
	key         denialKey
	count       int64
	first, last time.Time
	reporters   []string
	// owner is the reporter that reported it first, whose quota it counts
	// against.
	owner string
	elem  *list.Element
}

// denialLog keeps the most recent denials reported by proxies, merged by
// key, in memory only: at most max entries, the least recently reported
// ones evicted first. Each reporter owns at most a quarter of them (the
// kinds it reported first): a reporter at its quota evicts its own oldest
// kind, so one compromised workload flooding the log with made-up kinds
// cannot push out everyone else's. Nothing survives a restart of the
// control plane (denials are a live view; proxies keep reporting new
// ones). It is safe for concurrent use.
type denialLog struct {
	max, perReporter int

	mu    sync.Mutex
	byKey map[denialKey]*denialEntry
	// order holds the entries, most recently reported first.
	order *list.List
	// owned counts the entries of each owner.
	owned map[string]int
}

func newDenialLog(size int) *denialLog {
	if size <= 0 {
		size = defaultMaxDenials
	}
	return &denialLog{max: size, perReporter: max(1, size/4), byKey: map[denialKey]*denialEntry{}, order: list.New(), owned: map[string]int{}}
}

// evict removes e. l.mu is held.
func (l *denialLog) evict(e *denialEntry) {
	delete(l.byKey, e.key)
	l.order.Remove(e.elem)
	if l.owned[e.owner]--; l.owned[e.owner] <= 0 {
		delete(l.owned, e.owner)
	}
}

// oldestOf returns the least recently reported entry owned by reporter.
// l.mu is held.
func (l *denialLog) oldestOf(reporter string) *denialEntry {
	for el := l.order.Back(); el != nil; el = el.Prev() {
		if e := el.Value.(*denialEntry); e.owner == reporter {
			return e
		}
	}
	return nil
}

// add merges validated entries reported by reporter (a SPIFFE ID).
func (l *denialLog) add(reporter string, denials []*apiv1.Denial) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range denials {
		k := denialKey{
			direction: d.GetDirection(), source: d.GetSource(), destination: d.GetDestination(),
			method: d.GetMethod(), path: d.GetPath(), policy: d.GetPolicy(), rule: d.GetRule(),
			reason: d.GetReason(), status: d.GetStatus(),
		}
		first, last := time.Unix(0, d.GetFirstSeenUnixNano()), time.Unix(0, d.GetLastSeenUnixNano())
		e, ok := l.byKey[k]
		if !ok {
			switch {
			case l.owned[reporter] >= l.perReporter:
				l.evict(l.oldestOf(reporter))
			case l.order.Len() >= l.max:
				l.evict(l.order.Back().Value.(*denialEntry))
			}
			e = &denialEntry{key: k, first: first, last: last, owner: reporter}
			e.elem = l.order.PushFront(e)
			l.byKey[k] = e
			l.owned[reporter]++
		} else {
			l.order.MoveToFront(e.elem)
			if first.Before(e.first) {
				e.first = first
			}
			if last.After(e.last) {
				e.last = last
			}
		}
		e.count = min(e.count+d.GetCount(), maxDenialCount)
		if !slices.Contains(e.reporters, reporter) && len(e.reporters) < maxReporters {
			e.reporters = append(e.reporters, reporter)
		}
	}
}

// list returns the denials whose destination's namespace include accepts
// and that were last seen at or after since (zero: any), most recently
// seen first.
func (l *denialLog) list(include func(namespace string) bool, since time.Time) []*config.Denial {
	l.mu.Lock()
	var picked []denialEntry
	for el := l.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*denialEntry)
		if e.last.Before(since) {
			continue
		}
		if ns := denialNamespace(e.key); include != nil && !include(ns) {
			continue
		}
		c := *e
		c.reporters = slices.Clone(e.reporters)
		picked = append(picked, c)
	}
	l.mu.Unlock()
	slices.SortStableFunc(picked, func(a, b denialEntry) int { return b.last.Compare(a.last) })
	out := make([]*config.Denial, len(picked))
	for i := range picked {
		out[i] = denialView(&picked[i])
	}
	return out
}

// source is the admin API's view of the log: since is measured back from
// c's time.
func (l *denialLog) source(c clock.Clock) admin.DenialSource {
	return func(include func(string) bool, within time.Duration) []*config.Denial {
		var since time.Time
		if within > 0 {
			since = c.Now().Add(-within)
		}
		return l.list(include, since)
	}
}

// egressHost reports whether dest is the host of a denied egress request:
// a host name or IP literal of at most 253 bytes, lower case, without a
// slash.
func egressHost(dest string) bool {
	if dest == "" || len(dest) > 253 {
		return false
	}
	for i := 0; i < len(dest); i++ {
		c := dest[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':' || c == '_') {
			return false
		}
	}
	return true
}

// denialNamespace is the namespace a denial is listed in: its destination's
// ("namespace/name"), or for a denied egress host, its source's.
func denialNamespace(k denialKey) string {
	if ref, err := identity.ParseServiceRef(k.destination, ""); err == nil && ref.String() == k.destination {
		return ref.Namespace
	}
	id, err := spiffeid.FromString(k.source)
	if err != nil {
		return ""
	}
	if w, err := identity.ParseWorkloadID(id); err == nil {
		return w.Namespace
	}
	return ""
}

// denialView is the Denial object of an entry.
func denialView(e *denialEntry) *config.Denial {
	k := e.key
	d := &config.Denial{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindDenial},
		Metadata: config.ObjectMeta{Name: denialName(k), Namespace: denialNamespace(k)},
		Status: config.DenialStatus{
			Direction: k.direction, Source: k.source, Destination: k.destination, Method: k.method, Path: k.path,
			Policy: k.policy, Reason: k.reason, HTTPStatus: int(k.status), Count: e.count,
			FirstSeen: e.first.UTC().Format(time.RFC3339Nano), LastSeen: e.last.UTC().Format(time.RFC3339Nano),
			Reporters: e.reporters,
		},
	}
	if k.rule >= 0 {
		r := int(k.rule)
		d.Status.Rule = &r
	}
	return d
}

// denialName is a stable name of a key: "d-" and 12 hex digits of its
// digest, a valid resource name.
func denialName(k denialKey) string {
	h := sha256.New()
	for _, s := range []string{k.direction, k.source, k.destination, k.method, k.path, k.policy,
		strconv.Itoa(int(k.rule)), k.reason, strconv.Itoa(int(k.status))} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "d-" + hex.EncodeToString(h.Sum(nil)[:6])
}

// checkReport validates a Report from the proxy of reporter and binds it
// to that identity: an outbound denial must have the reporter as its
// source, and an inbound one a destination the reporter's identity serves
// (serves answers from the registry). The whole report is refused at the
// first bad entry, with an error naming it. now bounds the times: a report
// cannot claim denials from the future.
func checkReport(ctx context.Context, req *apiv1.ReportRequest, reporter spiffeid.ID, now time.Time,
	serves func(ctx context.Context, svc identity.ServiceRef) (bool, error)) error {
	ds := req.GetDenials()
	if len(ds) > maxReportDenials {
		return fmt.Errorf("denials: %d entries, at most %d per report", len(ds), maxReportDenials)
	}
	served := map[identity.ServiceRef]bool{}
	for i, d := range ds {
		if err := checkDenial(d, now); err != nil {
			return fmt.Errorf("denials[%d].%w", i, err)
		}
		if err := checkReporterSaw(ctx, d.GetDirection(), d.GetSource(), d.GetDestination(), reporter, served, serves); err != nil {
			return fmt.Errorf("denials[%d].%w", i, err)
		}
	}
	return checkGraph(ctx, req, reporter, now, served, serves)
}

// checkReporterSaw checks that the reporter could have seen what it
// reports (a request checked by checkRequestKind): an outbound request's
// source must be the reporter, an inbound request's destination a service
// the reporter serves (served caches the answers of serves). The error
// starts with the field name.
func checkReporterSaw(ctx context.Context, direction, source, destination string, reporter spiffeid.ID,
	served map[identity.ServiceRef]bool, serves func(context.Context, identity.ServiceRef) (bool, error)) error {
	switch direction {
	case telemetry.DirectionOutbound:
		if source != reporter.String() {
			return fmt.Errorf("source: an outbound request's source must be the reporter, %s", reporter)
		}
	case telemetry.DirectionInbound:
		svc, _ := identity.ParseServiceRef(destination, "") // checked by checkRequestKind
		ok, seen := served[svc]
		if !seen {
			var err error
			if ok, err = serves(ctx, svc); err != nil {
				return errReportServes{err}
			}
			served[svc] = ok
		}
		if !ok {
			return fmt.Errorf("destination: %s is not a service of the reporter, %s", svc, reporter)
		}
	}
	return nil
}

// errReportServes wraps a registry failure during checkReport, which is not
// the reporter's fault.
type errReportServes struct{ err error }

func (e errReportServes) Error() string { return "check reporter's services: " + e.err.Error() }
func (e errReportServes) Unwrap() error { return e.err }

// checkDenial validates one entry; the error starts with the field name.
func checkDenial(d *apiv1.Denial, now time.Time) error {
	if err := checkRequestKind(d.GetDirection(), d.GetSource(), d.GetDestination(), d.GetMethod(), d.GetPath(), maxDenialPath); err != nil {
		return err
	}
	if p := d.GetPolicy(); p != "" {
		ref, err := identity.ParseServiceRef(p, "")
		if err != nil || ref.String() != p {
			return fmt.Errorf("policy: %q is not namespace/name", clip(p))
		}
	}
	if r := d.GetRule(); r < -1 || r >= 10000 || (r >= 0) != (d.GetPolicy() != "") {
		return fmt.Errorf("rule: %d with policy %q: want -1 without a policy, 0 to 9999 with one", r, clip(d.GetPolicy()))
	}
	if err := checkText("reason", d.GetReason(), maxDenialReason); err != nil {
		return err
	}
	if d.GetReason() == "" {
		return fmt.Errorf("reason: required")
	}
	if s := d.GetStatus(); s != 401 && s != 403 {
		return fmt.Errorf("status: %d is not 401 or 403", s)
	}
	if c := d.GetCount(); c < 1 || c > maxDenialCount {
		return fmt.Errorf("count: %d is not between 1 and %d", c, int64(maxDenialCount))
	}
	first, last := d.GetFirstSeenUnixNano(), d.GetLastSeenUnixNano()
	switch {
	case first <= 0 || last <= 0:
		return fmt.Errorf("first_seen_unix_nano, last_seen_unix_nano: required")
	case first > last:
		return fmt.Errorf("first_seen_unix_nano: after last_seen_unix_nano")
	case last > now.Add(maxClockSkew).UnixNano():
		return fmt.Errorf("last_seen_unix_nano: %s is in the future", time.Unix(0, last).UTC().Format(time.RFC3339))
	}
	return nil
}

// maxClockSkew is how far ahead of the control plane's clock a proxy's may
// be.
const maxClockSkew = 5 * time.Minute

// checkRequestKind validates what a denial and an edge both say of their
// requests: direction, source, destination, method and path (at most
// maxPath bytes); the error starts with the field name.
func checkRequestKind(direction, source, destination, method, path string, maxPath int) error {
	switch direction {
	case telemetry.DirectionInbound, telemetry.DirectionOutbound:
	default:
		return fmt.Errorf("direction: %q is not inbound or outbound", clip(direction))
	}
	if err := checkText("source", source, maxDenialID); err != nil {
		return err
	}
	if _, err := spiffeid.FromString(source); err != nil {
		return fmt.Errorf("source: %v", err)
	}
	ref, err := identity.ParseServiceRef(destination, "")
	if (err != nil || ref.String() != destination) && !(direction == telemetry.DirectionOutbound && egressHost(destination)) {
		return fmt.Errorf("destination: %q is not namespace/name (or, outbound, a host name)", clip(destination))
	}
	if err := checkText("method", method, maxDenialMethod); err != nil {
		return err
	}
	if method == "" {
		return fmt.Errorf("method: required")
	}
	if err := checkText("path", path, maxPath); err != nil {
		return err
	}
	if (path == "" || path[0] != '/') && !(path == "" && method == "CONNECT") {
		return fmt.Errorf("path: %q does not start with / (only a CONNECT tunnel has none)", clip(path))
	}
	return nil
}

// checkText refuses a field longer than max bytes, not UTF-8, or holding
// control characters (which `bulwark get` would print).
func checkText(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s: %d bytes, at most %d", field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: not UTF-8", field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s: control character %U", field, r)
		}
	}
	return nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	n := 64
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
