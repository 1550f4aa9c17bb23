package policycheck_test

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

// The checks claim "covered" and "unreachable" only when provable. These
// properties test that against the evaluator itself (internal/policy) on
// random rules and requests drawn from small vocabularies, so that patterns
// often overlap.

var (
	vocabServices   = []string{"*", "shop/web", "shop/web-*", "shop/*", "prod/web", "*/web", "*/*"}
	vocabIdentities = []string{"*", "spiffe://bulwark.local/ns/shop/sa/web", "spiffe://bulwark.local/ns/shop/sa/*",
		"spiffe://bulwark.local/ns/*/sa/web", "spiffe://bulwark.local/ns/prod/sa/web-*"}
	vocabNamespaces = []string{"shop", "prod", "*", "sh*"}
	vocabPrincipals = []string{"*", "https://idp/alice", "https://idp/*"}
	vocabBlocks     = []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "192.0.2.0/24", "::ffff:10.1.0.0/112"}
	vocabMethods    = []string{"GET", "HEAD", "POST", "*"}
	vocabHosts      = []string{"api.shop", "*.shop", "api.*", "*", "x.y.shop", "*.y.shop"}
	vocabPorts      = []int{80, 8080}
	vocabPaths      = []string{"/v1/*", "/v1/users", "/v1/users/*", "/v1/*/x", "*", "/v1/u*", "/admin", "/v1"}
	vocabWhen       = []string{"request.method == 'GET'", "request.port == 80"}
)

// pick returns 0 to 2 entries of vocab.
func pick(r *rand.Rand, vocab []string) []string {
	n := r.IntN(3)
	if r.IntN(2) == 0 {
		n = 0
	}
	var out []string
	for range n {
		out = append(out, vocab[r.IntN(len(vocab))])
	}
	return out
}

func pickPorts(r *rand.Rand) []int {
	var out []int
	for _, s := range pick(r, []string{"80", "8080"}) {
		if s == "80" {
			out = append(out, 80)
		} else {
			out = append(out, 8080)
		}
	}
	return out
}

func randomRule(r *rand.Rand) config.Rule {
	var rule config.Rule
	if r.IntN(4) > 0 {
		f := &config.Source{
			Services: pick(r, vocabServices), NotServices: pick(r, vocabServices),
			Identities: pick(r, vocabIdentities), NotIdentities: pick(r, vocabIdentities),
			Namespaces: pick(r, vocabNamespaces), NotNamespaces: pick(r, vocabNamespaces),
			RequestPrincipals: pick(r, vocabPrincipals), NotRequestPrincipals: pick(r, vocabPrincipals),
			IPBlocks: pick(r, vocabBlocks), NotIPBlocks: pick(r, vocabBlocks),
		}
		rule.From = f
	}
	if r.IntN(4) > 0 {
		rule.To = &config.Operation{
			Methods: pick(r, vocabMethods), NotMethods: pick(r, vocabMethods),
			Hosts: pick(r, vocabHosts), NotHosts: pick(r, vocabHosts),
			Ports: pickPorts(r), NotPorts: pickPorts(r),
			Paths: pick(r, vocabPaths), NotPaths: pick(r, vocabPaths),
		}
	}
	if r.IntN(5) == 0 {
		rule.When = []string{vocabWhen[r.IntN(len(vocabWhen))]}
	}
	return rule
}

// widen returns a copy of rule with some lists dropped or extended, so that
// it often covers rule.
func widen(r *rand.Rand, rule config.Rule) config.Rule {
	out := rule
	if rule.From != nil {
		f := *rule.From
		if r.IntN(2) == 0 {
			f.Services = append(append([]string(nil), f.Services...), vocabServices[r.IntN(len(vocabServices))])
		}
		if r.IntN(2) == 0 {
			f.NotIdentities, f.NotServices, f.NotNamespaces = nil, nil, nil
		}
		if r.IntN(3) == 0 {
			f.IPBlocks, f.RequestPrincipals = nil, nil
		}
		out.From = &f
		if r.IntN(4) == 0 {
			out.From = nil
		}
	}
	if rule.To != nil {
		o := *rule.To
		if r.IntN(2) == 0 {
			o.Paths = append(append([]string(nil), o.Paths...), vocabPaths[r.IntN(len(vocabPaths))])
		}
		if r.IntN(2) == 0 {
			o.NotMethods, o.NotPaths, o.NotHosts, o.NotPorts = nil, nil, nil, nil
		}
		out.To = &o
		if r.IntN(4) == 0 {
			out.To = nil
		}
	}
	if r.IntN(2) == 0 {
		out.When = nil
	}
	return out
}

// requests are every combination of a few values of each field.
func requests() []*policy.Request {
	type caller struct{ id, svc string }
	callers := []caller{
		{"spiffe://bulwark.local/ns/shop/sa/web", "shop/web"},
		{"spiffe://bulwark.local/ns/shop/sa/web-eu", "shop/web-eu"},
		{"spiffe://bulwark.local/ns/prod/sa/web", "prod/web"},
		{"spiffe://bulwark.local/ns/prod/sa/web-x", ""},
		{"", ""},
	}
	principals := []string{"", "https://idp/alice", "https://idp/bob"}
	ips := []netip.Addr{{}, netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.0.2.5")}
	// No lower-case methods: the sidecar answers them 400 before any
	// decision, and the checks reason about requests that reach one.
	methods := []string{"GET", "HEAD", "POST", "DELETE"}
	hosts := []string{"api.shop", "x.y.shop", "api.prod"}
	ports := []int{80, 8080}
	paths := []string{"/v1/users", "/v1/users/1", "/v1/a/x", "/v1/u", "/admin", "/v1", "/v1/", "/v2"}
	var out []*policy.Request
	for _, c := range callers {
		for _, pr := range principals {
			for _, ip := range ips {
				for _, m := range methods {
					for _, h := range hosts {
						for _, port := range ports {
							for _, p := range paths {
								src := policy.Source{ID: c.id, Principal: pr, IP: ip}
								if c.svc != "" {
									src.Services = []string{c.svc}
								}
								out = append(out, &policy.Request{Source: src, Method: m, Host: h, Port: port, Path: p})
							}
						}
					}
				}
			}
		}
	}
	return out
}

// matcher returns whether a rule with action matches a request: the rule
// alone in a policy with that action, next to an ALLOW-all policy for a
// DENY, so that the decision says whether the rule matched.
func matcher(t *testing.T, action config.Action, rule config.Rule) func(*policy.Request) bool {
	t.Helper()
	w := policy.Workload{Service: identity.ServiceRef{Namespace: "shop", Name: "api"}}
	ps := []*config.AuthorizationPolicy{{
		Metadata: config.ObjectMeta{Name: "p", Namespace: "shop"},
		Spec:     config.AuthorizationPolicySpec{Action: action, Rules: []config.Rule{rule}},
	}}
	if action == config.ActionDeny {
		ps = append(ps, &config.AuthorizationPolicy{
			Metadata: config.ObjectMeta{Name: "z-all", Namespace: "shop"},
			Spec:     config.AuthorizationPolicySpec{Action: config.ActionAllow, Rules: []config.Rule{{}}},
		})
	}
	ix, err := policy.Compile(w, ps)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return func(r *policy.Request) bool {
		d := ix.Decide(r)
		if action == config.ActionDeny {
			return d.Reason == policy.ReasonDenyRule
		}
		return d.Allow
	}
}

func TestPropertyRuleCoversIsSound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	reqs := requests()
	modes := []struct{ outer, inner config.Action }{
		{config.ActionAllow, config.ActionAllow},
		{config.ActionDeny, config.ActionAllow},
		{config.ActionDeny, config.ActionDeny},
	}
	covered, live := 0, 0
	for i := 0; i < 3000 && covered < 120; i++ {
		inner := randomRule(r)
		outer := widen(r, inner)
		if r.IntN(3) == 0 {
			outer = randomRule(r)
		}
		if !policycheck.RuleCovers(&outer, &inner) {
			continue
		}
		covered++
		matched := false
		for _, m := range modes {
			in, out := matcher(t, m.inner, inner), matcher(t, m.outer, outer)
			for _, req := range reqs {
				if !in(req) {
					continue
				}
				matched = true
				if !out(req) {
					t.Fatalf("%s rule %+v covers %s rule %+v by RuleCovers, but request %+v matches only the inner one",
						m.outer, ruleString(outer), m.inner, ruleString(inner), req)
				}
			}
		}
		if matched {
			live++
		}
	}
	t.Logf("%d covered pairs checked, %d with an inner rule that matches some request", covered, live)
	if live < 30 {
		t.Errorf("only %d covered pairs with a live inner rule: the generator does not exercise coverage", live)
	}
}

func TestPropertyUnreachableRulesMatchNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	reqs := requests()
	dead := 0
	for i := 0; i < 3000 && dead < 120; i++ {
		action := config.ActionAllow
		if r.IntN(2) == 0 {
			action = config.ActionDeny
		}
		rule := randomRule(r)
		p := &config.AuthorizationPolicy{
			Metadata: config.ObjectMeta{Name: "p", Namespace: "shop"},
			Spec:     config.AuthorizationPolicySpec{Action: action, Rules: []config.Rule{rule}},
		}
		unreachable := false
		for _, f := range policycheck.Lint([]policycheck.Document{{Policy: p}}) {
			if f.Check == policycheck.CheckUnreachable && f.Path == "spec.rules[0]" {
				unreachable = true
			}
		}
		if !unreachable {
			continue
		}
		dead++
		match := matcher(t, action, rule)
		for _, req := range reqs {
			if match(req) {
				t.Fatalf("%s rule %s is unreachable by Lint, but matches %+v", action, ruleString(rule), req)
			}
		}
	}
	t.Logf("%d unreachable rules checked", dead)
	if dead < 20 {
		t.Errorf("only %d unreachable rules: the generator does not exercise the check", dead)
	}
}

func ruleString(r config.Rule) string {
	b, err := config.Marshal(&config.AuthorizationPolicy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAuthorizationPolicy},
		Spec:     config.AuthorizationPolicySpec{Rules: []config.Rule{r}},
	})
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// TestPropertyCallerPrecheckIsSound: the cheap check that rules callers out
// before policy.Set.ForCaller never rules out a caller that ForCaller finds
// callable, or the lock-out guard would report callers as lost that are not.
func TestPropertyCallerPrecheckIsSound(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	callers := []policycheck.Caller{
		{ID: "spiffe://bulwark.local/ns/shop/sa/web", Services: []string{"shop/web"}},
		{ID: "spiffe://bulwark.local/ns/shop/sa/web-eu", Services: []string{"shop/web-eu", "shop/web"}},
		{ID: "spiffe://bulwark.local/ns/prod/sa/web", Services: []string{"prod/web"}},
		{ID: "spiffe://bulwark.local/ns/prod/sa/web-x"},
		{ID: "spiffe://other.org/ns/shop/sa/web", Services: []string{"shop/web"}},
	}
	dests := []policycheck.Destination{
		{Service: identity.ServiceRef{Namespace: "shop", Name: "api"}},
		{Service: identity.ServiceRef{Namespace: "prod", Name: "api"}, Instances: []map[string]string{{"version": "v2"}}},
	}
	namespaces := []string{"shop", "prod", config.RootNamespace}
	callable := 0
	for i := 0; i < 600; i++ {
		var pols []*config.AuthorizationPolicy
		for j := range 1 + r.IntN(3) {
			p := &config.AuthorizationPolicy{
				Metadata: config.ObjectMeta{Name: "p" + strconv.Itoa(j), Namespace: namespaces[r.IntN(len(namespaces))]},
				Spec:     config.AuthorizationPolicySpec{Action: config.ActionAllow, Rules: []config.Rule{randomRule(r)}},
			}
			if r.IntN(4) == 0 {
				p.Spec.Action = config.ActionDeny
			}
			if p.Metadata.Namespace != config.RootNamespace && r.IntN(2) == 0 {
				p.Spec.Selector.Service = "api"
			}
			if r.IntN(4) == 0 {
				p.Spec.Selector.Labels = map[string]string{"version": "v1"}
			}
			pols = append(pols, p)
		}
		for _, d := range dests {
			for _, c := range callers {
				ok, _ := policy.ForCaller(d.Service, pols, policy.Source{ID: c.ID, Services: c.Services})
				if !ok {
					continue
				}
				callable++
				if !policycheck.MayCall(pols, d, c) {
					t.Fatalf("ForCaller finds %s callable by %s, but the pre-check rules it out; policies:\n%s", d.Service, c.ID, policiesString(pols))
				}
			}
		}
	}
	t.Logf("%d callable pairs checked", callable)
	if callable < 100 {
		t.Errorf("only %d callable pairs: the generator does not exercise the check", callable)
	}
}

func policiesString(ps []*config.AuthorizationPolicy) string {
	var b strings.Builder
	for _, p := range ps {
		p.TypeMeta = config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAuthorizationPolicy}
		js, err := config.Marshal(p)
		if err != nil {
			return err.Error()
		}
		b.Write(js)
		b.WriteByte('\n')
	}
	return b.String()
}
