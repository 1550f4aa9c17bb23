package config

import (
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

// Bounds of a Gateway.
const (
	// MaxGatewayListeners bounds spec.listeners.
	MaxGatewayListeners = 16
	// MaxGatewayCertificates bounds the certificates of one listener.
	MaxGatewayCertificates = 16
	// MaxGatewayRoutes bounds spec.routes and spec.tlsRoutes (each).
	MaxGatewayRoutes = 256
	// MaxGatewayRateLimits bounds each list of rate limits.
	MaxGatewayRateLimits = 16
	// MaxGatewayBodyBytes bounds every request body limit (1 GiB).
	MaxGatewayBodyBytes = 1 << 30
	// MaxGatewayHeaderBytes, MaxGatewayHeaders and MaxGatewayURLLength
	// bound GatewayLimits; MinGatewayHeaderBytes is the smallest header
	// limit (a request line and a Host).
	MaxGatewayHeaderBytes = 1 << 20
	MinGatewayHeaderBytes = 1 << 10
	MaxGatewayHeaders     = 1000
	MaxGatewayURLLength   = 64 << 10
	// MaxGatewayStreams bounds GatewayLimits.MaxConcurrentStreams.
	MaxGatewayStreams = 1000
	// MaxGatewayConnectionsPerIP bounds GatewayLimits.MaxConnectionsPerIP.
	MaxGatewayConnectionsPerIP = 100_000
	// MinGatewayTimeout is the shortest timeout of a Gateway; MaxTimeout
	// the longest.
	MinGatewayTimeout = time.Millisecond
	// MaxCORSMaxAge bounds CORSPolicy.MaxAge (browsers cap it lower).
	MaxCORSMaxAge = 24 * time.Hour
	// MinHSTSMaxAge and MaxHSTSMaxAge bound HSTS.MaxAge; a preloaded
	// policy needs at least PreloadHSTSMaxAge (hstspreload.org).
	MinHSTSMaxAge     = time.Second
	MaxHSTSMaxAge     = 10 * 8760 * time.Hour
	PreloadHSTSMaxAge = 8760 * time.Hour
)

// DefaultCORSMethods are the methods a preflight may ask for when a
// CORSPolicy names none.
func DefaultCORSMethods() []string { return []string{http.MethodGet, http.MethodHead, http.MethodPost} }

// Validate implements Object. It fills in the defaults written on the
// fields (metadata.namespace; every limit; tls.minVersion "1.2"; hsts
// maxAge "8760h"; redirectToHTTPS true and its httpsPort on HTTP
// listeners; route timeout "30s"; cors allowMethods and maxAge "10m";
// jwt.required true; rate limits' burst and per "client-ip") and refuses
// what the gateway could not serve as written. Every error names its field:
//
//   - spec.listeners: 1 to 16; names of lowercase letters, digits and '-'
//     (at most 63), unique; ports 1 to 65535, unique; protocol HTTPS, HTTP
//     or TLS; tls required with HTTPS and refused otherwise;
//     redirectToHTTPS and httpsPort only on HTTP.
//   - tls: 1 to 16 certificates, each exactly one of secret (a name) and
//     certFile with keyFile (absolute, clean paths), none twice;
//     minVersion "1.2" or "1.3"; hsts.maxAge 1s to 87600h (8760h or more
//     with preload, which also needs includeSubdomains).
//   - spec.routes: at most 256; names unique; listeners that exist and
//     serve routes (HTTPS, or HTTP without redirect); hosts lower-case DNS
//     names, "*.example.com" or IPv4 addresses, without port, unique;
//     matches as a Route's, without sourceServices; service "name" or
//     "namespace/name", not the Gateway's own; port 0 to 65535; rewrite exactly one of its
//     fields, normalized paths, stripPrefix and replacePrefix only when
//     every match has a path prefix (that starts with stripPrefix at a
//     segment boundary); timeout 1ms to 1h; maxRequestBodyBytes 0 to
//     1 GiB; cors origins "scheme://host[:port]" (http or https) or "*"
//     alone and not with allowCredentials, upper-case method tokens,
//     header name tokens, maxAge 0 to 24h; jwt providers (names) at least
//     one, claimsToHeaders as a JWTProvider's; header edits as a Route's.
//     A route that takes exactly the requests of an earlier one (same
//     listeners, hosts and matches) is refused: it would never be reached.
//   - spec.tlsRoutes: at most 256; names unique; TLS listeners; hosts (at
//     least one) DNS names or "*.example.com", no IP address; service and
//     port as a route's.
//   - rate limits: at most 16 per list; requestsPerSecond above 0 and at
//     most 1,000,000; burst 0 (default: requestsPerSecond rounded up) to
//     1,000,000; per client-ip, subject or route. A "subject" limit keys
//     requests without a token (a route without jwt, or optional jwt) by
//     client IP.
//   - spec.limits: maxRequestHeaderBytes 1 KiB to 1 MiB, maxRequestHeaders
//     1 to 1000, maxURLLength 1 to 64 KiB, maxRequestBodyBytes 1 to 1 GiB,
//     timeouts 1ms to 1h, maxConcurrentStreams 1 to 1000,
//     maxConnectionsPerIP 1 to 100,000.
func (g *Gateway) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&g.Metadata, &errs)
	s := &g.Spec
	listeners := validateGatewayListeners(s.Listeners, &errs)
	self := identity.ServiceRef{Namespace: g.Metadata.Namespace, Name: g.Metadata.Name}
	validateGatewayRoutes(self, s.Routes, listeners, &errs)
	validateGatewayTLSRoutes(self, s.TLSRoutes, listeners, &errs)
	if s.Limits == nil {
		s.Limits = &GatewayLimits{}
	}
	validateGatewayLimits("spec.limits", s.Limits, &errs)
	validateGatewayRateLimits("spec.rateLimits", s.RateLimits, &errs)
	return errs
}

// gatewayListeners indexes the valid listeners of a Gateway by name.
type gatewayListeners map[string]*GatewayListener

// servesRoutes reports whether l serves spec.routes: HTTPS, or HTTP that
// does not redirect.
func servesRoutes(l *GatewayListener) bool {
	switch l.Protocol {
	case ListenerHTTPS:
		return true
	case ListenerHTTP:
		return l.RedirectToHTTPS != nil && !*l.RedirectToHTTPS
	}
	return false
}

// validateGatewayListeners checks spec.listeners, fills in their defaults
// and returns the listeners by name.
func validateGatewayListeners(ls []GatewayListener, errs *FieldErrors) gatewayListeners {
	switch {
	case len(ls) == 0:
		errs.add("spec.listeners", "at least one listener is required")
	case len(ls) > MaxGatewayListeners:
		errs.add("spec.listeners", "%d listeners: at most %d", len(ls), MaxGatewayListeners)
	}
	byName := make(gatewayListeners, len(ls))
	names := make(map[string]int, len(ls))
	ports := make(map[int]int, len(ls))
	httpsPort := 0
	for i := range ls {
		if l := &ls[i]; l.Protocol == ListenerHTTPS && l.Port >= 1 && l.Port <= 65535 {
			httpsPort = l.Port
			break
		}
	}
	for i := range ls {
		path := fmt.Sprintf("spec.listeners[%d]", i)
		l := &ls[i]
		if checkUniqueGatewayName(names, "spec.listeners", i, l.Name, "listener", errs) {
			byName[l.Name] = l
		}
		switch {
		case l.Port == 0:
			errs.add(path+".port", "required: 1 to 65535")
		case l.Port < 1 || l.Port > 65535:
			errs.add(path+".port", "%d is not a port: must be 1 to 65535", l.Port)
		default:
			if j, dup := ports[l.Port]; dup {
				errs.add(path+".port", "%d is also the port of spec.listeners[%d]", l.Port, j)
			}
			ports[l.Port] = i
		}
		switch l.Protocol {
		case ListenerHTTPS, ListenerHTTP, ListenerTLS:
		case "":
			errs.add(path+".protocol", "required: one of %s, %s, %s", ListenerHTTPS, ListenerHTTP, ListenerTLS)
		default:
			errs.add(path+".protocol", "unsupported value %q: must be one of %s, %s, %s (upper case)", l.Protocol, ListenerHTTPS, ListenerHTTP, ListenerTLS)
		}
		switch {
		case l.Protocol == ListenerHTTPS && l.TLS == nil:
			errs.add(path+".tls", "required with protocol %s: give the certificates", ListenerHTTPS)
		case l.Protocol == ListenerHTTPS:
			validateGatewayTLS(path+".tls", l.TLS, errs)
		case l.TLS != nil && l.Protocol == ListenerTLS:
			errs.add(path+".tls", "only allowed with protocol %s: a %s listener passes TLS through to the service, which terminates it", ListenerHTTPS, ListenerTLS)
		case l.TLS != nil:
			errs.add(path+".tls", "only allowed with protocol %s", ListenerHTTPS)
		}
		if l.Protocol != ListenerHTTP {
			if l.RedirectToHTTPS != nil {
				errs.add(path+".redirectToHTTPS", "only allowed with protocol %s", ListenerHTTP)
			}
			if l.HTTPSPort != 0 {
				errs.add(path+".httpsPort", "only allowed with protocol %s", ListenerHTTP)
			}
			continue
		}
		if l.RedirectToHTTPS == nil {
			l.RedirectToHTTPS = new(true)
		}
		switch {
		case !*l.RedirectToHTTPS && l.HTTPSPort != 0:
			errs.add(path+".httpsPort", "only allowed with redirectToHTTPS: true")
		case !*l.RedirectToHTTPS:
		case l.HTTPSPort == 0 && httpsPort != 0:
			l.HTTPSPort = httpsPort
		case l.HTTPSPort == 0:
			l.HTTPSPort = 443
		case l.HTTPSPort < 1 || l.HTTPSPort > 65535:
			errs.add(path+".httpsPort", "%d is not a port: must be 1 to 65535", l.HTTPSPort)
		}
	}
	return byName
}

// validateGatewayTLS checks the TLS of an HTTPS listener at path and
// fills in its defaults.
func validateGatewayTLS(path string, t *GatewayTLS, errs *FieldErrors) {
	certs := t.Certificates
	switch {
	case len(t.Certificates) == 0:
		errs.add(path+".certificates", "at least one certificate is required")
	case len(t.Certificates) > MaxGatewayCertificates:
		errs.add(path+".certificates", "%d certificates: at most %d", len(t.Certificates), MaxGatewayCertificates)
		certs = nil
	}
	seen := make(map[string]int, len(certs))
	for i, c := range certs {
		p := fmt.Sprintf("%s.certificates[%d]", path, i)
		var key string
		switch {
		case c.Secret != "" && (c.CertFile != "" || c.KeyFile != ""):
			errs.add(p, "exactly one of secret and certFile with keyFile is required: not both")
			continue
		case c.Secret != "":
			if err := identity.ValidateName(c.Secret); err != nil {
				errs.add(p+".secret", "%q: a Secret name %v", c.Secret, err)
				continue
			}
			key = "secret " + c.Secret
		case c.CertFile == "" && c.KeyFile == "":
			errs.add(p, "exactly one of secret and certFile with keyFile is required")
			continue
		default:
			ok := checkGatewayFile(p+".certFile", c.CertFile, errs)
			ok = checkGatewayFile(p+".keyFile", c.KeyFile, errs) && ok
			if !ok {
				continue
			}
			if c.CertFile == c.KeyFile {
				errs.add(p+".keyFile", "%q is also certFile: give the certificate and the key in two files", c.KeyFile)
				continue
			}
			key = "file " + c.CertFile
		}
		if j, dup := seen[key]; dup {
			errs.add(p, "the same certificate as %s.certificates[%d]", path, j)
		}
		seen[key] = i
	}
	switch t.MinVersion {
	case "":
		t.MinVersion = TLSVersion12
	case TLSVersion12, TLSVersion13:
	default:
		errs.add(path+".minVersion", "unsupported value %q: must be %q or %q", t.MinVersion, TLSVersion12, TLSVersion13)
	}
	if h := t.HSTS; h != nil {
		if h.MaxAge == "" {
			h.MaxAge = DefaultHSTSMaxAge
		}
		d, ok := checkDuration(path+".hsts.maxAge", h.MaxAge, MinHSTSMaxAge, MaxHSTSMaxAge, errs)
		if h.Preload {
			if !h.IncludeSubdomains {
				errs.add(path+".hsts.preload", "requires includeSubdomains: true (the preload list refuses a policy without it)")
			}
			if ok && d < PreloadHSTSMaxAge {
				errs.add(path+".hsts.maxAge", "%s is below %s, the minimum of a preloaded policy", d, PreloadHSTSMaxAge)
			}
		}
	}
}

// checkGatewayFile checks the path of a certificate or key file.
func checkGatewayFile(path, f string, errs *FieldErrors) bool {
	switch {
	case f == "":
		errs.add(path, "required: certFile and keyFile go together")
	case strings.IndexFunc(f, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0:
		errs.add(path, "a file path must not contain control characters")
	case !filepath.IsAbs(f):
		errs.add(path, "%q is not an absolute path: the gateway may run in another directory", f)
	case filepath.Clean(f) != f:
		errs.add(path, "%q is not a clean path: use %q", f, filepath.Clean(f))
	default:
		return true
	}
	return false
}

// checkGatewayName checks the name of a listener or a route at path.
func checkGatewayName(path, name string, errs *FieldErrors) bool {
	if name == "" {
		errs.add(path, "required")
		return false
	}
	if err := identity.ValidateName(name); err != nil {
		errs.add(path, "%q: a name (lowercase letters, digits and '-') %v", name, err)
		return false
	}
	return true
}

// validateGatewayRoutes checks spec.routes and fills in their defaults.
func validateGatewayRoutes(self identity.ServiceRef, routes []GatewayRoute, listeners gatewayListeners, errs *FieldErrors) {
	if len(routes) > MaxGatewayRoutes {
		errs.add("spec.routes", "%d routes: at most %d", len(routes), MaxGatewayRoutes)
		return
	}
	if len(routes) > 0 && len(listeners) > 0 && !listeners.any(servesRoutes) {
		errs.add("spec.routes", "no listener serves routes: add an %s listener (or an %s one with redirectToHTTPS: false)", ListenerHTTPS, ListenerHTTP)
	}
	names := make(map[string]int, len(routes))
	takes := make(map[string]int, len(routes))
	for i := range routes {
		path := fmt.Sprintf("spec.routes[%d]", i)
		r := &routes[i]
		checkUniqueGatewayName(names, "spec.routes", i, r.Name, "route", errs)
		ok := checkRouteListeners(path+".listeners", r.Listeners, listeners, false, errs)
		ok = checkGatewayHosts(path+".hosts", r.Hosts, false, errs) && ok
		ok = validateGatewayMatches(path+".matches", r.Matches, errs) && ok
		if ok {
			key := routeKey(r.Listeners, r.Hosts, r.Matches)
			if j, dup := takes[key]; dup {
				errs.add(path, "takes exactly the requests of spec.routes[%d] (same listeners, hosts and matches), which comes first: it would never be reached", j)
			} else {
				takes[key] = i
			}
		}
		checkGatewayService(path+".service", r.Service, self, errs)
		if r.Port < 0 || r.Port > 65535 {
			errs.add(path+".port", "%d is not a port: must be 0 (none) to 65535", r.Port)
		}
		if r.Rewrite != nil {
			validateRewrite(path+".rewrite", r.Rewrite, r.Matches, errs)
		}
		if r.Timeout == "" {
			r.Timeout = DefaultGatewayRouteTimeout
		} else {
			checkDuration(path+".timeout", r.Timeout, MinGatewayTimeout, MaxTimeout, errs)
		}
		if r.MaxRequestBodyBytes < 0 || r.MaxRequestBodyBytes > MaxGatewayBodyBytes {
			errs.add(path+".maxRequestBodyBytes", "%d is out of range: must be 0 (the Gateway's limit) to %d (1 GiB)", r.MaxRequestBodyBytes, MaxGatewayBodyBytes)
		}
		if r.CORS != nil {
			validateCORS(path+".cors", r.CORS, errs)
		}
		if r.JWT != nil {
			validateGatewayJWT(path+".jwt", r.JWT, errs)
		}
		validateGatewayRateLimits(path+".rateLimits", r.RateLimits, errs)
		if r.RequestHeaders != nil {
			validateHeaderEdits(path+".requestHeaders", r.RequestHeaders, errs)
		}
		if r.ResponseHeaders != nil {
			validateHeaderEdits(path+".responseHeaders", r.ResponseHeaders, errs)
		}
	}
}

// any reports whether one of the listeners satisfies f.
func (ls gatewayListeners) any(f func(*GatewayListener) bool) bool {
	for _, l := range ls {
		if f(l) {
			return true
		}
	}
	return false
}

// routeKey is what a route takes, for spotting a route that repeats an
// earlier one: its listeners and hosts as sets, and its matches.
func routeKey(listeners, hosts []string, matches []RouteMatch) string {
	ls, hs := slices.Sorted(slices.Values(listeners)), slices.Sorted(slices.Values(hosts))
	b, err := json.Marshal(struct {
		L, H []string
		M    []RouteMatch
	}{ls, hs, matches}, json.Deterministic(true))
	if err != nil {
		return "" // unreachable: plain strings and structs
	}
	return string(b)
}

// checkRouteListeners checks the listeners a route names: they exist and
// have the protocol of the route (TLS for a TLS route, tls true). It
// reports whether they are all valid.
func checkRouteListeners(path string, names []string, listeners gatewayListeners, tls bool, errs *FieldErrors) bool {
	ok := true
	seen := make(map[string]int, len(names))
	for i, name := range names {
		p := fmt.Sprintf("%s[%d]", path, i)
		l, exists := listeners[name]
		switch {
		case name == "":
			errs.add(p, "must not be empty")
		case !exists:
			errs.add(p, "%q is not the name of a listener of spec.listeners", name)
		case tls && l.Protocol != ListenerTLS:
			errs.add(p, "%q is an %s listener: a TLS route takes connections of %s listeners only", name, l.Protocol, ListenerTLS)
		case !tls && l.Protocol == ListenerTLS:
			errs.add(p, "%q is a %s (passthrough) listener: route its connections with spec.tlsRoutes", name, ListenerTLS)
		case !tls && !servesRoutes(l):
			errs.add(p, "%q redirects every request to HTTPS: set its redirectToHTTPS: false to serve routes in plain HTTP", name)
		default:
			if j, dup := seen[name]; dup {
				errs.add(p, "%q is also %s[%d]", name, path, j)
			} else {
				seen[name] = i
				continue
			}
		}
		ok = false
	}
	return ok
}

// checkGatewayHosts checks the hosts of a route (sni false) or a TLS route
// (sni true: server names, no IP address) and reports whether they are all
// valid.
func checkGatewayHosts(path string, hosts []string, sni bool, errs *FieldErrors) bool {
	ok := true
	seen := make(map[string]int, len(hosts))
	for i, h := range hosts {
		p := fmt.Sprintf("%s[%d]", path, i)
		if msg := checkGatewayHost(h, sni); msg != "" {
			errs.add(p, "%s", msg)
			ok = false
			continue
		}
		if j, dup := seen[h]; dup {
			errs.add(p, "%q is also %s[%d]", h, path, j)
			ok = false
		}
		seen[h] = i
	}
	return ok
}

// checkGatewayHost checks one host of a route: a lower-case DNS name,
// "*." and such a name, or (not for SNI) an IPv4 address.
func checkGatewayHost(s string, sni bool) string {
	if s == "" {
		return "must not be empty"
	}
	if s == "*" {
		return `"*" is not a host: omit hosts to take every host`
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		switch {
		case sni:
			return fmt.Sprintf("%q is an IP address: a client sends no server name (SNI) for an address, so no TLS route can take it", s)
		case !a.Is4():
			return fmt.Sprintf("%q: an IPv6 address is not supported as a host: use a DNS name", s)
		case a.String() != s:
			return fmt.Sprintf("%q: write the address in its canonical form %q", s, a.String())
		}
		return ""
	}
	if h, port, err := splitHostPort(s); err == nil {
		return fmt.Sprintf("%q: a host has no port (hosts are matched without it): use %q; the listener gives port %s", s, h, port)
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

// validateGatewayMatches checks the matches of a route and reports whether
// they are all valid.
func validateGatewayMatches(path string, ms []RouteMatch, errs *FieldErrors) bool {
	n := len(*errs)
	for i := range ms {
		p := fmt.Sprintf("%s[%d]", path, i)
		m := ms[i]
		if len(m.SourceServices) > 0 {
			errs.add(p+".sourceServices", "not allowed in a Gateway: a client outside the mesh has no service; authorize it with an AuthorizationPolicy selecting the gateway (from.ipBlocks, from.requestPrincipals)")
			m.SourceServices = nil
		}
		validateRouteMatch(p, &m, errs)
	}
	return len(*errs) == n
}

// checkGatewayService checks the service of a route at path: "name" in the
// Gateway's namespace, or "namespace/name"; not the gateway's own service
// self, which has no inbound listener.
func checkGatewayService(path, s string, self identity.ServiceRef, errs *FieldErrors) {
	if s == "" {
		errs.add(path, "required: a mesh service, \"name\" or \"namespace/name\"")
		return
	}
	if strings.Count(s, "/") > 1 {
		errs.add(path, "%q must be \"name\" or \"namespace/name\"", s)
		return
	}
	ref, err := identity.ParseServiceRef(s, self.Namespace)
	switch {
	case err != nil:
		errs.add(path, "%v", err)
	case ref == self:
		errs.add(path, "%q is the gateway's own service: the gateway serves no mesh traffic, name the service the requests go to", s)
	}
}

// validateRewrite checks the rewrite of a route whose matches are ms.
func validateRewrite(path string, rw *PathRewrite, ms []RouteMatch, errs *FieldErrors) {
	n := 0
	for _, v := range []string{rw.StripPrefix, rw.ReplacePrefix, rw.ReplaceFullPath} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		errs.add(path, "exactly one of stripPrefix, replacePrefix and replaceFullPath is required")
		return
	}
	switch {
	case rw.StripPrefix != "":
		p := path + ".stripPrefix"
		if !checkRewritePath(p, rw.StripPrefix, errs) {
			return
		}
		strip := rw.StripPrefix
		if strip == "/" || strings.HasSuffix(strip, "/") {
			errs.add(p, "%q: write the prefix without a trailing '/' (it is removed at a segment boundary: \"/api\" sends \"/api/orders\" as \"/orders\")", strip)
			return
		}
		if len(ms) == 0 {
			errs.add(p, "requires matches with a path prefix that starts with %q: a request outside it would have nothing to strip", strip)
			return
		}
		for i, m := range ms {
			mp := fmt.Sprintf("%s.matches[%d].path", strings.TrimSuffix(path, ".rewrite"), i)
			switch {
			case m.Path == nil || m.Path.Prefix == "":
				errs.add(mp, "stripPrefix %q requires every match to have a path prefix that starts with it", strip)
			case m.Path.Prefix != strip && !strings.HasPrefix(m.Path.Prefix, strip+"/"):
				errs.add(mp+".prefix", "%q does not start with stripPrefix %q at a segment boundary: a request it takes would have nothing to strip", m.Path.Prefix, strip)
			}
		}
	case rw.ReplacePrefix != "":
		if !checkRewritePath(path+".replacePrefix", rw.ReplacePrefix, errs) {
			return
		}
		if len(ms) == 0 {
			errs.add(path+".replacePrefix", "requires matches with a path prefix: it replaces the prefix they matched")
			return
		}
		for i, m := range ms {
			if m.Path == nil || m.Path.Prefix == "" {
				errs.add(fmt.Sprintf("%s.matches[%d].path", strings.TrimSuffix(path, ".rewrite"), i),
					"replacePrefix requires every match to be a path prefix match: it replaces the prefix the match matched")
			}
		}
	default:
		checkRewritePath(path+".replaceFullPath", rw.ReplaceFullPath, errs)
	}
}

// checkRewritePath checks a path of a rewrite: it starts with '/' and is
// normalized. It reports whether it is valid.
func checkRewritePath(path, s string, errs *FieldErrors) bool {
	if s[0] != '/' {
		errs.add(path, "%q must start with '/'", s)
		return false
	}
	norm, err := pathnorm.Normalize(s)
	if err != nil {
		errs.add(path, "%q is not a path the mesh forwards: %v", s, err)
		return false
	}
	if norm != s {
		errs.add(path, "%q is not normalized: use %q", s, norm)
		return false
	}
	return true
}

// validateCORS checks a CORS policy at path and fills in its defaults.
func validateCORS(path string, c *CORSPolicy, errs *FieldErrors) {
	if len(c.AllowOrigins) == 0 {
		errs.add(path+".allowOrigins", `at least one origin is required ("https://app.example.com", or "*" alone)`)
	}
	seen := make(map[string]int, len(c.AllowOrigins))
	for i, o := range c.AllowOrigins {
		p := fmt.Sprintf("%s.allowOrigins[%d]", path, i)
		switch {
		case o == "*" && len(c.AllowOrigins) > 1:
			errs.add(p, `"*" must be the only origin: it allows every origin`)
		case o == "*" && c.AllowCredentials:
			errs.add(p, `"*" is not allowed with allowCredentials: true (browsers refuse it, and it would let every site read answers with the user's cookies): list the origins`)
		case o == "*":
		default:
			if msg := checkOrigin(o); msg != "" {
				errs.add(p, "%s", msg)
				continue
			}
			if j, dup := seen[o]; dup {
				errs.add(p, "%q is also %s.allowOrigins[%d]", o, path, j)
			}
			seen[o] = i
		}
	}
	if len(c.AllowMethods) == 0 {
		c.AllowMethods = DefaultCORSMethods()
	}
	for i, m := range c.AllowMethods {
		p := fmt.Sprintf("%s.allowMethods[%d]", path, i)
		switch {
		case m == "":
			errs.add(p, "must not be empty")
		case m == "*":
			errs.add(p, `"*" is not supported: list the methods`)
		default:
			if msg := checkMethod(m); msg != "" {
				errs.add(p, "%s", msg)
			}
		}
	}
	jwtCheckUnique(path+".allowMethods", c.AllowMethods, errs)
	checkHeaderNames(path+".allowHeaders", c.AllowHeaders, errs)
	checkHeaderNames(path+".exposeHeaders", c.ExposeHeaders, errs)
	if c.MaxAge == "" {
		c.MaxAge = DefaultCORSMaxAge
	} else {
		checkDuration(path+".maxAge", c.MaxAge, 0, MaxCORSMaxAge, errs)
	}
}

// checkHeaderNames checks a list of header names: tokens, none twice
// (case-insensitively), "*" refused.
func checkHeaderNames(path string, names []string, errs *FieldErrors) {
	seen := make(map[string]int, len(names))
	for i, h := range names {
		p := fmt.Sprintf("%s[%d]", path, i)
		if h == "*" {
			errs.add(p, `"*" is not supported: list the header names`)
			continue
		}
		if msg := jwtCheckHeaderName(h); msg != "" {
			if h == "" {
				msg = "must not be empty"
			}
			errs.add(p, "%s", msg)
			continue
		}
		c := http.CanonicalHeaderKey(h)
		if j, dup := seen[c]; dup {
			errs.add(p, "%q is also %s[%d] (header names are case-insensitive)", h, path, j)
		}
		seen[c] = i
	}
}

// checkOrigin checks a CORS origin: "scheme://host[:port]" as a browser
// sends it in Origin (lower case, no default port, no path).
func checkOrigin(s string) string {
	const form = `an origin is "scheme://host[:port]", such as "https://app.example.com"`
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Opaque != "" || u.Host == "":
		return fmt.Sprintf("%q is not an origin: %s", s, form)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("%q: the scheme must be http or https (%s)", s, form)
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return fmt.Sprintf("%q has more than an origin (user info, path, query or fragment): %s", s, form)
	case strings.ToLower(s) != s:
		return fmt.Sprintf("%q must be lower case (browsers send origins in lower case): use %q", s, strings.ToLower(s))
	}
	host, port := u.Hostname(), u.Port()
	if port != "" || strings.HasSuffix(u.Host, ":") {
		n, err := strconv.Atoi(port)
		switch {
		case err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port:
			return fmt.Sprintf("%q: the port must be 1 to 65535", s)
		case u.Scheme == "https" && n == 443, u.Scheme == "http" && n == 80:
			return fmt.Sprintf("%q: write it without the default port %d (browsers leave it out of Origin)", s, n)
		}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return fmt.Sprintf("%q: an IPv6 zone is not allowed", s)
		}
		return ""
	}
	if msg := checkDNSName(host); msg != "" {
		return fmt.Sprintf("%q: host %s", s, msg)
	}
	return ""
}

// validateGatewayJWT checks the jwt of a route and fills in its defaults.
func validateGatewayJWT(path string, j *GatewayJWT, errs *FieldErrors) {
	if len(j.Providers) == 0 {
		errs.add(path+".providers", "at least one JWTProvider name is required")
	}
	for i, name := range j.Providers {
		if err := identity.ValidateName(name); err != nil {
			errs.add(fmt.Sprintf("%s.providers[%d]", path, i), "%q: a JWTProvider name %v", name, err)
		}
	}
	jwtCheckUnique(path+".providers", j.Providers, errs)
	if j.Required == nil {
		j.Required = new(true)
	}
	headers := make(map[string]int, len(j.ClaimsToHeaders))
	for i, c := range j.ClaimsToHeaders {
		p := fmt.Sprintf("%s.claimsToHeaders[%d]", path, i)
		if c.Claim == "" {
			errs.add(p+".claim", "required")
		}
		msg := jwtCheckHeaderName(c.Header)
		if msg == "" {
			msg = jwtCheckClaimHeader(c.Header)
		}
		if msg != "" {
			errs.add(p+".header", "%s", msg)
			continue
		}
		canon := http.CanonicalHeaderKey(c.Header)
		if k, dup := headers[canon]; dup {
			errs.add(p+".header", "%q is also set by %s.claimsToHeaders[%d]", c.Header, path, k)
		}
		headers[canon] = i
	}
}

// validateGatewayRateLimits checks a list of rate limits at path and
// fills in their defaults.
func validateGatewayRateLimits(path string, rls []GatewayRateLimit, errs *FieldErrors) {
	if len(rls) > MaxGatewayRateLimits {
		errs.add(path, "%d rate limits: at most %d", len(rls), MaxGatewayRateLimits)
		return
	}
	for i := range rls {
		p := fmt.Sprintf("%s[%d]", path, i)
		r := &rls[i]
		rps := r.RequestsPerSecond
		rpsOK := false
		switch {
		case math.IsNaN(rps) || math.IsInf(rps, 0):
			errs.add(p+".requestsPerSecond", "must be a finite number")
		case rps == 0:
			errs.add(p+".requestsPerSecond", "required: must be above 0")
		case rps < 0 || rps > MaxRateLimit:
			errs.add(p+".requestsPerSecond", "%v is out of range: must be above 0 and at most %d", rps, MaxRateLimit)
		case rps < MinRateLimit:
			errs.add(p+".requestsPerSecond", "%v is out of range: must be at least 1/86400 (one request a day)", rps)
		default:
			rpsOK = true
		}
		switch {
		case r.Burst == 0 && rpsOK:
			r.Burst = int(math.Ceil(rps))
		case r.Burst < 0 || r.Burst > MaxRateLimit:
			errs.add(p+".burst", "%d is out of range: must be 0 (requestsPerSecond rounded up) to %d", r.Burst, MaxRateLimit)
		}
		switch r.Per {
		case "":
			r.Per = GatewayRatePerClientIP
		case GatewayRatePerClientIP, GatewayRatePerSubject, GatewayRatePerRoute:
		default:
			errs.add(p+".per", "unsupported value %q: must be %s (one bucket per client IP address), %s (per JWT principal; the client IP without a token) or %s (one bucket for all)",
				r.Per, GatewayRatePerClientIP, GatewayRatePerSubject, GatewayRatePerRoute)
		}
	}
}

// validateGatewayLimits checks the limits at path and fills in their
// defaults.
func validateGatewayLimits(path string, l *GatewayLimits, errs *FieldErrors) {
	defInt := func(v *int, def int, field string, lo, hi int) {
		if *v == 0 {
			*v = def
			return
		}
		checkRange(path+"."+field, *v, lo, hi, errs)
	}
	defInt(&l.MaxRequestHeaderBytes, DefaultGatewayMaxHeaderBytes, "maxRequestHeaderBytes", MinGatewayHeaderBytes, MaxGatewayHeaderBytes)
	defInt(&l.MaxRequestHeaders, DefaultGatewayMaxHeaders, "maxRequestHeaders", 1, MaxGatewayHeaders)
	defInt(&l.MaxURLLength, DefaultGatewayMaxURLLength, "maxURLLength", 1, MaxGatewayURLLength)
	defInt(&l.MaxConcurrentStreams, DefaultGatewayMaxStreams, "maxConcurrentStreams", 1, MaxGatewayStreams)
	defInt(&l.MaxConnectionsPerIP, DefaultGatewayMaxConnectionsPerIP, "maxConnectionsPerIP", 1, MaxGatewayConnectionsPerIP)
	switch {
	case l.MaxRequestBodyBytes == 0:
		l.MaxRequestBodyBytes = DefaultGatewayMaxBodyBytes
	case l.MaxRequestBodyBytes < 0 || l.MaxRequestBodyBytes > MaxGatewayBodyBytes:
		errs.add(path+".maxRequestBodyBytes", "%d is out of range: must be 1 to %d (1 GiB)", l.MaxRequestBodyBytes, MaxGatewayBodyBytes)
	}
	defDur := func(v *string, def, field string) {
		if *v == "" {
			*v = def
			return
		}
		checkDuration(path+"."+field, *v, MinGatewayTimeout, MaxTimeout, errs)
	}
	defDur(&l.RequestHeaderTimeout, DefaultGatewayHeaderTimeout, "requestHeaderTimeout")
	defDur(&l.RequestBodyTimeout, DefaultGatewayBodyTimeout, "requestBodyTimeout")
	defDur(&l.IdleTimeout, DefaultGatewayIdleTimeout, "idleTimeout")
	defDur(&l.ResponseWriteTimeout, DefaultGatewayWriteTimeout, "responseWriteTimeout")
}

// validateGatewayTLSRoutes checks spec.tlsRoutes.
func validateGatewayTLSRoutes(self identity.ServiceRef, routes []GatewayTLSRoute, listeners gatewayListeners, errs *FieldErrors) {
	if len(routes) > MaxGatewayRoutes {
		errs.add("spec.tlsRoutes", "%d TLS routes: at most %d", len(routes), MaxGatewayRoutes)
		return
	}
	if len(routes) > 0 && len(listeners) > 0 && !listeners.any(func(l *GatewayListener) bool { return l.Protocol == ListenerTLS }) {
		errs.add("spec.tlsRoutes", "no listener of protocol %s: TLS routes take the connections of %s (passthrough) listeners", ListenerTLS, ListenerTLS)
	}
	names := make(map[string]int, len(routes))
	takes := make(map[string]int, len(routes))
	for i := range routes {
		path := fmt.Sprintf("spec.tlsRoutes[%d]", i)
		r := &routes[i]
		checkUniqueGatewayName(names, "spec.tlsRoutes", i, r.Name, "TLS route", errs)
		ok := checkRouteListeners(path+".listeners", r.Listeners, listeners, true, errs)
		if len(r.Hosts) == 0 {
			errs.add(path+".hosts", "at least one server name is required: a TLS route is chosen by the client's SNI")
			ok = false
		}
		ok = checkGatewayHosts(path+".hosts", r.Hosts, true, errs) && ok
		if ok {
			key := routeKey(r.Listeners, r.Hosts, nil)
			if j, dup := takes[key]; dup {
				errs.add(path, "takes exactly the connections of spec.tlsRoutes[%d] (same listeners and hosts), which comes first: it would never be reached", j)
			} else {
				takes[key] = i
			}
		}
		checkGatewayService(path+".service", r.Service, self, errs)
		if r.Port < 0 || r.Port > 65535 {
			errs.add(path+".port", "%d is not a port: must be 0 (none) to 65535", r.Port)
		}
	}
}

// checkUniqueGatewayName checks the name of entry i of the list at path
// (its listeners, routes or TLS routes), and that no earlier entry has it;
// names records the entries seen. It reports whether the name is new and
// valid.
func checkUniqueGatewayName(names map[string]int, list string, i int, name, what string, errs *FieldErrors) bool {
	path := fmt.Sprintf("%s[%d].name", list, i)
	if !checkGatewayName(path, name, errs) {
		return false
	}
	if j, dup := names[name]; dup {
		errs.add(path, "%q is also the name of %s[%d]: %s names must be unique", name, list, j, what)
		return false
	}
	names[name] = i
	return true
}
