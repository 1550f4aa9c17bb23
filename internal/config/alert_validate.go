package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Defaults and bounds of AlertRule.
const (
	DefaultAlertCooldown        = 5 * time.Minute
	MaxAlertCooldown            = 24 * time.Hour
	DefaultDenialSpikeWindow    = 10 * time.Second
	DefaultDenialSpikeMin       = 10
	DefaultDenialSpikeFactor    = 3.0
	MaxDenialSpikeFactor        = 1000.0
	DefaultAuthFailureWindow    = time.Minute
	DefaultAuthFailureThreshold = 20
	DefaultSVIDExpiryBefore     = 5 * time.Minute
	DefaultOutOfSyncAfter       = time.Minute
	DefaultWebhookTimeout       = 5 * time.Second
	MinWebhookTimeout           = 100 * time.Millisecond
	MaxWebhookTimeout           = 30 * time.Second
	MaxAlertWebhooks            = 8
	MinWebhookSecret            = 16
	MaxWebhookSecret            = 1024
	MaxWebhookURL               = 2048
	MaxLearningPeriod           = 30 * 24 * time.Hour
	// maxAlertCount bounds minDenials and threshold.
	maxAlertCount = 1_000_000_000
	// maxThresholdLabels bounds Threshold.Labels.
	maxThresholdLabels = 16
)

// Validate implements Object. It fills in the defaults (metadata.namespace,
// severity warning, cooldown 5m, the detector's parameters, webhook
// timeouts) and refuses:
//
//   - spec.detector: required, one of the Detector constants; only the
//     parameter block of that detector may be given.
//   - durations: Go durations within the bounds written on each field.
//   - spec.denialSpike: minDenials 1 to 1e9, factor above 1 and at most
//     1000.
//   - spec.authFailureBurst.threshold: 1 to 1e9.
//   - spec.threshold: only in RootNamespace (metrics are mesh-wide); metric
//     a Prometheus metric name; labels Prometheus label names (at most 16);
//     op one of > >= < <= == !=; value required and finite.
//   - spec.severity: info, warning or critical.
//   - spec.webhooks: at most 8, no URL twice; url https://, or http:// to a
//     loopback host only, without user info or fragment, not to a
//     link-local, unspecified or multicast address; secret 16 to 1024
//     bytes and not the placeholder RedactedSecret; timeout 100ms to 30s.
func (r *AlertRule) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&r.Metadata, &errs)
	s := &r.Spec
	blocks := []struct {
		detector string
		field    string
		given    bool
	}{
		{DetectorDenialSpike, "denialSpike", s.DenialSpike != nil},
		{DetectorNewEdge, "newEdge", s.NewEdge != nil},
		{DetectorAuthFailureBurst, "authFailureBurst", s.AuthFailureBurst != nil},
		{DetectorSVIDExpiry, "svidExpiry", s.SVIDExpiry != nil},
		{DetectorProxyOutOfSync, "proxyOutOfSync", s.ProxyOutOfSync != nil},
		{DetectorThreshold, "threshold", s.Threshold != nil},
	}
	known := false
	var names []string
	for _, b := range blocks {
		names = append(names, b.detector)
		if b.detector == s.Detector {
			known = true
		}
	}
	switch {
	case s.Detector == "":
		errs.add("spec.detector", "required: one of %s", strings.Join(names, ", "))
	case !known:
		errs.add("spec.detector", "unsupported value %q: must be one of %s", s.Detector, strings.Join(names, ", "))
	}
	for _, b := range blocks {
		if b.given && b.detector != s.Detector {
			errs.add("spec."+b.field, "only allowed with detector %s", b.detector)
		}
	}
	switch s.Detector {
	case DetectorDenialSpike:
		if s.DenialSpike == nil {
			s.DenialSpike = &DenialSpikeParams{}
		}
		validateDenialSpike(s.DenialSpike, &errs)
	case DetectorNewEdge:
		if s.NewEdge == nil {
			s.NewEdge = &NewEdgeParams{}
		}
		defaultDuration("spec.newEdge.learningPeriod", &s.NewEdge.LearningPeriod, 0, 0, MaxLearningPeriod, &errs)
	case DetectorAuthFailureBurst:
		if s.AuthFailureBurst == nil {
			s.AuthFailureBurst = &AuthFailureBurstParams{}
		}
		p := s.AuthFailureBurst
		defaultDuration("spec.authFailureBurst.window", &p.Window, DefaultAuthFailureWindow, time.Second, time.Hour, &errs)
		defaultCount("spec.authFailureBurst.threshold", &p.Threshold, DefaultAuthFailureThreshold, &errs)
	case DetectorSVIDExpiry:
		if s.SVIDExpiry == nil {
			s.SVIDExpiry = &SVIDExpiryParams{}
		}
		defaultDuration("spec.svidExpiry.before", &s.SVIDExpiry.Before, DefaultSVIDExpiryBefore, time.Second, 24*time.Hour, &errs)
	case DetectorProxyOutOfSync:
		if s.ProxyOutOfSync == nil {
			s.ProxyOutOfSync = &ProxyOutOfSyncParams{}
		}
		defaultDuration("spec.proxyOutOfSync.after", &s.ProxyOutOfSync.After, DefaultOutOfSyncAfter, time.Second, 24*time.Hour, &errs)
	case DetectorThreshold:
		if r.Metadata.Namespace != RootNamespace {
			errs.add("spec.detector", "Threshold rules read the control plane's mesh-wide metrics: only allowed in namespace %s", RootNamespace)
		}
		if s.Threshold == nil {
			errs.add("spec.threshold", "required with detector Threshold (metric, op and value)")
		} else {
			validateThreshold(s.Threshold, &errs)
		}
	}
	switch s.Severity {
	case "":
		s.Severity = SeverityWarning
	case SeverityInfo, SeverityWarning, SeverityCritical:
	default:
		errs.add("spec.severity", "unsupported value %q: must be one of %s, %s, %s", s.Severity, SeverityInfo, SeverityWarning, SeverityCritical)
	}
	defaultDuration("spec.cooldown", &s.Cooldown, DefaultAlertCooldown, 0, MaxAlertCooldown, &errs)
	if len(s.Webhooks) > MaxAlertWebhooks {
		errs.add("spec.webhooks", "%d webhooks, at most %d", len(s.Webhooks), MaxAlertWebhooks)
	}
	urls := map[string]bool{}
	for i := range s.Webhooks {
		w := &s.Webhooks[i]
		path := fmt.Sprintf("spec.webhooks[%d]", i)
		if msg := checkWebhookURL(w.URL); msg != "" {
			errs.add(path+".url", "%s", msg)
		} else if urls[w.URL] {
			errs.add(path+".url", "listed twice")
		}
		urls[w.URL] = true
		switch {
		case w.Secret == "":
			errs.add(path+".secret", "required: the HMAC key receivers verify signatures with")
		case w.Secret == RedactedSecret:
			errs.add(path+".secret", "%q is the placeholder the control plane shows: give the secret itself", RedactedSecret)
		case len(w.Secret) < MinWebhookSecret:
			errs.add(path+".secret", "%d bytes: at least %d are required", len(w.Secret), MinWebhookSecret)
		case len(w.Secret) > MaxWebhookSecret:
			errs.add(path+".secret", "%d bytes: at most %d", len(w.Secret), MaxWebhookSecret)
		}
		defaultDuration(path+".timeout", &w.Timeout, DefaultWebhookTimeout, MinWebhookTimeout, MaxWebhookTimeout, &errs)
	}
	return errs
}

// validateDenialSpike fills in and checks the DenialSpike parameters.
func validateDenialSpike(p *DenialSpikeParams, errs *FieldErrors) {
	defaultDuration("spec.denialSpike.window", &p.Window, DefaultDenialSpikeWindow, time.Second, time.Hour, errs)
	defaultCount("spec.denialSpike.minDenials", &p.MinDenials, DefaultDenialSpikeMin, errs)
	switch {
	case p.Factor == 0:
		p.Factor = DefaultDenialSpikeFactor
	case math.IsNaN(p.Factor) || p.Factor <= 1 || p.Factor > MaxDenialSpikeFactor:
		errs.add("spec.denialSpike.factor", "%v is out of range: must be above 1 and at most %v", p.Factor, MaxDenialSpikeFactor)
	}
}

// validateThreshold checks the Threshold parameters.
func validateThreshold(p *ThresholdParams, errs *FieldErrors) {
	if p.Metric == "" {
		errs.add("spec.threshold.metric", "required: the name of a metric of the control plane")
	} else if !promName(p.Metric, true) {
		errs.add("spec.threshold.metric", "%q is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", p.Metric)
	}
	if len(p.Labels) > maxThresholdLabels {
		errs.add("spec.threshold.labels", "%d labels, at most %d", len(p.Labels), maxThresholdLabels)
	}
	for k := range p.Labels {
		if !promName(k, false) || strings.HasPrefix(k, "__") {
			errs.add("spec.threshold.labels", "%q is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)", k)
		}
	}
	switch p.Op {
	case "":
		errs.add("spec.threshold.op", "required: one of >, >=, <, <=, ==, !=")
	case OpGreater, OpGreaterEqual, OpLess, OpLessEqual, OpEqual, OpNotEqual:
	default:
		errs.add("spec.threshold.op", "unsupported value %q: must be one of >, >=, <, <=, ==, !=", p.Op)
	}
	switch {
	case p.Value == nil:
		errs.add("spec.threshold.value", "required: the number the metric is compared with")
	case math.IsNaN(*p.Value) || math.IsInf(*p.Value, 0):
		errs.add("spec.threshold.value", "must be a finite number")
	}
	defaultDuration("spec.threshold.for", &p.For, 0, 0, 24*time.Hour, errs)
}

// promName reports whether s is a Prometheus metric name (colons allowed)
// or label name.
func promName(s string, metric bool) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || (metric && c == ':') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// defaultDuration writes def into *s when it is empty, and otherwise
// checks it is a Go duration from lo to hi.
func defaultDuration(path string, s *string, def, lo, hi time.Duration, errs *FieldErrors) {
	if *s == "" {
		*s = def.String()
		return
	}
	checkDuration(path, *s, lo, hi, errs)
}

// defaultCount writes def into *n when it is 0, and otherwise checks it is
// 1 to maxAlertCount.
func defaultCount(path string, n *int64, def int64, errs *FieldErrors) {
	if *n == 0 {
		*n = def
		return
	}
	if *n < 1 || *n > maxAlertCount {
		errs.add(path, "%d is out of range: must be 1 to %d", *n, maxAlertCount)
	}
}

// checkWebhookURL checks a webhook URL: https, or http to a loopback host
// only; no user info, no fragment.
func checkWebhookURL(s string) string {
	if s == "" {
		return "required"
	}
	if len(s) > MaxWebhookURL {
		return fmt.Sprintf("%d bytes, at most %d", len(s), MaxWebhookURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "not a URL"
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return "must be an https:// URL (http:// only to a loopback host)"
	case u.Host == "" || u.Hostname() == "":
		return "must name a host"
	case u.User != nil:
		return "must not carry user info: put the credential in secret"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "must not have a fragment"
	case u.Opaque != "":
		return "must be an absolute URL with a host"
	}
	if p := u.Port(); p != "" {
		if _, err := net.LookupPort("tcp", p); err != nil || p == "0" {
			return fmt.Sprintf("port %q is not a port number", p)
		}
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil && !WebhookAddrAllowed(a) {
		return fmt.Sprintf("host %s is a cloud metadata service, link-local, unspecified or multicast address: alerts are not sent there", u.Hostname())
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		return "plain http:// is only allowed to a loopback host (localhost, 127.0.0.0/8, ::1): alerts carry identities and must be sent over https://"
	}
	return ""
}

// WebhookAddrAllowed reports whether alerts may be sent to a: not a
// link-local address (169.254.0.0/16, where cloud metadata services
// answer, or fe80::/10), not another known metadata service address
// (fd00:ec2::254, 100.100.100.200, 192.0.0.192), not unspecified (0.0.0.0,
// ::), not multicast. The
// webhook dialer checks it again on every address a host name resolves
// to.
func WebhookAddrAllowed(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast() &&
		!a.IsMulticast() && !a.IsUnspecified() && !metadataAddrs[a]
}

// metadataAddrs are cloud metadata services outside the link-local range:
// AWS's IPv6 endpoint, Alibaba Cloud's, Oracle Cloud's.
var metadataAddrs = map[netip.Addr]bool{
	netip.MustParseAddr("fd00:ec2::254"):   true,
	netip.MustParseAddr("100.100.100.200"): true,
	netip.MustParseAddr("192.0.0.192"):     true,
}

// loopbackHost reports whether host is "localhost" or a loopback address.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// AlertDuration parses a duration an AlertRule's Validate accepted, 0 for
// "" or an invalid one.
func AlertDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0
	}
	return d
}
