package e2e_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
)

const auditPolicies = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-to-api, namespace: shop}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-to-db, namespace: shop}
spec:
  selector: {service: db}
  rules:
  - from: {services: [shop/web]}
`

// auditEntry is what the test reads of `audit tail -o json`.
type auditEntry struct {
	Seq       uint64 `json:"seq"`
	Actor     string `json:"actor"`
	Action    string `json:"action"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Source    string `json:"source"`
	Outcome   string `json:"outcome"`
	Detail    string `json:"detail"`
	Count     int64  `json:"count"`
}

// TestAuditLog: applies, deletes and a failed operator authentication are
// recorded; `audit verify` passes on the untouched log, and fails naming
// the entry after one byte of it is edited in the store file, and after
// one byte of an export is edited.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	dir := t.TempDir()
	policies := writeFile(t, "policies.yaml", auditPolicies)
	mustCLI(t, m.env, "apply", "-f", policies)
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "changed.yaml", strings.Replace(auditPolicies, "shop/web]}\n---", "shop/web, shop/admin]}\n---", 1)))
	mustCLI(t, m.env, "delete", "authorizationpolicy", "web-to-db", "-n", "shop")

	// A request without an operator certificate: 401, and counted.
	anon := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // only to be refused
	}}
	resp, err := anon.Get("https://" + m.admin + "/v1/audit")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous: got %d, want 401", resp.StatusCode)
	}

	// A proxy attests: its join token's creation and its attestation are
	// recorded.
	api := startApp(t, "api")
	m.startProxy("default/api", api.addr)

	out := mustCLI(t, m.env, "audit", "verify")
	if !strings.Contains(out, " entries, ") || !strings.HasSuffix(strings.TrimSpace(out), ", ok") {
		t.Errorf("audit verify printed %q, want a summary ending in ok", out)
	}
	entries := auditTail(t, m)
	var seen []string
	for _, e := range entries {
		seen = append(seen, e.Actor+" "+e.Action+" "+e.Kind+" "+e.Namespace+"/"+e.Name+" "+e.Outcome)
	}
	for _, want := range []string{
		"admin apply AuthorizationPolicy shop/web-to-api created",
		"admin apply AuthorizationPolicy shop/web-to-db created",
		"admin apply AuthorizationPolicy shop/web-to-api configured",
		"admin delete AuthorizationPolicy shop/web-to-db deleted",
		"admin token.create JoinToken default/api started",
		"admin token.create JoinToken default/api ok",
	} {
		if !contains(seen, want) {
			t.Errorf("audit tail lacks %q; got:\n%s", want, strings.Join(seen, "\n"))
		}
	}
	attested := false
	for _, e := range entries {
		attested = attested || (e.Action == "attest" && e.Actor == "spiffe://bulwark.local/ns/default/sa/api" && e.Namespace == "default")
	}
	if !attested {
		t.Errorf("audit tail lacks the proxy's attestation; got:\n%s", strings.Join(seen, "\n"))
	}
	table := mustCLI(t, m.env, "audit", "tail", "-n", "5")
	if !strings.Contains(table, "ACTOR") || !strings.Contains(table, "AuthorizationPolicy shop/web-to-db") {
		t.Errorf("audit tail table:\n%s", table)
	}

	// Export, verify offline with the key pinned; then edit one byte.
	export, key := filepath.Join(dir, "audit.json"), filepath.Join(dir, "audit-key.pem")
	mustCLI(t, m.env, "audit", "export", "-o", export, "--key-out", key)
	if out := mustCLI(t, m.env, "audit", "verify", "--file", export, "--key", key); !strings.Contains(out, ", ok") {
		t.Errorf("verify --file printed %q, want ok", out)
	}
	// More writes: the live log continues the export.
	mustCLI(t, m.env, "apply", "-f", policies)
	if out := mustCLI(t, m.env, "audit", "verify", "--previous", export); !strings.Contains(out, ", ok") {
		t.Errorf("verify --previous printed %q, want ok", out)
	}
	b, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(b, []byte(`"name":"web-to-db"`), []byte(`"name":"web-to-dc"`), 1)
	if bytes.Equal(edited, b) {
		t.Fatal("export does not hold web-to-db")
	}
	if err := os.WriteFile(export, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cli(t, m.env, "", "audit", "verify", "--file", export, "--key", key)
	if code != 1 || !strings.Contains(out, "BROKEN at entry 2:") {
		t.Errorf("verify of an edited export: exit %d, stdout %q, stderr %q; want 1 naming entry 2", code, out, errOut)
	}

	// Stop the control plane (it flushes the counted failures), edit one
	// byte of entry 3 in the store file, start it again.
	m.control.stop()
	db := filepath.Join(m.dir, "control", "bulwark.db")
	failures := auditEditStore(t, db, 3)
	if !strings.Contains(failures, `"action":"auth.failure"`) || !strings.Contains(failures, "operator.authn") {
		t.Errorf("no auth.failure entry for the anonymous request in the store: %s", failures)
	}
	auditRestart(t, m)
	out, errOut, code = cli(t, m.env, "", "audit", "verify")
	if code != 1 || !strings.Contains(out, "BROKEN at entry 3:") || !strings.Contains(errOut, "first bad entry 3") {
		t.Errorf("verify after an edit: exit %d, stdout %q, stderr %q; want 1 naming entry 3", code, out, errOut)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// auditTail reads the last 100 entries with `audit tail -o json`.
func auditTail(t *testing.T, m *mesh) []auditEntry {
	t.Helper()
	out := mustCLI(t, m.env, "audit", "tail", "-n", "100", "-o", "json")
	var entries []auditEntry
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e auditEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit tail line %q: %v", line, err)
		}
		entries = append(entries, e)
	}
	return entries
}

// auditEditStore flips one byte of the actor of entry seq in the bbolt
// file of a stopped control plane (bucket "kv": a 16-byte revisions header,
// then the value; see internal/store/bolt), and returns every entry's
// value, for the test to look at.
func auditEditStore(t *testing.T, path string, seq int) string {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var all strings.Builder
	err = db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("kv"))
		if b == nil {
			return fmt.Errorf("no kv bucket")
		}
		c := b.Cursor()
		prefix := []byte("/audit/entries/")
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			all.Write(v[16:])
			all.WriteByte('\n')
		}
		key := []byte(fmt.Sprintf("/audit/entries/%020d", seq))
		v := b.Get(key)
		if v == nil {
			return fmt.Errorf("no entry %d", seq)
		}
		nv := bytes.Replace(append([]byte{}, v...), []byte(`"actor":"admin"`), []byte(`"actor":"admim"`), 1)
		if bytes.Equal(nv, v) {
			return fmt.Errorf("entry %d has no actor admin: %s", seq, v[16:])
		}
		return b.Put(key, nv)
	})
	if err != nil {
		t.Fatal(err)
	}
	return all.String()
}

// auditRestart starts the control plane again on the same data dir and
// ports and waits until its admin API answers.
func auditRestart(t *testing.T, m *mesh) {
	t.Helper()
	m.control = start(t, "control-restarted", nil, "control", "--data-dir", filepath.Join(m.dir, "control"),
		"--listen", m.grpc, "--admin-listen", m.admin, "--log-level", "debug")
	eventually(t, 20*time.Second, "control plane ready again", func() error {
		if m.control.hasExited() {
			t.Fatalf("control plane exited: %v", m.control.err)
		}
		if _, _, code := cli(t, m.env, "", "get", "policies"); code != 0 {
			return fmt.Errorf("get policies: exit %d", code)
		}
		return nil
	})
}
