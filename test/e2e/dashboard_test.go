package e2e_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bulwarkmesh/bulwark/internal/browsertest"
	"sigs.k8s.io/yaml"
)

// TestDashboardShop drives the dashboard of the shop demo in chromium:
// every page loads without console errors or failed requests, the
// topology shows the services and the rogue's denied edge, a new denial
// appears without a reload, the pages work from the keyboard and their text
// is readable, and a namespace operator sees only its namespace.
// Screenshots go to artifacts/dashboard.
func TestDashboardShop(t *testing.T) {
	listen, admin := freeAddr(t), freeAddr(t)
	p := start(t, "up", nil, "up", "-f", "../../examples/shop/mesh.yaml", "--listen", listen, "--admin-listen", admin,
		"--gateway-listen", "https="+freeAddr(t), "--gateway-listen", "http="+freeAddr(t), "--issuer-listen", freeAddr(t))
	var shop, cred, dash, link string
	eventually(t, 60*time.Second, "up prints the banner", func() error {
		if p.hasExited() {
			t.Fatalf("up exited: %v", p.err)
		}
		out := p.out.String()
		shop = submatch(`Open the shop:\s+(http://\S+)`, out)
		cred = submatch(`export BULWARK_CONFIG=(\S+)`, out)
		dash = submatch(`Dashboard:\s+(https://\S+/ui/)`, out)
		link = submatch(`Login link:\s+(https://\S+/ui/login\?token=\S+)\s+\(this machine only, single use, expires in 5m\)`, out)
		if shop == "" || cred == "" || dash == "" || link == "" {
			return errors.New("no banner yet")
		}
		return nil
	})
	if dash != "https://"+admin+"/ui/" {
		t.Errorf("dashboard URL: got %s, want https://%s/ui/", dash, admin)
	}
	env := []string{"BULWARK_CONFIG=" + cred}
	// Traffic for the graph: the visitor's pages call web, catalog, orders
	// and payments; the rogue is denied by its own sidecar every few
	// seconds.
	for range 3 {
		do(t, http.DefaultClient, http.MethodGet, shop+"/", "")
	}
	do(t, http.DefaultClient, http.MethodPost, shop+"/order", `{"product":"mug"}`)
	eventually(t, 40*time.Second, "the graph has the rogue's denied edge", func() error {
		out := mustCLI(t, env, "get", "edges", "-o", "json")
		if !strings.Contains(out, "/sa/rogue") || !strings.Contains(out, `"destination":"default/payments"`) {
			return errors.New("no rogue edge yet")
		}
		if !strings.Contains(out, `"destination":"default/catalog"`) {
			return errors.New("no web -> catalog edge yet")
		}
		return nil
	})

	b := browsertest.New(t, admin)
	b.Must("open the login link", chromedp.Navigate(link))
	b.WaitReady("topology")
	var who string
	b.Must("whoami", chromedp.Text("#whoami", &who, chromedp.ByQuery))
	if who != "admin" {
		t.Errorf("#whoami: got %q, want admin", who)
	}

	t.Run("topology", func(t *testing.T) {
		b := b.For(t)
		want := []string{"default/web", "default/catalog", "default/orders", "default/payments", "default/rogue", "default/visitor"}
		eventually(t, 20*time.Second, "graph nodes and the rogue's denied edge", func() error {
			ids := b.Attrs("#graph g.node", "data-id")
			for _, w := range want {
				if !slices.Contains(ids, w) {
					return fmt.Errorf("node %s missing; have %v", w, ids)
				}
			}
			var denied bool
			if err := b.Eval(`[...document.querySelectorAll('#graph g.edge[data-denied="true"]')].some(e => e.dataset.source.includes('rogue'))`, &denied); err != nil {
				return err
			}
			if !denied {
				return errors.New("no denied edge from rogue")
			}
			return nil
		})
		var mtls bool
		b.Must("mTLS edge", chromedp.Evaluate(`!!document.querySelector('#graph g.edge[data-source="default/web"][data-destination="default/catalog"][data-mtls="true"]')`, &mtls))
		if !mtls {
			t.Errorf("the web -> catalog edge is not shown as mTLS")
		}
		// Select the rogue's edge from the keyboard: details appear.
		b.Must("focus the rogue's edge", chromedp.Focus(`#graph g.edge[data-source="default/rogue"][data-destination="default/payments"]`, chromedp.ByQuery),
			chromedp.KeyEvent("\r"))
		var details string
		b.Must("details", chromedp.Text("#details", &details, chromedp.ByQuery))
		if !strings.Contains(details, "denied") || !strings.Contains(details, "/balance") {
			t.Errorf("edge details: got %q, want the denied /balance path", details)
		}
		b.NoProblems(t)
		b.Screenshot("topology.png")
	})

	t.Run("identities", func(t *testing.T) {
		b := b.For(t)
		b.Must("go to identities", chromedp.Navigate(dash+"#/identities"))
		b.WaitReady("identities")
		b.Must("ca status", chromedp.WaitVisible(`#ca-status[data-phase="idle"]`, chromedp.ByQuery))
		rows := b.Attrs("#proxies tr[data-identity]", "data-expiry")
		if len(rows) < 7 {
			t.Errorf("proxies table: got %d rows, want at least 7 (6 services, 2 catalogs, the gateway)", len(rows))
		}
		for i, r := range rows {
			if r != "ok" {
				t.Errorf("row %d: data-expiry %q, want ok", i, r)
			}
		}
		b.NoProblems(t)
		b.Screenshot("identities.png")
	})

	t.Run("policies", func(t *testing.T) {
		b := b.For(t)
		b.Must("go to policies", chromedp.Navigate(dash+"#/policies"))
		b.WaitReady("policies")
		pols := b.Attrs("#policies article.policy", "data-policy")
		if !slices.Contains(pols, "default/visitor-to-web") {
			t.Errorf("policies: got %v, want default/visitor-to-web among them", pols)
		}
		for _, c := range []struct{ from, to, method, path, want string }{
			{"default/visitor", "default/web", "GET", "/", "allow"},
			{"default/rogue", "default/payments", "GET", "/balance", "deny"},
		} {
			b.Must("what if "+c.from, chromedp.SetValue("#whatif-from", c.from, chromedp.ByQuery), chromedp.SetValue("#whatif-to", c.to, chromedp.ByQuery),
				chromedp.SetValue("#whatif-method", c.method, chromedp.ByQuery), chromedp.SetValue("#whatif-path", c.path, chromedp.ByQuery),
				chromedp.Click(`#whatif button[type="submit"]`, chromedp.ByQuery),
				chromedp.WaitVisible(`#whatif-result[data-decision="`+c.want+`"]`, chromedp.ByQuery))
		}
		b.NoProblems(t)
		b.Screenshot("policies.png")
	})

	t.Run("denials", func(t *testing.T) {
		b := b.For(t)
		b.Must("go to denials", chromedp.Navigate(dash+"#/denials"))
		b.WaitReady("denials")
		count := func() int {
			var n int
			if err := b.Eval(`document.querySelectorAll('#denial-feed li.denial').length`, &n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		before := count()
		// A new kind of denial: a path no policy allows, through the
		// visitor (web's sidecar denies it).
		path := fmt.Sprintf("/admin-%d", rand.IntN(1e9))
		if code, _ := do(t, http.DefaultClient, http.MethodGet, shop+path, ""); code != http.StatusForbidden {
			t.Fatalf("GET %s: got %d, want 403", path, code)
		}
		start := time.Now()
		for count() <= before {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("no new denial in the feed within 5 s (had %d)", before)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("new denial shown %s after the request", time.Since(start).Round(10*time.Millisecond))
		var found bool
		b.Must("the new denial", chromedp.Evaluate(`[...document.querySelectorAll('#denial-feed li.denial')].some(li => li.textContent.includes('`+path+`'))`, &found))
		if !found {
			t.Errorf("the feed does not show the denial of %s", path)
		}
		b.NoProblems(t)
		b.Screenshot("denials.png")
	})

	t.Run("audit", func(t *testing.T) {
		b := b.For(t)
		b.Must("go to audit", chromedp.Navigate(dash+"#/audit"))
		b.WaitReady("audit")
		b.Must("chain verified", chromedp.WaitVisible(`#audit-verify[data-ok="true"]`, chromedp.ByQuery))
		if rows := b.Attrs("#audit-log tr[data-seq]", "data-seq"); len(rows) == 0 {
			t.Errorf("audit log: no rows")
		}
		b.NoProblems(t)
		b.Screenshot("audit.png")
	})

	t.Run("keyboard", func(t *testing.T) {
		b := b.For(t)
		// From the top of a freshly loaded page, Tab reaches the skip link
		// and then the navigation in order.
		b.Must("go to topology", chromedp.Navigate(dash+"#/topology"), chromedp.Reload())
		b.WaitReady("topology")
		want := []string{"skip", "topology", "identities", "policies", "denials", "audit"}
		for _, w := range want {
			b.Must("tab", chromedp.KeyEvent("\t"))
			var got string
			b.Must("active element", chromedp.Evaluate(`document.activeElement.id || document.activeElement.dataset.page || document.activeElement.tagName`, &got))
			if got != w {
				t.Fatalf("Tab: focus on %q, want %q", got, w)
			}
		}
		// Enter on the Audit link opens the page; back on the topology,
		// Enter on a focused node opens its details.
		b.Must("enter", chromedp.KeyEvent("\r"))
		b.WaitReady("audit")
		b.Must("go to topology", chromedp.Navigate(dash+"#/topology"))
		b.WaitReady("topology")
		b.Must("focus a node", chromedp.Focus(`#graph g.node[data-id="default/web"]`, chromedp.ByQuery), chromedp.KeyEvent(" "))
		var details string
		b.Must("details", chromedp.Text("#details", &details, chromedp.ByQuery))
		if !strings.Contains(details, "default/web") || !strings.Contains(details, "Called by") {
			t.Errorf("node details: got %q", details)
		}
		b.NoProblems(t)
	})

	t.Run("contrast", func(t *testing.T) {
		b := b.For(t)
		for _, page := range []string{"topology", "identities", "policies", "denials", "audit"} {
			b.Must("go to "+page, chromedp.Navigate(dash+"#/"+page))
			b.WaitReady(page)
			var bad []string
			b.Must("contrast", chromedp.Evaluate(contrastJS, &bad))
			if len(bad) > 0 {
				t.Errorf("page %s: text below WCAG AA contrast: %v", page, bad)
			}
		}
	})

	t.Run("refused in a browser", func(t *testing.T) {
		// A fresh browser has no session: the dashboard shows nothing but
		// the 401 text, the spent banner link and an expired link too.
		short := strings.TrimSpace(mustCLI(t, env, "dashboard", "login", "--ttl", "1s"))
		time.Sleep(1500 * time.Millisecond)
		nb := browsertest.New(t, admin)
		for _, u := range []string{dash, dash + "app.js", link, short} {
			var body string
			nb.Must("open "+u, chromedp.Navigate(u), chromedp.Text("body", &body, chromedp.ByQuery))
			if !strings.HasPrefix(body, "401 unauthorized") {
				t.Errorf("%s without a session: got %q, want the 401 text", u, body)
			}
			var scripts int
			nb.Must("scripts", chromedp.Evaluate(`document.scripts.length`, &scripts))
			if scripts != 0 {
				t.Errorf("%s without a session: the page has %d scripts", u, scripts)
			}
		}
		nb.Screenshot("refused.png")
		_ = nb.TakeProblems() // the 401s, expected here
	})

	t.Run("namespace operator", func(t *testing.T) {
		dir := t.TempDir()
		viewer := filepath.Join(dir, "viewer.yaml")
		mustCLI(t, env, "operator", "create", "edge-viewer", "-f", viewer)
		roles := writeFile(t, "roles.yaml", `apiVersion: bulwark.dev/v1alpha1
kind: Role
metadata: {name: viewer, namespace: edge}
spec:
  rules:
  - verbs: [get, list]
    kinds: [Proxy, Service, AuthorizationPolicy, Edge, Denial, Alert]
---
apiVersion: bulwark.dev/v1alpha1
kind: RoleBinding
metadata: {name: edge-viewer, namespace: edge}
spec:
  role: viewer
  operators: [edge-viewer]
`)
		mustCLI(t, env, "apply", "-f", roles)
		vlink := strings.TrimSpace(mustCLI(t, []string{"BULWARK_CONFIG=" + viewer}, "dashboard", "login"))
		vb := browsertest.New(t, admin)
		vb.Must("open the viewer's link", chromedp.Navigate(vlink))
		vb.WaitReady("topology")
		eventually(t, 10*time.Second, "the gateway's node", func() error {
			if ids := vb.Attrs("#graph g.node", "data-id"); !slices.Contains(ids, "edge/shop-gateway") {
				return fmt.Errorf("nodes %v: no edge/shop-gateway", ids)
			}
			return nil
		})
		for _, page := range []string{"topology", "identities", "policies", "denials", "audit"} {
			vb.Must("go to "+page, chromedp.Navigate(dash+"#/"+page))
			vb.WaitReady(page)
			var text string
			vb.Must("page text", chromedp.Evaluate(`document.getElementById('main').innerText + [...document.querySelectorAll('[data-id],[data-identity],[data-policy],[data-source],[data-destination]')].map(e => [e.dataset.id, e.dataset.identity, e.dataset.policy, e.dataset.source, e.dataset.destination].join(' ')).join(' ')`, &text))
			for _, foreign := range []string{"default/web", "default/payments", "ns/default/", "default/visitor-to-web"} {
				if strings.Contains(text, foreign) {
					t.Errorf("page %s shows %q to an operator of namespace edge", page, foreign)
				}
			}
			vb.NoProblems(t)
			vb.Screenshot("viewer-" + page + ".png")
		}
	})
}

// contrastJS lists visible text whose contrast with its background is
// below WCAG AA (4.5:1; 3:1 for large text).
const contrastJS = `(() => {
  const lum = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
    const [r, g, b, a] = m[1].split(',').map(Number);
    if (a === 0) return null;
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const bg = (el) => { for (; el; el = el.parentElement) { const l = lum(getComputedStyle(el).backgroundColor); if (l !== null) return l; } return 1; };
  const bad = [];
  for (const el of document.querySelectorAll('a, button, h1, h2, h3, h4, p, li, td, th, label, span, strong, summary, caption, select, input')) {
    if (!el.offsetParent && el.tagName !== 'BODY') continue;
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const cs = getComputedStyle(el);
    const fg = lum(cs.color); if (fg === null) continue;
    const b = bg(el);
    const ratio = (Math.max(fg, b) + 0.05) / (Math.min(fg, b) + 0.05);
    const size = parseFloat(cs.fontSize), bold = parseInt(cs.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) bad.push(el.tagName + ' "' + el.textContent.trim().slice(0, 30) + '" ' + ratio.toFixed(2));
  }
  return bad.slice(0, 10);
})()`

// submatch returns the first group of re in s, or "".
func submatch(re, s string) string {
	if m := regexp.MustCompile(re).FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

// TestDashboardAuth checks who the dashboard answers, over plain HTTPS:
// nothing without a certificate or session; a login link works once,
// from loopback, until it expires; the session cookie is locked down; a
// session reads but never writes; cross-site and foreign-host requests are
// refused; a logged-out session is dead.
func TestDashboardAuth(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	base := "https://" + m.admin
	cred := readCredential(t, filepath.Join(m.dir, "control", "operator", "admin.yaml"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(cred.CA))
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/style.css", "/ui/api/me", "/ui/api/events", "/ui/api/v1/proxies", "/ui/nonexistent"} {
		code, body := do(t, anon, http.MethodGet, base+path, "")
		if code != http.StatusUnauthorized || strings.Contains(body, "<") || strings.Contains(body, "function") {
			t.Errorf("GET %s without credentials: got %d %q, want 401 with a plain text", path, code, body)
		}
	}
	pair, err := tls.X509KeyPair([]byte(cred.Certificate), []byte(cred.Key))
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}}
	if code, body := do(t, withCert, http.MethodGet, base+"/ui/", ""); code != http.StatusOK || !strings.Contains(body, "app.js") {
		t.Errorf("GET /ui/ with the operator certificate: got %d %q", code, body)
	}

	session := func(link string) (*http.Client, *http.Response) {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return c, resp
	}
	link := strings.TrimSpace(mustCLI(t, m.env, "dashboard", "login"))
	c, resp := session(link)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("login link: got %d to %q, want 303 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	sc := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"__Host-bulwark_session=", "Path=/", "Secure", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q: %s missing", sc, want)
		}
	}
	if strings.Contains(strings.ToLower(sc), "domain=") {
		t.Errorf("Set-Cookie %q has a Domain", sc)
	}
	if code, body := do(t, c, http.MethodGet, base+"/ui/api/me", ""); code != http.StatusOK || !strings.Contains(body, `"operator":"admin"`) {
		t.Errorf("GET /ui/api/me with the session: got %d %q", code, body)
	}
	if _, again := session(link); again.StatusCode != http.StatusUnauthorized {
		t.Errorf("login link used twice: got %d, want 401", again.StatusCode)
	}
	if _, forged := session(base + "/ui/login?token=" + strings.Repeat("A", 43)); forged.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged login link: got %d, want 401", forged.StatusCode)
	}
	short := strings.TrimSpace(mustCLI(t, m.env, "dashboard", "login", "--ttl", "1s"))
	time.Sleep(1500 * time.Millisecond)
	if _, late := session(short); late.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired login link: got %d, want 401", late.StatusCode)
	}

	// The session reads, never writes.
	post := func(path, origin, body string) int {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	policy := `{"items":[{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"x","namespace":"default"},"spec":{"action":"ALLOW","rules":[{}]}}]}`
	if code := post("/ui/api/v1/apply", base, policy); code < 400 || code >= 500 {
		t.Errorf("POST apply through the session: got %d, want 4xx", code)
	}
	if out := mustCLI(t, m.env, "get", "policies", "-A"); strings.Contains(out, " x ") || strings.Contains(out, "default/x") {
		t.Errorf("the session's apply changed the mesh: %s", out)
	}
	if code := post("/ui/api/v1/dashboard/login", base, `{}`); code != http.StatusForbidden {
		t.Errorf("a session minting a login link: got %d, want 403", code)
	}
	explain := `{"from":"default/web","to":"default/api","method":"GET","path":"/"}`
	if code := post("/ui/api/v1/policy/explain", "https://evil.example", explain); code != http.StatusForbidden {
		t.Errorf("explain from a cross-site origin: got %d, want 403", code)
	}
	if code := post("/ui/api/v1/policy/explain", base, explain); code != http.StatusOK {
		t.Errorf("explain from the dashboard's origin: got %d, want 200", code)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/ui/api/me", nil)
	req.Host = "evil.example"
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("Host evil.example: got %v %v, want 421", resp.StatusCode, err)
	}
	if code := post("/ui/logout", base, ""); code != http.StatusNoContent {
		t.Errorf("logout: got %d, want 204", code)
	}
	if code, _ := do(t, c, http.MethodGet, base+"/ui/api/me", ""); code != http.StatusUnauthorized {
		t.Errorf("after logout: got %d, want 401", code)
	}
}

// credentialFile is the part of an operator credential the tests read.
type credentialFile struct {
	CA          string `json:"ca"`
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
}

func readCredential(t *testing.T, path string) credentialFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c credentialFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}
