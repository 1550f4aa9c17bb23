package control_test

import (
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/control"
)

// TestStoreConfig: the store flags are checked before anything starts.
func TestStoreConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  control.Config
		want string
	}{
		{"unknown backend", control.Config{Store: "redis"}, `store: "redis": want bolt or etcd`},
		{"etcd without endpoints", control.Config{Store: control.StoreEtcd}, "etcd-endpoints: required"},
		{"etcd without mTLS", control.Config{Store: control.StoreEtcd, Etcd: control.EtcdConfig{Endpoints: []string{"https://127.0.0.1:2379"}}},
			"etcd-ca, etcd-cert and etcd-key: required"},
		{"endpoints with bolt", control.Config{Etcd: control.EtcdConfig{Endpoints: []string{"https://127.0.0.1:2379"}}}, "only with --store etcd"},
		{"unreadable certificates", control.Config{Store: control.StoreEtcd, Etcd: control.EtcdConfig{Endpoints: []string{"https://127.0.0.1:1"},
			CAFile: "/nonexistent/ca.pem", CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}}, "etcd-cert/etcd-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir = t.TempDir()
			err := control.Run(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
