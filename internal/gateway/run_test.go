package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// TestRun runs the whole gateway (gateway.Run) against a control plane in
// this process: it attests, receives its Gateway and Secret, binds the
// listener before it is ready, serves the Secret's certificate, answers
// through the engine (403: no policy allows anything through it), follows
// a change of the Gateway, and stops when its context is done.
func TestRun(t *testing.T) {
	ep, client := startPlane(t)
	cert := newPair(t, "edge.example.test")
	apply(t, client, secretDoc("edge-cert", cert), gatewayDoc(`[{"name":"https","port":443,"protocol":"HTTPS","tls":{"certificates":[{"secret":"edge-cert"}]}}]`))
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	tok, err := client.CreateToken(ctx, admin.TokenRequest{Service: "default/edge"})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan gateway.Addrs, 1)
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- gateway.Run(rctx, gateway.Config{
			Control: ep.GRPC, CABundle: ep.BundlePath, Token: tok.Token,
			Gateway: identity.ServiceRef{Namespace: "default", Name: "edge"},
			Listen:  map[string]string{"https": "127.0.0.1:0", "http": "127.0.0.1:0"},
			Admin:   "127.0.0.1:0", DataDir: t.TempDir(),
			Ready: func(a gateway.Addrs) { ready <- a },
		})
	}()
	defer func() {
		rcancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(hangGuard):
			t.Error("Run did not return")
		}
	}()
	var addrs gateway.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("the gateway was never ready")
	}
	if addrs.Listeners["https"] == "" || addrs.Admin == "" {
		t.Fatalf("Ready: got %+v, want the https listener and the admin address", addrs)
	}
	if got := handshake(t, addrs.Listeners["https"], "edge.example.test"); got.Cmp(cert.serial) != 0 {
		t.Errorf("certificate serial: got %v, want the Secret's %v", got, cert.serial)
	}
	code, _, err := get(client2(), "https://"+addrs.Listeners["https"]+"/")
	if err != nil || code != http.StatusForbidden {
		t.Errorf("a request no policy allows: got %d %v, want 403", code, err)
	}
	st := readyStatus(t, addrs.Admin)
	if !st.Ready || st.Listeners["https"] != addrs.Listeners["https"] {
		t.Errorf("/ready: got %+v, want ready with the https listener", st)
	}
	// A second listener comes with the next snapshot.
	apply(t, client, gatewayDoc(`[{"name":"https","port":443,"protocol":"HTTPS","tls":{"certificates":[{"secret":"edge-cert"}]}},{"name":"http","port":80,"protocol":"HTTP"}]`))
	deadline := time.Now().Add(hangGuard)
	for st = readyStatus(t, addrs.Admin); st.Listeners["http"] == ""; st = readyStatus(t, addrs.Admin) {
		if time.Now().After(deadline) {
			t.Fatalf("the http listener never came: %+v", st)
		}
		time.Sleep(10 * time.Millisecond) // polling a real process's state
	}
	if st.Listeners["https"] != addrs.Listeners["https"] {
		t.Errorf("https moved: got %s, want %s", st.Listeners["https"], addrs.Listeners["https"])
	}
	resp := rawRequest(t, st.Listeners["http"], "GET /x?y HTTP/1.1\r\nHost: edge.example.test\r\n\r\n")
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://edge.example.test/x?y" {
		t.Errorf("redirect: got %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

type readyJSON struct {
	Ready     bool              `json:"ready"`
	NotReady  []string          `json:"notReady"`
	Listeners map[string]string `json:"listeners"`
}

func readyStatus(t *testing.T, adminAddr string) readyJSON {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st readyJSON
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// client2 is an HTTP/2 client that does not verify certificates.
func client2() *http.Client { return client(true) }

func startPlane(t *testing.T) (control.Endpoints, *admin.Client) {
	t.Helper()
	ready := make(chan control.Endpoints, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- control.Run(ctx, control.Config{
			DataDir: filepath.Join(t.TempDir(), "data"), TrustDomain: "bulwark.test",
			Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
			Ready: func(ep control.Endpoints) { ready <- ep },
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(hangGuard):
			t.Error("control.Run did not return")
		}
	})
	var ep control.Endpoints
	select {
	case ep = <-ready:
	case err := <-done:
		t.Fatalf("control.Run: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("control plane never ready")
	}
	cred, err := admin.LoadCredential(ep.CredentialPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := admin.NewClient(cred)
	if err != nil {
		t.Fatal(err)
	}
	return ep, c
}

func apply(t *testing.T, c *admin.Client, docs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	raw := make([]json.RawMessage, len(docs))
	for i, d := range docs {
		raw[i] = json.RawMessage(d)
	}
	if _, err := c.Apply(ctx, raw); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func secretDoc(name string, p pemPair) string {
	b, _ := json.Marshal(map[string]string{"tls.crt": string(p.cert), "tls.key": string(p.key)})
	return fmt.Sprintf(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Secret","metadata":{"name":%q,"namespace":"default"},"type":"kubernetes.io/tls","stringData":%s}`, name, b)
}

func gatewayDoc(listeners string) string {
	return strings.ReplaceAll(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Gateway","metadata":{"name":"edge","namespace":"default"},
"spec":{"listeners":LISTENERS,"routes":[{"name":"all","listeners":["https"],"service":"default/api"}]}}`, "LISTENERS", listeners)
}
