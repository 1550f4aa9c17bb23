package policy

import (
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// smallSet is the size up to which a stringSet is a list: comparing a few
// strings is faster than hashing one.
const smallSet = 8

// stringSet is a set of exact strings.
type stringSet struct {
	list []string            // when at most smallSet entries
	set  map[string]struct{} // otherwise
}

// newStringSet returns the set of vs.
func newStringSet(vs []string) stringSet {
	var s stringSet
	for _, v := range vs {
		if !s.has(v) {
			s.list = append(s.list, v)
		}
	}
	if len(s.list) > smallSet {
		s.set = make(map[string]struct{}, len(s.list))
		for _, v := range s.list {
			s.set[v] = struct{}{}
		}
		s.list = nil
	}
	return s
}

// has reports whether v is in the set.
func (s *stringSet) has(v string) bool {
	if s.set != nil {
		_, ok := s.set[v]
		return ok
	}
	for _, e := range s.list {
		if e == v {
			return true
		}
	}
	return false
}

// glob is a pattern in which '*' matches any run of characters, including
// none, other than '/'.
type glob struct {
	// pieces are the literal parts between the '*'s: at least two.
	pieces []string
}

// match reports whether s matches the glob. It places each middle piece at
// its leftmost occurrence, which is correct because every piece is followed
// by a '*' that can absorb any '/'-free text a later placement would skip.
func (g *glob) match(s string) bool {
	first, last := g.pieces[0], g.pieces[len(g.pieces)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	s = s[len(first) : len(s)-len(last)]
	for _, p := range g.pieces[1 : len(g.pieces)-1] {
		i := strings.Index(s, p)
		if i < 0 || strings.IndexByte(s[:i], '/') >= 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.IndexByte(s, '/') < 0
}

// patternSet is a compiled list of service or identity patterns: "*", exact
// strings, and globs.
type patternSet struct {
	any   bool
	exact stringSet
	globs []glob
}

// compilePatterns compiles service or identity patterns.
func compilePatterns(patterns []string) patternSet {
	var s patternSet
	var exact []string
	for _, p := range patterns {
		switch {
		case p == "*":
			s.any = true
		case strings.Contains(p, "*"):
			s.globs = append(s.globs, glob{pieces: strings.Split(p, "*")})
		default:
			exact = append(exact, p)
		}
	}
	s.exact = newStringSet(exact)
	return s
}

// match reports whether v matches any pattern of the set.
func (s *patternSet) match(v string) bool {
	if s.any || s.exact.has(v) {
		return true
	}
	for i := range s.globs {
		if s.globs[i].match(v) {
			return true
		}
	}
	return false
}

// sourceMatcher is a compiled config.Source.
type sourceMatcher struct {
	// services and identities are nil when not constrained.
	services, identities *patternSet
}

// compileSource compiles s; a nil s matches every caller.
func compileSource(s *config.Source) sourceMatcher {
	var m sourceMatcher
	if s == nil {
		return m
	}
	if len(s.Services) > 0 {
		ps := compilePatterns(s.Services)
		m.services = &ps
	}
	if len(s.Identities) > 0 {
		ps := compilePatterns(s.Identities)
		m.identities = &ps
	}
	return m
}

// match reports whether src matches: any of its services matches a service
// pattern, and its ID matches an identity pattern, for each list given. An
// unknown ID or an empty service list matches no pattern.
func (m *sourceMatcher) match(src *Source) bool {
	if m.identities != nil && (src.ID == "" || !m.identities.match(src.ID)) {
		return false
	}
	if m.services == nil {
		return true
	}
	for _, s := range src.Services {
		if s != "" && m.services.match(s) {
			return true
		}
	}
	return false
}

// methodMask is a set of well-known HTTP methods, one bit each.
type methodMask uint16

// methodBit returns the bit of a well-known method, or 0 for any other
// method (including the same name in another case).
func methodBit(m string) methodMask {
	switch m {
	case "GET":
		return 1 << 0
	case "HEAD":
		return 1 << 1
	case "POST":
		return 1 << 2
	case "PUT":
		return 1 << 3
	case "DELETE":
		return 1 << 4
	case "CONNECT":
		return 1 << 5
	case "OPTIONS":
		return 1 << 6
	case "TRACE":
		return 1 << 7
	case "PATCH":
		return 1 << 8
	}
	return 0
}

// Bits of the methods that need them by name.
const (
	methodGet  methodMask = 1 << 0
	methodHead methodMask = 1 << 1
)

// methodSet is a compiled list of method patterns.
type methodSet struct {
	any   bool
	known methodMask // well-known methods
	other stringSet  // extension methods
}

// match reports whether method, whose methodBit is bit, is in the set.
func (s *methodSet) match(method string, bit methodMask) bool {
	switch {
	case s.any:
		return true
	case bit == methodHead:
		// A HEAD is a GET without the body, and servers answer it with
		// their GET handlers: a rule that names GET covers it.
		return s.known&(methodHead|methodGet) != 0
	case bit != 0:
		return s.known&bit != 0
	}
	return s.other.has(method)
}

// prefix is a compiled "/prefix/*" path pattern.
type prefix struct {
	bare string // "/prefix"; "" for "/*"
	dir  string // "/prefix/"
}

// pathSet is a compiled list of path patterns.
type pathSet struct {
	any      bool
	exact    stringSet
	prefixes []prefix
}

// match reports whether the normalized path p matches a pattern of the
// set.
func (s *pathSet) match(p string) bool {
	if s.any || s.exact.has(p) {
		return true
	}
	for i := range s.prefixes {
		pr := &s.prefixes[i]
		if (pr.bare != "" && p == pr.bare) || strings.HasPrefix(p, pr.dir) {
			return true
		}
	}
	return false
}

// operationMatcher is a compiled config.Operation.
type operationMatcher struct {
	// methods and paths are nil when not constrained.
	methods *methodSet
	paths   *pathSet
}

// compileOperation compiles o; a nil o matches every request.
func compileOperation(o *config.Operation) operationMatcher {
	var m operationMatcher
	if o == nil {
		return m
	}
	if len(o.Methods) > 0 {
		ms := &methodSet{}
		var other []string
		for _, v := range o.Methods {
			switch bit := methodBit(v); {
			case v == "*":
				ms.any = true
			case bit != 0:
				ms.known |= bit
			default:
				other = append(other, v)
			}
		}
		ms.other = newStringSet(other)
		m.methods = ms
	}
	if len(o.Paths) > 0 {
		ps := &pathSet{}
		var exact []string
		for _, v := range o.Paths {
			switch {
			case v == "*":
				ps.any = true
			case strings.HasSuffix(v, "/*"):
				bare := strings.TrimSuffix(v, "/*")
				ps.prefixes = append(ps.prefixes, prefix{bare: bare, dir: bare + "/"})
			default:
				exact = append(exact, v)
			}
		}
		ps.exact = newStringSet(exact)
		m.paths = ps
	}
	return m
}

// match reports whether a request with method (whose methodBit is bit) and
// normalized path matches.
func (m *operationMatcher) match(method string, bit methodMask, path string) bool {
	return (m.methods == nil || m.methods.match(method, bit)) &&
		(m.paths == nil || m.paths.match(path))
}
