package proxy

import (
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/authn"
	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

// table is the compiled form of one snapshot. It is immutable once built and
// swapped atomically, so the data path reads it without locks.
type table struct {
	version int64
	// lastKnownGood marks a table loaded from disk at start.
	lastKnownGood bool
	// inbound decides requests to this proxy's own service.
	inbound *policy.Index
	// peers maps a caller's SPIFFE ID to the services it serves.
	peers map[string][]string
	// services holds the name of every service in the mesh.
	services map[string]struct{}
	// dests are the services this proxy may call, by "ns/name".
	dests map[string]*destination
	// idByAddr maps an endpoint address to the identity it must present.
	idByAddr map[string]spiffeid.ID
	// bundle is the trust bundle of the snapshot, and bundleVersion its
	// version.
	bundle        []*x509.Certificate
	bundleVersion int64
	// revoked holds the serials of revoked SVIDs: peers presenting one are
	// refused.
	revoked mtls.SerialSet
	// revokedSerials are those serials as the snapshot lists them.
	revokedSerials []string
	// authn authenticates inbound requests with the JWT providers that
	// select this workload; nil when none does.
	authn *authn.Authenticator
	// inTraffic and inRoutes are the TrafficPolicy and Routes of this
	// proxy's own service: the inbound side enforces their rate limits
	// (rate and ruleRates, attached by the engine with their buckets).
	inTraffic *trafficPolicy
	inRoutes  *routeTable
	rate      *rateLimit
	ruleRates map[*routeRule]*rateLimit
	// egress finds the external destinations declaring a host (egress.go).
	egress *egressIndex
	// gateway is the compiled Gateway of a gateway's snapshot (edge.go),
	// nil for a sidecar; gateways holds the SPIFFE IDs of the mesh's
	// gateways, whose X-Forwarded-For, -Proto and -Host the inbound side
	// keeps.
	gateway  *edgeGateway
	gateways map[string]struct{}
}

// protocolTCP is the protocol of a service reached as raw TCP.
const protocolTCP = "tcp"

// destination is a service this proxy may call.
type destination struct {
	ref       identity.ServiceRef
	host      string
	index     *policy.Index
	endpoints []endpoint
	// protocol is the service's protocol ("http", "http2", "grpc", "tcp").
	protocol string
	// traffic is its TrafficPolicy (the defaults when it has none), routes
	// its Routes (nil: none), and ruleRetry the retry policies of the rules
	// that override the TrafficPolicy's.
	traffic   *trafficPolicy
	routes    *routeTable
	ruleRetry map[*routeRule]*retryPolicy
	// state survives snapshots (load statistics, ejections, budget,
	// breaker); all balances over every endpoint, subsets over those of
	// one version. The engine attaches them after compile.
	state   *destState
	all     *subset
	subsets map[string]*subset
	// external is set for an ExternalService (egress.go): no endpoints,
	// and index holds the full policies selecting it.
	external *external
}

type endpoint struct {
	addr     string
	id       spiffeid.ID
	labels   map[string]string
	locality balancer.Locality
	draining bool
}

// pick returns an endpoint for a connection that is not an HTTP request
// (a TCP tunnel): the balancer's choice among the endpoints not ejected.
func (d *destination) pick() (endpoint, bool) {
	fs := fwdState{dest: d, set: d.all}
	if d.all == nil {
		return endpoint{}, false
	}
	i := pickFor(&fs, 0)
	if i < 0 {
		return endpoint{}, false
	}
	return d.all.eps[i], true
}

// compile builds a table from a snapshot for the proxy of svc. Every policy
// document is decoded and validated again: a snapshot this proxy cannot
// fully understand is rejected as a whole (NACK), never half applied. The
// one exception is an address claimed by two identities: both endpoints are
// left out (and returned in dropped), since NACKing would freeze the proxy
// on its old snapshot, which is what whoever made the collision wants.
func compile(snap *apiv1.Snapshot, svc identity.ServiceRef, c clock.Clock) (t *table, dropped []string, err error) {
	revoked, err := mtls.NewSerialSet(snap.GetRevokedSerials())
	if err != nil {
		return nil, nil, fmt.Errorf("revoked_serials: %w", err)
	}
	t = &table{
		version:        snap.GetVersion(),
		bundleVersion:  snap.GetBundleVersion(),
		revoked:        revoked,
		revokedSerials: snap.GetRevokedSerials(),
		peers:          make(map[string][]string, len(snap.GetInbound().GetPeers())),
		services:       make(map[string]struct{}, len(snap.GetServices())),
		dests:          make(map[string]*destination, len(snap.GetDestinations())),
		idByAddr:       map[string]spiffeid.ID{},
	}
	for i, der := range snap.GetTrustBundle() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("trust_bundle[%d]: %w", i, err)
		}
		t.bundle = append(t.bundle, c)
	}
	inbound, err := decodePolicies(snap.GetInbound().GetPolicies())
	if err != nil {
		return nil, nil, fmt.Errorf("inbound: %w", err)
	}
	if t.inbound, err = policy.Compile(policy.Workload{Service: svc, Labels: snap.GetLabels()}, inbound); err != nil {
		return nil, nil, fmt.Errorf("inbound: %w", err)
	}
	if t.authn, err = compileJWTProviders(snap.GetJwtProviders(), c); err != nil {
		return nil, nil, err
	}
	if t.inTraffic, err = compileTrafficPolicy(snap.GetInbound().GetTrafficPolicy()); err != nil {
		return nil, nil, fmt.Errorf("inbound: %w", err)
	}
	if t.inRoutes, err = compileRoutes(snap.GetInbound().GetRoutes()); err != nil {
		return nil, nil, fmt.Errorf("inbound: routes: %w", err)
	}
	for _, p := range snap.GetInbound().GetPeers() {
		t.peers[p.GetSpiffeId()] = p.GetServices()
	}
	for _, name := range snap.GetServices() {
		t.services[name] = struct{}{}
	}
	conflicts := map[string]bool{}
	for i, d := range snap.GetDestinations() {
		ref, err := identity.ParseServiceRef(d.GetService(), "")
		if err != nil {
			return nil, nil, fmt.Errorf("destinations[%d]: %w", i, err)
		}
		pols, err := decodePolicies(d.GetPolicies())
		if err != nil {
			return nil, nil, fmt.Errorf("destinations[%d] (%s): %w", i, ref, err)
		}
		index, err := policy.Compile(policy.Workload{Service: ref}, pols)
		if err != nil {
			return nil, nil, fmt.Errorf("destinations[%d] (%s): %w", i, ref, err)
		}
		dest := &destination{ref: ref, host: ref.Host(), index: index, protocol: d.GetProtocol()}
		if doc := d.GetExternal(); len(doc) > 0 {
			if dest.external, err = compileExternal(doc); err != nil {
				return nil, nil, fmt.Errorf("destinations[%d] (%s): %w", i, ref, err)
			}
		}
		if dest.traffic, err = compileTrafficPolicy(d.GetTrafficPolicy()); err != nil {
			return nil, nil, fmt.Errorf("destinations[%d] (%s): %w", i, ref, err)
		}
		if dest.routes, err = compileRoutes(d.GetRoutes()); err != nil {
			return nil, nil, fmt.Errorf("destinations[%d] (%s): routes: %w", i, ref, err)
		}
		if dest.ruleRetry, err = compileRuleRetries(dest.routes); err != nil {
			return nil, nil, fmt.Errorf("destinations[%d] (%s): routes: %w", i, ref, err)
		}
		for j, ep := range d.GetEndpoints() {
			id, err := spiffeid.FromString(ep.GetSpiffeId())
			if err != nil {
				return nil, nil, fmt.Errorf("destinations[%d].endpoints[%d]: %w", i, j, err)
			}
			if prev, ok := t.idByAddr[ep.GetAddress()]; ok && prev != id {
				conflicts[ep.GetAddress()] = true
				dropped = append(dropped, fmt.Sprintf("address %s claimed by %s and %s", ep.GetAddress(), prev, id))
			}
			t.idByAddr[ep.GetAddress()] = id
			// A locality the proxy cannot read is unknown: it only
			// weakens locality preference, so it is not worth a NACK.
			loc, _ := balancer.ParseLocality(ep.GetLocality())
			dest.endpoints = append(dest.endpoints, endpoint{
				addr: ep.GetAddress(), id: id, labels: ep.GetLabels(), locality: loc, draining: ep.GetDraining(),
			})
		}
		t.dests[ref.String()] = dest
		t.services[ref.String()] = struct{}{}
	}
	if len(conflicts) > 0 {
		for addr := range conflicts {
			delete(t.idByAddr, addr)
		}
		for _, d := range t.dests {
			d.endpoints = slices.DeleteFunc(d.endpoints, func(ep endpoint) bool { return conflicts[ep.addr] })
		}
	}
	indexExternals(t)
	if g := snap.GetGateway(); g != nil {
		if t.gateway, err = compileGateway(g, svc, c); err != nil {
			return nil, nil, fmt.Errorf("gateway: %w", err)
		}
	}
	for _, id := range snap.GetInbound().GetGateways() {
		if t.gateways == nil {
			t.gateways = map[string]struct{}{}
		}
		t.gateways[id] = struct{}{}
	}
	return t, dropped, nil
}

func decodePolicies(docs [][]byte) ([]*config.AuthorizationPolicy, error) {
	out := make([]*config.AuthorizationPolicy, 0, len(docs))
	for i, doc := range docs {
		o, err := config.DecodeObject(doc)
		if err != nil {
			return nil, fmt.Errorf("policies[%d]: %w", i, err)
		}
		p, ok := o.(*config.AuthorizationPolicy)
		if !ok {
			return nil, fmt.Errorf("policies[%d]: kind %s is not an AuthorizationPolicy", i, o.GetTypeMeta().Kind)
		}
		out = append(out, p)
	}
	return out, nil
}

// compileRuleRetries compiles the retry policies of the route rules that
// set one.
func compileRuleRetries(rt *routeTable) (map[*routeRule]*retryPolicy, error) {
	if rt == nil {
		return nil, nil
	}
	var out map[*routeRule]*retryPolicy
	for _, r := range rt.rules {
		if r.retries == nil {
			continue
		}
		rp, err := compileRetry(r.retries)
		if err != nil {
			return nil, fmt.Errorf("rule %s: retries: %w", r.name, err)
		}
		if out == nil {
			out = map[*routeRule]*retryPolicy{}
		}
		out[r] = rp
	}
	return out, nil
}
