package admin

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// The apply-time checks of traffic resources (docs/traffic.md).
//
// A Route whose backends or mirror name a version that no instance of its
// service has (the "version" label of a proxy record: registered, or kept
// after it disconnected) is refused with 422 and the field path of each
// unknown version. The check reads the registry, so a Route applied before
// its service's instances attest is refused too: `bulwark apply --force`
// (query parameter force=true, the lock-out guard's) applies it anyway,
// and the forced apply is logged at Warn with the operator.
//
// A TrafficPolicy for a service that another TrafficPolicy of the
// namespace already selects is refused with 409 naming the existing one:
// at most one TrafficPolicy selects a service. There is no forcing it.
//
// Like the lock-out guard, the checks read and then write without one
// transaction: two concurrent applies of two TrafficPolicies for one
// service can both pass (the control plane then uses the one with the
// smallest name, and logs it).

// checkTraffic runs the apply-time checks of the Routes and
// TrafficPolicies among objs. A refusal changes nothing.
func (s *Server) checkTraffic(r *http.Request, op string, objs []config.Object) error {
	var (
		routes   []*config.Route
		policies []*config.TrafficPolicy
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *config.Route:
			routes = append(routes, o)
		case *config.TrafficPolicy:
			policies = append(policies, o)
		}
	}
	if len(policies) > 0 {
		if err := s.checkOneTrafficPolicy(r, policies); err != nil {
			return err
		}
	}
	if len(routes) > 0 {
		if err := s.checkRouteVersions(r, op, routes); err != nil {
			return err
		}
	}
	return nil
}

// checkOneTrafficPolicy refuses (409) TrafficPolicies that would make two
// select one service: with a stored one of another name, or with another
// of the same apply.
func (s *Server) checkOneTrafficPolicy(r *http.Request, applied []*config.TrafficPolicy) error {
	objs, _, err := s.cfg.Resources.List(r.Context(), config.KindTrafficPolicy, "")
	if err != nil {
		return fmt.Errorf("traffic policy check: %w", err)
	}
	// The policies after the apply, by namespace/name.
	next := map[string]*config.TrafficPolicy{}
	for _, o := range objs {
		if p, ok := o.(*config.TrafficPolicy); ok {
			next[config.Ref(p)] = p
		}
	}
	for _, p := range applied {
		next[config.Ref(p)] = p
	}
	var details []string
	for _, p := range applied {
		svc := p.Metadata.Namespace + "/" + p.Spec.Service
		var others []string
		for ref, q := range next {
			if ref != config.Ref(p) && q.Metadata.Namespace == p.Metadata.Namespace && q.Spec.Service == p.Spec.Service {
				others = append(others, ref)
			}
		}
		if len(others) == 0 {
			continue
		}
		slices.Sort(others)
		details = append(details, fmt.Sprintf("trafficpolicy %s: spec.service: %s is already selected by trafficpolicy %s: at most one TrafficPolicy may select a service (edit that one, or delete it first)",
			config.Ref(p), svc, strings.Join(others, ", ")))
	}
	if len(details) == 0 {
		return nil
	}
	slices.Sort(details)
	return &apiError{status: http.StatusConflict, msg: "refused: a service would have more than one TrafficPolicy; nothing was applied", details: details}
}

// checkRouteVersions refuses (422) Routes that name versions no instance
// of their service has, unless r has force=true.
func (s *Server) checkRouteVersions(r *http.Request, op string, routes []*config.Route) error {
	force, err := forceParam(r)
	if err != nil {
		return err
	}
	proxies, _, err := s.cfg.Registry.Proxies(r.Context())
	if err != nil {
		return fmt.Errorf("route version check: %w", err)
	}
	// known["ns/service"] is the set of versions of the service's
	// instances.
	known := map[string][]string{}
	for _, p := range proxies {
		v, ok := p.Labels[config.VersionLabel]
		if !ok {
			continue
		}
		svc := p.ServiceRef().String()
		if !slices.Contains(known[svc], v) {
			known[svc] = append(known[svc], v)
		}
	}
	var details []string
	for _, rt := range routes {
		svc := rt.Metadata.Namespace + "/" + rt.Spec.Service
		have := known[svc]
		slices.Sort(have)
		for _, u := range unknownVersions(rt, have) {
			list := "none"
			if len(have) > 0 {
				list = strings.Join(have, ", ")
			}
			details = append(details, fmt.Sprintf("route %s: %s: no instance of %s has version %q (known: %s)", config.Ref(rt), u.path, svc, u.version, list))
		}
	}
	if len(details) == 0 {
		return nil
	}
	if force {
		for _, d := range details {
			s.logger.Warn("route applied despite unknown versions", telemetry.KeyOperator, op, telemetry.KeyDetail, d)
		}
		return nil
	}
	return &apiError{
		status:  http.StatusUnprocessableEntity,
		msg:     "refused: routes name versions that no instance of their service has; nothing was applied (deploy those versions first, or pass --force to apply anyway)",
		details: details,
	}
}

// versionRef is a version a Route names, and where.
type versionRef struct {
	path, version string
}

// unknownVersions returns the versions of rt's backends and mirrors that
// are not in have, with their field paths, in document order.
func unknownVersions(rt *config.Route, have []string) []versionRef {
	var out []versionRef
	// Versions() is the set the route names; only those outside have need
	// their paths.
	missing := slices.DeleteFunc(rt.Versions(), func(v string) bool { return slices.Contains(have, v) })
	if len(missing) == 0 {
		return nil
	}
	for i, rule := range rt.Spec.Rules {
		for j, b := range rule.Backends {
			if slices.Contains(missing, b.Version) {
				out = append(out, versionRef{fmt.Sprintf("spec.rules[%d].backends[%d].version", i, j), b.Version})
			}
		}
		if m := rule.Mirror; m != nil && slices.Contains(missing, m.Version) {
			out = append(out, versionRef{fmt.Sprintf("spec.rules[%d].mirror.version", i), m.Version})
		}
	}
	return out
}
