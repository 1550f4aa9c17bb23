package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// secretQuery is sent in the query string of every request of
// TestAccessLog; it must never appear in a log line.
const secretQuery = "token=hunter2-s3cr3t"

func TestAccessLog(t *testing.T) {
	m := newMesh(t)
	webID := m.web.id().String()
	tests := []struct {
		name string
		// send makes the request; it uses a path unique to the case.
		send func(t *testing.T) response
		// log is the proxy whose access log is checked.
		log      func() *logBuffer
		path     string // the logged path, which identifies the line
		want     map[string]any
		wantCode int
	}{
		{
			name: "outbound_allowed",
			send: func(t *testing.T) response { return get(t, m.outbound, "api.default", "/public/log1?"+secretQuery) },
			log:  func() *logBuffer { return m.web.log },
			path: "/public/log1",
			want: map[string]any{
				"level": "INFO", "direction": "outbound", "source": webID, "destination": "default/api",
				"method": "GET", "status": 200.0, "decision": "allow", "reason": "allowed",
				"policy": "default/api-allow-web#rule0", "upstream": m.apiAddr,
			},
			wantCode: 200,
		},
		{
			name: "inbound_allowed",
			send: func(t *testing.T) response { return get(t, m.outbound, "api.default", "/public/log2?"+secretQuery) },
			log:  func() *logBuffer { return m.api.log },
			path: "/public/log2",
			want: map[string]any{
				"level": "INFO", "direction": "inbound", "source": webID, "destination": "default/api",
				"method": "GET", "status": 200.0, "decision": "allow", "reason": "allowed",
				"policy": "default/api-allow-web#rule0",
			},
			wantCode: 200,
		},
		{
			name: "inbound_denied",
			send: func(t *testing.T) response { return get(t, m.outbound, "api.default", "/private?"+secretQuery) },
			log:  func() *logBuffer { return m.api.log },
			path: "/private",
			want: map[string]any{
				"level": "WARN", "direction": "inbound", "source": webID, "destination": "default/api",
				"method": "GET", "status": 403.0, "decision": "deny", "reason": "no ALLOW rule matched",
			},
			wantCode: 403,
		},
		{
			name: "outbound_denied_by_caller_view",
			send: func(t *testing.T) response {
				return plainRaw(t, m.outbound, "PUT /public/log3?"+secretQuery+" HTTP/1.1\r\nHost: api.default\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			},
			log:  func() *logBuffer { return m.web.log },
			path: "/public/log3",
			want: map[string]any{
				"level": "WARN", "direction": "outbound", "source": webID, "destination": "default/api",
				"method": "PUT", "status": 403.0, "decision": "deny", "reason": "no ALLOW rule matched",
			},
			wantCode: 403,
		},
		{
			name: "outbound_not_callable",
			send: func(t *testing.T) response { return get(t, m.outbound, "secret.default", "/log4?"+secretQuery) },
			log:  func() *logBuffer { return m.web.log },
			path: "/log4",
			want: map[string]any{
				"level": "WARN", "direction": "outbound", "source": webID, "destination": "default/secret",
				"method": "GET", "status": 403.0, "decision": "deny", "reason": "no ALLOW rule matched",
			},
			wantCode: 403,
		},
		{
			name: "outbound_unknown_service",
			send: func(t *testing.T) response { return get(t, m.outbound, "nope.default", "/log5?"+secretQuery) },
			log:  func() *logBuffer { return m.web.log },
			path: "/log5",
			want: map[string]any{
				"level": "INFO", "direction": "outbound", "source": webID, "destination": "default/nope",
				"method": "GET", "status": 503.0, "detail": "unknown service",
			},
			wantCode: 503,
		},
		{
			name: "outbound_no_endpoints",
			send: func(t *testing.T) response { return get(t, m.outbound, "api.shop", "/log6?"+secretQuery) },
			log:  func() *logBuffer { return m.web.log },
			path: "/log6",
			want: map[string]any{
				"level": "INFO", "direction": "outbound", "source": webID, "destination": "shop/api",
				// The authorization decision stays; the cause of the
				// 503 is in detail.
				"method": "GET", "status": 503.0, "decision": "allow", "reason": "allowed",
				"policy": "shop/api-open#rule0", "detail": "no endpoints",
			},
			wantCode: 503,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.send(t)
			if got.status != tt.wantCode {
				t.Fatalf("status: got %d %q, want %d", got.status, got.body, tt.wantCode)
			}
			line := tt.log().waitFor(t, tt.path, func(l map[string]any) bool { return l["path"] == tt.path })
			if _, ok := line["duration_ms"].(float64); !ok {
				t.Errorf("duration_ms: got %v, want a number", line["duration_ms"])
			}
			if line["msg"] != "request" {
				t.Errorf("msg: got %v, want %q", line["msg"], "request")
			}
			// The query is logged with its secrets masked.
			if got, want := line["query"], "token="+telemetry.Redacted; got != want {
				t.Errorf("query: got %v, want %q", got, want)
			}
			for _, k := range []string{"time", "msg", "duration_ms", "path", "err", "query", "user_agent", "bytes_out"} {
				delete(line, k)
			}
			want := map[string]any{}
			for k, v := range tt.want {
				want[k] = v
			}
			if diff := cmp.Diff(want, line); diff != "" {
				t.Errorf("log line (-want +got):\n%s", diff)
			}
		})
	}
	// The bad-path line has no path: it is rejected before normalization.
	if got := get(t, m.outbound, "api.default", "/public/%2F?"+secretQuery); got.status != http.StatusBadRequest {
		t.Fatalf("bad path: got %d, want 400", got.status)
	}
	m.web.log.waitFor(t, "the bad request", func(l map[string]any) bool {
		r, _ := l["detail"].(string)
		return l["status"] == 400.0 && strings.Contains(r, "encoded '/'")
	})
	for name, l := range map[string]*logBuffer{"shop/web": m.web.log, "default/api": m.api.log} {
		if s := l.String(); strings.Contains(s, "s3cr3t") {
			t.Errorf("access log of %s contains the query string:\n%s", name, s)
		}
	}
}
