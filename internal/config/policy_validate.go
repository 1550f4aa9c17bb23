package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/condition"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

// Validate implements Object. It fills in the defaults (metadata.namespace
// "default", spec.action ALLOW) and reports every field that internal/policy
// could not enforce as written, so that no typo silently weakens a policy:
//
//   - spec.action: ALLOW, DENY or AUDIT, exactly.
//   - spec.selector.service: empty or a valid service name, and empty in
//     RootNamespace (a mesh-wide policy selects by labels).
//   - spec.selector.labels: Kubernetes-style keys and values (ValidateLabel).
//   - spec.rules: at least one; a from or to that is present must name at
//     least one list (omit it to match everything).
//   - from.services: "*", or "namespace/name" where each part is non-empty
//     and made of lowercase letters, digits, '-' and the glob '*'.
//   - from.identities: "*", or a SPIFFE ID ('*' may stand for a run of
//     characters within one segment).
//   - from.namespaces: lowercase letters, digits, '-' and the glob '*'.
//   - from.requestPrincipals: "*", or "<iss>/<sub>" with both sides of the
//     last '/' non-empty; the pattern is matched as a whole against
//     "<iss>/<sub>", '*' matching any run of characters (including '/').
//   - from.ipBlocks: an IP address or a CIDR range without host bits.
//   - to.methods: "*", or an HTTP method token in upper case; '*' is not a
//     glob there.
//   - to.hosts: "*", a lower-case host name or IP address without a port,
//     "*.suffix" or "prefix.*".
//   - to.ports: 1 to 65535.
//   - to.paths: "*", or a normalized path (see internal/pathnorm) in which
//     '*' matches a run of characters within one segment ("/users/*/x",
//     "/img/*.png"; a final "/*" alone is a prefix); "**" is refused.
//   - when: each a CEL condition that compiles (internal/condition); its
//     errors carry the line and column.
//
// Every notX list is checked like its list. No list entry may be empty.
func (p *AuthorizationPolicy) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&p.Metadata, &errs)
	s := &p.Spec
	switch s.Action {
	case "":
		s.Action = ActionAllow
	case ActionAllow, ActionDeny, ActionAudit:
	default:
		errs.add("spec.action", "unsupported value %q: must be one of %s, %s, %s", s.Action, ActionAllow, ActionDeny, ActionAudit)
	}
	validatePolicySelector(p.Metadata.Namespace, &s.Selector, &errs)
	if len(s.Rules) == 0 {
		errs.add("spec.rules", "at least one rule is required")
	}
	for i := range s.Rules {
		validateRule(fmt.Sprintf("spec.rules[%d]", i), &s.Rules[i], &errs)
	}
	return errs
}

// validatePolicySelector checks the selector of a policy or a JWTProvider in
// namespace ns.
func validatePolicySelector(ns string, sel *PolicySelector, errs *FieldErrors) {
	if sel.Service != "" {
		if ns == RootNamespace {
			errs.add("spec.selector.service", "not allowed in the root namespace %s: a mesh-wide resource applies to every namespace, where a service name does not name one service; select by spec.selector.labels, or move it to the service's namespace", RootNamespace)
		} else if err := identity.ValidateName(sel.Service); err != nil {
			errs.add("spec.selector.service", "%v", err)
		}
	}
	ValidateLabels("spec.selector.labels", sel.Labels, errs)
}

// validateRule checks the rule at path.
func validateRule(path string, r *Rule, errs *FieldErrors) {
	if f := r.From; f != nil {
		if len(f.Services)+len(f.NotServices)+len(f.Identities)+len(f.NotIdentities)+
			len(f.Namespaces)+len(f.NotNamespaces)+len(f.RequestPrincipals)+len(f.NotRequestPrincipals)+
			len(f.IPBlocks)+len(f.NotIPBlocks) == 0 {
			errs.add(path+".from", "at least one of services, identities, namespaces, requestPrincipals, ipBlocks (or their notX) is required; omit from to match every caller")
		}
		validateList(path+".from.services", f.Services, checkServicePattern, errs)
		validateList(path+".from.notServices", f.NotServices, checkServicePattern, errs)
		validateList(path+".from.identities", f.Identities, checkIdentityPattern, errs)
		validateList(path+".from.notIdentities", f.NotIdentities, checkIdentityPattern, errs)
		validateList(path+".from.namespaces", f.Namespaces, checkNamespacePattern, errs)
		validateList(path+".from.notNamespaces", f.NotNamespaces, checkNamespacePattern, errs)
		validateList(path+".from.requestPrincipals", f.RequestPrincipals, checkPrincipalPattern, errs)
		validateList(path+".from.notRequestPrincipals", f.NotRequestPrincipals, checkPrincipalPattern, errs)
		validateList(path+".from.ipBlocks", f.IPBlocks, checkIPBlock, errs)
		validateList(path+".from.notIpBlocks", f.NotIPBlocks, checkIPBlock, errs)
	}
	if o := r.To; o != nil {
		if len(o.Methods)+len(o.NotMethods)+len(o.Hosts)+len(o.NotHosts)+
			len(o.Ports)+len(o.NotPorts)+len(o.Paths)+len(o.NotPaths) == 0 {
			errs.add(path+".to", "at least one of methods, hosts, ports, paths (or their notX) is required; omit to to match every operation")
		}
		validateList(path+".to.methods", o.Methods, checkMethod, errs)
		validateList(path+".to.notMethods", o.NotMethods, checkMethod, errs)
		validateList(path+".to.hosts", o.Hosts, checkHostPattern, errs)
		validateList(path+".to.notHosts", o.NotHosts, checkHostPattern, errs)
		validatePorts(path+".to.ports", o.Ports, errs)
		validatePorts(path+".to.notPorts", o.NotPorts, errs)
		validateList(path+".to.paths", o.Paths, checkPathPattern, errs)
		validateList(path+".to.notPaths", o.NotPaths, checkPathPattern, errs)
	}
	for i, expr := range r.When {
		validateCondition(fmt.Sprintf("%s.when[%d]", path, i), expr, errs)
	}
}

// validateCondition compiles a when expression; each issue becomes one
// error, "line:column: message".
func validateCondition(path, expr string, errs *FieldErrors) {
	if strings.TrimSpace(expr) == "" {
		errs.add(path, "must not be empty")
		return
	}
	_, err := condition.Compile(expr)
	if err == nil {
		return
	}
	var ce *condition.CompileError
	if !errors.As(err, &ce) {
		errs.add(path, "%v", err)
		return
	}
	for _, is := range ce.Issues {
		errs.add(path, "%s", is)
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

// validatePorts checks a list of ports.
func validatePorts(path string, ports []int, errs *FieldErrors) {
	for i, p := range ports {
		if p < 1 || p > 65535 {
			errs.add(fmt.Sprintf("%s[%d]", path, i), "%d is not a port: must be 1 to 65535", p)
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
		if !isNameGlob(part.v) {
			return fmt.Sprintf("%q: %s must consist of lowercase letters, digits, '-' and '*'", s, part.what)
		}
	}
	return ""
}

// checkNamespacePattern checks a from.namespaces entry.
func checkNamespacePattern(s string) string {
	if !isNameGlob(s) {
		return fmt.Sprintf("%q: a namespace pattern must consist of lowercase letters, digits, '-' and '*'", s)
	}
	return ""
}

// isNameGlob reports whether s is made of lowercase letters, digits, '-'
// and '*'.
func isNameGlob(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '*') {
			return false
		}
	}
	return true
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

// checkPrincipalPattern checks a from.requestPrincipals entry. The
// pattern is matched as a whole against "<iss>/<sub>"; issuers are URLs
// and contain '/', so only the last '/' separates the two.
func checkPrincipalPattern(s string) string {
	if s == "*" {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c == 0x7f {
			return fmt.Sprintf("%q: a request principal has no spaces or control characters", s)
		}
	}
	i := strings.LastIndexByte(s, '/')
	if i <= 0 || i == len(s)-1 {
		return fmt.Sprintf(`%q must be "*" or "<iss>/<sub>" of a JWT, such as "https://idp.example.com/alice" or "https://idp.example.com/*" (the issuer and the subject around the last '/' must not be empty)`, s)
	}
	return ""
}

// checkIPBlock checks a from.ipBlocks entry.
func checkIPBlock(s string) string {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Sprintf("%q is not an IP address or a CIDR range such as 10.0.0.0/8: %v", s, err)
		}
		if m := p.Masked(); m != p {
			return fmt.Sprintf("%q has host bits set: use %q (or the address alone, %q)", s, m.String(), p.Addr().String())
		}
		return ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Sprintf("%q is not an IP address or a CIDR range such as 10.0.0.0/8: %v", s, err)
	}
	if a.Zone() != "" {
		return fmt.Sprintf("%q: an IPv6 zone is not allowed", s)
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

// checkHostPattern checks a to.hosts entry: "*", "*.suffix", "prefix.*",
// or a host name or IP address, in lower case and without a port.
func checkHostPattern(s string) string {
	if s == "*" {
		return ""
	}
	host := s
	switch n := strings.Count(s, "*"); {
	case n == 1 && strings.HasPrefix(s, "*."):
		host = s[2:]
	case n == 1 && strings.HasSuffix(s, ".*"):
		host = s[:len(s)-2]
	case n > 0:
		return fmt.Sprintf(`%q: '*' is only allowed as "*", a leading "*." ("*.example.com") or a trailing ".*" ("api.*")`, s)
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil && host == s {
		if a.Zone() != "" {
			return fmt.Sprintf("%q: an IPv6 zone is not allowed", s)
		}
		if a.String() != s {
			return fmt.Sprintf("%q: write the address in its canonical form, without brackets: %q", s, a.String())
		}
		return ""
	}
	if h, port, err := splitHostPort(host); err == nil {
		return fmt.Sprintf("%q: a host has no port (hosts are matched without it): use hosts: [%q] and ports: [%s]", s, strings.Replace(s, host, h, 1), port)
	}
	if lower := strings.ToLower(s); lower != s {
		return fmt.Sprintf("%q must be lower case (hosts are matched in lower case): use %q", s, lower)
	}
	if strings.HasSuffix(host, ".") {
		return fmt.Sprintf("%q: no trailing dot (hosts are matched without it): use %q", s, strings.TrimSuffix(s, "."))
	}
	if msg := checkHostName(host); msg != "" {
		return fmt.Sprintf("%q: %s", s, msg)
	}
	return ""
}

// splitHostPort splits "host:port" when port is a number, as a caller
// might write it by mistake.
func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("no port")
	}
	host, port = strings.Trim(s[:i], "[]"), s[i+1:]
	if _, err := strconv.Atoi(port); err != nil || host == "" {
		return "", "", errors.New("no port")
	}
	return host, port, nil
}

// checkHostName checks a lower-case DNS name: labels of 1 to 63 letters,
// digits, '-' and '_', at most 253 characters.
func checkHostName(s string) string {
	if len(s) > 253 {
		return "a host name is at most 253 characters"
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return "a host name has no empty label"
		}
		if len(label) > 63 {
			return "a host name label is at most 63 characters"
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "a host name consists of letters, digits, '-', '_' and '.'"
			}
		}
	}
	return ""
}

// checkPathPattern checks a to.paths entry.
func checkPathPattern(s string) string {
	if s == "*" {
		return ""
	}
	if s[0] != '/' {
		return fmt.Sprintf(`%q must be "*" or a path starting with '/'`, s)
	}
	if strings.Contains(s, "**") {
		return fmt.Sprintf(`%q: "**" is not supported: '*' matches a run of characters within one segment; use a final "/*" for everything below a prefix`, s)
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
