package condition_test

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/condition"
)

// FuzzCompileEval compiles arbitrary expressions and evaluates those that
// compile against a request built from arbitrary values: neither may
// panic, Compile fails only with a *CompileError, and Eval reports no
// internal error (a recovered panic).
func FuzzCompileEval(f *testing.F) {
	for _, seed := range []string{
		`request.method == 'GET'`,
		`request.headers['x-a'] == 'b'`,
		`request.headers[?'x-a'].orValue('') == ''`,
		`request.query['q'].startsWith('a')`,
		`'admin' in jwt.claims.groups`,
		`jwt.claims.level >= 2`,
		`jwt.claims.?org.id.orValue('') == 'acme'`,
		`time.now.getHours('Europe/Paris') < 18`,
		`time.now.getDayOfWeek('-05:00') == 1`,
		`cidr('10.0.0.0/8').containsIP(source.ip)`,
		`source.services.exists(s, s.endsWith('/web'))`,
		`request.path.matches('^/v1/[a-z]+$')`,
		`request.headers['x-a'].split(',').map(x, x.trim()).size() > 2`,
		`[0,1,2,3,4,5,6,7,8,9].map(a, [0,1,2,3,4,5,6,7,8,9].map(b, [0,1,2,3,4,5,6,7,8,9].map(c, [0,1,2,3,4,5,6,7,8,9]))).size() > 0`,
		`1 / request.port == 0`,
		`dyn(request.port) == dyn('x')`,
		`request.method.substring(10) == ''`,
		`request.headers['x-a'].charAt(-1) == ''`,
		`timestamp(request.headers['x-a']) > time.now`,
		`duration(request.query['d']) > duration('1s')`,
		`int(request.query['n']) > 9223372036854775807 - 1`,
		`request.port * 9223372036854775807 > 0`,
		`ip(source.ip).family() == 4`,
		`request.method == `,
		`((((((((((((((((((((request.method == 'GET'))))))))))))))))))))`,
	} {
		f.Add(seed, "b, c", "q=a&d=1s&n=12", "admin", int64(3))
	}
	f.Fuzz(func(t *testing.T, expr, header, query, claim string, level int64) {
		p, err := condition.Compile(expr)
		if err != nil {
			var ce *condition.CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile(%q): got %T %v, want a *CompileError", expr, err, err)
			}
			if strings.Contains(err.Error(), "internal error") {
				t.Fatalf("Compile(%q): %v", expr, err)
			}
			return
		}
		v := &condition.Vars{
			SourceIdentity: "spiffe://bulwark.local/ns/default/sa/web",
			SourceServices: []string{"default/web", claim},
			SourceIP:       netip.MustParseAddr("10.0.0.1"),
			Method:         "GET",
			Host:           "api.default",
			Path:           "/v1/x",
			Query:          query,
			Port:           int(level),
			Headers:        http.Header{"X-A": {header}, "X-B": {header, claim}},
			Claims: map[string]any{
				"groups": []any{claim, "admin"},
				"level":  float64(level),
				"org":    map[string]any{"id": claim},
				"sub":    claim,
			},
			Now: time.Unix(level, 0),
		}
		if _, err := p.Eval(v); err != nil && strings.Contains(err.Error(), "internal error") {
			t.Fatalf("Eval(%q): %v", expr, err)
		}
	})
}
