// Package config owns the user's language: the resource types
// (AuthorizationPolicy, JWTProvider, Role, RoleBinding, TrafficPolicy,
// Route, ExternalService, AlertRule, Mesh, and the read-only Proxy, Service,
// Denial, Edge and Alert views),
// their strict decoding from YAML or JSON, and their validation.
//
// Documents are decoded strictly: YAML is converted to JSON and decoded with
// unknown fields rejected; every error names the document and the field path
// ("document 2 (AuthorizationPolicy default/web-to-api):
// spec.rules[0].to.methods[1]: ..."). Validation fills in the defaults
// written on each field and never falls back from a bad value.
package config
