// Package recommend owns least-privilege recommendations: it turns the
// edges of the service graph that the proxies observed (config.Edge, read
// through the admin API's GET /v1/edges) into AuthorizationPolicy documents
// that allow exactly the observed, successful traffic to each destination
// service of a namespace, for `bulwark policy recommend`. It is pure: it
// reads the edges its caller hands it and does no I/O.
//
// # What is allowed
//
// One ALLOW policy per destination service, named "recommended-<service>",
// selecting that service. Its rules name each caller by its SPIFFE ID
// (from.identities, the most specific source the policy language has) and
// allow the methods and path templates the caller was seen using: one rule
// per caller and set of methods, the paths with the same set of methods
// merged into it. Everything is sorted, so the same edges always give the
// same bytes.
//
// Paths: a template's "*" segments (identifiers the proxy replaced) become
// the policy language's one-segment glob ("/users/*/profile"); exact paths
// stay exact. The language reads a final "/*" that is a pattern's only '*'
// as a prefix (the prefix and everything below it): a template such as
// "/items/*" is therefore emitted as that prefix, and the policy's header
// says so. The template "/*" (an identifier at the root) is never emitted,
// since it would allow every path: it is skipped with a note.
//
// Never allowed, and listed in comments instead:
//
//   - denied requests (401/403 by a proxy): "observed but denied". When a
//     denied path falls under an allowed pattern of the same caller (a
//     prefix), it is added to the rule's notPaths, so that the policy still
//     denies it;
//   - edges every request of which failed with a 5xx answer, unless
//     Options.IncludeErrors (the traffic was authorized, but nothing shows
//     that it is wanted);
//   - edges with fewer successful requests than Options.MinRequests;
//   - edges from outside the mesh (no SPIFFE ID), egress edges (the
//     destination is not a mesh service), edges of other namespaces, and
//     paths that cannot be expressed exactly: a literal '*', the proxy's
//     "/**" overflow template, or a path the policy language refuses.
//
// A TCP tunnel (an edge without a path) is allowed by a rule without "to"
// for its caller: tunnels carry no method or path to match. That rule also
// allows the caller's HTTP requests, which a TCP service refuses anyway.
//
// # Collapse
//
// With Options.Collapse N > 0, when a caller used more than N distinct
// literal values of one segment under the same surrounding path with one
// method (/static/a.css, /static/b.js, ...), they are replaced by a "*" in
// that segment ("/static/*", which as a final segment is a prefix). This is
// the only way a recommendation becomes broader than the observed
// templates, and the policy's header lists every collapse. A collapse into
// "/*" is never made.
package recommend
