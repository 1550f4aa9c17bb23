package config

// Kinds of the alerting resources.
const (
	// KindAlertRule is the kind of an AlertRule: what counts as unusual
	// and where to send it.
	KindAlertRule = "AlertRule"
	// KindAlert is the kind of the read-only Alert view: one alert that
	// fired.
	KindAlert = "Alert"
)

// Detectors of an AlertRule (AlertRuleSpec.Detector).
const (
	// DetectorDenialSpike: the denials of one edge (source identity to
	// destination service) in a window jump above a multiple of the edge's
	// own moving baseline.
	DetectorDenialSpike = "DenialSpike"
	// DetectorNewEdge: a source identity calls a destination it was never
	// seen calling before (once per edge, ever).
	DetectorNewEdge = "NewEdge"
	// DetectorAuthFailureBurst: failed TLS handshakes or authentications
	// from one address or one identity reach a threshold within a window.
	DetectorAuthFailureBurst = "AuthFailureBurst"
	// DetectorSVIDExpiry: a connected proxy's SVID expires soon.
	DetectorSVIDExpiry = "SVIDExpiry"
	// DetectorProxyOutOfSync: a connected proxy has not ACKed its latest
	// snapshot for too long.
	DetectorProxyOutOfSync = "ProxyOutOfSync"
	// DetectorThreshold: a metric of the control plane's own Prometheus
	// registry crosses a value.
	DetectorThreshold = "Threshold"
)

// Severities of an AlertRule.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// RedactedSecret is what the control plane's read path shows in place of a
// webhook secret. An AlertRule carrying it is refused at apply, so the
// output of `bulwark get alertrules -o yaml` cannot silently replace a
// secret with the placeholder.
const RedactedSecret = "<redacted>"

// AlertRule says what counts as unusual and where to send it: one
// detector with its parameters, a severity, a cooldown and webhooks. A rule
// in RootNamespace watches the whole mesh; a rule in any other namespace
// only what concerns it (edges whose destination is in the namespace, its
// proxies, failures reported by its proxies). See docs/alerts.md.
type AlertRule struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta    `json:"metadata"`
	Spec     AlertRuleSpec `json:"spec"`
}

// AlertRuleSpec is the body of an AlertRule. Exactly the parameter block
// of Detector may be given; when it is absent its defaults are written in.
type AlertRuleSpec struct {
	// Detector is one of DenialSpike, NewEdge, AuthFailureBurst,
	// SVIDExpiry, ProxyOutOfSync, Threshold. Required.
	Detector string `json:"detector"`
	// The parameters of each detector; only the one named by Detector.
	DenialSpike      *DenialSpikeParams      `json:"denialSpike,omitempty"`
	NewEdge          *NewEdgeParams          `json:"newEdge,omitempty"`
	AuthFailureBurst *AuthFailureBurstParams `json:"authFailureBurst,omitempty"`
	SVIDExpiry       *SVIDExpiryParams       `json:"svidExpiry,omitempty"`
	ProxyOutOfSync   *ProxyOutOfSyncParams   `json:"proxyOutOfSync,omitempty"`
	Threshold        *ThresholdParams        `json:"threshold,omitempty"`
	// Severity is info, warning or critical. Default: warning.
	Severity string `json:"severity,omitempty"`
	// Cooldown: the same alert (this rule and the same subject) does not
	// fire again within it, a Go duration from 0 to 24h. Default: "5m".
	Cooldown string `json:"cooldown,omitempty"`
	// Webhooks get every alert of the rule, signed (at most 8). Default:
	// none (the alert is logged, counted and listed only).
	Webhooks []AlertWebhook `json:"webhooks,omitempty"`
}

// DenialSpikeParams configure the DenialSpike detector.
type DenialSpikeParams struct {
	// Window over which denials of an edge are counted, 1s to 1h.
	// Default: "10s".
	Window string `json:"window,omitempty"`
	// MinDenials is the fewest denials in a window that can fire, 1 to
	// 1,000,000,000. Default: 10.
	MinDenials int64 `json:"minDenials,omitempty"`
	// Factor: the window's denials must exceed Factor times the edge's
	// baseline (an exponentially weighted moving average of its past
	// windows), above 1 and at most 1000. Default: 3.
	Factor float64 `json:"factor,omitempty"`
}

// NewEdgeParams configure the NewEdge detector.
type NewEdgeParams struct {
	// LearningPeriod: edges first seen within this long after the rule was
	// created are learned without an alert, a Go duration from 0 to 720h
	// (30 days). Default: "0s".
	LearningPeriod string `json:"learningPeriod,omitempty"`
}

// AuthFailureBurstParams configure the AuthFailureBurst detector.
type AuthFailureBurstParams struct {
	// Window over which the failures of one address or identity are
	// counted (sliding), 1s to 1h. Default: "1m".
	Window string `json:"window,omitempty"`
	// Threshold is the number of failures within Window that fires, 1 to
	// 1,000,000,000. Default: 20.
	Threshold int64 `json:"threshold,omitempty"`
}

// SVIDExpiryParams configure the SVIDExpiry detector.
type SVIDExpiryParams struct {
	// Before: a connected proxy whose SVID expires within this long fires,
	// 1s to 24h. Default: "5m".
	Before string `json:"before,omitempty"`
}

// ProxyOutOfSyncParams configure the ProxyOutOfSync detector.
type ProxyOutOfSyncParams struct {
	// After: a connected proxy whose ACKed snapshot version has lagged the
	// version sent to it for this long fires, 1s to 24h. Default: "1m".
	After string `json:"after,omitempty"`
}

// Comparison operators of a Threshold rule.
const (
	OpGreater      = ">"
	OpGreaterEqual = ">="
	OpLess         = "<"
	OpLessEqual    = "<="
	OpEqual        = "=="
	OpNotEqual     = "!="
)

// ThresholdParams configure the Threshold detector. Each series of Metric
// whose labels include Labels is compared on its own, and is the subject
// of its alert.
type ThresholdParams struct {
	// Metric is the name of a metric of the control plane's registry
	// (counter, gauge or untyped; "<histogram>_count" and "_sum" too).
	// Required.
	Metric string `json:"metric"`
	// Labels a series must carry (all of them). Default: none (every
	// series).
	Labels map[string]string `json:"labels,omitempty"`
	// Rate compares the per-second rate of the series between two
	// evaluations (a counter reset counts from 0) instead of its value.
	// Default: false.
	Rate bool `json:"rate,omitempty"`
	// Op is one of >, >=, <, <=, ==, !=. Required.
	Op string `json:"op"`
	// Value is compared with the series. Required.
	Value *float64 `json:"value"`
	// For: the comparison must hold at every evaluation for this long
	// before the alert fires, 0 to 24h. Default: "0s" (at once).
	For string `json:"for,omitempty"`
}

// AlertWebhook is one receiver of a rule's alerts: each alert is POSTed as
// JSON (an Alert document), signed with HMAC-SHA256 over
// "<timestamp>.<body>" (docs/alerts.md says how to verify it), retried with
// exponential backoff. Redirects are not followed.
type AlertWebhook struct {
	// URL to POST to: https://, or http:// only to a loopback host
	// (localhost, 127.0.0.0/8, ::1). No user info or fragment. Required.
	URL string `json:"url"`
	// Secret is the HMAC key, 16 to 1024 bytes. Required. It is stored by
	// the control plane and never shown: every read shows RedactedSecret
	// in its place, and logs never carry it.
	Secret string `json:"secret"`
	// Timeout bounds each delivery attempt, 100ms to 30s. Default: "5s".
	Timeout string `json:"timeout,omitempty"`
}

// GetTypeMeta implements Object.
func (r *AlertRule) GetTypeMeta() *TypeMeta { return &r.TypeMeta }

// GetMetadata implements Object.
func (r *AlertRule) GetMetadata() *ObjectMeta { return &r.Metadata }

// Redacted returns a copy of r whose webhook secrets are replaced by
// RedactedSecret, for every read path (admin API, CLI, logs).
func (r *AlertRule) Redacted() *AlertRule {
	c := *r
	c.Spec.Webhooks = make([]AlertWebhook, len(r.Spec.Webhooks))
	for i, w := range r.Spec.Webhooks {
		if w.Secret != "" {
			w.Secret = RedactedSecret
		}
		c.Spec.Webhooks[i] = w
	}
	if r.Spec.Webhooks == nil {
		c.Spec.Webhooks = nil
	}
	return &c
}

// Redact returns o with every secret it holds replaced by a placeholder (a
// copy when there is any: the webhook secrets of an AlertRule, the data
// values of a Secret): what the control plane serves to operators. An
// object without secrets is returned as is.
func Redact(o Object) Object {
	switch r := o.(type) {
	case *AlertRule:
		return r.Redacted()
	case *Secret:
		return r.Redacted()
	}
	return o
}

// Alert is the read-only view of one alert that fired, as `bulwark get
// alerts` lists it and webhooks receive it. Its metadata.namespace is its
// rule's namespace and metadata.name a unique id ("a-" and 16 hex digits).
// The control plane keeps the last 1000 alerts in memory: they do not
// survive its restart.
type Alert struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Status   AlertStatus `json:"status"`
}

// AlertStatus is what fired.
type AlertStatus struct {
	// Rule is "namespace/name" of the AlertRule.
	Rule     string `json:"rule"`
	Detector string `json:"detector"`
	Severity string `json:"severity"`
	// Subject is what the alert is about: an edge ("<source> -> <dest>"),
	// an address, an identity, a proxy ("namespace/instance") or a metric
	// series.
	Subject string `json:"subject"`
	// Source is the SPIFFE ID of the caller (edges, identities);
	// Destination the called service ("namespace/name") or egress host;
	// Address a remote IP; Proxy a proxy instance ("namespace/instance").
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
	Address     string `json:"address,omitempty"`
	Proxy       string `json:"proxy,omitempty"`
	// Count is what was counted: denials in the window, failures in the
	// window; 0 for the other detectors.
	Count int64 `json:"count,omitempty"`
	// Baseline is the edge's moving average of denials per window
	// (DenialSpike).
	Baseline float64 `json:"baseline,omitempty"`
	// Value is the metric's value or rate (Threshold), or the seconds left
	// (SVIDExpiry) or lagging (ProxyOutOfSync).
	Value float64 `json:"value,omitempty"`
	// FiredAt is when it fired, RFC 3339 with fractional seconds.
	FiredAt string `json:"firedAt"`
	// Summary says it in one sentence.
	Summary string `json:"summary"`
}

// GetTypeMeta implements Object.
func (a *Alert) GetTypeMeta() *TypeMeta { return &a.TypeMeta }

// GetMetadata implements Object.
func (a *Alert) GetMetadata() *ObjectMeta { return &a.Metadata }

// Validate implements Object; an Alert is read-only.
func (a *Alert) Validate() FieldErrors {
	return FieldErrors{{Path: "kind", Msg: "Alert is read-only: AlertRules fire alerts"}}
}
