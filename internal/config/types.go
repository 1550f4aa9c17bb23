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

// RootNamespace is the mesh's root namespace: an AuthorizationPolicy or a
// JWTProvider in it applies to every namespace (mesh-wide), and a Role or a
// RoleBinding in it grants rights in every namespace. Writing in it needs
// mesh-wide rights.
const RootNamespace = "bulwark-system"

// Action is what an AuthorizationPolicy does when one of its rules matches.
type Action string

// Actions.
const (
	ActionAllow Action = "ALLOW"
	ActionDeny  Action = "DENY"
	// ActionAudit marks matching requests in the access log (audit=true)
	// and changes no decision.
	ActionAudit Action = "AUDIT"
)

// AuthorizationPolicy says who may call what. See docs/policy.md for the
// semantics; in short: a workload that no enforced ALLOW policy selects
// denies every request (fails closed); any matching DENY rule denies;
// otherwise any matching ALLOW rule allows; otherwise the request is denied.
type AuthorizationPolicy struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta              `json:"metadata"`
	Spec     AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicySpec is the body of an AuthorizationPolicy.
type AuthorizationPolicySpec struct {
	// Selector picks the workloads the policy applies to: in the policy's
	// namespace, or in every namespace for a policy in RootNamespace.
	// Empty: every workload of the namespace (of the mesh, in
	// RootNamespace).
	Selector PolicySelector `json:"selector,omitzero"`
	// Action is ALLOW, DENY or AUDIT. Default: ALLOW.
	Action Action `json:"action,omitempty"`
	// DryRun: the policy is evaluated and what it would have changed is
	// logged, but it is not enforced.
	DryRun bool `json:"dryRun,omitzero"`
	// Rules: the policy matches a request when any rule matches. At least
	// one rule is required.
	Rules []Rule `json:"rules"`
}

// PolicySelector picks the workloads a policy applies to; both fields must
// match when both are given.
type PolicySelector struct {
	// Service is the name of one service in the policy's namespace. Not
	// allowed in RootNamespace. Empty: every service.
	Service string `json:"service,omitempty"`
	// Labels the workload instance must carry (all of them). A workload's
	// labels are bound to its join token (`bulwark token create --label`),
	// so a workload cannot choose them.
	Labels map[string]string `json:"labels,omitempty"`
}

// Rule matches a request when its From, its To and every When condition
// match. A field that is absent matches everything.
type Rule struct {
	// From: who is calling. Absent: any authenticated caller of the mesh.
	From *Source `json:"from,omitempty"`
	// To: what is called. Absent: any operation.
	To *Operation `json:"to,omitempty"`
	// When are CEL expressions over the request model of docs/policy.md;
	// each must evaluate to true. An expression that fails at run time
	// counts as not matching for ALLOW and as matching for DENY (fails
	// closed).
	When []string `json:"when,omitempty"`
}

// Source matches the caller. Every field given must match: a list matches
// when any of its entries does, a not-list when none of its entries does.
type Source struct {
	// Services the caller serves, "namespace/name"; either part may be a
	// glob where '*' matches any run of characters, and "*" alone matches
	// every service.
	Services    []string `json:"services,omitempty"`
	NotServices []string `json:"notServices,omitempty"`
	// Identities are SPIFFE IDs of callers, such as
	// "spiffe://bulwark.local/ns/default/sa/web"; '*' matches any run of
	// characters within one path segment, and "*" alone matches every
	// identity.
	Identities    []string `json:"identities,omitempty"`
	NotIdentities []string `json:"notIdentities,omitempty"`
	// Namespaces of the caller's identity; '*' matches any run of
	// characters.
	Namespaces    []string `json:"namespaces,omitempty"`
	NotNamespaces []string `json:"notNamespaces,omitempty"`
	// RequestPrincipals are "<iss>/<sub>" of the request's validated JWT
	// (see JWTProvider); '*' matches any run of characters, and "*" alone
	// matches any request with a valid token.
	RequestPrincipals    []string `json:"requestPrincipals,omitempty"`
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`
	// IPBlocks are addresses or CIDR ranges of the connection's peer.
	IPBlocks    []string `json:"ipBlocks,omitempty"`
	NotIPBlocks []string `json:"notIpBlocks,omitempty"`
}

// Operation matches what is called. Every field given must match: a list
// matches when any of its entries does, a not-list when none of its entries
// does.
type Operation struct {
	// Methods are HTTP methods in upper case, or "*" for any.
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	// Hosts are matched against the request's host without the port, in
	// lower case: "api.default", "*.example.com" (a suffix), "api.*" (a
	// prefix), or "*".
	Hosts    []string `json:"hosts,omitempty"`
	NotHosts []string `json:"notHosts,omitempty"`
	// Ports are the destination port the caller addressed (from the host,
	// 80 when absent).
	Ports    []int `json:"ports,omitempty"`
	NotPorts []int `json:"notPorts,omitempty"`
	// Paths are matched against the normalized request path: "/exact",
	// "/prefix/*" (the prefix itself and everything below it), a glob
	// where '*' matches one whole segment or a run of characters within
	// one ("/users/*/profile", "/files/*.png"), or "*" for any. Each must
	// itself be a normalized path.
	Paths    []string `json:"paths,omitempty"`
	NotPaths []string `json:"notPaths,omitempty"`
}

// GetTypeMeta implements Object.
func (p *AuthorizationPolicy) GetTypeMeta() *TypeMeta { return &p.TypeMeta }

// GetMetadata implements Object.
func (p *AuthorizationPolicy) GetMetadata() *ObjectMeta { return &p.Metadata }

// SelectedService returns the service the policy selects in its namespace,
// or the zero ServiceRef with ok=false when it selects the whole namespace
// (or, in RootNamespace, the whole mesh).
func (p *AuthorizationPolicy) SelectedService() (ref identity.ServiceRef, ok bool) {
	if p.Spec.Selector.Service == "" {
		return identity.ServiceRef{}, false
	}
	return identity.ServiceRef{Namespace: p.Metadata.Namespace, Name: p.Spec.Selector.Service}, true
}

// Selects reports whether the policy applies to the workload of svc whose
// instance carries labels: the policy is in svc's namespace or in
// RootNamespace, its selector's service is empty or svc's name, and every
// selector label is among labels.
func (p *AuthorizationPolicy) Selects(svc identity.ServiceRef, labels map[string]string) bool {
	return selects(p.Metadata.Namespace, p.Spec.Selector, svc, labels)
}

// selects is Selects for any namespaced resource with a PolicySelector.
func selects(ns string, sel PolicySelector, svc identity.ServiceRef, labels map[string]string) bool {
	if ns != svc.Namespace && ns != RootNamespace {
		return false
	}
	if sel.Service != "" && (ns == RootNamespace || sel.Service != svc.Name) {
		return false
	}
	for k, v := range sel.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
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
	// DemoIssuer runs a token issuer inside `bulwark up`, for examples
	// only. Default: none.
	DemoIssuer *DemoIssuer `json:"demoIssuer,omitempty"`
}

// DemoIssuer is the small JWT issuer that `bulwark up` runs for an example
// whose gateway routes require a token. At start it generates an ES256 key
// that never leaves the process, creates the JWTProvider named Provider with
// the public key inline (its JWKS), and serves
// GET http://<listen>/token?sub=alice&scope=orders on loopback only, which
// answers a token signed with that key (valid 1h). It exists only for
// demos: anyone on the machine can get a token from it.
type DemoIssuer struct {
	// Provider is the JWTProvider to create, "namespace/name" (or "name"
	// in default). Required; the file must not define it.
	Provider string `json:"provider"`
	// Issuer is the tokens' "iss" claim and the provider's issuer.
	// Default: "bulwark-up-demo".
	Issuer string `json:"issuer,omitempty"`
	// Listen is the issuer's address: a loopback IP address and a port.
	// Default: "127.0.0.1:8079".
	Listen string `json:"listen,omitempty"`
	// Scope is what the banner's example asks a token for, scopes
	// separated by spaces, as the file's policies want them. Default: none.
	Scope string `json:"scope,omitempty"`
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
	// Labels are bound to each instance at attestation (join token
	// labels); the "version" label selects Route backends. Default: none.
	Labels map[string]string `json:"labels,omitempty"`
	// Locality of the instances, "region/zone". Default: unknown.
	Locality string `json:"locality,omitempty"`
	// Protocol of the app: http (default), http2, grpc or tcp.
	Protocol string `json:"protocol,omitempty"`
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
	// Locality is the proxy's "region/zone"; "" unknown.
	Locality string `json:"locality,omitempty"`
	// Protocol of the app behind the proxy: http (also when empty),
	// http2, grpc or tcp.
	Protocol string `json:"protocol,omitempty"`
	// Draining is true while the proxy asks callers for no new requests.
	Draining bool `json:"draining,omitempty"`
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
