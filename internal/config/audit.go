package config

// KindAuditLog is the kind Role rules name for the audit log
// (internal/audit, docs/audit.md): `get` on AuditLog, mesh-wide (a Role in
// RootNamespace), lets an operator tail, verify and export it. It is not a
// resource: nothing applies, deletes or decodes it.
const KindAuditLog = "AuditLog"
