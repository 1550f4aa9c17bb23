// Package up is the composition root of `bulwark up -f mesh.yaml`: a whole
// mesh on one machine. It runs an embedded control plane, applies the file's
// policies through the admin API, starts every service's sidecar (each
// attesting with its own join token) and then its app bound to 127.0.0.1, and
// a local client sidecar whose per-upstream port reaches the entry service.
// It streams one readable combined log and stops everything on Ctrl-C.
package up

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/exampleapp"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/run"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
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
}

// Info tells how to reach a running mesh.
type Info struct {
	// URL reaches the entry service through the client sidecar.
	URL string
	// CredentialPath is the admin operator's credential.
	CredentialPath string
	// DataDir is the control plane's data dir.
	DataDir string
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
	// Fail early and clearly if the entry port is taken.
	probe, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("entry address %s: %w (pick another with --listen)", cfg.Listen, err)
	}
	probe.Close()

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
			Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
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
		info := Info{URL: "http://" + va.Upstreams[entry], CredentialPath: ep.CredentialPath, DataDir: cfg.DataDir}
		banner(cfg.Out, mesh, entry, visitor, info)
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

func banner(w io.Writer, mesh *config.Mesh, entry, visitor identity.ServiceRef, info Info) {
	fmt.Fprintf(w, `
Bulwark mesh %q is up: %d service(s), trust domain %s.

  Open the shop:   %s
                   (reaches %s through the %s sidecar, over mTLS)
  Operate it:      export BULWARK_CONFIG=%s
                   bulwark get proxies -A
                   bulwark get policies
  See it:          bulwark top              (live calls per edge; bulwark graph prints them)
                   bulwark get alerts       (the rogue's denials raise one)
                   bulwark audit verify     (every change is in a hash-chained log)
  Stop:            Ctrl-C

`, mesh.Metadata.Name, countServices(mesh), mesh.Spec.TrustDomain, info.URL, entry, visitor, info.CredentialPath)
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
