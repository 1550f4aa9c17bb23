package config

// KindEdge is the kind of the read-only Edge view of the service graph.
const KindEdge = "Edge"

// Edge is the read-only view of one edge of the service graph, as proxies
// observe it and `bulwark get edges`, `bulwark graph` and `bulwark policy
// recommend` read it: the requests of one source identity to one
// destination service with one method and path template, over the asked
// window. Its metadata.namespace is the destination's namespace and
// metadata.name a stable digest of the edge's key (source, destination,
// method, path), so the same edge keeps its name.
type Edge struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Status   EdgeStatus `json:"status"`
}

// EdgeStatus is what the control plane knows of an Edge.
type EdgeStatus struct {
	// Source is the caller's SPIFFE ID; SourceService its service,
	// "namespace/name", when the identity is a mesh workload's.
	Source        string `json:"source"`
	SourceService string `json:"sourceService,omitempty"`
	// Destination is the called service, "namespace/name", or an egress
	// host ("host:port").
	Destination string `json:"destination"`
	Method      string `json:"method"`
	// Path is the path template: the normalized path with identifier-like
	// segments replaced by "*" ("" for a TCP tunnel).
	Path string `json:"path"`
	// Requests counts the requests in the window; Errors those answered
	// 5xx; Denied those denied (401/403 by a proxy); DryRunDenied those a
	// dryRun policy would have denied.
	Requests     int64 `json:"requests"`
	Errors       int64 `json:"errors"`
	Denied       int64 `json:"denied"`
	DryRunDenied int64 `json:"dryRunDenied,omitempty"`
	// RPS is Requests per second over the window.
	RPS float64 `json:"rps"`
	// P50MS and P99MS are latency percentiles in milliseconds, estimated
	// from the reported histograms (0 without data).
	P50MS float64 `json:"p50ms"`
	P99MS float64 `json:"p99ms"`
	// MTLS says whether every request came over mTLS with a verified SVID.
	MTLS bool `json:"mtls"`
	// FirstSeen and LastSeen are RFC 3339 times (fractional seconds).
	FirstSeen string `json:"firstSeen"`
	LastSeen  string `json:"lastSeen"`
}

// GetTypeMeta implements Object.
func (e *Edge) GetTypeMeta() *TypeMeta { return &e.TypeMeta }

// GetMetadata implements Object.
func (e *Edge) GetMetadata() *ObjectMeta { return &e.Metadata }

// Validate implements Object; an Edge is read-only.
func (e *Edge) Validate() FieldErrors {
	return FieldErrors{{Path: "kind", Msg: "Edge is read-only: proxies report edges"}}
}
