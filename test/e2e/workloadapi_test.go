package e2e_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestWorkloadAPI drives a proxy's --workload-api socket with the official
// go-spiffe client, as a SPIFFE-aware app next to the proxy would: the
// X509-SVID is the proxy's identity and verifies with the bundle, a
// rotation reaches the X509Source, JWT-SVIDs are minted and validated, and
// the socket is for the allowed uid only.
func TestWorkloadAPI(t *testing.T) {
	t.Parallel()
	m := startControl(t, "--svid-ttl", "1m")
	sock := filepath.Join(t.TempDir(), "agent.sock")
	addr := "unix://" + sock
	m.startProxy("default/wl", startApp(t, "wl").addr, "--workload-api", addr, "--workload-uid", strconv.Itoa(os.Getuid()))
	st := m.mustCAStatus()
	td := spiffeid.RequireTrustDomainFromString(st.TrustDomain)
	wantID := spiffeid.RequireFromPath(td, "/ns/default/sa/wl")

	t.Run("socket_not_world_accessible", func(t *testing.T) {
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: mode %s, want a socket", sock, fi.Mode())
		}
		if perm := fi.Mode().Perm(); perm&0o007 != 0 {
			t.Errorf("%s: mode %#o, want no access for others", sock, perm)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		t.Fatalf("NewX509Source(%s): %v", addr, err)
	}
	defer src.Close()
	bundlePEM, err := os.ReadFile(filepath.Join(m.dir, "control", "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	controlBundle, err := x509bundle.Parse(td, bundlePEM)
	if err != nil {
		t.Fatal(err)
	}

	// checkSVID checks an X509-SVID of the Workload API: the proxy's ID, a
	// key that matches, a chain that verifies with the bundle the API
	// serves and with the control plane's bundle.pem.
	checkSVID := func(t *testing.T, svid *x509svid.SVID) {
		t.Helper()
		if svid.ID != wantID {
			t.Errorf("X509-SVID ID: got %s, want %s", svid.ID, wantID)
		}
		pub, ok := svid.PrivateKey.Public().(*ecdsa.PublicKey)
		if !ok || !pub.Equal(svid.Certificates[0].PublicKey) {
			t.Errorf("X509-SVID private key does not match its certificate")
		}
		for name, b := range map[string]x509bundle.Source{"the Workload API's bundle": src, "bundle.pem": controlBundle} {
			id, _, err := x509svid.Verify(svid.Certificates, b)
			if err != nil {
				t.Errorf("X509-SVID does not verify with %s: %v", name, err)
			} else if id != wantID {
				t.Errorf("verified with %s: got %s, want %s", name, id, wantID)
			}
		}
	}

	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("x509_svid", func(t *testing.T) {
		checkSVID(t, svid)
		// It is the SVID the proxy itself holds.
		rec, err := m.connectedProxy("default/wl")
		if err != nil {
			t.Fatal(err)
		}
		if got := svid.Certificates[0].SerialNumber.Text(16); got != rec.SVIDSerial {
			t.Errorf("X509-SVID serial %s, want the proxy's %s (get proxies)", got, rec.SVIDSerial)
		}
	})

	t.Run("rotation_reaches_the_source", func(t *testing.T) {
		oldSerial := svid.Certificates[0].SerialNumber.Text(16)
		mustCLI(t, m.env, "ca", "rotate", "--intermediate")
		skid := m.mustCAStatus().Intermediate.SubjectKeyID
		rotated := time.Now()
		timeout := time.After(30 * time.Second)
		for {
			cur, err := src.GetX509SVID()
			if err != nil {
				t.Fatal(err)
			}
			if cur.Certificates[0].SerialNumber.Text(16) != oldSerial {
				t.Logf("new X509-SVID delivered %s after ca rotate --intermediate", time.Since(rotated).Round(time.Millisecond))
				checkSVID(t, cur)
				if got := hex.EncodeToString(cur.Certificates[0].AuthorityKeyId); got != skid {
					t.Errorf("new X509-SVID signed by %s, want the new intermediate %s", got, skid)
				}
				return
			}
			select {
			case <-src.Updated():
			case <-timeout:
				t.Fatalf("no new X509-SVID from the Workload API within 30s of ca rotate --intermediate (still serial %s)", oldSerial)
			}
		}
	})

	t.Run("jwt_svid", func(t *testing.T) {
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		const aud = "spiffe://example.org/payments"
		js, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud})
		if err != nil {
			t.Fatalf("FetchJWTSVID: %v", err)
		}
		if js.ID != wantID {
			t.Errorf("JWT-SVID ID: got %s, want %s", js.ID, wantID)
		}
		if len(js.Audience) != 1 || js.Audience[0] != aud {
			t.Errorf("JWT-SVID audience: got %v, want [%s]", js.Audience, aud)
		}
		token := js.Marshal()
		got, err := c.ValidateJWTSVID(ctx, token, aud)
		if err != nil {
			t.Errorf("ValidateJWTSVID: %v", err)
		} else if got.ID != wantID {
			t.Errorf("ValidateJWTSVID: got %s, want %s", got.ID, wantID)
		}
		if _, err := c.ValidateJWTSVID(ctx, token, "spiffe://example.org/other"); err == nil {
			t.Errorf("ValidateJWTSVID with another audience: got nil error, want the token refused")
		}
		bundles, err := c.FetchJWTBundles(ctx)
		if err != nil {
			t.Fatalf("FetchJWTBundles: %v", err)
		}
		if _, err := jwtsvid.ParseAndValidate(token, bundles, []string{aud}); err != nil {
			t.Errorf("the JWT-SVID does not verify with the JWKS of FetchJWTBundles: %v", err)
		}
		// A forged signature does not verify.
		forged := token[:len(token)-4] + flip(token[len(token)-4:])
		if _, err := jwtsvid.ParseAndValidate(forged, bundles, []string{aud}); err == nil {
			t.Errorf("a JWT-SVID with an altered signature verifies with the JWKS")
		}
	})

	t.Run("other_uid_refused", func(t *testing.T) {
		if os.Getuid() != 0 {
			t.Skip("not root: a socket for another uid cannot be chowned to it")
		}
		// A second proxy serves the API to uid 65534 only; this process
		// (root) is refused, although root could open the file.
		sock2 := filepath.Join(t.TempDir(), "nobody.sock")
		p2 := m.startProxy("default/wl2", startApp(t, "wl2").addr, "--workload-api", "unix://"+sock2, "--workload-uid", "65534")
		fi, err := os.Stat(sock2)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s: mode %#o, want 0600", sock2, perm)
		}
		fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
		defer fcancel()
		if _, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+sock2)); err == nil {
			t.Errorf("uid %d got an X509-SVID from a socket for uid 65534", os.Getuid())
		}
		eventually(t, 5*time.Second, "refusal logged", func() error {
			if !strings.Contains(p2.proc.out.String(), "workload api connection rejected") {
				return errors.New("no rejection in the proxy's log")
			}
			return nil
		})
	})
}

// flip changes every character of s to another base64url character.
func flip(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}
