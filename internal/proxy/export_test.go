package proxy

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// HostPort is hostPort.
func HostPort(authority string, def int) (string, int, error) { return hostPort(authority, def) }

// RemoteIP is remoteIP.
func RemoteIP(addr string) netip.Addr { return remoteIP(addr) }

// DenyLog wraps the denial log.
type DenyLog struct{ l *denyLog }

// NewDenyLog returns a denial log logging at most once per edge every
// interval, tracking at most max edges.
func NewDenyLog(logger *slog.Logger, c clock.Clock, every time.Duration, max int) *DenyLog {
	return &DenyLog{newDenyLog(logger, c, every, max)}
}

// Log logs d, rate-limited.
func (d *DenyLog) Log(den Denial) { d.l.log(&den) }

// DialPerRequest makes the engine open a new mTLS connection for every
// request to a peer and close it after, for the benchmark that measures
// what pooled HTTP/2 connections save.
func (e *Engine) DialPerRequest() { e.pool.perRequest = true }
