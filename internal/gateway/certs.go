package gateway

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// maxPEMFileBytes bounds a certificate or key file the gateway reads.
const maxPEMFileBytes = 1 << 20

// certSource is one certificate of a listener: a Secret of the snapshot or
// a pair of files. Its current certificate is swapped atomically, so
// handshakes never see a half-made one.
type certSource struct {
	// name is the Secret's name or the certificate file's path: the
	// certificate label of the metrics and logs.
	name     string
	secret   string
	certFile string
	keyFile  string

	cert atomic.Pointer[tls.Certificate]
	// sum is the hash of the PEM bytes of cert; bad the hash of the last
	// bytes refused (not logged again until they change).
	sum, bad [sha256.Size]byte
	// stamp is the files' size and modification time at the last read.
	stamp string
	// missing: the snapshot lacks the Secret (logged once).
	missing bool
}

func sourceKey(c config.GatewayCertificate) string {
	if c.Secret != "" {
		return "secret:" + c.Secret
	}
	return "file:" + c.CertFile + "\x00" + c.KeyFile
}

// certStore holds the certificates of every HTTPS listener, keeps the
// file ones current (poll) and picks one per TLS handshake by SNI.
type certStore struct {
	logger *slog.Logger

	mu sync.Mutex
	// sources by sourceKey; listeners maps a listener to its sources, in
	// order.
	sources   map[string]*certSource
	listeners map[string][]*certSource

	reloads *prometheus.CounterVec
}

func newCertStore(logger *slog.Logger, reg prometheus.Registerer) (*certStore, error) {
	s := &certStore{
		logger:    logger,
		sources:   map[string]*certSource{},
		listeners: map[string][]*certSource{},
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_gateway_certificate_reloads_total",
			Help: "Certificates of HTTPS listeners (re)loaded from their Secret or files, by result (ok, or error: the previous certificate is kept).",
		}, []string{"result"}),
	}
	if err := reg.Register(s.reloads); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	if err := reg.Register(&expiryCollector{s: s, desc: prometheus.NewDesc(
		"bulwark_gateway_certificate_expiry_timestamp_seconds",
		"Expiry (notAfter, Unix seconds) of the certificate each HTTPS listener serves, by listener and certificate (Secret name or file path).",
		[]string{"listener", "certificate"}, nil)}); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	for _, r := range []string{resultOK, resultError} {
		s.reloads.WithLabelValues(r)
	}
	return s, nil
}

// Values of the result label of bulwark_gateway_certificate_reloads_total.
const (
	resultOK    = "ok"
	resultError = "error"
)

// update makes the store hold the certificates of gw's HTTPS listeners:
// new sources are loaded now (a bad one is logged and skipped: the
// listener's others still serve), changed Secrets reloaded, and sources no
// listener names any more dropped.
func (s *certStore) update(gw *config.Gateway, secrets map[string]*apiv1.TLSSecret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sources := map[string]*certSource{}
	listeners := map[string][]*certSource{}
	for _, l := range gw.Spec.Listeners {
		if l.Protocol != config.ListenerHTTPS || l.TLS == nil {
			continue
		}
		for _, c := range l.TLS.Certificates {
			key := sourceKey(c)
			src := sources[key]
			if src == nil {
				if src = s.sources[key]; src == nil {
					src = &certSource{secret: c.Secret, certFile: c.CertFile, keyFile: c.KeyFile, name: c.Secret}
					if c.Secret == "" {
						src.name = c.CertFile
					}
				}
				sources[key] = src
				if src.secret != "" {
					s.loadSecret(src, secrets[src.secret])
				} else if src.cert.Load() == nil {
					s.loadFiles(src)
				}
			}
			listeners[l.Name] = append(listeners[l.Name], src)
		}
	}
	s.sources, s.listeners = sources, listeners
}

// loadSecret installs sec in src unless it holds it already.
func (s *certStore) loadSecret(src *certSource, sec *apiv1.TLSSecret) {
	if sec == nil {
		// The Secret is gone (deleted, or not of type kubernetes.io/tls):
		// its certificate is no longer served.
		src.cert.Store(nil)
		if !src.missing {
			src.missing = true
			s.reloads.WithLabelValues(resultError).Inc()
			s.logger.Error(msgCertMissing, telemetry.KeyName, src.name)
		}
		return
	}
	src.missing = false
	s.install(src, sec.GetCertPem(), sec.GetKeyPem())
}

// loadFiles reads src's files if their size or modification time changed
// since the last read, and installs them if their bytes changed.
func (s *certStore) loadFiles(src *certSource) {
	stamp, err := fileStamp(src.certFile, src.keyFile)
	if err != nil {
		if src.stamp != "!" {
			src.stamp = "!"
			s.reloads.WithLabelValues(resultError).Inc()
			s.logger.Error(msgCertRefused, telemetry.KeyName, src.name, telemetry.KeyErr, err)
		}
		return
	}
	if stamp == src.stamp {
		return
	}
	certPEM, err := readBounded(src.certFile)
	var keyPEM []byte
	if err == nil {
		keyPEM, err = readBounded(src.keyFile)
	}
	if err != nil {
		s.reloads.WithLabelValues(resultError).Inc()
		s.logger.Error(msgCertRefused, telemetry.KeyName, src.name, telemetry.KeyErr, err)
		return
	}
	src.stamp = stamp
	s.install(src, certPEM, keyPEM)
}

// install parses a PEM pair and makes it src's certificate; a pair that
// does not parse, or whose key does not match, is logged (without its
// bytes) and the previous certificate kept.
func (s *certStore) install(src *certSource, certPEM, keyPEM []byte) {
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if src.cert.Load() != nil && sum == src.sum || sum == src.bad {
		return
	}
	cert, err := parsePair(certPEM, keyPEM)
	if err != nil {
		src.bad = sum
		s.reloads.WithLabelValues(resultError).Inc()
		s.logger.Error(msgCertRefused, telemetry.KeyName, src.name, telemetry.KeyErr, err)
		return
	}
	src.sum, src.bad = sum, [sha256.Size]byte{}
	old := src.cert.Swap(cert)
	s.reloads.WithLabelValues(resultOK).Inc()
	msg := msgCertLoaded
	if old != nil {
		msg = msgCertReloaded
	}
	s.logger.Info(msg, telemetry.KeyName, src.name, telemetry.KeySerial, cert.Leaf.SerialNumber.Text(16),
		telemetry.KeyExpiry, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

// Log messages of the certificate store.
const (
	msgCertLoaded   = "gateway certificate loaded"
	msgCertReloaded = "gateway certificate reloaded"
	msgCertRefused  = "gateway certificate refused, keeping the previous one"
	msgCertMissing  = "gateway certificate secret missing from the snapshot, not served"
)

// parsePair parses a PEM certificate chain (leaf first) and its key, which
// must match the leaf.
func parsePair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls's messages name the defect, never the key's bytes.
		return nil, fmt.Errorf("parse certificate and key: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
	}
	return &cert, nil
}

func fileStamp(paths ...string) (string, error) {
	var b strings.Builder
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("%s: not a regular file", p)
		}
		fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxPEMFileBytes+1)); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if buf.Len() > maxPEMFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPEMFileBytes)
	}
	return buf.Bytes(), nil
}

// poll re-reads the file certificates whose files changed.
func (s *certStore) poll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, src := range s.sources {
		if src.secret == "" {
			s.loadFiles(src)
		}
	}
}

// hasFiles reports whether any certificate comes from files.
func (s *certStore) hasFiles() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, src := range s.sources {
		if src.secret == "" {
			return true
		}
	}
	return false
}

// usable reports whether listener has at least one certificate.
func (s *certStore) usable(listener string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, src := range s.listeners[listener] {
		if src.cert.Load() != nil {
			return true
		}
	}
	return false
}

// errNoCertificate fails a handshake on a listener without a usable
// certificate.
var errNoCertificate = errors.New("gateway: no usable certificate for this listener")

// getCertificate returns the GetCertificate of listener: the first of its
// certificates whose leaf's DNS names match the client's server name (a
// "*.example.com" name matches one label), else the first it holds.
func (s *certStore) getCertificate(listener string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		s.mu.Lock()
		srcs := s.listeners[listener]
		s.mu.Unlock()
		name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
		var first *tls.Certificate
		for _, src := range srcs {
			c := src.cert.Load()
			if c == nil {
				continue
			}
			if first == nil {
				first = c
			}
			if name != "" && leafMatches(c.Leaf, name) {
				return c, nil
			}
		}
		if first == nil {
			return nil, errNoCertificate
		}
		return first, nil
	}
}

// leafMatches reports whether one of leaf's DNS names matches name (lower
// case): exactly, or as a wildcard for one label.
func leafMatches(leaf *x509.Certificate, name string) bool {
	for _, dns := range leaf.DNSNames {
		dns = strings.ToLower(dns)
		if dns == name {
			return true
		}
		if rest, ok := strings.CutPrefix(dns, "*."); ok {
			if label, domain, ok := strings.Cut(name, "."); ok && label != "" && domain == rest {
				return true
			}
		}
	}
	return false
}

// expiryCollector exports the expiry of every listener's certificates, read
// at scrape time: series go with their listener or certificate.
type expiryCollector struct {
	s    *certStore
	desc *prometheus.Desc
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for listener, srcs := range c.s.listeners {
		for _, src := range srcs {
			if cert := src.cert.Load(); cert != nil {
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue,
					float64(cert.Leaf.NotAfter.Unix()), listener, src.name)
			}
		}
	}
}
