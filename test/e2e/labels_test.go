package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// labelPolicies: web may call api; a DENY selects only the api instances
// labelled version=v2, for /beta/*. The caller's proxy cannot know which
// instance it will reach, so only the v2 instance's own proxy enforces it.
const labelPolicies = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-to-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-beta-on-v2, namespace: default}
spec:
  selector: {service: api, labels: {version: v2}}
  action: DENY
  rules:
  - to: {paths: ["/beta/*"]}
---
# Round robin, so that both instances are reached whatever their latency
# (peak EWMA, the default, would favour the faster one).
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: default}
spec:
  service: api
  loadBalancer: {policy: RoundRobin}
`

// TestLabelsBoundToTokens: labels given to `bulwark token create --label`
// are bound to the instance that redeems the token, shown by `get
// proxies`, and matched by policy selectors: a label-selected DENY applies
// to the v2 instance only.
func TestLabelsBoundToTokens(t *testing.T) {
	t.Parallel()
	m := startControl(t)

	if _, errOut, code := cli(t, m.env, "", "token", "create", "--service", "default/api", "--label", "version=not ok"); code == 0 || !strings.Contains(errOut, "label") {
		t.Errorf("token create with a bad label: got exit %d (%s), want an error naming the label", code, errOut)
	}

	m.startProxy("default/api", startApp(t, "api-v1").addr, "--token-file", m.token("default/api", "--label", "version=v1"))
	m.startProxy("default/api", startApp(t, "api-v2").addr, "--token-file", m.token("default/api", "--label", "version=v2"))
	web := m.startClientProxy("default/web")
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "labels.yaml", labelPolicies))

	out := mustCLI(t, m.env, "get", "proxies", "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Status struct {
				Service string `json:"service"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("get proxies -o json: %v\n%s", err, out)
	}
	versions := map[string]int{}
	for _, p := range list.Items {
		if p.Status.Service == "default/api" {
			versions[p.Metadata.Labels["version"]]++
		}
	}
	if versions["v1"] != 1 || versions["v2"] != 1 {
		t.Errorf("get proxies: api instances by version label: got %v, want one v1 and one v2\n%s", versions, out)
	}

	c := web.client()
	// Round robin reaches both instances: /beta/* is answered by v1 only,
	// v2's proxy refuses it; /stable is answered by both.
	eventually(t, 20*time.Second, "label-selected DENY in force on v2 only", func() error {
		got := map[string]int{}
		for range 4 {
			// Each path twice in a row: round robin over the two
			// instances must not pair one path with one instance.
			for _, path := range []string{"/beta/x", "/beta/x", "/stable", "/stable"} {
				resp, err := c.Get("http://api.default" + path)
				if err != nil {
					return err
				}
				var ans struct {
					App string `json:"app"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&ans)
				resp.Body.Close()
				got[fmt.Sprintf("%s %d %s", path, resp.StatusCode, ans.App)]++
			}
		}
		if got["/beta/x 200 api-v2"] > 0 {
			return fmt.Errorf("v2 answered /beta/x: %v", got)
		}
		for _, want := range []string{"/beta/x 200 api-v1", "/beta/x 403 ", "/stable 200 api-v1", "/stable 200 api-v2"} {
			if got[want] == 0 {
				return fmt.Errorf("want some %q, got %v", want, got)
			}
		}
		return nil
	})
	if code, body := do(t, c, http.MethodGet, "http://api.default/stable", ""); code != http.StatusOK {
		t.Errorf("/stable: got %d %s, want 200", code, body)
	}
}
