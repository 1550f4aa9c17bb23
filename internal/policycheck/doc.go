// Package policycheck owns policy as code: the checks behind `bulwark policy
// lint`, the test cases of `bulwark policy test`, the caller-to-service edges
// that `bulwark policy diff` compares, and the lock-out check that the
// control plane runs inside every apply and delete. It is pure: it reads
// decoded policies and the mesh's registered identities and services that
// its callers hand it, and does no I/O.
//
// # Lint
//
// Lint reports findings with a severity. Errors come from decoding and
// validation (schema, CEL type-checking) and are turned into findings by
// DecodeFindings. The other checks are syntactic and conservative: a rule is
// called unreachable, shadowed or covered only when that is provable from
// the patterns alone, so a check never claims a rule is dead when it is
// not, and may miss some that are. What is detected:
//
//   - unreachable (warning): an entry of a list that an entry of the
//     matching not-list excludes entirely ("GET" in both methods and
//     notMethods, "/admin/x" in paths and "/admin/*" in notPaths); a rule
//     all of whose entries of one list are excluded, or whose identities or
//     services name only namespaces that from.namespaces excludes, can
//     never match; an ALLOW rule whose not-list holds "*" can never match
//     either (an ALLOW rule never matches on an absent value); an ALLOW rule
//     every request of which an enforced DENY rule selecting the same
//     workloads also matches can never allow anything.
//   - never-matches (warning): a policy none of whose rules can match; for
//     a DENY policy this is the "DENY that protects nothing" mistake.
//   - shadowed (warning): a rule every request of which an earlier rule of
//     the same policy matches, or an ALLOW rule every request of which an
//     ALLOW rule of another enforced ALLOW policy selecting at least the
//     same workloads matches (when two rules cover each other, the one
//     decided later is reported).
//   - too-wide (warning): an enforced ALLOW rule without when conditions
//     whose from lets in any caller of the mesh (no from, or only "*"
//     patterns), and an enforced ALLOW policy in the root namespace without
//     selector labels, which selects every workload of the mesh.
//   - duplicate (error): the same policy defined twice; apply refuses it.
//   - dry-run (info): a dryRun policy, which is evaluated and logged but
//     never enforced.
//
// Coverage of one pattern by another is decided on the patterns: equal
// patterns, "*", a prefix path "/p/*" over everything below "/p", a glob
// over a glob when one matches the other with its '*'s taken as unknown
// runs, a host "*.example.com" over names ending in ".example.com", a CIDR
// over a narrower one, and a GET over a HEAD (a GET rule also matches HEAD).
// When conditions are compared as strings: a rule is covered only by rules
// whose conditions are a subset of its own. The claims are about requests
// that reach a decision: the sidecar answers a method with lower-case
// letters 400 before deciding, so such methods are not considered.
//
// # Test cases, edges and lock-outs
//
// ParseCases reads a cases file strictly and RunCases decides each case
// offline with internal/policy, exactly as the callee's sidecar would,
// after normalizing the path with internal/pathnorm. AllowedEdges lists
// which registered caller services may call which services
// (policy.ForCaller says callable), DiffEdges compares two edge sets, and
// Lockouts finds the services that would lose every caller they have now.
package policycheck
