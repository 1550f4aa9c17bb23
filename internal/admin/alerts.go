package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// AlertSource lists the alerts that fired, newest first: those whose
// namespace (their rule's) include accepts (nil: every namespace) and that
// fired within the duration (0: any time).
type AlertSource func(include func(namespace string) bool, within time.Duration) []*config.Alert

// alerts serves GET /v1/alerts[?namespace=NS][&since=DURATION]: with a
// namespace, the operator needs list on Alert in it; without, the answer
// holds the alerts of every namespace where the operator may list them
// (403 when there is none). An alert's namespace is its rule's, so the
// alerts of mesh-wide rules are in bulwark-system.
func (s *Server) alerts(w http.ResponseWriter, r *http.Request, op string) error {
	q := r.URL.Query()
	for k := range q {
		if k != "namespace" && k != "since" {
			return badRequest(fmt.Sprintf("%s: unknown query parameter (known: namespace, since)", k))
		}
	}
	ns := q.Get("namespace")
	if ns != "" {
		if err := identity.ValidateName(ns); err != nil {
			return badRequest("namespace: " + err.Error())
		}
	}
	var within time.Duration
	if v := q.Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxSince {
			return badRequest(fmt.Sprintf("since: %q: want a positive duration of at most %s, such as 15m", v, maxSince))
		}
		within = d
	}
	include, err := s.kindScope(r.Context(), op, config.KindAlert, ns)
	if err != nil {
		return err
	}
	if s.cfg.Alerts == nil {
		return &apiError{status: http.StatusNotImplemented, msg: "this server keeps no alerts"}
	}
	as := s.cfg.Alerts(include, within)
	objs := make([]config.Object, len(as))
	for i, a := range as {
		objs[i] = a
	}
	b, err := config.MarshalList(objs, false)
	if err != nil {
		return err
	}
	return writeRaw(w, http.StatusOK, b)
}

// kindScope authorizes listing kind in ns ("" for every namespace the
// operator may list it in) and returns the filter of namespaces.
func (s *Server) kindScope(ctx context.Context, op, kind, ns string) (func(string) bool, error) {
	if ns != "" {
		if err := s.authorize(ctx, op, config.VerbList, kind, ns); err != nil {
			return nil, err
		}
		return func(n string) bool { return n == ns }, nil
	}
	namespaces, everywhere, err := s.scope(ctx, op, config.VerbList, kind)
	if err != nil {
		return nil, err
	}
	if everywhere {
		return nil, nil
	}
	set := make(map[string]bool, len(namespaces))
	for _, n := range namespaces {
		set[n] = true
	}
	return func(n string) bool { return set[n] }, nil
}

// alertObjects lists the alerts of ns ("" for all) for the generic get and
// list routes.
func (s *Server) alertObjects(ns string) ([]config.Object, error) {
	if s.cfg.Alerts == nil {
		return nil, &apiError{status: http.StatusNotImplemented, msg: "this server keeps no alerts"}
	}
	var include func(string) bool
	if ns != "" {
		include = func(n string) bool { return n == ns }
	}
	as := s.cfg.Alerts(include, 0)
	objs := make([]config.Object, len(as))
	for i, a := range as {
		objs[i] = a
	}
	return objs, nil
}

// redactAll replaces the secrets of objs (webhook secrets of AlertRules)
// with placeholders: every read of the admin API goes through it.
func redactAll(objs []config.Object) []config.Object {
	for i, o := range objs {
		objs[i] = config.Redact(o)
	}
	return objs
}

// Alerts returns the raw JSON list of the alerts that fired in namespace
// ("" for every namespace the operator may list them in) within since (0
// for any time).
func (c *Client) Alerts(ctx context.Context, namespace string, since time.Duration) ([]byte, error) {
	var params []string
	if namespace != "" {
		params = append(params, "namespace="+url.QueryEscape(namespace))
	}
	if since > 0 {
		params = append(params, "since="+url.QueryEscape(since.String()))
	}
	p := "/v1/alerts"
	if len(params) > 0 {
		p += "?" + strings.Join(params, "&")
	}
	b, _, err := c.do(ctx, http.MethodGet, p, nil, http.StatusOK)
	return b, err
}
