package control

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
	"github.com/bulwarkmesh/bulwark/internal/store/etcd"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Store backends (Config.Store).
const (
	StoreBolt = "bolt"
	StoreEtcd = "etcd"
)

// EtcdConfig is where an etcd store is and how to reach it: client mTLS
// is required.
type EtcdConfig struct {
	Endpoints []string
	// CAFile verifies etcd's serving certificate; CertFile and KeyFile
	// are the control plane's client certificate.
	CAFile, CertFile, KeyFile string
	// Prefix of the mesh's keys; default "/bulwark/".
	Prefix string
}

// validate checks the store settings of c.
func (c *Config) validateStore() error {
	switch c.Store {
	case "", StoreBolt:
		c.Store = StoreBolt
		if len(c.Etcd.Endpoints) > 0 {
			return errors.New("etcd-endpoints: only with --store etcd")
		}
	case StoreEtcd:
		e := c.Etcd
		if len(e.Endpoints) == 0 {
			return errors.New("etcd-endpoints: required with --store etcd")
		}
		if e.CAFile == "" || e.CertFile == "" || e.KeyFile == "" {
			return errors.New("etcd-ca, etcd-cert and etcd-key: required with --store etcd (the control plane talks to etcd over mTLS only)")
		}
	default:
		return fmt.Errorf("store: %q: want bolt or etcd", c.Store)
	}
	return nil
}

// openStore opens the configured store.
func openStore(ctx context.Context, cfg *Config, logger *slog.Logger) (store.Store, error) {
	if cfg.Store != StoreEtcd {
		return bolt.Open(filepath.Join(cfg.DataDir, storeFile), bolt.Config{Logger: logger})
	}
	tlsCfg, err := etcdTLS(cfg.Etcd)
	if err != nil {
		return nil, err
	}
	st, err := etcd.Open(ctx, etcd.Config{Endpoints: cfg.Etcd.Endpoints, TLS: tlsCfg, Prefix: cfg.Etcd.Prefix, Logger: logger})
	if err != nil {
		return nil, err
	}
	logger.Info("store opened", telemetry.KeyKind, StoreEtcd, telemetry.KeyAddress, cfg.Etcd.Endpoints)
	return st, nil
}

// etcdTLS builds the client mTLS config to etcd from its files.
func etcdTLS(e EtcdConfig) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("etcd-cert/etcd-key: %w", err)
	}
	b, err := os.ReadFile(e.CAFile)
	if err != nil {
		return nil, fmt.Errorf("etcd-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("etcd-ca: %s: no PEM certificate", e.CAFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{pair}}, nil
}
