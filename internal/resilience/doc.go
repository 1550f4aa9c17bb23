// Package resilience owns the request-level safety mechanisms of the data
// path that do not depend on I/O: the retry budget, backoff between retries,
// the concurrency limiter (circuit breaker), the per-caller rate limiter and
// outlier detection. It is pure: time comes from an injected clock.Clock and
// randomness from an injected function, so tests advance a fake clock instead
// of sleeping. Every type is safe for concurrent use, and its per-request
// methods (Budget.Request and TryRetry, Limiter.TryAcquire and Release,
// RateLimiter.Allow for a known key, Outlier.Report and Ejected) take no lock
// across a call out and do not allocate.
//
// # Retry budget
//
// Budget follows Linkerd's retry budget (tower's retry::budget::TpsBudget):
// retries may add at most Percent% of the requests of the last 10 seconds,
// plus a reserve of MinPerSecond retries per second of that window
// (MinPerSecond*10) that is always available, so that a quiet service still
// retries. Requests and retries are counted in a ring of ten one-second
// buckets; each bucket packs its second and its count into one atomic word,
// so a bucket is reset and counted without a lock.
//
// # Backoff
//
// Backoff is exponential with "full jitter" (AWS Architecture Blog,
// "Exponential Backoff And Jitter"; also gRPC's and Envoy's retry back-off):
// a uniform random wait in [0, min(max, base*2^(attempt-1))).
//
// # Limiter
//
// Limiter caps concurrency, as Envoy's circuit-breaker thresholds
// (max_requests, max_pending_requests): past the cap, TryAcquire fails at
// once and the caller answers 503 rather than queueing.
//
// # Rate limiter
//
// RateLimiter is a token bucket per key (Envoy's local rate limit filter,
// one bucket per caller identity or one for all), refilled lazily on Allow.
// The number of buckets is bounded: when full, the least recently used bucket
// is evicted and its memory reused for the new key, so a caller cycling
// identities cannot grow memory without bound. A bucket idle for burst/rps
// is full again and forgetting it loses nothing; the least recently used
// bucket is the likeliest to be in that state. The worst an attacker who
// cycles identities faster than that can do is evict a legitimate caller,
// who then starts again with a full bucket: at most one extra burst per
// eviction, never a denial of the legitimate caller.
//
// # Outlier detection
//
// Outlier follows Envoy's consecutive-errors outlier detection
// (config.cluster.v3.OutlierDetection): a gateway error (connect failure,
// reset, 502, 503, 504) counts towards both consecutive_gateway_failure and
// consecutive_5xx; another 5xx counts towards consecutive_5xx and resets the
// gateway counter; a success resets both. Reaching either threshold ejects
// the endpoint inline (no sweep interval) unless the ejection would exceed
// MaxEjectionPercent of the endpoints, a hard cap as in Envoy without
// always_eject_one_host: with three endpoints and 50%, at most one is
// ejected. Either way the counters restart, so another run of errors is
// needed for the next attempt. The nth ejection of an address lasts
// min(BaseEjectionTime*n, MaxEjectionTime) and ends by itself. Envoy
// decrements n after each interval without ejection; we use a simpler rule:
// n restarts from zero when the endpoint has gone MaxEjectionTime since its
// last ejection ended without being ejected again. Reports for an address
// while it is ejected are ignored (they are requests sent before the
// ejection).
package resilience
