package framing_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bulwarkmesh/bulwark/internal/framing"
)

// limit is the head bound of the parser in these tests: the sidecar's 64 KiB
// plus net/http's slack.
const limit = 64<<10 + 4096

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

// goFrame reads stream as net/http's server does (http.ReadRequest, then the
// whole body; one or more CR or LF skipped after a POST) and returns the
// offset just past each request it reads without error, up to its first
// error.
func goFrame(stream []byte) []int {
	cr := &countingReader{r: bytes.NewReader(stream)}
	br := bufio.NewReader(cr) // net/http's size: 4096
	var ends []int
	last := ""
	for {
		if last == http.MethodPost {
			// server.go: "RFC 7230 section 3 tolerance for old buggy
			// clients".
			peek, _ := br.Peek(4)
			skip := 0
			for skip < len(peek) && (peek[skip] == '\r' || peek[skip] == '\n') {
				skip++
			}
			_, _ = br.Discard(skip)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return ends
		}
		_, err = io.Copy(io.Discard, req.Body)
		req.Body.Close()
		if err != nil {
			return ends
		}
		ends = append(ends, cr.n-br.Buffered())
		last = req.Method
	}
}

// checkAgainstGo fails unless net/http, given the bytes the parser accepted,
// completes the same requests at the same offsets, or stops earlier on an
// error: never a request the parser did not complete, never another
// boundary.
func checkAgainstGo(t *testing.T, stream []byte, ends []int, accepted int) {
	t.Helper()
	got := goFrame(stream[:accepted])
	if len(got) > len(ends) {
		t.Fatalf("net/http completed %d requests (ends %v) where the parser completed %d (ends %v) in %q", len(got), got, len(ends), ends, stream[:accepted])
	}
	if diff := cmp.Diff(ends[:len(got)], got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("request boundaries differ from net/http's (-parser +net/http):\n%s\nstream: %q", diff, stream[:accepted])
	}
}

func TestFrameAccepts(t *testing.T) {
	get := "GET /a HTTP/1.1\r\nHost: api.default\r\n\r\n"
	post := "POST /p HTTP/1.1\r\nHost: api.default\r\nContent-Length: 5\r\n\r\nhello"
	chunked := "POST /c HTTP/1.1\r\nHost: api.default\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	tests := []struct {
		name string
		reqs []string // the requests, one after the other
		tail string   // an unfinished request after them
	}{
		{name: "get", reqs: []string{get}},
		{name: "pipelined", reqs: []string{get, post, chunked, get}},
		{name: "content_length_body", reqs: []string{post}},
		{name: "content_length_zero", reqs: []string{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"}},
		{name: "content_length_leading_zeros_and_ows", reqs: []string{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t 003 \r\n\r\nabc"}},
		{name: "chunked", reqs: []string{chunked}},
		{name: "chunked_mixed_case_and_ows", reqs: []string{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \tChunked \r\n\r\n0\r\n\r\n"}},
		{name: "chunk_extensions_and_trailers", reqs: []string{
			"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;a=1;b ; c = \"x;\\\"y\"\r\nabc\r\nA\r\n0123456789\r\n000;last\r\nX-Trailer: t\r\nX-More:\r\n\r\n",
		}},
		{name: "chunk_size_16_digits", reqs: []string{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000001\r\nx\r\n0\r\n\r\n"}},
		{name: "http10_with_body", reqs: []string{"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"}},
		{name: "crlf_after_post", reqs: []string{post, "\r\n" + get}},
		{name: "absolute_form_same_host", reqs: []string{"GET http://API.default/x HTTP/1.1\r\nHost: api.default:80\r\n\r\n"}},
		{name: "absolute_form_no_path", reqs: []string{"GET http://api.default HTTP/1.1\r\nHost: api.default\r\n\r\n"}},
		{name: "asterisk", reqs: []string{"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"}},
		{name: "upgrade_websocket", reqs: []string{"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, h2\r\nConnection: upgrade\r\n\r\n"}},
		{name: "field_value_obs_text_and_tab", reqs: []string{"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\tx\r\nX-Empty:\r\n\r\n"}},
		{name: "lookalike_fields", reqs: []string{"GET / HTTP/1.1\r\nHost: a\r\nContent-Lengths: x\r\nTransfer-Encodin: x\r\nHosts: b\r\nX-Host: c\r\nUpgrade: h2cx\r\n\r\n"}},
		{name: "unfinished_head", reqs: []string{get}, tail: "GET / HTTP/1.1\r\nHost: a\r\n"},
		{name: "unfinished_body", tail: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"},
		{name: "unfinished_trailer", tail: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []int
			stream := ""
			for _, r := range tt.reqs {
				stream += r
				want = append(want, len(stream))
			}
			stream += tt.tail
			for _, pieces := range [][]int{nil, {1}, {3, 7}} {
				ends, accepted, err := framing.Frame([]byte(stream), limit, pieces...)
				if err != nil || accepted != len(stream) {
					t.Fatalf("pieces %v: got %v at %d, want all %d bytes accepted", pieces, err, accepted, len(stream))
				}
				if diff := cmp.Diff(want, ends); diff != "" {
					t.Fatalf("pieces %v: request ends (-want +got):\n%s", pieces, diff)
				}
			}
			// net/http frames every complete request the same way.
			if got := goFrame([]byte(stream)); !cmp.Equal(got, want) {
				t.Errorf("net/http ends: got %v, want %v", got, want)
			}
		})
	}
}

func TestFrameRejects(t *testing.T) {
	const h = "POST /x HTTP/1.1\r\nHost: api.default\r\n"
	tests := []struct {
		name   string
		stream string
		reason framing.Reason
		at     string // the stream up to the offending byte
		msg    string // a part of the error naming the field
	}{
		{name: "duplicate_content_length_equal", stream: h + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", reason: framing.ReasonContentLength, at: h + "Content-Length: 5\r\nContent-Length", msg: "Content-Length: several"},
		{name: "duplicate_content_length_differ", stream: h + "Content-Length: 0\r\ncontent-length: 44\r\n\r\n", reason: framing.ReasonContentLength, at: h + "Content-Length: 0\r\ncontent-length", msg: "Content-Length"},
		{name: "content_length_list", stream: h + "Content-Length: 5, 5\r\n\r\nhello", reason: framing.ReasonContentLength, at: h + "Content-Length: 5", msg: "Content-Length"},
		{name: "content_length_sign", stream: h + "Content-Length: +5\r\n\r\nhello", reason: framing.ReasonContentLength, at: h + "Content-Length: ", msg: "Content-Length"},
		{name: "content_length_hex", stream: h + "Content-Length: 0x5\r\n\r\n", reason: framing.ReasonContentLength, at: h + "Content-Length: 0", msg: "Content-Length"},
		{name: "content_length_empty", stream: h + "Content-Length: \r\n\r\n", reason: framing.ReasonContentLength, at: h + "Content-Length: \r", msg: "Content-Length"},
		{name: "content_length_inner_space", stream: h + "Content-Length: 1 2\r\n\r\n", reason: framing.ReasonContentLength, at: h + "Content-Length: 1 ", msg: "Content-Length"},
		{name: "content_length_overflow", stream: h + "Content-Length: 9223372036854775808\r\n\r\n", reason: framing.ReasonContentLength, at: h + "Content-Length: 922337203685477580", msg: "Content-Length"},
		{name: "cl_te", stream: h + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", reason: framing.ReasonTransferEncoding, at: h + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r", msg: "Transfer-Encoding together with Content-Length"},
		{name: "te_cl", stream: h + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r", msg: "Transfer-Encoding together"},
		{name: "te_xchunked", stream: h + "Transfer-Encoding: xchunked\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding: ", msg: `Transfer-Encoding: value is not "chunked"`},
		{name: "te_chunked_identity", stream: h + "Transfer-Encoding: chunked, identity\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding: chunked", msg: "Transfer-Encoding"},
		{name: "te_identity_chunked", stream: h + "Transfer-Encoding: identity, chunked\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding: ", msg: "Transfer-Encoding"},
		{name: "te_gzip_chunked", stream: h + "Transfer-Encoding: gzip, chunked\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding: ", msg: "Transfer-Encoding"},
		{name: "te_chunk", stream: h + "Transfer-Encoding: chunk\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding: chunk\r", msg: "Transfer-Encoding"},
		{name: "te_empty", stream: h + "Transfer-Encoding:\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding:\r", msg: "Transfer-Encoding"},
		{name: "te_duplicate", stream: h + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding: chunked\r\nTransfer-Encoding", msg: "Transfer-Encoding: several"},
		{name: "te_http10", stream: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", reason: framing.ReasonTransferEncoding, at: "POST / HTTP/1.0\r\nTransfer-Encoding", msg: "HTTP/1.0"},
		{name: "te_space_before_colon", stream: h + "Transfer-Encoding : chunked\r\n\r\n", reason: framing.ReasonFieldSyntax, at: h + "Transfer-Encoding", msg: "whitespace between a field name and its colon"},
		{name: "te_tab_before_colon", stream: h + "Transfer-Encoding\t: chunked\r\n\r\n", reason: framing.ReasonFieldSyntax, at: h + "Transfer-Encoding", msg: "colon"},
		{name: "te_obs_fold", stream: h + "X-A: a\r\n Transfer-Encoding: chunked\r\n\r\n", reason: framing.ReasonFieldSyntax, at: h + "X-A: a\r\n", msg: "obs-fold"},
		{name: "obs_fold_value", stream: h + "Transfer-Encoding:\r\n chunked\r\n\r\n", reason: framing.ReasonTransferEncoding, at: h + "Transfer-Encoding:\r", msg: "Transfer-Encoding"},
		{name: "obs_fold_tab", stream: h + "X-A: a\r\n\tb\r\n\r\n", reason: framing.ReasonFieldSyntax, at: h + "X-A: a\r\n", msg: "obs-fold"},
		{name: "first_line_whitespace", stream: "GET / HTTP/1.1\r\n Host: a\r\n\r\n", reason: framing.ReasonFieldSyntax, at: "GET / HTTP/1.1\r\n", msg: "obs-fold"},
		{name: "bare_lf_head", stream: "GET / HTTP/1.1\nHost: a\n\n", reason: framing.ReasonFieldSyntax, at: "GET / HTTP/1.1", msg: "LF not preceded by CR"},
		{name: "bare_lf_field", stream: "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", reason: framing.ReasonFieldSyntax, at: "GET / HTTP/1.1\r\nHost: a", msg: "LF not preceded by CR"},
		{name: "bare_lf_end", stream: "GET / HTTP/1.1\r\nHost: a\r\n\nGET /admin HTTP/1.1\r\n\r\n", reason: framing.ReasonFieldSyntax, at: "GET / HTTP/1.1\r\nHost: a\r\n", msg: "LF not preceded by CR"},
		{name: "bare_cr_value", stream: "GET / HTTP/1.1\r\nHost: a\r\nX: b\rc\r\n\r\n", reason: framing.ReasonFieldSyntax, at: "GET / HTTP/1.1\r\nHost: a\r\nX: b\r", msg: "CR not followed by LF"},
		{name: "nul_in_value", stream: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", reason: framing.ReasonFieldValue, at: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b", msg: "control character"},
		{name: "ctl_in_value", stream: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x1bc\r\n\r\n", reason: framing.ReasonFieldValue, at: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b", msg: "control character"},
		{name: "del_in_content_length", stream: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\x7f\r\n\r\n", reason: framing.ReasonFieldValue, at: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1", msg: "control character"},
		{name: "nul_in_name", stream: "GET / HTTP/1.1\r\nHost: a\r\nX\x00A: b\r\n\r\n", reason: framing.ReasonFieldSyntax, at: "GET / HTTP/1.1\r\nHost: a\r\nX", msg: "field name"},
		{name: "empty_name", stream: "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", reason: framing.ReasonFieldSyntax, at: "GET / HTTP/1.1\r\nHost: a\r\n", msg: "field name"},
		{name: "name_without_colon", stream: "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", reason: framing.ReasonFieldSyntax, at: "GET / HTTP/1.1\r\nHost: a\r\nX-A", msg: "field name"},
		{name: "h2c_upgrade", stream: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", reason: framing.ReasonUpgrade, at: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r", msg: "h2c"},
		{name: "h2c_in_list", stream: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, H2C \r\n\r\n", reason: framing.ReasonUpgrade, at: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, H2C \r", msg: "h2c"},
		{name: "h2c_versioned", stream: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c/1, x\r\n\r\n", reason: framing.ReasonUpgrade, at: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c", msg: "h2c"},
		{name: "h2_preface", stream: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", reason: framing.ReasonVersion, at: "PRI * HTTP/", msg: "version"},
		{name: "http09", stream: "GET /\r\n", reason: framing.ReasonRequestLine, at: "GET /", msg: "request-target"},
		{name: "http12", stream: "GET / HTTP/1.2\r\nHost: a\r\n\r\n", reason: framing.ReasonVersion, at: "GET / HTTP/1.", msg: "version"},
		{name: "lowercase_version", stream: "GET / http/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonVersion, at: "GET / ", msg: "version"},
		{name: "version_trailing_space", stream: "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", reason: framing.ReasonVersion, at: "GET / HTTP/1.1", msg: "version"},
		{name: "tls_client_hello", stream: "\x16\x03\x01\x02\x00\x01", reason: framing.ReasonRequestLine, at: "", msg: "method"},
		{name: "space_in_target", stream: "GET /public/x /private HTTP/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonVersion, at: "GET /public/x ", msg: "version"},
		{name: "double_space", stream: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonRequestLine, at: "GET ", msg: "request-target"},
		{name: "tab_in_target", stream: "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonRequestLine, at: "GET /a", msg: "request-target"},
		{name: "nul_in_target", stream: "GET /a\x00 HTTP/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonRequestLine, at: "GET /a", msg: "request-target"},
		{name: "method_not_token", stream: "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonRequestLine, at: "G", msg: "method"},
		{name: "leading_crlf", stream: "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonRequestLine, at: "", msg: "empty line"},
		{name: "two_crlf_after_post", stream: h + "Content-Length: 0\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonRequestLine, at: h + "Content-Length: 0\r\n\r\n\r\n", msg: "empty line"},
		{name: "crlf_after_get", stream: "GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", reason: framing.ReasonRequestLine, at: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", msg: "empty line"},
		{name: "duplicate_host", stream: "GET / HTTP/1.1\r\nHost: api.default\r\nHost: secret.default\r\n\r\n", reason: framing.ReasonHost, at: "GET / HTTP/1.1\r\nHost: api.default\r\nHost", msg: "Host: several"},
		{name: "absolute_form_other_host", stream: "GET http://secret.default/x HTTP/1.1\r\nHost: api.default\r\n\r\n", reason: framing.ReasonHost, at: "GET http://secret.default/x HTTP/1.1\r\nHost: api.default\r\n\r", msg: "Host differs"},
		{name: "absolute_form_other_port", stream: "GET http://api.default:8080/x HTTP/1.1\r\nHost: api.default\r\n\r\n", reason: framing.ReasonHost, at: "GET http://api.default:8080/x HTTP/1.1\r\nHost: api.default\r\n\r", msg: "Host differs"},
		{name: "absolute_form_userinfo", stream: "GET http://api.default@secret.default/ HTTP/1.1\r\nHost: secret.default\r\n\r\n", reason: framing.ReasonHost, at: "GET http://api.default@secret.default/ HTTP/1.1\r\nHost: secret.default\r\n\r", msg: "Host differs"},
		{name: "absolute_form_long", stream: "GET http://" + strings.Repeat("a", 400) + " HTTP/1.1\r\nHost: " + strings.Repeat("a", 400) + "\r\n\r\n", reason: framing.ReasonHost, at: "GET http://" + strings.Repeat("a", 400) + " HTTP/1.1\r\nHost: " + strings.Repeat("a", 400) + "\r\n\r", msg: "Host differs"},
		{name: "chunk_size_not_hex", stream: h + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n", msg: "chunk size"},
		{name: "chunk_size_prefix", stream: h + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n0", msg: "chunk size"},
		{name: "chunk_size_negative", stream: h + "Transfer-Encoding: chunked\r\n\r\n-1\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n", msg: "chunk size"},
		{name: "chunk_size_17_digits", stream: h + "Transfer-Encoding: chunked\r\n\r\n00000000000000001\r\nx\r\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n0000000000000000", msg: "63 bits"},
		{name: "chunk_size_64_bits", stream: h + "Transfer-Encoding: chunked\r\n\r\n8000000000000000\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n800000000000000", msg: "63 bits"},
		{name: "chunk_size_trailing_space", stream: h + "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n5", msg: "chunk size"},
		{name: "chunk_size_space_before_ext", stream: h + "Transfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n5", msg: "chunk size"},
		{name: "chunk_bare_lf", stream: h + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n5", msg: "chunk size"},
		{name: "chunk_ext_bad", stream: h + "Transfer-Encoding: chunked\r\n\r\n5;a=\"x\r\nhello\r\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n5;a=\"x", msg: "chunk extension"},
		{name: "chunk_ext_nul", stream: h + "Transfer-Encoding: chunked\r\n\r\n5;a\x00\r\nhello\r\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n5;a", msg: "chunk extension"},
		{name: "chunk_missing_crlf", stream: h + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc", msg: "CRLF"},
		{name: "chunk_data_bare_lf", stream: h + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", reason: framing.ReasonChunk, at: h + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc", msg: "CRLF"},
		{name: "trailer_obs_fold", stream: h + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n", reason: framing.ReasonFieldSyntax, at: h + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n", msg: "trailer"},
		{name: "trailer_bare_lf", stream: h + "Transfer-Encoding: chunked\r\n\r\n0\r\n\n", reason: framing.ReasonFieldSyntax, at: h + "Transfer-Encoding: chunked\r\n\r\n0\r\n", msg: "trailer"},
		{name: "chunk_line_too_long", stream: h + "Transfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("a", 2000) + "\r\n", reason: framing.ReasonTooLarge, at: h + "Transfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("a", 1022), msg: "chunk line"},
		{name: "head_too_large", stream: "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", limit) + "\r\n\r\n", reason: framing.ReasonTooLarge, at: ("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", limit))[:limit], msg: "head"},
		{name: "target_too_large", stream: "GET /" + strings.Repeat("a", limit) + " HTTP/1.1\r\n\r\n", reason: framing.ReasonTooLarge, at: ("GET /" + strings.Repeat("a", limit))[:limit], msg: "head"},
		{name: "second_request_smuggled", stream: "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", reason: framing.ReasonContentLength, at: "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length", msg: "Content-Length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := []byte(tt.stream)
			for _, pieces := range [][]int{nil, {1}, {5, 2}} {
				ends, accepted, err := framing.Frame(stream, limit, pieces...)
				var fe *framing.Error
				if !errors.As(err, &fe) || !errors.Is(err, framing.ErrRejected) {
					t.Fatalf("pieces %v: got %v, want an *Error wrapping ErrRejected", pieces, err)
				}
				if fe.Reason != tt.reason {
					t.Errorf("pieces %v: reason: got %s (%v), want %s", pieces, fe.Reason, err, tt.reason)
				}
				if !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("pieces %v: error %q does not say %q", pieces, err, tt.msg)
				}
				if accepted != len(tt.at) {
					t.Errorf("pieces %v: accepted %d bytes (%q), want %d (%q)", pieces, accepted, stream[:accepted], len(tt.at), tt.at)
				}
				checkAgainstGo(t, stream, ends, accepted)
			}
		})
	}
}

// TestFrameGoParsesWhatIsRefused pins why the parser must run before
// net/http: for these streams net/http completes a request (often two)
// where the parser refuses the first.
func TestFrameGoParsesWhatIsRefused(t *testing.T) {
	for name, stream := range map[string]string{
		"duplicate_equal_content_length": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"cl_te":                          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
		"te_http10":                      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
		"obs_fold":                       "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
		"bare_lf":                        "GET / HTTP/1.1\nHost: a\n\nGET /admin HTTP/1.1\nHost: a\n\n",
		"h2c":                            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
		"chunk_ext_nul":                  "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;\x00\r\nx\r\n0\r\n\r\n",
		"absolute_form_other_host":       "GET http://secret.default/ HTTP/1.1\r\nHost: api.default\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			if got := goFrame([]byte(stream)); len(got) == 0 {
				t.Errorf("net/http refuses %q by itself; this case no longer shows why the parser exists", stream)
			}
			if _, _, err := framing.Frame([]byte(stream), limit); err == nil {
				t.Errorf("parser accepted %q", stream)
			}
		})
	}
}

func TestReasonString(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range framing.Reasons() {
		s := r.String()
		if s == "unknown" || seen[s] {
			t.Errorf("reason %d: label %q is unknown or repeated", r, s)
		}
		seen[s] = true
	}
	if got := framing.Reason(0).String(); got != "unknown" {
		t.Errorf("Reason(0): got %q, want unknown", got)
	}
	if got := framing.Reason(200).String(); got != "unknown" {
		t.Errorf("Reason(200): got %q, want unknown", got)
	}
}
