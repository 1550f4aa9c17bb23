package sidecar_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/run"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
)

// TestServeHooks runs a client-only proxy with no app and no listener of
// its own, as the gateway does: Serve gets the engine and runs its task
// in the group, OnSnapshot is called for the first snapshot, /ready
// follows Readiness, no endpoint is registered, and once the graceful
// shutdown began AddServer refuses and AddListener closes.
func TestServeHooks(t *testing.T) {
	p := startPlane(t)
	edge := identity.ServiceRef{Namespace: "default", Name: "edge"}
	var (
		snapshots atomic.Int32
		mu        sync.Mutex
		env       sidecar.Env
		problems  = []string{"listener https: cannot bind"}
		taskRan   = make(chan struct{})
		taskDone  = make(chan struct{})
	)
	s := startSidecar(t, p, edge, sidecar.Config{
		Admin:      "127.0.0.1:0",
		OnSnapshot: func() { snapshots.Add(1) },
		Serve: func(e sidecar.Env) ([]run.Task, error) {
			if e.Engine == nil || e.Logger == nil || e.Registry == nil || e.SVIDReady == nil || e.AddServer == nil || e.AddListener == nil {
				t.Errorf("Env has nil fields: %+v", e)
			}
			mu.Lock()
			env = e
			mu.Unlock()
			return []run.Task{func(ctx context.Context) error {
				close(taskRan)
				<-ctx.Done()
				close(taskDone)
				return nil
			}}, nil
		},
		Readiness: func() ([]string, map[string]string) {
			mu.Lock()
			defer mu.Unlock()
			return problems, map[string]string{"https": "127.0.0.1:1"}
		},
	})
	select {
	case <-taskRan:
	case <-time.After(hangGuard):
		t.Fatal("the Serve task never ran")
	}
	if snapshots.Load() < 1 {
		t.Errorf("OnSnapshot calls: got %d, want at least 1", snapshots.Load())
	}
	select {
	case <-env.SVIDReady:
	default:
		t.Error("SVIDReady not closed once ready")
	}
	var st struct {
		Ready     bool              `json:"ready"`
		NotReady  []string          `json:"notReady"`
		Listeners map[string]string `json:"listeners"`
	}
	readyz := func() int {
		t.Helper()
		resp, err := http.Get("http://" + s.addrs.Admin + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		st.NotReady, st.Listeners = nil, nil
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if code := readyz(); code != http.StatusServiceUnavailable || st.Ready || len(st.NotReady) != 1 || st.Listeners["https"] != "127.0.0.1:1" {
		t.Errorf("/ready with a problem: got %d %+v, want 503 listing it", code, st)
	}
	mu.Lock()
	problems = nil
	mu.Unlock()
	if code := readyz(); code != http.StatusOK || !st.Ready {
		t.Errorf("/ready without problems: got %d %+v, want 200", code, st)
	}
	for _, pr := range p.proxies(t, edge) {
		if pr.Address != "" {
			t.Errorf("the client-only proxy registered address %q", pr.Address)
		}
	}
	if eps := p.endpoints(t, edge); len(eps) != 0 {
		t.Errorf("endpoints: got %v, want none", eps)
	}
	// The graceful shutdown: servers and listeners given later are
	// refused and closed.
	srv := &http.Server{}
	if !env.AddServer(srv) {
		t.Fatal("AddServer before the shutdown: got false")
	}
	s.cancel()
	if err := s.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case <-taskDone:
	default:
		t.Error("the Serve task outlived Run")
	}
	if env.AddServer(&http.Server{}) {
		t.Error("AddServer after the shutdown: got true")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env.AddListener(ln)
	if _, err := ln.Accept(); err == nil {
		t.Error("a listener added after the shutdown still accepts")
	}
}

// TestServeErrorStopsSidecar: an error of Serve is Run's, before anything
// starts.
func TestServeErrorStopsSidecar(t *testing.T) {
	p := startPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	tok, err := p.client.CreateToken(ctx, admin.TokenRequest{Service: "default/edge"})
	if err != nil {
		t.Fatal(err)
	}
	want := errors.New("listener config refused")
	err = sidecar.Run(ctx, sidecar.Config{
		Control: p.ep.GRPC, CABundle: p.ep.BundlePath, Token: tok.Token,
		Service: identity.ServiceRef{Namespace: "default", Name: "edge"},
		Serve:   func(sidecar.Env) ([]run.Task, error) { return nil, want },
	})
	if !errors.Is(err, want) {
		t.Errorf("Run: got %v, want %v", err, want)
	}
}
