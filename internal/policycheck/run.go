package policycheck

import (
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// Result is the outcome of one Case.
type Result struct {
	// Name is the case's name.
	Name string `json:"name"`
	// Pass is true when the decision is the expected one (and, when the
	// case names a policy, that policy decided).
	Pass bool `json:"pass"`
	// Expect is the case's expectation and Got the decision: allow, deny or
	// reject.
	Expect string `json:"expect"`
	Got    string `json:"got"`
	// Policy and Rule are the deciding policy ("ns/name") and rule; "" and
	// -1 when no rule decided.
	Policy string `json:"policy,omitempty"`
	Rule   int    `json:"rule"`
	// Reason is why: the decision's reason, or why the request was
	// rejected before authorization.
	Reason string `json:"reason"`
	// Failure says what differs from the expectation; "" when Pass.
	Failure string `json:"failure,omitempty"`
	// Explanation is the full trace of the decision (policy.Explanation's
	// String), set for failed cases that reached authorization.
	Explanation string `json:"explanation,omitempty"`
}

// RunCases decides every case offline against policies (validated, as
// config.Decode returns them) exactly as the destination's sidecar would:
// the method must be upper case and the path must pass pathnorm.SplitTarget
// and pathnorm.Normalize, or the request is rejected before authorization;
// then the index of the destination workload (To with the case's labels)
// decides the request. Cases must come from ParseCases. The error is a
// policy that does not compile for a case's workload (a when condition
// that does not type-check), naming the policy and the field.
func RunCases(policies []*config.AuthorizationPolicy, cases []Case) ([]Result, error) {
	set := policy.NewSet(policies)
	indexes := map[string]*policy.Index{}
	out := make([]Result, 0, len(cases))
	for _, c := range cases {
		res := Result{Name: c.Name, Expect: c.Expect, Rule: -1}
		req, why, err := c.request()
		if err != nil {
			return nil, err
		}
		var ex *policy.Explanation
		if why != "" {
			res.Got, res.Reason = ExpectReject, why
		} else {
			w, err := c.workload()
			if err != nil {
				return nil, err
			}
			key := workloadKey(w)
			ix, ok := indexes[key]
			if !ok {
				if ix, err = set.Compile(w); err != nil {
					return nil, fmt.Errorf("case %q: compile the policies of %s: %w", c.Name, w.Service, err)
				}
				indexes[key] = ix
			}
			e := ix.Explain(req)
			ex = &e
			d := e.Decision
			res.Got, res.Reason, res.Policy, res.Rule = ExpectDeny, d.Reason.String(), d.Policy, d.Rule
			if d.Allow {
				res.Got = ExpectAllow
			}
			if d.ConditionError {
				res.Reason += " (a condition failed to evaluate)"
			}
		}
		switch {
		case res.Got != c.Expect:
			res.Failure = fmt.Sprintf("expected %s, got %s (%s)", c.Expect, res.Got, res.Reason)
		case c.Policy != "" && res.Policy != c.Policy:
			decided := res.Policy
			if decided == "" {
				decided = "no policy"
			}
			res.Failure = fmt.Sprintf("expected %s by policy %s, got %s by %s", c.Expect, c.Policy, res.Got, decided)
		default:
			res.Pass = true
		}
		if !res.Pass && ex != nil {
			res.Explanation = ex.String()
		}
		out = append(out, res)
	}
	return out, nil
}

// Explained is the outcome of Explain.
type Explained struct {
	// Rejected is why the sidecar refuses the request with 400 before
	// authorization; "" when it reaches authorization.
	Rejected string
	// Explanation traces the decision; the zero Explanation when Rejected.
	Explanation policy.Explanation
}

// Explain decides the request of c (checked with Case.Check, its Expect
// ignored) against policies as RunCases does, and explains the decision.
// The error is a selecting policy that does not compile.
func Explain(policies []*config.AuthorizationPolicy, c Case) (Explained, error) {
	req, why, err := c.request()
	if err != nil || why != "" {
		return Explained{Rejected: why}, err
	}
	w, err := c.workload()
	if err != nil {
		return Explained{}, err
	}
	ix, err := policy.Compile(w, policies)
	if err != nil {
		return Explained{}, fmt.Errorf("compile the policies of %s: %w", w.Service, err)
	}
	return Explained{Explanation: ix.Explain(req)}, nil
}

// workloadKey identifies a workload for the index cache.
func workloadKey(w policy.Workload) string {
	var b strings.Builder
	b.WriteString(w.Service.String())
	for _, k := range slices.Sorted(maps.Keys(w.Labels)) {
		b.WriteString("\x00" + k + "=" + w.Labels[k])
	}
	return b.String()
}

// workload returns the destination workload of c.
func (c Case) workload() (policy.Workload, error) {
	svc, err := identity.ParseServiceRef(c.To, identity.DefaultNamespace)
	if err != nil {
		return policy.Workload{}, fmt.Errorf("case %q: to: %v", c.Name, err)
	}
	return policy.Workload{Service: svc, Labels: c.Labels}, nil
}

// request builds the policy.Request of c as the sidecar would, or says why
// the sidecar rejects it before authorization.
func (c Case) request() (req *policy.Request, rejected string, err error) {
	for i := 0; i < len(c.Method); i++ {
		if ch := c.Method[i]; ch >= 'a' && ch <= 'z' {
			return nil, "method is not upper case", nil
		}
	}
	raw, query, err := pathnorm.SplitTarget(c.Path)
	if err != nil {
		return nil, err.Error(), nil
	}
	path, err := pathnorm.Normalize(raw)
	if err != nil {
		return nil, err.Error(), nil
	}
	r := &policy.Request{
		Source: policy.Source{ID: c.Identity, Principal: c.Principal, Claims: c.Claims},
		Method: c.Method,
		Host:   c.Host,
		Port:   c.Port,
		Path:   path,
		Query:  query,
		SNI:    c.SNI,
	}
	if c.From != "" {
		r.Source.Services = []string{c.From}
	}
	if c.IP != "" {
		a, err := netip.ParseAddr(c.IP)
		if err != nil {
			return nil, "", fmt.Errorf("case %q: ip: %v", c.Name, err)
		}
		r.Source.IP = a.Unmap()
	}
	if len(c.Headers) > 0 {
		r.Headers = make(http.Header, len(c.Headers))
		for k, v := range c.Headers {
			r.Headers.Set(k, v)
		}
	}
	if c.Time != "" {
		t, err := time.Parse(time.RFC3339, c.Time)
		if err != nil {
			return nil, "", fmt.Errorf("case %q: time: %v", c.Name, err)
		}
		r.Time = t
	}
	return r, "", nil
}
