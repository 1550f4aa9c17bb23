package e2e_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// failoverPolicy retries what a dead instance causes (refused connections,
// streams reset by its death, gateway errors) and ejects an endpoint after
// three gateway errors in a row.
const failoverPolicy = `apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: default}
spec:
  service: api
  retries:
    attempts: 2
    retryOn: [connect-failure, reset, gateway-error]
  outlierDetection:
    consecutiveGatewayErrors: 3
    baseEjectionTime: 30s
`

// TestTrafficFailover: one of three api instances dies (its proxy gets
// SIGKILL) under a steady load from web; retries and outlier ejection keep
// failures under 0.5% of the requests, every failure is accounted for, and
// the dead endpoint gets no more requests once it is ejected.
func TestTrafficFailover(t *testing.T) {
	const rate = 200
	total, killAt := 6*time.Second, 2*time.Second
	if *trafficLong {
		total, killAt = 40*time.Second, 10*time.Second
	}
	m := startControl(t)
	apps := make([]*countingApp, 3)
	apis := make([]*sidecar, 3)
	for i := range apps {
		apps[i] = startCountingApp(t, fmt.Sprintf("api-%d", i+1), nil)
		apis[i] = m.startProxy("default/api", apps[i].addr)
	}
	web := m.startClientProxy("default/web")
	m.apply(allowAll("api", "default/web"))
	c := web.pooledClient()
	eventually(t, 15*time.Second, "web may call api", func() error {
		if sp := send(c, "http://api.default/warm", nil, 10, 2); sp.ByStatus[http.StatusOK] != 10 {
			return fmt.Errorf("answers by status %v, errors %v", sp.ByStatus, sp.Errors)
		}
		return nil
	})
	m.applyAndWait(failoverPolicy, web)

	l := startLoad(t, web.outbound, "http://api.default/load", webXFCC, rate)
	ph := &phases{t: t, load: l}
	ph.begin("three instances")
	time.Sleep(killAt)

	// Kill the instance that answered the most so far: the one the load
	// balancer relies on most.
	victim := 0
	for i, a := range apps {
		if a.hits.Load() > apps[victim].hits.Load() {
			victim = i
		}
	}
	ph.begin("one instance killed (" + apps[victim].name + ")")
	killedAt := time.Now()
	okAtKill := l.ok.Load()
	apis[victim].proc.kill(t)
	hitsAtKill := make([]int64, len(apps))
	for i, a := range apps {
		hitsAtKill[i] = a.hits.Load()
	}
	time.Sleep(total - killAt)
	ph.end()
	st := l.stop()
	t.Logf("load: %s%s", st, ph)

	if st.Sent < int64(rate*total.Seconds()/2) {
		t.Errorf("only %d requests sent in %s at %d/s: the load generator could not keep up", st.Sent, total, rate)
	}
	// Every request is accounted for: it passed, or failed with a
	// recorded reason.
	if st.OK+st.Failed != st.Sent {
		t.Errorf("%d ok + %d failed != %d sent", st.OK, st.Failed, st.Sent)
	}
	reasons := 0
	for _, n := range st.Reasons {
		reasons += n
	}
	if int64(reasons) != st.Failed {
		t.Errorf("%d failures have a recorded reason, want all %d", reasons, st.Failed)
	}
	failRate := float64(st.Failed) / float64(max(st.Sent, 1))
	t.Logf("failure rate %.3f%% (%d of %d)", 100*failRate, st.Failed, st.Sent)
	if failRate >= 0.005 {
		t.Errorf("failure rate %.3f%%, want < 0.5%%", 100*failRate)
	}

	// The survivors answered what passed after the kill (the requests in
	// flight at the kill, at most one per worker, aside), and every
	// answer that passed came from an app.
	var answered, afterKill int64
	counts := make([]string, len(apps))
	for i, a := range apps {
		n := a.hits.Load()
		answered += n
		counts[i] = fmt.Sprintf("%s %d (%d after the kill)", a.name, n, n-hitsAtKill[i])
		if i != victim {
			afterKill += n - hitsAtKill[i]
		}
	}
	t.Logf("requests per instance: %s", strings.Join(counts, ", "))
	if answered < st.OK {
		t.Errorf("apps answered %d requests, fewer than the %d that passed", answered, st.OK)
	}
	if okAfter := l.ok.Load() - okAtKill; afterKill < okAfter-loadWorkers {
		t.Errorf("survivors answered %d requests after the kill, want at least %d of the %d that passed", afterKill, okAfter-loadWorkers, okAfter)
	}

	// Once ejected, the dead endpoint is not picked again: no access log
	// line of web names it as the upstream a second after the kill.
	dead := apis[victim].inbound
	var before, late int
	byUpstream, retried := map[string]int{}, map[int]int{}
	for _, line := range accessLog(web.proc.out.String()) {
		if line.Direction != "outbound" || line.Time.Before(killedAt) {
			continue
		}
		byUpstream[fmt.Sprintf("%s %d", line.Upstream, line.Status)]++
		if line.Attempts > 1 {
			retried[line.Status]++
		}
		if line.Upstream != dead {
			continue
		}
		if line.Time.Before(killedAt.Add(time.Second)) {
			before++
		} else {
			late++
		}
	}
	t.Logf("web's access log after the kill, by upstream and status: %v; retried requests by final status: %v; naming the dead endpoint: %d in the first second, %d later",
		byUpstream, retried, before, late)
	if late > 0 {
		t.Errorf("%d requests went to the dead endpoint %s more than a second after the kill, want 0", late, dead)
	}
	for _, line := range logMessages(web.proc.out.String(), "endpoint ejected") {
		if line.Upstream == dead {
			t.Logf("web ejected the dead endpoint %s after the kill", line.Time.Sub(killedAt).Round(time.Millisecond))
		}
	}
}

// canaryRoute splits api's requests between v1 and v2.
func canaryRoute(v1, v2 int) string {
	return fmt.Sprintf(`apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: api-canary, namespace: default}
spec:
  service: api
  rules:
  - name: split
    backends:
    - {version: v1, weight: %d}
    - {version: v2, weight: %d}
`, v1, v2)
}

// TestCanarySplit: a Route sends 10% of api's requests to v2, whatever the
// number of instances of each version; `bulwark route set-weights` moves
// the split to 50/50.
func TestCanarySplit(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	v1a, v1b, v2 := startCountingApp(t, "api-v1-a", nil), startCountingApp(t, "api-v1-b", nil), startCountingApp(t, "api-v2", nil)
	m.startProxyLabels("default/api", v1a.addr, versioned("v1"))
	m.startProxyLabels("default/api", v1b.addr, versioned("v1"))
	m.startProxyLabels("default/api", v2.addr, versioned("v2"))
	web := m.startClientProxy("default/web")
	m.apply(allowAll("api", "default/web"))
	c := web.pooledClient()
	eventually(t, 15*time.Second, "web may call api", func() error {
		if code, _, err := getApp(c, "http://api.default/warm", nil); code != http.StatusOK {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})

	m.applyAndWait(canaryRoute(90, 10), web)
	const n = 2000
	sp := send(c, "http://api.default/canary", nil, n, 8)
	t.Logf("90/10 over %d requests in %s: v2 share %.2f%%, by instance %v, by status %v",
		n, sp.Elapsed.Round(time.Millisecond), 100*sp.share(v2.name), sp.ByApp, sp.ByStatus)
	if sp.ByStatus[http.StatusOK] != n {
		t.Fatalf("answers by status %v (errors %v), want all %d 200", sp.ByStatus, sp.Errors, n)
	}
	if got := sp.share(v2.name); math.Abs(got-0.10) > 0.03 {
		t.Errorf("v2 share: got %.2f%%, want 10%% ± 3", 100*got)
	}
	if sp.ByApp[v1a.name] == 0 || sp.ByApp[v1b.name] == 0 {
		t.Errorf("v1's share went to one instance only: %v, want both v1 instances to answer", sp.ByApp)
	}

	before := web.snapshotVersion(t)
	mustCLI(t, m.env, "route", "set-weights", "default/api-canary", "v1=50", "v2=50")
	web.waitSnapshotAfter(t, before)
	out := mustCLI(t, m.env, "get", "routes", "api-canary", "-o", "json")
	var rt struct {
		Spec struct {
			Rules []struct {
				Backends []struct {
					Version string `json:"version"`
					Weight  int    `json:"weight"`
				} `json:"backends"`
			} `json:"rules"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(out), &rt); err != nil {
		t.Fatalf("get routes api-canary -o json: %v\n%s", err, out)
	}
	if len(rt.Spec.Rules) != 1 || fmt.Sprint(rt.Spec.Rules[0].Backends) != "[{v1 50} {v2 50}]" {
		t.Errorf("route after set-weights: got %s, want backends v1 50 and v2 50", out)
	}
	const n2 = 1000
	sp = send(c, "http://api.default/canary", nil, n2, 8)
	t.Logf("50/50 over %d requests: v2 share %.2f%%, by instance %v, by status %v", n2, 100*sp.share(v2.name), sp.ByApp, sp.ByStatus)
	if sp.ByStatus[http.StatusOK] != n2 {
		t.Fatalf("answers by status %v (errors %v), want all %d 200", sp.ByStatus, sp.Errors, n2)
	}
	if got := sp.share(v2.name); math.Abs(got-0.50) > 0.05 {
		t.Errorf("v2 share after set-weights: got %.2f%%, want 50%% ± 5", 100*got)
	}
}

// headerRoute sends requests with x-canary: true to v2, the rest to v1.
const headerRoute = `apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: api-by-header, namespace: default}
spec:
  service: api
  rules:
  - name: canary-testers
    matches:
    - headers: [{name: x-canary, exact: "true"}]
    backends: [{version: v2, weight: 100}]
  - name: everyone-else
    backends: [{version: v1, weight: 100}]
`

// TestHeaderRouting: requests with the header of a Route rule always reach
// v2; requests without it never do.
func TestHeaderRouting(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	v1, v2 := startCountingApp(t, "api-v1", nil), startCountingApp(t, "api-v2", nil)
	m.startProxyLabels("default/api", v1.addr, versioned("v1"))
	m.startProxyLabels("default/api", v2.addr, versioned("v2"))
	web := m.startClientProxy("default/web")
	m.apply(allowAll("api", "default/web"))
	c := web.pooledClient()
	eventually(t, 15*time.Second, "web may call api", func() error {
		if code, _, err := getApp(c, "http://api.default/warm", nil); code != http.StatusOK {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})
	m.applyAndWait(headerRoute, web)

	with := send(c, "http://api.default/feature", http.Header{"X-Canary": {"true"}}, 200, 4)
	without := send(c, "http://api.default/feature", nil, 200, 4)
	t.Logf("with x-canary: %v %v; without: %v %v", with.ByApp, with.ByStatus, without.ByApp, without.ByStatus)
	if with.ByApp[v2.name] != 200 {
		t.Errorf("with x-canary: true: got answers %v (status %v), want all 200 from %s", with.ByApp, with.ByStatus, v2.name)
	}
	if without.ByApp[v1.name] != 200 {
		t.Errorf("without x-canary: got answers %v (status %v), want all 200 from %s", without.ByApp, without.ByStatus, v1.name)
	}
	// Any other value of the header is no match.
	if other := send(c, "http://api.default/feature", http.Header{"X-Canary": {"false"}}, 20, 2); other.ByApp[v1.name] != 20 {
		t.Errorf("with x-canary: false: got answers %v (status %v), want all from %s", other.ByApp, other.ByStatus, v1.name)
	}
}

// faultRoute injects a delay on /slow, aborts half of /flaky with 503, and
// aborts /chaos with 418 only for requests with x-chaos: on.
const faultRoute = `apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: api-chaos, namespace: default}
spec:
  service: api
  rules:
  - name: slow
    matches: [{path: {prefix: /slow}}]
    fault: {delay: {fixed: 200ms}}
  - name: flaky
    matches: [{path: {prefix: /flaky}}]
    fault: {abort: {status: 503, percent: 50}}
  - name: chaos-on-demand
    matches:
    - path: {prefix: /chaos}
      headers: [{name: x-chaos, exact: "on"}]
    fault: {abort: {status: 418}}
`

// TestFaultInjection: a fixed delay is added to every matched request, an
// abort answers its status for about its share of requests, and an abort
// matched on a header spares requests without it.
func TestFaultInjection(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	a := startCountingApp(t, "api", nil)
	m.startProxy("default/api", a.addr)
	web := m.startClientProxy("default/web")
	m.apply(allowAll("api", "default/web"))
	c := web.pooledClient()
	eventually(t, 15*time.Second, "web may call api", func() error {
		if code, _, err := getApp(c, "http://api.default/warm", nil); code != http.StatusOK {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})
	m.applyAndWait(faultRoute, web)

	latency := func(path string) []time.Duration {
		var ds []time.Duration
		for range 10 {
			began := time.Now()
			if code, _, err := getApp(c, "http://api.default"+path, nil); code != http.StatusOK {
				t.Fatalf("%s: got %d %v, want 200", path, code, err)
			}
			ds = append(ds, time.Since(began))
		}
		slices.Sort(ds)
		return ds
	}
	fast, slow := latency("/fast"), latency("/slow")
	t.Logf("latency without a fault: min %s median %s max %s; with a 200ms delay: min %s median %s max %s",
		fast[0], fast[5], fast[9], slow[0], slow[5], slow[9])
	if slow[0] < 200*time.Millisecond {
		t.Errorf("fastest delayed request took %s, want >= 200ms", slow[0])
	}

	const n = 400
	sp := send(c, "http://api.default/flaky", nil, n, 8)
	aborted := sp.ByStatus[http.StatusServiceUnavailable]
	t.Logf("abort 503 for 50%%: %d of %d aborted (%.1f%%), by status %v", aborted, n, 100*float64(aborted)/n, sp.ByStatus)
	if aborted < n*35/100 || aborted > n*65/100 {
		t.Errorf("aborted %d of %d, want between 35%% and 65%%", aborted, n)
	}
	if aborted+sp.ByStatus[http.StatusOK] != n {
		t.Errorf("answers by status %v, want only 200 and 503", sp.ByStatus)
	}

	if sp := send(c, "http://api.default/chaos", nil, 50, 4); sp.ByStatus[http.StatusOK] != 50 {
		t.Errorf("/chaos without x-chaos: got %v, want all 200", sp.ByStatus)
	}
	if sp := send(c, "http://api.default/chaos", http.Header{"X-Chaos": {"on"}}, 50, 4); sp.ByStatus[http.StatusTeapot] != 50 {
		t.Errorf("/chaos with x-chaos: on: got %v, want all 418", sp.ByStatus)
	}
}

// breakerPolicy lets each caller have at most 2 requests to api in flight.
const breakerPolicy = `apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: default}
spec:
  service: api
  connectionLimits: {maxRequests: 2}
`

// TestCircuitBreaker: with 2 requests held by a slow api, the caller's
// sidecar answers the others 503 at once, without waiting for the held
// ones; once they are answered, requests pass again.
func TestCircuitBreaker(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	g := newGate(t)
	a := startCountingApp(t, "api", g)
	m.startProxy("default/api", a.addr)
	web := m.startClientProxy("default/web")
	m.apply(allowAll("api", "default/web"))
	c := web.pooledClient()
	eventually(t, 15*time.Second, "web may call api", func() error {
		if code, _, err := getApp(c, "http://api.default/warm", nil); code != http.StatusOK {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})
	m.applyAndWait(breakerPolicy, web)

	type result struct {
		status int
		app    string
		err    error
	}
	results := make(chan result, 10)
	for range 10 {
		go func() {
			status, app, err := getApp(c, "http://api.default/hold", nil)
			results <- result{status, app, err}
		}()
	}
	// While the gate is closed, every answer is one that did not wait for
	// the app: 8 of the 10 must come back so, all 503. (The timer only
	// stops a broken breaker from hanging the test until the client's
	// timeout.)
	var rejected []result
	guard := time.After(8 * time.Second)
	for len(rejected) < 8 {
		select {
		case r := <-results:
			rejected = append(rejected, r)
		case <-guard:
			t.Fatalf("only %d of 10 requests answered while 2 were held by the app, want 8 rejected at once: %v", len(rejected), rejected)
		}
	}
	for _, r := range rejected {
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("request over the limit: got %d (%v), want 503", r.status, r.err)
		}
	}
	// Exactly the 2 under the limit reached the app.
	for i := range 2 {
		select {
		case <-g.arrived:
		case <-time.After(8 * time.Second):
			t.Fatalf("%d requests reached the app, want 2", i)
		}
	}
	if extra := len(g.arrived); extra != 0 {
		t.Errorf("%d more requests reached the app, want only 2 in flight", extra)
	}
	g.open()
	for range 2 {
		if r := <-results; r.status != http.StatusOK {
			t.Errorf("held request: got %d %v, want 200", r.status, r.err)
		}
	}
	if code, _, err := getApp(c, "http://api.default/after", nil); code != http.StatusOK {
		t.Errorf("after the held requests were answered: got %d %v, want 200", code, err)
	}
}

// rateLimitPolicy: each caller may send api 10 requests per second, in
// bursts of 10.
const rateLimitPolicy = `apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: default}
spec:
  service: api
  rateLimit: {requestsPerSecond: 10, burst: 10, per: source}
`

// TestRateLimit: requests sent as fast as possible pass at the configured
// rate (the burst, plus what refills while they are sent); the rest get
// 429 with Retry-After. The bucket is per caller: another caller still
// passes.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	api := m.startProxy("default/api", startCountingApp(t, "api", nil).addr)
	web := m.startClientProxy("default/web")
	other := m.startClientProxy("default/other")
	m.apply(allowAll("api", "default/web", "default/other"))
	c := web.pooledClient()
	eventually(t, 15*time.Second, "web may call api", func() error {
		if code, _, err := getApp(c, "http://api.default/warm", nil); code != http.StatusOK {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})
	m.applyAndWait(rateLimitPolicy, api)

	var passed, limited int
	statuses := map[int]int{}
	var badRetryAfter []string
	began := time.Now()
	for range 50 {
		resp, err := c.Get("http://api.default/limited")
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		resp.Body.Close()
		statuses[resp.StatusCode]++
		switch resp.StatusCode {
		case http.StatusOK:
			passed++
		case http.StatusTooManyRequests:
			limited++
			if ra := resp.Header.Get("Retry-After"); ra == "" {
				badRetryAfter = append(badRetryAfter, "(none)")
			} else if s, err := strconv.Atoi(ra); err != nil || s < 0 {
				badRetryAfter = append(badRetryAfter, ra)
			}
		}
	}
	elapsed := time.Since(began)
	// The bucket starts full (10) and refills 10/s while the requests are
	// sent; one more for a token that lands between two requests.
	maxPass := 10 + int(10*elapsed.Seconds()) + 1
	t.Logf("50 requests in %s: %d passed, %d limited (by status %v); allowed at most %d", elapsed.Round(time.Millisecond), passed, limited, statuses, maxPass)
	if passed < 10 || passed > maxPass {
		t.Errorf("%d requests passed, want between 10 (the burst) and %d (burst plus refill in %s)", passed, maxPass, elapsed.Round(time.Millisecond))
	}
	if passed+limited != 50 {
		t.Errorf("answers by status %v, want only 200 and 429", statuses)
	}
	if len(badRetryAfter) > 0 {
		t.Errorf("429 answers without a Retry-After in seconds: %q", badRetryAfter)
	}
	if code, _, err := getApp(other.client(), "http://api.default/limited", nil); code != http.StatusOK {
		t.Errorf("another caller while web is limited: got %d %v, want 200 (one bucket per source)", code, err)
	}
}

// TestTrafficBadInput: a Route whose weights do not add up to 100, a Route
// naming a version no instance has and a retry policy without attempts are
// rejected at apply with the field path, and nothing is stored.
func TestTrafficBadInput(t *testing.T) {
	t.Parallel()
	m := startControl(t)
	m.startProxyLabels("default/api", startCountingApp(t, "api-v1", nil).addr, versioned("v1"))

	route := func(backends string) string {
		return `apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: api-split, namespace: default}
spec:
  service: api
  rules:
  - backends: ` + backends + "\n"
	}
	cases := []struct {
		name string
		file string
		want []string
	}{
		{
			name: "route_weights_add_up_to_90",
			file: route(`[{version: v1, weight: 90}]`),
			want: []string{"spec.rules[0].backends"},
		},
		{
			name: "route_unknown_version",
			file: route(`[{version: v1, weight: 50}, {version: v9, weight: 50}]`),
			want: []string{"spec.rules[0].backends[1].version", "v9"},
		},
		{
			name: "retries_without_attempts",
			file: `apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: default}
spec:
  service: api
  retries: {retryOn: [5xx]}
`,
			want: []string{"spec.retries.attempts"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := cli(t, m.env, "", "apply", "-f", writeFile(t, "bad.yaml", tc.file))
			if code == 0 {
				t.Fatalf("apply exited 0 (%s), want an error", out)
			}
			t.Logf("apply: exit %d: %s", code, strings.TrimSpace(errOut))
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error %q does not mention %q", errOut, w)
				}
			}
			if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine") {
				t.Errorf("crash output: %s", errOut)
			}
		})
	}
	for _, kind := range []string{"routes", "trafficpolicies"} {
		out := mustCLI(t, m.env, "get", kind, "-o", "json")
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("get %s -o json: %v\n%s", kind, err, out)
		}
		if len(list.Items) != 0 {
			t.Errorf("get %s after rejected applies: got %s, want no items", kind, out)
		}
	}
	// The same Route with valid weights on a known version is accepted.
	m.apply(route(`[{version: v1, weight: 100}]`))
	if out := mustCLI(t, m.env, "get", "routes"); !strings.Contains(out, "api-split") {
		t.Errorf("get routes after a valid apply: got %q, want api-split listed", out)
	}
}
