package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// jwksPrefix is the store prefix of the keys fetched for JWT providers:
// "/jwks/<namespace>/<name>" holds a jwksRecord. Writing them to the store
// makes a key rotation a store change, so the state builder rebuilds and
// the snapshots get a new version; it also keeps the last good keys across
// restarts of the control plane and shares them between its replicas.
const jwksPrefix = "/jwks/"

// jwksRecord is the stored form of the keys of one provider.
type jwksRecord struct {
	// Source fingerprints the jwksURI and jwksCA the keys were fetched
	// with: keys of another source are never pushed for a provider.
	Source string `json:"source"`
	// JWKS is the canonical JWKS document (authn/keyset Marshal).
	JWKS json.RawMessage `json:"jwks"`
}

// jwksSource returns the Source of a provider's fetched keys.
func jwksSource(spec *config.JWTProviderSpec) string {
	sum := sha256.Sum256([]byte(spec.JWKSURI + "\x00" + spec.JWKSCA))
	return hex.EncodeToString(sum[:])
}

// jwksKeeper runs the authn.Fetcher of the control plane and keeps the
// store's copy of the fetched keys current. The state builder tells it the
// providers (sync) and reads the keys from the store.
type jwksKeeper struct {
	store   store.Store
	fetcher *authn.Fetcher
	logger  *slog.Logger

	// mu orders sync (spec and fetcher updates) against write (keys and
	// spec read together), so a record never pairs keys with the source of
	// another spec.
	mu    sync.Mutex
	specs map[string]*config.JWTProviderSpec
	// pending are the refs to write (or, when absent from specs, delete).
	pending map[string]bool
	signal  chan struct{}
}

// newJWKSKeeper returns a keeper whose fetcher registers its metrics on reg
// (may be nil).
func newJWKSKeeper(st store.Store, reg prometheus.Registerer, c clock.Clock, logger *slog.Logger) (*jwksKeeper, error) {
	k := &jwksKeeper{store: st, logger: logger, specs: map[string]*config.JWTProviderSpec{}, pending: map[string]bool{}, signal: make(chan struct{}, 1)}
	f, err := authn.NewFetcher(authn.FetcherConfig{Clock: c, Logger: logger, Registerer: reg, OnChange: k.changed})
	if err != nil {
		return nil, err
	}
	k.fetcher = f
	return k, nil
}

// changed queues the write of ref's new keys.
func (k *jwksKeeper) changed(ref string) {
	k.mu.Lock()
	k.pending[ref] = true
	k.mu.Unlock()
	select {
	case k.signal <- struct{}{}:
	default:
	}
}

// Run fetches keys and writes them to the store until ctx is done.
func (k *jwksKeeper) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- k.fetcher.Run(ctx) }()
	for {
		select {
		case <-ctx.Done():
			return <-done
		case <-k.signal:
			k.writePending(ctx)
		}
	}
}

// writePending writes the queued keys; a failed write is retried at the
// next change of the provider or the next sync.
func (k *jwksKeeper) writePending(ctx context.Context) {
	k.mu.Lock()
	refs := make([]string, 0, len(k.pending))
	for ref := range k.pending {
		refs = append(refs, ref)
	}
	clear(k.pending)
	k.mu.Unlock()
	for _, ref := range refs {
		if err := k.write(ctx, ref); err != nil && ctx.Err() == nil {
			k.logger.Warn("store jwks", telemetry.KeyProvider, ref, telemetry.KeyErr, err)
		}
	}
}

// write stores the current keys of ref, or deletes its record when it is no
// longer a provider with a jwksURI. An unchanged record is not written, so
// that a refresh that finds the same keys does not wake every proxy.
func (k *jwksKeeper) write(ctx context.Context, ref string) error {
	key := jwksPrefix + ref
	k.mu.Lock()
	spec, ok := k.specs[ref]
	var rec jwksRecord
	if ok {
		rec = jwksRecord{Source: jwksSource(spec), JWKS: k.fetcher.Keys(ref)}
	}
	k.mu.Unlock()
	if !ok || spec.JWKSURI == "" {
		_, err := store.Delete(ctx, k.store, key)
		return err
	}
	if rec.JWKS == nil {
		return nil // nothing fetched yet for this source
	}
	value, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	kv, err := k.store.Get(ctx, key)
	switch {
	case err == nil && bytes.Equal(kv.Value, value):
		return nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	_, err = store.Put(ctx, k.store, key, value)
	return err
}

// sync tells the fetcher the providers, which must be validated, and
// queues the deletion of stored keys of providers that are gone (stored
// holds the refs that have a record).
func (k *jwksKeeper) sync(providers []*config.JWTProvider, stored []string) {
	k.mu.Lock()
	clear(k.specs)
	for _, p := range providers {
		k.specs[config.Ref(p)] = &p.Spec
	}
	k.fetcher.Update(providers)
	var gone bool
	for _, ref := range stored {
		if spec, ok := k.specs[ref]; !ok || spec.JWKSURI == "" {
			k.pending[ref] = true
			gone = true
		}
	}
	k.mu.Unlock()
	if gone {
		select {
		case k.signal <- struct{}{}:
		default:
		}
	}
}

// readJWTProviders reads every JWTProvider with its keys: the inline ones,
// or the stored copy of the fetched ones when it was fetched from the
// provider's current source. It returns the store revision of its first
// read and of its last.
func (b *stateBuilder) readJWTProviders(ctx context.Context) (out []push.JWTProvider, first, last int64, err error) {
	objs, rev1, err := b.resources.List(ctx, config.KindJWTProvider, "")
	if err != nil {
		return nil, 0, 0, err
	}
	kvs, rev2, err := b.store.List(ctx, jwksPrefix)
	if err != nil {
		return nil, 0, 0, err
	}
	records := make(map[string]jwksRecord, len(kvs))
	stored := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		ref := strings.TrimPrefix(kv.Key, jwksPrefix)
		stored = append(stored, ref)
		var rec jwksRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			b.logger.Warn("stored jwks unreadable", telemetry.KeyProvider, ref, telemetry.KeyErr, err)
			continue
		}
		records[ref] = rec
	}
	var specs []*config.JWTProvider
	for _, o := range objs {
		p, ok := o.(*config.JWTProvider)
		if !ok {
			continue
		}
		p.Metadata.ResourceVersion = "" // not part of what proxies enforce
		js, err := config.Marshal(p)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("jwt provider %s: %w", config.Ref(p), err)
		}
		jp := push.JWTProvider{Provider: p, JSON: js}
		if p.Spec.JWKSURI == "" {
			jp.JWKS = []byte(p.Spec.JWKS)
		} else if rec, ok := records[config.Ref(p)]; ok && rec.Source == jwksSource(&p.Spec) {
			jp.JWKS = rec.JWKS
		}
		out = append(out, jp)
		specs = append(specs, p)
	}
	if b.jwks != nil {
		b.jwks.sync(specs, stored)
	}
	return out, min(rev1, rev2), max(rev1, rev2), nil
}
