package push

import (
	"slices"
	"strings"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// Gateway is a validated Gateway with its JSON document.
type Gateway struct {
	Gateway *config.Gateway
	JSON    []byte
}

// gatewayFor returns the gateway section of node's snapshot: nil unless
// node's service is "<namespace>/<name>" of a Gateway and its identity the
// gateway's (one of GatewayIDs, .../ns/<namespace>/sa/<name>): a workload
// attested for that service under another account gets nothing. Least
// knowledge: only that gateway gets the Secrets its listeners name (of its
// own namespace, with their data), and the JWT providers its routes name.
func gatewayFor(st *State, node Node) *apiv1.GatewayConfig {
	g, ok := st.gatewayOf[node.Service.String()]
	if !ok {
		return nil
	}
	m := g.Gateway.Metadata
	if _, found := slices.BinarySearch(st.GatewayIDs, node.ID); !found || !strings.HasSuffix(node.ID, "/ns/"+m.Namespace+"/sa/"+m.Name) {
		return nil
	}
	out := &apiv1.GatewayConfig{Resource: g.JSON}
	ns := g.Gateway.Metadata.Namespace
	for _, name := range GatewaySecretNames(g.Gateway) {
		s := st.Secrets[ns+"/"+name]
		if s == nil || s.Type != config.SecretTypeTLS {
			continue // missing: the gateway serves its other certificates
		}
		crt, key := s.Data[config.SecretKeyTLSCert], s.Data[config.SecretKeyTLSKey]
		if len(crt) == 0 || len(key) == 0 {
			continue // not opened (see resource.Store.WithSealer)
		}
		out.Secrets = append(out.Secrets, &apiv1.TLSSecret{Name: name, CertPem: crt, KeyPem: key})
	}
	for _, name := range GatewayJWTProviderNames(g.Gateway) {
		if p := st.gatewayProvider(ns, name); p != nil {
			out.JwtProviders = append(out.JwtProviders, &apiv1.JWTProvider{Resource: p.JSON, Jwks: p.JWKS})
		}
	}
	return out
}

// gatewayProvider returns the JWTProvider name of namespace ns, or else of
// RootNamespace, or nil.
func (st *State) gatewayProvider(ns, name string) *JWTProvider {
	var root *JWTProvider
	for i := range st.JWTProviders {
		p := &st.JWTProviders[i]
		if p.Provider.Metadata.Name != name {
			continue
		}
		switch p.Provider.Metadata.Namespace {
		case ns:
			return p
		case config.RootNamespace:
			root = p
		}
	}
	return root
}

// GatewaySecretNames returns the names of the Secrets the listeners of g
// name, sorted, without duplicates.
func GatewaySecretNames(g *config.Gateway) []string {
	var names []string
	for _, l := range g.Spec.Listeners {
		if l.TLS == nil {
			continue
		}
		for _, c := range l.TLS.Certificates {
			if c.Secret != "" {
				names = append(names, c.Secret)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// GatewayJWTProviderNames returns the names of the JWTProviders the routes
// of g name, sorted, without duplicates.
func GatewayJWTProviderNames(g *config.Gateway) []string {
	var names []string
	for _, r := range g.Spec.Routes {
		if r.JWT != nil {
			names = append(names, r.JWT.Providers...)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// HasGatewayProvider reports whether a JWTProvider name exists for a
// Gateway of namespace ns: in ns, or in RootNamespace.
func (st *State) HasGatewayProvider(ns, name string) bool {
	return st.gatewayProvider(ns, name) != nil
}

// sealGateways indexes the Gateways by their service ("ns/name") and sorts
// GatewayIDs. A Gateway named like a service with endpoints (a workload's:
// a gateway registers no address) is left out, and its identity is not a
// gateway's: its sidecars must get neither its Secrets nor the trust the
// mesh gives a gateway (ShadowedGateway).
func (st *State) sealGateways() {
	st.gatewayOf = make(map[string]*Gateway, len(st.Gateways))
	shadowed := map[string]bool{} // "/ns/<namespace>/sa/<name>"
	for i := range st.Gateways {
		g := &st.Gateways[i]
		m := g.Gateway.Metadata
		if st.ShadowedGateway(g.Gateway) {
			shadowed["/ns/"+m.Namespace+"/sa/"+m.Name] = true
			continue
		}
		st.gatewayOf[m.Namespace+"/"+m.Name] = g
	}
	ids := make([]string, 0, len(st.GatewayIDs))
	for _, id := range st.GatewayIDs {
		if i := strings.Index(id, "/ns/"); i < 0 || !shadowed[id[i:]] {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, strings.Compare)
	st.GatewayIDs = slices.Compact(ids)
}

// ShadowedGateway reports whether g has the name of a service with
// endpoints (registered by workloads; a gateway registers none): such a
// Gateway gets no gateway configuration, and its identity is not a
// gateway's.
func (st *State) ShadowedGateway(g *config.Gateway) bool {
	return len(st.Endpoints[g.Metadata.Namespace+"/"+g.Metadata.Name]) > 0
}
