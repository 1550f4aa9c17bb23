package proxy

// Egress: the app's requests to hosts outside the mesh. Egress is
// registry-only (Istio's REGISTRY_ONLY): the outbound reaches a host only
// when an ExternalService the caller may reach declares it, on a declared
// port with a fitting protocol, and only for a request that the
// AuthorizationPolicies selecting that ExternalService allow. Everything
// else is denied (403), logged and reported as a denial: egress is the
// path data exfiltration takes.
//
// Resolution of the host an app addresses (http://host[:port]/... or
// CONNECT host:port):
//
//	a mesh service ("name.namespace", a bare name in the caller's
//	namespace) -> the mesh (forward)
//	a host an ExternalService declares (exactly, or "*.example.com": one
//	or more labels under example.com; case-insensitive; one trailing dot
//	ignored) on a declared port -> egress
//	"name.namespace" of a namespace that has mesh services -> 503 "no
//	such service" (a typo of a mesh service)
//	anything else -> 403, reason "egress to an undeclared host"
//
// The caller's sidecar is the only enforcement point of an external
// destination, so it decides with the full policies that select the
// ExternalService (the control plane sends them), as the caller knows the
// request: its own SPIFFE ID and services (conditions on anything else,
// such as JWT principals, fail closed), the host as requested (lower
// case), the port, method, path, query and headers. When several
// ExternalServices declare the host, they are tried in order (exact hosts
// before wildcards, longer wildcards first, then by name) and the first
// that allows the request carries it.
//
// Plain requests go to "http" ports: as plain HTTP, or over TLS that the
// sidecar originates when spec.tls is set (verified with
// spec.tls.caCertificates or the system roots, server name
// spec.tls.serverName or the host, TLS 1.2 or later); the app then
// addresses the TLS port in its http:// URL (http://api.example.com:443/).
// CONNECT tunnels go to "tls" and "tcp" ports (the app speaks TLS, or
// anything, through them), never to "http" ports. Through a "tls" port the
// app must start with a TLS ClientHello whose server name, if it sends
// one, is the host it asked to CONNECT to, and that does not encrypt it
// (Encrypted Client Hello hides the name the server routes by): an
// address shared by many names (a CDN) routes by server name, so a tunnel
// to a declared host must not reach another. Otherwise the tunnel is
// closed and the request counted and logged as a denial (its status stays
// the 200 already sent).
//
// The sidecar connects to spec.addresses (round robin; a connect failure
// tries the next; those on the addressed port when any is, else all of
// them) or to the addresses DNS gives for the host, resolved at connect
// time and never cached beyond the resolver. An address obtained from DNS
// (including the DNS of a name in spec.addresses) that is loopback,
// link-local, multicast or unspecified (also as NAT64 64:ff9b::/96 embeds
// it), or a cloud metadata address (fd00:ec2::254, 100.100.100.200), is
// refused: whoever controls a declared name's DNS must not reach the
// sidecar's own admin port or a cloud metadata service. Only an IP literal
// in spec.addresses reaches such an address.
//
// Each ExternalService has its own http.Transport, kept across snapshots
// while its document does not change (pooled connections survive
// snapshot updates); the idle connections of one dropped from the
// snapshot are closed.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Timeouts of egress connections.
const (
	// egressDialTimeout bounds each connection attempt (one address).
	egressDialTimeout = 5 * time.Second
	// egressTLSTimeout bounds the TLS handshake of TLS origination.
	egressTLSTimeout = 10 * time.Second
	// egressHeaderTimeout bounds the wait for a response's headers.
	egressHeaderTimeout = 30 * time.Second
	// egressIdleTimeout closes pooled connections idle that long.
	egressIdleTimeout = 90 * time.Second
)

// maxDenialHost is the longest host a denial of egress to an undeclared
// host carries as its destination (the longest DNS name).
const maxDenialHost = 253

// Reasons of egress denials that no policy decided (the reason label is
// undeclared_host for all of them).
const (
	reasonUndeclaredHost = "egress to an undeclared host"
	reasonHTTPToTunnel   = "egress port is declared for tls or tcp: use CONNECT"
	reasonConnectToHTTP  = "egress port is declared for http: send http:// requests, not CONNECT"
	reasonTLSServerName  = "tls server name is not the CONNECT host"
)

// external is the compiled form of an ExternalService destination.
type external struct {
	// hash identifies the document: the transport of an unchanged
	// document is kept across snapshots.
	hash [sha256.Size]byte
	// hosts are the exact hosts; suffixes the ".example.com" of the
	// "*.example.com" wildcards.
	hosts    []string
	suffixes []string
	// ports maps a declared port to its protocol.
	ports map[int]string
	// addrs replace DNS when set.
	addrs []egressAddr
	// tls is set for TLS origination: roots (nil: the system roots) and
	// the server name ("" : the request's host).
	tls        bool
	roots      *x509.CertPool
	serverName string
	// next is the round-robin position in addrs.
	next atomic.Uint64
	// fwd is the forwarder the engine attached (egress.go's cache).
	fwd atomic.Pointer[egressForwarder]
}

// egressAddr is one entry of spec.addresses.
type egressAddr struct {
	host string
	port int
	// ip is set when host is an IP literal: dialed as is, whatever it is.
	ip netip.Addr
}

// compileExternal compiles the ExternalService document of a destination.
// The document is decoded and validated again; what the data path needs
// is checked once more here, so that a document this proxy cannot apply
// is refused (NACK) rather than half applied.
func compileExternal(doc []byte) (*external, error) {
	o, err := config.DecodeObject(doc)
	if err != nil {
		return nil, fmt.Errorf("external: %w", err)
	}
	es, ok := o.(*config.ExternalService)
	if !ok {
		return nil, fmt.Errorf("external: kind %s is not an ExternalService", o.GetTypeMeta().Kind)
	}
	s := &es.Spec
	x := &external{hash: sha256.Sum256(doc), ports: make(map[int]string, len(s.Ports))}
	if len(s.Hosts) == 0 {
		return nil, errors.New("external: spec.hosts: at least one host is required")
	}
	for i, h := range s.Hosts {
		h = strings.TrimSuffix(strings.ToLower(h), ".")
		name, wild := strings.CutPrefix(h, "*.")
		if !validDNSName(name) {
			return nil, fmt.Errorf("external: spec.hosts[%d]: %q is not a DNS name or \"*.\" and one", i, s.Hosts[i])
		}
		if wild {
			x.suffixes = append(x.suffixes, "."+name)
		} else {
			x.hosts = append(x.hosts, h)
		}
	}
	if len(s.Ports) == 0 {
		return nil, errors.New("external: spec.ports: at least one port is required")
	}
	for i, p := range s.Ports {
		switch p.Protocol {
		case config.ExternalHTTP, config.ExternalTLS, config.ExternalTCP:
		default:
			return nil, fmt.Errorf("external: spec.ports[%d].protocol: unsupported value %q", i, p.Protocol)
		}
		if p.Port < 1 || p.Port > 65535 {
			return nil, fmt.Errorf("external: spec.ports[%d].port: %d is not a port", i, p.Port)
		}
		x.ports[p.Port] = p.Protocol
	}
	for i, a := range s.Addresses {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("external: spec.addresses[%d]: %w", i, err)
		}
		ea := egressAddr{host: strings.ToLower(host), port: parsePort(port)}
		if port == "" || ea.port == 0 {
			return nil, fmt.Errorf("external: spec.addresses[%d]: %q: the port must be 1 to 65535", i, a)
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			ea.ip = ip.Unmap()
		} else if !validDNSName(ea.host) {
			return nil, fmt.Errorf("external: spec.addresses[%d]: %q is neither an IP address nor a DNS name", i, host)
		}
		x.addrs = append(x.addrs, ea)
	}
	if t := s.TLS; t != nil {
		x.tls = true
		x.serverName = t.ServerName
		if t.CACertificates != "" {
			x.roots = x509.NewCertPool()
			if !x.roots.AppendCertsFromPEM([]byte(t.CACertificates)) {
				return nil, errors.New("external: spec.tls.caCertificates: no PEM certificate")
			}
		}
	}
	return x, nil
}

// validDNSName reports whether s is a lower-case DNS name: labels of 1 to
// 63 letters, digits and '-', at most 253 characters.
func validDNSName(s string) bool {
	if s == "" || len(s) > maxDenialHost {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0
}

// egressIndex finds the external destinations that declare a host.
type egressIndex struct {
	// exact maps a host to the destinations declaring it, by name.
	exact map[string][]*destination
	// wild are the wildcard declarations, longest suffix first, then by
	// name.
	wild []egressWildcard
	// meshNamespaces are the namespaces that have mesh services (not
	// external ones): "name.namespace" of one that is not a service is a
	// typo (503), not egress.
	meshNamespaces map[string]struct{}
}

type egressWildcard struct {
	suffix string
	dest   *destination
}

// indexExternals builds t.egress from the external destinations of t.
func indexExternals(t *table) {
	ix := &egressIndex{exact: map[string][]*destination{}, meshNamespaces: map[string]struct{}{}}
	names := make([]string, 0, len(t.dests))
	for name, d := range t.dests {
		if d.external != nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		d := t.dests[name]
		for _, h := range d.external.hosts {
			ix.exact[h] = append(ix.exact[h], d)
		}
		for _, s := range d.external.suffixes {
			ix.wild = append(ix.wild, egressWildcard{suffix: s, dest: d})
		}
	}
	// Stable: equal lengths keep the order of names.
	slices.SortStableFunc(ix.wild, func(a, b egressWildcard) int { return len(b.suffix) - len(a.suffix) })
	for name := range t.services {
		if t.isMesh(name) {
			ns, _, _ := strings.Cut(name, "/")
			ix.meshNamespaces[ns] = struct{}{}
		}
	}
	t.egress = ix
}

// isMesh reports whether name ("ns/name") is a mesh service: one the
// snapshot names that is not an external destination of this proxy.
func (t *table) isMesh(name string) bool {
	if _, ok := t.services[name]; !ok {
		return false
	}
	d := t.dests[name]
	return d == nil || d.external == nil
}

// lookup returns the destinations that declare host (lower case, without
// the port) on port with a protocol that tunnel accepts (tls or tcp for a
// CONNECT tunnel, http otherwise), in the order they are tried; onPort
// says whether some destination declares host on port at all.
func (ix *egressIndex) lookup(host string, port int, tunnel bool) (cands []*destination, onPort bool) {
	if ix == nil || !validDNSName(host) {
		return nil, false
	}
	add := func(d *destination) {
		proto, ok := d.external.ports[port]
		if !ok {
			return
		}
		onPort = true
		if (proto != config.ExternalHTTP) == tunnel && !slices.Contains(cands, d) {
			cands = append(cands, d)
		}
	}
	for _, d := range ix.exact[host] {
		add(d)
	}
	for _, w := range ix.wild {
		// One or more labels before the suffix: "example.com" is not
		// under "*.example.com".
		if len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			add(w.dest)
		}
	}
	return cands, onPort
}

// serveEgress serves the app's request to authority (host[:port] as
// addressed) when it names no mesh service, and reports whether it did; a
// mesh service is left to forward.
func (e *Engine) serveEgress(rw *recorder, r *http.Request, info *logInfo, authority, path, query string) bool {
	t := e.table.Load()
	if t == nil {
		return false // forward answers 503: no snapshot yet
	}
	if svc, err := identity.ServiceFromHost(authority, e.cfg.Service.Namespace); err == nil && t.isMesh(svc.String()) {
		return false
	}
	host, port, err := hostPort(authority, defaultPort)
	if err != nil {
		e.reject(rw, info, http.StatusBadRequest, "bad request", err.Error())
		return true
	}
	cands, onPort := t.egress.lookup(host, port, false)
	if len(cands) == 0 {
		reason := reasonUndeclaredHost
		if onPort {
			reason = reasonHTTPToTunnel
		}
		e.egressMiss(rw, info, t, host, reason)
		return true
	}
	req := policy.Request{
		Method: r.Method, Host: host, Port: port, Path: path, Query: query, Headers: r.Header,
	}
	d := e.authorizeEgress(info, &req, cands)
	if d == nil {
		e.reject(rw, info, http.StatusForbidden, "forbidden", "")
		return true
	}
	x := d.external
	hp := net.JoinHostPort(host, strconv.Itoa(port))
	info.upstream = hp
	scheme, hostHeader := "http", host
	if x.tls {
		scheme = "https"
		if port != 443 {
			hostHeader = hp
		}
	} else if port != defaultPort {
		hostHeader = hp
	}
	stripIdentityHeaders(r.Header)
	r.Header.Del("Proxy-Authorization")
	setTarget(r, scheme, hp, hostHeader, path, query)
	e.egressForwarder(x).proxy.ServeHTTP(rw, r)
	return true
}

// egressMiss answers a request to host that no reachable ExternalService
// declares (on that port, for that protocol): 503 "no such service" for
// "name.namespace" of a namespace with mesh services, else 403.
func (e *Engine) egressMiss(rw *recorder, info *logInfo, t *table, host, reason string) {
	if reason == reasonUndeclaredHost && t.egress != nil && strings.Contains(host, ".") {
		if svc, err := identity.ServiceFromHost(host, e.cfg.Service.Namespace); err == nil {
			if _, ok := t.egress.meshNamespaces[svc.Namespace]; ok {
				info.destination = svc.String()
				e.reject(rw, info, http.StatusServiceUnavailable, "no such service", "unknown service")
				return
			}
		}
	}
	info.destination = cut(host, maxDenialHost)
	info.decision, info.reason, info.label = telemetry.DecisionDeny, reason, labelUndeclaredHost
	e.reject(rw, info, http.StatusForbidden, "forbidden", "")
}

// authorizeEgress decides req (Source and Time filled in here) with the
// policies of each candidate in turn and returns the first that allows
// it, nil when none does. The access log names the destination that
// carried the request, or the first candidate with its denial.
func (e *Engine) authorizeEgress(info *logInfo, req *policy.Request, cands []*destination) *destination {
	req.Source = policy.Source{ID: info.source, Services: e.selfServices}
	req.Time = info.start
	var first policy.Decision
	for i, d := range cands {
		dec := d.index.Decide(req)
		if dec.Allow {
			info.destination = d.ref.String()
			info.setDecision(&dec)
			return d
		}
		if i == 0 {
			first = dec
		}
	}
	info.destination = cands[0].ref.String()
	info.setDecision(&first)
	return nil
}

// serveEgressConnect serves CONNECT host:port from the app to a host that
// names no mesh service: to a declared host on a "tls" or "tcp" port, for
// a caller the policies allow (method CONNECT, host, port; no path), it
// answers 200 and relays bytes both ways until both sides have closed
// (half-close passed on). The access log line, written when the tunnel
// closes, says how many bytes went each way.
func (e *Engine) serveEgressConnect(rw *recorder, r *http.Request, info *logInfo, host string, port int) {
	t := e.table.Load()
	if t == nil {
		e.reject(rw, info, http.StatusServiceUnavailable, "proxy not ready", "no snapshot yet")
		return
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	cands, onPort := t.egress.lookup(host, port, true)
	if len(cands) == 0 {
		reason := reasonUndeclaredHost
		if onPort {
			reason = reasonConnectToHTTP
		}
		e.egressMiss(rw, info, t, host, reason)
		return
	}
	req := policy.Request{Method: http.MethodConnect, Host: host, Port: port, Headers: r.Header}
	d := e.authorizeEgress(info, &req, cands)
	if d == nil {
		e.reject(rw, info, http.StatusForbidden, "forbidden", "")
		return
	}
	info.upstream = net.JoinHostPort(host, strconv.Itoa(port))
	if r.ProtoMajor != 1 {
		e.reject(rw, info, http.StatusBadRequest, "CONNECT to an external host needs HTTP/1.1", "connect over http/2")
		return
	}
	up, err := d.external.dial(r.Context(), host, port)
	if err != nil {
		rw.detail = err.Error()
		e.reject(rw, info, http.StatusServiceUnavailable, "upstream unavailable", "")
		return
	}
	defer up.Close()
	conn, brw, err := http.NewResponseController(rw).Hijack()
	if err != nil {
		e.reject(rw, info, http.StatusInternalServerError, "tunnel failed", "hijack: "+err.Error())
		return
	}
	defer conn.Close()
	rw.code = http.StatusOK // written on the hijacked connection below
	// The server's deadlines are for requests, not for a tunnel.
	_ = conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		info.detail = "tunnel: answer: " + err.Error()
		return
	}
	var hello []byte
	if d.external.ports[port] == config.ExternalTLS {
		_ = conn.SetReadDeadline(time.Now().Add(egressTLSTimeout))
		sni, read, err := clientHelloSNI(brw.Reader)
		_ = conn.SetReadDeadline(time.Time{})
		if err != nil || (sni != "" && strings.TrimSuffix(strings.ToLower(sni), ".") != host) {
			// What the app asked for is not what it would reach: a shared
			// address (a CDN) routes by server name.
			info.decision, info.reason, info.label, info.denied = telemetry.DecisionDeny, reasonTLSServerName, labelUndeclaredHost, http.StatusForbidden
			info.detail = fmt.Sprintf("tunnel closed: server name %q", cut(sni, maxDenialHost))
			if err != nil {
				info.detail = "tunnel closed: " + err.Error()
			}
			return
		}
		hello = read
	}
	sent, received := egressSplice(conn, brw.Reader, up, hello)
	info.detail = fmt.Sprintf("tunnel: %d bytes from the app, %d bytes to it", sent, received)
}

// clientHelloSNI reads the TLS ClientHello an app sends first through a
// tunnel to a "tls" port and returns the server name it asks for ("" for
// none) and every byte it read, which the tunnel sends on.
func clientHelloSNI(r io.Reader) (sni string, read []byte, err error) {
	var buf bytes.Buffer
	var hello *tls.ClientHelloInfo
	errSeen := errors.New("client hello read")
	srv := tls.Server(&readOnlyConn{r: io.TeeReader(io.LimitReader(r, maxClientHello), &buf)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = h
			return nil, errSeen
		},
	})
	err = srv.Handshake()
	if hello == nil {
		return "", nil, fmt.Errorf("not a TLS ClientHello: %w", err)
	}
	if slices.Contains(hello.Extensions, extensionECH) {
		// The server name in the clear is the outer one; the server
		// routes by the one it hides.
		return hello.ServerName, nil, errors.New("encrypted client hello: the server name it hides cannot be checked")
	}
	return hello.ServerName, buf.Bytes(), nil
}

// extensionECH is the TLS extension of Encrypted Client Hello.
const extensionECH = 0xfe0d

// maxClientHello bounds what clientHelloSNI reads.
const maxClientHello = 64 << 10

// readOnlyConn is the net.Conn of clientHelloSNI's TLS server: it reads
// from r, and writes nothing to the app (the alert that ends the
// handshake is dropped).
type readOnlyConn struct{ r io.Reader }

func (c *readOnlyConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *readOnlyConn) Write(b []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (c *readOnlyConn) Close() error                     { return nil }
func (c *readOnlyConn) LocalAddr() net.Addr              { return nil }
func (c *readOnlyConn) RemoteAddr() net.Addr             { return nil }
func (c *readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (c *readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (c *readOnlyConn) SetWriteDeadline(time.Time) error { return nil }

// egressSplice relays bytes between the app's connection (read through
// appR, which may hold bytes already buffered, after first, bytes of the
// app already read) and up until both directions end, passing a
// half-close on; an error in one direction closes both. It returns the
// bytes sent to up and received from it.
func egressSplice(app net.Conn, appR *bufio.Reader, up net.Conn, first []byte) (sent, received int64) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			app.Close()
			up.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := io.Copy(app, up)
		received = n
		if err != nil {
			closeBoth()
			return
		}
		closeWrite(app)
	}()
	// Bytes the app sent after the request, already read by the server.
	n := appR.Buffered()
	b, _ := appR.Peek(n)
	b = append(first, b...)
	_, _ = appR.Discard(n)
	m, err := up.Write(b)
	sent += int64(m)
	if err == nil {
		var c int64
		c, err = io.Copy(up, app)
		sent += c
	}
	if err != nil {
		closeBoth()
	} else {
		closeWrite(up)
	}
	<-done
	return sent, received
}

// closeWrite half-closes c when it can, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// dial connects to host:port as the ExternalService says: to its
// addresses, or to the addresses DNS gives for host (public ones only).
func (x *external) dial(ctx context.Context, host string, port int) (net.Conn, error) {
	d := net.Dialer{Timeout: egressDialTimeout, KeepAlive: 30 * time.Second}
	var errs []error
	try := func(ap netip.AddrPort) (net.Conn, bool) {
		c, err := d.DialContext(ctx, "tcp", ap.String())
		if err != nil {
			errs = append(errs, err)
			return nil, false
		}
		return c, true
	}
	tryName := func(name string, port int) (net.Conn, bool) {
		ips, err := resolvePublic(ctx, name)
		if err != nil {
			errs = append(errs, err)
			return nil, false
		}
		for _, ip := range ips {
			if c, ok := try(netip.AddrPortFrom(ip, uint16(port))); ok {
				return c, true
			}
			if ctx.Err() != nil {
				break
			}
		}
		return nil, false
	}
	if len(x.addrs) == 0 {
		if c, ok := tryName(host, port); ok {
			return c, nil
		}
		return nil, &connectError{err: fmt.Errorf("%s:%d: %w", host, port, errors.Join(errs...))}
	}
	addrs := x.addrs
	if onPort := slices.DeleteFunc(slices.Clone(addrs), func(a egressAddr) bool { return a.port != port }); len(onPort) > 0 {
		addrs = onPort
	}
	start := int((x.next.Add(1) - 1) % uint64(len(addrs)))
	for i := range addrs {
		a := addrs[(start+i)%len(addrs)]
		var (
			c  net.Conn
			ok bool
		)
		if a.ip.IsValid() {
			c, ok = try(netip.AddrPortFrom(a.ip, uint16(a.port)))
		} else {
			c, ok = tryName(a.host, a.port)
		}
		if ok {
			return c, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, &connectError{err: fmt.Errorf("%s:%d: %w", host, port, errors.Join(errs...))}
}

// resolvePublic resolves name and returns its addresses that an egress
// connection may reach: loopback, link-local, multicast and unspecified
// addresses are dropped (an error when nothing is left).
func resolvePublic(ctx context.Context, name string) ([]netip.Addr, error) {
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", name, err)
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if ip = ip.Unmap(); egressReachable(ip) {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("resolve %s: %v: loopback, link-local, multicast or unspecified addresses are refused (list an IP address in spec.addresses to reach one)", name, ips)
	}
	return out, nil
}

// egressReachable reports whether an address obtained from DNS may be
// dialed. An IPv4 address embedded in an IPv6 one that reaches it (NAT64's
// 64:ff9b::/96) is judged as that IPv4 address, and the cloud metadata
// services outside link-local (AWS's fd00:ec2::254, Alibaba's
// 100.100.100.200) count as link-local.
func egressReachable(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.Is6() && nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:]))
	}
	return !(ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() ||
		ip == awsMetadataV6 || ip == alibabaMetadata)
}

// Addresses egressReachable refuses besides the special ranges.
var (
	nat64           = netip.MustParsePrefix("64:ff9b::/96")
	awsMetadataV6   = netip.MustParseAddr("fd00:ec2::254")
	alibabaMetadata = netip.MustParseAddr("100.100.100.200")
)

// egressForwarder is the transport of one ExternalService document and the
// reverse proxy that uses it.
type egressForwarder struct {
	transport *http.Transport
	proxy     *httputil.ReverseProxy
}

// egressCache keeps the forwarders by document hash across snapshots.
// The zero value is ready.
type egressCache struct {
	mu     sync.Mutex
	byHash map[[sha256.Size]byte]*egressForwarder
	closed bool
	bufs   bufferPool
}

// newEgressForwarder builds the forwarder of x: its dialer dials x's
// addresses, or DNS; with TLS origination, a TLS client verifying the
// server as x says.
func (e *Engine) newEgressForwarder(x *external) *egressForwarder {
	dial := func(ctx context.Context, addr string) (net.Conn, string, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, "", err
		}
		c, err := x.dial(ctx, host, parsePort(port))
		return c, host, err
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, _, err := dial(ctx, addr)
			return c, err
		},
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       egressIdleTimeout,
		ResponseHeaderTimeout: egressHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	if x.tls {
		tr.ForceAttemptHTTP2 = true
		tr.DialTLSContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
			raw, host, err := dial(ctx, addr)
			if err != nil {
				return nil, err
			}
			sn := x.serverName
			if sn == "" {
				sn = host
			}
			conn := tls.Client(raw, &tls.Config{
				RootCAs: x.roots, ServerName: sn, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
			})
			hctx, cancel := context.WithTimeout(ctx, egressTLSTimeout)
			defer cancel()
			if err := conn.HandshakeContext(hctx); err != nil {
				raw.Close()
				return nil, fmt.Errorf("tls to %s (server name %s): %w", addr, sn, err)
			}
			return conn, nil
		}
	}
	return &egressForwarder{
		transport: tr,
		proxy: &httputil.ReverseProxy{
			Rewrite:      rewrite,
			Transport:    tr,
			BufferPool:   &e.egress.bufs,
			ErrorHandler: e.upstreamError,
		},
	}
}

// egressForwarder returns the forwarder attached to x, making it when the
// snapshot was not attached (attachEgress).
func (e *Engine) egressForwarder(x *external) *egressForwarder {
	if fw := x.fwd.Load(); fw != nil {
		return fw
	}
	c := &e.egress
	c.mu.Lock()
	defer c.mu.Unlock()
	fw := c.byHash[x.hash]
	if fw == nil {
		fw = e.newEgressForwarder(x)
		if c.byHash == nil {
			c.byHash = map[[sha256.Size]byte]*egressForwarder{}
		}
		if !c.closed {
			c.byHash[x.hash] = fw
		}
	}
	x.fwd.Store(fw)
	return fw
}

// attachEgress gives the external destinations of t their forwarders,
// those of the previous snapshot when the document is unchanged, and
// closes the idle connections of the forwarders t no longer uses.
func (e *Engine) attachEgress(t *table) {
	used := map[[sha256.Size]byte]bool{}
	for _, d := range t.dests {
		if d.external != nil {
			e.egressForwarder(d.external)
			used[d.external.hash] = true
		}
	}
	c := &e.egress
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, fw := range c.byHash {
		if !used[h] {
			fw.transport.CloseIdleConnections()
			delete(c.byHash, h)
		}
	}
}

// closeEgress closes the idle connections of every forwarder; those made
// afterwards are not kept. It is idempotent.
func (e *Engine) closeEgress() {
	c := &e.egress
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for h, fw := range c.byHash {
		fw.transport.CloseIdleConnections()
		delete(c.byHash, h)
	}
}
