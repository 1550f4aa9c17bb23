package ca

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// JWT-SVID limits.
const (
	// JWTSVIDTTL is the lifetime of a JWT-SVID (SPIRE's default).
	JWTSVIDTTL = 5 * time.Minute
	// MaxAudiences bounds the audiences of one JWT-SVID.
	MaxAudiences = 16
	// maxAudienceLen bounds one audience.
	maxAudienceLen = 256
)

const (
	keyJWT       = "/ca/jwt/key"
	keyPrefixJWT = "jwt-svid"
)

// ErrBadAudience: a JWT-SVID request without a valid audience.
var ErrBadAudience = errors.New("ca: invalid jwt-svid audience")

// jwtRecord is the stored form of the JWT-SVID signing key: its id in the
// key manager and its JWK key id.
type jwtRecord struct {
	KeyID string `json:"keyID"`
	KID   string `json:"kid"`
}

// JWTAuthority signs JWT-SVIDs with a control-plane key (ES256) that never
// leaves the key manager; its public key, as a JWKS, is the trust domain's
// JWT bundle, pushed to proxies in snapshots.
type JWTAuthority struct {
	td     spiffeid.TrustDomain
	clock  clock.Clock
	signer crypto.Signer
	kid    string
	jwks   []byte
	// signed is Config.Signed.
	signed func(kind string, err error)
}

// NewJWTAuthority loads the JWT-SVID signing key of cfg's trust domain, or
// creates it on the first start.
func NewJWTAuthority(ctx context.Context, cfg Config) (*JWTAuthority, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("jwt authority config: %w", err)
	}
	for range maxStartAttempts {
		a, err := loadJWTAuthority(ctx, cfg)
		if !errors.Is(err, store.ErrNotFound) {
			if a != nil {
				a.signed = cfg.Signed
			}
			return a, err
		}
		c := &custody{store: cfg.Store, keys: cfg.Keys, logger: cfg.Logger}
		keyID, err := c.newKeyID(ctx, keyPrefixJWT)
		if err != nil {
			return nil, fmt.Errorf("create jwt-svid key: %w", err)
		}
		signer, err := cfg.Keys.GenerateKey(ctx, keyID)
		if err != nil {
			return nil, fmt.Errorf("create jwt-svid key: %w", err)
		}
		kid, err := keyIDOf(signer.Public())
		if err != nil {
			return nil, err
		}
		value, err := json.Marshal(jwtRecord{KeyID: keyID, KID: kid})
		if err != nil {
			return nil, err
		}
		_, err = cfg.Store.Txn(ctx, []store.Cmp{{Key: keyJWT}}, []store.Op{{Key: keyJWT, Value: value}})
		if errors.Is(err, store.ErrConflict) {
			if derr := cfg.Keys.Delete(ctx, keyID); derr != nil {
				cfg.Logger.Warn("delete unused jwt-svid key", telemetry.KeyName, keyID, telemetry.KeyErr, derr)
			}
			continue // another control plane created it: load that one
		}
		if err != nil {
			return nil, fmt.Errorf("create jwt-svid key: %w", err)
		}
		cfg.Logger.Info("jwt-svid signing key created", telemetry.KeyName, kid)
	}
	return nil, fmt.Errorf("jwt-svid key: record %s changed concurrently %d times", keyJWT, maxStartAttempts)
}

// loadJWTAuthority loads the stored key; a missing record is
// store.ErrNotFound.
func loadJWTAuthority(ctx context.Context, cfg Config) (*JWTAuthority, error) {
	kv, err := cfg.Store.Get(ctx, keyJWT)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("load jwt-svid key: %w", err)
	}
	var rec jwtRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return nil, fmt.Errorf("load jwt-svid key: %w %s: %v", ErrCorruptRecord, keyJWT, err)
	}
	if err := keymanager.ValidateID(rec.KeyID); err != nil {
		return nil, fmt.Errorf("load jwt-svid key: %w %s: %v", ErrCorruptRecord, keyJWT, err)
	}
	signer, err := cfg.Keys.GetKey(ctx, rec.KeyID)
	if err != nil {
		return nil, fmt.Errorf("load jwt-svid key %q: %w", rec.KeyID, err)
	}
	kid, err := keyIDOf(signer.Public())
	if err != nil {
		return nil, err
	}
	if kid != rec.KID {
		return nil, fmt.Errorf("load jwt-svid key %q: %w", rec.KeyID, ErrKeyMismatch)
	}
	pub, err := jwk.PublicKeyOf(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("jwt-svid public key: %w", err)
	}
	for _, kv := range [][2]any{{jwk.KeyIDKey, kid}, {jwk.KeyUsageKey, "jwt-svid"}, {jwk.AlgorithmKey, jwa.ES256()}} {
		if err := pub.Set(kv[0].(string), kv[1]); err != nil {
			return nil, fmt.Errorf("jwt-svid public key: %w", err)
		}
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("jwt-svid public key: %w", err)
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("jwt-svid public key: %w", err)
	}
	return &JWTAuthority{td: cfg.TrustDomain, clock: cfg.Clock, signer: signer, kid: kid, jwks: jwks}, nil
}

// keyIDOf is the JWK key id of pub: the base64url SHA-256 of its SPKI,
// cut to 128 bits.
func keyIDOf(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("jwt-svid key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:16]), nil
}

// JWKS returns the JWT bundle: the public signing key as a JWKS document.
// The slice must not be modified.
func (a *JWTAuthority) JWKS() []byte { return a.jwks }

// SignJWTSVID returns a JWT-SVID for id, bound to audience, valid for
// JWTSVIDTTL.
func (a *JWTAuthority) SignJWTSVID(id spiffeid.ID, audience []string) (string, error) {
	if err := checkMember(id, a.td); err != nil {
		return "", fmt.Errorf("sign jwt-svid: %w", err)
	}
	if len(audience) == 0 || len(audience) > MaxAudiences {
		return "", fmt.Errorf("sign jwt-svid: %w: want 1 to %d audiences, got %d", ErrBadAudience, MaxAudiences, len(audience))
	}
	for _, aud := range audience {
		if aud == "" || len(aud) > maxAudienceLen {
			return "", fmt.Errorf("sign jwt-svid: %w: each audience must be 1 to %d bytes", ErrBadAudience, maxAudienceLen)
		}
	}
	now := a.clock.Now()
	tok, err := jwt.NewBuilder().
		Subject(id.String()).
		Audience(audience).
		IssuedAt(now).
		Expiration(now.Add(JWTSVIDTTL)).
		Build()
	if err != nil {
		return "", fmt.Errorf("sign jwt-svid: %w", err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, a.kid); err != nil {
		return "", fmt.Errorf("sign jwt-svid: %w", err)
	}
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return "", fmt.Errorf("sign jwt-svid: %w", err)
	}
	token, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), a.signer, jws.WithProtectedHeaders(hdr)))
	signed(a.signed, SignatureJWTSVID, err)
	if err != nil {
		return "", fmt.Errorf("sign jwt-svid: %w", err)
	}
	return string(token), nil
}
