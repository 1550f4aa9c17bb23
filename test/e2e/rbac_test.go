package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// rbacPolicy is a valid AuthorizationPolicy in ns.
func rbacPolicy(ns, name string) string {
	return fmt.Sprintf(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s, namespace: %s}
spec:
  selector: {service: api}
  rules:
  - from: {services: ["%s/web"]}
    to: {methods: [GET]}
`, name, ns, ns)
}

// rbacSetup: alice may edit policies (and bind roles) in team-a, bob may
// edit policies in team-b; a mesh-admin Role exists in the root
// namespace, bound to no one.
const rbacSetup = `apiVersion: bulwark.dev/v1alpha1
kind: Role
metadata: {name: editor, namespace: team-a}
spec:
  rules:
  - verbs: [apply, get, list, delete]
    kinds: [AuthorizationPolicy, RoleBinding]
---
apiVersion: bulwark.dev/v1alpha1
kind: RoleBinding
metadata: {name: alice-edits, namespace: team-a}
spec: {role: editor, operators: [alice]}
---
apiVersion: bulwark.dev/v1alpha1
kind: Role
metadata: {name: editor, namespace: team-b}
spec:
  rules:
  - verbs: [apply, get, list, delete]
    kinds: [AuthorizationPolicy]
---
apiVersion: bulwark.dev/v1alpha1
kind: RoleBinding
metadata: {name: bob-edits, namespace: team-b}
spec: {role: editor, operators: [bob]}
---
apiVersion: bulwark.dev/v1alpha1
kind: Role
metadata: {name: mesh-admin, namespace: bulwark-system}
spec:
  rules:
  - verbs: ["*"]
    kinds: ["*"]
`

// aliceBindsRootRole is a RoleBinding in team-a naming the root Role
// mesh-admin: Roles are looked up in the binding's namespace, so it names
// no Role at all.
const aliceBindsRootRole = `apiVersion: bulwark.dev/v1alpha1
kind: RoleBinding
metadata: {name: alice-root, namespace: team-a}
spec: {role: mesh-admin, operators: [alice]}
`

// TestRBAC: two namespace operators created with `bulwark operator
// create` can each write only in their namespace; neither can write
// mesh-wide, act on the CA, create operators or tokens elsewhere, nor
// gain rights by binding a root Role; a mixed apply is refused whole;
// removing a binding removes the rights at the next request; a workload
// SVID cannot act as an operator.
func TestRBAC(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	dir := t.TempDir()
	aliceCred, bobCred := filepath.Join(dir, "alice.yaml"), filepath.Join(dir, "bob.yaml")
	out := mustCLI(t, m.env, "operator", "create", "alice", "-f", aliceCred)
	if !strings.Contains(out, "operator alice created") {
		t.Fatalf("operator create alice printed %q", out)
	}
	mustCLI(t, m.env, "operator", "create", "bob", "-f", bobCred, "--ttl", "1h")
	if st, err := os.Stat(aliceCred); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("alice's credential: %v, mode %v; want mode 0600", err, st.Mode())
	}
	alice := []string{"BULWARK_CONFIG=" + aliceCred, "HOME=" + m.dir}
	bob := []string{"BULWARK_CONFIG=" + bobCred, "HOME=" + m.dir}

	// denied runs a command that must fail with a 403 naming want.
	denied := func(env []string, want string, args ...string) {
		t.Helper()
		stdout, stderr, code := cli(t, env, "", args...)
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("bulwark %s: got exit %d, stdout %q, stderr %q; want 1 and %q",
				strings.Join(args, " "), code, stdout, stderr, want)
		}
	}
	// policies lists the policies of ns as the admin sees them.
	policies := func(ns string) []string {
		t.Helper()
		var list struct {
			Items []struct {
				Metadata struct{ Name string } `json:"metadata"`
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(mustCLI(t, m.env, "get", "policies", "-n", ns, "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		names := []string{}
		for _, it := range list.Items {
			names = append(names, it.Metadata.Name)
		}
		return names
	}

	// Before any binding, alice may do nothing.
	denied(alice, "operator alice may not list AuthorizationPolicy in namespace team-a", "get", "policies", "-n", "team-a")
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "rbac.yaml", rbacSetup))

	t.Run("namespace_admin_writes_own_namespace", func(t *testing.T) {
		mustCLI(t, alice, "apply", "-f", writeFile(t, "a.yaml", rbacPolicy("team-a", "alices")))
		if got := mustCLI(t, alice, "get", "policies", "-n", "team-a"); !strings.Contains(got, "alices") {
			t.Errorf("alice lists team-a: got %q, want alices", got)
		}
		mustCLI(t, bob, "apply", "-f", writeFile(t, "b.yaml", rbacPolicy("team-b", "bobs")))
	})
	t.Run("other_namespace_refused", func(t *testing.T) {
		denied(alice, "operator alice may not apply AuthorizationPolicy in namespace team-b; nothing was applied",
			"apply", "-f", writeFile(t, "x.yaml", rbacPolicy("team-b", "intruder")))
		if got := policies("team-b"); !slices.Equal(got, []string{"bobs"}) {
			t.Errorf("team-b policies: got %v, want [bobs]", got)
		}
		denied(alice, "operator alice may not list AuthorizationPolicy in namespace team-b", "get", "policies", "-n", "team-b")
		denied(alice, "operator alice may not list AuthorizationPolicy mesh-wide", "get", "policies", "-A")
		denied(bob, "operator bob may not delete AuthorizationPolicy in namespace team-a", "delete", "policy", "alices", "-n", "team-a")
		if got := policies("team-a"); !slices.Equal(got, []string{"alices"}) {
			t.Errorf("team-a policies after bob's delete: got %v, want [alices]", got)
		}
	})
	t.Run("root_namespace_refused", func(t *testing.T) {
		meshWide := `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-debug, namespace: bulwark-system}
spec:
  action: DENY
  rules:
  - to: {paths: ["/debug/*"]}
`
		denied(alice, "operator alice may not apply AuthorizationPolicy in namespace bulwark-system",
			"apply", "-f", writeFile(t, "root.yaml", meshWide))
		if got := policies("bulwark-system"); len(got) != 0 {
			t.Errorf("root policies: got %v, want none", got)
		}
	})
	t.Run("mixed_apply_refused_whole", func(t *testing.T) {
		denied(alice, "operator alice may not apply AuthorizationPolicy in namespace team-b; nothing was applied", "apply", "-f",
			writeFile(t, "mixed.yaml", rbacPolicy("team-a", "second")+"---\n"+rbacPolicy("team-b", "second")))
		if got := policies("team-a"); !slices.Equal(got, []string{"alices"}) {
			t.Errorf("team-a policies after the mixed apply: got %v, want [alices]", got)
		}
	})
	t.Run("mesh_wide_actions_refused", func(t *testing.T) {
		denied(alice, "operator alice may not create Operator mesh-wide",
			"operator", "create", "mallory", "-f", filepath.Join(t.TempDir(), "m.yaml"))
		denied(alice, "operator alice may not rotate CA mesh-wide", "ca", "rotate", "--intermediate")
		denied(alice, "operator alice may not get CA mesh-wide", "ca", "status")
		denied(alice, "operator alice may not create JoinToken in namespace team-b", "token", "create", "--service", "team-b/web")
		denied(alice, "operator alice may not revoke Proxy in namespace team-a", "proxy", "revoke", "team-a/web")
	})
	t.Run("binding_a_root_role_gains_nothing", func(t *testing.T) {
		f := writeFile(t, "root-binding.yaml", aliceBindsRootRole)
		denied(alice, "operator alice may not grant rights it does not hold", "apply", "-f", f)
		// Even applied by the admin, the binding names no Role of team-a.
		mustCLI(t, m.env, "apply", "-f", f)
		denied(alice, "operator alice may not get CA mesh-wide", "ca", "status")
		denied(alice, "operator alice may not apply AuthorizationPolicy in namespace team-b",
			"apply", "-f", writeFile(t, "x.yaml", rbacPolicy("team-b", "intruder")))
	})
	t.Run("removed_binding_denies_next_request", func(t *testing.T) {
		mustCLI(t, m.env, "delete", "rolebinding", "alice-edits", "-n", "team-a")
		// The bound is the next request: the admin API checks the RBAC
		// resources in the store on every request.
		denied(alice, "operator alice may not list AuthorizationPolicy in namespace team-a", "get", "policies", "-n", "team-a")
		denied(alice, "operator alice may not apply AuthorizationPolicy in namespace team-a",
			"apply", "-f", writeFile(t, "a2.yaml", rbacPolicy("team-a", "later")))
		// bob is unaffected.
		mustCLI(t, bob, "get", "policies", "-n", "team-b")
	})
	t.Run("control_plane_log_audits_denials", func(t *testing.T) {
		eventually(t, 5*time.Second, "denial in the control plane's log", func() error {
			for line := range strings.Lines(m.control.out.String()) {
				if strings.Contains(line, `"msg":"admin request denied"`) && strings.Contains(line, `"operator":"alice"`) &&
					strings.Contains(line, `"verb":"apply"`) && strings.Contains(line, `"namespace":"team-b"`) {
					return nil
				}
			}
			return fmt.Errorf("no denial of alice's apply in team-b logged")
		})
	})
	t.Run("workload_svid_is_not_an_operator", func(t *testing.T) {
		web := m.startProxy("default/web", startApp(t, "web").addr)
		svidFile := filepath.Join(web.dataDir, "svid.pem")
		// Presented whatever CAs the server asks for: the handshake fails.
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: alwaysSend(tlsConfigFromPEM(t, svidFile))}, Timeout: 5 * time.Second}
		if resp, err := c.Get("https://" + m.admin + "/v1/policies"); err == nil {
			resp.Body.Close()
			t.Errorf("workload SVID at the admin API: got %d, want the handshake refused", resp.StatusCode)
		}
		// In a credential file: crypto/tls withholds it, and the request
		// arrives without a client certificate.
		pemBytes, err := os.ReadFile(svidFile)
		if err != nil {
			t.Fatal(err)
		}
		adminCred, err := os.ReadFile(filepath.Join(m.dir, "control", "operator", "admin.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var cred map[string]string
		if err := yaml.Unmarshal(adminCred, &cred); err != nil {
			t.Fatal(err)
		}
		cred["operator"], cred["certificate"], cred["key"] = "web", string(pemBytes), string(pemBytes)
		b, err := yaml.Marshal(cred)
		if err != nil {
			t.Fatal(err)
		}
		svidEnv := []string{"BULWARK_CONFIG=" + writeFile(t, "svid-cred.yaml", string(b)), "HOME=" + m.dir}
		denied(svidEnv, "an operator client certificate is required", "get", "policies", "-n", "default")
	})
}
