package cli_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/ca"
)

func TestOperatorCreate(t *testing.T) {
	cp := newControlPlane(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "creds", "alice.yaml")

	r := cp.runOK(t, "operator", "create", "alice", "-f", path, "--ttl", "24h")
	if !strings.Contains(r.out, "operator alice created") || !strings.Contains(r.out, path) || r.err != "" {
		t.Errorf("got stdout %q stderr %q, want the operator and the file named", r.out, r.err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode: got %o, want 600", st.Mode().Perm())
	}
	cred, err := admin.LoadCredential(path)
	if err != nil {
		t.Fatalf("LoadCredential: %v", err)
	}
	if cred.Operator != "alice" || cred.Server != cp.srv.URL {
		t.Errorf("credential: got operator %q server %q, want alice %q", cred.Operator, cred.Server, cp.srv.URL)
	}
	block, _ := pem.Decode([]byte(cred.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := ca.OperatorName(cert); err != nil || name != "alice" {
		t.Errorf("OperatorName: got %q, %v; want alice", name, err)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < 23*time.Hour || life > 25*time.Hour {
		t.Errorf("lifetime: got %s, want about 24h", life)
	}

	// The credential works with --config, and alice has no rights yet.
	r = run(t, "", "--config", path, "get", "policies")
	if r.code != 1 || !strings.Contains(r.err, "operator alice may not list AuthorizationPolicy in namespace default") {
		t.Errorf("get as alice: got exit %d stderr %q, want 1 and a denial", r.code, r.err)
	}
	c, err := admin.NewClient(cred)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(context.Background(), "policies", "default")
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("List as alice: got %v, want 403", err)
	}

	t.Run("refuses_to_overwrite", func(t *testing.T) {
		before, _ := os.ReadFile(path)
		r := run(t, "", "--config", cp.credPath, "operator", "create", "alice", "-f", path)
		if r.code != 1 || !strings.Contains(r.err, "exists: give another -f, or --force") {
			t.Errorf("got exit %d stderr %q, want 1 and a refusal", r.code, r.err)
		}
		if after, _ := os.ReadFile(path); string(after) != string(before) {
			t.Error("the file changed")
		}
	})
	t.Run("force_replaces", func(t *testing.T) {
		before, _ := os.ReadFile(path)
		cp.runOK(t, "operator", "create", "alice", "-f", path, "--force")
		if after, _ := os.ReadFile(path); string(after) == string(before) {
			t.Error("the file did not change")
		}
		if _, err := admin.LoadCredential(path); err != nil {
			t.Errorf("LoadCredential: %v", err)
		}
	})
	t.Run("default_file_name", func(t *testing.T) {
		t.Chdir(t.TempDir())
		cp.runOK(t, "operator", "create", "bob")
		if _, err := admin.LoadCredential("bob.yaml"); err != nil {
			t.Errorf("LoadCredential(bob.yaml): %v", err)
		}
	})
	t.Run("denied_without_rights", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "carol.yaml")
		r := run(t, "", "--config", path, "operator", "create", "carol", "-f", out)
		if r.code != 1 || !strings.Contains(r.err, "operator alice may not create Operator mesh-wide") {
			t.Errorf("got exit %d stderr %q, want 1 and a denial", r.code, r.err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("credential file: got %v, want none written", err)
		}
	})
}

func TestOperatorCreateUsage(t *testing.T) {
	cp := newControlPlane(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no_name", []string{"operator", "create"}, "accepts 1 arg"},
		{"two_names", []string{"operator", "create", "a", "b"}, "accepts 1 arg"},
		{"reserved", []string{"operator", "create", "admin"}, `NAME: "admin" is reserved`},
		{"invalid_name", []string{"operator", "create", "-alice"}, "unknown shorthand flag"},
		{"bad_character", []string{"operator", "create", "alice/x"}, "NAME: operator name"},
		{"ttl_too_long", []string{"operator", "create", "alice", "--ttl", "9000h"}, "--ttl: must be between 1h0m0s and 8760h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", append([]string{"--config", cp.credPath}, tt.args...)...)
			if r.code != 2 || !strings.Contains(r.err, tt.want) {
				t.Errorf("got exit %d stderr %q, want 2 and %q", r.code, r.err, tt.want)
			}
		})
	}
}
