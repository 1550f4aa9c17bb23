package jointoken_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// start is the fake clock's start time.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var (
	svcA     = identity.ServiceRef{Namespace: "default", Name: "a"}
	svcB     = identity.ServiceRef{Namespace: "default", Name: "b"}
	svcOther = identity.ServiceRef{Namespace: "other", Name: "a"}
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is a join token attestor over a real bbolt store in a temp dir,
// with a fake clock and its logs captured.
type fixture struct {
	store  store.Store
	clock  *clock.Fake
	tokens *jointoken.JoinTokens
	logs   *lockedBuffer
}

func newStore(t testing.TB) store.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{store: newStore(t), clock: clock.NewFake(start), logs: &lockedBuffer{}}
	logger := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	jt, err := jointoken.New(jointoken.Config{Store: f.store, Clock: f.clock, Logger: logger})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.tokens = jt
	return f
}

func (f *fixture) create(t testing.TB, req jointoken.CreateRequest) string {
	t.Helper()
	tok, _, err := f.tokens.Create(context.Background(), req)
	if err != nil {
		t.Fatalf("Create(%+v): %v", req, err)
	}
	return tok
}

func (f *fixture) attest(tok string, svc identity.ServiceRef) (attest.Result, error) {
	return f.tokens.Attest(context.Background(), attest.Evidence{JoinToken: tok, Service: svc})
}

// revision returns the store's current revision.
func (f *fixture) revision(t testing.TB) int64 {
	t.Helper()
	rev, err := f.store.Txn(context.Background(), nil, nil)
	if err != nil {
		t.Fatalf("read revision: %v", err)
	}
	return rev
}

// checkRejected checks that err is an attestation rejection that does not
// reveal the token, and that the logs do not either.
func (f *fixture) checkRejected(t testing.TB, err error, tok string) {
	t.Helper()
	if !errors.Is(err, attest.ErrRejected) {
		t.Fatalf("Attest: got error %v, want one wrapping attest.ErrRejected", err)
	}
	for _, secret := range secrets(tok) {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Attest error %q: got the token's secret in it, want it absent", err)
		}
		if strings.Contains(f.logs.String(), secret) {
			t.Errorf("logs: got the token's secret in them, want it absent:\n%s", f.logs)
		}
	}
}

// secrets returns the parts of tok that must never be stored or shown: the
// whole token and its secret.
func secrets(tok string) []string {
	var out []string
	if tok := strings.TrimSpace(tok); tok != "" {
		out = append(out, tok)
	}
	if p, err := attest.ParseToken(tok); err == nil {
		out = append(out, p.Secret)
	}
	return out
}

func TestNewRequiresStore(t *testing.T) {
	if _, err := jointoken.New(jointoken.Config{}); err == nil {
		t.Errorf("New without a store: got nil error, want an error")
	}
}

func TestAttestSingleUse(t *testing.T) {
	tests := []struct {
		name string
		req  jointoken.CreateRequest
		ev   identity.ServiceRef
		want attest.Result
	}{
		{
			name: "account_defaults_to_service",
			req:  jointoken.CreateRequest{Service: svcA},
			ev:   svcA,
			want: attest.Result{Service: svcA, Account: "a"},
		},
		{
			name: "explicit_identity_kept",
			req:  jointoken.CreateRequest{Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}, Account: "cart-sa"},
			ev:   identity.ServiceRef{Namespace: "shop", Name: "cart"},
			want: attest.Result{Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}, Account: "cart-sa"},
		},
		{
			name: "labels_bound_to_token",
			req:  jointoken.CreateRequest{Service: svcA, Labels: map[string]string{"version": "v2", "zone": "a"}},
			ev:   svcA,
			want: attest.Result{Service: svcA, Account: "a", Labels: map[string]string{"version": "v2", "zone": "a"}},
		},
		{
			name: "pinned_token",
			req:  jointoken.CreateRequest{Service: svcA, Pin: "sha256:" + strings.Repeat("A", 43)},
			ev:   svcA,
			want: attest.Result{Service: svcA, Account: "a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok := f.create(t, tt.req)

			got, err := f.attest(tok, tt.ev)
			if err != nil {
				t.Fatalf("first Attest: got error %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("first Attest (-want +got):\n%s", diff)
			}

			got, err = f.attest(tok, tt.ev)
			if !cmp.Equal(got, attest.Result{}) {
				t.Errorf("second Attest: got %+v, want the zero Result", got)
			}
			f.checkRejected(t, err, tok)
		})
	}
}

func TestAttestConcurrentSingleUse(t *testing.T) {
	const attempts = 16
	f := newFixture(t)
	tok := f.create(t, jointoken.CreateRequest{Service: svcA})

	var (
		wg    sync.WaitGroup
		begin = make(chan struct{})
		errs  = make([]error, attempts)
	)
	for i := range attempts {
		wg.Go(func() {
			<-begin
			_, errs[i] = f.attest(tok, svcA)
		})
	}
	close(begin)
	wg.Wait()

	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, attest.ErrRejected):
			t.Errorf("attempt %d: got error %v, want nil or one wrapping attest.ErrRejected", i, err)
		}
	}
	if ok != 1 {
		t.Errorf("concurrent attests of one token: got %d successes, want exactly 1", ok)
	}
}

func TestAttestExpiry(t *testing.T) {
	const ttl = 5 * time.Minute
	tests := []struct {
		name    string
		advance time.Duration
		wantOK  bool
	}{
		{name: "fresh", advance: 0, wantOK: true},
		{name: "just_before_expiry", advance: ttl - time.Nanosecond, wantOK: true},
		{name: "at_expiry", advance: ttl, wantOK: false},
		{name: "past_expiry", advance: ttl + time.Second, wantOK: false},
		{name: "long_past_expiry", advance: 30 * 24 * time.Hour, wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok, expires, err := f.tokens.Create(context.Background(), jointoken.CreateRequest{Service: svcA, TTL: ttl})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if want := start.Add(ttl); !expires.Equal(want) {
				t.Errorf("Create: got expiry %s, want %s", expires, want)
			}
			f.clock.Advance(tt.advance)
			_, err = f.attest(tok, svcA)
			if tt.wantOK {
				if err != nil {
					t.Errorf("Attest after %s: got error %v, want nil", tt.advance, err)
				}
				return
			}
			f.checkRejected(t, err, tok)
		})
	}
}

func TestAttestOtherServiceDoesNotConsume(t *testing.T) {
	tests := []struct {
		name  string
		wrong identity.ServiceRef
	}{
		{name: "other_service_same_namespace", wrong: svcB},
		{name: "same_name_other_namespace", wrong: svcOther},
		{name: "zero_service", wrong: identity.ServiceRef{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok := f.create(t, jointoken.CreateRequest{Service: svcA})
			rev := f.revision(t)

			got, err := f.attest(tok, tt.wrong)
			if !cmp.Equal(got, attest.Result{}) {
				t.Errorf("Attest as %s: got %+v, want the zero Result", tt.wrong, got)
			}
			f.checkRejected(t, err, tok)
			if got := f.revision(t); got != rev {
				t.Errorf("store revision after a rejected attest: got %d, want %d (nothing written)", got, rev)
			}

			res, err := f.attest(tok, svcA)
			if err != nil {
				t.Fatalf("Attest as %s after the rejection: got error %v, want nil (token not consumed)", svcA, err)
			}
			if want := (attest.Result{Service: svcA, Account: "a"}); !cmp.Equal(res, want) {
				t.Errorf("Attest as %s: got %+v, want %+v", svcA, res, want)
			}
		})
	}
}

func TestAttestRejectsBadTokens(t *testing.T) {
	f := newFixture(t)
	real := f.create(t, jointoken.CreateRequest{Service: svcA})
	secret := strings.TrimPrefix(real, attest.TokenPrefix+".")
	tests := []struct {
		name  string
		token string
	}{
		{name: "empty", token: ""},
		{name: "unknown_token", token: f.otherToken(t)},
		{name: "wrong_prefix", token: "bwxt." + secret},
		{name: "no_prefix", token: secret},
		{name: "bad_base64", token: "bwjt." + strings.Repeat("*", len(secret))},
		{name: "padded_secret", token: real + "="},
		{name: "secret_too_short", token: "bwjt." + secret[:len(secret)-4]},
		{name: "secret_too_long", token: real + "AAAA"},
		{name: "bad_pin", token: real + ".md5:abcd"},
		{name: "too_many_parts", token: real + ".sha256:x.y"},
		{name: "secret_with_flipped_char", token: "bwjt." + flip(secret)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := f.attest(tt.token, svcA)
			if !cmp.Equal(res, attest.Result{}) {
				t.Errorf("Attest(%q): got %+v, want the zero Result", tt.token, res)
			}
			f.checkRejected(t, err, tt.token)
			f.checkRejected(t, err, real)
		})
	}
	// None of the attempts consumed the real token.
	if _, err := f.attest(real, svcA); err != nil {
		t.Errorf("Attest with the real token after bad attempts: got error %v, want nil", err)
	}
}

// otherToken returns a well-formed token that the fixture's store does not
// know: it was created in another store.
func (f *fixture) otherToken(t testing.TB) string {
	t.Helper()
	return newFixture(t).create(t, jointoken.CreateRequest{Service: svcA})
}

// flip changes the first character of a base64url string to another valid
// one, so it still decodes to the same length.
func flip(s string) string {
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

func TestStoreHoldsOnlyHash(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var tokens []string
	for _, req := range []jointoken.CreateRequest{
		{Service: svcA},
		{Service: svcB, Account: "b-sa", CreatedBy: "alice"},
		{Service: svcOther, Pin: "sha256:" + strings.Repeat("Q", 43)},
	} {
		tokens = append(tokens, f.create(t, req))
	}
	// A redeemed token's record is rewritten: check that too.
	if _, err := f.attest(tokens[0], svcA); err != nil {
		t.Fatalf("Attest: %v", err)
	}

	kvs, _, err := f.store.List(ctx, "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if got, want := len(kvs), len(tokens); got != want {
		t.Fatalf("store: got %d keys, want %d (one record per token)", got, want)
	}
	keys := map[string]bool{}
	for _, kv := range kvs {
		keys[path.Base(kv.Key)] = true
	}
	for i, tok := range tokens {
		p, err := attest.ParseToken(tok)
		if err != nil {
			t.Fatalf("ParseToken(token %d): %v", i, err)
		}
		for _, kv := range kvs {
			for _, s := range secrets(tok) {
				if strings.Contains(kv.Key, s) || bytes.Contains(kv.Value, []byte(s)) {
					t.Errorf("token %d: got its secret in store key %q or its value, want only its hash", i, kv.Key)
				}
			}
		}
		sum := sha256.Sum256([]byte(p.Secret))
		if h := hex.EncodeToString(sum[:]); !keys[h] {
			t.Errorf("token %d: got no store key named by the SHA-256 of its secret (%s), want one; keys: %v", i, h, keys)
		}
	}
}

func TestCreateTTL(t *testing.T) {
	tests := []struct {
		name    string
		ttl     time.Duration
		want    time.Duration
		wantErr bool
	}{
		{name: "zero_is_default", ttl: 0, want: jointoken.DefaultTokenTTL},
		{name: "default_is_10m", ttl: 0, want: 10 * time.Minute},
		{name: "one_second", ttl: time.Second, want: time.Second},
		{name: "one_hour", ttl: time.Hour, want: time.Hour},
		{name: "max", ttl: jointoken.MaxTokenTTL, want: 7 * 24 * time.Hour},
		{name: "negative", ttl: -time.Second, wantErr: true},
		{name: "above_max", ttl: jointoken.MaxTokenTTL + time.Nanosecond, wantErr: true},
		{name: "eight_days", ttl: 8 * 24 * time.Hour, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok, expires, err := f.tokens.Create(context.Background(), jointoken.CreateRequest{Service: svcA, TTL: tt.ttl})
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Create with ttl %s: got token, nil error, want an error", tt.ttl)
				}
				if tok != "" {
					t.Errorf("Create with ttl %s: got token %q with the error, want none", tt.ttl, tok)
				}
				f.checkEmpty(t)
				return
			}
			if err != nil {
				t.Fatalf("Create with ttl %s: got error %v, want nil", tt.ttl, err)
			}
			if want := start.Add(tt.want); !expires.Equal(want) {
				t.Errorf("Create with ttl %s: got expiry %s, want %s", tt.ttl, expires, want)
			}
			// The stored expiry is the one returned.
			f.clock.Advance(tt.want - time.Nanosecond)
			if _, err := f.attest(tok, svcA); err != nil {
				t.Errorf("Attest 1ns before expiry: got error %v, want nil", err)
			}
		})
	}
}

// checkEmpty checks that nothing was written to the store.
func (f *fixture) checkEmpty(t testing.TB) {
	t.Helper()
	kvs, _, err := f.store.List(context.Background(), "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(kvs) != 0 {
		t.Errorf("store: got %d keys after a failed Create, want 0", len(kvs))
	}
}

func TestCreateRejectsBadRequests(t *testing.T) {
	tests := []struct {
		name string
		req  jointoken.CreateRequest
	}{
		{name: "zero_service", req: jointoken.CreateRequest{}},
		{name: "no_namespace", req: jointoken.CreateRequest{Service: identity.ServiceRef{Name: "a"}}},
		{name: "no_name", req: jointoken.CreateRequest{Service: identity.ServiceRef{Namespace: "default"}}},
		{name: "uppercase_name", req: jointoken.CreateRequest{Service: identity.ServiceRef{Namespace: "default", Name: "API"}}},
		{name: "slash_in_namespace", req: jointoken.CreateRequest{Service: identity.ServiceRef{Namespace: "a/b", Name: "a"}}},
		{name: "bad_account", req: jointoken.CreateRequest{Service: svcA, Account: "sa/../admin"}},
		{name: "account_too_long", req: jointoken.CreateRequest{Service: svcA, Account: strings.Repeat("a", 64)}},
		{name: "pin_with_dot", req: jointoken.CreateRequest{Service: svcA, Pin: "sha256:ab.cd"}},
		{name: "pin_with_space", req: jointoken.CreateRequest{Service: svcA, Pin: "sha256:ab cd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok, _, err := f.tokens.Create(context.Background(), tt.req)
			if err == nil {
				t.Fatalf("Create(%+v): got token %q, nil error, want an error", tt.req, tok)
			}
			f.checkEmpty(t)
		})
	}
}

// TestCreateOnlyParseableTokens: every token Create returns must be one
// ParseToken (and so a proxy, and Attest) accepts. A token with a malformed
// pin can never be redeemed, so Create must refuse to make it.
func TestCreateOnlyParseableTokens(t *testing.T) {
	tests := []struct {
		name string
		pin  string
	}{
		{name: "pin_without_sha256_prefix", pin: "md5:abcd"},
		{name: "pin_bare_digest", pin: strings.Repeat("A", 43)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tok, _, err := f.tokens.Create(context.Background(), jointoken.CreateRequest{Service: svcA, Pin: tt.pin})
			if err != nil {
				return // refused: fine
			}
			if _, perr := attest.ParseToken(tok); perr != nil {
				t.Errorf("Create with pin %q: got a token ParseToken rejects (%v), want Create to fail", tt.pin, perr)
			}
		})
	}
}

func TestCreatePinRoundTrip(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	// A real root: the pin of a workload CA in its own store, computed as
	// `bulwark control` does for the tokens it prints.
	authority, err := ca.New(ctx, ca.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("bulwark.test"),
		Store:       newStore(t),
		Keys:        keymanager.NewMemory(),
		Clock:       f.clock,
	})
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	pin := mtls.SPKIPin(authority.Roots()[0])

	tok := f.create(t, jointoken.CreateRequest{Service: svcA, Pin: pin})
	p, err := attest.ParseToken(tok)
	if err != nil {
		t.Fatalf("ParseToken(created token): %v", err)
	}
	if p.Pin != pin {
		t.Errorf("ParseToken: got pin %q, want %q", p.Pin, pin)
	}
	if got, err := mtls.PinnedAnchor(authority.Roots(), p.Pin); err != nil || got != authority.Roots()[0] {
		t.Errorf("PinnedAnchor(roots, parsed pin): got %v, %v, want the root", got, err)
	}
	if _, err := f.attest(tok, svcA); err != nil {
		t.Errorf("Attest with the pinned token: got error %v, want nil", err)
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	expired := f.create(t, jointoken.CreateRequest{Service: svcA, TTL: time.Minute})
	usedExpired := f.create(t, jointoken.CreateRequest{Service: svcA, TTL: time.Minute})
	live := f.create(t, jointoken.CreateRequest{Service: svcA, TTL: time.Hour})
	usedLive := f.create(t, jointoken.CreateRequest{Service: svcA, TTL: time.Hour})
	for _, tok := range []string{usedExpired, usedLive} {
		if _, err := f.attest(tok, svcA); err != nil {
			t.Fatalf("Attest: %v", err)
		}
	}
	// A record that does not decode is pruned too.
	kvs, _, err := f.store.List(ctx, "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	corruptKey := path.Dir(kvs[0].Key) + "/corrupt-record"
	if _, err := store.Put(ctx, f.store, corruptKey, []byte("{not json")); err != nil {
		t.Fatalf("Put: %v", err)
	}

	// Nothing has expired yet.
	n, err := f.tokens.Prune(ctx)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if n != 1 {
		t.Errorf("Prune before expiry: got %d records deleted, want 1 (the corrupt one)", n)
	}

	f.clock.Advance(2 * time.Minute)
	n, err = f.tokens.Prune(ctx)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if n != 2 {
		t.Errorf("Prune after 2m: got %d records deleted, want 2", n)
	}

	kvs, _, err = f.store.List(ctx, "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var got []string
	for _, kv := range kvs {
		got = append(got, path.Base(kv.Key))
	}
	want := []string{hashOf(t, live), hashOf(t, usedLive)}
	if diff := cmp.Diff(want, got, sortStrings); diff != "" {
		t.Errorf("records after Prune (-want +got):\n%s", diff)
	}

	// The live token still works; the used one is still reported used.
	if _, err := f.attest(live, svcA); err != nil {
		t.Errorf("Attest with the live token after Prune: got error %v, want nil", err)
	}
	_, err = f.attest(usedLive, svcA)
	f.checkRejected(t, err, usedLive)
	_, err = f.attest(expired, svcA)
	f.checkRejected(t, err, expired)

	// Pruning again finds nothing.
	if n, err := f.tokens.Prune(ctx); err != nil || n != 0 {
		t.Errorf("second Prune: got %d, %v, want 0, nil", n, err)
	}
}

var sortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })

// hashOf returns the hex SHA-256 of a token's secret.
func hashOf(t testing.TB, tok string) string {
	t.Helper()
	p, err := attest.ParseToken(tok)
	if err != nil {
		t.Fatalf("ParseToken: %v", err)
	}
	sum := sha256.Sum256([]byte(p.Secret))
	return hex.EncodeToString(sum[:])
}
