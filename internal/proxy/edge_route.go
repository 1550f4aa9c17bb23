package proxy

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/resilience"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// edgeGateway is the compiled Gateway of a gateway's snapshot (edge.go).
type edgeGateway struct {
	gw      *config.Gateway
	secrets map[string]*apiv1.TLSSecret
	// listeners by name.
	listeners map[string]*config.GatewayListener
	routes    []*edgeRoute
	tlsRoutes []*edgeTLSRoute
	// Limits, defaults filled in by validation.
	maxURL, maxHeaders int
	maxBody            int64
	headerTimeout      time.Duration
	// rates are the spec's rate limits, attached by the engine with their
	// buckets (attachEdge).
	rates []*edgeRate
}

// edgeRoute is one compiled GatewayRoute.
type edgeRoute struct {
	name string
	// listeners it serves; nil: every one.
	listeners []string
	hosts     hostMatcher
	// matches: any of them; none matches every request of its hosts.
	matches []routeMatch
	svc     identity.ServiceRef
	port    int
	rewrite *config.PathRewrite
	timeout time.Duration
	maxBody int64
	cors    *edgeCORS
	// authn authenticates the route's requests (nil: no JWT);
	// unavailable says why the route answers 503 instead (a provider the
	// snapshot lacks).
	authn       *authn.Authenticator
	unavailable string
	rates       []*edgeRate
	reqEdits    *headerEdits
	respEdits   *headerEdits
}

// edgeTLSRoute is one compiled GatewayTLSRoute.
type edgeTLSRoute struct {
	name      string
	listeners []string
	hosts     hostMatcher
	svc       identity.ServiceRef
	port      int
}

// edgeRate is one rate limit of a Gateway: its configuration, key, and
// buckets (attached by the engine, kept across snapshots while the
// configuration does not change).
type edgeRate struct {
	cfg   config.GatewayRateLimit
	limit *rateLimit
}

// hostMatcher matches request hosts (lower case, no port, no trailing
// dot): exact names, and "*.suffix" patterns matching one or more labels
// under suffix. The zero hostMatcher matches any host.
type hostMatcher struct {
	exact    map[string]struct{}
	suffixes []string // ".example.com"
}

func newHostMatcher(hosts []string) hostMatcher {
	var m hostMatcher
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.ToLower(h), ".")
		if rest, ok := strings.CutPrefix(h, "*"); ok {
			m.suffixes = append(m.suffixes, rest)
			continue
		}
		if m.exact == nil {
			m.exact = map[string]struct{}{}
		}
		m.exact[h] = struct{}{}
	}
	return m
}

// any reports whether the matcher takes every host.
func (m *hostMatcher) any() bool { return m.exact == nil && m.suffixes == nil }

// match reports whether host is one of the matcher's.
func (m *hostMatcher) match(host string) bool {
	if m.any() {
		return true
	}
	if _, ok := m.exact[host]; ok {
		return true
	}
	for _, s := range m.suffixes {
		if len(host) > len(s) && strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// servesListener reports whether a route listing listeners (nil: every
// one) serves the listener named name.
func servesListener(listeners []string, name string) bool {
	return listeners == nil || slices.Contains(listeners, name)
}

// edgeCORS is a compiled CORSPolicy.
type edgeCORS struct {
	anyOrigin   bool
	origins     map[string]struct{}
	methods     []string
	headers     map[string]struct{} // lower case
	allowMethod string              // joined, for the preflight answer
	allowHeader string
	expose      string
	maxAge      string // seconds
	credentials bool
}

// compileCORS compiles a validated CORSPolicy.
func compileCORS(c *config.CORSPolicy) (*edgeCORS, error) {
	if c == nil {
		return nil, nil
	}
	out := &edgeCORS{origins: map[string]struct{}{}, headers: map[string]struct{}{}, credentials: c.AllowCredentials}
	for _, o := range c.AllowOrigins {
		if o == "*" {
			out.anyOrigin = true
			continue
		}
		out.origins[o] = struct{}{}
	}
	out.methods = c.AllowMethods
	if len(out.methods) == 0 {
		out.methods = config.DefaultCORSMethods()
	}
	out.allowMethod = strings.Join(out.methods, ", ")
	for _, h := range c.AllowHeaders {
		out.headers[strings.ToLower(h)] = struct{}{}
	}
	out.allowHeader = strings.Join(c.AllowHeaders, ", ")
	out.expose = strings.Join(c.ExposeHeaders, ", ")
	maxAge := c.MaxAge
	if maxAge == "" {
		maxAge = config.DefaultCORSMaxAge
	}
	d, err := time.ParseDuration(maxAge)
	if err != nil {
		return nil, fmt.Errorf("maxAge: %w", err)
	}
	out.maxAge = fmt.Sprint(int64(d / time.Second))
	return out, nil
}

// compileGateway compiles the gateway section of a snapshot for the proxy
// of svc: the Gateway (decoded and validated again), its routes, and the
// JWT providers they name. Its errors name the field.
func compileGateway(g *apiv1.GatewayConfig, svc identity.ServiceRef, c clock.Clock) (*edgeGateway, error) {
	o, err := config.DecodeObject(g.GetResource())
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	gw, ok := o.(*config.Gateway)
	if !ok {
		return nil, fmt.Errorf("resource: kind %s is not a Gateway", o.GetTypeMeta().Kind)
	}
	if ref := config.Ref(gw); ref != svc.String() {
		return nil, fmt.Errorf("resource: Gateway %s is not this gateway's (%s)", ref, svc)
	}
	eg := &edgeGateway{
		gw:        gw,
		secrets:   make(map[string]*apiv1.TLSSecret, len(g.GetSecrets())),
		listeners: make(map[string]*config.GatewayListener, len(gw.Spec.Listeners)),
	}
	for i, s := range g.GetSecrets() {
		if s.GetName() == "" {
			return nil, fmt.Errorf("secrets[%d].name: required", i)
		}
		eg.secrets[s.GetName()] = s
	}
	for i := range gw.Spec.Listeners {
		l := &gw.Spec.Listeners[i]
		eg.listeners[l.Name] = l
	}
	lim := gw.Spec.Limits
	if lim == nil {
		lim = &config.GatewayLimits{}
	}
	eg.maxURL = cmp.Or(lim.MaxURLLength, config.DefaultGatewayMaxURLLength)
	eg.maxHeaders = cmp.Or(lim.MaxRequestHeaders, config.DefaultGatewayMaxHeaders)
	eg.maxBody = cmp.Or(lim.MaxRequestBodyBytes, config.DefaultGatewayMaxBodyBytes)
	if eg.headerTimeout, err = time.ParseDuration(cmp.Or(lim.RequestHeaderTimeout, config.DefaultGatewayHeaderTimeout)); err != nil {
		return nil, fmt.Errorf("spec.limits.requestHeaderTimeout: %w", err)
	}
	for _, rl := range gw.Spec.RateLimits {
		eg.rates = append(eg.rates, &edgeRate{cfg: rl})
	}

	// The JWT providers the routes may name, by "namespace/name".
	providers := make(map[string]authn.Provider, len(g.GetJwtProviders()))
	for i, p := range g.GetJwtProviders() {
		o, err := config.DecodeObject(p.GetResource())
		if err != nil {
			return nil, fmt.Errorf("jwt_providers[%d]: %w", i, err)
		}
		spec, ok := o.(*config.JWTProvider)
		if !ok {
			return nil, fmt.Errorf("jwt_providers[%d]: kind %s is not a JWTProvider", i, o.GetTypeMeta().Kind)
		}
		providers[config.Ref(spec)] = authn.Provider{Spec: spec, JWKS: p.GetJwks()}
	}
	ns := gw.Metadata.Namespace
	for i := range gw.Spec.Routes {
		in := &gw.Spec.Routes[i]
		r, err := compileEdgeRoute(in, ns, eg.maxBody, providers, c)
		if err != nil {
			return nil, fmt.Errorf("spec.routes[%d] (%s): %w", i, in.Name, err)
		}
		eg.routes = append(eg.routes, r)
	}
	for i := range gw.Spec.TLSRoutes {
		in := &gw.Spec.TLSRoutes[i]
		ref, err := identity.ParseServiceRef(in.Service, ns)
		if err != nil {
			return nil, fmt.Errorf("spec.tlsRoutes[%d].service: %w", i, err)
		}
		eg.tlsRoutes = append(eg.tlsRoutes, &edgeTLSRoute{
			name: in.Name, listeners: nilIfEmpty(in.Listeners), hosts: newHostMatcher(in.Hosts), svc: ref, port: in.Port,
		})
	}
	return eg, nil
}

// compileEdgeRoute compiles one route of a Gateway of namespace ns whose
// body limit is maxBody; providers are the snapshot's JWT providers.
func compileEdgeRoute(in *config.GatewayRoute, ns string, maxBody int64, providers map[string]authn.Provider, c clock.Clock) (*edgeRoute, error) {
	ref, err := identity.ParseServiceRef(in.Service, ns)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	r := &edgeRoute{
		name: in.Name, listeners: nilIfEmpty(in.Listeners), hosts: newHostMatcher(in.Hosts),
		svc: ref, port: in.Port, rewrite: in.Rewrite, maxBody: maxBody,
	}
	if in.MaxRequestBodyBytes > 0 {
		r.maxBody = in.MaxRequestBodyBytes
	}
	if r.timeout, err = time.ParseDuration(cmp.Or(in.Timeout, config.DefaultGatewayRouteTimeout)); err != nil {
		return nil, fmt.Errorf("timeout: %w", err)
	}
	for j := range in.Matches {
		m, err := compileRouteMatch(&in.Matches[j])
		if err != nil {
			return nil, fmt.Errorf("matches[%d]: %w", j, err)
		}
		r.matches = append(r.matches, m)
	}
	if r.cors, err = compileCORS(in.CORS); err != nil {
		return nil, fmt.Errorf("cors: %w", err)
	}
	if r.reqEdits, err = compileRouteHeaderEdits(in.RequestHeaders); err != nil {
		return nil, fmt.Errorf("requestHeaders: %w", err)
	}
	if r.respEdits, err = compileRouteHeaderEdits(in.ResponseHeaders); err != nil {
		return nil, fmt.Errorf("responseHeaders: %w", err)
	}
	for _, rl := range in.RateLimits {
		r.rates = append(r.rates, &edgeRate{cfg: rl})
	}
	if j := in.JWT; j != nil {
		required := j.Required == nil || *j.Required
		var list []authn.Provider
		for _, name := range j.Providers {
			p, ok := providers[ns+"/"+name]
			if !ok {
				p, ok = providers[config.RootNamespace+"/"+name]
			}
			if !ok {
				r.unavailable = "jwt provider " + name + " is not in the snapshot"
				break
			}
			// The route's settings replace the provider's own.
			spec := *p.Spec
			spec.Spec.Required = required
			spec.Spec.ForwardToken = j.ForwardToken
			spec.Spec.ClaimsToHeaders = slices.Clone(j.ClaimsToHeaders)
			list = append(list, authn.Provider{Spec: &spec, JWKS: p.JWKS})
		}
		if r.unavailable == "" {
			if r.authn, err = authn.New(list, c); err != nil {
				return nil, fmt.Errorf("jwt: %w", err)
			}
		}
	}
	return r, nil
}

// match returns the first route that takes a request on listener to host
// (in).
func (g *edgeGateway) match(listener, host string, in *routeInput) *edgeRoute {
	for _, r := range g.routes {
		if !servesListener(r.listeners, listener) || !r.hosts.match(host) {
			continue
		}
		if len(r.matches) == 0 {
			return r
		}
		for i := range r.matches {
			if r.matches[i].holds(in) {
				return r
			}
		}
	}
	return nil
}

// matchTLS returns the first TLS route that takes a connection on
// listener for the server name sni.
func (g *edgeGateway) matchTLS(listener, sni string) *edgeTLSRoute {
	for _, r := range g.tlsRoutes {
		if servesListener(r.listeners, listener) && r.hosts.match(sni) {
			return r
		}
	}
	return nil
}

// attachEdge gives the gateway of a freshly compiled table its rate-limit
// buckets: those of the current table whose configuration did not change
// are kept (in used, the engine's buckets by configuration, which
// e.rateMu guards). It logs the routes that answer 503 for want of a JWT
// provider, once per snapshot.
func (e *Engine) attachEdge(t *table, used map[string]*rateLimit) {
	g := t.gateway
	e.dropGatewaySeries(g)
	if g == nil {
		return
	}
	get := func(key string, rl config.GatewayRateLimit) *rateLimit {
		key = fmt.Sprintf("gateway %s %+v", key, rl)
		r := e.rates[key]
		if r == nil {
			burst := rl.Burst
			if burst <= 0 {
				burst = int(math.Ceil(rl.RequestsPerSecond))
			}
			r = &rateLimit{
				limiter: resilience.NewRateLimiter(rl.RequestsPerSecond, burst, maxRateKeys, e.dstates.clock),
				perPeer: rl.Per != config.GatewayRatePerRoute,
			}
		}
		used[key] = r
		return r
	}
	for i, r := range g.rates {
		r.limit = get(fmt.Sprintf("spec %d", i), r.cfg)
	}
	for _, rt := range g.routes {
		for i, r := range rt.rates {
			r.limit = get(fmt.Sprintf("route %s %d", rt.name, i), r.cfg)
		}
		if rt.unavailable != "" {
			e.logger.Error("gateway route unavailable", telemetry.KeyRoute, rt.name, telemetry.KeyDetail, rt.unavailable, telemetry.KeyVersion, t.version)
		}
	}
}

// dropGatewaySeries deletes the bulwark_gateway_requests_total series of
// the routes of the current table that g (the next one's Gateway, nil
// for none) lacks, so that the route label stays bounded by the Gateway.
func (e *Engine) dropGatewaySeries(g *edgeGateway) {
	prev := e.table.Load()
	if prev == nil || prev.gateway == nil {
		return
	}
	names := map[string]bool{}
	if g != nil {
		for _, r := range g.routes {
			names[r.name] = true
		}
		for _, r := range g.tlsRoutes {
			names[r.name] = true
		}
	}
	var gone []string
	for _, r := range prev.gateway.routes {
		gone = append(gone, r.name)
	}
	for _, r := range prev.gateway.tlsRoutes {
		gone = append(gone, r.name)
	}
	for _, name := range gone {
		if !names[name] {
			e.metrics.gateway.DeletePartialMatch(prometheus.Labels{"route": name})
		}
	}
}

// nilIfEmpty returns s, nil when it is empty.
func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
