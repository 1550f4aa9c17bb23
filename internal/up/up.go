// Package up is the composition root of `bulwark up -f mesh.yaml`: a whole
// mesh on one machine. It runs an embedded control plane, applies the file's
// policies through the admin API, starts every service's sidecar (each
// attesting with its own join token) and then its app bound to 127.0.0.1, and
// a local client sidecar whose per-upstream port reaches the entry service.
// Every Gateway of the file runs as a `bulwark gateway` process with its own
// join token, its listeners on 127.0.0.1; a Secret a Gateway names that the
// file does not define gets a self-signed certificate for localhost, made at
// start. A file's spec.demoIssuer runs a small token issuer for the demo.
// It streams one readable combined log and stops everything on Ctrl-C.
package up

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/exampleapp"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/run"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Config configures `bulwark up`.
type Config struct {
	// File is the mesh file: one Mesh document and the mesh's resources.
	File string
	// DataDir is the control plane's data dir. Default: a temporary
	// directory removed on exit.
	DataDir string
	// Listen is the address of the entry URL. Default: 127.0.0.1:8080.
	Listen string
	// Exe is the bulwark binary that runs example apps. Default: this
	// process's executable.
	Exe string
	// Out gets the banner; Log the combined log.
	Out io.Writer
	Log io.Writer
	// LogLevel of the combined log. Default: info.
	LogLevel slog.Level
	// Ready, if set, is called once every part is running.
	Ready func(Info)
	// GatewayListen overrides the addresses of Gateway listeners, which
	// bind 127.0.0.1 on the listener's port by default. A key is a
	// listener name that only one Gateway of the file has, or
	// "namespace/gateway/listener"; a value is host:port (port 0: any free
	// port).
	GatewayListen map[string]string
	// IssuerListen overrides spec.demoIssuer.listen (a loopback address).
	IssuerListen string
	// AdminListen is the control plane's admin API and dashboard address.
	// Default: any free loopback port (`bulwark up` passes 127.0.0.1:8444).
	AdminListen string
	// Clock dates the self-signed certificates and the demo tokens.
	// Default: the wall clock.
	Clock clock.Clock
}

// Info tells how to reach a running mesh.
type Info struct {
	// URL reaches the entry service through the client sidecar.
	URL string
	// CredentialPath is the admin operator's credential.
	CredentialPath string
	// DataDir is the control plane's data dir.
	DataDir string
	// Gateways are the running Gateways of the file, in its order.
	Gateways []GatewayInfo
	// TokenURL is the demo issuer's token endpoint, "" without
	// spec.demoIssuer.
	TokenURL string
	// DashboardURL is the dashboard's URL; LoginURL a one-time login link
	// to it made at start ("" when making it failed).
	DashboardURL string
	LoginURL     string
	LoginTTL     time.Duration
}

// GatewayInfo tells how to reach one Gateway of the file.
type GatewayInfo struct {
	// Gateway is "namespace/name".
	Gateway string
	// Listeners maps each listener's name to its bound address.
	Listeners map[string]string
	// URL is the https:// URL of the first HTTPS listener ("" without
	// one), with the host localhost when it listens on loopback.
	URL string
	// CACert is the PEM file of the self-signed certificate bulwark up made
	// for that listener, for `curl --cacert`; "" when the file provides
	// the certificate.
	CACert string
	// JWTPath is the path of the first route that requires a token of the
	// demo issuer ("" without one).
	JWTPath string
}

// instance is one replica of a service to run.
type instance struct {
	svc     config.MeshService
	ref     identity.ServiceRef
	replica int
	name    string
}

// Run runs the mesh until ctx is done.
func Run(ctx context.Context, cfg Config) (err error) {
	mesh, resources, err := load(cfg.File)
	if err != nil {
		return err
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.Exe == "" {
		if cfg.Exe, err = os.Executable(); err != nil {
			return fmt.Errorf("find the bulwark binary: %w", err)
		}
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	clk := clock.OrReal(cfg.Clock)
	doors, err := planGateways(resources, cfg.GatewayListen)
	if err != nil {
		return err
	}
	issuerSpec := mesh.Spec.DemoIssuer
	if cfg.IssuerListen != "" {
		if issuerSpec == nil {
			return errors.New("--issuer-listen: the mesh file has no spec.demoIssuer")
		}
		if err := checkLoopback(cfg.IssuerListen); err != nil {
			return fmt.Errorf("--issuer-listen %s: %w", cfg.IssuerListen, err)
		}
		cp := *issuerSpec
		cp.Listen = cfg.IssuerListen
		issuerSpec = &cp
	}
	// Fail early and clearly if a port is taken.
	probe, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("entry address %s: %w (pick another with --listen)", cfg.Listen, err)
	}
	probe.Close()
	for _, fd := range doors {
		for _, b := range fd.binds {
			if _, port, _ := net.SplitHostPort(b.addr); port == "0" {
				continue
			}
			probe, err := net.Listen("tcp", b.addr)
			if err != nil {
				return fmt.Errorf("gateway %s listener %s: %w (pick another address with --gateway-listen %s=127.0.0.1:PORT)", fd.ref, b.listener, err, b.listener)
			}
			probe.Close()
		}
	}
	var issuerLn net.Listener
	if issuerSpec != nil {
		if issuerLn, err = net.Listen("tcp", issuerSpec.Listen); err != nil {
			return fmt.Errorf("demo issuer address %s: %w (pick another with --issuer-listen)", issuerSpec.Listen, err)
		}
		defer issuerLn.Close()
	}

	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "bulwark-up-")
		if err != nil {
			return err
		}
		cfg.DataDir = dir
		defer os.RemoveAll(dir)
	}
	ttl, _ := time.ParseDuration(mesh.Spec.SVIDTTL) // validated by Decode

	var logMu sync.Mutex
	logger := func(name string) *slog.Logger { return slog.New(newPretty(cfg.Log, &logMu, name, cfg.LogLevel)) }

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan control.Endpoints, 1)
	controlDone := make(chan error, 1)
	go func() {
		controlDone <- control.Run(ctx, control.Config{
			DataDir: cfg.DataDir, TrustDomain: mesh.Spec.TrustDomain, SVIDTTL: ttl,
			Listen: "127.0.0.1:0", AdminListen: cmp.Or(cfg.AdminListen, "127.0.0.1:0"),
			Logger: logger("control"),
			Ready:  func(ep control.Endpoints) { ready <- ep },
		})
	}()
	var ep control.Endpoints
	select {
	case ep = <-ready:
	case err := <-controlDone:
		return fmt.Errorf("control plane: %w", err)
	case <-ctx.Done():
		return <-controlDone
	}

	cred, err := admin.LoadCredential(ep.CredentialPath)
	if err != nil {
		return err
	}
	client, err := admin.NewClient(cred)
	if err != nil {
		return err
	}
	upDir := filepath.Join(cfg.DataDir, "up")
	if err := os.MkdirAll(upDir, 0o700); err != nil {
		return err
	}
	// What bulwark up makes for the file: the demo issuer's JWTProvider
	// and the self-signed certificates, applied with the file's resources.
	var (
		made      []config.Object
		is        *issuer
		certFiles = map[identity.ServiceRef]string{}
	)
	if issuerSpec != nil {
		if is, err = newIssuer(*issuerSpec, clk, logger("issuer")); err != nil {
			return err
		}
		made = append(made, is.provider())
	}
	for _, ref := range missingSecrets(resources) {
		certPEM, keyPEM, err := selfSigned(clk.Now())
		if err != nil {
			return err
		}
		path := filepath.Join(upDir, ref.Namespace+"_"+ref.Name+".crt")
		if err := os.WriteFile(path, certPEM, 0o644); err != nil {
			return fmt.Errorf("write the self-signed certificate of secret %s: %w", ref, err)
		}
		certFiles[ref] = path
		made = append(made, tlsSecret(ref.Namespace, ref.Name, certPEM, keyPEM))
		logger("up").Info(msgSelfSigned, telemetry.KeyName, ref.String(), telemetry.KeyPath, path)
	}
	for _, fd := range doors {
		if addr := fd.followHTTPSPort(); addr != "" {
			logger("up").Info(msgRedirectPort, telemetry.KeyName, fd.ref.String(), telemetry.KeyAddress, addr)
		}
	}
	resources = append(made, resources...)
	if len(resources) > 0 {
		docs := make([]json.RawMessage, len(resources))
		for i, o := range resources {
			if docs[i], err = config.Marshal(o); err != nil {
				return err
			}
		}
		// The file's Routes name versions of the file's own services
		// (checkRouteVersions), whose proxies do not run yet: the control
		// plane's check against registered instances is skipped.
		if _, err := client.ApplyWithOptions(ctx, docs, admin.WriteOptions{Force: true}); err != nil {
			return fmt.Errorf("apply the mesh file's resources: %w", err)
		}
		logger("up").Info("resources applied", "count", len(resources))
	}

	var instances []instance
	for _, s := range mesh.Spec.Services {
		for r := 1; r <= s.Replicas; r++ {
			name := s.Name
			if v := s.Labels[config.VersionLabel]; v != "" {
				name += "-" + v // a version of a service (a canary)
			}
			if s.Replicas > 1 {
				name += "-" + strconv.Itoa(r)
			}
			instances = append(instances, instance{svc: s, ref: identity.ServiceRef{Namespace: s.Namespace, Name: s.Name}, replica: r, name: name})
		}
	}
	entry, _ := identity.ParseServiceRef(mesh.Spec.Entry, identity.DefaultNamespace)
	visitor, _ := identity.ParseServiceRef(mesh.Spec.Client, identity.DefaultNamespace)

	var (
		wg        sync.WaitGroup
		readyWG   sync.WaitGroup
		errOnce   sync.Once
		firstErr  error
		sidecarOf = func(ref identity.ServiceRef, account string, labels map[string]string, sc sidecar.Config, name string) run.Task {
			return func(ctx context.Context) error {
				tok, err := client.CreateToken(ctx, admin.TokenRequest{Service: ref.String(), Identity: account, Labels: labels})
				if err != nil {
					return fmt.Errorf("join token for %s: %w", ref, err)
				}
				sc.Control, sc.CABundle, sc.Token, sc.TrustDomain = ep.GRPC, ep.BundlePath, tok.Token, ep.TrustDomain
				sc.Service = ref
				sc.Logger, sc.AccessLog = logger(name+"/proxy"), logger(name+"/proxy")
				return sidecar.Run(ctx, sc)
			}
		}
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	start := func(task run.Task) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := task(ctx); err != nil && ctx.Err() == nil {
				fail(err)
			}
		}()
	}

	for _, in := range instances {
		readyWG.Add(1)
		port := in.svc.Port
		if port == 0 || in.replica > 1 {
			if port, err = freePort(); err != nil {
				return err
			}
		}
		appAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		addrs := make(chan sidecar.Addrs, 1)
		var once sync.Once
		start(sidecarOf(in.ref, in.svc.Account, in.svc.Labels, sidecar.Config{
			App: appAddr, Inbound: "127.0.0.1:0", Outbound: "127.0.0.1:0",
			Locality: in.svc.Locality, AppProtocol: in.svc.Protocol,
			Ready: func(a sidecar.Addrs) { once.Do(func() { addrs <- a }) },
		}, in.name))
		in := in
		start(func(ctx context.Context) error {
			var a sidecar.Addrs
			select {
			case <-ctx.Done():
				readyWG.Done()
				return nil
			case a = <-addrs:
			}
			return runApp(ctx, cfg, in, port, a.Outbound, &logMu, readyWG.Done)
		})
	}
	gwRun := gatewayRun{exe: cfg.Exe, control: ep.GRPC, bundle: ep.BundlePath, dir: filepath.Join(upDir, "gateways"),
		level: cfg.LogLevel, log: cfg.Log, logMu: &logMu}
	gateways := make([]GatewayInfo, len(doors))
	for i, fd := range doors {
		readyWG.Add(1)
		start(func(ctx context.Context) error {
			var once sync.Once
			defer once.Do(readyWG.Done)
			tok, err := client.CreateToken(ctx, admin.TokenRequest{Service: fd.ref.String()})
			if err != nil {
				return fmt.Errorf("join token for gateway %s: %w", fd.ref, err)
			}
			return runGateway(ctx, gwRun, fd, tok.Token, func(bound map[string]string) {
				gateways[i] = gatewayInfo(fd, bound, certFiles, issuerSpec)
				once.Do(readyWG.Done)
			})
		})
	}
	if is != nil {
		start(func(ctx context.Context) error { return is.serve(ctx, issuerLn) })
	}

	visitorReady := make(chan sidecar.Addrs, 1)
	var vOnce sync.Once
	start(sidecarOf(visitor, "", nil, sidecar.Config{
		Upstreams: map[identity.ServiceRef]string{entry: cfg.Listen},
		Ready:     func(a sidecar.Addrs) { vOnce.Do(func() { visitorReady <- a }) },
	}, "visitor"))

	allReady := make(chan struct{})
	go func() { readyWG.Wait(); close(allReady) }()
	select {
	case <-ctx.Done():
	case <-allReady:
	}
	var va sidecar.Addrs
	select {
	case <-ctx.Done():
	case va = <-visitorReady:
	}
	if ctx.Err() == nil {
		info := Info{URL: "http://" + va.Upstreams[entry], CredentialPath: ep.CredentialPath, DataDir: cfg.DataDir, Gateways: gateways}
		if is != nil {
			info.TokenURL = "http://" + issuerLn.Addr().String() + issuerPath
		}
		info.DashboardURL = client.Server() + "/ui/"
		if l, err := client.DashboardLogin(ctx, 0); err == nil {
			info.LoginURL, info.LoginTTL = client.Server()+l.Path, time.Until(l.ExpiresAt).Round(time.Minute)
		} else {
			fmt.Fprintf(cfg.Log, "dashboard login link: %v\n", err)
		}
		banner(cfg.Out, mesh, entry, visitor, info, issuerSpec)
		if cfg.Ready != nil {
			cfg.Ready(info)
		}
	}

	<-ctx.Done()
	wg.Wait()
	cerr := <-controlDone
	if firstErr != nil {
		return firstErr
	}
	if cerr != nil && !errors.Is(cerr, context.Canceled) {
		return fmt.Errorf("control plane: %w", cerr)
	}
	return nil
}

// load reads the mesh file: exactly one Mesh document and the resources to
// apply.
func load(path string) (*config.Mesh, []config.Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	objs, err := config.Decode(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s:\n%w", path, err)
	}
	var (
		mesh      *config.Mesh
		resources []config.Object
	)
	for _, o := range objs {
		switch m := o.(type) {
		case *config.Mesh:
			if mesh != nil {
				return nil, nil, fmt.Errorf("%s: more than one Mesh document", path)
			}
			mesh = m
		default:
			resources = append(resources, o)
		}
	}
	if mesh == nil {
		return nil, nil, fmt.Errorf("%s: no Mesh document (kind: Mesh says which services to run)", path)
	}
	var errs []string
	for i, s := range mesh.Spec.Services {
		p := fmt.Sprintf("spec.services[%d]", i)
		if s.Example != "" && !isExample(s.Example) {
			errs = append(errs, fmt.Sprintf("%s.example: unknown example app %q (known: %s)", p, s.Example, strings.Join(exampleapp.Names(), ", ")))
		}
		var lerrs config.FieldErrors
		config.ValidateLabels(p+".labels", s.Labels, &lerrs)
		for _, e := range lerrs {
			errs = append(errs, e.Error())
		}
		if _, err := balancer.ParseLocality(s.Locality); err != nil {
			errs = append(errs, fmt.Sprintf("%s.locality: %v", p, err))
		}
		switch s.Protocol {
		case "", "http", "http2", "grpc", "tcp":
		default:
			errs = append(errs, fmt.Sprintf("%s.protocol: %q: want http, http2, grpc or tcp", p, s.Protocol))
		}
	}
	errs = append(errs, checkRouteVersions(mesh, resources)...)
	if d := mesh.Spec.DemoIssuer; d != nil {
		for _, o := range resources {
			if p, ok := o.(*config.JWTProvider); ok && p.Metadata.Namespace+"/"+p.Metadata.Name == d.Provider {
				errs = append(errs, fmt.Sprintf("spec.demoIssuer.provider: the file also defines JWTProvider %s: bulwark up creates it with the demo issuer's key; remove one", d.Provider))
			}
		}
	}
	if len(errs) > 0 {
		return nil, nil, fmt.Errorf("%s: %s", path, strings.Join(errs, "\n  "))
	}
	return mesh, resources, nil
}

// checkRouteVersions checks that every version a Route of the file names is
// the labels.version of one of the file's entries of that service. The
// control plane checks it against registered proxies at apply; bulwark up
// applies the file before any proxy runs, so it checks against the file.
func checkRouteVersions(mesh *config.Mesh, resources []config.Object) []string {
	versions := map[identity.ServiceRef][]string{}
	for _, s := range mesh.Spec.Services {
		ref := identity.ServiceRef{Namespace: s.Namespace, Name: s.Name}
		if v := s.Labels[config.VersionLabel]; v != "" {
			versions[ref] = append(versions[ref], v)
		}
	}
	var errs []string
	for _, o := range resources {
		r, ok := o.(*config.Route)
		if !ok {
			continue
		}
		ref := identity.ServiceRef{Namespace: r.Metadata.Namespace, Name: r.Spec.Service}
		check := func(p, v string) {
			if !slices.Contains(versions[ref], v) {
				errs = append(errs, fmt.Sprintf("route %s/%s: %s: no service %s of the mesh file has labels.version %q (known: %s)",
					r.Metadata.Namespace, r.Metadata.Name, p, ref, v, strings.Join(versions[ref], ", ")))
			}
		}
		for i, rule := range r.Spec.Rules {
			for j, b := range rule.Backends {
				check(fmt.Sprintf("spec.rules[%d].backends[%d].version", i, j), b.Version)
			}
			if rule.Mirror != nil {
				check(fmt.Sprintf("spec.rules[%d].mirror.version", i), rule.Mirror.Version)
			}
		}
	}
	return errs
}

func isExample(name string) bool {
	for _, n := range exampleapp.Names() {
		if n == name {
			return true
		}
	}
	return false
}

// runApp starts an instance's app bound to 127.0.0.1:port with HTTP_PROXY
// pointing at its sidecar, calls ready once it accepts connections, and
// stops it (SIGTERM, then SIGKILL after 5s) when ctx is done.
func runApp(ctx context.Context, cfg Config, in instance, port int, outbound string, logMu *sync.Mutex, ready func()) error {
	readied := false
	defer func() {
		if !readied {
			ready()
		}
	}()
	var argv []string
	if in.svc.Example != "" {
		argv = []string{cfg.Exe, "example-app", in.svc.Example, "--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		if v := in.svc.Labels[config.VersionLabel]; v != "" {
			argv = append(argv, "--version", v)
		}
	} else {
		for _, a := range in.svc.Command {
			argv = append(argv, strings.ReplaceAll(a, "$(PORT)", strconv.Itoa(port)))
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(),
		"PORT="+strconv.Itoa(port),
		"HTTP_PROXY=http://"+outbound,
		"http_proxy=http://"+outbound,
		"NO_PROXY=", "no_proxy=",
		"BULWARK_SERVICE="+in.ref.String(),
	)
	for k, v := range in.svc.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &lineWriter{mu: logMu, w: cfg.Log, name: in.name + "/app"}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start app of %s: %w", in.name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Wait until the app accepts connections.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for i := 0; i < 200; i++ {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("app of %s exited at start: %v", in.name, err)
		case <-ctx.Done():
			stop(cmd, exited)
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	readied = true
	ready()

	select {
	case err := <-exited:
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(out, "app exited: %v\n", err)
		return nil // the rest of the mesh keeps running; its sidecar answers 503
	case <-ctx.Done():
		stop(cmd, exited)
		return nil
	}
}

// stop ends an app's process group: SIGTERM, then SIGKILL after 5s.
func stop(cmd *exec.Cmd, exited <-chan error) {
	pgid := -cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-exited
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Messages of bulwark up's own log.
const (
	msgSelfSigned   = "self-signed certificate made for a gateway secret (for local use only)"
	msgRedirectPort = "gateway redirects to the moved https listener"
)

func banner(w io.Writer, mesh *config.Mesh, entry, visitor identity.ServiceRef, info Info, demo *config.DemoIssuer) {
	fmt.Fprintf(w, `
Bulwark mesh %q is up: %d service(s), trust domain %s.

  Open the shop:   %s
                   (reaches %s through the %s sidecar, over mTLS)
`, mesh.Metadata.Name, countServices(mesh), mesh.Spec.TrustDomain, info.URL, entry, visitor)
	shown := false
	for _, g := range info.Gateways {
		printFrontDoor(w, g, info.TokenURL, demo)
		shown = shown || (g.URL != "" && g.JWTPath != "")
	}
	if info.TokenURL != "" && !shown {
		fmt.Fprintf(w, "  Get a token:     curl -s '%s%s'   (demo issuer, loopback only)\n", info.TokenURL, tokenQuery(demo))
	}
	fmt.Fprintf(w, `  Operate it:      export BULWARK_CONFIG=%s
                   bulwark get proxies -A
                   bulwark get policies
  See it:          bulwark top              (live calls per edge; bulwark graph prints them)
                   bulwark get alerts       (the rogue's denials raise one)
                   bulwark audit verify     (every change is in a hash-chained log)
`, info.CredentialPath)
	fmt.Fprintf(w, "  Dashboard:       %s\n", info.DashboardURL)
	if info.LoginURL != "" {
		fmt.Fprintf(w, "  Login link:      %s   (this machine only, single use, expires in %s)\n", info.LoginURL, shortDuration(info.LoginTTL))
	}
	fmt.Fprintf(w, "                   or import your certificate: bulwark dashboard cert -o admin.p12   (then open the URL)\n")
	fmt.Fprintf(w, "                   a new link: bulwark dashboard login\n")
	fmt.Fprintf(w, "  Stop:            Ctrl-C\n\n")
}

// printFrontDoor prints the banner's lines of one gateway.
func printFrontDoor(w io.Writer, g GatewayInfo, tokenURL string, demo *config.DemoIssuer) {
	if g.URL == "" {
		fmt.Fprintf(w, "  Gateway %s:   listening on %s\n", g.Gateway, strings.Join(sortedValues(g.Listeners), ", "))
		return
	}
	curl := "curl"
	if g.CACert != "" {
		curl += " --cacert " + g.CACert
	}
	fmt.Fprintf(w, "  Front door:      %s/   (gateway %s: TLS, routes into the mesh)\n", g.URL, g.Gateway)
	fmt.Fprintf(w, "                   %s %s/\n", curl, g.URL)
	if g.CACert != "" {
		fmt.Fprintf(w, "                   (its certificate is self-signed by bulwark up, for local use only: or curl -k)\n")
	}
	if g.JWTPath != "" && tokenURL != "" {
		fmt.Fprintf(w, "  Get a token:     TOKEN=$(curl -s '%s%s')   (demo issuer, loopback only)\n", tokenURL, tokenQuery(demo))
		fmt.Fprintf(w, "                   %s -H \"Authorization: Bearer $TOKEN\" %s%s\n", curl, g.URL, g.JWTPath)
	}
}

// tokenQuery is the query of the banner's example token request.
func tokenQuery(demo *config.DemoIssuer) string {
	q := "?sub=alice"
	if demo != nil && demo.Scope != "" {
		q += "&scope=" + url.QueryEscape(demo.Scope)
	}
	return q
}

// sortedValues returns the values of m in the order of its sorted keys.
func sortedValues(m map[string]string) []string {
	var out []string
	for _, k := range slicesSorted(m) {
		out = append(out, k+"="+m[k])
	}
	return out
}

// countServices counts the services of a mesh file: entries that are
// versions of one service count once.
func countServices(mesh *config.Mesh) int {
	seen := map[identity.ServiceRef]bool{}
	for _, s := range mesh.Spec.Services {
		seen[identity.ServiceRef{Namespace: s.Namespace, Name: s.Name}] = true
	}
	return len(seen)
}

// shortDuration prints 5m0s as 5m.
func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	return strings.TrimSuffix(s, "0m")
}
