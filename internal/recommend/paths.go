package recommend

import (
	"slices"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/graph"
)

// Reasons a path template is not turned into a pattern.
const (
	skipOverflow    = "the proxy folded this caller's paths together (too many distinct paths): allow them by hand"
	skipLiteralStar = "the path holds a literal '*', which the policy language reads as a glob"
	skipRootGlob    = `the path "/*" (an identifier at the root) cannot be allowed without allowing every path: allow it by hand`
	skipNotAbsolute = "the path does not start with '/'"
	skipCut         = "the proxy cut the path at its length limit, so it names no exact path: allow it by hand"
)

// pathPattern returns the policy pattern for the path template t (non-empty),
// whether it is a prefix pattern (a final "/*" that is the only '*', which
// the policy language reads as "this prefix and everything below"), or why
// it cannot be expressed.
func pathPattern(t string) (pattern string, prefix bool, skip string) {
	switch {
	case !strings.HasPrefix(t, "/"):
		return "", false, skipNotAbsolute
	case strings.Contains(t, "**"):
		return "", false, skipOverflow
	case len(t) >= graph.MaxPath:
		return "", false, skipCut
	case t == "/*":
		return "", false, skipRootGlob
	}
	for seg := range strings.SplitSeq(t[1:], "/") {
		if seg != "*" && strings.Contains(seg, "*") {
			return "", false, skipLiteralStar
		}
	}
	return t, isPrefix(t), ""
}

// isPrefix reports whether the policy language reads pattern p as a prefix.
func isPrefix(p string) bool {
	return strings.HasSuffix(p, "/*") && strings.Count(p, "*") == 1
}

// covers reports whether every path that pattern b matches is matched by
// pattern a, for the patterns this package writes: exact paths, prefixes
// ("/p/*", matching "/p" and everything below "/p/") and one-segment globs
// whose '*' are whole segments.
func covers(a, b string) bool {
	if a == b {
		return true
	}
	if isPrefix(a) {
		bare := strings.TrimSuffix(a, "/*")
		if b == bare {
			return true
		}
		if strings.HasPrefix(b, bare+"/") {
			// Every path b matches starts with b's literal text up to
			// its first '*', which is at or after bare+"/".
			return true
		}
		return false
	}
	if isPrefix(b) || !strings.Contains(a, "*") {
		return false
	}
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	if len(as) != len(bs) {
		return false
	}
	for i := range as {
		if as[i] != "*" && as[i] != bs[i] {
			return false
		}
	}
	return true
}

// matchesConcrete reports whether pattern p (exact, prefix or one-segment
// glob) matches some path of template t, a path whose "*" segments stand
// for identifier-like values. A literal segment of p never matches a "*"
// segment of t: the proxy templates identifier-like segments, so a literal
// segment it kept is never one of them.
func matchesConcrete(p, t string) bool {
	ts := strings.Split(t, "/")
	if isPrefix(p) {
		bs := strings.Split(strings.TrimSuffix(p, "/*"), "/")
		if len(ts) < len(bs) {
			return false
		}
		for i := range bs {
			if bs[i] != ts[i] {
				return false
			}
		}
		return true
	}
	ps := strings.Split(p, "/")
	if len(ps) != len(ts) {
		return false
	}
	for i := range ps {
		if ps[i] != "*" && ps[i] != ts[i] {
			return false
		}
	}
	return true
}

// collapse replaces, in the path templates of one caller and one method,
// every group of more than n templates that differ only in one literal
// segment by the group's template with '*' in that segment, from the last
// segment to the first. It never makes "/*". It returns, for each template
// replaced, the template that replaces it.
func collapse(templates []string, n int) map[string]string {
	if n <= 0 || len(templates) <= n {
		return nil
	}
	set := map[string][]string{} // current template -> its segments
	maxLen := 0
	for _, t := range templates {
		if !strings.HasPrefix(t, "/") {
			continue
		}
		segs := strings.Split(t[1:], "/")
		set[t] = segs
		maxLen = max(maxLen, len(segs))
	}
	replaced := map[string]string{}
	for i := maxLen - 1; i >= 0; i-- {
		groups := map[string][]string{}
		for t, segs := range set {
			if len(segs) <= i || len(segs) == 1 || strings.Contains(segs[i], "*") {
				continue // too short, would be "/*", or already a glob
			}
			k := slices.Clone(segs)
			k[i] = "*"
			key := "/" + strings.Join(k, "/")
			groups[key] = append(groups[key], t)
		}
		for key, members := range groups {
			if len(members) <= n {
				continue
			}
			for _, m := range members {
				delete(set, m)
				replaced[m] = key
			}
			set[key] = strings.Split(key[1:], "/")
		}
	}
	// Resolve chains: a template replaced by one that was replaced later.
	for old, nu := range replaced {
		for {
			next, ok := replaced[nu]
			if !ok {
				break
			}
			nu = next
		}
		replaced[old] = nu
	}
	return replaced
}

// patternIndex answers, for many paths, which patterns of a set match or
// cover them, without comparing every pair: exact patterns in a set,
// prefixes by their bare path (looked up at each '/' of the path), and
// globs by their number of segments.
type patternIndex struct {
	exact    map[string]bool
	prefixes map[string]bool // "/p" for "/p/*"
	globs    map[int][]string
}

func newPatternIndex(patterns []string) *patternIndex {
	ix := &patternIndex{exact: map[string]bool{}, prefixes: map[string]bool{}, globs: map[int][]string{}}
	for _, p := range patterns {
		switch {
		case isPrefix(p):
			ix.prefixes[strings.TrimSuffix(p, "/*")] = true
		case strings.Contains(p, "*"):
			n := strings.Count(p, "/")
			ix.globs[n] = append(ix.globs[n], p)
		default:
			ix.exact[p] = true
		}
	}
	return ix
}

// prefixOver reports whether a prefix pattern other than not covers path p
// (a pattern or a template): p is its bare path, or lies below it.
func (ix *patternIndex) prefixOver(p, not string) bool {
	if len(ix.prefixes) == 0 {
		return false
	}
	if ix.prefixes[p] && p+"/*" != not {
		return true
	}
	for i := 1; i < len(p); i++ {
		if p[i] == '/' && ix.prefixes[p[:i]] && p[:i]+"/*" != not {
			return true
		}
	}
	return false
}

// covered reports whether a pattern of the index other than p itself
// covers pattern p (see covers).
func (ix *patternIndex) covered(p string) bool {
	if ix.prefixOver(p, p) {
		return true
	}
	if isPrefix(p) {
		return false
	}
	for _, g := range ix.globs[strings.Count(p, "/")] {
		if g != p && covers(g, p) {
			return true
		}
	}
	return false
}

// matches reports whether a pattern of the index matches some path of
// template t (see matchesConcrete).
func (ix *patternIndex) matches(t string) bool {
	if ix.exact[t] || ix.prefixOver(t, "") {
		return true
	}
	for _, g := range ix.globs[strings.Count(t, "/")] {
		if matchesConcrete(g, t) {
			return true
		}
	}
	return false
}

// templateIndex answers whether a pattern matches some path of any of a
// set of templates (see matchesConcrete).
type templateIndex struct {
	set    map[string]bool
	sorted []string
	byLen  map[int][]string
}

func newTemplateIndex(templates []string) *templateIndex {
	ix := &templateIndex{set: map[string]bool{}, byLen: map[int][]string{}}
	for _, t := range templates {
		if ix.set[t] {
			continue
		}
		ix.set[t] = true
		ix.sorted = append(ix.sorted, t)
		n := strings.Count(t, "/")
		ix.byLen[n] = append(ix.byLen[n], t)
	}
	slices.Sort(ix.sorted)
	return ix
}

// matchedBy reports whether pattern p matches some path of a template of
// the index.
func (ix *templateIndex) matchedBy(p string) bool {
	switch {
	case isPrefix(p):
		bare := strings.TrimSuffix(p, "/*")
		if ix.set[bare] {
			return true
		}
		// The templates below bare sort right after bare+"/".
		i, _ := slices.BinarySearch(ix.sorted, bare+"/")
		return i < len(ix.sorted) && strings.HasPrefix(ix.sorted[i], bare+"/")
	case !strings.Contains(p, "*"):
		return ix.set[p]
	}
	for _, t := range ix.byLen[strings.Count(p, "/")] {
		if matchesConcrete(p, t) {
			return true
		}
	}
	return false
}
