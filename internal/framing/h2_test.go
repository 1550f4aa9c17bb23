package framing_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/bulwarkmesh/bulwark/internal/framing"
)

// splitListener's connections return their first n bytes in reads of at
// most size bytes, so a test decides how the reads split the preface.
type splitListener struct {
	net.Listener
	n, size int
}

func (l *splitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &splitReads{Conn: c, n: l.n, size: l.size}, nil
}

type splitReads struct {
	net.Conn
	n, size int
}

func (c *splitReads) Read(b []byte) (int, error) {
	if c.n > 0 && len(b) > c.size {
		b = b[:c.size]
	}
	n, err := c.Conn.Read(b)
	c.n -= n
	return n, err
}

// h2cServer serves HTTP/1.1 and HTTP/2 with prior knowledge behind a
// framing listener with AllowH2Preface, and records the rejections.
func h2cServer(t *testing.T, raw net.Listener) *server {
	t.Helper()
	s := &server{addr: raw.Addr().String()}
	s.ln = framing.NewListener(raw, framing.Config{
		AllowH2Preface: true,
		OnReject: func(r framing.Reason) {
			s.mu.Lock()
			s.reasons = append(s.reasons, r)
			s.mu.Unlock()
		},
	})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			s.mu.Lock()
			s.seen = append(s.seen, r.Proto+" "+r.Method+" "+r.RequestURI+" "+string(body))
			s.mu.Unlock()
			_, _ = io.WriteString(w, r.Proto)
		}),
		Protocols: &protos,
		ConnState: framing.ConnState,
		ErrorLog:  slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	go func() { _ = srv.Serve(s.ln) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

func TestConnH2PrefaceSplitAcrossReads(t *testing.T) {
	for _, size := range []int{1, 5, 14, 23} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := h2cServer(t, &splitListener{Listener: raw, n: len(http2.ClientPreface), size: size})
			tr := &http2.Transport{
				AllowHTTP: true,
				DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				},
			}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr, Timeout: hangGuard}
			resp, err := c.Post("http://"+s.addr+"/x?q=1", "text/plain", strings.NewReader("hello"))
			if err != nil {
				t.Fatalf("h2c request with the preface read in pieces of %d: %v", size, err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil || string(got) != "HTTP/2.0" {
				t.Errorf("answer: got %q, %v; want HTTP/2.0", got, err)
			}
			if got, want := s.requests(), []string{"HTTP/2.0 POST /x?q=1 hello"}; len(got) != 1 || got[0] != want[0] {
				t.Errorf("app saw %q, want %q", got, want)
			}
			if r := s.rejections(); len(r) != 0 {
				t.Errorf("rejections: got %v, want none", r)
			}
		})
	}
}

func TestConnH2PrefaceOverTCP(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := h2cServer(t, raw)
	tr := &http.Transport{}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr.Protocols = &protos
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: hangGuard}
	resp, err := c.Get("http://" + s.addr + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("proto: got %s, want HTTP/2.0", resp.Proto)
	}
	// HTTP/1.1 on the same listener is still guarded.
	if got := s.exchange(t, "GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"); got != badRequest {
		t.Errorf("duplicate Content-Length: got %q, want the 400", got)
	}
}

func TestConnH2PrefaceBrokenIsRefused(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"partial preface then garbage", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"},
		{"request line only", "PRI * HTTP/2.0\r\nHost: a\r\n\r\n"},
		{"preface cut short", "PRI * HTTP/2.0\r\n\r\nS"},
		{"h2c upgrade", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := h2cServer(t, raw)
			conn, err := net.DialTimeout("tcp", s.addr, hangGuard)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(hangGuard))
			if _, err := io.WriteString(conn, tt.raw); err != nil {
				t.Fatal(err)
			}
			if tt.name == "preface cut short" {
				_ = conn.(*net.TCPConn).CloseWrite()
			}
			got, err := io.ReadAll(conn)
			if err != nil && !errors.Is(err, net.ErrClosed) {
				t.Logf("read: %v", err)
			}
			if string(got) != badRequest {
				t.Errorf("got %q, want the 400", got)
			}
			if r := s.requests(); len(r) != 0 {
				t.Errorf("the app saw %q, want nothing", r)
			}
		})
	}
}
