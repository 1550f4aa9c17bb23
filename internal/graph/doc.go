// Package graph owns the service graph: who calls whom, with what, how
// often, how fast and how often denied.
//
// It has three parts, one per place an edge lives:
//
//   - Template turns a normalized request path into a path template,
//     replacing identifier-like segments (numbers, UUIDs, long hex, random
//     tokens, JWTs) with "*", so that /items/1 and /items/2 are one edge.
//   - Recorder is the proxy side: every finished request is one
//     Observation, aggregated by (direction, source, destination, method,
//     path template) with counts and a latency histogram until the sidecar
//     reports it. It is on the data path: Record takes one short lock and
//     one map lookup keyed by a comparable struct, and does not allocate
//     for a kind it already holds. It also aggregates failed
//     authentications on the inbound listener by remote address and
//     reason. Both are bounded (see Recorder).
//   - Store is the control-plane side: validated reports are folded into
//     per-minute buckets (hourly after an hour), kept 24 hours, bounded in
//     edges and buckets (each reporter to a quarter of each, evicting its
//     own first), and queried over a window as []*config.Edge for
//     `bulwark get edges`, `bulwark graph`, `bulwark top`, alerts and
//     `bulwark policy recommend`. The graph is kept in memory only: it does
//     not survive a restart of the control plane (proxies keep reporting).
//
// Nothing here reads a query string or a header value: a path template
// never holds the query, and identifier-like segments (where tokens hide
// when they are put in paths) are replaced.
package graph
