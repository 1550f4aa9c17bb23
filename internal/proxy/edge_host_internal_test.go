package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDNSName(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"example.com", true},
		{"a-b.EXAMPLE.com", true},
		{"localhost", true},
		{"1.example.com", true},
		{long + ".com", true},
		{strings.Repeat(long+".", 3) + strings.Repeat("a", 61), true}, // 253 bytes
		{strings.Repeat(long+".", 3) + strings.Repeat("a", 62), false},
		{long + "a.com", false},
		{"", false},
		{".example.com", false},
		{"example.com.", false},
		{"a..example.com", false},
		{"a,b.example.com", false},
		{"x;.example.com", false},
		{"evil'.example.com", false},
		{"a%2f.example.com", false},
		{"a_b.example.com", false},
		{"a b.example.com", false},
		{"*.example.com", false},
		{"exämple.com", false},
	} {
		if got := DNSName(tt.host); got != tt.want {
			t.Errorf("DNSName(%q): got %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestEdgeHost(t *testing.T) {
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"example.com", true},
		{"192.0.2.1", true},
		{"2001:db8::1", true},
		{"::ffff:192.0.2.1", true},
		{"fe80::1%eth0", false},
		{"192.0.2.1,example.com", false},
	} {
		if got := edgeHost(tt.host); got != tt.want {
			t.Errorf("edgeHost(%q): got %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestCoveredBy(t *testing.T) {
	names := []string{"shop.example.com", "*.Example.NET."}
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"shop.example.com", true},
		{"other.example.com", false},
		{"a.example.net", true},
		{"example.net", false},
		{"a.b.example.net", false},
		{".example.net", false},
		{"evilexample.net", false},
	} {
		if got := coveredBy(tt.host, names); got != tt.want {
			t.Errorf("coveredBy(%q, %q): got %v, want %v", tt.host, names, got, tt.want)
		}
	}
}

func TestRateKeyIP(t *testing.T) {
	for _, tt := range []struct {
		ip, want string
	}{
		{"198.51.100.7", "198.51.100.7"},
		{"::ffff:198.51.100.7", "198.51.100.7"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		if got := rateKeyIP(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("rateKeyIP(%s): got %q, want %q", tt.ip, got, tt.want)
		}
	}
	if got := rateKeyIP(netip.Addr{}); got != "" {
		t.Errorf("rateKeyIP of no address: got %q, want \"\"", got)
	}
}

// closeBody records whether it was closed.
type closeBody struct {
	io.Reader
	closed bool
}

func (b *closeBody) Close() error { b.closed = true; return nil }

// TestUpgradeTimeout: an upgrade request is bounded by its timeouts (the
// edge route's and the mesh destination's, nested) until it is answered;
// an answer stops them all, an expired one is dropped for a 504.
func TestUpgradeTimeout(t *testing.T) {
	t.Run("answered", func(t *testing.T) {
		outer, cancel1 := withRequestTimeout(context.Background(), time.Hour, true)
		defer cancel1()
		ctx, cancel2 := withRequestTimeout(outer, time.Hour, true)
		defer cancel2()
		timers, _ := ctx.Value(upgradeTimersKey{}).([]*time.Timer)
		if len(timers) != 2 {
			t.Fatalf("timers: got %d, want 2", len(timers))
		}
		resp := &http.Response{StatusCode: http.StatusSwitchingProtocols, Body: io.NopCloser(strings.NewReader(""))}
		got, err := upgradeAnswered(ctx, resp, nil)
		if err != nil || got != resp {
			t.Fatalf("got %v, %v, want the answer", got, err)
		}
		for i, tm := range timers {
			if tm.Stop() {
				t.Errorf("timer %d still running after the answer", i)
			}
		}
		if ctx.Err() != nil {
			t.Errorf("context: got %v, want none (the tunnel outlives the timeout)", ctx.Err())
		}
	})
	t.Run("expired", func(t *testing.T) {
		outer, cancel1 := withRequestTimeout(context.Background(), time.Hour, true)
		defer cancel1()
		ctx, cancel2 := withRequestTimeout(outer, time.Nanosecond, true)
		defer cancel2()
		<-ctx.Done()
		body := &closeBody{Reader: strings.NewReader("")}
		got, err := upgradeAnswered(ctx, &http.Response{StatusCode: http.StatusSwitchingProtocols, Body: body}, nil)
		if got != nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, %v, want no answer and a deadline error", got, err)
		}
		if !body.closed {
			t.Error("the late answer's body was not closed")
		}
	})
	t.Run("not switched", func(t *testing.T) {
		ctx, cancel := withRequestTimeout(context.Background(), time.Hour, true)
		defer cancel()
		resp := &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(""))}
		if got, err := upgradeAnswered(ctx, resp, nil); got != resp || err != nil {
			t.Fatalf("got %v, %v, want the answer", got, err)
		}
		timers, _ := ctx.Value(upgradeTimersKey{}).([]*time.Timer)
		if len(timers) != 1 || !timers[0].Stop() {
			t.Error("an answer that did not switch protocols stopped the timeout")
		}
	})
	t.Run("expired_error", func(t *testing.T) {
		ctx, cancel := withRequestTimeout(context.Background(), time.Nanosecond, true)
		defer cancel()
		<-ctx.Done()
		if _, err := upgradeAnswered(ctx, nil, context.Canceled); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want a deadline error", err)
		}
	})
	t.Run("client_gone", func(t *testing.T) {
		parent, cancelParent := context.WithCancel(context.Background())
		ctx, cancel := withRequestTimeout(parent, time.Hour, true)
		defer cancel()
		cancelParent()
		if _, err := upgradeAnswered(ctx, nil, context.Canceled); !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want the client's cancellation", err)
		}
	})
	t.Run("not an upgrade", func(t *testing.T) {
		ctx, cancel := withRequestTimeout(context.Background(), time.Hour, false)
		defer cancel()
		if _, ok := ctx.Deadline(); !ok {
			t.Error("a request that is no upgrade has no deadline")
		}
	})
}
