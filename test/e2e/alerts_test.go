package e2e_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// alertsSecret is the HMAC key of the test's webhooks.
const alertsSecret = "e2e-alert-hmac-key-0123456789"

// alertsHook is what the test's webhook receiver got.
type alertsHook struct {
	at        time.Time
	path      string
	body      []byte
	signature string
	timestamp string
	delivery  string
}

// alertsPayload is what the test reads of a webhook payload (an Alert).
type alertsPayload struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Status struct {
		Rule        string  `json:"rule"`
		Detector    string  `json:"detector"`
		Severity    string  `json:"severity"`
		Subject     string  `json:"subject"`
		Source      string  `json:"source"`
		Destination string  `json:"destination"`
		Count       int64   `json:"count"`
		Baseline    float64 `json:"baseline"`
		FiredAt     string  `json:"firedAt"`
		Summary     string  `json:"summary"`
	} `json:"status"`
}

// alertsReceiver is a real webhook receiver on a loopback port of the test
// process: /hang never answers (until the test ends), /fail answers 500,
// anything else 204 after recording the delivery.
type alertsReceiver struct {
	url  string
	mu   sync.Mutex
	got  []alertsHook
	fail int
	hang int
}

func alertsStartReceiver(t *testing.T) *alertsReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := &alertsReceiver{url: "http://" + ln.Addr().String()}
	stop := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		rc.mu.Lock()
		switch r.URL.Path {
		case "/hang":
			rc.hang++
			rc.mu.Unlock()
			select {
			case <-stop:
			case <-r.Context().Done():
			}
			return
		case "/fail":
			rc.fail++
			rc.mu.Unlock()
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		rc.got = append(rc.got, alertsHook{at: time.Now(), path: r.URL.Path, body: body,
			signature: r.Header.Get("X-Bulwark-Signature"), timestamp: r.Header.Get("X-Bulwark-Timestamp"),
			delivery: r.Header.Get("X-Bulwark-Delivery")})
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		close(stop)
		srv.Close()
	})
	return rc
}

// hooks returns the deliveries to path whose alert satisfies match.
func (rc *alertsReceiver) hooks(t *testing.T, path string, match func(alertsPayload) bool) []alertsHook {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []alertsHook
	for _, h := range rc.got {
		if h.path != path {
			continue
		}
		var p alertsPayload
		if err := json.Unmarshal(h.body, &p); err != nil {
			t.Errorf("payload %s: %v", h.body, err)
			continue
		}
		if match(p) {
			out = append(out, h)
		}
	}
	return out
}

// alertsVerify checks a delivery as docs/alerts.md tells receivers to:
// HMAC-SHA256 over "<timestamp>.<body>", and a fresh timestamp.
func alertsVerify(h alertsHook) error {
	ts, err := strconv.ParseInt(h.timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q: %v", h.timestamp, err)
	}
	if d := time.Since(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %d is %s old", ts, d)
	}
	m := hmac.New(sha256.New, []byte(alertsSecret))
	m.Write([]byte(h.timestamp + "."))
	m.Write(h.body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(h.signature)) {
		return fmt.Errorf("signature %q, want %q", h.signature, want)
	}
	return nil
}

func alertsPayloadOf(t *testing.T, h alertsHook) alertsPayload {
	t.Helper()
	var p alertsPayload
	if err := json.Unmarshal(h.body, &p); err != nil {
		t.Fatalf("payload %s: %v", h.body, err)
	}
	return p
}

// TestAlerts: a rogue identity with its own sidecar scans 50 paths of api
// (every request denied). The denial-spike rule's webhook gets a signed
// alert naming the rogue and the edge within 10 seconds, although another
// rule's webhook hangs and a third's answers 500; the new-edge alert for
// rogue -> api fires exactly once, also after a second scan;
// `bulwark get alerts` lists them; the secret is never shown.
func TestAlerts(t *testing.T) {
	t.Parallel()
	rc := alertsStartReceiver(t)
	m := startControl(t)
	api := m.startProxy("default/api", startApp(t, "api").addr)
	_ = api
	rogue := m.startClientProxy("default/rogue")
	td := m.mustCAStatus().TrustDomain
	rogueID := fmt.Sprintf("spiffe://%s/ns/default/sa/rogue", td)

	rules := fmt.Sprintf(`
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-to-api, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AlertRule
metadata: {name: denial-spike, namespace: bulwark-system}
spec:
  detector: DenialSpike
  denialSpike: {window: 10s, minDenials: 10, factor: 3}
  severity: critical
  webhooks:
  - {url: "%[1]s/spike", secret: %[2]s}
---
apiVersion: bulwark.dev/v1alpha1
kind: AlertRule
metadata: {name: denial-spike-slow, namespace: bulwark-system}
spec:
  detector: DenialSpike
  webhooks:
  - {url: "%[1]s/hang", secret: %[2]s, timeout: 30s}
  - {url: "%[1]s/fail", secret: %[2]s}
---
apiVersion: bulwark.dev/v1alpha1
kind: AlertRule
metadata: {name: new-edge, namespace: default}
spec:
  detector: NewEdge
  cooldown: 0s
  webhooks:
  - {url: "%[1]s/new", secret: %[2]s}
`, rc.url, alertsSecret)
	m.apply(rules)

	c := rogue.client()
	scan := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			resp, err := c.Get(fmt.Sprintf("http://api.default/scan/%d/admin", i))
			if err != nil {
				t.Fatalf("scan %d: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("scan %d: got %d, want 403", i, resp.StatusCode)
			}
		}
	}
	// The policy is in force on the rogue's proxy once it denies.
	eventually(t, 15*time.Second, "rogue denied", func() error {
		resp, err := c.Get("http://api.default/probe")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			return fmt.Errorf("got %d", resp.StatusCode)
		}
		return nil
	})
	started := time.Now()
	scan(0, 50)
	isSpike := func(p alertsPayload) bool {
		return p.Status.Rule == "bulwark-system/denial-spike" && p.Status.Source == rogueID && p.Status.Destination == "default/api"
	}
	isNewEdge := func(p alertsPayload) bool {
		return p.Status.Rule == "default/new-edge" && p.Status.Source == rogueID && p.Status.Destination == "default/api"
	}
	var spike alertsHook
	eventually(t, 20*time.Second, "denial-spike alert at the webhook", func() error {
		hs := rc.hooks(t, "/spike", isSpike)
		if len(hs) == 0 {
			return fmt.Errorf("no spike alert yet")
		}
		spike = hs[0]
		return nil
	})
	latency := spike.at.Sub(started)
	t.Logf("denial-spike alert delivered %s after the scan started", latency.Round(time.Millisecond))
	if latency > 10*time.Second {
		t.Errorf("denial-spike alert after %s, want within 10s", latency)
	}

	t.Run("spike_payload", func(t *testing.T) {
		if err := alertsVerify(spike); err != nil {
			t.Errorf("HMAC: %v", err)
		}
		p := alertsPayloadOf(t, spike)
		if p.Kind != "Alert" || p.Status.Detector != "DenialSpike" || p.Status.Severity != "critical" ||
			p.Status.Subject != rogueID+" -> default/api" || p.Status.Count < 10 || p.Status.Summary == "" ||
			spike.delivery != p.Metadata.Name {
			t.Errorf("got %+v (delivery %q), want a critical DenialSpike of rogue -> default/api with at least 10 denials", p, spike.delivery)
		}
	})
	t.Run("other_webhooks_tried", func(t *testing.T) {
		// The hanging and failing webhooks of the second rule were tried
		// (and did not hold the first back).
		eventually(t, 15*time.Second, "hanging and failing webhooks tried", func() error {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if rc.hang == 0 || rc.fail < 2 {
				return fmt.Errorf("hang %d, fail %d (want 1 and a retry)", rc.hang, rc.fail)
			}
			return nil
		})
	})

	t.Run("new_edge_once", func(t *testing.T) {
		eventually(t, 15*time.Second, "new-edge alert at the webhook", func() error {
			if len(rc.hooks(t, "/new", isNewEdge)) == 0 {
				return fmt.Errorf("no new-edge alert yet")
			}
			return nil
		})
		// A second scan, and its report processed: the rogue's denials
		// are counted past 100 in `get denials`.
		scan(50, 50)
		eventually(t, 25*time.Second, "second scan reported", func() error {
			out, errOut, code := cli(t, m.env, "", "get", "denials", "-o", "json")
			if code != 0 {
				return fmt.Errorf("get denials: %s", errOut)
			}
			var list struct {
				Items []denialItem `json:"items"`
			}
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				return err
			}
			var n int64
			for _, d := range list.Items {
				if d.Status.Source == rogueID {
					n += d.Status.Count
				}
			}
			if n < 101 {
				return fmt.Errorf("rogue's denials: %d", n)
			}
			return nil
		})
		hs := rc.hooks(t, "/new", isNewEdge)
		if len(hs) != 1 {
			t.Fatalf("new-edge alerts for rogue -> api: got %d, want exactly 1", len(hs))
		}
		if err := alertsVerify(hs[0]); err != nil {
			t.Errorf("HMAC: %v", err)
		}
	})

	t.Run("get_alerts", func(t *testing.T) {
		out := mustCLI(t, m.env, "get", "alerts", "-A", "-o", "json")
		var list struct {
			Kind  string          `json:"kind"`
			Items []alertsPayload `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		spikes, edges := 0, 0
		for _, a := range list.Items {
			if isSpike(a) {
				spikes++
			}
			if isNewEdge(a) {
				edges++
			}
		}
		if list.Kind != "List" || spikes == 0 || edges != 1 {
			t.Errorf("get alerts: got %d spike and %d new-edge alerts of the rogue, want at least 1 and exactly 1:\n%s", spikes, edges, out)
		}
		table := mustCLI(t, m.env, "get", "alerts", "-n", "default", "--since", "10m")
		if !strings.HasPrefix(table, "FIRED") || !strings.Contains(table, "default/new-edge") || strings.Contains(table, "denial-spike") {
			t.Errorf("get alerts -n default: got\n%s\nwant the new-edge alert only", table)
		}
	})

	t.Run("secret_never_shown", func(t *testing.T) {
		out := mustCLI(t, m.env, "get", "alertrules", "-A", "-o", "yaml")
		if strings.Contains(out, alertsSecret) || !strings.Contains(out, "<redacted>") {
			t.Errorf("get alertrules shows the secret or no placeholder:\n%s", out)
		}
		table := mustCLI(t, m.env, "get", "alertrules", "-n", "bulwark-system")
		if !strings.Contains(table, "denial-spike") || !strings.Contains(table, "DenialSpike") {
			t.Errorf("get alertrules table:\n%s", table)
		}
		if strings.Contains(m.control.out.String(), alertsSecret) {
			t.Errorf("the control plane's log shows the secret")
		}
		if !strings.Contains(m.control.out.String(), `"msg":"alert"`) {
			t.Errorf("the control plane's log has no alert line")
		}
	})
}

// TestAlertsAuthFailureBurst: clients without an SVID knock on api's
// inbound listener; its proxy reports the failed handshakes, and an
// AuthFailureBurst rule's webhook gets a signed alert naming the address.
func TestAlertsAuthFailureBurst(t *testing.T) {
	t.Parallel()
	rc := alertsStartReceiver(t)
	m := startControl(t)
	api := m.startProxy("default/api", startApp(t, "api").addr)
	m.apply(fmt.Sprintf(`
apiVersion: bulwark.dev/v1alpha1
kind: AlertRule
metadata: {name: knocking, namespace: default}
spec:
  detector: AuthFailureBurst
  authFailureBurst: {window: 1m, threshold: 5}
  webhooks:
  - {url: "%s/burst", secret: %s}
`, rc.url, alertsSecret))
	// Failures count when the proxy's report arrives, long after the
	// control plane loaded the rule (it watches the store).
	mustCLI(t, m.env, "get", "alertrules", "knocking")
	for i := 0; i < 8; i++ {
		conn, err := tls.Dial("tcp", api.inbound, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err != nil {
			continue // the handshake failed on our side: also counted
		}
		// TLS 1.3: the server refuses the missing certificate after the
		// client's side of the handshake; reading shows it.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Read(make([]byte, 1))
		conn.Close()
	}
	isBurst := func(p alertsPayload) bool {
		return p.Status.Rule == "default/knocking" && p.Status.Detector == "AuthFailureBurst" && p.Status.Subject == "address 127.0.0.1"
	}
	eventually(t, 25*time.Second, "auth-failure-burst alert at the webhook", func() error {
		if len(rc.hooks(t, "/burst", isBurst)) == 0 {
			return fmt.Errorf("no burst alert yet")
		}
		return nil
	})
	h := rc.hooks(t, "/burst", isBurst)[0]
	if err := alertsVerify(h); err != nil {
		t.Errorf("HMAC: %v", err)
	}
	if p := alertsPayloadOf(t, h); p.Status.Count < 5 {
		t.Errorf("got count %d, want at least 5", p.Status.Count)
	}
}
