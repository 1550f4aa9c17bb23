package condition_test

import (
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/condition"
)

// Run with: go test -run '^$' -bench . -benchmem ./internal/condition/

func BenchmarkCompile(b *testing.B) {
	const expr = `request.headers['x-tenant'] == 'acme' && 'admin' in jwt.claims.groups && time.now.getHours('Europe/Paris') < 18`
	if _, err := condition.Compile(expr); err != nil { // build the environment once
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := condition.Compile(expr); err != nil {
			b.Fatal(err)
		}
	}
}

// benchEval evaluates expr against fullVars, which it must match.
func benchEval(b *testing.B, expr string) {
	p, err := condition.Compile(expr)
	if err != nil {
		b.Fatal(err)
	}
	v := fullVars()
	b.ReportAllocs()
	for b.Loop() {
		ok, err := p.Eval(v)
		if err != nil || !ok {
			b.Fatalf("Eval: got %v, %v, want true, nil", ok, err)
		}
	}
}

func BenchmarkEvalMethod(b *testing.B) {
	benchEval(b, `request.method == 'GET'`)
}

func BenchmarkEvalHeader(b *testing.B) {
	benchEval(b, `request.headers['x-tenant'] == 'Acme'`)
}

func BenchmarkEvalHeaderOptional(b *testing.B) {
	benchEval(b, `request.headers[?'x-tenant'].hasValue('Acme')`)
}

func BenchmarkEvalQuery(b *testing.B) {
	benchEval(b, `request.query['page'] == '2'`)
}

func BenchmarkEvalClaims(b *testing.B) {
	benchEval(b, `'admin' in jwt.claims.groups`)
}

func BenchmarkEvalTime(b *testing.B) {
	benchEval(b, `time.now.getHours('Europe/Paris') >= 9 && time.now.getHours('Europe/Paris') < 18`)
}

func BenchmarkEvalTimeUTC(b *testing.B) {
	benchEval(b, `time.now.getHours() >= 8`)
}

func BenchmarkEvalCombined(b *testing.B) {
	benchEval(b, `request.method == 'GET' && request.path.startsWith('/v1/') && request.headers['x-tenant'] == 'Acme' && 'admin' in jwt.claims.groups`)
}
