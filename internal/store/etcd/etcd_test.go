package etcd_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/etcd"
	"github.com/bulwarkmesh/bulwark/internal/store/storetest"
)

// server is an embedded etcd on loopback.
type server struct {
	endpoint string
	tls      *tls.Config // the client's, when the server requires mTLS
}

// freePort returns a free loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startEtcd starts an embedded etcd in a temp dir, with client mTLS when
// withTLS, and stops it when the test ends.
func startEtcd(t *testing.T, withTLS bool) server {
	t.Helper()
	dir := t.TempDir()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	scheme := "http"
	var srv server
	if withTLS {
		scheme = "https"
		ca, caKey := newCA(t)
		write := func(name string, b []byte) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
		caFile := write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))
		sc, sk := leaf(t, ca, caKey, "etcd", x509.ExtKeyUsageServerAuth)
		cfg.ClientTLSInfo.CertFile = write("server.pem", sc)
		cfg.ClientTLSInfo.KeyFile = write("server-key.pem", sk)
		cfg.ClientTLSInfo.TrustedCAFile = caFile
		cfg.ClientTLSInfo.ClientCertAuth = true
		cc, ck := leaf(t, ca, caKey, "bulwark", x509.ExtKeyUsageClientAuth)
		pair, err := tls.X509KeyPair(cc, ck)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		srv.tls = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client := url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready within 30s")
	}
	srv.endpoint = client.String()
	return srv
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key
}

func leaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

func (s server) open(t *testing.T, prefix string) *etcd.Store {
	t.Helper()
	st, err := etcd.Open(t.Context(), etcd.Config{Endpoints: []string{s.endpoint}, TLS: s.tls, AllowInsecure: s.tls == nil, Prefix: prefix})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestContract runs the store contract suite on one etcd with mTLS, each
// store under a prefix of its own (the suite's subtests run one at a
// time, so nothing else writes while one runs).
func TestContract(t *testing.T) {
	srv := startEtcd(t, true)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) store.Store {
		return srv.open(t, fmt.Sprintf("/contract/%d/", n.Add(1)))
	})
}

func TestOpenRefuses(t *testing.T) {
	srv := startEtcd(t, true)
	for _, tc := range []struct {
		name string
		cfg  etcd.Config
		want string
	}{
		{"no endpoints", etcd.Config{AllowInsecure: true}, "no endpoints"},
		{"no tls", etcd.Config{Endpoints: []string{srv.endpoint}}, "TLS is required"},
		{"bad prefix", etcd.Config{Endpoints: []string{srv.endpoint}, TLS: srv.tls, Prefix: "/x"}, "must end in /"},
		{"no client certificate", etcd.Config{Endpoints: []string{srv.endpoint}, TLS: &tls.Config{RootCAs: srv.tls.RootCAs}, DialTimeout: 2 * time.Second}, "reach"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := etcd.Open(t.Context(), tc.cfg)
			if err == nil {
				st.Close()
				t.Fatalf("Open: no error, want one with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestPrefixIsolates: two stores on one etcd see only their own keys.
func TestPrefixIsolates(t *testing.T) {
	srv := startEtcd(t, false)
	a, b := srv.open(t, "/mesh-a/"), srv.open(t, "/mesh-b/")
	if _, err := store.Put(t.Context(), a, "/k", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(t.Context(), "/k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b.Get of a's key: got %v, want ErrNotFound", err)
	}
	kvs, _, err := b.List(t.Context(), "")
	if err != nil || len(kvs) != 0 {
		t.Errorf("b.List: got %v %v, want nothing", kvs, err)
	}
}

// TestReplicasCompareAndSwap: two Stores on the same prefix (two control
// plane replicas) race 50 writers on one key with compare-and-swap:
// every increment lands exactly once.
func TestReplicasCompareAndSwap(t *testing.T) {
	srv := startEtcd(t, false)
	replicas := []*etcd.Store{srv.open(t, "/ha/"), srv.open(t, "/ha/")}
	ctx := t.Context()
	if _, err := store.Put(ctx, replicas[0], "/counter", []byte("0")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conflicts atomic.Int64
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := replicas[i%2]
			for {
				kv, err := s.Get(ctx, "/counter")
				if err != nil {
					t.Error(err)
					return
				}
				var n int
				fmt.Sscan(string(kv.Value), &n)
				_, err = s.Txn(ctx, []store.Cmp{{Key: "/counter", ModRevision: kv.ModRevision}},
					[]store.Op{{Key: "/counter", Value: []byte(fmt.Sprint(n + 1))}})
				if errors.Is(err, store.ErrConflict) {
					conflicts.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
				}
				return
			}
		}()
	}
	wg.Wait()
	kv, err := replicas[1].Get(ctx, "/counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "50" {
		t.Errorf("counter: got %s, want 50 (lost updates)", kv.Value)
	}
	t.Logf("%d conflicts retried", conflicts.Load())
}

// TestWatchCompacted: a watch from a revision the cluster compacted away
// is ErrCompacted; the caller lists again.
func TestWatchCompacted(t *testing.T) {
	srv := startEtcd(t, false)
	s := srv.open(t, "/compact/")
	ctx := t.Context()
	first, err := store.Put(ctx, s, "/w/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	last, _ := store.Put(ctx, s, "/w/a", []byte("2"))
	store.Put(ctx, s, "/w/a", []byte("3"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Watch(ctx, "/w/", first); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("watch from a compacted revision: got %v, want ErrCompacted", err)
	}
	ch, err := s.Watch(ctx, "/w/", last)
	if err != nil {
		t.Fatalf("watch from the compaction revision: %v", err)
	}
	select {
	case ev := <-ch:
		if string(ev.KV.Value) != "3" {
			t.Errorf("event: got %q, want the write after the compaction", ev.KV.Value)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
}
