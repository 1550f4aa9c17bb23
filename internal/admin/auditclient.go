package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/bulwarkmesh/bulwark/internal/audit"
)

// AuditEntries returns up to limit audit entries: the last ones when
// after is nil, otherwise those after seq *after, oldest first.
func (c *Client) AuditEntries(ctx context.Context, after *uint64, limit int) (AuditList, error) {
	q := url.Values{}
	q.Set("limit", strconv.Itoa(limit))
	if after != nil {
		q.Set("after", strconv.FormatUint(*after, 10))
	}
	var out AuditList
	body, _, err := c.do(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), nil, http.StatusOK)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("decode audit entries: %w", err)
	}
	return out, nil
}

// AuditVerify has the control plane verify its audit log.
func (c *Client) AuditVerify(ctx context.Context) (audit.Report, error) {
	var out audit.Report
	body, _, err := c.do(ctx, http.MethodGet, "/v1/audit/verify", nil, http.StatusOK)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("decode audit report: %w", err)
	}
	return out, nil
}

// AuditExport returns the audit log export as the control plane sent it
// (JSON, see audit.Export): the bytes are kept as they are, for offline
// verification.
func (c *Client) AuditExport(ctx context.Context) ([]byte, error) {
	body, _, err := c.do(ctx, http.MethodGet, "/v1/audit/export", nil, http.StatusOK)
	return body, err
}
