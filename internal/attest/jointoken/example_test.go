package jointoken_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "jointoken-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()

	tokens, err := jointoken.New(jointoken.Config{Store: st})
	if err != nil {
		fmt.Println(err)
		return
	}
	api := identity.ServiceRef{Namespace: "default", Name: "api"}
	// The operator creates a token (`bulwark token create --service default/api`)
	// and hands it to the workload; only its hash is stored.
	token, _, err := tokens.Create(ctx, jointoken.CreateRequest{Service: api, TTL: 10 * time.Minute})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The workload's proxy presents it once.
	res, err := tokens.Attest(ctx, attest.Evidence{JoinToken: token, Service: api})
	fmt.Println(res.Service, res.Account, err)

	// A replay is rejected, without saying why.
	_, err = tokens.Attest(ctx, attest.Evidence{JoinToken: token, Service: api})
	fmt.Println(errors.Is(err, attest.ErrRejected))
	// Output:
	// default/api api <nil>
	// true
}
