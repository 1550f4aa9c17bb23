package proxy

import (
	"errors"
	"net/http"
	"strings"
)

// Errors of checkAuthority: the request names its target host in more than
// one way, or in a way parsers read differently.
var (
	errHostUserinfo = errors.New("host: userinfo (user@) is not allowed in the authority")
	errHostRepeated = errors.New("host: several Host fields")
	errHostConflict = errors.New("host: the Host field differs from the request's authority")
)

// checkAuthority applies authority hygiene (DESIGN §3) to a request as
// net/http hands it to a handler, before any decision: a request that names
// its host twice, differently, or with userinfo is answered 400.
//
// What each server leaves to check:
//   - HTTP/1.1 (outbound and per-upstream listeners): net/http refuses
//     several Host fields by itself, takes r.Host from an absolute-form
//     request-target when there is one, and removes the Host field from
//     r.Header, so the handler cannot compare the two. The framing layer
//     (internal/framing) in front of those listeners refuses, on the raw
//     bytes, an absolute-form target whose authority differs from Host.
//   - HTTP/2 (inbound, between sidecars): net/http's HTTP/2 server sets
//     r.Host from :authority (from a "host" field only when :authority is
//     absent), refuses userinfo in :authority, and keeps any "host" field
//     in r.Header without comparing it. An app behind the proxy never sees
//     it (the proxy sets Host when it forwards), but a field that disagrees
//     with :authority is the ambiguity this check refuses.
//
// In both, r.Host with userinfo is refused: parsers disagree on which host
// "a@b" names.
func checkAuthority(r *http.Request) error {
	if strings.IndexByte(r.Host, '@') >= 0 {
		return errHostUserinfo
	}
	hosts, ok := r.Header["Host"]
	if !ok {
		return nil
	}
	if len(hosts) != 1 {
		return errHostRepeated
	}
	if !strings.EqualFold(hosts[0], r.Host) {
		return errHostConflict
	}
	return nil
}
