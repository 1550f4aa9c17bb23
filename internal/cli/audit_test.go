package cli_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// auditExportFile writes the export of a real log of 2 entries and a
// checkpoint, and its public key, and returns their paths and the export.
func auditExportFile(t *testing.T) (file, key string, export []byte) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	log, err := audit.Open(ctx, audit.Config{Store: st, Keys: keymanager.NewMemory(), CheckpointEvery: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"p1", "p2"} {
		if err := log.Append(ctx, audit.Entry{Actor: "alice", Action: audit.ActionApply, Kind: "AuthorizationPolicy", Namespace: "shop", Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	x, err := log.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	export, err = json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "audit.json", string(export)), writeFile(t, "audit-key.pem", log.PublicKeyPEM()), export
}

func TestAuditVerifyFile(t *testing.T) {
	isolateCredentials(t)
	file, key, export := auditExportFile(t)
	edited := writeFile(t, "edited.json", strings.Replace(string(export), `"p1"`, `"p0"`, 1))
	k := newKey(t)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	wrongKey := writeFile(t, "wrong.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"pinned", []string{"--file", file, "--key", key}, 0, "3 entries, 1 checkpoints, last checkpoint seq 3, ok\n", ""},
		{"trusting-the-file", []string{"--file", file}, 0, ", ok", "trusting the public key in the file"},
		{"edited", []string{"--file", edited, "--key", key}, 1, "BROKEN at entry 1: entry 1 was edited", "first bad entry 1"},
		{"wrong-key", []string{"--file", file, "--key", wrongKey}, 1, "BROKEN at entry 3: checkpoint at entry 3: the signature does not verify", ""},
		{"json", []string{"--file", file, "--key", key, "-o", "json"}, 0, `"ok": true`, ""},
		{"missing-file", []string{"--file", filepath.Join(t.TempDir(), "nope.json")}, 1, "", "--file:"},
		{"not-an-export", []string{"--file", key}, 1, "", "export file"},
		{"bad-key", []string{"--file", file, "--key", file}, 1, "", "key:"},
		{"previous-same", []string{"--file", file, "--key", key, "--previous", file}, 0, ", ok", ""},
		{"previous-differs", []string{"--file", file, "--key", key, "--previous", edited}, 1, "BROKEN at entry 1: entry 1 differs from the previous export", ""},
		{"previous-missing", []string{"--file", file, "--previous", filepath.Join(t.TempDir(), "nope.json")}, 1, "", "--previous:"},
		{"key-without-file", []string{"--key", key}, 2, "", "--key goes with --file"},
		{"bad-output", []string{"--file", file, "-o", "yaml"}, 2, "", "--output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", append([]string{"audit", "verify"}, tt.args...)...)
			if r.code != tt.wantCode || !strings.Contains(r.out, tt.wantOut) || !strings.Contains(r.err, tt.wantErr) {
				t.Errorf("got exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.out, r.err, tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
}

func TestAuditUsageErrors(t *testing.T) {
	isolateCredentials(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"tail-zero-lines", []string{"audit", "tail", "-n", "0"}, "-n"},
		{"tail-too-many-lines", []string{"audit", "tail", "-n", "1001"}, "-n"},
		{"tail-bad-output", []string{"audit", "tail", "-o", "yaml"}, "--output"},
		{"tail-fast-interval", []string{"audit", "tail", "--follow", "--interval", "1ms"}, "--interval"},
		{"export-without-output", []string{"audit", "export"}, "-o FILE is required"},
		{"extra-argument", []string{"audit", "tail", "x"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", tt.args...)
			if r.code != 2 || !strings.Contains(r.err, tt.want) {
				t.Errorf("got exit %d, stderr %q; want 2 naming %q", r.code, r.err, tt.want)
			}
		})
	}
}

func TestAuditWithoutLogOnServer(t *testing.T) {
	cp := newControlPlane(t)
	r := run(t, "", "--config", cp.credPath, "audit", "tail")
	if r.code != 1 || !strings.Contains(r.err, "no audit log on this server") {
		t.Errorf("got exit %d, stderr %q; want 1 saying there is no audit log", r.code, r.err)
	}
}
