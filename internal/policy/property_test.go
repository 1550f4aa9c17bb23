package policy_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// gen generates meshes of policies and requests over a small universe, so
// that random rules and requests often meet.
type gen struct{ r *rand.Rand }

// newGen returns a deterministic generator.
func newGen(seed uint64) gen { return gen{r: rand.New(rand.NewPCG(seed, 0x6275_6c77))} }

// pick returns a random element of pool.
func (g gen) pick(pool ...string) string { return pool[g.r.IntN(len(pool))] }

// some returns 0 to max draws of next; nil for 0.
func (g gen) some(max int, next func() string) []string {
	var out []string
	for range g.r.IntN(max + 1) {
		out = append(out, next())
	}
	return out
}

// segments returns "spiffe://td/" followed by 1 to 3 segments drawn from
// pool, for identities and identity globs that stress segment matching.
func (g gen) segments(pool ...string) string {
	segs := make([]string, 1+g.r.IntN(3))
	for i := range segs {
		segs[i] = g.pick(pool...)
	}
	return "spiffe://td/" + strings.Join(segs, "/")
}

func (g gen) servicePattern() string {
	return g.pick("*", "default/web", "default/*", "*/web", "de*/w*", "other/d*b", "*/*", "default/web*", "*a*/*e*", "default/api")
}

func (g gen) service() string {
	return g.pick("default/web", "default/api", "other/web", "other/db", "default/webapp", "a/b/c")
}

func (g gen) identityPattern() string {
	if g.r.IntN(3) == 0 {
		return g.segments("a", "b", "*", "a*", "*a", "a*b", "*b*", "ab", "**")
	}
	return g.pick("*", idWeb, idAPI,
		"spiffe://bulwark.local/ns/default/sa/*",
		"spiffe://bulwark.local/ns/*/sa/web",
		"spiffe://*/ns/default/sa/web",
		"spiffe://bulwark.local/ns/default/sa/w*b",
		"spiffe://bulwark.local/ns/default/*",
		"spiffe://bulwark.local/*/*/sa/*")
}

func (g gen) identity() string {
	if g.r.IntN(3) == 0 {
		return g.segments("a", "b", "ab", "ba", "aab", "abb")
	}
	return g.pick(idWeb, idAPI, idOtherWeb, idForeign, idWeb+"/extra", "")
}

func (g gen) methodPattern() string { return g.pick("GET", "POST", "*", "PURGE", "DELETE") }

func (g gen) method() string { return g.pick("GET", "POST", "DELETE", "get", "PURGE", "PATCH") }

func (g gen) pathPattern() string {
	return g.pick("*", "/*", "/public/*", "/admin", "/admin/*", "/hello", "/public", "/a/b/*")
}

func (g gen) path() string {
	return g.pick("/", "/public", "/public/", "/public/a", "/publicity", "/admin", "/admin/x",
		"/hello", "/hello/", "/a/b", "/a/bc", "/a/b/c")
}

func (g gen) rule() config.Rule {
	var r config.Rule
	if g.r.IntN(4) != 0 {
		r.From = &config.Source{Services: g.some(2, g.servicePattern), Identities: g.some(2, g.identityPattern)}
	}
	if g.r.IntN(4) != 0 {
		r.To = &config.Operation{Methods: g.some(2, g.methodPattern), Paths: g.some(2, g.pathPattern)}
	}
	return r
}

// policies returns up to 6 policies with distinct names in random order.
func (g gen) policies() []*config.AuthorizationPolicy {
	n := g.r.IntN(7)
	names := g.r.Perm(n)
	var ps []*config.AuthorizationPolicy
	for i := range n {
		action := config.ActionAllow
		switch g.r.IntN(5) {
		case 0, 1:
			action = config.ActionDeny
		case 2:
			action = ""
		}
		rules := make([]config.Rule, 1+g.r.IntN(3))
		for j := range rules {
			rules[j] = g.rule()
		}
		ps = append(ps, polNS(g.pick("default", "other"), fmt.Sprintf("p%d", names[i]), g.pick("", "web", "api"), action, rules...))
	}
	return ps
}

func (g gen) dest() identity.ServiceRef {
	return identity.ServiceRef{Namespace: g.pick("default", "other"), Name: g.pick("web", "api")}
}

func (g gen) source() policy.Source {
	return policy.Source{ID: g.identity(), Services: g.some(2, g.service)}
}

func (g gen) request(src policy.Source) policy.Request {
	return policy.Request{Source: src, Method: g.method(), Path: g.path()}
}

// refDecide is a slow, literal reading of the semantics in the package
// documentation, with path.Match for globs ('*' never matches '/').
func refDecide(svc identity.ServiceRef, policies []*config.AuthorizationPolicy, r *policy.Request) policy.Decision {
	var sel []*config.AuthorizationPolicy
	for _, p := range policies {
		if p.Metadata.Namespace == svc.Namespace && (p.Spec.Selector.Service == "" || p.Spec.Selector.Service == svc.Name) {
			sel = append(sel, p)
		}
	}
	slices.SortStableFunc(sel, func(a, b *config.AuthorizationPolicy) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	isAllow := func(p *config.AuthorizationPolicy) bool {
		return p.Spec.Action == config.ActionAllow || p.Spec.Action == ""
	}
	for _, p := range sel {
		if isAllow(p) {
			continue
		}
		for i, rule := range p.Spec.Rules {
			if refRule(rule, r) {
				return policy.Decision{Reason: policy.ReasonDenyRule, Policy: config.Ref(p), Rule: i}
			}
		}
	}
	if !slices.ContainsFunc(sel, isAllow) {
		return policy.Decision{Reason: policy.ReasonNoAllowPolicy, Rule: -1}
	}
	for _, p := range sel {
		if !isAllow(p) {
			continue
		}
		for i, rule := range p.Spec.Rules {
			if refRule(rule, r) {
				return policy.Decision{Allow: true, Reason: policy.ReasonAllowed, Policy: config.Ref(p), Rule: i}
			}
		}
	}
	return policy.Decision{Reason: policy.ReasonNoAllowMatch, Rule: -1}
}

func refRule(rule config.Rule, r *policy.Request) bool {
	return refFrom(rule.From, &r.Source) && refTo(rule.To, r.Method, r.Path)
}

func refFrom(f *config.Source, src *policy.Source) bool {
	if f == nil {
		return true
	}
	if len(f.Identities) > 0 && (src.ID == "" || !slices.ContainsFunc(f.Identities, func(p string) bool { return refGlob(p, src.ID) })) {
		return false
	}
	if len(f.Services) > 0 {
		return slices.ContainsFunc(src.Services, func(s string) bool {
			return s != "" && slices.ContainsFunc(f.Services, func(p string) bool { return refGlob(p, s) })
		})
	}
	return true
}

func refGlob(pattern, s string) bool {
	if pattern == "*" {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

func refTo(o *config.Operation, method, p string) bool {
	if o == nil {
		return true
	}
	if len(o.Methods) > 0 && !slices.ContainsFunc(o.Methods, func(m string) bool { return m == "*" || m == method }) {
		return false
	}
	if len(o.Paths) > 0 {
		return slices.ContainsFunc(o.Paths, func(pat string) bool {
			if pat == "*" {
				return true
			}
			if base, ok := strings.CutSuffix(pat, "/*"); ok {
				return (base != "" && p == base) || strings.HasPrefix(p, base+"/")
			}
			return p == pat
		})
	}
	return true
}

// dump renders policies for a failure message.
func dump(policies []*config.AuthorizationPolicy) string {
	b, err := json.MarshalIndent(policies, "", "  ")
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// TestDecideMatchesReference compares Compile and Decide with refDecide over
// generated meshes and requests.
func TestDecideMatchesReference(t *testing.T) {
	const meshes, requests = 3000, 30
	g := newGen(1)
	reasons := make(map[policy.Reason]int)
	for m := range meshes {
		policies := g.policies()
		dest := g.dest()
		ix := policy.Compile(dest, policies)
		for range requests {
			r := g.request(g.source())
			want := refDecide(dest, policies, &r)
			if got := ix.Decide(&r); got != want {
				t.Fatalf("mesh %d, dest %s, request %+v: got %+v, want %+v\npolicies: %s", m, dest, r, got, want, dump(policies))
			}
			reasons[want.Reason]++
		}
	}
	checkSpread(t, reasons, meshes*requests)
}

// checkSpread fails when the generator stopped producing each reason in at
// least 5% of the total decisions, which would make a property test vacuous.
func checkSpread(t *testing.T, reasons map[policy.Reason]int, total int) {
	t.Helper()
	for _, r := range []policy.Reason{policy.ReasonAllowed, policy.ReasonDenyRule, policy.ReasonNoAllowMatch, policy.ReasonNoAllowPolicy} {
		if got, want := reasons[r], total/20; got < want {
			t.Errorf("decisions with reason %q: got %d, want at least %d of %d", r, got, want, total)
		}
	}
}

// TestForCallerAgreesWithCallee proves "both ends enforce" consistent: for
// generated meshes, callers and requests, deciding with the caller's view
// allows exactly what deciding with every policy allows, decided by the
// same policy and a rule with the same to.
func TestForCallerAgreesWithCallee(t *testing.T) {
	const meshes, callers, requests = 1000, 5, 20
	g := newGen(2)
	reasons := make(map[policy.Reason]int)
	for m := range meshes {
		policies := g.policies()
		dest := g.dest()
		full := policy.Compile(dest, policies)
		byRef := make(map[string]*config.AuthorizationPolicy)
		for _, p := range policies {
			byRef[config.Ref(p)] = p
		}
		before := clonePolicies(t, policies)
		for range callers {
			src := g.source()
			callable, view := policy.ForCaller(dest, policies, src)
			viewByRef := make(map[string]*config.AuthorizationPolicy)
			for _, p := range view {
				viewByRef[config.Ref(p)] = p
			}
			ix := policy.Compile(dest, view)
			anyAllowed := false
			for range requests {
				r := g.request(src)
				want := full.Decide(&r)
				got := ix.Decide(&r)
				reasons[want.Reason]++
				anyAllowed = anyAllowed || got.Allow
				fail := func(what string) {
					t.Fatalf("mesh %d, dest %s, request %+v: %s: caller view decided %+v, callee %+v\npolicies: %s\nview: %s",
						m, dest, r, what, got, want, dump(policies), dump(view))
				}
				if got.Allow != want.Allow || got.Policy != want.Policy {
					fail("decisions differ")
				}
				if decidedByRule(want) != decidedByRule(got) || (decidedByRule(want) && got.Reason != want.Reason) {
					fail("reasons differ")
				}
				if decidedByRule(want) {
					wantTo := byRef[want.Policy].Spec.Rules[want.Rule].To
					gotRule := viewByRef[got.Policy].Spec.Rules[got.Rule]
					if gotRule.From != nil || !cmp.Equal(gotRule.To, wantTo) {
						fail("deciding rules differ")
					}
				}
			}
			if anyAllowed && !callable {
				t.Fatalf("mesh %d: a request was allowed but callable is false\npolicies: %s", m, dump(policies))
			}
			if callable != slices.ContainsFunc(view, func(p *config.AuthorizationPolicy) bool {
				return p.Spec.Action == config.ActionAllow || p.Spec.Action == ""
			}) {
				t.Fatalf("mesh %d: callable %v disagrees with the ALLOW policies of the view %s", m, callable, dump(view))
			}
		}
		if diff := cmp.Diff(before, policies); diff != "" {
			t.Fatalf("mesh %d: ForCaller modified its input (-before +after):\n%s", m, diff)
		}
	}
	checkSpread(t, reasons, meshes*callers*requests)
}

// decidedByRule reports whether a rule decided d.
func decidedByRule(d policy.Decision) bool {
	return d.Reason == policy.ReasonAllowed || d.Reason == policy.ReasonDenyRule
}

// clonePolicies deep-copies policies through JSON.
func clonePolicies(t *testing.T, policies []*config.AuthorizationPolicy) []*config.AuthorizationPolicy {
	t.Helper()
	b, err := json.Marshal(policies)
	if err != nil {
		t.Fatalf("marshal policies: %v", err)
	}
	var out []*config.AuthorizationPolicy
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal policies: %v", err)
	}
	return out
}

func TestForCaller(t *testing.T) {
	webSrc := policy.Source{ID: idWeb, Services: list("default/web")}
	tests := []struct {
		name         string
		dest         identity.ServiceRef
		policies     []*config.AuthorizationPolicy
		caller       policy.Source
		wantCallable bool
		wantView     []*config.AuthorizationPolicy
	}{
		{
			name:   "no_policies_not_callable",
			dest:   svcAPI(),
			caller: webSrc,
		},
		{
			name: "keeps_matching_rules_without_from",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "api", config.ActionAllow,
					config.Rule{From: from(list("default/web"), nil), To: to(list("GET"), list("/a"))},
					config.Rule{From: from(list("default/db"), nil), To: to(list("POST"), nil)},
					config.Rule{To: to(nil, list("/health"))},
				),
			},
			caller:       webSrc,
			wantCallable: true,
			wantView: []*config.AuthorizationPolicy{
				pol("allow", "api", config.ActionAllow,
					config.Rule{To: to(list("GET"), list("/a"))},
					config.Rule{To: to(nil, list("/health"))},
				),
			},
		},
		{
			name: "drops_policies_left_without_rules",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-db", "api", config.ActionAllow, config.Rule{From: from(nil, list(idOtherWeb))}),
				pol("allow-web", "api", config.ActionAllow, config.Rule{From: from(nil, list(idWeb))}),
			},
			caller:       webSrc,
			wantCallable: true,
			wantView: []*config.AuthorizationPolicy{
				pol("allow-web", "api", config.ActionAllow, config.Rule{}),
			},
		},
		{
			name: "only_deny_left_not_callable",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-db", "api", config.ActionAllow, config.Rule{From: from(list("default/db"), nil)}),
				pol("deny-web", "api", config.ActionDeny, config.Rule{From: from(list("default/web"), nil), To: to(nil, list("/admin/*"))}),
			},
			caller: webSrc,
			wantView: []*config.AuthorizationPolicy{
				pol("deny-web", "api", config.ActionDeny, config.Rule{To: to(nil, list("/admin/*"))}),
			},
		},
		{
			name: "ignores_policies_not_selecting_dest",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-web-svc", "web", config.ActionAllow, config.Rule{}),
				polNS("other", "allow-other-ns", "", config.ActionAllow, config.Rule{}),
			},
			caller: webSrc,
		},
		{
			name: "namespace_wide_policy_applies",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow-ns", "", config.ActionAllow, config.Rule{From: from(list("default/*"), nil)}),
			},
			caller:       webSrc,
			wantCallable: true,
			wantView: []*config.AuthorizationPolicy{
				pol("allow-ns", "", config.ActionAllow, config.Rule{}),
			},
		},
		{
			name: "unknown_caller_keeps_only_rules_without_from",
			dest: svcAPI(),
			policies: []*config.AuthorizationPolicy{
				pol("allow", "api", config.ActionAllow,
					config.Rule{From: from(list("*"), list("*"))},
					config.Rule{To: to(list("GET"), nil)},
				),
			},
			caller:       policy.Source{},
			wantCallable: true,
			wantView: []*config.AuthorizationPolicy{
				pol("allow", "api", config.ActionAllow, config.Rule{To: to(list("GET"), nil)}),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			callable, view := policy.ForCaller(tt.dest, tt.policies, tt.caller)
			if callable != tt.wantCallable {
				t.Errorf("callable: got %v, want %v", callable, tt.wantCallable)
			}
			if diff := cmp.Diff(tt.wantView, view); diff != "" {
				t.Errorf("view mismatch (-want +got):\n%s", diff)
			}
			// The view travels to the caller's sidecar as documents that
			// are validated again.
			for _, p := range view {
				if errs := p.Validate(); errs != nil {
					t.Errorf("view policy %s: Validate: got %v, want no errors", config.Ref(p), errs)
				}
			}
		})
	}
}

// TestForCallerSharesNoMemory changes every part of a view and checks that
// the input policies did not change.
func TestForCallerSharesNoMemory(t *testing.T) {
	in := []*config.AuthorizationPolicy{
		pol("allow", "api", config.ActionAllow,
			config.Rule{From: from(list("default/web"), nil), To: to(list("GET", "POST"), list("/a", "/b/*"))},
		),
	}
	in[0].Metadata.Labels = map[string]string{"team": "core"}
	before := clonePolicies(t, in)
	_, view := policy.ForCaller(svcAPI(), in, policy.Source{ID: idWeb, Services: list("default/web")})
	if len(view) != 1 {
		t.Fatalf("view policies: got %d, want 1", len(view))
	}
	v := view[0]
	v.Metadata.Name = "changed"
	v.Metadata.Labels["team"] = "changed"
	v.Spec.Action = config.ActionDeny
	v.Spec.Rules[0].To.Methods[0] = "DELETE"
	v.Spec.Rules[0].To.Paths[1] = "/changed"
	v.Spec.Rules = append(v.Spec.Rules, config.Rule{})
	if diff := cmp.Diff(before, in); diff != "" {
		t.Errorf("changing the view changed the input (-before +after):\n%s", diff)
	}
}
