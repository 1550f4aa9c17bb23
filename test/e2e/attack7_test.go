package e2e_test

// Attack tests of issue 7's surface on real processes: an anonymous flood
// of the admin API from hundreds of loopback addresses leaves a bounded
// trace in the audit log and the control plane's log, and AlertRules whose
// webhooks point at a metadata service are refused by the CLI, naming the
// field.

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// attack7Entry is what the test reads of `audit tail -o json`.
type attack7Entry struct {
	Action string `json:"action"`
	Source string `json:"source"`
	Count  int64  `json:"count"`
}

// attack7Failures reads the auth.failure entries of the whole log
// (`audit tail -n 1000`).
func attack7Failures(t *testing.T, m *mesh) []attack7Entry {
	t.Helper()
	out := mustCLI(t, m.env, "audit", "tail", "-n", "1000", "-o", "json")
	var got []attack7Entry
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e attack7Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit tail line %q: %v", line, err)
		}
		if e.Action == "auth.failure" {
			got = append(got, e)
		}
	}
	return got
}

func TestAttack7AnonymousFloodIsBounded(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	const (
		addrs   = 400 // 127.0.1.1 ... : distinct sources
		perAddr = 2
	)
	var wg sync.WaitGroup
	var mu sync.Mutex
	sent, unauthorized := 0, 0
	sem := make(chan struct{}, 8)
	for i := range addrs {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			local := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/250), byte(1+i%250))}
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				DialContext:       (&net.Dialer{LocalAddr: local}).DialContext,
				TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
				DisableKeepAlives: true,
			}}
			for range perAddr {
				resp, err := c.Get("https://" + m.admin + "/v1/policies")
				mu.Lock()
				sent++
				if err == nil {
					if resp.StatusCode == http.StatusUnauthorized {
						unauthorized++
					}
					resp.Body.Close()
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if unauthorized != addrs*perAddr {
		t.Fatalf("got %d answers 401 of %d requests, want all", unauthorized, sent)
	}
	// The aggregator flushes every 10s: wait until every failure is
	// counted, then look at how many entries they took.
	var entries []attack7Entry
	eventually(t, 30*time.Second, "every failure counted in the audit log", func() error {
		entries = attack7Failures(t, m)
		var total int64
		for _, e := range entries {
			total += e.Count
		}
		if total < int64(unauthorized) {
			return fmt.Errorf("%d failures counted of %d", total, unauthorized)
		}
		return nil
	})
	// At most 256 distinct sources per period and one "other" entry, and
	// the flood may straddle two periods.
	if len(entries) > 2*257 {
		t.Errorf("%d failures from %d addresses: got %d audit entries, want at most %d", unauthorized, addrs, len(entries), 2*257)
	}
	if lines := strings.Count(m.control.out.String(), "admin request without operator certificate"); lines > 12 {
		t.Errorf("%d anonymous requests: got %d control plane log lines, want at most 12", unauthorized, lines)
	}
	if _, errOut, code := cli(t, m.env, "", "audit", "verify"); code != 0 {
		t.Errorf("audit verify after the flood: exit %d: %s", code, errOut)
	}
}

func TestAttack7WebhookSSRFRefused(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	for _, u := range []string{
		"https://169.254.169.254/latest/meta-data/",
		"http://169.254.169.254/latest/meta-data/",
		"https://[fd00:ec2::254]/x",
		"https://[fd00:1::5]/x", // accepted: a private address
		"https://[fe80::a9fe:a9fe]/latest",
		"https://0.0.0.0/x",
		"file:///etc/shadow",
	} {
		doc := fmt.Sprintf(`apiVersion: bulwark.dev/v1alpha1
kind: AlertRule
metadata: {name: ssrf, namespace: default}
spec:
  detector: NewEdge
  webhooks:
  - {url: "%s", secret: attack7-secret-0123456789}
`, u)
		out, errOut, code := cli(t, m.env, "", "apply", "-f", writeFile(t, "ssrf.yaml", doc))
		if strings.Contains(u, "fd00:1::") {
			if code != 0 {
				t.Errorf("apply %s: exit %d: %s, want it accepted", u, code, errOut)
			}
			continue
		}
		if code == 0 {
			t.Errorf("apply %s: exit 0 (%s), want it refused", u, out)
			continue
		}
		if !strings.Contains(errOut, "spec.webhooks[0].url") {
			t.Errorf("apply %s: got %q, want an error naming spec.webhooks[0].url", u, errOut)
		}
		if strings.Contains(out+errOut, "attack7-secret-0123456789") {
			t.Errorf("apply %s: the output quotes the secret", u)
		}
	}
	for _, format := range []string{"yaml", "json"} {
		out := mustCLI(t, m.env, "get", "alertrules", "-n", "default", "-o", format)
		if strings.Contains(out, "attack7-secret-0123456789") {
			t.Errorf("get alertrules -o %s shows the secret:\n%s", format, out)
		}
	}
}
