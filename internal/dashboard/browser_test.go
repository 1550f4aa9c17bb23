package dashboard_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bulwarkmesh/bulwark/internal/browsertest"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/dashboard"
	"github.com/bulwarkmesh/bulwark/web"
)

// largeMesh answers the admin routes the dashboard reads for a mesh of
// 200 services in 10 namespaces, 300 proxies, about 1000 edges and 500
// denials.
func largeMesh(edgeBatch int) *fakeAPI {
	api := newAPI()
	now := time.Now().UTC()
	item := func(kind, ns, name string, status any) map[string]any {
		return map[string]any{"apiVersion": "bulwark.dev/v1alpha1", "kind": kind, "metadata": map[string]string{"namespace": ns, "name": name}, "status": status}
	}
	list := func(items []map[string]any) string {
		b, _ := json.Marshal(map[string]any{"apiVersion": "bulwark.dev/v1alpha1", "kind": "List", "items": items})
		return string(b)
	}
	svc := func(i int) (ns, name string) { return fmt.Sprintf("team-%d", i%10), fmt.Sprintf("svc-%03d", i) }
	var proxies, edges, denials []map[string]any
	for i := range 300 {
		ns, name := svc(i % 200)
		proxies = append(proxies, item("Proxy", ns, fmt.Sprintf("%s-%d", name, i), map[string]any{
			"identity": "spiffe://td/ns/" + ns + "/sa/" + name, "service": ns + "/" + name, "connected": true,
			"svidExpiry": now.Add(50 * time.Minute).Format(time.RFC3339), "bundleVersion": 1, "snapshotVersion": 9, "ackedVersion": 9}))
	}
	for i := range 1000 + edgeBatch {
		sns, sname := svc(i % 200)
		d := (i*7 + 3) % 200
		if i >= 1000 {
			d = (i*13 + 1) % 200 // pairs the first 1000 edges do not have
		}
		dns, dname := svc(d)
		edges = append(edges, item("Edge", dns, fmt.Sprintf("e-%d", i), map[string]any{
			"source": "spiffe://td/ns/" + sns + "/sa/" + sname, "sourceService": sns + "/" + sname, "destination": dns + "/" + dname,
			"method": "GET", "path": fmt.Sprintf("/p/%d", i%5), "requests": 100, "errors": i % 3, "denied": map[bool]int{true: 4}[i%50 == 0],
			"rps": 1.5, "p50ms": 2.0, "p99ms": 9.0, "mtls": true, "firstSeen": now.Format(time.RFC3339), "lastSeen": now.Format(time.RFC3339)}))
	}
	for i := range 500 {
		sns, sname := svc(i % 200)
		dns, dname := svc((i + 1) % 200)
		denials = append(denials, item("Denial", dns, fmt.Sprintf("d-%d", i), map[string]any{
			"direction": "inbound", "source": "spiffe://td/ns/" + sns + "/sa/" + sname, "destination": dns + "/" + dname,
			"method": "POST", "path": fmt.Sprintf("/x/%d", i), "reason": "no ALLOW rule matched", "httpStatus": 403, "count": 1,
			"firstSeen": now.Add(-time.Duration(i) * 5 * time.Second).Format(time.RFC3339), "lastSeen": now.Add(-time.Duration(i) * 5 * time.Second).Format(time.RFC3339)}))
	}
	everywhere := `{"everywhere":true,"namespaces":[]}`
	api.answers = map[string]string{
		"GET /v1/me": `{"operator":"admin","rights":{"Proxy":` + everywhere + `,"Service":` + everywhere + `,"Edge":` + everywhere +
			`,"Denial":` + everywhere + `,"Alert":` + everywhere + `,"AuthorizationPolicy":` + everywhere + `,"AuditLog":` + everywhere + `,"CA":` + everywhere + `}}`,
		"GET /v1/proxies":               list(proxies),
		"GET /v1/services":              list(nil),
		"GET /v1/edges":                 list(edges),
		"GET /v1/denials":               list(denials),
		"GET /v1/alerts":                list(nil),
		"GET /v1/ca":                    `{"trustDomain":"td","phase":"idle","bundleVersion":1,"roots":[],"intermediate":{"serial":"01","notAfter":"2030-01-01T00:00:00Z"},"proxies":{"connected":300}}`,
		"GET /v1/authorizationpolicies": list(nil),
		"GET /v1/policy/summary":        `{"items":[]}`,
		"GET /v1/audit":                 `{"items":[],"head":0}`,
		"GET /v1/audit/verify":          `{"ok":true,"entries":0,"checkpoints":0,"lastCheckpoint":0}`,
	}
	return api
}

// TestBrowserLargeMesh renders a mesh of 200 services and about 1000
// edges in chromium: every service is drawn once, the page stays
// responsive, and a live update of the edges redraws without duplicating
// nodes. It logs how long the first render took.
func TestBrowserLargeMesh(t *testing.T) {
	api := largeMesh(0)
	fake := clock.NewFake(time.Now())
	srv, err := dashboard.New(dashboard.Config{
		API: api, CertOperator: func(*http.Request) (string, error) { return "", fmt.Errorf("no certificate") },
		Assets: web.Assets(), Clock: fake,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	cert := selfSigned(t)
	go hs.Serve(tlsListener(ln, cert))
	t.Cleanup(func() { hs.Close() })
	addr := ln.Addr().String()
	tok, _, err := srv.IssueLogin("admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	b := browsertest.New(t, addr)
	start := time.Now()
	b.Must("login", chromedp.Navigate("https://"+addr+"/ui/login?token="+url.QueryEscape(tok)))
	b.WaitReady("topology")
	t.Logf("topology of 200 services and 1000 edges ready %s after the login link was opened", time.Since(start).Round(time.Millisecond))
	var nodes, distinct int
	b.Must("count nodes", chromedp.Evaluate(`document.querySelectorAll('#graph g.node').length`, &nodes),
		chromedp.Evaluate(`new Set([...document.querySelectorAll('#graph g.node')].map(n => n.dataset.id)).size`, &distinct))
	if nodes != 200 || distinct != 200 {
		t.Errorf("nodes: got %d (%d distinct), want 200", nodes, distinct)
	}
	// Responsive: a trivial evaluation returns (a hang detector, no timing).
	var two int
	b.Must("responsive", chromedp.Evaluate(`1+1`, &two))

	// A live update with 50 more edges: redrawn, still 200 nodes.
	var before int
	b.Must("count edges", chromedp.Evaluate(`document.querySelectorAll('#graph g.edge').length`, &before))
	more := largeMesh(50)
	api.set("GET /v1/edges?since=15m", more.answers["GET /v1/edges"])
	for range 6 {
		created := fake.TimerCreated()
		fake.Advance(time.Second)
		select {
		case <-created:
		case <-time.After(10 * time.Second):
			t.Fatal("the event stream armed no timer")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var after, n int
		if err := b.Eval(`document.querySelectorAll('#graph g.edge').length`, &after); err != nil {
			t.Fatal(err)
		}
		if err := b.Eval(`document.querySelectorAll('#graph g.node').length`, &n); err != nil {
			t.Fatal(err)
		}
		if n != 200 {
			t.Fatalf("after the update: %d nodes, want 200", n)
		}
		if after > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live update of the edges was not drawn: still %d edges", after)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.NoProblems(t)
	b.Screenshot("large-mesh.png")
	for _, page := range []string{"identities", "denials"} {
		b.Must("go to "+page, chromedp.Navigate("https://"+addr+"/ui/#/"+page))
		b.WaitReady(page)
		b.NoProblems(t)
		b.Screenshot("large-mesh-" + page + ".png")
	}
}

func tlsListener(ln net.Listener, cert tls.Certificate) net.Listener {
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
}

// selfSigned makes a serving certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
