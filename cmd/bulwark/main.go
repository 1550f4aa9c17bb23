// Command bulwark is the single binary of the Bulwark service mesh: the
// control plane, the sidecar proxy, the local mesh runner and the operator
// CLI. All of it lives in internal/cli; main only wires signals and the exit
// code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulwarkmesh/bulwark/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}
