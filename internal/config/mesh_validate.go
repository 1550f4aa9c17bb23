package config

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// Defaults and limits of a Mesh, as written on MeshSpec and MeshService.
const (
	defaultSVIDTTL    = "1h"
	minSVIDTTL        = time.Minute
	minSVIDTTLText    = "1m"
	maxSVIDTTL        = 24 * time.Hour
	maxSVIDTTLText    = "24h"
	defaultMeshClient = identity.DefaultNamespace + "/visitor"
	defaultReplicas   = 1
	maxReplicas       = 20
	maxPort           = 65535
)

// Validate implements Object. It checks the mesh and fills in the defaults
// written on MeshSpec and MeshService; Entry and Client are rewritten in
// their canonical "namespace/name" form. Paths start at the document root
// ("spec.services[2].replicas"). A Mesh has no use for metadata.namespace,
// which is defaulted and checked like any resource's.
//
// Beyond the rules written on the fields, Validate rejects what `bulwark up`
// could not run as written: two services on one fixed port, a fixed port
// with several replicas, env entries that override the variables `bulwark
// up` sets (PORT, HTTP_PROXY, BULWARK_SERVICE), and a client that would
// share the identity of a service.
func (m *Mesh) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&m.Metadata, &errs)
	s := &m.Spec

	if s.TrustDomain == "" {
		s.TrustDomain = identity.DefaultTrustDomain
	} else if td, err := spiffeid.TrustDomainFromString(s.TrustDomain); err != nil {
		errs.add("spec.trustDomain", "%v", err)
	} else if td.Name() != s.TrustDomain {
		errs.add("spec.trustDomain", "must be a trust domain name such as %q, not a SPIFFE ID", td.Name())
	}

	if s.SVIDTTL == "" {
		s.SVIDTTL = defaultSVIDTTL
	}
	if d, err := time.ParseDuration(s.SVIDTTL); err != nil {
		errs.add("spec.svidTTL", "%q is not a duration such as \"1h\" or \"30m\"", s.SVIDTTL)
	} else if d < minSVIDTTL {
		errs.add("spec.svidTTL", "must be at least %s, got %q", minSVIDTTLText, s.SVIDTTL)
	} else if d > maxSVIDTTL {
		errs.add("spec.svidTTL", "must be at most %s (short-lived certificates are what limits a stolen one), got %q", maxSVIDTTLText, s.SVIDTTL)
	}

	services, svcErrs := validateMeshServices(s.Services)

	if s.Entry == "" {
		errs.add("spec.entry", "required")
	} else if ref, err := identity.ParseServiceRef(s.Entry, identity.DefaultNamespace); err != nil {
		errs.add("spec.entry", "%v", err)
	} else {
		s.Entry = ref.String()
		if _, ok := services.byRef[ref]; !ok && len(s.Services) > 0 {
			errs.add("spec.entry", "service %s is not in spec.services", ref)
		}
	}

	if s.Client == "" {
		s.Client = defaultMeshClient
	}
	if ref, err := identity.ParseServiceRef(s.Client, identity.DefaultNamespace); err != nil {
		errs.add("spec.client", "%v", err)
	} else {
		s.Client = ref.String()
		if i, ok := services.byRef[ref]; ok {
			errs.add("spec.client", "%s is spec.services[%d]: the client needs a name of its own", ref, i)
		} else if i, ok := services.byAccount[ref]; ok {
			errs.add("spec.client", "%s is the identity of spec.services[%d] (its account): the client needs an identity of its own", ref, i)
		}
	}

	if s.DemoIssuer != nil {
		validateDemoIssuer(s.DemoIssuer, &errs)
	}
	return append(errs, svcErrs...)
}

// Defaults and limits of a DemoIssuer, as written on its fields.
const (
	defaultDemoIssuer       = "bulwark-up-demo"
	defaultDemoIssuerListen = "127.0.0.1:8079"
	maxDemoIssuerLength     = 256
	maxDemoScope            = 64
)

// validateDemoIssuer checks spec.demoIssuer, filling in defaults; Provider
// is rewritten in its "namespace/name" form. The issuer hands a token to
// anyone who can reach it, so it may listen on a loopback address only.
func validateDemoIssuer(d *DemoIssuer, errs *FieldErrors) {
	const p = "spec.demoIssuer"
	if d.Provider == "" {
		errs.add(p+".provider", "required: the JWTProvider (namespace/name) bulwark up creates for the issuer")
	} else if ref, err := identity.ParseServiceRef(d.Provider, identity.DefaultNamespace); err != nil {
		errs.add(p+".provider", "%v", err)
	} else {
		d.Provider = ref.String()
	}
	if d.Issuer == "" {
		d.Issuer = defaultDemoIssuer
	}
	if len(d.Issuer) > maxDemoIssuerLength {
		errs.add(p+".issuer", "longer than %d bytes", maxDemoIssuerLength)
	} else if strings.IndexFunc(d.Issuer, func(r rune) bool { return r < 0x21 || r == 0x7f }) >= 0 {
		errs.add(p+".issuer", "must not contain spaces or control characters")
	}
	for sc := range strings.FieldsSeq(d.Scope) {
		if len(sc) > maxDemoScope || strings.IndexFunc(sc, func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._-:/", r))
		}) >= 0 {
			errs.add(p+".scope", "%q: a scope is at most %d of letters, digits and . _ - : /, scopes separated by spaces", sc, maxDemoScope)
			break
		}
	}
	if d.Listen == "" {
		d.Listen = defaultDemoIssuerListen
	}
	host, port, err := net.SplitHostPort(d.Listen)
	if err != nil {
		errs.add(p+".listen", "%q: want a loopback address and a port, such as %q", d.Listen, defaultDemoIssuerListen)
		return
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() || ip.Zone() != "" {
		errs.add(p+".listen", "%q: the host must be a loopback IP address such as 127.0.0.1 (the issuer signs a token for anyone who asks)", d.Listen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > maxPort {
		errs.add(p+".listen", "%q: the port must be between 0 and %d", d.Listen, maxPort)
	}
}

// meshServices indexes the services of a Mesh by position.
type meshServices struct {
	// byRef maps namespace/name to the index of the service's first entry,
	// byVersion a service and version label to its entry.
	byRef     map[identity.ServiceRef]int
	byVersion map[versionedRef]int
	// byAccount maps namespace/account to the index of the first service
	// with that identity.
	byAccount map[identity.ServiceRef]int
}

// validateMeshServices checks spec.services, filling in defaults.
func validateMeshServices(svcs []MeshService) (meshServices, FieldErrors) {
	var errs FieldErrors
	idx := meshServices{byRef: map[identity.ServiceRef]int{}, byVersion: map[versionedRef]int{}, byAccount: map[identity.ServiceRef]int{}}
	if len(svcs) == 0 {
		errs.add("spec.services", "at least one service is required")
		return idx, errs
	}
	byPort := map[int]int{}
	for i := range svcs {
		svc := &svcs[i]
		p := "spec.services[" + strconv.Itoa(i) + "]"

		nameOK := checkName(p+".name", svc.Name, &errs)
		if svc.Namespace == "" {
			svc.Namespace = identity.DefaultNamespace
		}
		nsOK := checkName(p+".namespace", svc.Namespace, &errs)
		// A defaulted account is as valid as the name it copies, which is
		// reported once, at name.
		accountOK := nameOK
		if svc.Account == "" {
			svc.Account = svc.Name
		} else {
			accountOK = checkName(p+".account", svc.Account, &errs)
		}
		if nameOK && nsOK {
			// A service may be listed once per version label (a canary
			// runs v1 and v2 side by side).
			ref := identity.ServiceRef{Namespace: svc.Namespace, Name: svc.Name}
			key := versionedRef{ref: ref, version: svc.Labels[VersionLabel]}
			if j, dup := idx.byVersion[key]; dup {
				if key.version == "" {
					errs.add(p+".name", "duplicate service %s (also spec.services[%d]; give each a different labels.version to run versions side by side)", ref, j)
				} else {
					errs.add(p+".name", "duplicate service %s version %s (also spec.services[%d])", ref, key.version, j)
				}
			} else {
				idx.byVersion[key] = i
			}
			if _, seen := idx.byRef[ref]; !seen {
				idx.byRef[ref] = i
			}
			if accountOK {
				id := identity.ServiceRef{Namespace: svc.Namespace, Name: svc.Account}
				if _, seen := idx.byAccount[id]; !seen {
					idx.byAccount[id] = i
				}
			}
		}

		switch hasCommand := len(svc.Command) > 0; {
		case svc.Example != "" && hasCommand:
			errs.add(p+".command", "cannot be used with example: set exactly one of example and command")
		case svc.Example == "" && !hasCommand:
			errs.add(p, "exactly one of example and command is required")
		case hasCommand && strings.TrimSpace(svc.Command[0]) == "":
			errs.add(p+".command[0]", "the program must not be empty")
		}
		for j, arg := range svc.Command {
			if strings.IndexByte(arg, 0) >= 0 {
				errs.add(p+".command["+strconv.Itoa(j)+"]", "must not contain a NUL byte")
			}
		}

		if svc.Replicas == 0 {
			svc.Replicas = defaultReplicas
		}
		if svc.Replicas < 1 || svc.Replicas > maxReplicas {
			errs.add(p+".replicas", "must be between 1 and %d, got %d", maxReplicas, svc.Replicas)
		}
		switch {
		case svc.Port < 0 || svc.Port > maxPort:
			errs.add(p+".port", "must be between 0 and %d (0 picks a free port), got %d", maxPort, svc.Port)
		case svc.Port == 0:
		case svc.Replicas > 1:
			errs.add(p+".port", "a fixed port allows one replica only, got replicas %d: leave port out to pick free ports", svc.Replicas)
		default:
			if j, dup := byPort[svc.Port]; dup {
				errs.add(p+".port", "%d is also the port of spec.services[%d]", svc.Port, j)
			} else {
				byPort[svc.Port] = i
			}
		}

		for _, k := range slices.Sorted(maps.Keys(svc.Env)) {
			kp := keyPath(p+".env", k)
			switch {
			case !isEnvName(k):
				errs.add(kp, "invalid variable name: must match [A-Za-z_][A-Za-z0-9_]*")
			case isReservedEnv(k):
				errs.add(kp, "is set by bulwark up and cannot be overridden")
			case strings.IndexByte(svc.Env[k], 0) >= 0:
				errs.add(kp, "must not contain a NUL byte")
			}
		}
	}
	return idx, errs
}

// checkName checks a namespace, service or account name at path and
// reports whether it is valid.
func checkName(path, name string, errs *FieldErrors) bool {
	if name == "" {
		errs.add(path, "required")
		return false
	}
	if err := identity.ValidateName(name); err != nil {
		errs.add(path, "%v", err)
		return false
	}
	return true
}

// isEnvName reports whether k matches [A-Za-z_][A-Za-z0-9_]*.
func isEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// isReservedEnv reports whether `bulwark up` sets the variable k for every
// app (see MeshService.Command).
func isReservedEnv(k string) bool {
	switch k {
	case "PORT", "HTTP_PROXY", "BULWARK_SERVICE":
		return true
	}
	return false
}

// versionedRef is a service of a Mesh file with its version label.
type versionedRef struct {
	ref     identity.ServiceRef
	version string
}
