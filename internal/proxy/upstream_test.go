package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// testService is a gRPC app: UnaryCall echoes the payload, or fails with
// the status asked for; FullDuplexCall answers every request as it comes,
// and ends with a trailer.
type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if st := req.GetResponseStatus(); st != nil {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	_ = grpc.SetTrailer(ctx, metadata.Pairs("xfcc-seen", strings.Join(md.Get("x-forwarded-client-cert"), ",")))
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	n := 0
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			stream.SetTrailer(metadata.Pairs("messages", strings.Repeat("x", n)))
			return nil
		}
		if err != nil {
			return err
		}
		n++
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// grpcApp serves testService with HTTP/2 without TLS on loopback.
func grpcApp(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, testService{})
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func payload(s string) *testpb.Payload { return &testpb.Payload{Body: []byte(s)} }

func TestGRPCThroughTwoEngines(t *testing.T) {
	m := newProtoMesh(t, grpcApp(t), proxy.ProtocolGRPC, tunAllowWeb, tunOpenView)
	for _, tt := range []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"per-upstream listener", func(t *testing.T) string { return serveUpstream(t, m.web.engine, apiSvc) }},
		{"outbound listener as a proxy", func(t *testing.T) string { return serveApp(t, m.web.engine.Outbound()) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.addr(t)
			target := "passthrough:///" + addr
			opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if tt.name == "outbound listener as a proxy" {
				// grpc-go reaches a proxy with CONNECT, then speaks
				// HTTP/2 in the tunnel.
				target = "passthrough:///api.default:80"
				opts = append(opts, grpc.WithContextDialer(connectDialer(addr)))
			}
			cc, err := grpc.NewClient(target, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			c := testpb.NewTestServiceClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()

			var trailer metadata.MD
			resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: payload("unary")}, grpc.Trailer(&trailer))
			if err != nil || string(resp.GetPayload().GetBody()) != "unary" {
				t.Fatalf("UnaryCall: got %v, %v; want the payload back", resp, err)
			}
			wantXFCC := "By=" + m.api.id().String() + ";URI=" + m.web.id().String()
			if got := trailer.Get("xfcc-seen"); len(got) != 1 || got[0] != wantXFCC {
				t.Errorf("trailer xfcc-seen: got %q, want %q", got, wantXFCC)
			}

			_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
			if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such thing" {
				t.Errorf("UnaryCall failing: got %v, want NotFound: no such thing", err)
			}

			stream, err := c.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Each answer arrives before the next request is sent: the
			// proxies stream both ways, flushing as they go.
			for _, msg := range []string{"one", "two", "three"} {
				if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: payload(msg)}); err != nil {
					t.Fatal(err)
				}
				got, err := stream.Recv()
				if err != nil || string(got.GetPayload().GetBody()) != msg {
					t.Fatalf("FullDuplexCall: got %v, %v; want %q", got, err, msg)
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("FullDuplexCall end: got %v, want EOF", err)
			}
			if got := stream.Trailer().Get("messages"); len(got) != 1 || got[0] != "xxx" {
				t.Errorf("FullDuplexCall trailer: got %q, want xxx", got)
			}
		})
	}
	// The CONNECT tunnel is counted once it is closed, without a gRPC
	// status.
	m.web.log.waitFor(t, "the CONNECT tunnel", isLine("CONNECT", 200))
	for _, tt := range []struct {
		grpcStatus string
		want       float64
	}{{"OK", 4}, {"NOT_FOUND", 2}, {"", 1}} {
		labels := map[string]string{"direction": "outbound", "code_class": "2xx", "grpc_status": tt.grpcStatus}
		if got := counter(t, m.webReg, "bulwark_requests_total", labels); got != tt.want {
			t.Errorf("bulwark_requests_total%v: got %v, want %v", labels, got, tt.want)
		}
	}
}

// connectDialer dials the outbound listener at proxyAddr and opens a
// CONNECT tunnel to the address asked for, as grpc-go does with a proxy.
func connectDialer(proxyAddr string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", proxyAddr)
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(c, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			c.Close()
			return nil, err
		}
		// Read the answer byte by byte: nothing past it may be consumed.
		var head []byte
		b := make([]byte, 1)
		for !strings.HasSuffix(string(head), "\r\n\r\n") {
			if _, err := c.Read(b); err != nil {
				c.Close()
				return nil, err
			}
			head = append(head, b[0])
		}
		if !strings.HasPrefix(string(head), "HTTP/1.1 200") {
			c.Close()
			return nil, errors.New("connect: " + string(head))
		}
		return c, nil
	}
}

func TestConnListener(t *testing.T) {
	ln := proxy.NewConnListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	a, b := net.Pipe()
	defer b.Close()
	go ln.Push(a)
	got, err := ln.Accept()
	if err != nil || got != a {
		t.Fatalf("Accept: got %v, %v; want the pushed connection", got, err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: got %v, want net.ErrClosed", err)
	}
	c, d := net.Pipe()
	defer d.Close()
	ln.Push(c) // closed: c is closed instead
	if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("a connection pushed after Close: write got %v, want it closed", err)
	}
	if ln.Addr().String() != "127.0.0.1:1" {
		t.Errorf("Addr: got %s", ln.Addr())
	}
}
