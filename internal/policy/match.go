package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
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

// hasFold reports whether v is in the set, ignoring ASCII case. It is for
// the rare requests whose method is not in upper case, and scans the set.
func (s *stringSet) hasFold(v string) bool {
	for _, e := range s.list {
		if strings.EqualFold(e, v) {
			return true
		}
	}
	for e := range s.set {
		if strings.EqualFold(e, v) {
			return true
		}
	}
	return false
}

// glob is a pattern in which '*' matches any run of characters, including
// none; within one path segment only (no '/') unless anyRun is set.
type glob struct {
	// pieces are the literal parts between the '*'s: at least two.
	pieces []string
	// anyRun lets '*' match '/' too.
	anyRun bool
}

// newGlob compiles a pattern containing at least one '*'.
func newGlob(pattern string, anyRun bool) glob {
	return glob{pieces: strings.Split(pattern, "*"), anyRun: anyRun}
}

// match reports whether s matches the glob. It places each middle piece at
// its leftmost occurrence, which is correct because every piece is followed
// by a '*' that can absorb any text a later placement would skip ('/'-free
// text, for a segment glob, which is why a skipped '/' fails it).
func (g *glob) match(s string) bool {
	first, last := g.pieces[0], g.pieces[len(g.pieces)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	s = s[len(first) : len(s)-len(last)]
	for _, p := range g.pieces[1 : len(g.pieces)-1] {
		i := strings.Index(s, p)
		if i < 0 || (!g.anyRun && strings.IndexByte(s[:i], '/') >= 0) {
			return false
		}
		s = s[i+len(p):]
	}
	return g.anyRun || strings.IndexByte(s, '/') < 0
}

// patternSet is a compiled list of string patterns: "*", exact strings,
// and globs.
type patternSet struct {
	any   bool
	exact stringSet
	globs []glob
	// src are the patterns as written, for explanations.
	src []string
}

// compilePatterns compiles patterns; anyRun says whether '*' in a glob
// crosses '/' (request principals, namespaces) or stays within a segment
// (services, identities).
func compilePatterns(patterns []string, anyRun bool) *patternSet {
	s := &patternSet{src: slices.Clone(patterns)}
	var exact []string
	for _, p := range patterns {
		switch {
		case p == "*":
			s.any = true
		case strings.Contains(p, "*"):
			s.globs = append(s.globs, newGlob(p, anyRun))
		default:
			exact = append(exact, p)
		}
	}
	s.exact = newStringSet(exact)
	return s
}

// match reports whether v, which must be known (non-empty), matches any
// pattern of the set.
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

// matchAny reports whether any non-empty entry of vs matches the set.
func (s *patternSet) matchAny(vs []string) bool {
	for _, v := range vs {
		if v != "" && s.match(v) {
			return true
		}
	}
	return false
}

// methodMask is a set of well-known HTTP methods, one bit each.
type methodMask uint16

// methodNames are the well-known methods, the bit of methodNames[i] being
// 1<<i.
var methodNames = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

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

// methodBitFold returns the bit of the well-known method m names in any
// case, or 0.
func methodBitFold(m string) methodMask {
	for i, name := range methodNames {
		if strings.EqualFold(m, name) {
			return 1 << i
		}
	}
	return 0
}

// Bits of the methods that need them by name.
const (
	methodGet  methodMask = 1 << 0
	methodHead methodMask = 1 << 1
)

// hasLower reports whether s has an ASCII lower-case letter.
func hasLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'a' && c <= 'z' {
			return true
		}
	}
	return false
}

// methodSet is a compiled list of method patterns.
type methodSet struct {
	any   bool
	known methodMask // well-known methods
	other stringSet  // extension methods
	src   []string
}

// compileMethods compiles method patterns.
func compileMethods(methods []string) *methodSet {
	ms := &methodSet{src: slices.Clone(methods)}
	var other []string
	for _, v := range methods {
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
	return ms
}

// hasBit reports whether the set holds the well-known method of bit.
func (s *methodSet) hasBit(bit methodMask) bool {
	if bit == methodHead {
		// A HEAD is a GET without the body, and servers answer it with
		// their GET handlers: a rule that names GET covers it.
		return s.known&(methodHead|methodGet) != 0
	}
	return s.known&bit != 0
}

// match reports whether the request's method is in the set. Exact
// (narrow) comparison is case-sensitive; wide comparison also counts a
// method that equals an entry in another case, so that "get" is treated as
// GET wherever that denies more (see the package documentation).
func (s *methodSet) match(q *facts, wide bool) bool {
	if s.any {
		return true
	}
	if q.methodBit != 0 {
		return s.hasBit(q.methodBit)
	}
	if s.other.has(q.method) {
		return true
	}
	if !wide || !q.methodLower {
		return false
	}
	if q.methodFold != 0 {
		return s.hasBit(q.methodFold)
	}
	return s.other.hasFold(q.method)
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
	globs    []glob
	src      []string
}

// compilePaths compiles path patterns: "*", "/prefix/*" (when that final
// "/*" is the pattern's only '*'), globs (any other '*', within a segment),
// and exact paths.
func compilePaths(paths []string) *pathSet {
	ps := &pathSet{src: slices.Clone(paths)}
	var exact []string
	for _, v := range paths {
		switch {
		case v == "*":
			ps.any = true
		case strings.HasSuffix(v, "/*") && strings.Count(v, "*") == 1:
			bare := strings.TrimSuffix(v, "/*")
			ps.prefixes = append(ps.prefixes, prefix{bare: bare, dir: bare + "/"})
		case strings.Contains(v, "*"):
			ps.globs = append(ps.globs, newGlob(v, false))
		default:
			exact = append(exact, v)
		}
	}
	ps.exact = newStringSet(exact)
	return ps
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
	for i := range s.globs {
		if s.globs[i].match(p) {
			return true
		}
	}
	return false
}

// hostSet is a compiled list of host patterns.
type hostSet struct {
	any      bool
	exact    stringSet
	suffixes []string // ".example.com" for "*.example.com"
	prefixes []string // "api." for "api.*"
	globs    []glob   // any other pattern with a '*' (validation rejects them)
	src      []string
}

// normalizeHost returns h in lower case without one trailing dot, and an
// IPv6 literal without brackets in its canonical form. It only allocates
// when h has an upper-case letter or is an IPv6 literal.
func normalizeHost(h string) string {
	h = strings.TrimSuffix(h, ".")
	if strings.IndexByte(h, ':') >= 0 {
		if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
			return a.WithZone("").String()
		}
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// compileHosts compiles host patterns, normalized as request hosts are.
func compileHosts(hosts []string) *hostSet {
	hs := &hostSet{src: slices.Clone(hosts)}
	var exact []string
	for _, v := range hosts {
		v = normalizeHost(v)
		n := strings.Count(v, "*")
		switch {
		case v == "*":
			hs.any = true
		case n == 1 && strings.HasPrefix(v, "*."):
			hs.suffixes = append(hs.suffixes, v[1:])
		case n == 1 && strings.HasSuffix(v, ".*"):
			hs.prefixes = append(hs.prefixes, v[:len(v)-1])
		case n > 0:
			hs.globs = append(hs.globs, newGlob(v, true))
		default:
			exact = append(exact, v)
		}
	}
	hs.exact = newStringSet(exact)
	return hs
}

// match reports whether the normalized, known host h matches the set.
func (s *hostSet) match(h string) bool {
	if s.any || s.exact.has(h) {
		return true
	}
	for _, suf := range s.suffixes {
		if len(h) > len(suf) && strings.HasSuffix(h, suf) {
			return true
		}
	}
	for _, pre := range s.prefixes {
		if len(h) > len(pre) && strings.HasPrefix(h, pre) {
			return true
		}
	}
	for i := range s.globs {
		if s.globs[i].match(h) {
			return true
		}
	}
	return false
}

// portSet is a compiled list of ports.
type portSet struct {
	ports []int
}

// match reports whether the known port p is in the set.
func (s *portSet) match(p int) bool {
	return slices.Contains(s.ports, p)
}

// prefixSet is a compiled list of IP blocks.
type prefixSet struct {
	prefixes []netip.Prefix
	src      []string
}

// parseIPBlock parses an address or a CIDR range. An IPv4-mapped IPv6
// block is turned into the IPv4 block it maps, since request addresses are
// unmapped before matching.
func parseIPBlock(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		p = p.Masked()
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return p, nil
			}
			return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// compileIPBlocks compiles IP blocks; path names the list in errors.
func compileIPBlocks(path string, blocks []string) (*prefixSet, error) {
	ps := &prefixSet{src: slices.Clone(blocks)}
	for i, b := range blocks {
		p, err := parseIPBlock(b)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", path, i, err)
		}
		ps.prefixes = append(ps.prefixes, p)
	}
	return ps, nil
}

// match reports whether the known, unmapped address a is in a block.
func (s *prefixSet) match(a netip.Addr) bool {
	for _, p := range s.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// workloadNamespace returns the namespace of a workload SPIFFE ID
// ("spiffe://<td>/ns/<ns>/sa/<account>"), or "" when id is not one. It
// does not allocate.
func workloadNamespace(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return ""
	}
	i := strings.IndexByte(rest, '/')
	if i <= 0 {
		return ""
	}
	rest, ok = strings.CutPrefix(rest[i:], "/ns/")
	if !ok {
		return ""
	}
	ns, rest, ok := strings.Cut(rest, "/")
	if !ok || ns == "" || !strings.HasPrefix(rest, "sa/") || len(rest) == len("sa/") || strings.Contains(rest[len("sa/"):], "/") {
		return ""
	}
	return ns
}
