// Package gateway is the composition root of `bulwark gateway`, the mesh's
// ingress gateway: it owns the edge listeners (HTTPS, HTTP and TLS
// passthrough) of the Gateway resource the control plane sends, their
// certificates (Secrets of the snapshot and files on disk, picked by SNI,
// reloaded without dropping connections) and the protection of an
// internet-facing process from slow and greedy clients (header, body and
// idle timeouts, header size, concurrent HTTP/2 streams, connections per
// client IP, HTTP/2 rapid reset and CONTINUATION floods, and request
// smuggling: HTTP/1.1 is read through internal/framing, over TLS too).
//
// The gateway is a mesh workload like any proxy: internal/sidecar gives it
// its identity (spiffe://<td>/ns/<namespace>/sa/<name>, from a join token),
// its snapshots, reports, metrics, tracing and graceful shutdown, with no
// inbound listener and no app (nobody reaches it through the mesh, and it
// never registers an address). The requests it accepts go to the proxy
// engine (internal/proxy), which routes, authenticates (JWT), authorizes
// (the policies selecting the gateway) and forwards them into the mesh as
// the gateway's own calls. This package never routes: it serves sockets.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"regexp"
	"sync"
	"time"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/run"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Config configures a gateway.
type Config struct {
	// Control is the control plane's gRPC address. Required.
	Control string
	// CABundle is a PEM file of the mesh's root CAs, to authenticate the
	// control plane on first contact. Optional when Token carries a CA
	// pin.
	CABundle string
	// Token is the one-time join token of the gateway's service. Optional
	// when DataDir holds an unexpired SVID.
	Token string
	// TrustDomain, if set, is the trust domain the control plane must be
	// in. Default: learned from its certificate.
	TrustDomain string
	// Gateway is the Gateway resource this process serves,
	// namespace/name: also its service and identity. Required.
	Gateway identity.ServiceRef
	// Address is the host every listener binds. Default: "0.0.0.0".
	Address string
	// Listen overrides the bind address (host:port) of listeners by name.
	// Default: Address and the listener's port.
	Listen map[string]string
	// Admin is the loopback admin listener (/ready, /live, /config_dump);
	// "" for none. /ready is 200 once the gateway holds an SVID and its
	// Gateway, with every listener bound and every HTTPS listener holding
	// a certificate; its JSON lists the listeners' addresses and what is
	// missing.
	Admin string
	// Metrics is the address of /metrics (Prometheus, plain HTTP); "" for
	// none.
	Metrics string
	// DataDir keeps the SVID and the last snapshot across restarts; ""
	// for none.
	DataDir string
	// Logger and AccessLog, default discard.
	Logger    *slog.Logger
	AccessLog *slog.Logger
	// Clock, default the wall clock.
	Clock clock.Clock
	// CertPollInterval is how often certificate files are checked for
	// changes. Default: 1s.
	CertPollInterval time.Duration
	// DrainDelay and ShutdownTimeout are the sidecar's (graceful
	// shutdown); ShutdownTimeout also bounds the in-flight requests of a
	// listener the Gateway removes. Defaults: the sidecar's.
	DrainDelay      time.Duration
	ShutdownTimeout time.Duration
	// Trace configures tracing: off when Trace.Endpoint is empty.
	Trace telemetry.TracingConfig
	// RedactHeaders, RedactQuery and LogHeaders are the sidecar's.
	RedactHeaders, RedactQuery, LogHeaders []string
	// Ready, if set, is called once the gateway holds an SVID and its
	// Gateway, with every listener of it bound.
	Ready func(Addrs)
}

// Addrs are the addresses a running gateway bound.
type Addrs struct {
	// Listeners are the bound addresses of the Gateway's listeners, by
	// name.
	Listeners map[string]string
	// Admin and Metrics are "" when not served.
	Admin   string
	Metrics string
}

// listenerName is a GatewayListener name (config validation's rule).
var listenerName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (c *Config) validate() error {
	if c.Gateway.IsZero() {
		return errors.New("gateway: required (namespace/name)")
	}
	if c.Address != "" {
		if _, _, err := net.SplitHostPort(net.JoinHostPort(c.Address, "0")); err != nil || net.ParseIP(c.Address) == nil && c.Address != "localhost" {
			return fmt.Errorf("address: %q: want an IP address", c.Address)
		}
	}
	for name, addr := range c.Listen {
		if !listenerName.MatchString(name) {
			return fmt.Errorf("listen %s: not a listener name", name)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("listen %s: %w", name, err)
		}
	}
	if c.CertPollInterval < 0 {
		return fmt.Errorf("cert-poll-interval: %s: want a positive duration", c.CertPollInterval)
	}
	return nil
}

// engine is what the gateway needs of the proxy engine (*proxy.Engine):
// the Gateway of its newest snapshot, and the edge's handlers.
type engine interface {
	Edge
	// Gateway returns the Gateway of the snapshot in force (nil when it
	// has none), the TLS Secrets it names, and the snapshot's version.
	Gateway() (gw *config.Gateway, secrets map[string]*apiv1.TLSSecret, version int64)
}

// Interface guard: the proxy engine serves the gateway.
var _ engine = (*proxy.Engine)(nil)

// Run runs the gateway until ctx is done, then shuts it down gracefully
// (the sidecar's shutdown: stop accepting, finish in-flight requests within
// ShutdownTimeout, leave the mesh). It returns an error for bad
// configuration and for permanent failures such as a rejected join token.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("gateway config: %w", err)
	}
	logger := telemetry.OrDiscard(cfg.Logger)
	g := &gatewayRun{cfg: cfg, kick: make(chan struct{}, 1)}
	return sidecar.Run(ctx, sidecar.Config{
		Control: cfg.Control, CABundle: cfg.CABundle, Token: cfg.Token, TrustDomain: cfg.TrustDomain,
		Service: cfg.Gateway, Admin: cfg.Admin, Metrics: cfg.Metrics, DataDir: cfg.DataDir,
		Logger: logger, AccessLog: cfg.AccessLog, Clock: cfg.Clock,
		DrainDelay: cfg.DrainDelay, ShutdownTimeout: cfg.ShutdownTimeout, Trace: cfg.Trace,
		RedactHeaders: cfg.RedactHeaders, RedactQuery: cfg.RedactQuery, LogHeaders: cfg.LogHeaders,
		OnSnapshot: g.snapshotApplied,
		Serve:      g.serve,
		Readiness:  g.readiness,
		Ready:      g.sidecarReady,
	})
}

// gatewayRun ties a Server to the sidecar that runs it.
type gatewayRun struct {
	cfg  Config
	kick chan struct{}

	// srv and eng are set by serve, before the sidecar's tasks start.
	srv *Server
	eng engine

	mu        sync.Mutex
	sidecar   *sidecar.Addrs
	listeners map[string]string
	readyDone bool
}

// snapshotApplied is the sidecar's OnSnapshot: it wakes the reconcile
// loop without blocking the subscriber.
func (g *gatewayRun) snapshotApplied() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// serve is the sidecar's Serve: it builds the Server on the engine.
func (g *gatewayRun) serve(env sidecar.Env) ([]run.Task, error) {
	var eng engine = env.Engine
	logger := env.Logger.With(telemetry.KeyComponent, "gateway")
	srv, err := NewServer(ServerConfig{
		Edge: eng, Address: g.cfg.Address, Listen: g.cfg.Listen, Logger: logger, Clock: g.cfg.Clock,
		Registry: env.Registry, CertPollInterval: g.cfg.CertPollInterval, ShutdownTimeout: g.cfg.ShutdownTimeout,
		AddServer: env.AddServer, AddListener: env.AddListener, Ready: g.listenersReady,
	})
	if err != nil {
		return nil, err
	}
	g.srv, g.eng = srv, eng
	return []run.Task{srv.Run, func(ctx context.Context) error { return g.reconcile(ctx, logger) }}, nil
}

// reconcile applies the Gateway of every new snapshot to the Server.
func (g *gatewayRun) reconcile(ctx context.Context, logger *slog.Logger) error {
	last := int64(-1)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-g.kick:
		}
		gw, secrets, version := g.eng.Gateway()
		if version == last {
			continue
		}
		last = version
		if gw == nil {
			logger.Warn("the snapshot carries no Gateway for this gateway: no listener is served",
				telemetry.KeyVersion, version, telemetry.KeyService, g.cfg.Gateway.String())
		}
		if err := g.srv.Apply(gw, secrets); err != nil {
			if errors.Is(err, errStopped) {
				return nil
			}
			logger.Error("gateway configuration not applied, keeping the previous one",
				telemetry.KeyVersion, version, telemetry.KeyErr, err)
		}
	}
}

// readiness is the sidecar's Readiness: the Server's status.
func (g *gatewayRun) readiness() ([]string, map[string]string) {
	if g.srv == nil {
		return []string{"gateway not started"}, nil
	}
	st := g.srv.Status()
	return st.Problems, st.Listeners
}

func (g *gatewayRun) sidecarReady(a sidecar.Addrs) {
	g.mu.Lock()
	g.sidecar = &a
	g.mu.Unlock()
	g.maybeReady()
}

func (g *gatewayRun) listenersReady(l map[string]string) {
	g.mu.Lock()
	g.listeners = maps.Clone(l)
	g.mu.Unlock()
	g.maybeReady()
}

// maybeReady calls Config.Ready once both the sidecar (SVID and snapshot)
// and the listeners are ready.
func (g *gatewayRun) maybeReady() {
	g.mu.Lock()
	if g.readyDone || g.sidecar == nil || g.listeners == nil {
		g.mu.Unlock()
		return
	}
	g.readyDone = true
	a := Addrs{Listeners: g.listeners, Admin: g.sidecar.Admin, Metrics: g.sidecar.Metrics}
	g.mu.Unlock()
	if g.cfg.Ready != nil {
		g.cfg.Ready(a)
	}
}
