package proxy

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// logInfo collects what the access log line of one request says.
type logInfo struct {
	direction   string
	source      string
	destination string
	upstream    string
	path        string
	decision    string
	reason      string
	// detail says why a request failed that no policy decided (bad
	// request, no endpoints, upstream errors).
	detail string
	policy string
	start  time.Time
}

func (i *logInfo) setDecision(d policy.Decision) {
	if d.Allow {
		i.decision = telemetry.DecisionAllow
	} else {
		i.decision = telemetry.DecisionDeny
	}
	i.reason = d.Reason.String()
	if d.Policy != "" {
		i.policy = d.Policy
		if d.Rule >= 0 {
			i.policy += "#rule" + strconv.Itoa(d.Rule)
		}
	}
}

// logRequest writes the access log line. Denials are logged at Warn so they
// stand out; the query string is never logged.
func (e *Engine) logRequest(r *http.Request, rw *recorder, info *logInfo) {
	level := slog.LevelInfo
	if info.decision == telemetry.DecisionDeny {
		level = slog.LevelWarn
	}
	if !e.access.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String(telemetry.KeyDirection, info.direction),
		slog.String(telemetry.KeySource, info.source),
		slog.String(telemetry.KeyDestination, info.destination),
		slog.String(telemetry.KeyMethod, r.Method),
		slog.String(telemetry.KeyPath, info.path),
		slog.Int(telemetry.KeyStatus, rw.status()),
		slog.Float64(telemetry.KeyDurationMS, float64(time.Since(info.start).Microseconds())/1000),
	}
	if info.decision != "" {
		attrs = append(attrs, slog.String(telemetry.KeyDecision, info.decision))
	}
	if info.reason != "" {
		attrs = append(attrs, slog.String(telemetry.KeyReason, info.reason))
	}
	if info.policy != "" {
		attrs = append(attrs, slog.String(telemetry.KeyPolicy, info.policy))
	}
	if info.upstream != "" {
		attrs = append(attrs, slog.String(telemetry.KeyUpstream, info.upstream))
	}
	if info.detail != "" {
		attrs = append(attrs, slog.String(telemetry.KeyDetail, info.detail))
	}
	if rw.detail != "" {
		attrs = append(attrs, slog.String(telemetry.KeyErr, rw.detail))
	}
	e.access.LogAttrs(r.Context(), level, "request", attrs...)
}

// recorder remembers the status written through it.
type recorder struct {
	http.ResponseWriter
	code   int
	detail string
}

func newRecorder(w http.ResponseWriter) *recorder { return &recorder{ResponseWriter: w} }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (flush,
// hijack for upgrades).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	if r.code == 0 {
		return 499 // nothing was written: the client went away
	}
	return r.code
}
