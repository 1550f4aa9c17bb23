package e2e_test

// Helpers of the traffic-management tests (issue 6): proxies with labels
// and extra flags, apps that count what they answer and can hold requests
// until the test releases them, waiting for a pushed snapshot, and sending
// many requests to measure how they were spread.

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// trafficLong runs the long variants of the traffic tests.
var trafficLong = flag.Bool("traffic.long", false, "run the long variants of the traffic-management e2e tests")

// webXFCC is the X-Forwarded-Client-Cert an api app sees for a request
// from web (default trust domain).
const webXFCC = "By=spiffe://bulwark.local/ns/default/sa/api;URI=spiffe://bulwark.local/ns/default/sa/web"

// allowAll returns an AuthorizationPolicy letting callers (ns/name) call
// service (a name in default) with any method and path.
func allowAll(service string, callers ...string) string {
	quoted := make([]string, len(callers))
	for i, c := range callers {
		quoted[i] = `"` + c + `"`
	}
	return fmt.Sprintf(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-to-%s, namespace: default}
spec:
  selector: {service: %s}
  action: ALLOW
  rules:
  - from: {services: [%s]}
`, service, service, strings.Join(quoted, ", "))
}

// apply applies yaml with `bulwark apply -f`; a test failure if it fails.
func (m *mesh) apply(yaml string) {
	m.t.Helper()
	mustCLI(m.t, m.env, "apply", "-f", writeFile(m.t, "resources.yaml", yaml))
}

// startProxyLabels is startProxy with labels bound to the instance through
// its join token (`token create --label`), and extra flags. An empty app
// starts a client-only proxy (outbound and admin listeners only).
func (m *mesh) startProxyLabels(service, app string, labels map[string]string, extra ...string) *sidecar {
	m.t.Helper()
	tokArgs := []string{}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		tokArgs = append(tokArgs, "--label", k+"="+labels[k])
	}
	s := &sidecar{service: service, outbound: freeAddr(m.t), admin: freeAddr(m.t),
		dataDir: filepath.Join(m.t.TempDir(), "proxy")}
	args := []string{"proxy", "--control", m.grpc, "--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"),
		"--token-file", m.token(service, tokArgs...), "--service", service,
		"--outbound", s.outbound, "--admin", s.admin, "--data-dir", s.dataDir, "--log-level", "debug"}
	if app != "" {
		s.inbound = freeAddr(m.t)
		args = append(args, "--app", app, "--inbound", s.inbound)
	}
	s.proc = start(m.t, "proxy "+service+" "+fmt.Sprint(labels), nil, append(args, extra...)...)
	waitProxyReady(m.t, s)
	return s
}

// versioned returns the labels of an instance of version v.
func versioned(v string) map[string]string { return map[string]string{"version": v} }

// readyInfo is what the test reads of a proxy's /ready answer.
type readyInfo struct {
	Ready           bool     `json:"ready"`
	SnapshotVersion int64    `json:"snapshotVersion"`
	Connected       bool     `json:"connected"`
	Warnings        []string `json:"warnings"`
}

// ready reads a proxy's /ready answer, whatever its status.
func ready(admin string) (readyInfo, int, error) {
	resp, err := http.Get("http://" + admin + "/ready")
	if err != nil {
		return readyInfo{}, 0, err
	}
	defer resp.Body.Close()
	var ri readyInfo
	if err := json.NewDecoder(resp.Body).Decode(&ri); err != nil {
		return readyInfo{}, resp.StatusCode, fmt.Errorf("decode /ready: %w", err)
	}
	return ri, resp.StatusCode, nil
}

// snapshotVersion returns the version of the snapshot the proxy serves.
func (s *sidecar) snapshotVersion(t *testing.T) int64 {
	t.Helper()
	ri, _, err := ready(s.admin)
	if err != nil {
		t.Fatalf("proxy %s /ready: %v", s.service, err)
	}
	return ri.SnapshotVersion
}

// waitSnapshotAfter waits until the proxy serves a snapshot newer than
// version: the one a change made after reading version was pushed in.
func (s *sidecar) waitSnapshotAfter(t *testing.T, version int64) {
	t.Helper()
	eventually(t, 15*time.Second, "proxy "+s.service+" got a new snapshot", func() error {
		ri, _, err := ready(s.admin)
		if err != nil {
			return err
		}
		if ri.SnapshotVersion <= version {
			return fmt.Errorf("snapshot version %d, want > %d", ri.SnapshotVersion, version)
		}
		return nil
	})
}

// applyAndWait applies yaml and waits until every proxy in proxies serves
// a snapshot newer than the one it served before.
func (m *mesh) applyAndWait(yaml string, proxies ...*sidecar) {
	m.t.Helper()
	before := make([]int64, len(proxies))
	for i, p := range proxies {
		before[i] = p.snapshotVersion(m.t)
	}
	m.apply(yaml)
	for i, p := range proxies {
		p.waitSnapshotAfter(m.t, before[i])
	}
}

// gate holds the requests an app receives on paths under /hold until the
// test opens it; every held request is announced on arrived first.
type gate struct {
	arrived chan string
	release chan struct{}
	once    sync.Once
}

// newGate returns a closed gate that is opened when the test ends, so no
// handler outlives it.
func newGate(t *testing.T) *gate {
	g := &gate{arrived: make(chan string, 1024), release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

// open lets every held request, and every later one, through. It may be
// called more than once.
func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

// countingApp is an app that answers like startApp's and counts the
// requests it answered; requests under /hold wait at its gate, if any.
type countingApp struct {
	name string
	addr string
	hits atomic.Int64
	srv  *http.Server
}

// startCountingApp starts a countingApp on loopback; g may be nil.
func startCountingApp(t *testing.T, name string, g *gate) *countingApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &countingApp{name: name, addr: ln.Addr().String()}
	a.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if g != nil && strings.HasPrefix(r.URL.Path, "/hold") {
			g.arrived <- name + " " + r.URL.Path
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
		a.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(appAnswer{
			App: name, Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Host: r.Host,
			XFCC: r.Header.Values("X-Forwarded-Client-Cert"), Spoof: r.Header.Get("X-Bulwark-Identity"), Body: string(body),
		})
	})}
	go func() { _ = a.srv.Serve(ln) }()
	t.Cleanup(func() { a.srv.Close() })
	return a
}

// pooledClient is client with enough idle connections kept for send's
// workers, so that a batch does not open a connection per request.
func (s *sidecar) pooledClient() *http.Client {
	c := s.client()
	tr := c.Transport.(*http.Transport)
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 32, 32
	return c
}

// spread is how a batch of requests was answered.
type spread struct {
	// ByApp counts the 200 answers by the app that gave them.
	ByApp map[string]int
	// ByStatus counts every answer by status; transport errors count
	// under status 0.
	ByStatus map[int]int
	// Errors are the first transport errors.
	Errors []string
	// Elapsed is the time the whole batch took.
	Elapsed time.Duration
}

// share is the fraction of the 200 answers that app gave.
func (s spread) share(app string) float64 {
	total := 0
	for _, n := range s.ByApp {
		total += n
	}
	if total == 0 {
		return 0
	}
	return float64(s.ByApp[app]) / float64(total)
}

// send sends n GET requests to url through c with header, from workers
// concurrent senders, and returns how they were answered.
func send(c *http.Client, url string, header http.Header, n, workers int) spread {
	sp := spread{ByApp: map[string]int{}, ByStatus: map[int]int{}}
	var mu sync.Mutex
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	began := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				status, app, err := getApp(c, url, header)
				mu.Lock()
				sp.ByStatus[status]++
				if err != nil && len(sp.Errors) < 10 {
					sp.Errors = append(sp.Errors, err.Error())
				}
				if status == http.StatusOK {
					sp.ByApp[app]++
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	sp.Elapsed = time.Since(began)
	return sp
}

// getApp sends one GET and returns the status and, for a 200, the name of
// the app that answered.
func getApp(c *http.Client, url string, header http.Header) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	maps.Copy(req.Header, header)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("status %d, reading body: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", nil
	}
	var a appAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return resp.StatusCode, "", fmt.Errorf("200 with a body that is not an app's answer: %.100s", b)
	}
	return resp.StatusCode, a.App, nil
}

// accessLine is what the tests read of a proxy's access log line.
type accessLine struct {
	Time        time.Time `json:"time"`
	Msg         string    `json:"msg"`
	Direction   string    `json:"direction"`
	Destination string    `json:"destination"`
	Path        string    `json:"path"`
	Status      int       `json:"status"`
	Upstream    string    `json:"upstream"`
	Route       string    `json:"route"`
	Fault       string    `json:"fault"`
	Attempts    int       `json:"attempts"`
	Err         string    `json:"err"`
	Detail      string    `json:"detail"`
}

// accessLog returns the access log lines (JSON lines with msg "request")
// in a process's output.
func accessLog(out string) []accessLine { return logMessages(out, "request") }

// logMessages returns the JSON log lines with message msg in a process's
// output, read as access log lines (the fields they share).
func logMessages(out, msg string) []accessLine {
	var lines []accessLine
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		var l accessLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == msg {
			lines = append(lines, l)
		}
	}
	return lines
}

// kill sends SIGKILL to the process (not its group: only the proxy dies)
// and waits until it is gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	<-p.done
}

// serviceEndpoints returns the endpoints `bulwark get services NAME`
// lists for a service of the default namespace; an error, not a test
// failure, when the CLI fails.
func (m *mesh) serviceEndpoints(name string) ([]string, error) {
	m.t.Helper()
	out, errOut, code := cli(m.t, m.env, "", "get", "services", name, "-o", "json")
	if code != 0 {
		return nil, fmt.Errorf("get services %s: exit %d: %s", name, code, strings.TrimSpace(errOut))
	}
	// One object is printed as itself, not as a List.
	var svc struct {
		Kind   string `json:"kind"`
		Status struct {
			Endpoints []string `json:"endpoints"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &svc); err != nil || svc.Kind != "Service" {
		return nil, fmt.Errorf("get services %s -o json: got %s (%v), want a Service", name, out, err)
	}
	return svc.Status.Endpoints, nil
}
