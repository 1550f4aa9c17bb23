package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/net/http/httpguts"

	"github.com/bulwarkmesh/bulwark/internal/buildinfo"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
	"github.com/bulwarkmesh/bulwark/internal/svid/workloadapi"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			bi := buildinfo.Read()
			commit := bi.Commit
			if bi.Modified {
				commit += " (modified)"
			}
			fmt.Fprintf(g.io.Out, "bulwark %s\ncommit  %s\ngo      %s\n", bi.Version, commit, bi.GoVersion)
			return nil
		},
	}
}

func newControlCmd(g *globals) *cobra.Command {
	var cfg control.Config
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run the control plane",
		Long: `Run the control plane: the CA, attestation, the registry of proxies, snapshots
for proxies (gRPC on --listen) and the admin API for operators (HTTPS on
--admin-listen). On first start it creates the CAs and writes the trust bundle to
<data-dir>/bundle.pem and the admin operator's credential to
<data-dir>/operator/admin.yaml (mode 0600).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			cfg.Logger = logger
			cfg.CAKeyPassphrase = os.Getenv(control.EnvCAKeyPassphrase)
			return control.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "bulwark-data", "directory of the store, CA keys, bundle and operator credential")
	f.StringVar(&cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of the mesh")
	f.StringVar(&cfg.Listen, "listen", control.DefaultListen, "gRPC address for proxies")
	f.StringVar(&cfg.AdminListen, "admin-listen", control.DefaultAdminListen, "admin API address (HTTPS, operator client certificates)")
	f.DurationVar(&cfg.SVIDTTL, "svid-ttl", control.DefaultSVIDTTL, "lifetime of workload certificates (1m to 24h)")
	f.StringVar(&cfg.MetricsListen, "metrics", "", "address to serve Prometheus /metrics on (plain HTTP; off when empty)")
	f.StringVar(&cfg.Store, "store", control.StoreBolt, "store backend: bolt (<data-dir>/bulwark.db) or etcd (--etcd-*)")
	f.StringSliceVar(&cfg.Etcd.Endpoints, "etcd-endpoints", nil, "etcd client URLs, comma-separated (with --store etcd)")
	f.StringVar(&cfg.Etcd.CAFile, "etcd-ca", "", "PEM CA that verifies etcd's certificate (with --store etcd)")
	f.StringVar(&cfg.Etcd.CertFile, "etcd-cert", "", "PEM client certificate for etcd (with --store etcd)")
	f.StringVar(&cfg.Etcd.KeyFile, "etcd-key", "", "PEM client key for etcd (with --store etcd)")
	f.StringVar(&cfg.Etcd.Prefix, "etcd-prefix", "/bulwark/", "prefix of the mesh's keys in etcd")
	f.StringVar(&cfg.CAKeyFile, "ca-key-file", "", "file of the 32-byte key that encrypts the CA keys at rest (or set $"+control.EnvCAKeyPassphrase+"; default: <data-dir>/ca-key, created on first start)")
	return cmd
}

func newProxyCmd(g *globals) *cobra.Command {
	var (
		cfg       sidecar.Config
		service   string
		tokenFile string
		upstreams []string
		accessLog string
	)
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run a sidecar proxy for one service instance",
		Long: `Run a sidecar proxy. It attests once with a join token (--token-file, or
--token, or $BULWARK_JOIN_TOKEN), gets a short-lived SPIFFE identity that it renews by
itself, and then:
  - serves peers on --inbound (mTLS), authorizing every request before the app sees it;
  - serves the app on --outbound as an HTTP proxy (HTTP_PROXY=http://<outbound>):
    the app calls http://<service>.<namespace>/..., the proxy encrypts;
    CONNECT <service>.<namespace>:<port> opens a tunnel (TCP services; HTTP/1.1 or
    HTTP/2 inside for the others, as gRPC clients use a proxy); WebSocket and other
    upgrades pass; the outbound and --upstream listeners also take HTTP/2 without TLS;
  - hands peers' requests to the app as --app-protocol says: http (HTTP/1.1), http2
    or grpc (HTTP/2 without TLS, trailers kept), or tcp (TCP tunnels only; callers
    reach a tcp service through an --upstream listener or CONNECT);
  - serves the SPIFFE Workload API on --workload-api (unix:///path), so
    SPIFFE-aware apps get their SVID, bundles and JWT-SVIDs from the proxy;
  - serves Prometheus metrics on --metrics (/metrics, plain HTTP);
  - writes one JSON access log line per request (--access-log), and exports
    OpenTelemetry spans to --trace-endpoint (OTLP/gRPC) when given. Secrets
    (Authorization, cookies, tokens, JWTs, --redact-header and --redact-query
    names) are masked in logs and spans; the defaults cannot be turned off.
Listeners open only when their flag is given. --token is visible to other users of
the machine in the process list: prefer --token-file.
On SIGTERM or SIGINT the proxy shuts down gracefully: it tells the control plane it
drains, keeps serving for --drain-delay, stops accepting, lets in-flight requests
finish within --shutdown-timeout, then deregisters (its endpoint goes at once).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			if service == "" {
				return usagef("--service: required (namespace/name)")
			}
			svc, err := identity.ParseServiceRef(service, identity.DefaultNamespace)
			if err != nil {
				return usagef("--service: %v", err)
			}
			cfg.Service = svc
			switch cfg.AppProtocol {
			case proxy.ProtocolHTTP, proxy.ProtocolHTTP2, proxy.ProtocolGRPC, proxy.ProtocolTCP:
			default:
				return usagef("--app-protocol %q: want http, http2, grpc or tcp", cfg.AppProtocol)
			}
			if cfg.Token, err = joinToken(cfg.Token, tokenFile); err != nil {
				return err
			}
			if cfg.WorkloadAPI == "" && (cmd.Flags().Changed("workload-uid") || cmd.Flags().Changed("workload-gid")) {
				return usagef("--workload-uid and --workload-gid: only with --workload-api")
			}
			cfg.Upstreams = map[identity.ServiceRef]string{}
			for _, u := range upstreams {
				name, addr, ok := strings.Cut(u, "=")
				if !ok {
					return usagef("--upstream %q: want SERVICE=HOST:PORT", u)
				}
				ref, err := identity.ServiceFromHost(name, svc.Namespace)
				if err != nil {
					return usagef("--upstream %q: %q is not a service name", u, name)
				}
				cfg.Upstreams[ref] = addr
			}
			if err := checkTelemetryFlags(cfg.Trace, cfg.RedactHeaders, cfg.RedactQuery, cfg.LogHeaders); err != nil {
				return err
			}
			cfg.Logger = logger
			var closeLog func()
			if cfg.AccessLog, closeLog, err = openAccessLog(cmd.Context(), accessLog, logger); err != nil {
				return err
			}
			defer closeLog()
			return sidecar.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Control, "control", control.DefaultListen, "control plane gRPC address")
	f.StringVar(&cfg.CABundle, "ca-bundle", "", "PEM trust bundle to authenticate the control plane on first contact (not needed when the token carries a CA pin)")
	f.StringVar(&cfg.Token, "token", "", "join token (visible in the process list: prefer --token-file)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the join token")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "", "trust domain the control plane must be in (default: learned from its certificate)")
	f.StringVar(&service, "service", "", "service this proxy fronts, namespace/name (required)")
	f.StringVar(&cfg.App, "app", "", "local app address, host:port")
	f.StringVar(&cfg.AppProtocol, "app-protocol", "http", "protocol of the app: http (HTTP/1.1), http2 or grpc (HTTP/2 without TLS), or tcp (peers reach it through TCP tunnels)")
	f.StringVar(&cfg.Inbound, "inbound", "", "mTLS listener for peers, host:port")
	f.StringVar(&cfg.Advertise, "advertise", "", "address registered for peers (default: --inbound unless it is a wildcard)")
	f.StringVar(&cfg.Outbound, "outbound", "", "HTTP proxy listener for the app, loopback host:port")
	f.StringArrayVar(&upstreams, "upstream", nil, "per-upstream listener SERVICE=HOST:PORT: every request to it goes to SERVICE (repeatable)")
	f.StringVar(&cfg.Admin, "admin", "", "admin listener (/ready, /live, /config_dump), loopback host:port")
	f.StringVar(&cfg.DataDir, "data-dir", "", "keeps the SVID and last snapshot across restarts (optional)")
	f.StringVar(&cfg.Metrics, "metrics", "", "address to serve Prometheus /metrics on (plain HTTP; off when empty)")
	f.StringVar(&cfg.WorkloadAPI, "workload-api", "", "serve the SPIFFE Workload API on this socket, unix:///absolute/path (off when empty)")
	f.IntVar(&cfg.WorkloadUID, "workload-uid", workloadapi.NotSet, "uid allowed to connect to --workload-api, and the socket's owner (-1: the proxy's own uid)")
	f.IntVar(&cfg.WorkloadGID, "workload-gid", workloadapi.NotSet, "group of the --workload-api socket, which is then 0660 (-1: unchanged, socket 0600)")
	f.StringVar(&cfg.Locality, "locality", "", "locality of this instance, region/zone, for locality-aware load balancing (empty: unknown)")
	f.DurationVar(&cfg.DrainDelay, "drain-delay", sidecar.DefaultDrainDelay, "on SIGTERM, keep serving this long after telling callers the proxy drains (negative: no delay)")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", sidecar.DefaultShutdownTimeout, "on SIGTERM, how long in-flight requests may take to finish once the listeners stop accepting")
	f.StringVar(&accessLog, "access-log", "stderr", "where access log lines go: stderr (with the process log), off, or a file path (appended, created 0600)")
	f.StringArrayVar(&cfg.LogHeaders, "log-header", nil, "request header whose value the access log line carries, masked if sensitive (repeatable)")
	f.StringArrayVar(&cfg.RedactHeaders, "redact-header", nil, "header name to mask in logs and spans, in addition to the defaults (repeatable)")
	f.StringArrayVar(&cfg.RedactQuery, "redact-query", nil, "query parameter name to mask in logs and spans, in addition to the defaults (repeatable)")
	f.StringVar(&cfg.Trace.Endpoint, "trace-endpoint", "", "OTLP/gRPC collector for spans, host:port (tracing is off when empty)")
	f.Float64Var(&cfg.Trace.Sampling, "trace-sampling", telemetry.DefaultTraceSampling, "ratio of new traces recorded, 0 to 1 (a caller's sampled traceparent is always followed)")
	f.BoolVar(&cfg.Trace.Insecure, "trace-insecure", false, "send spans to --trace-endpoint without TLS")
	f.StringVar(&cfg.Trace.CAFile, "trace-ca", "", "PEM roots that verify --trace-endpoint (default: the system roots)")
	return cmd
}

// joinToken returns the join token of a proxy or gateway: --token, or the
// content of --token-file, else $BULWARK_JOIN_TOKEN.
func joinToken(token, tokenFile string) (string, error) {
	if tokenFile != "" {
		if token != "" {
			return "", usagef("--token and --token-file: give one")
		}
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		token = os.Getenv("BULWARK_JOIN_TOKEN")
	}
	return token, nil
}

// checkTelemetryFlags checks the --trace-*, --redact-* and --log-header
// flags of a proxy or gateway.
func checkTelemetryFlags(trace telemetry.TracingConfig, redactHeaders, redactQuery, logHeaders []string) error {
	if err := telemetry.ValidateTracing(trace); err != nil {
		return usagef("--%v", err)
	}
	if _, err := telemetry.NewRedactor(redactHeaders, redactQuery); err != nil {
		return usagef("--%v", err)
	}
	for _, h := range logHeaders {
		if !httpguts.ValidHeaderFieldName(h) {
			return usagef("--log-header %q: not a header name", h)
		}
	}
	return nil
}

// openAccessLog returns the access logger --access-log names: stderr (the
// process logger), off, or a file (appended, created 0600, written through
// a buffer flushed until ctx is done). The returned func closes the file;
// call it once the daemon has returned.
func openAccessLog(ctx context.Context, accessLog string, logger *slog.Logger) (*slog.Logger, func(), error) {
	switch accessLog {
	case "stderr":
		return logger, func() {}, nil
	case "off":
		return telemetry.Discard(), func() {}, nil
	case "":
		return nil, nil, usagef("--access-log: want stderr, off or a file path")
	}
	f, err := os.OpenFile(accessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("--access-log: %w", err)
	}
	// One write(2) per 64 KiB or 100 ms instead of one per request
	// (BENCHMARKS.md, Visibility).
	bw := telemetry.NewBufferedWriter(f, nil)
	flushCtx, stopFlush := context.WithCancel(ctx)
	go bw.Run(flushCtx)
	return telemetry.NewJSON(bw, slog.LevelInfo), func() {
		stopFlush()
		bw.Close()
		f.Close()
	}, nil
}

// addDaemonFlags adds the flags a proxy and a gateway share: the control
// plane, identity, admin, metrics, data dir, shutdown, logs and tracing.
func addDaemonFlags(cmd *cobra.Command, d *daemonFlags) {
	f := cmd.Flags()
	f.StringVar(&d.Control, "control", control.DefaultListen, "control plane gRPC address")
	f.StringVar(&d.CABundle, "ca-bundle", "", "PEM trust bundle to authenticate the control plane on first contact (not needed when the token carries a CA pin)")
	f.StringVar(&d.Token, "token", "", "join token (visible in the process list: prefer --token-file)")
	f.StringVar(&d.tokenFile, "token-file", "", "file holding the join token")
	f.StringVar(&d.TrustDomain, "trust-domain", "", "trust domain the control plane must be in (default: learned from its certificate)")
	f.StringVar(&d.Admin, "admin", "", "admin listener (/ready, /live, /config_dump), loopback host:port")
	f.StringVar(&d.DataDir, "data-dir", "", "keeps the SVID and last snapshot across restarts (optional)")
	f.StringVar(&d.Metrics, "metrics", "", "address to serve Prometheus /metrics on (plain HTTP; off when empty)")
	f.DurationVar(&d.DrainDelay, "drain-delay", sidecar.DefaultDrainDelay, "on SIGTERM, keep serving this long after telling the control plane (negative: no delay)")
	f.DurationVar(&d.ShutdownTimeout, "shutdown-timeout", sidecar.DefaultShutdownTimeout, "on SIGTERM, how long in-flight requests may take to finish once the listeners stop accepting")
	f.StringVar(&d.accessLog, "access-log", "stderr", "where access log lines go: stderr (with the process log), off, or a file path (appended, created 0600)")
	f.StringArrayVar(&d.LogHeaders, "log-header", nil, "request header whose value the access log line carries, masked if sensitive (repeatable)")
	f.StringArrayVar(&d.RedactHeaders, "redact-header", nil, "header name to mask in logs and spans, in addition to the defaults (repeatable)")
	f.StringArrayVar(&d.RedactQuery, "redact-query", nil, "query parameter name to mask in logs and spans, in addition to the defaults (repeatable)")
	f.StringVar(&d.Trace.Endpoint, "trace-endpoint", "", "OTLP/gRPC collector for spans, host:port (tracing is off when empty)")
	f.Float64Var(&d.Trace.Sampling, "trace-sampling", telemetry.DefaultTraceSampling, "ratio of new traces recorded, 0 to 1 (a caller's sampled traceparent is always followed)")
	f.BoolVar(&d.Trace.Insecure, "trace-insecure", false, "send spans to --trace-endpoint without TLS")
	f.StringVar(&d.Trace.CAFile, "trace-ca", "", "PEM roots that verify --trace-endpoint (default: the system roots)")
}

// daemonFlags are the values of addDaemonFlags.
type daemonFlags struct {
	Control, CABundle, Token, TrustDomain, Admin, DataDir, Metrics string
	DrainDelay, ShutdownTimeout                                    time.Duration
	LogHeaders, RedactHeaders, RedactQuery                         []string
	Trace                                                          telemetry.TracingConfig
	tokenFile, accessLog                                           string
}

func newGatewayCmd(g *globals) *cobra.Command {
	var (
		d       daemonFlags
		name    string
		address string
		listen  []string
		poll    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run an ingress gateway: edge listeners into the mesh",
		Long: `Run an ingress gateway for the Gateway resource --gateway (namespace/name). It
attests once with a join token for that service (--token-file, or --token, or
$BULWARK_JOIN_TOKEN), so its identity is spiffe://<td>/ns/<namespace>/sa/<name>: the
policies of the services it routes to must allow that identity. Then it serves the
Gateway's listeners, as the control plane sends them, on --address:
  - HTTPS: TLS 1.2+ (ECDHE with AES-GCM or ChaCha20-Poly1305 only), HTTP/2 and
    HTTP/1.1, the certificate picked by SNI among the listener's (Secrets, or files
    re-read within a second of a change, without dropping connections), HSTS if set;
  - HTTP: a 308 redirect to HTTPS (default), or the routes in plain HTTP;
  - TLS: passthrough, routed by SNI to services that terminate TLS themselves.
Requests are authorized by the AuthorizationPolicies selecting the gateway, then
forwarded into the mesh over mTLS. Listeners are re-opened, added and removed as the
Gateway changes; a port that cannot be bound is retried, and /ready on --admin says
so. Slow and greedy clients are cut off by the Gateway's limits (header, body and
idle timeouts, header size, HTTP/2 streams, connections per client IP, HTTP/2 rapid
reset and CONTINUATION floods). --listen NAME=HOST:PORT binds one listener elsewhere
(":0" for a free port: the log line "gateway listening" and /ready tell which).
On SIGTERM or SIGINT it stops accepting, lets in-flight requests finish within
--shutdown-timeout, and leaves the mesh.

Example:
  bulwark token create --service default/edge > /tmp/edge.token
  bulwark gateway --gateway default/edge --ca-bundle bulwark-data/bundle.pem \
    --token-file /tmp/edge.token --admin 127.0.0.1:15100 --listen https=0.0.0.0:8443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			if name == "" {
				return usagef("--gateway: required (namespace/name)")
			}
			ref, err := identity.ParseServiceRef(name, identity.DefaultNamespace)
			if err != nil {
				return usagef("--gateway: %v", err)
			}
			if address == "" || net.ParseIP(address) == nil {
				return usagef("--address %q: want an IP address", address)
			}
			binds := map[string]string{}
			for _, l := range listen {
				n, addr, ok := strings.Cut(l, "=")
				if !ok || n == "" {
					return usagef("--listen %q: want NAME=HOST:PORT", l)
				}
				if _, _, err := net.SplitHostPort(addr); err != nil {
					return usagef("--listen %q: %v", l, err)
				}
				if _, dup := binds[n]; dup {
					return usagef("--listen %q: listener %s given twice", l, n)
				}
				binds[n] = addr
			}
			if poll <= 0 {
				return usagef("--cert-poll-interval %s: want a positive duration", poll)
			}
			token, err := joinToken(d.Token, d.tokenFile)
			if err != nil {
				return err
			}
			if err := checkTelemetryFlags(d.Trace, d.RedactHeaders, d.RedactQuery, d.LogHeaders); err != nil {
				return err
			}
			accessLog, closeLog, err := openAccessLog(cmd.Context(), d.accessLog, logger)
			if err != nil {
				return err
			}
			defer closeLog()
			return gateway.Run(cmd.Context(), gateway.Config{
				Control: d.Control, CABundle: d.CABundle, Token: token, TrustDomain: d.TrustDomain,
				Gateway: ref, Address: address, Listen: binds,
				Admin: d.Admin, Metrics: d.Metrics, DataDir: d.DataDir,
				Logger: logger, AccessLog: accessLog, CertPollInterval: poll,
				DrainDelay: d.DrainDelay, ShutdownTimeout: d.ShutdownTimeout, Trace: d.Trace,
				RedactHeaders: d.RedactHeaders, RedactQuery: d.RedactQuery, LogHeaders: d.LogHeaders,
			})
		},
	}
	addDaemonFlags(cmd, &d)
	f := cmd.Flags()
	f.StringVar(&name, "gateway", "", "the Gateway resource served, namespace/name: also the gateway's service and identity (required)")
	f.StringVar(&address, "address", gateway.DefaultAddress, "IP address every listener binds")
	f.StringArrayVar(&listen, "listen", nil, "bind one listener elsewhere, NAME=HOST:PORT (port 0: a free one) (repeatable)")
	f.DurationVar(&poll, "cert-poll-interval", gateway.DefaultCertPollInterval, "how often certificate files are checked for changes")
	return cmd
}
