package admin

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// The lock-out guard (docs/policy-as-code.md).
//
// An apply or a delete that changes AuthorizationPolicies is refused with
// 409 Conflict, and nothing is written, when after the change a running
// service (one with a live endpoint) that has at least one caller now (a
// registered identity that may send it some request the policies allow, as
// policycheck.Lockouts decides from policy.Set.ForCaller) would have none;
// the answer names each such service and the callers it would lose.
// The request goes through anyway when it carries the query parameter
// force=true, which only `bulwark apply --force` and `bulwark delete
// --force` send; a forced lock-out is logged at Warn with the operator.
//
// The guard runs on the control plane inside the handler, after
// authorization, so every client gets it. It reads the policies, the
// registry and then writes, without one transaction around all three: two
// concurrent changes, each harmless alone, can together lock a service out.
// Observed edges (who actually called whom) are not used yet; they come
// with the visibility issue.

// forceParam reads the force query parameter: "true" forces, absent or
// "false" does not, anything else is a bad request.
func forceParam(r *http.Request) (bool, error) {
	switch v := r.URL.Query().Get("force"); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, badRequest(fmt.Sprintf("force: %q must be true or false", v))
	}
}

// guardLockout refuses (409) a change that applies the AuthorizationPolicies
// among applied and deletes those among deleted when it would lock a
// running service out of every caller it has now, unless r has
// force=true. Other kinds are ignored.
func (s *Server) guardLockout(r *http.Request, op string, applied []config.Object, deleted []resource.Result) error {
	force, err := forceParam(r)
	if err != nil {
		return err
	}
	var (
		changes []*config.AuthorizationPolicy
		removed []string
	)
	for _, o := range applied {
		if p, ok := o.(*config.AuthorizationPolicy); ok {
			changes = append(changes, p)
		}
	}
	for _, d := range deleted {
		if d.Kind == config.KindAuthorizationPolicy {
			removed = append(removed, d.Namespace+"/"+d.Name)
		}
	}
	if len(changes) == 0 && len(removed) == 0 {
		return nil
	}
	ctx := r.Context()
	current, err := s.currentPolicies(ctx)
	if err != nil {
		return err
	}
	mesh, err := s.lockoutMesh(ctx)
	if err != nil {
		return err
	}
	next := policycheck.Remove(policycheck.Replace(current, changes), removed)
	locks := policycheck.Lockouts(mesh, current, next)
	if len(locks) == 0 {
		return nil
	}
	if force {
		for _, l := range locks {
			s.logger.Warn("policy change forced despite lock-out", telemetry.KeyOperator, op,
				telemetry.KeyService, l.Service, telemetry.KeyDetail, strings.Join(l.Lost, ","))
		}
		return nil
	}
	details, err := s.lockoutDetails(ctx, op, locks)
	if err != nil {
		return err
	}
	return &apiError{
		status:  http.StatusConflict,
		msg:     "refused: this change would leave services without any of the callers they have now; nothing was changed (check with `bulwark policy diff`, or pass --force to apply it anyway)",
		details: details,
	}
}

// lockoutDetails describes locks for op. Callers in namespaces where op may
// not list services are counted, not named: a refusal must not tell a
// namespace operator who calls a service from elsewhere in the mesh.
func (s *Server) lockoutDetails(ctx context.Context, op string, locks []policycheck.Lockout) ([]string, error) {
	a, err := s.authorizer(ctx, op)
	if err != nil {
		return nil, err
	}
	namespaces, everywhere := a.Namespaces(op, config.VerbList, config.KindService)
	details := make([]string, len(locks))
	for i, l := range locks {
		if everywhere {
			details[i] = l.String()
			continue
		}
		var shown []string
		hidden := 0
		for _, caller := range l.Lost {
			if slices.Contains(namespaces, callerNamespace(caller)) {
				shown = append(shown, caller)
			} else {
				hidden++
			}
		}
		if hidden > 0 {
			shown = append(shown, fmt.Sprintf("%d in namespaces you may not list", hidden))
		}
		details[i] = policycheck.Lockout{Service: l.Service, Lost: shown}.String()
	}
	return details, nil
}

// callerNamespace returns the namespace of a caller as Lockout.Lost names
// it: "ns/name", or a workload SPIFFE ID; "" when it is neither.
func callerNamespace(caller string) string {
	if id, err := spiffeid.FromString(caller); err == nil {
		if w, err := identity.ParseWorkloadID(id); err == nil {
			return w.Namespace
		}
		return ""
	}
	ns, _, _ := strings.Cut(caller, "/")
	return ns
}

// currentPolicies reads every AuthorizationPolicy of the mesh.
func (s *Server) currentPolicies(ctx context.Context) ([]*config.AuthorizationPolicy, error) {
	objs, _, err := s.cfg.Resources.List(ctx, config.KindAuthorizationPolicy, "")
	if err != nil {
		return nil, fmt.Errorf("lock-out check: %w", err)
	}
	out := make([]*config.AuthorizationPolicy, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*config.AuthorizationPolicy); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// lockoutMesh reads the callers (every registered identity, with the
// services it was attested for) and the running services (those with a
// live endpoint, with the labels of each live instance) from the registry.
func (s *Server) lockoutMesh(ctx context.Context) (policycheck.Mesh, error) {
	var m policycheck.Mesh
	td, err := spiffeid.TrustDomainFromString(s.cfg.TrustDomain)
	if err != nil {
		return m, fmt.Errorf("lock-out check: trust domain: %w", err)
	}
	ids, err := s.cfg.Registry.Identities(ctx)
	if err != nil {
		return m, fmt.Errorf("lock-out check: %w", err)
	}
	for _, key := range slices.Sorted(maps.Keys(ids)) {
		ns, account, ok := strings.Cut(key, "/")
		if !ok {
			continue
		}
		id, err := identity.WorkloadID(td, ns, account)
		if err != nil {
			continue
		}
		m.Callers = append(m.Callers, policycheck.Caller{ID: id.String(), Services: ids[key]})
	}
	proxies, _, err := s.cfg.Registry.Proxies(ctx)
	if err != nil {
		return m, fmt.Errorf("lock-out check: %w", err)
	}
	index := map[identity.ServiceRef]int{}
	for _, p := range proxies {
		if p.Address == "" || !p.Live {
			continue
		}
		ref := p.ServiceRef()
		i, ok := index[ref]
		if !ok {
			i = len(m.Destinations)
			index[ref] = i
			m.Destinations = append(m.Destinations, policycheck.Destination{Service: ref})
		}
		m.Destinations[i].Instances = append(m.Destinations[i].Instances, p.Labels)
	}
	return m, nil
}
