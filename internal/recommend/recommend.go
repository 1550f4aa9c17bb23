package recommend

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// MaxListed is the most denied or skipped edges a policy's header (or the
// file's) lists; the others are counted.
const MaxListed = 20

// namePrefix starts the name of every recommended policy.
const namePrefix = "recommended-"

// Reasons an edge is skipped, as the comments show them.
const (
	skipOutside  = "from outside the mesh (no SPIFFE ID)"
	skipEgress   = "egress: the destination is not a mesh service"
	skipOtherNS  = "the destination is in another namespace"
	skipErrors   = "every request failed with a 5xx answer: pass --include-errors to allow it"
	skipFew      = "fewer successful requests than --min-requests"
	skipCounts   = "the edge's counts are not valid"
	skipMethod   = "the method cannot be written in a policy"
	skipIdentity = "the source identity cannot be written in a policy"
	skipPath     = "the path cannot be written in a policy"
)

// Options say what to recommend.
type Options struct {
	// Namespace of the destination services. Required.
	Namespace string
	// Service limits the recommendation to this destination service of
	// Namespace. Empty: every service of Namespace.
	Service string
	// MinRequests: an edge with fewer successful requests is left out and
	// listed. Default (0): 1.
	MinRequests int64
	// Collapse: more than Collapse distinct literal values of one path
	// segment, for one caller and method, are replaced by '*' (see the
	// package doc). 0: never.
	Collapse int
	// DryRun sets dryRun: true on every policy, so that it is evaluated and
	// logged but not enforced.
	DryRun bool
	// IncludeErrors also allows edges every request of which failed with a
	// 5xx answer. Default: they are left out and listed.
	IncludeErrors bool
	// From and To are the window the edges were observed in, for the
	// headers. Zero: not shown.
	From, To time.Time
	// Live are the policies in force now (nil: unknown). The graph records
	// who called what, not the token, address, host, port or conditions
	// a live ALLOW rule also required: each policy's header lists the
	// enforced ALLOW rules selecting its service that require such
	// things, which the recommendation does not reproduce.
	Live []*config.AuthorizationPolicy
}

// Observed is one observed edge, or an aggregate of the edges with the same
// source, destination, method and path template.
type Observed struct {
	// Source is the caller's SPIFFE ID ("" from outside the mesh), and
	// SourceService its service, when known.
	Source        string
	SourceService string
	// Destination is "namespace/name", or an egress host.
	Destination string
	Method      string
	// Path is the path template; "" for a TCP tunnel.
	Path string
	// Count is the number of requests this note is about.
	Count int64
	// Allowed, in a denied edge, is the number of requests of the same
	// edge that were not denied: the template is then both denied and
	// allowed (by a DENY rule on some of its paths, a condition, or a
	// policy change during the window).
	Allowed int64
}

// Skipped is an observed edge left out of the recommendation, and why.
type Skipped struct {
	Observed
	// Reason says why, such as "from outside the mesh (no SPIFFE ID)".
	Reason string
}

// Source is one caller allowed by a recommended policy.
type Source struct {
	// ID is the caller's SPIFFE ID; Service its service, when known.
	ID      string
	Service string
	// Requests is the number of successful requests observed from it.
	Requests int64
	// Rule is the index of its first rule, and Rules the number of its
	// rules.
	Rule, Rules int
	// Tunnel: it opened TCP tunnels, so its rule has no "to".
	Tunnel bool
}

// Collapsed is a pattern made by Options.Collapse.
type Collapsed struct {
	// Source is the caller's SPIFFE ID, and Method the method, whose
	// paths were collapsed.
	Source string
	Method string
	// Pattern replaced Replaced observed path templates.
	Pattern  string
	Replaced int
}

// Policy is one recommended policy and what it was made from.
type Policy struct {
	// Policy is the AuthorizationPolicy, validated.
	Policy *config.AuthorizationPolicy
	// Service is the destination service's name.
	Service string
	// Requests is the number of successful requests the policy allows.
	Requests int64
	// Sources are the callers, in the order of their rules.
	Sources []Source
	// Prefixes are the patterns that allow every path below them (a final
	// "/*"), more than the one segment that was observed.
	Prefixes []string
	// Collapsed lists the patterns Options.Collapse made.
	Collapsed []Collapsed
	// Requirements are notes on live ALLOW rules selecting the service
	// that require more than the graph records (see Options.Live), at
	// most MaxListed.
	Requirements []string
	// StillAllowed are denied path templates (with the rule's methods,
	// comma-separated) that a prefix or glob of the policy allows and that
	// notPaths cannot exclude without excluding an observed, allowed path
	// too: the header warns about each.
	StillAllowed     []Observed
	StillAllowedMore int
	// Denied are the denied edges to the service, most denied first (at
	// most MaxListed); DeniedMore counts the others.
	Denied     []Observed
	DeniedMore int
	// Skipped are the other edges to the service that the policy does not
	// allow (at most MaxListed); SkippedMore counts the others.
	Skipped     []Skipped
	SkippedMore int
}

// Recommendation is the result of Recommend.
type Recommendation struct {
	// Options it was made with (defaults filled in).
	Options Options
	// Policies, by service name.
	Policies []Policy
	// Requests is the number of successful requests the policies allow.
	Requests int64
	// Denied and Skipped are the edges of the destinations that get no
	// policy, and the edges that belong to no destination of the namespace
	// (egress, other namespaces); at most MaxListed each, the others
	// counted.
	Denied      []Observed
	DeniedMore  int
	Skipped     []Skipped
	SkippedMore int
}

// obsKey identifies an aggregated edge.
type obsKey struct {
	source, dest, method, path string
}

// agg is an aggregated edge.
type agg struct {
	sourceService                 string
	requests, errors, denied, bad int64
}

// Recommend returns the least-privilege policies that allow the observed,
// successful edges to the services of opts.Namespace (see the package doc
// for what is left out). It fails with ErrInvalidOptions when opts are not
// valid, and with ErrNothingToRecommend, together with a Recommendation
// that lists what was seen, when no edge can be allowed. The edges are
// not modified.
func Recommend(edges []*config.Edge, opts Options) (*Recommendation, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if opts.MinRequests == 0 {
		opts.MinRequests = 1
	}
	rec := &Recommendation{Options: opts}

	// Aggregate edges with the same key (both ends may report one).
	aggs := map[obsKey]*agg{}
	for _, e := range edges {
		if e == nil {
			continue
		}
		s := &e.Status
		k := obsKey{s.Source, s.Destination, s.Method, s.Path}
		a := aggs[k]
		if a == nil {
			a = &agg{}
			aggs[k] = a
		}
		if a.sourceService == "" {
			a.sourceService = s.SourceService
		}
		if s.Requests < 0 || s.Errors < 0 || s.Denied < 0 || s.Errors+s.Denied > s.Requests {
			a.bad = satAdd(a.bad, max(s.Requests, 1))
			continue
		}
		a.requests = satAdd(a.requests, s.Requests)
		a.errors = satAdd(a.errors, s.Errors)
		a.denied = satAdd(a.denied, s.Denied)
	}

	dests := map[string]*destAcc{}
	var looseDenied []Observed
	var looseSkipped []Skipped
	for _, k := range slices.SortedFunc(maps.Keys(aggs), compareKeys) {
		a := aggs[k]
		obs := Observed{Source: k.source, SourceService: a.sourceService, Destination: k.dest, Method: k.method, Path: k.path}
		ref, err := identity.ParseServiceRef(k.dest, "")
		switch {
		case err != nil || !strings.Contains(k.dest, "/"):
			if opts.Service == "" {
				obs.Count = a.requests
				looseSkipped = append(looseSkipped, Skipped{obs, skipEgress})
			}
			continue
		case ref.Namespace != opts.Namespace:
			if opts.Service == "" {
				obs.Count = a.requests
				looseSkipped = append(looseSkipped, Skipped{obs, skipOtherNS})
			}
			continue
		case opts.Service != "" && ref.Name != opts.Service:
			continue
		}
		d := dests[ref.Name]
		if d == nil {
			d = &destAcc{service: ref.Name, sources: map[string]*sourceAcc{}}
			dests[ref.Name] = d
		}
		d.add(obs, a, opts)
	}

	for _, name := range slices.Sorted(maps.Keys(dests)) {
		d := dests[name]
		if len(d.sources) == 0 {
			looseDenied = append(looseDenied, d.denied...)
			looseSkipped = append(looseSkipped, d.skipped...)
			continue
		}
		p, ok, err := d.policy(opts)
		if err != nil {
			return nil, err
		}
		if !ok { // every path of every caller was skipped
			looseDenied = append(looseDenied, d.denied...)
			looseSkipped = append(looseSkipped, d.skipped...)
			continue
		}
		rec.Policies = append(rec.Policies, p)
		rec.Requests = satAdd(rec.Requests, p.Requests)
	}
	rec.Denied, rec.DeniedMore = bound(sortDenied(looseDenied))
	rec.Skipped, rec.SkippedMore = bound(sortSkipped(looseSkipped))
	if len(rec.Policies) == 0 {
		what := "namespace " + opts.Namespace
		if opts.Service != "" {
			what = "service " + opts.Namespace + "/" + opts.Service
		}
		msg := "no allowed, successful traffic to " + what + " was observed"
		if n, k := len(looseDenied), len(looseSkipped); n+k > 0 {
			msg += fmt.Sprintf(", only %s and %s", plural(n, "denied edge", "denied edges"), plural(k, "skipped edge", "skipped edges"))
		}
		return rec, fmt.Errorf("%w: %s", ErrNothingToRecommend, msg)
	}
	return rec, nil
}

// check validates the options.
func (o *Options) check() error {
	if o.Namespace == "" {
		return fmt.Errorf("%w: namespace: required", ErrInvalidOptions)
	}
	if err := identity.ValidateName(o.Namespace); err != nil {
		return fmt.Errorf("%w: namespace: %v", ErrInvalidOptions, err)
	}
	if o.Service != "" {
		if err := identity.ValidateName(o.Service); err != nil {
			return fmt.Errorf("%w: service: %v", ErrInvalidOptions, err)
		}
	}
	if o.MinRequests < 0 {
		return fmt.Errorf("%w: min-requests: must not be negative", ErrInvalidOptions)
	}
	if o.Collapse < 0 {
		return fmt.Errorf("%w: collapse: must not be negative", ErrInvalidOptions)
	}
	if !o.From.IsZero() && !o.To.IsZero() && o.To.Before(o.From) {
		return fmt.Errorf("%w: window: ends before it starts", ErrInvalidOptions)
	}
	return nil
}

func compareKeys(a, b obsKey) int {
	return cmp.Or(cmp.Compare(a.dest, b.dest), cmp.Compare(a.source, b.source),
		cmp.Compare(a.method, b.method), cmp.Compare(a.path, b.path))
}

// sourceAcc is what one caller did to one destination.
type sourceAcc struct {
	id, service    string
	tunnel         bool
	tunnelRequests int64
	// ops maps a method to its path templates and their successful
	// requests.
	ops map[string]map[string]int64
}

// destAcc is what was observed of one destination service.
type destAcc struct {
	service string
	sources map[string]*sourceAcc
	// denied are the denied edges of every caller; skipped the edges left
	// out.
	denied  []Observed
	skipped []Skipped
}

// add files one aggregated edge.
func (d *destAcc) add(obs Observed, a *agg, opts Options) {
	if a.bad > 0 {
		o := obs
		o.Count = a.bad
		d.skipped = append(d.skipped, Skipped{o, skipCounts})
	}
	if a.denied > 0 {
		o := obs
		o.Count = a.denied
		o.Allowed = a.requests - a.denied
		d.denied = append(d.denied, o)
	}
	ok := a.requests - a.denied - a.errors
	if opts.IncludeErrors {
		ok += a.errors
	}
	skip := func(reason string, n int64) {
		o := obs
		o.Count = n
		d.skipped = append(d.skipped, Skipped{o, reason})
	}
	switch {
	case a.requests-a.denied <= 0:
		return // denied (listed) or nothing
	case ok <= 0:
		skip(skipErrors, a.errors)
		return
	case ok < opts.MinRequests:
		skip(skipFew, ok)
		return
	}
	if _, err := spiffeid.FromString(obs.Source); err != nil {
		skip(skipOutside, ok)
		return
	}
	if !probe(config.Rule{From: &config.Source{Identities: []string{obs.Source}}}) {
		skip(skipIdentity, ok)
		return
	}
	tunnel := obs.Path == ""
	if !tunnel {
		if obs.Method == "*" || !probe(config.Rule{To: &config.Operation{Methods: []string{obs.Method}}}) {
			skip(skipMethod, ok)
			return
		}
		if !strings.HasPrefix(obs.Path, "/") {
			skip(skipNotAbsolute, ok)
			return
		}
	}
	s := d.sources[obs.Source]
	if s == nil {
		s = &sourceAcc{id: obs.Source, service: obs.SourceService, ops: map[string]map[string]int64{}}
		d.sources[obs.Source] = s
	}
	if tunnel {
		s.tunnel = true
		s.tunnelRequests = satAdd(s.tunnelRequests, ok)
		return
	}
	if s.ops[obs.Method] == nil {
		s.ops[obs.Method] = map[string]int64{}
	}
	s.ops[obs.Method][obs.Path] = satAdd(s.ops[obs.Method][obs.Path], ok)
}

// probe reports whether a policy holding only rule r would be valid.
func probe(r config.Rule) bool {
	p := &config.AuthorizationPolicy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAuthorizationPolicy},
		Metadata: config.ObjectMeta{Name: "probe", Namespace: "probe"},
		Spec:     config.AuthorizationPolicySpec{Rules: []config.Rule{r}},
	}
	return len(p.Validate()) == 0
}

// opPair is one allowed method on one path pattern.
type opPair struct{ method, pattern string }

// policy builds the recommended policy of the destination; ok is false
// when no rule is left (every path was skipped).
func (d *destAcc) policy(opts Options) (_ Policy, ok bool, _ error) {
	p := Policy{Service: d.service}
	// Denied templates by caller and method, for notPaths.
	deniedBy := map[string]map[string][]string{}
	for _, o := range d.denied {
		if deniedBy[o.Source] == nil {
			deniedBy[o.Source] = map[string][]string{}
		}
		deniedBy[o.Source][o.Method] = append(deniedBy[o.Source][o.Method], o.Path)
	}
	prefixes := map[string]bool{}
	var rules []config.Rule
	for _, id := range slices.Sorted(maps.Keys(d.sources)) {
		s := d.sources[id]
		src := Source{ID: id, Service: s.service, Rule: len(rules), Tunnel: s.tunnel}
		from := &config.Source{Identities: []string{id}}
		if s.tunnel {
			// A tunnel carries no method or path: a rule without "to",
			// which covers the caller's HTTP requests too.
			rules = append(rules, config.Rule{From: from})
			src.Rules = 1
			for _, m := range slices.Sorted(maps.Keys(deniedBy[id])) {
				for _, t := range deniedBy[id][m] {
					if t != "" {
						p.StillAllowed = append(p.StillAllowed, Observed{Source: id, SourceService: s.service,
							Destination: opts.Namespace + "/" + d.service, Method: m, Path: t})
					}
				}
			}
			for _, ts := range s.ops {
				for _, n := range ts {
					src.Requests = satAdd(src.Requests, n)
				}
			}
			src.Requests = satAdd(src.Requests, s.tunnelRequests)
			p.Sources = append(p.Sources, src)
			p.Requests = satAdd(p.Requests, src.Requests)
			continue
		}
		// Allowed (method, pattern) pairs, and the allowed templates by
		// method (for notPaths).
		pairs := map[opPair]bool{}
		allowedTemplates := map[string][]string{}
		for _, m := range slices.Sorted(maps.Keys(s.ops)) {
			templates := slices.Sorted(maps.Keys(s.ops[m]))
			replaced := collapse(templates, opts.Collapse)
			made := map[string]int{}
			for _, t := range templates {
				allowedTemplates[m] = append(allowedTemplates[m], t)
				nt := t
				if r, ok := replaced[t]; ok {
					nt = r
					made[r]++
				}
				pat, prefix, reason := pathPattern(nt)
				if reason == "" && !probe(config.Rule{To: &config.Operation{Paths: []string{pat}}}) {
					reason = skipPath
				}
				if reason != "" {
					d.skipped = append(d.skipped, Skipped{Observed{Source: id, SourceService: s.service,
						Destination: opts.Namespace + "/" + d.service, Method: m, Path: t, Count: s.ops[m][t]}, reason})
					continue
				}
				if prefix {
					prefixes[pat] = true
				}
				src.Requests = satAdd(src.Requests, s.ops[m][t])
				pairs[opPair{m, pat}] = true
			}
			for _, pat := range slices.Sorted(maps.Keys(made)) {
				p.Collapsed = append(p.Collapsed, Collapsed{Source: id, Method: m, Pattern: pat, Replaced: made[pat]})
			}
		}
		dedup(pairs)
		if len(pairs) == 0 {
			continue // every path was skipped
		}
		// Group patterns by their set of methods.
		methodsOf := map[string][]string{}
		for pr := range pairs {
			methodsOf[pr.pattern] = append(methodsOf[pr.pattern], pr.method)
		}
		groups := map[string][]string{}
		for pat, ms := range methodsOf {
			slices.Sort(ms)
			k := strings.Join(ms, ",")
			groups[k] = append(groups[k], pat)
		}
		for _, k := range slices.Sorted(maps.Keys(groups)) {
			methods := strings.Split(k, ",")
			paths := slices.Sorted(slices.Values(groups[k]))
			var allowed []string
			for _, m := range methods {
				allowed = append(allowed, allowedTemplates[m]...)
				if m == "GET" {
					allowed = append(allowed, allowedTemplates["HEAD"]...)
				}
			}
			var deniedT []string
			for m, ts := range deniedBy[id] {
				if slices.Contains(methods, m) || (m == "HEAD" && slices.Contains(methods, "GET")) {
					deniedT = append(deniedT, ts...)
				}
			}
			excluded, kept := notPaths(paths, deniedT, allowed)
			for _, t := range kept {
				p.StillAllowed = append(p.StillAllowed, Observed{Source: id, SourceService: s.service,
					Destination: opts.Namespace + "/" + d.service, Method: k, Path: t})
			}
			op := &config.Operation{Methods: methods, Paths: paths, NotPaths: excluded}
			rules = append(rules, config.Rule{From: from, To: op})
			src.Rules++
		}
		p.Sources = append(p.Sources, src)
		p.Requests = satAdd(p.Requests, src.Requests)
	}
	p.Prefixes = slices.Sorted(maps.Keys(prefixes))
	p.StillAllowed, p.StillAllowedMore = bound(p.StillAllowed)
	p.Requirements, _ = bound(requirements(opts.Live, opts.Namespace, d.service))
	p.Denied, p.DeniedMore = bound(sortDenied(d.denied))
	p.Skipped, p.SkippedMore = bound(sortSkipped(d.skipped))
	if len(rules) == 0 {
		return p, false, nil
	}
	p.Policy = &config.AuthorizationPolicy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAuthorizationPolicy},
		Metadata: config.ObjectMeta{Name: PolicyName(d.service), Namespace: opts.Namespace},
		Spec: config.AuthorizationPolicySpec{
			Selector: config.PolicySelector{Service: d.service},
			Action:   config.ActionAllow,
			DryRun:   opts.DryRun,
			Rules:    rules,
		},
	}
	if errs := p.Policy.Validate(); len(errs) > 0 {
		return p, false, fmt.Errorf("recommend %s/%s: generated policy is not valid: %w", opts.Namespace, d.service, errs)
	}
	return p, true, nil
}

// dedup removes the pairs another pair makes redundant: same method (or
// GET for HEAD, which a GET rule matches too) on a pattern that covers it.
func dedup(pairs map[opPair]bool) {
	byMethod := map[string][]string{}
	for pr := range pairs {
		byMethod[pr.method] = append(byMethod[pr.method], pr.pattern)
	}
	index := map[string]*patternIndex{}
	for m, ps := range byMethod {
		index[m] = newPatternIndex(ps)
	}
	get := index["GET"]
	for pr := range pairs {
		redundant := index[pr.method].covered(pr.pattern)
		if !redundant && pr.method == "HEAD" && get != nil {
			redundant = pairs[opPair{"GET", pr.pattern}] || get.covered(pr.pattern)
		}
		if redundant {
			delete(pairs, pr)
		}
	}
}

// notPaths returns the denied templates that the rule's paths would allow
// and that can be excluded without excluding an allowed template, as
// patterns, sorted; and the denied templates that the rule's paths would
// allow but that cannot be excluded so.
func notPaths(paths, denied, allowed []string) (out, kept []string) {
	if len(denied) == 0 {
		return nil, nil
	}
	rule := newPatternIndex(paths)
	ok := newTemplateIndex(allowed)
	for _, t := range denied {
		if t == "" || ok.set[t] || !rule.matches(t) {
			continue // a tunnel, partly allowed (listed, not excluded), or not allowed by the rule
		}
		pat, _, reason := pathPattern(t)
		if reason != "" || ok.matchedBy(pat) || !probe(config.Rule{To: &config.Operation{NotPaths: []string{pat}}}) {
			kept = append(kept, t)
			continue
		}
		out = append(out, pat)
	}
	slices.Sort(out)
	slices.Sort(kept)
	return slices.Compact(out), slices.Compact(kept)
}

// PolicyName returns the name of the policy recommended for service:
// "recommended-<service>", shortened with a digest when that is longer than
// a name may be.
func PolicyName(service string) string {
	name := namePrefix + service
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(service))
	head := strings.TrimRight(service[:63-len("rec-")-1-8], "-")
	return "rec-" + head + "-" + hex.EncodeToString(sum[:4])
}

func sortDenied(os []Observed) []Observed {
	slices.SortFunc(os, func(a, b Observed) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Destination, b.Destination),
			cmp.Compare(a.Source, b.Source), cmp.Compare(a.Method, b.Method), cmp.Compare(a.Path, b.Path))
	})
	return os
}

func sortSkipped(ss []Skipped) []Skipped {
	slices.SortFunc(ss, func(a, b Skipped) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Destination, b.Destination),
			cmp.Compare(a.Source, b.Source), cmp.Compare(a.Method, b.Method), cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Reason, b.Reason))
	})
	return ss
}

// bound keeps the first MaxListed entries and counts the others.
func bound[T any](s []T) ([]T, int) {
	if len(s) <= MaxListed {
		return s, 0
	}
	return s[:MaxListed], len(s) - MaxListed
}

// requirements describes the enforced ALLOW rules of live that can select
// service ns/name and require what the graph does not record.
func requirements(live []*config.AuthorizationPolicy, ns, name string) []string {
	var out []string
	for _, lp := range live {
		if lp == nil || lp.Spec.DryRun || (lp.Spec.Action != "" && lp.Spec.Action != config.ActionAllow) {
			continue
		}
		lns, sel := lp.Metadata.Namespace, lp.Spec.Selector.Service
		if (lns != ns && lns != config.RootNamespace) || (sel != "" && (lns != ns || sel != name)) {
			continue
		}
		var base []string
		if len(lp.Spec.Selector.Labels) > 0 {
			base = append(base, "spec.selector.labels")
		}
		for i, r := range lp.Spec.Rules {
			fields := slices.Clone(base)
			if f := r.From; f != nil {
				fields = appendIf(fields, "from.requestPrincipals", len(f.RequestPrincipals) > 0)
				fields = appendIf(fields, "from.notRequestPrincipals", len(f.NotRequestPrincipals) > 0)
				fields = appendIf(fields, "from.ipBlocks", len(f.IPBlocks) > 0)
				fields = appendIf(fields, "from.notIpBlocks", len(f.NotIPBlocks) > 0)
			}
			if t := r.To; t != nil {
				fields = appendIf(fields, "to.hosts", len(t.Hosts) > 0)
				fields = appendIf(fields, "to.notHosts", len(t.NotHosts) > 0)
				fields = appendIf(fields, "to.ports", len(t.Ports) > 0)
				fields = appendIf(fields, "to.notPorts", len(t.NotPorts) > 0)
			}
			fields = appendIf(fields, "when", len(r.When) > 0)
			if len(fields) > 0 {
				out = append(out, fmt.Sprintf("%s/%s rule %d requires %s", lns, lp.Metadata.Name, i, strings.Join(fields, ", ")))
			}
		}
	}
	slices.Sort(out)
	return out
}

func appendIf(s []string, v string, ok bool) []string {
	if ok {
		return append(s, v)
	}
	return s
}

// satAdd adds two non-negative counts, saturating instead of overflowing.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
