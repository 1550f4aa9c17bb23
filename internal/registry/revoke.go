package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// Revocation keys. A revoked identity may not renew or subscribe until it
// is attested again with a new join token; a revoked instance may not
// subscribe; a revoked serial is refused by every peer until it expires.
const (
	revokedIdentityPrefix = "/registry/revoked/identities/"
	revokedInstancePrefix = "/registry/revoked/instances/"
	revokedSerialPrefix   = "/registry/revoked/serials/"
)

// revokedSerial is the record of one revoked SVID.
type revokedSerial struct {
	Expiry time.Time `json:"expiry"`
	// Proxy is "namespace/instance".
	Proxy string `json:"proxy"`
}

// revokedMark is the record of a revoked identity or instance.
type revokedMark struct {
	At time.Time `json:"at"`
	By string    `json:"by,omitempty"`
}

// Revoked is the result of Revoke: the proxies and SVID serials it revoked.
type Revoked struct {
	Proxies []string `json:"proxies"`
	Serials []string `json:"serials"`
	// Identities are revoked as a whole when no instance was named.
	Identities []string `json:"identities,omitempty"`
}

// ErrNoSuchProxy: Revoke matched no proxy record.
var ErrNoSuchProxy = errors.New("no proxy of that service or instance")

// Revoke revokes the proxies of svc (every instance when instance is
// empty; then their identities too): their current SVID serials go on the
// deny-list pushed to peers, and they may not renew or subscribe. by names
// the operator, for the record.
func (r *Registry) Revoke(ctx context.Context, svc identity.ServiceRef, instance, by string) (Revoked, error) {
	proxies, _, err := r.Proxies(ctx)
	if err != nil {
		return Revoked{}, err
	}
	now := r.clock.Now()
	var out Revoked
	var ops []store.Op
	mark, err := json.Marshal(revokedMark{At: now, By: by})
	if err != nil {
		return Revoked{}, err
	}
	for _, p := range proxies {
		if p.Namespace != svc.Namespace || p.Service != svc.Name || (instance != "" && p.Instance != instance) {
			continue
		}
		name := p.Namespace + "/" + p.Instance
		out.Proxies = append(out.Proxies, name)
		ops = append(ops, store.Op{Key: revokedInstancePrefix + name, Value: mark})
		if p.SVIDSerial != "" && now.Before(p.SVIDExpiry) {
			v, err := json.Marshal(revokedSerial{Expiry: p.SVIDExpiry, Proxy: name})
			if err != nil {
				return Revoked{}, err
			}
			ops = append(ops, store.Op{Key: revokedSerialPrefix + p.SVIDSerial, Value: v})
			out.Serials = append(out.Serials, p.SVIDSerial)
		}
		if instance == "" && p.Identity != "" && !slices.Contains(out.Identities, p.Identity) {
			w, err := identityKeyOf(p.Identity)
			if err != nil {
				return Revoked{}, err
			}
			ops = append(ops, store.Op{Key: revokedIdentityPrefix + w, Value: mark})
			out.Identities = append(out.Identities, p.Identity)
		}
	}
	if len(out.Proxies) == 0 {
		return Revoked{}, ErrNoSuchProxy
	}
	if _, err := r.store.Txn(ctx, nil, ops); err != nil {
		return Revoked{}, fmt.Errorf("revoke: %w", err)
	}
	return out, nil
}

// identityKeyOf returns "namespace/account" of a workload SPIFFE ID.
func identityKeyOf(id string) (string, error) {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return "", err
	}
	w, err := identity.ParseWorkloadID(sid)
	if err != nil {
		return "", err
	}
	return w.Namespace + "/" + w.Account, nil
}

// RevokeSerial adds one serial to the deny-list until expiry, e.g. the SVID
// a revoked proxy presented when it tried to come back.
func (r *Registry) RevokeSerial(ctx context.Context, serial string, expiry time.Time, proxy string) error {
	v, err := json.Marshal(revokedSerial{Expiry: expiry, Proxy: proxy})
	if err != nil {
		return err
	}
	if _, err := store.Put(ctx, r.store, revokedSerialPrefix+serial, v); err != nil {
		return fmt.Errorf("revoke serial: %w", err)
	}
	return nil
}

// IsRevoked reports whether the SVID (serial), its identity
// ("namespace/account") or, when instance is not empty, the proxy instance
// ("namespace/instance") is revoked.
func (r *Registry) IsRevoked(ctx context.Context, serial string, w identity.Workload, instance string) (bool, error) {
	keys := []string{revokedSerialPrefix + serial, revokedIdentityPrefix + w.Namespace + "/" + w.Account}
	if instance != "" {
		keys = append(keys, revokedInstancePrefix+w.Namespace+"/"+instance)
	}
	for _, k := range keys {
		_, err := r.store.Get(ctx, k)
		switch {
		case err == nil:
			return true, nil
		case !errors.Is(err, store.ErrNotFound):
			return false, fmt.Errorf("check revocation: %w", err)
		}
	}
	return false, nil
}

// ClearIdentityRevocation lifts the revocation of an identity: an operator
// attested it again with a new join token. Revoked serials stay revoked.
func (r *Registry) ClearIdentityRevocation(ctx context.Context, w identity.Workload) error {
	if _, err := store.Delete(ctx, r.store, revokedIdentityPrefix+w.Namespace+"/"+w.Account); err != nil {
		return fmt.Errorf("clear revocation: %w", err)
	}
	return nil
}

// RevokedSerials returns the revoked serials that have not expired, sorted.
func (r *Registry) RevokedSerials(ctx context.Context) ([]string, error) {
	kvs, _, err := r.store.List(ctx, revokedSerialPrefix)
	if err != nil {
		return nil, fmt.Errorf("list revoked serials: %w", err)
	}
	now := r.clock.Now()
	var out []string
	for _, kv := range kvs {
		var rec revokedSerial
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("list revoked serials: corrupt record %s: %w", kv.Key, err)
		}
		if now.Before(rec.Expiry) {
			out = append(out, strings.TrimPrefix(kv.Key, revokedSerialPrefix))
		}
	}
	return out, nil
}

// PruneRevoked deletes revoked serials that have expired: an expired SVID
// is refused anyway.
func (r *Registry) PruneRevoked(ctx context.Context) error {
	kvs, _, err := r.store.List(ctx, revokedSerialPrefix)
	if err != nil {
		return fmt.Errorf("prune revoked serials: %w", err)
	}
	now := r.clock.Now()
	var ops []store.Op
	for _, kv := range kvs {
		var rec revokedSerial
		if err := json.Unmarshal(kv.Value, &rec); err == nil && !now.Before(rec.Expiry) {
			ops = append(ops, store.Op{Key: kv.Key, Delete: true})
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := r.store.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("prune revoked serials: %w", err)
	}
	return nil
}
