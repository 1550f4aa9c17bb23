package admin

import (
	"context"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// AlertSource lists the alerts that fired, newest first: those whose
// namespace (their rule's) include accepts (nil: every namespace) and that
// fired within the duration (0: any time). An alert's namespace is its
// rule's, so the alerts of mesh-wide rules are in bulwark-system. They are
// served as a view (views.go) on GET /v1/alerts.
type AlertSource func(include func(namespace string) bool, within time.Duration) []*config.Alert

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
	return c.listView(ctx, "alerts", namespace, since)
}
