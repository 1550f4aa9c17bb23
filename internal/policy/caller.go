package policy

import (
	"maps"
	"slices"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// ForCaller returns the caller's view of the policies that select dest
// (ignoring selector labels), for "both ends enforce": the calling sidecar
// compiles the view with Compile(Workload{Service: dest}, view) and answers
// 403 locally for what it denies, while every instance of dest still
// enforces its full policies. It is NewSet(policies).ForCaller(dest,
// caller); see Set.ForCaller.
func ForCaller(dest identity.ServiceRef, policies []*config.AuthorizationPolicy, caller Source) (callable bool, view []*config.AuthorizationPolicy) {
	return NewSet(policies).ForCaller(dest, caller)
}

// ForCaller returns caller's view of the policies of the set that select
// dest, for "both ends enforce". The caller's sidecar knows only the
// caller's identity and services, and not which instance of dest will
// answer, with what peer address, token, host or port; so the view is
// built to be never stricter than the full policies: for every request r
// from caller, deciding r with the view allows whenever deciding it with
// the full policies of any instance of dest does. It may allow more. The
// view holds deep copies, in order of name, of:
//
//   - every enforced ALLOW policy (label-selected ones too, without their
//     selector labels), keeping the rules whose identity-based from fields
//     (identities, services, namespaces and their notX) can match caller,
//     each without its from and its when, and with only the methods and
//     paths (and notX) of its to: the rest cannot make it stricter;
//   - every enforced DENY policy that selects every instance of dest (no
//     selector labels), keeping the rules whose from uses identity-based
//     fields only and matches caller, that have no when and whose to uses
//     methods and paths only, each without its from.
//
// AUDIT and dry-run policies are left out, and so is every policy left
// with no rules. A policy that does not compile keeps all its rules if it
// is an ALLOW policy and is left out if it is a DENY policy. The inputs are
// never modified, and the view shares no memory with them. callable is true
// when the view holds an ALLOW policy, that is, when some request of caller
// to dest could be allowed. For policies whose rules use only
// identity-based from fields and the methods and paths of to, the view
// decides exactly as the full policies, by the same policy.
func (s *Set) ForCaller(dest identity.ServiceRef, caller Source) (callable bool, view []*config.AuthorizationPolicy) {
	req := Request{Source: caller}
	q := newFacts(&req)
	for e := range s.eachCandidate(dest) {
		p := e.p
		eff := effectOf(p.Spec.Action)
		if p.Spec.DryRun || eff == effectAudit || (eff == effectDeny && (e.cp == nil || len(p.Spec.Selector.Labels) > 0)) {
			continue
		}
		var kept []config.Rule
		for i := range p.Spec.Rules {
			r := &p.Spec.Rules[i]
			switch {
			case eff == effectAllow && (e.cp == nil || identityMatch(&e.cp.rules[i], &q, false)):
				kept = append(kept, config.Rule{To: copyOperation(r.To)})
			case eff == effectDeny && callerDecidable(r) && identityMatch(&e.cp.rules[i], &q, true):
				kept = append(kept, config.Rule{To: copyOperation(r.To)})
			}
		}
		if len(kept) == 0 {
			continue
		}
		cp := &config.AuthorizationPolicy{
			TypeMeta: p.TypeMeta,
			Metadata: p.Metadata,
			Spec: config.AuthorizationPolicySpec{
				Selector: config.PolicySelector{Service: p.Spec.Selector.Service},
				Action:   p.Spec.Action,
				Rules:    kept,
			},
		}
		cp.Metadata.Labels = maps.Clone(p.Metadata.Labels)
		view = append(view, cp)
		if eff == effectAllow {
			callable = true
		}
	}
	return callable, view
}

// identityMatch reports whether the identity-based from fields of rl match
// q, in a rule that denies or allows.
func identityMatch(rl *compiledRule, q *facts, deny bool) bool {
	for _, f := range rl.checks {
		if f.identityBased() && !rl.fieldOK(f, q, deny) {
			return false
		}
	}
	return true
}

// callerDecidable reports whether the caller's sidecar decides a DENY rule
// exactly as dest's does: its from uses identity-based fields only, it has
// no when, and its to only methods and paths.
func callerDecidable(r *config.Rule) bool {
	if len(r.When) > 0 {
		return false
	}
	if f := r.From; f != nil && (len(f.RequestPrincipals) > 0 || len(f.NotRequestPrincipals) > 0 || len(f.IPBlocks) > 0 || len(f.NotIPBlocks) > 0) {
		return false
	}
	if o := r.To; o != nil && (len(o.Hosts) > 0 || len(o.NotHosts) > 0 || len(o.Ports) > 0 || len(o.NotPorts) > 0) {
		return false
	}
	return true
}

// copyOperation returns a deep copy of the methods and paths (and notX) of
// o, or nil when o has none.
func copyOperation(o *config.Operation) *config.Operation {
	if o == nil || len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) == 0 {
		return nil
	}
	return &config.Operation{
		Methods:    slices.Clone(o.Methods),
		NotMethods: slices.Clone(o.NotMethods),
		Paths:      slices.Clone(o.Paths),
		NotPaths:   slices.Clone(o.NotPaths),
	}
}
