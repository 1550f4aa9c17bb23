package policycheck

import (
	"slices"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// RuleCovers exports ruleCovers for the property tests.
var RuleCovers = ruleCovers

// MayCall reports whether the cheap pre-check of callableBy lets caller
// through to dest, for the property tests.
func MayCall(policies []*config.AuthorizationPolicy, dest Destination, caller Caller) bool {
	return slices.ContainsFunc(newAllowIndex(policies).froms(dest), func(f *config.Source) bool { return fromMayMatch(f, caller) })
}
