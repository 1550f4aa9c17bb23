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

// DenialSource lists the denials proxies reported, most recently seen
// first: those whose destination's namespace include accepts (nil: every
// namespace) and that were last seen within the duration (0: any time).
type DenialSource func(include func(namespace string) bool, within time.Duration) []*config.Denial

// maxSince bounds the since filter of GET /v1/denials.
const maxSince = 30 * 24 * time.Hour

// denials serves GET /v1/denials[?namespace=NS][&since=DURATION]: with a
// namespace, the operator needs list on Denial in it; without, the answer
// holds the denials of every namespace where the operator may list them
// (403 when there is none).
func (s *Server) denials(w http.ResponseWriter, r *http.Request, op string) error {
	q := r.URL.Query()
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
	include, err := s.denialScope(r.Context(), op, ns)
	if err != nil {
		return err
	}
	if s.cfg.Denials == nil {
		return &apiError{status: http.StatusNotImplemented, msg: "this server keeps no denials"}
	}
	ds := s.cfg.Denials(include, within)
	objs := make([]config.Object, len(ds))
	for i, d := range ds {
		objs[i] = d
	}
	b, err := config.MarshalList(objs, false)
	if err != nil {
		return err
	}
	return writeRaw(w, http.StatusOK, b)
}

// denialScope authorizes listing denials in ns ("" for every namespace the
// operator may list them in) and returns the filter of their namespaces.
func (s *Server) denialScope(ctx context.Context, op, ns string) (func(string) bool, error) {
	if ns != "" {
		if err := s.authorize(ctx, op, config.VerbList, config.KindDenial, ns); err != nil {
			return nil, err
		}
		return func(n string) bool { return n == ns }, nil
	}
	namespaces, everywhere, err := s.scope(ctx, op, config.VerbList, config.KindDenial)
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

// denialObjects lists the denials of ns ("" for all) for the generic get
// and list routes.
func (s *Server) denialObjects(ns string) ([]config.Object, error) {
	if s.cfg.Denials == nil {
		return nil, &apiError{status: http.StatusNotImplemented, msg: "this server keeps no denials"}
	}
	var include func(string) bool
	if ns != "" {
		include = func(n string) bool { return n == ns }
	}
	ds := s.cfg.Denials(include, 0)
	objs := make([]config.Object, len(ds))
	for i, d := range ds {
		objs[i] = d
	}
	return objs, nil
}

// Denials returns the raw JSON list of the denials proxies reported in
// namespace ("" for every namespace the operator may list them in), last
// seen within since (0 for any time).
func (c *Client) Denials(ctx context.Context, namespace string, since time.Duration) ([]byte, error) {
	var params []string
	if namespace != "" {
		params = append(params, "namespace="+url.QueryEscape(namespace))
	}
	if since > 0 {
		params = append(params, "since="+url.QueryEscape(since.String()))
	}
	p := "/v1/denials"
	if len(params) > 0 {
		p += "?" + strings.Join(params, "&")
	}
	b, _, err := c.do(ctx, http.MethodGet, p, nil, http.StatusOK)
	return b, err
}
