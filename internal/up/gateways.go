package up

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// msgGatewayListening is what `bulwark gateway` logs, with the keys
// listener and address, for every listener it bound.
const msgGatewayListening = "gateway listening"

// gatewayReadyTimeout bounds the wait for a gateway's listeners at start.
const gatewayReadyTimeout = 90 * time.Second

// maxLogLine bounds a line of a child's log held before it is written.
const maxLogLine = 64 << 10

// frontDoor is a Gateway of the mesh file, run by bulwark up as a `bulwark
// gateway` process with its own join token.
type frontDoor struct {
	gw  *config.Gateway
	ref identity.ServiceRef
	// binds are the listeners' addresses, in the Gateway's order.
	binds []bind
}

// bind is where one listener of a gateway binds.
type bind struct {
	listener, protocol, addr string
}

// planGateways returns the Gateways of resources with the address of each
// listener: 127.0.0.1 on the listener's port, or what overrides says. A key
// of overrides is a listener name (it must name exactly one listener of the
// file's Gateways) or "namespace/gateway/listener".
func planGateways(resources []config.Object, overrides map[string]string) ([]*frontDoor, error) {
	var doors []*frontDoor
	for _, o := range resources {
		if gw, ok := o.(*config.Gateway); ok {
			fd := &frontDoor{gw: gw, ref: identity.ServiceRef{Namespace: gw.Metadata.Namespace, Name: gw.Metadata.Name}}
			for _, l := range gw.Spec.Listeners {
				fd.binds = append(fd.binds, bind{listener: l.Name, protocol: l.Protocol, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Port))})
			}
			doors = append(doors, fd)
		}
	}
	for _, key := range slicesSorted(overrides) {
		addr := overrides[key]
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return nil, fmt.Errorf("--gateway-listen %s=%s: want LISTENER=HOST:PORT", key, addr)
		}
		var hits []*bind
		for _, fd := range doors {
			for i := range fd.binds {
				b := &fd.binds[i]
				if key == b.listener || key == fd.ref.String()+"/"+b.listener {
					hits = append(hits, b)
				}
			}
		}
		switch len(hits) {
		case 0:
			return nil, fmt.Errorf("--gateway-listen %s: no Gateway of the file has that listener (known: %s)", key, strings.Join(listenerKeys(doors), ", "))
		case 1:
			hits[0].addr = addr
		default:
			return nil, fmt.Errorf("--gateway-listen %s: several Gateways have that listener: name it namespace/gateway/listener (known: %s)", key, strings.Join(listenerKeys(doors), ", "))
		}
	}
	seen := map[string]string{}
	for _, fd := range doors {
		for _, b := range fd.binds {
			who := fd.ref.String() + " listener " + b.listener
			if _, port, _ := net.SplitHostPort(b.addr); port != "0" {
				if other, dup := seen[b.addr]; dup {
					return nil, fmt.Errorf("gateway %s: address %s is also that of %s (pick another with --gateway-listen)", who, b.addr, other)
				}
				seen[b.addr] = who
			}
		}
	}
	return doors, nil
}

// listenerKeys names every listener of doors as --gateway-listen takes it.
func listenerKeys(doors []*frontDoor) []string {
	var keys []string
	for _, fd := range doors {
		for _, b := range fd.binds {
			keys = append(keys, fd.ref.String()+"/"+b.listener)
		}
	}
	return keys
}

func slicesSorted(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// missingSecrets returns the Secrets ("namespace/name") that the file's
// Gateways name for their certificates and the file does not define, in
// the order they are first named.
func missingSecrets(resources []config.Object) []identity.ServiceRef {
	defined := map[identity.ServiceRef]bool{}
	for _, o := range resources {
		if s, ok := o.(*config.Secret); ok {
			defined[identity.ServiceRef{Namespace: s.Metadata.Namespace, Name: s.Metadata.Name}] = true
		}
	}
	var out []identity.ServiceRef
	for _, o := range resources {
		gw, ok := o.(*config.Gateway)
		if !ok {
			continue
		}
		for _, l := range gw.Spec.Listeners {
			if l.TLS == nil {
				continue
			}
			for _, c := range l.TLS.Certificates {
				ref := identity.ServiceRef{Namespace: gw.Metadata.Namespace, Name: c.Secret}
				if c.Secret != "" && !defined[ref] {
					defined[ref] = true
					out = append(out, ref)
				}
			}
		}
	}
	return out
}

// gatewayRun is what runGateway needs of the running mesh.
type gatewayRun struct {
	exe, control, bundle, dir string
	level                     slog.Level
	log                       io.Writer
	logMu                     *sync.Mutex
}

// runGateway runs `bulwark gateway` for fd with token until ctx is done,
// rendering its JSON log into the combined log. It calls ready with the
// bound address of every listener once all of them listen; an exit before
// that is an error, a later one is logged and the rest of the mesh keeps
// running.
func runGateway(ctx context.Context, g gatewayRun, fd *frontDoor, token string, ready func(map[string]string)) error {
	dir := filepath.Join(g.dir, fd.ref.Namespace+"_"+fd.ref.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("gateway %s: %w", fd.ref, err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("gateway %s: join token file: %w", fd.ref, err)
	}
	args := []string{"gateway", "--control", g.control, "--ca-bundle", g.bundle, "--token-file", tokenFile,
		"--gateway", fd.ref.String(), "--data-dir", filepath.Join(dir, "data"), "--admin", "127.0.0.1:0",
		"--access-log", "stderr", "--shutdown-timeout", "3s", "--log-level", strings.ToLower(g.level.String())}
	for _, b := range fd.binds {
		args = append(args, "--listen", b.listener+"="+b.addr)
	}
	cmd := exec.Command(g.exe, args...)
	cmd.Env = append(os.Environ(), "BULWARK_JOIN_TOKEN=")

	var (
		mu     sync.Mutex
		bound  = map[string]string{}
		done   bool
		readyc = make(chan map[string]string, 1)
	)
	out := &jsonLogWriter{
		h:   newPretty(g.log, g.logMu, fd.ref.Name, g.level),
		raw: &lineWriter{mu: g.logMu, w: g.log, name: fd.ref.Name},
		onRecord: func(r slog.Record) {
			if r.Message != msgGatewayListening {
				return
			}
			var listener, addr string
			r.Attrs(func(a slog.Attr) bool {
				switch a.Key {
				case telemetry.KeyListener:
					listener = a.Value.String()
				case telemetry.KeyAddress:
					addr = a.Value.String()
				}
				return true
			})
			mu.Lock()
			defer mu.Unlock()
			if listener == "" || addr == "" || done {
				return
			}
			bound[listener] = addr
			for _, b := range fd.binds {
				if bound[b.listener] == "" {
					return
				}
			}
			done = true
			readyc <- bound
		},
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start gateway %s: %w", fd.ref, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	timeout := time.NewTimer(gatewayReadyTimeout)
	defer timeout.Stop()
	select {
	case b := <-readyc:
		// A join token is single use and the gateway has redeemed it.
		_ = os.Remove(tokenFile)
		ready(b)
	case err := <-exited:
		out.Flush()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("gateway %s exited at start: %v (its log is above)", fd.ref, err)
	case <-timeout.C:
		stop(cmd, exited)
		out.Flush()
		return fmt.Errorf("gateway %s: its listeners did not open within %s (its log is above)", fd.ref, gatewayReadyTimeout)
	case <-ctx.Done():
		stop(cmd, exited)
		return nil
	}
	select {
	case err := <-exited:
		out.Flush()
		if ctx.Err() == nil {
			fmt.Fprintf(out.raw, "gateway exited: %v\n", err)
		}
		return nil
	case <-ctx.Done():
		stop(cmd, exited)
		out.Flush()
		return nil
	}
}

// jsonLogWriter renders the JSON log lines of a child daemon (log/slog's
// JSON handler) through a pretty handler, so they read like the rest of the
// combined log; other lines pass through prefixed. onRecord, if set, sees
// every record first.
type jsonLogWriter struct {
	h        slog.Handler
	raw      *lineWriter
	onRecord func(slog.Record)

	mu  sync.Mutex
	buf []byte
}

func (j *jsonLogWriter) Write(p []byte) (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.buf = append(j.buf, p...)
	for {
		i := bytes.IndexByte(j.buf, '\n')
		if i < 0 {
			break
		}
		j.line(j.buf[:i])
		j.buf = j.buf[i+1:]
	}
	if len(j.buf) > maxLogLine { // a runaway line: write what there is
		j.line(j.buf)
		j.buf = nil
	}
	return len(p), nil
}

// Flush writes a last line without its newline.
func (j *jsonLogWriter) Flush() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.buf) > 0 {
		j.line(j.buf)
		j.buf = nil
	}
}

func (j *jsonLogWriter) line(b []byte) {
	r, ok := parseJSONRecord(b)
	if !ok {
		_, _ = j.raw.Write(append(append([]byte{}, b...), '\n'))
		return
	}
	if j.onRecord != nil {
		j.onRecord(r)
	}
	if j.h.Enabled(context.Background(), r.Level) {
		_ = j.h.Handle(context.Background(), r)
	}
}

// parseJSONRecord reads one line of slog's JSON handler back into a
// record, keeping the order of its attributes.
func parseJSONRecord(line []byte) (slog.Record, bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return slog.Record{}, false
	}
	var (
		when  time.Time
		level slog.Level
		msg   string
		found bool
		attrs []slog.Attr
	)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return slog.Record{}, false
		}
		key, _ := t.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return slog.Record{}, false
		}
		switch key {
		case slog.TimeKey:
			if s, ok := v.(string); ok {
				when, _ = time.Parse(time.RFC3339Nano, s)
			}
		case slog.LevelKey:
			if s, ok := v.(string); ok {
				_ = level.UnmarshalText([]byte(s))
			}
		case slog.MessageKey:
			msg, found = v.(string)
		default:
			attrs = append(attrs, slog.String(key, jsonText(v)))
		}
	}
	if !found {
		return slog.Record{}, false
	}
	if when.IsZero() {
		when = time.Now()
	}
	r := slog.NewRecord(when, level, msg, 0)
	r.AddAttrs(attrs...)
	return r, true
}

// jsonText is a decoded JSON value as the combined log shows it.
func jsonText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return ""
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
}

// gatewayInfo tells how to reach fd, whose listeners are bound.
func gatewayInfo(fd *frontDoor, bound map[string]string, certFiles map[identity.ServiceRef]string, demo *config.DemoIssuer) GatewayInfo {
	info := GatewayInfo{Gateway: fd.ref.String(), Listeners: bound}
	for _, l := range fd.gw.Spec.Listeners {
		if l.Protocol != config.ListenerHTTPS || info.URL != "" {
			continue
		}
		info.URL = "https://" + urlHost(bound[l.Name], 443)
		if l.TLS != nil && len(l.TLS.Certificates) > 0 && l.TLS.Certificates[0].Secret != "" {
			info.CACert = certFiles[identity.ServiceRef{Namespace: fd.ref.Namespace, Name: l.TLS.Certificates[0].Secret}]
		}
	}
	if demo != nil {
		info.JWTPath = demoRoutePath(fd.gw, demo)
	}
	return info
}

// demoRoutePath is the path of the first route of gw that requires a token
// of the demo issuer's provider and matches a path (exact or prefix), or
// "" when there is none.
func demoRoutePath(gw *config.Gateway, demo *config.DemoIssuer) string {
	ref, err := identity.ParseServiceRef(demo.Provider, identity.DefaultNamespace)
	if err != nil || (ref.Namespace != gw.Metadata.Namespace && ref.Namespace != config.RootNamespace) {
		return ""
	}
	for _, r := range gw.Spec.Routes {
		if r.JWT == nil || !slices.Contains(r.JWT.Providers, ref.Name) || (r.JWT.Required != nil && !*r.JWT.Required) {
			continue
		}
		for _, m := range r.Matches {
			if m.Path == nil {
				continue
			}
			if m.Path.Exact != "" {
				return m.Path.Exact
			}
			if m.Path.Prefix != "" {
				return m.Path.Prefix
			}
		}
	}
	return ""
}

// urlHost is the host[:port] of a URL that reaches addr from this machine:
// localhost for a loopback or wildcard address (the self-signed
// certificate's name, and curl sends no SNI for an IP address), without
// the port when it is the scheme's default.
func urlHost(addr string, defaultPort int) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		host = "localhost"
	}
	if port == strconv.Itoa(defaultPort) {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// followHTTPSPort points the redirects of fd's HTTP listeners at the port
// its first HTTPS listener really binds when --gateway-listen moved it (a
// redirect to the Gateway's own port would reach nothing). It changes the
// Gateway that bulwark up applies and returns the listener's address, or
// "" when nothing changed (no move, or a free port that is only known once
// bound).
func (fd *frontDoor) followHTTPSPort() string {
	var (
		declared, bound int
		addr            string
	)
	for i, l := range fd.gw.Spec.Listeners {
		if l.Protocol == config.ListenerHTTPS {
			declared, addr = l.Port, fd.binds[i].addr
			_, p, _ := net.SplitHostPort(addr)
			bound, _ = strconv.Atoi(p)
			break
		}
	}
	if bound == 0 || bound == declared {
		return ""
	}
	changed := false
	for i := range fd.gw.Spec.Listeners {
		l := &fd.gw.Spec.Listeners[i]
		if l.Protocol != config.ListenerHTTP || (l.RedirectToHTTPS != nil && !*l.RedirectToHTTPS) {
			continue
		}
		if l.HTTPSPort == 0 || l.HTTPSPort == declared {
			l.HTTPSPort = bound
			changed = true
		}
	}
	if !changed {
		return ""
	}
	return addr
}
