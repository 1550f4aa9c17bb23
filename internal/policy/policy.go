// Package policy is the pure authorization evaluator: it compiles the
// AuthorizationPolicies that select one workload's service into an Index
// and decides requests against it. It does no I/O and keeps no state
// besides the Index it returns.
//
// The semantics are fixed (DESIGN §3) and fail closed:
//
//   - A service that no ALLOW policy selects denies every request.
//   - Any matching DENY policy denies; otherwise any matching ALLOW policy
//     allows; otherwise the request is denied.
//   - A policy selects a service when its namespace is the service's and
//     its selector names the service or is empty (the whole namespace).
//   - A policy matches when any of its rules matches; a rule matches when
//     its from and its to both match, an absent one matching everything.
//   - from: any of services AND any of identities, when both are given;
//     to: any of methods AND any of paths, when both are given.
//   - Service patterns are "*" (every service) or "ns/name" where '*'
//     matches any run of characters within its part; identity patterns are
//     "*" (every identity) or a SPIFFE ID where '*' matches any run of
//     characters within one path segment. A caller with no identity or no
//     services matches no identity or service pattern, not even "*".
//   - Methods match exactly (case-sensitive, so "get" never matches a GET
//     rule; the sidecar refuses lower-case methods before deciding), except
//     that a rule naming GET also matches HEAD, which servers answer with
//     their GET handlers (so a DENY of GET covers HEAD); "*" matches any; paths are "*" (any), "/exact", or "/prefix/*", which
//     matches "/prefix", "/prefix/" and everything below "/prefix/", never
//     "/prefixfoo". Request paths must already be normalized by
//     internal/pathnorm.
//
// Compile does the work once per policy change (sets for exact matches,
// pre-split globs, method bit sets), so Index.Decide neither allocates nor
// looks at policies of other services, whatever the size of the mesh.
//
// ForCaller computes the caller's view of a destination's policies, so the
// calling sidecar can enforce them too ("both ends enforce").
package policy

import (
	"slices"
	"strconv"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// Source is the caller of a request as the callee's sidecar knows it.
type Source struct {
	// ID is the caller's SPIFFE ID, from its verified certificate; "" when
	// unknown, which matches no identity pattern.
	ID string
	// Services are the services ("ns/name") the caller's identity serves;
	// empty when unknown, which matches no service pattern.
	Services []string
}

// Request is what Decide decides.
type Request struct {
	// Source is the caller.
	Source Source
	// Method is the HTTP method, as sent (methods are case-sensitive).
	Method string
	// Path is the request path normalized by pathnorm.Normalize, without
	// the query.
	Path string
}

// Reason says why a Decision was taken.
type Reason uint8

// Reasons. The zero Reason is a denial, so a zero Decision denies.
const (
	// ReasonNoAllowPolicy: no ALLOW policy selects the service, so every
	// request is denied (fails closed).
	ReasonNoAllowPolicy Reason = iota
	// ReasonNoAllowMatch: no DENY rule and no ALLOW rule matched.
	ReasonNoAllowMatch
	// ReasonDenyRule: a DENY rule matched.
	ReasonDenyRule
	// ReasonAllowed: no DENY rule matched and an ALLOW rule did.
	ReasonAllowed
)

// String returns the reason as logs and metrics show it.
func (r Reason) String() string {
	switch r {
	case ReasonAllowed:
		return "allowed"
	case ReasonDenyRule:
		return "denied by policy"
	case ReasonNoAllowMatch:
		return "no ALLOW rule matched"
	case ReasonNoAllowPolicy:
		return "no ALLOW policy selects the service"
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// Decision is the outcome of Decide.
type Decision struct {
	// Allow is true only when the request may proceed.
	Allow bool
	// Reason says why.
	Reason Reason
	// Policy is "ns/name" of the policy whose rule decided; "" when no rule
	// decided.
	Policy string
	// Rule is the index of the deciding rule within Policy's rules; -1 when
	// no rule decided.
	Rule int
}

// Index is the compiled form of the policies that select one service. It
// is immutable and safe for concurrent use. A nil *Index denies every
// request (fails closed).
type Index struct {
	// deny and allow hold the selecting policies by effect, each in order
	// of name.
	deny, allow []compiledPolicy
	// fromServices is the union of every from.services pattern, for
	// MatchesServicePattern.
	fromServices patternSet
}

// compiledPolicy is one selecting policy.
type compiledPolicy struct {
	ref   string // "ns/name"
	rules []compiledRule
}

// compiledRule is one rule of a compiledPolicy.
type compiledRule struct {
	index int // within the policy's rules
	from  sourceMatcher
	to    operationMatcher
}

// Compile returns the Index of the policies that select svc, ignoring the
// others (and nil entries). The policies must be validated (see
// config.AuthorizationPolicy.Validate); an empty action counts as ALLOW, its
// documented default, and an action other than ALLOW counts as DENY (fails
// closed). The Index does not refer to the policies afterwards.
//
// When several policies match, the first in order of name decides, so
// decisions do not depend on the order of policies.
func Compile(svc identity.ServiceRef, policies []*config.AuthorizationPolicy) *Index {
	var selected []*config.AuthorizationPolicy
	for _, p := range policies {
		if p != nil && p.Selects(svc) {
			selected = append(selected, p)
		}
	}
	slices.SortStableFunc(selected, func(a, b *config.AuthorizationPolicy) int {
		return strings.Compare(a.Metadata.Name, b.Metadata.Name)
	})

	ix := &Index{}
	var fromServices []string
	for _, p := range selected {
		cp := compiledPolicy{
			ref:   p.Metadata.Namespace + "/" + p.Metadata.Name,
			rules: make([]compiledRule, len(p.Spec.Rules)),
		}
		for i, r := range p.Spec.Rules {
			cp.rules[i] = compiledRule{index: i, from: compileSource(r.From), to: compileOperation(r.To)}
			if r.From != nil {
				fromServices = append(fromServices, r.From.Services...)
			}
		}
		if isAllow(p.Spec.Action) {
			ix.allow = append(ix.allow, cp)
		} else {
			ix.deny = append(ix.deny, cp)
		}
	}
	ix.fromServices = compilePatterns(fromServices)
	return ix
}

// isAllow reports whether a policy with action a allows: ALLOW, or empty
// (the default). Any other action denies, so an action this package does not
// know fails closed.
func isAllow(a config.Action) bool {
	return a == config.ActionAllow || a == ""
}

// Decide decides r: any matching DENY rule denies (ReasonDenyRule);
// otherwise any matching ALLOW rule allows (ReasonAllowed); otherwise r is
// denied (ReasonNoAllowMatch). A service that no ALLOW policy selects denies
// every request (fails closed), with ReasonNoAllowPolicy unless a DENY rule
// matched; so do a nil Index and, with ReasonNoAllowMatch, a nil Request.
// Decide does not allocate.
func (ix *Index) Decide(r *Request) Decision {
	if ix == nil {
		return Decision{Reason: ReasonNoAllowPolicy, Rule: -1}
	}
	if r == nil {
		return Decision{Reason: ReasonNoAllowMatch, Rule: -1}
	}
	m := methodBit(r.Method)
	if ref, rule, ok := firstMatch(ix.deny, r, m); ok {
		return Decision{Reason: ReasonDenyRule, Policy: ref, Rule: rule}
	}
	if len(ix.allow) == 0 {
		return Decision{Reason: ReasonNoAllowPolicy, Rule: -1}
	}
	if ref, rule, ok := firstMatch(ix.allow, r, m); ok {
		return Decision{Allow: true, Reason: ReasonAllowed, Policy: ref, Rule: rule}
	}
	return Decision{Reason: ReasonNoAllowMatch, Rule: -1}
}

// firstMatch returns the first rule of policies that matches r, whose
// method's bit is m.
func firstMatch(policies []compiledPolicy, r *Request, m methodMask) (ref string, rule int, ok bool) {
	for i := range policies {
		p := &policies[i]
		for j := range p.rules {
			rl := &p.rules[j]
			if rl.to.match(r.Method, m, r.Path) && rl.from.match(&r.Source) {
				return p.ref, rl.index, true
			}
		}
	}
	return "", -1, false
}

// MatchesServicePattern reports whether any from.services pattern of the
// index's policies, ALLOW or DENY, matches service ("ns/name"). The control
// plane sends a workload the service lists of exactly the identities for
// which this holds, so that both its ALLOW and its DENY rules see them. A nil
// Index has no patterns.
func (ix *Index) MatchesServicePattern(service string) bool {
	if ix == nil || service == "" {
		return false
	}
	return ix.fromServices.match(service)
}
