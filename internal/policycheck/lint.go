package policycheck

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// Document is one decoded, validated policy and where it came from.
type Document struct {
	// File the policy was read from; "" when unknown.
	File string
	// Index of the document in File, from 1; 0 when unknown.
	Index int
	// Policy is required.
	Policy *config.AuthorizationPolicy
}

// Lint checks the policies of docs together (the set as it would be
// applied) and returns its findings, sorted (see SortFindings). The package
// documentation lists the checks; none of them reports a rule as dead or
// covered unless that is provable from the patterns. Lint does not modify
// the policies. Nil policies are skipped.
func Lint(docs []Document) []Finding {
	l := &linter{}
	for _, d := range docs {
		if d.Policy != nil {
			l.docs = append(l.docs, d)
		}
	}
	l.duplicates()
	l.dead = make([][]bool, len(l.docs))
	for i := range l.docs {
		l.dead[i] = l.unreachable(i)
	}
	for i := range l.docs {
		l.deniedByDeny(i)
		l.shadowedInPolicy(i)
		l.shadowedAcrossPolicies(i)
		l.tooWide(i)
		l.dryRun(i)
	}
	SortFindings(l.out)
	return l.out
}

// linter holds the state of one Lint call.
type linter struct {
	docs []Document
	// dead[i][r] is true when rule r of docs[i] can never match.
	dead [][]bool
	out  []Finding
}

// add records a finding about docs[i].
func (l *linter) add(i int, sev Severity, check Check, path, format string, args ...any) {
	d := l.docs[i]
	l.out = append(l.out, Finding{
		Severity: sev, Check: check, File: d.File, Document: d.Index,
		Policy: config.Ref(d.Policy), Path: path, Message: fmt.Sprintf(format, args...),
	})
}

// where names a document for messages: "ns/name" plus its file when the
// other document is in another one.
func (l *linter) where(i, from int) string {
	d := l.docs[i]
	ref := config.Ref(d.Policy)
	if d.File != "" && d.File != l.docs[from].File {
		return fmt.Sprintf("%s (%s document %d)", ref, d.File, d.Index)
	}
	return ref
}

// enforced reports whether docs[i] decides requests: not a dry run, and
// ALLOW or DENY.
func (l *linter) enforced(i int) bool {
	p := l.docs[i].Policy
	return !p.Spec.DryRun && (isAllow(p) || p.Spec.Action == config.ActionDeny)
}

// isAllow reports whether p is an ALLOW policy (the empty action is the
// default, ALLOW).
func isAllow(p *config.AuthorizationPolicy) bool {
	return p.Spec.Action == config.ActionAllow || p.Spec.Action == ""
}

// duplicates reports policies defined more than once.
func (l *linter) duplicates() {
	first := map[string]int{}
	for i, d := range l.docs {
		ref := config.Ref(d.Policy)
		if j, ok := first[ref]; ok {
			l.add(i, SeverityError, CheckDuplicate, "metadata.name",
				"policy %s is already defined by %s; apply refuses a set that names a resource twice", ref, l.where(j, i))
			continue
		}
		first[ref] = i
	}
}

// unreachable reports the entries and rules of docs[i] that can never
// match and returns which rules are dead.
func (l *linter) unreachable(i int) []bool {
	p := l.docs[i].Policy
	dead := make([]bool, len(p.Spec.Rules))
	for r := range p.Spec.Rules {
		rule := &p.Spec.Rules[r]
		path := fmt.Sprintf("spec.rules[%d]", r)
		fields := append(sourceFields(rule.From), operationFields(rule.To)...)
		for _, f := range fields {
			if l.deadField(i, path, f) {
				dead[r] = true
			}
		}
		if rule.From != nil && l.namespaceContradiction(i, path, rule.From) {
			dead[r] = true
		}
		if dead[r] {
			l.add(i, SeverityWarning, CheckUnreachable, path, "this rule can never match any request")
		}
	}
	if len(dead) > 0 && !slices.Contains(dead, false) {
		p := l.docs[i].Policy
		msg := "no rule of this policy can match, so it has no effect"
		if p.Spec.Action == config.ActionDeny {
			msg = "no rule of this DENY policy can match: it denies nothing"
		}
		l.add(i, SeverityWarning, CheckNeverMatches, "spec.rules", "%s", msg)
	}
	return dead
}

// deadField reports the entries of f that its not-list excludes and
// returns whether f can never match.
func (l *linter) deadField(i int, rulePath string, f field) bool {
	allow := isAllow(l.docs[i].Policy)
	for j, n := range f.neg {
		if allow && f.kind.matchAll(n) {
			l.add(i, SeverityWarning, CheckUnreachable, fmt.Sprintf("%s.%s[%d]", rulePath, f.notName, j),
				"%q excludes every value, and an ALLOW rule never matches a request that lacks the value, so this rule can never match", n)
			return true
		}
	}
	if len(f.pos) == 0 {
		return false
	}
	live := 0
	for j, e := range f.pos {
		k := slices.IndexFunc(f.neg, func(n string) bool { return f.kind.covers(n, e) })
		if k < 0 {
			live++
			continue
		}
		l.add(i, SeverityWarning, CheckUnreachable, fmt.Sprintf("%s.%s[%d]", rulePath, f.name, j),
			"%q can never match: %s[%d] %q excludes it", e, f.notName, k, f.neg[k])
	}
	return live == 0
}

// namespaceContradiction reports the identities and services entries of a
// from whose namespace from.namespaces or from.notNamespaces rule out (a
// caller's services are always in its identity's namespace), and returns
// whether every entry of one of those lists is ruled out.
func (l *linter) namespaceContradiction(i int, rulePath string, from *config.Source) bool {
	if len(from.Namespaces) == 0 && len(from.NotNamespaces) == 0 {
		return false
	}
	excluded := func(ns string) (string, bool) {
		if ns == "" || hasStar(ns) {
			return "", false
		}
		if len(from.Namespaces) > 0 && !slices.ContainsFunc(from.Namespaces, func(p string) bool { return globMatch(p, ns, 0) }) {
			return "from.namespaces does not include " + fmt.Sprintf("%q", ns), true
		}
		if k := slices.IndexFunc(from.NotNamespaces, func(p string) bool { return globMatch(p, ns, 0) }); k >= 0 {
			return fmt.Sprintf("from.notNamespaces[%d] %q excludes %q", k, from.NotNamespaces[k], ns), true
		}
		return "", false
	}
	lists := []struct {
		name    string
		entries []string
		ns      func(string) string
	}{
		{"from.services", from.Services, serviceNamespace},
		{"from.identities", from.Identities, identityNamespace},
	}
	dead := false
	for _, list := range lists {
		if len(list.entries) == 0 {
			continue
		}
		live := 0
		for j, e := range list.entries {
			why, ok := excluded(list.ns(e))
			if !ok {
				live++
				continue
			}
			l.add(i, SeverityWarning, CheckUnreachable, fmt.Sprintf("%s.%s[%d]", rulePath, list.name, j),
				"%q can never match: %s", e, why)
		}
		if live == 0 {
			dead = true
		}
	}
	return dead
}

// serviceNamespace returns the namespace part of a service pattern ("" for
// "*").
func serviceNamespace(p string) string {
	ns, _, ok := strings.Cut(p, "/")
	if !ok {
		return ""
	}
	return ns
}

// identityNamespace returns the namespace segment of a SPIFFE ID pattern
// "spiffe://td/ns/<ns>/sa/<name>", or "" when it has another shape.
func identityNamespace(p string) string {
	rest, ok := strings.CutPrefix(p, "spiffe://")
	if !ok {
		return ""
	}
	segs := strings.Split(rest, "/")
	if len(segs) != 5 || segs[1] != "ns" || segs[3] != "sa" {
		return ""
	}
	return segs[2]
}

// ruleRef names rule r of docs[i] for messages.
func (l *linter) ruleRef(i, r, from int) string {
	if i == from {
		return fmt.Sprintf("spec.rules[%d]", r)
	}
	return fmt.Sprintf("%s rule %d", l.where(i, from), r)
}

// deniedByDeny reports the ALLOW rules of docs[i] that an enforced DENY
// rule of a policy selecting at least the same workloads always overrides.
func (l *linter) deniedByDeny(i int) {
	p := l.docs[i].Policy
	if !isAllow(p) {
		return
	}
	for r := range p.Spec.Rules {
		if l.dead[i][r] {
			continue
		}
		rule := &p.Spec.Rules[r]
	deny:
		for j, d := range l.docs {
			dp := d.Policy
			if dp.Spec.Action != config.ActionDeny || dp.Spec.DryRun || !selectionCovers(dp, p) {
				continue
			}
			for dr := range dp.Spec.Rules {
				if !l.dead[j][dr] && ruleCovers(&dp.Spec.Rules[dr], rule) {
					note := ""
					if p.Spec.DryRun {
						note = " (once this dry-run policy is enforced)"
					}
					l.add(i, SeverityWarning, CheckUnreachable, fmt.Sprintf("spec.rules[%d]", r),
						"this ALLOW rule can never allow a request%s: DENY %s matches every request it matches", note, l.ruleRef(j, dr, i))
					break deny
				}
			}
		}
	}
}

// shadowedInPolicy reports the rules of docs[i] that an earlier rule of
// the same policy covers.
func (l *linter) shadowedInPolicy(i int) {
	rules := l.docs[i].Policy.Spec.Rules
	for r := range rules {
		if l.dead[i][r] {
			continue
		}
		for e := 0; e < r; e++ {
			if !l.dead[i][e] && ruleCovers(&rules[e], &rules[r]) {
				l.add(i, SeverityWarning, CheckShadowed, fmt.Sprintf("spec.rules[%d]", r),
					"spec.rules[%d] matches every request this rule matches, so this rule never decides anything; remove it or merge the two", e)
				break
			}
		}
	}
}

// shadowedAcrossPolicies reports the rules of an enforced ALLOW policy
// docs[i] that a rule of another enforced ALLOW policy, selecting at least
// the same workloads, covers. When two rules cover each other, only the
// one decided later (policies in order of name) is reported.
func (l *linter) shadowedAcrossPolicies(i int) {
	p := l.docs[i].Policy
	if !isAllow(p) || !l.enforced(i) {
		return
	}
	for r := range p.Spec.Rules {
		if l.dead[i][r] {
			continue
		}
		rule := &p.Spec.Rules[r]
	others:
		for j, d := range l.docs {
			q := d.Policy
			if j == i || !isAllow(q) || !l.enforced(j) || config.Ref(q) == config.Ref(p) || !selectionCovers(q, p) {
				continue
			}
			for qr := range q.Spec.Rules {
				other := &q.Spec.Rules[qr]
				if l.dead[j][qr] || !ruleCovers(other, rule) {
					continue
				}
				if selectionCovers(p, q) && ruleCovers(rule, other) && !decidedBefore(q, p) {
					continue // the same rule twice: the other one is reported
				}
				l.add(i, SeverityWarning, CheckShadowed, fmt.Sprintf("spec.rules[%d]", r),
					"ALLOW %s already allows every request this rule allows; this rule adds nothing", l.ruleRef(j, qr, i))
				break others
			}
		}
	}
}

// decidedBefore reports whether a's rules are tried before b's: policies
// are evaluated in order of name (then namespace, to break ties).
func decidedBefore(a, b *config.AuthorizationPolicy) bool {
	return cmp.Or(strings.Compare(a.Metadata.Name, b.Metadata.Name),
		strings.Compare(a.Metadata.Namespace, b.Metadata.Namespace)) < 0
}

// tooWide reports enforced ALLOW rules that let in any caller of the mesh
// and enforced ALLOW policies that select every workload of the mesh.
func (l *linter) tooWide(i int) {
	p := l.docs[i].Policy
	if !isAllow(p) || !l.enforced(i) {
		return
	}
	meshWide := p.Metadata.Namespace == config.RootNamespace && len(p.Spec.Selector.Labels) == 0
	if meshWide {
		l.add(i, SeverityWarning, CheckTooWide, "spec.selector",
			"an ALLOW policy in the root namespace %s without selector labels selects every workload of the mesh; select workloads by labels, or move the policy to the namespace it is for",
			config.RootNamespace)
	}
	for r := range p.Spec.Rules {
		rule := &p.Spec.Rules[r]
		if l.dead[i][r] || len(rule.When) > 0 {
			continue
		}
		why, wide := anyCaller(rule.From)
		if !wide {
			continue
		}
		what := "this workload"
		if meshWide {
			what = "every workload of the mesh"
		} else if p.Spec.Selector.Service == "" {
			what = "every workload of namespace " + p.Metadata.Namespace
		}
		l.add(i, SeverityWarning, CheckTooWide, fmt.Sprintf("spec.rules[%d]%s", r, why.path),
			"%s: any caller in the mesh may call %s%s; name the callers with from.services or from.identities",
			why.msg, what, describeTo(rule.To))
	}
}

// wideReason says why a from lets in any caller, and where.
type wideReason struct{ path, msg string }

// anyCaller reports whether from lets in any caller of the mesh: it is
// absent, or every list it gives holds a pattern matching every caller and
// it excludes nobody.
func anyCaller(from *config.Source) (wideReason, bool) {
	if from == nil {
		return wideReason{msg: "no from"}, true
	}
	if len(from.RequestPrincipals) > 0 || len(from.IPBlocks) > 0 || len(from.NotServices) > 0 ||
		len(from.NotIdentities) > 0 || len(from.NotNamespaces) > 0 || len(from.NotRequestPrincipals) > 0 || len(from.NotIPBlocks) > 0 {
		return wideReason{}, false
	}
	lists := []struct {
		name    string
		entries []string
		all     func(string) bool
	}{
		{"services", from.Services, func(p string) bool { return p == "*" || p == "*/*" }},
		{"identities", from.Identities, func(p string) bool {
			return p == "*" || identityNamespace(p) == "*" && strings.HasSuffix(p, "/sa/*")
		}},
		{"namespaces", from.Namespaces, func(p string) bool { return strings.Trim(p, "*") == "" }},
	}
	var reason wideReason
	for _, list := range lists {
		if len(list.entries) == 0 {
			continue
		}
		k := slices.IndexFunc(list.entries, list.all)
		if k < 0 {
			return wideReason{}, false
		}
		if reason.path == "" {
			reason = wideReason{path: fmt.Sprintf(".from.%s[%d]", list.name, k), msg: fmt.Sprintf("%q", list.entries[k])}
		}
	}
	return reason, reason.path != ""
}

// describeTo summarizes a to for messages: " with any operation" or
// " with GET, HEAD on /v1/*".
func describeTo(to *config.Operation) string {
	if to == nil {
		return " with any request"
	}
	var parts []string
	if len(to.Methods) > 0 {
		parts = append(parts, strings.Join(to.Methods, ", "))
	}
	if len(to.Paths) > 0 {
		parts = append(parts, "on "+strings.Join(to.Paths, ", "))
	}
	if len(to.Hosts) > 0 {
		parts = append(parts, "for hosts "+strings.Join(to.Hosts, ", "))
	}
	if len(to.Ports) > 0 {
		parts = append(parts, "on ports "+strings.Join(portStrings(to.Ports), ", "))
	}
	if len(parts) == 0 {
		return " with most requests"
	}
	return " with " + strings.Join(parts, " ")
}

// dryRun reminds that dry-run policies are not enforced.
func (l *linter) dryRun(i int) {
	p := l.docs[i].Policy
	if !p.Spec.DryRun {
		return
	}
	l.add(i, SeverityInfo, CheckDryRun, "spec.dryRun",
		"dry-run %s policy: evaluated and logged (would allow / would deny), never enforced; remove dryRun to enforce it", cmp.Or(string(p.Spec.Action), string(config.ActionAllow)))
}
