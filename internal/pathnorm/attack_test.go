package pathnorm_test

// Attacks on path normalization, from a security review. Tests whose name
// ends in "Holds" pin tricks that are handled; the others reproduce defects
// and fail until the defect is fixed.

import (
	"errors"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

// TestAttackMatrixDotSegmentEscapesPrefix: "..;" (a dot-dot segment with a
// matrix parameter, raw or with encoded dots) is kept as an ordinary
// segment, so "/public/..;/admin" matches an ALLOW rule for "/public/*".
// Java servlet containers (Tomcat, Jetty, Spring) strip path parameters
// before resolving dot segments, and serve /admin for it: the classic
// "/..;/" access-control bypass. The documentation's advice (write DENY rules
// with a /* prefix) does not help here, since the escape happens from an
// ALLOW prefix, and it breaks the package's promise that the policy and the
// app never read two different paths. Fixed defect, guarded here: a "." or ".." segment followed
// by ';' must be rejected (400), as an encoded '/' is.
func TestAttackMatrixDotSegmentEscapesPrefix(t *testing.T) {
	for _, p := range []string{
		"/public/..;/admin",
		"/public/..;x=1/admin",
		"/public/%2e%2e;/admin",
		"/public/.%2E;jsessionid=1/admin",
		"/public/..;/..;/admin",
	} {
		got, err := pathnorm.Normalize(p)
		if err == nil && strings.HasPrefix(got, "/public/") {
			t.Errorf("Normalize(%q) = %q, nil: a policy for /public/* allows it, a servlet container serves /admin; want ErrRejected", p, got)
		}
	}
}

// TestAttackNormalizeHolds pins the tricky inputs the normalizer gets
// right: each is rejected, or normalized to a path that does not leave
// /public/ unless its plain reading does.
func TestAttackNormalizeHolds(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means rejected
	}{
		// Dot segments, raw, encoded, mixed case.
		{in: "/public/%2e%2e/admin", want: "/admin"},
		{in: "/public/%2E%2e/admin", want: "/admin"},
		{in: "/public/.%2e/admin", want: "/admin"},
		{in: "/public/./admin", want: "/public/admin"},
		{in: "/public/../../../admin", want: "/admin"},
		{in: "/public/...", want: "/public/..."},
		// No double decoding: %25 stays an escape of '%'.
		{in: "/public/%252e%252e/admin", want: "/public/%252e%252e/admin"},
		{in: "/%2561dmin", want: "/%2561dmin"},
		// Overlong UTF-8 for '.' and '/' is not decoded.
		{in: "/public/%c0%ae%c0%ae/admin", want: "/public/%C0%AE%C0%AE/admin"},
		{in: "/public/..%c0%afadmin", want: "/public/..%C0%AFadmin"},
		// Separators in disguise.
		{in: "/public/..%2fadmin", want: ""},
		{in: "/public/..%2Fadmin", want: ""},
		{in: "/public/..%5cadmin", want: ""},
		{in: "/public/..\\admin", want: ""},
		{in: "/public/%00/../admin", want: ""},
		{in: "/public/\x00", want: ""},
		{in: "/public/%0d%0aX: y", want: ""},
		{in: "/public/%09", want: ""},
		{in: "/public/%7f", want: ""},
		{in: "/public/\u00e9", want: ""},
		{in: "/public/%", want: ""},
		{in: "/public/%zz", want: ""},
		{in: "/public/%4", want: ""},
		{in: "/public/a b", want: ""},
		// Merged slashes.
		{in: "//admin", want: "/admin"},
		{in: "/public//..//admin", want: "/admin"},
	}
	for _, tt := range tests {
		got, err := pathnorm.Normalize(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("Normalize(%q) = %q, want rejected", tt.in, got)
		case tt.want == "" && !errors.Is(err, pathnorm.ErrRejected):
			t.Errorf("Normalize(%q): error %v does not wrap ErrRejected", tt.in, err)
		case tt.want != "" && err != nil:
			t.Errorf("Normalize(%q): %v, want %q", tt.in, err, tt.want)
		case tt.want != "" && got != tt.want:
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if err == nil {
			if again, err := pathnorm.Normalize(got); err != nil || again != got {
				t.Errorf("Normalize is not idempotent on %q: %q, %v", got, again, err)
			}
		}
	}
}

// TestAttackSplitTargetHolds: only origin-form reaches normalization.
func TestAttackSplitTargetHolds(t *testing.T) {
	for _, target := range []string{
		"*", "http://api.default/admin", "HTTP://api.default/admin", "api.default:443",
		"//api.default/admin?x", "/public#/../admin", "/public?a=b c", "/public?a=\x00", "",
	} {
		p, _, err := pathnorm.SplitTarget(target)
		if err == nil {
			// "//host/path" is origin-form with an empty first segment: it
			// must normalize to a path, never be read as an authority.
			n, nerr := pathnorm.Normalize(p)
			if nerr != nil || !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") {
				t.Errorf("SplitTarget(%q) accepted it and Normalize gave %q, %v", target, n, nerr)
			}
			continue
		}
		if !errors.Is(err, pathnorm.ErrRejected) {
			t.Errorf("SplitTarget(%q): error %v does not wrap ErrRejected", target, err)
		}
	}
}
