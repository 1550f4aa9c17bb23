package proxy_test

// Tests of the outbound forwarding loop (forward.go): retries, timeouts,
// outlier detection, circuit breaking, load balancing, routes and the
// inbound rate limits, through real engines over mTLS on loopback. A fleet
// is one caller (shop/web) and N instances of default/api, each a callee
// engine in front of an app whose answers the test controls.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// cartSvc is a second caller of default/api, with its own identity.
var cartSvc = identity.ServiceRef{Namespace: "shop", Name: "cart"}

// fleetServices are the services of every fleet snapshot.
var fleetServices = []string{"default/api", "shop/cart", "shop/web"}

// apiOpenPolicy lets shop/web and shop/cart call default/api with any
// method on any path (the callee's own policy).
const apiOpenPolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-open, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web, shop/cart]}
    to: {methods: ["*"]}
`

// apiOpenView is a caller's view of apiOpenPolicy.
const apiOpenView = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-open, namespace: default}
spec:
  selector: {service: api}
  rules:
  - to: {methods: ["*"]}
`

// trafficPolicyDoc returns the JSON of the TrafficPolicy of default/api
// whose spec holds lines (YAML, one key each, flow style), validated and
// defaulted as the control plane pushes it.
func trafficPolicyDoc(t testing.TB, lines ...string) []byte {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: bulwark.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: api, namespace: default}\nspec:\n  service: api\n")
	for _, l := range lines {
		b.WriteString("  " + l + "\n")
	}
	return policyDoc(t, b.String())
}

// routeDoc returns the JSON of a Route of default/api whose rules are
// rules (a YAML list, not indented).
func routeDoc(t testing.TB, rules string) []byte {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: bulwark.dev/v1alpha1\nkind: Route\nmetadata: {name: api, namespace: default}\nspec:\n  service: api\n  rules:\n")
	for _, l := range strings.Split(strings.Trim(rules, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return policyDoc(t, b.String())
}

// hit is a request an instance's app received.
type hit struct {
	method, uri string
	header      http.Header
	body        string
}

// instance is one instance of default/api: a callee engine serving its
// inbound over mTLS in front of an app that answers with the instance's
// name, or fails with a status, or holds requests until released.
type instance struct {
	name    string
	node    *node
	addr    string // the engine's inbound listener
	metrics *prometheus.Registry
	// stop closes the inbound listener and its connections.
	stop func()
	// arrived gets every request the app receives (dropped when full).
	arrived chan hit

	mu     sync.Mutex
	status int           // answered instead of the name when not 0
	block  chan struct{} // requests wait for it to close when not nil
	// headersFirst sends the response headers before waiting for block.
	headersFirst bool
	// failLeft, when above 0, is how many more requests get status.
	failLeft int
	// grpcStatus is sent as Grpc-Status in the headers when not "" (a
	// trailers-only gRPC error).
	grpcStatus string
	hits       []hit
}

func (in *instance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	h := hit{method: r.Method, uri: r.RequestURI, header: r.Header.Clone(), body: string(b)}
	in.mu.Lock()
	in.hits = append(in.hits, h)
	status, block, headersFirst, grpcStatus := in.status, in.block, in.headersFirst, in.grpcStatus
	if in.failLeft > 0 {
		if in.failLeft--; in.failLeft == 0 {
			in.status = 0
		}
	}
	in.mu.Unlock()
	select {
	case in.arrived <- h:
	default:
	}
	w.Header().Set("X-Instance", in.name)
	if grpcStatus != "" {
		w.Header().Set("Grpc-Status", grpcStatus)
	}
	if block != nil {
		if headersFirst {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
		}
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	if status != 0 {
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s failed", in.name)
		return
	}
	fmt.Fprint(w, in.name)
}

// failGRPC makes the app answer 200 with the gRPC status code in the
// headers ("": answer normally).
func (in *instance) failGRPC(code string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.grpcStatus = code
}

// failTimes makes the app answer status to its next n requests only.
func (in *instance) failTimes(status, n int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.status, in.failLeft = status, n
}

// fail makes the app answer status (0: answer normally).
func (in *instance) fail(status int) {
	in.failTimes(status, 0)
}

// hold makes the app hold the requests it receives from now on until
// release is called.
func (in *instance) hold() (release func()) {
	ch := make(chan struct{})
	in.mu.Lock()
	in.block = ch
	in.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			in.mu.Lock()
			in.block = nil
			in.mu.Unlock()
			close(ch)
		})
	}
}

// count returns how many requests the app received.
func (in *instance) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.hits)
}

func (in *instance) received() []hit {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]hit(nil), in.hits...)
}

// waitArrived waits for the app to receive a request and returns it.
func (in *instance) waitArrived(t testing.TB) hit {
	t.Helper()
	select {
	case h := <-in.arrived:
		return h
	case <-time.After(hangGuard):
		t.Fatalf("%s received no request", in.name)
		return hit{}
	}
}

// endpoint is the instance as a snapshot lists it, with the version label
// (none when "") and the locality given.
func (in *instance) endpoint(version, locality string) *apiv1.Endpoint {
	ep := &apiv1.Endpoint{Address: in.addr, SpiffeId: in.node.id().String(), Instance: in.name, Locality: locality}
	if version != "" {
		ep.Labels = map[string]string{"version": version}
	}
	return ep
}

// caller is an engine calling default/api, its outbound served on
// loopback.
type caller struct {
	node    *node
	metrics *prometheus.Registry
	out     string
	client  *http.Client
}

// fleet is a caller (shop/web) and instances of default/api, on a shared
// fake clock (rate-limit buckets, retry budgets and ejections only move
// when the test advances it).
type fleet struct {
	auth  *authority
	clock *clock.Fake
	web   *caller
	apis  []*instance
}

// newFleet starts n instances of default/api (on the open inbound policy,
// without TrafficPolicy) and shop/web at locality local. The caller has no
// snapshot yet: each test applies its own with applyWeb.
func newFleet(t *testing.T, n int, local balancer.Locality) *fleet {
	t.Helper()
	f := &fleet{auth: newAuthority(t), clock: clock.NewFake(time.Now())}
	for i := range n {
		in := &instance{name: fmt.Sprintf("api-%d", i), arrived: make(chan hit, 1024), metrics: prometheus.NewRegistry()}
		appAddr := servePlain(t, in)
		in.node = newEngineNode(t, f.auth, apiSvc, appAddr, func(c *proxy.Config) {
			c.Clock, c.Metrics = f.clock, in.metrics
		})
		in.addr, in.stop = serveInboundStoppable(t, in.node, 1000)
		in.node.apply(t, f.apiSnapshot(t, 1, nil))
		f.apis = append(f.apis, in)
	}
	f.web = f.newCaller(t, webSvc, local)
	return f
}

// newCaller starts a caller engine for svc at locality local.
func (f *fleet) newCaller(t *testing.T, svc identity.ServiceRef, local balancer.Locality) *caller {
	t.Helper()
	c := &caller{metrics: prometheus.NewRegistry()}
	c.node = newEngineNode(t, f.auth, svc, "", func(cfg *proxy.Config) {
		cfg.Clock, cfg.Metrics, cfg.Locality = f.clock, c.metrics, local
	})
	c.out = servePlain(t, c.node.engine.Outbound())
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", c.out)
		},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	c.client = &http.Client{
		Transport:     tr,
		Timeout:       hangGuard,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

// apiSnapshot is an instance's snapshot: the open inbound policy, both
// callers as peers, and the TrafficPolicy tp (nil: none).
func (f *fleet) apiSnapshot(t testing.TB, version int64, tp []byte) *apiv1.Snapshot {
	t.Helper()
	return &apiv1.Snapshot{
		Version:     version,
		TrustBundle: f.auth.rootDER(),
		Inbound: &apiv1.Inbound{
			Policies: [][]byte{policyDoc(t, apiOpenPolicy)},
			Peers: []*apiv1.PeerIdentity{
				{SpiffeId: workloadID(t, "shop", "web").String(), Services: []string{"shop/web"}},
				{SpiffeId: workloadID(t, "shop", "cart").String(), Services: []string{"shop/cart"}},
			},
			TrafficPolicy: tp,
		},
		Services: fleetServices,
	}
}

// callerSnapshot is a caller's snapshot: default/api with the TrafficPolicy
// tp (nil: none), the Routes routes and the endpoints eps.
func (f *fleet) callerSnapshot(t testing.TB, version int64, tp []byte, routes [][]byte, eps ...*apiv1.Endpoint) *apiv1.Snapshot {
	t.Helper()
	return &apiv1.Snapshot{
		Version:     version,
		TrustBundle: f.auth.rootDER(),
		Inbound:     &apiv1.Inbound{},
		Services:    fleetServices,
		Destinations: []*apiv1.Destination{{
			Service:       "default/api",
			Policies:      [][]byte{policyDoc(t, apiOpenView)},
			Endpoints:     eps,
			TrafficPolicy: tp,
			Routes:        routes,
		}},
	}
}

// applyWeb applies a callerSnapshot to shop/web.
func (f *fleet) applyWeb(t testing.TB, version int64, tp []byte, routes [][]byte, eps ...*apiv1.Endpoint) {
	t.Helper()
	f.web.node.apply(t, f.callerSnapshot(t, version, tp, routes, eps...))
}

// deadEndpoint is an endpoint of default/api at an address where nothing
// listens: every try to it is a connect failure.
func (f *fleet) deadEndpoint(t testing.TB, locality string) *apiv1.Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &apiv1.Endpoint{Address: addr, SpiffeId: workloadID(t, "default", "api").String(), Instance: "api-dead", Locality: locality}
}

// hits returns how many requests each instance's app received.
func (f *fleet) hits() []int {
	out := make([]int, len(f.apis))
	for i, in := range f.apis {
		out[i] = in.count()
	}
	return out
}

// newEngineNode is newNode with the engine's Config adjusted by tweak.
func newEngineNode(t testing.TB, a *authority, svc identity.ServiceRef, appAddr string, tweak func(*proxy.Config)) *node {
	t.Helper()
	n := &node{svc: svc, src: a.svid(t, workloadID(t, svc.Namespace, svc.Name)), log: newLogBuffer(), plog: newLogBuffer()}
	cfg := proxy.Config{
		Service:   svc,
		App:       appAddr,
		SVID:      n.src,
		Bundle:    n.src,
		Logger:    slog.New(slog.NewJSONHandler(n.plog, &slog.HandlerOptions{Level: slog.LevelInfo})),
		AccessLog: slog.New(slog.NewJSONHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	tweak(&cfg)
	e, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(e.Close)
	n.engine = e
	return n
}

// serveInboundStoppable is node.serveInbound, allowing maxStreams
// concurrent streams on each connection, that also returns a function
// closing the listener and every connection (the instance is gone).
func serveInboundStoppable(t testing.TB, n *node, maxStreams int) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln, tlsCfg := n.engine.InboundListener(ln, td)
	srv := &http.Server{
		Handler:                      n.engine.Inbound(),
		TLSConfig:                    tlsCfg,
		ReadHeaderTimeout:            10 * time.Second,
		HTTP2:                        &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		ErrorLog:                     slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
		DisableGeneralOptionsHandler: true,
	}
	go srv.ServeTLS(tln, "", "")
	stop = func() { srv.Close() }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// send sends a request for path on default/api through the caller's
// outbound, with body (none when "") and header (may be nil).
func (c *caller) send(t testing.TB, method, path, body string, header http.Header) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://api.default"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return do(t, c.client, req)
}

// getAsync sends a GET for path in the background; the channel gets its
// response (status 0 and the error as body when it failed).
func (c *caller) getAsync(path string) <-chan response {
	ch := make(chan response, 1)
	go func() {
		resp, err := c.client.Get("http://api.default" + path)
		if err != nil {
			ch <- response{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			ch <- response{body: "read body: " + err.Error()}
			return
		}
		ch <- response{status: resp.StatusCode, body: string(b), header: resp.Header}
	}()
	return ch
}

// get sends a GET for path with header name: value pairs.
func (c *caller) get(t testing.TB, path string, kv ...string) response {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return c.send(t, http.MethodGet, path, "", h)
}

// counterValue is the value of the counter name in reg (0 when it has not
// been counted).
func counterValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// boolInt is 1 for true.
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// replayBody is a request body a retry must send again byte for byte.
var replayBody = strings.Repeat("0123456789abcdef", 1024) + "end"

func TestRetries(t *testing.T) {
	const rr = "loadBalancer: {policy: RoundRobin}"
	tests := []struct {
		name string
		// tp is the TrafficPolicy's spec lines (always RoundRobin, so that
		// the first try goes to the first endpoint).
		tp []string
		// dead puts an endpoint with nothing listening first.
		dead bool
		// instances is the size of the fleet (default 3).
		instances int
		// failing are the instances answering 503; the fleet has three,
		// listed in order after the dead endpoint.
		failing []int
		// failStatus is what the failing instances answer (default 503);
		// failGRPC makes them answer 200 with this gRPC status instead.
		failStatus int
		failGRPC   string
		method     string
		// body is sent with methods other than GET (default replayBody).
		body string
		// wantStatus and wantBody are the answer; wantHits the requests
		// each instance received; wantRetries bulwark_retries_total.
		wantStatus  int
		wantBody    string
		wantHits    []int
		wantRetries float64
		// wantTries, when wantHits is nil: the requests all instances
		// received; wantBody "" is any instance's failure.
		wantTries int
		// failOnce: the failing instances fail their first request only.
		failOnce bool
	}{
		{
			name: "connect_failure_get", tp: []string{rr}, dead: true, method: http.MethodGet,
			wantStatus: 200, wantBody: "api-0", wantHits: []int{1, 0, 0}, wantRetries: 1,
		},
		{
			name: "connect_failure_post", tp: []string{rr}, dead: true, method: http.MethodPost,
			wantStatus: 200, wantBody: "api-0", wantHits: []int{1, 0, 0}, wantRetries: 1,
		},
		{
			// The default conditions are connect-failure and reset: a
			// 503 is the answer.
			name: "default_policy_503_get_not_retried", tp: []string{rr}, failing: []int{0}, method: http.MethodGet,
			wantStatus: 503, wantBody: "api-0 failed", wantHits: []int{1, 0, 0}, wantRetries: 0,
		},
		{
			// A RetryPolicy without conditions retries gateway errors too.
			name: "explicit_policy_503_get_retried", tp: []string{rr, "retries: {attempts: 2}"}, failing: []int{0}, method: http.MethodGet,
			wantStatus: 200, wantBody: "api-1", wantHits: []int{1, 1, 0}, wantRetries: 1,
		},
		{
			name: "explicit_policy_503_post_not_retried", tp: []string{rr, "retries: {attempts: 2}"}, failing: []int{0}, method: http.MethodPost,
			wantStatus: 503, wantBody: "api-0 failed", wantHits: []int{1, 0, 0}, wantRetries: 0,
		},
		{
			name: "non_idempotent_503_post_retried", tp: []string{rr, "retries: {attempts: 2, nonIdempotent: true}"}, failing: []int{0}, method: http.MethodPost,
			wantStatus: 200, wantBody: "api-1", wantHits: []int{1, 1, 0}, wantRetries: 1,
		},
		{
			name: "put_is_idempotent", tp: []string{rr, "retries: {attempts: 2}"}, failing: []int{0}, method: http.MethodPut,
			wantStatus: 200, wantBody: "api-1", wantHits: []int{1, 1, 0}, wantRetries: 1,
		},
		{
			name: "5xx_condition_retries_500", tp: []string{rr, "retries: {attempts: 2, retryOn: [5xx]}"}, failing: []int{0}, failStatus: 500, method: http.MethodGet,
			wantStatus: 200, wantBody: "api-1", wantHits: []int{1, 1, 0}, wantRetries: 1,
		},
		{
			// attempts counts retries: one retry is two tries, and the
			// last try's answer is the answer.
			name: "attempts_bound", tp: []string{rr, "retries: {attempts: 1}"}, failing: []int{0, 1, 2}, method: http.MethodGet,
			wantStatus: 503, wantBody: "api-1 failed", wantHits: []int{1, 1, 0}, wantRetries: 1,
		},
		{
			// Every gRPC call is a POST: a gRPC condition retries it only
			// with nonIdempotent.
			name: "grpc_unavailable_retried", tp: []string{rr, "retries: {attempts: 2, retryOn: [grpc-unavailable], nonIdempotent: true}"},
			failing: []int{0}, failGRPC: "14", method: http.MethodPost,
			wantStatus: 200, wantBody: "api-1", wantHits: []int{1, 1, 0}, wantRetries: 1,
		},
		{
			name: "grpc_other_status_not_retried", tp: []string{rr, "retries: {attempts: 2, retryOn: [grpc-unavailable], nonIdempotent: true}"},
			failing: []int{0}, failGRPC: "13", method: http.MethodPost,
			wantStatus: 200, wantBody: "api-0", wantHits: []int{1, 0, 0}, wantRetries: 0,
		},
		{
			name: "grpc_unavailable_post_needs_non_idempotent", tp: []string{rr, "retries: {attempts: 2, retryOn: [grpc-unavailable]}"},
			failing: []int{0}, failGRPC: "14", method: http.MethodPost,
			wantStatus: 200, wantBody: "api-0", wantHits: []int{1, 0, 0}, wantRetries: 0,
		},
		{
			// A body too long to be kept is streamed: it is sent again
			// only when the first try could not send it at all.
			name: "streamed_body_connect_failure_retried", tp: []string{rr, "retries: {attempts: 2, nonIdempotent: true}"}, dead: true,
			method: http.MethodPost, body: strings.Repeat("z", 200<<10),
			wantStatus: 200, wantBody: "api-0", wantHits: []int{1, 0, 0}, wantRetries: 1,
		},
		{
			name: "streamed_body_503_not_retried", tp: []string{rr, "retries: {attempts: 2, nonIdempotent: true}"}, failing: []int{0},
			method: http.MethodPost, body: strings.Repeat("z", 200<<10),
			wantStatus: 503, wantBody: "api-0 failed", wantHits: []int{1, 0, 0}, wantRetries: 0,
		},
		{
			// Once every endpoint was tried, a retry tries one again; the
			// last try's answer is the answer.
			name: "every_endpoint_tried_retries_again", tp: []string{rr, "retries: {attempts: 3}"}, instances: 2, failing: []int{0, 1}, method: http.MethodGet,
			wantStatus: 503, wantTries: 4, wantRetries: 3,
		},
		{
			name: "single_endpoint_retried", tp: []string{rr, "retries: {attempts: 2}"}, instances: 1, failing: []int{0}, method: http.MethodGet,
			wantStatus: 503, wantBody: "api-0 failed", wantHits: []int{3}, wantRetries: 2,
		},
		{
			name: "single_endpoint_recovers", tp: []string{rr, "retries: {attempts: 2}"}, instances: 1, failing: []int{0}, failOnce: true, method: http.MethodGet,
			wantStatus: 200, wantBody: "api-0", wantHits: []int{2}, wantRetries: 1,
		},
		{
			name: "attempts_two_of_three_failing", tp: []string{rr, "retries: {attempts: 2}"}, failing: []int{0, 1}, method: http.MethodGet,
			wantStatus: 200, wantBody: "api-2", wantHits: []int{1, 1, 1}, wantRetries: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.instances
			if n == 0 {
				n = 3
			}
			f := newFleet(t, n, balancer.Locality{})
			var eps []*apiv1.Endpoint
			if tc.dead {
				eps = append(eps, f.deadEndpoint(t, ""))
			}
			for _, in := range f.apis {
				eps = append(eps, in.endpoint("", ""))
			}
			for _, i := range tc.failing {
				switch {
				case tc.failGRPC != "":
					f.apis[i].failGRPC(tc.failGRPC)
				case tc.failStatus != 0:
					f.apis[i].fail(tc.failStatus)
				case tc.failOnce:
					f.apis[i].failTimes(http.StatusServiceUnavailable, 1)
				default:
					f.apis[i].fail(http.StatusServiceUnavailable)
				}
			}
			f.applyWeb(t, 1, trafficPolicyDoc(t, tc.tp...), nil, eps...)

			body := tc.body
			if body == "" && tc.method != http.MethodGet {
				body = replayBody
			}
			got := f.web.send(t, tc.method, "/orders", body, nil)
			if got.status != tc.wantStatus || (tc.wantBody != "" || tc.wantHits != nil) && got.body != tc.wantBody ||
				tc.wantBody == "" && !strings.HasSuffix(got.body, " failed") {
				t.Fatalf("got %d %q, want %d %q", got.status, got.body, tc.wantStatus, tc.wantBody)
			}
			if tc.wantHits == nil {
				hits := f.hits()
				if sum := hits[0] + hits[1]; sum != tc.wantTries {
					t.Errorf("instances received %v requests, want %d in all", hits, tc.wantTries)
				}
			} else if diff := cmp.Diff(tc.wantHits, f.hits()); diff != "" {
				t.Errorf("requests per instance (-want +got):\n%s", diff)
			}
			if got := counterValue(t, f.web.metrics, "bulwark_retries_total"); got != tc.wantRetries {
				t.Errorf("bulwark_retries_total: got %v, want %v", got, tc.wantRetries)
			}
			// Every try carried the whole body.
			for _, in := range f.apis {
				for _, h := range in.received() {
					if h.method != tc.method || h.uri != "/orders" || h.body != body {
						t.Errorf("%s received %s %s with a body of %d bytes, want %s /orders with %d bytes",
							in.name, h.method, h.uri, len(h.body), tc.method, len(body))
					}
				}
			}
			if tc.wantRetries > 0 {
				f.web.node.log.waitFor(t, "attempts in the access log", func(l map[string]any) bool {
					return l["attempts"] == float64(tc.wantRetries+1)
				})
			}
		})
	}
}

func TestRetryBudget(t *testing.T) {
	// Every try fails and may be retried once, but the budget allows 1% of
	// the requests plus a reserve of minPerSecond per second of its
	// 10-second window: the clock does not move, so the reserve is 10
	// retries in all.
	const requests = 40
	f := newFleet(t, 2, balancer.Locality{})
	for _, in := range f.apis {
		in.fail(http.StatusServiceUnavailable)
	}
	f.applyWeb(t, 1, trafficPolicyDoc(t,
		"loadBalancer: {policy: RoundRobin}",
		"outlierDetection: {disabled: true}",
		"retries: {attempts: 1, budget: {percent: 1, minPerSecond: 1}}",
	), nil, f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""))

	for range requests {
		if got := f.web.get(t, "/x"); got.status != http.StatusServiceUnavailable {
			t.Fatalf("got %d %q, want 503 from an instance", got.status, got.body)
		}
	}
	retries := counterValue(t, f.web.metrics, "bulwark_retries_total")
	tries := f.hits()[0] + f.hits()[1]
	if float64(tries-requests) != retries {
		t.Errorf("bulwark_retries_total: got %v, want %d (the tries beyond one per request)", retries, tries-requests)
	}
	if retries != 10 {
		t.Errorf("retries: got %v, want 10 (the reserve; 1%% of %d requests adds none)", retries, requests)
	}

	// Once the window has moved past them, the reserve is whole again.
	f.clock.Advance(10 * time.Second)
	for range requests {
		f.web.get(t, "/x")
	}
	if got := counterValue(t, f.web.metrics, "bulwark_retries_total") - retries; got != 10 {
		t.Errorf("retries 10 seconds later: got %v, want 10", got)
	}

	// The series is the destination's, and goes when it leaves the
	// snapshot (the label stays bounded by the mesh).
	if got := counter(t, f.web.metrics, "bulwark_retries_total", map[string]string{"destination": "default/api"}); got != 20 {
		t.Errorf("bulwark_retries_total{destination=default/api}: got %v, want 20", got)
	}
	snap := f.callerSnapshot(t, 2, nil, nil)
	snap.Destinations = nil
	f.web.node.apply(t, snap)
	if got := counterValue(t, f.web.metrics, "bulwark_retries_total"); got != 0 {
		t.Errorf("bulwark_retries_total after default/api left the snapshot: got %v, want no series", got)
	}
}

func TestPerTryTimeout(t *testing.T) {
	t.Run("retry_reaches_fast_instance", func(t *testing.T) {
		f := newFleet(t, 2, balancer.Locality{})
		f.applyWeb(t, 1, trafficPolicyDoc(t,
			"loadBalancer: {policy: RoundRobin}",
			"timeout: 30s",
			"retries: {attempts: 1, perTryTimeout: 1s}",
		), nil, f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""))
		// Open a pooled connection to each instance, so that the per-try
		// timeout bounds a request rather than a handshake.
		for _, want := range []string{"api-0", "api-1"} {
			if got := f.web.get(t, "/warm"); got.status != 200 || got.body != want {
				t.Fatalf("warm-up: got %d %q, want 200 %q", got.status, got.body, want)
			}
		}
		for _, in := range f.apis {
			<-in.arrived
		}
		release := f.apis[0].hold()
		defer release()

		got := f.web.get(t, "/slow")
		if got.status != 200 || got.body != "api-1" {
			t.Fatalf("got %d %q, want 200 %q", got.status, got.body, "api-1")
		}
		if h := f.apis[0].waitArrived(t); h.uri != "/slow" {
			t.Errorf("api-0 received %s, want /slow (the try cut by the timeout)", h.uri)
		}
		if got := counterValue(t, f.web.metrics, "bulwark_retries_total"); got != 1 {
			t.Errorf("bulwark_retries_total: got %v, want 1", got)
		}
	})
	t.Run("body_after_headers_not_cut", func(t *testing.T) {
		f := newFleet(t, 1, balancer.Locality{})
		f.applyWeb(t, 1, trafficPolicyDoc(t, "retries: {attempts: 1, perTryTimeout: 200ms}"), nil, f.apis[0].endpoint("", ""))
		in := f.apis[0]
		in.mu.Lock()
		in.headersFirst = true
		in.mu.Unlock()
		release := in.hold()
		defer release()
		resp, err := f.web.client.Get("http://api.default/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// The headers came: the per-try timeout no longer runs. Nothing
		// signals a timer that must not fire, so wait past it (twice).
		time.Sleep(400 * time.Millisecond)
		release()
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "api-0" {
			t.Fatalf("body: got %q, %v, want %q", b, err, "api-0")
		}
		if got := in.count(); got != 1 {
			t.Errorf("app received %d requests, want 1", got)
		}
	})
	t.Run("request_timeout_504", func(t *testing.T) {
		f := newFleet(t, 1, balancer.Locality{})
		f.applyWeb(t, 1, trafficPolicyDoc(t, "timeout: 300ms"), nil, f.apis[0].endpoint("", ""))
		release := f.apis[0].hold()
		defer release()
		got := f.web.get(t, "/slow")
		if got.status != http.StatusGatewayTimeout || got.body != "upstream request timeout\n" {
			t.Fatalf("got %d %q, want 504 %q", got.status, got.body, "upstream request timeout\n")
		}
		if got := f.apis[0].count(); got != 1 {
			t.Errorf("api-0 received %d requests, want 1 (a timeout is not retried)", got)
		}
	})
	t.Run("every_try_times_out_504", func(t *testing.T) {
		f := newFleet(t, 2, balancer.Locality{})
		f.applyWeb(t, 1, trafficPolicyDoc(t,
			"outlierDetection: {disabled: true}",
			"retries: {attempts: 1, perTryTimeout: 200ms}",
		), nil, f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""))
		for _, in := range f.apis {
			release := in.hold()
			defer release()
		}
		got := f.web.get(t, "/slow")
		if got.status != http.StatusGatewayTimeout {
			t.Fatalf("got %d %q, want 504", got.status, got.body)
		}
	})
}

func TestOutlierDetection(t *testing.T) {
	t.Run("failing_instance_ejected", func(t *testing.T) {
		f := newFleet(t, 3, balancer.Locality{})
		f.apis[0].fail(http.StatusServiceUnavailable)
		f.applyWeb(t, 1, trafficPolicyDoc(t,
			"loadBalancer: {policy: RoundRobin}",
			"outlierDetection: {consecutiveGatewayErrors: 2}",
		), nil, f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""), f.apis[2].endpoint("", ""))

		for i := 0; f.apis[0].count() < 2; i++ {
			if i == 100 {
				t.Fatalf("api-0 received %d requests out of 100, want 2", f.apis[0].count())
			}
			f.web.get(t, "/x")
		}
		if got := counterValue(t, f.web.metrics, "bulwark_outlier_ejections_total"); got != 1 {
			t.Fatalf("bulwark_outlier_ejections_total: got %v, want 1", got)
		}
		addr := f.apis[0].addr
		f.web.node.plog.waitFor(t, "ejection log", func(l map[string]any) bool {
			return l["msg"] == "endpoint ejected" && l["upstream"] == addr
		})
		for range 30 {
			if got := f.web.get(t, "/x"); got.status != 200 {
				t.Fatalf("got %d %q, want 200 from api-1 or api-2", got.status, got.body)
			}
		}
		if got := f.apis[0].count(); got != 2 {
			t.Errorf("ejected api-0 received %d requests, want 2 (none after its ejection)", got)
		}
	})
	t.Run("every_instance_ejected_panic_mode", func(t *testing.T) {
		f := newFleet(t, 2, balancer.Locality{})
		for _, in := range f.apis {
			in.fail(http.StatusServiceUnavailable)
		}
		f.applyWeb(t, 1, trafficPolicyDoc(t,
			"loadBalancer: {policy: RoundRobin}",
			"outlierDetection: {consecutiveGatewayErrors: 1, maxEjectionPercent: 100}",
		), nil, f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""))
		for i := 0; counterValue(t, f.web.metrics, "bulwark_outlier_ejections_total") < 2; i++ {
			if i == 100 {
				t.Fatalf("not every instance ejected after 100 requests: hits %v", f.hits())
			}
			f.web.get(t, "/x")
		}
		before := f.hits()
		for range 4 {
			got := f.web.get(t, "/x")
			if got.status != http.StatusServiceUnavailable || !strings.HasSuffix(got.body, " failed") {
				t.Fatalf("got %d %q, want the 503 of an instance (ejected endpoints still serve when none is left)", got.status, got.body)
			}
		}
		after := f.hits()
		if got := after[0] + after[1] - before[0] - before[1]; got != 4 {
			t.Errorf("instances received %d of 4 requests, want all", got)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		f := newFleet(t, 2, balancer.Locality{})
		f.apis[0].fail(http.StatusServiceUnavailable)
		f.applyWeb(t, 1, trafficPolicyDoc(t,
			"loadBalancer: {policy: RoundRobin}",
			"outlierDetection: {disabled: true}",
		), nil, f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""))
		for range 20 {
			f.web.get(t, "/x")
		}
		if got := f.hits(); got[0] != 10 {
			t.Errorf("api-0 received %d of 20 requests, want 10 (never ejected)", got[0])
		}
		if got := counterValue(t, f.web.metrics, "bulwark_outlier_ejections_total"); got != 0 {
			t.Errorf("bulwark_outlier_ejections_total: got %v, want 0", got)
		}
	})
}

func TestSnapshotKeepsDestinationState(t *testing.T) {
	f := newFleet(t, 2, balancer.Locality{})
	f.apis[0].fail(http.StatusServiceUnavailable)
	tp := trafficPolicyDoc(t,
		"loadBalancer: {policy: RoundRobin}",
		"outlierDetection: {consecutiveGatewayErrors: 1}",
	)
	eps := []*apiv1.Endpoint{f.apis[0].endpoint("v1", ""), f.apis[1].endpoint("v1", "")}
	f.applyWeb(t, 1, tp, nil, eps...)
	for i := 0; f.apis[0].count() < 1; i++ {
		if i == 100 {
			t.Fatal("api-0 received no request out of 100")
		}
		f.web.get(t, "/x")
	}
	if got := counterValue(t, f.web.metrics, "bulwark_outlier_ejections_total"); got != 1 {
		t.Fatalf("bulwark_outlier_ejections_total: got %v, want 1", got)
	}

	// A new version with the same endpoints (and a route, so that the
	// subsets are rebuilt too) keeps the ejection.
	f.applyWeb(t, 2, tp, [][]byte{routeDoc(t, "- backends: [{version: v1, weight: 100}]")}, eps...)
	f.apis[0].fail(0)
	for range 20 {
		if got := f.web.get(t, "/x"); got.status != 200 || got.body != "api-1" {
			t.Fatalf("got %d %q, want 200 %q (api-0 is still ejected)", got.status, got.body, "api-1")
		}
	}
	if got := f.apis[0].count(); got != 1 {
		t.Errorf("api-0 received %d requests, want 1 (its ejection survives the snapshot)", got)
	}

	// The ejection ends by itself after baseEjectionTime (30s).
	f.clock.Advance(31 * time.Second)
	for i := 0; f.apis[0].count() < 2; i++ {
		if i == 100 {
			t.Fatal("api-0 received no request after its ejection ended")
		}
		f.web.get(t, "/x")
	}
}

func TestCircuitBreaker(t *testing.T) {
	f := newFleet(t, 1, balancer.Locality{})
	f.applyWeb(t, 1, trafficPolicyDoc(t, "connectionLimits: {maxRequests: 2}"), nil, f.apis[0].endpoint("", ""))
	release := f.apis[0].hold()
	defer release()

	held := []<-chan response{f.web.getAsync("/held"), f.web.getAsync("/held")}
	f.apis[0].waitArrived(t)
	f.apis[0].waitArrived(t)

	got := f.web.get(t, "/third")
	if got.status != http.StatusServiceUnavailable || got.body != "upstream overloaded\n" {
		t.Fatalf("third request: got %d %q, want 503 %q", got.status, got.body, "upstream overloaded\n")
	}
	if n := len(held[0]) + len(held[1]); n != 0 {
		t.Fatalf("%d held requests answered before the third one, want 0 (the breaker must not wait)", n)
	}
	if got := f.apis[0].count(); got != 2 {
		t.Errorf("api-0 received %d requests, want 2", got)
	}
	if got := counterValue(t, f.web.metrics, "bulwark_circuit_breaker_open_total"); got != 1 {
		t.Errorf("bulwark_circuit_breaker_open_total: got %v, want 1", got)
	}

	release()
	for _, ch := range held {
		select {
		case r := <-ch:
			if r.status != 200 || r.body != "api-0" {
				t.Errorf("held request: got %d %q, want 200 %q", r.status, r.body, "api-0")
			}
		case <-time.After(hangGuard):
			t.Fatal("held request not answered after release")
		}
	}
	// Room again.
	if got := f.web.get(t, "/after"); got.status != 200 {
		t.Errorf("after release: got %d %q, want 200", got.status, got.body)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("max_connections", func(t *testing.T) {
		tests := []struct {
			name string
			tp   []byte
			// overloaded: the second request gets 503 at once rather
			// than a second connection.
			overloaded bool
		}{
			{name: "limit_reached", tp: trafficPolicyDoc(t, "connectionLimits: {maxConnections: 1}"), overloaded: true},
			{name: "no_limit", tp: nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				f := newFleet(t, 1, balancer.Locality{})
				in := f.apis[0]
				// One stream per connection: a held request fills it.
				addr, _ := serveInboundStoppable(t, in.node, 1)
				ep := in.endpoint("", "")
				ep.Address = addr
				f.applyWeb(t, 1, tc.tp, nil, ep)
				// Complete one request first, so the caller has read the
				// peer's SETTINGS (its stream limit).
				if got := f.web.get(t, "/warm"); got.status != 200 {
					t.Fatalf("warm-up: got %d %q, want 200", got.status, got.body)
				}
				in.waitArrived(t)
				release := in.hold()
				defer release()

				first := f.web.getAsync("/held")
				in.waitArrived(t)
				if !tc.overloaded {
					second := f.web.getAsync("/second")
					in.waitArrived(t) // on a second connection
					release()
					for _, ch := range []<-chan response{first, second} {
						if got := <-ch; got.status != 200 {
							t.Errorf("got %d %q, want 200", got.status, got.body)
						}
					}
					return
				}
				got := f.web.get(t, "/second")
				if got.status != http.StatusServiceUnavailable || got.body != "upstream overloaded\n" {
					t.Fatalf("second request: got %d %q, want 503 %q", got.status, got.body, "upstream overloaded\n")
				}
				if len(first) != 0 {
					t.Fatal("held request answered before the second one, want the breaker not to wait")
				}
				if got := counterValue(t, f.web.metrics, "bulwark_circuit_breaker_open_total"); got != 1 {
					t.Errorf("bulwark_circuit_breaker_open_total: got %v, want 1", got)
				}
				release()
				if got := <-first; got.status != 200 {
					t.Errorf("held request: got %d %q, want 200", got.status, got.body)
				}
			})
		}
	})
	t.Run("max_pending_requests", func(t *testing.T) {
		f := newFleet(t, 1, balancer.Locality{})
		// A peer that accepts connections and never answers the TLS
		// handshake: a request to it waits for its dial.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 16)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		ep := f.apis[0].endpoint("", "")
		ep.Address = ln.Addr().String()
		f.applyWeb(t, 1, trafficPolicyDoc(t, "connectionLimits: {maxPendingRequests: 1}"), nil, ep)

		first := f.web.getAsync("/dialing")
		var conn net.Conn
		select {
		case conn = <-accepted:
		case <-time.After(hangGuard):
			t.Fatal("the first request did not dial")
		}
		got := f.web.get(t, "/second")
		if got.status != http.StatusServiceUnavailable || got.body != "upstream overloaded\n" {
			t.Fatalf("second request: got %d %q, want 503 %q", got.status, got.body, "upstream overloaded\n")
		}
		if len(first) != 0 {
			t.Fatal("the dialing request was answered before the second one")
		}
		// The peer goes away: the handshake fails, and so do the retries'
		// dials.
		ln.Close()
		conn.Close()
		select {
		case got := <-first:
			if got.status != http.StatusServiceUnavailable {
				t.Errorf("first request: got %d %q, want 503", got.status, got.body)
			}
		case <-time.After(hangGuard):
			t.Fatal("the first request did not end after its handshake failed")
		}
	})
}

func TestLoadBalancing(t *testing.T) {
	t.Run("round_robin", func(t *testing.T) {
		f := newFleet(t, 3, balancer.Locality{})
		f.applyWeb(t, 1, trafficPolicyDoc(t, "loadBalancer: {policy: RoundRobin}"), nil,
			f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""), f.apis[2].endpoint("", ""))
		for range 30 {
			if got := f.web.get(t, "/x"); got.status != 200 {
				t.Fatalf("got %d %q, want 200", got.status, got.body)
			}
		}
		if diff := cmp.Diff([]int{10, 10, 10}, f.hits()); diff != "" {
			t.Errorf("requests per instance (-want +got):\n%s", diff)
		}
	})
	t.Run("consistent_hash", func(t *testing.T) {
		f := newFleet(t, 3, balancer.Locality{})
		f.applyWeb(t, 1, trafficPolicyDoc(t, "loadBalancer: {policy: ConsistentHash, hashOn: {header: x-user}}"), nil,
			f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""), f.apis[2].endpoint("", ""))
		for _, user := range []string{"alice", "bob", "carol"} {
			first := f.web.get(t, "/x", "X-User", user).body
			for range 10 {
				if got := f.web.get(t, "/x", "X-User", user); got.body != first {
					t.Fatalf("user %s: got %q, want %q (same value, same instance)", user, got.body, first)
				}
			}
		}
		cookieTP := trafficPolicyDoc(t, "loadBalancer: {policy: ConsistentHash, hashOn: {cookie: session}}")
		f.applyWeb(t, 2, cookieTP, nil, f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""), f.apis[2].endpoint("", ""))
		first := f.web.get(t, "/x", "Cookie", "theme=dark; session=s-1").body
		for range 10 {
			if got := f.web.get(t, "/x", "Cookie", "session=s-1"); got.body != first {
				t.Fatalf("cookie session=s-1: got %q, want %q (same value, same instance)", got.body, first)
			}
		}
		f.applyWeb(t, 3, trafficPolicyDoc(t, "loadBalancer: {policy: ConsistentHash, hashOn: {header: x-user}}"), nil,
			f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""), f.apis[2].endpoint("", ""))
		seen := map[string]bool{}
		for i := range 30 {
			seen[f.web.get(t, "/x", "X-User", "user-"+strconv.Itoa(i)).body] = true
		}
		if len(seen) < 2 {
			t.Errorf("30 users reached %v, want more than one instance", seen)
		}
		// Without the header there is no key: requests spread rather than
		// all hashing the empty value to one instance.
		before := f.hits()
		for range 30 {
			f.web.get(t, "/x")
		}
		after, used := f.hits(), 0
		for i := range after {
			if after[i] > before[i] {
				used++
			}
		}
		if used < 2 {
			t.Errorf("30 requests without the header reached %d instance, want more than one", used)
		}
	})
	t.Run("draining", func(t *testing.T) {
		tests := []struct {
			name     string
			draining []bool
			want     []int
		}{
			{name: "skipped_while_another_is_live", draining: []bool{true, false}, want: []int{0, 10}},
			{name: "used_when_none_is_live", draining: []bool{true, true}, want: nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				f := newFleet(t, 2, balancer.Locality{})
				var eps []*apiv1.Endpoint
				for i, in := range f.apis {
					ep := in.endpoint("", "")
					ep.Draining = tc.draining[i]
					eps = append(eps, ep)
				}
				f.applyWeb(t, 1, nil, nil, eps...)
				for range 10 {
					if got := f.web.get(t, "/x"); got.status != 200 {
						t.Fatalf("got %d %q, want 200", got.status, got.body)
					}
				}
				got := f.hits()
				if tc.want != nil {
					if diff := cmp.Diff(tc.want, got); diff != "" {
						t.Errorf("requests per instance (-want +got):\n%s", diff)
					}
				} else if got[0]+got[1] != 10 {
					t.Errorf("requests per instance: got %v, want 10 in all", got)
				}
			})
		}
	})
	t.Run("locality_failover", func(t *testing.T) {
		f := newFleet(t, 3, balancer.Locality{Region: "r1", Zone: "z1"})
		f.applyWeb(t, 1, nil, nil,
			f.apis[0].endpoint("", "r1/z1"), f.apis[1].endpoint("", "r1/z2"), f.apis[2].endpoint("", "r2/z3"))
		for range 20 {
			if got := f.web.get(t, "/x"); got.status != 200 || got.body != "api-0" {
				t.Fatalf("got %d %q, want 200 %q (the caller's zone)", got.status, got.body, "api-0")
			}
		}
		// The z1 instance goes away: connect failures (retried by
		// default) eject it, and requests fail over to z2, not r2.
		f.apis[0].stop()
		for range 20 {
			if got := f.web.get(t, "/x"); got.status != 200 || got.body != "api-1" {
				t.Fatalf("got %d %q, want 200 %q (the caller's region)", got.status, got.body, "api-1")
			}
		}
		if got := counterValue(t, f.web.metrics, "bulwark_outlier_ejections_total"); got != 1 {
			t.Errorf("bulwark_outlier_ejections_total: got %v, want 1", got)
		}
		if got := f.apis[2].count(); got != 0 {
			t.Errorf("api-2 in another region received %d requests, want 0", got)
		}
	})
}

func TestRoutes(t *testing.T) {
	t.Run("weighted_split", func(t *testing.T) {
		const requests = 1000
		f := newFleet(t, 2, balancer.Locality{})
		f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, `
- name: canary
  backends: [{version: v1, weight: 90}, {version: v2, weight: 10}]
`)}, f.apis[0].endpoint("v1", ""), f.apis[1].endpoint("v2", ""))
		var failed atomic.Int64
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for range requests / 4 {
					req, _ := http.NewRequest(http.MethodGet, "http://api.default/split/"+strconv.Itoa(w), nil)
					resp, err := f.web.client.Do(req)
					if err != nil {
						failed.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if n := failed.Load(); n != 0 {
			t.Fatalf("%d of %d requests failed", n, requests)
		}
		got := f.hits()
		if got[0]+got[1] != requests {
			t.Fatalf("instances received %v, want %d in all", got, requests)
		}
		// ±4 points around 10%.
		if got[1] < 60 || got[1] > 140 {
			t.Errorf("v2 received %d of %d requests, want 10%% ± 4 points (60 to 140)", got[1], requests)
		}
	})
	t.Run("header_routes_to_v2", func(t *testing.T) {
		f := newFleet(t, 2, balancer.Locality{})
		f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, `
- name: testers
  matches: [{headers: [{name: x-canary, exact: "true"}]}]
  backends: [{version: v2, weight: 100}]
- name: everyone
  backends: [{version: v1, weight: 100}]
`)}, f.apis[0].endpoint("v1", ""), f.apis[1].endpoint("v2", ""))
		for range 20 {
			if got := f.web.get(t, "/x", "X-Canary", "true"); got.body != "api-1" {
				t.Fatalf("with the header: got %d %q, want v2 (api-1)", got.status, got.body)
			}
			if got := f.web.get(t, "/x", "X-Canary", "false"); got.body != "api-0" {
				t.Fatalf("with another value: got %d %q, want v1 (api-0)", got.status, got.body)
			}
		}
		f.web.node.log.waitFor(t, "route in the access log", func(l map[string]any) bool {
			return l["route"] == "api/testers"
		})
	})
	t.Run("version_without_endpoints", func(t *testing.T) {
		f := newFleet(t, 1, balancer.Locality{})
		f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, "- backends: [{version: v3, weight: 100}]")}, f.apis[0].endpoint("v1", ""))
		if got := f.web.get(t, "/x"); got.status != http.StatusServiceUnavailable || got.body != "no healthy upstream\n" {
			t.Fatalf("got %d %q, want 503 %q", got.status, got.body, "no healthy upstream\n")
		}
		if got := f.apis[0].count(); got != 0 {
			t.Errorf("v1 received %d requests, want 0", got)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		f := newFleet(t, 1, balancer.Locality{})
		f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, `
- name: moved
  matches: [{path: {prefix: /old}}]
  redirect: {path: /new, status: 301}
`)}, f.apis[0].endpoint("", ""))
		got := f.web.get(t, "/old?q=1")
		if got.status != http.StatusMovedPermanently || got.header.Get("Location") != "http://api.default/new?q=1" {
			t.Fatalf("got %d Location %q, want 301 %q", got.status, got.header.Get("Location"), "http://api.default/new?q=1")
		}
		if got := f.web.get(t, "/other"); got.status != 200 {
			t.Errorf("unmatched path: got %d %q, want 200", got.status, got.body)
		}
		if diff := cmp.Diff([]int{1}, f.hits()); diff != "" {
			t.Errorf("requests per instance (-want +got):\n%s", diff)
		}
	})
	t.Run("header_edits", func(t *testing.T) {
		f := newFleet(t, 1, balancer.Locality{})
		f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, `
- name: edits
  requestHeaders: {set: {x-env: canary}, add: {x-extra: two}, remove: [x-drop]}
  responseHeaders: {set: {x-served-by: mesh}, remove: [x-instance]}
`)}, f.apis[0].endpoint("", ""))
		got := f.web.get(t, "/x", "X-Env", "prod", "X-Extra", "one", "X-Drop", "secret")
		if got.status != 200 {
			t.Fatalf("got %d %q, want 200", got.status, got.body)
		}
		if got.header.Get("X-Served-By") != "mesh" || got.header.Get("X-Instance") != "" {
			t.Errorf("response headers: got X-Served-By %q X-Instance %q, want %q and none",
				got.header.Get("X-Served-By"), got.header.Get("X-Instance"), "mesh")
		}
		h := f.apis[0].received()[0].header
		gotHdr := map[string][]string{"X-Env": h.Values("X-Env"), "X-Extra": h.Values("X-Extra"), "X-Drop": h.Values("X-Drop")}
		want := map[string][]string{"X-Env": {"canary"}, "X-Extra": {"one", "two"}, "X-Drop": nil}
		if diff := cmp.Diff(want, gotHdr); diff != "" {
			t.Errorf("request headers at the app (-want +got):\n%s", diff)
		}
	})
	t.Run("fault_abort", func(t *testing.T) {
		f := newFleet(t, 1, balancer.Locality{})
		f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, `
- name: chaos
  matches: [{headers: [{name: x-chaos, present: true}]}]
  fault: {abort: {status: 418}}
`)}, f.apis[0].endpoint("", ""))
		for range 5 {
			if got := f.web.get(t, "/x", "X-Chaos", "1"); got.status != http.StatusTeapot || got.body != "fault injected\n" {
				t.Fatalf("got %d %q, want 418 %q", got.status, got.body, "fault injected\n")
			}
		}
		if got := f.apis[0].count(); got != 0 {
			t.Errorf("app received %d aborted requests, want 0", got)
		}
		if got := f.web.get(t, "/x"); got.status != 200 {
			t.Errorf("without the header: got %d %q, want 200", got.status, got.body)
		}
		f.web.node.log.waitFor(t, "fault in the access log", func(l map[string]any) bool {
			return l["fault"] == "abort" && l["status"] == float64(418)
		})
	})
	t.Run("fault_delay", func(t *testing.T) {
		f := newFleet(t, 1, balancer.Locality{})
		f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, "- fault: {delay: {fixed: 50ms}}")}, f.apis[0].endpoint("", ""))
		if got := f.web.get(t, "/x"); got.status != 200 || got.body != "api-0" {
			t.Fatalf("got %d %q, want 200 %q", got.status, got.body, "api-0")
		}
		if got := f.apis[0].count(); got != 1 {
			t.Errorf("app received %d delayed requests, want 1", got)
		}
		f.web.node.log.waitFor(t, "fault in the access log", func(l map[string]any) bool {
			return l["fault"] == "delay"
		})
	})
	t.Run("rule_retries_and_timeout", func(t *testing.T) {
		f := newFleet(t, 2, balancer.Locality{})
		f.apis[0].fail(http.StatusServiceUnavailable)
		f.applyWeb(t, 1, trafficPolicyDoc(t, "loadBalancer: {policy: RoundRobin}", "outlierDetection: {disabled: true}"), [][]byte{routeDoc(t, `
- name: retried
  matches: [{path: {prefix: /retried}}]
  retries: {attempts: 1}
- name: slow
  matches: [{path: {prefix: /slow}}]
  timeout: 300ms
`)}, f.apis[0].endpoint("", ""), f.apis[1].endpoint("", ""))
		// The TrafficPolicy's (default) retries leave a 503 alone; the
		// rule's retry it.
		if got := f.web.get(t, "/other"); got.status != http.StatusServiceUnavailable {
			t.Fatalf("/other: got %d %q, want 503 from api-0 (not retried)", got.status, got.body)
		}
		f.web.get(t, "/other") // api-1: RoundRobin's next is api-0 again
		if got := f.web.get(t, "/retried"); got.status != 200 || got.body != "api-1" {
			t.Fatalf("/retried: got %d %q, want 200 %q", got.status, got.body, "api-1")
		}
		f.apis[0].fail(0)
		release := f.apis[1].hold()
		defer release()
		release0 := f.apis[0].hold()
		defer release0()
		if got := f.web.get(t, "/slow"); got.status != http.StatusGatewayTimeout {
			t.Fatalf("/slow: got %d %q, want 504 (the rule's timeout)", got.status, got.body)
		}
	})
	t.Run("mirror", func(t *testing.T) {
		mirrorRoute := `
- name: shadow
  backends: [{version: v1, weight: 100}]
  mirror: {version: v2}
`
		tests := []struct {
			name string
			// shadow sets up the v2 instance (or leaves it out for a dead
			// endpoint) and returns what undoes it.
			shadow func(in *instance) func()
			dead   bool
		}{
			{name: "copy_received", shadow: func(*instance) func() { return func() {} }},
			{name: "shadow_fails", shadow: func(in *instance) func() { in.fail(http.StatusInternalServerError); return func() {} }},
			{name: "shadow_hangs", shadow: func(in *instance) func() { return in.hold() }},
			{name: "shadow_unreachable", dead: true},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				f := newFleet(t, 2, balancer.Locality{})
				v2 := f.apis[1].endpoint("v2", "")
				if tc.dead {
					v2 = f.deadEndpoint(t, "")
					v2.Labels = map[string]string{"version": "v2"}
				} else {
					defer tc.shadow(f.apis[1])()
				}
				f.applyWeb(t, 1, nil, [][]byte{routeDoc(t, mirrorRoute)}, f.apis[0].endpoint("v1", ""), v2)
				const body = "order=42"
				// A hop-by-hop header named in Connection reaches neither
				// the version answering nor the mirror.
				hdr := http.Header{"Content-Type": {"text/plain"}, "Connection": {"X-Hop"}, "X-Hop": {"secret"}}
				got := f.web.send(t, http.MethodPost, "/orders?x=1", body, hdr)
				if got.status != 200 || got.body != "api-0" {
					t.Fatalf("got %d %q, want 200 %q (v1 answers)", got.status, got.body, "api-0")
				}
				if tc.dead {
					return
				}
				h := f.apis[1].waitArrived(t)
				if h.method != http.MethodPost || h.uri != "/orders?x=1" || h.body != body {
					t.Errorf("mirror received %s %s %q, want POST /orders?x=1 %q", h.method, h.uri, h.body, body)
				}
				for i, h := range []hit{f.apis[0].received()[0], h} {
					if v := h.header.Get("X-Hop"); v != "" {
						t.Errorf("%s received the hop-by-hop header X-Hop: %q", f.apis[i].name, v)
					}
				}
				if got := f.apis[0].count(); got != 1 {
					t.Errorf("v1 received %d requests, want 1", got)
				}
			})
		}
	})
}

func TestInboundRateLimit(t *testing.T) {
	tests := []struct {
		name string
		per  string
		// wantCart is what shop/cart gets once shop/web used the burst.
		wantCart int
	}{
		{name: "per_source", per: "source", wantCart: 200},
		{name: "per_service", per: "service", wantCart: http.StatusTooManyRequests},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, 1, balancer.Locality{})
			api := f.apis[0]
			api.node.apply(t, f.apiSnapshot(t, 2, trafficPolicyDoc(t,
				"rateLimit: {requestsPerSecond: 1, burst: 2, per: "+tc.per+"}")))
			f.applyWeb(t, 1, nil, nil, api.endpoint("", ""))
			cart := f.newCaller(t, cartSvc, balancer.Locality{})
			cart.node.apply(t, f.callerSnapshot(t, 1, nil, nil, api.endpoint("", "")))

			for i := range 2 {
				if got := f.web.get(t, "/x"); got.status != 200 {
					t.Fatalf("request %d: got %d %q, want 200 (within the burst)", i, got.status, got.body)
				}
			}
			got := f.web.get(t, "/x")
			if got.status != http.StatusTooManyRequests {
				t.Fatalf("third request: got %d %q, want 429", got.status, got.body)
			}
			if s, err := strconv.Atoi(got.header.Get("Retry-After")); err != nil || s < 1 {
				t.Errorf("Retry-After: got %q, want whole seconds >= 1", got.header.Get("Retry-After"))
			}
			if got := cart.get(t, "/x"); got.status != tc.wantCart {
				t.Errorf("shop/cart: got %d %q, want %d", got.status, got.body, tc.wantCart)
			}
			if got := api.count(); got != 2+boolInt(tc.wantCart == 200) {
				t.Errorf("app received %d requests, want only those within the limit", got)
			}
			wantLimited := 1 + boolInt(tc.wantCart != 200)
			if got := counterValue(t, api.metrics, "bulwark_rate_limited_total"); got != float64(wantLimited) {
				t.Errorf("bulwark_rate_limited_total: got %v, want %d", got, wantLimited)
			}

			// A second refills one token.
			f.clock.Advance(time.Second)
			if got := f.web.get(t, "/x"); got.status != 200 {
				t.Errorf("a second later: got %d %q, want 200", got.status, got.body)
			}
			if got := f.web.get(t, "/x"); got.status != http.StatusTooManyRequests {
				t.Errorf("a second later, twice: got %d %q, want 429", got.status, got.body)
			}
		})
	}
}

func TestInboundRateLimitRouteAndSnapshots(t *testing.T) {
	f := newFleet(t, 1, balancer.Locality{})
	api := f.apis[0]
	apiSnap := func(version int64, tp []byte) *apiv1.Snapshot {
		s := f.apiSnapshot(t, version, tp)
		s.Inbound.Routes = [][]byte{routeDoc(t, `
- name: limited
  matches: [{path: {prefix: /limited}}]
  rateLimit: {requestsPerSecond: 1, burst: 1}
`)}
		return s
	}
	tp := trafficPolicyDoc(t, "rateLimit: {requestsPerSecond: 1, burst: 5}")
	api.node.apply(t, apiSnap(2, tp))
	f.applyWeb(t, 1, nil, nil, api.endpoint("", ""))

	// Each request takes a token of the service's bucket (5), then of the
	// rule's (1) when it matches.
	type step struct {
		path string
		want int
	}
	run := func(what string, steps ...step) {
		t.Helper()
		for i, st := range steps {
			if got := f.web.get(t, st.path); got.status != st.want {
				t.Fatalf("%s, step %d %s: got %d %q, want %d", what, i, st.path, got.status, got.body, st.want)
			}
		}
	}
	run("first snapshot", step{"/limited", 200}, step{"/limited", http.StatusTooManyRequests})
	// A new snapshot with the same limits keeps both buckets.
	api.node.apply(t, apiSnap(3, tp))
	run("same limits", step{"/limited", http.StatusTooManyRequests}, step{"/open", 200}, step{"/open", 200}, step{"/open", http.StatusTooManyRequests})
	// A changed limit starts with a full bucket.
	api.node.apply(t, apiSnap(4, trafficPolicyDoc(t, "rateLimit: {requestsPerSecond: 1, burst: 6}")))
	run("changed limit", step{"/open", 200})
}

func TestTrafficPolicyChangeUnderLoad(t *testing.T) {
	// Requests in flight on one snapshot while the next changes the
	// breaker, budget and outlier settings: every request is answered, and
	// the race detector sees no unsynchronized access to the kept state.
	f := newFleet(t, 2, balancer.Locality{})
	eps := []*apiv1.Endpoint{f.apis[0].endpoint("", ""), f.apis[1].endpoint("", "")}
	policies := [][]byte{
		trafficPolicyDoc(t, "connectionLimits: {maxRequests: 100}", "retries: {attempts: 1}", "outlierDetection: {consecutiveGatewayErrors: 5}"),
		trafficPolicyDoc(t, "connectionLimits: {maxRequests: 200}", "retries: {attempts: 2, budget: {percent: 50}}", "outlierDetection: {consecutiveGatewayErrors: 7}"),
	}
	f.applyWeb(t, 1, policies[0], nil, eps...)
	stop := make(chan struct{})
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := f.web.client.Get("http://api.default/x")
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		})
	}
	for v := int64(2); v < 42; v++ {
		f.applyWeb(t, v, policies[v%2], nil, eps...)
		for len(f.apis[0].arrived) > 0 {
			<-f.apis[0].arrived
		}
		f.apis[0].waitArrived(t)
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed while the TrafficPolicy changed", n)
	}
}
