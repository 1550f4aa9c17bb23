package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/condition"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

// effect is what a compiled policy does.
type effect uint8

// Effects.
const (
	effectAllow effect = iota
	effectDeny
	effectAudit
)

// effectOf returns the effect of action a: ALLOW or empty (the default)
// allows, AUDIT audits, and anything else denies, so an action this package
// does not know fails closed.
func effectOf(a config.Action) effect {
	switch a {
	case config.ActionAllow, "":
		return effectAllow
	case config.ActionAudit:
		return effectAudit
	}
	return effectDeny
}

// String returns the action as policies spell it.
func (e effect) String() string {
	switch e {
	case effectAllow:
		return string(config.ActionAllow)
	case effectAudit:
		return string(config.ActionAudit)
	}
	return string(config.ActionDeny)
}

// compiledPolicy is one selecting policy. It is immutable, so Indexes and
// Sets share it.
type compiledPolicy struct {
	ref    string // "ns/name"
	effect effect
	dryRun bool
	rules  []compiledRule
}

// field names one from or to field of a rule.
type field uint8

// Fields, in the order a rule checks them: cheap and selective first.
const (
	fieldMethods field = iota
	fieldNotMethods
	fieldPaths
	fieldNotPaths
	fieldPorts
	fieldNotPorts
	fieldHosts
	fieldNotHosts
	fieldIdentities
	fieldNotIdentities
	fieldServices
	fieldNotServices
	fieldNamespaces
	fieldNotNamespaces
	fieldPrincipals
	fieldNotPrincipals
	fieldIPBlocks
	fieldNotIPBlocks
)

// fieldNames are the fields as policies spell them.
var fieldNames = [...]string{
	fieldMethods:       "to.methods",
	fieldNotMethods:    "to.notMethods",
	fieldPaths:         "to.paths",
	fieldNotPaths:      "to.notPaths",
	fieldPorts:         "to.ports",
	fieldNotPorts:      "to.notPorts",
	fieldHosts:         "to.hosts",
	fieldNotHosts:      "to.notHosts",
	fieldIdentities:    "from.identities",
	fieldNotIdentities: "from.notIdentities",
	fieldServices:      "from.services",
	fieldNotServices:   "from.notServices",
	fieldNamespaces:    "from.namespaces",
	fieldNotNamespaces: "from.notNamespaces",
	fieldPrincipals:    "from.requestPrincipals",
	fieldNotPrincipals: "from.notRequestPrincipals",
	fieldIPBlocks:      "from.ipBlocks",
	fieldNotIPBlocks:   "from.notIpBlocks",
}

// String returns the field's path within a rule.
func (f field) String() string { return fieldNames[f] }

// negated reports whether f is a notX field.
func (f field) negated() bool { return f%2 == 1 }

// identityBased reports whether f is known to the caller's sidecar too:
// it depends only on the caller's SPIFFE ID and services.
func (f field) identityBased() bool {
	return f >= fieldIdentities && f <= fieldNotNamespaces
}

// compiledRule is one rule of a compiledPolicy.
type compiledRule struct {
	index int // within the policy's rules
	// checks are the fields the rule constrains, in field order.
	checks []field
	// methodFilter, when hasMethodFilter, holds every well-known method
	// the rule's methods list can match: a request with another
	// well-known method skips the rule at once.
	methodFilter    methodMask
	hasMethodFilter bool

	services, notServices     *patternSet
	identities, notIdentities *patternSet
	namespaces, notNamespaces *patternSet
	principals, notPrincipals *patternSet
	ipBlocks, notIPBlocks     *prefixSet
	methods, notMethods       *methodSet
	hosts, notHosts           *hostSet
	ports, notPorts           *portSet
	paths, notPaths           *pathSet

	// when are the compiled conditions, and whenSrc their text.
	when    []*condition.Program
	whenSrc []string
}

// compilePolicy compiles p, a policy that passed validation; the error
// (a when expression or an IP block that does not compile) names the
// policy and the field.
func compilePolicy(p *config.AuthorizationPolicy) (*compiledPolicy, error) {
	cp := &compiledPolicy{
		ref:    p.Metadata.Namespace + "/" + p.Metadata.Name,
		effect: effectOf(p.Spec.Action),
		dryRun: p.Spec.DryRun,
		rules:  make([]compiledRule, len(p.Spec.Rules)),
	}
	for i := range p.Spec.Rules {
		rl, err := compileRule(fmt.Sprintf("spec.rules[%d]", i), i, &p.Spec.Rules[i])
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", cp.ref, err)
		}
		cp.rules[i] = rl
	}
	return cp, nil
}

// compileRule compiles the rule at path.
func compileRule(path string, index int, r *config.Rule) (compiledRule, error) {
	rl := compiledRule{index: index}
	patterns := func(f field, list []string, anyRun bool) *patternSet {
		if len(list) == 0 {
			return nil
		}
		rl.checks = append(rl.checks, f)
		return compilePatterns(list, anyRun)
	}
	if s := r.From; s != nil {
		rl.services = patterns(fieldServices, s.Services, false)
		rl.notServices = patterns(fieldNotServices, s.NotServices, false)
		rl.identities = patterns(fieldIdentities, s.Identities, false)
		rl.notIdentities = patterns(fieldNotIdentities, s.NotIdentities, false)
		rl.namespaces = patterns(fieldNamespaces, s.Namespaces, true)
		rl.notNamespaces = patterns(fieldNotNamespaces, s.NotNamespaces, true)
		rl.principals = patterns(fieldPrincipals, s.RequestPrincipals, true)
		rl.notPrincipals = patterns(fieldNotPrincipals, s.NotRequestPrincipals, true)
		for _, b := range []struct {
			f    field
			list []string
			dst  **prefixSet
		}{{fieldIPBlocks, s.IPBlocks, &rl.ipBlocks}, {fieldNotIPBlocks, s.NotIPBlocks, &rl.notIPBlocks}} {
			if len(b.list) == 0 {
				continue
			}
			ps, err := compileIPBlocks(path+"."+b.f.String(), b.list)
			if err != nil {
				return rl, err
			}
			*b.dst = ps
			rl.checks = append(rl.checks, b.f)
		}
	}
	if o := r.To; o != nil {
		if len(o.Methods) > 0 {
			rl.methods = compileMethods(o.Methods)
			rl.checks = append(rl.checks, fieldMethods)
			rl.methodFilter, rl.hasMethodFilter = rl.methods.known, !rl.methods.any
		}
		if len(o.NotMethods) > 0 {
			rl.notMethods = compileMethods(o.NotMethods)
			rl.checks = append(rl.checks, fieldNotMethods)
		}
		if len(o.Paths) > 0 {
			rl.paths = compilePaths(o.Paths)
			rl.checks = append(rl.checks, fieldPaths)
		}
		if len(o.NotPaths) > 0 {
			rl.notPaths = compilePaths(o.NotPaths)
			rl.checks = append(rl.checks, fieldNotPaths)
		}
		if len(o.Ports) > 0 {
			rl.ports = &portSet{ports: slices.Clone(o.Ports)}
			rl.checks = append(rl.checks, fieldPorts)
		}
		if len(o.NotPorts) > 0 {
			rl.notPorts = &portSet{ports: slices.Clone(o.NotPorts)}
			rl.checks = append(rl.checks, fieldNotPorts)
		}
		if len(o.Hosts) > 0 {
			rl.hosts = compileHosts(o.Hosts)
			rl.checks = append(rl.checks, fieldHosts)
		}
		if len(o.NotHosts) > 0 {
			rl.notHosts = compileHosts(o.NotHosts)
			rl.checks = append(rl.checks, fieldNotHosts)
		}
	}
	slices.Sort(rl.checks)
	for i, expr := range r.When {
		p, err := condition.Compile(expr)
		if err != nil {
			return rl, fmt.Errorf("%s.when[%d]: %w", path, i, err)
		}
		rl.when = append(rl.when, p)
		rl.whenSrc = append(rl.whenSrc, expr)
	}
	return rl, nil
}

// facts are what Decide works out once per request. They live on Decide's
// stack.
type facts struct {
	r *Request
	// method is r.Method; methodBit its well-known bit (0 for others),
	// and, when it has a lower-case letter (methodLower), methodFold the
	// bit of the well-known method it names in another case.
	method                string
	methodBit, methodFold methodMask
	methodLower           bool
	// methodMatch is methodBit, plus GET's bit for a HEAD (which rules
	// naming GET match).
	methodMatch methodMask
	// host is r.Host normalized; ns the namespace of r.Source.ID ("" when
	// it is not a workload ID); ip the peer address unmapped, invalid when
	// unknown; servicesKnown whether the caller has a non-empty service.
	host string
	ns   string
	// pathAlt is r.Path without matrix parameters when it has any ("" when
	// it has none): paths and notPaths see both readings, the one that
	// denies more winning.
	pathAlt       string
	ip            netip.Addr
	servicesKnown bool
	// vars are the condition variables, built on first use; condErr
	// records that a condition failed to evaluate.
	vars    *lazyVars
	condErr bool
}

// newFacts works out the facts of r.
func newFacts(r *Request) facts {
	q := facts{
		r:         r,
		method:    r.Method,
		methodBit: methodBit(r.Method),
		host:      normalizeHost(r.Host),
		ns:        workloadNamespace(r.Source.ID),
	}
	q.methodMatch = q.methodBit
	if q.methodBit == methodHead {
		q.methodMatch |= methodGet
	}
	if q.methodBit == 0 && hasLower(r.Method) {
		q.methodLower = true
		q.methodFold = methodBitFold(r.Method)
	}
	if ip := r.Source.IP; ip.IsValid() {
		q.ip = ip.Unmap().WithZone("")
	}
	for _, s := range r.Source.Services {
		if s != "" {
			q.servicesKnown = true
			break
		}
	}
	if strings.IndexByte(r.Path, ';') >= 0 {
		q.pathAlt = withoutMatrixParams(r.Path)
	}
	return q
}

// withoutMatrixParams returns p with the ';' parameters of every segment
// removed and the result normalized ("/admin;x/secret;y" is
// "/admin/secret"): the path as servlet containers (Tomcat, Jetty) and
// other frameworks that strip matrix parameters route it. It allocates;
// Decide calls it only for paths that hold a ';'.
func withoutMatrixParams(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for len(p) > 0 {
		seg := p
		if i := strings.IndexByte(p[1:], '/'); i >= 0 {
			seg, p = p[:i+1], p[i+1:]
		} else {
			p = ""
		}
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		b.WriteString(seg)
	}
	out := b.String()
	if norm, err := pathnorm.Normalize(out); err == nil {
		return norm
	}
	return out
}

// conditionVars returns the condition variables of the request, building
// them on first use: rules without conditions never pay for them.
//
// The variables sit one pointer further than the facts: escape analysis
// does not tell the fields of a struct apart, and the variables escape
// (into the CEL activation), so holding them in facts itself would move
// every Request that Decide sees to the heap.
func (q *facts) conditionVars() *condition.Vars {
	if q.vars == nil {
		q.vars = &lazyVars{}
	}
	if q.vars.v == nil {
		q.vars.v = newVars(q.r)
	}
	return q.vars.v
}

// lazyVars holds the condition variables built for one decision.
type lazyVars struct{ v *condition.Vars }

// newVars returns the condition variables of r. It reads r only, never the
// facts: escape analysis does not tell the fields of facts apart, so storing
// anything of *q in the heap-allocated Vars would move every Request that
// Decide sees to the heap, also for rules without conditions.
func newVars(r *Request) *condition.Vars {
	now := r.Time
	if now.IsZero() {
		now = time.Now()
	}
	var ip netip.Addr
	if r.Source.IP.IsValid() {
		ip = r.Source.IP.Unmap().WithZone("")
	}
	return &condition.Vars{
		SourceIdentity:  r.Source.ID,
		SourceNamespace: workloadNamespace(r.Source.ID),
		SourcePrincipal: r.Source.Principal,
		SourceServices:  r.Source.Services,
		SourceIP:        ip,
		Method:          r.Method,
		Host:            normalizeHost(r.Host),
		Path:            r.Path,
		Query:           r.Query,
		Port:            r.Port,
		Headers:         r.Headers,
		Claims:          r.Source.Claims,
		SNI:             r.SNI,
		Now:             now,
	}
}

// known reports whether the request's value for f is known; an unknown
// value matches no pattern of a list and, for a notX list, satisfies it
// only in a DENY (or AUDIT) rule.
func (q *facts) known(f field) bool {
	switch f &^ 1 {
	case fieldMethods:
		return q.method != ""
	case fieldPaths:
		return q.r.Path != ""
	case fieldPorts:
		return q.r.Port > 0
	case fieldHosts:
		return q.host != ""
	case fieldIdentities:
		return q.r.Source.ID != ""
	case fieldServices:
		return q.servicesKnown
	case fieldNamespaces:
		return q.ns != ""
	case fieldPrincipals:
		return q.r.Source.Principal != ""
	case fieldIPBlocks:
		return q.ip.IsValid()
	}
	return false
}

// fieldOK reports whether field f of the rule matches, in a rule that
// denies (deny: DENY and AUDIT rules) or allows. Both fail closed: a list
// needs a known value (see facts.known) in it; a notX list needs a known
// value not in it, except that a DENY rule also takes an unknown value as
// not in it; and a method in another case than an entry counts as that
// entry wherever that denies more (in a DENY rule's methods, an ALLOW
// rule's notMethods). It is a single switch because Decide calls it for
// every field of every rule it reaches.
func (rl *compiledRule) fieldOK(f field, q *facts, deny bool) bool {
	r := q.r
	switch f {
	case fieldMethods:
		return q.method != "" && rl.methods.match(q, deny)
	case fieldNotMethods:
		if !(q.method != "") {
			return deny
		}
		return !rl.notMethods.match(q, !deny)
	case fieldPaths:
		if r.Path == "" {
			return false
		}
		in := rl.paths.match(r.Path)
		if q.pathAlt != "" {
			// Both readings of a path with matrix parameters: either
			// one is in the list for a DENY, both for an ALLOW.
			if alt := rl.paths.match(q.pathAlt); deny {
				in = in || alt
			} else {
				in = in && alt
			}
		}
		return in
	case fieldNotPaths:
		if r.Path == "" {
			return deny
		}
		in := rl.notPaths.match(r.Path)
		if q.pathAlt != "" {
			if alt := rl.notPaths.match(q.pathAlt); deny {
				in = in && alt
			} else {
				in = in || alt
			}
		}
		return !in
	case fieldPorts:
		return r.Port > 0 && rl.ports.match(r.Port)
	case fieldNotPorts:
		if !(r.Port > 0) {
			return deny
		}
		return !rl.notPorts.match(r.Port)
	case fieldHosts:
		return q.host != "" && rl.hosts.match(q.host)
	case fieldNotHosts:
		if !(q.host != "") {
			return deny
		}
		return !rl.notHosts.match(q.host)
	case fieldIdentities:
		return r.Source.ID != "" && rl.identities.match(r.Source.ID)
	case fieldNotIdentities:
		if !(r.Source.ID != "") {
			return deny
		}
		return !rl.notIdentities.match(r.Source.ID)
	case fieldServices:
		return q.servicesKnown && rl.services.matchAny(r.Source.Services)
	case fieldNotServices:
		if !(q.servicesKnown) {
			return deny
		}
		return !rl.notServices.matchAny(r.Source.Services)
	case fieldNamespaces:
		return q.ns != "" && rl.namespaces.match(q.ns)
	case fieldNotNamespaces:
		if !(q.ns != "") {
			return deny
		}
		return !rl.notNamespaces.match(q.ns)
	case fieldPrincipals:
		return r.Source.Principal != "" && rl.principals.match(r.Source.Principal)
	case fieldNotPrincipals:
		if !(r.Source.Principal != "") {
			return deny
		}
		return !rl.notPrincipals.match(r.Source.Principal)
	case fieldIPBlocks:
		return q.ip.IsValid() && rl.ipBlocks.match(q.ip)
	case fieldNotIPBlocks:
		if !(q.ip.IsValid()) {
			return deny
		}
		return !rl.notIPBlocks.match(q.ip)
	}
	return false
}

// match reports whether the rule matches the request: every field and
// then every condition.
func (rl *compiledRule) match(q *facts, deny bool) bool {
	for _, f := range rl.checks {
		if !rl.fieldOK(f, q, deny) {
			return false
		}
	}
	for i := range rl.when {
		if ok, _ := rl.conditionOK(i, q, deny); !ok {
			return false
		}
	}
	return true
}

// conditionOK evaluates condition i: an evaluation error counts as a
// match in a DENY (or AUDIT) rule and as no match in an ALLOW rule (fails
// closed), and is recorded in q.
func (rl *compiledRule) conditionOK(i int, q *facts, deny bool) (bool, error) {
	ok, err := rl.when[i].Eval(q.conditionVars())
	if err != nil {
		q.condErr = true
		return deny, err
	}
	return ok, nil
}

// firstMatch returns the first rule of policies that matches q.
func firstMatch(policies []*compiledPolicy, q *facts, deny bool) (ref string, rule int, ok bool) {
	for _, p := range policies {
		for j := range p.rules {
			rl := &p.rules[j]
			if rl.hasMethodFilter && q.methodBit != 0 && rl.methodFilter&q.methodMatch == 0 {
				// A well-known method the rule does not name.
				continue
			}
			if rl.match(q, deny) {
				return p.ref, rl.index, true
			}
		}
	}
	return "", -1, false
}

// sortPolicies sorts policies by name, then namespace: when several match,
// the first decides.
func sortPolicies[P any](ps []P, key func(P) (name, namespace string)) {
	slices.SortStableFunc(ps, func(a, b P) int {
		an, ans := key(a)
		bn, bns := key(b)
		if c := strings.Compare(an, bn); c != 0 {
			return c
		}
		return strings.Compare(ans, bns)
	})
}
