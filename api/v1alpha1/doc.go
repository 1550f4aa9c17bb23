// Package v1alpha1 is the wire API between the Bulwark control plane and its
// proxies and gateways: the Control gRPC service (Attest, SignSVID,
// Subscribe) and the Snapshot a proxy runs on. The .proto file is the source;
// the generated code is committed and regenerated with `make proto`.
package v1alpha1
