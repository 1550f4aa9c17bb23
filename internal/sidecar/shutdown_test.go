package sidecar_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
)

// TestShutdownServers checks the data-path stop of a graceful shutdown: a
// request in flight finishes when it does so within the timeout; past the
// timeout (on the fake clock) its connection is closed and the shutdown
// reports it. Either way the listener stops accepting at once.
func TestShutdownServers(t *testing.T) {
	tests := []struct {
		name    string
		release bool // the handler finishes before the timeout
		wantErr bool
	}{
		{name: "in_flight_request_finishes", release: true},
		{name: "timeout_closes_the_connection", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			started, release := make(chan struct{}), make(chan struct{})
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				_, _ = io.WriteString(w, "done")
			})}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { srv.Close() })
			addr := ln.Addr().String()

			type result struct {
				body string
				err  error
			}
			got := make(chan result, 1)
			go func() {
				resp, err := http.Get("http://" + addr + "/")
				if err != nil {
					got <- result{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				got <- result{string(b), err}
			}()
			<-started

			c := clock.NewFake(time.Now())
			armed := c.TimerCreated()
			done := make(chan error, 1)
			go func() { done <- sidecar.ShutdownServers(context.Background(), []*http.Server{srv}, c, 15*time.Second) }()
			select {
			case <-armed:
			case <-time.After(hangGuard):
				t.Fatal("the shutdown armed no timer")
			}
			// Stopped accepting: a new connection is refused.
			deadline := time.Now().Add(hangGuard)
			for {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					break
				}
				conn.Close()
				if time.Now().After(deadline) {
					t.Fatal("the listener still accepts during the shutdown")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if tt.release {
				close(release)
			} else {
				c.Advance(15 * time.Second)
			}
			var err2 error
			select {
			case err2 = <-done:
			case <-time.After(hangGuard):
				t.Fatal("the shutdown never returned")
			}
			if (err2 != nil) != tt.wantErr {
				t.Errorf("shutdown: got %v, want error %v", err2, tt.wantErr)
			}
			r := <-got
			if tt.release && (r.err != nil || r.body != "done") {
				t.Errorf("in-flight request: got %q, %v, want \"done\"", r.body, r.err)
			}
			if !tt.release && r.err == nil {
				t.Errorf("request past the timeout: got %q, want the connection closed", r.body)
			}
			if !tt.release {
				close(release)
			}
		})
	}
}
