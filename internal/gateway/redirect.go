package gateway

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// redirectHandler answers every request of an HTTP listener with a 308 to
// the same URL on https, port httpsPort (omitted when 443), without
// routing. The host is the request's Host (or absolute-form authority),
// which must be a DNS name or an IP address: anything else (a user part,
// a path, control characters) gets 400, so that no client input reaches
// Location unchecked.
func redirectHandler(httpsPort int) http.Handler {
	port := ""
	if httpsPort != 0 && httpsPort != 443 {
		port = ":" + strconv.Itoa(httpsPort)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, ok := redirectHost(r.Host)
		if !ok {
			http.Error(w, "bad request: invalid host", http.StatusBadRequest)
			return
		}
		path := r.URL.EscapedPath()
		if r.URL.Opaque != "" || r.RequestURI == "*" {
			http.Error(w, "bad request: invalid request target", http.StatusBadRequest)
			return
		}
		if path == "" {
			path = "/"
		}
		target := "https://" + host + port + path
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		if !printableASCII(target) {
			http.Error(w, "bad request: invalid request target", http.StatusBadRequest)
			return
		}
		w.Header().Set("Location", target)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusPermanentRedirect)
		_, _ = w.Write([]byte("redirecting to https\n"))
	})
}

// redirectHost returns the host part of a Host header, lower case, if it
// is a DNS name or an IP address (IPv6 in brackets), with an optional
// valid port (dropped).
func redirectHost(h string) (string, bool) {
	if h == "" || len(h) > 255+6 {
		return "", false
	}
	if rest, ok := strings.CutPrefix(h, "["); ok {
		ip, tail, ok := strings.Cut(rest, "]")
		if !ok || tail != "" && !validPort(strings.TrimPrefix(tail, ":"), tail) {
			return "", false
		}
		addr, err := netip.ParseAddr(ip)
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", false
		}
		return "[" + addr.String() + "]", true
	}
	host := h
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if !validPort(h[i+1:], h[i:]) {
			return "", false
		}
		host = h[:i]
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if addr, err := netip.ParseAddr(host); err == nil {
		if !addr.Is4() {
			return "", false
		}
		return addr.String(), true
	}
	if !dnsName(host) {
		return "", false
	}
	return host, true
}

// validPort reports whether p is a port number (1 to 65535, digits only);
// withColon is the text including its leading colon.
func validPort(p, withColon string) bool {
	if !strings.HasPrefix(withColon, ":") || p == "" || len(p) > 5 {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n <= 65535 && strconv.Itoa(n) == p
}

// dnsName reports whether s (lower case) is a DNS name: dot-separated
// labels of 1 to 63 letters, digits and hyphens, not starting or ending
// with a hyphen, at most 253 bytes.
func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// hstsValue is the Strict-Transport-Security value of h, "" for none.
func hstsValue(h *config.HSTS) string {
	if h == nil {
		return ""
	}
	maxAge := h.MaxAge
	if maxAge == "" {
		maxAge = config.DefaultHSTSMaxAge
	}
	d, err := time.ParseDuration(maxAge)
	if err != nil || d < time.Second {
		// Validation refuses it; a policy of the default age is better
		// than none.
		d, _ = time.ParseDuration(config.DefaultHSTSMaxAge)
	}
	v := "max-age=" + strconv.FormatInt(int64(d/time.Second), 10)
	if h.IncludeSubdomains {
		v += "; includeSubDomains"
	}
	if h.Preload {
		v += "; preload"
	}
	return v
}

// withHSTS adds the Strict-Transport-Security header to every answer.
func withHSTS(next http.Handler, value string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", value)
		next.ServeHTTP(w, r)
	})
}
