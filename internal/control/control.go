// Package control is the composition root of `bulwark control`, the control
// plane: it opens the store, loads or creates the CAs, bootstraps the
// operator credential, and runs the gRPC API for proxies (attestation, SVID
// renewal, snapshots), the admin API for operators, the state builder that
// keeps snapshots current, and the janitor, until its context is done.
package control

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/ca/rotation"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/dashboard"
	"github.com/bulwarkmesh/bulwark/internal/fileutil"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/run"
	"github.com/bulwarkmesh/bulwark/internal/store/storemetrics"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Defaults of Config.
const (
	DefaultListen      = "127.0.0.1:8443"
	DefaultAdminListen = "127.0.0.1:8444"
	DefaultSVIDTTL     = time.Hour
	MinSVIDTTL         = time.Minute
	MaxSVIDTTL         = 24 * time.Hour
)

// Files in the data directory.
const (
	storeFile      = "bulwark.db"
	keysDir        = "keys"
	bundleFile     = "bundle.pem"
	credentialFile = "operator/admin.yaml"
)

// Config configures the control plane.
type Config struct {
	// DataDir holds the store, the CA keys, the trust bundle and the
	// bootstrap operator credential. Required; created 0700.
	DataDir string
	// TrustDomain of the mesh. Default: "bulwark.local".
	TrustDomain string
	// Listen is the gRPC address for proxies. Default: 127.0.0.1:8443.
	Listen string
	// AdminListen is the admin API address. Default: 127.0.0.1:8444.
	AdminListen string
	// SVIDTTL is the lifetime of workload SVIDs. Default: 1h; minimum 1m,
	// maximum 24h.
	SVIDTTL time.Duration
	// MetricsListen, if set, serves Prometheus /metrics over plain HTTP.
	MetricsListen string
	// CAKeyPassphrase or CAKeyFile encrypt the CA keys at rest (at most
	// one). With neither, a key file is created in DataDir.
	CAKeyPassphrase string
	CAKeyFile       string
	// Store is the store backend: "bolt" (default; DataDir/bulwark.db) or
	// "etcd" (Etcd says where). The CA keys, trust bundle and credential
	// stay in DataDir either way.
	Store string
	Etcd  EtcdConfig
	// Logger, default discard.
	Logger *slog.Logger
	// Clock, default the wall clock.
	Clock clock.Clock
	// Ready, if set, is called once both APIs accept connections and the
	// first mesh state is built.
	Ready func(Endpoints)
}

// Endpoints tells how to reach a running control plane.
type Endpoints struct {
	// GRPC and Admin are dialable host:port addresses.
	GRPC  string
	Admin string
	// TrustDomain of the mesh.
	TrustDomain string
	// BundlePath is the trust bundle file (PEM roots).
	BundlePath string
	// CredentialPath is the admin operator's credential file.
	CredentialPath string
	// Pin is the SPKI pin of the root CA, as carried by join tokens.
	Pin string
}

func (c *Config) validate() (spiffeid.TrustDomain, error) {
	if c.DataDir == "" {
		return spiffeid.TrustDomain{}, errors.New("data-dir: required")
	}
	if c.TrustDomain == "" {
		c.TrustDomain = identity.DefaultTrustDomain
	}
	if strings.ContainsAny(c.TrustDomain, ":/") {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust-domain: %q: want a bare name such as %q, not a SPIFFE ID", c.TrustDomain, identity.DefaultTrustDomain)
	}
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return td, fmt.Errorf("trust-domain: %w", err)
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	for flag, addr := range map[string]string{"listen": c.Listen, "admin-listen": c.AdminListen, "metrics": c.MetricsListen} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return td, fmt.Errorf("%s: %w", flag, err)
		}
	}
	switch {
	case c.SVIDTTL == 0:
		c.SVIDTTL = DefaultSVIDTTL
	case c.SVIDTTL < MinSVIDTTL:
		return td, fmt.Errorf("svid-ttl: %s is below the minimum %s", c.SVIDTTL, MinSVIDTTL)
	case c.SVIDTTL > MaxSVIDTTL:
		return td, fmt.Errorf("svid-ttl: %s is above the maximum %s: short-lived certificates are what limits a stolen one", c.SVIDTTL, MaxSVIDTTL)
	}
	if err := c.validateStore(); err != nil {
		return td, err
	}
	c.Logger = telemetry.OrDiscard(c.Logger)
	c.Clock = clock.OrReal(c.Clock)
	return td, nil
}

// Run runs the control plane until ctx is done or a part fails.
func Run(ctx context.Context, cfg Config) error {
	td, err := cfg.validate()
	if err != nil {
		return fmt.Errorf("control plane config: %w", err)
	}
	logger := cfg.Logger.With(telemetry.KeyComponent, "control")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	// The keys first: a wrong passphrase must stop the start before
	// anything (the store included) is written.
	keys, err := openKeys(&cfg, logger)
	if err != nil {
		return err
	}
	baseStore, err := openStore(ctx, &cfg, logger)
	if err != nil {
		return err
	}
	defer baseStore.Close()
	// The metrics of every part, served with --metrics only.
	metricsReg := telemetry.NewRegistry()
	ctlMetrics, err := newControlMetrics(metricsReg, cfg.Clock)
	if err != nil {
		return err
	}
	// Every part reads and writes the store through its metrics.
	st, err := storemetrics.Wrap(baseStore, storemetrics.Config{Registerer: metricsReg, Clock: cfg.Clock})
	if err != nil {
		return err
	}
	caCfg := ca.Config{TrustDomain: td, Store: st, Keys: keys, Clock: cfg.Clock, Logger: logger, SVIDTTL: cfg.SVIDTTL, Signed: ctlMetrics.signed}
	workloadCA, err := ca.New(ctx, caCfg)
	if err != nil {
		return fmt.Errorf("load workload ca: %w", err)
	}
	operatorCA, err := ca.NewOperatorCA(ctx, caCfg)
	if err != nil {
		return fmt.Errorf("load operator ca: %w", err)
	}
	jwtAuthority, err := ca.NewJWTAuthority(ctx, caCfg)
	if err != nil {
		return fmt.Errorf("load jwt-svid key: %w", err)
	}
	bundlePath := filepath.Join(cfg.DataDir, bundleFile)
	if err := writeBundle(bundlePath, workloadCA.Roots()); err != nil {
		return err
	}
	// The pin of join tokens is the root the control plane's serving
	// chain ends in.
	pin := func() string { return mtls.SPKIPin(workloadCA.SigningRoot()) }

	reg, err := registry.New(registry.Config{Store: st, Clock: cfg.Clock})
	if err != nil {
		return err
	}
	if err := reg.MarkAllDisconnected(ctx); err != nil {
		return err
	}
	tokens, err := jointoken.New(jointoken.Config{Store: st, Clock: cfg.Clock, Logger: logger})
	if err != nil {
		return err
	}
	// Secrets are sealed at rest under the CA keys' key-encryption key
	// (docs/secrets.md).
	resources := resource.New(st, cfg.Clock).WithSealer(keys)
	// The tamper-evident audit log (docs/audit.md): its checkpoint key is
	// kept with the CA keys.
	auditLog, err := audit.Open(ctx, audit.Config{Store: st, Keys: keys, Clock: cfg.Clock, Logger: logger})
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	// The alert engine is built later; failures reach its AuthFailureBurst
	// rules through this variable once it exists.
	var alertsOnFailure atomic.Pointer[alert.Engine]
	auditAgg, err := audit.NewAggregator(audit.AggregatorConfig{Log: auditLog, Clock: cfg.Clock, Logger: logger,
		OnFailure: func(addr, id, reason string) {
			if e := alertsOnFailure.Load(); e != nil {
				e.ObserveAuthFailure(addr, id, reason, cfg.Clock.Now())
			}
		}})
	if err != nil {
		return err
	}
	hub := push.NewHub(logger)
	rotator, err := rotation.New(rotation.Config{CA: workloadCA, Fleet: registryFleet{reg: reg, clock: cfg.Clock}, Clock: cfg.Clock, Logger: logger,
		Audit: func(ctx context.Context, action, detail string) error {
			return auditLog.Append(ctx, audit.Entry{Actor: audit.ActorSystem, Action: action, Kind: "CA", Outcome: audit.OutcomeStarted, Detail: detail})
		},
	})
	if err != nil {
		return err
	}
	if err := registerHub(metricsReg, hub); err != nil {
		return err
	}
	// The keys of JWT providers with a jwksURI, fetched here and pushed to
	// proxies (which never fetch them).
	jwks, err := newJWKSKeeper(st, metricsReg, cfg.Clock, logger)
	if err != nil {
		return err
	}
	builder := &stateBuilder{
		store: st, resources: resources, registry: reg, ca: workloadCA, jwt: jwtAuthority, hub: hub, td: td, logger: logger,
		jwks: jwks,
		onBundle: func(version int64, roots []*x509.Certificate) {
			if err := writeBundle(bundlePath, roots); err != nil {
				logger.Error("write trust bundle", telemetry.KeyErr, err)
			}
			logger.Info("trust bundle", telemetry.KeyVersion, version, telemetry.KeyCount, len(roots))
		},
	}

	grpcLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer grpcLn.Close()
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		return fmt.Errorf("admin-listen: %w", err)
	}
	defer adminLn.Close()

	controlID := identity.ControlPlaneID(td)
	grpcDNS, grpcIPs := sans(grpcLn.Addr())
	grpcCert, err := newServingCert(cfg.Clock, logger, func(pub *ecdsa.PublicKey) ([]*x509.Certificate, error) {
		return workloadCA.SignServing(pub, controlID, grpcDNS, grpcIPs, 24*time.Hour)
	})
	// Re-issue at once when the signing intermediate changes (rotation):
	// proxies drop the old root at the end of a root rotation.
	grpcCert.current = func(leaf *x509.Certificate) bool {
		return bytes.Equal(leaf.AuthorityKeyId, workloadCA.SigningAuthority())
	}
	if err != nil {
		return err
	}
	adminDNS, adminIPs := sans(adminLn.Addr())
	adminCert, err := newServingCert(cfg.Clock, logger, func(pub *ecdsa.PublicKey) ([]*x509.Certificate, error) {
		c, err := operatorCA.SignServer(pub, adminDNS, adminIPs, 90*24*time.Hour)
		return []*x509.Certificate{c}, err
	})
	if err != nil {
		return err
	}

	credPath := filepath.Join(cfg.DataDir, credentialFile)
	adminURL := "https://" + dialable(adminLn.Addr())
	if err := bootstrapOperator(credPath, operatorCA, adminURL, cfg.Clock.Now(), logger); err != nil {
		return err
	}

	grpcSrv := grpc.NewServer(
		grpc.Creds(countHandshakes(credentials.NewTLS(mtls.ControlServerConfig(grpcCert.GetCertificate, workloadCA, td)),
			ctlMetrics.handshakeObserver(listenerGRPC, func(addr, reason string) { auditAgg.Failure(audit.FailureProxy, addr, "", reason) }))),
		grpc.MaxRecvMsgSize(256<<10),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Stop waits for handlers, so a Subscribe's last write (its
		// disconnect) lands before the store closes.
		grpc.WaitForHandlers(true),
	)
	// Denials reported by proxies, in memory only (docs/metrics.md).
	denials := newDenialLog(defaultMaxDenials)
	// The service graph proxies report, in memory only (docs/graph.md).
	edges := graph.NewStore(graph.StoreConfig{Clock: cfg.Clock})
	// Anomaly alerts (docs/alerts.md): AlertRules over the proxies'
	// reports, the registry and the metrics.
	alerts, alertsTask, err := newAlerts(ctx, st, resources, reg, metricsReg, cfg.Clock, logger)
	if err != nil {
		return err
	}
	alertsOnFailure.Store(alerts)
	apiv1.RegisterControlServer(grpcSrv, meteredControl{metrics: ctlMetrics, controlService: &controlService{
		td: td, ca: workloadCA, jwt: jwtAuthority, attestor: tokens, registry: reg, hub: hub, clock: cfg.Clock, logger: logger,
		acked: rotator.Nudge, denials: denials, graph: edges, alerts: alerts, auditLog: auditLog, auditAgg: auditAgg,
	}})

	// The dashboard (docs/dashboard.md) serves /ui/ on the admin listener
	// through the admin API's own routes, as the browser's operator.
	hosts := slices.Clone(adminDNS)
	for _, ip := range adminIPs {
		hosts = append(hosts, ip.String())
	}
	var adminAPI dashboard.API
	dash, err := dashboard.New(dashboard.Config{
		API:          apiFunc(func(w http.ResponseWriter, r *http.Request, op string) { adminAPI.ServeOperator(w, r, op) }),
		CertOperator: admin.CertificateOperator,
		Hosts:        hosts,
		Failure:      func(addr, reason string) { auditAgg.Failure(audit.FailureOperator, addr, "", reason) },
		Clock:        cfg.Clock,
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	adminHandler, err := admin.New(admin.Config{
		// Every resource write commits with its audit entries.
		Resources: resources.WithAudit(auditLog), Audit: auditLog, Failures: auditAgg,
		Registry: reg, Tokens: tokens, TrustDomain: td.Name(),
		Pin: pin, Logger: logger,
		CA: caAdmin{td: td.Name(), ca: workloadCA, rot: rotator, jwt: jwtAuthority},
		// RBAC: Roles and RoleBindings are checked against the store on
		// every request; operators are signed by the operator CA.
		Store: st, Operators: operatorCA,
		Denials: denials.source(cfg.Clock),
		Edges:   edges.List,
		Alerts:  alertSource(alerts, cfg.Clock),
		Logins:  dash,
	})
	if err != nil {
		return err
	}
	adminAPI = adminHandler
	adminMux := http.NewServeMux()
	adminMux.Handle("/ui/", dash)
	adminMux.Handle("/ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	adminMux.Handle("/", adminHandler)
	adminHandshakes := telemetry.NewHandshakeCounter(ctlMetrics.handshakeObserver(listenerAdmin,
		func(addr, reason string) { auditAgg.Failure(audit.FailureOperator, addr, "", reason) }))
	adminSrv := &http.Server{
		Handler:           adminMux,
		TLSConfig:         adminHandshakes.Config(mtls.AdminServerConfig(adminCert.GetCertificate, admin.OperatorRoots(operatorCA.Root()))),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}

	ep := Endpoints{
		GRPC: dialable(grpcLn.Addr()), Admin: dialable(adminLn.Addr()), TrustDomain: td.Name(),
		BundlePath: bundlePath, CredentialPath: credPath, Pin: pin(),
	}
	logger.Info("control plane starting", telemetry.KeyTrustDomain, td.Name(), telemetry.KeyAddress, ep.GRPC,
		telemetry.KeyURL, adminURL, telemetry.KeyDataDir, cfg.DataDir)

	tasks := []run.Task{
		builder.Run,
		jwks.Run,
		rotator.Run,
		alertsTask,
		auditLog.Run,
		auditAgg.Run,
		janitor(tokens, reg, cfg.Clock, logger),
		serveGRPC(grpcSrv, grpcLn),
		serveHTTPS(adminSrv, adminHandshakes.Listener(adminLn)),
		func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return nil
			case <-hub.Ready():
			}
			logger.Info("control plane ready", telemetry.KeyAddress, ep.GRPC, telemetry.KeyURL, adminURL)
			if cfg.Ready != nil {
				cfg.Ready(ep)
			}
			<-ctx.Done()
			return nil
		},
	}
	if cfg.MetricsListen != "" {
		reg := metricsReg
		reg.MustRegister(newCACollector(workloadCA, cfg.Clock))
		metricsLn, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		defer metricsLn.Close()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", telemetry.MetricsHandler(reg))
		metricsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
		tasks = append(tasks, servePlain(metricsSrv, metricsLn))
		logger.Info("metrics listening", telemetry.KeyAddress, metricsLn.Addr().String())
	}
	return run.Group(ctx, tasks...)
}

// writeBundle writes the trust bundle for proxies' --ca-bundle.
func writeBundle(path string, roots []*x509.Certificate) error {
	var b []byte
	for _, c := range roots {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := fileutil.WriteAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("write trust bundle: %w", err)
	}
	return nil
}

// janitor prunes expired join tokens and revoked serials, and ends the
// grace period of disconnected proxies.
func janitor(tokens *jointoken.JoinTokens, reg *registry.Registry, c clock.Clock, logger *slog.Logger) run.Task {
	const every = 30 * time.Second
	return func(ctx context.Context) error {
		for {
			if _, err := tokens.Prune(ctx); err != nil && ctx.Err() == nil {
				logger.Warn("prune join tokens", telemetry.KeyErr, err)
			}
			next, err := reg.Sweep(ctx)
			if err != nil && ctx.Err() == nil {
				logger.Warn("sweep registry", telemetry.KeyErr, err)
			}
			if err := reg.PruneRevoked(ctx); err != nil && ctx.Err() == nil {
				logger.Warn("prune revoked serials", telemetry.KeyErr, err)
			}
			if next <= 0 || next > every {
				next = every
			}
			t := c.NewTimer(next + 10*time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C():
			}
		}
	}
}

func serveGRPC(srv *grpc.Server, ln net.Listener) run.Task {
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve grpc: %w", err)
		case <-ctx.Done():
			// Subscribe streams never end by themselves: stop at once;
			// proxies keep their last snapshot and reconnect.
			srv.Stop()
			<-errc
			return nil
		}
	}
}

func serveHTTPS(srv *http.Server, ln net.Listener) run.Task {
	return serveHTTP("admin api", srv, func() error { return srv.ServeTLS(ln, "", "") })
}

// servePlain serves srv over plain HTTP (metrics).
func servePlain(srv *http.Server, ln net.Listener) run.Task {
	return serveHTTP("metrics", srv, func() error { return srv.Serve(ln) })
}

// serveHTTP runs serve until ctx is done, then shuts srv down.
func serveHTTP(what string, srv *http.Server, serve func() error) run.Task {
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- serve() }()
		select {
		case err := <-errc:
			return fmt.Errorf("serve %s: %w", what, err)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			<-errc
			return nil
		}
	}
}

// apiFunc adapts a function to dashboard.API.
type apiFunc func(w http.ResponseWriter, r *http.Request, operator string)

// ServeOperator implements dashboard.API.
func (f apiFunc) ServeOperator(w http.ResponseWriter, r *http.Request, operator string) {
	f(w, r, operator)
}
