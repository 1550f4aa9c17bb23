package framing_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/framing"
)

// post1K is a 1 KiB POST as an app sends it through the sidecar.
var post1K = "POST /orders/42 HTTP/1.1\r\nHost: api.default\r\nUser-Agent: Go-http-client/1.1\r\n" +
	"Content-Length: 1024\r\nAccept-Encoding: gzip\r\nContent-Type: application/json\r\n\r\n" +
	strings.Repeat("x", 1024)

// BenchmarkScan is the parser alone on a keep-alive stream of 1 KiB POSTs,
// read 4 KiB at a time as net/http reads: ns/op and B/op per request.
func BenchmarkScan(b *testing.B) {
	const batch = 64
	stream := []byte(strings.Repeat(post1K, batch))
	s := framing.NewScanner(limit)
	b.SetBytes(int64(len(post1K)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		for off := 0; off < len(stream); off += 4096 {
			end := min(off+4096, len(stream))
			if _, err := s.Scan(stream[off:end]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkServe sends 1 KiB POSTs on one keep-alive connection to a real
// net/http server on loopback, over a plain listener and over a framing
// Listener, with a client that writes raw requests and reads the responses:
// compare the two sub-benchmarks' ns/op and B/op (one request each).
func BenchmarkServe(b *testing.B) {
	for _, strict := range []bool{false, true} {
		name := "plain"
		if strict {
			name = "framing"
		}
		b.Run(name, func(b *testing.B) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var ln net.Listener = raw
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Length", "2")
					_, _ = io.WriteString(w, "ok")
				}),
				MaxHeaderBytes: 64 << 10,
			}
			if strict {
				ln = framing.NewListener(raw, framing.Config{MaxHeaderBytes: srv.MaxHeaderBytes})
				srv.ConnState = framing.ConnState
			}
			go func() { _ = srv.Serve(ln) }()
			b.Cleanup(func() { srv.Close() })
			conn, err := net.Dial("tcp", raw.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Minute))
			br := bufio.NewReader(conn)
			req := []byte(post1K)
			status := []byte("HTTP/1.1 200 OK")
			b.SetBytes(int64(len(post1K)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				if err := readOK(br, status); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// readOK reads one response with a 2-byte body without allocating.
func readOK(br *bufio.Reader, status []byte) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if len(line) < len(status) || string(line[:len(status)]) != string(status) {
		return io.ErrUnexpectedEOF
	}
	n := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) == 2 {
			break
		}
		const cl = "Content-Length: "
		if len(line) > len(cl) && string(line[:len(cl)]) == cl {
			n, _ = strconv.Atoi(string(line[len(cl) : len(line)-2]))
		}
	}
	_, err = br.Discard(n)
	return err
}
