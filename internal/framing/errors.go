package framing

import "errors"

// ErrRejected is wrapped by every error of this package: the connection
// carried a request whose framing is ambiguous or malformed, and it was
// answered with 400 Bad Request and closed. Test for it with errors.Is.
var ErrRejected = errors.New("framing: request rejected")

// Reason classifies a rejection, for metrics: its String is a bounded label
// value.
type Reason uint8

// The reasons a connection is rejected.
const (
	// ReasonRequestLine: the request line is malformed (a method that is
	// not a token, a request-target with a space or a control character,
	// empty lines before it).
	ReasonRequestLine Reason = iota + 1
	// ReasonVersion: the version is not HTTP/1.1 or HTTP/1.0 (this
	// includes the HTTP/2 connection preface "PRI * HTTP/2.0").
	ReasonVersion
	// ReasonFieldSyntax: a field line is malformed: obs-fold, whitespace
	// between the field name and the colon, a name that is not a token, a
	// bare CR or LF.
	ReasonFieldSyntax
	// ReasonFieldValue: a field value contains NUL or another control
	// character.
	ReasonFieldValue
	// ReasonContentLength: several Content-Length fields (even equal ones),
	// or a value that is not a decimal number below 2^63.
	ReasonContentLength
	// ReasonTransferEncoding: Transfer-Encoding other than a single
	// "chunked", together with Content-Length, or in an HTTP/1.0 request.
	ReasonTransferEncoding
	// ReasonChunk: a malformed chunked body: a chunk size that is not hex
	// or exceeds 63 bits, a malformed chunk extension, no CRLF after the
	// chunk data.
	ReasonChunk
	// ReasonUpgrade: an Upgrade to h2c.
	ReasonUpgrade
	// ReasonHost: several Host fields, or an absolute-form request-target
	// whose authority differs from Host.
	ReasonHost
	// ReasonTooLarge: a request head, chunk line or trailer section over
	// its bound.
	ReasonTooLarge

	numReasons = int(ReasonTooLarge) + 1
)

var reasonNames = [numReasons]string{
	ReasonRequestLine:      "request_line",
	ReasonVersion:          "version",
	ReasonFieldSyntax:      "field_syntax",
	ReasonFieldValue:       "field_value",
	ReasonContentLength:    "content_length",
	ReasonTransferEncoding: "transfer_encoding",
	ReasonChunk:            "chunk",
	ReasonUpgrade:          "upgrade",
	ReasonHost:             "host",
	ReasonTooLarge:         "too_large",
}

// String returns the reason's label: lower case with underscores, one of a
// fixed set.
func (r Reason) String() string {
	if int(r) < numReasons && r != 0 {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons returns every Reason, for exporting counts.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ReasonRequestLine; int(r) < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// Error says why a connection was rejected. It wraps ErrRejected.
type Error struct {
	// Reason is the class of the violation.
	Reason Reason
	// body reports whether the violation is in a request body (a chunked
	// one), whose head net/http has already read.
	body bool
	msg  string
}

// Error returns the violation, naming the field or part of the request.
func (e *Error) Error() string { return "framing: " + e.msg }

// Is reports whether target is ErrRejected.
func (e *Error) Is(target error) bool { return target == ErrRejected }

// The violations. Each is a constant error, so rejecting allocates nothing
// but the read error that carries it.
var (
	errLeadingLine     = &Error{Reason: ReasonRequestLine, msg: "request line: empty line before the request line"}
	errMethod          = &Error{Reason: ReasonRequestLine, msg: "request line: method is not a token"}
	errTarget          = &Error{Reason: ReasonRequestLine, msg: "request line: request-target contains a space or a control character"}
	errVersion         = &Error{Reason: ReasonVersion, msg: "request line: version is not HTTP/1.1 or HTTP/1.0"}
	errBareCR          = &Error{Reason: ReasonFieldSyntax, msg: "CR not followed by LF"}
	errBareLF          = &Error{Reason: ReasonFieldSyntax, msg: "LF not preceded by CR"}
	errObsFold         = &Error{Reason: ReasonFieldSyntax, msg: "field line starts with whitespace (obs-fold)"}
	errSpaceColon      = &Error{Reason: ReasonFieldSyntax, msg: "whitespace between a field name and its colon"}
	errFieldName       = &Error{Reason: ReasonFieldSyntax, msg: "field name is not a token"}
	errFieldValue      = &Error{Reason: ReasonFieldValue, msg: "field value contains a control character"}
	errCLDuplicate     = &Error{Reason: ReasonContentLength, msg: "Content-Length: several fields"}
	errCLValue         = &Error{Reason: ReasonContentLength, msg: "Content-Length: value is not one decimal number below 2^63"}
	errTEDuplicate     = &Error{Reason: ReasonTransferEncoding, msg: "Transfer-Encoding: several fields"}
	errTEValue         = &Error{Reason: ReasonTransferEncoding, msg: `Transfer-Encoding: value is not "chunked"`}
	errTEWithCL        = &Error{Reason: ReasonTransferEncoding, msg: "Transfer-Encoding together with Content-Length"}
	errTEHTTP10        = &Error{Reason: ReasonTransferEncoding, msg: "Transfer-Encoding in an HTTP/1.0 request"}
	errH2C             = &Error{Reason: ReasonUpgrade, msg: "Upgrade: h2c is refused"}
	errHostDuplicate   = &Error{Reason: ReasonHost, msg: "Host: several fields"}
	errHostMismatch    = &Error{Reason: ReasonHost, msg: "Host differs from the authority of the absolute-form request-target"}
	errHeadTooLarge    = &Error{Reason: ReasonTooLarge, msg: "request head too large"}
	errChunkSize       = &Error{Reason: ReasonChunk, body: true, msg: "chunk size is not a hex number"}
	errChunkOverflow   = &Error{Reason: ReasonChunk, body: true, msg: "chunk size exceeds 63 bits"}
	errChunkExt        = &Error{Reason: ReasonChunk, body: true, msg: "malformed chunk extension"}
	errChunkCRLF       = &Error{Reason: ReasonChunk, body: true, msg: "chunk data not followed by CRLF"}
	errChunkBareCR     = &Error{Reason: ReasonChunk, body: true, msg: "chunk line: CR not followed by LF"}
	errChunkLine       = &Error{Reason: ReasonTooLarge, body: true, msg: "chunk line too long"}
	errTrailerTooLarge = &Error{Reason: ReasonTooLarge, body: true, msg: "trailer section too large"}
	errTrailerCR       = &Error{Reason: ReasonFieldSyntax, body: true, msg: "trailer: CR not followed by LF"}
	errTrailerLF       = &Error{Reason: ReasonFieldSyntax, body: true, msg: "trailer: LF not preceded by CR"}
	errTrailerFold     = &Error{Reason: ReasonFieldSyntax, body: true, msg: "trailer: field line starts with whitespace (obs-fold)"}
	errTrailerColon    = &Error{Reason: ReasonFieldSyntax, body: true, msg: "trailer: whitespace between a field name and its colon"}
	errTrailerName     = &Error{Reason: ReasonFieldSyntax, body: true, msg: "trailer: field name is not a token"}
	errTrailerValue    = &Error{Reason: ReasonFieldValue, body: true, msg: "trailer: field value contains a control character"}
)
