package proxy_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// TestHostPort pins how the host and port a policy matches are read from
// an authority: lower case, one trailing dot dropped, IPv6 literals without
// brackets, the port 80 when none is named.
func TestHostPort(t *testing.T) {
	tests := []struct {
		name      string
		authority string
		wantHost  string
		wantPort  int
		wantErr   string
	}{
		{name: "plain", authority: "api.default", wantHost: "api.default", wantPort: 80},
		{name: "port", authority: "api.default:8080", wantHost: "api.default", wantPort: 8080},
		{name: "upper_case_trailing_dot_port", authority: "API.Default.:8443", wantHost: "api.default", wantPort: 8443},
		{name: "trailing_dot", authority: "api.default.", wantHost: "api.default", wantPort: 80},
		{name: "only_one_trailing_dot", authority: "api.default..", wantHost: "api.default.", wantPort: 80},
		{name: "empty_port", authority: "api.default:", wantHost: "api.default", wantPort: 80},
		{name: "empty", authority: "", wantHost: "", wantPort: 80},
		{name: "ipv4", authority: "10.0.0.1:9000", wantHost: "10.0.0.1", wantPort: 9000},
		{name: "ipv6_literal", authority: "[::1]", wantHost: "::1", wantPort: 80},
		{name: "ipv6_literal_port", authority: "[2001:DB8::1]:8080", wantHost: "2001:db8::1", wantPort: 8080},
		{name: "max_port", authority: "a:65535", wantHost: "a", wantPort: 65535},
		{name: "ipv6_unclosed", authority: "[::1:80", wantErr: "host: unbalanced brackets"},
		{name: "ipv6_junk_after", authority: "[::1]x", wantErr: "host: unbalanced brackets"},
		{name: "ipv6_without_brackets", authority: "::1", wantErr: "host: an IPv6 literal must be in brackets"},
		{name: "port_zero", authority: "a:0", wantErr: "host: the port must be"},
		{name: "port_too_big", authority: "a:65536", wantErr: "host: the port must be"},
		{name: "port_signed", authority: "a:+80", wantErr: "host: the port must be"},
		{name: "port_leading_zero", authority: "a:0443", wantErr: "host: the port must be"},
		{name: "port_not_decimal", authority: "a:http", wantErr: "host: the port must be"},
		{name: "port_long", authority: "a:000080", wantErr: "host: the port must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port, err := proxy.HostPort(tt.authority, 80)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %d, error %v, want an error starting %q", host, port, err, tt.wantErr)
				}
				return
			}
			if err != nil || host != tt.wantHost || port != tt.wantPort {
				t.Errorf("got %q, %d, %v, want %q, %d, nil", host, port, err, tt.wantHost, tt.wantPort)
			}
		})
	}
}

// TestHostPortDoesNotAllocate: the data path reads every request's
// authority; a lower-case one costs no allocation.
func TestHostPortDoesNotAllocate(t *testing.T) {
	for _, a := range []string{"api.default", "api.default:8080", "[::1]:80", "api.default."} {
		if n := testing.AllocsPerRun(100, func() { _, _, _ = proxy.HostPort(a, 80) }); n != 0 {
			t.Errorf("HostPort(%q): got %v allocations, want 0", a, n)
		}
	}
}

// TestRemoteIP: the caller's address for ipBlocks, an IPv4-mapped IPv6
// address unmapped so that it matches IPv4 blocks.
func TestRemoteIP(t *testing.T) {
	tests := []struct {
		name, addr string
		want       netip.Addr
	}{
		{name: "ipv4", addr: "127.0.0.1:40000", want: netip.MustParseAddr("127.0.0.1")},
		{name: "ipv4_mapped", addr: "[::ffff:10.1.2.3]:40000", want: netip.MustParseAddr("10.1.2.3")},
		{name: "ipv6", addr: "[2001:db8::7]:40000", want: netip.MustParseAddr("2001:db8::7")},
		{name: "ipv6_zone", addr: "[fe80::1%eth0]:40000", want: netip.MustParseAddr("fe80::1%eth0")},
		{name: "no_port", addr: "127.0.0.1", want: netip.Addr{}},
		{name: "garbage", addr: "pipe", want: netip.Addr{}},
		{name: "empty", addr: "", want: netip.Addr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := proxy.RemoteIP(tt.addr)
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if got.Is4In6() {
				t.Errorf("got %v, an IPv4-mapped address, want it unmapped", got)
			}
		})
	}
}

// logLines decodes JSON log lines.
func logLines(t testing.TB, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		delete(m, "time")
		out = append(out, m)
	}
	b.Reset()
	return out
}

// TestDenyLogRateLimitsPerEdge: a caller retrying a forbidden call costs
// one process log line per edge and interval, which counts the denials it
// did not log; other edges are logged on their own.
func TestDenyLogRateLimitsPerEdge(t *testing.T) {
	var buf bytes.Buffer
	fake := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	l := proxy.NewDenyLog(slog.New(slog.NewJSONHandler(&buf, nil)), fake, 10*time.Second, 3)
	web := "spiffe://bulwark.test/ns/shop/sa/web"
	deny := func(path string) proxy.Denial {
		return proxy.Denial{Direction: "inbound", Source: web, Destination: "default/api", Method: "DELETE", Path: path,
			Policy: "default/deny-admin", Rule: 1, Reason: "denied by policy", Status: 403}
	}
	edge := map[string]any{"level": "WARN", "direction": "inbound", "source": web, "destination": "default/api",
		"status": 403.0, "reason": "denied by policy", "policy": "default/deny-admin#rule1"}
	with := func(m map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1]
		}
		return out
	}

	l.Log(deny("/admin/a"))
	if diff := cmp.Diff([]map[string]any{with(edge, "msg", "request denied", "method", "DELETE", "path", "/admin/a")}, logLines(t, &buf)); diff != "" {
		t.Errorf("first denial (-want +got):\n%s", diff)
	}

	// The same edge within the interval, whatever the path: not logged.
	for _, p := range []string{"/admin/b", "/admin/c", "/admin/a"} {
		fake.Advance(2 * time.Second)
		l.Log(deny(p))
	}
	if got := logLines(t, &buf); len(got) != 0 {
		t.Errorf("repeats within the interval: got %v, want no line", got)
	}

	// Another edge (another rule) is its own.
	other := deny("/admin/a")
	other.Rule, other.Status, other.Policy, other.Reason = -1, 401, "", "token required"
	l.Log(other)
	wantOther := map[string]any{"level": "INFO", "msg": "request denied", "direction": "inbound", "source": web,
		"destination": "default/api", "status": 401.0, "reason": "token required", "method": "DELETE", "path": "/admin/a"}
	if diff := cmp.Diff([]map[string]any{wantOther}, logLines(t, &buf)); diff != "" {
		t.Errorf("another edge (-want +got):\n%s", diff)
	}

	// After the interval the edge is logged again, with what was not.
	fake.Advance(4 * time.Second) // 10s after the first line
	l.Log(deny("/admin/d"))
	if diff := cmp.Diff([]map[string]any{with(edge, "msg", "request denied", "method", "DELETE", "path", "/admin/d", "suppressed", 3.0)}, logLines(t, &buf)); diff != "" {
		t.Errorf("after the interval (-want +got):\n%s", diff)
	}

	// An edge that goes quiet is forgotten after an interval, and a line
	// says how many of its denials were not logged.
	l.Log(deny("/admin/e"))
	l.Log(deny("/admin/f"))
	fake.Advance(30 * time.Second)
	third := deny("/x")
	third.Destination = "default/db"
	l.Log(third)
	got := logLines(t, &buf)
	want := []map[string]any{
		with(edge, "msg", "request denials not logged", "count", 2.0),
		with(edge, "msg", "request denied", "destination", "default/db", "method", "DELETE", "path", "/x"),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("quiet edge forgotten (-want +got):\n%s", diff)
	}
}

// TestDenyLogBoundsEdges: at most max edges are tracked; denials of further
// edges are counted, and the count is logged with the next line.
func TestDenyLogBoundsEdges(t *testing.T) {
	var buf bytes.Buffer
	fake := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	l := proxy.NewDenyLog(slog.New(slog.NewJSONHandler(&buf, nil)), fake, 10*time.Second, 2)
	deny := func(src string) proxy.Denial {
		return proxy.Denial{Direction: "outbound", Source: "spiffe://bulwark.test/ns/shop/sa/" + src, Destination: "default/api",
			Method: "GET", Path: "/", Rule: -1, Reason: "no ALLOW rule matched", Status: 403}
	}
	l.Log(deny("a"))
	l.Log(deny("b"))
	for range 5 {
		l.Log(deny("c")) // not tracked: the table is full
	}
	if n := len(logLines(t, &buf)); n != 2 {
		t.Fatalf("got %d lines, want 2 (one per tracked edge)", n)
	}
	fake.Advance(10 * time.Second) // a and b are forgotten at the next line
	l.Log(deny("c"))
	var msgs []string
	var untracked float64
	for _, line := range logLines(t, &buf) {
		msgs = append(msgs, line["msg"].(string))
		if line["msg"] == "request denials not logged: too many edges" {
			untracked = line["count"].(float64)
		}
	}
	if diff := cmp.Diff([]string{"request denied", "request denials not logged: too many edges"}, msgs); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if untracked != 5 {
		t.Errorf("untracked denials: got %v, want 5", untracked)
	}
}
