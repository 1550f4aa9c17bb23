package config_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math"
	"math/big"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// trafficDoc returns a document of kind named name in namespace default
// whose spec is the YAML spec, written without indentation.
func trafficDoc(kind, spec string) string {
	var b strings.Builder
	b.WriteString("apiVersion: bulwark.dev/v1alpha1\nkind: " + kind + "\nmetadata:\n  name: api\nspec:\n")
	for _, line := range strings.Split(strings.TrimRight(spec, "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}

// decodeTraffic decodes one document through config.Decode.
func decodeTraffic(t *testing.T, doc string) (config.Object, error) {
	t.Helper()
	objs, err := config.Decode([]byte(doc))
	if err != nil {
		return nil, err
	}
	if len(objs) != 1 {
		t.Fatalf("got %d objects, want 1", len(objs))
	}
	return objs[0], nil
}

// trafficCase is one document of a table: want is "" for a valid one,
// otherwise a part of the error.
type trafficCase struct {
	name string
	spec string
	want string
}

// runTrafficCases decodes the spec of each case as a document of kind.
func runTrafficCases(t *testing.T, kind string, tests []trafficCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := trafficDoc(kind, tt.spec)
			_, err := decodeTraffic(t, doc)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got error %v, want nil\n%s", err, doc)
			case tt.want != "" && err == nil:
				t.Fatalf("got no error, want one containing %q\n%s", tt.want, doc)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("got error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestTrafficPolicyDefaults(t *testing.T) {
	o, err := decodeTraffic(t, trafficDoc(config.KindTrafficPolicy, `
service: api
retries:
  attempts: 2
rateLimit:
  requestsPerSecond: 2.5
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &config.TrafficPolicy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindTrafficPolicy},
		Metadata: config.ObjectMeta{Name: "api", Namespace: "default"},
		Spec: config.TrafficPolicySpec{
			Service:      "api",
			LoadBalancer: &config.LoadBalancer{Policy: config.LBPeakEWMA, LocalityAware: ptr(true)},
			Retries: &config.RetryPolicy{
				Attempts: 2,
				On:       []string{"connect-failure", "reset", "gateway-error"},
				Budget:   &config.RetryBudget{Percent: 20, MinPerSecond: new(10)},
				Backoff:  &config.Backoff{Base: "25ms", Max: "250ms"},
			},
			OutlierDetection: &config.OutlierDetection{
				Consecutive5xx: 5, ConsecutiveGatewayErrors: 3,
				BaseEjectionTime: "30s", MaxEjectionTime: "5m0s", MaxEjectionPercent: 50,
			},
			RateLimit: &config.RateLimit{RequestsPerSecond: 2.5, Burst: 3, Per: config.RateLimitPerSource},
		},
	}
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("defaults mismatch (-want +got):\n%s", diff)
	}

	// Without retries, none are written: the data path applies its
	// built-in connect-failure retries.
	o, err = decodeTraffic(t, trafficDoc(config.KindTrafficPolicy, "service: api\noutlierDetection:\n  disabled: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := o.(*config.TrafficPolicy).Spec
	if s.Retries != nil {
		t.Errorf("got retries %+v, want nil", s.Retries)
	}
	if got, want := *s.OutlierDetection, (config.OutlierDetection{Disabled: true}); got != want {
		t.Errorf("got outlierDetection %+v, want %+v (no defaults when disabled)", got, want)
	}
}

func TestTrafficPolicyValidate(t *testing.T) {
	runTrafficCases(t, config.KindTrafficPolicy, []trafficCase{
		{name: "valid_minimal", spec: "service: api"},
		{name: "valid_full", spec: `
service: api
loadBalancer:
  policy: ConsistentHash
  hashOn: {header: x-user}
  localityAware: false
timeout: 1h
retries:
  attempts: 10
  perTryTimeout: 1h
  retryOn: [connect-failure, reset, 5xx, gateway-error, grpc-unavailable, grpc-resource-exhausted, grpc-deadline-exceeded]
  nonIdempotent: true
  budget: {percent: 100, minPerSecond: 10000}
  backoff: {base: 1ms, max: 1ms}
outlierDetection:
  consecutive5xx: 1
  consecutiveGatewayErrors: 1000
  baseEjectionTime: 1s
  maxEjectionTime: 24h
  maxEjectionPercent: 100
connectionLimits: {maxRequests: 1000000, maxPendingRequests: 0, maxConnections: 1}
rateLimit: {requestsPerSecond: 1000000, burst: 1000000, per: service}
`},
		{name: "valid_cookie_hash", spec: "service: api\nloadBalancer: {policy: ConsistentHash, hashOn: {cookie: session}}"},
		{name: "valid_no_timeout", spec: "service: api\ntimeout: 0s\nretries: {attempts: 1, perTryTimeout: 1h}"},
		{name: "valid_round_robin", spec: "service: api\nloadBalancer: {policy: RoundRobin}"},
		{name: "valid_least_request", spec: "service: api\nloadBalancer: {policy: LeastRequest}"},

		{name: "missing_service", spec: "timeout: 1s", want: "spec.service: required"},
		{name: "bad_service", spec: "service: Api", want: `spec.service: "Api" must consist of lowercase letters`},
		{name: "unknown_nested_field", spec: "service: api\nretries: {attempts: 1, attemps: 2}", want: "spec.retries.attemps: unknown field"},
		{name: "bad_lb_policy", spec: "service: api\nloadBalancer: {policy: Random}", want: `spec.loadBalancer.policy: unsupported value "Random"`},
		{name: "hash_without_hashon", spec: "service: api\nloadBalancer: {policy: ConsistentHash}", want: "spec.loadBalancer.hashOn: required with policy ConsistentHash"},
		{name: "hashon_without_hash", spec: "service: api\nloadBalancer: {hashOn: {header: x}}", want: "spec.loadBalancer.hashOn: only allowed with policy ConsistentHash"},
		{name: "hashon_empty", spec: "service: api\nloadBalancer: {policy: ConsistentHash, hashOn: {}}", want: "spec.loadBalancer.hashOn: exactly one of header and cookie is required"},
		{name: "hashon_both", spec: "service: api\nloadBalancer: {policy: ConsistentHash, hashOn: {header: x-user, cookie: session}}", want: "spec.loadBalancer.hashOn: header and cookie are mutually exclusive"},
		{name: "hashon_bad_header", spec: "service: api\nloadBalancer: {policy: ConsistentHash, hashOn: {header: 'x user'}}", want: `spec.loadBalancer.hashOn.header: "x user" is not an HTTP header name`},
		{name: "hashon_bad_cookie", spec: "service: api\nloadBalancer: {policy: ConsistentHash, hashOn: {cookie: 'a;b'}}", want: `spec.loadBalancer.hashOn.cookie: "a;b" is not a cookie name`},
		{name: "timeout_not_duration", spec: "service: api\ntimeout: 15s5", want: `spec.timeout: "15s5" is not a Go duration`},
		{name: "timeout_number", spec: "service: api\ntimeout: 15", want: "spec.timeout: expected a string, got a number"},
		{name: "timeout_negative", spec: "service: api\ntimeout: -1s", want: "spec.timeout: -1s is negative"},
		{name: "timeout_too_long", spec: "service: api\ntimeout: 61m", want: "spec.timeout: 1h1m0s is above the maximum 1h0m0s"},
		{name: "retries_unbounded", spec: "service: api\nretries: {retryOn: [5xx]}", want: "spec.retries.attempts: required: a retry policy must be bounded (1 to 10)"},
		{name: "retries_too_many", spec: "service: api\nretries: {attempts: 11}", want: "spec.retries.attempts: 11 is out of range: must be 1 to 10"},
		{name: "retries_negative", spec: "service: api\nretries: {attempts: -1}", want: "spec.retries.attempts: -1 is out of range"},
		{name: "per_try_zero", spec: "service: api\nretries: {attempts: 1, perTryTimeout: 0s}", want: "spec.retries.perTryTimeout: 0s: must be above 0"},
		{name: "per_try_too_long", spec: "service: api\nretries: {attempts: 1, perTryTimeout: 2h}", want: "spec.retries.perTryTimeout: 2h0m0s is above the maximum 1h0m0s"},
		{name: "per_try_above_timeout", spec: "service: api\ntimeout: 1s\nretries: {attempts: 1, perTryTimeout: 2s}", want: "spec.retries.perTryTimeout: 2s is above spec.timeout 1s: a try cannot outlast the request"},
		{name: "per_try_above_timeout", spec: "service: api\ntimeout: 15s\nretries: {attempts: 1, perTryTimeout: 20s}", want: "spec.retries.perTryTimeout: 20s is above spec.timeout 15s: a try cannot outlast the request"},
		{name: "retry_on_unknown", spec: "service: api\nretries: {attempts: 1, retryOn: [timeout]}", want: `spec.retries.retryOn[0]: unsupported value "timeout"`},
		{name: "retry_on_bad_grpc", spec: "service: api\nretries: {attempts: 1, retryOn: [grpc-ok]}", want: `spec.retries.retryOn[0]: "grpc-ok": unknown gRPC status "ok"`},
		{name: "retry_on_grpc_case", spec: "service: api\nretries: {attempts: 1, retryOn: [grpc-Unavailable]}", want: `unknown gRPC status "Unavailable"`},
		{name: "retry_on_duplicate", spec: "service: api\nretries: {attempts: 1, retryOn: [5xx, reset, 5xx]}", want: `spec.retries.retryOn[2]: "5xx" is listed twice`},
		{name: "budget_percent", spec: "service: api\nretries: {attempts: 1, budget: {percent: 101}}", want: "spec.retries.budget.percent: 101 is out of range: must be 1 to 100"},
		{name: "budget_min_per_second", spec: "service: api\nretries: {attempts: 1, budget: {minPerSecond: 10001}}", want: "spec.retries.budget.minPerSecond: 10001 is out of range: must be 0 to 10000"},
		{name: "backoff_base_too_small", spec: "service: api\nretries: {attempts: 1, backoff: {base: 500us}}", want: "spec.retries.backoff.base: 500µs is below the minimum 1ms"},
		{name: "backoff_base_above_max", spec: "service: api\nretries: {attempts: 1, backoff: {base: 1s, max: 100ms}}", want: "spec.retries.backoff.base: 1s is above backoff.max 100ms: base must be at most max"},
		{name: "backoff_base_above_default_max", spec: "service: api\nretries: {attempts: 1, backoff: {base: 1s}}", want: "1s is above backoff.max 250ms (the default)"},
		{name: "backoff_max_bad", spec: "service: api\nretries: {attempts: 1, backoff: {max: soon}}", want: `spec.retries.backoff.max: "soon" is not a Go duration`},
		{name: "outlier_consecutive_5xx", spec: "service: api\noutlierDetection: {consecutive5xx: -1}", want: "spec.outlierDetection.consecutive5xx: -1 is out of range: must be 1 to 1000"},
		{name: "outlier_gateway_errors", spec: "service: api\noutlierDetection: {consecutiveGatewayErrors: 1001}", want: "spec.outlierDetection.consecutiveGatewayErrors: 1001 is out of range"},
		{name: "outlier_percent", spec: "service: api\noutlierDetection: {maxEjectionPercent: 101}", want: "spec.outlierDetection.maxEjectionPercent: 101 is out of range: must be 1 to 100"},
		{name: "outlier_base_short", spec: "service: api\noutlierDetection: {baseEjectionTime: 500ms}", want: "spec.outlierDetection.baseEjectionTime: 500ms is below the minimum 1s"},
		{name: "outlier_max_short", spec: "service: api\noutlierDetection: {maxEjectionTime: 0s}", want: "spec.outlierDetection.maxEjectionTime: 0s is below the minimum 1s"},
		{name: "outlier_base_above_max", spec: "service: api\noutlierDetection: {baseEjectionTime: 10m}", want: "spec.outlierDetection.baseEjectionTime: 10m0s is above maxEjectionTime 5m0s"},
		{name: "outlier_disabled_still_checked", spec: "service: api\noutlierDetection: {disabled: true, maxEjectionPercent: 200}", want: "spec.outlierDetection.maxEjectionPercent: 200 is out of range"},
		{name: "limits_negative", spec: "service: api\nconnectionLimits: {maxRequests: -1}", want: "spec.connectionLimits.maxRequests: -1 is out of range: must be 0 to 1000000"},
		{name: "limits_pending", spec: "service: api\nconnectionLimits: {maxPendingRequests: 1000001}", want: "spec.connectionLimits.maxPendingRequests: 1000001 is out of range"},
		{name: "limits_connections", spec: "service: api\nconnectionLimits: {maxConnections: -5}", want: "spec.connectionLimits.maxConnections: -5 is out of range"},
		{name: "rate_missing", spec: "service: api\nrateLimit: {burst: 5}", want: "spec.rateLimit.requestsPerSecond: required: must be above 0"},
		{name: "rate_negative", spec: "service: api\nrateLimit: {requestsPerSecond: -1}", want: "spec.rateLimit.requestsPerSecond: -1 is out of range"},
		{name: "rate_too_high", spec: "service: api\nrateLimit: {requestsPerSecond: 1e7}", want: "spec.rateLimit.requestsPerSecond: 1e+07 is out of range: must be above 0 and at most 1000000"},
		{name: "rate_burst", spec: "service: api\nrateLimit: {requestsPerSecond: 1, burst: -1}", want: "spec.rateLimit.burst: -1 is out of range: must be 1 to 1000000"},
		{name: "rate_per", spec: "service: api\nrateLimit: {requestsPerSecond: 1, per: route}", want: `spec.rateLimit.per: unsupported value "route"`},
	})
}

// TestTrafficPolicyRateLimitNotFinite covers a document built in Go: JSON
// and YAML cannot carry NaN or infinities.
func TestTrafficPolicyRateLimitNotFinite(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1)} {
		p := &config.TrafficPolicy{
			Metadata: config.ObjectMeta{Name: "api"},
			Spec:     config.TrafficPolicySpec{Service: "api", RateLimit: &config.RateLimit{RequestsPerSecond: v}},
		}
		errs := p.Validate()
		if got, want := errs.Error(), "spec.rateLimit.requestsPerSecond: must be a finite number"; got != want {
			t.Errorf("%v: got error %q, want %q", v, got, want)
		}
	}
}

func TestRouteDefaults(t *testing.T) {
	o, err := decodeTraffic(t, trafficDoc(config.KindRoute, `
service: api
rules:
- matches: [{path: {prefix: /v2}}]
  backends: [{version: v2, weight: 100}]
  mirror: {version: shadow}
  fault: {delay: {fixed: 5ms}, abort: {status: 503}}
  retries: {attempts: 1}
  rateLimit: {requestsPerSecond: 10}
- name: moved
  redirect: {path: /new}
- {}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Route{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindRoute},
		Metadata: config.ObjectMeta{Name: "api", Namespace: "default"},
		Spec: config.RouteSpec{
			Service: "api",
			Rules: []config.RouteRule{
				{
					Name:     "rule0",
					Matches:  []config.RouteMatch{{Path: &config.StringMatch{Prefix: "/v2"}}},
					Backends: []config.Backend{{Version: "v2", Weight: 100}},
					Mirror:   &config.Mirror{Version: "shadow", Percent: ptr(100.0)},
					Fault: &config.Fault{
						Delay: &config.FaultDelay{Fixed: "5ms", Percent: ptr(100.0)},
						Abort: &config.FaultAbort{Status: 503, Percent: ptr(100.0)},
					},
					Retries: &config.RetryPolicy{
						Attempts: 1,
						On:       []string{"connect-failure", "reset", "gateway-error"},
						Budget:   &config.RetryBudget{Percent: 20, MinPerSecond: new(10)},
						Backoff:  &config.Backoff{Base: "25ms", Max: "250ms"},
					},
					RateLimit: &config.RateLimit{RequestsPerSecond: 10, Burst: 10, Per: "source"},
				},
				{Name: "moved", Redirect: &config.Redirect{Path: "/new", Status: 302}},
				{Name: "rule2"},
			},
		},
	}
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("defaults mismatch (-want +got):\n%s", diff)
	}
}

func TestRouteValidate(t *testing.T) {
	rule := func(body string) string { return "service: api\nrules:\n- " + strings.ReplaceAll(body, "\n", "\n  ") }
	runTrafficCases(t, config.KindRoute, []trafficCase{
		{name: "valid_canary", spec: rule("backends: [{version: v1, weight: 90}, {version: v2, weight: 10}]")},
		{name: "valid_full", spec: `
service: api
rules:
- name: beta-users
  matches:
  - path: {prefix: /api/}
    methods: [GET, POST, M-SEARCH]
    headers:
    - {name: x-beta, exact: "1"}
    - {name: X-Env, present: true}
    - {name: user-agent, prefix: curl/}
    - {name: x-id, regex: "[0-9]+"}
    queryParams:
    - {name: debug, present: true}
    - {name: "a b", exact: x}
    sourceServices: ["*", default/web, "team-a/*", "*/web", "*/*"]
  - path: {exact: /}
  - path: {regex: "/users/[^/]+/profile"}
  backends: [{version: v2, weight: 100}, {version: v1, weight: 0}]
  requestHeaders:
    set: {x-canary: "true", X-Empty: ""}
    add: {x-trace-tag: beta}
    remove: [x-debug, Cookie]
  responseHeaders: {set: {cache-control: no-store}}
  mirror: {version: shadow, percent: 12.5}
  fault:
    delay: {fixed: 1h, percent: 0}
    abort: {status: 599, percent: 100}
  timeout: 2s
  retries: {attempts: 3, perTryTimeout: 2s}
  rateLimit: {requestsPerSecond: 0.5, burst: 1, per: service}
- name: moved
  matches: [{path: {exact: /old}}]
  redirect: {scheme: https, host: www.example.com, port: 8443, path: /new, status: 308}
- redirect: {host: 10.0.0.1}
- fault: {abort: {status: 200}}
- fault: {delay: {fixed: 1ms}}
- retries: {attempts: 1, perTryTimeout: 1h}
- timeout: 0s
`},

		{name: "missing_service", spec: "rules: [{}]", want: "spec.service: required"},
		{name: "no_rules", spec: "service: api", want: "spec.rules: at least one rule is required"},
		{name: "unknown_nested_field", spec: rule("backends: [{version: v1, weight: 100, wieght: 1}]"), want: "spec.rules[0].backends[0].wieght: unknown field"},
		{name: "bad_rule_name", spec: rule("name: Beta"), want: `spec.rules[0].name: "Beta" must consist of lowercase letters`},
		{name: "duplicate_rule_name", spec: "service: api\nrules: [{name: a}, {name: a}]", want: `spec.rules[1].name: "a" is also the name of spec.rules[0]`},
		{name: "duplicate_default_name", spec: "service: api\nrules: [{}, {name: rule0}]", want: `spec.rules[1].name: "rule0" is also the name of spec.rules[0]`},
		{name: "path_none", spec: rule("matches: [{path: {}}]"), want: "spec.rules[0].matches[0].path: exactly one of exact, prefix and regex is required"},
		{name: "path_two", spec: rule("matches: [{path: {exact: /a, prefix: /b}}]"), want: "spec.rules[0].matches[0].path: exactly one of exact, prefix and regex is required"},
		{name: "path_exact_relative", spec: rule("matches: [{path: {exact: a}}]"), want: `spec.rules[0].matches[0].path.exact: "a" must start with '/'`},
		{name: "path_prefix_relative", spec: rule("matches: [{path: {prefix: api}}]"), want: `spec.rules[0].matches[0].path.prefix: "api" must start with '/'`},
		{name: "path_not_normalized", spec: rule("matches: [{path: {prefix: /a/../b}}]"), want: `spec.rules[0].matches[0].path.prefix: "/a/../b" is not normalized (requests are matched after normalization): use "/b"`},
		{name: "path_never_matches", spec: rule("matches: [{path: {exact: /a%2fb}}]"), want: `spec.rules[0].matches[0].path.exact: "/a%2fb" can never match a request`},
		{name: "path_bad_regex", spec: rule("matches: [{path: {regex: '/(a'}}]"), want: "spec.rules[0].matches[0].path.regex: not an RE2 regular expression"},
		{name: "path_perl_regex", spec: rule(`matches: [{path: {regex: '/(?=a)'}}]`), want: "spec.rules[0].matches[0].path.regex: not an RE2 regular expression"},
		{name: "path_long_regex", spec: rule("matches: [{path: {regex: '" + strings.Repeat("a", 1025) + "'}}]"), want: "spec.rules[0].matches[0].path.regex: longer than 1024 bytes"},
		{name: "method_lower", spec: rule("matches: [{methods: [get]}]"), want: `spec.rules[0].matches[0].methods[0]: "get" must be upper case`},
		{name: "method_star", spec: rule("matches: [{methods: ['*']}]"), want: `spec.rules[0].matches[0].methods[0]: "*" is not a method`},
		{name: "method_not_token", spec: rule("matches: [{methods: ['GE T']}]"), want: `spec.rules[0].matches[0].methods[0]: "GE T" is not an HTTP method token`},
		{name: "method_empty", spec: rule("matches: [{methods: ['']}]"), want: "spec.rules[0].matches[0].methods[0]: must not be empty"},
		{name: "header_no_name", spec: rule("matches: [{headers: [{exact: x}]}]"), want: "spec.rules[0].matches[0].headers[0].name: required"},
		{name: "header_bad_name", spec: rule("matches: [{headers: [{name: 'x:y', exact: x}]}]"), want: `spec.rules[0].matches[0].headers[0].name: "x:y" is not an HTTP header name`},
		{name: "header_no_condition", spec: rule("matches: [{headers: [{name: x}]}]"), want: "spec.rules[0].matches[0].headers[0]: exactly one of present, exact, prefix and regex is required"},
		{name: "header_two_conditions", spec: rule("matches: [{headers: [{name: x, present: true, exact: v}]}]"), want: "spec.rules[0].matches[0].headers[0]: exactly one of present, exact, prefix and regex"},
		{name: "header_bad_regex", spec: rule("matches: [{headers: [{name: x, regex: '['}]}]"), want: "spec.rules[0].matches[0].headers[0].regex: not an RE2 regular expression"},
		{name: "query_no_name", spec: rule("matches: [{queryParams: [{present: true}]}]"), want: "spec.rules[0].matches[0].queryParams[0].name: required"},
		{name: "query_no_condition", spec: rule("matches: [{queryParams: [{name: q}]}]"), want: "spec.rules[0].matches[0].queryParams[0]: exactly one of present"},
		{name: "source_no_namespace", spec: rule("matches: [{sourceServices: [web]}]"), want: `spec.rules[0].matches[0].sourceServices[0]: "web" must be "*", "namespace/name", "namespace/*" or "*/name"`},
		{name: "source_slashes", spec: rule("matches: [{sourceServices: ['a/b/c']}]"), want: `spec.rules[0].matches[0].sourceServices[0]: "a/b/c" must be`},
		{name: "source_glob", spec: rule("matches: [{sourceServices: ['default/web-*']}]"), want: `spec.rules[0].matches[0].sourceServices[0]: "default/web-*": name`},
		{name: "source_ns_glob", spec: rule("matches: [{sourceServices: ['team-*/web']}]"), want: `spec.rules[0].matches[0].sourceServices[0]: "team-*/web": namespace`},
		{name: "source_empty", spec: rule("matches: [{sourceServices: ['']}]"), want: "spec.rules[0].matches[0].sourceServices[0]: must not be empty"},
		{name: "weights_sum", spec: rule("backends: [{version: v1, weight: 80}, {version: v2, weight: 10}]"), want: "spec.rules[0].backends: weights add up to 90, want 100"},
		{name: "weights_above", spec: rule("backends: [{version: v1, weight: 100}, {version: v2, weight: 10}]"), want: "spec.rules[0].backends: weights add up to 110, want 100"},
		{name: "weight_range", spec: rule("backends: [{version: v1, weight: 110}, {version: v2, weight: -10}]"), want: "spec.rules[0].backends[0].weight: 110 is out of range: must be 0 to 100"},
		{name: "backend_no_version", spec: rule("backends: [{weight: 100}]"), want: "spec.rules[0].backends[0].version: required"},
		{name: "backend_bad_version", spec: rule("backends: [{version: v1/x, weight: 100}]"), want: `spec.rules[0].backends[0].version: "v1/x" is not a version label value`},
		{name: "backend_duplicate", spec: rule("backends: [{version: v1, weight: 50}, {version: v1, weight: 50}]"), want: `spec.rules[0].backends[1].version: "v1" is also the version of spec.rules[0].backends[0]`},
		{name: "redirect_with_backends", spec: "service: api\nrules:\n- {}\n- {redirect: {path: /x}, backends: [{version: v1, weight: 100}]}", want: "spec.rules[1].redirect: cannot be combined with backends"},
		{name: "redirect_with_mirror_fault", spec: rule("{redirect: {path: /x}, mirror: {version: v1}, fault: {abort: {status: 500}}}"), want: "spec.rules[0].redirect: cannot be combined with mirror, fault"},
		{name: "redirect_status", spec: rule("redirect: {path: /x, status: 304}"), want: "spec.rules[0].redirect.status: 304 is not a redirect status: must be 301, 302, 303, 307 or 308"},
		{name: "redirect_scheme", spec: rule("redirect: {scheme: ftp}"), want: `spec.rules[0].redirect.scheme: unsupported value "ftp": must be http or https`},
		{name: "redirect_port", spec: rule("redirect: {port: 70000}"), want: "spec.rules[0].redirect.port: 70000 is not a port"},
		{name: "redirect_path", spec: rule("redirect: {path: new}"), want: `spec.rules[0].redirect.path: "new" must start with '/'`},
		{name: "redirect_path_query", spec: rule("redirect: {path: '/new?a=b'}"), want: `spec.rules[0].redirect.path: "/new?a=b": a path has no query`},
		{name: "redirect_host_upper", spec: rule("redirect: {host: Example.com}"), want: `spec.rules[0].redirect.host: "Example.com" must be lower case`},
		{name: "redirect_host_port", spec: rule("redirect: {host: 'example.com:8080'}"), want: `spec.rules[0].redirect.host: "example.com:8080": a host has no port: set port: 8080`},
		{name: "redirect_host_bad", spec: rule("redirect: {host: 'exa mple.com'}"), want: `spec.rules[0].redirect.host: "exa mple.com": a host name consists of`},
		{name: "redirect_host_ipv6", spec: rule("redirect: {host: '2001:db8::1'}"), want: `spec.rules[0].redirect.host: "2001:db8::1": an IPv6 address is not supported`},
		{name: "redirect_loop", spec: rule("redirect: {status: 301}"), want: "spec.rules[0].redirect: at least one of scheme, host, port and path is required: a redirect to the same URL would loop"},
		{name: "edit_bad_name", spec: rule("requestHeaders: {set: {'x y': a}}"), want: `spec.rules[0].requestHeaders.set["x y"]: "x y" is not an HTTP header name`},
		{name: "edit_crlf", spec: rule(`requestHeaders: {add: {x-a: "a\r\nb: c"}}`), want: "spec.rules[0].requestHeaders.add.x-a: a header value must not contain CR, LF or NUL"},
		{name: "edit_nul", spec: rule(`responseHeaders: {set: {x-a: "a\0b"}}`), want: "spec.rules[0].responseHeaders.set.x-a: a header value must not contain CR, LF or NUL"},
		{name: "edit_case_duplicate", spec: rule("requestHeaders: {set: {x-a: '1', X-A: '2'}}"), want: `spec.rules[0].requestHeaders.set.x-a: "x-a" is also given as "X-A": header names are case-insensitive`},
		{name: "edit_hop_by_hop", spec: rule("requestHeaders: {set: {Connection: close}}"), want: `spec.rules[0].requestHeaders.set.Connection: "Connection" cannot be edited: it is a hop-by-hop or framing header`},
		{name: "edit_host", spec: rule("requestHeaders: {set: {host: x}}"), want: `spec.rules[0].requestHeaders.set.host: "host" cannot be edited`},
		{name: "edit_content_length", spec: rule("responseHeaders: {remove: [Content-Length]}"), want: `spec.rules[0].responseHeaders.remove[0]: "Content-Length" cannot be edited`},
		{name: "edit_transfer_encoding", spec: rule("responseHeaders: {add: {transfer-encoding: chunked}}"), want: `"transfer-encoding" cannot be edited`},
		{name: "edit_te", spec: rule("requestHeaders: {remove: [TE]}"), want: `"TE" cannot be edited`},
		{name: "edit_trailer", spec: rule("requestHeaders: {remove: [Trailer]}"), want: `"Trailer" cannot be edited`},
		{name: "edit_upgrade", spec: rule("requestHeaders: {remove: [Upgrade]}"), want: `"Upgrade" cannot be edited`},
		{name: "edit_keep_alive", spec: rule("requestHeaders: {remove: [Keep-Alive]}"), want: `"Keep-Alive" cannot be edited`},
		{name: "edit_proxy", spec: rule("requestHeaders: {set: {Proxy-Authorization: x}}"), want: `"Proxy-Authorization" cannot be edited: Proxy-* headers are hop-by-hop`},
		{name: "edit_xfcc", spec: rule("requestHeaders: {set: {X-Forwarded-Client-Cert: x}}"), want: `spec.rules[0].requestHeaders.set.X-Forwarded-Client-Cert: "X-Forwarded-Client-Cert" cannot be edited: it carries the caller's identity`},
		{name: "edit_forwarded", spec: rule("requestHeaders: {add: {forwarded: x}}"), want: `"forwarded" cannot be edited: it carries the caller's identity`},
		{name: "edit_x_forwarded", spec: rule("requestHeaders: {remove: [x-forwarded-for]}"), want: `spec.rules[0].requestHeaders.remove[0]: "x-forwarded-for" cannot be edited: X-Forwarded-* headers carry identity`},
		{name: "edit_x_bulwark", spec: rule("responseHeaders: {set: {X-Bulwark-Source: x}}"), want: `"X-Bulwark-Source" cannot be edited: X-Bulwark-* headers carry identity`},
		{name: "edit_underscore_identity", spec: rule("requestHeaders: {set: {X_Bulwark_Source: x}}"), want: `"X_Bulwark_Source" cannot be edited: X-Bulwark-* headers carry identity`},
		{name: "edit_remove_empty", spec: rule("requestHeaders: {remove: ['']}"), want: "spec.rules[0].requestHeaders.remove[0]: a header name must not be empty"},
		{name: "mirror_no_version", spec: rule("mirror: {percent: 5}"), want: "spec.rules[0].mirror.version: required"},
		{name: "mirror_bad_version", spec: rule("mirror: {version: -v}"), want: `spec.rules[0].mirror.version: "-v" is not a version label value`},
		{name: "mirror_percent", spec: rule("mirror: {version: v, percent: 100.5}"), want: "spec.rules[0].mirror.percent: 100.5 is out of range: must be 0 to 100"},
		{name: "fault_empty", spec: rule("fault: {}"), want: "spec.rules[0].fault: at least one of delay and abort is required"},
		{name: "fault_delay_missing", spec: rule("fault: {delay: {percent: 5}}"), want: "spec.rules[0].fault.delay.fixed: required"},
		{name: "fault_delay_short", spec: rule("fault: {delay: {fixed: 0s}}"), want: "spec.rules[0].fault.delay.fixed: 0s is below the minimum 1ms"},
		{name: "fault_delay_long", spec: rule("fault: {delay: {fixed: 2h}}"), want: "spec.rules[0].fault.delay.fixed: 2h0m0s is above the maximum 1h0m0s"},
		{name: "fault_delay_percent", spec: rule("fault: {delay: {fixed: 1s, percent: -1}}"), want: "spec.rules[0].fault.delay.percent: -1 is out of range"},
		{name: "fault_abort_missing", spec: rule("fault: {abort: {percent: 5}}"), want: "spec.rules[0].fault.abort.status: required"},
		{name: "fault_abort_status", spec: rule("fault: {abort: {status: 600}}"), want: "spec.rules[0].fault.abort.status: 600 is out of range: must be 200 to 599"},
		{name: "fault_abort_percent", spec: rule("fault: {abort: {status: 500, percent: 101}}"), want: "spec.rules[0].fault.abort.percent: 101 is out of range"},
		{name: "rule_timeout", spec: rule("timeout: 2h"), want: "spec.rules[0].timeout: 2h0m0s is above the maximum 1h0m0s"},
		{name: "rule_retries_unbounded", spec: rule("retries: {retryOn: [5xx]}"), want: "spec.rules[0].retries.attempts: required: a retry policy must be bounded (1 to 10)"},
		{name: "rule_per_try_above_rule_timeout", spec: rule("timeout: 1s\nretries: {attempts: 2, perTryTimeout: 1500ms}"), want: "spec.rules[0].retries.perTryTimeout: 1.5s is above spec.rules[0].timeout 1s"},
		{name: "rule_retry_on", spec: rule("retries: {attempts: 2, retryOn: [grpc-nope]}"), want: `spec.rules[0].retries.retryOn[0]: "grpc-nope": unknown gRPC status`},
		{name: "rule_rate_limit", spec: rule("rateLimit: {requestsPerSecond: 0}"), want: "spec.rules[0].rateLimit.requestsPerSecond: required"},
	})
}

func TestRouteVersions(t *testing.T) {
	o, err := decodeTraffic(t, trafficDoc(config.KindRoute, `
service: api
rules:
- backends: [{version: v2, weight: 50}, {version: v1, weight: 50}]
  mirror: {version: shadow}
- backends: [{version: v1, weight: 100}]
  mirror: {version: v2}
- {}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := o.(*config.Route).Versions()
	if diff := cmp.Diff([]string{"shadow", "v1", "v2"}, got); diff != "" {
		t.Errorf("Versions mismatch (-want +got):\n%s", diff)
	}
	if got := (&config.Route{}).Versions(); len(got) != 0 {
		t.Errorf("got %q for a Route without rules, want none", got)
	}
}

// serverCertPEM returns a self-signed certificate that is not a CA one, as
// a test server's often is.
func serverCertPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "api.example.com"},
		DNSNames:  []string{"api.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// yamlBlock indents text as a YAML literal block under a key at column 0.
func yamlBlock(text string) string {
	return "|\n  " + strings.ReplaceAll(strings.TrimRight(text, "\n"), "\n", "\n  ")
}

func TestExternalServiceValidate(t *testing.T) {
	ca := yamlBlock(certPEM(t, true) + serverCertPEM(t))
	tls := func(body string) string {
		return "hosts: [api.example.com]\nports: [{port: 80, protocol: http}]\ntls:\n  " + strings.ReplaceAll(body, "\n", "\n  ")
	}
	runTrafficCases(t, config.KindExternalService, []trafficCase{
		{name: "valid_minimal", spec: "hosts: [api.example.com]\nports: [{port: 443, protocol: tls}]"},
		{name: "valid_full", spec: `
hosts: [api.example.com, "*.googleapis.com", localhost, a-1.b2.example]
ports: [{port: 80, protocol: http}, {port: 443, protocol: tls}, {port: 5432, protocol: tcp}]
addresses: ["127.0.0.1:8443", "[::1]:80", "backend.internal:443"]
tls:
  serverName: api.example.com
  caCertificates: ` + strings.ReplaceAll(ca, "\n", "\n  ")},
		{name: "valid_tls_system_roots", spec: tls("{}")},
		{name: "valid_long_host", spec: "hosts: [" + strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 61) + "]\nports: [{port: 1, protocol: tcp}, {port: 65535, protocol: tcp}]"},

		{name: "unknown_nested_field", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls, proto: tls}]", want: "spec.ports[0].proto: unknown field"},
		{name: "no_hosts", spec: "ports: [{port: 443, protocol: tls}]", want: "spec.hosts: at least one host is required"},
		{name: "host_empty", spec: "hosts: ['']\nports: [{port: 443, protocol: tls}]", want: "spec.hosts[0]: must not be empty"},
		{name: "host_upper", spec: "hosts: [API.example.com]\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "API.example.com": must be lower case: use "api.example.com"`},
		{name: "host_ip", spec: "hosts: [10.0.0.7]\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "10.0.0.7" is an IP address: declare a DNS name and map it to the address with spec.addresses`},
		{name: "host_ipv6", spec: "hosts: ['::1']\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "::1" is an IP address`},
		{name: "host_port", spec: "hosts: ['api.example.com:443']\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "api.example.com:443": a host has no port: list port 443 in spec.ports`},
		{name: "host_star_alone", spec: "hosts: ['*']\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "*": '*' is only allowed as a leading "*."`},
		{name: "host_star_inside", spec: "hosts: ['api.*.com']\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "api.*.com": '*' is only allowed`},
		{name: "host_underscore", spec: "hosts: [a_b.example]\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "a_b.example": a DNS name consists of lower-case letters`},
		{name: "host_dash", spec: "hosts: [-a.example]\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "-a.example": a DNS label must not start or end with '-'`},
		{name: "host_empty_label", spec: "hosts: [a..example]\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "a..example": each label of a DNS name is 1 to 63 characters`},
		{name: "host_trailing_dot", spec: "hosts: [a.example.]\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[0]: "a.example.": write the name without a trailing dot`},
		{name: "host_long_label", spec: "hosts: [" + strings.Repeat("a", 64) + ".example]\nports: [{port: 443, protocol: tls}]", want: "each label of a DNS name is 1 to 63 characters"},
		{name: "host_too_long", spec: "hosts: [" + strings.Repeat(strings.Repeat("a", 63)+".", 4) + "b]\nports: [{port: 443, protocol: tls}]", want: "a DNS name is at most 253 characters"},
		{name: "host_duplicate", spec: "hosts: [a.example, b.example, a.example]\nports: [{port: 443, protocol: tls}]", want: `spec.hosts[2]: "a.example" is also spec.hosts[0]`},
		{name: "no_ports", spec: "hosts: [a.example]", want: "spec.ports: at least one port is required"},
		{name: "port_zero", spec: "hosts: [a.example]\nports: [{protocol: tls}]", want: "spec.ports[0].port: 0 is not a port: must be 1 to 65535"},
		{name: "port_high", spec: "hosts: [a.example]\nports: [{port: 65536, protocol: tls}]", want: "spec.ports[0].port: 65536 is not a port"},
		{name: "port_duplicate", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls}, {port: 443, protocol: http}]", want: "spec.ports[1].port: 443 is also spec.ports[0]"},
		{name: "protocol_missing", spec: "hosts: [a.example]\nports: [{port: 443}]", want: "spec.ports[0].protocol: required: one of http, tls, tcp"},
		{name: "protocol_bad", spec: "hosts: [a.example]\nports: [{port: 443, protocol: https}]", want: `spec.ports[0].protocol: unsupported value "https": must be one of http, tls, tcp`},
		{name: "address_no_port", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls}]\naddresses: [10.0.0.1]", want: `spec.addresses[0]: "10.0.0.1" is not host:port`},
		{name: "address_bad_port", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls}]\naddresses: ['10.0.0.1:0']", want: `spec.addresses[0]: "10.0.0.1:0": port "0" must be 1 to 65535`},
		{name: "address_named_port", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls}]\naddresses: ['10.0.0.1:https']", want: `spec.addresses[0]: "10.0.0.1:https": port "https" must be 1 to 65535`},
		{name: "address_bad_host", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls}]\naddresses: ['a b:443']", want: `spec.addresses[0]: "a b:443": host "a b" is neither an IP address nor a DNS name`},
		{name: "address_zone", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls}]\naddresses: ['[fe80::1%eth0]:443']", want: "an IPv6 zone is not allowed"},
		{name: "address_empty", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls}]\naddresses: ['']", want: "spec.addresses[0]: must not be empty"},
		{name: "tls_without_http", spec: "hosts: [a.example]\nports: [{port: 443, protocol: tls}]\ntls: {}", want: "spec.tls: only allowed with a port of protocol http"},
		{name: "tls_bad_pem", spec: tls("caCertificates: not pem"), want: "spec.tls.caCertificates: no PEM CERTIFICATE block"},
		{name: "tls_key_pem", spec: tls("caCertificates: " + yamlBlock("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")), want: `spec.tls.caCertificates: PEM block 1 is a "PRIVATE KEY", want CERTIFICATE`},
		{name: "tls_bad_der", spec: tls("caCertificates: " + yamlBlock("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")), want: "spec.tls.caCertificates: certificate 1:"},
		{name: "tls_trailing", spec: tls("caCertificates: " + yamlBlock(certPEM(t, true)+"junk")), want: "spec.tls.caCertificates: content after the last PEM block"},
		{name: "tls_server_name", spec: tls("serverName: 'api example'"), want: `spec.tls.serverName: "api example": a DNS name consists of`},
	})
}

func TestTrafficMetadata(t *testing.T) {
	for _, kind := range []string{config.KindTrafficPolicy, config.KindRoute, config.KindExternalService} {
		t.Run(kind, func(t *testing.T) {
			doc := "apiVersion: bulwark.dev/v1alpha1\nkind: " + kind + "\nmetadata: {name: Bad_Name, namespace: x_y}\nspec: {}\n"
			_, err := decodeTraffic(t, doc)
			if err == nil {
				t.Fatal("got no error, want one")
			}
			for _, want := range []string{`metadata.name: "Bad_Name" must consist`, `metadata.namespace: "x_y" must consist`} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got error %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

// TestTrafficRoundTrip checks that the defaults Validate writes are stable:
// a validated document printed and applied again is the same.
func TestTrafficRoundTrip(t *testing.T) {
	docs := []string{
		trafficDoc(config.KindTrafficPolicy, "service: api\nretries: {attempts: 2}\nrateLimit: {requestsPerSecond: 3}\nconnectionLimits: {maxRequests: 5}"),
		trafficDoc(config.KindRoute, "service: api\nrules:\n- backends: [{version: v1, weight: 100}]\n  mirror: {version: v2}\n  fault: {delay: {fixed: 1s}}\n- redirect: {path: /x}"),
		trafficDoc(config.KindExternalService, "hosts: [a.example]\nports: [{port: 80, protocol: http}]\ntls: {serverName: a.example}"),
	}
	for _, doc := range docs {
		o, err := decodeTraffic(t, doc)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(o.GetTypeMeta().Kind, func(t *testing.T) {
			y, err := config.MarshalYAML(o)
			if err != nil {
				t.Fatal(err)
			}
			again, err := decodeTraffic(t, string(y))
			if err != nil {
				t.Fatalf("decode again: %v\n%s", err, y)
			}
			if diff := cmp.Diff(o, again); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTrafficDocExamples decodes every YAML block of docs/traffic.md, so
// the documentation's examples stay valid.
func TestTrafficDocExamples(t *testing.T) {
	md, err := os.ReadFile("../../docs/traffic.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```yaml\n(.*?)^```").FindAllSubmatch(md, -1)
	if len(blocks) == 0 {
		t.Fatal("docs/traffic.md has no yaml block")
	}
	kinds := map[string]bool{}
	for i, b := range blocks {
		objs, err := config.Decode(b[1])
		if err != nil {
			t.Errorf("yaml block %d of docs/traffic.md: %v\n%s", i+1, err, b[1])
			continue
		}
		if len(objs) == 0 && len(bytes.TrimSpace(b[1])) > 0 {
			t.Errorf("yaml block %d of docs/traffic.md holds no document", i+1)
		}
		for _, o := range objs {
			kinds[o.GetTypeMeta().Kind] = true
		}
	}
	for _, k := range []string{config.KindTrafficPolicy, config.KindRoute, config.KindExternalService} {
		if !kinds[k] {
			t.Errorf("docs/traffic.md has no example of %s", k)
		}
	}
}

// TestRetryBudgetMinPerSecondZero: an explicit minPerSecond of 0 (no
// reserve beyond the percentage) is kept, not replaced by the default.
func TestRetryBudgetMinPerSecondZero(t *testing.T) {
	for _, tt := range []struct {
		spec string
		want int
	}{
		{spec: "service: api\nretries: {attempts: 1, budget: {percent: 5, minPerSecond: 0}}", want: 0},
		{spec: "service: api\nretries: {attempts: 1, budget: {percent: 5}}", want: config.DefaultRetryBudgetMinPerSecond},
	} {
		o, err := decodeTraffic(t, trafficDoc(config.KindTrafficPolicy, tt.spec))
		if err != nil {
			t.Fatal(err)
		}
		b := o.(*config.TrafficPolicy).Spec.Retries.Budget
		if b.MinPerSecond == nil || *b.MinPerSecond != tt.want {
			t.Errorf("%s: got minPerSecond %v, want %d", tt.spec, b.MinPerSecond, tt.want)
		}
	}
}
