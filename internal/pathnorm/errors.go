package pathnorm

import (
	"errors"
	"fmt"
)

// ErrRejected is wrapped by every error of this package: a request whose
// target or path is rejected must be answered with 400 Bad Request and must
// never reach authorization or the app. Test for it with errors.Is.
var ErrRejected = errors.New("request path rejected")

// Errors of SplitTarget: the request-target is not one the mesh forwards.
var (
	// ErrNotOriginForm is returned for a request-target that is not in
	// origin-form ("/path?query"): empty, "*", absolute-form
	// ("http://host/path") or authority-form ("host:443").
	ErrNotOriginForm = fmt.Errorf("%w: request-target is not in origin-form", ErrRejected)
	// ErrFragment is returned for a request-target containing '#': a
	// fragment is never sent to a server.
	ErrFragment = fmt.Errorf("%w: request-target contains a fragment", ErrRejected)
	// ErrInvalidQuery is returned for a query containing a space or a
	// control character.
	ErrInvalidQuery = fmt.Errorf("%w: query contains a space or a control character", ErrRejected)
)

// Errors of Normalize: the path is ambiguous or malformed, so no policy could
// be trusted to match it the way the app will read it.
var (
	// ErrNotAbsolute is returned for a path that is empty or does not start
	// with '/'.
	ErrNotAbsolute = fmt.Errorf("%w: path does not start with '/'", ErrRejected)
	// ErrEncodedSlash is returned for a path containing %2F: apps disagree
	// on whether it separates segments.
	ErrEncodedSlash = fmt.Errorf("%w: path contains an encoded '/'", ErrRejected)
	// ErrEncodedBackslash is returned for a path containing %5C: some apps
	// read it as a segment separator.
	ErrEncodedBackslash = fmt.Errorf("%w: path contains an encoded '\\'", ErrRejected)
	// ErrBackslash is returned for a path containing a raw '\': some apps
	// read it as a segment separator.
	ErrBackslash = fmt.Errorf("%w: path contains '\\'", ErrRejected)
	// ErrNUL is returned for a path containing NUL, raw or as %00.
	ErrNUL = fmt.Errorf("%w: path contains NUL", ErrRejected)
	// ErrControl is returned for a path containing a control character
	// other than NUL (0x01-0x1F, 0x7F), raw or percent-encoded.
	ErrControl = fmt.Errorf("%w: path contains a control character", ErrRejected)
	// ErrDotParams is returned for a "." or ".." segment with ';'
	// parameters ("/public/..;/admin"): servlet containers strip the
	// parameters and resolve the dot segment, escaping the prefix a policy
	// matched.
	ErrDotParams = fmt.Errorf("%w: path has a dot segment with ';' parameters", ErrRejected)
	// ErrBadEscape is returned for a '%' not followed by two hex digits.
	ErrBadEscape = fmt.Errorf("%w: path contains a malformed percent-escape", ErrRejected)
	// ErrInvalidChar is returned for a raw byte that RFC 3986 does not
	// allow in a path: space, '"', '<', '>', '^', '`', '{', '|', '}',
	// '#', '?', and every byte outside ASCII (which must be
	// percent-encoded).
	ErrInvalidChar = fmt.Errorf("%w: path contains a character that must be percent-encoded", ErrRejected)
)
