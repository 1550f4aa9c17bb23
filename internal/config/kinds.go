package config

import "strings"

// ResourceKind maps a name an operator types (`bulwark get policies`) to a
// kind: plural, singular, kind name and short forms, case-insensitively.
func ResourceKind(name string) (kind string, ok bool) {
	switch strings.ToLower(name) {
	case "policies", "policy", "authorizationpolicies", "authorizationpolicy", "ap":
		return KindAuthorizationPolicy, true
	case "jwtproviders", "jwtprovider", "jwt":
		return KindJWTProvider, true
	case "proxies", "proxy", "px":
		return KindProxy, true
	case "services", "service", "svc":
		return KindService, true
	case "denials", "denial":
		return KindDenial, true
	case "edges", "edge":
		return KindEdge, true
	case "roles", "role":
		return KindRole, true
	case "rolebindings", "rolebinding":
		return KindRoleBinding, true
	case "trafficpolicies", "trafficpolicy", "tp":
		return KindTrafficPolicy, true
	case "routes", "route", "rt":
		return KindRoute, true
	case "externalservices", "externalservice", "se", "ext":
		return KindExternalService, true
	case "alertrules", "alertrule", "ar":
		return KindAlertRule, true
	case "alerts", "alert":
		return KindAlert, true
	case "gateways", "gateway", "gw":
		return KindGateway, true
	case "secrets", "secret":
		return KindSecret, true
	}
	return "", false
}

// ResourcePlural is the plural an API path and a CLI use for kind.
func ResourcePlural(kind string) string {
	switch kind {
	case KindAuthorizationPolicy:
		return "policies"
	case KindProxy:
		return "proxies"
	case KindService:
		return "services"
	case KindDenial:
		return "denials"
	case KindTrafficPolicy:
		return "trafficpolicies"
	}
	return strings.ToLower(kind) + "s"
}
