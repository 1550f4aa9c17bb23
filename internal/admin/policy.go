package admin

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

// PolicySummaryList is the answer of GET /v1/policy/summary.
type PolicySummaryList struct {
	Items []policycheck.PolicySummary `json:"items"`
}

// summaryWindow is how far back GET /v1/policy/summary looks at the
// service graph.
const summaryWindow = 15 * time.Minute

// policyRoutes registers the policy routes the dashboard reads:
//
//	GET  /v1/policy/summary[?namespace=NS]  -> PolicySummaryList
//	POST /v1/policy/explain                 policycheck.Case -> policycheck.ExplainResult
func (s *Server) policyRoutes() {
	s.mux.Handle("GET /v1/policy/summary", s.operator(s.policySummary))
	s.mux.Handle("POST /v1/policy/explain", s.operator(s.policyExplain))
}

// policySummary describes the policies op may list and what they did to
// the traffic of the last 15 minutes. Every policy of the mesh decides
// (root-namespace policies too), but the answer holds only the policies,
// and the edges, of namespaces op may list them in.
func (s *Server) policySummary(w http.ResponseWriter, r *http.Request, op string) error {
	q := r.URL.Query()
	for k := range q {
		if k != "namespace" {
			return badRequest(k + ": unknown query parameter (known: namespace)")
		}
	}
	ns := q.Get("namespace")
	if ns != "" {
		if err := identity.ValidateName(ns); err != nil {
			return badRequest("namespace: " + err.Error())
		}
	}
	includePolicy, err := s.listScope(r.Context(), op, config.KindAuthorizationPolicy, ns)
	if err != nil {
		return err
	}
	a, err := s.authorizer(r.Context(), op)
	if err != nil {
		return err
	}
	edgeNS, edgesEverywhere := a.Namespaces(op, config.VerbList, config.KindEdge)
	includeEdge := func(n string) bool {
		return (ns == "" || n == ns) && (edgesEverywhere || slices.Contains(edgeNS, n))
	}
	policies, err := listAs[*config.AuthorizationPolicy](r.Context(), s.cfg.Resources, config.KindAuthorizationPolicy)
	if err != nil {
		return err
	}
	var edges []*config.Edge
	if s.cfg.Edges != nil {
		edges = s.cfg.Edges(includeEdge, summaryWindow)
	}
	out := PolicySummaryList{Items: []policycheck.PolicySummary{}}
	for i, sum := range policycheck.Summarize(policies, edges) {
		if includePolicy == nil || includePolicy(policies[i].Metadata.Namespace) {
			out.Items = append(out.Items, sum)
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// policyExplain decides one request with the live policies and explains
// the decision, as `bulwark policy explain` does. It needs list on
// AuthorizationPolicy in the destination's namespace.
func (s *Server) policyExplain(w http.ResponseWriter, r *http.Request, op string) error {
	var c policycheck.Case
	if err := decodeBody(r, &c); err != nil {
		return err
	}
	if c.Method == "" {
		c.Method = http.MethodGet
	}
	dest, err := identity.ParseServiceRef(c.To, "")
	if err != nil {
		return badRequest("to: " + err.Error())
	}
	if err := s.authorize(r.Context(), op, config.VerbList, config.KindAuthorizationPolicy, dest.Namespace); err != nil {
		return err
	}
	if err := c.Check(s.cfg.TrustDomain); err != nil {
		return badRequest(err.Error())
	}
	policies, err := listAs[*config.AuthorizationPolicy](r.Context(), s.cfg.Resources, config.KindAuthorizationPolicy)
	if err != nil {
		return err
	}
	ex, err := policycheck.Explain(policies, c)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	return writeJSON(w, http.StatusOK, policycheck.NewExplainResult(c, "the live mesh", nil, ex))
}
