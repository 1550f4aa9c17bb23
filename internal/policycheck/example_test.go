package policycheck_test

import (
	"fmt"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

func ExampleLint() {
	objs, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads-api}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET, POST], notMethods: [POST]}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	docs := []policycheck.Document{{File: "api.yaml", Index: 1, Policy: objs[0].(*config.AuthorizationPolicy)}}
	for _, f := range policycheck.Lint(docs) {
		fmt.Println(f)
	}
	// Output:
	// api.yaml document 1: warning: default/web-reads-api: spec.rules[0].to.methods[1]: "POST" can never match: to.notMethods[0] "POST" excludes it (unreachable)
}

func ExampleRunCases() {
	objs, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads-api}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET], paths: ["/v1/*"]}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	cases, err := policycheck.ParseCases([]byte(`cases:
- {name: web reads users, from: web, to: api, path: "/v1/./users?page=2", expect: allow}
- {name: web deletes users, from: web, to: api, method: DELETE, path: /v1/users, expect: deny}
- {name: encoded slash, from: web, to: api, path: /v1%2Fusers, expect: reject}
`), "")
	if err != nil {
		fmt.Println(err)
		return
	}
	results, err := policycheck.RunCases([]*config.AuthorizationPolicy{objs[0].(*config.AuthorizationPolicy)}, cases)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range results {
		fmt.Printf("%s: pass=%t got=%s policy=%q\n", r.Name, r.Pass, r.Got, r.Policy)
	}
	// Output:
	// web reads users: pass=true got=allow policy="default/web-reads-api"
	// web deletes users: pass=true got=deny policy=""
	// encoded slash: pass=true got=reject policy=""
}

func ExampleLockouts() {
	mesh := policycheck.Mesh{
		Callers:      []policycheck.Caller{{ID: "spiffe://bulwark.local/ns/default/sa/web", Services: []string{"default/web"}}},
		Destinations: []policycheck.Destination{{Service: identity.ServiceRef{Namespace: "default", Name: "api"}}},
	}
	objs, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-callers}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	current := []*config.AuthorizationPolicy{objs[0].(*config.AuthorizationPolicy)}
	next := policycheck.Remove(current, []string{"default/api-callers"})
	for _, l := range policycheck.Lockouts(mesh, current, next) {
		fmt.Println(l)
	}
	// Output: default/api would lose every caller: default/web
}
