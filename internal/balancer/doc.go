// Package balancer owns endpoint selection for one destination: it picks the
// endpoint of each request among the endpoints of a snapshot, by load
// balancing policy and by locality. It is pure: no sockets, no config
// decoding; time comes from an injected clock.Clock and randomness from an
// injected function, so every decision is reproducible in tests.
//
// # Policies
//
// PeakEWMA (the default) follows Linkerd (linkerd2-proxy over tower's
// balance::p2c and load::PeakEwma, themselves derived from Finagle's
// PeakEwma): power of two choices, that is two distinct random candidates, of
// which the cheaper wins; the cost of an endpoint is its peak-EWMA latency
// times its outstanding requests plus one. The peak-sensitive EWMA jumps to a
// sample above the current value and otherwise moves towards the sample with
// weight 1-exp(-Δt/τ), where Δt is the time since the last update and τ is
// Decay (10 s, Linkerd's EWMA_DECAY); between samples the estimate used for
// picking decays towards zero with the same τ (tower's Load::load), so an
// endpoint that was slow once is tried again later. An endpoint without
// samples starts at DefaultRTT (30 ms, Linkerd's EWMA_DEFAULT_RTT): Linkerd
// deliberately chose an optimistic default rather than Finagle's large
// penalty, so that new endpoints receive traffic at once and are not starved.
// A failed request (Done.Finish with failed) counts as a sample of at least
// FailureLatency (1 s): without it an endpoint that fails fast (connection
// refused in microseconds) would look like the fastest and attract most
// requests, the "black hole" of latency-based balancing. Outlier detection
// (package resilience) ejects endpoints that keep failing; the penalty only
// steers traffic away in the meantime.
//
// LeastRequest is power of two choices on outstanding requests (Envoy's
// LEAST_REQUEST with choice_count 2). RoundRobin cycles an atomic counter
// over the candidates, skipping the excluded ones (O(n) in the worst case).
//
// ConsistentHash is a Ketama-like ring (as Envoy's RING_HASH): each endpoint
// owns RingReplicas points, at HashString(addr + "#" + i), built in New. A
// request's hash selects the first point clockwise; excluded and draining
// endpoints are skipped by walking on. The ring depends only on the
// addresses, so every caller builds the same ring whatever the order of the
// endpoints, and removing one of n endpoints moves only about 1/n of the
// keys. HashString (FNV-1a 64 followed by MurmurHash3's fmix64 finalizer) is
// stable across processes and releases; callers use it to hash the header or
// cookie value. A hash of 0 means "no key" and picks at random.
//
// # Locality
//
// With Config.LocalityAware and a known Config.Local, the endpoints form
// priority tiers: the caller's zone, then the rest of its region, then every
// other endpoint (including those of unknown locality). Pick uses the first
// tier that has a usable endpoint and fails over to the next only when a
// tier has none left (all excluded by the caller, that is ejected or already
// tried). This is simpler than Envoy's priority levels with their
// overprovisioning factor (1.4), which spill a share of traffic to the next
// level as soon as fewer than ~71% of a level's hosts are healthy: that needs
// a count of the healthy endpoints of each tier on every request, which the
// per-request exclude function makes O(n). Strict failover keeps Pick O(1)
// in the common case and its behaviour easy to predict; the cost is that the
// survivors of a mostly failed zone take the whole zone's load until the
// last of them is ejected (outlier detection's MaxEjectionPercent bounds how
// many are ejected at once).
//
// # Draining
//
// Draining endpoints are skipped while any non-draining endpoint is usable,
// in any tier; when every usable endpoint is draining, they are used (in tier
// order) rather than failing the request.
//
// # Concurrency and cost
//
// A Balancer is immutable apart from its round-robin counter and the shared
// Stats, which are atomics (latency estimates are read through a sequence
// lock, so Pick takes no lock). Pick, Start and Done.Finish are safe for
// concurrent use and do not allocate. Pick is O(1) expected for the P2C
// policies when few endpoints are excluded, and O(n) in the worst case.
package balancer
