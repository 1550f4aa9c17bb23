// Package resource owns the user's resources as the control plane stores
// them: one validated JSON document per key "/resources/<Kind>/<ns>/<name>",
// applied a whole file at a time in one store transaction (all documents or
// none), with compare-and-swap so concurrent applies never lose an update.
//
// Secrets are stored sealed (encrypted at rest) under the control plane's
// key custody: the document kept is an envelope with the Secret's metadata,
// type and data keys, and its data sealed for the resource's key (see
// WithSealer). Reads open it again; only the admin API's redaction keeps
// the data from operators.
package resource

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
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
	// sealer, when set, seals the data of Secrets; without it a Secret
	// cannot be applied and reads of one have no data.
	sealer keymanager.Sealer
}

// ErrNoKeyCustody is returned by Apply for a Secret when the Store has no
// Sealer.
var ErrNoKeyCustody = errors.New("secrets need the control plane's key custody (a store with a sealer)")

// WithSealer returns a Store over the same store that keeps the data of
// every Secret sealed by sl (keymanager.Disk: under the CA keys'
// key-encryption key), for the purpose of the Secret's store key, so that
// a sealed blob copied under another key does not open. The store holds an
// envelope {apiVersion, kind, metadata, type, keys, sealed}, never the
// plaintext; List and Get open it back into a *config.Secret with its data.
// A Secret that does not open (another key custody, or altered) is read
// with data nil.
func (s *Store) WithSealer(sl keymanager.Sealer) *Store {
	c := *s
	c.sealer = sl
	return &c
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
			old, err := s.decodeStored(ctx, cur)
			if err != nil {
				return nil, nil, nil, nil, fmt.Errorf("apply: %w", err)
			}
			if ts := old.GetMetadata().CreationTimestamp; ts != "" {
				created = ts
			}
			res.Outcome = Configured
			cmps = append(cmps, store.Cmp{Key: k, ModRevision: cur.ModRevision})
			if sec, ok := old.(*config.Secret); ok {
				// The sealed form differs at every seal: compare the
				// plaintext forms.
				same, err := sameSecret(sec, o, created)
				if err != nil {
					return nil, nil, nil, nil, err
				}
				if same {
					res.Outcome = Unchanged
				}
			}
		}
		var doc []byte
		if res.Outcome != Unchanged {
			if doc, err = s.storedForm(ctx, k, o, created); err != nil {
				return nil, nil, nil, nil, err
			}
		}
		if res.Outcome == Configured && bytes.Equal(doc, cur.Value) {
			res.Outcome = Unchanged
		}
		if res.Outcome != Unchanged {
			ops = append(ops, store.Op{Key: k, Value: doc})
			entries = append(entries, audit.Entry{Actor: req.Actor, Source: req.Source, Action: audit.ActionApply,
				Kind: res.Kind, Namespace: res.Namespace, Name: res.Name, Before: audit.Digest(cur.Value),
				After: audit.Digest(doc), Outcome: string(res.Outcome)})
		}
		results = append(results, res)
	}
	return results, cmps, ops, entries, nil
}

// storedForm is the document as kept in the store under key k: the object
// without resourceVersion (that is the key's ModRevision) and with its
// creation time; for a Secret, its sealed envelope.
func (s *Store) storedForm(ctx context.Context, k string, o config.Object, created string) ([]byte, error) {
	sec, ok := o.(*config.Secret)
	if !ok {
		return plainForm(o, created)
	}
	if s.sealer == nil {
		return nil, fmt.Errorf("apply: %s %s: %w", config.KindSecret, config.Ref(o), ErrNoKeyCustody)
	}
	return sealSecret(ctx, s.sealer, k, sec, created)
}

// sameSecret reports whether the Secret old, as read from the store, is
// what o would store with the creation time created, comparing the plain
// documents in memory. A Secret whose data did not open is never the same.
func sameSecret(old *config.Secret, o config.Object, created string) (bool, error) {
	nu, ok := o.(*config.Secret)
	if !ok || old.Data == nil {
		return false, nil
	}
	a, err := plainForm(old, old.Metadata.CreationTimestamp)
	if err != nil {
		return false, err
	}
	defer clear(a)
	b, err := plainForm(nu, created)
	if err != nil {
		return false, err
	}
	defer clear(b)
	return bytes.Equal(a, b), nil
}

// plainForm is the document of o without resourceVersion and with its
// creation time.
func plainForm(o config.Object, created string) ([]byte, error) {
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
		o, err := s.decodeStored(ctx, kv)
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
	return s.decodeStored(ctx, kv)
}

// decodeStored decodes a stored document; a Secret's envelope is opened.
func (s *Store) decodeStored(ctx context.Context, kv store.KV) (config.Object, error) {
	var (
		o   config.Object
		err error
	)
	if kind, _, _, ok := ParseKey(kv.Key); ok && kind == config.KindSecret {
		o, err = openSecret(ctx, s.sealer, kv.Key, kv.Value)
	} else {
		o, err = config.DecodeObject(kv.Value)
	}
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

// sealedSecret is a Secret as the store keeps it: everything but the data,
// the sorted keys of the data (not secret), and the data (JSON of the map)
// sealed for the Secret's store key.
type sealedSecret struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   config.ObjectMeta `json:"metadata"`
	Type       string            `json:"type"`
	Keys       []string          `json:"keys"`
	// Sealed is base64 in the JSON document.
	Sealed []byte `json:"sealed"`
}

// sealSecret returns the stored envelope of sec under key k.
func sealSecret(ctx context.Context, sl keymanager.Sealer, k string, sec *config.Secret, created string) ([]byte, error) {
	if len(sec.StringData) > 0 {
		// Validate merges stringData into data: an unvalidated Secret
		// would lose it.
		return nil, fmt.Errorf("apply: %s %s: stringData was not merged into data (not validated)", config.KindSecret, config.Ref(sec))
	}
	plain, err := json.Marshal(sec.Data, json.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("apply: %s %s: encode data: %w", config.KindSecret, config.Ref(sec), err)
	}
	sealed, err := sl.Seal(ctx, k, plain)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("apply: %s %s: %w", config.KindSecret, config.Ref(sec), err)
	}
	env := sealedSecret{
		APIVersion: sec.APIVersion,
		Kind:       config.KindSecret,
		Metadata:   sec.Metadata,
		Type:       sec.Type,
		Keys:       slices.Sorted(maps.Keys(sec.Data)),
		Sealed:     sealed,
	}
	env.Metadata.ResourceVersion, env.Metadata.CreationTimestamp = "", created
	b, err := json.Marshal(env, json.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("apply: %s %s: %w", config.KindSecret, config.Ref(sec), err)
	}
	return b, nil
}

// openSecret decodes the envelope stored under key k and opens its data
// with sl. Without a sealer, or when the data does not open, the Secret has
// data nil. The errors never carry the data.
func openSecret(ctx context.Context, sl keymanager.Sealer, k string, doc []byte) (*config.Secret, error) {
	var env sealedSecret
	if err := json.Unmarshal(doc, &env, json.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("sealed secret: %w", err)
	}
	if env.Kind != config.KindSecret || env.APIVersion == "" || env.Metadata.Name == "" {
		return nil, errors.New("sealed secret: not a Secret envelope")
	}
	sec := &config.Secret{
		TypeMeta: config.TypeMeta{APIVersion: env.APIVersion, Kind: config.KindSecret},
		Metadata: env.Metadata,
		Type:     env.Type,
	}
	if sl == nil {
		return sec, nil
	}
	plain, err := sl.Open(ctx, k, env.Sealed)
	if err != nil {
		return sec, nil // data nil: the reader tells (see WithSealer)
	}
	defer clear(plain)
	var data map[string][]byte
	if err := json.Unmarshal(plain, &data, json.RejectUnknownMembers(true)); err != nil {
		return sec, nil
	}
	sec.Data = data
	return sec, nil
}
