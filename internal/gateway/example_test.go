package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/gateway"
)

// The gateway's Server on its own, with a plain handler in place of the
// proxy engine: `bulwark gateway` (gateway.Run) does the same with the
// engine, applying the Gateway of every snapshot.
func ExampleServer() {
	srv, err := gateway.NewServer(gateway.ServerConfig{
		Edge:   handlerEdge{http.NotFoundHandler()},
		Listen: map[string]string{"web": "127.0.0.1:0"}, // a free port
		Ready:  func(addrs map[string]string) { fmt.Println("listeners bound:", len(addrs)) },
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	err = srv.Apply(&config.Gateway{Spec: config.GatewaySpec{Listeners: []config.GatewayListener{
		{Name: "web", Port: 8080, Protocol: config.ListenerHTTP}, // redirects to https
	}}}, nil)
	if err != nil {
		panic(err)
	}
	cancel()
	<-done
	// Output: listeners bound: 1
}

// handlerEdge serves every listener with one handler and refuses
// passthrough connections.
type handlerEdge struct{ h http.Handler }

func (e handlerEdge) Edge(string, bool) http.Handler { return e.h }

func (handlerEdge) ServePassthrough(_ context.Context, c net.Conn, _ string) { c.Close() }
