// Package push owns what each proxy is told: the compiler that turns the
// mesh's state into one complete snapshot per proxy, and the hub that streams
// snapshots to subscribed proxies and collects their ACKs and NACKs.
//
// Least knowledge: a proxy's snapshot carries the policies, traffic policy
// and routes of its own service, the endpoints, traffic policies and routes
// of only the services its policies allow it to call (with only the rules
// that apply to it), and the bare names of the other services, so it can
// answer 403 for a service it may not call and 503 for one that does not
// exist. An external service (ExternalService) is a destination without
// endpoints; a caller allowed to reach it gets the full policies that
// select it, because the caller's sidecar is their only enforcement point.
// A gateway (the node of a Gateway's service) also gets its Gateway, the
// Secrets its listeners name and the JWT providers its routes name; no
// other node ever gets a Secret.
package push

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// Endpoint is one live proxy of a service.
type Endpoint struct {
	Address  string
	SPIFFEID string
	Instance string
	// Labels of the instance, bound at attestation.
	Labels map[string]string
	// Locality of the instance, "region/zone"; "" unknown.
	Locality string
	// Draining is true while the instance asks for no new requests.
	Draining bool
}

// Policy is a validated AuthorizationPolicy with its JSON document.
type Policy struct {
	Policy *config.AuthorizationPolicy
	JSON   []byte
}

// TrafficPolicy is a validated TrafficPolicy with its JSON document.
type TrafficPolicy struct {
	Policy *config.TrafficPolicy
	JSON   []byte
}

// Route is a validated Route with its JSON document.
type Route struct {
	Route *config.Route
	JSON  []byte
}

// ExternalService is a validated ExternalService with its JSON document.
type ExternalService struct {
	Service *config.ExternalService
	JSON    []byte
}

// DefaultProtocol is the protocol of a service whose proxies name none, or
// name different ones.
const DefaultProtocol = "http"

// State is everything the compiler reads: a consistent view of the mesh at
// one store revision. It is immutable once built.
type State struct {
	// Revision is the store revision the state was read at; it is the
	// version of every snapshot compiled from it.
	Revision int64
	// Bundle is the trust bundle, DER root certificates, and
	// BundleVersion its version.
	Bundle        [][]byte
	BundleVersion int64
	// SigningAuthority is the subject key ID of the CA that signs SVIDs
	// now.
	SigningAuthority []byte
	// Revoked are the serials (lowercase hex) of revoked, unexpired
	// SVIDs.
	Revoked []string
	// JWTBundle is the JWKS of the JWT-SVID signing keys.
	JWTBundle []byte
	// Policies are every AuthorizationPolicy in the mesh.
	Policies []Policy
	// JWTProviders are every JWTProvider in the mesh, with their keys.
	JWTProviders []JWTProvider
	// Identities maps a workload SPIFFE ID to the services ("ns/name") it
	// was attested for.
	Identities map[string][]string
	// Endpoints maps a service ("ns/name") to its live endpoints.
	Endpoints map[string][]Endpoint
	// Services are the names of every service in the mesh, sorted. Seal
	// adds the names of the ExternalServices.
	Services []string
	// Protocols maps a service ("ns/name") to the protocol of its apps;
	// a service that is missing is DefaultProtocol.
	Protocols map[string]string
	// TrafficPolicies are every TrafficPolicy in the mesh. A service
	// selected by several gets the one with the smallest name.
	TrafficPolicies []TrafficPolicy
	// Routes are every Route in the mesh.
	Routes []Route
	// ExternalServices are every ExternalService in the mesh; each is a
	// destination named "ns/name" with no endpoints.
	ExternalServices []ExternalService
	// Gateways are every Gateway in the mesh.
	Gateways []Gateway
	// Secrets maps "ns/name" to Secrets with their data (opened by the
	// control plane's key custody; nil when it did not open): the control
	// plane reads only those that Gateways name. Only the gateways that
	// name them get them.
	Secrets map[string]*config.Secret
	// GatewayIDs are the SPIFFE IDs of the gateways, one per Gateway
	// (spiffe://<td>/ns/<namespace>/sa/<name>); Seal sorts them. Every
	// snapshot carries them (Inbound.gateways).
	GatewayIDs []string

	// trafficPolicyOf, routesOf and externalOf index the traffic
	// resources by service ("ns/name"): JSON documents, routes sorted by
	// name.
	trafficPolicyOf map[string][]byte
	routesOf        map[string][][]byte
	externalOf      map[string][]byte
	// gatewayOf indexes the Gateways by their service ("ns/name").
	gatewayOf map[string]*Gateway

	policies []*config.AuthorizationPolicy
	jsonOf   map[*config.AuthorizationPolicy][]byte
	// policySet indexes policies by the workloads they select.
	policySet *policy.Set
	// identityIDs are the keys of Identities, sorted.
	identityIDs []string
}

// Node is the proxy a snapshot is compiled for.
type Node struct {
	// ID is the proxy's SPIFFE ID.
	ID string
	// Service is the service the proxy fronts.
	Service identity.ServiceRef
	// Labels of the proxy's instance, bound at attestation.
	Labels map[string]string
}

// Seal finishes a State after its exported fields are set; Compile requires
// a sealed State.
func (st *State) Seal() {
	st.policies = make([]*config.AuthorizationPolicy, len(st.Policies))
	st.jsonOf = make(map[*config.AuthorizationPolicy][]byte, len(st.Policies))
	for i, p := range st.Policies {
		st.policies[i] = p.Policy
		st.jsonOf[p.Policy] = p.JSON
	}
	st.policySet = policy.NewSet(st.policies)
	st.identityIDs = slices.Sorted(maps.Keys(st.Identities))

	st.trafficPolicyOf = map[string][]byte{}
	tpName := map[string]string{}
	for _, tp := range st.TrafficPolicies {
		m := tp.Policy.Metadata
		svc := m.Namespace + "/" + tp.Policy.Spec.Service
		if old, ok := tpName[svc]; ok && old <= m.Name {
			continue // the smallest name wins (apply refuses a second one)
		}
		tpName[svc] = m.Name
		st.trafficPolicyOf[svc] = tp.JSON
	}
	routes := slices.Clone(st.Routes)
	slices.SortStableFunc(routes, func(a, b Route) int { return strings.Compare(a.Route.Metadata.Name, b.Route.Metadata.Name) })
	st.routesOf = map[string][][]byte{}
	for _, r := range routes {
		svc := r.Route.Metadata.Namespace + "/" + r.Route.Spec.Service
		st.routesOf[svc] = append(st.routesOf[svc], r.JSON)
	}
	st.externalOf = map[string][]byte{}
	for _, e := range st.ExternalServices {
		name := e.Service.Metadata.Namespace + "/" + e.Service.Metadata.Name
		st.externalOf[name] = e.JSON
		if !slices.Contains(st.Services, name) {
			st.Services = append(st.Services, name)
		}
	}
	slices.Sort(st.Services)
	st.sealGateways()
}

// protocolOf returns the protocol of a mesh service.
func (st *State) protocolOf(svc string) string {
	if p := st.Protocols[svc]; p != "" {
		return p
	}
	return DefaultProtocol
}

// Compile returns the complete snapshot of node. It is pure: the same state
// and node give the same snapshot.
func Compile(st *State, node Node) (*apiv1.Snapshot, error) {
	snap := &apiv1.Snapshot{
		Version:          st.Revision,
		TrustBundle:      st.Bundle,
		BundleVersion:    st.BundleVersion,
		SigningAuthority: st.SigningAuthority,
		RevokedSerials:   st.Revoked,
		JwtBundle:        st.JWTBundle,
		Inbound:          &apiv1.Inbound{Gateways: st.GatewayIDs},
		Services:         st.Services,
		Labels:           node.Labels,
		JwtProviders:     jwtProvidersFor(st, node),
		Gateway:          gatewayFor(st, node),
	}

	// Inbound: the policies selecting the node's own service, and the
	// services of the identities those policies can name by service.
	w := policy.Workload{Service: node.Service, Labels: node.Labels}
	ix, err := st.policySet.Compile(w)
	if err != nil {
		return nil, fmt.Errorf("compile inbound policies of %s: %w", node.Service, err)
	}
	for _, p := range st.policySet.Selecting(w) {
		snap.Inbound.Policies = append(snap.Inbound.Policies, st.jsonOf[p])
	}
	if len(snap.Inbound.Policies) > 0 {
		for _, id := range st.identityIDs {
			svcs := st.Identities[id]
			if slices.ContainsFunc(svcs, ix.MatchesServicePattern) {
				snap.Inbound.Peers = append(snap.Inbound.Peers, &apiv1.PeerIdentity{SpiffeId: id, Services: svcs})
			}
		}
	}
	// The service's own traffic policy and routes: its inbound enforces
	// their rate limits.
	self := node.Service.String()
	snap.Inbound.TrafficPolicy = st.trafficPolicyOf[self]
	snap.Inbound.Routes = st.routesOf[self]

	// Outbound: every service this node may call, with the caller's view of
	// its policies and its endpoints.
	caller := policy.Source{ID: node.ID, Services: st.Identities[node.ID]}
	for _, name := range st.Services {
		dest, err := identity.ParseServiceRef(name, "")
		if err != nil {
			continue
		}
		callable, view := st.policySet.ForCaller(dest, caller)
		if !callable {
			continue
		}
		d := &apiv1.Destination{Service: name}
		if ext, ok := st.externalOf[name]; ok {
			// The caller is the only enforcement point of an external
			// service: it gets the full policies that select it.
			d.External = ext
			for _, p := range st.policySet.Selecting(policy.Workload{Service: dest}) {
				d.Policies = append(d.Policies, st.jsonOf[p])
			}
			snap.Destinations = append(snap.Destinations, d)
			continue
		}
		for _, p := range view {
			b, err := config.Marshal(p)
			if err != nil {
				return nil, err
			}
			d.Policies = append(d.Policies, b)
		}
		d.Protocol = st.protocolOf(name)
		d.TrafficPolicy = st.trafficPolicyOf[name]
		d.Routes = st.routesOf[name]
		for _, ep := range st.Endpoints[name] {
			d.Endpoints = append(d.Endpoints, &apiv1.Endpoint{
				Address: ep.Address, SpiffeId: ep.SPIFFEID, Instance: ep.Instance,
				Labels: ep.Labels, Locality: ep.Locality, Draining: ep.Draining,
			})
		}
		snap.Destinations = append(snap.Destinations, d)
	}
	return snap, nil
}

// contentHash hashes a snapshot without its version, so that a snapshot
// whose content did not change is not sent again.
func contentHash(snap *apiv1.Snapshot) ([32]byte, error) {
	v := snap.Version
	snap.Version = 0
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
	snap.Version = v
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}
