package admin_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/admin"
)

func TestCredentialWriteAndLoad(t *testing.T) {
	a := newAPI(t)
	path := filepath.Join(t.TempDir(), "nested", "admin.yaml")
	if err := a.cred.Write(path); err != nil {
		t.Fatalf("Write: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode: got %o, want 600", mode)
	}
	got, err := admin.LoadCredential(path)
	if err != nil {
		t.Fatalf("LoadCredential: %v", err)
	}
	if diff := cmp.Diff(a.cred, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestLoadCredentialRejects(t *testing.T) {
	a := newAPI(t)
	other := a.credential(t, "bob")
	tests := []struct {
		name    string
		mutate  func(c *admin.Credential)
		extra   string // appended to the file
		wantErr string
	}{
		{name: "wrong_kind", mutate: func(c *admin.Credential) { c.Kind = "Config" }, wantErr: "apiVersion/kind"},
		{name: "wrong_api_version", mutate: func(c *admin.Credential) { c.APIVersion = "v1" }, wantErr: "apiVersion/kind"},
		{name: "plain_http_server", mutate: func(c *admin.Credential) { c.Server = strings.Replace(c.Server, "https://", "http://", 1) }, wantErr: "server"},
		{name: "server_without_host", mutate: func(c *admin.Credential) { c.Server = "https://" }, wantErr: "server"},
		{name: "no_ca", mutate: func(c *admin.Credential) { c.CA = "" }, wantErr: "ca:"},
		{name: "key_of_another_certificate", mutate: func(c *admin.Credential) { c.Key = other.Key }, wantErr: "certificate/key"},
		{name: "no_key", mutate: func(c *admin.Credential) { c.Key = "" }, wantErr: "certificate/key"},
		{name: "unknown_field", mutate: func(*admin.Credential) {}, extra: "token: abc\n", wantErr: "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *a.cred
			tt.mutate(&c)
			path := filepath.Join(t.TempDir(), "cred.yaml")
			if err := c.Write(path); err != nil {
				t.Fatal(err)
			}
			if tt.extra != "" {
				f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteString(tt.extra)
				f.Close()
			}
			_, err := admin.LoadCredential(path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadCredential: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	t.Run("missing_file", func(t *testing.T) {
		if _, err := admin.LoadCredential(filepath.Join(t.TempDir(), "none")); err == nil {
			t.Errorf("got no error, want one")
		}
	})
}
