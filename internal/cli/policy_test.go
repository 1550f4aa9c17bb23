package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/registry"
)

// shopPolicy lets shop/web GET below /v1/ on shop/api.
const shopPolicy = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads-api, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
    to: {methods: [GET], paths: ["/v1/*"]}
`

// policyDir writes files into a new directory and returns it.
func policyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPolicyLint(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		args     []string
		code     int
		out, err []string
	}{
		{
			name:  "clean",
			files: map[string]string{"a.yaml": shopPolicy},
			out:   []string{"1 policy: 0 errors, 0 warnings, 0 infos"},
		},
		{
			name:  "schema_error_names_file_document_and_field",
			files: map[string]string{"a.yaml": shopPolicy + "---\n" + strings.Replace(shopPolicy, "methods: [GET]", "methodz: [GET]", 1)},
			code:  1,
			out:   []string{"a.yaml#2", "spec.rules[0].to.methodz", "unknown field", "0 policies: 1 error"},
			err:   []string{"lint: 1 error"},
		},
		{
			name: "warnings_pass_without_strict",
			files: map[string]string{"a.yaml": shopPolicy + "---\n" +
				strings.NewReplacer("name: web-reads-api", "name: z-web", `paths: ["/v1/*"]`, "paths: [/v1/users]").Replace(shopPolicy)},
			out: []string{"shadowed", "shop/z-web", "spec.rules[0]", "ALLOW shop/web-reads-api rule 0 already allows", "1 warning"},
		},
		{
			name:  "warnings_fail_with_strict",
			files: map[string]string{"a.yaml": strings.Replace(shopPolicy, "  - from: {services: [shop/web]}\n", "  - from: {services: [\"*\"]}\n", 1)},
			args:  []string{"--strict"},
			code:  1,
			out:   []string{"too-wide"},
			err:   []string{"lint: 1 warning (--strict)"},
		},
		{
			name:  "json",
			files: map[string]string{"a.yaml": strings.Replace(shopPolicy, "spec:\n", "spec:\n  dryRun: true\n", 1)},
			args:  []string{"-o", "json"},
			out:   []string{`"infos": 1`, `"check": "dry-run"`, `"path": "spec.dryRun"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := policyDir(t, tt.files)
			r := run(t, "", append([]string{"policy", "lint", "-f", dir}, tt.args...)...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.code, r.out, r.err)
			}
			for _, w := range tt.out {
				if !strings.Contains(r.out, w) {
					t.Errorf("stdout: want %q in\n%s", w, r.out)
				}
			}
			for _, w := range tt.err {
				if !strings.Contains(r.err, w) {
					t.Errorf("stderr: want %q in\n%s", w, r.err)
				}
			}
		})
	}
}

func TestPolicyTestExitCodes(t *testing.T) {
	dir := policyDir(t, map[string]string{"a.yaml": shopPolicy})
	cases := func(expect string) string {
		return writeFile(t, "cases.yaml", "cases:\n- {name: web reads, from: shop/web, to: shop/api, path: /v1/users, expect: "+expect+"}\n")
	}
	if r := run(t, "", "policy", "test", "-f", dir, "--cases", cases("allow")); r.code != 0 || !strings.Contains(r.out, "PASS") {
		t.Errorf("passing case: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if r := run(t, "", "policy", "test", "-f", dir, "--cases", cases("deny")); r.code != 1 || !strings.Contains(r.out, "FAIL web reads: expected deny, got allow") {
		t.Errorf("failing case: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if r := run(t, "", "policy", "test", "-f", dir, "--cases", cases("maybe")); r.code != 2 || !strings.Contains(r.err, "cases[0].expect") {
		t.Errorf("bad cases: exit %d\n%s%s", r.code, r.out, r.err)
	}
	bad := policyDir(t, map[string]string{"a.yaml": strings.Replace(shopPolicy, "methods:", "methodz:", 1)})
	if r := run(t, "", "policy", "test", "-f", bad, "--cases", cases("allow")); r.code != 2 || !strings.Contains(r.err, "methodz") {
		t.Errorf("bad policies: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if r := run(t, "", "policy", "test", "-f", dir); r.code != 2 || !strings.Contains(r.err, "--cases") {
		t.Errorf("no --cases: exit %d\n%s%s", r.code, r.out, r.err)
	}
}

func TestPolicyExplainOffline(t *testing.T) {
	dir := policyDir(t, map[string]string{"a.yaml": shopPolicy})
	r := run(t, "", "policy", "explain", "-f", dir, "--from", "shop/web", "--to", "shop/api", "DELETE", "/v1/users/1")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.out, r.err)
	}
	for _, want := range []string{
		"request: DELETE /v1/users/1 from shop/web (spiffe://bulwark.local/ns/shop/sa/web) to shop/api",
		"decision: deny (no ALLOW rule matched)",
		"nearest ALLOW rule: shop/web-reads-api rule 0",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("want %q in\n%s", want, r.out)
		}
	}
	r = run(t, "", "policy", "explain", "-f", dir, "--from", "shop/web", "--to", "shop/api", "GET", "/v1/a%2Fb")
	if r.code != 0 || !strings.Contains(r.out, "decision: reject (400, before authorization)") {
		t.Errorf("encoded slash: exit %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, "", "policy", "explain", "-f", dir, "--from", "shop/web", "--to", "shop/api", "--ip", "nope", "GET", "/")
	if r.code != 2 || !strings.Contains(r.err, `--ip: "nope" is not an IP address`) {
		t.Errorf("bad --ip: exit %d\n%s%s", r.code, r.out, r.err)
	}
}

// registerShop registers web and api in the control plane, api running.
func registerShop(t *testing.T, cp *controlPlane) {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{"web", "api"} {
		if err := cp.registry.AddService(ctx, name, identity.ServiceRef{Namespace: "shop", Name: name}); err != nil {
			t.Fatal(err)
		}
		rec := registry.Proxy{Instance: name + "-1", Namespace: "shop", Service: name,
			Identity: "spiffe://bulwark.test/ns/shop/sa/" + name, Connected: true, Live: true, LastSeen: created}
		if name == "api" {
			rec.Address = "127.0.0.1:2001"
		}
		if err := cp.registry.UpdateProxy(ctx, "shop", rec.Instance, func(p *registry.Proxy) { *p = rec }); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPolicyDiffExplainAndApplyGuard(t *testing.T) {
	isolateCredentials(t)
	cp := newControlPlane(t)
	registerShop(t, cp)
	cp.runOK(t, "apply", "-f", writeFile(t, "p.yaml", shopPolicy))

	r := cp.runOK(t, "policy", "explain", "--from", "shop/web", "--to", "shop/api", "GET", "/v1/users")
	for _, want := range []string{"(spiffe://bulwark.test/ns/shop/sa/web)", "decision: allow by shop/web-reads-api rule 0", "policies: the live mesh at https://"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("explain: want %q in\n%s", want, r.out)
		}
	}

	cut := writeFile(t, "cut.yaml", strings.Replace(shopPolicy, "[shop/web]", "[shop/batch]", 1))
	r = cp.runOK(t, "policy", "diff", "-f", cut)
	for _, want := range []string{"- shop/web -> shop/api", "policy edges: 0 opened, 1 cut", "lock-out: shop/api would lose every caller: shop/web"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("diff: want %q in\n%s", want, r.out)
		}
	}
	r = run(t, "", "--config", cp.credPath, "policy", "diff", "-f", cut, "--exit-code", "-o", "json")
	var js struct {
		Diffs []struct {
			Source string
			Cut    []struct{ From, To string }
		}
	}
	if r.code != 1 || json.Unmarshal([]byte(r.out), &js) != nil || len(js.Diffs) != 1 || len(js.Diffs[0].Cut) != 1 || js.Diffs[0].Cut[0].From != "shop/web" {
		t.Errorf("diff --exit-code -o json: exit %d, decoded %+v\n%s%s", r.code, js, r.out, r.err)
	}
	if r := cp.runOK(t, "policy", "diff", "-f", writeFile(t, "same.yaml", shopPolicy)); !strings.Contains(r.out, "policy edges: 0 opened, 0 cut") {
		t.Errorf("diff without change:\n%s", r.out)
	}

	r = run(t, "", "--config", cp.credPath, "apply", "-f", cut)
	if r.code != 1 || !strings.Contains(r.err, "shop/api would lose every caller: shop/web") {
		t.Fatalf("apply of a lock-out: exit %d\n%s%s", r.code, r.out, r.err)
	}
	r = run(t, "", "--config", cp.credPath, "delete", "policies", "web-reads-api", "-n", "shop")
	if r.code != 1 || !strings.Contains(r.err, "shop/api would lose every caller") {
		t.Fatalf("delete of the last ALLOW policy: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if r := cp.runOK(t, "apply", "--force", "-f", cut); !strings.Contains(r.out, "configured") {
		t.Errorf("apply --force: %s", r.out)
	}
	if r := cp.runOK(t, "delete", "--force", "policies", "web-reads-api", "-n", "shop"); !strings.Contains(r.out, "deleted") {
		t.Errorf("delete --force: %s", r.out)
	}
}
