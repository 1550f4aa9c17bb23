package resilience

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// Defaults of OutlierConfig, as TrafficPolicy documents them.
const (
	DefaultConsecutive5xx           = 5
	DefaultConsecutiveGatewayErrors = 3
	DefaultBaseEjectionTime         = 30 * time.Second
	DefaultMaxEjectionTime          = 300 * time.Second
	DefaultMaxEjectionPercent       = 50
)

// OutlierConfig configures outlier detection. Zero fields take the Default
// constants.
type OutlierConfig struct {
	// Consecutive5xx ejects after this many 5xx (gateway errors included)
	// in a row. Negative: never on 5xx.
	Consecutive5xx int
	// ConsecutiveGatewayErrors ejects after this many gateway errors in a
	// row. Negative: never on gateway errors.
	ConsecutiveGatewayErrors int
	// BaseEjectionTime is the first ejection's length; the nth lasts n
	// times as long, up to MaxEjectionTime (raised to BaseEjectionTime
	// when smaller).
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent of the endpoints may be ejected at once, a hard
	// cap (capped at 100; negative: never eject).
	MaxEjectionPercent int
}

// Result is the outcome of one request to an endpoint, as outlier detection
// counts it.
type Result int

const (
	// Success is any response that is not a 5xx.
	Success Result = iota
	// ServerError is a 5xx other than 502, 503 and 504.
	ServerError
	// GatewayError is a connect failure, a reset, or a 502, 503 or 504.
	GatewayError
)

// String returns the name of r.
func (r Result) String() string {
	switch r {
	case Success:
		return "success"
	case ServerError:
		return "server-error"
	case GatewayError:
		return "gateway-error"
	default:
		return "unknown"
	}
}

// Outlier is the outlier detector of one destination, by endpoint address.
// It is safe for concurrent use; Report and Ejected read a map that
// SetEndpoints swaps, without a lock.
type Outlier struct {
	cfg  OutlierConfig
	clk  clock.Clock
	base time.Time

	mu    sync.Mutex // serializes ejections and SetEndpoints
	hosts atomic.Pointer[map[string]*host]
}

// host is the state of one address.
type host struct {
	// until is when the current ejection ends (nanoseconds since base); 0
	// when not ejected. Ejected resets it to 0 lazily once it has passed.
	until atomic.Int64
	c5xx  atomic.Int32
	cgw   atomic.Int32

	// Guarded by Outlier.mu.
	ejections int   // the n of the next ejection's length, minus one
	lastUntil int64 // when the last ejection ended (or ends)
}

// NewOutlier returns an Outlier without endpoints, reading time from clk
// (nil: the wall clock).
func NewOutlier(cfg OutlierConfig, clk clock.Clock) *Outlier {
	if cfg.Consecutive5xx == 0 {
		cfg.Consecutive5xx = DefaultConsecutive5xx
	}
	if cfg.ConsecutiveGatewayErrors == 0 {
		cfg.ConsecutiveGatewayErrors = DefaultConsecutiveGatewayErrors
	}
	if cfg.BaseEjectionTime <= 0 {
		cfg.BaseEjectionTime = DefaultBaseEjectionTime
	}
	if cfg.MaxEjectionTime <= 0 {
		cfg.MaxEjectionTime = DefaultMaxEjectionTime
	}
	cfg.MaxEjectionTime = max(cfg.MaxEjectionTime, cfg.BaseEjectionTime)
	if cfg.MaxEjectionPercent == 0 {
		cfg.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	cfg.MaxEjectionPercent = min(max(cfg.MaxEjectionPercent, 0), 100)
	clk = clock.OrReal(clk)
	o := &Outlier{cfg: cfg, clk: clk, base: clk.Now()}
	o.hosts.Store(&map[string]*host{})
	return o
}

// Config returns the configuration in effect, defaults filled in.
func (o *Outlier) Config() OutlierConfig { return o.cfg }

func (o *Outlier) now() int64 { return int64(o.clk.Now().Sub(o.base)) }

// SetEndpoints gives the current endpoint set (the percentage cap counts
// it); the state of addresses not in it is dropped, that of the others is
// kept.
func (o *Outlier) SetEndpoints(addrs []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.hosts.Load()
	m := make(map[string]*host, len(addrs))
	for _, a := range addrs {
		if h := old[a]; h != nil {
			m[a] = h
		} else if m[a] == nil {
			m[a] = &host{}
		}
	}
	o.hosts.Store(&m)
}

// Report records the result of a request to addr; it returns true when this
// report ejected addr (so the caller logs and counts an ejection). Reports
// for an address that is not in the endpoint set, or is ejected, are
// ignored.
func (o *Outlier) Report(addr string, r Result) (ejected bool) {
	h := (*o.hosts.Load())[addr]
	if h == nil {
		return false
	}
	if until := h.until.Load(); until != 0 && o.now() < until {
		return false
	}
	var trip bool
	switch r {
	case ServerError:
		reset(&h.cgw)
		n := h.c5xx.Add(1)
		trip = o.cfg.Consecutive5xx > 0 && n >= int32(o.cfg.Consecutive5xx)
	case GatewayError:
		g := h.cgw.Add(1)
		n := h.c5xx.Add(1)
		trip = (o.cfg.ConsecutiveGatewayErrors > 0 && g >= int32(o.cfg.ConsecutiveGatewayErrors)) ||
			(o.cfg.Consecutive5xx > 0 && n >= int32(o.cfg.Consecutive5xx))
	default:
		reset(&h.c5xx)
		reset(&h.cgw)
	}
	if !trip {
		return false
	}
	return o.eject(addr, h)
}

// reset zeroes a counter, without a write when it is zero already.
func reset(c *atomic.Int32) {
	if c.Load() != 0 {
		c.Store(0)
	}
}

// eject ejects h (at addr) unless it is ejected already, gone, or the cap
// forbids it. Its counters restart either way.
func (o *Outlier) eject(addr string, h *host) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := *o.hosts.Load()
	if m[addr] != h {
		return false // dropped by SetEndpoints meanwhile
	}
	now := o.now()
	if now < h.until.Load() {
		return false // another report ejected it
	}
	h.c5xx.Store(0)
	h.cgw.Store(0)
	ejected := 0
	for _, x := range m {
		if now < x.until.Load() {
			ejected++
		}
	}
	if (ejected+1)*100 > len(m)*o.cfg.MaxEjectionPercent {
		return false
	}
	if h.ejections > 0 && now-h.lastUntil >= int64(o.cfg.MaxEjectionTime) {
		h.ejections = 0 // healthy for MaxEjectionTime: forgiven
	}
	h.ejections++
	d := o.cfg.MaxEjectionTime
	if h.ejections <= int(o.cfg.MaxEjectionTime/o.cfg.BaseEjectionTime) {
		d = min(o.cfg.BaseEjectionTime*time.Duration(h.ejections), o.cfg.MaxEjectionTime)
	}
	h.lastUntil = now + int64(d)
	h.until.Store(h.lastUntil)
	return true
}

// Ejected reports whether addr is ejected now (an ejection ends by itself
// when its time is up). Unknown addresses are not ejected.
func (o *Outlier) Ejected(addr string) bool {
	h := (*o.hosts.Load())[addr]
	if h == nil {
		return false
	}
	until := h.until.Load()
	if until == 0 {
		return false
	}
	if o.now() < until {
		return true
	}
	h.until.CompareAndSwap(until, 0)
	return false
}

// Ejections returns how many endpoints are ejected now (for metrics).
func (o *Outlier) Ejections() int {
	now := o.now()
	n := 0
	for _, h := range *o.hosts.Load() {
		if until := h.until.Load(); until != 0 && now < until {
			n++
		}
	}
	return n
}
