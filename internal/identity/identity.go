// Package identity owns Bulwark's naming rules: the SPIFFE IDs of workloads
// (spiffe://<trust-domain>/ns/<namespace>/sa/<account>), the SPIFFE ID of the
// control plane, service references ("ns/name"), and the host names an app
// uses to reach a service through its sidecar ("api", "api.default",
// "api.default.svc", "api.default.svc.cluster.local").
//
// Identity (the account) and service are separate: outside Kubernetes an
// account defaults to the service name, but one account may serve several
// services. Every other package builds and parses these names here, never by
// hand.
package identity

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain used when none is configured.
const DefaultTrustDomain = "bulwark.local"

// DefaultNamespace is the namespace of a resource or service reference that
// names none.
const DefaultNamespace = "default"

// maxNameLen is the longest namespace, service or account name (a DNS label).
const maxNameLen = 63

// ValidateName reports whether s is a valid namespace, service or account
// name: a DNS-1123 label (lowercase letters, digits and '-', starting and
// ending with a letter or digit, at most 63 characters).
func ValidateName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("must be at most %d characters", maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return fmt.Errorf("%q must consist of lowercase letters, digits and '-', and start and end with a letter or digit", s)
		}
	}
	return nil
}

// ServiceRef names a service in a namespace.
type ServiceRef struct {
	Namespace string
	Name      string
}

// String returns "namespace/name".
func (r ServiceRef) String() string { return r.Namespace + "/" + r.Name }

// Host returns the canonical host name of the service, "name.namespace",
// which is what the app behind the service's sidecar sees in Host.
func (r ServiceRef) Host() string { return r.Name + "." + r.Namespace }

// IsZero reports whether r is the zero value.
func (r ServiceRef) IsZero() bool { return r.Namespace == "" && r.Name == "" }

// ParseServiceRef parses "namespace/name", or "name" alone, which means
// defaultNamespace. Both parts must be valid names.
func ParseServiceRef(s, defaultNamespace string) (ServiceRef, error) {
	ns, name, found := strings.Cut(s, "/")
	if !found {
		ns, name = defaultNamespace, s
	}
	if err := ValidateName(ns); err != nil {
		return ServiceRef{}, fmt.Errorf("service %q: namespace %v", s, err)
	}
	if err := ValidateName(name); err != nil {
		return ServiceRef{}, fmt.Errorf("service %q: name %v", s, err)
	}
	return ServiceRef{Namespace: ns, Name: name}, nil
}

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<account>.
func WorkloadID(td spiffeid.TrustDomain, namespace, account string) (spiffeid.ID, error) {
	if err := ValidateName(namespace); err != nil {
		return spiffeid.ID{}, fmt.Errorf("namespace %v", err)
	}
	if err := ValidateName(account); err != nil {
		return spiffeid.ID{}, fmt.Errorf("account %v", err)
	}
	return spiffeid.FromSegments(td, "ns", namespace, "sa", account)
}

// Workload is the parsed form of a workload SPIFFE ID.
type Workload struct {
	ID        spiffeid.ID
	Namespace string
	Account   string
}

// ParseWorkloadID splits a workload SPIFFE ID into namespace and account. It
// fails for any ID that is not of the form /ns/<namespace>/sa/<account> with
// valid names, such as the control plane's own ID.
func ParseWorkloadID(id spiffeid.ID) (Workload, error) {
	rest, ok := strings.CutPrefix(id.Path(), "/ns/")
	if !ok {
		return Workload{}, fmt.Errorf("%s is not a workload identity", id)
	}
	ns, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return Workload{}, fmt.Errorf("%s is not a workload identity", id)
	}
	account, ok := strings.CutPrefix(rest, "sa/")
	if !ok || ValidateName(ns) != nil || ValidateName(account) != nil {
		return Workload{}, fmt.Errorf("%s is not a workload identity", id)
	}
	return Workload{ID: id, Namespace: ns, Account: account}, nil
}

// ControlPlaneID is the SPIFFE ID in the control plane's serving certificate.
// It is outside the /ns/.../sa/... shape, so no workload can ever be issued it.
func ControlPlaneID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromSegments(td, "bulwark", "control")
	if err != nil {
		// The segments are constants that are always valid.
		panic(err)
	}
	return id
}

// ErrNotAServiceHost is returned by ServiceFromHost for a host that cannot
// name a mesh service (an IP address, an empty host, a bad label).
var ErrNotAServiceHost = errors.New("host does not name a mesh service")

// ServiceFromHost maps the host an app used to a service: "name" (the
// caller's namespace), "name.namespace", "name.namespace.svc" or
// "name.namespace.svc.cluster.local", with an optional ":port" (decimal or
// empty), which is ignored. Host names are case-insensitive. Anything else returns
// ErrNotAServiceHost.
func ServiceFromHost(host, callerNamespace string) (ServiceRef, error) {
	if h, port, err := net.SplitHostPort(host); err == nil {
		// RFC 3986 allows an empty port; anything else must be decimal.
		if p, err := strconv.ParseUint(port, 10, 16); port != "" && (err != nil || port != strconv.FormatUint(p, 10)) {
			return ServiceRef{}, ErrNotAServiceHost
		}
		host = h
	} else if strings.Contains(host, ":") {
		return ServiceRef{}, ErrNotAServiceHost
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || net.ParseIP(host) != nil {
		return ServiceRef{}, ErrNotAServiceHost
	}
	host = strings.TrimSuffix(host, ".svc.cluster.local")
	host = strings.TrimSuffix(host, ".svc")
	name, ns, found := strings.Cut(host, ".")
	if !found {
		ns = callerNamespace
	}
	if ValidateName(name) != nil || ValidateName(ns) != nil {
		return ServiceRef{}, ErrNotAServiceHost
	}
	return ServiceRef{Namespace: ns, Name: name}, nil
}
