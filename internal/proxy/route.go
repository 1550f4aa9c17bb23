package proxy

// Routes: the compiled Route documents of one destination, and the actions
// of the rule that matches a request.
//
// Matching semantics (the doc comments of config.Route are the spec):
//
//   - Rules are tried in order, all rules of the first Route (by name), then
//     those of the next; the first rule that matches wins. A request no rule
//     matches goes to every endpoint of the service.
//   - A rule with no matches matches every request; otherwise it matches
//     when any of its RouteMatch holds, and a RouteMatch holds when all of
//     its conditions hold. A RouteMatch with no condition holds for every
//     request.
//   - Path is matched on the normalized path (DESIGN §3), without the query:
//     exact; prefix at a segment boundary unless the prefix ends with "/"
//     ("/api" matches "/api", "/api/" and "/api/x" but not "/apix"; "/api/"
//     matches "/api/" and "/api/x" but not "/api"); regex (RE2) anchored at
//     both ends, compiled as ^(?:re)$.
//   - Methods: any of them, compared exactly (case-sensitive: "get" is not
//     GET).
//   - Headers: all of them. Names are compared without regard to case
//     (requests' names are read as net/http stores them: canonical).
//     Present holds when the header exists, whatever its value (even
//     empty); exact, prefix and regex (anchored) are tried on its first
//     value, and a missing header never matches them.
//   - Query parameters: all of them, read as url.ParseQuery reads the raw
//     query (names case-sensitive, '+' and %XX decoded; a pair that does not
//     decode or holds a ';' is skipped), on the first value, with the same
//     operators as headers.
//   - SourceServices: any of them, against any of the services the caller
//     serves ("ns/name"): "*" is any caller, "ns/*" any service in ns,
//     "*/name" a service called name in any namespace, anything else
//     exact.
//
// Matching does not allocate unless a rule matches a query parameter whose
// name or value is percent-encoded.

import (
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// routeTable is the compiled Routes of one destination (or of the proxy's
// own service, for inbound rate limits). nil or empty: no routes. It is
// immutable once compiled.
type routeTable struct{ rules []*routeRule }

// routeInput is what matching reads of a request. Built by the caller on
// the stack.
type routeInput struct {
	// method as sent; path normalized, without the query; rawQuery as sent.
	method, path, rawQuery string
	header                 http.Header
	// sources are the services the caller serves, "ns/name".
	sources []string
}

// routeRule is one compiled rule: its matches and its actions.
type routeRule struct {
	// name is "<route name>/<rule name>", for logs and metrics.
	name string
	// matches: any of them; none matches every request.
	matches []routeMatch

	// backends split the requests by version; nil: every endpoint.
	backends []routeBackend
	// redirect answers instead of forwarding; nil: none.
	redirect *config.Redirect
	// reqEdits and respEdits edit the request and response headers; nil:
	// none.
	reqEdits, respEdits *headerEdits
	// mirror copies requests to a version; nil: none.
	mirror *routeMirror
	// fault injects delays and aborts; nil: none.
	fault *routeFault
	// timeout overrides the TrafficPolicy's when hasTimeout (0 disables
	// it).
	timeout    time.Duration
	hasTimeout bool
	// retries overrides the TrafficPolicy's; nil: not overridden.
	retries *config.RetryPolicy
	// rateLimit of the requests the rule matches (inbound); nil: none.
	rateLimit *config.RateLimit
}

// routeBackend is one version of the service and its weight, 0 to 100.
type routeBackend struct {
	version string
	weight  int
}

// routeMirror copies percent of the requests to version.
type routeMirror struct {
	version string
	percent float64
}

// routeFault is a compiled Fault: delay for delayPercent of the requests,
// abort with status abort for abortPercent of them. A zero delay or abort
// is not injected.
type routeFault struct {
	delay        time.Duration
	delayPercent float64
	abort        int
	abortPercent float64
}

// headerEdits is a compiled HeaderEdits: canonical names, set and add
// sorted by name so that edits apply in a stable order.
type headerEdits struct {
	remove   []string
	set, add []routeHeaderValue
}

// routeHeaderValue is one header name (canonical) and value.
type routeHeaderValue struct{ name, value string }

// routeMatch is a compiled RouteMatch: it holds when every condition holds.
type routeMatch struct {
	path    routeCond // op routeOpAny: any path
	methods []string  // nil: any method
	headers []routeValueCond
	query   []routeValueCond
	sources *routeSources // nil: any caller
}

// routeOp is the operator of a string condition.
type routeOp uint8

// Operators of routeCond.
const (
	routeOpAny routeOp = iota
	routeOpPresent
	routeOpExact
	routeOpPrefix // at a segment boundary (paths) or plain (other values)
	routeOpRegex
)

// routeCond is one compiled string condition.
type routeCond struct {
	op    routeOp
	value string // exact value or prefix
	// dir is value+"/" for a path prefix that does not end with "/".
	dir string
	re  *regexp.Regexp
}

// routeValueCond is a condition on a header (name canonical) or a query
// parameter (name as written).
type routeValueCond struct {
	name string
	routeCond
}

// routeSources is a compiled SourceServices list.
type routeSources struct {
	any        bool
	exact      []string // "ns/name"
	namespaces []string // "ns/" of "ns/*"
	names      []string // "/name" of "*/name"
}

// compileRoutes decodes and compiles Route documents (JSON, as pushed in
// Destination.routes and Inbound.routes, already sorted by name). Every
// document is decoded and validated again with config.DecodeObject, and
// checked once more where a mistake would misroute or break requests: a
// document that fails is an error naming its index ("routes[1]: ..."), and
// the snapshot is NACKed. Rules keep their order: all rules of the first
// Route, then those of the next. No documents give a nil table.
func compileRoutes(docs [][]byte) (*routeTable, error) {
	if len(docs) == 0 {
		return nil, nil
	}
	rt := &routeTable{}
	for i, doc := range docs {
		o, err := config.DecodeObject(doc)
		if err != nil {
			return nil, fmt.Errorf("routes[%d]: %w", i, err)
		}
		r, ok := o.(*config.Route)
		if !ok {
			return nil, fmt.Errorf("routes[%d]: kind %s is not a Route", i, o.GetTypeMeta().Kind)
		}
		for j := range r.Spec.Rules {
			rule, err := compileRouteRule(r.Metadata.Name, j, &r.Spec.Rules[j])
			if err != nil {
				return nil, fmt.Errorf("routes[%d] (%s/%s): spec.rules[%d].%w", i, r.Metadata.Namespace, r.Metadata.Name, j, err)
			}
			rt.rules = append(rt.rules, rule)
		}
	}
	return rt, nil
}

// compileRouteRule compiles rule j of the Route called route. Its errors
// start with the field path below the rule ("matches[0].path.regex: ...").
func compileRouteRule(route string, j int, in *config.RouteRule) (*routeRule, error) {
	name := in.Name
	if name == "" {
		name = "rule" + strconv.Itoa(j)
	}
	r := &routeRule{name: route + "/" + name, redirect: in.Redirect, retries: in.Retries, rateLimit: in.RateLimit}
	for k := range in.Matches {
		m, err := compileRouteMatch(&in.Matches[k])
		if err != nil {
			return nil, fmt.Errorf("matches[%d].%w", k, err)
		}
		r.matches = append(r.matches, m)
	}
	if len(in.Backends) > 0 {
		total := 0
		for k, b := range in.Backends {
			if b.Version == "" {
				return nil, fmt.Errorf("backends[%d].version: required", k)
			}
			if b.Weight < 0 || b.Weight > 100 {
				return nil, fmt.Errorf("backends[%d].weight: %d is not from 0 to 100", k, b.Weight)
			}
			total += b.Weight
			r.backends = append(r.backends, routeBackend{version: b.Version, weight: b.Weight})
		}
		if total != 100 {
			return nil, fmt.Errorf("backends: weights add up to %d, not 100", total)
		}
	}
	if rd := in.Redirect; rd != nil {
		if err := checkRouteRedirect(rd); err != nil {
			return nil, fmt.Errorf("redirect.%w", err)
		}
		if rd.Status == 0 {
			cp := *rd
			cp.Status = http.StatusFound
			r.redirect = &cp
		}
	}
	var err error
	if r.reqEdits, err = compileRouteHeaderEdits(in.RequestHeaders); err != nil {
		return nil, fmt.Errorf("requestHeaders.%w", err)
	}
	if r.respEdits, err = compileRouteHeaderEdits(in.ResponseHeaders); err != nil {
		return nil, fmt.Errorf("responseHeaders.%w", err)
	}
	if mi := in.Mirror; mi != nil {
		if mi.Version == "" {
			return nil, fmt.Errorf("mirror.version: required")
		}
		p, err := routePercentOf(mi.Percent)
		if err != nil {
			return nil, fmt.Errorf("mirror.percent: %w", err)
		}
		r.mirror = &routeMirror{version: mi.Version, percent: p}
	}
	if in.Fault != nil {
		if r.fault, err = compileRouteFault(in.Fault); err != nil {
			return nil, fmt.Errorf("fault.%w", err)
		}
	}
	if in.Timeout != "" {
		d, err := time.ParseDuration(in.Timeout)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("timeout: %q is not a duration of 0 or more", in.Timeout)
		}
		r.timeout, r.hasTimeout = d, true
	}
	return r, nil
}

// compileRouteMatch compiles one RouteMatch.
func compileRouteMatch(in *config.RouteMatch) (routeMatch, error) {
	var m routeMatch
	if in.Path != nil {
		c, err := compileRouteCond("path", in.Path.Exact, in.Path.Prefix, in.Path.Regex, false)
		if err != nil {
			return m, err
		}
		if c.op == routeOpPrefix && !strings.HasSuffix(c.value, "/") {
			c.dir = c.value + "/"
		}
		m.path = c
	}
	if len(in.Methods) > 0 {
		m.methods = slices.Clone(in.Methods)
	}
	for k, h := range in.Headers {
		if !httpguts.ValidHeaderFieldName(h.Name) {
			return m, fmt.Errorf("headers[%d].name: %q is not a header name", k, h.Name)
		}
		c, err := compileRouteCond(fmt.Sprintf("headers[%d]", k), h.Exact, h.Prefix, h.Regex, h.Present)
		if err != nil {
			return m, err
		}
		m.headers = append(m.headers, routeValueCond{name: http.CanonicalHeaderKey(h.Name), routeCond: c})
	}
	for k, q := range in.QueryParams {
		if q.Name == "" {
			return m, fmt.Errorf("queryParams[%d].name: required", k)
		}
		c, err := compileRouteCond(fmt.Sprintf("queryParams[%d]", k), q.Exact, q.Prefix, q.Regex, q.Present)
		if err != nil {
			return m, err
		}
		m.query = append(m.query, routeValueCond{name: q.Name, routeCond: c})
	}
	if len(in.SourceServices) > 0 {
		s, err := compileRouteSources(in.SourceServices)
		if err != nil {
			return m, err
		}
		m.sources = s
	}
	return m, nil
}

// compileRouteCond compiles the one operator that is set (present only
// for headers and query parameters) of the condition at field.
func compileRouteCond(field, exact, prefix, regex string, present bool) (routeCond, error) {
	var c routeCond
	n := 0
	if present {
		c.op, n = routeOpPresent, n+1
	}
	if exact != "" {
		c.op, c.value, n = routeOpExact, exact, n+1
	}
	if prefix != "" {
		c.op, c.value, n = routeOpPrefix, prefix, n+1
	}
	if regex != "" {
		re, err := regexp.Compile("^(?:" + regex + ")$")
		if err != nil {
			return c, fmt.Errorf("%s.regex: %w", field, err)
		}
		c.op, c.re, n = routeOpRegex, re, n+1
	}
	if n != 1 {
		if present {
			return c, fmt.Errorf("%s.present: excludes exact, prefix and regex", field)
		}
		return c, fmt.Errorf("%s: exactly one of exact, prefix and regex is required", field)
	}
	return c, nil
}

// compileRouteSources compiles a SourceServices list.
func compileRouteSources(pats []string) (*routeSources, error) {
	s := &routeSources{}
	for k, p := range pats {
		if p == "*" {
			s.any = true
			continue
		}
		ns, name, ok := strings.Cut(p, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") ||
			(ns != "*" && strings.Contains(ns, "*")) || (name != "*" && strings.Contains(name, "*")) {
			return nil, fmt.Errorf("sourceServices[%d]: %q is not \"*\" or ns/name (\"*\" as a whole segment)", k, p)
		}
		switch {
		case ns == "*" && name == "*":
			s.any = true
		case name == "*":
			s.namespaces = append(s.namespaces, ns+"/")
		case ns == "*":
			s.names = append(s.names, "/"+name)
		default:
			s.exact = append(s.exact, p)
		}
	}
	return s, nil
}

// routePercentOf returns a percentage of requests: 100 when unset.
func routePercentOf(p *float64) (float64, error) {
	if p == nil {
		return 100, nil
	}
	if math.IsNaN(*p) || *p < 0 || *p > 100 {
		return 0, fmt.Errorf("%v is not from 0 to 100", *p)
	}
	return *p, nil
}

// compileRouteFault compiles a Fault. Its errors name the field below fault.
func compileRouteFault(in *config.Fault) (*routeFault, error) {
	f := &routeFault{}
	if d := in.Delay; d != nil {
		v, err := time.ParseDuration(d.Fixed)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("delay.fixed: %q is not a duration of 0 or more", d.Fixed)
		}
		if f.delayPercent, err = routePercentOf(d.Percent); err != nil {
			return nil, fmt.Errorf("delay.percent: %w", err)
		}
		f.delay = v
	}
	if a := in.Abort; a != nil {
		if a.Status < 200 || a.Status > 599 {
			return nil, fmt.Errorf("abort.status: %d is not from 200 to 599", a.Status)
		}
		var err error
		if f.abortPercent, err = routePercentOf(a.Percent); err != nil {
			return nil, fmt.Errorf("abort.percent: %w", err)
		}
		f.abort = a.Status
	}
	return f, nil
}

// checkRouteRedirect refuses a redirect whose Location would be broken. Its
// errors name the field below redirect.
func checkRouteRedirect(rd *config.Redirect) error {
	switch rd.Scheme {
	case "", "http", "https":
	default:
		return fmt.Errorf("scheme: %q is not http or https", rd.Scheme)
	}
	if rd.Host != "" && (strings.ContainsAny(rd.Host, "/?#@[]:") || !httpguts.ValidHostHeader(rd.Host)) {
		return fmt.Errorf("host: %q is not a host name", rd.Host)
	}
	if rd.Port < 0 || rd.Port > 65535 {
		return fmt.Errorf("port: %d is not from 1 to 65535", rd.Port)
	}
	if rd.Path != "" && (rd.Path[0] != '/' || strings.ContainsAny(rd.Path, "?# ") || !httpguts.ValidHeaderFieldValue(rd.Path)) {
		return fmt.Errorf("path: %q is not an absolute path without query", rd.Path)
	}
	switch rd.Status {
	case 0, http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return fmt.Errorf("status: %d is not 301, 302, 303, 307 or 308", rd.Status)
	}
	return nil
}

// routeProtectedHeader reports whether a header may never be edited by a
// Route (config.Route's validation refuses the same): hop-by-hop headers
// (Proxy-* among them), the framing headers Host and Content-Length, and
// identity headers (Forwarded, X-Forwarded-*, X-Bulwark-*, with '_' read
// as '-' as stripIdentityHeaders reads them).
func routeProtectedHeader(name string) bool {
	lk := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	switch lk {
	case "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
		"host", "content-length", "forwarded":
		return true
	}
	return strings.HasPrefix(lk, "proxy-") || strings.HasPrefix(lk, "x-forwarded-") || strings.HasPrefix(lk, "x-bulwark-")
}

// compileRouteHeaderEdits compiles HeaderEdits; nil gives nil. Its errors name
// the field below the edits.
func compileRouteHeaderEdits(in *config.HeaderEdits) (*headerEdits, error) {
	if in == nil {
		return nil, nil
	}
	check := func(field, name string) error {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Errorf("%s: %q is not a header name", field, name)
		}
		if routeProtectedHeader(name) {
			return fmt.Errorf("%s: %s is a hop-by-hop, framing or identity header and cannot be edited", field, name)
		}
		return nil
	}
	values := func(field string, m map[string]string) ([]routeHeaderValue, error) {
		var out []routeHeaderValue
		for _, name := range slices.Sorted(maps.Keys(m)) {
			if err := check(field+"."+name, name); err != nil {
				return nil, err
			}
			if !httpguts.ValidHeaderFieldValue(m[name]) {
				return nil, fmt.Errorf("%s.%s: the value holds a control character", field, name)
			}
			out = append(out, routeHeaderValue{name: http.CanonicalHeaderKey(name), value: m[name]})
		}
		return out, nil
	}
	e := &headerEdits{}
	for k, name := range in.Remove {
		if err := check(fmt.Sprintf("remove[%d]", k), name); err != nil {
			return nil, err
		}
		e.remove = append(e.remove, http.CanonicalHeaderKey(name))
	}
	var err error
	if e.set, err = values("set", in.Set); err != nil {
		return nil, err
	}
	if e.add, err = values("add", in.Add); err != nil {
		return nil, err
	}
	return e, nil
}

// match returns the first rule whose matches hold, or nil.
func (rt *routeTable) match(in *routeInput) *routeRule {
	if rt == nil {
		return nil
	}
	for _, r := range rt.rules {
		if r.holds(in) {
			return r
		}
	}
	return nil
}

// holds reports whether the rule matches the request: it has no matches,
// or one of them holds.
func (r *routeRule) holds(in *routeInput) bool {
	if len(r.matches) == 0 {
		return true
	}
	for i := range r.matches {
		if r.matches[i].holds(in) {
			return true
		}
	}
	return false
}

// holds reports whether every condition of m holds, cheapest first.
func (m *routeMatch) holds(in *routeInput) bool {
	if m.methods != nil && !slices.Contains(m.methods, in.method) {
		return false
	}
	if m.path.op != routeOpAny && !m.path.matchPath(in.path) {
		return false
	}
	for i := range m.headers {
		c := &m.headers[i]
		v, ok := routeHeader(in.header, c.name)
		if !c.matchValue(v, ok) {
			return false
		}
	}
	for i := range m.query {
		c := &m.query[i]
		v, ok := routeQueryParam(in.rawQuery, c.name)
		if !c.matchValue(v, ok) {
			return false
		}
	}
	return m.sources == nil || m.sources.matchAny(in.sources)
}

// matchPath reports whether the normalized path p matches c.
func (c *routeCond) matchPath(p string) bool {
	switch c.op {
	case routeOpExact:
		return p == c.value
	case routeOpPrefix:
		if c.dir == "" {
			return strings.HasPrefix(p, c.value)
		}
		return p == c.value || strings.HasPrefix(p, c.dir)
	case routeOpRegex:
		return c.re.MatchString(p)
	}
	return true
}

// matchValue reports whether a value matches c; ok says whether the header
// or parameter exists at all.
func (c *routeCond) matchValue(v string, ok bool) bool {
	if !ok {
		return false
	}
	switch c.op {
	case routeOpExact:
		return v == c.value
	case routeOpPrefix:
		return strings.HasPrefix(v, c.value)
	case routeOpRegex:
		return c.re.MatchString(v)
	}
	return true // routeOpPresent
}

// routeHeader returns the first value of the header canon (a canonical
// name) and whether it exists. It reads the key canon only: net/http
// stores every header it parses under its canonical name (a name that is
// not a token, which a match cannot name, aside), so a scan for other
// spellings would only slow every miss down.
func routeHeader(h http.Header, canon string) (string, bool) {
	vs := h[canon]
	if len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// routeQueryParam returns the first value of the parameter name in a raw query,
// and whether it is there, reading the query as url.ParseQuery does: pairs
// separated by '&', a pair holding ';' or a bad escape skipped. It only
// allocates to decode a name or value that holds '%' or '+'.
func routeQueryParam(rawQuery, name string) (string, bool) {
	for q := rawQuery; q != ""; {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if strings.IndexByte(k, '%') >= 0 || strings.IndexByte(k, '+') >= 0 {
			dk, err := url.QueryUnescape(k)
			if err != nil || dk != name {
				continue
			}
		} else if k != name {
			continue
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			continue
		}
		return dv, true
	}
	return "", false
}

// matchAny reports whether any of the caller's services is in the set.
func (s *routeSources) matchAny(services []string) bool {
	if s.any {
		return true
	}
	for _, svc := range services {
		if slices.Contains(s.exact, svc) {
			return true
		}
		for _, ns := range s.namespaces {
			if strings.HasPrefix(svc, ns) {
				return true
			}
		}
		for _, name := range s.names {
			if strings.HasSuffix(svc, name) && strings.IndexByte(svc, '/') == len(svc)-len(name) {
				return true
			}
		}
	}
	return false
}

// pickVersion returns the backend version for a number x uniform in
// [0,100) (rand.Float64()*100): the weights are cumulative, so a backend of
// weight w gets the requests whose x falls in its interval of length w. A
// weight-0 backend is never picked. "" when the rule has no backends.
func (r *routeRule) pickVersion(x float64) string {
	last := ""
	acc := 0
	for _, b := range r.backends {
		if b.weight == 0 {
			continue
		}
		acc += b.weight
		last = b.version
		if x < float64(acc) {
			return b.version
		}
	}
	// x out of [0,100): the last backend that takes requests.
	return last
}

// decide decides the fault of one request given two numbers uniform in
// [0,100): the delay (0: none) when xDelay falls within the delay's
// percent, and the abort status (0: none) when xAbort falls within the
// abort's. A nil fault injects nothing.
func (f *routeFault) decide(xDelay, xAbort float64) (delay time.Duration, abort int) {
	if f == nil {
		return 0, 0
	}
	if f.delay > 0 && xDelay < f.delayPercent {
		delay = f.delay
	}
	if f.abort != 0 && xAbort < f.abortPercent {
		abort = f.abort
	}
	return delay, abort
}

// mirrored reports whether a request with x uniform in [0,100) is
// mirrored. A nil mirror mirrors nothing.
func (m *routeMirror) mirrored(x float64) bool {
	return m != nil && x < m.percent
}

// apply edits a header map in place: Remove, then Set (replacing every
// value), then Add (appending a value). A name is matched whatever its case
// in h. Hop-by-hop, framing and identity headers are never touched:
// compileRoutes refuses edits that name them. A nil edit does nothing.
func (e *headerEdits) apply(h http.Header) {
	if e == nil {
		return
	}
	for _, name := range e.remove {
		routeDeleteHeader(h, name)
	}
	for _, s := range e.set {
		routeDeleteHeader(h, s.name)
		h[s.name] = []string{s.value}
	}
	for _, a := range e.add {
		routeFoldHeader(h, a.name)
		h[a.name] = append(h[a.name], a.value)
	}
}

// routeDeleteHeader removes the header canon (canonical), and any key that
// names it in another case.
func routeDeleteHeader(h http.Header, canon string) {
	delete(h, canon)
	for k := range h {
		if len(k) == len(canon) && strings.EqualFold(k, canon) {
			delete(h, k)
		}
	}
}

// routeFoldHeader moves the values of keys that name the header canon
// (canonical) in another case under canon, so that an added value joins
// them and the header is sent once.
func routeFoldHeader(h http.Header, canon string) {
	for k, v := range h {
		// canon itself, if added during the loop and visited, is skipped.
		if k != canon && len(k) == len(canon) && strings.EqualFold(k, canon) {
			delete(h, k)
			h[canon] = append(h[canon], v...)
		}
	}
}

// redirectLocation builds a redirect's status and Location from the
// request: scheme "http", host the authority the app used, its path and
// query, with the redirect's non-empty parts replaced. The port follows
// the Gateway API's HTTPRequestRedirect: Port when set; else the scheme's
// well-known port when Scheme is set; else the request's. The port is left
// out when it is the scheme's well-known one (http 80, https 443). The
// query is kept. Status 0 is 302.
func redirectLocation(rd *config.Redirect, host, path, rawQuery string) (status int, location string) {
	scheme := "http"
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	name, port := routeSplitAuthority(host)
	if rd.Host != "" {
		name = rd.Host
	}
	switch {
	case rd.Port != 0:
		port = strconv.Itoa(rd.Port)
	case rd.Scheme != "":
		port = ""
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if rd.Path != "" {
		path = rd.Path
	}
	var b strings.Builder
	b.Grow(len(scheme) + 3 + len(name) + 6 + len(path) + 1 + len(rawQuery))
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(name)
	if port != "" {
		b.WriteByte(':')
		b.WriteString(port)
	}
	b.WriteString(path)
	if rawQuery != "" {
		b.WriteByte('?')
		b.WriteString(rawQuery)
	}
	status = rd.Status
	if status == 0 {
		status = http.StatusFound
	}
	return status, b.String()
}

// routeSplitAuthority splits host[:port] into the host (an IPv6 literal keeps
// its brackets) and the port, "" when there is none.
func routeSplitAuthority(a string) (host, port string) {
	if strings.HasPrefix(a, "[") {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return a, ""
		}
		host, rest := a[:end+1], a[end+1:]
		if p, ok := strings.CutPrefix(rest, ":"); ok {
			return host, p
		}
		return host, ""
	}
	if i := strings.LastIndexByte(a, ':'); i >= 0 && strings.IndexByte(a[:i], ':') < 0 {
		return a[:i], a[i+1:]
	}
	return a, ""
}
