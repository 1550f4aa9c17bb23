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

// EdgeSource lists the edges of the service graph that proxies reported:
// those whose namespace include accepts (nil: every namespace) with
// requests within the duration (0: the whole retention, 24 hours).
type EdgeSource func(include func(namespace string) bool, within time.Duration) []*config.Edge

// edges serves GET /v1/edges[?namespace=NS][&since=DURATION]: with a
// namespace, the operator needs list on Edge in it; without, the answer
// holds the edges of every namespace where the operator may list them
// (403 when there is none). An edge's namespace is its destination's (for
// an egress host, its source's).
func (s *Server) edges(w http.ResponseWriter, r *http.Request, op string) error {
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
		if err != nil || d <= 0 || d > maxEdgeSince {
			return badRequest(fmt.Sprintf("since: %q: want a positive duration of at most %s, such as 15m", v, maxEdgeSince))
		}
		within = d
	}
	include, err := s.listScope(r.Context(), op, config.KindEdge, ns)
	if err != nil {
		return err
	}
	if s.cfg.Edges == nil {
		return &apiError{status: http.StatusNotImplemented, msg: "this server keeps no service graph"}
	}
	es := s.cfg.Edges(include, within)
	objs := make([]config.Object, len(es))
	for i, e := range es {
		objs[i] = e
	}
	b, err := config.MarshalList(objs, false)
	if err != nil {
		return err
	}
	return writeRaw(w, http.StatusOK, b)
}

// maxEdgeSince bounds the since filter of GET /v1/edges: the graph keeps
// 24 hours.
const maxEdgeSince = 24 * time.Hour

// listScope authorizes listing kind in ns ("" for every namespace the
// operator may list it in) and returns the filter of namespaces.
func (s *Server) listScope(ctx context.Context, op, kind, ns string) (func(string) bool, error) {
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

// edgeObjects lists the edges of ns ("" for all) for the generic get and
// list routes.
func (s *Server) edgeObjects(ns string) ([]config.Object, error) {
	if s.cfg.Edges == nil {
		return nil, &apiError{status: http.StatusNotImplemented, msg: "this server keeps no service graph"}
	}
	var include func(string) bool
	if ns != "" {
		include = func(n string) bool { return n == ns }
	}
	es := s.cfg.Edges(include, 0)
	objs := make([]config.Object, len(es))
	for i, e := range es {
		objs[i] = e
	}
	return objs, nil
}

// Edges returns the raw JSON list of the service graph's edges in
// namespace ("" for every namespace the operator may list them in) with
// requests within since (0 for the whole retention, 24 hours).
func (c *Client) Edges(ctx context.Context, namespace string, since time.Duration) ([]byte, error) {
	var params []string
	if namespace != "" {
		params = append(params, "namespace="+url.QueryEscape(namespace))
	}
	if since > 0 {
		params = append(params, "since="+url.QueryEscape(since.String()))
	}
	p := "/v1/edges"
	if len(params) > 0 {
		p += "?" + strings.Join(params, "&")
	}
	b, _, err := c.do(ctx, http.MethodGet, p, nil, http.StatusOK)
	return b, err
}
