package config_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// gwListeners are the listeners of most cases: one of each protocol, the
// HTTP one redirecting.
const gwListeners = `listeners:
- {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secret: web-tls}]}}
- {name: http, port: 8080, protocol: HTTP}
- {name: tls, port: 9443, protocol: TLS}
`

// gwRoute is gwListeners with one route whose fields are body (a YAML flow
// mapping's content, after name and service).
func gwRoute(body string) string {
	if body != "" {
		body = ", " + body
	}
	return gwListeners + "routes:\n- {name: r, service: web" + body + "}\n"
}

// gwCase is one Gateway spec: path is "" for a valid one, otherwise the
// path of the one error it must give, whose message contains msg.
type gwCase struct {
	name string
	spec string
	path string
	msg  string
}

// fieldErrors returns the FieldErrors of the single document of err.
func fieldErrors(t *testing.T, err error) config.FieldErrors {
	t.Helper()
	var docs config.DocumentErrors
	if !errors.As(err, &docs) || len(docs) != 1 {
		t.Fatalf("got error %v, want one DocumentError", err)
	}
	var fes config.FieldErrors
	if !errors.As(docs[0].Err, &fes) {
		t.Fatalf("got error %v, want FieldErrors", docs[0].Err)
	}
	return fes
}

// runGatewayCases decodes each case's spec as a Gateway "edge" in
// namespace default and checks its errors.
func runGatewayCases(t *testing.T, tests []gwCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := trafficDoc(config.KindGateway, tt.spec)
			objs, err := config.Decode([]byte(doc))
			if tt.path == "" {
				if err != nil {
					t.Fatalf("got error %v, want nil\n%s", err, doc)
				}
				if len(objs) != 1 {
					t.Fatalf("got %d objects, want 1", len(objs))
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want one at %s\n%s", tt.path, doc)
			}
			fes := fieldErrors(t, err)
			if len(fes) != 1 || fes[0].Path != tt.path || !strings.Contains(fes[0].Msg, tt.msg) {
				t.Fatalf("got errors %v, want exactly one at %s containing %q\n%s", fes, tt.path, tt.msg, doc)
			}
		})
	}
}

func TestGatewayDefaults(t *testing.T) {
	objs, err := config.Decode([]byte(trafficDoc(config.KindGateway, `
listeners:
- {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secret: web-tls}], hsts: {}}}
- {name: http, port: 8080, protocol: HTTP}
- {name: plain, port: 8081, protocol: HTTP, redirectToHTTPS: false}
routes:
- name: shop
  service: shop/web
  cors: {allowOrigins: ["https://app.example.com"]}
  jwt: {providers: [idp]}
  rateLimits: [{requestsPerSecond: 2.5}]
rateLimits: [{requestsPerSecond: 100, per: route}]
`)))
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Gateway{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindGateway},
		Metadata: config.ObjectMeta{Name: "api", Namespace: "default"},
		Spec: config.GatewaySpec{
			Listeners: []config.GatewayListener{
				{Name: "https", Port: 8443, Protocol: config.ListenerHTTPS, TLS: &config.GatewayTLS{
					Certificates: []config.GatewayCertificate{{Secret: "web-tls"}},
					MinVersion:   "1.2",
					HSTS:         &config.HSTS{MaxAge: "8760h"},
				}},
				{Name: "http", Port: 8080, Protocol: config.ListenerHTTP, RedirectToHTTPS: ptr(true), HTTPSPort: 8443},
				{Name: "plain", Port: 8081, Protocol: config.ListenerHTTP, RedirectToHTTPS: ptr(false)},
			},
			Routes: []config.GatewayRoute{{
				Name:    "shop",
				Service: "shop/web",
				Timeout: "30s",
				CORS: &config.CORSPolicy{
					AllowOrigins: []string{"https://app.example.com"},
					AllowMethods: []string{"GET", "HEAD", "POST"},
					MaxAge:       "10m",
				},
				JWT:        &config.GatewayJWT{Providers: []string{"idp"}, Required: ptr(true)},
				RateLimits: []config.GatewayRateLimit{{RequestsPerSecond: 2.5, Burst: 3, Per: config.GatewayRatePerClientIP}},
			}},
			Limits: &config.GatewayLimits{
				MaxRequestHeaderBytes: 32768, MaxRequestHeaders: 100, MaxURLLength: 8192, MaxRequestBodyBytes: 10 << 20,
				RequestHeaderTimeout: "10s", RequestBodyTimeout: "30s", IdleTimeout: "60s", ResponseWriteTimeout: "30s",
				MaxConcurrentStreams: 100, MaxConnectionsPerIP: 256,
			},
			RateLimits: []config.GatewayRateLimit{{RequestsPerSecond: 100, Burst: 100, Per: config.GatewayRatePerRoute}},
		},
	}
	if diff := cmp.Diff(want, objs[0]); diff != "" {
		t.Errorf("defaults mismatch (-want +got):\n%s", diff)
	}

	// Without an HTTPS listener, redirects go to 443.
	objs, err = config.Decode([]byte(trafficDoc(config.KindGateway, "listeners: [{name: http, port: 80, protocol: HTTP}]")))
	if err != nil {
		t.Fatal(err)
	}
	if got := objs[0].(*config.Gateway).Spec.Listeners[0].HTTPSPort; got != 443 {
		t.Errorf("httpsPort without an HTTPS listener: got %d, want 443", got)
	}
}

// fullGateway uses every field of a Gateway.
const fullGateway = `
listeners:
- name: https
  port: 8443
  protocol: HTTPS
  tls:
    certificates: [{secret: web-tls}, {certFile: /etc/bulwark/api.crt, keyFile: /etc/bulwark/api.key}]
    minVersion: "1.3"
    hsts: {maxAge: 17520h, includeSubdomains: true, preload: true}
- {name: http, port: 8080, protocol: HTTP, httpsPort: 443}
- {name: plain, port: 8081, protocol: HTTP, redirectToHTTPS: false}
- {name: tls, port: 9443, protocol: TLS}
routes:
- name: api
  listeners: [https, plain]
  hosts: [api.example.com, "*.api.example.com", 127.0.0.1, localhost]
  matches:
  - path: {prefix: /api}
    methods: [GET, POST]
    headers: [{name: x-version, exact: "2"}]
    queryParams: [{name: debug, present: true}]
  - path: {prefix: /api/v1}
  service: shop/api
  port: 8080
  rewrite: {stripPrefix: /api}
  timeout: 5s
  maxRequestBodyBytes: 1048576
  cors:
    allowOrigins: ["https://app.example.com", "http://localhost:3000", "http://[::1]:8080"]
    allowMethods: [GET, PUT]
    allowHeaders: [Content-Type, X-Requested-With]
    exposeHeaders: [X-Request-Id]
    maxAge: 1h
    allowCredentials: true
  jwt:
    providers: [idp, idp-backup]
    required: false
    forwardToken: true
    claimsToHeaders: [{claim: sub, header: X-User}]
  rateLimits: [{requestsPerSecond: 10, burst: 20, per: subject}]
  requestHeaders: {set: {X-Env: prod}, add: {X-Via: gw}, remove: [X-Debug]}
  responseHeaders: {set: {X-Frame-Options: DENY}}
- {name: v2, matches: [{path: {prefix: /old}}], service: web, rewrite: {replacePrefix: /new}}
- {name: health, service: web, rewrite: {replaceFullPath: /healthz}}
tlsRoutes:
- {name: db, listeners: [tls], hosts: [db.example.com, "*.db.example.com"], service: data/postgres, port: 5432}
limits:
  maxRequestHeaderBytes: 16384
  maxRequestHeaders: 50
  maxURLLength: 4096
  maxRequestBodyBytes: 2097152
  requestHeaderTimeout: 5s
  requestBodyTimeout: 20s
  idleTimeout: 2m
  maxConcurrentStreams: 50
  maxConnectionsPerIP: 64
rateLimits: [{requestsPerSecond: 1000, burst: 2000, per: client-ip}]
`

func TestGatewayRoundTrip(t *testing.T) {
	objs, err := config.Decode([]byte(trafficDoc(config.KindGateway, fullGateway)))
	if err != nil {
		t.Fatal(err)
	}
	first := objs[0]
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			var (
				b   []byte
				err error
			)
			if format == "json" {
				b, err = config.Marshal(first)
			} else {
				b, err = config.MarshalYAML(first)
			}
			if err != nil {
				t.Fatal(err)
			}
			again, err := config.Decode(b)
			if err != nil {
				t.Fatalf("decode %s: %v\n%s", format, err, b)
			}
			if diff := cmp.Diff(first, again[0]); diff != "" {
				t.Errorf("round trip mismatch (-first +again):\n%s", diff)
			}
		})
	}
}

func TestGatewayListenersValidate(t *testing.T) {
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("listeners:\n")
		for i := range n {
			fmt.Fprintf(&b, "- {name: l%d, port: %d, protocol: TLS}\n", i, 9000+i)
		}
		return b.String()
	}
	https := func(tls string) string {
		return "listeners:\n- {name: https, port: 443, protocol: HTTPS, tls: " + tls + "}\n"
	}
	runGatewayCases(t, []gwCase{
		{name: "valid", spec: gwListeners},
		{name: "valid_16", spec: many(16)},
		{name: "none", spec: "listeners: []", path: "spec.listeners", msg: "at least one listener"},
		{name: "missing", spec: "routes: []", path: "spec.listeners", msg: "at least one listener"},
		{name: "too_many", spec: many(17), path: "spec.listeners", msg: "at most 16"},
		{name: "name_missing", spec: "listeners: [{port: 80, protocol: HTTP}]", path: "spec.listeners[0].name", msg: "required"},
		{name: "name_upper", spec: "listeners: [{name: Web, port: 80, protocol: HTTP}]", path: "spec.listeners[0].name", msg: "lowercase"},
		{name: "name_long", spec: "listeners: [{name: " + strings.Repeat("a", 64) + ", port: 80, protocol: HTTP}]", path: "spec.listeners[0].name", msg: "at most 63"},
		{name: "name_twice", spec: "listeners: [{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: TLS}]", path: "spec.listeners[1].name", msg: "must be unique"},
		{name: "port_missing", spec: "listeners: [{name: a, protocol: TLS}]", path: "spec.listeners[0].port", msg: "required"},
		{name: "port_high", spec: "listeners: [{name: a, port: 65536, protocol: TLS}]", path: "spec.listeners[0].port", msg: "not a port"},
		{name: "port_negative", spec: "listeners: [{name: a, port: -1, protocol: TLS}]", path: "spec.listeners[0].port", msg: "not a port"},
		{name: "port_twice", spec: "listeners: [{name: a, port: 80, protocol: TLS}, {name: b, port: 80, protocol: TLS}]", path: "spec.listeners[1].port", msg: "also the port of spec.listeners[0]"},
		{name: "protocol_missing", spec: "listeners: [{name: a, port: 80}]", path: "spec.listeners[0].protocol", msg: "required"},
		{name: "protocol_lower", spec: "listeners: [{name: a, port: 80, protocol: https}]", path: "spec.listeners[0].protocol", msg: `unsupported value "https"`},
		{name: "protocol_tcp", spec: "listeners: [{name: a, port: 80, protocol: TCP}]", path: "spec.listeners[0].protocol", msg: "unsupported"},
		{name: "https_without_tls", spec: "listeners: [{name: a, port: 443, protocol: HTTPS}]", path: "spec.listeners[0].tls", msg: "required with protocol HTTPS"},
		{name: "http_with_tls", spec: "listeners: [{name: a, port: 80, protocol: HTTP, tls: {certificates: [{secret: x}]}}]", path: "spec.listeners[0].tls", msg: "only allowed with protocol HTTPS"},
		{name: "passthrough_with_tls", spec: "listeners: [{name: a, port: 443, protocol: TLS, tls: {certificates: [{secret: x}]}}]", path: "spec.listeners[0].tls", msg: "passes TLS through"},
		{name: "redirect_on_https", spec: "listeners: [{name: a, port: 443, protocol: HTTPS, redirectToHTTPS: true, tls: {certificates: [{secret: x}]}}]", path: "spec.listeners[0].redirectToHTTPS", msg: "only allowed with protocol HTTP"},
		{name: "https_port_on_tls", spec: "listeners: [{name: a, port: 443, protocol: TLS, httpsPort: 443}]", path: "spec.listeners[0].httpsPort", msg: "only allowed with protocol HTTP"},
		{name: "https_port_without_redirect", spec: "listeners: [{name: a, port: 80, protocol: HTTP, redirectToHTTPS: false, httpsPort: 443}]", path: "spec.listeners[0].httpsPort", msg: "only allowed with redirectToHTTPS: true"},
		{name: "https_port_high", spec: "listeners: [{name: a, port: 80, protocol: HTTP, httpsPort: 70000}]", path: "spec.listeners[0].httpsPort", msg: "not a port"},
		{name: "certificates_none", spec: https("{certificates: []}"), path: "spec.listeners[0].tls.certificates", msg: "at least one"},
		{name: "certificates_too_many", spec: https("{certificates: [" + strings.Repeat("{secret: a},", 16) + "{secret: b}]}"), path: "spec.listeners[0].tls.certificates", msg: "at most 16"},
		{name: "certificate_both", spec: https("{certificates: [{secret: a, certFile: /a.crt, keyFile: /a.key}]}"), path: "spec.listeners[0].tls.certificates[0]", msg: "not both"},
		{name: "certificate_neither", spec: https("{certificates: [{}]}"), path: "spec.listeners[0].tls.certificates[0]", msg: "exactly one of secret and certFile with keyFile"},
		{name: "certificate_secret_name", spec: https("{certificates: [{secret: Web_TLS}]}"), path: "spec.listeners[0].tls.certificates[0].secret", msg: `"Web_TLS": a Secret name`},
		{name: "certificate_twice", spec: https("{certificates: [{secret: a}, {secret: a}]}"), path: "spec.listeners[0].tls.certificates[1]", msg: "same certificate as spec.listeners[0].tls.certificates[0]"},
		{name: "cert_file_twice", spec: https("{certificates: [{certFile: /a.crt, keyFile: /a.key}, {certFile: /a.crt, keyFile: /b.key}]}"), path: "spec.listeners[0].tls.certificates[1]", msg: "same certificate"},
		{name: "cert_file_without_key", spec: https("{certificates: [{certFile: /a.crt}]}"), path: "spec.listeners[0].tls.certificates[0].keyFile", msg: "required"},
		{name: "key_file_without_cert", spec: https("{certificates: [{keyFile: /a.key}]}"), path: "spec.listeners[0].tls.certificates[0].certFile", msg: "required"},
		{name: "cert_file_relative", spec: https("{certificates: [{certFile: certs/a.crt, keyFile: /a.key}]}"), path: "spec.listeners[0].tls.certificates[0].certFile", msg: "not an absolute path"},
		{name: "key_file_unclean", spec: https("{certificates: [{certFile: /a.crt, keyFile: /etc/../etc/a.key}]}"), path: "spec.listeners[0].tls.certificates[0].keyFile", msg: `use "/etc/a.key"`},
		{name: "key_file_control", spec: https(`{certificates: [{certFile: /a.crt, keyFile: "/a\nb.key"}]}`), path: "spec.listeners[0].tls.certificates[0].keyFile", msg: "control characters"},
		{name: "cert_and_key_same_file", spec: https("{certificates: [{certFile: /a.pem, keyFile: /a.pem}]}"), path: "spec.listeners[0].tls.certificates[0].keyFile", msg: "two files"},
		{name: "min_version", spec: https("{certificates: [{secret: a}], minVersion: '1.1'}"), path: "spec.listeners[0].tls.minVersion", msg: `unsupported value "1.1"`},
		{name: "hsts_short", spec: https("{certificates: [{secret: a}], hsts: {maxAge: 500ms}}"), path: "spec.listeners[0].tls.hsts.maxAge", msg: "below the minimum 1s"},
		{name: "hsts_not_duration", spec: https("{certificates: [{secret: a}], hsts: {maxAge: '31536000'}}"), path: "spec.listeners[0].tls.hsts.maxAge", msg: "not a Go duration"},
		{name: "hsts_long", spec: https("{certificates: [{secret: a}], hsts: {maxAge: 100000h}}"), path: "spec.listeners[0].tls.hsts.maxAge", msg: "above the maximum"},
		{name: "hsts_preload_without_subdomains", spec: https("{certificates: [{secret: a}], hsts: {preload: true}}"), path: "spec.listeners[0].tls.hsts.preload", msg: "includeSubdomains"},
		{name: "hsts_preload_short", spec: https("{certificates: [{secret: a}], hsts: {maxAge: 1h, preload: true, includeSubdomains: true}}"), path: "spec.listeners[0].tls.hsts.maxAge", msg: "minimum of a preloaded policy"},
		{name: "unknown_field", spec: "listeners: [{name: a, port: 80, protocol: HTTP, redirect: true}]", path: "spec.listeners[0].redirect", msg: "unknown field"},
	})
}

func TestGatewayRoutesValidate(t *testing.T) {
	manyRoutes := func(n int) string {
		var b strings.Builder
		b.WriteString(gwListeners + "routes:\n")
		for i := range n {
			fmt.Fprintf(&b, "- {name: r%d, hosts: [h%d.example.com], service: web}\n", i, i)
		}
		return b.String()
	}
	runGatewayCases(t, []gwCase{
		{name: "valid_minimal", spec: gwRoute("")},
		{name: "valid_full", spec: fullGateway},
		{name: "valid_256", spec: manyRoutes(256)},
		{name: "too_many", spec: manyRoutes(257), path: "spec.routes", msg: "at most 256"},
		{name: "no_listener_serves_routes", spec: "listeners: [{name: http, port: 80, protocol: HTTP}, {name: tls, port: 443, protocol: TLS}]\nroutes: [{name: r, service: web}]",
			path: "spec.routes", msg: "no listener serves routes"},
		{name: "name_missing", spec: gwListeners + "routes: [{service: web}]", path: "spec.routes[0].name", msg: "required"},
		{name: "name_bad", spec: gwListeners + "routes: [{name: my_route, service: web}]", path: "spec.routes[0].name", msg: "lowercase letters"},
		{name: "name_twice", spec: gwListeners + "routes: [{name: r, hosts: [a.com], service: web}, {name: r, hosts: [b.com], service: web}]", path: "spec.routes[1].name", msg: "must be unique"},
		{name: "listener_unknown", spec: gwRoute("listeners: [web]"), path: "spec.routes[0].listeners[0]", msg: `"web" is not the name of a listener`},
		{name: "listener_passthrough", spec: gwRoute("listeners: [tls]"), path: "spec.routes[0].listeners[0]", msg: "spec.tlsRoutes"},
		{name: "listener_redirects", spec: gwRoute("listeners: [http]"), path: "spec.routes[0].listeners[0]", msg: "redirectToHTTPS: false"},
		{name: "listener_twice", spec: gwRoute("listeners: [https, https]"), path: "spec.routes[0].listeners[1]", msg: "also spec.routes[0].listeners[0]"},
		{name: "listener_empty", spec: gwRoute("listeners: ['']"), path: "spec.routes[0].listeners[0]", msg: "must not be empty"},
		{name: "host_upper", spec: gwRoute("hosts: [Shop.example.com]"), path: "spec.routes[0].hosts[0]", msg: "lower case"},
		{name: "host_star", spec: gwRoute("hosts: ['*']"), path: "spec.routes[0].hosts[0]", msg: "omit hosts"},
		{name: "host_inner_star", spec: gwRoute("hosts: ['a.*.com']"), path: "spec.routes[0].hosts[0]", msg: `leading "*."`},
		{name: "host_suffix_star", spec: gwRoute("hosts: ['shop.*']"), path: "spec.routes[0].hosts[0]", msg: `leading "*."`},
		{name: "host_port", spec: gwRoute("hosts: ['shop.example.com:8443']"), path: "spec.routes[0].hosts[0]", msg: "a host has no port"},
		{name: "host_ipv6", spec: gwRoute("hosts: ['[::1]']"), path: "spec.routes[0].hosts[0]", msg: "IPv6"},
		{name: "host_ipv6_bare", spec: gwRoute("hosts: ['::1']"), path: "spec.routes[0].hosts[0]", msg: "IPv6"},
		{name: "host_trailing_dot", spec: gwRoute("hosts: ['shop.example.com.']"), path: "spec.routes[0].hosts[0]", msg: "trailing dot"},
		{name: "host_space", spec: gwRoute("hosts: ['shop example.com']"), path: "spec.routes[0].hosts[0]", msg: "lower-case letters, digits"},
		{name: "host_empty", spec: gwRoute("hosts: ['']"), path: "spec.routes[0].hosts[0]", msg: "must not be empty"},
		{name: "host_label_long", spec: gwRoute("hosts: [" + strings.Repeat("a", 64) + ".com]"), path: "spec.routes[0].hosts[0]", msg: "1 to 63"},
		{name: "host_twice", spec: gwRoute("hosts: [a.com, b.com, a.com]"), path: "spec.routes[0].hosts[2]", msg: "also spec.routes[0].hosts[0]"},
		{name: "match_path_relative", spec: gwRoute("matches: [{path: {prefix: api}}]"), path: "spec.routes[0].matches[0].path.prefix", msg: "must start with '/'"},
		{name: "match_path_not_normalized", spec: gwRoute("matches: [{path: {prefix: /a/../b}}]"), path: "spec.routes[0].matches[0].path.prefix", msg: "not normalized"},
		{name: "match_path_two_kinds", spec: gwRoute("matches: [{path: {prefix: /a, exact: /a}}]"), path: "spec.routes[0].matches[0].path", msg: "exactly one of exact, prefix and regex"},
		{name: "match_regex_bad", spec: gwRoute("matches: [{path: {regex: '(('}}]"), path: "spec.routes[0].matches[0].path.regex", msg: "not an RE2"},
		{name: "match_method_lower", spec: gwRoute("matches: [{methods: [get]}]"), path: "spec.routes[0].matches[0].methods[0]", msg: "upper case"},
		{name: "match_header_name", spec: gwRoute("matches: [{headers: [{name: 'x y', present: true}]}]"), path: "spec.routes[0].matches[0].headers[0].name", msg: "not an HTTP header name"},
		{name: "match_source_services", spec: gwRoute("matches: [{sourceServices: [shop/web]}]"), path: "spec.routes[0].matches[0].sourceServices", msg: "not allowed in a Gateway"},
		{name: "service_missing", spec: gwListeners + "routes: [{name: r}]", path: "spec.routes[0].service", msg: "required"},
		{name: "service_upper", spec: gwListeners + "routes: [{name: r, service: Web}]", path: "spec.routes[0].service", msg: `service "Web": name`},
		{name: "service_three_parts", spec: gwListeners + "routes: [{name: r, service: a/b/c}]", path: "spec.routes[0].service", msg: `"namespace/name"`},
		{name: "service_no_name", spec: gwListeners + "routes: [{name: r, service: 'shop/'}]", path: "spec.routes[0].service", msg: "name must not be empty"},
		{name: "service_self", spec: gwListeners + "routes: [{name: r, service: default/api}]", path: "spec.routes[0].service", msg: "the gateway's own service"},
		{name: "service_self_short", spec: gwListeners + "tlsRoutes: [{name: r, hosts: [a.com], service: api}]", path: "spec.tlsRoutes[0].service", msg: "the gateway's own service"},
		{name: "port_negative", spec: gwRoute("port: -1"), path: "spec.routes[0].port", msg: "not a port"},
		{name: "port_high", spec: gwRoute("port: 65536"), path: "spec.routes[0].port", msg: "not a port"},
		{name: "rewrite_empty", spec: gwRoute("rewrite: {}"), path: "spec.routes[0].rewrite", msg: "exactly one of stripPrefix"},
		{name: "rewrite_two", spec: gwRoute("matches: [{path: {prefix: /a}}], rewrite: {stripPrefix: /a, replaceFullPath: /b}"), path: "spec.routes[0].rewrite", msg: "exactly one of stripPrefix"},
		{name: "strip_without_matches", spec: gwRoute("rewrite: {stripPrefix: /api}"), path: "spec.routes[0].rewrite.stripPrefix", msg: "requires matches"},
		{name: "strip_exact_match", spec: gwRoute("matches: [{path: {exact: /api}}], rewrite: {stripPrefix: /api}"), path: "spec.routes[0].matches[0].path", msg: "requires every match to have a path prefix"},
		{name: "strip_match_without_path", spec: gwRoute("matches: [{path: {prefix: /api}}, {methods: [GET]}], rewrite: {stripPrefix: /api}"), path: "spec.routes[0].matches[1].path", msg: "requires every match"},
		{name: "strip_not_at_boundary", spec: gwRoute("matches: [{path: {prefix: /apix}}], rewrite: {stripPrefix: /api}"), path: "spec.routes[0].matches[0].path.prefix", msg: "segment boundary"},
		{name: "strip_other_prefix", spec: gwRoute("matches: [{path: {prefix: /web}}], rewrite: {stripPrefix: /api}"), path: "spec.routes[0].matches[0].path.prefix", msg: "does not start with stripPrefix"},
		{name: "strip_trailing_slash", spec: gwRoute("matches: [{path: {prefix: /api/}}], rewrite: {stripPrefix: /api/}"), path: "spec.routes[0].rewrite.stripPrefix", msg: "without a trailing '/'"},
		{name: "strip_root", spec: gwRoute("matches: [{path: {prefix: /}}], rewrite: {stripPrefix: /}"), path: "spec.routes[0].rewrite.stripPrefix", msg: "without a trailing '/'"},
		{name: "strip_relative", spec: gwRoute("matches: [{path: {prefix: /api}}], rewrite: {stripPrefix: api}"), path: "spec.routes[0].rewrite.stripPrefix", msg: "must start with '/'"},
		{name: "replace_prefix_regex_match", spec: gwRoute("matches: [{path: {regex: '/a.*'}}], rewrite: {replacePrefix: /b}"), path: "spec.routes[0].matches[0].path", msg: "every match to be a path prefix match"},
		{name: "replace_prefix_without_matches", spec: gwRoute("rewrite: {replacePrefix: /b}"), path: "spec.routes[0].rewrite.replacePrefix", msg: "requires matches"},
		{name: "replace_prefix_not_normalized", spec: gwRoute("matches: [{path: {prefix: /a}}], rewrite: {replacePrefix: '/b//c'}"), path: "spec.routes[0].rewrite.replacePrefix", msg: `use "/b/c"`},
		{name: "full_path_query", spec: gwRoute("rewrite: {replaceFullPath: '/a?b=1'}"), path: "spec.routes[0].rewrite.replaceFullPath", msg: "not a path the mesh forwards"},
		{name: "full_path_relative", spec: gwRoute("rewrite: {replaceFullPath: healthz}"), path: "spec.routes[0].rewrite.replaceFullPath", msg: "must start with '/'"},
		{name: "full_path_encoded_slash", spec: gwRoute("rewrite: {replaceFullPath: '/a%2Fb'}"), path: "spec.routes[0].rewrite.replaceFullPath", msg: "encoded '/'"},
		{name: "timeout_zero", spec: gwRoute("timeout: 0s"), path: "spec.routes[0].timeout", msg: "below the minimum 1ms"},
		{name: "timeout_long", spec: gwRoute("timeout: 2h"), path: "spec.routes[0].timeout", msg: "above the maximum 1h0m0s"},
		{name: "timeout_not_duration", spec: gwRoute("timeout: '30'"), path: "spec.routes[0].timeout", msg: "not a Go duration"},
		{name: "timeout_negative", spec: gwRoute("timeout: -1s"), path: "spec.routes[0].timeout", msg: "negative"},
		{name: "body_negative", spec: gwRoute("maxRequestBodyBytes: -1"), path: "spec.routes[0].maxRequestBodyBytes", msg: "out of range"},
		{name: "body_huge", spec: gwRoute("maxRequestBodyBytes: 1073741825"), path: "spec.routes[0].maxRequestBodyBytes", msg: "1 GiB"},
		{name: "headers_identity", spec: gwRoute("requestHeaders: {set: {X-Forwarded-For: 1.2.3.4}}"), path: "spec.routes[0].requestHeaders.set.X-Forwarded-For", msg: "cannot be edited"},
		{name: "headers_bulwark", spec: gwRoute("requestHeaders: {add: {X-Bulwark-Source: me}}"), path: "spec.routes[0].requestHeaders.add.X-Bulwark-Source", msg: "cannot be edited"},
		{name: "headers_remove_host", spec: gwRoute("responseHeaders: {remove: [Transfer-Encoding]}"), path: "spec.routes[0].responseHeaders.remove[0]", msg: "hop-by-hop"},
		{name: "headers_value_crlf", spec: gwRoute(`requestHeaders: {set: {X-A: "a\r\nX-B: b"}}`), path: "spec.routes[0].requestHeaders.set.X-A", msg: "CR, LF or NUL"},
		{name: "same_as_earlier", spec: gwListeners + "routes:\n- {name: a, hosts: [a.com, b.com], matches: [{path: {prefix: /x}}], service: web}\n- {name: b, hosts: [b.com, a.com], matches: [{path: {prefix: /x}}], service: other}\n",
			path: "spec.routes[1]", msg: "never be reached"},
		{name: "same_as_earlier_catch_all", spec: gwListeners + "routes: [{name: a, service: web}, {name: b, service: other}]", path: "spec.routes[1]", msg: "same listeners, hosts and matches"},
		{name: "valid_other_listener", spec: gwListeners + "routes: [{name: a, listeners: [https], service: web}, {name: b, service: other}]"},
	})
}

func TestGatewayCORSValidate(t *testing.T) {
	cors := func(body string) string { return gwRoute("cors: {" + body + "}") }
	runGatewayCases(t, []gwCase{
		{name: "valid_star", spec: cors("allowOrigins: ['*']")},
		{name: "valid_origins", spec: cors("allowOrigins: ['https://a.example.com', 'http://localhost:8080', 'https://10.0.0.1'], allowCredentials: true")},
		{name: "origins_none", spec: cors("allowMethods: [GET]"), path: "spec.routes[0].cors.allowOrigins", msg: "at least one origin"},
		{name: "star_with_credentials", spec: cors("allowOrigins: ['*'], allowCredentials: true"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "not allowed with allowCredentials"},
		{name: "star_with_others", spec: cors("allowOrigins: ['https://a.com', '*']"), path: "spec.routes[0].cors.allowOrigins[1]", msg: "the only origin"},
		{name: "origin_path", spec: cors("allowOrigins: ['https://a.com/']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "more than an origin"},
		{name: "origin_query", spec: cors("allowOrigins: ['https://a.com?x']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "more than an origin"},
		{name: "origin_user", spec: cors("allowOrigins: ['https://u@a.com']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "more than an origin"},
		{name: "origin_scheme", spec: cors("allowOrigins: ['ftp://a.com']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "http or https"},
		{name: "origin_no_scheme", spec: cors("allowOrigins: ['a.com']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "not an origin"},
		{name: "origin_null", spec: cors("allowOrigins: ['null']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "not an origin"},
		{name: "origin_upper", spec: cors("allowOrigins: ['https://App.com']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "lower case"},
		{name: "origin_default_port", spec: cors("allowOrigins: ['https://a.com:443']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "default port 443"},
		{name: "origin_bad_port", spec: cors("allowOrigins: ['https://a.com:99999']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "1 to 65535"},
		{name: "origin_empty_port", spec: cors("allowOrigins: ['https://a.com:']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "1 to 65535"},
		{name: "origin_wildcard_host", spec: cors("allowOrigins: ['https://*.a.com']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "host"},
		{name: "origin_twice", spec: cors("allowOrigins: ['https://a.com', 'https://a.com']"), path: "spec.routes[0].cors.allowOrigins[1]", msg: "also spec.routes[0].cors.allowOrigins[0]"},
		{name: "origin_empty", spec: cors("allowOrigins: ['']"), path: "spec.routes[0].cors.allowOrigins[0]", msg: "not an origin"},
		{name: "method_lower", spec: cors("allowOrigins: ['*'], allowMethods: [put]"), path: "spec.routes[0].cors.allowMethods[0]", msg: "upper case"},
		{name: "method_star", spec: cors("allowOrigins: ['*'], allowMethods: ['*']"), path: "spec.routes[0].cors.allowMethods[0]", msg: "list the methods"},
		{name: "method_twice", spec: cors("allowOrigins: ['*'], allowMethods: [GET, GET]"), path: "spec.routes[0].cors.allowMethods[1]", msg: "listed twice"},
		{name: "header_not_token", spec: cors("allowOrigins: ['*'], allowHeaders: ['x y']"), path: "spec.routes[0].cors.allowHeaders[0]", msg: "not an HTTP header name"},
		{name: "header_empty", spec: cors("allowOrigins: ['*'], exposeHeaders: ['']"), path: "spec.routes[0].cors.exposeHeaders[0]", msg: "must not be empty"},
		{name: "header_twice", spec: cors("allowOrigins: ['*'], allowHeaders: [X-A, x-a]"), path: "spec.routes[0].cors.allowHeaders[1]", msg: "case-insensitive"},
		{name: "header_star", spec: cors("allowOrigins: ['*'], allowHeaders: ['*']"), path: "spec.routes[0].cors.allowHeaders[0]", msg: "list the header names"},
		{name: "max_age_long", spec: cors("allowOrigins: ['*'], maxAge: 48h"), path: "spec.routes[0].cors.maxAge", msg: "above the maximum"},
		{name: "max_age_bad", spec: cors("allowOrigins: ['*'], maxAge: '600'"), path: "spec.routes[0].cors.maxAge", msg: "not a Go duration"},
	})
}

func TestGatewayJWTAndRateLimitsValidate(t *testing.T) {
	jwt := func(body string) string { return gwRoute("jwt: {" + body + "}") }
	rl := func(body string) string { return gwRoute("rateLimits: [{" + body + "}]") }
	runGatewayCases(t, []gwCase{
		{name: "jwt_valid", spec: jwt("providers: [idp], claimsToHeaders: [{claim: sub, header: X-User}, {claim: email, header: X-Email}]")},
		{name: "jwt_no_providers", spec: jwt("required: true"), path: "spec.routes[0].jwt.providers", msg: "at least one"},
		{name: "jwt_provider_name", spec: jwt("providers: [My_IdP]"), path: "spec.routes[0].jwt.providers[0]", msg: "a JWTProvider name"},
		{name: "jwt_provider_twice", spec: jwt("providers: [idp, idp]"), path: "spec.routes[0].jwt.providers[1]", msg: "listed twice"},
		{name: "jwt_claim_missing", spec: jwt("providers: [idp], claimsToHeaders: [{header: X-User}]"), path: "spec.routes[0].jwt.claimsToHeaders[0].claim", msg: "required"},
		{name: "jwt_header_missing", spec: jwt("providers: [idp], claimsToHeaders: [{claim: sub}]"), path: "spec.routes[0].jwt.claimsToHeaders[0].header", msg: "required"},
		{name: "jwt_header_authorization", spec: jwt("providers: [idp], claimsToHeaders: [{claim: sub, header: Authorization}]"), path: "spec.routes[0].jwt.claimsToHeaders[0].header", msg: "cannot carry a claim"},
		{name: "jwt_header_forwarded", spec: jwt("providers: [idp], claimsToHeaders: [{claim: sub, header: X-Forwarded-User}]"), path: "spec.routes[0].jwt.claimsToHeaders[0].header", msg: "set by the proxy only"},
		{name: "jwt_header_bulwark", spec: jwt("providers: [idp], claimsToHeaders: [{claim: sub, header: x-bulwark-principal}]"), path: "spec.routes[0].jwt.claimsToHeaders[0].header", msg: "set by the proxy only"},
		{name: "jwt_header_not_token", spec: jwt("providers: [idp], claimsToHeaders: [{claim: sub, header: 'X User'}]"), path: "spec.routes[0].jwt.claimsToHeaders[0].header", msg: "not an HTTP header name"},
		{name: "jwt_header_twice", spec: jwt("providers: [idp], claimsToHeaders: [{claim: sub, header: X-User}, {claim: email, header: x-user}]"), path: "spec.routes[0].jwt.claimsToHeaders[1].header", msg: "also set by"},
		{name: "rate_valid", spec: rl("requestsPerSecond: 0.5, burst: 0, per: subject")},
		{name: "rate_missing", spec: rl("burst: 3"), path: "spec.routes[0].rateLimits[0].requestsPerSecond", msg: "required"},
		{name: "rate_negative", spec: rl("requestsPerSecond: -1"), path: "spec.routes[0].rateLimits[0].requestsPerSecond", msg: "out of range"},
		{name: "rate_huge", spec: rl("requestsPerSecond: 2e6"), path: "spec.routes[0].rateLimits[0].requestsPerSecond", msg: "at most 1000000"},
		{name: "rate_nan", spec: rl("requestsPerSecond: .nan"), path: "spec.routes[0].rateLimits[0].requestsPerSecond", msg: "not a finite number"},
		{name: "rate_inf", spec: rl("requestsPerSecond: .inf"), path: "spec.routes[0].rateLimits[0].requestsPerSecond", msg: "not a finite number"},
		{name: "burst_negative", spec: rl("requestsPerSecond: 1, burst: -1"), path: "spec.routes[0].rateLimits[0].burst", msg: "out of range"},
		{name: "burst_huge", spec: rl("requestsPerSecond: 1, burst: 1000001"), path: "spec.routes[0].rateLimits[0].burst", msg: "out of range"},
		{name: "per_unknown", spec: rl("requestsPerSecond: 1, per: user"), path: "spec.routes[0].rateLimits[0].per", msg: `unsupported value "user"`},
		{name: "spec_per_unknown", spec: gwListeners + "rateLimits: [{requestsPerSecond: 1, per: ip}]", path: "spec.rateLimits[0].per", msg: "unsupported"},
		{name: "too_many", spec: gwListeners + "rateLimits: [" + strings.Repeat("{requestsPerSecond: 1},", 16) + "{requestsPerSecond: 1}]", path: "spec.rateLimits", msg: "at most 16"},
		{name: "spec_subject_allowed", spec: gwListeners + "rateLimits: [{requestsPerSecond: 1, per: subject}]"},
	})
}

func TestGatewayTLSRoutesValidate(t *testing.T) {
	tr := func(body string) string { return gwListeners + "tlsRoutes:\n- {name: t, service: db" + body + "}\n" }
	runGatewayCases(t, []gwCase{
		{name: "valid", spec: tr(", hosts: [db.example.com, '*.db.example.com'], listeners: [tls], port: 5432")},
		{name: "no_tls_listener", spec: "listeners: [{name: http, port: 80, protocol: HTTP}]\ntlsRoutes: [{name: t, hosts: [a.com], service: db}]",
			path: "spec.tlsRoutes", msg: "no listener of protocol TLS"},
		{name: "hosts_missing", spec: tr(""), path: "spec.tlsRoutes[0].hosts", msg: "at least one server name"},
		{name: "host_ip", spec: tr(", hosts: [10.0.0.1]"), path: "spec.tlsRoutes[0].hosts[0]", msg: "no server name (SNI)"},
		{name: "host_upper", spec: tr(", hosts: [DB.example.com]"), path: "spec.tlsRoutes[0].hosts[0]", msg: "lower case"},
		{name: "host_twice", spec: tr(", hosts: [a.com, a.com]"), path: "spec.tlsRoutes[0].hosts[1]", msg: "also"},
		{name: "listener_https", spec: tr(", hosts: [a.com], listeners: [https]"), path: "spec.tlsRoutes[0].listeners[0]", msg: "TLS listeners only"},
		{name: "listener_unknown", spec: tr(", hosts: [a.com], listeners: [nope]"), path: "spec.tlsRoutes[0].listeners[0]", msg: "not the name of a listener"},
		{name: "service_bad", spec: gwListeners + "tlsRoutes: [{name: t, hosts: [a.com], service: 'DB'}]", path: "spec.tlsRoutes[0].service", msg: "name"},
		{name: "service_missing", spec: gwListeners + "tlsRoutes: [{name: t, hosts: [a.com]}]", path: "spec.tlsRoutes[0].service", msg: "required"},
		{name: "port_high", spec: tr(", hosts: [a.com], port: 100000"), path: "spec.tlsRoutes[0].port", msg: "not a port"},
		{name: "name_twice", spec: gwListeners + "tlsRoutes: [{name: t, hosts: [a.com], service: db}, {name: t, hosts: [b.com], service: db}]", path: "spec.tlsRoutes[1].name", msg: "must be unique"},
		{name: "same_as_earlier", spec: gwListeners + "tlsRoutes: [{name: a, hosts: [a.com], service: db}, {name: b, hosts: [a.com], service: db2}]", path: "spec.tlsRoutes[1]", msg: "never be reached"},
	})
}

func TestGatewayLimitsValidate(t *testing.T) {
	lim := func(body string) string { return gwListeners + "limits: {" + body + "}\n" }
	runGatewayCases(t, []gwCase{
		{name: "valid_bounds", spec: lim("maxRequestHeaderBytes: 1048576, maxRequestHeaders: 1000, maxURLLength: 65536, maxRequestBodyBytes: 1073741824, requestHeaderTimeout: 1ms, requestBodyTimeout: 1h, idleTimeout: 1h, maxConcurrentStreams: 1000, maxConnectionsPerIP: 100000")},
		{name: "header_bytes_small", spec: lim("maxRequestHeaderBytes: 100"), path: "spec.limits.maxRequestHeaderBytes", msg: "out of range"},
		{name: "header_bytes_big", spec: lim("maxRequestHeaderBytes: 1048577"), path: "spec.limits.maxRequestHeaderBytes", msg: "out of range"},
		{name: "header_bytes_negative", spec: lim("maxRequestHeaderBytes: -1"), path: "spec.limits.maxRequestHeaderBytes", msg: "out of range"},
		{name: "headers_many", spec: lim("maxRequestHeaders: 1001"), path: "spec.limits.maxRequestHeaders", msg: "1 to 1000"},
		{name: "url_long", spec: lim("maxURLLength: 65537"), path: "spec.limits.maxURLLength", msg: "out of range"},
		{name: "body_negative", spec: lim("maxRequestBodyBytes: -5"), path: "spec.limits.maxRequestBodyBytes", msg: "out of range"},
		{name: "body_huge", spec: lim("maxRequestBodyBytes: 1073741825"), path: "spec.limits.maxRequestBodyBytes", msg: "1 GiB"},
		{name: "header_timeout_zero", spec: lim("requestHeaderTimeout: 0s"), path: "spec.limits.requestHeaderTimeout", msg: "below the minimum 1ms"},
		{name: "body_timeout_long", spec: lim("requestBodyTimeout: 61m"), path: "spec.limits.requestBodyTimeout", msg: "above the maximum"},
		{name: "idle_timeout_bad", spec: lim("idleTimeout: forever"), path: "spec.limits.idleTimeout", msg: "not a Go duration"},
		{name: "streams_many", spec: lim("maxConcurrentStreams: 1001"), path: "spec.limits.maxConcurrentStreams", msg: "1 to 1000"},
		{name: "streams_negative", spec: lim("maxConcurrentStreams: -1"), path: "spec.limits.maxConcurrentStreams", msg: "out of range"},
		{name: "conns_many", spec: lim("maxConnectionsPerIP: 100001"), path: "spec.limits.maxConnectionsPerIP", msg: "1 to 100000"},
		{name: "unknown_field", spec: lim("maxBodyBytes: 10"), path: "spec.limits.maxBodyBytes", msg: "unknown field"},
		{name: "wrong_type", spec: lim("maxRequestHeaders: many"), path: "spec.limits.maxRequestHeaders", msg: "expected an integer"},
	})
}

func TestGatewayMetadata(t *testing.T) {
	_, err := config.Decode([]byte("apiVersion: bulwark.dev/v1alpha1\nkind: Gateway\nmetadata: {name: Edge}\nspec:\n  " + strings.ReplaceAll(gwListeners, "\n", "\n  ")))
	fes := fieldErrors(t, err)
	if len(fes) != 1 || fes[0].Path != "metadata.name" {
		t.Errorf("got %v, want one error at metadata.name", fes)
	}
}

// TestGatewayReferenceExample decodes the Gateway of the complete example
// of docs/gateway-reference.md, so that the documentation stays valid.
func TestGatewayReferenceExample(t *testing.T) {
	b, err := os.ReadFile("../../docs/gateway-reference.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## A complete example\n\n```yaml\n")
	if !ok {
		t.Fatal("no complete example in docs/gateway-reference.md")
	}
	example, _, _ := strings.Cut(rest, "```")
	i := strings.Index(example, "kind: Gateway")
	if i < 0 {
		t.Fatal("the example has no Gateway")
	}
	doc := example[strings.LastIndex(example[:i], "---\n")+4:]
	objs, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatalf("the example does not decode: %v", err)
	}
	if len(objs) != 1 || objs[0].GetTypeMeta().Kind != config.KindGateway {
		t.Fatalf("got %d objects, want the Gateway", len(objs))
	}
}

// FuzzGatewayDecode: no input crashes the validation of a Gateway or a
// Secret, and what is accepted is stored in a form that decodes again to
// the same bytes (Validate is idempotent).
func FuzzGatewayDecode(f *testing.F) {
	f.Add([]byte(trafficDoc(config.KindGateway, fullGateway)))
	f.Add([]byte(trafficDoc(config.KindGateway, gwRoute("matches: [{path: {prefix: /a}}], rewrite: {stripPrefix: /a}, cors: {allowOrigins: ['https://a.com:8443']}"))))
	f.Add([]byte(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Secret","metadata":{"name":"s"},"type":"kubernetes.io/tls","stringData":{"tls.crt":"-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n","tls.key":"x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := config.Decode(data)
		if err != nil {
			return
		}
		for _, o := range objs {
			j, err := config.Marshal(o)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			back, err := config.DecodeObject(j)
			if err != nil {
				t.Fatalf("decode stored form %s: %v", j, err)
			}
			j2, err := config.Marshal(back)
			if err != nil {
				t.Fatalf("marshal again: %v", err)
			}
			if string(j) != string(j2) {
				t.Fatalf("stored form changed on a second decode:\n%s\n%s", j, j2)
			}
		}
	})
}
