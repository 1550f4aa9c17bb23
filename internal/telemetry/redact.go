package telemetry

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Redacted replaces every value the Redactor masks. It says nothing of the
// value: no length, no hash, no prefix.
const Redacted = "[REDACTED]"

// defaultSensitiveHeaders are the request and response header names whose
// values are always masked (compared case-insensitively).
var defaultSensitiveHeaders = []string{
	"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token",
}

// defaultSensitiveQuery are the query parameter names whose values are
// always masked (compared case-insensitively, after percent-decoding).
var defaultSensitiveQuery = []string{
	"password", "passwd", "pwd", "token", "access_token", "refresh_token", "id_token", "api_key",
	"apikey", "key", "secret", "client_secret", "code", "signature", "sig", "auth",
}

// sensitiveParts mask any header or query parameter whose name contains
// one of them (case-insensitively): "X-Session-Id", "X-Amz-Security-Token",
// "my_api_key", "Sec-WebSocket-Key", "X-Jwt-Assertion". Masking too much
// is the safe mistake.
var sensitiveParts = []string{"token", "secret", "passw", "session", "key", "auth", "credential", "cookie", "signature", "jwt"}

// maxNameLen bounds the names a Redactor is configured with and the names it
// compares: a longer name is compared by its contained parts only.
const maxNameLen = 128

// Redactor masks secrets in what Bulwark logs or exports (access logs,
// spans, denial reports). It is on by default and cannot be turned off: it
// masks the values of sensitive header and query parameter names (the
// defaults plus those configured), and any value that carries a JWT (three
// base64url segments whose header starts with "eyJ") or an HTTP
// credential ("Bearer <token>", "Basic <token>"), wherever it appears: a
// path segment, a query value, a header value, free text. A Redactor is
// safe for concurrent use; its methods do not allocate when nothing is
// masked.
type Redactor struct {
	headers map[string]struct{}
	query   map[string]struct{}
}

// NewRedactor returns a Redactor masking the default names plus headers
// and query (extra header and query parameter names; compared
// case-insensitively). An empty name, or one longer than 128 bytes or with
// characters a header or parameter name cannot have, is an error naming
// it.
func NewRedactor(headers, query []string) (*Redactor, error) {
	r := &Redactor{headers: map[string]struct{}{}, query: map[string]struct{}{}}
	for _, h := range defaultSensitiveHeaders {
		r.headers[h] = struct{}{}
	}
	for _, q := range defaultSensitiveQuery {
		r.query[q] = struct{}{}
	}
	for _, h := range headers {
		if err := checkName(h, isTokenChar); err != nil {
			return nil, fmt.Errorf("redact-header %q: %w", h, err)
		}
		r.headers[strings.ToLower(h)] = struct{}{}
	}
	for _, q := range query {
		if err := checkName(q, isQueryNameChar); err != nil {
			return nil, fmt.Errorf("redact-query %q: %w", q, err)
		}
		r.query[strings.ToLower(q)] = struct{}{}
	}
	return r, nil
}

// DefaultRedactor returns a Redactor masking the default names only.
func DefaultRedactor() *Redactor {
	r, _ := NewRedactor(nil, nil)
	return r
}

func checkName(s string, ok func(byte) bool) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("longer than %d bytes", maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return fmt.Errorf("character %q is not allowed in a name", s[i])
		}
	}
	return nil
}

// isTokenChar reports whether c may appear in a header name (RFC 9110
// token).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isQueryNameChar reports whether c may appear in a configured query
// parameter name (the decoded name: no separators, no spaces).
func isQueryNameChar(c byte) bool {
	return c > ' ' && c < 0x7f && c != '&' && c != '=' && c != ';' && c != '#' && c != '%'
}

// SensitiveHeader reports whether the values of the header name are
// masked.
func (r *Redactor) SensitiveHeader(name string) bool {
	if len(name) > maxNameLen {
		return hasSensitivePart(name)
	}
	var buf [maxNameLen]byte
	return r.sensitive(r.headers, lowerInto(buf[:0], name))
}

// SensitiveQuery reports whether the values of the (decoded) query
// parameter name are masked.
func (r *Redactor) SensitiveQuery(name string) bool {
	if len(name) > maxNameLen {
		return hasSensitivePart(name)
	}
	var buf [maxNameLen]byte
	return r.sensitive(r.query, lowerInto(buf[:0], name))
}

// sensitive looks the lower-case name up in set, then for a sensitive
// part.
func (r *Redactor) sensitive(set map[string]struct{}, lower []byte) bool {
	if _, ok := set[string(lower)]; ok {
		return true
	}
	for _, p := range sensitiveParts {
		if containsFold(lower, p) {
			return true
		}
	}
	return false
}

// hasSensitivePart reports whether s contains one of sensitiveParts in any
// case: how a name longer than maxNameLen (which no configured name is) is
// checked, in full.
func hasSensitivePart(s string) bool {
	for _, p := range sensitiveParts {
		for i := 0; i+len(p) <= len(s); i++ {
			if equalFoldASCII(s[i:i+len(p)], p) {
				return true
			}
		}
	}
	return false
}

// lowerInto appends s in lower case to dst, at most maxNameLen bytes.
func lowerInto(dst []byte, s string) []byte {
	if len(s) > maxNameLen {
		s = s[:maxNameLen]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// containsFold reports whether lower (lower case) contains part (lower
// case).
func containsFold(lower []byte, part string) bool {
	n := len(part)
	for i := 0; i+n <= len(lower); i++ {
		if string(lower[i:i+n]) == part {
			return true
		}
	}
	return false
}

// Header returns what may be logged of a value of the header name:
// Redacted for a sensitive name or a value carrying a credential, else the
// value.
func (r *Redactor) Header(name, value string) string {
	if r.SensitiveHeader(name) || HasCredential(value) {
		return Redacted
	}
	return value
}

// Text returns s with every credential in it (a JWT, the token of a
// "Bearer" or "Basic" credential) replaced by Redacted. It is for free
// text (user agents, error details); it allocates only when it masks.
func (r *Redactor) Text(s string) string {
	start, end := findCredential(s)
	if start < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for start >= 0 {
		b.WriteString(s[:start])
		b.WriteString(Redacted)
		s = s[end:]
		start, end = findCredential(s)
	}
	b.WriteString(s)
	return b.String()
}

// Path returns a request path with every segment that carries a credential
// (a JWT, in plain or percent-encoded form) replaced by Redacted, and the
// value of every sensitive parameter a segment carries ("/a;jsessionid=X",
// "/token=X", named as for Query) replaced by Redacted. It allocates only
// when it masks.
func (r *Redactor) Path(p string) string {
	if !r.pathHasCredential(p) {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	first := true
	for seg := range strings.SplitSeq(p, "/") {
		if !first {
			b.WriteByte('/')
		}
		first = false
		switch {
		case valueHasCredential(seg):
			b.WriteString(Redacted)
		case r.segmentParamsMask(seg):
			r.writeSegmentParams(&b, seg)
		default:
			b.WriteString(seg)
		}
	}
	return b.String()
}

func (r *Redactor) pathHasCredential(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if valueHasCredential(seg) || r.segmentParamsMask(seg) {
			return true
		}
	}
	return false
}

// segmentParamsMask reports whether a path segment carries a parameter
// ("name=value", alone or after ';' as in "/a;jsessionid=X") that Query
// would mask.
func (r *Redactor) segmentParamsMask(seg string) bool {
	if strings.IndexByte(seg, '=') < 0 {
		return false
	}
	for part := range strings.SplitSeq(seg, ";") {
		if name, value, ok := strings.Cut(part, "="); ok && r.maskParam(name, value) {
			return true
		}
	}
	return false
}

// writeSegmentParams writes seg with the value of every parameter
// segmentParamsMask finds replaced by Redacted.
func (r *Redactor) writeSegmentParams(b *strings.Builder, seg string) {
	first := true
	for part := range strings.SplitSeq(seg, ";") {
		if !first {
			b.WriteByte(';')
		}
		first = false
		if name, value, ok := strings.Cut(part, "="); ok && r.maskParam(name, value) {
			b.WriteString(name)
			b.WriteString("=")
			b.WriteString(Redacted)
		} else {
			b.WriteString(part)
		}
	}
}

// Query returns a raw query string with the value of every sensitive
// parameter, and every value that carries a credential, replaced by
// Redacted; names and other values are kept as sent. Parameters are split
// at '&' and ';'. It allocates only when it masks.
func (r *Redactor) Query(raw string) string {
	if !r.queryMasks(raw) {
		return raw
	}
	var b strings.Builder
	b.Grow(len(raw))
	rest := raw
	for rest != "" {
		i := strings.IndexAny(rest, "&;")
		pair, sep := rest, ""
		if i >= 0 {
			pair, sep, rest = rest[:i], rest[i:i+1], rest[i+1:]
		} else {
			rest = ""
		}
		if name, value, ok := strings.Cut(pair, "="); ok && r.maskParam(name, value) {
			b.WriteString(name)
			b.WriteString("=")
			b.WriteString(Redacted)
		} else if !ok && valueHasCredential(pair) {
			b.WriteString(Redacted)
		} else {
			b.WriteString(pair)
		}
		b.WriteString(sep)
	}
	return b.String()
}

// queryMasks reports whether Query would change raw.
func (r *Redactor) queryMasks(raw string) bool {
	rest := raw
	for rest != "" {
		pair := rest
		if i := strings.IndexAny(rest, "&;"); i >= 0 {
			pair, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		name, value, ok := strings.Cut(pair, "=")
		if ok && r.maskParam(name, value) || !ok && valueHasCredential(pair) {
			return true
		}
	}
	return false
}

// maskParam reports whether the value of a query parameter (both raw) is
// masked.
func (r *Redactor) maskParam(name, value string) bool {
	if value == "" {
		return false
	}
	if len(name) > maxNameLen {
		// Longer than any configured name: a sensitive part anywhere in
		// it, or an escape that could hide one, masks it.
		if hasSensitivePart(name) || strings.IndexByte(name, '%') >= 0 {
			return true
		}
		return valueHasCredential(value)
	}
	var buf [maxNameLen]byte
	dec, _ := decodeDeep(buf[:], name)
	for i, c := range dec {
		if c >= 'A' && c <= 'Z' {
			dec[i] = c + 'a' - 'A'
		}
	}
	if r.sensitive(r.query, dec) {
		return true
	}
	return valueHasCredential(value)
}

// decodeInto appends s to dst percent-decoded ('+' read as a space), at
// most cap(dst) bytes; a bad escape is kept as is.
func decodeInto[T ~string | ~[]byte](dst []byte, s T) []byte {
	for i := 0; i < len(s) && len(dst) < cap(dst); i++ {
		c := s[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		dst = append(dst, c)
	}
	return dst
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// maxDecoded bounds how much of an encoded value is decoded for the
// credential check; a longer encoded value is masked.
const maxDecoded = 4096

// maxDecodeRounds bounds how many times a value or name is percent-decoded
// in turn: a double- or triple-encoded credential ("%2565yJ...") is still
// found.
const maxDecodeRounds = 3

// decodedLen returns the length of s percent-decoded by decodeInto.
func decodedLen[T ~string | ~[]byte](s T) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			i += 2
		}
		n++
	}
	return n
}

// decodeDeep percent-decodes s into buf up to maxDecodeRounds times (while
// an escape is left), at most len(buf) bytes; it returns the decoded bytes,
// which may alias buf, and whether they are all of s (false when a round
// did not fit in buf).
func decodeDeep(buf []byte, s string) ([]byte, bool) {
	var tmp [maxDecoded]byte
	complete := decodedLen(s) <= len(buf)
	dec := decodeInto(buf[:0], s)
	for round := 1; round < maxDecodeRounds && bytes.IndexByte(dec, '%') >= 0; round++ {
		n := copy(tmp[:min(len(tmp), len(buf))], dec)
		complete = complete && decodedLen(tmp[:n]) <= len(buf)
		dec = decodeInto(buf[:0], tmp[:n])
	}
	return dec, complete
}

// valueHasCredential reports whether a raw (possibly percent-encoded, once
// or more) path segment or query value carries a credential.
func valueHasCredential(v string) bool {
	if HasCredential(v) || hasJWTPart(v) {
		return true
	}
	if strings.IndexByte(v, '%') < 0 && strings.IndexByte(v, '+') < 0 {
		return false
	}
	var buf [maxDecoded]byte
	dec, complete := decodeDeep(buf[:], v)
	if !complete {
		// An encoded value too long to decode here could hide a
		// credential past what was decoded: masking it is the safe
		// mistake.
		return true
	}
	start, _ := findCredential(dec)
	return start >= 0 || hasJWTPart(dec)
}

// minJWTPart is the shortest base64url run starting with "eyJ" that
// hasJWTPart takes for a part of a JWT: the encoding of a JSON object of
// at least a dozen bytes (`{"alg":"none"}` is 14).
const minJWTPart = 16

// hasJWTPart reports whether s holds a base64url run of at least
// minJWTPart characters starting with "eyJ": the header or the payload of
// a JWT on its own, as a client that splits a token across two query
// parameters or path segments sends it. (Other base64-encoded JSON, such
// as pagination cursors, is masked too: the safe mistake.)
func hasJWTPart[T ~string | ~[]byte](s T) bool {
	for i := 0; i+3 <= len(s); i++ {
		if s[i] != 'e' || s[i+1] != 'y' || s[i+2] != 'J' {
			continue
		}
		j := i + 3
		for j < len(s) && (isB64URL(s[j]) || s[j] == '=') {
			j++
		}
		if j-i >= minJWTPart {
			return true
		}
		i = j - 1
	}
	return false
}

// HasCredential reports whether s contains a JWT or an HTTP "Bearer" or
// "Basic" credential.
func HasCredential(s string) bool {
	start, _ := findCredential(s)
	return start >= 0
}

// LooksLikeJWT reports whether s is, as a whole, a JWT in compact form:
// base64url segments separated by dots (at least three), the first
// starting with "eyJ" (the encoding of `{"`).
func LooksLikeJWT(s string) bool {
	if !strings.HasPrefix(s, "eyJ") {
		return false
	}
	return jwtEnd(s) == len(s)
}

// jwtEnd returns the end of the JWT starting at s[0] ("eyJ..."), or -1 when
// what follows is not one: a first segment of at least 4 characters, then
// at least two more dots; segments are base64url (padding '=' allowed).
func jwtEnd[T ~string | ~[]byte](s T) int {
	dots, first := 0, 0
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if dots == 0 {
				first = i
			}
			dots++
		case isB64URL(c), c == '=':
		default:
			goto done
		}
	}
done:
	if dots < 2 || first < 4 {
		return -1
	}
	return i
}

func isB64URL(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// findCredential returns the span of the first credential in s: a JWT, or
// the token after "Bearer " or "Basic " (any case, one or more spaces or
// tabs). It returns -1, -1 when there is none.
func findCredential[T ~string | ~[]byte](s T) (start, end int) {
	for i := 0; i+3 <= len(s); i++ {
		switch s[i] {
		case 'e':
			if s[i+1] == 'y' && s[i+2] == 'J' {
				if n := jwtEnd(s[i:]); n > 0 {
					return i, i + n
				}
			}
		case 'b', 'B':
			if st, en := schemeToken(s, i); st >= 0 {
				return st, en
			}
		}
	}
	return -1, -1
}

// schemeToken returns the span of the token of a "Bearer" or "Basic"
// credential whose scheme starts at s[i], or -1, -1.
func schemeToken[T ~string | ~[]byte](s T, i int) (start, end int) {
	rest := s[i:]
	var n int
	switch {
	case len(rest) > 6 && equalFoldASCII(rest[:6], "bearer"):
		n = 6
	case len(rest) > 5 && equalFoldASCII(rest[:5], "basic"):
		n = 5
	default:
		return -1, -1
	}
	// The scheme is a word: not the end of a longer one.
	if i > 0 && isB64URL(s[i-1]) {
		return -1, -1
	}
	j := i + n
	k := j
	for k < len(s) && (s[k] == ' ' || s[k] == '\t') {
		k++
	}
	if k == j {
		return -1, -1
	}
	e := k
	for e < len(s) && s[e] > ' ' && s[e] < 0x7f && s[e] != ',' && s[e] != '"' {
		e++
	}
	if e == k {
		return -1, -1
	}
	return k, e
}

// equalFoldASCII reports whether s equals lower (lower case ASCII) in any
// case.
func equalFoldASCII[T ~string | ~[]byte](s T, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
