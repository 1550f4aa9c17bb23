package proxy

import (
	"context"
	"net/netip"
	"strings"
)

// DNSName reports whether s is a DNS host name as the edge accepts it:
// labels of ASCII letters, digits and '-', separated by single dots, no
// empty label (so no leading, trailing or doubled dot), each of at most
// 63 bytes, 253 bytes in all. Hosts that are not DNS names (a comma, a
// quote, a percent sign...) never route, and never reach X-Forwarded-Host.
func DNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-':
		default:
			return false
		}
		if label++; label > 63 {
			return false
		}
	}
	return label > 0
}

// edgeHost reports whether host (as hostPort returns it: no brackets, no
// port, no trailing dot) is a DNS name or an IP literal without a zone.
func edgeHost(host string) bool {
	if DNSName(host) {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Zone() == ""
}

// servedNamesKey is the context key of WithServedNames.
type servedNamesKey struct{}

// WithServedNames returns ctx carrying the DNS names of the certificate
// the gateway served on the request's TLS connection (exact names and
// one-label wildcards "*.example.com"). The edge answers 421 Misdirected
// Request to a request whose host those names do not cover (domain
// fronting: a handshake for one name, then requests for another host).
func WithServedNames(ctx context.Context, names []string) context.Context {
	return context.WithValue(ctx, servedNamesKey{}, names)
}

// servedNames returns the names WithServedNames put in ctx.
func servedNames(ctx context.Context) ([]string, bool) {
	names, ok := ctx.Value(servedNamesKey{}).([]string)
	return names, ok
}

// coveredBy reports whether host (lower case, no trailing dot) is one of
// names, or one label under a wildcard "*.suffix" of names.
func coveredBy(host string, names []string) bool {
	for _, n := range names {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if suffix, ok := strings.CutPrefix(n, "*."); ok {
			label, rest, found := strings.Cut(host, ".")
			if found && label != "" && rest == suffix {
				return true
			}
			continue
		}
		if host == n {
			return true
		}
	}
	return false
}

// rateKeyIP is the key of a client's address in per-client-IP rate
// limits: an IPv4 address (an IPv4-mapped one as IPv4) as is, an IPv6
// address by its /64, which one client commonly holds whole.
func rateKeyIP(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip.WithZone(""), 64).Masked().String()
}
