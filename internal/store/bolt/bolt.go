// Package bolt owns the embedded bbolt backend of store.Store, the default
// store of a single control plane: one file in the data directory, opened by
// one process at a time.
//
// # Layout
//
// The file has two buckets. Bucket "kv" maps each key to a 16-byte header,
// the key's CreateRevision and ModRevision as big-endian int64s, followed by
// the value. Bucket "meta" holds "rev", the store revision as a big-endian
// int64. Each Txn is one bbolt read-write transaction, fsynced before Txn
// returns, so an acknowledged Txn survives a crash.
//
// # Watch
//
// Watch is served from memory: the Store keeps the events of the last
// Config.WatchHistory changes made since Open. A Watch from an older
// revision, and any Watch from before the revision at Open, returns
// store.ErrCompacted: the caller lists again. Events are published after
// the commit; a watcher that does not keep up (its buffer of
// Config.WatchBuffer events is full) is dropped and its channel closed, so
// that a slow reader never blocks a writer.
//
// # Caveats
//
// The history is counted in events, not bytes: with large values it can hold
// WatchHistory times the largest value. The file mode 0600 applies when Open
// creates the file; an existing file keeps its mode.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Defaults of Config.
const (
	// DefaultLockTimeout is Config.LockTimeout when it is zero.
	DefaultLockTimeout = 2 * time.Second
	// DefaultWatchHistory is Config.WatchHistory when it is zero.
	DefaultWatchHistory = 10000
	// DefaultWatchBuffer is Config.WatchBuffer when it is zero.
	DefaultWatchBuffer = 1024
)

// fileMode is the mode of a store file Open creates: it holds the mesh's
// state, readable by its owner only.
const fileMode = 0o600

// Names of the buckets and of the revision key (see the package doc).
const (
	bucketKV   = "kv"
	bucketMeta = "meta"
	keyRev     = "rev"
)

// headerLen is the length of the revisions header before each value.
const headerLen = 16

// errNoChange rolls back a Txn whose ops change nothing.
var errNoChange = errors.New("no change")

// Config configures Open. The zero value is valid.
type Config struct {
	// Logger receives open, close and dropped-watcher events; never
	// values. Default: discard.
	Logger *slog.Logger
	// LockTimeout is how long Open waits for the file lock held by another
	// process before it fails with ErrLocked. Default: 2s. Negative is an
	// error.
	LockTimeout time.Duration
	// WatchHistory is the number of events kept in memory so that Watch can
	// catch up from a past revision. Default: 10000. Negative is an error.
	WatchHistory int
	// WatchBuffer is the number of events buffered per watcher, beyond its
	// catch-up events; a watcher whose buffer is full is dropped. Default:
	// 1024. Negative is an error.
	WatchBuffer int
}

// withDefaults returns cfg with zero fields set to their defaults, or an
// error naming an invalid field.
func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.LockTimeout < 0:
		return cfg, fmt.Errorf("LockTimeout: negative duration %v", cfg.LockTimeout)
	case cfg.WatchHistory < 0:
		return cfg, fmt.Errorf("WatchHistory: negative count %d", cfg.WatchHistory)
	case cfg.WatchBuffer < 0:
		return cfg, fmt.Errorf("WatchBuffer: negative count %d", cfg.WatchBuffer)
	}
	cfg.Logger = telemetry.OrDiscard(cfg.Logger)
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.WatchHistory == 0 {
		cfg.WatchHistory = DefaultWatchHistory
	}
	if cfg.WatchBuffer == 0 {
		cfg.WatchBuffer = DefaultWatchBuffer
	}
	return cfg, nil
}

// Store is a store.Store in a bbolt file. It is safe for concurrent use.
type Store struct {
	// Locks are taken in the order life, writeMu, mu.

	db     *bbolt.DB
	path   string
	logger *slog.Logger
	buffer int

	// life guards closed: every operation holds it shared while it uses
	// db, Close holds it exclusively, so no operation sees a closed db.
	life   sync.RWMutex
	closed bool

	closeOnce sync.Once
	closeErr  error

	// writeMu serializes Txn from the start of its bbolt transaction to the
	// publication of its events, so events are published in revision
	// order.
	writeMu sync.Mutex

	// mu guards the watch state below.
	mu sync.Mutex
	// compacted is the oldest revision a Watch may start after: every
	// event after it is in history.
	compacted int64
	history   ring
	watchers  map[*watcher]struct{}
}

// Interface guard.
var _ store.Store = (*Store)(nil)

// Open opens the store file at path, creating it with mode 0600 if it does
// not exist; its directory must exist. It fails with ErrLocked when another
// process (or another open Store in this one) still holds the file after
// cfg.LockTimeout. The caller closes the Store.
func Open(path string, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open store %s: invalid config: %w", path, err)
	}
	db, err := bbolt.Open(path, fileMode, &bbolt.Options{Timeout: cfg.LockTimeout})
	if errors.Is(err, bberrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	var rev int64
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists([]byte(bucketKV)); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists([]byte(bucketMeta))
		if err != nil {
			return err
		}
		rev, err = readRev(meta)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		path:      path,
		logger:    cfg.Logger.With(telemetry.KeyComponent, "store"),
		buffer:    cfg.WatchBuffer,
		compacted: rev,
		history:   ring{max: cfg.WatchHistory},
		watchers:  make(map[*watcher]struct{}),
	}
	s.logger.Info("store opened", telemetry.KeyPath, path)
	return s, nil
}

// Get returns the key, or store.ErrNotFound. The value is the caller's.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := ctx.Err(); err != nil {
		return store.KV{}, err
	}
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return store.KV{}, store.ErrClosed
	}
	var kv store.KV
	found := false
	err := s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket([]byte(bucketKV)).Get([]byte(key))
		if v == nil {
			return nil
		}
		found = true
		var err error
		kv, err = decode(key, v)
		return err
	})
	if err != nil {
		return store.KV{}, fmt.Errorf("get %s: %w", key, err)
	}
	if !found {
		return store.KV{}, store.ErrNotFound
	}
	return kv, nil
}

// List returns every key with the prefix, sorted by key, and the revision
// of the read. The values are the caller's.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return nil, 0, store.ErrClosed
	}
	var (
		kvs []store.KV
		rev int64
	)
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		if rev, err = readRev(tx.Bucket([]byte(bucketMeta))); err != nil {
			return err
		}
		p := []byte(prefix)
		c := tx.Bucket([]byte(bucketKV)).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			kv, err := decode(string(k), v)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", prefix, err)
	}
	return kvs, rev, nil
}

// Txn applies ops atomically if every cmp holds, fsyncs, and returns the new
// revision; with a failed comparison it writes nothing and returns
// store.ErrConflict. A Txn whose ops change nothing (no ops, or only
// deletes of missing keys) returns the current revision and makes no event.
// An empty key, or the same key in two ops, is an error. The Store keeps
// no reference to the ops' values.
func (s *Store) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := validate(cmps, ops); err != nil {
		return 0, fmt.Errorf("txn: %w", err)
	}
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return 0, store.ErrClosed
	}
	if len(ops) == 0 {
		return s.check(cmps)
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var (
		rev    int64
		events []store.Event
	)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		kvb, meta := tx.Bucket([]byte(bucketKV)), tx.Bucket([]byte(bucketMeta))
		var err error
		if rev, err = readRev(meta); err != nil {
			return err
		}
		if err := compare(kvb, cmps); err != nil {
			return err
		}
		next := rev + 1
		for _, op := range ops {
			key := []byte(op.Key)
			old := kvb.Get(key)
			if op.Delete {
				if old == nil {
					continue
				}
				if err := kvb.Delete(key); err != nil {
					return fmt.Errorf("delete %s: %w", op.Key, err)
				}
				events = append(events, store.Event{
					Type: store.EventDelete,
					KV:   store.KV{Key: op.Key, ModRevision: next},
				})
				continue
			}
			created := next
			if old != nil {
				kv, err := decode(op.Key, old)
				if err != nil {
					return err
				}
				created = kv.CreateRevision
			}
			rec := make([]byte, headerLen+len(op.Value))
			binary.BigEndian.PutUint64(rec[0:8], uint64(created))
			binary.BigEndian.PutUint64(rec[8:16], uint64(next))
			copy(rec[headerLen:], op.Value)
			if err := kvb.Put(key, rec); err != nil {
				return fmt.Errorf("put %s: %w", op.Key, err)
			}
			// bbolt only reads rec, and drops it with the transaction:
			// the event may share it.
			var value []byte
			if len(op.Value) > 0 {
				value = rec[headerLen:len(rec):len(rec)]
			}
			events = append(events, store.Event{
				Type: store.EventPut,
				KV:   store.KV{Key: op.Key, Value: value, CreateRevision: created, ModRevision: next},
			})
		}
		if len(events) == 0 {
			return errNoChange
		}
		rev = next
		return writeRev(meta, rev)
	})
	switch {
	case errors.Is(err, errNoChange):
		return rev, nil
	case errors.Is(err, store.ErrConflict):
		return 0, store.ErrConflict
	case err != nil:
		return 0, fmt.Errorf("txn: %w", err)
	}
	s.publish(rev, events)
	return rev, nil
}

// check evaluates cmps in a read transaction and returns the current
// revision, or store.ErrConflict.
func (s *Store) check(cmps []store.Cmp) (int64, error) {
	var rev int64
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		if rev, err = readRev(tx.Bucket([]byte(bucketMeta))); err != nil {
			return err
		}
		return compare(tx.Bucket([]byte(bucketKV)), cmps)
	})
	switch {
	case errors.Is(err, store.ErrConflict):
		return 0, store.ErrConflict
	case err != nil:
		return 0, fmt.Errorf("txn: %w", err)
	}
	return rev, nil
}

// Close closes every watch channel and the file. It is idempotent and safe
// to call concurrently: every call returns the first call's result once the
// file is closed. Operations after Close return store.ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.life.Lock()
		defer s.life.Unlock()
		s.closed = true
		s.closeWatchers()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close store %s: %w", s.path, err)
		}
		s.logger.Info("store closed", telemetry.KeyPath, s.path)
	})
	return s.closeErr
}

// validate rejects what no backend accepts: empty keys, negative
// comparison revisions and a key written twice by one Txn.
func validate(cmps []store.Cmp, ops []store.Op) error {
	for i, c := range cmps {
		if c.Key == "" {
			return fmt.Errorf("cmp %d: empty key", i)
		}
		if c.ModRevision < 0 {
			return fmt.Errorf("cmp %d on %s: negative mod revision %d", i, c.Key, c.ModRevision)
		}
	}
	seen := make(map[string]struct{}, len(ops))
	for i, op := range ops {
		if op.Key == "" {
			return fmt.Errorf("op %d: empty key", i)
		}
		if _, dup := seen[op.Key]; dup {
			return fmt.Errorf("op %d: duplicate key %s given in txn request", i, op.Key)
		}
		seen[op.Key] = struct{}{}
	}
	return nil
}

// compare returns store.ErrConflict unless every cmp holds in kvb.
func compare(kvb *bbolt.Bucket, cmps []store.Cmp) error {
	for _, c := range cmps {
		var mod int64
		if v := kvb.Get([]byte(c.Key)); v != nil {
			kv, err := decode(c.Key, v)
			if err != nil {
				return err
			}
			mod = kv.ModRevision
		}
		if mod != c.ModRevision {
			return store.ErrConflict
		}
	}
	return nil
}

// decode returns the KV stored under key as v, with a copy of the value:
// v is only valid inside its bbolt transaction.
func decode(key string, v []byte) (store.KV, error) {
	if len(v) < headerLen {
		return store.KV{}, fmt.Errorf("corrupt record %s: %d bytes, shorter than its header", key, len(v))
	}
	kv := store.KV{
		Key:            key,
		CreateRevision: int64(binary.BigEndian.Uint64(v[0:8])),
		ModRevision:    int64(binary.BigEndian.Uint64(v[8:16])),
	}
	if len(v) > headerLen {
		kv.Value = bytes.Clone(v[headerLen:])
	}
	return kv, nil
}

// readRev returns the store revision kept in meta, 0 for a new store.
func readRev(meta *bbolt.Bucket) (int64, error) {
	v := meta.Get([]byte(keyRev))
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return int64(binary.BigEndian.Uint64(v)), nil
	default:
		return 0, fmt.Errorf("corrupt revision: %d bytes, want 8", len(v))
	}
}

// writeRev stores rev in meta.
func writeRev(meta *bbolt.Bucket, rev int64) error {
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, uint64(rev))
	if err := meta.Put([]byte(keyRev), v); err != nil {
		return fmt.Errorf("write revision: %w", err)
	}
	return nil
}
