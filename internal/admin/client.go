package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
)

// Client calls the admin API with an operator credential.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client for the credential's server.
func NewClient(c *Credential) (*Client, error) {
	pool, err := c.rootPool()
	if err != nil {
		return nil, err
	}
	cert, err := c.tlsCertificate()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig:     mtls.AdminClientConfig(pool, cert),
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
	}
	return &Client{base: strings.TrimRight(c.Server, "/"), http: &http.Client{Transport: tr, Timeout: 60 * time.Second}}, nil
}

// Server returns the admin API URL.
func (c *Client) Server() string { return c.base }

// APIError is an error answer of the admin API.
type APIError struct {
	Status  int
	Message string
	Details []string
}

// Error implements error.
func (e *APIError) Error() string {
	if len(e.Details) == 0 {
		return e.Message
	}
	return e.Message + ":\n  " + strings.Join(e.Details, "\n  ")
}

// ErrUnreachable wraps failures to reach the admin API at all.
var ErrUnreachable = errors.New("cannot reach the control plane's admin API")

func (c *Client) do(ctx context.Context, method, path string, in any, okStatus ...int) ([]byte, int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w at %s: %v", ErrUnreachable, c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	for _, s := range okStatus {
		if resp.StatusCode == s {
			return b, resp.StatusCode, nil
		}
	}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
		eb.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
	}
	return b, resp.StatusCode, &APIError{Status: resp.StatusCode, Message: eb.Error, Details: eb.Details}
}

// WriteOptions change how Apply and Delete write.
type WriteOptions struct {
	// Force writes a policy change even when the control plane's lock-out
	// guard refuses it (a service would lose every caller it has now).
	// An explicit --force on the command line sets it, and bulwark up,
	// which checks its file's Routes against the file itself.
	Force bool
}

// query returns the query string of o, "" or "?force=true".
func (o WriteOptions) query() string {
	if o.Force {
		return "?force=true"
	}
	return ""
}

// Apply applies JSON documents in one transaction.
func (c *Client) Apply(ctx context.Context, docs []json.RawMessage) ([]resource.Result, error) {
	return c.ApplyWithOptions(ctx, docs, WriteOptions{})
}

// ApplyWithOptions is Apply with options.
func (c *Client) ApplyWithOptions(ctx context.Context, docs []json.RawMessage, o WriteOptions) ([]resource.Result, error) {
	b, _, err := c.do(ctx, http.MethodPost, "/v1/apply"+o.query(), ApplyRequest{Items: docs}, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var rl ResultList
	if err := json.Unmarshal(b, &rl); err != nil {
		return nil, fmt.Errorf("decode apply answer: %w", err)
	}
	return rl.Results, nil
}

// Delete deletes resources in one transaction. Resources that did not exist
// are reported with outcome "not found".
func (c *Client) Delete(ctx context.Context, refs []resource.Result) ([]resource.Result, error) {
	return c.DeleteWithOptions(ctx, refs, WriteOptions{})
}

// DeleteWithOptions is Delete with options.
func (c *Client) DeleteWithOptions(ctx context.Context, refs []resource.Result, o WriteOptions) ([]resource.Result, error) {
	b, _, err := c.do(ctx, http.MethodPost, "/v1/delete"+o.query(), DeleteRequest{Items: refs}, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return nil, err
	}
	var rl ResultList
	if err := json.Unmarshal(b, &rl); err != nil {
		return nil, fmt.Errorf("decode delete answer: %w", err)
	}
	return rl.Results, nil
}

// List returns the raw JSON list of a resource type ("policies",
// "proxies", "services") in namespace, "" for all namespaces.
func (c *Client) List(ctx context.Context, plural, namespace string) ([]byte, error) {
	p := "/v1/" + url.PathEscape(plural)
	if namespace != "" {
		p += "?namespace=" + url.QueryEscape(namespace)
	}
	b, _, err := c.do(ctx, http.MethodGet, p, nil, http.StatusOK)
	return b, err
}

// Get returns the raw JSON of one object.
func (c *Client) Get(ctx context.Context, plural, namespace, name string) ([]byte, error) {
	p := "/v1/namespaces/" + url.PathEscape(namespace) + "/" + url.PathEscape(plural) + "/" + url.PathEscape(name)
	b, _, err := c.do(ctx, http.MethodGet, p, nil, http.StatusOK)
	return b, err
}

// CreateToken creates a join token.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (TokenResponse, error) {
	b, _, err := c.do(ctx, http.MethodPost, "/v1/tokens", req, http.StatusCreated)
	if err != nil {
		return TokenResponse{}, err
	}
	var tr TokenResponse
	if err := json.Unmarshal(b, &tr); err != nil {
		return TokenResponse{}, fmt.Errorf("decode token answer: %w", err)
	}
	return tr, nil
}

// CAStatus returns the workload CA's state.
func (c *Client) CAStatus(ctx context.Context) (CAStatus, error) {
	var out CAStatus
	body, _, err := c.do(ctx, http.MethodGet, "/v1/ca", nil, http.StatusOK)
	if err != nil {
		return out, err
	}
	return out, json.Unmarshal(body, &out)
}

// RotateCA starts a root rotation ("root") or rotates the intermediate
// ("intermediate") and returns the CA's state after it.
func (c *Client) RotateCA(ctx context.Context, req RotateRequest) (CAStatus, error) {
	var out CAStatus
	body, _, err := c.do(ctx, http.MethodPost, "/v1/ca/rotate", req, http.StatusOK)
	if err != nil {
		return out, err
	}
	return out, json.Unmarshal(body, &out)
}

// Revoke revokes the proxies of a service, or one instance.
func (c *Client) Revoke(ctx context.Context, req RevokeRequest) (registry.Revoked, error) {
	var out registry.Revoked
	body, _, err := c.do(ctx, http.MethodPost, "/v1/proxies/revoke", req, http.StatusOK)
	if err != nil {
		return out, err
	}
	return out, json.Unmarshal(body, &out)
}

// CreateOperator has the control plane sign a client certificate for a new
// operator's CSR.
func (c *Client) CreateOperator(ctx context.Context, req OperatorRequest) (OperatorResponse, error) {
	var out OperatorResponse
	body, _, err := c.do(ctx, http.MethodPost, "/v1/operators", req, http.StatusCreated)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("decode operator answer: %w", err)
	}
	return out, nil
}
