package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// Explanation is a decision with everything that led to it, for people
// (`bulwark policy explain`, `bulwark policy test`). String renders it.
type Explanation struct {
	// Decision is what Decide decides.
	Decision Decision
	// Policies trace every policy selecting the workload, in the order
	// they are evaluated within their kind: by name, then namespace.
	Policies []PolicyTrace
	// Nearest is, for a denied request, the enforced ALLOW rule that came
	// closest to allowing it (the fewest fields not matching; ties go to
	// the first by policy name and rule order), and what would have to
	// change. nil when the request is allowed or no enforced ALLOW policy
	// selects the workload.
	Nearest *Nearest
}

// PolicyTrace is how one policy's rules fared.
type PolicyTrace struct {
	// Policy is "ns/name".
	Policy string
	// Action is the action the policy is evaluated with: ALLOW, DENY
	// (also for an action this package does not know) or AUDIT.
	Action config.Action
	// DryRun: the policy is evaluated but not enforced.
	DryRun bool
	// Rules are the policy's rules in order.
	Rules []RuleTrace
}

// RuleTrace is how one rule fared.
type RuleTrace struct {
	// Rule is the index of the rule in its policy.
	Rule int
	// Matched: every field and condition of the rule matched.
	Matched bool
	// Mismatches say which fields and conditions did not match and why,
	// such as `to.methods: "DELETE" not in [GET, POST]` or `when[0]:
	// false: request.headers["x-env"] == "prod"`; empty when Matched.
	Mismatches []string
	// Notes are remarks that did not prevent a match, such as a condition
	// that failed to evaluate in a DENY rule (a match, fails closed).
	Notes []string
}

// Nearest is the ALLOW rule nearest to allowing a denied request.
type Nearest struct {
	// Policy ("ns/name") and Rule name the rule.
	Policy string
	Rule   int
	// Changes are what would have to be different for it to allow the
	// request: its mismatches, or, when it matches, the DENY rule that
	// decided first.
	Changes []string
}

// Explain decides r as Decide does and explains why: every rule of every
// selecting policy with the fields that did not match, and for a denial
// the nearest ALLOW rule. A zero r.Time is taken as the current time once,
// so that the trace and the decision see the same time. Explain allocates;
// it is for tools, not for the data path.
func (ix *Index) Explain(r *Request) Explanation {
	if r == nil {
		return Explanation{Decision: ix.Decide(nil)}
	}
	rc := *r
	if rc.Time.IsZero() {
		rc.Time = time.Now()
	}
	ex := Explanation{Decision: ix.Decide(&rc)}
	if ix == nil {
		return ex
	}
	q := newFacts(&rc)
	var nearest *Nearest
	for _, cp := range ix.all {
		pt := PolicyTrace{Policy: cp.ref, Action: config.Action(cp.effect.String()), DryRun: cp.dryRun}
		for j := range cp.rules {
			rt := cp.rules[j].explain(&q, cp.effect != effectAllow)
			pt.Rules = append(pt.Rules, rt)
			if cp.effect == effectAllow && !cp.dryRun && !ex.Decision.Allow &&
				(nearest == nil || len(rt.Mismatches) < len(nearest.Changes)) {
				nearest = &Nearest{Policy: cp.ref, Rule: cp.rules[j].index, Changes: rt.Mismatches}
			}
		}
		ex.Policies = append(ex.Policies, pt)
	}
	if nearest != nil && len(nearest.Changes) == 0 {
		d := ex.Decision
		nearest.Changes = []string{fmt.Sprintf("DENY %s rule %d, which matches first, would have to not match", d.Policy, d.Rule)}
	}
	ex.Nearest = nearest
	return ex
}

// explain traces the rule against q without stopping at the first field
// that does not match.
func (rl *compiledRule) explain(q *facts, deny bool) RuleTrace {
	rt := RuleTrace{Rule: rl.index}
	for _, f := range rl.checks {
		if !rl.fieldOK(f, q, deny) {
			rt.Mismatches = append(rt.Mismatches, rl.mismatch(f, q, deny))
		}
	}
	for i, src := range rl.whenSrc {
		ok, err := rl.conditionOK(i, q, deny)
		switch {
		case err != nil && deny:
			rt.Notes = append(rt.Notes, fmt.Sprintf("when[%d]: %v (counted as a match: fails closed): %s", i, err, src))
		case err != nil:
			rt.Mismatches = append(rt.Mismatches, fmt.Sprintf("when[%d]: %v (an ALLOW rule does not match on error): %s", i, err, src))
		case !ok:
			rt.Mismatches = append(rt.Mismatches, fmt.Sprintf("when[%d]: false: %s", i, src))
		}
	}
	rt.Matched = len(rt.Mismatches) == 0
	return rt
}

// mismatch says why field f of the rule does not match q.
func (rl *compiledRule) mismatch(f field, q *facts, deny bool) string {
	what, value := q.describe(f)
	if !q.known(f) {
		if f.negated() {
			return fmt.Sprintf("%s: %s is unknown, and an ALLOW rule only matches a notX list with a known value", f, what)
		}
		return fmt.Sprintf("%s: %s is unknown, and an unknown value matches no entry", f, what)
	}
	if f.negated() {
		return fmt.Sprintf("%s: %s is in %s", f, value, rl.entries(f))
	}
	return fmt.Sprintf("%s: %s not in %s", f, value, rl.entries(f))
}

// describe returns what the request's value for f is called and, when
// known, the value as explanations show it.
func (q *facts) describe(f field) (what, value string) {
	r := q.r
	switch f &^ 1 {
	case fieldMethods:
		return "the method", strconv.Quote(q.method)
	case fieldPaths:
		return "the path", strconv.Quote(r.Path)
	case fieldPorts:
		return "the port", strconv.Itoa(r.Port)
	case fieldHosts:
		return "the host", strconv.Quote(q.host)
	case fieldIdentities:
		return "the caller's identity", strconv.Quote(r.Source.ID)
	case fieldServices:
		quoted := make([]string, 0, len(r.Source.Services))
		for _, s := range r.Source.Services {
			if s != "" {
				quoted = append(quoted, s)
			}
		}
		return "the caller's service list", "[" + strings.Join(quoted, ", ") + "]"
	case fieldNamespaces:
		return "the caller's namespace", strconv.Quote(q.ns)
	case fieldPrincipals:
		return "the request principal (no validated JWT)", strconv.Quote(r.Source.Principal)
	case fieldIPBlocks:
		return "the peer address", strconv.Quote(q.ip.String())
	}
	return f.String(), ""
}

// entries returns the list of field f as written, such as "[GET, POST]".
func (rl *compiledRule) entries(f field) string {
	var src []string
	switch f {
	case fieldMethods:
		src = rl.methods.src
	case fieldNotMethods:
		src = rl.notMethods.src
	case fieldPaths:
		src = rl.paths.src
	case fieldNotPaths:
		src = rl.notPaths.src
	case fieldPorts, fieldNotPorts:
		ps := rl.ports
		if f == fieldNotPorts {
			ps = rl.notPorts
		}
		for _, p := range ps.ports {
			src = append(src, strconv.Itoa(p))
		}
	case fieldHosts:
		src = rl.hosts.src
	case fieldNotHosts:
		src = rl.notHosts.src
	case fieldIdentities:
		src = rl.identities.src
	case fieldNotIdentities:
		src = rl.notIdentities.src
	case fieldServices:
		src = rl.services.src
	case fieldNotServices:
		src = rl.notServices.src
	case fieldNamespaces:
		src = rl.namespaces.src
	case fieldNotNamespaces:
		src = rl.notNamespaces.src
	case fieldPrincipals:
		src = rl.principals.src
	case fieldNotPrincipals:
		src = rl.notPrincipals.src
	case fieldIPBlocks:
		src = rl.ipBlocks.src
	case fieldNotIPBlocks:
		src = rl.notIPBlocks.src
	}
	return "[" + strings.Join(src, ", ") + "]"
}

// String renders the explanation on several lines, such as:
//
//	decision: deny (no ALLOW rule matched)
//	ALLOW default/web-reads-api
//	  rule 0: no match
//	    - to.methods: "DELETE" not in [GET, POST]
//	nearest ALLOW rule: default/web-reads-api rule 0; to allow the request:
//	  - to.methods: "DELETE" not in [GET, POST]
func (ex Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "decision: %s\n", ex.Decision)
	if len(ex.Policies) == 0 {
		b.WriteString("no policy selects the workload\n")
	}
	for _, pt := range ex.Policies {
		b.WriteString(string(pt.Action))
		b.WriteString(" ")
		b.WriteString(pt.Policy)
		if pt.DryRun {
			b.WriteString(" (dry run)")
		}
		b.WriteString("\n")
		for _, rt := range pt.Rules {
			if rt.Matched {
				fmt.Fprintf(&b, "  rule %d: match\n", rt.Rule)
			} else {
				fmt.Fprintf(&b, "  rule %d: no match\n", rt.Rule)
			}
			for _, m := range rt.Mismatches {
				fmt.Fprintf(&b, "    - %s\n", m)
			}
			for _, n := range rt.Notes {
				fmt.Fprintf(&b, "    note: %s\n", n)
			}
		}
	}
	if n := ex.Nearest; n != nil {
		fmt.Fprintf(&b, "nearest ALLOW rule: %s rule %d; to allow the request:\n", n.Policy, n.Rule)
		for _, c := range n.Changes {
			fmt.Fprintf(&b, "  - %s\n", c)
		}
	}
	return b.String()
}
