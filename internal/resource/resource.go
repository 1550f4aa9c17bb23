// Package resource owns the user's resources as the control plane stores
// them: one validated JSON document per key "/resources/<Kind>/<ns>/<name>",
// applied a whole file at a time in one store transaction (all documents or
// none), with compare-and-swap so concurrent applies never lose an update.
package resource

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// Prefix is the store prefix of every resource.
const Prefix = "/resources/"

// maxApplyRetries bounds the retries of an apply that keeps conflicting with
// concurrent writers.
const maxApplyRetries = 16

// Key returns the store key of a resource.
func Key(kind, namespace, name string) string {
	return Prefix + kind + "/" + namespace + "/" + name
}

// KindPrefix returns the store prefix of every resource of kind, in
// namespace when it is not "".
func KindPrefix(kind, namespace string) string {
	if namespace == "" {
		return Prefix + kind + "/"
	}
	return Prefix + kind + "/" + namespace + "/"
}

// Outcome is what apply did to one document.
type Outcome string

// Outcomes, as kubectl prints them.
const (
	Created    Outcome = "created"
	Configured Outcome = "configured"
	Unchanged  Outcome = "unchanged"
	Deleted    Outcome = "deleted"
	NotFound   Outcome = "not found"
)

// Result is the outcome for one document.
type Result struct {
	Kind      string  `json:"kind"`
	Namespace string  `json:"namespace"`
	Name      string  `json:"name"`
	Outcome   Outcome `json:"outcome"`
}

// Store reads and writes resources.
type Store struct {
	store store.Store
	clock clock.Clock
	// audit, when set, commits every write with its audit entries.
	audit Auditor
}

// Auditor commits a write together with its audit entries in one store
// transaction; *audit.Log is one. It returns store.ErrConflict when a
// comparison failed (the caller plans again).
type Auditor interface {
	Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op, entries ...audit.Entry) (int64, error)
}

var _ Auditor = (*audit.Log)(nil)

// WithAudit returns a Store over the same store whose Apply and Delete
// write an audit entry per changed resource (actor and source from
// audit.RequesterFrom(ctx)) in the same transaction as the change: the
// change and its audit trail commit together or not at all. A failure of
// the audit log fails the write with an error wrapping
// audit.ErrUnavailable, and nothing is changed.
func (s *Store) WithAudit(a Auditor) *Store {
	c := *s
	c.audit = a
	return &c
}

// txn commits cmps and ops, with entries when the Store is audited.
func (s *Store) txn(ctx context.Context, cmps []store.Cmp, ops []store.Op, entries []audit.Entry) (int64, error) {
	if s.audit == nil {
		return s.store.Txn(ctx, cmps, ops)
	}
	return s.audit.Txn(ctx, cmps, ops, entries...)
}

// New returns a resource Store over s.
func New(s store.Store, c clock.Clock) *Store {
	return &Store{store: s, clock: clock.OrReal(c)}
}

// ErrDuplicate is returned when one apply names the same resource twice.
var ErrDuplicate = errors.New("the same resource appears twice")

// Apply writes every object in one transaction. Objects must already be
// validated. Server-set metadata (resourceVersion, creationTimestamp) in the
// input is ignored.
func (s *Store) Apply(ctx context.Context, objs []config.Object) ([]Result, error) {
	seen := make(map[string]bool, len(objs))
	for _, o := range objs {
		k := key(o)
		if seen[k] {
			return nil, fmt.Errorf("%w: %s %s", ErrDuplicate, o.GetTypeMeta().Kind, config.Ref(o))
		}
		seen[k] = true
	}
	for attempt := 0; ; attempt++ {
		results, cmps, ops, entries, err := s.plan(ctx, objs)
		if err != nil {
			return nil, err
		}
		if len(ops) == 0 {
			return results, nil
		}
		_, err = s.txn(ctx, cmps, ops, entries)
		if errors.Is(err, store.ErrConflict) && attempt < maxApplyRetries {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
		return results, nil
	}
}

// plan reads the current version of every object and returns the writes
// that apply them, guarded by the revisions read, and their audit entries.
func (s *Store) plan(ctx context.Context, objs []config.Object) ([]Result, []store.Cmp, []store.Op, []audit.Entry, error) {
	now := s.clock.Now().UTC().Format(time.RFC3339)
	req := audit.RequesterFrom(ctx)
	var (
		results = make([]Result, 0, len(objs))
		cmps    []store.Cmp
		ops     []store.Op
		entries []audit.Entry
	)
	for _, o := range objs {
		k := key(o)
		m := o.GetMetadata()
		res := Result{Kind: o.GetTypeMeta().Kind, Namespace: m.Namespace, Name: m.Name}
		cur, err := s.store.Get(ctx, k)
		created := now
		switch {
		case errors.Is(err, store.ErrNotFound):
			res.Outcome = Created
			cmps = append(cmps, store.Cmp{Key: k})
		case err != nil:
			return nil, nil, nil, nil, fmt.Errorf("apply: read %s: %w", k, err)
		default:
			old, err := config.DecodeObject(cur.Value)
			if err != nil {
				return nil, nil, nil, nil, fmt.Errorf("apply: stored %s is unreadable: %w", k, err)
			}
			if ts := old.GetMetadata().CreationTimestamp; ts != "" {
				created = ts
			}
			res.Outcome = Configured
			cmps = append(cmps, store.Cmp{Key: k, ModRevision: cur.ModRevision})
		}
		doc, err := storedForm(o, created)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		if res.Outcome == Configured && bytes.Equal(doc, cur.Value) {
			res.Outcome = Unchanged
		} else {
			ops = append(ops, store.Op{Key: k, Value: doc})
			entries = append(entries, audit.Entry{Actor: req.Actor, Source: req.Source, Action: audit.ActionApply,
				Kind: res.Kind, Namespace: res.Namespace, Name: res.Name, Before: audit.Digest(cur.Value),
				After: audit.Digest(doc), Outcome: string(res.Outcome)})
		}
		results = append(results, res)
	}
	return results, cmps, ops, entries, nil
}

// storedForm is the document as kept in the store: the object without
// resourceVersion (that is the key's ModRevision) and with its creation
// time.
func storedForm(o config.Object, created string) ([]byte, error) {
	m := o.GetMetadata()
	rv, ts := m.ResourceVersion, m.CreationTimestamp
	m.ResourceVersion, m.CreationTimestamp = "", created
	defer func() { m.ResourceVersion, m.CreationTimestamp = rv, ts }()
	return config.Marshal(o)
}

// Delete removes resources in one transaction: every one that exists is
// deleted, and the result says which did not exist.
func (s *Store) Delete(ctx context.Context, refs []Result) ([]Result, error) {
	req := audit.RequesterFrom(ctx)
	for attempt := 0; ; attempt++ {
		var (
			cmps    []store.Cmp
			ops     []store.Op
			entries []audit.Entry
			out     = make([]Result, len(refs))
		)
		for i, r := range refs {
			out[i] = r
			k := Key(r.Kind, r.Namespace, r.Name)
			cur, err := s.store.Get(ctx, k)
			if errors.Is(err, store.ErrNotFound) {
				out[i].Outcome = NotFound
				cmps = append(cmps, store.Cmp{Key: k})
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("delete: read %s: %w", k, err)
			}
			out[i].Outcome = Deleted
			cmps = append(cmps, store.Cmp{Key: k, ModRevision: cur.ModRevision})
			ops = append(ops, store.Op{Key: k, Delete: true})
			entries = append(entries, audit.Entry{Actor: req.Actor, Source: req.Source, Action: audit.ActionDelete,
				Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Before: audit.Digest(cur.Value), Outcome: string(Deleted)})
		}
		if len(ops) == 0 {
			return out, nil
		}
		_, err := s.txn(ctx, cmps, ops, entries)
		if errors.Is(err, store.ErrConflict) && attempt < maxApplyRetries {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("delete: %w", err)
		}
		return out, nil
	}
}

// List returns the resources of kind in namespace ("" for all namespaces),
// sorted by namespace and name, with resourceVersion set, and the store
// revision of the read.
func (s *Store) List(ctx context.Context, kind, namespace string) ([]config.Object, int64, error) {
	kvs, rev, err := s.store.List(ctx, KindPrefix(kind, namespace))
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", kind, err)
	}
	out := make([]config.Object, 0, len(kvs))
	for _, kv := range kvs {
		o, err := decodeStored(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, o)
	}
	// Key order is not namespace order ("shop-eu/" sorts before "shop/").
	slices.SortStableFunc(out, func(a, b config.Object) int {
		am, bm := a.GetMetadata(), b.GetMetadata()
		return cmp.Or(strings.Compare(am.Namespace, bm.Namespace), strings.Compare(am.Name, bm.Name))
	})
	return out, rev, nil
}

// Get returns one resource, or an error wrapping store.ErrNotFound.
func (s *Store) Get(ctx context.Context, kind, namespace, name string) (config.Object, error) {
	kv, err := s.store.Get(ctx, Key(kind, namespace, name))
	if err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", kind, namespace, name, err)
	}
	return decodeStored(kv)
}

func decodeStored(kv store.KV) (config.Object, error) {
	o, err := config.DecodeObject(kv.Value)
	if err != nil {
		return nil, fmt.Errorf("stored resource %s is unreadable: %w", kv.Key, err)
	}
	o.GetMetadata().ResourceVersion = strconv.FormatInt(kv.ModRevision, 10)
	return o, nil
}

// ParseKey splits a resource key into kind, namespace and name.
func ParseKey(k string) (kind, namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(k, Prefix)
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

func key(o config.Object) string {
	m := o.GetMetadata()
	return Key(o.GetTypeMeta().Kind, m.Namespace, m.Name)
}
