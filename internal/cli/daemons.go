package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/net/http/httpguts"

	"github.com/bulwarkmesh/bulwark/internal/buildinfo"
	"github.com/bulwarkmesh/bulwark/internal/control"
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
			if tokenFile != "" {
				if cfg.Token != "" {
					return usagef("--token and --token-file: give one")
				}
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				cfg.Token = strings.TrimSpace(string(b))
			}
			if cfg.Token == "" {
				cfg.Token = os.Getenv("BULWARK_JOIN_TOKEN")
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
			if err := telemetry.ValidateTracing(cfg.Trace); err != nil {
				return usagef("--%v", err)
			}
			if _, err := telemetry.NewRedactor(cfg.RedactHeaders, cfg.RedactQuery); err != nil {
				return usagef("--%v", err)
			}
			for _, h := range cfg.LogHeaders {
				if !httpguts.ValidHeaderFieldName(h) {
					return usagef("--log-header %q: not a header name", h)
				}
			}
			cfg.Logger, cfg.AccessLog = logger, logger
			switch accessLog {
			case "stderr":
			case "off":
				cfg.AccessLog = telemetry.Discard()
			case "":
				return usagef("--access-log: want stderr, off or a file path")
			default:
				f, err := os.OpenFile(accessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
				if err != nil {
					return fmt.Errorf("--access-log: %w", err)
				}
				defer f.Close()
				// One write(2) per 64 KiB or 100 ms instead of one per
				// request (BENCHMARKS.md, Visibility).
				bw := telemetry.NewBufferedWriter(f, nil)
				defer bw.Close()
				flushCtx, stopFlush := context.WithCancel(cmd.Context())
				defer stopFlush()
				go bw.Run(flushCtx)
				cfg.AccessLog = telemetry.NewJSON(bw, slog.LevelInfo)
			}
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
