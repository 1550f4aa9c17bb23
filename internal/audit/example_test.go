package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// Append entries, export the log, and verify the export offline with the
// pinned public key.
func Example() {
	dir, _ := os.MkdirTemp("", "audit-example-")
	defer os.RemoveAll(dir)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	ctx := context.Background()
	log, err := audit.Open(ctx, audit.Config{Store: st, Keys: keymanager.NewMemory(), CheckpointEvery: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = log.Append(ctx, audit.Entry{Actor: "alice", Action: audit.ActionApply, Kind: "AuthorizationPolicy", Namespace: "shop", Name: "api"})
	_ = log.Append(ctx, audit.Entry{Actor: "alice", Action: audit.ActionDelete, Kind: "AuthorizationPolicy", Namespace: "shop", Name: "api"})

	x, _ := log.Export(ctx)
	file, _ := json.Marshal(x)
	rep, _, err := audit.VerifyExport(file, []byte(log.PublicKeyPEM()))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("ok=%v entries=%d checkpoints=%d last=%d\n", rep.OK, rep.Entries, rep.Checkpoints, rep.LastCheckpoint)
	// Output: ok=true entries=3 checkpoints=1 last=3
}
