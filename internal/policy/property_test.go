package policy_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/condition"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// gen generates meshes of policies and requests over a small universe, so
// that random rules and requests often meet.
type gen struct {
	r *rand.Rand
	// full: generate every field of the model; otherwise only
	// identity-based from fields and the methods and paths of to, with
	// enforced ALLOW and DENY policies without selector labels (the
	// policies whose caller view is exact).
	full bool
}

// newGen returns a deterministic generator.
func newGen(seed uint64, full bool) gen {
	return gen{r: rand.New(rand.NewPCG(seed, 0x6275_6c77)), full: full}
}

// pick returns a random element of pool.
func pick[T any](g gen, pool ...T) T { return pool[g.r.IntN(len(pool))] }

// some returns 0 to max draws of next; nil for 0.
func some[T any](g gen, max int, next func() T) []T {
	var out []T
	for range g.r.IntN(max + 1) {
		out = append(out, next())
	}
	return out
}

// maybe returns some(g, 2, next) one time in three, nil otherwise, so that
// generated rules constrain a few fields each.
func maybe[T any](g gen, next func() T) []T {
	if g.r.IntN(3) != 0 {
		return nil
	}
	return some(g, 2, next)
}

// segments returns "spiffe://td/" followed by 1 to 3 segments drawn from
// pool, for identities and identity globs that stress segment matching.
func (g gen) segments(pool ...string) string {
	segs := make([]string, 1+g.r.IntN(3))
	for i := range segs {
		segs[i] = pick(g, pool...)
	}
	return "spiffe://td/" + strings.Join(segs, "/")
}

func (g gen) servicePattern() string {
	return pick(g, "*", "default/web", "default/*", "*/web", "de*/w*", "other/d*b", "*/*", "default/web*", "*a*/*e*", "default/api")
}

func (g gen) service() string {
	return pick(g, "default/web", "default/api", "other/web", "other/db", "default/webapp", "a/b/c")
}

func (g gen) identityPattern() string {
	if g.r.IntN(3) == 0 {
		return g.segments("a", "b", "*", "a*", "*a", "a*b", "*b*", "ab", "**")
	}
	return pick(g, "*", idWeb, idAPI,
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
	return pick(g, idWeb, idAPI, idOtherWeb, idForeign, idWeb+"/extra", "")
}

func (g gen) namespacePattern() string { return pick(g, "*", "default", "oth*", "*t*", "other") }

func (g gen) principalPattern() string {
	return pick(g, "*", "https://idp.example.com/*", "https://idp.example.com/alice", "*/alice", "https://*.example.com/*")
}

func (g gen) principal() string {
	return pick(g, "", "", "https://idp.example.com/alice", "https://idp.example.com/bob", "https://evil.example.com/alice", "https://idp.example.com/team/alice")
}

func (g gen) ipBlock() string {
	return pick(g, "10.0.0.0/8", "10.1.2.3", "192.168.0.0/16", "::ffff:10.0.0.0/104", "2001:db8::/32", "0.0.0.0/0")
}

func (g gen) ip() netip.Addr {
	s := pick(g, "", "10.1.2.3", "::ffff:10.1.2.3", "192.168.1.1", "2001:db8::1", "172.16.0.1")
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func (g gen) methodPattern() string { return pick(g, "GET", "POST", "*", "PURGE", "DELETE", "HEAD") }

func (g gen) method() string {
	return pick(g, "GET", "POST", "DELETE", "get", "PURGE", "purge", "PATCH", "HEAD", "Head")
}

func (g gen) pathPattern() string {
	return pick(g, "*", "/*", "/public/*", "/admin", "/admin/*", "/hello", "/public", "/a/b/*", "/a/*/c", "/img/*.png", "/a/*")
}

func (g gen) path() string {
	return pick(g, "/", "/public", "/public/", "/public/a", "/publicity", "/admin", "/admin/x",
		"/hello", "/hello/", "/a/b", "/a/bc", "/a/b/c", "/a/x/c", "/img/a.png", "/img/a/b.png")
}

func (g gen) hostPattern() string {
	return pick(g, "*", "api.default", "*.example.com", "api.*", "API.Default.")
}

func (g gen) host() string {
	return pick(g, "", "api.default", "API.default.", "www.example.com", "example.com", "api.example.com", "web.default")
}

func (g gen) port() int { return pick(g, 80, 8080, 443) }

// conditions are when expressions: true or false depending on the
// request, and failing to evaluate when a header or a claim is absent.
var conditions = []string{
	"request.method == 'GET'",
	"request.headers['x-env'] == 'prod'",
	"source.namespace == 'default'",
	"'x-env' in request.headers",
	"jwt.claims.admin == true",
}

func (g gen) rule() config.Rule {
	var r config.Rule
	if g.r.IntN(4) != 0 {
		f := &config.Source{
			Services:      maybe(g, g.servicePattern),
			NotServices:   maybe(g, g.servicePattern),
			Identities:    maybe(g, g.identityPattern),
			NotIdentities: maybe(g, g.identityPattern),
			Namespaces:    maybe(g, g.namespacePattern),
			NotNamespaces: maybe(g, g.namespacePattern),
		}
		if g.full {
			f.RequestPrincipals = maybe(g, g.principalPattern)
			f.NotRequestPrincipals = maybe(g, g.principalPattern)
			f.IPBlocks = maybe(g, g.ipBlock)
			f.NotIPBlocks = maybe(g, g.ipBlock)
		}
		if !cmp.Equal(f, &config.Source{}) {
			r.From = f
		}
	}
	if g.r.IntN(4) != 0 {
		o := &config.Operation{
			Methods:    maybe(g, g.methodPattern),
			NotMethods: maybe(g, g.methodPattern),
			Paths:      maybe(g, g.pathPattern),
			NotPaths:   maybe(g, g.pathPattern),
		}
		if g.full {
			o.Hosts = maybe(g, g.hostPattern)
			o.NotHosts = maybe(g, g.hostPattern)
			o.Ports = maybe(g, g.port)
			o.NotPorts = maybe(g, g.port)
		}
		if !cmp.Equal(o, &config.Operation{}) {
			r.To = o
		}
	}
	if g.full && g.r.IntN(4) == 0 {
		r.When = some(g, 2, func() string { return pick(g, conditions...) })
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
		switch g.r.IntN(6) {
		case 0, 1:
			action = config.ActionDeny
		case 2:
			action = ""
		case 3:
			if g.full {
				action = pick(g, config.ActionAudit, "BLOCK")
			}
		}
		rules := make([]config.Rule, 1+g.r.IntN(3))
		for j := range rules {
			rules[j] = g.rule()
		}
		ns := pick(g, "default", "other")
		if g.full && g.r.IntN(4) == 0 {
			ns = config.RootNamespace
		}
		selector := pick(g, "", "web", "api")
		if ns == config.RootNamespace && g.r.IntN(4) != 0 {
			selector = ""
		}
		p := polNS(ns, fmt.Sprintf("p%d", names[i]), selector, action, rules...)
		if g.full {
			p.Spec.DryRun = g.r.IntN(5) == 0
			if g.r.IntN(4) == 0 {
				p.Spec.Selector.Labels = pick(g, map[string]string{"version": "v1"}, map[string]string{"version": "v2", "track": "canary"})
			}
		}
		ps = append(ps, p)
	}
	return ps
}

func (g gen) dest() identity.ServiceRef {
	return identity.ServiceRef{Namespace: pick(g, "default", "other"), Name: pick(g, "web", "api")}
}

func (g gen) labels() map[string]string {
	return pick(g, nil, map[string]string{"version": "v1"}, map[string]string{"version": "v2", "track": "canary", "x": "y"})
}

func (g gen) source() policy.Source {
	src := policy.Source{ID: g.identity(), Services: some(g, 2, g.service)}
	if g.full {
		src.IP = g.ip()
		src.Principal = g.principal()
		if src.Principal != "" && g.r.IntN(2) == 0 {
			src.Claims = map[string]any{"admin": g.r.IntN(2) == 0}
		}
	}
	return src
}

func (g gen) request(src policy.Source) policy.Request {
	r := policy.Request{Source: src, Method: g.method(), Path: g.path(), Time: time.Unix(1e9, 0)}
	if g.full {
		r.Host = g.host()
		r.Port = pick(g, 0, 80, 8080, 443)
		r.Headers = pick(g, nil, http.Header{"X-Env": {"prod"}}, http.Header{"X-Env": {"dev"}})
	}
	return r
}

// refDecide is a slow, literal reading of the semantics in the package
// documentation, with path.Match for segment globs and regular expressions
// for the others. It leaves the ConditionError fields out.
func refDecide(t *testing.T, w policy.Workload, policies []*config.AuthorizationPolicy, r *policy.Request) policy.Decision {
	var sel []*config.AuthorizationPolicy
	for _, p := range policies {
		ns := p.Metadata.Namespace
		if ns != w.Service.Namespace && ns != config.RootNamespace {
			continue
		}
		if s := p.Spec.Selector.Service; s != "" && (ns == config.RootNamespace || s != w.Service.Name) {
			continue
		}
		if !refLabels(p.Spec.Selector.Labels, w.Labels) {
			continue
		}
		sel = append(sel, p)
	}
	slices.SortStableFunc(sel, func(a, b *config.AuthorizationPolicy) int {
		return strings.Compare(a.Metadata.Name+"\x00"+a.Metadata.Namespace, b.Metadata.Name+"\x00"+b.Metadata.Namespace)
	})
	action := func(p *config.AuthorizationPolicy) config.Action {
		switch a := p.Spec.Action; a {
		case "", config.ActionAllow:
			return config.ActionAllow
		case config.ActionAudit:
			return a
		}
		return config.ActionDeny
	}
	first := func(dryRun []bool, want config.Action) (string, int, bool) {
		for _, p := range sel {
			if !slices.Contains(dryRun, p.Spec.DryRun) || action(p) != want {
				continue
			}
			for i, rule := range p.Spec.Rules {
				if refRule(t, rule, r, want != config.ActionAllow) {
					return config.Ref(p), i, true
				}
			}
		}
		return "", -1, false
	}
	decide := func(dryRun ...bool) policy.Decision {
		if ref, i, ok := first(dryRun, config.ActionDeny); ok {
			return policy.Decision{Reason: policy.ReasonDenyRule, Policy: ref, Rule: i}
		}
		if !slices.ContainsFunc(sel, func(p *config.AuthorizationPolicy) bool {
			return action(p) == config.ActionAllow && slices.Contains(dryRun, p.Spec.DryRun)
		}) {
			return policy.Decision{Reason: policy.ReasonNoAllowPolicy, Rule: -1}
		}
		if ref, i, ok := first(dryRun, config.ActionAllow); ok {
			return policy.Decision{Allow: true, Reason: policy.ReasonAllowed, Policy: ref, Rule: i}
		}
		return policy.Decision{Reason: policy.ReasonNoAllowMatch, Rule: -1}
	}
	d := decide(false)
	if ref, _, ok := first([]bool{false}, config.ActionAudit); ok {
		d.Audit, d.AuditPolicy = true, ref
	}
	if would := decide(false, true); would.Allow != d.Allow {
		d.DryRun = policy.DryRun{Differs: true, Allow: would.Allow, Reason: would.Reason, Policy: would.Policy, Rule: would.Rule}
	}
	return d
}

func refLabels(want, have map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// refRule reports whether rule matches r in a rule that denies (DENY,
// AUDIT) or allows.
func refRule(t *testing.T, rule config.Rule, r *policy.Request, deny bool) bool {
	src := &r.Source
	ns := ""
	if m := workloadIDPattern.FindStringSubmatch(src.ID); m != nil {
		ns = m[1]
	}
	var services []string
	for _, s := range src.Services {
		if s != "" {
			services = append(services, s)
		}
	}
	ip := src.IP.Unmap()
	host := strings.ToLower(strings.TrimSuffix(r.Host, "."))
	// field checks a list and its notX list: value is known, and in
	// reports whether it is in a list.
	field := func(pos, neg bool, known bool, in func(wide bool) bool) bool {
		if pos && !(known && in(deny)) {
			return false
		}
		if neg && !(known && !in(!deny) || !known && deny) {
			return false
		}
		return true
	}
	ok := true
	check := func(list, notList []string, known bool, match func(pattern string, wide bool) bool) {
		in := func(l []string) func(bool) bool {
			return func(wide bool) bool {
				return slices.ContainsFunc(l, func(p string) bool { return match(p, wide) })
			}
		}
		if len(list) > 0 {
			ok = ok && field(true, false, known, in(list))
		}
		if len(notList) > 0 {
			ok = ok && field(false, true, known, in(notList))
		}
	}
	anyService := func(p string, _ bool) bool {
		return slices.ContainsFunc(services, func(s string) bool { return refSegmentGlob(p, s) })
	}
	if f := rule.From; f != nil {
		check(f.Services, f.NotServices, len(services) > 0, anyService)
		check(f.Identities, f.NotIdentities, src.ID != "", func(p string, _ bool) bool { return refSegmentGlob(p, src.ID) })
		check(f.Namespaces, f.NotNamespaces, ns != "", func(p string, _ bool) bool { return refRunGlob(p, ns) })
		check(f.RequestPrincipals, f.NotRequestPrincipals, src.Principal != "", func(p string, _ bool) bool { return refRunGlob(p, src.Principal) })
		check(f.IPBlocks, f.NotIPBlocks, ip.IsValid(), func(p string, _ bool) bool {
			pf, err := netip.ParsePrefix(p)
			if err != nil {
				a := netip.MustParseAddr(p)
				pf = netip.PrefixFrom(a, a.BitLen())
			}
			if pf.Addr().Is4In6() {
				pf = netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-96)
			}
			return pf.Contains(ip)
		})
	}
	if o := rule.To; o != nil {
		check(o.Methods, o.NotMethods, r.Method != "", func(p string, wide bool) bool {
			eq := func(m string) bool { return p == "*" || p == m || p == "GET" && m == "HEAD" }
			return eq(r.Method) || wide && eq(strings.ToUpper(r.Method))
		})
		check(o.Paths, o.NotPaths, r.Path != "", func(p string, _ bool) bool {
			if p == "*" {
				return true
			}
			if base, ok := strings.CutSuffix(p, "/*"); ok && !strings.Contains(base, "*") {
				return (base != "" && r.Path == base) || strings.HasPrefix(r.Path, base+"/")
			}
			return refSegmentGlob(p, r.Path)
		})
		check(o.Hosts, o.NotHosts, host != "", func(p string, _ bool) bool {
			p = strings.ToLower(strings.TrimSuffix(p, "."))
			switch {
			case p == "*":
				return true
			case strings.HasPrefix(p, "*."):
				return len(host) > len(p)-1 && refRunGlob(p, host)
			case strings.HasSuffix(p, ".*"):
				return len(host) > len(p)-1 && refRunGlob(p, host)
			}
			return p == host
		})
		ports := func(l []int) []string {
			var out []string
			for _, p := range l {
				out = append(out, fmt.Sprint(p))
			}
			return out
		}
		check(ports(o.Ports), ports(o.NotPorts), r.Port > 0, func(p string, _ bool) bool { return p == fmt.Sprint(r.Port) })
	}
	if !ok {
		return false
	}
	for _, expr := range rule.When {
		prg, ok := refPrograms[expr]
		if !ok {
			var err error
			if prg, err = condition.Compile(expr); err != nil {
				t.Fatalf("condition %q: %v", expr, err)
			}
			refPrograms[expr] = prg
		}
		v, err := prg.Eval(&condition.Vars{
			SourceIdentity: src.ID, SourceNamespace: ns, SourcePrincipal: src.Principal, SourceServices: src.Services,
			SourceIP: ip, Method: r.Method, Host: host, Path: r.Path, Query: r.Query, Port: r.Port,
			Headers: r.Headers, Claims: src.Claims, SNI: r.SNI, Now: r.Time,
		})
		if err != nil {
			v = deny
		}
		if !v {
			return false
		}
	}
	return true
}

// refSegmentGlob matches a glob whose '*' never matches '/'.
func refSegmentGlob(pattern, s string) bool {
	if pattern == "*" {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

// refRunGlob matches a glob whose '*' matches any run of characters, by
// backtracking.
func refRunGlob(pattern, s string) bool {
	if pattern == "" {
		return s == ""
	}
	if pattern[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if refRunGlob(pattern[1:], s[i:]) {
				return true
			}
		}
		return false
	}
	return s != "" && s[0] == pattern[0] && refRunGlob(pattern[1:], s[1:])
}

// workloadIDPattern captures the namespace of a workload SPIFFE ID.
var workloadIDPattern = regexp.MustCompile(`^spiffe://[^/]+/ns/([^/]+)/sa/[^/]+$`)

// refPrograms memoizes the reference's compiled conditions (tests do not
// run in parallel).
var refPrograms = map[string]*condition.Program{}

// dump renders policies for a failure message.
func dump(policies []*config.AuthorizationPolicy) string {
	b, err := json.MarshalIndent(policies, "", "  ")
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// withoutConditionErrors returns d without its ConditionError fields,
// which refDecide does not compute.
func withoutConditionErrors(d policy.Decision) policy.Decision {
	d.ConditionError = false
	d.DryRun.ConditionError = false
	return d
}

// TestDecideMatchesReference compares Compile and Decide with refDecide over
// generated meshes and requests, and checks that Explain agrees with
// Decide.
func TestDecideMatchesReference(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", full), func(t *testing.T) {
			const meshes, requests = 3000, 30
			g := newGen(1, full)
			reasons := make(map[policy.Reason]int)
			var audits, dryRuns int
			for m := range meshes {
				policies := g.policies()
				w := policy.Workload{Service: g.dest()}
				if full {
					w.Labels = g.labels()
				}
				ix, err := policy.Compile(w, policies)
				if err != nil {
					t.Fatalf("mesh %d: Compile: %v", m, err)
				}
				for range requests {
					r := g.request(g.source())
					want := refDecide(t, w, policies, &r)
					got := ix.Decide(&r)
					if withoutConditionErrors(got) != want {
						t.Fatalf("mesh %d, workload %+v, request %+v: got %+v, want %+v\npolicies: %s", m, w, r, got, want, dump(policies))
					}
					checkExplain(t, ix, &r, got)
					reasons[want.Reason]++
					if want.Audit {
						audits++
					}
					if want.DryRun.Differs {
						dryRuns++
					}
				}
			}
			checkSpread(t, reasons, meshes*requests)
			if full && (audits == 0 || dryRuns == 0) {
				t.Errorf("audited decisions %d, dry-run differences %d: want some of each", audits, dryRuns)
			}
		})
	}
}

// checkExplain checks that Explain decides as Decide and that its trace
// agrees: the deciding rule matched, and every enforced rule evaluated
// before it (of its kind) did not.
func checkExplain(t *testing.T, ix *policy.Index, r *policy.Request, d policy.Decision) {
	t.Helper()
	ex := ix.Explain(r)
	if ex.Decision != d {
		t.Fatalf("Explain decision %+v, Decide %+v", ex.Decision, d)
	}
	for _, pt := range ex.Policies {
		for _, rt := range pt.Rules {
			if rt.Matched != (len(rt.Mismatches) == 0) {
				t.Fatalf("%s rule %d: matched %v with mismatches %q", pt.Policy, rt.Rule, rt.Matched, rt.Mismatches)
			}
			if pt.Policy == d.Policy && rt.Rule == d.Rule && !pt.DryRun && pt.Action != config.ActionAudit && !rt.Matched {
				t.Fatalf("deciding rule %s rule %d did not match in the trace: %q\n%s", pt.Policy, rt.Rule, rt.Mismatches, ex)
			}
		}
	}
	if d.Reason == policy.ReasonNoAllowMatch {
		for _, pt := range ex.Policies {
			for _, rt := range pt.Rules {
				if pt.Action != config.ActionAudit && !pt.DryRun && rt.Matched {
					t.Fatalf("no rule matched, but the trace says %s rule %d matched\n%s", pt.Policy, rt.Rule, ex)
				}
			}
		}
		if ex.Nearest == nil || len(ex.Nearest.Changes) == 0 {
			t.Fatalf("denied for lack of a matching ALLOW rule: got nearest %+v, want one with changes\n%s", ex.Nearest, ex)
		}
	}
	if d.Allow && ex.Nearest != nil {
		t.Fatalf("allowed, but nearest is %+v", ex.Nearest)
	}
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

// TestForCallerNeverStricter proves "both ends enforce" safe: for generated
// meshes using the whole model (labels, dry runs, AUDIT, principals, IP
// blocks, hosts, ports, conditions), callers, instances and requests,
// whatever any instance of the destination allows, the caller's view
// allows.
func TestForCallerNeverStricter(t *testing.T) {
	const meshes, callers, requests = 1000, 5, 20
	g := newGen(3, true)
	allowed, viewOnly := 0, 0
	for m := range meshes {
		policies := g.policies()
		dest := g.dest()
		before := clonePolicies(t, policies)
		set := policy.NewSet(policies)
		for range callers {
			src := g.source()
			callable, view := set.ForCaller(dest, policy.Source{ID: src.ID, Services: src.Services})
			ix := mustCompile(t, dest, view)
			full, err := policy.Compile(policy.Workload{Service: dest, Labels: g.labels()}, policies)
			if err != nil {
				t.Fatalf("mesh %d: Compile: %v", m, err)
			}
			for range requests {
				r := g.request(src)
				want, got := full.Decide(&r), ix.Decide(&r)
				if want.Allow && !got.Allow {
					t.Fatalf("mesh %d, dest %s, request %+v: the callee allows (%v) but the caller's view denies (%v)\npolicies: %s\nview: %s",
						m, dest, r, want, got, dump(policies), dump(view))
				}
				if want.Allow {
					allowed++
					if !callable {
						t.Fatalf("mesh %d: a request was allowed but callable is false\npolicies: %s", m, dump(policies))
					}
				} else if got.Allow {
					viewOnly++
				}
			}
			checkView(t, callable, view)
		}
		if diff := cmp.Diff(before, policies); diff != "" {
			t.Fatalf("mesh %d: ForCaller modified its input (-before +after):\n%s", m, diff)
		}
	}
	if allowed < 1000 || viewOnly < 1000 {
		t.Errorf("allowed by the callee %d, by the view only %d: want at least 1000 of each", allowed, viewOnly)
	}
}

// checkView checks that callable says whether the view holds an ALLOW
// policy and that every view policy is valid.
func checkView(t *testing.T, callable bool, view []*config.AuthorizationPolicy) {
	t.Helper()
	if callable != slices.ContainsFunc(view, func(p *config.AuthorizationPolicy) bool {
		return p.Spec.Action == config.ActionAllow || p.Spec.Action == ""
	}) {
		t.Fatalf("callable %v disagrees with the ALLOW policies of the view %s", callable, dump(view))
	}
	for _, p := range view {
		if len(p.Spec.Selector.Labels) > 0 || p.Spec.DryRun {
			t.Fatalf("view policy %s has selector labels or dryRun: %s", config.Ref(p), dump(view))
		}
		for i, r := range p.Spec.Rules {
			if r.From != nil || len(r.When) > 0 {
				t.Fatalf("view policy %s rule %d has a from or a when: %s", config.Ref(p), i, dump(view))
			}
		}
	}
}

// TestForCallerAgreesWithCallee proves the view exact for policies using
// only identity-based from fields and the methods and paths of to: for
// generated meshes, callers and requests, deciding with the caller's view
// allows exactly what deciding with every policy allows, decided by the
// same policy and a rule with the same to.
func TestForCallerAgreesWithCallee(t *testing.T) {
	const meshes, callers, requests = 1000, 5, 20
	g := newGen(2, false)
	reasons := make(map[policy.Reason]int)
	for m := range meshes {
		policies := g.policies()
		dest := g.dest()
		full := mustCompile(t, dest, policies)
		byRef := make(map[string]*config.AuthorizationPolicy)
		for _, p := range policies {
			byRef[config.Ref(p)] = p
		}
		for range callers {
			src := g.source()
			callable, view := policy.ForCaller(dest, policies, src)
			viewByRef := make(map[string]*config.AuthorizationPolicy)
			for _, p := range view {
				viewByRef[config.Ref(p)] = p
			}
			ix := mustCompile(t, dest, view)
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
			checkView(t, callable, view)
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

// TestSetMatchesCompile checks that a Set selects and compiles exactly as
// Compile over every policy does.
func TestSetMatchesCompile(t *testing.T) {
	const meshes, requests = 500, 10
	g := newGen(4, true)
	for m := range meshes {
		var policies []*config.AuthorizationPolicy
		for range 4 {
			// Several generated batches, renamed apart.
			for _, p := range g.policies() {
				p.Metadata.Name += fmt.Sprintf("-%d", len(policies))
				policies = append(policies, p)
			}
		}
		set := policy.NewSet(policies)
		for range 4 {
			w := policy.Workload{Service: g.dest(), Labels: g.labels()}
			var want []*config.AuthorizationPolicy
			for _, p := range policies {
				if p.Selects(w.Service, w.Labels) {
					want = append(want, p)
				}
			}
			slices.SortFunc(want, func(a, b *config.AuthorizationPolicy) int {
				return strings.Compare(a.Metadata.Name+"\x00"+a.Metadata.Namespace, b.Metadata.Name+"\x00"+b.Metadata.Namespace)
			})
			if got := set.Selecting(w); !slices.Equal(got, want) {
				t.Fatalf("mesh %d, workload %+v: Selecting got %s, want %s (in order of name, then namespace)", m, w, dump(got), dump(want))
			}
			fromSet, err := set.Compile(w)
			if err != nil {
				t.Fatalf("Set.Compile: %v", err)
			}
			direct, err := policy.Compile(w, policies)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			for range requests {
				r := g.request(g.source())
				if got, want := fromSet.Decide(&r), direct.Decide(&r); got != want {
					t.Fatalf("mesh %d, workload %+v, request %+v: Set.Compile decided %+v, Compile %+v", m, w, r, got, want)
				}
				for _, svc := range r.Source.Services {
					if got, want := fromSet.MatchesServicePattern(svc), direct.MatchesServicePattern(svc); got != want {
						t.Fatalf("MatchesServicePattern(%q): Set.Compile %v, Compile %v", svc, got, want)
					}
				}
			}
		}
	}
}
