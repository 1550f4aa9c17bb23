// Package etcd is the store backend for a highly available control plane:
// store.Store on an etcd cluster (go.etcd.io/etcd/client/v3), so several
// control-plane replicas share one store with optimistic concurrency.
//
// How it maps onto etcd:
//   - Every key lives under Config.Prefix (default "/bulwark/"), which is
//     stripped on the way back: several meshes, or tests, can share one
//     etcd cluster.
//   - The store's revision is etcd's cluster-wide revision (the response
//     header's). A Txn is one etcd transaction; etcd bumps the revision
//     once per transaction that changes something, and not for one that
//     changes nothing (only deletes of missing keys), as the store's
//     contract says. A comparison on ModRevision 0 (the key must not exist)
//     is a comparison of the key's CreateRevision with 0.
//   - Watch is an etcd watch from afterRev+1 with the prefix. Revisions the
//     cluster compacted are store.ErrCompacted (checked when the watch
//     starts, and a compaction met while watching closes the channel: the
//     caller lists again, as with bbolt).
//
// What the operator must configure on the etcd side: client mTLS (Open
// refuses a Config without TLS unless AllowInsecure, meant for tests) and
// auto-compaction (for example --auto-compaction-mode=periodic
// --auto-compaction-retention=1h): the control plane never compacts.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Config configures the etcd store.
type Config struct {
	// Endpoints are the etcd cluster's client URLs; required.
	Endpoints []string
	// TLS is the client's TLS config (mTLS: a client certificate and the
	// etcd CA); required unless AllowInsecure.
	TLS *tls.Config
	// AllowInsecure allows a plaintext connection to etcd, for tests only.
	AllowInsecure bool
	// Prefix of every key; default "/bulwark/". It must end in "/".
	Prefix string
	// DialTimeout bounds connecting to etcd at Open; default 5s.
	DialTimeout time.Duration
	// WatchBuffer is how many events a watcher may fall behind before its
	// channel is closed; default 1024.
	WatchBuffer int
	// Logger, default discard.
	Logger *slog.Logger
}

// DefaultPrefix is the default key prefix.
const DefaultPrefix = "/bulwark/"

// Store is a store.Store on etcd.
type Store struct {
	cli    *clientv3.Client
	prefix string
	buffer int
	logger *slog.Logger

	// life guards closed; watches run under ctx, cancelled by Close.
	life    sync.RWMutex
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	watches sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open connects to etcd and checks that the cluster answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if cfg.TLS == nil && !cfg.AllowInsecure {
		return nil, errors.New("etcd: TLS is required (a client certificate and the etcd CA)")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("etcd: prefix %q must end in /", cfg.Prefix)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.WatchBuffer <= 0 {
		cfg.WatchBuffer = 1024
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		TLS:                  cfg.TLS,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		Logger:               zap.NewNop(),
		Context:              context.WithoutCancel(ctx),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: connect to %v: %w", cfg.Endpoints, err)
	}
	probe, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(probe, cfg.Prefix, clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd: reach %v: %w", cfg.Endpoints, err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	return &Store{cli: cli, prefix: cfg.Prefix, buffer: cfg.WatchBuffer, logger: telemetry.OrDiscard(cfg.Logger),
		ctx: sctx, cancel: scancel}, nil
}

// enter checks that the store is open and ctx not done; the caller calls
// the returned release when done.
func (s *Store) enter(ctx context.Context) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return nil, store.ErrClosed
	}
	return s.life.RUnlock, nil
}

// wrap makes an etcd error the store's.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, rpctypes.ErrCompacted) {
		return store.ErrCompacted
	}
	return fmt.Errorf("etcd %s: %w", op, err)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	release, err := s.enter(ctx)
	if err != nil {
		return store.KV{}, err
	}
	defer release()
	resp, err := s.cli.Get(ctx, s.prefix+key)
	if err != nil {
		return store.KV{}, s.wrap(ctx, "get", err)
	}
	if len(resp.Kvs) == 0 {
		return store.KV{}, store.ErrNotFound
	}
	return s.kv(resp.Kvs[0]), nil
}

// kv converts an etcd key-value (its bytes are copied: the caller keeps
// them).
func (s *Store) kv(kv *mvccpb.KeyValue) store.KV {
	return store.KV{
		Key:            strings.TrimPrefix(string(kv.Key), s.prefix),
		Value:          append([]byte(nil), kv.Value...),
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
	}
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	release, err := s.enter(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer release()
	resp, err := s.cli.Get(ctx, s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, s.wrap(ctx, "list", err)
	}
	out := make([]store.KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = s.kv(kv)
	}
	return out, resp.Header.Revision, nil
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	if err := validate(cmps, ops); err != nil {
		return 0, err
	}
	release, err := s.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	ifs := make([]clientv3.Cmp, len(cmps))
	for i, c := range cmps {
		if c.ModRevision == 0 {
			ifs[i] = clientv3.Compare(clientv3.CreateRevision(s.prefix+c.Key), "=", 0)
		} else {
			ifs[i] = clientv3.Compare(clientv3.ModRevision(s.prefix+c.Key), "=", c.ModRevision)
		}
	}
	thens := make([]clientv3.Op, len(ops))
	for i, o := range ops {
		if o.Delete {
			thens[i] = clientv3.OpDelete(s.prefix + o.Key)
		} else {
			thens[i] = clientv3.OpPut(s.prefix+o.Key, string(o.Value))
		}
	}
	resp, err := s.cli.Txn(ctx).If(ifs...).Then(thens...).Commit()
	if err != nil {
		return 0, s.wrap(ctx, "txn", err)
	}
	if !resp.Succeeded {
		return 0, store.ErrConflict
	}
	return resp.Header.Revision, nil
}

// validate refuses what the contract calls invalid: empty keys and a key
// written twice.
func validate(cmps []store.Cmp, ops []store.Op) error {
	for _, c := range cmps {
		if c.Key == "" {
			return errors.New("store: txn: empty key in a comparison")
		}
	}
	seen := make(map[string]bool, len(ops))
	for _, o := range ops {
		if o.Key == "" {
			return errors.New("store: txn: empty key in an operation")
		}
		if seen[o.Key] {
			return fmt.Errorf("store: txn: key %q written twice", o.Key)
		}
		seen[o.Key] = true
	}
	return nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, prefix string, afterRev int64) (<-chan store.Event, error) {
	if afterRev < 0 {
		return nil, fmt.Errorf("watch %s: negative revision %d", prefix, afterRev)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	// Is afterRev+1 still there? A read at afterRev fails with
	// ErrCompacted once the cluster compacted past it. (A read at
	// revision 0 means "now" to etcd: from the start, revision 1 is read.)
	at := max(afterRev, 1)
	if _, err := s.cli.Get(ctx, s.prefix, clientv3.WithRev(at), clientv3.WithCountOnly()); err != nil {
		if errors.Is(err, rpctypes.ErrFutureRev) {
			// Watching from after the latest revision: nothing to catch up.
		} else {
			return nil, s.wrap(ctx, "watch", err)
		}
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	stop := context.AfterFunc(ctx, cancel)
	wch := s.cli.Watch(wctx, s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithRev(afterRev+1))
	out := make(chan store.Event, s.buffer)
	s.watches.Add(1)
	go func() {
		defer s.watches.Done()
		defer close(out)
		defer stop()
		defer cancel()
		for resp := range wch {
			if resp.CompactRevision != 0 || resp.Canceled || resp.Err() != nil {
				if ctx.Err() == nil && s.ctx.Err() == nil {
					s.logger.Warn("etcd watch ended: the caller lists again", telemetry.KeyErr, resp.Err())
				}
				return
			}
			for _, ev := range resp.Events {
				e := store.Event{Type: store.EventPut, KV: s.kv(ev.Kv)}
				if ev.Type == clientv3.EventTypeDelete {
					e = store.Event{Type: store.EventDelete, KV: store.KV{Key: e.KV.Key, ModRevision: ev.Kv.ModRevision}}
				}
				select {
				case out <- e:
				default:
					// Too far behind: closing tells the caller to list
					// again.
					s.logger.Warn("etcd watcher fell behind: closing it", telemetry.KeyCount, s.buffer)
					return
				}
			}
		}
	}()
	return out, nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	s.life.Unlock()
	s.cancel()
	s.watches.Wait()
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcd: close: %w", err)
	}
	return nil
}
