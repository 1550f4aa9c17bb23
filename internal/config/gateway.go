package config

// Kinds of the edge resources.
const (
	// KindGateway is the kind of a Gateway: the listeners and routes of
	// one `bulwark gateway` process.
	KindGateway = "Gateway"
	// KindSecret is the kind of a Secret: key material (TLS certificates
	// of gateways), stored encrypted at rest by the control plane and
	// never served back.
	KindSecret = "Secret"
)

// Listener protocols (GatewayListener.Protocol).
const (
	// ListenerHTTPS terminates TLS and serves HTTP/2 and HTTP/1.1.
	ListenerHTTPS = "HTTPS"
	// ListenerHTTP serves plain HTTP/1.1: by default it only redirects
	// to HTTPS.
	ListenerHTTP = "HTTP"
	// ListenerTLS passes TLS through without terminating it, routed by
	// SNI (GatewaySpec.TLSRoutes).
	ListenerTLS = "TLS"
)

// TLS versions (GatewayTLS.MinVersion).
const (
	TLSVersion12 = "1.2"
	TLSVersion13 = "1.3"
)

// Gateway rate-limit keys (GatewayRateLimit.Per).
const (
	// GatewayRatePerClientIP keeps one bucket per client IP address.
	GatewayRatePerClientIP = "client-ip"
	// GatewayRatePerSubject keeps one bucket per JWT principal
	// ("<iss>/<sub>"); a request without a token is keyed by its client
	// IP.
	GatewayRatePerSubject = "subject"
	// GatewayRatePerRoute keeps one bucket for the whole route (for a
	// spec-level limit: for the whole gateway).
	GatewayRatePerRoute = "route"
)

// Secret types (Secret.Type).
const (
	// SecretTypeTLS holds a certificate chain and its private key, PEM,
	// under SecretKeyTLSCert and SecretKeyTLSKey (as in Kubernetes).
	SecretTypeTLS = "kubernetes.io/tls"
)

// Keys of a SecretTypeTLS Secret's data.
const (
	SecretKeyTLSCert = "tls.crt"
	SecretKeyTLSKey  = "tls.key"
)

// Gateway is an ingress gateway: the listeners one `bulwark gateway`
// process serves and the routes from outside into mesh services.
//
// The gateway is a workload of the mesh. It attests with a join token for
// the service "<namespace>/<name>" of the Gateway, so its identity is
// spiffe://<td>/ns/<namespace>/sa/<name>: the policies of the services it
// routes to must allow that identity, exactly as for any caller. Requests
// from outside are authorized by the AuthorizationPolicies that select the
// gateway (selector.service: <name>), on what the gateway knows of them:
// the client's IP address, the JWT principal and claims of the route's
// providers, method, host, port, path, headers and SNI. With no ALLOW
// policy selecting it, the gateway refuses every request (403), like any
// workload (DESIGN §3).
type Gateway struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     GatewaySpec `json:"spec"`
}

// GatewaySpec is the body of a Gateway.
type GatewaySpec struct {
	// Listeners the gateway binds (on its --address). At least one; names
	// and ports unique.
	Listeners []GatewayListener `json:"listeners"`
	// Routes from HTTP requests (HTTPS listeners, and HTTP listeners that
	// do not redirect) to mesh services. The first route whose listeners,
	// hosts and matches hold decides; a request no route takes gets 404.
	Routes []GatewayRoute `json:"routes,omitempty"`
	// TLSRoutes route the connections of TLS (passthrough) listeners by
	// SNI to mesh services whose apps terminate TLS themselves (protocol
	// tcp). The first route whose listeners and hosts hold decides; a
	// connection no route takes is closed.
	TLSRoutes []GatewayTLSRoute `json:"tlsRoutes,omitempty"`
	// Limits protect the gateway from slow and greedy clients. Defaults:
	// see GatewayLimits.
	Limits *GatewayLimits `json:"limits,omitempty"`
	// RateLimits apply to every request of every route, before the
	// route's own. Default: none.
	RateLimits []GatewayRateLimit `json:"rateLimits,omitempty"`
}

// GatewayListener is one port of the gateway.
type GatewayListener struct {
	// Name is unique in the Gateway, 1 to 63 of [a-z0-9-]; routes name
	// it.
	Name string `json:"name"`
	// Port, 1 to 65535, unique in the Gateway.
	Port int `json:"port"`
	// Protocol: HTTPS, HTTP or TLS. Required.
	Protocol string `json:"protocol"`
	// TLS is the certificates of an HTTPS listener: required with HTTPS,
	// refused with the others.
	TLS *GatewayTLS `json:"tls,omitempty"`
	// RedirectToHTTPS, for an HTTP listener: answer every request with a
	// 308 to the same URL on https (port: HTTPSPort). Default: true; false
	// serves the routes in plain HTTP.
	RedirectToHTTPS *bool `json:"redirectToHTTPS,omitempty"`
	// HTTPSPort is the port of the redirects' Location. Default: the port
	// of the Gateway's first HTTPS listener (omitted when 443).
	HTTPSPort int `json:"httpsPort,omitempty"`
}

// GatewayTLS is how an HTTPS listener terminates TLS: TLS 1.2 or 1.3
// with ECDHE and AEAD cipher suites only, HTTP/2 and HTTP/1.1 by ALPN.
type GatewayTLS struct {
	// Certificates, at least one: the client's SNI picks the first whose
	// DNS names match it (a wildcard "*.example.com" certificate matches
	// one label); a client without SNI, or with a name none matches, gets
	// the first. Each is re-read when it changes (a file on disk, or the
	// Secret), without dropping connections.
	Certificates []GatewayCertificate `json:"certificates"`
	// MinVersion: "1.2" (default) or "1.3".
	MinVersion string `json:"minVersion,omitempty"`
	// HSTS, when set, adds Strict-Transport-Security to every answer of
	// the listener.
	HSTS *HSTS `json:"hsts,omitempty"`
}

// GatewayCertificate is one certificate chain with its key: exactly one of
// Secret and CertFile with KeyFile.
type GatewayCertificate struct {
	// Secret names a Secret of type kubernetes.io/tls in the Gateway's
	// namespace; the control plane sends it to this gateway only.
	Secret string `json:"secret,omitempty"`
	// CertFile and KeyFile are PEM files on the gateway's host (absolute
	// paths), re-read when they change.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// HSTS is a Strict-Transport-Security policy (RFC 6797).
type HSTS struct {
	// MaxAge, a Go duration of at least 1s. Default: "8760h" (one year).
	MaxAge string `json:"maxAge,omitempty"`
	// IncludeSubdomains and Preload add those directives.
	IncludeSubdomains bool `json:"includeSubdomains,omitzero"`
	Preload           bool `json:"preload,omitzero"`
}

// GatewayRoute routes HTTP requests to one mesh service.
type GatewayRoute struct {
	// Name is unique in the Gateway, 1 to 63 of [a-z0-9-]; it appears in
	// access logs and metrics.
	Name string `json:"name"`
	// Listeners are names of the Gateway's HTTPS or HTTP listeners the
	// route serves. Default: every one of them.
	Listeners []string `json:"listeners,omitempty"`
	// Hosts are the request hosts (Host or :authority, without the port,
	// lower case) the route takes: exact names, or "*.example.com" for
	// one or more labels under example.com. Default: any host.
	Hosts []string `json:"hosts,omitempty"`
	// Matches: the route applies when any of them holds; none means every
	// request of its hosts. The RouteMatch of a mesh Route, without
	// sourceServices (a client outside has no service).
	Matches []RouteMatch `json:"matches,omitempty"`
	// Service is the mesh service the requests go to: "namespace/name", or
	// "name" in the Gateway's namespace. Required.
	Service string `json:"service"`
	// Port is the port the request names to the service (its policies see
	// it). Default: none (80).
	Port int `json:"port,omitempty"`
	// Rewrite changes the path sent to the service.
	Rewrite *PathRewrite `json:"rewrite,omitempty"`
	// Timeout bounds the whole request, a Go duration. Default: "30s".
	Timeout string `json:"timeout,omitempty"`
	// MaxRequestBodyBytes replaces the Gateway's limit for this route.
	// Default: GatewayLimits.MaxRequestBodyBytes.
	MaxRequestBodyBytes int64 `json:"maxRequestBodyBytes,omitempty"`
	// CORS answers preflight requests and adds the CORS response headers.
	// Default: none (no CORS headers: browsers refuse cross-origin reads).
	CORS *CORSPolicy `json:"cors,omitempty"`
	// JWT authenticates the requests of this route. Default: none.
	JWT *GatewayJWT `json:"jwt,omitempty"`
	// RateLimits of this route, after the Gateway's. Default: none.
	RateLimits []GatewayRateLimit `json:"rateLimits,omitempty"`
	// RequestHeaders and ResponseHeaders edit headers on the way, as in a
	// mesh Route (identity and hop-by-hop headers cannot be edited).
	RequestHeaders  *HeaderEdits `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderEdits `json:"responseHeaders,omitempty"`
}

// PathRewrite changes the path sent to the service: exactly one field.
type PathRewrite struct {
	// StripPrefix removes this path prefix (at a segment boundary) from
	// the path: "/api" sends "/api/orders" as "/orders" and "/api" as "/".
	// Every match of the route must have a path prefix that starts with
	// it.
	StripPrefix string `json:"stripPrefix,omitempty"`
	// ReplacePrefix replaces the prefix the route's path match matched
	// (every match must be a path prefix match): with "/v2", a route
	// matching prefix "/api" sends "/api/orders" as "/v2/orders".
	ReplacePrefix string `json:"replacePrefix,omitempty"`
	// ReplaceFullPath replaces the whole path.
	ReplaceFullPath string `json:"replaceFullPath,omitempty"`
}

// CORSPolicy is a route's Cross-Origin Resource Sharing policy. A preflight
// (OPTIONS with Origin and Access-Control-Request-Method) from an allowed
// origin is answered 204 by the gateway; from any other origin 403. Other
// requests go on; an allowed origin gets the Access-Control-Allow-* headers
// on the answer.
type CORSPolicy struct {
	// AllowOrigins are origins ("https://app.example.com", scheme, host
	// and optional port, matched exactly), or "*" alone (not with
	// AllowCredentials). At least one.
	AllowOrigins []string `json:"allowOrigins"`
	// AllowMethods a preflight may ask for. Default: GET, HEAD, POST.
	AllowMethods []string `json:"allowMethods,omitempty"`
	// AllowHeaders a preflight may ask for (case-insensitive). Default:
	// none beyond the CORS-safelisted ones.
	AllowHeaders []string `json:"allowHeaders,omitempty"`
	// ExposeHeaders a page may read from the answer.
	ExposeHeaders []string `json:"exposeHeaders,omitempty"`
	// MaxAge a preflight's answer may be cached, a Go duration. Default:
	// "10m".
	MaxAge string `json:"maxAge,omitempty"`
	// AllowCredentials lets pages send cookies and Authorization.
	AllowCredentials bool `json:"allowCredentials,omitzero"`
}

// GatewayJWT authenticates a route's requests with JWTProviders.
type GatewayJWT struct {
	// Providers are names of JWTProviders in the Gateway's namespace (or,
	// when there is none of that name, in RootNamespace); their selectors
	// do not matter here. At least one. A token is accepted when one of
	// them accepts it (see internal/authn).
	Providers []string `json:"providers"`
	// Required: a request without a token gets 401. Default: true; false
	// lets it through unauthenticated (policies decide).
	Required *bool `json:"required,omitempty"`
	// ForwardToken passes the token to the service. Default: false, it is
	// removed from where it was found.
	ForwardToken bool `json:"forwardToken,omitzero"`
	// ClaimsToHeaders copy claims of a valid token into request headers
	// for the service, in place of the providers' own claimsToHeaders.
	// The gateway always removes these headers from what the client sent.
	ClaimsToHeaders []ClaimToHeader `json:"claimsToHeaders,omitempty"`
}

// GatewayRateLimit is a token bucket over some key of the requests; over
// it, the gateway answers 429 with Retry-After.
type GatewayRateLimit struct {
	// RequestsPerSecond refills the bucket. Required, at least
	// MinRateLimit (one a day).
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// Burst is the bucket's size. Default: RequestsPerSecond rounded up.
	Burst int `json:"burst,omitempty"`
	// Per is "client-ip" (default), "subject" or "route".
	Per string `json:"per,omitempty"`
}

// GatewayTLSRoute routes TLS connections of passthrough listeners by SNI.
// The gateway does not terminate them: it reads the server name from the
// ClientHello and tunnels the bytes through the mesh (mTLS between the
// gateway and the service's sidecar). Policies selecting the gateway then
// see only the client's IP, the SNI (as host and SNI) and the port.
type GatewayTLSRoute struct {
	// Name is unique among the TLS routes, 1 to 63 of [a-z0-9-].
	Name string `json:"name"`
	// Listeners are names of the Gateway's TLS listeners. Default: every
	// one of them.
	Listeners []string `json:"listeners,omitempty"`
	// Hosts are server names: exact, or "*.example.com". At least one.
	Hosts []string `json:"hosts"`
	// Service is a mesh service whose apps speak TCP: "namespace/name",
	// or "name" in the Gateway's namespace. Required.
	Service string `json:"service"`
	// Port the tunnel names to the service. Default: none.
	Port int `json:"port,omitempty"`
}

// GatewayLimits bound what one client may make the gateway hold. Zero
// fields take their defaults.
type GatewayLimits struct {
	// MaxRequestHeaderBytes bounds the request line and headers. Default:
	// 32768 (32 KiB); at most 1 MiB.
	MaxRequestHeaderBytes int `json:"maxRequestHeaderBytes,omitempty"`
	// MaxRequestHeaders bounds the number of header fields. Default: 100.
	MaxRequestHeaders int `json:"maxRequestHeaders,omitempty"`
	// MaxURLLength bounds the request-target, in bytes. Default: 8192.
	MaxURLLength int `json:"maxURLLength,omitempty"`
	// MaxRequestBodyBytes bounds a request body (413 beyond). Default:
	// 10485760 (10 MiB).
	MaxRequestBodyBytes int64 `json:"maxRequestBodyBytes,omitempty"`
	// RequestHeaderTimeout bounds the TLS handshake and the reading of a
	// request's headers (slowloris). Default: "10s".
	RequestHeaderTimeout string `json:"requestHeaderTimeout,omitempty"`
	// RequestBodyTimeout bounds the reading of a request's body. Default:
	// "30s".
	RequestBodyTimeout string `json:"requestBodyTimeout,omitempty"`
	// IdleTimeout closes a keep-alive connection with no request. Default:
	// "60s".
	IdleTimeout string `json:"idleTimeout,omitempty"`
	// ResponseWriteTimeout is the longest one write of an answer to the
	// client may take (slow readers, a zero HTTP/2 window): past it the
	// stream (HTTP/2) or the connection (HTTP/1.1) is closed and the
	// request's upstream released. Default: "30s".
	ResponseWriteTimeout string `json:"responseWriteTimeout,omitempty"`
	// MaxConcurrentStreams of one HTTP/2 connection. Default: 100.
	MaxConcurrentStreams int `json:"maxConcurrentStreams,omitempty"`
	// MaxConnectionsPerIP bounds the open connections of one client IP
	// address (further ones are closed at once). Default: 256.
	MaxConnectionsPerIP int `json:"maxConnectionsPerIP,omitempty"`
}

// Defaults of GatewayLimits and GatewayRoute.
const (
	DefaultGatewayMaxHeaderBytes      = 32 << 10
	DefaultGatewayMaxHeaders          = 100
	DefaultGatewayMaxURLLength        = 8192
	DefaultGatewayMaxBodyBytes        = 10 << 20
	DefaultGatewayHeaderTimeout       = "10s"
	DefaultGatewayBodyTimeout         = "30s"
	DefaultGatewayIdleTimeout         = "60s"
	DefaultGatewayWriteTimeout        = "30s"
	DefaultGatewayMaxStreams          = 100
	DefaultGatewayMaxConnectionsPerIP = 256
	DefaultGatewayRouteTimeout        = "30s"
	DefaultHSTSMaxAge                 = "8760h"
	DefaultCORSMaxAge                 = "10m"
)

// Secret is key material, Kubernetes-style: the TLS certificate and key of
// a gateway's listener (type kubernetes.io/tls). The control plane stores
// its data encrypted at rest under the key custody of its CA
// (keymanager), sends it only to the gateways whose Gateway (in the same
// namespace) names it, and never serves it back: every read shows the keys
// of data with no value.
type Secret struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	// Type: "kubernetes.io/tls". Required.
	Type string `json:"type"`
	// Data maps keys to values, base64 in YAML and JSON: tls.crt (PEM
	// certificate chain, leaf first) and tls.key (PEM private key: EC,
	// RSA of at least 2048 bits, or Ed25519; PKCS#1, SEC 1 or PKCS#8) for
	// kubernetes.io/tls. The key must match the leaf.
	Data map[string][]byte `json:"data,omitempty"`
	// StringData is Data in plain text, merged into Data at apply (a key
	// in both takes StringData's value).
	StringData map[string]string `json:"stringData,omitempty"`
}

// GetTypeMeta implements Object.
func (g *Gateway) GetTypeMeta() *TypeMeta { return &g.TypeMeta }

// GetMetadata implements Object.
func (g *Gateway) GetMetadata() *ObjectMeta { return &g.Metadata }

// GetTypeMeta implements Object.
func (s *Secret) GetTypeMeta() *TypeMeta { return &s.TypeMeta }

// GetMetadata implements Object.
func (s *Secret) GetMetadata() *ObjectMeta { return &s.Metadata }
