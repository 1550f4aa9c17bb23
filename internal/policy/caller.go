package policy

import (
	"maps"
	"slices"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// ForCaller returns the caller's view of the policies that select dest, for
// "both ends enforce": the calling sidecar compiles the view and answers 403
// locally for what it denies, while dest's own sidecar still enforces the
// full policies.
//
// The view holds deep copies of the policies selecting dest, each keeping
// only the rules whose from matches caller, with from removed (set to nil),
// in input order; a policy left with no rules is dropped. The inputs are
// never modified, and the view shares no memory with them. callable is true
// when the view holds at least one ALLOW policy, that is, when some request
// of caller to dest could be allowed.
//
// For every request r from caller, Compile(dest, view).Decide(r) allows
// exactly when Compile(dest, policies).Decide(r) does, and is decided by the
// same policy. Rule indexes refer to the view's rules, and a denial for lack
// of a matching ALLOW rule may be reported as ReasonNoAllowPolicy when the
// view has dropped every ALLOW policy.
func ForCaller(dest identity.ServiceRef, policies []*config.AuthorizationPolicy, caller Source) (callable bool, view []*config.AuthorizationPolicy) {
	for _, p := range policies {
		if p == nil || !p.Selects(dest) {
			continue
		}
		var kept []config.Rule
		for _, r := range p.Spec.Rules {
			// The same matcher as Decide's, so the view cannot disagree.
			if from := compileSource(r.From); from.match(&caller) {
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
				Selector: p.Spec.Selector,
				Action:   p.Spec.Action,
				Rules:    kept,
			},
		}
		cp.Metadata.Labels = maps.Clone(p.Metadata.Labels)
		view = append(view, cp)
		if isAllow(p.Spec.Action) {
			callable = true
		}
	}
	return callable, view
}

// copyOperation returns a deep copy of o.
func copyOperation(o *config.Operation) *config.Operation {
	if o == nil {
		return nil
	}
	return &config.Operation{
		Methods: slices.Clone(o.Methods),
		Paths:   slices.Clone(o.Paths),
	}
}
