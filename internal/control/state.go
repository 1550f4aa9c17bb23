package control

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// debounce coalesces bursts of store changes into one rebuild.
const debounce = 10 * time.Millisecond

// stateBuilder keeps the hub's State in step with the store: it watches
// resources, the registry and the CA, and rebuilds the State after each
// burst of changes.
type stateBuilder struct {
	store     store.Store
	resources *resource.Store
	registry  *registry.Registry
	ca        *ca.CA
	jwt       *ca.JWTAuthority
	hub       *push.Hub
	// jwks, if set, is told the JWT providers at each build and fetches
	// their keys; without it only stored and inline keys are pushed.
	jwks *jwksKeeper
	// onBundle is called when the trust bundle's version changes (and at
	// the first build). May be nil.
	onBundle func(version int64, roots []*x509.Certificate)
	td       spiffeid.TrustDomain
	logger   *slog.Logger

	lastInputs [32]byte
	lastBundle int64
}

// relevant reports whether a change to key can change a snapshot.
func relevant(key string) bool {
	return strings.HasPrefix(key, resource.Prefix) || strings.HasPrefix(key, registry.Prefix) || strings.HasPrefix(key, "/ca/") ||
		strings.HasPrefix(key, jwksPrefix)
}

// Run rebuilds the State until ctx is done.
func (b *stateBuilder) Run(ctx context.Context) error {
	for {
		rev, err := b.rebuild(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("build mesh state: %w", err)
		}
		events, err := b.store.Watch(ctx, "/", rev)
		if errors.Is(err, store.ErrCompacted) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch store: %w", err)
		}
		if err := b.follow(ctx, events); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		// The watch was dropped: list again.
	}
}

// follow rebuilds after each burst of relevant events until the watch ends.
func (b *stateBuilder) follow(ctx context.Context, events <-chan store.Event) error {
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			if relevant(ev.KV.Key) && timer == nil {
				timer = time.After(debounce)
			}
		case <-timer:
			timer = nil
			if _, err := b.rebuild(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("build mesh state: %w", err)
			}
		}
	}
}

// rebuild reads the mesh and installs a new State if its inputs changed.
// It returns the revision to watch from: that of its first read, so that a
// change made between its reads is seen again rather than missed.
func (b *stateBuilder) rebuild(ctx context.Context) (int64, error) {
	st, notes, watchFrom, err := b.read(ctx)
	if err != nil {
		return 0, err
	}
	h := inputsHash(st)
	if h == b.lastInputs && b.hub.State() != nil {
		return watchFrom, nil
	}
	b.lastInputs = h
	// Once per new state, not once per read: a proxy's ACK must not
	// repeat them.
	for _, n := range notes {
		b.logger.Warn(n.msg, telemetry.KeyService, n.service, telemetry.KeyDetail, n.detail)
	}
	b.hub.SetState(st)
	b.logger.Debug("mesh state rebuilt", telemetry.KeyVersion, st.Revision, telemetry.KeyCount, len(st.Policies))
	return watchFrom, nil
}

// read builds a State from several store reads. The State's revision is the
// latest read's (versions only grow); watchFrom is the earliest's.
func (b *stateBuilder) read(ctx context.Context) (st *push.State, notes []stateNote, watchFrom int64, err error) {
	// Another control plane may have rotated the CA.
	if err := b.ca.Reload(ctx); err != nil {
		return nil, nil, 0, err
	}
	objs, rev1, err := b.resources.List(ctx, config.KindAuthorizationPolicy, "")
	if err != nil {
		return nil, nil, 0, err
	}
	proxies, rev2, err := b.registry.Proxies(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	ids, err := b.registry.Identities(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	revoked, err := b.registry.RevokedSerials(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	jwtProviders, rev3, rev4, err := b.readJWTProviders(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	traffic, rev5, err := b.readTraffic(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	edge, rev6, err := b.readGateways(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	// One consistent view of the CA: the bundle version must be that of
	// these roots, or rotation could activate too early.
	rot := b.ca.Rotation()
	st = &push.State{
		Revision:         max(rev1, rev2, rev4, rev5, rev6),
		Identities:       make(map[string][]string, len(ids)),
		Endpoints:        map[string][]push.Endpoint{},
		BundleVersion:    rot.BundleVersion,
		SigningAuthority: rot.Intermediate.SubjectKeyId,
		Revoked:          revoked,
		JWTBundle:        b.jwt.JWKS(),
		JWTProviders:     jwtProviders,
		Protocols:        map[string]string{},
		TrafficPolicies:  traffic.policies,
		Routes:           traffic.routes,
		Gateways:         edge.gateways,
		Secrets:          edge.secrets,
		GatewayIDs:       edge.ids,
	}
	roots := rot.Roots
	for _, c := range roots {
		st.Bundle = append(st.Bundle, c.Raw)
	}
	if st.BundleVersion != b.lastBundle {
		b.lastBundle = st.BundleVersion
		if b.onBundle != nil {
			b.onBundle(st.BundleVersion, roots)
		}
	}
	for _, o := range objs {
		p, ok := o.(*config.AuthorizationPolicy)
		if !ok {
			continue
		}
		p.Metadata.ResourceVersion = "" // not part of what proxies enforce
		js, err := config.Marshal(p)
		if err != nil {
			return nil, nil, 0, err
		}
		st.Policies = append(st.Policies, push.Policy{Policy: p, JSON: js})
	}
	for key, svcs := range ids {
		ns, account, ok := strings.Cut(key, "/")
		if !ok {
			continue
		}
		id, err := spiffeid.FromSegments(b.td, "ns", ns, "sa", account)
		if err != nil {
			continue
		}
		st.Identities[id.String()] = svcs
	}
	seen := map[string]bool{}
	protocols := map[string][]string{} // the protocols the live proxies of a service name
	for _, p := range proxies {
		if p.Address == "" {
			continue // a client-only proxy is not a service
		}
		name := p.ServiceRef().String()
		if !seen[name] {
			seen[name] = true
			st.Services = append(st.Services, name)
		}
		if p.Live {
			st.Endpoints[name] = append(st.Endpoints[name], push.Endpoint{
				Address: p.Address, SPIFFEID: p.Identity, Instance: p.Instance, Labels: p.Labels,
				Locality: p.Locality, Draining: p.Draining,
			})
			proto := cmp.Or(p.Protocol, push.DefaultProtocol)
			if !slices.Contains(protocols[name], proto) {
				protocols[name] = append(protocols[name], proto)
			}
		}
	}
	for name, ps := range protocols {
		if len(ps) == 1 {
			st.Protocols[name] = ps[0]
			continue
		}
		slices.Sort(ps)
		notes = append(notes, stateNote{msg: "instances of a service disagree on its protocol; callers use http",
			service: name, detail: strings.Join(ps, ",")})
	}
	for _, e := range traffic.externals {
		name := e.Service.Metadata.Namespace + "/" + e.Service.Metadata.Name
		if seen[name] {
			notes = append(notes, stateNote{msg: "an external service has the name of a mesh service; the mesh service wins",
				service: name})
			continue
		}
		st.ExternalServices = append(st.ExternalServices, e)
	}
	notes = append(notes, traffic.notes...)
	notes = append(notes, edge.notes...)
	notes = append(notes, gatewayNotes(st)...)
	slices.SortFunc(notes, func(a, b stateNote) int { return strings.Compare(a.service+a.msg, b.service+b.msg) })
	st.Seal()
	return st, notes, min(rev1, rev2, rev3, rev5, rev6), nil
}

// stateNote is something odd in the mesh's resources that a rebuild logs
// (at Warn) once per new State.
type stateNote struct {
	msg, service, detail string
}

// trafficResources are the traffic-management resources of the mesh.
type trafficResources struct {
	policies  []push.TrafficPolicy
	routes    []push.Route
	externals []push.ExternalService
	notes     []stateNote
}

// readTraffic reads every TrafficPolicy, Route and ExternalService, with
// their JSON as proxies get it (no resource version), and notes services
// that several TrafficPolicies select. It returns the latest revision read.
func (b *stateBuilder) readTraffic(ctx context.Context) (trafficResources, int64, error) {
	var (
		out trafficResources
		rev int64
	)
	for _, kind := range []string{config.KindTrafficPolicy, config.KindRoute, config.KindExternalService} {
		objs, r, err := b.resources.List(ctx, kind, "")
		if err != nil {
			return out, 0, err
		}
		rev = max(rev, r)
		for _, o := range objs {
			o.GetMetadata().ResourceVersion = "" // not part of what proxies enforce
			js, err := config.Marshal(o)
			if err != nil {
				return out, 0, err
			}
			switch o := o.(type) {
			case *config.TrafficPolicy:
				out.policies = append(out.policies, push.TrafficPolicy{Policy: o, JSON: js})
			case *config.Route:
				out.routes = append(out.routes, push.Route{Route: o, JSON: js})
			case *config.ExternalService:
				out.externals = append(out.externals, push.ExternalService{Service: o, JSON: js})
			}
		}
	}
	names := map[string][]string{}
	for _, tp := range out.policies {
		svc := tp.Policy.Metadata.Namespace + "/" + tp.Policy.Spec.Service
		names[svc] = append(names[svc], tp.Policy.Metadata.Name)
	}
	for svc, ns := range names {
		if len(ns) > 1 {
			slices.Sort(ns)
			out.notes = append(out.notes, stateNote{msg: "several traffic policies select a service; the one with the smallest name applies",
				service: svc, detail: strings.Join(ns, ",")})
		}
	}
	return out, rev, nil
}

// edgeResources are the Gateways of the mesh and the Secrets they name.
type edgeResources struct {
	gateways []push.Gateway
	// secrets maps "ns/name" to each Secret a Gateway names that exists,
	// with its data (nil when it did not open) and its resourceVersion
	// (inputsHash hashes that, never the data).
	secrets map[string]*config.Secret
	// ids are the gateways' SPIFFE IDs.
	ids   []string
	notes []stateNote
}

// readGateways reads every Gateway, with its JSON as its gateway gets it
// (no resource version), and the Secrets they name, opened: only those,
// so that the state holds no key material no gateway needs. It returns the
// latest revision read.
func (b *stateBuilder) readGateways(ctx context.Context) (edgeResources, int64, error) {
	out := edgeResources{secrets: map[string]*config.Secret{}}
	gws, rev, err := b.resources.List(ctx, config.KindGateway, "")
	if err != nil {
		return out, 0, err
	}
	var refs []string
	for _, o := range gws {
		g, ok := o.(*config.Gateway)
		if !ok {
			continue
		}
		g.Metadata.ResourceVersion = "" // not part of what the gateway serves
		js, err := config.Marshal(g)
		if err != nil {
			return out, 0, err
		}
		out.gateways = append(out.gateways, push.Gateway{Gateway: g, JSON: js})
		id, err := spiffeid.FromSegments(b.td, "ns", g.Metadata.Namespace, "sa", g.Metadata.Name)
		if err != nil {
			continue // names are validated: not reached
		}
		out.ids = append(out.ids, id.String())
		for _, name := range push.GatewaySecretNames(g) {
			refs = append(refs, g.Metadata.Namespace+"/"+name)
		}
	}
	slices.Sort(out.ids)
	slices.Sort(refs)
	// A Secret changed after the Gateways' read is seen again: the watch
	// starts at or before that read.
	for _, ref := range slices.Compact(refs) {
		ns, name, _ := strings.Cut(ref, "/")
		o, err := b.resources.Get(ctx, config.KindSecret, ns, name)
		if errors.Is(err, store.ErrNotFound) {
			continue // gatewayNotes notes it
		}
		if err != nil {
			return out, 0, err
		}
		sec, ok := o.(*config.Secret)
		if !ok {
			continue
		}
		out.secrets[ref] = sec
		if r, err := strconv.ParseInt(sec.Metadata.ResourceVersion, 10, 64); err == nil {
			rev = max(rev, r)
		}
		if sec.Data == nil {
			out.notes = append(out.notes, stateNote{msg: "a secret cannot be decrypted with this control plane's ca key; gateways do not get it (apply it again)",
				service: ref})
		}
	}
	return out, rev, nil
}

// gatewayNotes notes the Secrets and JWTProviders that Gateways name and
// that do not exist (the gateway serves without them), and the Gateways
// named like a service with endpoints (served nothing).
func gatewayNotes(st *push.State) []stateNote {
	var notes []stateNote
	for _, g := range st.Gateways {
		m := g.Gateway.Metadata
		svc := m.Namespace + "/" + m.Name
		if st.ShadowedGateway(g.Gateway) {
			notes = append(notes, stateNote{msg: "gateway has the name of a service with endpoints; it gets no gateway configuration", service: svc})
			continue
		}
		for _, name := range push.GatewaySecretNames(g.Gateway) {
			sec := st.Secrets[m.Namespace+"/"+name]
			switch {
			case sec == nil:
				notes = append(notes, stateNote{msg: "gateway names a missing secret", service: svc, detail: name})
			case sec.Type != config.SecretTypeTLS:
				notes = append(notes, stateNote{msg: "gateway names a secret that is not of type " + config.SecretTypeTLS, service: svc, detail: name})
			}
		}
		for _, name := range push.GatewayJWTProviderNames(g.Gateway) {
			if !st.HasGatewayProvider(m.Namespace, name) {
				notes = append(notes, stateNote{msg: "gateway names a missing jwt provider", service: svc, detail: name})
			}
		}
	}
	return notes
}

// inputsHash fingerprints everything a snapshot is compiled from, so that
// store writes that change none of it (a proxy's ACK) do not wake every
// subscriber.
func inputsHash(st *push.State) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "bundle %d:", st.BundleVersion)
	for _, b := range st.Bundle {
		h.Write(b)
	}
	h.Write([]byte{0})
	h.Write(st.SigningAuthority)
	fmt.Fprintf(h, "revoked %v;", st.Revoked)
	h.Write(st.JWTBundle)
	h.Write([]byte{0})
	for _, p := range st.Policies {
		h.Write(p.JSON)
		h.Write([]byte{0})
	}
	for _, p := range st.JWTProviders {
		fmt.Fprintf(h, "jwt %d:%s%d:%s;", len(p.JSON), p.JSON, len(p.JWKS), p.JWKS)
	}
	ids := make([]string, 0, len(st.Identities))
	for id := range st.Identities {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fmt.Fprintf(h, "%s=%v;", id, st.Identities[id])
	}
	for _, p := range st.TrafficPolicies {
		fmt.Fprintf(h, "tp %d:%s;", len(p.JSON), p.JSON)
	}
	for _, r := range st.Routes {
		fmt.Fprintf(h, "route %d:%s;", len(r.JSON), r.JSON)
	}
	for _, e := range st.ExternalServices {
		fmt.Fprintf(h, "ext %d:%s;", len(e.JSON), e.JSON)
	}
	for _, g := range st.Gateways {
		fmt.Fprintf(h, "gw %d:%s;", len(g.JSON), g.JSON)
	}
	fmt.Fprintf(h, "gwids %q;", st.GatewayIDs)
	// A Secret by its store revision, which every change of it moves
	// (never by its data: this hash is no oracle of the key).
	for _, ref := range slices.Sorted(maps.Keys(st.Secrets)) {
		s := st.Secrets[ref]
		fmt.Fprintf(h, "secret %s@%s:%v;", ref, s.Metadata.ResourceVersion, s.Data != nil)
	}
	for _, s := range st.Services {
		fmt.Fprintf(h, "%s(%s):", s, st.Protocols[s])
		for _, ep := range st.Endpoints[s] {
			fmt.Fprintf(h, "%s|%s|%s|%q|%v|%v,", ep.Address, ep.SPIFFEID, ep.Instance, ep.Locality, ep.Draining, sortedLabels(ep.Labels))
		}
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// sortedLabels prints labels in key order, for hashing.
func sortedLabels(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%q=%q,", k, m[k])
	}
	return b.String()
}
