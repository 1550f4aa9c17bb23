// Package policy is the pure authorization evaluator: it compiles the
// AuthorizationPolicies that select one workload into an Index and decides
// requests against it, explains decisions, indexes a mesh's policies by the
// workloads they select (Set), and computes a caller's view of a
// destination's policies (ForCaller). It does no I/O and keeps no state
// besides what it returns.
//
// # Semantics
//
// DESIGN §3 fixes them; every line below has a test in
// TestSemantics/<name> (the name in brackets). Everything fails closed.
//
// Selection:
//
//   - A policy selects a workload when it is in the workload's namespace or
//     in config.RootNamespace (mesh-wide) [root_namespace_applies_everywhere,
//     other_namespace_does_not_select], its selector.service is empty or
//     names the workload's service (a policy of the root namespace naming a
//     service selects nothing: validation rejects it)
//     [service_selector, root_namespace_service_selector_selects_nothing],
//     and every selector.labels entry is among the instance's labels
//     [labels_all_required, label_missing_does_not_select].
//
// Decision, over the enforced (dryRun false) policies selecting the
// workload:
//
//   - A workload that no enforced ALLOW policy selects denies every request
//     (ReasonNoAllowPolicy) unless a DENY rule matched first
//     [no_allow_policy_denies, dry_run_allow_is_not_an_allow_policy,
//     audit_is_not_an_allow_policy].
//   - Any matching DENY rule denies (ReasonDenyRule) [deny_wins_over_allow];
//     otherwise any matching ALLOW rule allows (ReasonAllowed)
//     [matching_allow_allows]; otherwise the request is denied
//     (ReasonNoAllowMatch) [no_allow_match_denies]. An action other than
//     ALLOW (or empty, its default), DENY and AUDIT counts as DENY
//     [unknown_action_denies].
//   - When several policies match, the first in order of name (then
//     namespace) decides, and within a policy the first rule
//     [first_policy_by_name_decides, first_rule_decides].
//   - AUDIT policies never change the decision [audit_does_not_allow,
//     audit_does_not_deny]: Decision.Audit reports whether one matched, and
//     AuditPolicy the first by name [audit_reports_first_match]. A dry-run
//     AUDIT policy is ignored.
//   - Dry-run policies are never enforced [dry_run_deny_not_enforced]:
//     Decision.DryRun reports the decision the mesh would take if every
//     dry-run policy were enforced too, when it differs from the real one,
//     with the dry-run policy and rule that make the difference
//     [dry_run_deny_would_deny, dry_run_allow_would_allow,
//     dry_run_same_decision_not_reported].
//
// Rules:
//
//   - A policy matches when any of its rules matches; a rule matches when
//     its from, its to and every when condition match; an absent part
//     matches everything [empty_rule_matches_all, rule_needs_from_and_to].
//   - Within from and to, every field given must match: a list when any of
//     its entries matches the request's value, a notX list when none does
//     [fields_all_required, list_any_entry, not_list_no_entry].
//   - A value that is unknown (the caller's identity, services, namespace,
//     request principal or IP; an empty method, host or path; port 0)
//     matches no entry of a list, not even "*" [unknown_identity_star,
//     unknown_principal_star, unknown_ip_block]. For a notX list, an ALLOW
//     rule never matches on absence (no allow by absence), while a DENY (or
//     AUDIT) rule does (deny by absence) [allow_not_principals_needs_principal,
//     deny_not_principals_denies_without_principal,
//     allow_not_identities_needs_identity, deny_not_identities_unknown].
//     This closes Istio's "notPrincipals matches requests without a
//     principal" bypass.
//   - when: each CEL condition (internal/condition) must evaluate to true; one
//     that fails to evaluate counts as no match in an ALLOW rule and as a
//     match in a DENY (or AUDIT) rule, and sets Decision.ConditionError
//     [condition_error_allow_does_not_match, condition_error_deny_matches].
//
// Patterns:
//
//   - from.services: "*" or "ns/name" where '*' matches any run of
//     characters within its part [service_glob]; a caller matches when any
//     of its services does, and a notServices list when none does.
//   - from.identities: "*" or a SPIFFE ID where '*' matches any run of
//     characters within one path segment [identity_glob_within_segment].
//   - from.namespaces: the namespace of the caller's workload SPIFFE ID
//     (/ns/<ns>/sa/<account>); '*' matches any run [namespace_glob].
//   - from.requestPrincipals: "<iss>/<sub>" of the request's validated JWT,
//     matched as a whole string where '*' matches any run including '/'
//     (issuers are URLs: "https://idp.example.com/*") [principal_glob].
//   - from.ipBlocks: addresses and CIDR ranges of the connection's peer; an
//     IPv4-mapped IPv6 address (and block) is unmapped first, so it matches
//     IPv4 blocks [ipv4_mapped_matches_ipv4_block].
//   - to.hosts: exact, "*.suffix" (at least one label before the suffix),
//     "prefix.*" or "*"; host and patterns are compared in lower case
//     without one trailing dot, so "API.default." is "api.default", and an
//     IPv6 literal without brackets in its canonical form
//     [host_case_and_trailing_dot].
//   - to.ports: the destination port the caller addressed [ports].
//   - to.paths, against the path normalized by internal/pathnorm: "*" (any),
//     an exact path, "/prefix/*" when that final "/*" is the pattern's only
//     '*' (the prefix, the prefix + "/" and everything below, never
//     "/prefixfoo") [prefix_not_longer_segment], or a glob where '*' matches
//     a run of characters within one segment ("/users/*/profile",
//     "/img/*.png"; never across '/') [path_glob_within_segment].
//     A path with ';' matrix parameters is read two ways, as sent and
//     without the parameters ("/admin;x/a" is also "/admin/a", as Tomcat and
//     Jetty route it): for to.paths either reading in the list counts in a
//     DENY rule and both are needed in an ALLOW rule, and the other way
//     round for to.notPaths (TestBypass pins it).
//   - to.methods: exact and case-sensitive, "*" for any; a rule naming GET
//     also matches HEAD, which servers answer with their GET handlers
//     [deny_get_denies_head]. A method with lower-case letters ("get"; the
//     sidecar refuses them first) is compared in upper case wherever that
//     denies more: it matches a DENY rule's GET and an ALLOW rule's
//     notMethods GET, never an ALLOW rule's GET [lower_case_method].
//
// # Performance
//
// Compile does the work once per policy change (sets for exact values,
// pre-split globs, method bit sets, netip prefixes, compiled CEL), and an
// Index holds only the policies selecting its workload, so Decide neither
// allocates (for rules without conditions) nor looks at other policies,
// whatever the size of the mesh. Condition variables are built at most once
// per Decide, when the first rule with conditions is reached.
//
// # Explaining
//
// Index.Explain decides like Decide and traces every rule of every
// selecting policy (which field or condition did not match, and why), and
// for a denial names the nearest enforced ALLOW rule and what would have to
// change; `bulwark policy explain` and `bulwark policy test` print it.
//
// # Both ends enforce
//
// ForCaller computes the caller's view of a destination's policies, which
// the calling sidecar enforces too: it may be more permissive than the
// destination's policies, never stricter (see ForCaller).
package policy

import (
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// Workload is what policies select: a service, and the labels of one of
// its instances (bound to its join token).
type Workload struct {
	// Service is the workload's service.
	Service identity.ServiceRef
	// Labels are the instance's labels; nil is none, which only policies
	// without selector labels select.
	Labels map[string]string
}

// Source is the caller of a request as the callee's sidecar knows it.
type Source struct {
	// ID is the caller's SPIFFE ID, from its verified certificate; "" when
	// unknown, which matches no identity or namespace pattern. Its
	// namespace (for from.namespaces and source.namespace) is read from
	// it.
	ID string
	// Services are the services ("ns/name") the caller's identity serves;
	// empty when unknown, which matches no service pattern.
	Services []string
	// IP is the address of the connection's peer; the zero Addr when
	// unknown, which matches no IP block.
	IP netip.Addr
	// Principal is "<iss>/<sub>" of the request's validated JWT; "" when
	// the request has none, which matches no request principal.
	Principal string
	// Claims are the validated JWT's claims (for when conditions); nil
	// when the request has no token.
	Claims map[string]any
}

// Request is what Decide decides. Decide reads it and never keeps or
// changes it.
type Request struct {
	// Source is the caller.
	Source Source
	// Method is the HTTP method, as sent (methods are case-sensitive).
	Method string
	// Host is the request's host without the port, in lower case; Decide
	// normalizes it again (lower case, one trailing dot removed, IPv6
	// literals canonical) before matching. "" is unknown.
	Host string
	// Port is the destination port the caller addressed (80 when the host
	// names none); 0 is unknown.
	Port int
	// Path is the request path normalized by pathnorm.Normalize, without
	// the query.
	Path string
	// Query is the raw query string, without '?' (for when conditions).
	Query string
	// Headers are the request headers (for when conditions); nil is no
	// headers.
	Headers http.Header
	// SNI is the server name the caller sent in its TLS handshake.
	SNI string
	// Time is when the request arrived (time.now in when conditions); the
	// zero Time means time.Now(), read when a condition first needs it.
	Time time.Time
}

// Reason says why a Decision was taken.
type Reason uint8

// Reasons. The zero Reason is a denial, so a zero Decision denies.
const (
	// ReasonNoAllowPolicy: no enforced ALLOW policy selects the workload,
	// so every request is denied (fails closed).
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

// Decision is the outcome of Decide. It is comparable.
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
	// ConditionError: a when condition of an enforced policy failed to
	// evaluate while deciding, and counted as fails closed (no match for
	// ALLOW, a match for DENY).
	ConditionError bool
	// Audit: an AUDIT policy matched the request; AuditPolicy is "ns/name"
	// of the first such policy by name ("" when Audit is false).
	Audit       bool
	AuditPolicy string
	// DryRun is what the dry-run policies would change; the zero DryRun
	// when they would change nothing.
	DryRun DryRun
}

// DryRun is the decision the mesh would take if every dry-run policy
// selecting the workload were enforced too, reported only when it differs
// from the real one.
type DryRun struct {
	// Differs: enforcing the dry-run policies would flip the decision; the
	// other fields are set only then.
	Differs bool
	// Allow is the decision with the dry-run policies enforced: true when a
	// dry-run ALLOW would allow a denied request, false when a dry-run DENY
	// would deny an allowed one.
	Allow bool
	// Reason is ReasonAllowed or ReasonDenyRule.
	Reason Reason
	// Policy and Rule are the dry-run policy ("ns/name") and rule that
	// would decide.
	Policy string
	Rule   int
	// ConditionError: a when condition of a dry-run policy failed to
	// evaluate.
	ConditionError bool
}

// String returns the decision as logs show it, such as "allow by
// default/web-reads-api rule 0" or "deny (no ALLOW rule matched)".
func (d Decision) String() string {
	s := "deny"
	if d.Allow {
		s = "allow"
	}
	if d.Policy != "" {
		s += " by " + d.Policy + " rule " + strconv.Itoa(d.Rule)
	} else {
		s += " (" + d.Reason.String() + ")"
	}
	if d.ConditionError {
		s += " (a condition failed to evaluate)"
	}
	if d.Audit {
		s += "; audited by " + d.AuditPolicy
	}
	if d.DryRun.Differs {
		would := "deny"
		if d.DryRun.Allow {
			would = "allow"
		}
		s += "; dry run: would " + would + " by " + d.DryRun.Policy + " rule " + strconv.Itoa(d.DryRun.Rule)
	}
	return s
}

// Index is the compiled form of the policies that select one workload. It
// is immutable and safe for concurrent use. A nil *Index denies every
// request (fails closed).
type Index struct {
	// all are the selecting policies in order of name (then namespace);
	// the other lists are its parts, each in the same order.
	all      []*compiledPolicy
	deny     []*compiledPolicy // enforced DENY
	allow    []*compiledPolicy // enforced ALLOW
	audit    []*compiledPolicy // enforced AUDIT
	dryDeny  []*compiledPolicy // dry-run DENY
	dryAllow []*compiledPolicy // dry-run ALLOW
	// fromServices is the union of every from.services and
	// from.notServices pattern, and anyServices is set when there is a
	// notServices list, for MatchesServicePattern.
	fromServices *patternSet
	anyServices  bool
}

// Compile returns the Index of the policies that select w, ignoring the
// others (and nil entries). The policies must be validated (see
// config.AuthorizationPolicy.Validate); Compile still fails, naming the
// policy and the field, when a when condition or an IP block of a selecting
// policy does not compile, so that a proxy refuses such a snapshot as a
// whole. The Index does not refer to the policies afterwards.
func Compile(w Workload, policies []*config.AuthorizationPolicy) (*Index, error) {
	var selected []*config.AuthorizationPolicy
	for _, p := range policies {
		if p != nil && p.Selects(w.Service, w.Labels) {
			selected = append(selected, p)
		}
	}
	sortPolicies(selected, policyKey)
	cps := make([]*compiledPolicy, 0, len(selected))
	for _, p := range selected {
		cp, err := compilePolicy(p)
		if err != nil {
			return nil, err
		}
		cps = append(cps, cp)
	}
	return newIndex(cps), nil
}

// policyKey is the sort key of a policy.
func policyKey(p *config.AuthorizationPolicy) (name, namespace string) {
	return p.Metadata.Name, p.Metadata.Namespace
}

// newIndex returns the Index of cps, which are sorted.
func newIndex(cps []*compiledPolicy) *Index {
	ix := &Index{all: cps}
	var patterns []string
	for _, cp := range cps {
		switch {
		case cp.effect == effectAudit && cp.dryRun:
			// A dry-run AUDIT policy would change nothing.
		case cp.effect == effectAudit:
			ix.audit = append(ix.audit, cp)
		case cp.effect == effectAllow && cp.dryRun:
			ix.dryAllow = append(ix.dryAllow, cp)
		case cp.effect == effectAllow:
			ix.allow = append(ix.allow, cp)
		case cp.dryRun:
			ix.dryDeny = append(ix.dryDeny, cp)
		default:
			ix.deny = append(ix.deny, cp)
		}
		for i := range cp.rules {
			rl := &cp.rules[i]
			if rl.services != nil {
				patterns = append(patterns, rl.services.src...)
			}
			if rl.notServices != nil {
				patterns = append(patterns, rl.notServices.src...)
				ix.anyServices = true
			}
		}
	}
	ix.fromServices = compilePatterns(patterns, false)
	return ix
}

// Decide decides r: any matching DENY rule denies (ReasonDenyRule);
// otherwise any matching ALLOW rule allows (ReasonAllowed); otherwise r is
// denied (ReasonNoAllowMatch). A workload that no enforced ALLOW policy
// selects denies every request (fails closed), with ReasonNoAllowPolicy
// unless a DENY rule matched; so do a nil Index and, with
// ReasonNoAllowMatch, a nil Request. AUDIT and dry-run policies are
// evaluated only to fill in Audit and DryRun. Decide does not allocate
// unless it reaches a rule with when conditions.
func (ix *Index) Decide(r *Request) Decision {
	if ix == nil {
		return Decision{Reason: ReasonNoAllowPolicy, Rule: -1}
	}
	if r == nil {
		return Decision{Reason: ReasonNoAllowMatch, Rule: -1}
	}
	q := newFacts(r)
	d := ix.decide(&q)
	d.ConditionError = q.condErr
	if len(ix.audit) > 0 {
		if ref, _, ok := firstMatch(ix.audit, &q, true); ok {
			d.Audit, d.AuditPolicy = true, ref
		}
	}
	if len(ix.dryDeny) > 0 || len(ix.dryAllow) > 0 {
		q.condErr = false
		d.DryRun = ix.dryRun(&q, &d)
		d.DryRun.ConditionError = q.condErr
	}
	return d
}

// decide takes the decision of the enforced DENY and ALLOW policies.
func (ix *Index) decide(q *facts) Decision {
	if ref, rule, ok := firstMatch(ix.deny, q, true); ok {
		return Decision{Reason: ReasonDenyRule, Policy: ref, Rule: rule}
	}
	if len(ix.allow) == 0 {
		return Decision{Reason: ReasonNoAllowPolicy, Rule: -1}
	}
	if ref, rule, ok := firstMatch(ix.allow, q, false); ok {
		return Decision{Allow: true, Reason: ReasonAllowed, Policy: ref, Rule: rule}
	}
	return Decision{Reason: ReasonNoAllowMatch, Rule: -1}
}

// dryRun returns what enforcing the dry-run policies too would change in
// real. Only a flip counts: an allowed request that a dry-run DENY rule
// matches, or a request denied for lack of an ALLOW match that no dry-run
// DENY rule matches and a dry-run ALLOW rule does.
func (ix *Index) dryRun(q *facts, real *Decision) DryRun {
	if real.Reason == ReasonDenyRule {
		return DryRun{}
	}
	ref, rule, denied := firstMatch(ix.dryDeny, q, true)
	switch {
	case real.Allow && denied:
		return DryRun{Differs: true, Reason: ReasonDenyRule, Policy: ref, Rule: rule}
	case real.Allow || denied:
		return DryRun{}
	}
	if ref, rule, ok := firstMatch(ix.dryAllow, q, false); ok {
		return DryRun{Differs: true, Allow: true, Reason: ReasonAllowed, Policy: ref, Rule: rule}
	}
	return DryRun{}
}

// MatchesServicePattern reports whether the services of a caller serving
// service ("ns/name") can change a decision of the index: whether any
// from.services pattern of its policies matches service, or any of its
// policies has a from.notServices list (which needs every caller's services
// known). The control plane sends a workload the service lists of exactly
// the identities for which this holds. A nil Index has no patterns.
func (ix *Index) MatchesServicePattern(service string) bool {
	if ix == nil || service == "" {
		return false
	}
	return ix.anyServices || ix.fromServices.match(service)
}
