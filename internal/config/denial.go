package config

// KindDenial is the kind of the read-only Denial view.
const KindDenial = "Denial"

// Denial is the read-only view of one kind of denied request, as proxies
// report it and `bulwark get denials` lists it: requests that were answered
// 401 or 403 with the same direction, source, destination, method, path,
// policy, rule, reason and status are one Denial with a count. Its
// metadata.namespace is the destination's namespace and metadata.name a
// stable digest of the rest, so the same kind of denial keeps its name
// across reports.
//
// The control plane keeps only the most recent denials, in memory: they do
// not survive its restart.
type Denial struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta   `json:"metadata"`
	Status   DenialStatus `json:"status"`
}

// DenialStatus is what the control plane knows of a Denial.
type DenialStatus struct {
	// Direction is "inbound" (the callee's proxy denied) or "outbound" (the
	// caller's own proxy did).
	Direction string `json:"direction"`
	// Source is the caller's SPIFFE ID.
	Source string `json:"source"`
	// Destination is the called service, "namespace/name".
	Destination string `json:"destination"`
	Method      string `json:"method"`
	// Path is the normalized path, without the query, cut at 256 bytes.
	Path string `json:"path"`
	// Policy is "namespace/name" of the deciding policy; empty when no
	// rule decided (no ALLOW rule matched, or no token).
	Policy string `json:"policy,omitempty"`
	// Rule is the index of the deciding rule in Policy; absent when no
	// rule decided.
	Rule *int `json:"rule,omitempty"`
	// Reason says why, as the access log says it.
	Reason string `json:"reason"`
	// HTTPStatus is the status answered: 401 or 403.
	HTTPStatus int `json:"httpStatus"`
	// Count is how many such requests were denied between FirstSeen and
	// LastSeen.
	Count int64 `json:"count"`
	// FirstSeen and LastSeen are RFC 3339 times (with fractional seconds)
	// on the reporting proxies' clocks.
	FirstSeen string `json:"firstSeen"`
	LastSeen  string `json:"lastSeen"`
	// Reporters are the SPIFFE IDs of the proxies that reported it, taken
	// from their certificates.
	Reporters []string `json:"reporters,omitempty"`
}

// GetTypeMeta implements Object.
func (d *Denial) GetTypeMeta() *TypeMeta { return &d.TypeMeta }

// GetMetadata implements Object.
func (d *Denial) GetMetadata() *ObjectMeta { return &d.Metadata }

// Validate implements Object; a Denial is read-only.
func (d *Denial) Validate() FieldErrors {
	return FieldErrors{{Path: "kind", Msg: "Denial is read-only: proxies report denials"}}
}
