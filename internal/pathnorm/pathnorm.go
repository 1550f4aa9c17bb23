// Package pathnorm owns request-path hygiene: the one normalization that
// every authorization decision and every forwarded request uses (DESIGN §3).
// The sidecar splits the request-target with SplitTarget, normalizes the path
// with Normalize, authorizes the normalized path, and forwards that same
// normalized path to the app, so the policy and the app never read two
// different paths.
//
// Normalize fails closed: a path that apps could read in more than one way
// (an encoded '/' or '\', a raw '\', NUL, a control character, a malformed
// escape, a byte RFC 3986 does not allow in a path) is rejected with an
// error wrapping ErrRejected, which the caller answers with 400 Bad Request
// before authorization. Otherwise it
//
//   - decodes percent-escapes of unreserved characters (ALPHA DIGIT - . _ ~),
//   - upper-cases the hex digits of every remaining escape,
//   - merges runs of '/',
//   - removes "." and ".." segments as in RFC 3986 §5.2.4, never climbing
//     above the root, and keeping a trailing slash ("/a/b/.." -> "/a/").
//
// Decoding happens before dot-segment removal, so "/%2e%2e/admin" is
// "/admin". Everything else is left as is and compared case-sensitively.
//
// A "." or ".." segment followed by ';' parameters ("/public/..;/admin") is
// rejected: servlet containers strip the parameters and then resolve the
// dot segment. Other matrix parameters are not stripped: ';', ':', '@' and the
// other RFC 3986 sub-delimiters are ordinary path characters here, so the app
// receives "/admin;x=1" as sent. internal/policy matches such a path both as
// sent and without its parameters, since some frameworks route "/admin;x=1"
// as "/admin".
package pathnorm

import "strings"

// SplitTarget splits an HTTP request-target into its raw path and its raw
// query (without the '?'; "" when absent or empty). Only origin-form
// ("/path" with an optional "?query") is accepted; "*", absolute-form,
// authority-form, an empty target, a target containing '#', and a query
// containing a space or a control character are rejected with an error
// wrapping ErrRejected. The path is not checked: pass it to Normalize.
func SplitTarget(target string) (path, rawQuery string, err error) {
	if target == "" || target[0] != '/' {
		return "", "", ErrNotOriginForm
	}
	if strings.IndexByte(target, '#') >= 0 {
		return "", "", ErrFragment
	}
	path, rawQuery, _ = strings.Cut(target, "?")
	for i := 0; i < len(rawQuery); i++ {
		if c := rawQuery[i]; c <= ' ' || c == 0x7f {
			return "", "", ErrInvalidQuery
		}
	}
	return path, rawQuery, nil
}

// Normalize returns the normalized form of p, a raw (still percent-encoded)
// request path without its query, or an error wrapping ErrRejected when p
// must be refused (see the package documentation). The error is one of this
// package's sentinel errors and carries no part of p.
//
// When p is already normalized, Normalize returns p itself and does not
// allocate. Normalize is idempotent: Normalize of its result returns that
// result unchanged.
func Normalize(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", ErrNotAbsolute
	}
	clean := true
	segStart := 1 // start of the current segment
	for i := 1; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			seg := p[segStart:i]
			if seg == "" || isDotSegment(seg) {
				clean = false
			}
			if isDotWithParams(seg) {
				return "", ErrDotParams
			}
			segStart = i + 1
		case c == '%':
			if i+2 >= len(p) {
				return "", ErrBadEscape
			}
			hi, ok1 := unhex(p[i+1])
			lo, ok2 := unhex(p[i+2])
			if !ok1 || !ok2 {
				return "", ErrBadEscape
			}
			switch b := hi<<4 | lo; {
			case b == '/':
				return "", ErrEncodedSlash
			case b == '\\':
				return "", ErrEncodedBackslash
			case b == 0:
				return "", ErrNUL
			case b < 0x20 || b == 0x7f:
				return "", ErrControl
			case isUnreserved(b) || isLowerHex(p[i+1]) || isLowerHex(p[i+2]):
				clean = false
			}
			i += 2
		case c == '\\':
			return "", ErrBackslash
		case c == 0:
			return "", ErrNUL
		case c < 0x20 || c == 0x7f:
			return "", ErrControl
		case !isPchar(c):
			return "", ErrInvalidChar
		}
	}
	if isDotSegment(p[segStart:]) {
		clean = false
	}
	if isDotWithParams(p[segStart:]) {
		return "", ErrDotParams
	}
	if clean {
		return p, nil
	}
	return rebuild(p), nil
}

// rebuild normalizes p, which Normalize has checked.
func rebuild(p string) string {
	// Decode the escapes of unreserved characters and upper-case the
	// others. Only unreserved characters are decoded, so no '/' appears.
	buf := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			buf = append(buf, c)
			continue
		}
		hi, _ := unhex(p[i+1])
		lo, _ := unhex(p[i+2])
		if b := hi<<4 | lo; isUnreserved(b) {
			buf = append(buf, b)
		} else {
			buf = append(buf, '%', upperHex(p[i+1]), upperHex(p[i+2]))
		}
		i += 2
	}

	// Merge runs of '/' and remove dot segments in place: w, the end of the
	// output, never passes the '/' that starts the segment being read.
	w := 0
	trailing := false
	for r := 0; r < len(buf); {
		start := r + 1
		end := len(buf)
		if j := strings.IndexByte(string(buf[start:]), '/'); j >= 0 {
			end = start + j
		}
		seg := buf[start:end]
		last := end == len(buf)
		switch {
		case len(seg) == 0 || string(seg) == ".":
			trailing = last
		case string(seg) == "..":
			w = max(strings.LastIndexByte(string(buf[:w]), '/'), 0)
			trailing = last
		default:
			buf[w] = '/'
			copy(buf[w+1:], seg)
			w += 1 + len(seg)
			trailing = false
		}
		r = end
	}
	if w == 0 {
		return "/"
	}
	if trailing {
		buf[w] = '/'
		w++
	}
	return string(buf[:w])
}

// isDotSegment reports whether seg is "." or "..".
func isDotSegment(seg string) bool { return seg == "." || seg == ".." }

// isDotWithParams reports whether the raw segment seg is "." or ".." (dots
// raw or percent-encoded) followed by ';' parameters, as in "..;/": servlet
// containers drop the parameters and then resolve the dot segment, so the
// app would serve a path the policy never saw.
func isDotWithParams(seg string) bool {
	semi := strings.IndexByte(seg, ';')
	if semi < 0 {
		return false
	}
	dots := 0
	for i := 0; i < semi; i++ {
		switch {
		case seg[i] == '.':
			dots++
		case seg[i] == '%' && i+2 < semi && seg[i+1] == '2' && (seg[i+2] == 'e' || seg[i+2] == 'E'):
			dots++
			i += 2
		default:
			return false
		}
	}
	return dots == 1 || dots == 2
}

// Character classes of RFC 3986 as bit sets: bit c of the lo word is byte c
// (0-63), bit c-64 of the hi word is byte c (64-127).
const (
	unreservedLo uint64 = (1<<10-1)<<'0' | 1<<'-' | 1<<'.'
	unreservedHi uint64 = (1<<26-1)<<('A'-64) | (1<<26-1)<<('a'-64) | 1<<('_'-64) | 1<<('~'-64)
	// pchar without pct-encoded: unreserved, sub-delims, ':' and '@'.
	pcharLo uint64 = unreservedLo | 1<<'!' | 1<<'$' | 1<<'&' | 1<<'\'' | 1<<'(' | 1<<')' |
		1<<'*' | 1<<'+' | 1<<',' | 1<<';' | 1<<'=' | 1<<':'
	pcharHi uint64 = unreservedHi | 1<<('@'-64)
)

// inClass reports whether c is in the class given by its two bit words.
func inClass(c byte, lo, hi uint64) bool {
	switch {
	case c < 64:
		return lo&(1<<c) != 0
	case c < 128:
		return hi&(1<<(c-64)) != 0
	}
	return false
}

// isUnreserved reports whether c is an RFC 3986 unreserved character.
func isUnreserved(c byte) bool { return inClass(c, unreservedLo, unreservedHi) }

// isPchar reports whether c may appear raw in a path segment.
func isPchar(c byte) bool { return inClass(c, pcharLo, pcharHi) }

// isLowerHex reports whether c is a lower-case hex letter.
func isLowerHex(c byte) bool { return c >= 'a' && c <= 'f' }

// upperHex returns the hex digit c in upper case.
func upperHex(c byte) byte {
	if isLowerHex(c) {
		return c - 'a' + 'A'
	}
	return c
}

// unhex returns the value of the hex digit c.
func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
