package graph

import (
	"strings"
	"unicode/utf8"
)

// MaxPath is the longest path template: longer ones are cut (at a UTF-8
// boundary). The control plane refuses longer ones.
const MaxPath = 256

// Wildcard is what an identifier-like segment becomes in a template.
const Wildcard = "*"

// FoldedPath is the path of the edge that stands for every kind of request
// a Recorder could not hold on its own (see Recorder).
const FoldedPath = "/**"

// Template returns the path template of p, a normalized path (DESIGN §3):
// the query and fragment, if any, are cut off, and every segment that looks
// like an identifier becomes "*":
//
//   - all digits: /orders/12345
//   - a UUID: /users/3f2a9b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c
//   - hex of at least 8 characters with at least one digit: /commits/3f2a9b1c
//   - a JWT (three base64url parts, the first starting "eyJ")
//   - a random-looking token of at least 16 characters of the base64url
//     alphabet (letters, digits, '-', '_', '=', '~') that mixes character
//     classes often (lower case, upper case, digits: at least one change
//     every three characters), or mixes letters and digits with digits
//     making up at least a third of it: /files/q83vEjRWeJCrze8SNFZ4kA
//
// Words, slugs and short names stay: /articles/my-post-2024, /api/v2.
// The result is cut at MaxPath bytes. Template does not allocate when no
// segment is replaced.
func Template(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	// Find the first segment to replace; none: p itself.
	start, first := 0, -1
	for start <= len(p) {
		end := strings.IndexByte(p[start:], '/')
		if end < 0 {
			end = len(p)
		} else {
			end += start
		}
		if identifier(p[start:end]) {
			first = start
			break
		}
		start = end + 1
	}
	if first < 0 {
		return cut(p, MaxPath)
	}
	var b strings.Builder
	b.Grow(min(len(p), MaxPath+8))
	b.WriteString(p[:first])
	for start = first; start <= len(p) && b.Len() < MaxPath; {
		end := strings.IndexByte(p[start:], '/')
		if end < 0 {
			end = len(p)
		} else {
			end += start
		}
		if seg := p[start:end]; identifier(seg) {
			b.WriteString(Wildcard)
		} else {
			b.WriteString(seg)
		}
		if end < len(p) {
			b.WriteByte('/')
		}
		start = end + 1
	}
	return cut(b.String(), MaxPath)
}

// identifier reports whether a path segment looks like an identifier.
func identifier(s string) bool {
	n := len(s)
	if n == 0 {
		return false
	}
	var (
		digits, letters, transitions int
		allDigits, allHex, token     = true, true, true
		prev                         byte // class of the previous character: 'd', 'l', 'u' or 0
	)
	for i := 0; i < n; i++ {
		c := s[i]
		var class byte
		switch {
		case c >= '0' && c <= '9':
			digits++
			class = 'd'
		case c >= 'a' && c <= 'z':
			letters++
			class = 'l'
			allDigits = false
			allHex = allHex && c <= 'f'
		case c >= 'A' && c <= 'Z':
			letters++
			class = 'u'
			allDigits = false
			allHex = allHex && c <= 'F'
		case c == '-' || c == '_' || c == '=' || c == '~':
			allDigits, allHex = false, false
		default:
			allDigits, allHex, token = false, false, false
		}
		if class != 0 && prev != 0 && class != prev {
			transitions++
		}
		prev = class
	}
	switch {
	case allDigits:
		return true
	case allHex && n >= 8 && digits > 0:
		return true
	case n == 36 && uuid(s):
		return true
	case n >= 16 && strings.HasPrefix(s, "eyJ") && jwt(s):
		return true
	case n >= 16 && token && letters > 0 && (transitions*3 >= n || digits > 0 && digits*3 >= n):
		return true
	}
	return false
}

// uuid reports whether s (36 bytes) is a UUID: hex in groups of 8-4-4-4-12.
func uuid(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// jwt reports whether s is three non-empty base64url parts separated by
// dots.
func jwt(s string) bool {
	parts, size := 1, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if size == 0 {
				return false
			}
			parts++
			size = 0
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_', c == '=':
			size++
		default:
			return false
		}
	}
	return parts == 3 && size > 0
}

// cut returns s cut at n bytes, at a UTF-8 boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
