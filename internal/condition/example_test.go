package condition_test

import (
	"fmt"
	"net/http"

	"github.com/bulwarkmesh/bulwark/internal/condition"
)

func ExampleCompile() {
	p, err := condition.Compile(`request.method == 'GET' && request.headers['x-tenant'] == 'acme'`)
	if err != nil {
		fmt.Println(err)
		return
	}
	ok, err := p.Eval(&condition.Vars{
		Method:  "GET",
		Headers: http.Header{"X-Tenant": {"acme"}},
	})
	fmt.Println(ok, err)
	// Output: true <nil>
}

func ExampleCompile_typo() {
	_, err := condition.Compile(`request.method == 'GET' &&
  request.heders['x-tenant'] == 'acme'`)
	fmt.Println(err)
	// Output: 2:10: undeclared reference to 'request.heders' (did you mean 'request.headers'?)
}

func ExampleProgram_Eval_missingHeader() {
	// A missing key is an error: test for the header, or use an optional.
	for _, expr := range []string{
		`request.headers['x-debug'] == '1'`,
		`request.headers[?'x-debug'].hasValue('1')`,
	} {
		p, err := condition.Compile(expr)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(p.Eval(&condition.Vars{}))
	}
	// Output:
	// false evaluate condition: no such key: x-debug
	// false <nil>
}
