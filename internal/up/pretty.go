package up

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// prettyHandler writes one readable line per record for the combined log
// of `bulwark up`: time, the part that spoke, and the message. Access log
// records become "source -> destination METHOD path status"; at a gateway,
// "edge client-ip -> destination METHOD path status".
type prettyHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	name  string
	level slog.Level
	attrs []slog.Attr
}

func newPretty(w io.Writer, mu *sync.Mutex, name string, level slog.Level) *prettyHandler {
	return &prettyHandler{mu: mu, w: w, name: name, level: level}
}

func (h *prettyHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *prettyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &c
}

func (h *prettyHandler) WithGroup(string) slog.Handler { return h }

// hidden keys are implied by the line's prefix.
var hiddenKeys = map[string]bool{telemetry.KeyComponent: true, telemetry.KeyService: true}

func (h *prettyHandler) Handle(_ context.Context, r slog.Record) error {
	fields := map[string]string{}
	var order []string
	add := func(a slog.Attr) bool {
		if hiddenKeys[a.Key] {
			return true
		}
		v := a.Value.Resolve().String()
		if a.Value.Kind() == slog.KindTime {
			v = a.Value.Time().Format(time.RFC3339)
		}
		if _, seen := fields[a.Key]; !seen {
			order = append(order, a.Key)
		}
		fields[a.Key] = v
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)

	var b strings.Builder
	fmt.Fprintf(&b, "%s %-16s ", r.Time.Format("15:04:05.000"), h.name)
	if r.Message == "request" && fields[telemetry.KeyDirection] != "" {
		verdict := "       "
		if fields[telemetry.KeyDecision] == telemetry.DecisionDeny {
			verdict = "DENIED "
		}
		arrow := "->"
		direction, source, destination := fields[telemetry.KeyDirection], fields[telemetry.KeySource], fields[telemetry.KeyDestination]
		if ip := fields[telemetry.KeyClientIP]; ip != "" {
			// A request from outside, at a gateway: the client is its
			// source, the gateway's identity is the line's prefix.
			direction, source = "edge", ip
			if destination == "" {
				destination = "(no route)"
			}
		}
		fmt.Fprintf(&b, "%s%s %s %s %s %s %s %s", verdict, direction, source, arrow,
			destination, fields[telemetry.KeyMethod], fields[telemetry.KeyPath], fields[telemetry.KeyStatus])
		if ms := fields[telemetry.KeyDurationMS]; ms != "" {
			fmt.Fprintf(&b, " %sms", ms)
		}
		if reason := fields[telemetry.KeyReason]; reason != "" && fields[telemetry.KeyDecision] == telemetry.DecisionDeny {
			fmt.Fprintf(&b, " (%s)", reason)
		}
		b.WriteByte('\n')
	} else {
		if r.Level >= slog.LevelWarn {
			b.WriteString(r.Level.String() + " ")
		}
		b.WriteString(r.Message)
		for _, k := range order {
			fmt.Fprintf(&b, " %s=%s", k, quote(fields[k]))
		}
		b.WriteByte('\n')
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// lineWriter prefixes every line written by a child process.
type lineWriter struct {
	mu   *sync.Mutex
	w    io.Writer
	name string
	buf  []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		line := string(l.buf[:i])
		l.buf = l.buf[i+1:]
		l.mu.Lock()
		fmt.Fprintf(l.w, "%s %-16s %s\n", time.Now().Format("15:04:05.000"), l.name, line)
		l.mu.Unlock()
	}
	return len(p), nil
}
