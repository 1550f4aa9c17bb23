package config

import "github.com/bulwarkmesh/bulwark/internal/identity"

// APIVersion is the apiVersion of every Bulwark resource.
const APIVersion = "bulwark.dev/v1alpha1"

// Kinds of resources.
const (
	KindAuthorizationPolicy = "AuthorizationPolicy"
	KindMesh                = "Mesh"
	KindProxy               = "Proxy"
	KindService             = "Service"
	KindList                = "List"
)

// TypeMeta identifies the schema of a document.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// ObjectMeta names a resource. Name and Namespace are set by the user;
// ResourceVersion and CreationTimestamp are set by the control plane and
// ignored by apply, so the output of `bulwark get -o yaml` can be applied
// again.
type ObjectMeta struct {
	Name string `json:"name"`
	// Namespace of the resource. Default: "default".
	Namespace string `json:"namespace,omitempty"`
	// Labels are free-form key/value pairs.
	Labels map[string]string `json:"labels,omitempty"`
	// ResourceVersion is the store revision of the last change (read-only).
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// CreationTimestamp is when the resource was first applied, RFC 3339
	// (read-only).
	CreationTimestamp string `json:"creationTimestamp,omitempty"`
}

// Object is any resource document.
type Object interface {
	// GetTypeMeta returns the apiVersion and kind.
	GetTypeMeta() *TypeMeta
	// GetMetadata returns the metadata.
	GetMetadata() *ObjectMeta
	// Validate checks the spec, filling in defaults, and returns FieldErrors
	// whose paths start at the document root ("spec.rules[0]...").
	Validate() FieldErrors
}

// Ref returns "namespace/name" of an object.
func Ref(o Object) string {
	m := o.GetMetadata()
	return m.Namespace + "/" + m.Name
}

// Action is what an AuthorizationPolicy does when one of its rules matches.
type Action string

// Actions.
const (
	ActionAllow Action = "ALLOW"
	ActionDeny  Action = "DENY"
)

// AuthorizationPolicy says who may call what. See docs/policy.md for the
// semantics; in short: a workload that no ALLOW policy selects denies every
// request (fails closed); any matching DENY rule denies; otherwise any
// matching ALLOW rule allows; otherwise the request is denied.
type AuthorizationPolicy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta              `json:"metadata"`
	Spec     AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicySpec is the body of an AuthorizationPolicy.
type AuthorizationPolicySpec struct {
	// Selector picks the services of the policy's namespace it applies to.
	// Empty: every service of the namespace.
	Selector PolicySelector `json:"selector,omitzero"`
	// Action is ALLOW or DENY. Default: ALLOW.
	Action Action `json:"action,omitempty"`
	// Rules: the policy matches a request when any rule matches. At least
	// one rule is required.
	Rules []Rule `json:"rules"`
}

// PolicySelector picks the services a policy applies to.
type PolicySelector struct {
	// Service is the name of one service in the policy's namespace.
	// Empty: every service of the namespace.
	Service string `json:"service,omitempty"`
}

// Rule matches a request when its From and its To both match. A field that
// is absent matches everything.
type Rule struct {
	// From: who is calling. Absent: any authenticated caller of the mesh.
	From *Source `json:"from,omitempty"`
	// To: what is called. Absent: any operation.
	To *Operation `json:"to,omitempty"`
}

// Source matches the caller. Within a list any entry may match; when both
// lists are given, both must match (as in Istio).
type Source struct {
	// Services the caller serves, "namespace/name"; either part may be a
	// glob where '*' matches any run of characters, and "*" alone matches
	// every service.
	Services []string `json:"services,omitempty"`
	// Identities are SPIFFE IDs of callers, such as
	// "spiffe://bulwark.local/ns/default/sa/web"; '*' matches any run of
	// characters within one path segment, and "*" alone matches every
	// identity.
	Identities []string `json:"identities,omitempty"`
}

// Operation matches what is called. Within a list any entry may match; when
// both lists are given, both must match.
type Operation struct {
	// Methods are HTTP methods in upper case, or "*" for any.
	Methods []string `json:"methods,omitempty"`
	// Paths are matched against the normalized request path: "/exact",
	// "/prefix/*" (the prefix itself and everything below it), or "*" for
	// any. Each must itself be a normalized path.
	Paths []string `json:"paths,omitempty"`
}

// GetTypeMeta implements Object.
func (p *AuthorizationPolicy) GetTypeMeta() *TypeMeta { return &p.TypeMeta }

// GetMetadata implements Object.
func (p *AuthorizationPolicy) GetMetadata() *ObjectMeta { return &p.Metadata }

// SelectedService returns the service the policy selects in its namespace,
// or the zero ServiceRef with ok=false when it selects the whole namespace.
func (p *AuthorizationPolicy) SelectedService() (ref identity.ServiceRef, ok bool) {
	if p.Spec.Selector.Service == "" {
		return identity.ServiceRef{}, false
	}
	return identity.ServiceRef{Namespace: p.Metadata.Namespace, Name: p.Spec.Selector.Service}, true
}

// Selects reports whether the policy applies to svc.
func (p *AuthorizationPolicy) Selects(svc identity.ServiceRef) bool {
	if p.Metadata.Namespace != svc.Namespace {
		return false
	}
	return p.Spec.Selector.Service == "" || p.Spec.Selector.Service == svc.Name
}

// Mesh describes a whole mesh for `bulwark up`: the services to run on this
// machine, each with its sidecar. It is read by `bulwark up` only and is never
// applied to a control plane.
type Mesh struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     MeshSpec   `json:"spec"`
}

// MeshSpec is the body of a Mesh.
type MeshSpec struct {
	// TrustDomain of the mesh. Default: "bulwark.local".
	TrustDomain string `json:"trustDomain,omitempty"`
	// SVIDTTL is the lifetime of workload certificates, a Go duration.
	// Default: "1h"; minimum "1m", maximum "24h".
	SVIDTTL string `json:"svidTTL,omitempty"`
	// Entry is the service ("namespace/name" or "name") reached through the
	// local URL that `bulwark up` prints.
	Entry string `json:"entry"`
	// Client is the identity of the local client sidecar behind that URL,
	// "namespace/name"; the file's policies must allow it to call Entry.
	// Default: "default/visitor".
	Client string `json:"client,omitempty"`
	// Services to run, each with its sidecar.
	Services []MeshService `json:"services"`
}

// MeshService is one service of a Mesh.
type MeshService struct {
	// Name of the service.
	Name string `json:"name"`
	// Namespace of the service. Default: "default".
	Namespace string `json:"namespace,omitempty"`
	// Account is the identity's account name. Default: the service name.
	Account string `json:"account,omitempty"`
	// Example runs a built-in example app (`bulwark example-app NAME`).
	// Exactly one of Example and Command is required.
	Example string `json:"example,omitempty"`
	// Command runs this program as the app; "$(PORT)" in an argument is
	// replaced by the app port. The app also gets PORT, HTTP_PROXY and
	// BULWARK_SERVICE in its environment.
	Command []string `json:"command,omitempty"`
	// Env is extra environment for the app.
	Env map[string]string `json:"env,omitempty"`
	// Port the app listens on, on 127.0.0.1. Default: a free port.
	Port int `json:"port,omitempty"`
	// Replicas is the number of instances, each with its sidecar. Default: 1.
	Replicas int `json:"replicas,omitempty"`
}

// GetTypeMeta implements Object.
func (m *Mesh) GetTypeMeta() *TypeMeta { return &m.TypeMeta }

// GetMetadata implements Object.
func (m *Mesh) GetMetadata() *ObjectMeta { return &m.Metadata }

// Proxy is the read-only view of one registered sidecar instance, as listed
// by `bulwark get proxies`.
type Proxy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Status   ProxyStatus `json:"status"`
}

// ProxyStatus is what the control plane knows of a proxy.
type ProxyStatus struct {
	Identity   string `json:"identity"`
	Service    string `json:"service"`
	Address    string `json:"address"`
	Connected  bool   `json:"connected"`
	LastSeen   string `json:"lastSeen,omitempty"`
	SVIDExpiry string `json:"svidExpiry,omitempty"`
	SVIDSerial string `json:"svidSerial,omitempty"`
	// SVIDAuthority is the key ID (hex) of the intermediate that signed
	// the SVID.
	SVIDAuthority   string `json:"svidAuthority,omitempty"`
	BundleVersion   int64  `json:"bundleVersion,omitempty"`
	SnapshotVersion int64  `json:"snapshotVersion,omitempty"`
	AckedVersion    int64  `json:"ackedVersion,omitempty"`
	LastNack        string `json:"lastNack,omitempty"`
	Version         string `json:"version,omitempty"`
}

// GetTypeMeta implements Object.
func (p *Proxy) GetTypeMeta() *TypeMeta { return &p.TypeMeta }

// GetMetadata implements Object.
func (p *Proxy) GetMetadata() *ObjectMeta { return &p.Metadata }

// Validate implements Object; a Proxy is read-only and cannot be applied.
func (p *Proxy) Validate() FieldErrors {
	return FieldErrors{{Path: "kind", Msg: "Proxy is read-only: proxies register themselves"}}
}

// Service is the read-only view of a service with at least one registered
// endpoint, as listed by `bulwark get services`.
type Service struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta    `json:"metadata"`
	Status   ServiceStatus `json:"status"`
}

// ServiceStatus is what the control plane knows of a service.
type ServiceStatus struct {
	Identities []string `json:"identities"`
	Endpoints  []string `json:"endpoints"`
	Ready      int      `json:"ready"`
}

// GetTypeMeta implements Object.
func (s *Service) GetTypeMeta() *TypeMeta { return &s.TypeMeta }

// GetMetadata implements Object.
func (s *Service) GetMetadata() *ObjectMeta { return &s.Metadata }

// Validate implements Object; a Service view is read-only.
func (s *Service) Validate() FieldErrors {
	return FieldErrors{{Path: "kind", Msg: "Service is read-only: services appear when their proxies register"}}
}
