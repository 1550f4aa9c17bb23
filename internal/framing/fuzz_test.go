package framing_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/framing"
)

// smugglingSeeds are classic request smuggling payloads (CL.TE, TE.CL,
// TE.TE obfuscations) and valid streams around them.
var smugglingSeeds = []string{
	// Valid: keep-alive, pipelined, chunked with extensions and trailers.
	"GET / HTTP/1.1\r\nHost: api.default\r\n\r\nGET /b HTTP/1.1\r\nHost: api.default\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\"y\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
	"GET http://api.default/x HTTP/1.1\r\nHost: api.default\r\n\r\n",
	"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
	// CL.TE: the front end reads Content-Length, the back end chunked.
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED",
	// TE.CL: the front end reads chunked, the back end Content-Length.
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
	// TE.TE: obfuscated Transfer-Encoding one side ignores.
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nX: x\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nX: x\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	// CL.CL.
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
	// Line endings, controls, versions, upgrades.
	"GET / HTTP/1.1\nHost: a\n\nGET /admin HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
	"GET http://secret.default/ HTTP/1.1\r\nHost: api.default\r\n\r\n",
	// Chunk tricks.
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcGET /admin HTTP/1.1\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;\x00\r\nx\r\n0\r\n\r\n",
}

// FuzzFraming feeds random streams to the parser, in pieces as they would
// arrive. It never panics, frames a stream the same way whatever the
// pieces, and every request it completes is framed at the same offset by
// net/http's http.ReadRequest (which may refuse earlier, never later).
func FuzzFraming(f *testing.F) {
	for i, s := range smugglingSeeds {
		f.Add([]byte(s), uint8(i))
	}
	f.Fuzz(func(t *testing.T, stream []byte, split uint8) {
		ends, accepted, err := framing.Frame(stream, limit)
		if err != nil && !errors.Is(err, framing.ErrRejected) {
			t.Fatalf("error %v does not wrap ErrRejected", err)
		}
		if accepted > len(stream) || err == nil && accepted != len(stream) {
			t.Fatalf("accepted %d of %d bytes with error %v", accepted, len(stream), err)
		}
		pieces := []int{int(split%13) + 1, int(split/13) + 1}
		ends2, accepted2, err2 := framing.Frame(stream, limit, pieces...)
		if !cmp.Equal(ends, ends2) || accepted != accepted2 || !errors.Is(err2, err) && !(err == nil && err2 == nil) {
			t.Fatalf("in pieces %v: ends %v, accepted %d, %v; at once: ends %v, accepted %d, %v", pieces, ends2, accepted2, err2, ends, accepted, err)
		}
		checkAgainstGo(t, stream, ends, accepted)
	})
}
