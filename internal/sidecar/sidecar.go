// Package sidecar is the composition root of `bulwark proxy`: it obtains the
// proxy's identity (internal/svid), keeps the forwarding engine
// (internal/proxy) on the newest snapshot, and serves the inbound mTLS
// listener, the app's outbound listener, per-upstream listeners, the
// loopback admin endpoints, Prometheus metrics and the SPIFFE Workload API
// (internal/svid/workloadapi), until its context is done. It reports the
// engine's denials to the control plane, aggregated, every 10 seconds on
// the Subscribe stream's connection (report.go).
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/attest"
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

	// workloadSocket is the path of WorkloadAPI, set by validate.
	workloadSocket string
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
	c.Logger = telemetry.OrDiscard(c.Logger)
	c.AccessLog = telemetry.OrDiscard(c.AccessLog)
	c.Clock = clock.OrReal(c.Clock)
	return td, nil
}

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
	engine, err := proxy.New(proxy.Config{
		Service: cfg.Service, App: cfg.App, SVID: mgr, Bundle: mgr,
		Logger: logger, AccessLog: cfg.AccessLog.With(telemetry.KeyComponent, "proxy", telemetry.KeyService, cfg.Service.String()),
		Clock: cfg.Clock, Metrics: reg, OnDeny: reports.record,
	})
	if err != nil {
		return err
	}
	defer engine.Close()
	sub = &subscriber{
		client: client, mgr: mgr, engine: engine, service: cfg.Service, advertise: cfg.Advertise,
		dataDir: cfg.DataDir, clock: cfg.Clock, logger: logger, applied: make(chan struct{}),
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
	listenApp := func(addr string, h http.Handler) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		opened = append(opened, ln)
		srv := plainServer(h, logger)
		srv.ConnState = framing.ConnState
		tasks = append(tasks, serve(srv, framing.NewListener(ln, framing.Config{
			MaxHeaderBytes: srv.MaxHeaderBytes, Logger: logger, OnReject: framingRejected,
		})))
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
		ln, err := listenApp(addr, engine.Upstream(svc))
		if err != nil {
			return fmt.Errorf("upstream %s: %w", svc, err)
		}
		addrs.Upstreams[svc] = ln.Addr().String()
	}
	if cfg.Admin != "" {
		ln, err := listen(cfg.Admin, adminHandler(mgr, engine, sub, exposure, cfg.Clock.Now))
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
	logger.Info("proxy starting", telemetry.KeyAddress, cfg.Control)
	started = true
	return run.Group(ctx, tasks...)
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
// done, then shuts it down, giving in-flight requests a few seconds.
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

// adminHandler serves /live, /ready and /config_dump on the loopback admin
// listener. /ready is 200 once the proxy holds an unexpired SVID and a
// snapshot; its JSON body says why not, and warns of what weakens it.
func adminHandler(mgr *svid.Manager, engine *proxy.Engine, sub *subscriber, exposure *exposureCheck, now func() time.Time) http.Handler {
	mux := http.NewServeMux()
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
		st.Ready = st.Identity != "" && st.SnapshotVersion > 0 && !expired
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
	return mux
}

type readyStatus struct {
	Ready           bool     `json:"ready"`
	Identity        string   `json:"identity,omitempty"`
	Instance        string   `json:"instance,omitempty"`
	SVIDExpiry      string   `json:"svidExpiry,omitempty"`
	SnapshotVersion int64    `json:"snapshotVersion"`
	BundleVersion   int64    `json:"bundleVersion,omitempty"`
	Connected       bool     `json:"connected"`
	LastError       string   `json:"lastError,omitempty"`
	Warnings        []string `json:"warnings,omitempty"`
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
