// Package jointoken is the join token attestor: one-time tokens bound to one
// identity and one service, stored only as a SHA-256 hash of their secret,
// expiring, and consumed by a compare-and-swap in the store so a token is
// accepted at most once even with concurrent attempts. Every failure returns
// attest.ErrRejected; the reason is only logged.
package jointoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// tokenKeyPrefix is the store prefix of token records, keyed by the
// SHA-256 of the token's secret.
const tokenKeyPrefix = "/tokens/"

// Join token lifetimes.
const (
	// DefaultTokenTTL is the lifetime of a token when none is asked for.
	DefaultTokenTTL = 10 * time.Minute
	// MaxTokenTTL is the longest lifetime a token may have.
	MaxTokenTTL = 7 * 24 * time.Hour
)

// Config configures JoinTokens.
type Config struct {
	// Store keeps the hashed tokens. Required.
	Store store.Store
	// Clock, default clock.Real().
	Clock clock.Clock
	// Logger, default discard.
	Logger *slog.Logger
}

// JoinTokens creates and redeems one-time join tokens.
type JoinTokens struct {
	store  store.Store
	clock  clock.Clock
	logger *slog.Logger
}

var _ attest.Attestor = (*JoinTokens)(nil)

// New returns the join token attestor.
func New(cfg Config) (*JoinTokens, error) {
	if cfg.Store == nil {
		return nil, errors.New("join tokens: store is required")
	}
	return &JoinTokens{store: cfg.Store, clock: clock.OrReal(cfg.Clock), logger: telemetry.OrDiscard(cfg.Logger)}, nil
}

// tokenRecord is what the store keeps of a token: never the token itself.
type tokenRecord struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	Account   string `json:"account"`
	// Labels are bound to the instance that redeems the token.
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedBy string            `json:"createdBy,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
	ExpiresAt time.Time         `json:"expiresAt"`
	UsedAt    time.Time         `json:"usedAt,omitzero"`
}

// CreateRequest describes a token to create.
type CreateRequest struct {
	Service identity.ServiceRef
	// Account of the identity; default: the service name.
	Account string
	// TTL; default DefaultTokenTTL, at most MaxTokenTTL.
	TTL time.Duration
	// Pin is the root CA pin to embed, "" for none.
	Pin string
	// CreatedBy names the operator, for the record.
	CreatedBy string
	// Labels to bind to the workload instance that redeems the token
	// (validated by the caller, see config.ValidateLabel).
	Labels map[string]string
}

// Create makes a token and stores its hash. The token is returned once and
// never stored or logged.
func (j *JoinTokens) Create(ctx context.Context, req CreateRequest) (token string, expires time.Time, err error) {
	if err := identity.ValidateName(req.Service.Namespace); err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: namespace %v", err)
	}
	if err := identity.ValidateName(req.Service.Name); err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: service %v", err)
	}
	if req.Account == "" {
		req.Account = req.Service.Name
	}
	if err := identity.ValidateName(req.Account); err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: identity %v", err)
	}
	switch {
	case req.TTL == 0:
		req.TTL = DefaultTokenTTL
	case req.TTL < 0 || req.TTL > MaxTokenTTL:
		return "", time.Time{}, fmt.Errorf("create join token: ttl %s must be between 0 and %s", req.TTL, MaxTokenTTL)
	}
	secret := make([]byte, attest.SecretLen)
	if _, err := rand.Read(secret); err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	encoded := base64.RawURLEncoding.EncodeToString(secret)
	token = attest.TokenPrefix + "." + encoded
	if req.Pin != "" {
		token += "." + req.Pin
	}
	if _, err := attest.ParseToken(token); err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	now := j.clock.Now()
	rec := tokenRecord{
		Namespace: req.Service.Namespace,
		Service:   req.Service.Name,
		Account:   req.Account,
		Labels:    req.Labels,
		CreatedBy: req.CreatedBy,
		CreatedAt: now,
		ExpiresAt: now.Add(req.TTL),
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	key := tokenKey(encoded)
	if _, err := j.store.Txn(ctx, []store.Cmp{{Key: key}}, []store.Op{{Key: key, Value: val}}); err != nil {
		return "", time.Time{}, fmt.Errorf("create join token: %w", err)
	}
	return token, rec.ExpiresAt, nil
}

// Attest redeems a join token: it must exist, be unused and unexpired, and
// be bound to ev.Service. It is marked used atomically, so two concurrent
// attempts with the same token cannot both succeed.
func (j *JoinTokens) Attest(ctx context.Context, ev attest.Evidence) (attest.Result, error) {
	res, err := j.redeem(ctx, ev)
	if err != nil {
		if ctx.Err() != nil {
			return attest.Result{}, ctx.Err()
		}
		j.logger.Warn("join token rejected", telemetry.KeyService, ev.Service.String(), telemetry.KeyReason, err.Error())
		return attest.Result{}, fmt.Errorf("%w: invalid, expired or already used join token", attest.ErrRejected)
	}
	return res, nil
}

func (j *JoinTokens) redeem(ctx context.Context, ev attest.Evidence) (attest.Result, error) {
	p, err := attest.ParseToken(ev.JoinToken)
	if err != nil {
		return attest.Result{}, err
	}
	key := tokenKey(p.Secret)
	kv, err := j.store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return attest.Result{}, errors.New("unknown token")
	}
	if err != nil {
		return attest.Result{}, fmt.Errorf("read token: %w", err)
	}
	var rec tokenRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return attest.Result{}, fmt.Errorf("corrupt token record: %w", err)
	}
	now := j.clock.Now()
	switch {
	case !rec.UsedAt.IsZero():
		return attest.Result{}, fmt.Errorf("token already used at %s", rec.UsedAt.Format(time.RFC3339))
	case !now.Before(rec.ExpiresAt):
		return attest.Result{}, fmt.Errorf("token expired at %s", rec.ExpiresAt.Format(time.RFC3339))
	case rec.Namespace != ev.Service.Namespace || rec.Service != ev.Service.Name:
		// Not consumed: the token stays usable by the service it is for.
		return attest.Result{}, fmt.Errorf("token is for service %s/%s", rec.Namespace, rec.Service)
	}
	rec.UsedAt = now
	val, err := json.Marshal(rec)
	if err != nil {
		return attest.Result{}, err
	}
	_, err = j.store.Txn(ctx, []store.Cmp{{Key: key, ModRevision: kv.ModRevision}}, []store.Op{{Key: key, Value: val}})
	if errors.Is(err, store.ErrConflict) {
		return attest.Result{}, errors.New("token used concurrently")
	}
	if err != nil {
		return attest.Result{}, fmt.Errorf("consume token: %w", err)
	}
	return attest.Result{
		Service: identity.ServiceRef{Namespace: rec.Namespace, Name: rec.Service},
		Account: rec.Account,
		Labels:  rec.Labels,
	}, nil
}

// Prune deletes the records of tokens that expired before now; used tokens
// are kept until they expire so a replay is reported as "already used".
func (j *JoinTokens) Prune(ctx context.Context) (int, error) {
	kvs, _, err := j.store.List(ctx, tokenKeyPrefix)
	if err != nil {
		return 0, fmt.Errorf("prune join tokens: %w", err)
	}
	now := j.clock.Now()
	n := 0
	for _, kv := range kvs {
		var rec tokenRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil || now.After(rec.ExpiresAt) {
			_, err := j.store.Txn(ctx, []store.Cmp{{Key: kv.Key, ModRevision: kv.ModRevision}}, []store.Op{{Key: kv.Key, Delete: true}})
			if err != nil && !errors.Is(err, store.ErrConflict) {
				return n, fmt.Errorf("prune join tokens: %w", err)
			}
			if err == nil {
				n++
			}
		}
	}
	return n, nil
}

func tokenKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return tokenKeyPrefix + hex.EncodeToString(sum[:])
}
