package sidecar

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestServerSetPrunesShutDownServers: a server its owner shuts down (the
// gateway replaces a listener's server on every settings change) leaves
// the set, so the set does not grow with each change; the others stay
// for the graceful shutdown.
func TestServerSetPrunesShutDownServers(t *testing.T) {
	ss := &serverSet{}
	kept := &http.Server{}
	ss.add(kept)
	for range 100 {
		srv := &http.Server{}
		if !ss.add(srv) {
			t.Fatal("add refused before the shutdown")
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The shutdown hooks run in goroutines of their own.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ss.mu.Lock()
		n := len(ss.servers)
		ss.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers in the set: got %d, want 1", n)
		}
		time.Sleep(time.Millisecond) // waiting for goroutines of net/http
	}
	ss.mu.Lock()
	got := ss.servers[0]
	ss.mu.Unlock()
	if got != kept {
		t.Error("the server left in the set is not the one never shut down")
	}
}
