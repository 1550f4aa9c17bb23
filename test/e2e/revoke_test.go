package e2e_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
)

// TestRevokeProxy: `bulwark proxy revoke default/client` makes api's proxy
// refuse client's SVID, on new and established connections; the client
// proxy can neither subscribe nor renew; a new join token admits the
// identity again; revoking an unknown service is an error.
func TestRevokeProxy(t *testing.T) {
	t.Parallel()
	m := startControl(t, "--svid-ttl", "1m")
	api := m.startProxy("default/api", startApp(t, "api").addr)
	client := m.startClientProxy("default/client")
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policy.yaml", clientToAPI))
	td := m.mustCAStatus().TrustDomain
	clientID := fmt.Sprintf("spiffe://%s/ns/default/sa/client", td)
	wantXFCC := fmt.Sprintf("By=spiffe://%s/ns/default/sa/api;URI=%s", td, clientID)

	// callAPI sends one request through c and returns nil when the app
	// answered 200 to the client identity.
	callAPI := func(c *http.Client) error {
		resp, err := c.Get("http://api.default/revoke")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		if a := decodeAnswer(t, string(b)); len(a.XFCC) != 1 || a.XFCC[0] != wantXFCC {
			return fmt.Errorf("X-Forwarded-Client-Cert %q, want [%q]", a.XFCC, wantXFCC)
		}
		return nil
	}
	cc := client.client() // keep-alive: the client proxy pools its connection to api
	eventually(t, 10*time.Second, "client may call api", func() error { return callAPI(cc) })
	for i := range 5 {
		if err := callAPI(cc); err != nil {
			t.Fatalf("request %d before the revocation: %v", i, err)
		}
	}
	rec, err := m.connectedProxy("default/client")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("unknown_service", func(t *testing.T) {
		out, errOut, code := cli(t, m.env, "", "proxy", "revoke", "default/nosuch")
		if code == 0 {
			t.Fatalf("proxy revoke default/nosuch: exit 0 (%q), want non-zero", out)
		}
		if !strings.Contains(errOut, "no proxy of default/nosuch") {
			t.Errorf("proxy revoke default/nosuch: stderr %q, want it to say there is no proxy of default/nosuch", errOut)
		}
	})

	apiLogBefore := len(api.proc.out.String())
	out := mustCLI(t, m.env, "proxy", "revoke", "default/client")
	revoked := time.Now()
	for _, want := range []string{"proxy/default/" + rec.Instance + " revoked", "identity " + clientID + " revoked", "1 SVID serials on the deny-list"} {
		if !strings.Contains(out, want) {
			t.Errorf("proxy revoke printed %q, want it to contain %q", out, want)
		}
	}

	// Requests from client fail from now on, whatever the form.
	eventually(t, 10*time.Second, "client refused after the revocation", func() error {
		if callAPI(cc) == nil {
			return errors.New("still answered 200")
		}
		return nil
	})
	t.Logf("client's requests refused %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	reasons := map[string]int{}
	for i := range 20 {
		err := callAPI(cc)
		if err == nil {
			t.Fatalf("request %d after the revocation answered 200", i)
		}
		reasons[err.Error()]++
	}
	t.Logf("client's requests after the revocation: %v", reasons)

	t.Run("api_proxy_logs_the_refusal", func(t *testing.T) {
		eventually(t, 10*time.Second, "refusal in api's log", func() error {
			if lines := logLines(api.proc.out.String()[apiLogBefore:], "revoked"); len(lines) > 0 {
				t.Logf("api proxy after the revocation:\n%s", strings.Join(lines, "\n"))
				return nil
			}
			return errors.New("no log line of api's proxy mentions a revoked peer since the revocation")
		})
	})

	t.Run("get_proxies_shows_it_disconnected", func(t *testing.T) {
		eventually(t, 10*time.Second, "client disconnected", func() error {
			ps, err := m.proxies()
			if err != nil {
				return err
			}
			for _, p := range ps {
				if p.Instance == rec.Instance {
					if p.Connected {
						return errors.New("still connected")
					}
					return nil
				}
			}
			return fmt.Errorf("proxy %s not listed", rec.Instance)
		})
	})

	t.Run("renewal_refused", func(t *testing.T) {
		// The revoked SVID, from the client proxy's data dir, cannot be
		// renewed.
		c := controlClient(t, m, alwaysSend(tlsConfigFromPEM(t, filepath.Join(client.dataDir, "svid.pem"))))
		if _, err := c.SignSVID(rpcCtx(t), &apiv1.SignSVIDRequest{Csr: newCSR(t, "")}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("renewal with the revoked SVID: got %v, want PermissionDenied", err)
		}
		eventually(t, 5*time.Second, "control plane logs the refusal", func() error {
			if lines := logLines(m.control.out.String(), "revoked proxy refused"); len(lines) == 0 {
				return errors.New("no refused revoked proxy in the control plane's log")
			}
			return nil
		})
		// The client proxy learns it from the control plane, and says so.
		eventually(t, 10*time.Second, "client proxy told", func() error {
			if lines := logLines(client.proc.out.String(), "refused", "revoked"); len(lines) > 0 {
				t.Logf("client proxy: %s (exited: %v)", lines[len(lines)-1], client.proc.hasExited())
				return nil
			}
			return errors.New("the client proxy's log does not say it was refused as revoked")
		})
		if lines := logLines(client.proc.out.String(), "svid renewed"); len(lines) > 0 {
			t.Errorf("the revoked client proxy renewed: %s", strings.Join(lines, "\n"))
		}
	})

	t.Run("new_token_admits_the_identity_again", func(t *testing.T) {
		again := m.startClientProxy("default/client")
		ac := again.client()
		eventually(t, 10*time.Second, "new client may call api", func() error { return callAPI(ac) })
		if callAPI(cc) == nil {
			t.Errorf("the revoked client proxy is answered 200 again")
		}
	})
}

// logLines returns the lines of out that contain every one of subs.
func logLines(out string, subs ...string) []string {
	var lines []string
	for line := range strings.SplitSeq(out, "\n") {
		all := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				all = false
				break
			}
		}
		if all {
			lines = append(lines, line)
		}
	}
	return lines
}
