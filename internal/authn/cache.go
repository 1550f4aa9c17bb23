package authn

import (
	"crypto/sha256"
	"sync"

	"github.com/lestrrat-go/jwx/v3/jwt"
)

// maxVerified bounds the verified-token cache of one Authenticator.
const maxVerified = 1024

// verified is a token whose signature, issuer, key and audience were
// checked. Its time claims are checked again on every use.
type verified struct {
	p      *provider
	tok    jwt.Token
	claims map[string]any
}

// verifiedCache remembers verified tokens by the SHA-256 of their text (the
// tokens themselves are not kept), so a client that sends the same token
// again does not pay for the signature check again. It lives as long as its
// Authenticator, which the proxy builds from one snapshot: new keys, or a
// key removed, start with an empty cache. Failures are never cached. When
// full it is emptied: simple, bounded, and a hit rate that recovers at once.
type verifiedCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]*verified
}

// get returns the entry of digest, if any.
func (c *verifiedCache) get(digest [sha256.Size]byte) (*verified, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.entries[digest]
	return v, ok
}

// put remembers v under digest.
func (c *verifiedCache) put(digest [sha256.Size]byte, v *verified) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= maxVerified {
		c.entries = make(map[[sha256.Size]byte]*verified, 64)
	}
	c.entries[digest] = v
}
