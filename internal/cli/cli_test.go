package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/registry"
)

const policyX = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: x
  namespace: default
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET], paths: ["/public/*"]}
`

const policyY = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  action: DENY
  rules:
  - to: {paths: ["/admin/*"]}
  - from: {identities: ["spiffe://bulwark.test/ns/shop/sa/rogue"]}
`

const meshDoc = `apiVersion: bulwark.dev/v1alpha1
kind: Mesh
metadata: {name: demo}
spec:
  entry: api
  services:
  - {name: api, example: api}
`

func TestVersion(t *testing.T) {
	r := run(t, "", "version")
	if r.code != 0 || r.err != "" {
		t.Fatalf("got exit %d, stderr %q; want 0 and nothing", r.code, r.err)
	}
	re := regexp.MustCompile(`^bulwark 0\.1\.0-dev\ncommit  \S+( \(modified\))?\ngo      go1\.\d+\S*\n$`)
	if !re.MatchString(r.out) {
		t.Errorf("got %q, want it to match %s", r.out, re)
	}
}

func TestUsageErrors(t *testing.T) {
	isolateCredentials(t)
	file := writeFile(t, "x.yaml", policyX)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "unknown_flag", args: []string{"get", "policies", "--bogus"}, wantErr: "unknown flag: --bogus"},
		{name: "unknown_global_flag", args: []string{"--bogus", "version"}, wantErr: "unknown flag"},
		{name: "unknown_command", args: []string{"frobnicate"}, wantErr: "unknown command"},
		{name: "get_without_kind", args: []string{"get"}, wantErr: "arg"},
		{name: "get_too_many_args", args: []string{"get", "policies", "a", "b"}, wantErr: "arg"},
		{name: "get_unknown_type", args: []string{"get", "widgets"}, wantErr: `unknown resource type "widgets"`},
		{name: "get_bad_output", args: []string{"get", "policies", "-o", "xml"}, wantErr: "-o"},
		{name: "get_all_namespaces_with_name", args: []string{"get", "policies", "x", "-A"}, wantErr: "-A"},
		{name: "get_bad_namespace", args: []string{"get", "policies", "-n", "Bad_NS"}, wantErr: "--namespace"},
		{name: "delete_args_and_file", args: []string{"delete", "policies", "x", "-f", file}, wantErr: "not both"},
		{name: "delete_nothing", args: []string{"delete"}, wantErr: "KIND NAME"},
		{name: "delete_kind_only", args: []string{"delete", "policies"}, wantErr: "KIND NAME"},
		{name: "delete_unknown_type", args: []string{"delete", "widgets", "x"}, wantErr: "unknown resource type"},
		{name: "apply_without_file", args: []string{"apply"}, wantErr: "-f"},
		{name: "apply_with_args", args: []string{"apply", "x.yaml"}, wantErr: "unknown command"},
		{name: "token_create_without_service", args: []string{"token", "create"}, wantErr: "--service"},
		{name: "token_create_bad_service", args: []string{"token", "create", "--service", "Shop/API"}, wantErr: "--service"},
		{name: "token_create_bad_ttl", args: []string{"token", "create", "--service", "web", "--ttl", "soon"}, wantErr: "--ttl"},
		{name: "version_with_args", args: []string{"version", "extra"}, wantErr: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", tt.args...)
			if r.code != 2 {
				t.Errorf("exit code: got %d (stderr %q), want 2", r.code, r.err)
			}
			if !strings.HasPrefix(r.err, "bulwark: ") || !strings.Contains(r.err, tt.wantErr) {
				t.Errorf("stderr: got %q, want \"bulwark: ...\" containing %q", r.err, tt.wantErr)
			}
			if r.out != "" {
				t.Errorf("stdout: got %q, want nothing", r.out)
			}
		})
	}
}

func TestApplyGetDeleteRoundTrip(t *testing.T) {
	cp := newControlPlane(t)
	file := writeFile(t, "x.yaml", policyX)

	if r := cp.runOK(t, "apply", "-f", file); r.out != "authorizationpolicy default/x created\n" {
		t.Errorf("apply: got %q, want %q", r.out, "authorizationpolicy default/x created\n")
	}
	if r := cp.runOK(t, "apply", "-f", file); r.out != "authorizationpolicy default/x unchanged\n" {
		t.Errorf("re-apply: got %q, want %q", r.out, "authorizationpolicy default/x unchanged\n")
	}

	t.Run("get_json_is_a_list", func(t *testing.T) {
		r := cp.runOK(t, "get", "policies", "-o", "json")
		var list struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Items      []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal([]byte(r.out), &list); err != nil {
			t.Fatalf("decode %q: %v", r.out, err)
		}
		if list.APIVersion != config.APIVersion || list.Kind != "List" || len(list.Items) != 1 {
			t.Errorf("got apiVersion %q kind %q with %d items, want %s List with 1", list.APIVersion, list.Kind, len(list.Items), config.APIVersion)
		}
		if !strings.HasSuffix(r.out, "}\n") {
			t.Errorf("output does not end with a newline: %q", r.out)
		}
	})
	t.Run("get_one_json_is_the_object", func(t *testing.T) {
		r := cp.runOK(t, "get", "policy", "x", "-o", "json")
		o, err := config.DecodeObject([]byte(r.out))
		if err != nil || config.Ref(o) != "default/x" {
			t.Errorf("got %v, %v; want default/x", o, err)
		}
	})
	for _, args := range [][]string{{"get", "policies", "-o", "yaml"}, {"get", "ap", "x", "-o", "yaml"}, {"get", "policies", "-A", "-o", "yaml"}} {
		t.Run("yaml_round_trip_"+strings.Join(args[1:], "_"), func(t *testing.T) {
			r := cp.runOK(t, args...)
			out := writeFile(t, "out.yaml", r.out)
			if r := cp.runOK(t, "apply", "-f", out); r.out != "authorizationpolicy default/x unchanged\n" {
				t.Errorf("apply of `bulwark %s`: got %q, want unchanged", strings.Join(args, " "), r.out)
			}
		})
	}

	t.Run("delete", func(t *testing.T) {
		if r := cp.runOK(t, "delete", "policies", "x"); r.out != "authorizationpolicy default/x deleted\n" {
			t.Errorf("delete: got %q", r.out)
		}
		r := run(t, "", "--config", cp.credPath, "delete", "policies", "x")
		if r.code != 1 || r.out != "authorizationpolicy default/x not found\n" || !strings.Contains(r.err, "1 resource(s) not found") {
			t.Errorf("delete again: got exit %d, stdout %q, stderr %q; want 1, not found", r.code, r.out, r.err)
		}
		if r := cp.runOK(t, "delete", "policies", "x", "--ignore-not-found"); r.out != "" {
			t.Errorf("delete --ignore-not-found: got %q, want nothing", r.out)
		}
		if r := cp.runOK(t, "get", "policies"); r.out != "No resources found.\n" {
			t.Errorf("get after delete: got %q", r.out)
		}
	})
	t.Run("delete_from_file", func(t *testing.T) {
		cp.runOK(t, "apply", "-f", file)
		if r := cp.runOK(t, "delete", "-f", file); r.out != "authorizationpolicy default/x deleted\n" {
			t.Errorf("delete -f: got %q", r.out)
		}
	})
}

func TestApplyInputs(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"a.yaml": policyX, "b.yml": policyY, "ignored.txt": "not yaml"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		wantOut  string
		wantErr  []string // substrings of stderr
	}{
		{
			name: "multi_document_file", args: []string{"-f", writeFile(t, "two.yaml", policyX+"---\n"+policyY)},
			wantOut: "authorizationpolicy default/x created\nauthorizationpolicy shop/deny-admin created\n",
		},
		{
			name: "stdin", stdin: policyY, args: []string{"-f", "-"},
			wantOut: "authorizationpolicy shop/deny-admin created\n",
		},
		{
			name: "directory", args: []string{"-f", dir},
			wantOut: "authorizationpolicy default/x created\nauthorizationpolicy shop/deny-admin created\n",
		},
		{
			name: "repeated_flag", args: []string{"-f", writeFile(t, "x.yaml", policyX), "-f", writeFile(t, "y.yaml", policyY)},
			wantOut: "authorizationpolicy default/x created\nauthorizationpolicy shop/deny-admin created\n",
		},
		{
			name: "mesh_document_skipped_with_a_note", args: []string{"-f", writeFile(t, "mesh.yaml", meshDoc+"---\n"+policyX)},
			wantOut: "authorizationpolicy default/x created\n", wantErr: []string{`skipping Mesh "demo" (used only by bulwark up)`},
		},
		{
			name: "only_mesh", args: []string{"-f", writeFile(t, "mesh.yaml", meshDoc)},
			wantCode: 1, wantErr: []string{"nothing to apply"},
		},
		{
			name: "invalid_document_nothing_sent", args: []string{"-f", writeFile(t, "bad.yaml", policyX+"---\n"+strings.Replace(policyY, "DENY", "REJECT", 1))},
			wantCode: 1, wantErr: []string{"nothing was sent", "bad.yaml", "document 2", "spec.action"},
		},
		{
			name: "empty_file", args: []string{"-f", writeFile(t, "empty.yaml", "# nothing\n")},
			wantCode: 1, wantErr: []string{"no resources"},
		},
		{
			name: "missing_file", args: []string{"-f", filepath.Join(dir, "missing.yaml")},
			wantCode: 1, wantErr: []string{"missing.yaml"},
		},
		{
			name: "read_only_kind", args: []string{"-f", writeFile(t, "svc.yaml", "apiVersion: bulwark.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\nstatus: {identities: [], endpoints: [], ready: 0}\n")},
			wantCode: 1, wantErr: []string{"nothing was sent", "Service"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := newControlPlane(t)
			r := run(t, tt.stdin, append([]string{"--config", cp.credPath, "apply"}, tt.args...)...)
			if r.code != tt.wantCode || r.out != tt.wantOut {
				t.Errorf("got exit %d, stdout %q; want %d, %q (stderr %q)", r.code, r.out, tt.wantCode, tt.wantOut, r.err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(r.err, w) {
					t.Errorf("stderr: got %q, want it to contain %q", r.err, w)
				}
			}
			if tt.wantCode != 0 {
				if r := cp.runOK(t, "get", "policies", "-A"); r.out != "No resources found.\n" {
					t.Errorf("policies after a failed apply: got %q, want none", r.out)
				}
			}
		})
	}
}

// ageColumn is the AGE value at the end of a policy table row.
var ageColumn = regexp.MustCompile(`(?m) -?\d+[smhd]$`)

func TestGetTables(t *testing.T) {
	cp := newControlPlane(t)
	cp.runOK(t, "apply", "-f", writeFile(t, "p.yaml", policyX+"---\n"+policyY+"---\n"+strings.ReplaceAll(policyX, "name: x", "name: open-to-all")))
	ctx := context.Background()
	now := time.Now()
	records := []registry.Proxy{
		{Instance: "web-aaaa", Namespace: "default", Service: "web", Identity: "spiffe://bulwark.test/ns/default/sa/web", Address: "127.0.0.1:1001",
			Connected: true, Live: true, SVIDExpiry: now.Add(1000*24*time.Hour + 12*time.Hour), AckedVersion: 12, Locality: "eu-west/a", Draining: true},
		{Instance: "web-bbbb", Namespace: "default", Service: "web", Identity: "spiffe://bulwark.test/ns/default/sa/web", Address: "127.0.0.1:1002",
			Connected: false, Live: true, SVIDExpiry: now.Add(-time.Hour), AckedVersion: 11, LastNack: "bad"},
		{Instance: "client-cccc", Namespace: "default", Service: "client", Identity: "spiffe://bulwark.test/ns/default/sa/client",
			Connected: true, Live: true},
		{Instance: "api-dddd", Namespace: "shop", Service: "api", Identity: "spiffe://bulwark.test/ns/shop/sa/api", Address: "127.0.0.1:2001",
			Connected: true, Live: true, AckedVersion: 12},
	}
	for _, rec := range records {
		if err := cp.registry.UpdateProxy(ctx, rec.Namespace, rec.Instance, func(p *registry.Proxy) { *p = rec }); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		args []string
	}{
		{name: "policies", args: []string{"get", "policies"}},
		{name: "policies_all_namespaces", args: []string{"get", "policies", "-A"}},
		{name: "policy_by_name", args: []string{"get", "ap", "deny-admin", "-n", "shop"}},
		{name: "proxies", args: []string{"get", "proxies"}},
		{name: "proxies_all_namespaces", args: []string{"get", "px", "-A"}},
		{name: "services_all_namespaces", args: []string{"get", "services", "-A"}},
		{name: "empty_namespace", args: []string{"get", "policies", "-n", "empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cp.runOK(t, tt.args...)
			golden(t, "get_"+tt.name+".golden", ageColumn.ReplaceAllString(r.out, " <age>"))
		})
	}
}

func TestCredentialResolution(t *testing.T) {
	cp := newControlPlane(t)
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		name        string
		flag        string // --config
		env         string // BULWARK_CONFIG
		homeConfig  bool   // ~/.bulwark/config is the credential
		wantCode    int
		wantErrPart string
	}{
		{name: "flag", flag: cp.credPath},
		{name: "flag_wins_over_env", flag: cp.credPath, env: missing},
		{name: "env", env: cp.credPath},
		{name: "env_wins_over_home", env: missing, homeConfig: true, wantCode: 1, wantErrPart: "missing.yaml"},
		{name: "home", homeConfig: true},
		{name: "flag_missing_file", flag: missing, homeConfig: true, wantCode: 1, wantErrPart: "read operator credential"},
		{name: "none", wantCode: 1, wantErrPart: "no operator credential: pass --config, set BULWARK_CONFIG, or copy one to ~/.bulwark/config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := isolateCredentials(t)
			if tt.env != "" {
				t.Setenv("BULWARK_CONFIG", tt.env)
			}
			if tt.homeConfig {
				b, err := os.ReadFile(cp.credPath)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Join(home, ".bulwark"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(home, ".bulwark", "config"), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"get", "policies"}
			if tt.flag != "" {
				args = append([]string{"--config", tt.flag}, args...)
			}
			r := run(t, "", args...)
			if r.code != tt.wantCode {
				t.Fatalf("exit code: got %d (stderr %q), want %d", r.code, r.err, tt.wantCode)
			}
			if tt.wantCode == 0 && r.out != "No resources found.\n" {
				t.Errorf("stdout: got %q, want %q", r.out, "No resources found.\n")
			}
			if !strings.Contains(r.err, tt.wantErrPart) {
				t.Errorf("stderr: got %q, want it to contain %q", r.err, tt.wantErrPart)
			}
		})
	}
}

func TestUnreachableControlPlane(t *testing.T) {
	cp := newControlPlane(t)
	cp.srv.Close()
	r := run(t, "", "--config", cp.credPath, "get", "policies")
	if r.code != 1 || !strings.Contains(r.err, "is `bulwark control` running") {
		t.Errorf("got exit %d, stderr %q; want 1 and a hint", r.code, r.err)
	}
}

func TestTokenCreate(t *testing.T) {
	cp := newControlPlane(t)
	tests := []struct {
		name        string
		args        []string
		wantService identity.ServiceRef
		wantAccount string
	}{
		{name: "defaults", args: []string{"--service", "default/web"}, wantService: identity.ServiceRef{Namespace: "default", Name: "web"}, wantAccount: "web"},
		{name: "bare_service", args: []string{"--service", "web"}, wantService: identity.ServiceRef{Namespace: "default", Name: "web"}, wantAccount: "web"},
		{name: "identity_and_ttl", args: []string{"--service", "shop/api", "--identity", "api-sa", "--ttl", "1h"}, wantService: identity.ServiceRef{Namespace: "shop", Name: "api"}, wantAccount: "api-sa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cp.runOK(t, append([]string{"token", "create"}, tt.args...)...)
			if r.err != "" {
				t.Errorf("stderr: got %q, want nothing", r.err)
			}
			token := strings.TrimSuffix(r.out, "\n")
			if strings.ContainsAny(token, "\n ") || r.out != token+"\n" {
				t.Fatalf("stdout: got %q, want only the token and a newline", r.out)
			}
			if _, err := attest.ParseToken(token); err != nil {
				t.Fatalf("ParseToken(%q): %v", token, err)
			}
			res, err := cp.tokens.Attest(context.Background(), attest.Evidence{JoinToken: token, Service: tt.wantService})
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if diff := cmp.Diff(attest.Result{Service: tt.wantService, Account: tt.wantAccount}, res); diff != "" {
				t.Errorf("attested (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("ttl_over_max_refused_by_server", func(t *testing.T) {
		r := run(t, "", "--config", cp.credPath, "token", "create", "--service", "web", "--ttl", "200h")
		if r.code != 1 || r.out != "" || !strings.Contains(r.err, "ttl") {
			t.Errorf("got exit %d, stdout %q, stderr %q; want 1, nothing, a ttl error", r.code, r.out, r.err)
		}
	})
}
