package config

// Kinds of the traffic-management resources.
const (
	KindTrafficPolicy   = "TrafficPolicy"
	KindRoute           = "Route"
	KindExternalService = "ExternalService"
)

// VersionLabel is the instance label whose value names a version that
// Route backends select.
const VersionLabel = "version"

// Load-balancing policies.
const (
	// LBPeakEWMA picks the better of two random endpoints by peak-EWMA
	// latency times outstanding requests (Linkerd's default). The default.
	LBPeakEWMA = "PeakEWMA"
	// LBRoundRobin cycles through the endpoints.
	LBRoundRobin = "RoundRobin"
	// LBLeastRequest picks the better of two random endpoints by
	// outstanding requests.
	LBLeastRequest = "LeastRequest"
	// LBConsistentHash maps a header or cookie value onto a hash ring, so
	// requests with the same value reach the same endpoint (session
	// affinity).
	LBConsistentHash = "ConsistentHash"
)

// Retry conditions (RetryPolicy.On).
const (
	// RetryConnectFailure: the peer could not be reached (the request was
	// not sent). Always safe, whatever the method.
	RetryConnectFailure = "connect-failure"
	// RetryReset: the stream was reset or the connection lost before a
	// response header arrived.
	RetryReset = "reset"
	// Retry5xx: any 5xx response (includes gateway-error).
	Retry5xx = "5xx"
	// RetryGatewayError: 502, 503 or 504.
	RetryGatewayError = "gateway-error"
	// RetryGRPCPrefix followed by a gRPC status name in lower case with
	// dashes ("grpc-unavailable", "grpc-resource-exhausted",
	// "grpc-deadline-exceeded", "grpc-cancelled", "grpc-internal"): a gRPC
	// response (200 with grpc-status in its headers) with that status.
	RetryGRPCPrefix = "grpc-"
)

// Rate-limit keys (RateLimit.Per).
const (
	// RateLimitPerSource keeps one bucket per caller SPIFFE ID.
	RateLimitPerSource = "source"
	// RateLimitPerService keeps one bucket for every caller together.
	RateLimitPerService = "service"
)

// TrafficPolicy says how callers reach one service: load balancing,
// timeouts, retries, outlier detection and connection limits (enforced by
// each caller's sidecar), and rate limits (enforced by the service's own
// sidecars, per instance). At most one TrafficPolicy may select a service.
type TrafficPolicy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta        `json:"metadata"`
	Spec     TrafficPolicySpec `json:"spec"`
}

// TrafficPolicySpec is the body of a TrafficPolicy.
type TrafficPolicySpec struct {
	// Service is the name of the destination service in the policy's
	// namespace. Required.
	Service string `json:"service"`
	// LoadBalancer picks an endpoint for each request. Default: PeakEWMA,
	// locality-aware.
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
	// Timeout bounds a whole request (every try, backoff and the response
	// body), a Go duration. Default: none, as in Istio and Linkerd, so
	// long-lived gRPC streams and downloads are not cut; WebSocket and TCP
	// tunnels are never bounded by it. Route rules override it.
	Timeout string `json:"timeout,omitempty"`
	// Retries of failed requests. Default: 2 retries on connect failures
	// (any method) and resets (idempotent methods only), within the
	// default budget.
	Retries *RetryPolicy `json:"retries,omitempty"`
	// OutlierDetection ejects endpoints that keep failing. Default: on,
	// with the defaults of OutlierDetection.
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// ConnectionLimits is the circuit breaker of each caller. Default: no
	// limits.
	ConnectionLimits *ConnectionLimits `json:"connectionLimits,omitempty"`
	// RateLimit is enforced by the service's sidecars (inbound, per
	// instance), answering 429 with Retry-After. Default: none.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// LoadBalancer configures endpoint selection.
type LoadBalancer struct {
	// Policy is PeakEWMA (default), RoundRobin, LeastRequest or
	// ConsistentHash.
	Policy string `json:"policy,omitempty"`
	// HashOn is the request value ConsistentHash hashes; required with it
	// and only allowed with it.
	HashOn *HashOn `json:"hashOn,omitempty"`
	// LocalityAware prefers endpoints in the caller's zone, then its
	// region, then any, moving on when no usable endpoint is left in the
	// nearer tier. Default: true.
	LocalityAware *bool `json:"localityAware,omitempty"`
}

// HashOn names one request value: exactly one of Header and Cookie.
type HashOn struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
}

// RetryPolicy says which failed requests are tried again, and how often.
type RetryPolicy struct {
	// Attempts is the most retries of one request (not counting the first
	// try), 1 to 10. Required: a retry policy must be bounded.
	Attempts int `json:"attempts"`
	// PerTryTimeout bounds each try, a Go duration. Default: none (the
	// request's timeout bounds them all).
	PerTryTimeout string `json:"perTryTimeout,omitempty"`
	// On lists the conditions that are retried (RetryConnectFailure, ...).
	// Default: ["connect-failure", "reset", "gateway-error"].
	On []string `json:"retryOn,omitempty"`
	// NonIdempotent allows retrying POST, PATCH and other non-idempotent
	// methods on conditions where the request may have been processed
	// (every condition but connect-failure). Default: false.
	NonIdempotent bool `json:"nonIdempotent,omitempty"`
	// Budget caps retries as a share of requests. Default: 20% with a
	// floor of 10 retries per second.
	Budget *RetryBudget `json:"budget,omitempty"`
	// Backoff between tries: full jitter over an exponential bound.
	// Default: base 25ms, max 250ms.
	Backoff *Backoff `json:"backoff,omitempty"`
}

// RetryBudget bounds the extra load retries add (Linkerd's retry budget).
type RetryBudget struct {
	// Percent of requests (over the last 10 seconds) that may be retries,
	// 1 to 100. Default: 20.
	Percent int `json:"percent,omitempty"`
	// MinPerSecond retries are always allowed, so a quiet service still
	// retries. Default: 10.
	// 0 allows none beyond Percent.
	MinPerSecond *int `json:"minPerSecond,omitempty"`
}

// Backoff is exponential with full jitter: try n waits a random time in
// [0, min(Max, Base*2^n)).
type Backoff struct {
	Base string `json:"base,omitempty"`
	Max  string `json:"max,omitempty"`
}

// OutlierDetection ejects an endpoint after consecutive failures, for a
// time that grows with each ejection.
type OutlierDetection struct {
	// Disabled turns outlier detection off.
	Disabled bool `json:"disabled,omitempty"`
	// Consecutive5xx ejects after this many 5xx in a row. Default: 5.
	Consecutive5xx int `json:"consecutive5xx,omitempty"`
	// ConsecutiveGatewayErrors ejects after this many connect failures,
	// resets, 502, 503 or 504 in a row. Default: 3.
	ConsecutiveGatewayErrors int `json:"consecutiveGatewayErrors,omitempty"`
	// BaseEjectionTime is the first ejection's length; the nth lasts n
	// times as long, up to MaxEjectionTime. Defaults: "30s" and "300s".
	BaseEjectionTime string `json:"baseEjectionTime,omitempty"`
	MaxEjectionTime  string `json:"maxEjectionTime,omitempty"`
	// MaxEjectionPercent of a service's endpoints may be ejected at once,
	// 1 to 100. Default: 50.
	MaxEjectionPercent int `json:"maxEjectionPercent,omitempty"`
}

// ConnectionLimits is a caller's circuit breaker for one service: past a
// limit, requests get 503 at once instead of queueing.
type ConnectionLimits struct {
	// MaxRequests in flight to the service from this caller. 0: no limit.
	MaxRequests int `json:"maxRequests,omitempty"`
	// MaxPendingRequests waiting for a connection to be dialed. 0: no
	// limit.
	MaxPendingRequests int `json:"maxPendingRequests,omitempty"`
	// MaxConnections to each endpoint. 0: no limit.
	MaxConnections int `json:"maxConnections,omitempty"`
}

// RateLimit is a token bucket.
type RateLimit struct {
	// RequestsPerSecond refills the bucket. Required, at least
	// MinRateLimit (one per day).
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// Burst is the bucket's size. Default: RequestsPerSecond rounded up.
	Burst int `json:"burst,omitempty"`
	// Per is "source" (one bucket per caller identity) or "service" (one
	// bucket for all). Default: "source".
	Per string `json:"per,omitempty"`
}

// Route routes the HTTP requests to one service: the first rule whose
// matches hold decides; a request no rule matches goes to every endpoint
// of the service. Several Routes may select a service; their rules are
// tried in the order of the Routes' names.
type Route struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     RouteSpec  `json:"spec"`
}

// RouteSpec is the body of a Route.
type RouteSpec struct {
	// Service is the name of the destination service in the Route's
	// namespace. Required.
	Service string `json:"service"`
	// Rules, tried in order. At least one.
	Rules []RouteRule `json:"rules"`
}

// RouteRule is one match -> action rule.
type RouteRule struct {
	// Name of the rule, unique in the Route; it appears in access logs
	// and metrics. Default: "rule<index>".
	Name string `json:"name,omitempty"`
	// Matches: the rule applies when any of them holds; none means every
	// request.
	Matches []RouteMatch `json:"matches,omitempty"`
	// Backends split the matched requests by version, with weights that
	// add up to 100. None: every endpoint of the service.
	Backends []Backend `json:"backends,omitempty"`
	// Redirect answers with a redirect instead of forwarding; it excludes
	// Backends, Mirror and Fault.
	Redirect *Redirect `json:"redirect,omitempty"`
	// RequestHeaders and ResponseHeaders edit headers on the way.
	RequestHeaders  *HeaderEdits `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderEdits `json:"responseHeaders,omitempty"`
	// Mirror sends a copy of a share of the requests to another version;
	// its responses are discarded.
	Mirror *Mirror `json:"mirror,omitempty"`
	// Fault injects delays and aborts, for chaos testing.
	Fault *Fault `json:"fault,omitempty"`
	// Timeout and Retries override the TrafficPolicy's for this rule.
	Timeout string       `json:"timeout,omitempty"`
	Retries *RetryPolicy `json:"retries,omitempty"`
	// RateLimit for the requests this rule matches, enforced by the
	// service's sidecars (inbound, per instance, per the rule).
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// RouteMatch holds when all of its conditions hold.
type RouteMatch struct {
	// Path of the request (normalized, without the query).
	Path *StringMatch `json:"path,omitempty"`
	// Methods: any of them (upper case).
	Methods []string `json:"methods,omitempty"`
	// Headers: all of them.
	Headers []HeaderMatch `json:"headers,omitempty"`
	// QueryParams: all of them.
	QueryParams []HeaderMatch `json:"queryParams,omitempty"`
	// SourceServices: the caller serves any of them ("ns/name"; "*" as a
	// whole segment is a wildcard: "ns/*").
	SourceServices []string `json:"sourceServices,omitempty"`
}

// StringMatch is exactly one of Exact, Prefix (a path prefix at a segment
// boundary when it ends without "/": "/api" matches "/api" and "/api/x",
// not "/apix") and Regex (RE2, anchored).
type StringMatch struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Regex  string `json:"regex,omitempty"`
}

// HeaderMatch matches one header or query parameter by name: Present
// alone, or one of Exact, Prefix and Regex on its (first) value.
type HeaderMatch struct {
	Name    string `json:"name"`
	Present bool   `json:"present,omitempty"`
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Regex   string `json:"regex,omitempty"`
}

// Backend is one version of the service with its share of requests.
type Backend struct {
	// Version is the value of the instances' "version" label. Required.
	Version string `json:"version"`
	// Weight, 0 to 100; the weights of a rule add up to 100.
	Weight int `json:"weight"`
}

// Redirect answers 301, 302 (default), 303, 307 or 308 with a Location made
// from the request with the given parts replaced.
type Redirect struct {
	Scheme string `json:"scheme,omitempty"`
	Host   string `json:"host,omitempty"`
	Port   int    `json:"port,omitempty"`
	Path   string `json:"path,omitempty"`
	Status int    `json:"status,omitempty"`
}

// HeaderEdits edits headers: Remove first, then Set (replace), then Add.
// Hop-by-hop and identity headers (X-Forwarded-Client-Cert, X-Bulwark-*)
// cannot be edited.
type HeaderEdits struct {
	Set    map[string]string `json:"set,omitempty"`
	Add    map[string]string `json:"add,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// Mirror copies requests to a version; the copies' responses are dropped.
type Mirror struct {
	// Version to mirror to. Required.
	Version string `json:"version"`
	// Percent of matched requests to copy, 0 to 100. Default: 100.
	Percent *float64 `json:"percent,omitempty"`
}

// Fault injects failures into a share of the matched requests, at the
// caller's sidecar.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay delays requests before forwarding them.
type FaultDelay struct {
	// Fixed delay, a Go duration. Required.
	Fixed string `json:"fixed"`
	// Percent of requests delayed, 0 to 100. Default: 100.
	Percent *float64 `json:"percent,omitempty"`
}

// FaultAbort answers requests with a status instead of forwarding them.
type FaultAbort struct {
	// Status answered, 200 to 599. Required.
	Status int `json:"status"`
	// Percent of requests aborted, 0 to 100. Default: 100.
	Percent *float64 `json:"percent,omitempty"`
}

// ExternalService declares a destination outside the mesh. Sidecars reach
// only declared external hosts (egress is registry-only), and only for
// callers that an AuthorizationPolicy selecting the ExternalService by
// name (selector.service) allows.
type ExternalService struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta          `json:"metadata"`
	Spec     ExternalServiceSpec `json:"spec"`
}

// External protocols (ExternalPort.Protocol).
const (
	// ExternalHTTP: plain HTTP, or HTTPS when TLS origination is on.
	ExternalHTTP = "http"
	// ExternalTLS: TLS the app originates, passed through a CONNECT
	// tunnel; authorized by host and port only.
	ExternalTLS = "tls"
	// ExternalTCP: raw TCP through a CONNECT tunnel.
	ExternalTCP = "tcp"
)

// ExternalServiceSpec is the body of an ExternalService.
type ExternalServiceSpec struct {
	// Hosts: DNS names (lower case; "*.example.com" matches one or more
	// labels under example.com). At least one.
	Hosts []string `json:"hosts"`
	// Ports the hosts may be reached on. At least one.
	Ports []ExternalPort `json:"ports"`
	// Addresses, host:port, replace DNS resolution of the hosts (for
	// hosts with no DNS, and for tests). Default: resolve the host.
	Addresses []string `json:"addresses,omitempty"`
	// TLS originates TLS for "http" ports: the app sends plain HTTP and
	// the sidecar connects with TLS. Default: none.
	TLS *ExternalTLSOrigination `json:"tls,omitempty"`
}

// ExternalPort is one port of an external service.
type ExternalPort struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

// ExternalTLSOrigination says how the sidecar verifies the external
// server.
type ExternalTLSOrigination struct {
	// CACertificates is a PEM bundle of roots. Default: the system roots.
	CACertificates string `json:"caCertificates,omitempty"`
	// ServerName to verify. Default: the request's host.
	ServerName string `json:"serverName,omitempty"`
}

// GetTypeMeta implements Object.
func (p *TrafficPolicy) GetTypeMeta() *TypeMeta { return &p.TypeMeta }

// GetMetadata implements Object.
func (p *TrafficPolicy) GetMetadata() *ObjectMeta { return &p.Metadata }

// GetTypeMeta implements Object.
func (r *Route) GetTypeMeta() *TypeMeta { return &r.TypeMeta }

// GetMetadata implements Object.
func (r *Route) GetMetadata() *ObjectMeta { return &r.Metadata }

// GetTypeMeta implements Object.
func (e *ExternalService) GetTypeMeta() *TypeMeta { return &e.TypeMeta }

// GetMetadata implements Object.
func (e *ExternalService) GetMetadata() *ObjectMeta { return &e.Metadata }
