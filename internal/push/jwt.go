package push

import (
	"slices"
	"strings"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// JWTProvider is a validated JWTProvider with its JSON document and its
// current keys.
type JWTProvider struct {
	Provider *config.JWTProvider
	// JSON is the resource as proxies decode it.
	JSON []byte
	// JWKS is the provider's keys, a JWKS document: its inline keys, or the
	// last good copy the control plane fetched from its jwksURI; nil when
	// there are none yet.
	JWKS []byte
}

// jwtProvidersFor returns the JWT providers that select node's workload,
// with their keys. When several of them have the same issuer, one applies:
// a provider of the workload's own namespace before a mesh-wide one, then
// the smallest name; so a proxy never gets two providers of one issuer.
func jwtProvidersFor(st *State, node Node) []*apiv1.JWTProvider {
	var selected []*JWTProvider
	for i := range st.JWTProviders {
		p := &st.JWTProviders[i]
		if p.Provider.Selects(node.Service, node.Labels) {
			selected = append(selected, p)
		}
	}
	slices.SortStableFunc(selected, func(a, b *JWTProvider) int {
		am, bm := a.Provider.Metadata, b.Provider.Metadata
		if ar, br := am.Namespace == config.RootNamespace, bm.Namespace == config.RootNamespace; ar != br {
			if ar {
				return 1
			}
			return -1
		}
		return strings.Compare(am.Name, bm.Name)
	})
	var out []*apiv1.JWTProvider
	issuers := make(map[string]bool, len(selected))
	for _, p := range selected {
		if iss := p.Provider.Spec.Issuer; !issuers[iss] {
			issuers[iss] = true
			out = append(out, &apiv1.JWTProvider{Resource: p.JSON, Jwks: p.JWKS})
		}
	}
	return out
}
