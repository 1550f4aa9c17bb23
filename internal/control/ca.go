package control

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/ca/rotation"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// EnvCAKeyPassphrase is the environment variable the CLI reads the CA key
// passphrase from (never a flag: flags show in ps).
const EnvCAKeyPassphrase = "BULWARK_CA_KEY_PASSPHRASE"

// defaultCAKeyFile is the key file created in the data dir when neither a
// passphrase nor a key file is configured.
const defaultCAKeyFile = "ca-key"

// openKeys opens the CA key manager, encrypted with the passphrase, the key
// file, or (neither given) a key file kept in the data dir and created on
// the first start. The last is the convenient default of a laptop mesh; it
// protects key files copied without it, not a stolen data dir.
func openKeys(cfg *Config, logger *slog.Logger) (*keymanager.Disk, error) {
	var secret keymanager.Secret
	var err error
	switch {
	case cfg.CAKeyPassphrase != "" && cfg.CAKeyFile != "":
		return nil, fmt.Errorf("ca key: give either %s or --ca-key-file, not both", EnvCAKeyPassphrase)
	case cfg.CAKeyPassphrase != "":
		secret, err = keymanager.PassphraseSecret(cfg.CAKeyPassphrase)
	case cfg.CAKeyFile != "":
		secret, err = keymanager.KeyFileSecret(cfg.CAKeyFile)
	default:
		path := filepath.Join(cfg.DataDir, defaultCAKeyFile)
		if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
			if err := keymanager.CreateKeyFile(path); err != nil {
				return nil, fmt.Errorf("ca key: %w", err)
			}
			logger.Warn("ca keys are encrypted with a key file in the data dir; keep it elsewhere (--ca-key-file) or use "+EnvCAKeyPassphrase,
				telemetry.KeyPath, path)
		}
		secret, err = keymanager.KeyFileSecret(path)
	}
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	keys, err := keymanager.NewDisk(filepath.Join(cfg.DataDir, keysDir), secret, logger)
	if err != nil {
		return nil, fmt.Errorf("open ca keys: %w", err)
	}
	return keys, nil
}

// registryFleet is the rotation's view of the registry.
type registryFleet struct {
	reg   *registry.Registry
	clock clock.Clock
}

// Connected lists the proxies rotation waits for: connected ones, and those
// disconnected for less than the registry's grace period. A proxy
// reconnects after every renewal; without the grace, a rotation could
// activate in that instant and leave it with a bundle that cannot verify
// the control plane's new certificate.
func (f registryFleet) Connected(ctx context.Context) ([]rotation.Proxy, error) {
	proxies, _, err := f.reg.Proxies(ctx)
	if err != nil {
		return nil, err
	}
	now := f.clock.Now()
	var out []rotation.Proxy
	for _, p := range proxies {
		if p.Connected || now.Sub(p.LastSeen) < f.reg.Grace() {
			out = append(out, rotation.Proxy{Name: p.Namespace + "/" + p.Instance, BundleVersion: p.BundleVersion, SVIDAuthority: p.SVIDAuthority})
		}
	}
	return out, nil
}

// caAdmin is the admin API's view of the CA.
type caAdmin struct {
	td  string
	ca  *ca.CA
	rot *rotation.Manager
	jwt *ca.JWTAuthority
}

var _ admin.CA = caAdmin{}

func (a caAdmin) JWKS() []byte { return a.jwt.JWKS() }

func (a caAdmin) Rotate(ctx context.Context, req admin.RotateRequest) error {
	var err error
	switch {
	case req.Target == "root" && req.RootCert != "":
		cert, key, perr := ca.ParseRootPEM([]byte(req.RootCert), []byte(req.RootKey))
		if perr != nil {
			return fmt.Errorf("%w: %v", admin.ErrBadRequest, perr)
		}
		err = a.rot.StartRootFrom(ctx, cert, key)
	case req.Target == "root":
		err = a.rot.StartRoot(ctx)
	case req.Target == "intermediate":
		err = a.rot.RotateIntermediate(ctx)
	default:
		return fmt.Errorf("%w: unknown rotation target %q", admin.ErrBadRequest, req.Target)
	}
	switch {
	case errors.Is(err, ca.ErrRotationInProgress) || errors.Is(err, ca.ErrWrongPhase):
		return fmt.Errorf("%w: %v", admin.ErrConflict, err)
	case errors.Is(err, ca.ErrBadRoot):
		return fmt.Errorf("%w: %v", admin.ErrBadRequest, err)
	}
	return err
}

func (a caAdmin) Status(ctx context.Context) (admin.CAStatus, error) {
	st, err := a.rot.Status(ctx)
	if err != nil {
		return admin.CAStatus{}, err
	}
	r := st.Rotation
	out := admin.CAStatus{
		TrustDomain:   a.td,
		Phase:         string(r.Phase),
		BundleVersion: r.BundleVersion,
		PhaseSince:    r.PhaseSince,
		RetireAfter:   r.RetireAfter,
		Waiting:       st.Waiting,
		Intermediate:  caCert(r.Intermediate, false),
		Proxies: admin.CAFleet{
			Connected:          st.Connected,
			ByBundleVersion:    map[string]int{},
			OnSigningAuthority: st.Authorities[ca.KeyID(r.Intermediate.SubjectKeyId)],
		},
	}
	switch r.Phase {
	case ca.PhaseNone:
		out.Phase = "idle"
	case ca.PhasePrepared:
		out.WaitingFor = "every connected proxy to ACK bundle version " + strconv.FormatInt(r.BundleVersion, 10) + ", then the new root signs"
	case ca.PhaseActivated:
		out.WaitingFor = "every connected proxy to renew under the new root, and " + r.RetireAfter.UTC().Format("2006-01-02T15:04:05Z") +
			" (the longest SVID lifetime under the old root), then the old root is retired"
	}
	for _, root := range r.Roots {
		out.Roots = append(out.Roots, caCert(root, root.Equal(r.SigningRoot)))
	}
	for v, n := range st.BundleVersions {
		out.Proxies.ByBundleVersion[strconv.FormatInt(v, 10)] = n
	}
	return out, nil
}

func caCert(c *x509.Certificate, signing bool) admin.CACert {
	return admin.CACert{
		Serial: c.SerialNumber.Text(16), SubjectKeyID: ca.KeyID(c.SubjectKeyId),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), Signing: signing,
	}
}

// caCollector exports the workload CA's state as Prometheus metrics,
// computed at scrape time.
type caCollector struct {
	ca    *ca.CA
	clock clock.Clock

	expiry, bundle, phase *prometheus.Desc
}

func newCACollector(c *ca.CA, clk clock.Clock) *caCollector {
	return &caCollector{
		ca: c, clock: clk,
		expiry: prometheus.NewDesc("bulwark_ca_expiry_seconds",
			"Seconds until a workload CA certificate expires (negative once expired).", []string{"certificate", "serial"}, nil),
		bundle: prometheus.NewDesc("bulwark_ca_bundle_version", "Version of the trust bundle pushed to proxies.", nil, nil),
		phase: prometheus.NewDesc("bulwark_ca_rotation_phase",
			"1 for the current root rotation phase (idle, prepared, activated).", []string{"phase"}, nil),
	}
}

func (c *caCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	ch <- c.bundle
	ch <- c.phase
}

func (c *caCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.ca.Rotation()
	now := c.clock.Now()
	for _, root := range r.Roots {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, root.NotAfter.Sub(now).Seconds(), "root", root.SerialNumber.Text(16))
	}
	ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, r.Intermediate.NotAfter.Sub(now).Seconds(),
		"intermediate", r.Intermediate.SerialNumber.Text(16))
	ch <- prometheus.MustNewConstMetric(c.bundle, prometheus.GaugeValue, float64(r.BundleVersion))
	for _, p := range []ca.Phase{ca.PhaseNone, ca.PhasePrepared, ca.PhaseActivated} {
		name, v := string(p), 0.0
		if p == ca.PhaseNone {
			name = "idle"
		}
		if p == r.Phase {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, v, name)
	}
}
