package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcTestService is the gRPC app: UnaryCall echoes the payload, returns
// the caller identity header it saw as Username, echoes the x-user
// metadata as a header and sets a trailer, or fails with the requested
// status; FullDuplexCall echoes every message and counts them in a
// trailer.
type grpcTestService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (grpcTestService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if err := grpc.SetHeader(ctx, metadata.Pairs("x-echo-user", first(md.Get("x-user")))); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "done")); err != nil {
		return nil, err
	}
	if st := req.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testgrpc.SimpleResponse{
		Payload:  &testgrpc.Payload{Body: append([]byte("pong:"), req.GetPayload().GetBody()...)},
		Username: first(md.Get("x-forwarded-client-cert")),
	}, nil
}

func (grpcTestService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	n := 0
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			stream.SetTrailer(metadata.Pairs("x-messages", fmt.Sprint(n)))
			return nil
		}
		if err != nil {
			return err
		}
		n++
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// TestGRPCThroughSidecars: a gRPC client talks h2c to web's per-upstream
// port for api, whose app is a gRPC server (--app-protocol grpc): unary
// calls keep their metadata, headers and trailers, bidirectional streaming
// carries 100 messages each way, and a gRPC status arrives as sent.
func TestGRPCThroughSidecars(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, grpcTestService{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	m := startControl(t)
	m.startProxy("default/api", ln.Addr().String(), "--app-protocol", "grpc")
	upstream, metrics := freeAddr(t), freeAddr(t)
	m.startClientProxy("default/web", "--upstream", "api.default="+upstream, "--metrics", metrics)
	m.apply(allowAll("api", "default/web"))

	conn, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := testgrpc.NewTestServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var (
		resp            *testgrpc.SimpleResponse
		header, trailer metadata.MD
	)
	eventually(t, 15*time.Second, "unary call through the sidecars", func() error {
		header, trailer = nil, nil
		callCtx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-user", "alice"), 5*time.Second)
		defer cancel()
		var err error
		resp, err = client.UnaryCall(callCtx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}},
			grpc.Header(&header), grpc.Trailer(&trailer))
		return err
	})
	if got := string(resp.GetPayload().GetBody()); got != "pong:ping" {
		t.Errorf("unary answer: got %q, want %q", got, "pong:ping")
	}
	if got := resp.GetUsername(); got != webXFCC {
		t.Errorf("caller identity seen by the gRPC app: got %q, want %q", got, webXFCC)
	}
	if got := first(header.Get("x-echo-user")); got != "alice" {
		t.Errorf("response header x-echo-user: got %q, want %q (request metadata carried)", got, "alice")
	}
	if got := first(trailer.Get("x-trailer")); got != "done" {
		t.Errorf("trailer x-trailer: got %q, want %q (all trailers: %v)", got, "done", trailer)
	}

	// A gRPC status from the app arrives as sent, message included.
	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Unavailable), Message: "try later"}})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || st.Message() != "try later" {
		t.Errorf("failing call: got %v, want code Unavailable with message %q", err, "try later")
	}

	// Bidirectional streaming: 100 messages sent while answers are read.
	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall: %v", err)
	}
	const n = 100
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "msg-%d", i)}}); err != nil {
				sendErr <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	for i := 0; ; i++ {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if i != n {
				t.Errorf("stream ended after %d answers, want %d", i, n)
			}
			break
		}
		if err != nil {
			t.Fatalf("receive %d: %v", i, err)
		}
		if got, want := string(msg.GetPayload().GetBody()), fmt.Sprintf("msg-%d", i); got != want {
			t.Fatalf("answer %d: got %q, want %q", i, got, want)
		}
	}
	if err := <-sendErr; err != nil {
		t.Errorf("sending: %v", err)
	}
	if got := first(stream.Trailer().Get("x-messages")); got != fmt.Sprint(n) {
		t.Errorf("stream trailer x-messages: got %q, want %q", got, fmt.Sprint(n))
	}

	// The caller's sidecar counts requests by gRPC status.
	eventually(t, 5*time.Second, "gRPC statuses in web's metrics", func() error {
		body := scrape(t, metrics)
		for _, code := range []string{"OK", "UNAVAILABLE"} {
			series := `bulwark_requests_total{code_class="2xx",direction="outbound",grpc_status="` + code + `"}`
			if v, ok := metricValue(body, series); !ok || v < 1 {
				return fmt.Errorf("%s: got %v (found %v), want >= 1", series, v, ok)
			}
		}
		return nil
	})
}

// TestWebSocketThroughSidecars: a WebSocket client reaches an echo app
// through web's outbound, with an Upgrade request addressed to api.default,
// and through a CONNECT tunnel to api.default:80.
func TestWebSocketThroughSidecars(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echo := &http.Server{Handler: websocket.Handler(func(ws *websocket.Conn) { _, _ = io.Copy(ws, ws) })}
	go func() { _ = echo.Serve(ln) }()
	t.Cleanup(func() { echo.Close() })

	m := startControl(t)
	m.startProxy("default/api", ln.Addr().String())
	web := m.startClientProxy("default/web")
	m.apply(allowAll("api", "default/web"))

	cfg, err := websocket.NewConfig("ws://api.default/echo", "http://web.default/")
	if err != nil {
		t.Fatal(err)
	}
	// upgrade sends the handshake to the outbound as an app with
	// HTTP_PROXY does for a plain request: Host names the service.
	upgrade := func() (*websocket.Conn, error) {
		conn, err := net.Dial("tcp", web.outbound)
		if err != nil {
			return nil, err
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		ws, err := websocket.NewClient(cfg, conn)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		return ws, nil
	}
	// tunnel opens a CONNECT tunnel to api.default:80 first, as clients
	// that speak WebSocket through an HTTP proxy do.
	tunnel := func() (*websocket.Conn, error) {
		conn, err := net.Dial("tcp", web.outbound)
		if err != nil {
			return nil, err
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		br, err := connectThrough(conn, "api.default:80")
		if err != nil {
			conn.Close()
			return nil, err
		}
		ws, err := websocket.NewClient(cfg, bufferedConn{Conn: conn, r: br})
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("handshake in the tunnel: %w", err)
		}
		return ws, nil
	}

	for _, tc := range []struct {
		name string
		dial func() (*websocket.Conn, error)
	}{{"upgrade", upgrade}, {"connect", tunnel}} {
		t.Run(tc.name, func(t *testing.T) {
			var ws *websocket.Conn
			eventually(t, 15*time.Second, "websocket handshake", func() error {
				var err error
				ws, err = tc.dial()
				return err
			})
			defer ws.Close()
			for i := range 10 {
				want := fmt.Sprintf("message %d", i)
				if err := websocket.Message.Send(ws, want); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
				var got string
				if err := websocket.Message.Receive(ws, &got); err != nil {
					t.Fatalf("receive %d: %v", i, err)
				}
				if got != want {
					t.Fatalf("echo %d: got %q, want %q", i, got, want)
				}
			}
		})
	}
}

// connectThrough sends CONNECT target on conn, an HTTP proxy connection,
// and reads the answer: an error unless it is 200. The returned reader
// holds what the proxy sent after its answer.
func connectThrough(conn net.Conn, target string) (*bufio.Reader, error) {
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		resp.Body.Close()
		return nil, fmt.Errorf("CONNECT %s: %s %q", target, resp.Status, b)
	}
	return br, nil
}

// bufferedConn reads through r, which may hold bytes already read from
// Conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestTCPThroughSidecars: web reaches a raw TCP echo app (db, with
// --app-protocol tcp) through its per-upstream port and gets 1 MiB back
// intact; a caller that no policy allows gets its connection closed
// without data, and the app never sees it.
func TestTCPThroughSidecars(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()

	m := startControl(t)
	m.startProxy("default/db", ln.Addr().String(), "--app-protocol", "tcp")
	webPort, roguePort := freeAddr(t), freeAddr(t)
	m.startClientProxy("default/web", "--upstream", "db.default="+webPort)
	m.startClientProxy("default/rogue", "--upstream", "db.default="+roguePort)
	m.apply(allowAll("db", "default/web"))

	eventually(t, 15*time.Second, "echo through the sidecars", func() error {
		c, err := net.Dial("tcp", webPort)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			return err
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if string(got) != "ping\n" {
			return fmt.Errorf("echo: got %q", got)
		}
		return nil
	})

	c, err := net.Dial("tcp", webPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	payload := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{'b', 'u', 'l', 'w', 'a', 'r', 'k'})
	_, _ = rng.Read(payload)
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		writeErr <- err
	}()
	got := make([]byte, len(payload))
	began := time.Now()
	if n, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read the echo: %d of %d bytes: %v", n, len(payload), err)
	}
	t.Logf("1 MiB echoed in %s", time.Since(began).Round(time.Millisecond))
	if err := <-writeErr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		i := 0
		for i < len(got) && got[i] == payload[i] {
			i++
		}
		t.Fatalf("echo differs from what was sent at byte %d", i)
	}

	// The caller no policy allows: the connection is closed, no byte
	// comes back, and the app never sees a connection.
	before := accepted.Load()
	rc, err := net.Dial("tcp", roguePort)
	if err != nil {
		t.Fatalf("rogue's upstream port: %v", err)
	}
	defer rc.Close()
	_ = rc.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(rc, "ping\n")
	buf := make([]byte, 64)
	n, err := rc.Read(buf)
	switch {
	case n > 0:
		t.Errorf("caller without a policy read %q, want its connection closed without data", buf[:n])
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Errorf("caller without a policy: connection still open after 10s, want it closed")
	case !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET):
		t.Errorf("caller without a policy: got %v, want the connection closed (EOF or reset)", err)
	}
	if got := accepted.Load(); got != before {
		t.Errorf("the app accepted %d connections while a caller without a policy tried, want 0", got-before)
	}
	// The denied tunnel is reported like any denial (proxies report every
	// 10 s).
	eventually(t, 25*time.Second, "the denied tunnel in get denials", func() error {
		out, _, code := cli(t, m.env, "", "get", "denials", "-o", "json")
		if code != 0 || !strings.Contains(out, `"method":"CONNECT"`) || !strings.Contains(out, "/sa/rogue") {
			return fmt.Errorf("get denials: %s", out)
		}
		return nil
	})
}
