// Package store defines the control plane's storage seam: a small key-value
// interface with a global revision, compare-and-swap transactions and
// watches. It has the shape of etcd's v3 API so that the embedded bbolt
// backend (store/bolt, the default) and an etcd backend are interchangeable;
// storetest holds the contract suite every backend must pass.
//
// Semantics every backend keeps:
//   - The store has one revision counter. Every successful Txn that changes
//     anything increments it by exactly one; all keys written by that Txn get
//     that revision as their ModRevision.
//   - A Txn is atomic: either every comparison holds and every operation is
//     applied, or nothing is (ErrConflict).
//   - An acknowledged Txn is durable: it survives a crash or restart.
//   - Watch delivers every change after a revision, in revision order.
package store

import (
	"context"
	"errors"
)

// KV is a stored key and value with its revisions.
type KV struct {
	Key   string
	Value []byte
	// CreateRevision is the revision at which the key was created.
	CreateRevision int64
	// ModRevision is the revision of the last change to the key.
	ModRevision int64
}

// Cmp is a condition of a Txn on the current state of one key.
type Cmp struct {
	Key string
	// ModRevision the key must have for the Txn to apply; 0 means the key
	// must not exist.
	ModRevision int64
}

// Op is one write of a Txn.
type Op struct {
	Key   string
	Value []byte
	// Delete removes the key instead of writing Value. Deleting a key that
	// does not exist is not an error.
	Delete bool
}

// EventType says what happened to a key.
type EventType uint8

// Event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

// Event is a change delivered by Watch. For EventDelete, KV.Value is nil,
// KV.CreateRevision is 0 and KV.ModRevision is the revision of the deletion.
type Event struct {
	Type EventType
	KV   KV
}

// Store is the storage seam. All methods are safe for concurrent use. A
// method called with a ctx that is already done returns ctx.Err(). Values
// returned (by Get, List and Watch) are the caller's to keep and modify,
// and a Txn keeps no reference to the caller's Op values.
type Store interface {
	// Get returns the key, or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key with the prefix, sorted by key, and the store
	// revision the read was made at.
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// Txn applies ops atomically if every cmp holds and returns the new
	// store revision; with a failed comparison it applies nothing and
	// returns ErrConflict. A Txn whose ops change nothing (no ops, or only
	// deletes of missing keys) still checks cmps, returns the current
	// revision and makes no event. An empty key, or the same key in two
	// ops, is an error other than ErrConflict, and nothing is applied.
	Txn(ctx context.Context, cmps []Cmp, ops []Op) (int64, error)
	// Watch delivers, in revision order, every change to keys with the
	// prefix made after revision afterRev; the events of one Txn share its
	// revision and come in the order of its ops. Watching from the latest
	// revision always succeeds and delivers only later changes. It returns
	// ErrCompacted when changes after afterRev are no longer available;
	// the caller then lists again. The channel is closed when ctx is done,
	// when the store is closed, or when the watcher falls too far behind; a
	// caller whose ctx is not done treats a closed channel as "list again".
	Watch(ctx context.Context, prefix string, afterRev int64) (<-chan Event, error)
	// Close releases the store and closes every watch channel. It is
	// idempotent and safe to call concurrently; every other method
	// returns ErrClosed after it.
	Close() error
}

// Errors returned by every backend.
var (
	// ErrNotFound: Get of a key that does not exist.
	ErrNotFound = errors.New("store: key not found")
	// ErrConflict: a Txn comparison failed; nothing was written.
	ErrConflict = errors.New("store: transaction conflict")
	// ErrCompacted: Watch asked for changes the store no longer keeps.
	ErrCompacted = errors.New("store: revision compacted")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
)

// Put writes one key unconditionally and returns the new revision.
func Put(ctx context.Context, s Store, key string, value []byte) (int64, error) {
	return s.Txn(ctx, nil, []Op{{Key: key, Value: value}})
}

// Delete removes one key unconditionally and returns the new revision.
func Delete(ctx context.Context, s Store, key string) (int64, error) {
	return s.Txn(ctx, nil, []Op{{Key: key, Delete: true}})
}
