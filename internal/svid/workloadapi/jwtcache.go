package workloadapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/clock"
)

// Limits of a JWT-SVID request. They mirror the control plane's (ca.MaxAudiences
// and its per-audience bound), so a request it would refuse is refused here
// as InvalidArgument, and they bound the size of cache keys.
const (
	maxAudiences   = 16
	maxAudienceLen = 256
)

// maxCachedJWTSVIDs bounds the JWT-SVID cache: one entry per audience set.
const maxCachedJWTSVIDs = 128

// jwtAlgorithms are the signature algorithms a minted token may carry (those
// go-spiffe accepts for JWT-SVIDs).
var jwtAlgorithms = []jose.SignatureAlgorithm{
	jose.ES256, jose.ES384, jose.ES512,
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
}

// normalizeAudience returns the audiences sorted and without duplicates, or
// an error when there are none or they exceed the limits.
func normalizeAudience(audience []string) ([]string, error) {
	if len(audience) == 0 {
		return nil, errAudienceRequired
	}
	out := slices.Clone(audience)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxAudiences {
		return nil, fmt.Errorf("%w: %d audiences, at most %d", errBadAudience, len(out), maxAudiences)
	}
	for _, a := range out {
		switch {
		case a == "":
			return nil, errAudienceRequired
		case len(a) > maxAudienceLen:
			return nil, fmt.Errorf("%w: an audience is longer than %d bytes", errBadAudience, maxAudienceLen)
		}
	}
	return out, nil
}

// jwtCacheKey identifies the JWT-SVID of id for the (normalized) audience
// set. JSON keeps it unambiguous whatever the audiences contain.
func jwtCacheKey(id spiffeid.ID, audience []string) string {
	b, _ := json.Marshal(append([]string{id.String()}, audience...))
	return string(b)
}

// tokenExpiry reads the exp claim of a compact JWS without verifying it:
// the token comes from the control plane, and the client verifies it.
func tokenExpiry(token string) (time.Time, error) {
	tok, err := jwt.ParseSigned(token, jwtAlgorithms)
	if err != nil {
		return time.Time{}, errors.New("not a signed jwt")
	}
	var claims jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return time.Time{}, errors.New("claims do not decode")
	}
	if claims.Expiry == nil {
		return time.Time{}, errors.New("no exp claim")
	}
	return claims.Expiry.Time(), nil
}

// jwtCache keeps minted JWT-SVIDs per audience set until half their
// lifetime, counted from when they were asked for (so a skewed control-plane
// clock cannot stretch it), or until the Source changes (a rotated JWT key
// would make them fail), whichever comes first. It holds at most limit
// entries; when full it drops stale entries, then the one due soonest.
type jwtCache struct {
	clock clock.Clock
	limit int

	mu      sync.Mutex
	entries map[string]jwtEntry
}

type jwtEntry struct {
	token     string
	refreshAt time.Time
	// changed is the Source's Changed channel from before the mint; once
	// closed the entry is stale.
	changed <-chan struct{}
}

func newJWTCache(c clock.Clock, limit int) *jwtCache {
	return &jwtCache{clock: c, limit: limit, entries: make(map[string]jwtEntry)}
}

func (e jwtEntry) fresh(now time.Time) bool {
	select {
	case <-e.changed:
		return false
	default:
		return now.Before(e.refreshAt)
	}
}

// get returns the cached token for key, if still fresh.
func (c *jwtCache) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return "", false
	}
	if !e.fresh(c.clock.Now()) {
		delete(c.entries, key)
		return "", false
	}
	return e.token, true
}

// put caches token, asked for at mintedAt and expiring at exp. A token
// already past half its life is not cached.
func (c *jwtCache) put(key, token string, mintedAt, exp time.Time, changed <-chan struct{}) {
	refreshAt := mintedAt.Add(exp.Sub(mintedAt) / 2)
	now := c.clock.Now()
	if !now.Before(refreshAt) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.limit {
		c.evictLocked(now)
	}
	c.entries[key] = jwtEntry{token: token, refreshAt: refreshAt, changed: changed}
}

// evictLocked makes room for one entry.
func (c *jwtCache) evictLocked(now time.Time) {
	var (
		soonest   string
		soonestAt time.Time
	)
	for k, e := range c.entries {
		if !e.fresh(now) {
			delete(c.entries, k)
			continue
		}
		if soonest == "" || e.refreshAt.Before(soonestAt) {
			soonest, soonestAt = k, e.refreshAt
		}
	}
	if len(c.entries) >= c.limit {
		delete(c.entries, soonest)
	}
}
