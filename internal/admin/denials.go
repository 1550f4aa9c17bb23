package admin

import (
	"context"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// DenialSource lists the denials proxies reported, most recently seen
// first: those whose destination's namespace include accepts (nil: every
// namespace) and that were last seen within the duration (0: any time).
// They are served as a view (views.go) on GET /v1/denials.
type DenialSource func(include func(namespace string) bool, within time.Duration) []*config.Denial

// Denials returns the raw JSON list of the denials proxies reported in
// namespace ("" for every namespace the operator may list them in), last
// seen within since (0 for any time).
func (c *Client) Denials(ctx context.Context, namespace string, since time.Duration) ([]byte, error) {
	return c.listView(ctx, "denials", namespace, since)
}
