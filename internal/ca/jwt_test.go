package ca_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
)

// keyJWT is the store key of the JWT-SVID signing key's record.
const keyJWT = "/ca/jwt/key"

// newJWTFixture returns a fixture whose fake clock starts at the wall
// clock's current second: jwtsvid.ParseAndValidate checks expiry against
// time.Now, so tokens must be issued near it.
func newJWTFixture(t testing.TB) *fixture {
	t.Helper()
	f := newFixture(t)
	f.clock = clock.NewFake(time.Now().UTC().Truncate(time.Second))
	return f
}

func (f *fixture) newJWT(t testing.TB) *ca.JWTAuthority {
	t.Helper()
	a, err := ca.NewJWTAuthority(context.Background(), f.config())
	if err != nil {
		t.Fatalf("NewJWTAuthority: %v", err)
	}
	return a
}

// jwtBundle parses a's JWKS as the trust domain's JWT bundle, the way a
// proxy or a SPIFFE-aware app does.
func jwtBundle(t testing.TB, f *fixture, a *ca.JWTAuthority) *jwtbundle.Bundle {
	t.Helper()
	b, err := jwtbundle.Parse(f.td, a.JWKS())
	if err != nil {
		t.Fatalf("jwtbundle.Parse of JWKS: %v", err)
	}
	return b
}

// jwtParts decodes a compact JWS's header and claims without checking it.
func jwtParts(t testing.TB, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token: got %d parts, want 3", len(parts))
	}
	decode := func(s string) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("token: %v", err)
		}
		return m
	}
	return decode(parts[0]), decode(parts[1])
}

// jwksKeys decodes a JWKS document's keys.
func jwksKeys(t testing.TB, jwks []byte) []map[string]any {
	t.Helper()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	return set.Keys
}

func TestSignJWTSVID(t *testing.T) {
	f := newJWTFixture(t)
	a := f.newJWT(t)
	id := workloadID(t, "default", "web")
	const aud = "spiffe://bulwark.test/ns/default/sa/api"
	now := f.clock.Now()
	token, err := a.SignJWTSVID(id, []string{aud})
	if err != nil {
		t.Fatalf("SignJWTSVID: %v", err)
	}
	bundle := jwtBundle(t, f, a)

	svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{aud})
	if err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
	}
	if svid.ID != id {
		t.Errorf("SVID ID: got %s, want %s", svid.ID, id)
	}
	if want := now.Add(ca.JWTSVIDTTL); !svid.Expiry.Equal(want) {
		t.Errorf("SVID expiry: got %v, want %v (now + %s)", svid.Expiry, want, ca.JWTSVIDTTL)
	}
	if diff := cmp.Diff([]string{aud}, svid.Audience); diff != "" {
		t.Errorf("SVID audience (-want +got):\n%s", diff)
	}
	if _, err := jwtsvid.ParseAndValidate(token, bundle, []string{"spiffe://bulwark.test/ns/default/sa/db"}); err == nil {
		t.Error("jwtsvid.ParseAndValidate for another audience: got no error, want one")
	}
	otherBundle := jwtbundle.New(f.td) // the right trust domain without our key
	if _, err := jwtsvid.ParseAndValidate(token, otherBundle, []string{aud}); err == nil {
		t.Error("jwtsvid.ParseAndValidate with a bundle lacking the key: got no error, want one")
	}

	header, claims := jwtParts(t, token)
	keys := jwksKeys(t, a.JWKS())
	if len(keys) != 1 {
		t.Fatalf("JWKS: got %d keys, want 1", len(keys))
	}
	if got, want := header["kid"], keys[0]["kid"]; got != want || got == "" || got == nil {
		t.Errorf("header kid: got %v, want the JWKS key's kid %v", got, want)
	}
	if got := header["alg"]; got != "ES256" {
		t.Errorf("header alg: got %v, want ES256", got)
	}
	if got := header["typ"]; got != "JWT" {
		t.Errorf("header typ: got %v, want JWT", got)
	}
	if got := claims["sub"]; got != id.String() {
		t.Errorf("claim sub: got %v, want %s", got, id)
	}
	if got, want := claims["exp"], float64(now.Add(5*time.Minute).Unix()); got != want {
		t.Errorf("claim exp: got %v, want %v (now + 5m)", got, want)
	}
	if got, want := claims["iat"], float64(now.Unix()); got != want {
		t.Errorf("claim iat: got %v, want %v", got, want)
	}
	for k, want := range map[string]any{"kty": "EC", "crv": "P-256", "use": "jwt-svid", "alg": "ES256"} {
		if got := keys[0][k]; got != want {
			t.Errorf("JWKS key %s: got %v, want %v", k, got, want)
		}
	}
	if _, ok := keys[0]["d"]; ok {
		t.Error("JWKS key has the private parameter d")
	}
}

func TestSignJWTSVIDAudiences(t *testing.T) {
	f := newJWTFixture(t)
	a := f.newJWT(t)
	id := workloadID(t, "default", "web")
	many := make([]string, ca.MaxAudiences)
	for i := range many {
		many[i] = "aud-" + string(rune('a'+i))
	}
	long := strings.Repeat("a", 256)
	tests := []struct {
		name     string
		audience []string
		// check is an audience the token must validate for.
		check string
	}{
		{"one", []string{"api"}, "api"},
		{"two-checks-second", []string{"api", "db"}, "db"},
		{"max-audiences", many, many[len(many)-1]},
		{"max-length", []string{long}, long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := a.SignJWTSVID(id, tt.audience)
			if err != nil {
				t.Fatalf("SignJWTSVID: %v", err)
			}
			svid, err := jwtsvid.ParseAndValidate(token, jwtBundle(t, f, a), []string{tt.check})
			if err != nil {
				t.Fatalf("jwtsvid.ParseAndValidate for %q: %v", tt.check, err)
			}
			if diff := cmp.Diff(tt.audience, svid.Audience); diff != "" {
				t.Errorf("audience (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSignJWTSVIDRejects(t *testing.T) {
	f := newJWTFixture(t)
	a := f.newJWT(t)
	web := workloadID(t, "default", "web")
	tests := []struct {
		name     string
		id       spiffeid.ID
		audience []string
		want     error
	}{
		{"no-audience", web, nil, ca.ErrBadAudience},
		{"empty-audience-list", web, []string{}, ca.ErrBadAudience},
		{"empty-audience", web, []string{""}, ca.ErrBadAudience},
		{"empty-second-audience", web, []string{"api", ""}, ca.ErrBadAudience},
		{"too-many-audiences", web, tooManyAudiences(), ca.ErrBadAudience},
		{"audience-too-long", web, []string{strings.Repeat("a", 257)}, ca.ErrBadAudience},
		{"zero-id", spiffeid.ID{}, []string{"api"}, ca.ErrNotMember},
		{"trust-domain-id", f.td.ID(), []string{"api"}, ca.ErrNotMember},
		{"another-trust-domain", spiffeid.RequireFromString("spiffe://other.test/ns/default/sa/web"), []string{"api"}, ca.ErrNotMember},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := a.SignJWTSVID(tt.id, tt.audience)
			if !errors.Is(err, tt.want) {
				t.Fatalf("SignJWTSVID: got %v, want an error wrapping %v", err, tt.want)
			}
			if token != "" {
				t.Errorf("SignJWTSVID: got token %q with the error, want none", token)
			}
		})
	}
}

// tooManyAudiences returns MaxAudiences+1 distinct audiences.
func tooManyAudiences() []string {
	out := make([]string, ca.MaxAudiences+1)
	for i := range out {
		out[i] = "aud-" + strings.Repeat("x", i+1)
	}
	return out
}

func TestJWTAuthorityRestart(t *testing.T) {
	for _, disk := range []bool{false, true} {
		name := "memory"
		if disk {
			name = "disk"
		}
		t.Run(name, func(t *testing.T) {
			f := newJWTFixture(t)
			if disk {
				f.keyDir = t.TempDir() + "/keys"
				f.keys = openDisk(t, f.keyDir)
			}
			first := f.newJWT(t)
			token, err := first.SignJWTSVID(workloadID(t, "default", "web"), []string{"api"})
			if err != nil {
				t.Fatal(err)
			}
			rev := f.revision(t)

			if disk {
				f.keys = openDisk(t, f.keyDir)
			}
			again := f.newJWT(t)
			if got, want := string(again.JWKS()), string(first.JWKS()); got != want {
				t.Errorf("JWKS after restart:\ngot  %s\nwant %s", got, want)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision after restart: got %d, want %d (nothing written)", got, rev)
			}
			if _, err := jwtsvid.ParseAndValidate(token, jwtBundle(t, f, again), []string{"api"}); err != nil {
				t.Errorf("token from before the restart against the JWKS after it: %v", err)
			}
		})
	}
}

func TestJWTAuthorityConcurrentFirstStart(t *testing.T) {
	f, keys := newTrackedFixture(t)
	const replicas = 4
	as := make([]*ca.JWTAuthority, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { as[i], errs[i] = ca.NewJWTAuthority(context.Background(), f.config()) })
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: NewJWTAuthority: %v", i, errs[i])
		}
		if got, want := string(as[i].JWKS()), string(as[0].JWKS()); got != want {
			t.Errorf("replica %d: JWKS differs from replica 0's", i)
		}
	}
	if got := keys.live(t); len(got) != 1 {
		t.Errorf("keys held: got %v, want exactly one: the losers' keys must be deleted", got)
	}
}

func TestJWTAuthorityFailsClosed(t *testing.T) {
	tests := []struct {
		name string
		// corrupt damages the stored key or record of a started
		// authority.
		corrupt func(t *testing.T, f *fixture, rec map[string]any)
		want    error
	}{
		{"record-not-json", func(t *testing.T, f *fixture, _ map[string]any) {
			putRaw(t, f, keyJWT, []byte("{"))
		}, ca.ErrCorruptRecord},
		{"record-invalid-key-id", func(t *testing.T, f *fixture, rec map[string]any) {
			rec["keyID"] = "../../etc/passwd"
			putRaw(t, f, keyJWT, marshalAny(t, rec))
		}, ca.ErrCorruptRecord},
		{"key-missing", func(t *testing.T, f *fixture, rec map[string]any) {
			if err := f.keys.Delete(context.Background(), rec["keyID"].(string)); err != nil {
				t.Fatal(err)
			}
		}, keymanager.ErrNotFound},
		{"key-replaced", func(t *testing.T, f *fixture, rec map[string]any) {
			if _, err := f.keys.GenerateKey(context.Background(), rec["keyID"].(string)); err != nil {
				t.Fatal(err)
			}
		}, ca.ErrKeyMismatch},
		{"kid-changed", func(t *testing.T, f *fixture, rec map[string]any) {
			rec["kid"] = "not-the-kid"
			putRaw(t, f, keyJWT, marshalAny(t, rec))
		}, ca.ErrKeyMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, keys := newTrackedFixture(t)
			f.newJWT(t)
			kv, err := f.store.Get(context.Background(), keyJWT)
			if err != nil {
				t.Fatal(err)
			}
			var rec map[string]any
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				t.Fatal(err)
			}
			tt.corrupt(t, f, rec)
			records, rev, held := f.records(t), f.revision(t), keys.live(t)
			if _, err := ca.NewJWTAuthority(context.Background(), f.config()); !errors.Is(err, tt.want) {
				t.Fatalf("NewJWTAuthority: got %v, want an error wrapping %v", err, tt.want)
			}
			if diff := cmp.Diff(records, f.records(t)); diff != "" {
				t.Errorf("records changed (-before +after):\n%s", diff)
			}
			if got := f.revision(t); got != rev {
				t.Errorf("store revision: got %d, want %d", got, rev)
			}
			if got := keys.live(t); !slices.Equal(got, held) {
				t.Errorf("keys held: got %v, want %v (no new key)", got, held)
			}
		})
	}
}

func putRaw(t *testing.T, f *fixture, key string, value []byte) {
	t.Helper()
	if _, err := store.Put(context.Background(), f.store, key, value); err != nil {
		t.Fatal(err)
	}
}

func TestJWTAuthorityConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*ca.Config)
	}{
		{"missing-trust-domain", func(c *ca.Config) { c.TrustDomain = spiffeid.TrustDomain{} }},
		{"missing-store", func(c *ca.Config) { c.Store = nil }},
		{"missing-keys", func(c *ca.Config) { c.Keys = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.config()
			tt.modify(&cfg)
			if _, err := ca.NewJWTAuthority(context.Background(), cfg); err == nil {
				t.Fatal("NewJWTAuthority: got no error, want one")
			}
			if got := f.records(t); len(got) != 0 {
				t.Errorf("records after a config error: got %d, want 0", len(got))
			}
		})
	}
}
