package admin

import (
	"context"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// EdgeSource lists the edges of the service graph that proxies reported:
// those whose namespace include accepts (nil: every namespace) with
// requests within the duration (0: the whole retention, 24 hours). An
// edge's namespace is its destination's (for an egress host, its
// source's). They are served as a view (views.go) on GET /v1/edges.
type EdgeSource func(include func(namespace string) bool, within time.Duration) []*config.Edge

// Edges returns the raw JSON list of the service graph's edges in
// namespace ("" for every namespace the operator may list them in) with
// requests within since (0 for the whole retention, 24 hours).
func (c *Client) Edges(ctx context.Context, namespace string, since time.Duration) ([]byte, error) {
	return c.listView(ctx, "edges", namespace, since)
}
