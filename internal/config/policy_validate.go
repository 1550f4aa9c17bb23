package config

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

// Validate implements Object. It fills in the defaults (metadata.namespace
// "default", spec.action ALLOW) and reports every field that internal/policy
// could not enforce as written, so that no typo silently weakens a policy:
//
//   - spec.action: ALLOW or DENY, exactly.
//   - spec.selector.service: empty or a valid service name.
//   - spec.rules: at least one; a from or to that is present must name at
//     least one list (omit it to match everything).
//   - from.services: "*", or "namespace/name" where each part is non-empty
//     and made of lowercase letters, digits, '-' and the glob '*'.
//   - from.identities: "*", or a SPIFFE ID ('*' may stand for a run of
//     characters within one segment).
//   - to.methods: "*", or an HTTP method token in upper case; '*' is not a
//     glob there.
//   - to.paths: "*", or a normalized path (see internal/pathnorm) in which
//     '*' appears only as a final "/*".
//
// No list entry may be empty.
func (p *AuthorizationPolicy) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&p.Metadata, &errs)
	s := &p.Spec
	switch s.Action {
	case "":
		s.Action = ActionAllow
	case ActionAllow, ActionDeny:
	default:
		errs.add("spec.action", "unsupported value %q: must be one of %s, %s", s.Action, ActionAllow, ActionDeny)
	}
	if s.Selector.Service != "" {
		if err := identity.ValidateName(s.Selector.Service); err != nil {
			errs.add("spec.selector.service", "%v", err)
		}
	}
	if len(s.Rules) == 0 {
		errs.add("spec.rules", "at least one rule is required")
	}
	for i := range s.Rules {
		validateRule(fmt.Sprintf("spec.rules[%d]", i), &s.Rules[i], &errs)
	}
	return errs
}

// validateRule checks the rule at path.
func validateRule(path string, r *Rule, errs *FieldErrors) {
	if f := r.From; f != nil {
		if len(f.Services) == 0 && len(f.Identities) == 0 {
			errs.add(path+".from", "at least one of services and identities is required; omit from to match every caller")
		}
		validateList(path+".from.services", f.Services, checkServicePattern, errs)
		validateList(path+".from.identities", f.Identities, checkIdentityPattern, errs)
	}
	if o := r.To; o != nil {
		if len(o.Methods) == 0 && len(o.Paths) == 0 {
			errs.add(path+".to", "at least one of methods and paths is required; omit to to match every operation")
		}
		validateList(path+".to.methods", o.Methods, checkMethod, errs)
		validateList(path+".to.paths", o.Paths, checkPathPattern, errs)
	}
}

// validateList checks each entry of list with check, which returns "" for
// a valid entry and otherwise what is wrong with it.
func validateList(path string, list []string, check func(string) string, errs *FieldErrors) {
	for i, v := range list {
		if v == "" {
			errs.add(fmt.Sprintf("%s[%d]", path, i), "must not be empty")
		} else if msg := check(v); msg != "" {
			errs.add(fmt.Sprintf("%s[%d]", path, i), "%s", msg)
		}
	}
}

// checkServicePattern checks a from.services entry.
func checkServicePattern(s string) string {
	if s == "*" {
		return ""
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(name, "/") {
		return fmt.Sprintf(`%q must be "*" or "namespace/name"`, s)
	}
	for _, part := range []struct{ what, v string }{{"namespace", ns}, {"name", name}} {
		if part.v == "" {
			return fmt.Sprintf("%q: %s must not be empty", s, part.what)
		}
		for i := 0; i < len(part.v); i++ {
			if c := part.v[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '*') {
				return fmt.Sprintf("%q: %s must consist of lowercase letters, digits, '-' and '*'", s, part.what)
			}
		}
	}
	return ""
}

// checkIdentityPattern checks a from.identities entry.
func checkIdentityPattern(s string) string {
	if s == "*" {
		return ""
	}
	if _, err := spiffeid.FromString(strings.ReplaceAll(s, "*", "x")); err != nil {
		return fmt.Sprintf(`%q must be "*" or a SPIFFE ID such as "spiffe://bulwark.local/ns/default/sa/web": %v`, s, err)
	}
	return ""
}

// checkMethod checks a to.methods entry.
func checkMethod(s string) string {
	if s == "*" {
		return ""
	}
	if strings.Contains(s, "*") {
		return fmt.Sprintf(`%q: '*' is not a glob in methods; use "*" alone for any method`, s)
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return fmt.Sprintf("%q is not an HTTP method token (RFC 9110)", s)
		}
	}
	if up := strings.ToUpper(s); up != s {
		return fmt.Sprintf("%q must be upper case (methods are case-sensitive): use %q", s, up)
	}
	return ""
}

// isTokenChar reports whether c is an RFC 9110 tchar.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// checkPathPattern checks a to.paths entry.
func checkPathPattern(s string) string {
	if s == "*" {
		return ""
	}
	if s[0] != '/' {
		return fmt.Sprintf(`%q must be "*" or a path starting with '/'`, s)
	}
	if i := strings.IndexByte(s, '*'); i >= 0 && (i != len(s)-1 || !strings.HasSuffix(s, "/*")) {
		return fmt.Sprintf(`%q: '*' is only allowed as a final "/*" (the prefix and everything below it)`, s)
	}
	norm, err := pathnorm.Normalize(s)
	if err != nil {
		return fmt.Sprintf("%q can never match a request: %v", s, err)
	}
	if norm != s {
		return fmt.Sprintf("%q is not normalized (requests are matched after normalization): use %q", s, norm)
	}
	return ""
}
