package policycheck

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// PolicySummary is what the dashboard shows of one AuthorizationPolicy:
// what it says in words and what it did to the traffic proxies observed.
type PolicySummary struct {
	// Policy is "namespace/name".
	Policy string `json:"policy"`
	Action string `json:"action"`
	DryRun bool   `json:"dryRun,omitempty"`
	// Selects and Rules say what the policy says, in words.
	Selects string   `json:"selects"`
	Rules   []string `json:"rules"`
	// AllowsObserved are the observed edges an ALLOW rule of this policy
	// decided; DeniesObserved those a DENY rule of it decided.
	AllowsObserved []ObservedEdge `json:"allowsObserved"`
	DeniesObserved []ObservedEdge `json:"deniesObserved,omitempty"`
	// WouldDeny are, for a dryRun policy, the observed edges allowed now
	// that it would deny if it were enforced.
	WouldDeny []ObservedEdge `json:"wouldDeny,omitempty"`
	// Truncated is true when a list was cut at MaxSummaryEdges.
	Truncated bool `json:"truncated,omitempty"`
}

// ObservedEdge is one observed edge of a PolicySummary.
type ObservedEdge struct {
	Source        string `json:"source"`
	SourceService string `json:"sourceService,omitempty"`
	Destination   string `json:"destination"`
	Method        string `json:"method"`
	Path          string `json:"path"`
	Requests      int64  `json:"requests"`
}

// MaxSummaryEdges bounds each edge list of a PolicySummary.
const MaxSummaryEdges = 200

// Summarize describes every policy and attributes the observed edges to
// the policies that decided them. Each edge is decided as the callee's
// proxy decides it, with what an edge records: the caller's identity and
// service, the method and the path template, whose "*" segments stand for
// any identifier and are decided as the segment "x" (so a rule for
// "/items/*" matches "/items/*", and one for "/items/42" does not).
// What an edge does not record (JWT principals, client IPs, headers) is
// unknown, so rules that need it match nothing. Edges to egress hosts
// and TCP tunnels are skipped. A dryRun policy is also decided as if
// enforced: the edges allowed now that it would then deny are its
// WouldDeny.
func Summarize(policies []*config.AuthorizationPolicy, edges []*config.Edge) []PolicySummary {
	out := make([]PolicySummary, len(policies))
	index := make(map[string]int, len(policies))
	for i, p := range policies {
		selects, rules := Describe(p)
		action := string(p.Spec.Action)
		if action == "" {
			action = string(config.ActionAllow)
		}
		out[i] = PolicySummary{Policy: config.Ref(p), Action: action, DryRun: p.Spec.DryRun, Selects: selects, Rules: rules,
			AllowsObserved: []ObservedEdge{}}
		index[config.Ref(p)] = i
	}
	enforced := slices.DeleteFunc(slices.Clone(policies), func(p *config.AuthorizationPolicy) bool { return p.Spec.DryRun })
	now := newEdgeDecider(enforced)
	var dry []*config.AuthorizationPolicy
	for _, p := range policies {
		if p.Spec.DryRun {
			dry = append(dry, p)
		}
	}
	asEnforced := make([]*edgeDecider, len(dry))
	for i, p := range dry {
		q := *p
		q.Spec.DryRun = false
		asEnforced[i] = newEdgeDecider(append(slices.Clone(enforced), &q))
	}
	add := func(list *[]ObservedEdge, s *PolicySummary, e ObservedEdge) {
		if len(*list) >= MaxSummaryEdges {
			s.Truncated = true
			return
		}
		*list = append(*list, e)
	}
	for _, e := range edges {
		st := &e.Status
		dest, err := identity.ParseServiceRef(st.Destination, "")
		if err != nil || dest.String() != st.Destination || st.Path == "" || st.Source == "" {
			continue
		}
		oe := ObservedEdge{Source: st.Source, SourceService: st.SourceService, Destination: st.Destination,
			Method: st.Method, Path: st.Path, Requests: st.Requests}
		d, ok := now.decide(dest, st)
		if !ok {
			continue
		}
		if i, found := index[d.Policy]; found {
			s := &out[i]
			if d.Allow {
				add(&s.AllowsObserved, s, oe)
			} else {
				add(&s.DeniesObserved, s, oe)
			}
		}
		if !d.Allow {
			continue
		}
		for j, p := range dry {
			if dd, ok := asEnforced[j].decide(dest, st); ok && !dd.Allow {
				s := &out[index[config.Ref(p)]]
				add(&s.WouldDeny, s, oe)
			}
		}
	}
	for i := range out {
		for _, l := range [][]ObservedEdge{out[i].AllowsObserved, out[i].DeniesObserved, out[i].WouldDeny} {
			slices.SortFunc(l, func(a, b ObservedEdge) int {
				return cmp.Or(cmp.Compare(a.Destination, b.Destination), cmp.Compare(a.Source, b.Source),
					cmp.Compare(a.Path, b.Path), cmp.Compare(a.Method, b.Method))
			})
		}
	}
	return out
}

// edgeDecider decides observed edges with one set of policies, compiling
// the policies of each destination once.
type edgeDecider struct {
	policies []*config.AuthorizationPolicy
	compiled map[identity.ServiceRef]*policy.Index
}

func newEdgeDecider(policies []*config.AuthorizationPolicy) *edgeDecider {
	return &edgeDecider{policies: policies, compiled: map[identity.ServiceRef]*policy.Index{}}
}

// decide decides an edge's request; false when it cannot be decided (the
// policies of its destination do not compile, or the request is one the
// sidecar rejects before authorization).
func (d *edgeDecider) decide(dest identity.ServiceRef, st *config.EdgeStatus) (policy.Decision, bool) {
	ix, ok := d.compiled[dest]
	if !ok {
		var err error
		if ix, err = policy.Compile(policy.Workload{Service: dest}, d.policies); err != nil {
			ix = nil
		}
		d.compiled[dest] = ix
	}
	if ix == nil {
		return policy.Decision{}, false
	}
	c := Case{From: st.SourceService, Identity: st.Source, To: dest.String(), Method: st.Method,
		Path: strings.ReplaceAll(st.Path, "*", "x")}
	req, rejected, err := c.request()
	if err != nil || rejected != "" {
		return policy.Decision{}, false
	}
	return ix.Explain(req).Decision, true
}

// Describe says in words which workloads a policy selects and what each
// of its rules matches.
func Describe(p *config.AuthorizationPolicy) (selects string, rules []string) {
	ns := p.Metadata.Namespace
	switch sel := p.Spec.Selector; {
	case ns == config.RootNamespace && sel.Service == "":
		selects = "every workload of the mesh"
	case sel.Service != "":
		selects = "the workloads of service " + ns + "/" + sel.Service
	default:
		selects = "every workload in namespace " + ns
	}
	if len(p.Spec.Selector.Labels) > 0 {
		selects += " labelled " + labelsText(p.Spec.Selector.Labels)
	}
	action := string(p.Spec.Action)
	if action == "" {
		action = string(config.ActionAllow)
	}
	verb := map[string]string{"ALLOW": "allow", "DENY": "deny", "AUDIT": "audit"}[action]
	if verb == "" {
		verb = strings.ToLower(action)
	}
	if len(p.Spec.Rules) == 0 {
		if action == string(config.ActionAllow) {
			return selects, []string{"no rules: allows nothing"}
		}
		return selects, []string{"no rules: matches nothing"}
	}
	for _, r := range p.Spec.Rules {
		var b strings.Builder
		b.WriteString(verb + " " + fromText(r.From) + " " + toText(r.To))
		for _, w := range r.When {
			b.WriteString(" when " + w)
		}
		rules = append(rules, b.String())
	}
	if p.Spec.DryRun {
		for i := range rules {
			rules[i] += " (dry run: logged, not enforced)"
		}
	}
	return selects, rules
}

func labelsText(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ", ")
}

// orList joins values as "a, b or c".
func orList(vs []string) string {
	if len(vs) <= 1 {
		return strings.Join(vs, "")
	}
	return strings.Join(vs[:len(vs)-1], ", ") + " or " + vs[len(vs)-1]
}

// clause is one "<what> <values>[ except <not-values>]" of a rule.
func clause(what string, in, notIn []string) string {
	if len(in) == 0 && len(notIn) == 0 {
		return ""
	}
	s := what + " "
	if len(in) > 0 {
		s += orList(in)
	} else {
		s += "any"
	}
	if len(notIn) > 0 {
		s += " except " + orList(notIn)
	}
	return s
}

func fromText(f *config.Source) string {
	if f == nil {
		return "any caller"
	}
	parts := slices.DeleteFunc([]string{
		clause("services", f.Services, f.NotServices),
		clause("identities", f.Identities, f.NotIdentities),
		clause("callers in namespaces", f.Namespaces, f.NotNamespaces),
		clause("token principals", f.RequestPrincipals, f.NotRequestPrincipals),
		clause("client IPs", f.IPBlocks, f.NotIPBlocks),
	}, func(s string) bool { return s == "" })
	if len(parts) == 0 {
		return "any caller"
	}
	return "callers with " + strings.Join(parts, " and ")
}

func toText(t *config.Operation) string {
	if t == nil {
		return "to any request"
	}
	ports := func(ps []int) []string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = strconv.Itoa(p)
		}
		return out
	}
	parts := slices.DeleteFunc([]string{
		clause("methods", t.Methods, t.NotMethods),
		clause("paths", t.Paths, t.NotPaths),
		clause("hosts", t.Hosts, t.NotHosts),
		clause("ports", ports(t.Ports), ports(t.NotPorts)),
	}, func(s string) bool { return s == "" })
	if len(parts) == 0 {
		return "to any request"
	}
	return "to " + strings.Join(parts, ", ")
}

// ExplainResult is the JSON form of an explained decision, as `bulwark
// policy explain -o json` prints it and POST /v1/policy/explain answers.
type ExplainResult struct {
	Request Case     `json:"request"`
	Source  string   `json:"source,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Decision is allow, deny or reject.
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Policy   string `json:"policy,omitempty"`
	Rule     int    `json:"rule"`
	// Nearest is the nearest ALLOW rule of a denial.
	Nearest *NearestRule `json:"nearest,omitempty"`
	// Explanation is the full trace, as the text output prints it.
	Explanation string `json:"explanation,omitempty"`
}

// NearestRule is the ALLOW rule nearest to matching a denied request, and
// what would have to change for it to match.
type NearestRule struct {
	Policy  string   `json:"policy"`
	Rule    int      `json:"rule"`
	Changes []string `json:"changes"`
}

// NewExplainResult returns the JSON form of the explanation ex of c.
func NewExplainResult(c Case, source string, notes []string, ex Explained) ExplainResult {
	out := ExplainResult{Request: c, Source: source, Notes: notes, Rule: -1}
	if ex.Rejected != "" {
		out.Decision, out.Reason = ExpectReject, ex.Rejected
		return out
	}
	d := ex.Explanation.Decision
	out.Decision, out.Reason, out.Policy, out.Rule = ExpectDeny, d.Reason.String(), d.Policy, d.Rule
	if d.Allow {
		out.Decision = ExpectAllow
	}
	if n := ex.Explanation.Nearest; n != nil {
		out.Nearest = &NearestRule{Policy: n.Policy, Rule: n.Rule, Changes: n.Changes}
	}
	out.Explanation = ex.Explanation.String()
	return out
}
