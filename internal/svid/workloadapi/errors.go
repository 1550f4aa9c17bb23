package workloadapi

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors of New and Run: the socket cannot be set up safely. None of them
// ever leads to deleting a file that is not a socket.
var (
	// ErrNotSocket: something other than a Unix socket (a regular file, a
	// directory, a symlink) exists at the socket path. It is left alone.
	ErrNotSocket = errors.New("workloadapi: path exists and is not a socket")
	// ErrSocketInUse: another process is listening on the socket path.
	ErrSocketInUse = errors.New("workloadapi: socket is in use by another server")
	// ErrUnsafeDirectory: the socket's directory is world-writable, so
	// anyone could replace the socket.
	ErrUnsafeDirectory = errors.New("workloadapi: socket directory is world-writable")
)

// Errors of RPCs. They stay inside the package: rpcStatus turns them into
// gRPC status codes, with their text as the only message a client sees
// (internal detail is logged, not sent).
var (
	// errSecurityHeaderMissing: the request lacks "workload.spiffe.io: true".
	errSecurityHeaderMissing = errors.New("security header missing from request")
	// errAudienceRequired: FetchJWTSVID or ValidateJWTSVID without an
	// audience.
	errAudienceRequired = errors.New("audience must be specified")
	// errBadAudience: too many audiences, or one that is too long.
	errBadAudience = errors.New("invalid audience")
	// errSVIDRequired: ValidateJWTSVID without a token.
	errSVIDRequired = errors.New("svid must be specified")
	// errBadSPIFFEID: FetchJWTSVID names a SPIFFE ID that does not parse.
	errBadSPIFFEID = errors.New("invalid requested SPIFFE ID")
	// errInvalidJWTSVID: ValidateJWTSVID got a token that does not
	// validate; it wraps a short reason, never the token.
	errInvalidJWTSVID = errors.New("invalid JWT-SVID")
	// errNoIdentity: the workload asked for an identity other than the
	// proxy's.
	errNoIdentity = errors.New("no identity issued")
	// errNotReady: the Source has no SVID or bundle (yet).
	errNotReady = errors.New("identity not available yet")
	// errMint: the control plane did not mint a usable JWT-SVID.
	errMint = errors.New("could not fetch JWT-SVID")
	// errStopping: the server is shutting down.
	errStopping = errors.New("workload API server is shutting down")
)

// rpcStatus turns an RPC error into the gRPC status the client sees. It is
// the only place that does.
func rpcStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, errSecurityHeaderMissing),
		errors.Is(err, errAudienceRequired),
		errors.Is(err, errSVIDRequired):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errBadAudience),
		errors.Is(err, errBadSPIFFEID),
		errors.Is(err, errInvalidJWTSVID):
		// These wrap a reason about the client's own input.
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errNoIdentity):
		return status.Error(codes.PermissionDenied, errNoIdentity.Error())
	case errors.Is(err, errNotReady):
		return status.Error(codes.Unavailable, errNotReady.Error())
	case errors.Is(err, errMint):
		return status.Error(codes.Unavailable, errMint.Error())
	case errors.Is(err, errStopping):
		return status.Error(codes.Unavailable, errStopping.Error())
	}
	if _, ok := status.FromError(err); ok {
		// Already a status (a failed stream Send reports the transport's).
		return err
	}
	return status.Error(codes.Internal, "internal error")
}
