// Package sidecar is the composition root of `bulwark proxy`: it obtains the
// proxy's identity (internal/svid), keeps the forwarding engine
// (internal/proxy) on the newest snapshot, and serves the inbound mTLS
// listener, the app's outbound listener, per-upstream listeners, the
// loopback admin endpoints, Prometheus metrics and the SPIFFE Workload API
// (internal/svid/workloadapi), until its context is done; then it shuts
// down gracefully (drain, delay, finish in-flight requests, leave: see
// shutdown). POST /drain on the admin listener drains it without stopping
// it. It reports the engine's denials to the control plane, aggregated,
// every 10 seconds on the Subscribe stream's connection (report.go).
// It owns the process's tracer provider (Config.Trace: spans exported over
// OTLP, the queue flushed on the way out) and the Redactor that masks
// secrets in its logs, spans and reports.
//
// Only listeners whose flags are given are opened, so many proxies run on
// one host. The inbound listener opens only once the proxy holds an SVID.
// The sidecar never imports control-plane packages (store, ca, keymanager):
// a test enforces it.
package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/framing"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/run"
	"github.com/bulwarkmesh/bulwark/internal/svid"
	"github.com/bulwarkmesh/bulwark/internal/svid/workloadapi"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Config configures a sidecar.
type Config struct {
	// Control is the control plane's gRPC address. Required.
	Control string
	// CABundle is a PEM file of the mesh's root CAs, used to authenticate
	// the control plane on first contact. Optional when Token carries a CA
	// pin.
	CABundle string
	// Token is the one-time join token. Optional when DataDir holds an
	// unexpired SVID of this service.
	Token string
	// TrustDomain, if set, is the trust domain the control plane must be
	// in. Default: learned from the control plane's certificate.
	TrustDomain string
	// Service is the service this proxy fronts. Required.
	Service identity.ServiceRef
	// App is the local app's host:port; "" for a client-only proxy.
	App string
	// AppProtocol is the app's protocol: "http" (HTTP/1.1, the default
	// when empty), "http2" or "grpc" (HTTP/2 without TLS, prior
	// knowledge), or "tcp" (peers reach it through TCP tunnels only). It is
	// sent to the control plane, which tells callers.
	AppProtocol string
	// Inbound is the mTLS listener address for peers; "" for none.
	Inbound string
	// Advertise is the address registered for peers. Default: Inbound,
	// unless that has a wildcard host (then it is required).
	Advertise string
	// Outbound is the app's HTTP proxy listener; "" for none.
	Outbound string
	// Upstreams are per-upstream local listeners: every request to the
	// address goes to the service.
	Upstreams map[identity.ServiceRef]string
	// Admin is the loopback admin listener (/ready, /live, /config_dump);
	// "" for none.
	Admin string
	// Metrics is the address /metrics (Prometheus, plain HTTP) is served
	// on; "" for none. Any address is accepted: it is a scrape port.
	Metrics string
	// WorkloadAPI is the SPIFFE Workload API socket, unix:///absolute/path;
	// "" for none.
	WorkloadAPI string
	// WorkloadUID is the only uid allowed to connect to the Workload API
	// and the socket's owner; WorkloadGID, the socket's group (making it
	// 0660). -1 (workloadapi.NotSet) leaves each unset: then only the
	// proxy's own uid may connect. Note that 0 is root, not unset. Used
	// only with WorkloadAPI.
	WorkloadUID, WorkloadGID int
	// DataDir keeps the SVID and the last snapshot across restarts; "" for
	// none.
	DataDir string
	// Logger and AccessLog, default discard.
	Logger    *slog.Logger
	AccessLog *slog.Logger
	// Clock, default the wall clock.
	Clock clock.Clock
	// Ready, if set, is called once the proxy holds an SVID and a first
	// snapshot, with the bound addresses.
	Ready func(Addrs)
	// Locality is the proxy's "region/zone" (either part may be empty),
	// sent to the control plane for locality-aware load balancing; ""
	// unknown. Each part is at most 63 of [a-z0-9-_.].
	Locality string
	// DrainDelay is how long a stopping proxy keeps serving after telling
	// the control plane that it drains, so that its callers receive the
	// snapshot marking it draining before it stops accepting. Default: 2s;
	// negative: no delay.
	DrainDelay time.Duration
	// ShutdownTimeout bounds how long in-flight requests may run once the
	// listeners stopped accepting; then their connections are closed.
	// Default: 15s.
	ShutdownTimeout time.Duration
	// Trace configures tracing: off when Trace.Endpoint is empty. Run sets
	// its Service and Logger. Trace.Sampling zero records no new trace
	// (the CLI's default is telemetry.DefaultTraceSampling).
	Trace telemetry.TracingConfig
	// RedactHeaders and RedactQuery are header and query parameter names
	// masked in logs, spans and reports, in addition to the defaults
	// (telemetry.Redactor; the defaults cannot be turned off).
	RedactHeaders, RedactQuery []string
	// LogHeaders are request headers the access log line carries,
	// masked. Default: none.
	LogHeaders []string

	// OnSnapshot, if set, is called after the engine put a snapshot in
	// force (also the last-known-good one from disk), on the subscriber's
	// goroutine: it must not block long.
	OnSnapshot func()
	// Serve, if set, is called once, when the engine exists and before any
	// snapshot is applied, to serve more listeners with it (the gateway's):
	// the tasks it returns run in the sidecar's group, and an error stops
	// the sidecar before it starts.
	Serve func(Env) ([]run.Task, error)
	// Readiness, if set, is asked by the admin /ready: the proxy is ready
	// only when it returns no problems, which /ready lists under
	// "notReady"; listeners (name to bound address) are shown under
	// "listeners".
	Readiness func() (problems []string, listeners map[string]string)

	// workloadSocket is the path of WorkloadAPI, and locality the parsed
	// Locality, set by validate.
	workloadSocket string
	locality       balancer.Locality
}

// Env is what Config.Serve gets to serve more listeners with the proxy's
// engine.
type Env struct {
	// Engine is the forwarding engine, kept on the newest snapshot.
	Engine *proxy.Engine
	// Logger is the proxy's logger.
	Logger *slog.Logger
	// Registry is where metrics are registered: they are served on
	// Config.Metrics.
	Registry prometheus.Registerer
	// SVIDReady is closed once the proxy holds an SVID.
	SVIDReady <-chan struct{}
	// AddServer adds a server of the data path: the graceful shutdown
	// stops it with the others (stop accepting, finish in-flight requests
	// within Config.ShutdownTimeout). It reports false, and adds nothing,
	// once the shutdown began: the caller must not serve then.
	AddServer func(*http.Server) bool
	// AddListener adds a listener the graceful shutdown closes (it stops
	// accepting); one added once the shutdown began is closed at once.
	AddListener func(net.Listener)
}

// Addrs are the addresses a running sidecar bound.
type Addrs struct {
	Inbound   string
	Outbound  string
	Admin     string
	Metrics   string
	Upstreams map[identity.ServiceRef]string
}

func (c *Config) validate() (spiffeid.TrustDomain, error) {
	var td spiffeid.TrustDomain
	if c.Control == "" {
		return td, errors.New("control: required")
	}
	if c.Service.IsZero() {
		return td, errors.New("service: required")
	}
	if c.TrustDomain != "" {
		if strings.ContainsAny(c.TrustDomain, ":/") {
			return td, fmt.Errorf("trust-domain: %q: want a bare name, not a SPIFFE ID", c.TrustDomain)
		}
		var err error
		if td, err = spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
			return td, fmt.Errorf("trust-domain: %w", err)
		}
	}
	if c.Inbound != "" && c.App == "" {
		return td, errors.New("app: required with inbound")
	}
	if c.Inbound != "" && c.Advertise == "" {
		host, _, err := net.SplitHostPort(c.Inbound)
		if err != nil {
			return td, fmt.Errorf("inbound: %w", err)
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return td, errors.New("advertise: required when inbound listens on a wildcard address")
		}
		c.Advertise = c.Inbound
	}
	if c.Admin != "" {
		if err := requireLoopback(c.Admin); err != nil {
			return td, fmt.Errorf("admin: %w", err)
		}
	}
	if c.Outbound != "" {
		if err := requireLoopback(c.Outbound); err != nil {
			return td, fmt.Errorf("outbound: %w", err)
		}
	}
	for svc, addr := range c.Upstreams {
		if err := requireLoopback(addr); err != nil {
			return td, fmt.Errorf("upstream %s: %w", svc, err)
		}
	}
	if c.Metrics != "" {
		if _, _, err := net.SplitHostPort(c.Metrics); err != nil {
			return td, fmt.Errorf("metrics: %w", err)
		}
	}
	if c.WorkloadAPI != "" {
		sock, err := socketPath(c.WorkloadAPI)
		if err != nil {
			return td, fmt.Errorf("workload-api: %w", err)
		}
		c.workloadSocket = sock
		if c.WorkloadUID < workloadapi.NotSet {
			return td, fmt.Errorf("workload-uid: %d is neither a uid nor -1 (not set)", c.WorkloadUID)
		}
		if c.WorkloadGID < workloadapi.NotSet {
			return td, fmt.Errorf("workload-gid: %d is neither a gid nor -1 (not set)", c.WorkloadGID)
		}
	}
	if c.Token == "" && c.DataDir == "" {
		return td, errors.New("token: required (or a data dir holding an SVID)")
	}
	loc, err := balancer.ParseLocality(c.Locality)
	if err != nil {
		return td, fmt.Errorf("locality: %w", err)
	}
	c.locality = loc
	if c.DrainDelay == 0 {
		c.DrainDelay = DefaultDrainDelay
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.ShutdownTimeout < 0 {
		return td, fmt.Errorf("shutdown-timeout: %s: want a positive duration", c.ShutdownTimeout)
	}
	c.Logger = telemetry.OrDiscard(c.Logger)
	c.AccessLog = telemetry.OrDiscard(c.AccessLog)
	c.Clock = clock.OrReal(c.Clock)
	return td, nil
}

// Defaults of the graceful shutdown.
const (
	// DefaultDrainDelay is Config.DrainDelay's default.
	DefaultDrainDelay = 2 * time.Second
	// DefaultShutdownTimeout is Config.ShutdownTimeout's default.
	DefaultShutdownTimeout = 15 * time.Second
)

// socketPath returns the path of a unix:///absolute/path address, as
// SPIFFE clients (go-spiffe's workloadapi.WithAddr) read it.
func socketPath(addr string) (string, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return "", fmt.Errorf("%q: %w", addr, err)
	}
	switch {
	case u.Scheme != "unix":
		return "", fmt.Errorf("%q: want unix:///absolute/path", addr)
	case u.Opaque != "" || u.Host != "" || u.User != nil:
		return "", fmt.Errorf("%q: want unix:///absolute/path (three slashes)", addr)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", fmt.Errorf("%q: a socket path has no query or fragment", addr)
	case !filepath.IsAbs(u.Path) || filepath.Clean(u.Path) != u.Path:
		return "", fmt.Errorf("%q: want a clean absolute path", addr)
	}
	return u.Path, nil
}

// requireLoopback refuses listeners that would expose the app's side of the
// proxy (plain HTTP, no authentication) beyond this host.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s must be a loopback address (it serves plain HTTP without authentication)", addr)
	}
	return nil
}

// anchors returns how the proxy authenticates the control plane on first
// contact: the CA bundle file, else the token's CA pin.
func (c *Config) anchors() (func([]*x509.Certificate) ([]*x509.Certificate, error), error) {
	if c.CABundle != "" {
		b, err := os.ReadFile(c.CABundle)
		if err != nil {
			return nil, fmt.Errorf("ca-bundle: %w", err)
		}
		var roots []*x509.Certificate
		for rest := b; ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("ca-bundle %s: %w", c.CABundle, err)
			}
			roots = append(roots, cert)
		}
		if len(roots) == 0 {
			return nil, fmt.Errorf("ca-bundle %s: no PEM certificates", c.CABundle)
		}
		return func([]*x509.Certificate) ([]*x509.Certificate, error) { return roots, nil }, nil
	}
	if c.Token == "" {
		// Renewal with a stored SVID needs no bootstrap trust.
		return func([]*x509.Certificate) ([]*x509.Certificate, error) {
			return nil, errors.New("no ca-bundle and no join token")
		}, nil
	}
	p, err := attest.ParseToken(c.Token)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	if p.Pin == "" {
		return nil, errors.New("ca-bundle: required (the join token carries no CA pin)")
	}
	return func(chain []*x509.Certificate) ([]*x509.Certificate, error) {
		root, err := mtls.PinnedAnchor(chain, p.Pin)
		if err != nil {
			return nil, err
		}
		return []*x509.Certificate{root}, nil
	}, nil
}

// Run runs the sidecar until ctx is done. It returns an error for bad
// configuration and for permanent failures such as a rejected join token.
func Run(ctx context.Context, cfg Config) error {
	wantTD, err := cfg.validate()
	if err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	if cfg.Token != "" {
		if _, err := attest.ParseToken(cfg.Token); err != nil {
			return fmt.Errorf("proxy config: token: %w", err)
		}
	}
	anchors, err := cfg.anchors()
	if err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	logger := cfg.Logger.With(telemetry.KeyComponent, "proxy", telemetry.KeyService, cfg.Service.String())

	client := &controlClient{addr: cfg.Control, anchors: anchors, wantTD: wantTD}
	mgr, err := svid.New(svid.Config{
		Service: cfg.Service, Token: cfg.Token, DataDir: cfg.DataDir, Issuer: client,
		Clock: cfg.Clock, Logger: logger,
	})
	if err != nil {
		return err
	}
	client.mgr = mgr
	// One registry for every metric of the proxy, served on --metrics.
	reg := telemetry.NewRegistry()
	framingRejected, err := newFramingCounter(reg)
	if err != nil {
		return err
	}
	// Denials are reported on the Subscribe stream's connection.
	var sub *subscriber
	reports, err := newReporter(func(ctx context.Context, req *apiv1.ReportRequest) error { return sub.report(ctx, req) },
		client.report, cfg.Clock, logger, reg)
	if err != nil {
		return err
	}
	redactor, err := telemetry.NewRedactor(cfg.RedactHeaders, cfg.RedactQuery)
	if err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	// The tracer provider lives as long as the proxy: spans still queued
	// are exported on the way out.
	cfg.Trace.Service, cfg.Trace.Logger = cfg.Service.String(), logger
	tracing, err := telemetry.NewTracing(cfg.Trace)
	if err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), traceFlushTimeout)
		defer cancel()
		if err := tracing.Shutdown(fctx); err != nil {
			logger.Warn("trace flush failed", telemetry.KeyErr, err)
		}
	}()
	var tracer trace.TracerProvider
	if tracing.Enabled() {
		tracer = tracing.Provider()
	}
	engine, err := proxy.New(proxy.Config{
		Service: cfg.Service, App: cfg.App, SVID: mgr, Bundle: mgr,
		Logger: logger, AccessLog: cfg.AccessLog.With(telemetry.KeyComponent, "proxy", telemetry.KeyService, cfg.Service.String()),
		Clock: cfg.Clock, Metrics: engineMetrics(reg, cfg.Metrics), OnDeny: reports.record, OnRequest: reports.observe, OnAuthFailure: reports.authFailure,
		AppProtocol: cfg.AppProtocol, Locality: cfg.locality,
		Tracer: tracer, Redactor: redactor, LogHeaders: cfg.LogHeaders,
	})
	if err != nil {
		return err
	}
	defer engine.Close()
	sub = &subscriber{
		client: client, mgr: mgr, engine: engine, service: cfg.Service, advertise: cfg.Advertise,
		locality: cfg.Locality, protocol: cfg.AppProtocol, dataDir: cfg.DataDir, clock: cfg.Clock, logger: logger, applied: make(chan struct{}),
		onSnapshot: cfg.OnSnapshot,
	}
	if sub.snapshots, err = newSnapshotMetrics(reg, engine.Version); err != nil {
		return err
	}
	var wapi *workloadapi.Server
	if cfg.WorkloadAPI != "" {
		wapi, err = workloadapi.New(workloadapi.Config{
			Socket: cfg.workloadSocket, UID: cfg.WorkloadUID, GID: cfg.WorkloadGID,
			Source: mgr, Logger: logger, Clock: cfg.Clock,
		})
		if err != nil {
			return fmt.Errorf("proxy config: workload-api: %w", err)
		}
	}
	exposure := &exposureCheck{app: cfg.App, logger: logger}
	// After a renewal, connections to peers are re-made with the new SVID,
	// well before peers would cut the old one off at its expiry.
	mgr.OnRotate(engine.RetireConnections)

	// Listeners that do not need an SVID open now, so the ports are known
	// and an app that starts early gets a clear 503 instead of a refused
	// connection.
	var (
		addrs   = Addrs{Upstreams: map[identity.ServiceRef]string{}}
		tasks   = []run.Task{mgr.Run, reports.run}
		opened  []net.Listener
		started bool
		// dataPath are the servers of requests (inbound, outbound,
		// upstreams) that the graceful shutdown stops first.
		dataPath = &serverSet{}
	)
	defer func() {
		// Listeners of a sidecar that failed to start are closed here;
		// once serving, their servers close them.
		if !started {
			for _, ln := range opened {
				ln.Close()
			}
		}
	}()
	listen := func(addr string, h http.Handler) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		opened = append(opened, ln)
		tasks = append(tasks, serve(plainServer(h, logger), ln))
		return ln, nil
	}
	// The app's listeners frame HTTP/1.1 strictly (internal/framing):
	// smuggling is refused on the raw bytes, before net/http parses them.
	// HTTP/2 with prior knowledge (gRPC clients) passes unguarded: its
	// framing is unambiguous.
	serveApp := func(ln net.Listener, h http.Handler) {
		srv := proxy.AppServer(h, logger)
		dataPath.add(srv)
		tasks = append(tasks, serve(srv, framing.NewListener(ln, framing.Config{
			MaxHeaderBytes: srv.MaxHeaderBytes, Logger: logger, OnReject: framingRejected, AllowH2Preface: true,
		})))
	}
	listenApp := func(addr string, h http.Handler) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		opened = append(opened, ln)
		serveApp(ln, h)
		return ln, nil
	}
	if cfg.Outbound != "" {
		ln, err := listenApp(cfg.Outbound, engine.Outbound())
		if err != nil {
			return fmt.Errorf("outbound: %w", err)
		}
		addrs.Outbound = ln.Addr().String()
	}
	for svc, addr := range cfg.Upstreams {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("upstream %s: %w", svc, err)
		}
		opened = append(opened, ln)
		// The engine tunnels the connections of a TCP service and hands
		// the others to the HTTP server.
		conns := proxy.NewConnListener(ln.Addr())
		serveApp(conns, engine.Upstream(svc))
		dataPath.addListener(ln)
		tasks = append(tasks, func(ctx context.Context) error { return engine.ServeUpstream(ctx, ln, svc, conns.Push) })
		addrs.Upstreams[svc] = ln.Addr().String()
	}
	if cfg.Admin != "" {
		ln, err := listen(cfg.Admin, adminHandler(mgr, engine, sub, exposure, cfg.Readiness, cfg.Clock.Now, logger))
		if err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		addrs.Admin = ln.Addr().String()
	}
	if cfg.Metrics != "" {
		ln, err := listen(cfg.Metrics, metricsHandler(reg, mgr.Status, engine.BundleVersion, cfg.Clock.Now))
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		addrs.Metrics = ln.Addr().String()
	}
	if cfg.Serve != nil {
		more, err := cfg.Serve(Env{
			Engine: engine, Logger: logger, Registry: reg, SVIDReady: mgr.Ready(),
			AddServer: dataPath.add, AddListener: dataPath.addListener,
		})
		if err != nil {
			return err
		}
		tasks = append(tasks, more...)
	}
	var inboundLn net.Listener
	if cfg.Inbound != "" {
		// Bind now (the port must be known to register it) but accept
		// only once an SVID is held.
		if inboundLn, err = net.Listen("tcp", cfg.Inbound); err != nil {
			return fmt.Errorf("inbound: %w", err)
		}
		addrs.Inbound = inboundLn.Addr().String()
		if cfg.Advertise == cfg.Inbound {
			sub.advertise = addrs.Inbound // resolves ":0"
		}
	}
	defer func() {
		if inboundLn != nil {
			inboundLn.Close()
		}
	}()

	tasks = append(tasks,
		func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return nil
			case <-mgr.Ready():
			}
			sub.loadLastKnownGood()
			return sub.run(ctx)
		},
		func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return nil
			case <-mgr.Ready():
			}
			if inboundLn == nil {
				<-ctx.Done()
				return nil
			}
			ln, tlsCfg := engine.InboundListener(inboundLn, mgr.ID().TrustDomain())
			inboundLn = nil
			srv := inboundServer(engine.Inbound(), tlsCfg, logger)
			if !dataPath.add(srv) {
				// Shutting down before the first SVID: never accept.
				ln.Close()
				<-ctx.Done()
				return nil
			}
			logger.Info("inbound listening", telemetry.KeyAddress, addrs.Inbound, telemetry.KeyIdentity, mgr.ID().String())
			return serve(srv, ln)(ctx)
		},
		exposure.run,
		func(ctx context.Context) error {
			// The Workload API serves the proxy's SVID: it starts once
			// there is one.
			select {
			case <-ctx.Done():
				return nil
			case <-mgr.Ready():
			}
			if wapi == nil {
				<-ctx.Done()
				return nil
			}
			logger.Info("workload api starting", telemetry.KeyAddress, cfg.WorkloadAPI)
			return wapi.Run(ctx)
		},
		func(ctx context.Context) error {
			// Ready: an SVID and a first snapshot.
			select {
			case <-ctx.Done():
				return nil
			case <-sub.applied:
			}
			logger.Info("proxy ready", telemetry.KeyIdentity, mgr.ID().String(), telemetry.KeyInstance, mgr.Instance(),
				telemetry.KeyInbound, addrs.Inbound, telemetry.KeyOutbound, addrs.Outbound)
			if cfg.Ready != nil {
				cfg.Ready(addrs)
			}
			<-ctx.Done()
			return nil
		},
	)
	// The tasks run under their own context, which the graceful shutdown
	// cancels once it is over: when ctx is done (SIGTERM, SIGINT), the
	// data path keeps serving through the drain delay and the in-flight
	// requests.
	tasks = append(tasks, func(tctx context.Context) error {
		select {
		case <-tctx.Done():
			return nil // another task failed: no graceful shutdown
		case <-ctx.Done():
		}
		shutdown(tctx, cfg, sub, dataPath, inboundLn != nil || addrs.Inbound != "", logger)
		return nil // ends the group: the other tasks stop
	})
	logger.Info("proxy starting", telemetry.KeyAddress, cfg.Control)
	started = true
	return run.Group(context.WithoutCancel(ctx), tasks...)
}

// shutdown is the graceful shutdown of a proxy whose context is done:
//  1. it tells the control plane it drains (Status{draining}), so callers
//     stop picking it;
//  2. it keeps serving for cfg.DrainDelay, so that they receive the
//     snapshot saying so (skipped when it has no inbound, which nobody
//     calls, or no stream to the control plane, which could not pass the
//     word on);
//  3. it stops accepting on the data-path listeners and lets in-flight
//     requests finish within cfg.ShutdownTimeout, then closes what is
//     left;
//  4. it tells the control plane it leaves (Status{leaving}: its endpoint
//     goes at once, without the disconnect grace period) and closes the
//     stream.
//
// Then the group ends, stopping the admin and metrics listeners, the
// Workload API and the final denial report. Each step is logged.
func shutdown(ctx context.Context, cfg Config, sub *subscriber, dataPath *serverSet, inbound bool, logger *slog.Logger) {
	told := sub.setDraining(true)
	logger.Info("shutdown: draining", telemetry.KeyPhase, "drain", telemetry.KeyDetail, fmt.Sprintf("control plane told: %v", told))
	if delay := cfg.DrainDelay; delay > 0 && inbound && told {
		t := cfg.Clock.NewTimer(delay)
		logger.Info("shutdown: serving while callers learn the proxy drains", telemetry.KeyPhase, "delay", telemetry.KeyDelay, delay.String())
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
		}
	}
	logger.Info("shutdown: stopped accepting, finishing in-flight requests", telemetry.KeyPhase, "stop",
		telemetry.KeyDelay, cfg.ShutdownTimeout.String())
	if err := dataPath.shutdown(ctx, cfg.Clock, cfg.ShutdownTimeout); err != nil {
		logger.Warn("shutdown: in-flight requests cut off", telemetry.KeyPhase, "stop", telemetry.KeyErr, err)
	}
	lctx, cancel := context.WithTimeout(ctx, leaveTimeout)
	defer cancel()
	left := sub.leave(lctx)
	logger.Info("shutdown: left the mesh", telemetry.KeyPhase, "leave", telemetry.KeyDetail, fmt.Sprintf("control plane told: %v", left))
}

// traceFlushTimeout bounds the export of the spans still queued when the
// proxy stops.
const traceFlushTimeout = 5 * time.Second

// leaveTimeout bounds the wait for the control plane to record that a
// proxy leaves.
const leaveTimeout = 5 * time.Second

// serverSet is the data-path servers a graceful shutdown stops together,
// and the raw listeners (per-upstream TCP) it closes.
type serverSet struct {
	mu        sync.Mutex
	servers   []*http.Server
	listeners []net.Listener
	stopping  bool
}

// addListener adds a listener the shutdown closes (it stops accepting).
func (ss *serverSet) addListener(ln net.Listener) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.stopping {
		ln.Close()
		return
	}
	ss.listeners = append(ss.listeners, ln)
}

// add adds srv; it reports false (and adds nothing) once shutdown began.
func (ss *serverSet) add(srv *http.Server) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.stopping {
		return false
	}
	ss.servers = append(ss.servers, srv)
	// A server its owner shuts down (a gateway listener's server
	// replaced on a settings change) leaves the set: its owner finishes
	// it, and the set does not grow with every change.
	srv.RegisterOnShutdown(func() { ss.remove(srv) })
	return true
}

// remove drops srv from the set.
func (ss *serverSet) remove(srv *http.Server) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.servers = slices.DeleteFunc(ss.servers, func(s *http.Server) bool { return s == srv })
}

// shutdown stops every server from accepting and waits for their
// in-flight requests, up to timeout on clock c; then it closes their
// connections and returns an error.
func (ss *serverSet) shutdown(ctx context.Context, c clock.Clock, timeout time.Duration) error {
	ss.mu.Lock()
	ss.stopping = true
	servers := slices.Clone(ss.servers)
	for _, ln := range ss.listeners {
		ln.Close()
	}
	ss.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := c.NewTimer(timeout)
	defer t.Stop()
	go func() {
		select {
		case <-t.C():
			cancel()
		case <-sctx.Done():
		}
	}()
	errs := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errs <- srv.Shutdown(sctx) }()
	}
	var first error
	for range servers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		for _, srv := range servers {
			_ = srv.Close()
		}
		return fmt.Errorf("after %s: %w", timeout, first)
	}
	return nil
}

// plainServer serves the loopback listeners (outbound, upstreams, admin).
func plainServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		// The engine answers "OPTIONS *" (400: not origin form), not net/http.
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            10 * time.Second,
		IdleTimeout:                  120 * time.Second,
		MaxHeaderBytes:               64 << 10,
		ErrorLog:                     slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
}

// inboundServer serves the mTLS listener: HTTP/2 only, from peer sidecars
// (and SPIFFE-aware clients), which multiplex every request on a few
// long-lived connections. The TLS config already refuses a client that does
// not negotiate h2 (mtls.Mesh.ServerConfig); Protocols says the same to
// net/http, so that ServeTLS does not add http/1.1 to the ALPN list and
// would not serve HTTP/1.1 on a connection without h2.
func inboundServer(h http.Handler, tlsCfg *tls.Config, logger *slog.Logger) *http.Server {
	var h2Only http.Protocols
	h2Only.SetHTTP2(true)
	return &http.Server{
		Handler:                      h,
		Protocols:                    &h2Only,
		DisableGeneralOptionsHandler: true,
		TLSConfig:                    tlsCfg,
		ReadHeaderTimeout:            10 * time.Second,
		IdleTimeout:                  5 * time.Minute,
		MaxHeaderBytes:               64 << 10,
		HTTP2:                        &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ErrorLog:                     slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
}

// serve runs srv on ln (with TLS when srv.TLSConfig is set) until ctx is
// done, then shuts it down, giving in-flight requests a few seconds. A
// server the graceful shutdown stopped first (http.ErrServerClosed) waits
// for ctx.
func serve(srv *http.Server, ln net.Listener) run.Task {
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() {
			if srv.TLSConfig != nil {
				errc <- srv.ServeTLS(ln, "", "")
			} else {
				errc <- srv.Serve(ln)
			}
		}()
		select {
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				// The graceful shutdown stopped it: the task ends with
				// the others.
				<-ctx.Done()
				return nil
			}
			return fmt.Errorf("serve %s: %w", ln.Addr(), err)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			<-errc
			return nil
		}
	}
}

// adminHandler serves /live, /ready, /config_dump and /drain on the
// loopback admin listener. /ready is 200 once the proxy holds an unexpired
// SVID and a snapshot and is not draining; its JSON body says why not, and
// warns of what weakens it. POST /drain makes the proxy drain (the control
// plane marks its endpoint draining, and /ready answers 503 so that load
// balancers take it out); DELETE /drain undoes it.
func adminHandler(mgr *svid.Manager, engine *proxy.Engine, sub *subscriber, exposure *exposureCheck,
	readiness func() ([]string, map[string]string), now func() time.Time, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	drain := func(d bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := checkAdminWrite(r); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			told := sub.setDraining(d)
			logger.Info("drain set through the admin endpoint", telemetry.KeyDetail, fmt.Sprintf("draining %v, control plane told: %v", d, told))
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(DrainStatus{Draining: d, ControlPlaneTold: told})
		}
	}
	mux.HandleFunc("POST /drain", drain(true))
	mux.HandleFunc("DELETE /drain", drain(false))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		connected, lkg, lastErr := sub.status()
		svidStatus := mgr.Status()
		st := readyStatus{
			Identity:        mgr.ID().String(),
			Instance:        mgr.Instance(),
			SnapshotVersion: engine.Version(),
			BundleVersion:   engine.BundleVersion(),
			Connected:       connected,
			LastError:       lastErr,
			Warnings:        exposure.warnings(),
		}
		expired := false
		if exp := svidStatus.Expiry; !exp.IsZero() {
			st.SVIDExpiry = exp.UTC().Format(time.RFC3339)
			if expired = !now().Before(exp); expired {
				st.Warnings = append(st.Warnings, "the SVID has expired and could not be renewed: peers refuse this proxy")
			} else if svidStatus.Overdue {
				st.Warnings = append(st.Warnings, "the SVID expires soon and its renewal keeps failing: check the control plane")
			}
		}
		if lkg {
			st.Warnings = append(st.Warnings, "serving the last-known-good snapshot from disk: the control plane has not answered yet")
		}
		st.Draining = sub.isDraining()
		if readiness != nil {
			st.NotReady, st.Listeners = readiness()
		}
		st.Ready = st.Identity != "" && st.SnapshotVersion > 0 && !expired && !st.Draining && len(st.NotReady) == 0
		code := http.StatusOK
		if !st.Ready {
			code = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(engine.Dump())
	})
	// Every admin answer (the snapshot in /config_dump, /ready) is for
	// this host only: a Host that is not a loopback address is a page
	// that reached the port through DNS rebinding.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkLoopbackHost(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type readyStatus struct {
	Ready           bool     `json:"ready"`
	Identity        string   `json:"identity,omitempty"`
	Instance        string   `json:"instance,omitempty"`
	SVIDExpiry      string   `json:"svidExpiry,omitempty"`
	SnapshotVersion int64    `json:"snapshotVersion"`
	BundleVersion   int64    `json:"bundleVersion,omitempty"`
	Connected       bool     `json:"connected"`
	Draining        bool     `json:"draining,omitempty"`
	LastError       string   `json:"lastError,omitempty"`
	Warnings        []string `json:"warnings,omitempty"`
	// NotReady and Listeners come from Config.Readiness (the gateway).
	NotReady  []string          `json:"notReady,omitempty"`
	Listeners map[string]string `json:"listeners,omitempty"`
}

// DrainStatus is the answer of POST and DELETE /drain on the admin
// listener.
type DrainStatus struct {
	// Draining is the proxy's state now.
	Draining bool `json:"draining"`
	// ControlPlaneTold is true when the control plane was told at once;
	// otherwise it is told when the proxy reconnects.
	ControlPlaneTold bool `json:"controlPlaneTold"`
}

// checkAdminWrite refuses a state-changing admin request that a web page
// could have sent: the admin listener is loopback-only, but a browser on
// the same host can still POST to it (a "simple" cross-origin request) or
// reach it through DNS rebinding. Such requests carry an Origin header or
// a Host that is not a loopback address.
func checkAdminWrite(r *http.Request) error {
	if r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "" {
		return errors.New("admin: requests from web pages are refused")
	}
	return checkLoopbackHost(r)
}

// checkLoopbackHost refuses a request whose Host is not a loopback address
// or localhost.
func checkLoopbackHost(r *http.Request) error {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("admin: host %q is not a loopback address", r.Host)
	}
	return nil
}

// exposureCheck warns when the app also listens on a non-loopback address:
// callers could then reach it without going through the sidecar.
type exposureCheck struct {
	app    string
	logger *slog.Logger

	mu   sync.Mutex
	last []string
}

func (x *exposureCheck) run(ctx context.Context) error {
	if x.app == "" {
		<-ctx.Done()
		return nil
	}
	_, portStr, err := net.SplitHostPort(x.app)
	if err != nil {
		<-ctx.Done()
		return nil
	}
	port, _ := strconv.Atoi(portStr)
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		exposed, err := exposedListeners(port)
		if err == nil {
			x.mu.Lock()
			changed := fmt.Sprint(exposed) != fmt.Sprint(x.last)
			x.last = exposed
			x.mu.Unlock()
			if changed && len(exposed) > 0 {
				x.logger.Warn("app also listens on a non-loopback address: callers can bypass the sidecar; bind it to 127.0.0.1",
					telemetry.KeyAddress, fmt.Sprint(exposed))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (x *exposureCheck) warnings() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.last) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("app port is also listening on %v: callers can bypass the sidecar; bind the app to 127.0.0.1", x.last)}
}
