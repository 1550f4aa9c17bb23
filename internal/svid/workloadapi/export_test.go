package workloadapi

// This file exports constants of the package to its external tests
// (package workloadapi_test), so they follow the code instead of copying it.

// MaxCachedJWTSVIDs is the JWT-SVID cache's bound.
const MaxCachedJWTSVIDs = maxCachedJWTSVIDs

// RejectWarnEvery is how often a rejected connection may be logged.
const RejectWarnEvery = rejectWarnEvery
