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

// A view is a read-only kind the control plane keeps in memory from what
// proxies report: denials, the service graph's edges, fired alerts. Each
// is served on GET /v1/<plural>[?namespace=NS][&since=DURATION]: with a
// namespace, the operator needs list on the kind in it; without, the
// answer holds the objects of every namespace where the operator may list
// them (403 when there is none). The generic get and list routes serve
// them too, without the since filter.
type view struct {
	kind string
	// maxSince bounds the since filter.
	maxSince time.Duration
	// none is the 501 message of a server without this view.
	none string
	// list is nil when the server keeps no such view.
	list func(include func(namespace string) bool, within time.Duration) []config.Object
}

// viewSource turns a typed source of a view into a list of Objects; nil
// stays nil.
func viewSource[T config.Object](src func(include func(namespace string) bool, within time.Duration) []T) func(func(string) bool, time.Duration) []config.Object {
	if src == nil {
		return nil
	}
	return func(include func(string) bool, within time.Duration) []config.Object {
		xs := src(include, within)
		objs := make([]config.Object, len(xs))
		for i, x := range xs {
			objs[i] = x
		}
		return objs
	}
}

// viewOf returns the view of kind, and false when kind is not a view.
func (s *Server) viewOf(kind string) (view, bool) {
	switch kind {
	case config.KindDenial:
		return view{kind: kind, maxSince: maxSince, none: "this server keeps no denials", list: viewSource(s.cfg.Denials)}, true
	case config.KindEdge:
		// The graph keeps 24 hours.
		return view{kind: kind, maxSince: 24 * time.Hour, none: "this server keeps no service graph", list: viewSource(s.cfg.Edges)}, true
	case config.KindAlert:
		return view{kind: kind, maxSince: maxSince, none: "this server keeps no alerts", list: viewSource(s.cfg.Alerts)}, true
	}
	return view{}, false
}

// maxSince bounds the since filter of the denials and alerts views.
const maxSince = 30 * 24 * time.Hour

// serveView returns the handler of GET /v1/<plural> for the view of kind.
func (s *Server) serveView(kind string) func(w http.ResponseWriter, r *http.Request, op string) error {
	return func(w http.ResponseWriter, r *http.Request, op string) error {
		v, _ := s.viewOf(kind)
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
		if val := q.Get("since"); val != "" {
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 || d > v.maxSince {
				return badRequest(fmt.Sprintf("since: %q: want a positive duration of at most %s, such as 15m", val, v.maxSince))
			}
			within = d
		}
		include, err := s.listScope(r.Context(), op, v.kind, ns)
		if err != nil {
			return err
		}
		if v.list == nil {
			return &apiError{status: http.StatusNotImplemented, msg: v.none}
		}
		b, err := config.MarshalList(v.list(include, within), false)
		if err != nil {
			return err
		}
		return writeRaw(w, http.StatusOK, b)
	}
}

// listScope authorizes listing kind in ns ("" for every namespace the
// operator may list it in) and returns the filter of namespaces (nil:
// every namespace).
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

// viewObjects lists the objects of a view in ns ("" for all) for the
// generic get and list routes.
func (s *Server) viewObjects(v view, ns string) ([]config.Object, error) {
	if v.list == nil {
		return nil, &apiError{status: http.StatusNotImplemented, msg: v.none}
	}
	var include func(string) bool
	if ns != "" {
		include = func(n string) bool { return n == ns }
	}
	return v.list(include, 0), nil
}

// listView returns the raw JSON list of a view (plural: "denials",
// "edges", "alerts") in namespace ("" for every namespace the operator may
// list it in) within since (0: no bound).
func (c *Client) listView(ctx context.Context, plural, namespace string, since time.Duration) ([]byte, error) {
	var params []string
	if namespace != "" {
		params = append(params, "namespace="+url.QueryEscape(namespace))
	}
	if since > 0 {
		params = append(params, "since="+url.QueryEscape(since.String()))
	}
	p := "/v1/" + plural
	if len(params) > 0 {
		p += "?" + strings.Join(params, "&")
	}
	b, _, err := c.do(ctx, http.MethodGet, p, nil, http.StatusOK)
	return b, err
}
