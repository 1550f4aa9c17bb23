// Package workloadapi owns the proxy's SPIFFE Workload API server: the Unix
// socket next to a workload through which SPIFFE-aware applications
// (go-spiffe, java-spiffe, spiffe-helper, ...) get the proxy's X509-SVID, its
// trust bundle, JWT-SVIDs and the JWT bundle, without talking to the control
// plane. It owns the socket file (its directory, mode, owner, stale-file
// cleanup and removal at shutdown), the check of each connecting peer's
// credentials, and the cache of minted JWT-SVIDs; what it serves comes from a
// Source, which the proxy's svid.Manager implements.
//
// # Basics
//
// New validates a Config; Run listens on Config.Socket and serves the
// official API (github.com/spiffe/go-spiffe/v2/proto/spiffe/workload) until
// its context is done:
//
//	srv, err := workloadapi.New(workloadapi.Config{
//		Socket: "/run/bulwark/workload.sock",
//		UID:    1000, // the application's uid
//		GID:    -1,
//		Source: manager,
//	})
//	...
//	err = srv.Run(ctx)
//
// An application then uses the socket as it would a SPIRE agent's, e.g.
// go-spiffe's workloadapi.NewX509Source with
// workloadapi.WithAddr("unix:///run/bulwark/workload.sock").
//
// The semantics follow SPIRE's agent (pkg/agent/endpoints/workload): every
// RPC needs the "workload.spiffe.io: true" metadata header; streaming RPCs
// send the current answer at once and again whenever the Source changes;
// JWT-SVIDs need an audience and are cached per audience set until half
// their lifetime; ValidateJWTSVID checks a token against the trust domain's
// JWT bundle. The WIT-SVID RPCs are answered Unimplemented.
//
// # Access control (fails closed)
//
//   - The socket's directory is created if missing: 0700, or 0711 when the
//     allowed uid is not the proxy's own, so that user can reach the socket
//     without being able to list or write the directory. An existing
//     directory must not be world-writable.
//   - The socket is 0600, or 0660 when Config.GID is set, and is chowned to
//     Config.UID/GID when they are set.
//   - Every connection is checked with SO_PEERCRED before gRPC speaks on it:
//     the peer's uid must be Config.UID, or the proxy's own uid when UID is
//     not set. Root is not implicitly allowed. Other peers are disconnected
//     and a (rate-limited) warning names their pid and uid.
//   - A stale socket left by a previous run is replaced; a live one, or a
//     path that is not a socket, is an error. Regular files are never
//     deleted.
//
// # Caveats
//
//   - Only one identity is served: the proxy's. A workload that asks for
//     another SPIFFE ID gets PermissionDenied.
//   - Peer credentials are read with SO_PEERCRED, so the server runs on
//     Linux only; elsewhere New fails.
//   - Keys and tokens are never logged.
package workloadapi
