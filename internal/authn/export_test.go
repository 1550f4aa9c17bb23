package authn

// MaxVerified exposes maxVerified to tests.
const MaxVerified = maxVerified

// CacheLen returns how many verified tokens a remembers.
func CacheLen(a *Authenticator) int {
	a.cache.mu.Lock()
	defer a.cache.mu.Unlock()
	return len(a.cache.entries)
}
