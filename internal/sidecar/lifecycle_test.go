package sidecar_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
)

// The lifecycle tests run a real control plane (control.Run) and real
// sidecars (sidecar.Run) in this process, on loopback.

// plane is a running control plane and an operator client of it.
type plane struct {
	ep     control.Endpoints
	client *admin.Client
}

func startPlane(t *testing.T) *plane {
	t.Helper()
	ready := make(chan control.Endpoints, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- control.Run(ctx, control.Config{
			DataDir: filepath.Join(t.TempDir(), "data"), TrustDomain: td.Name(),
			Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
			// The control plane's clock never moves: a proxy that leaves
			// the endpoints did not wait for the grace period.
			Clock: clock.NewFake(time.Now()),
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
	return &plane{ep: ep, client: c}
}

func (p *plane) apply(t *testing.T, doc string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if _, err := p.client.Apply(ctx, []json.RawMessage{json.RawMessage(doc)}); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// proxies returns the proxy records of service svc.
func (p *plane) proxies(t *testing.T, svc identity.ServiceRef) []config.ProxyStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	b, err := p.client.List(ctx, "proxies", svc.Namespace)
	if err != nil {
		t.Fatalf("list proxies: %v", err)
	}
	var list struct {
		Items []config.Proxy `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	var out []config.ProxyStatus
	for _, it := range list.Items {
		if it.Status.Service == svc.String() {
			out = append(out, it.Status)
		}
	}
	return out
}

// endpoints returns the live endpoints of svc.
func (p *plane) endpoints(t *testing.T, svc identity.ServiceRef) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	b, err := p.client.List(ctx, "services", svc.Namespace)
	if err != nil {
		t.Fatalf("list services: %v", err)
	}
	var list struct {
		Items []config.Service `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	for _, it := range list.Items {
		if it.Metadata.Name == svc.Name {
			return it.Status.Endpoints
		}
	}
	return nil
}

// eventually polls fn until it returns nil, failing the test after the
// hang guard.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logWatch is a slog handler that remembers which messages were logged.
type logWatch struct {
	mu   sync.Mutex
	seen map[string]chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{seen: map[string]chan struct{}{}} }

func (l *logWatch) ch(msg string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.seen[msg]
	if !ok {
		c = make(chan struct{})
		l.seen[msg] = c
	}
	return c
}

func (l *logWatch) Enabled(context.Context, slog.Level) bool { return true }

func (l *logWatch) Handle(_ context.Context, r slog.Record) error {
	c := l.ch(r.Message)
	select {
	case <-c:
	default:
		close(c)
	}
	return nil
}

func (l *logWatch) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logWatch) WithGroup(string) slog.Handler      { return l }

// wait waits until msg was logged.
func (l *logWatch) wait(t *testing.T, msg string) {
	t.Helper()
	select {
	case <-l.ch(msg):
	case <-time.After(hangGuard):
		t.Fatalf("never logged %q", msg)
	}
}

// runningSidecar is a sidecar.Run in a goroutine.
type runningSidecar struct {
	addrs  sidecar.Addrs
	cancel context.CancelFunc
	done   chan error
}

// startSidecar runs a sidecar of svc with cfg (control plane, token and
// service filled in) until the test ends.
func startSidecar(t *testing.T, p *plane, svc identity.ServiceRef, cfg sidecar.Config) *runningSidecar {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	tok, err := p.client.CreateToken(ctx, admin.TokenRequest{Service: svc.String()})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Control, cfg.CABundle, cfg.Token, cfg.Service = p.ep.GRPC, p.ep.BundlePath, tok.Token, svc
	ready := make(chan sidecar.Addrs, 1)
	var once sync.Once
	cfg.Ready = func(a sidecar.Addrs) { once.Do(func() { ready <- a }) }
	rctx, rcancel := context.WithCancel(context.Background())
	s := &runningSidecar{cancel: rcancel, done: make(chan error, 1)}
	go func() { s.done <- sidecar.Run(rctx, cfg) }()
	t.Cleanup(func() {
		rcancel()
		select {
		case <-s.done:
		case <-time.After(hangGuard):
			t.Errorf("sidecar %s did not stop", svc)
		}
	})
	select {
	case s.addrs = <-ready:
	case err := <-s.done:
		t.Fatalf("sidecar %s: %v", svc, err)
	case <-time.After(hangGuard):
		t.Fatalf("sidecar %s never ready", svc)
	}
	return s
}

// stop cancels the sidecar's context and returns Run's result.
func (s *runningSidecar) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(hangGuard):
		t.Fatal("sidecar did not stop")
		return nil
	}
}

const webToAPI = `{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy",
"metadata":{"name":"api-from-web","namespace":"default"},
"spec":{"selector":{"service":"api"},"rules":[{"from":{"services":["default/web"]}}]}}`

var webSvc = identity.ServiceRef{Namespace: "default", Name: "web"}

// slowApp answers /slow once release is closed, and anything else at
// once.
type slowApp struct {
	started chan struct{}
	release chan struct{}
}

func newSlowApp(t *testing.T) (*slowApp, string) {
	a := &slowApp{started: make(chan struct{}, 1), release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			a.started <- struct{}{}
			<-a.release
			_, _ = io.WriteString(w, "done")
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return a, srv.Listener.Addr().String()
}

func get(c *http.Client, u string) (int, string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestGracefulShutdown stops a serving proxy as SIGTERM does: the control
// plane marks it draining at once, /ready answers 503 during the drain
// delay (on the proxy's fake clock), a request in flight when it stops
// accepting completes, and leaving removes its endpoint without the grace
// period (the control plane's clock never moves). Run returns nil.
func TestGracefulShutdown(t *testing.T) {
	p := startPlane(t)
	p.apply(t, webToAPI)
	app, appAddr := newSlowApp(t)
	logs := newLogWatch()
	apiClock := clock.NewFake(time.Now())
	api := startSidecar(t, p, apiSvc, sidecar.Config{
		App: appAddr, Inbound: "127.0.0.1:0", Admin: "127.0.0.1:0", Clock: apiClock, Logger: slog.New(logs),
	})
	web := startSidecar(t, p, webSvc, sidecar.Config{Outbound: "127.0.0.1:0"})
	outbound, _ := url.Parse("http://" + web.addrs.Outbound)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(outbound)}}
	eventually(t, "web calls api", func() error {
		code, body, err := get(client, "http://api.default/ok")
		if err == nil && code != http.StatusOK {
			err = errors.New(body)
		}
		return err
	})

	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		code, body, err := get(client, "http://api.default/slow")
		inflight <- result{code, body, err}
	}()
	select {
	case <-app.started:
	case <-time.After(hangGuard):
		t.Fatal("the slow request never reached the app")
	}

	api.cancel() // SIGTERM
	eventually(t, "control plane sees api draining", func() error {
		if ps := p.proxies(t, apiSvc); len(ps) != 1 || !ps[0].Draining {
			return errors.New("not draining")
		}
		return nil
	})
	logs.wait(t, "shutdown: serving while callers learn the proxy drains")
	code, body, err := get(http.DefaultClient, "http://"+api.addrs.Admin+"/ready")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, `"draining":true`) {
		t.Errorf("/ready while draining: got %d %s (%v), want 503 with draining true", code, body, err)
	}
	// Still an endpoint while draining.
	if got := p.endpoints(t, apiSvc); len(got) != 1 {
		t.Errorf("endpoints of api during the drain delay: got %v, want its one endpoint", got)
	}

	apiClock.Advance(sidecar.DefaultDrainDelay)
	logs.wait(t, "shutdown: stopped accepting, finishing in-flight requests")
	close(app.release)
	select {
	case r := <-inflight:
		if r.err != nil || r.code != http.StatusOK || r.body != "done" {
			t.Errorf("in-flight request: got %d %q (%v), want 200 \"done\"", r.code, r.body, r.err)
		}
	case <-time.After(hangGuard):
		t.Fatal("the in-flight request never completed")
	}
	if err := api.wait(t); err != nil {
		t.Errorf("Run after a graceful shutdown: got %v, want nil", err)
	}
	if got := p.endpoints(t, apiSvc); len(got) != 0 {
		t.Errorf("endpoints of api after it left: got %v, want none (no grace period)", got)
	}
	if ps := p.proxies(t, apiSvc); len(ps) != 1 || ps[0].Connected {
		t.Errorf("record after leaving: got %+v, want one, disconnected", ps)
	}
}

// TestDrainEndpoint checks POST and DELETE /drain on the admin listener,
// and that a request a web page could send is refused.
func TestDrainEndpoint(t *testing.T) {
	p := startPlane(t)
	_, appAddr := newSlowApp(t)
	api := startSidecar(t, p, apiSvc, sidecar.Config{App: appAddr, Inbound: "127.0.0.1:0", Admin: "127.0.0.1:0", DrainDelay: -1})
	base := "http://" + api.addrs.Admin
	draining := func(want bool) func() error {
		return func() error {
			ps := p.proxies(t, apiSvc)
			if len(ps) != 1 || ps[0].Draining != want {
				return errors.New("not yet")
			}
			return nil
		}
	}
	do := func(method string, hdr map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+"/drain", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, "connected", func() error {
		if ps := p.proxies(t, apiSvc); len(ps) != 1 || !ps[0].Connected {
			return errors.New("not connected")
		}
		return nil
	})

	tests := []struct {
		name string
		hdr  map[string]string
	}{
		{"Origin", map[string]string{"Origin": "http://evil.example"}},
		{"SecFetchSite", map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"RebindingHost", map[string]string{"Host": "evil.example"}},
	}
	for _, tt := range tests {
		t.Run("Refused"+tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, base+"/drain", nil)
			for k, v := range tt.hdr {
				req.Header.Set(k, v)
			}
			if h, ok := tt.hdr["Host"]; ok {
				req.Host = h
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("got %d, want 403", resp.StatusCode)
			}
		})
	}
	if code, body, _ := get(http.DefaultClient, base+"/ready"); code != http.StatusOK {
		t.Fatalf("/ready after refused drains: got %d %s, want 200", code, body)
	}

	code, body := do(http.MethodPost, nil)
	var st sidecar.DrainStatus
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || !st.Draining || !st.ControlPlaneTold {
		t.Fatalf("POST /drain: got %d %s, want 200 draining, control plane told", code, body)
	}
	eventually(t, "control plane sees api draining", draining(true))
	if code, body, _ := get(http.DefaultClient, base+"/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"draining":true`) {
		t.Errorf("/ready while draining: got %d %s, want 503 draining", code, body)
	}
	if code, body := do(http.MethodDelete, nil); code != http.StatusOK || !strings.Contains(body, `"draining":false`) {
		t.Fatalf("DELETE /drain: got %d %s, want 200 not draining", code, body)
	}
	eventually(t, "control plane sees api healthy", draining(false))
	if code, body, _ := get(http.DefaultClient, base+"/ready"); code != http.StatusOK {
		t.Errorf("/ready after undrain: got %d %s, want 200", code, body)
	}
	if got := p.endpoints(t, apiSvc); !slices.Equal(got, []string{api.addrs.Inbound}) {
		t.Errorf("endpoints: got %v, want [%s]", got, api.addrs.Inbound)
	}
}
