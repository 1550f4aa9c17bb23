package workloadapi_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	wlclient "github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/svid/workloadapi"
)

// The proxy serves its identity on a socket; the application next to it
// fetches it with go-spiffe, as it would from a SPIRE agent.
func Example() {
	dir, err := os.MkdirTemp("", "workloadapi")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "api.sock")

	srv, err := workloadapi.New(workloadapi.Config{
		Socket: socket,
		UID:    os.Getuid(), // the application's uid
		GID:    workloadapi.NotSet,
		Source: newFakeSource(clock.Real()), // in the proxy: its svid.Manager
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		fmt.Println(err)
		stop()
		return
	}

	// The application's side.
	svid, err := wlclient.FetchX509SVID(context.Background(), wlclient.WithAddr("unix://"+socket))
	if err != nil {
		fmt.Println(err)
	} else {
		fmt.Println(svid.ID)
	}

	stop()
	fmt.Println("run:", <-done)
	_, err = os.Lstat(socket)
	fmt.Println("socket removed:", os.IsNotExist(err))
	// Output:
	// spiffe://bulwark.test/ns/default/sa/api
	// run: <nil>
	// socket removed: true
}
