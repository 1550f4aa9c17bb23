package proxy

// Route tests are internal: the compiled table is unexported and only the
// forwarding loop uses it.

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// routeDoc returns a Route document in namespace default with the given
// spec (JSON).
func routeDoc(name, spec string) []byte {
	return []byte(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Route","metadata":{"name":"` + name +
		`","namespace":"default"},"spec":` + spec + `}`)
}

// routeRulesDoc returns a Route for service api with the given rules
// (a JSON array).
func routeRulesDoc(name, rules string) []byte {
	return routeDoc(name, `{"service":"api","rules":`+rules+`}`)
}

func mustCompileRoutes(t testing.TB, docs ...[]byte) *routeTable {
	t.Helper()
	rt, err := compileRoutes(docs)
	if err != nil {
		t.Fatalf("compileRoutes: %v", err)
	}
	return rt
}

// routeReq is a request for the matching tests: GET / unless set.
type routeReq struct {
	method, path, query string
	header              http.Header
	sources             []string
}

func (r routeReq) input() *routeInput {
	in := &routeInput{method: r.method, path: r.path, rawQuery: r.query, header: r.header, sources: r.sources}
	if in.method == "" {
		in.method = http.MethodGet
	}
	if in.path == "" {
		in.path = "/"
	}
	return in
}

func TestRouteMatch(t *testing.T) {
	tests := []struct {
		name    string
		matches string // the rule's matches, a JSON array; "" for none
		req     routeReq
		want    bool
	}{
		{"no-matches-matches-all", "", routeReq{method: "DELETE", path: "/anything"}, true},
		{"empty-match-matches-all", `[{}]`, routeReq{path: "/x"}, true},

		{"path-exact", `[{"path":{"exact":"/api"}}]`, routeReq{path: "/api"}, true},
		{"path-exact-not-prefix", `[{"path":{"exact":"/api"}}]`, routeReq{path: "/api/x"}, false},
		{"path-exact-trailing-slash", `[{"path":{"exact":"/api"}}]`, routeReq{path: "/api/"}, false},
		{"path-prefix-itself", `[{"path":{"prefix":"/api"}}]`, routeReq{path: "/api"}, true},
		{"path-prefix-dir", `[{"path":{"prefix":"/api"}}]`, routeReq{path: "/api/"}, true},
		{"path-prefix-child", `[{"path":{"prefix":"/api"}}]`, routeReq{path: "/api/x/y"}, true},
		{"path-prefix-apix", `[{"path":{"prefix":"/api"}}]`, routeReq{path: "/apix"}, false},
		{"path-prefix-other", `[{"path":{"prefix":"/api"}}]`, routeReq{path: "/ap"}, false},
		{"path-prefix-slash-child", `[{"path":{"prefix":"/api/"}}]`, routeReq{path: "/api/x"}, true},
		{"path-prefix-slash-dir", `[{"path":{"prefix":"/api/"}}]`, routeReq{path: "/api/"}, true},
		{"path-prefix-slash-bare", `[{"path":{"prefix":"/api/"}}]`, routeReq{path: "/api"}, false},
		{"path-prefix-root", `[{"path":{"prefix":"/"}}]`, routeReq{path: "/x/y"}, true},
		{"path-regex", `[{"path":{"regex":"/v[0-9]+/.*"}}]`, routeReq{path: "/v2/users"}, true},
		{"path-regex-anchored-start", `[{"path":{"regex":"/v[0-9]+/.*"}}]`, routeReq{path: "/x/v2/users"}, false},
		{"path-regex-anchored-end", `[{"path":{"regex":"/v[0-9]+"}}]`, routeReq{path: "/v2/users"}, false},
		{"path-regex-alternation-anchored", `[{"path":{"regex":"/a|/b"}}]`, routeReq{path: "/bc"}, false},
		{"path-regex-alternation", `[{"path":{"regex":"/a|/b"}}]`, routeReq{path: "/b"}, true},

		{"method-exact", `[{"methods":["GET"]}]`, routeReq{method: "GET"}, true},
		{"method-lower-case", `[{"methods":["GET"]}]`, routeReq{method: "get"}, false},
		{"method-other", `[{"methods":["GET"]}]`, routeReq{method: "POST"}, false},
		{"method-any-of", `[{"methods":["GET","POST"]}]`, routeReq{method: "POST"}, true},
		{"method-head-is-not-get", `[{"methods":["GET"]}]`, routeReq{method: "HEAD"}, false},

		{"header-present", `[{"headers":[{"name":"X-Canary","present":true}]}]`,
			routeReq{header: http.Header{"X-Canary": {"yes"}}}, true},
		{"header-present-empty-value", `[{"headers":[{"name":"X-Canary","present":true}]}]`,
			routeReq{header: http.Header{"X-Canary": {""}}}, true},
		{"header-present-missing", `[{"headers":[{"name":"X-Canary","present":true}]}]`,
			routeReq{header: http.Header{"X-Other": {"1"}}}, false},
		{"header-present-nil-header", `[{"headers":[{"name":"X-Canary","present":true}]}]`,
			routeReq{}, false},
		{"header-exact", `[{"headers":[{"name":"X-Canary","exact":"v2"}]}]`,
			routeReq{header: http.Header{"X-Canary": {"v2"}}}, true},
		{"header-exact-other-value", `[{"headers":[{"name":"X-Canary","exact":"v2"}]}]`,
			routeReq{header: http.Header{"X-Canary": {"v2x"}}}, false},
		{"header-exact-value-case", `[{"headers":[{"name":"X-Canary","exact":"v2"}]}]`,
			routeReq{header: http.Header{"X-Canary": {"V2"}}}, false},
		{"header-exact-missing", `[{"headers":[{"name":"X-Canary","exact":"v2"}]}]`,
			routeReq{header: http.Header{}}, false},
		{"header-exact-first-value-only", `[{"headers":[{"name":"X-Canary","exact":"v2"}]}]`,
			routeReq{header: http.Header{"X-Canary": {"v1", "v2"}}}, false},
		{"header-name-case-insensitive", `[{"headers":[{"name":"x-CANARY","exact":"v2"}]}]`,
			routeReq{header: http.Header{"X-Canary": {"v2"}}}, true},
		{"header-prefix", `[{"headers":[{"name":"User-Agent","prefix":"curl/"}]}]`,
			routeReq{header: http.Header{"User-Agent": {"curl/8.5"}}}, true},
		{"header-prefix-miss", `[{"headers":[{"name":"User-Agent","prefix":"curl/"}]}]`,
			routeReq{header: http.Header{"User-Agent": {"Go-http-client/1.1"}}}, false},
		{"header-prefix-missing", `[{"headers":[{"name":"User-Agent","prefix":"curl/"}]}]`,
			routeReq{}, false},
		{"header-regex", `[{"headers":[{"name":"X-User","regex":"(alice|bob)"}]}]`,
			routeReq{header: http.Header{"X-User": {"bob"}}}, true},
		{"header-regex-anchored", `[{"headers":[{"name":"X-User","regex":"(alice|bob)"}]}]`,
			routeReq{header: http.Header{"X-User": {"bobby"}}}, false},
		{"header-regex-missing", `[{"headers":[{"name":"X-User","regex":".*"}]}]`,
			routeReq{}, false},
		{"headers-all-of", `[{"headers":[{"name":"X-A","exact":"1"},{"name":"X-B","exact":"2"}]}]`,
			routeReq{header: http.Header{"X-A": {"1"}, "X-B": {"2"}}}, true},
		{"headers-all-of-one-missing", `[{"headers":[{"name":"X-A","exact":"1"},{"name":"X-B","exact":"2"}]}]`,
			routeReq{header: http.Header{"X-A": {"1"}}}, false},

		{"query-present", `[{"queryParams":[{"name":"debug","present":true}]}]`, routeReq{query: "a=1&debug"}, true},
		{"query-present-empty", `[{"queryParams":[{"name":"debug","present":true}]}]`, routeReq{query: "debug="}, true},
		{"query-present-missing", `[{"queryParams":[{"name":"debug","present":true}]}]`, routeReq{query: "debugx=1"}, false},
		{"query-present-no-query", `[{"queryParams":[{"name":"debug","present":true}]}]`, routeReq{}, false},
		{"query-exact", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "a=1&v=2&b=3"}, true},
		{"query-exact-miss", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "v=22"}, false},
		{"query-exact-missing", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "w=2"}, false},
		{"query-name-case-sensitive", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "V=2"}, false},
		{"query-first-value-only", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "v=1&v=2"}, false},
		{"query-value-percent-decoded", `[{"queryParams":[{"name":"q","exact":"a b/c"}]}]`, routeReq{query: "q=a%20b%2Fc"}, true},
		{"query-value-plus-decoded", `[{"queryParams":[{"name":"q","exact":"a b"}]}]`, routeReq{query: "q=a+b"}, true},
		{"query-name-decoded", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "%76=2"}, true},
		{"query-bad-escape-skipped", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "v=%zz&v=2"}, true},
		{"query-semicolon-pair-skipped", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "v=2;x=1"}, false},
		{"query-empty-pairs", `[{"queryParams":[{"name":"v","exact":"2"}]}]`, routeReq{query: "&&v=2&"}, true},
		{"query-prefix", `[{"queryParams":[{"name":"v","prefix":"beta"}]}]`, routeReq{query: "v=beta-3"}, true},
		{"query-prefix-missing", `[{"queryParams":[{"name":"v","prefix":"beta"}]}]`, routeReq{query: "x=beta"}, false},
		{"query-regex", `[{"queryParams":[{"name":"id","regex":"[0-9]+"}]}]`, routeReq{query: "id=123"}, true},
		{"query-regex-anchored", `[{"queryParams":[{"name":"id","regex":"[0-9]+"}]}]`, routeReq{query: "id=123a"}, false},

		{"source-any", `[{"sourceServices":["*"]}]`, routeReq{sources: []string{"prod/web"}}, true},
		{"source-any-segments", `[{"sourceServices":["*/*"]}]`, routeReq{sources: []string{"prod/web"}}, true},
		{"source-exact", `[{"sourceServices":["prod/web"]}]`, routeReq{sources: []string{"prod/web"}}, true},
		{"source-exact-miss", `[{"sourceServices":["prod/web"]}]`, routeReq{sources: []string{"prod/webx"}}, false},
		{"source-namespace", `[{"sourceServices":["prod/*"]}]`, routeReq{sources: []string{"prod/web"}}, true},
		{"source-namespace-boundary", `[{"sourceServices":["prod/*"]}]`, routeReq{sources: []string{"production/web"}}, false},
		{"source-name-any-namespace", `[{"sourceServices":["*/web"]}]`, routeReq{sources: []string{"staging/web"}}, true},
		{"source-name-boundary", `[{"sourceServices":["*/web"]}]`, routeReq{sources: []string{"staging/myweb"}}, false},
		{"source-several-services", `[{"sourceServices":["prod/api"]}]`, routeReq{sources: []string{"prod/web", "prod/api"}}, true},
		{"source-no-services", `[{"sourceServices":["prod/*"]}]`, routeReq{}, false},
		{"source-any-of", `[{"sourceServices":["a/x","prod/web"]}]`, routeReq{sources: []string{"prod/web"}}, true},

		{"match-all-conditions", `[{"path":{"prefix":"/api"},"methods":["POST"],"headers":[{"name":"X-A","present":true}]}]`,
			routeReq{method: "POST", path: "/api/x", header: http.Header{"X-A": {""}}}, true},
		{"match-all-conditions-one-fails", `[{"path":{"prefix":"/api"},"methods":["POST"],"headers":[{"name":"X-A","present":true}]}]`,
			routeReq{method: "GET", path: "/api/x", header: http.Header{"X-A": {""}}}, false},
		{"matches-any-of", `[{"path":{"exact":"/a"}},{"methods":["PUT"]}]`, routeReq{method: "PUT", path: "/b"}, true},
		{"matches-any-of-none", `[{"path":{"exact":"/a"}},{"methods":["PUT"]}]`, routeReq{method: "GET", path: "/b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule := `{"backends":[{"version":"v1","weight":100}]}`
			if tt.matches != "" {
				rule = `{"matches":` + tt.matches + `,"backends":[{"version":"v1","weight":100}]}`
			}
			rt := mustCompileRoutes(t, routeRulesDoc("r", "["+rule+"]"))
			got := rt.match(tt.req.input()) != nil
			if got != tt.want {
				t.Errorf("matched: got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRouteMatchServerHeaders sends header names in lower and mixed case
// over real HTTP/1.1 and HTTP/2 connections: net/http stores them under
// the canonical name the compiled match looks up.
func TestRouteMatchServerHeaders(t *testing.T) {
	rt := mustCompileRoutes(t, routeRulesDoc("h", `[{"name":"canary","matches":[{"headers":[{"name":"x-canary","exact":"v2"},{"name":"X-USER-ID","present":true}]}]}]`))
	matched := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := "none"
		if rule := rt.match(&routeInput{method: r.Method, path: r.URL.Path, header: r.Header}); rule != nil {
			name = rule.name
		}
		matched <- r.Proto + " " + name
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	// HTTP/1.1 on a raw connection, so the names go out as written.
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /x HTTP/1.1\r\nHost: api\r\nx-CANARY: v2\r\nx-user-id:\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatal(err)
	}
	if got, want := <-matched, "HTTP/1.1 h/canary"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}

	// HTTP/2 sends names in lower case.
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header["X-canary"] = []string{"v2"}
	req.Header["x-user-id"] = []string{""}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := <-matched, "HTTP/2.0 h/canary"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRouteFirstRuleWins(t *testing.T) {
	rt := mustCompileRoutes(t,
		routeRulesDoc("a-canary", `[
			{"name":"testers","matches":[{"headers":[{"name":"X-Canary","exact":"1"}]}],"backends":[{"version":"v2","weight":100}]},
			{"matches":[{"path":{"prefix":"/api"}}],"backends":[{"version":"v1","weight":100}]}]`),
		routeRulesDoc("b-default", `[
			{"name":"api-v3","matches":[{"path":{"prefix":"/api"}}],"backends":[{"version":"v3","weight":100}]},
			{"name":"rest","backends":[{"version":"v4","weight":100}]}]`),
	)
	tests := []struct {
		name string
		req  routeReq
		want string
	}{
		{"first-route-first-rule", routeReq{path: "/api/x", header: http.Header{"X-Canary": {"1"}}}, "a-canary/testers"},
		{"first-route-default-name", routeReq{path: "/api/x"}, "a-canary/rule1"},
		{"second-route-catch-all", routeReq{path: "/web"}, "b-default/rest"},
		{"second-route-catch-all-canary", routeReq{path: "/web", header: http.Header{"X-Canary": {"2"}}}, "b-default/rest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rt.match(tt.req.input())
			if r == nil {
				t.Fatalf("got no rule, want %s", tt.want)
			}
			if r.name != tt.want {
				t.Errorf("got rule %s, want %s", r.name, tt.want)
			}
		})
	}
	if got := len(rt.rules); got != 4 {
		t.Errorf("got %d rules, want 4", got)
	}
}

func TestRouteNoMatch(t *testing.T) {
	rt := mustCompileRoutes(t, routeRulesDoc("r", `[{"matches":[{"path":{"exact":"/a"}}],"backends":[{"version":"v1","weight":100}]}]`))
	if r := rt.match(routeReq{path: "/b"}.input()); r != nil {
		t.Errorf("got rule %s, want none", r.name)
	}
	var none *routeTable
	if r := none.match(routeReq{}.input()); r != nil {
		t.Errorf("nil table: got rule %s, want none", r.name)
	}
	empty, err := compileRoutes(nil)
	if err != nil || empty != nil {
		t.Errorf("compileRoutes(nil): got %v, %v; want nil, nil", empty, err)
	}
}

func TestRoutePickVersion(t *testing.T) {
	split := func(bs ...routeBackend) *routeRule { return &routeRule{backends: bs} }
	canary := split(routeBackend{"v1", 90}, routeBackend{"v2", 10})
	tests := []struct {
		name string
		rule *routeRule
		x    float64
		want string
	}{
		{"90-10-at-0", canary, 0, "v1"},
		{"90-10-just-below-90", canary, 89.999, "v1"},
		{"90-10-at-90", canary, 90, "v2"},
		{"90-10-just-below-100", canary, 99.999, "v2"},
		{"90-10-out-of-range-high", canary, 100, "v2"},
		{"zero-first-at-0", split(routeBackend{"v0", 0}, routeBackend{"v1", 100}), 0, "v1"},
		{"zero-last-at-top", split(routeBackend{"v1", 100}, routeBackend{"v2", 0}), 99.999, "v1"},
		{"zero-last-out-of-range", split(routeBackend{"v1", 100}, routeBackend{"v2", 0}), 100, "v1"},
		{"zero-middle-at-boundary", split(routeBackend{"a", 50}, routeBackend{"z", 0}, routeBackend{"b", 50}), 50, "b"},
		{"three-way-boundaries", split(routeBackend{"a", 33}, routeBackend{"b", 33}, routeBackend{"c", 34}), 66, "c"},
		{"no-backends", &routeRule{}, 42, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rule.pickVersion(tt.x); got != tt.want {
				t.Errorf("pickVersion(%v): got %q, want %q", tt.x, got, tt.want)
			}
		})
	}
}

// TestRouteWeightZeroNeverPicked sweeps [0,100) finely and counts each
// version's share: a weight-0 backend gets nothing, the others exactly
// their weights.
func TestRouteWeightZeroNeverPicked(t *testing.T) {
	rt := mustCompileRoutes(t, routeRulesDoc("split", `[{"backends":[
		{"version":"off","weight":0},{"version":"v1","weight":70},{"version":"dark","weight":0},
		{"version":"v2","weight":30},{"version":"end","weight":0}]}]`))
	rule := rt.rules[0]
	const steps = 10000
	got := map[string]int{}
	for i := range steps {
		got[rule.pickVersion(float64(i)*100/steps)]++
	}
	want := map[string]int{"v1": 7000, "v2": 3000}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("picks per version (-want +got):\n%s", diff)
	}
}

func TestRouteFaultDecide(t *testing.T) {
	compile := func(t *testing.T, fault string) *routeFault {
		t.Helper()
		rt := mustCompileRoutes(t, routeRulesDoc("f", `[{"fault":`+fault+`}]`))
		return rt.rules[0].fault
	}
	type want struct {
		delay time.Duration
		abort int
	}
	tests := []struct {
		name           string
		fault          string
		xDelay, xAbort float64
		want           want
	}{
		{"delay-default-percent-top", `{"delay":{"fixed":"2s"}}`, 99.999, 0, want{2 * time.Second, 0}},
		{"delay-10-below", `{"delay":{"fixed":"2s","percent":10}}`, 9.999, 0, want{2 * time.Second, 0}},
		{"delay-10-at-boundary", `{"delay":{"fixed":"2s","percent":10}}`, 10, 0, want{0, 0}},
		{"delay-0-percent", `{"delay":{"fixed":"2s","percent":0}}`, 0, 0, want{0, 0}},
		{"delay-100-percent", `{"delay":{"fixed":"2s","percent":100}}`, 99.999, 0, want{2 * time.Second, 0}},
		{"delay-fraction", `{"delay":{"fixed":"1ms","percent":0.5}}`, 0.499, 0, want{time.Millisecond, 0}},
		{"delay-fraction-boundary", `{"delay":{"fixed":"1ms","percent":0.5}}`, 0.5, 0, want{0, 0}},
		{"abort-default-percent", `{"abort":{"status":503}}`, 0, 99.999, want{0, 503}},
		{"abort-50-below", `{"abort":{"status":503,"percent":50}}`, 0, 49.999, want{0, 503}},
		{"abort-50-at-boundary", `{"abort":{"status":503,"percent":50}}`, 0, 50, want{0, 0}},
		{"abort-0-percent", `{"abort":{"status":503,"percent":0}}`, 0, 0, want{0, 0}},
		{"both-independent", `{"delay":{"fixed":"1s","percent":50},"abort":{"status":500,"percent":50}}`, 10, 60, want{time.Second, 0}},
		{"both-independent-other-way", `{"delay":{"fixed":"1s","percent":50},"abort":{"status":500,"percent":50}}`, 60, 10, want{0, 500}},
		{"both", `{"delay":{"fixed":"1s"},"abort":{"status":429}}`, 0, 0, want{time.Second, 429}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			delay, abort := compile(t, tt.fault).decide(tt.xDelay, tt.xAbort)
			if got := (want{delay, abort}); got != tt.want {
				t.Errorf("decide(%v, %v): got %+v, want %+v", tt.xDelay, tt.xAbort, got, tt.want)
			}
		})
	}
	var none *routeFault
	if d, a := none.decide(0, 0); d != 0 || a != 0 {
		t.Errorf("nil fault: got %v, %d; want 0, 0", d, a)
	}
}

func TestRouteMirrored(t *testing.T) {
	tests := []struct {
		name   string
		mirror string
		x      float64
		want   bool
	}{
		{"default-100-top", `{"version":"shadow"}`, 99.999, true},
		{"25-below", `{"version":"shadow","percent":25}`, 24.999, true},
		{"25-at-boundary", `{"version":"shadow","percent":25}`, 25, false},
		{"0-never", `{"version":"shadow","percent":0}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := mustCompileRoutes(t, routeRulesDoc("m", `[{"mirror":`+tt.mirror+`}]`))
			m := rt.rules[0].mirror
			if m.version != "shadow" {
				t.Errorf("version: got %q, want shadow", m.version)
			}
			if got := m.mirrored(tt.x); got != tt.want {
				t.Errorf("mirrored(%v): got %v, want %v", tt.x, got, tt.want)
			}
		})
	}
	var none *routeMirror
	if none.mirrored(0) {
		t.Error("nil mirror: got mirrored, want not")
	}
}

func TestRouteHeaderEdits(t *testing.T) {
	tests := []struct {
		name  string
		edits string
		in    http.Header
		want  http.Header
	}{
		{
			"remove-then-set-then-add",
			`{"remove":["X-A","x-gone"],"set":{"X-A":"set"},"add":{"X-A":"added"}}`,
			http.Header{"X-A": {"old1", "old2"}, "X-Gone": {"1"}, "X-Keep": {"k"}},
			http.Header{"X-A": {"set", "added"}, "X-Keep": {"k"}},
		},
		{
			"set-replaces-every-value",
			`{"set":{"x-env":"prod"}}`,
			http.Header{"X-Env": {"a", "b"}},
			http.Header{"X-Env": {"prod"}},
		},
		{
			"add-appends-to-values",
			`{"add":{"X-Tag":"c"}}`,
			http.Header{"X-Tag": {"a", "b"}},
			http.Header{"X-Tag": {"a", "b", "c"}},
		},
		{
			"add-creates",
			`{"add":{"x-tag":"c"}}`,
			http.Header{},
			http.Header{"X-Tag": {"c"}},
		},
		{
			"set-several-sorted",
			`{"set":{"X-B":"2","X-A":"1","X-C":""}}`,
			http.Header{},
			http.Header{"X-A": {"1"}, "X-B": {"2"}, "X-C": {""}},
		},
		{
			"remove-missing",
			`{"remove":["X-Nothing"]}`,
			http.Header{"X-Keep": {"k"}},
			http.Header{"X-Keep": {"k"}},
		},
		{
			"non-canonical-key-removed",
			`{"remove":["X-A"]}`,
			http.Header{"x-a": {"1"}, "X-A": {"2"}},
			http.Header{},
		},
		{
			"non-canonical-key-replaced-by-set",
			`{"set":{"X-A":"s"}}`,
			http.Header{"x-a": {"1"}},
			http.Header{"X-A": {"s"}},
		},
		{
			"non-canonical-key-joined-by-add",
			`{"add":{"X-A":"2"}}`,
			http.Header{"x-a": {"1"}},
			http.Header{"X-A": {"1", "2"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := mustCompileRoutes(t, routeRulesDoc("h", `[{"requestHeaders":`+tt.edits+`,"responseHeaders":`+tt.edits+`}]`))
			for _, e := range []*headerEdits{rt.rules[0].reqEdits, rt.rules[0].respEdits} {
				h := tt.in.Clone()
				e.apply(h)
				if diff := cmp.Diff(tt.want, h); diff != "" {
					t.Errorf("headers (-want +got):\n%s", diff)
				}
			}
		})
	}
	var none *headerEdits
	h := http.Header{"X-A": {"1"}}
	none.apply(h)
	if diff := cmp.Diff(http.Header{"X-A": {"1"}}, h); diff != "" {
		t.Errorf("nil edits changed headers (-want +got):\n%s", diff)
	}
}

func TestRouteRedirectLocation(t *testing.T) {
	tests := []struct {
		name                 string
		rd                   config.Redirect
		host, path, rawQuery string
		wantStatus           int
		wantLocation         string
	}{
		{"path-query-kept", config.Redirect{Path: "/new"}, "api.default:8080", "/old", "a=1&b=%20",
			302, "http://api.default:8080/new?a=1&b=%20"},
		{"no-query", config.Redirect{Path: "/new"}, "api.default", "/old", "", 302, "http://api.default/new"},
		{"nothing-replaced", config.Redirect{Status: 308}, "api.default", "/p", "q", 308, "http://api.default/p?q"},
		{"port-replaced", config.Redirect{Port: 9090}, "api.default:8080", "/p", "a=1", 302, "http://api.default:9090/p?a=1"},
		{"port-added", config.Redirect{Port: 9090}, "api.default", "/p", "", 302, "http://api.default:9090/p"},
		{"port-80-left-out", config.Redirect{Port: 80}, "api.default:8080", "/p", "", 302, "http://api.default/p"},
		{"host-replaced-port-kept", config.Redirect{Host: "api-v2.default"}, "api.default:8080", "/p", "", 302, "http://api-v2.default:8080/p"},
		{"host-and-port", config.Redirect{Host: "example.com", Port: 8443}, "api.default:8080", "/p", "", 302, "http://example.com:8443/p"},
		{"scheme-https-well-known-port", config.Redirect{Scheme: "https"}, "api.default:8080", "/p", "x=1", 302, "https://api.default/p?x=1"},
		{"scheme-https-port-443-left-out", config.Redirect{Scheme: "https", Port: 443}, "api.default", "/p", "", 302, "https://api.default/p"},
		{"scheme-https-port", config.Redirect{Scheme: "https", Port: 8443, Host: "secure.example.com", Path: "/login", Status: 301},
			"api.default", "/p", "next=%2Fhome", 301, "https://secure.example.com:8443/login?next=%2Fhome"},
		{"scheme-http-port-80", config.Redirect{Scheme: "http", Port: 80}, "api.default:8080", "/p", "", 302, "http://api.default/p"},
		{"ipv6-authority", config.Redirect{Port: 9090}, "[::1]:8080", "/p", "", 302, "http://[::1]:9090/p"},
		{"ipv6-authority-no-port", config.Redirect{Path: "/n"}, "[::1]", "/p", "", 302, "http://[::1]/n"},
		{"status-303", config.Redirect{Status: 303}, "api.default", "/p", "", 303, "http://api.default/p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, loc := redirectLocation(&tt.rd, tt.host, tt.path, tt.rawQuery)
			if status != tt.wantStatus || loc != tt.wantLocation {
				t.Errorf("got %d %s, want %d %s", status, loc, tt.wantStatus, tt.wantLocation)
			}
		})
	}
}

// TestRouteRedirectCompiled checks the redirect a rule carries: the
// default status written in.
func TestRouteRedirectCompiled(t *testing.T) {
	rt := mustCompileRoutes(t, routeRulesDoc("r", `[{"redirect":{"scheme":"https","path":"/x"}}]`))
	rd := rt.rules[0].redirect
	if rd == nil {
		t.Fatal("got no redirect")
	}
	status, loc := redirectLocation(rd, "api.default", "/a", "b=1")
	if status != http.StatusFound || loc != "https://api.default/x?b=1" {
		t.Errorf("got %d %s, want 302 https://api.default/x?b=1", status, loc)
	}
}

func TestRouteCompiledActions(t *testing.T) {
	rt := mustCompileRoutes(t, routeRulesDoc("actions", `[
		{"name":"all","timeout":"3s",
		 "retries":{"attempts":3},
		 "rateLimit":{"requestsPerSecond":5,"burst":10},
		 "backends":[{"version":"v1","weight":60},{"version":"v2","weight":40}],
		 "mirror":{"version":"shadow","percent":12.5},
		 "fault":{"delay":{"fixed":"150ms","percent":20},"abort":{"status":503,"percent":5}}},
		{"name":"no-timeout","timeout":"0s"},
		{"name":"bare"}]`))
	all, noTimeout, bare := rt.rules[0], rt.rules[1], rt.rules[2]
	if all.name != "actions/all" {
		t.Errorf("name: got %q, want actions/all", all.name)
	}
	if all.timeout != 3*time.Second || !all.hasTimeout {
		t.Errorf("timeout: got %v (set %v), want 3s (set)", all.timeout, all.hasTimeout)
	}
	if noTimeout.timeout != 0 || !noTimeout.hasTimeout {
		t.Errorf("timeout 0s: got %v (set %v), want 0s (set)", noTimeout.timeout, noTimeout.hasTimeout)
	}
	if bare.hasTimeout || bare.retries != nil || bare.rateLimit != nil || bare.backends != nil ||
		bare.redirect != nil || bare.reqEdits != nil || bare.respEdits != nil || bare.mirror != nil || bare.fault != nil {
		t.Errorf("bare rule: got actions %+v, want none", bare)
	}
	if all.retries == nil || all.retries.Attempts != 3 {
		t.Errorf("retries: got %+v, want 3 attempts", all.retries)
	}
	if all.rateLimit == nil || all.rateLimit.RequestsPerSecond != 5 || all.rateLimit.Burst != 10 {
		t.Errorf("rateLimit: got %+v, want 5/s burst 10", all.rateLimit)
	}
	if diff := cmp.Diff([]routeBackend{{"v1", 60}, {"v2", 40}}, all.backends, cmp.AllowUnexported(routeBackend{})); diff != "" {
		t.Errorf("backends (-want +got):\n%s", diff)
	}
	if *all.mirror != (routeMirror{version: "shadow", percent: 12.5}) {
		t.Errorf("mirror: got %+v, want shadow 12.5%%", *all.mirror)
	}
	wantFault := routeFault{delay: 150 * time.Millisecond, delayPercent: 20, abort: 503, abortPercent: 5}
	if *all.fault != wantFault {
		t.Errorf("fault: got %+v, want %+v", *all.fault, wantFault)
	}
}

func TestRouteCompileErrors(t *testing.T) {
	ok := routeRulesDoc("fine", `[{"backends":[{"version":"v1","weight":100}]}]`)
	bad := func(rules string) [][]byte { return [][]byte{ok, routeRulesDoc("bad", rules)} }
	tests := []struct {
		name string
		docs [][]byte
		// want are substrings of the error: the document index, then the
		// field path.
		want []string
	}{
		{"bad-json", [][]byte{ok, []byte(`{"apiVersion":`)}, []string{"routes[1]: "}},
		{"empty-document", [][]byte{[]byte(``)}, []string{"routes[0]: "}},
		{"wrong-kind", [][]byte{ok, ok, []byte(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"tp","namespace":"default"},"spec":{"service":"api"}}`)},
			[]string{"routes[2]: ", "TrafficPolicy"}},
		{"unknown-field", bad(`[{"bogus":true}]`), []string{"routes[1]: ", "spec.rules[0].bogus"}},
		{"bad-path-regex", bad(`[{"matches":[{"path":{"regex":"(unclosed"}}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].path.regex"}},
		{"bad-header-regex", bad(`[{},{"matches":[{},{"headers":[{"name":"X-A","regex":"a**"}]}]}]`),
			[]string{"routes[1]", "spec.rules[1].matches[1].headers[0].regex"}},
		{"bad-query-regex", bad(`[{"matches":[{"queryParams":[{"name":"a"},{"name":"b","regex":"[z-a]"}]}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].queryParams[0]"}},
		{"path-two-operators", bad(`[{"matches":[{"path":{"exact":"/a","prefix":"/a"}}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].path"}},
		{"path-no-operator", bad(`[{"matches":[{"path":{}}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].path"}},
		{"header-no-operator", bad(`[{"matches":[{"headers":[{"name":"X-A"}]}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].headers[0]"}},
		{"header-present-and-exact", bad(`[{"matches":[{"headers":[{"name":"X-A","present":true,"exact":"1"}]}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].headers[0]"}},
		{"header-bad-name", bad(`[{"matches":[{"headers":[{"name":"X A","present":true}]}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].headers[0].name"}},
		{"source-bare-name", bad(`[{"matches":[{"sourceServices":["web"]}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].sourceServices[0]"}},
		{"source-partial-glob", bad(`[{"matches":[{"sourceServices":["prod/w*"]}]}]`),
			[]string{"routes[1]", "spec.rules[0].matches[0].sourceServices[0]"}},
		{"weights-not-100", bad(`[{"backends":[{"version":"v1","weight":90},{"version":"v2","weight":5}]}]`),
			[]string{"routes[1]", "spec.rules[0].backends"}},
		{"weight-negative", bad(`[{"backends":[{"version":"v1","weight":110},{"version":"v2","weight":-10}]}]`),
			[]string{"routes[1]", "spec.rules[0].backends[0].weight"}},
		{"backend-no-version", bad(`[{"backends":[{"weight":100}]}]`),
			[]string{"routes[1]", "spec.rules[0].backends[0].version"}},
		{"edit-hop-by-hop", bad(`[{"requestHeaders":{"set":{"Connection":"close"}}}]`),
			[]string{"routes[1]", "spec.rules[0].requestHeaders.set"}},
		{"edit-identity-header", bad(`[{"requestHeaders":{"remove":["X-Forwarded-Client-Cert"]}}]`),
			[]string{"routes[1]", "spec.rules[0].requestHeaders.remove[0]"}},
		{"edit-identity-header-underscore", bad(`[{"responseHeaders":{"add":{"X_Bulwark_Source":"me"}}}]`),
			[]string{"routes[1]", "spec.rules[0].responseHeaders.add"}},
		{"edit-content-length", bad(`[{"responseHeaders":{"set":{"Content-Length":"1"}}}]`),
			[]string{"routes[1]", "spec.rules[0].responseHeaders.set"}},
		{"edit-bad-value", bad(`[{"requestHeaders":{"set":{"X-A":"a\r\nX-B: b"}}}]`),
			[]string{"routes[1]", "spec.rules[0].requestHeaders.set"}},
		{"bad-timeout", bad(`[{"timeout":"soon"}]`), []string{"routes[1]", "spec.rules[0].timeout"}},
		{"negative-timeout", bad(`[{"timeout":"-1s"}]`), []string{"routes[1]", "spec.rules[0].timeout"}},
		{"bad-fault-delay", bad(`[{"fault":{"delay":{"fixed":"x"}}}]`), []string{"routes[1]", "spec.rules[0].fault.delay.fixed"}},
		{"fault-percent-over-100", bad(`[{"fault":{"abort":{"status":503,"percent":100.5}}}]`),
			[]string{"routes[1]", "spec.rules[0].fault.abort.percent"}},
		{"fault-bad-status", bad(`[{"fault":{"abort":{"status":99}}}]`), []string{"routes[1]", "spec.rules[0].fault.abort.status"}},
		{"mirror-percent-negative", bad(`[{"mirror":{"version":"v2","percent":-1}}]`), []string{"routes[1]", "spec.rules[0].mirror.percent"}},
		{"mirror-no-version", bad(`[{"mirror":{}}]`), []string{"routes[1]", "spec.rules[0].mirror.version"}},
		{"redirect-bad-status", bad(`[{"redirect":{"status":200}}]`), []string{"routes[1]", "spec.rules[0].redirect.status"}},
		{"redirect-bad-scheme", bad(`[{"redirect":{"scheme":"ftp"}}]`), []string{"routes[1]", "spec.rules[0].redirect.scheme"}},
		{"redirect-relative-path", bad(`[{"redirect":{"path":"x"}}]`), []string{"routes[1]", "spec.rules[0].redirect.path"}},
		{"redirect-host-with-port", bad(`[{"redirect":{"host":"a.b:80"}}]`), []string{"routes[1]", "spec.rules[0].redirect.host"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, err := compileRoutes(tt.docs)
			if err == nil {
				t.Fatalf("got table with %d rules, want an error naming %q", len(rt.rules), tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want[0]) {
				t.Errorf("got %q, want it to start with %q", err, tt.want[0])
			}
			for _, w := range tt.want[1:] {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to name %q", err, w)
				}
			}
		})
	}
}

// routeBenchTable is 20 rules of the usual kinds, none with a regex or a
// query match: 19 the request below misses, each at its last condition
// where it can, and a catch-all.
func routeBenchTable(t testing.TB) *routeTable {
	var rules []string
	for i := range 19 {
		var m string
		switch i % 4 {
		case 0:
			m = fmt.Sprintf(`{"path":{"prefix":"/svc%d"}}`, i)
		case 1:
			m = fmt.Sprintf(`{"path":{"prefix":"/api"},"methods":["GET"],"headers":[{"name":"X-Canary-%d","exact":"1"}]}`, i)
		case 2:
			m = fmt.Sprintf(`{"path":{"exact":"/api/users/%d"}},{"methods":["PUT","DELETE"]}`, i)
		case 3:
			m = fmt.Sprintf(`{"headers":[{"name":"X-User","prefix":"tester"}]},{"sourceServices":["ns%d/*","other/web"]}`, i)
		}
		rules = append(rules, fmt.Sprintf(`{"name":"r%d","matches":[%s],"backends":[{"version":"v2","weight":100}]}`, i, m))
	}
	rules = append(rules, `{"name":"default","backends":[{"version":"v1","weight":90},{"version":"v2","weight":10}]}`)
	return mustCompileRoutes(t, routeRulesDoc("bench", "["+strings.Join(rules, ",")+"]"))
}

var routeBenchInput = routeInput{
	method:   http.MethodGet,
	path:     "/api/users/42",
	rawQuery: "page=2&sort=name",
	header: http.Header{
		"Accept":       {"application/json"},
		"User-Agent":   {"Go-http-client/1.1"},
		"X-User":       {"alice"},
		"X-Request-Id": {"0d9e6a0f"},
	},
	sources: []string{"default/web"},
}

func TestRouteMatchAllocs(t *testing.T) {
	rt := routeBenchTable(t)
	in := routeBenchInput
	if r := rt.match(&in); r == nil || r.name != "bench/default" {
		t.Fatalf("got rule %v, want bench/default", r)
	}
	if n := testing.AllocsPerRun(100, func() { rt.match(&in) }); n != 0 {
		t.Errorf("match: got %v allocations, want 0", n)
	}
	// Query matches on values without escapes do not allocate either.
	q := mustCompileRoutes(t, routeRulesDoc("q", `[{"matches":[{"queryParams":[{"name":"sort","exact":"name"}]}]}]`))
	if r := q.match(&in); r == nil {
		t.Fatal("query rule: got no match, want one")
	}
	if n := testing.AllocsPerRun(100, func() { q.match(&in) }); n != 0 {
		t.Errorf("match with a query: got %v allocations, want 0", n)
	}
}

// BenchmarkRouteMatch matches a request against 20 rules; only the last
// (a catch-all) matches.
func BenchmarkRouteMatch(b *testing.B) {
	rt := routeBenchTable(b)
	in := routeBenchInput
	b.ReportAllocs()
	for b.Loop() {
		if rt.match(&in) == nil {
			b.Fatal("no rule matched")
		}
	}
}

// FuzzRouteQueryParam checks that query matching reads a raw query as
// url.ParseQuery does, which is how Go apps read it.
func FuzzRouteQueryParam(f *testing.F) {
	for _, seed := range []struct{ query, name string }{
		{"a=1&b=2", "b"}, {"a=1&a=2", "a"}, {"a", "a"}, {"a=", "a"}, {"%61=1", "a"}, {"a+b=c+d", "a b"},
		{"a=%zz&a=2", "a"}, {"a=1;b=2&b=3", "b"}, {"&&a=1&", "a"}, {"=1", ""}, {"a=b=c", "a"}, {"%zz=1&%7a=2", "z"},
	} {
		f.Add(seed.query, seed.name)
	}
	f.Fuzz(func(t *testing.T, query, name string) {
		got, gotOK := routeQueryParam(query, name)
		// ParseQuery keeps every pair it could decode, whatever the error.
		vs, _ := url.ParseQuery(query)
		want, wantOK := "", false
		if v, ok := vs[name]; ok && len(v) > 0 {
			want, wantOK = v[0], true
		}
		if got != want || gotOK != wantOK {
			t.Errorf("routeQueryParam(%q, %q): got %q, %v; want %q, %v", query, name, got, gotOK, want, wantOK)
		}
	})
}
