package policycheck

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// This file decides, on patterns alone, whether one pattern covers another
// (every value the inner one matches, the outer one matches too) and
// whether two patterns are disjoint (no value matches both). Every answer
// is conservative: true only when provable, so "covered" and "disjoint" are
// never claimed wrongly, and some true cases are missed.

// kind is how the patterns of one field are matched.
type kind struct {
	// covers reports whether outer provably matches every value inner does.
	covers func(outer, inner string) bool
	// disjoint reports whether no value provably matches both a and b.
	disjoint func(a, b string) bool
	// matchAll reports whether p matches every known value.
	matchAll func(p string) bool
}

var (
	// Services: "*", or "ns/name" with '*' any run within a part.
	serviceKind = kind{covers: globCovers('/'), disjoint: globDisjoint('/'), matchAll: isStar}
	// Identities: "*", or a SPIFFE ID with '*' any run within a segment.
	identityKind = kind{covers: globCovers('/'), disjoint: globDisjoint('/'), matchAll: isStar}
	// Namespaces and request principals: '*' is any run of characters.
	anyRunKind = kind{covers: globCovers(0), disjoint: globDisjoint(0), matchAll: isStar}
	methodKind = kind{covers: methodCovers, disjoint: methodDisjoint, matchAll: isStar}
	hostKind   = kind{covers: hostCovers, disjoint: hostDisjoint, matchAll: isStar}
	pathKind   = kind{covers: pathCovers, disjoint: pathDisjoint, matchAll: isStar}
	portKind   = kind{covers: equal, disjoint: notEqual, matchAll: never}
	ipKind     = kind{covers: ipCovers, disjoint: ipDisjoint, matchAll: never}
)

func isStar(p string) bool      { return p == "*" }
func never(string) bool         { return false }
func equal(a, b string) bool    { return a == b }
func notEqual(a, b string) bool { return a != b }
func hasStar(p string) bool     { return strings.IndexByte(p, '*') >= 0 }
func portString(p int) string   { return strconv.Itoa(p) }
func portStrings(ps []int) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = portString(p)
	}
	return out
}

// globMatch reports whether pattern matches s, where '*' matches any run
// of characters other than sep (any run at all when sep is 0).
func globMatch(pattern, s string, sep byte) bool {
	// Iterative wildcard matching with backtracking to the last '*'.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0 && (sep == 0 || s[mark] != sep):
			mark++
			i = mark
			p = star + 1
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// globCovers returns a covers function for globs with separator sep: outer
// covers inner when outer is "*", when they are equal, or when outer
// matches inner with inner's '*'s read as runs that only outer's '*'s can
// absorb (a sound test of language inclusion).
func globCovers(sep byte) func(outer, inner string) bool {
	return func(outer, inner string) bool {
		if outer == "*" || outer == inner {
			return true
		}
		if inner == "*" {
			return false
		}
		return globCoversGlob(outer, inner, sep)
	}
}

// globCoversGlob matches outer against inner where inner's '*' is a symbol
// that only a '*' of outer can consume.
func globCoversGlob(outer, inner string, sep byte) bool {
	var match func(p, s int) bool
	memo := map[[2]int]bool{}
	match = func(p, s int) bool {
		k := [2]int{p, s}
		if v, ok := memo[k]; ok {
			return v
		}
		var r bool
		switch {
		case p == len(outer):
			r = s == len(inner)
		case outer[p] == '*':
			// Absorb nothing, or one more character that is not sep.
			r = match(p+1, s) || (s < len(inner) && (sep == 0 || inner[s] != sep) && match(p, s+1))
		default:
			r = s < len(inner) && inner[s] != '*' && inner[s] == outer[p] && match(p+1, s+1)
		}
		memo[k] = r
		return r
	}
	return match(0, 0)
}

// globDisjoint returns a disjoint function for globs with separator sep:
// two patterns without '*' are disjoint when different; a literal and a
// glob when the glob does not match the literal; two globs are assumed to
// overlap.
func globDisjoint(sep byte) func(a, b string) bool {
	return func(a, b string) bool {
		switch {
		case a == "*" || b == "*":
			return false
		case !hasStar(a) && !hasStar(b):
			return a != b
		case !hasStar(a):
			return !globMatch(b, a, sep)
		case !hasStar(b):
			return !globMatch(a, b, sep)
		}
		return false
	}
}

// methodCovers: "*" covers all, a method covers itself, and GET covers
// HEAD (a rule naming GET also matches HEAD).
func methodCovers(outer, inner string) bool {
	return outer == "*" || outer == inner || (outer == "GET" && inner == "HEAD")
}

// methodDisjoint: two different methods other than the GET/HEAD pair.
func methodDisjoint(a, b string) bool {
	if a == "*" || b == "*" || a == b {
		return false
	}
	return !(a == "GET" && b == "HEAD" || a == "HEAD" && b == "GET")
}

// hostCovers: "*" covers all; "*.s" covers names and "*." patterns ending
// in ".s"; "p.*" covers names and ".*" patterns starting with "p.".
func hostCovers(outer, inner string) bool {
	if outer == "*" || outer == inner {
		return true
	}
	if suffix, ok := strings.CutPrefix(outer, "*."); ok {
		if t, ok := strings.CutPrefix(inner, "*."); ok {
			return !hasStar(t) && strings.HasSuffix(t, "."+suffix)
		}
		rest, found := strings.CutSuffix(inner, "."+suffix)
		return found && rest != "" && !hasStar(inner)
	}
	if prefix, ok := strings.CutSuffix(outer, ".*"); ok {
		if q, ok := strings.CutSuffix(inner, ".*"); ok {
			return !hasStar(q) && strings.HasPrefix(q, prefix+".")
		}
		rest, found := strings.CutPrefix(inner, prefix+".")
		return found && rest != "" && !hasStar(inner)
	}
	return false
}

// hostDisjoint: two names without '*' that differ, or a name a pattern
// provably does not match.
func hostDisjoint(a, b string) bool {
	disjoint, _ := patternsDisjoint(a, b, hostMatchLoose)
	return disjoint
}

// patternsDisjoint decides whether patterns a and b share no value when at
// least one of them is "*" or has no '*' (decided=true): then they are
// disjoint when they are two different values, or when matchLoose says the
// pattern cannot match the value. Two patterns with '*' are left undecided.
func patternsDisjoint(a, b string, matchLoose func(pattern, value string) bool) (disjoint, decided bool) {
	switch {
	case a == "*" || b == "*":
		return false, true
	case !hasStar(a) && !hasStar(b):
		return a != b, true
	case !hasStar(a):
		return !matchLoose(b, a), true
	case !hasStar(b):
		return !matchLoose(a, b), true
	}
	return false, false
}

// hostMatchLoose reports whether host pattern p might match name: it errs
// towards true (a "*.s" pattern is taken to match "s" itself too), which
// keeps hostDisjoint sound whatever the evaluator decides for that edge.
func hostMatchLoose(p, name string) bool {
	if suffix, ok := strings.CutPrefix(p, "*."); ok {
		return name == suffix || strings.HasSuffix(name, "."+suffix)
	}
	if prefix, ok := strings.CutSuffix(p, ".*"); ok {
		return name == prefix || strings.HasPrefix(name, prefix+".")
	}
	return true
}

// pathPrefix returns the prefix of a "/prefix/*" pattern ("/prefix").
func pathPrefix(p string) (string, bool) {
	prefix, ok := strings.CutSuffix(p, "/*")
	if !ok || hasStar(prefix) {
		return "", false
	}
	return prefix, true
}

// pathCovers: "*" covers all; "/p/*" covers "/p", "/p/" and every pattern
// below "/p/"; a segment glob covers the paths and globs it matches.
func pathCovers(outer, inner string) bool {
	if outer == "*" || outer == inner {
		return true
	}
	if inner == "*" {
		return false
	}
	if prefix, ok := pathPrefix(outer); ok {
		return inner == prefix || strings.HasPrefix(inner, prefix+"/")
	}
	if strings.HasSuffix(outer, "/*") && hasStar(strings.TrimSuffix(outer, "/*")) {
		return false // a glob with a prefix form: only equality is provable
	}
	if _, ok := pathPrefix(inner); ok || strings.HasSuffix(inner, "/*") {
		return false // inner reaches arbitrarily deep, a segment glob does not
	}
	return globCoversGlob(outer, inner, '/')
}

// pathMatchLoose reports whether pattern p might match path: exact for
// "*", exact paths and "/p/*" prefixes; a segment glob with '*' within
// segments; anything else is taken to match.
func pathMatchLoose(p, path string) bool {
	if p == "*" {
		return true
	}
	if prefix, ok := pathPrefix(p); ok {
		return path == prefix || strings.HasPrefix(path, prefix+"/")
	}
	if strings.HasSuffix(p, "/*") {
		return true
	}
	return globMatch(p, path, '/')
}

// pathDisjoint: two paths that differ, or a path a pattern does not match.
func pathDisjoint(a, b string) bool {
	if disjoint, decided := patternsDisjoint(a, b, pathMatchLoose); decided {
		return disjoint
	}
	// Two prefixes neither of which is below the other are disjoint.
	pa, oka := pathPrefix(a)
	pb, okb := pathPrefix(b)
	if oka && okb {
		return !(pa == pb || strings.HasPrefix(pa, pb+"/") || strings.HasPrefix(pb, pa+"/"))
	}
	return false
}

// parseBlock parses an ipBlocks entry: an address or a CIDR range.
func parseBlock(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

// ipCovers: the outer range contains the inner one.
func ipCovers(outer, inner string) bool {
	o, ok1 := parseBlock(outer)
	i, ok2 := parseBlock(inner)
	if !ok1 || !ok2 {
		return outer == inner
	}
	return o.Addr().Is4() == i.Addr().Is4() && o.Bits() <= i.Bits() && o.Contains(i.Addr())
}

// ipDisjoint: the ranges do not overlap.
func ipDisjoint(a, b string) bool {
	pa, ok1 := parseBlock(a)
	pb, ok2 := parseBlock(b)
	if !ok1 || !ok2 {
		return false
	}
	return !pa.Overlaps(pb)
}

// field is one list field of a rule, with its not-list.
type field struct {
	name     string // "from.services"
	notName  string // "from.notServices"
	pos, neg []string
	kind     kind
}

// sourceFields returns the fields of a from; nil gives nil.
func sourceFields(s *config.Source) []field {
	if s == nil {
		return nil
	}
	return []field{
		{"from.services", "from.notServices", s.Services, s.NotServices, serviceKind},
		{"from.identities", "from.notIdentities", s.Identities, s.NotIdentities, identityKind},
		{"from.namespaces", "from.notNamespaces", s.Namespaces, s.NotNamespaces, anyRunKind},
		{"from.requestPrincipals", "from.notRequestPrincipals", s.RequestPrincipals, s.NotRequestPrincipals, anyRunKind},
		{"from.ipBlocks", "from.notIpBlocks", s.IPBlocks, s.NotIPBlocks, ipKind},
	}
}

// operationFields returns the fields of a to; nil gives nil.
func operationFields(o *config.Operation) []field {
	if o == nil {
		return nil
	}
	return []field{
		{"to.methods", "to.notMethods", o.Methods, o.NotMethods, methodKind},
		{"to.hosts", "to.notHosts", o.Hosts, o.NotHosts, hostKind},
		{"to.ports", "to.notPorts", portStrings(o.Ports), portStrings(o.NotPorts), portKind},
		{"to.paths", "to.notPaths", o.Paths, o.NotPaths, pathKind},
	}
}

// fieldCovers reports whether every value the inner field accepts the
// outer field accepts too. outer and inner are the same field of two rules
// (inner nil: the inner rule has no such part, so it accepts everything).
func fieldCovers(outer field, inner *field) bool {
	var ipos, ineg []string
	if inner != nil {
		ipos, ineg = inner.pos, inner.neg
	}
	if len(outer.pos) > 0 {
		// Every value inner accepts matches one of its entries, each of
		// which an outer entry covers. An absent inner list accepts values
		// (even unknown ones) that no positive pattern covers.
		if len(ipos) == 0 {
			return false
		}
		for _, e := range ipos {
			if !slices.ContainsFunc(outer.pos, func(o string) bool { return outer.kind.covers(o, e) }) {
				return false
			}
		}
	}
	for _, n := range outer.neg {
		// A value inner accepts must match no outer exclusion: either inner
		// excludes at least as much, or inner only accepts values disjoint
		// from it.
		if slices.ContainsFunc(ineg, func(m string) bool { return outer.kind.covers(m, n) }) {
			continue
		}
		if len(ipos) > 0 && !slices.ContainsFunc(ipos, func(e string) bool { return !outer.kind.disjoint(n, e) }) {
			continue
		}
		return false
	}
	return true
}

// partCovers reports whether the outer from (or to) accepts everything the
// inner one does; a nil outer part accepts everything.
func partCovers(outer, inner []field, outerNil, innerNil bool) bool {
	if outerNil {
		return true
	}
	for i, of := range outer {
		if len(of.pos) == 0 && len(of.neg) == 0 {
			continue
		}
		if innerNil {
			if !fieldCovers(of, nil) {
				return false
			}
			continue
		}
		if !fieldCovers(of, &inner[i]) {
			return false
		}
	}
	return true
}

// ruleCovers reports whether every request that inner matches, outer
// matches too: its from and to cover inner's, and its when conditions are
// among inner's (a request inner matches made each of them true).
func ruleCovers(outer, inner *config.Rule) bool {
	for _, w := range outer.When {
		if !slices.ContainsFunc(inner.When, func(iw string) bool { return strings.TrimSpace(iw) == strings.TrimSpace(w) }) {
			return false
		}
	}
	return partCovers(sourceFields(outer.From), sourceFields(inner.From), outer.From == nil, inner.From == nil) &&
		partCovers(operationFields(outer.To), operationFields(inner.To), outer.To == nil, inner.To == nil)
}

// selectionCovers reports whether outer selects every workload inner
// selects: it is in inner's namespace or the root namespace, its selector
// service is empty or inner's, and its selector labels are among inner's.
func selectionCovers(outer, inner *config.AuthorizationPolicy) bool {
	ons, ins := outer.Metadata.Namespace, inner.Metadata.Namespace
	if ons != config.RootNamespace && ons != ins {
		return false
	}
	if s := outer.Spec.Selector.Service; s != "" {
		if ons == config.RootNamespace || ons != ins || inner.Spec.Selector.Service != s {
			return false
		}
	}
	for k, v := range outer.Spec.Selector.Labels {
		if got, ok := inner.Spec.Selector.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
