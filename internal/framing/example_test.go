package framing_test

import (
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/bulwarkmesh/bulwark/internal/framing"
)

// A server behind strict framing: the listener wraps each connection, and
// the server reports connection states to it. A request with two
// Content-Length fields, which net/http alone would accept, is answered 400
// and never reaches the handler.
func Example() {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Println("handler reached")
		}),
		MaxHeaderBytes: 64 << 10,
		ConnState:      framing.ConnState,
	}
	ln := framing.NewListener(raw, framing.Config{
		MaxHeaderBytes: srv.MaxHeaderBytes,
		OnReject:       func(r framing.Reason) { fmt.Println("rejected:", r) },
	})
	go srv.Serve(ln)
	defer srv.Close()

	conn, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: api.default\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
	answer, _ := io.ReadAll(conn)
	fmt.Printf("%.24s\n", answer)
	// Output:
	// rejected: content_length
	// HTTP/1.1 400 Bad Request
}
