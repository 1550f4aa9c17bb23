package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

// Defaults and bounds of the traffic-management resources. The defaults are
// written into the documents by Validate, so what is stored and pushed
// carries them.
const (
	// MaxTimeout bounds every timeout and fault delay.
	MaxTimeout = time.Hour
	// MaxRetryAttempts is the most retries a RetryPolicy may ask for.
	MaxRetryAttempts = 10
	// DefaultRetryBudgetPercent and DefaultRetryBudgetMinPerSecond are the
	// retry budget when a RetryPolicy names none.
	DefaultRetryBudgetPercent      = 20
	DefaultRetryBudgetMinPerSecond = 10
	// MaxRetryBudgetMinPerSecond bounds RetryBudget.MinPerSecond.
	MaxRetryBudgetMinPerSecond = 10000
	// DefaultBackoffBase and DefaultBackoffMax are the backoff when a
	// RetryPolicy names none; MinBackoffBase is the smallest base.
	DefaultBackoffBase = 25 * time.Millisecond
	DefaultBackoffMax  = 250 * time.Millisecond
	MinBackoffBase     = time.Millisecond
	// Defaults of OutlierDetection.
	DefaultConsecutive5xx           = 5
	DefaultConsecutiveGatewayErrors = 3
	DefaultBaseEjectionTime         = 30 * time.Second
	DefaultMaxEjectionTime          = 300 * time.Second
	DefaultMaxEjectionPercent       = 50
	// MinEjectionTime and MaxEjectionTime bound the ejection times;
	// MaxConsecutiveErrors bounds the consecutive error counts.
	MinEjectionTime      = time.Second
	MaxEjectionTime      = 24 * time.Hour
	MaxConsecutiveErrors = 1000
	// MaxConnectionLimit bounds each ConnectionLimits field.
	MaxConnectionLimit = 1_000_000
	// MaxRateLimit bounds RateLimit.RequestsPerSecond and RateLimit.Burst.
	MaxRateLimit = 1_000_000
	// MinRateLimit is the smallest RequestsPerSecond of a RateLimit or a
	// GatewayRateLimit: one request a day.
	MinRateLimit = 1.0 / 86400
	// DefaultRedirectStatus is the status of a Redirect that names none.
	DefaultRedirectStatus = http.StatusFound
	// MaxRegexLen bounds the length of a regular expression in a match.
	MaxRegexLen = 1024
	// MinFaultDelay is the shortest fault delay.
	MinFaultDelay = time.Millisecond
)

// DefaultRetryOn is the list of retried conditions of a RetryPolicy that
// names none.
func DefaultRetryOn() []string {
	return []string{RetryConnectFailure, RetryReset, RetryGatewayError}
}

// grpcStatusNames are the gRPC status codes, in lower case with dashes,
// that may follow RetryGRPCPrefix (OK is not a failure).
var grpcStatusNames = []string{
	"cancelled", "unknown", "invalid-argument", "deadline-exceeded", "not-found",
	"already-exists", "permission-denied", "resource-exhausted", "failed-precondition",
	"aborted", "out-of-range", "unimplemented", "internal", "unavailable", "data-loss",
	"unauthenticated",
}

// Validate implements Object. It fills in the defaults (metadata.namespace,
// loadBalancer PeakEWMA locality-aware, timeout "15s", outlierDetection
// and, for a retry policy that is given, its conditions, budget and
// backoff; rateLimit burst and per) and refuses what the data path could
// not apply as written:
//
//   - spec.service: required, a service name.
//   - spec.loadBalancer: policy one of the LB constants; hashOn required
//     with ConsistentHash and refused otherwise, with exactly one of a
//     header name and a cookie name.
//   - spec.timeout: a Go duration, 0 (no timeout) to 1h.
//   - spec.retries: attempts 1 to 10 (required: retries must be bounded);
//     perTryTimeout positive, at most 1h and at most timeout; on the
//     retry constants or "grpc-" and a gRPC status name, no duplicate;
//     budget percent 1 to 100 and minPerSecond up to 10000; backoff base
//     1ms or more, at most max.
//   - spec.outlierDetection: consecutive counts 1 to 1000; ejection times
//     1s to 24h, base at most max; maxEjectionPercent 1 to 100.
//   - spec.connectionLimits: 0 (no limit) to 1,000,000.
//   - spec.rateLimit: requestsPerSecond above 0 and at most 1,000,000;
//     burst 1 to 1,000,000; per "source" or "service".
func (p *TrafficPolicy) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&p.Metadata, &errs)
	s := &p.Spec
	checkName("spec.service", s.Service, &errs)
	if s.LoadBalancer == nil {
		s.LoadBalancer = &LoadBalancer{}
	}
	validateLoadBalancer("spec.loadBalancer", s.LoadBalancer, &errs)
	var timeout time.Duration
	if s.Timeout != "" {
		timeout, _ = checkTimeout("spec.timeout", s.Timeout, &errs)
	}
	if s.Retries != nil {
		validateRetries("spec.retries", s.Retries, "spec.timeout", timeout, &errs)
	}
	if s.OutlierDetection == nil {
		s.OutlierDetection = &OutlierDetection{}
	}
	validateOutlierDetection("spec.outlierDetection", s.OutlierDetection, &errs)
	if c := s.ConnectionLimits; c != nil {
		checkRange("spec.connectionLimits.maxRequests", c.MaxRequests, 0, MaxConnectionLimit, &errs)
		checkRange("spec.connectionLimits.maxPendingRequests", c.MaxPendingRequests, 0, MaxConnectionLimit, &errs)
		checkRange("spec.connectionLimits.maxConnections", c.MaxConnections, 0, MaxConnectionLimit, &errs)
	}
	if s.RateLimit != nil {
		validateRateLimit("spec.rateLimit", s.RateLimit, &errs)
	}
	return errs
}

// validateLoadBalancer checks lb at path and fills in its defaults.
func validateLoadBalancer(path string, lb *LoadBalancer, errs *FieldErrors) {
	switch lb.Policy {
	case "":
		lb.Policy = LBPeakEWMA
	case LBPeakEWMA, LBRoundRobin, LBLeastRequest, LBConsistentHash:
	default:
		errs.add(path+".policy", "unsupported value %q: must be one of %s, %s, %s, %s", lb.Policy, LBPeakEWMA, LBRoundRobin, LBLeastRequest, LBConsistentHash)
	}
	if lb.LocalityAware == nil {
		t := true
		lb.LocalityAware = &t
	}
	h := lb.HashOn
	switch {
	case h == nil && lb.Policy == LBConsistentHash:
		errs.add(path+".hashOn", "required with policy %s: name the header or the cookie to hash", LBConsistentHash)
	case h == nil:
	case lb.Policy != LBConsistentHash:
		errs.add(path+".hashOn", "only allowed with policy %s", LBConsistentHash)
	case h.Header == "" && h.Cookie == "":
		errs.add(path+".hashOn", "exactly one of header and cookie is required")
	case h.Header != "" && h.Cookie != "":
		errs.add(path+".hashOn", "header and cookie are mutually exclusive: hash on one value")
	case h.Header != "":
		if !httpguts.ValidHeaderFieldName(h.Header) {
			errs.add(path+".hashOn.header", "%q is not an HTTP header name (RFC 9110 token)", h.Header)
		}
	default:
		if msg := jwtCheckCookieName(h.Cookie); msg != "" {
			errs.add(path+".hashOn.cookie", "%s", msg)
		}
	}
}

// validateRetries checks the retry policy r at path and fills in its
// defaults. timeout is the request timeout that bounds the tries (0: none),
// set at timeoutPath (defaulted when it was not written).
func validateRetries(path string, r *RetryPolicy, timeoutPath string, timeout time.Duration, errs *FieldErrors) {
	switch {
	case r.Attempts == 0:
		errs.add(path+".attempts", "required: a retry policy must be bounded (1 to %d)", MaxRetryAttempts)
	case r.Attempts < 1 || r.Attempts > MaxRetryAttempts:
		errs.add(path+".attempts", "%d is out of range: must be 1 to %d", r.Attempts, MaxRetryAttempts)
	}
	if r.PerTryTimeout != "" {
		d, ok := checkDuration(path+".perTryTimeout", r.PerTryTimeout, time.Nanosecond, MaxTimeout, errs)
		if ok && timeout > 0 && d > timeout {
			errs.add(path+".perTryTimeout", "%s is above %s %s: a try cannot outlast the request", d, timeoutPath, timeout)
		}
	}
	if len(r.On) == 0 {
		r.On = DefaultRetryOn()
	}
	seen := make(map[string]bool, len(r.On))
	for i, on := range r.On {
		p := fmt.Sprintf("%s.retryOn[%d]", path, i)
		if msg := checkRetryOn(on); msg != "" {
			errs.add(p, "%s", msg)
		} else if seen[on] {
			errs.add(p, "%q is listed twice", on)
		}
		seen[on] = true
	}
	if r.Budget == nil {
		r.Budget = &RetryBudget{}
	}
	b := r.Budget
	if b.Percent == 0 {
		b.Percent = DefaultRetryBudgetPercent
	} else {
		checkRange(path+".budget.percent", b.Percent, 1, 100, errs)
	}
	if b.MinPerSecond == nil {
		b.MinPerSecond = new(DefaultRetryBudgetMinPerSecond)
	} else {
		checkRange(path+".budget.minPerSecond", *b.MinPerSecond, 0, MaxRetryBudgetMinPerSecond, errs)
	}
	if r.Backoff == nil {
		r.Backoff = &Backoff{}
	}
	bo := r.Backoff
	var base, ceil time.Duration
	baseOK, maxOK := true, true
	if bo.Base == "" {
		bo.Base, base = DefaultBackoffBase.String(), DefaultBackoffBase
	} else {
		base, baseOK = checkDuration(path+".backoff.base", bo.Base, MinBackoffBase, MaxTimeout, errs)
	}
	maxDefaulted := bo.Max == ""
	if maxDefaulted {
		bo.Max, ceil = DefaultBackoffMax.String(), DefaultBackoffMax
	} else {
		ceil, maxOK = checkDuration(path+".backoff.max", bo.Max, MinBackoffBase, MaxTimeout, errs)
	}
	if baseOK && maxOK && base > ceil {
		how := ""
		if maxDefaulted {
			how = " (the default)"
		}
		errs.add(path+".backoff.base", "%s is above backoff.max %s%s: base must be at most max", base, ceil, how)
	}
}

// checkRetryOn checks one retry condition.
func checkRetryOn(s string) string {
	switch s {
	case RetryConnectFailure, RetryReset, Retry5xx, RetryGatewayError:
		return ""
	}
	if name, ok := strings.CutPrefix(s, RetryGRPCPrefix); ok {
		if slices.Contains(grpcStatusNames, name) {
			return ""
		}
		return fmt.Sprintf("%q: unknown gRPC status %q: must be one of %s", s, name, strings.Join(grpcStatusNames, ", "))
	}
	return fmt.Sprintf("unsupported value %q: must be one of %s, %s, %s, %s, or %s followed by a gRPC status name such as %q",
		s, RetryConnectFailure, RetryReset, Retry5xx, RetryGatewayError, RetryGRPCPrefix, RetryGRPCPrefix+"unavailable")
}

// validateOutlierDetection checks o at path and, unless it is disabled,
// fills in its defaults.
func validateOutlierDetection(path string, o *OutlierDetection, errs *FieldErrors) {
	defInt := func(v *int, def int, field string, lo, hi int) {
		if *v == 0 && !o.Disabled {
			*v = def
		} else if *v != 0 {
			checkRange(path+"."+field, *v, lo, hi, errs)
		}
	}
	defInt(&o.Consecutive5xx, DefaultConsecutive5xx, "consecutive5xx", 1, MaxConsecutiveErrors)
	defInt(&o.ConsecutiveGatewayErrors, DefaultConsecutiveGatewayErrors, "consecutiveGatewayErrors", 1, MaxConsecutiveErrors)
	defInt(&o.MaxEjectionPercent, DefaultMaxEjectionPercent, "maxEjectionPercent", 1, 100)
	defDur := func(v *string, def time.Duration, field string) (time.Duration, bool) {
		if *v == "" {
			if o.Disabled {
				return 0, false
			}
			*v = def.String()
			return def, true
		}
		return checkDuration(path+"."+field, *v, MinEjectionTime, MaxEjectionTime, errs)
	}
	base, baseOK := defDur(&o.BaseEjectionTime, DefaultBaseEjectionTime, "baseEjectionTime")
	ceil, maxOK := defDur(&o.MaxEjectionTime, DefaultMaxEjectionTime, "maxEjectionTime")
	if baseOK && maxOK && base > ceil {
		errs.add(path+".baseEjectionTime", "%s is above maxEjectionTime %s: base must be at most max", base, ceil)
	}
}

// validateRateLimit checks r at path and fills in its defaults.
func validateRateLimit(path string, r *RateLimit, errs *FieldErrors) {
	rps := r.RequestsPerSecond
	rpsOK := false
	switch {
	case math.IsNaN(rps) || math.IsInf(rps, 0):
		errs.add(path+".requestsPerSecond", "must be a finite number")
	case rps == 0:
		errs.add(path+".requestsPerSecond", "required: must be above 0")
	case rps < 0 || rps > MaxRateLimit:
		errs.add(path+".requestsPerSecond", "%v is out of range: must be above 0 and at most %d", rps, MaxRateLimit)
	case rps < MinRateLimit:
		errs.add(path+".requestsPerSecond", "%v is out of range: must be at least 1/86400 (one request a day)", rps)
	default:
		rpsOK = true
	}
	if r.Burst == 0 {
		if rpsOK {
			r.Burst = int(math.Ceil(rps))
		}
	} else {
		checkRange(path+".burst", r.Burst, 1, MaxRateLimit, errs)
	}
	switch r.Per {
	case "":
		r.Per = RateLimitPerSource
	case RateLimitPerSource, RateLimitPerService:
	default:
		errs.add(path+".per", "unsupported value %q: must be %s (one bucket per caller identity) or %s (one bucket for every caller)", r.Per, RateLimitPerSource, RateLimitPerService)
	}
}

// Validate implements Object. It fills in the defaults (metadata.namespace,
// rule names "rule<index>", redirect status 302, mirror and fault percents
// 100, and those of retries and rateLimit as in TrafficPolicy) and refuses
// what the data path could not apply as written:
//
//   - spec.service: required, a service name; spec.rules: at least one.
//   - rules[].name: a name (lowercase letters, digits, '-'), unique.
//   - matches[].path: exactly one of exact, prefix (normalized paths
//     starting with '/') and regex (RE2, at most 1024 bytes).
//   - matches[].methods: upper-case HTTP method tokens.
//   - matches[].headers and queryParams: a name (an HTTP token for a
//     header) with present or exactly one of exact, prefix and regex.
//   - matches[].sourceServices: "*", or "namespace/name" where either
//     part may be "*".
//   - backends: versions are label values, unique; weights 0 to 100 that
//     add up to 100.
//   - redirect: not with backends, mirror or fault; status 301, 302, 303,
//     307 or 308; scheme http or https; port 1 to 65535; path starting with
//     '/'; host a DNS name or an IPv4 address; at least one part
//     replaced.
//   - requestHeaders, responseHeaders: header names that are HTTP tokens,
//     neither hop-by-hop nor identity headers; values without CR, LF or
//     NUL.
//   - mirror: a version (label value); percent 0 to 100.
//   - fault: delay (fixed 1ms to 1h) or abort (status 200 to 599) or both;
//     percents 0 to 100.
//   - timeout, retries, rateLimit: as in TrafficPolicy, the retries' per-try
//     timeout checked against the rule's own timeout.
func (r *Route) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&r.Metadata, &errs)
	s := &r.Spec
	checkName("spec.service", s.Service, &errs)
	if len(s.Rules) == 0 {
		errs.add("spec.rules", "at least one rule is required")
	}
	names := make(map[string]int, len(s.Rules))
	for i := range s.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		rule := &s.Rules[i]
		if rule.Name == "" {
			rule.Name = "rule" + strconv.Itoa(i)
		} else if err := identity.ValidateName(rule.Name); err != nil {
			errs.add(path+".name", "%v", err)
		}
		if j, dup := names[rule.Name]; dup {
			errs.add(path+".name", "%q is also the name of spec.rules[%d]: rule names must be unique", rule.Name, j)
		} else {
			names[rule.Name] = i
		}
		validateRouteRule(path, rule, &errs)
	}
	return errs
}

// validateRouteRule checks one rule at path and fills in its defaults.
func validateRouteRule(path string, r *RouteRule, errs *FieldErrors) {
	for i := range r.Matches {
		validateRouteMatch(fmt.Sprintf("%s.matches[%d]", path, i), &r.Matches[i], errs)
	}
	validateBackends(path+".backends", r.Backends, errs)
	if rd := r.Redirect; rd != nil {
		var with []string
		if len(r.Backends) > 0 {
			with = append(with, "backends")
		}
		if r.Mirror != nil {
			with = append(with, "mirror")
		}
		if r.Fault != nil {
			with = append(with, "fault")
		}
		if len(with) > 0 {
			errs.add(path+".redirect", "cannot be combined with %s: a redirect answers without forwarding", strings.Join(with, ", "))
		}
		validateRedirect(path+".redirect", rd, errs)
	}
	if r.RequestHeaders != nil {
		validateHeaderEdits(path+".requestHeaders", r.RequestHeaders, errs)
	}
	if r.ResponseHeaders != nil {
		validateHeaderEdits(path+".responseHeaders", r.ResponseHeaders, errs)
	}
	if m := r.Mirror; m != nil {
		checkVersion(path+".mirror.version", m.Version, errs)
		m.Percent = checkPercent(path+".mirror.percent", m.Percent, errs)
	}
	if f := r.Fault; f != nil {
		if f.Delay == nil && f.Abort == nil {
			errs.add(path+".fault", "at least one of delay and abort is required")
		}
		if d := f.Delay; d != nil {
			if d.Fixed == "" {
				errs.add(path+".fault.delay.fixed", "required: a Go duration such as \"100ms\"")
			} else {
				checkDuration(path+".fault.delay.fixed", d.Fixed, MinFaultDelay, MaxTimeout, errs)
			}
			d.Percent = checkPercent(path+".fault.delay.percent", d.Percent, errs)
		}
		if a := f.Abort; a != nil {
			switch {
			case a.Status == 0:
				errs.add(path+".fault.abort.status", "required: an HTTP status 200 to 599")
			case a.Status < 200 || a.Status > 599:
				errs.add(path+".fault.abort.status", "%d is out of range: must be 200 to 599", a.Status)
			}
			a.Percent = checkPercent(path+".fault.abort.percent", a.Percent, errs)
		}
	}
	var timeout time.Duration
	if r.Timeout != "" {
		timeout, _ = checkTimeout(path+".timeout", r.Timeout, errs)
	}
	if r.Retries != nil {
		validateRetries(path+".retries", r.Retries, path+".timeout", timeout, errs)
	}
	if r.RateLimit != nil {
		validateRateLimit(path+".rateLimit", r.RateLimit, errs)
	}
}

// validateRouteMatch checks one match at path.
func validateRouteMatch(path string, m *RouteMatch, errs *FieldErrors) {
	if p := m.Path; p != nil {
		n := 0
		for _, v := range []string{p.Exact, p.Prefix, p.Regex} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			errs.add(path+".path", "exactly one of exact, prefix and regex is required")
		}
		if p.Exact != "" {
			checkMatchPath(path+".path.exact", p.Exact, errs)
		}
		if p.Prefix != "" {
			checkMatchPath(path+".path.prefix", p.Prefix, errs)
		}
		if p.Regex != "" {
			checkRegex(path+".path.regex", p.Regex, errs)
		}
	}
	for i, meth := range m.Methods {
		p := fmt.Sprintf("%s.methods[%d]", path, i)
		switch {
		case meth == "":
			errs.add(p, "must not be empty")
		case meth == "*":
			errs.add(p, `"*" is not a method: omit methods to match any method`)
		default:
			if msg := checkMethod(meth); msg != "" {
				errs.add(p, "%s", msg)
			}
		}
	}
	for i := range m.Headers {
		validateHeaderMatch(fmt.Sprintf("%s.headers[%d]", path, i), &m.Headers[i], true, errs)
	}
	for i := range m.QueryParams {
		validateHeaderMatch(fmt.Sprintf("%s.queryParams[%d]", path, i), &m.QueryParams[i], false, errs)
	}
	validateList(path+".sourceServices", m.SourceServices, checkSourceService, errs)
}

// checkMatchPath checks an exact or prefix path of a match.
func checkMatchPath(path, s string, errs *FieldErrors) {
	if s[0] != '/' {
		errs.add(path, "%q must start with '/'", s)
		return
	}
	norm, err := pathnorm.Normalize(s)
	if err != nil {
		errs.add(path, "%q can never match a request: %v", s, err)
	} else if norm != s {
		errs.add(path, "%q is not normalized (requests are matched after normalization): use %q", s, norm)
	}
}

// checkRegex checks an RE2 expression of a match.
func checkRegex(path, re string, errs *FieldErrors) {
	if len(re) > MaxRegexLen {
		errs.add(path, "longer than %d bytes", MaxRegexLen)
		return
	}
	if _, err := regexp.Compile("^(?:" + re + ")$"); err != nil {
		errs.add(path, "not an RE2 regular expression: %v", err)
	}
}

// validateHeaderMatch checks a header (isHeader) or query parameter match.
func validateHeaderMatch(path string, h *HeaderMatch, isHeader bool, errs *FieldErrors) {
	switch {
	case h.Name == "":
		errs.add(path+".name", "required")
	case isHeader && !httpguts.ValidHeaderFieldName(h.Name):
		errs.add(path+".name", "%q is not an HTTP header name (RFC 9110 token)", h.Name)
	}
	n := 0
	if h.Present {
		n++
	}
	for _, v := range []string{h.Exact, h.Prefix, h.Regex} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		errs.add(path, "exactly one of present, exact, prefix and regex is required")
	}
	if h.Regex != "" {
		checkRegex(path+".regex", h.Regex, errs)
	}
}

// checkSourceService checks a sourceServices entry: "*", or
// "namespace/name" where either part may be "*" ("ns/*": every service of
// ns; "*/name": a service called name in any namespace).
func checkSourceService(s string) string {
	if s == "*" {
		return ""
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(name, "/") {
		return fmt.Sprintf(`%q must be "*", "namespace/name", "namespace/*" or "*/name"`, s)
	}
	for _, part := range []struct{ what, v string }{{"namespace", ns}, {"name", name}} {
		if part.v == "*" {
			continue
		}
		if err := identity.ValidateName(part.v); err != nil {
			return fmt.Sprintf(`%q: %s %v ("*" alone for any; '*' is not a glob within a name)`, s, part.what, err)
		}
	}
	return ""
}

// validateBackends checks the backends of a rule at path.
func validateBackends(path string, bs []Backend, errs *FieldErrors) {
	if len(bs) == 0 {
		return
	}
	sum := 0
	weightsOK := true
	seen := make(map[string]int, len(bs))
	for i, b := range bs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if checkVersion(p+".version", b.Version, errs) {
			if j, dup := seen[b.Version]; dup {
				errs.add(p+".version", "%q is also the version of %s[%d]: give each version one weight", b.Version, path, j)
			} else {
				seen[b.Version] = i
			}
		}
		if b.Weight < 0 || b.Weight > 100 {
			errs.add(p+".weight", "%d is out of range: must be 0 to 100", b.Weight)
			weightsOK = false
		}
		sum += b.Weight
	}
	if weightsOK && sum != 100 {
		errs.add(path, "weights add up to %d, want 100", sum)
	}
}

// checkVersion checks a version (a value of the "version" label) at path
// and reports whether it is valid.
func checkVersion(path, v string, errs *FieldErrors) bool {
	if v == "" {
		errs.add(path, "required")
		return false
	}
	if !labelName(v) {
		errs.add(path, "%q is not a %s label value: must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v, VersionLabel)
		return false
	}
	return true
}

// checkPercent checks an optional percent at path and returns it, 100 when
// it is not set.
func checkPercent(path string, p *float64, errs *FieldErrors) *float64 {
	if p == nil {
		v := 100.0
		return &v
	}
	if math.IsNaN(*p) || *p < 0 || *p > 100 {
		errs.add(path, "%v is out of range: must be 0 to 100", *p)
	}
	return p
}

// validateRedirect checks a redirect at path and fills in its status.
func validateRedirect(path string, rd *Redirect, errs *FieldErrors) {
	switch rd.Status {
	case 0:
		rd.Status = DefaultRedirectStatus
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		errs.add(path+".status", "%d is not a redirect status: must be 301, 302, 303, 307 or 308", rd.Status)
	}
	switch rd.Scheme {
	case "", "http", "https":
	default:
		errs.add(path+".scheme", "unsupported value %q: must be http or https", rd.Scheme)
	}
	if rd.Host != "" {
		if msg := checkRedirectHost(rd.Host); msg != "" {
			errs.add(path+".host", "%s", msg)
		}
	}
	if rd.Port != 0 && (rd.Port < 1 || rd.Port > 65535) {
		errs.add(path+".port", "%d is not a port: must be 1 to 65535", rd.Port)
	}
	if rd.Path != "" {
		if rd.Path[0] != '/' {
			errs.add(path+".path", "%q must start with '/'", rd.Path)
		} else if strings.ContainsAny(rd.Path, "?#") || strings.IndexFunc(rd.Path, func(c rune) bool { return c <= ' ' || c == 0x7f }) >= 0 {
			errs.add(path+".path", "%q: a path has no query, fragment, space or control character", rd.Path)
		}
	}
	if rd.Scheme == "" && rd.Host == "" && rd.Port == 0 && rd.Path == "" {
		errs.add(path, "at least one of scheme, host, port and path is required: a redirect to the same URL would loop")
	}
}

// checkRedirectHost checks the host of a redirect: a lower-case host name
// or an IPv4 address, without a port.
func checkRedirectHost(s string) string {
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		if !a.Is4() {
			return fmt.Sprintf("%q: an IPv6 address is not supported as a redirect host: use a DNS name", s)
		}
		return ""
	}
	if _, port, err := splitHostPort(s); err == nil {
		return fmt.Sprintf("%q: a host has no port: set port: %s", s, port)
	}
	if lower := strings.ToLower(s); lower != s {
		return fmt.Sprintf("%q must be lower case: use %q", s, lower)
	}
	if msg := checkHostName(s); msg != "" {
		return fmt.Sprintf("%q: %s", s, msg)
	}
	return ""
}

// validateHeaderEdits checks header edits at path.
func validateHeaderEdits(path string, h *HeaderEdits, errs *FieldErrors) {
	for _, list := range []struct {
		field string
		m     map[string]string
	}{{"set", h.Set}, {"add", h.Add}} {
		canon := make(map[string]string, len(list.m))
		for _, name := range slices.Sorted(maps.Keys(list.m)) {
			p := keyPath(path+"."+list.field, name)
			if msg := checkEditedHeader(name); msg != "" {
				errs.add(p, "%s", msg)
				continue
			}
			c := http.CanonicalHeaderKey(name)
			if other, dup := canon[c]; dup {
				errs.add(p, "%q is also given as %q: header names are case-insensitive", name, other)
			}
			canon[c] = name
			if v := list.m[name]; strings.ContainsAny(v, "\r\n\x00") {
				errs.add(p, "a header value must not contain CR, LF or NUL")
			}
		}
	}
	for i, name := range h.Remove {
		if msg := checkEditedHeader(name); msg != "" {
			errs.add(fmt.Sprintf("%s.remove[%d]", path, i), "%s", msg)
		}
	}
}

// checkEditedHeader checks the name of a header a Route edits: an HTTP
// token that is neither a hop-by-hop or framing header nor one of the
// headers the proxy owns.
func checkEditedHeader(s string) string {
	if s == "" {
		return "a header name must not be empty"
	}
	if !httpguts.ValidHeaderFieldName(s) {
		return fmt.Sprintf("%q is not an HTTP header name (RFC 9110 token)", s)
	}
	// '_' is read as '-', as the proxy does when it strips identity
	// headers (some servers treat them alike).
	l := strings.ToLower(strings.ReplaceAll(s, "_", "-"))
	switch l {
	case "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length":
		return fmt.Sprintf("%q cannot be edited: it is a hop-by-hop or framing header that the proxy manages", s)
	case "x-forwarded-client-cert", "forwarded":
		return fmt.Sprintf("%q cannot be edited: it carries the caller's identity and is written by the proxy only", s)
	}
	if strings.HasPrefix(l, "proxy-") {
		return fmt.Sprintf("%q cannot be edited: Proxy-* headers are hop-by-hop", s)
	}
	for _, p := range []string{"x-forwarded-", "x-bulwark-"} {
		if strings.HasPrefix(l, p) {
			return fmt.Sprintf("%q cannot be edited: %s* headers carry identity and are written by the proxy only", s, http.CanonicalHeaderKey(p))
		}
	}
	return ""
}

// checkTimeout checks a request timeout at path: 0 (none) to MaxTimeout.
func checkTimeout(path, s string, errs *FieldErrors) (time.Duration, bool) {
	return checkDuration(path, s, 0, MaxTimeout, errs)
}

// checkDuration checks a Go duration between lo and hi at path.
func checkDuration(path, s string, lo, hi time.Duration, errs *FieldErrors) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		errs.add(path, "%q is not a Go duration such as \"250ms\" or \"15s\"", s)
	case d < 0:
		errs.add(path, "%s is negative", d)
	case d < lo && lo == time.Nanosecond:
		errs.add(path, "%s: must be above 0", d)
	case d < lo:
		errs.add(path, "%s is below the minimum %s", d, lo)
	case d > hi:
		errs.add(path, "%s is above the maximum %s", d, hi)
	default:
		return d, true
	}
	return 0, false
}

// checkRange checks lo <= v <= hi at path.
func checkRange(path string, v, lo, hi int, errs *FieldErrors) {
	if v < lo || v > hi {
		errs.add(path, "%d is out of range: must be %d to %d", v, lo, hi)
	}
}

// Versions returns every version the Route's rules name, in backends and
// mirrors, sorted and without duplicates (nil when none). The control plane
// checks them against the registry at apply.
func (r *Route) Versions() []string {
	var vs []string
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.Backends {
			if b.Version != "" {
				vs = append(vs, b.Version)
			}
		}
		if rule.Mirror != nil && rule.Mirror.Version != "" {
			vs = append(vs, rule.Mirror.Version)
		}
	}
	slices.Sort(vs)
	return slices.Compact(vs)
}

// Validate implements Object. It fills in metadata.namespace and refuses
// what the egress path could not apply as written:
//
//   - spec.hosts: at least one; each a lower-case DNS name (labels of 1 to
//     63 letters, digits and '-', not starting or ending with '-'; at most
//     253 characters) or "*." and such a name; no IP address (declare a
//     name and map it with spec.addresses); no duplicates.
//   - spec.ports: at least one; port 1 to 65535, unique; protocol http,
//     tls or tcp.
//   - spec.addresses: "host:port", the host an IP address or a DNS name,
//     the port 1 to 65535.
//   - spec.tls: only with an http port; caCertificates PEM certificates
//     (at least one); serverName a DNS name.
func (e *ExternalService) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&e.Metadata, &errs)
	s := &e.Spec
	if len(s.Hosts) == 0 {
		errs.add("spec.hosts", "at least one host is required")
	}
	seen := make(map[string]int, len(s.Hosts))
	for i, h := range s.Hosts {
		p := fmt.Sprintf("spec.hosts[%d]", i)
		if msg := checkExternalHost(h); msg != "" {
			errs.add(p, "%s", msg)
			continue
		}
		if j, dup := seen[h]; dup {
			errs.add(p, "%q is also spec.hosts[%d]", h, j)
		}
		seen[h] = i
	}
	if len(s.Ports) == 0 {
		errs.add("spec.ports", "at least one port is required")
	}
	ports := make(map[int]int, len(s.Ports))
	hasHTTP := false
	for i, pt := range s.Ports {
		p := fmt.Sprintf("spec.ports[%d]", i)
		if pt.Port < 1 || pt.Port > 65535 {
			errs.add(p+".port", "%d is not a port: must be 1 to 65535", pt.Port)
		} else if j, dup := ports[pt.Port]; dup {
			errs.add(p+".port", "%d is also spec.ports[%d]", pt.Port, j)
		} else {
			ports[pt.Port] = i
		}
		switch pt.Protocol {
		case ExternalHTTP:
			hasHTTP = true
		case ExternalTLS, ExternalTCP:
		case "":
			errs.add(p+".protocol", "required: one of %s, %s, %s", ExternalHTTP, ExternalTLS, ExternalTCP)
		default:
			errs.add(p+".protocol", "unsupported value %q: must be one of %s, %s, %s", pt.Protocol, ExternalHTTP, ExternalTLS, ExternalTCP)
		}
	}
	validateList("spec.addresses", s.Addresses, checkExternalAddress, &errs)
	if t := s.TLS; t != nil {
		if !hasHTTP && len(s.Ports) > 0 {
			errs.add("spec.tls", "only allowed with a port of protocol %s: TLS origination turns the app's plain HTTP into HTTPS; for TLS the app originates, use protocol %s", ExternalHTTP, ExternalTLS)
		}
		if t.CACertificates != "" {
			if msg := checkCertificatesPEM(t.CACertificates, false); msg != "" {
				errs.add("spec.tls.caCertificates", "%s", msg)
			}
		}
		if t.ServerName != "" {
			if msg := checkDNSName(t.ServerName); msg != "" {
				errs.add("spec.tls.serverName", "%q: %s", t.ServerName, msg)
			}
		}
	}
	return errs
}

// checkExternalHost checks a host of an ExternalService.
func checkExternalHost(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return fmt.Sprintf("%q is an IP address: declare a DNS name and map it to the address with spec.addresses", s)
	}
	if _, port, err := splitHostPort(s); err == nil {
		return fmt.Sprintf("%q: a host has no port: list port %s in spec.ports", s, port)
	}
	name := strings.TrimPrefix(s, "*.")
	if strings.Contains(name, "*") {
		return fmt.Sprintf(`%q: '*' is only allowed as a leading "*." ("*.example.com")`, s)
	}
	if msg := checkDNSName(name); msg != "" {
		return fmt.Sprintf("%q: %s", s, msg)
	}
	return ""
}

// checkDNSName checks a lower-case DNS name without a trailing dot.
func checkDNSName(s string) string {
	if lower := strings.ToLower(s); lower != s {
		return fmt.Sprintf("must be lower case: use %q", lower)
	}
	if len(s) > 253 {
		return "a DNS name is at most 253 characters"
	}
	if strings.HasSuffix(s, ".") {
		return "write the name without a trailing dot"
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return "each label of a DNS name is 1 to 63 characters"
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "a DNS label must not start or end with '-'"
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "a DNS name consists of lower-case letters, digits, '-' and '.'"
			}
		}
	}
	return ""
}

// checkExternalAddress checks an addresses entry: "host:port".
func checkExternalAddress(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port, such as \"10.0.0.7:443\" or \"[2001:db8::7]:443\": %v", s, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("%q: port %q must be 1 to 65535", s, port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return fmt.Sprintf("%q: an IPv6 zone is not allowed", s)
		}
		return ""
	}
	if msg := checkDNSName(host); msg != "" {
		return fmt.Sprintf("%q: host %q is neither an IP address nor a DNS name: %s", s, host, msg)
	}
	return ""
}
