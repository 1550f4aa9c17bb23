// Package registry owns the control plane's record of attested workloads:
// which services each identity was attested for, and one record per proxy
// instance (its address, connection state, SVID and snapshot versions). The
// endpoints of a service are the live records of its proxies; only an
// attested proxy can create a record, and only for a service its identity
// was attested for.
//
// Everything is kept in the store, so a restarted control plane (or, later,
// another replica) sees the same registry.
package registry

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// Store key prefixes.
const (
	// Prefix is the prefix of every registry key.
	Prefix         = "/registry/"
	identityPrefix = "/registry/identities/"
	proxyPrefix    = "/registry/proxies/"
)

// Config configures a Registry.
type Config struct {
	// Store is required.
	Store store.Store
	// Clock, default clock.Real().
	Clock clock.Clock
	// Grace is how long a disconnected proxy stays an endpoint, so a
	// control-plane restart or a short blip does not empty its service.
	// Default: 30s.
	Grace time.Duration
	// Retention is how long the record of a proxy that is gone stays
	// listed. Default: 1h.
	Retention time.Duration
}

// Registry reads and writes registry records.
type Registry struct {
	store     store.Store
	clock     clock.Clock
	grace     time.Duration
	retention time.Duration
}

// New returns a Registry.
func New(cfg Config) (*Registry, error) {
	if cfg.Store == nil {
		return nil, errors.New("registry: store is required")
	}
	if cfg.Grace == 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.Retention == 0 {
		cfg.Retention = time.Hour
	}
	return &Registry{store: cfg.Store, clock: clock.OrReal(cfg.Clock), grace: cfg.Grace, retention: cfg.Retention}, nil
}

// Grace returns how long a disconnected proxy stays an endpoint.
func (r *Registry) Grace() time.Duration { return r.grace }

// identityRecord lists the services an identity was attested for.
type identityRecord struct {
	Services []string `json:"services"`
}

// AddService records that the workload identity (namespace/account) serves
// svc. The namespace of the service must be the identity's.
func (r *Registry) AddService(ctx context.Context, account string, svc identity.ServiceRef) error {
	err := update(ctx, r.store, identityPrefix+svc.Namespace+"/"+account, func(rec *identityRecord, _ bool) bool {
		if slices.Contains(rec.Services, svc.String()) {
			return false
		}
		rec.Services = append(rec.Services, svc.String())
		slices.Sort(rec.Services)
		return true
	})
	if err != nil {
		return fmt.Errorf("record identity service: %w", err)
	}
	return nil
}

// Serves reports whether the workload identity (namespace/account) was
// attested for svc.
func (r *Registry) Serves(ctx context.Context, w identity.Workload, svc identity.ServiceRef) (bool, error) {
	if w.Namespace != svc.Namespace {
		return false, nil
	}
	kv, err := r.store.Get(ctx, identityPrefix+w.Namespace+"/"+w.Account)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read identity: %w", err)
	}
	var rec identityRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return false, fmt.Errorf("read identity: corrupt record: %w", err)
	}
	return slices.Contains(rec.Services, svc.String()), nil
}

// Proxy is the record of one proxy instance.
type Proxy struct {
	Instance  string `json:"instance"`
	Namespace string `json:"namespace"`
	// Service is the service name in Namespace.
	Service string `json:"service"`
	// Identity is the SPIFFE ID of the proxy's SVID.
	Identity string `json:"identity"`
	// Labels are bound to the instance when it attests (from its join
	// token) and never change afterwards.
	Labels map[string]string `json:"labels,omitempty"`
	// AttestedAt is when the instance attested with labels; its record
	// exists from then on, before the proxy first subscribes.
	AttestedAt time.Time `json:"attestedAt,omitzero"`
	// Address is the advertised inbound host:port; "" for a client-only
	// proxy, which is never an endpoint.
	Address string `json:"address,omitempty"`
	// Connected is true while the proxy holds a Subscribe stream.
	Connected bool `json:"connected"`
	// Live is true while the proxy is an endpoint: connected, or
	// disconnected for less than the grace period.
	Live       bool      `json:"live"`
	LastSeen   time.Time `json:"lastSeen"`
	SVIDExpiry time.Time `json:"svidExpiry,omitzero"`
	SVIDSerial string    `json:"svidSerial,omitempty"`
	// SVIDAuthority is the authority key ID (hex) of the SVID the proxy
	// connected with: which intermediate signed it.
	SVIDAuthority string `json:"svidAuthority,omitempty"`
	// BundleVersion is the trust bundle version of the last snapshot the
	// proxy ACKed.
	BundleVersion   int64  `json:"bundleVersion,omitempty"`
	SnapshotVersion int64  `json:"snapshotVersion,omitempty"`
	AckedVersion    int64  `json:"ackedVersion,omitempty"`
	LastNack        string `json:"lastNack,omitempty"`
	Version         string `json:"version,omitempty"`
	// Locality is the proxy's "region/zone" (Node.locality); "" unknown.
	Locality string `json:"locality,omitempty"`
	// Protocol of the app behind the proxy's inbound (Node.protocol):
	// "", "http", "http2", "grpc" or "tcp".
	Protocol string `json:"protocol,omitempty"`
	// Draining is true while the proxy asks callers to send it no new
	// requests (Status.draining, or Status.leaving on its way out). A new
	// stream clears it.
	Draining bool `json:"draining,omitempty"`
	// Stream identifies the Subscribe stream that holds the record: only
	// it may record its state and its end.
	Stream string `json:"stream,omitempty"`
}

// ServiceRef returns the proxy's service.
func (p *Proxy) ServiceRef() identity.ServiceRef {
	return identity.ServiceRef{Namespace: p.Namespace, Name: p.Service}
}

func proxyKey(namespace, instance string) string {
	return proxyPrefix + namespace + "/" + instance
}

// NewInstanceName returns a fresh instance name for a proxy of svc:
// "<service>-<8 random [a-z2-7]>", cut to a valid name length.
func NewInstanceName(svc identity.ServiceRef) string {
	name := svc.Name
	if len(name) > 54 {
		name = strings.TrimRight(name[:54], "-")
	}
	return name + "-" + strings.ToLower(rand.Text()[:8])
}

// UpdateProxy reads the record of a proxy (a zero record if it has none),
// applies fn, and writes it back with compare-and-swap, retrying on
// conflict. Nothing is written when fn changes nothing.
func (r *Registry) UpdateProxy(ctx context.Context, namespace, instance string, fn func(p *Proxy)) error {
	err := update(ctx, r.store, proxyKey(namespace, instance), func(p *Proxy, exists bool) bool {
		if !exists {
			p.Namespace, p.Instance = namespace, instance
		}
		before := *p
		before.Labels = maps.Clone(p.Labels)
		fn(p)
		return !exists || !equalProxy(p, &before)
	})
	if err != nil {
		return fmt.Errorf("update proxy %s/%s: %w", namespace, instance, err)
	}
	return nil
}

// LabelRetention is how long the record of an instance with labels is kept
// after it was last seen: longer than the longest SVID lifetime, so a proxy
// that comes back with a valid SVID finds its labels.
const LabelRetention = 25 * time.Hour

// latest returns the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// equalProxy reports whether two records are the same.
func equalProxy(a, b *Proxy) bool { return reflect.DeepEqual(a, b) }

// update reads the JSON record at key into a T (the zero T when there is
// none), lets fn change it, and writes it back with compare-and-swap,
// retrying when another writer got there first. fn returns false to write
// nothing; exists tells whether the record was there.
func update[T any](ctx context.Context, s store.Store, key string, fn func(rec *T, exists bool) bool) error {
	for {
		var rec T
		cmp := store.Cmp{Key: key}
		kv, err := s.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				return fmt.Errorf("corrupt record %s: %w", key, err)
			}
			cmp.ModRevision = kv.ModRevision
		}
		if !fn(&rec, cmp.ModRevision != 0) {
			return nil
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		_, err = s.Txn(ctx, []store.Cmp{cmp}, []store.Op{{Key: key, Value: val}})
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return err
	}
}

// Proxies lists every proxy record, sorted by namespace and instance.
func (r *Registry) Proxies(ctx context.Context) ([]Proxy, int64, error) {
	kvs, rev, err := r.store.List(ctx, proxyPrefix)
	if err != nil {
		return nil, 0, fmt.Errorf("list proxies: %w", err)
	}
	out := make([]Proxy, 0, len(kvs))
	for _, kv := range kvs {
		var p Proxy
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			return nil, 0, fmt.Errorf("list proxies: corrupt record %s: %w", kv.Key, err)
		}
		out = append(out, p)
	}
	// Key order is not namespace order ("shop-eu/" sorts before "shop/").
	slices.SortStableFunc(out, func(a, b Proxy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Instance, b.Instance))
	})
	return out, rev, nil
}

// Identities returns the services of every attested identity, keyed by
// "namespace/account".
func (r *Registry) Identities(ctx context.Context) (map[string][]string, error) {
	kvs, _, err := r.store.List(ctx, identityPrefix)
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	out := make(map[string][]string, len(kvs))
	for _, kv := range kvs {
		var rec identityRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("list identities: corrupt record %s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(kv.Key, identityPrefix)] = rec.Services
	}
	return out, nil
}

// MarkAllDisconnected is called when a control plane starts: no proxy holds
// a stream to it yet, so every connected record becomes disconnected now,
// and stays an endpoint for the grace period while proxies reconnect.
func (r *Registry) MarkAllDisconnected(ctx context.Context) error {
	proxies, _, err := r.Proxies(ctx)
	if err != nil {
		return err
	}
	now := r.clock.Now()
	for _, p := range proxies {
		if !p.Connected {
			continue
		}
		err := r.UpdateProxy(ctx, p.Namespace, p.Instance, func(p *Proxy) {
			p.Connected = false
			p.LastSeen = now
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Sweep ends the grace period of proxies disconnected for longer than Grace
// (they stop being endpoints) and deletes records of proxies gone for longer
// than Retention. It returns when the next sweep is due (zero: nothing
// pending).
func (r *Registry) Sweep(ctx context.Context) (time.Duration, error) {
	proxies, _, err := r.Proxies(ctx)
	if err != nil {
		return 0, err
	}
	now := r.clock.Now()
	var next time.Duration
	due := func(d time.Duration) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	for _, p := range proxies {
		if p.Connected {
			continue
		}
		gone := now.Sub(p.LastSeen)
		retention := r.retention
		if len(p.Labels) > 0 {
			// The record holds the labels bound at attestation: keep it as
			// long as the proxy could come back with a valid SVID.
			gone = now.Sub(latest(p.LastSeen, p.AttestedAt))
			retention = max(retention, LabelRetention)
		}
		switch {
		case gone >= retention:
			key := proxyKey(p.Namespace, p.Instance)
			kv, err := r.store.Get(ctx, key)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return 0, err
			}
			if _, err := r.store.Txn(ctx, []store.Cmp{{Key: key, ModRevision: kv.ModRevision}}, []store.Op{{Key: key, Delete: true}}); err != nil && !errors.Is(err, store.ErrConflict) {
				return 0, err
			}
		case p.Live && gone >= r.grace:
			err := r.UpdateProxy(ctx, p.Namespace, p.Instance, func(q *Proxy) {
				if !q.Connected {
					q.Live = false
				}
			})
			if err != nil {
				return 0, err
			}
			due(retention - gone)
		case p.Live:
			due(r.grace - gone)
		default:
			due(retention - gone)
		}
	}
	return next, nil
}
