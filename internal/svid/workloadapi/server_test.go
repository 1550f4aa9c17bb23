package workloadapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	wlclient "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwarkmesh/bulwark/internal/svid/workloadapi"
)

func TestFetchX509SVID(t *testing.T) {
	src := newFakeSource(fakeNow())
	r := start(t, src, fakeNow(), nil)
	ctx := timeout(t)

	got, err := wlclient.FetchX509SVID(ctx, wlclient.WithAddr(r.addr))
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	want := src.current()
	if got.ID != appID {
		t.Errorf("got id %s, want %s", got.ID, appID)
	}
	if !got.Certificates[0].Equal(want.Certificates[0]) {
		t.Errorf("got serial %s, want %s", got.Certificates[0].SerialNumber, want.Certificates[0].SerialNumber)
	}
	if !got.PrivateKey.Public().(*ecdsa.PublicKey).Equal(want.PrivateKey.Public()) {
		t.Error("got a private key that does not match the SVID's")
	}

	bundles, err := wlclient.FetchX509Bundles(ctx, wlclient.WithAddr(r.addr))
	if err != nil {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
	b, err := bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatalf("bundle of %s: %v", td, err)
	}
	if !b.Equal(src.ca.x509Bundle()) {
		t.Errorf("got %d roots, want the test CA's root", len(b.X509Authorities()))
	}

	// The SVID verifies against the bundle served with it.
	x509ctx, err := wlclient.FetchX509Context(ctx, wlclient.WithAddr(r.addr))
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	roots := x509.NewCertPool()
	ctxBundle, err := x509ctx.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatalf("context bundle: %v", err)
	}
	for _, c := range ctxBundle.X509Authorities() {
		roots.AddCert(c)
	}
	leaf := x509ctx.DefaultSVID().Certificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("served SVID does not verify against the served bundle: %v", err)
	}
}

// An app watching the API sees the rotated SVID, both through X509Source
// and WatchX509Context.
func TestX509SVIDRotation(t *testing.T) {
	src := newFakeSource(fakeNow())
	r := start(t, src, fakeNow(), nil)
	ctx := timeout(t)

	t.Run("x509_source", func(t *testing.T) {
		xs, err := wlclient.NewX509Source(ctx, wlclient.WithClientOptions(wlclient.WithAddr(r.addr)))
		if err != nil {
			t.Fatalf("NewX509Source: %v", err)
		}
		defer xs.Close()
		first, err := xs.GetX509SVID()
		if err != nil {
			t.Fatalf("GetX509SVID: %v", err)
		}
		if got, want := first.Certificates[0].SerialNumber, src.current().Certificates[0].SerialNumber; got.Cmp(want) != 0 {
			t.Fatalf("got serial %s, want %s", got, want)
		}
		want := src.rotate().Certificates[0].SerialNumber
		for {
			svid, err := xs.GetX509SVID()
			if err != nil {
				t.Fatalf("GetX509SVID: %v", err)
			}
			if svid.Certificates[0].SerialNumber.Cmp(want) == 0 {
				break
			}
			select {
			case <-xs.Updated():
			case <-ctx.Done():
				t.Fatalf("X509Source never saw serial %s", want)
			}
		}
	})

	t.Run("watch_x509_context", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		w := &x509Watcher{updates: make(chan *wlclient.X509Context, 4)}
		done := make(chan error, 1)
		go func() { done <- wlclient.WatchX509Context(wctx, w, wlclient.WithAddr(r.addr)) }()
		defer func() {
			cancel()
			<-done
		}()
		next := func() *wlclient.X509Context {
			select {
			case u := <-w.updates:
				return u
			case <-ctx.Done():
				t.Fatal("no update from WatchX509Context")
				return nil
			}
		}
		if got, want := next().DefaultSVID().Certificates[0].SerialNumber, src.current().Certificates[0].SerialNumber; got.Cmp(want) != 0 {
			t.Fatalf("first update: got serial %s, want %s", got, want)
		}
		want := src.rotate().Certificates[0].SerialNumber
		if got := next().DefaultSVID().Certificates[0].SerialNumber; got.Cmp(want) != 0 {
			t.Fatalf("after rotation: got serial %s, want %s", got, want)
		}
	})
}

type x509Watcher struct{ updates chan *wlclient.X509Context }

func (w *x509Watcher) OnX509ContextUpdate(c *wlclient.X509Context) { w.updates <- c }
func (w *x509Watcher) OnX509ContextWatchError(error)               {}

// Until the Source has an SVID, clients are told Unavailable (and retry).
func TestNotReadyIsUnavailable(t *testing.T) {
	src := newFakeSource(fakeNow())
	src.setReady(false)
	r := start(t, src, fakeNow(), nil)
	ctx := timeout(t)

	_, err := wlclient.FetchX509SVID(ctx, wlclient.WithAddr(r.addr))
	if got := status.Code(err); got != codes.Unavailable {
		t.Fatalf("before the first SVID: got %v (%v), want Unavailable", got, err)
	}
	_, err = wlclient.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}, wlclient.WithAddr(r.addr))
	if got := status.Code(err); got != codes.Unavailable {
		t.Fatalf("jwt before the first SVID: got %v (%v), want Unavailable", got, err)
	}
	src.setReady(true)
	if _, err := wlclient.FetchX509SVID(ctx, wlclient.WithAddr(r.addr)); err != nil {
		t.Fatalf("once ready: %v", err)
	}
}

func TestJWTSVID(t *testing.T) {
	c := fakeNow()
	src := newFakeSource(c)
	r := start(t, src, c, nil)
	ctx := timeout(t)
	client, err := wlclient.New(ctx, wlclient.WithAddr(r.addr))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer client.Close()
	raw := rawClient(t, r.socket)

	svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db", ExtraAudiences: []string{"cache"}})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if svid.ID != appID {
		t.Errorf("got subject %s, want %s", svid.ID, appID)
	}
	if diff := cmp.Diff([]string{"cache", "db"}, svid.Audience); diff != "" {
		t.Errorf("audience (-want +got):\n%s", diff)
	}
	token := svid.Marshal()

	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := signJWT(otherKey, src.ca.jwtKID, appID, []string{"db"}, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	expired, err := signJWT(src.ca.jwtKey, src.ca.jwtKID, appID, []string{"db"}, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		call func(context.Context) error
		want codes.Code
	}{
		{"validate", func(ctx context.Context) error {
			got, err := client.ValidateJWTSVID(ctx, token, "db")
			if err == nil && got.ID != appID {
				return fmt.Errorf("got subject %s, want %s", got.ID, appID)
			}
			return err
		}, codes.OK},
		{"validate_other_audience_of_token", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, token, "cache")
			return err
		}, codes.OK},
		{"validate_wrong_audience", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, token, "payments")
			return err
		}, codes.InvalidArgument},
		{"validate_missing_audience", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, token, "")
			return err
		}, codes.InvalidArgument},
		{"validate_missing_token", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, "", "db")
			return err
		}, codes.InvalidArgument},
		{"validate_tampered_payload", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, tamperPayload(t, token), "payments")
			return err
		}, codes.InvalidArgument},
		{"validate_tampered_signature", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, tamperSignature(token), "db")
			return err
		}, codes.InvalidArgument},
		{"validate_signed_by_another_key", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, forged, "db")
			return err
		}, codes.InvalidArgument},
		{"validate_expired", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, expired, "db")
			return err
		}, codes.InvalidArgument},
		{"validate_garbage", func(ctx context.Context) error {
			_, err := client.ValidateJWTSVID(ctx, "not.a.jwt", "db")
			return err
		}, codes.InvalidArgument},
		{"fetch_own_spiffe_id", func(ctx context.Context) error {
			_, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db", Subject: appID})
			return err
		}, codes.OK},
		{"fetch_other_spiffe_id", func(ctx context.Context) error {
			other := spiffeid.RequireFromPath(td, "/ns/default/sa/admin")
			_, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db", Subject: other})
			return err
		}, codes.PermissionDenied},
		{"fetch_invalid_spiffe_id", func(ctx context.Context) error {
			_, err := raw.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: "not a spiffe id"})
			return err
		}, codes.InvalidArgument},
		{"fetch_missing_audience", func(ctx context.Context) error {
			_, err := raw.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{})
			return err
		}, codes.InvalidArgument},
		{"fetch_empty_audience", func(ctx context.Context) error {
			_, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: ""})
			return err
		}, codes.InvalidArgument},
		{"fetch_too_many_audiences", func(ctx context.Context) error {
			aud := make([]string, 17)
			for i := range aud {
				aud[i] = fmt.Sprintf("aud-%d", i)
			}
			_, err := raw.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: aud})
			return err
		}, codes.InvalidArgument},
		{"fetch_audience_too_long", func(ctx context.Context) error {
			_, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: strings.Repeat("a", 257)})
			return err
		}, codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctx)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
			// A rejection never echoes the token back.
			if err != nil && strings.Contains(err.Error(), token[strings.LastIndex(token, ".")+1:]) {
				t.Errorf("error echoes the token: %v", err)
			}
		})
	}

	t.Run("claims", func(t *testing.T) {
		resp, err := raw.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Svid: token, Audience: "db"})
		if err != nil {
			t.Fatalf("ValidateJWTSVID: %v", err)
		}
		if resp.SpiffeId != appID.String() {
			t.Errorf("got spiffe_id %s, want %s", resp.SpiffeId, appID)
		}
		claims := resp.Claims.AsMap()
		if got := claims["sub"]; got != appID.String() {
			t.Errorf("got sub %v, want %s", got, appID)
		}
		if diff := cmp.Diff([]any{"cache", "db"}, claims["aud"]); diff != "" {
			t.Errorf("aud (-want +got):\n%s", diff)
		}
		if _, ok := claims["exp"].(float64); !ok {
			t.Errorf("got exp %v, want a number", claims["exp"])
		}
	})

	// A single audience is returned as a list, as SPIRE does.
	t.Run("claims_single_audience", func(t *testing.T) {
		one, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "solo"})
		if err != nil {
			t.Fatalf("FetchJWTSVID: %v", err)
		}
		resp, err := raw.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Svid: one.Marshal(), Audience: "solo"})
		if err != nil {
			t.Fatalf("ValidateJWTSVID: %v", err)
		}
		if diff := cmp.Diff([]any{"solo"}, resp.Claims.AsMap()["aud"]); diff != "" {
			t.Errorf("aud (-want +got):\n%s", diff)
		}
	})

	r.logs.mustNotContain(t, append(src.mintedTokens(), forged, expired)...)
}

// tamperPayload re-encodes the token's payload with another audience, keeping
// the original signature.
func tamperPayload(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(payload), `"db"`, `"payments"`, 1)
	if changed == string(payload) {
		t.Fatalf("payload has no audience to change: %s", payload)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(changed))
	return strings.Join(parts, ".")
}

// tamperSignature flips bits in the middle of the signature.
func tamperSignature(token string) string {
	i := strings.LastIndex(token, ".") + 10
	b := []byte(token)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestJWTSVIDCache(t *testing.T) {
	c := fakeNow()
	src := newFakeSource(c)
	src.jwtTTL = time.Hour
	r := start(t, src, c, nil)
	ctx := timeout(t)
	client, err := wlclient.New(ctx, wlclient.WithAddr(r.addr))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer client.Close()
	fetch := func(t *testing.T, aud ...string) string {
		t.Helper()
		svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud[0], ExtraAudiences: aud[1:]})
		if err != nil {
			t.Fatalf("FetchJWTSVID(%v): %v", aud, err)
		}
		return svid.Marshal()
	}
	wantMints := func(t *testing.T, want int) {
		t.Helper()
		if got := src.mintCount(); got != want {
			t.Fatalf("got %d mints, want %d", got, want)
		}
	}

	first := fetch(t, "db", "cache")
	wantMints(t, 1)
	t.Run("same_set_in_another_order_is_cached", func(t *testing.T) {
		if got := fetch(t, "cache", "db", "db"); got != first {
			t.Error("got a new token, want the cached one")
		}
		wantMints(t, 1)
	})
	t.Run("subset_is_another_set", func(t *testing.T) {
		fetch(t, "db")
		wantMints(t, 2)
	})
	t.Run("cached_until_half_lifetime", func(t *testing.T) {
		c.Advance(30*time.Minute - time.Second)
		fetch(t, "db", "cache")
		wantMints(t, 2)
		c.Advance(time.Second)
		if got := fetch(t, "db", "cache"); got == first {
			t.Error("got the cached token at half its lifetime, want a new one")
		}
		wantMints(t, 3)
	})
	t.Run("source_change_drops_cache", func(t *testing.T) {
		fetch(t, "db", "cache")
		wantMints(t, 3)
		src.notify()
		fetch(t, "db", "cache")
		wantMints(t, 4)
	})
}

// The cache holds one entry per audience set, up to a bound; when full it
// drops the entry due soonest.
func TestJWTSVIDCacheIsBounded(t *testing.T) {
	c := fakeNow()
	src := newFakeSource(c)
	src.jwtTTL = time.Hour
	r := start(t, src, c, nil)
	ctx := timeout(t)
	client, err := wlclient.New(ctx, wlclient.WithAddr(r.addr))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer client.Close()
	fetch := func(aud string) {
		t.Helper()
		if _, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud}); err != nil {
			t.Fatalf("FetchJWTSVID(%s): %v", aud, err)
		}
	}

	// "first" is cached first and, with the clock moving, due soonest.
	fetch("first")
	for i := range workloadapi.MaxCachedJWTSVIDs {
		c.Advance(time.Second)
		fetch(fmt.Sprintf("aud-%d", i))
	}
	want := 1 + workloadapi.MaxCachedJWTSVIDs
	if got := src.mintCount(); got != want {
		t.Fatalf("got %d mints, want %d", got, want)
	}
	fetch(fmt.Sprintf("aud-%d", workloadapi.MaxCachedJWTSVIDs-1))
	if got := src.mintCount(); got != want {
		t.Fatalf("newest entry: got %d mints, want %d (cached)", got, want)
	}
	fetch("first")
	if got := src.mintCount(); got != want+1 {
		t.Fatalf("evicted entry: got %d mints, want %d", got, want+1)
	}
}

// A token the control plane minted but that is no JWT is not served, and
// it is not logged.
func TestMintedTokenUnusable(t *testing.T) {
	c := fakeNow()
	src := newFakeSource(c)
	const secret = "SECRET-not-a-jwt"
	src.mintWith = func([]string) (string, error) { return secret, nil }
	r := start(t, src, c, nil)
	ctx := timeout(t)

	_, err := wlclient.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}, wlclient.WithAddr(r.addr))
	if got := status.Code(err); got != codes.Unavailable {
		t.Fatalf("got %v (%v), want Unavailable", got, err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error echoes the token: %v", err)
	}
	if len(r.logs.matching("minted jwt-svid is unusable")) != 1 {
		t.Errorf("got logs %q, want one line about the unusable token", r.logs.matching())
	}
	r.logs.mustNotContain(t, secret)
}

func TestFetchJWTBundles(t *testing.T) {
	src := newFakeSource(fakeNow())
	r := start(t, src, fakeNow(), nil)
	ctx := timeout(t)

	set, err := wlclient.FetchJWTBundles(ctx, wlclient.WithAddr(r.addr))
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	b, err := set.GetJWTBundleForTrustDomain(td)
	if err != nil {
		t.Fatalf("bundle of %s: %v", td, err)
	}
	if !b.Equal(src.ca.jwtBundle()) {
		t.Errorf("got keys %v, want the test CA's %s", b.JWTAuthorities(), src.ca.jwtKID)
	}
}

// Every RPC needs "workload.spiffe.io: true", checked before anything else.
func TestSecurityHeader(t *testing.T) {
	src := newFakeSource(fakeNow())
	r := start(t, src, fakeNow(), nil)
	raw := rawClient(t, r.socket)

	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"FetchX509SVID", func(ctx context.Context) error {
			s, err := raw.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"FetchX509Bundles", func(ctx context.Context) error {
			s, err := raw.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"FetchJWTBundles", func(ctx context.Context) error {
			s, err := raw.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"FetchJWTSVID", func(ctx context.Context) error {
			_, err := raw.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"db"}})
			return err
		}},
		{"ValidateJWTSVID", func(ctx context.Context) error {
			_, err := raw.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: "x.y.z"})
			return err
		}},
		{"FetchWITSVID", func(ctx context.Context) error {
			s, err := raw.FetchWITSVID(ctx, &workload.WITSVIDRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
	}
	headers := []struct {
		name   string
		header func(context.Context) context.Context
		want   codes.Code
	}{
		{"missing", func(ctx context.Context) context.Context { return ctx }, codes.InvalidArgument},
		{"false", func(ctx context.Context) context.Context {
			return withHeaderValue(ctx, "false")
		}, codes.InvalidArgument},
		{"twice", func(ctx context.Context) context.Context {
			return withHeaderValue(withHeader(ctx), "true")
		}, codes.InvalidArgument},
	}
	for _, h := range headers {
		for _, c := range calls {
			t.Run(h.name+"/"+c.name, func(t *testing.T) {
				err := c.call(h.header(timeout(t)))
				if got := status.Code(err); got != h.want {
					t.Fatalf("got %v (%v), want %v", got, err, h.want)
				}
				if got, want := status.Convert(err).Message(), "security header missing from request"; got != want {
					t.Errorf("got message %q, want %q", got, want)
				}
			})
		}
	}

	t.Run("present", func(t *testing.T) {
		ctx := withHeader(timeout(t))
		s, err := raw.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatalf("with the header: %v", err)
		}
		// WIT-SVIDs are not offered.
		w, err := raw.FetchWITSVID(ctx, &workload.WITSVIDRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); status.Code(err) != codes.Unimplemented {
			t.Errorf("FetchWITSVID: got %v, want Unimplemented", err)
		}
	})
}
