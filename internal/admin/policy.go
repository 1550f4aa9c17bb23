package admin

// policyRoutes registers the policy routes the dashboard reads (owned by
// the policy summary work):
//
//	GET  /v1/policy/summary[?namespace=NS]  -> PolicySummaryList
//	POST /v1/policy/explain                 policycheck.ExplainRequest -> policycheck.ExplainResult
func (s *Server) policyRoutes() {}
