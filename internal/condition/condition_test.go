package condition_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/condition"
)

// fullVars returns a request about which everything is known.
func fullVars() *condition.Vars {
	return &condition.Vars{
		SourceIdentity:  "spiffe://bulwark.local/ns/default/sa/web",
		SourceNamespace: "default",
		SourcePrincipal: "https://idp.example.com/alice",
		SourceServices:  []string{"default/web", "default/web-canary"},
		SourceIP:        netip.MustParseAddr("10.1.2.3"),
		Method:          "GET",
		Host:            "api.default",
		Port:            8080,
		Path:            "/v1/orders/42",
		Query:           "page=2&tag=a&tag=b&name=J%C3%B6rg+X&q%20k=v",
		Headers: http.Header{
			"X-Tenant":   {"Acme"},
			"Accept":     {"text/html", "application/json"},
			"Cookie":     {"a=1", "b=2"},
			"X-Empty":    {""},
			"User-Agent": {"curl/8.5"},
		},
		Claims: map[string]any{
			"groups":         []any{"staff", "admin"},
			"level":          3.0,
			"email_verified": true,
			"org":            map[string]any{"id": "acme"},
		},
		SNI: "api.default.svc",
		Now: time.Date(2024, 1, 1, 8, 30, 0, 0, time.UTC), // a Monday
	}
}

func TestEval(t *testing.T) {
	tests := []struct {
		name string
		expr string
		vars func(v *condition.Vars) // changes fullVars; nil keeps it
		want bool
	}{
		{name: "source_identity", expr: `source.identity == 'spiffe://bulwark.local/ns/default/sa/web'`, want: true},
		{name: "source_identity_glob_by_hand", expr: `source.identity.startsWith('spiffe://bulwark.local/ns/default/')`, want: true},
		{name: "source_namespace", expr: `source.namespace == 'default'`, want: true},
		{name: "source_services", expr: `'default/web' in source.services`, want: true},
		{name: "source_services_exists", expr: `source.services.exists(s, s.endsWith('-canary'))`, want: true},
		{name: "source_services_unknown", expr: `source.services.size() == 0`, vars: func(v *condition.Vars) { v.SourceServices = nil }, want: true},
		{name: "source_principal", expr: `source.principal == 'https://idp.example.com/alice'`, want: true},
		{name: "source_principal_absent", expr: `source.principal == ''`, vars: func(v *condition.Vars) { v.SourcePrincipal = "" }, want: true},
		{name: "source_ip", expr: `source.ip == '10.1.2.3'`, want: true},
		{name: "source_ip_mapped_is_unmapped", expr: `source.ip == '10.1.2.3'`, vars: func(v *condition.Vars) { v.SourceIP = netip.MustParseAddr("::ffff:10.1.2.3") }, want: true},
		{name: "source_ip_v6", expr: `source.ip == '2001:db8::1'`, vars: func(v *condition.Vars) { v.SourceIP = netip.MustParseAddr("2001:db8::1") }, want: true},
		{name: "source_ip_unknown", expr: `source.ip == ''`, vars: func(v *condition.Vars) { v.SourceIP = netip.Addr{} }, want: true},
		{name: "source_ip_cidr", expr: `cidr('10.0.0.0/8').containsIP(source.ip)`, want: true},
		{name: "source_ip_cidr_outside", expr: `cidr('192.168.0.0/16').containsIP(source.ip)`, want: false},
		{name: "request_method", expr: `request.method in ['GET', 'HEAD']`, want: true},
		{name: "request_host", expr: `request.host == 'api.default'`, want: true},
		{name: "request_port", expr: `request.port == 8080`, want: true},
		{name: "request_port_range", expr: `request.port >= 8000 && request.port < 9000`, want: true},
		{name: "request_path", expr: `request.path.startsWith('/v1/orders/')`, want: true},
		{name: "request_path_regex", expr: `request.path.matches('^/v1/orders/[0-9]+$')`, want: true},
		{name: "headers_lower_case_names", expr: `request.headers['x-tenant'] == 'Acme'`, want: true},
		{name: "headers_repeated_joined", expr: `request.headers['accept'] == 'text/html, application/json'`, want: true},
		{name: "headers_cookie_joined", expr: `request.headers['cookie'] == 'a=1; b=2'`, want: true},
		{name: "headers_empty_value_present", expr: `'x-empty' in request.headers && request.headers['x-empty'] == ''`, want: true},
		{name: "headers_absent", expr: `'x-absent' in request.headers`, want: false},
		{name: "headers_has", expr: `has(request.headers.accept)`, want: true},
		{name: "headers_optional_absent", expr: `request.headers[?'x-absent'].orValue('') == ''`, want: true},
		{name: "headers_optional_hasvalue", expr: `request.headers[?'x-tenant'].hasValue('Acme')`, want: true},
		{name: "headers_nil", expr: `request.headers.size() == 0`, vars: func(v *condition.Vars) { v.Headers = nil }, want: true},
		{
			name: "headers_two_spellings_joined_in_order",
			expr: `request.headers['x-a'] == '2, 1'`,
			vars: func(v *condition.Vars) { v.Headers = http.Header{"x-a": {"1"}, "X-A": {"2"}} },
			want: true,
		},
		{name: "headers_iterate_lower_case", expr: `request.headers.exists(k, k == 'x-tenant') && request.headers.all(k, k == k.lowerAscii())`, want: true},
		{name: "headers_size", expr: `request.headers.size() == 5`, want: true},
		{name: "headers_dynamic_key", expr: `request.headers[request.method == 'GET' ? 'accept' : 'x'] == 'text/html, application/json'`, want: true},
		{name: "headers_dynamic_key_in", expr: `request.path.split('/')[1] + '-x' in request.headers`, want: false},
		{
			name: "headers_equal_literal",
			expr: `request.headers == {'x-a': '1', 'accept': 'a, b'} && {'x-a': '1', 'accept': 'a, b'} == request.headers`,
			vars: func(v *condition.Vars) { v.Headers = http.Header{"X-A": {"1"}, "Accept": {"a", "b"}} },
			want: true,
		},
		{name: "headers_optional_dynamic", expr: `request.headers[?request.method.lowerAscii()].orValue('none') == 'none'`, want: true},
		{name: "query_in", expr: `'page' in request.query && request.query.exists(k, k == 'tag')`, want: true},
		{name: "query_optional", expr: `request.query[?'absent'].orValue('none') == 'none'`, want: true},
		{name: "claims_in_and_iterate", expr: `'groups' in jwt.claims && jwt.claims.exists(k, k == 'org')`, want: true},
		{name: "claims_list_exists", expr: `jwt.claims.groups.exists(g, g.startsWith('adm'))`, want: true},
		{name: "headers_strings_extension", expr: `request.headers['x-tenant'].lowerAscii() == 'acme'`, want: true},
		{name: "query", expr: `request.query['page'] == '2'`, want: true},
		{name: "query_repeated_joined", expr: `request.query['tag'] == 'a,b'`, want: true},
		{name: "query_decoded", expr: `request.query['name'] == 'Jörg X' && request.query['q k'] == 'v'`, want: true},
		{name: "query_empty", expr: `request.query.size() == 0`, vars: func(v *condition.Vars) { v.Query = "" }, want: true},
		{
			name: "query_malformed_not_read",
			expr: `request.method == 'GET'`,
			vars: func(v *condition.Vars) { v.Query = "a=%zz" },
			want: true,
		},
		{name: "claims_list", expr: `'admin' in jwt.claims.groups`, want: true},
		{name: "claims_number_is_double", expr: `jwt.claims.level >= 2 && jwt.claims.level == 3`, want: true},
		{name: "claims_bool", expr: `jwt.claims.email_verified == true`, want: true},
		{name: "claims_nested", expr: `jwt.claims.org.id == 'acme'`, want: true},
		{name: "claims_has", expr: `has(jwt.claims.groups) && !has(jwt.claims.roles)`, want: true},
		{name: "claims_optional", expr: `jwt.claims.?roles.orValue([]).size() == 0`, want: true},
		{name: "claims_absent_empty", expr: `jwt.claims.size() == 0`, vars: func(v *condition.Vars) { v.Claims = nil }, want: true},
		{name: "connection_sni", expr: `connection.sni == 'api.default.svc'`, want: true},
		{name: "time_now", expr: `time.now > timestamp('2023-12-31T23:00:00Z')`, want: true},
		{name: "time_utc_default", expr: `time.now.getHours() == 8 && time.now.getDayOfWeek() == 1`, want: true},
		{name: "time_zone_name", expr: `time.now.getHours('Europe/Paris') == 9`, want: true},
		{name: "time_zone_name_summer", expr: `time.now.getHours('Europe/Paris') == 10`, vars: func(v *condition.Vars) { v.Now = time.Date(2024, 7, 1, 8, 30, 0, 0, time.UTC) }, want: true},
		{name: "time_zone_offset", expr: `time.now.getHours('+01:30') == 10 && time.now.getMinutes('+01:30') == 0`, want: true},
		{name: "time_zone_negative_offset", expr: `time.now.getHours('-05:30') == 3 && time.now.getMinutes('-05:30') == 0`, want: true},
		{name: "time_zone_date_accessors", expr: `time.now.getFullYear('-09:00') == 2023 && time.now.getMonth('-09:00') == 11 && time.now.getDate('-09:00') == 31 && time.now.getDayOfMonth('-09:00') == 30 && time.now.getDayOfYear('-09:00') == 364 && time.now.getDayOfWeek('-09:00') == 0`, want: true},
		{name: "time_zone_seconds", expr: `time.now.getSeconds('UTC') == 0 && time.now.getMilliseconds('UTC') == 0`, want: true},
		{name: "time_window", expr: `time.now.getHours('Europe/Paris') >= 9 && time.now.getHours('Europe/Paris') < 18`, want: true},
		{name: "zero_vars", expr: `source.identity == '' && request.port == 0 && jwt.claims.size() == 0 && source.services.size() == 0`, vars: func(v *condition.Vars) { *v = condition.Vars{} }, want: true},
		{name: "false_result", expr: `request.method == 'POST'`, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := condition.Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.expr, err)
			}
			v := fullVars()
			if tt.vars != nil {
				tt.vars(v)
			}
			got, err := p.Eval(v)
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if got != tt.want {
				t.Errorf("Eval(%q): got %v, want %v", tt.expr, got, tt.want)
			}
		})
	}
}

func TestEvalErrors(t *testing.T) {
	tests := []struct {
		name    string
		expr    string
		vars    func(v *condition.Vars)
		wantErr string
		wantIs  error
	}{
		{name: "header_missing", expr: `request.headers['x-absent'] == '1'`, wantErr: "no such key: x-absent"},
		{name: "query_missing", expr: `request.query['absent'] == '1'`, wantErr: "no such key: absent"},
		{name: "claim_missing", expr: `jwt.claims.roles.exists(r, r == 'x')`, wantErr: "no such key: roles"},
		{name: "claims_absent", expr: `'admin' in jwt.claims.groups`, vars: func(v *condition.Vars) { v.Claims = nil }, wantErr: "no such key: groups"},
		{name: "claim_wrong_type", expr: `jwt.claims.level > 'a'`, wantErr: "no such overload"},
		{name: "claim_not_a_list", expr: `'x' in jwt.claims.level`, wantErr: "no such overload"},
		{name: "claim_unsupported_go_type", expr: `jwt.claims.weird == 1`, vars: func(v *condition.Vars) { v.Claims = map[string]any{"weird": make(chan int)} }, wantErr: "unsupported conversion"},
		{name: "query_malformed_escape", expr: `request.query['a'] == '1'`, vars: func(v *condition.Vars) { v.Query = "a=1&b=%zz" }, wantErr: "request.query: malformed query string"},
		{name: "query_semicolon", expr: `request.query['a'] == '1'`, vars: func(v *condition.Vars) { v.Query = "a=1;b=2" }, wantErr: "request.query: malformed query string"},
		{name: "cidr_of_unknown_ip", expr: `cidr('10.0.0.0/8').containsIP(source.ip)`, vars: func(v *condition.Vars) { v.SourceIP = netip.Addr{} }, wantErr: "parse"},
		{name: "regex_bad_input_type", expr: `jwt.claims.level.matches('x')`, wantErr: "no such overload"},
		{name: "division_by_zero", expr: `1 / (request.port - 8080) == 1`, wantErr: "division by zero"},
		{name: "cost_limit_nested_maps", expr: nested(5), wantIs: condition.ErrCostLimit},
		{name: "cost_limit_split_map", expr: `request.headers['x-big'].split('').map(c, request.headers['x-big'].split('')).size() > 0`, vars: bigHeader, wantIs: condition.ErrCostLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := condition.Compile(tt.expr)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.expr, err)
			}
			v := fullVars()
			if tt.vars != nil {
				tt.vars(v)
			}
			got, err := p.Eval(v)
			if err == nil {
				t.Fatalf("Eval(%q): got %v, nil, want an error", tt.expr, got)
			}
			if got {
				t.Errorf("Eval(%q): got true with the error %v, want false", tt.expr, err)
			}
			if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Eval(%q): got error %q, want it to contain %q", tt.expr, err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Eval(%q): got error %v, want %v", tt.expr, err, tt.wantIs)
			}
			if strings.Contains(err.Error(), "%zz") {
				t.Errorf("Eval: the error %q shows the query", err)
			}
		})
	}
}

// nested returns a condition that builds depth nested lists of ten
// elements each: 10^depth elements.
func nested(depth int) string {
	const ten = "[0,1,2,3,4,5,6,7,8,9]"
	e := "x0"
	for i := depth - 1; i >= 0; i-- {
		e = fmt.Sprintf("%s.map(x%d, %s)", ten, i, e)
	}
	return e + ".size() > 0"
}

// bigHeader adds an 8 KiB header x-big.
func bigHeader(v *condition.Vars) {
	v.Headers.Set("X-Big", strings.Repeat("Mozilla/5.0 ", 8192/12))
}

// TestCostLimitAllowsRealisticConditions pins that CostLimit is not so low
// that ordinary conditions over large inputs fail.
func TestCostLimitAllowsRealisticConditions(t *testing.T) {
	groups := make([]any, 1000)
	for i := range groups {
		groups[i] = fmt.Sprintf("group-%d", i)
	}
	for _, expr := range []string{
		`request.headers['x-big'].matches('^Mozilla/5\\.0 .*(Chrome|Firefox)/[0-9]+')`,
		`request.headers['x-big'].contains('Chrome')`,
		`request.headers['x-big'].split(' ').size() > 100000`,
		`jwt.claims.groups.exists(g, g.startsWith('admin-'))`,
		`'admin' in jwt.claims.groups`,
		`jwt.claims.groups.filter(g, g.endsWith('-7')).size() > 100`,
		nested(3),
	} {
		t.Run("", func(t *testing.T) {
			p, err := condition.Compile(expr)
			if err != nil {
				t.Fatalf("Compile(%q): %v", expr, err)
			}
			v := fullVars()
			bigHeader(v)
			v.Claims = map[string]any{"groups": groups}
			if _, err := p.Eval(v); err != nil {
				t.Errorf("Eval(%q): got %v, want no error", expr, err)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		expr string
		want string // the whole Error()
	}{
		{
			name: "undeclared_typo",
			expr: `request.methd == 'GET'`,
			want: `1:8: undeclared reference to 'request.methd' (did you mean 'request.method'?)`,
		},
		{
			name: "undeclared_root",
			expr: `req.method == 'GET'`,
			want: `1:1: undeclared reference to 'req'`,
		},
		{
			name: "undeclared_on_second_line",
			expr: "request.method == 'GET' &&\n  request.heders['x'] == 'y'",
			want: `2:10: undeclared reference to 'request.heders' (did you mean 'request.headers'?)`,
		},
		{
			name: "wrong_operand_type",
			expr: `request.port == '8080'`,
			want: `1:14: found no matching overload for '_==_' applied to '(int, string)'`,
		},
		{
			name: "not_bool",
			expr: `request.method`,
			want: `1:1: the condition has type string, want bool: compare the value, e.g. request.method == 'GET'`,
		},
		{
			name: "dyn",
			expr: `jwt.claims.admin`,
			want: `1:1: the condition has type dyn (a value of jwt.claims?), want bool: compare it explicitly, e.g. jwt.claims.admin == true`,
		},
		{name: "empty", expr: ``, want: `the expression is empty`},
		{name: "blank", expr: " \n\t", want: `the expression is empty`},
		{
			name: "too_long",
			expr: "request.method == '" + strings.Repeat("a", condition.MaxLength) + "'",
			want: fmt.Sprintf("the expression is %d bytes long, more than the %d allowed", condition.MaxLength+20, condition.MaxLength),
		},
		{name: "syntax", expr: `request.method ==`, want: `1:18: Syntax error: mismatched input '<EOF>'`},
		{name: "syntax_unclosed", expr: `request.headers['x' == 'y'`, want: `1:27: Syntax error: missing ']' at '<EOF>'`},
		{
			name: "header_upper_case",
			expr: `request.headers['X-Tenant'] == 'acme'`,
			want: `1:17: header "X-Tenant" can never be found: request.headers is keyed by lower-case names, use "x-tenant"`,
		},
		{
			name: "header_upper_case_in",
			expr: `'X-Debug' in request.headers`,
			want: `1:1: header "X-Debug" can never be found: request.headers is keyed by lower-case names, use "x-debug"`,
		},
		{
			name: "header_upper_case_select",
			expr: `has(request.headers.Accept)`,
			want: `1:4: header "Accept" can never be found: request.headers is keyed by lower-case names, use "accept"`,
		},
		{
			name: "zone_not_literal",
			expr: `time.now.getHours(request.headers['tz']) == 9`,
			want: `1:34: the time zone of getHours must be a string literal, such as 'Europe/Paris' or '+01:00'`,
		},
		{
			name: "zone_unknown",
			expr: `time.now.getHours('Mars/Olympus') == 9`,
			want: `1:19: unknown time zone "Mars/Olympus": use an IANA name such as 'Europe/Paris' or an offset such as '+01:00'`,
		},
		{
			name: "zone_local",
			expr: `time.now.getDayOfWeek('Local') == 1`,
			want: `1:23: unknown time zone "Local": use an IANA name such as 'Europe/Paris' or an offset such as '+01:00'`,
		},
		{
			name: "zone_offset_out_of_range",
			expr: `time.now.getHours('+24:00') == 9`,
			want: `1:19: invalid time zone offset "+24:00": want [+-]HH:MM, at most 23:59`,
		},
		{
			name: "replace",
			expr: `request.path.replace('/', '') == 'x'`,
			want: `1:21: replace is not available in conditions: its result can grow as the product of its inputs`,
		},
		{
			name: "join",
			expr: `source.services.join(',') == 'x'`,
			want: `1:21: join is not available in conditions: its result can grow as the product of its inputs`,
		},
		{
			name: "format",
			expr: `'%s'.format([request.path]) == 'x'`,
			want: `1:12: format is not available in conditions: its result can grow as the product of its inputs`,
		},
		{
			name: "matches_pattern_from_request",
			expr: `request.path.matches(request.headers['x-re'])`,
			want: `1:37: the pattern of matches must be a string literal`,
		},
		{
			name: "matches_bad_pattern",
			expr: `request.path.matches('[')`,
			want: "1:22: invalid pattern for matches (RE2 syntax): error parsing regexp: missing closing ]: `[`",
		},
		{
			name: "bad_cidr_literal",
			expr: `cidr('10.0.0.0/99').containsIP(source.ip)`,
			want: `1:6: invalid cidr argument`,
		},
		{
			name: "issues_capped",
			expr: `a || b || c || d || e || f || g`,
			want: "1:1: undeclared reference to 'a'\n1:6: undeclared reference to 'b'\n1:11: undeclared reference to 'c'\n" +
				"1:16: undeclared reference to 'd'\n1:21: undeclared reference to 'e'\nand 2 more",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := condition.Compile(tt.expr)
			if err == nil {
				t.Fatalf("Compile(%q): got %v, nil, want an error", tt.expr, p)
			}
			var ce *condition.CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile(%q): got %T %v, want a *CompileError", tt.expr, err, err)
			}
			if got := err.Error(); !strings.HasPrefix(got, tt.want) {
				t.Errorf("Compile(%q):\ngot  %q\nwant %q", tt.expr, got, tt.want)
			}
		})
	}
}

// TestCompileErrorOneLinePerIssue pins that each issue is one line, so
// that a caller can print it after a field path.
func TestCompileErrorOneLinePerIssue(t *testing.T) {
	_, err := condition.Compile("request.methd == 'GET' &&\n  request.paht == '/'")
	var ce *condition.CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("Compile: got %v, want a *CompileError", err)
	}
	var got []string
	for _, is := range ce.Issues {
		got = append(got, is.String())
	}
	want := []string{
		"1:8: undeclared reference to 'request.methd' (did you mean 'request.method'?)",
		"2:10: undeclared reference to 'request.paht' (did you mean 'request.path'?)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("issues mismatch (-want +got):\n%s", diff)
	}
	if got, want := err.Error(), strings.Join(want, "\n"); got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
}

func TestEvalNil(t *testing.T) {
	var p *condition.Program
	if got, err := p.Eval(fullVars()); got || err == nil {
		t.Errorf("nil Program: got %v, %v, want false and an error", got, err)
	}
	p, err := condition.Compile(`request.method == '' && request.query.size() == 0`)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Eval(nil); !got || err != nil {
		t.Errorf("nil Vars: got %v, %v, want true, nil", got, err)
	}
}

func TestProgramString(t *testing.T) {
	const expr = `request.method == 'GET'`
	p, err := condition.Compile(expr)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != expr {
		t.Errorf("String: got %q, want %q", got, expr)
	}
}

// TestEvalConcurrent evaluates one Program from many goroutines (run with
// -race).
func TestEvalConcurrent(t *testing.T) {
	p, err := condition.Compile(`request.headers['x-tenant'] == 'Acme' && request.query['page'] == '2' && 'admin' in jwt.claims.groups`)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				v := fullVars()
				want := i%2 == 0
				if !want {
					v.Headers.Set("X-Tenant", fmt.Sprintf("other-%d", g))
				}
				got, err := p.Eval(v)
				if err != nil || got != want {
					errs <- fmt.Errorf("goroutine %d, eval %d: got %v, %v, want %v", g, i, got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestNamesDocumented checks that docs/policy.md lists every name of the
// request model with its CEL type.
func TestNamesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for line := range strings.Lines(string(doc)) {
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			continue
		}
		rows[strings.Trim(strings.TrimSpace(cells[1]), "`")] = strings.Trim(strings.TrimSpace(cells[2]), "`")
	}
	names := condition.Names()
	if len(names) != 14 {
		t.Errorf("Names: got %d names, want 14", len(names))
	}
	for _, n := range names {
		got, ok := rows[n.Name]
		if !ok {
			t.Errorf("docs/policy.md has no table row for %s", n.Name)
			continue
		}
		if got != n.Type {
			t.Errorf("docs/policy.md: %s has type %q, want %q", n.Name, got, n.Type)
		}
	}
}
