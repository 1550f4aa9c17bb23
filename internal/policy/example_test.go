package policy_test

import (
	"fmt"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
	"github.com/bulwarkmesh/bulwark/internal/policy"
)

func ExampleIndex_Decide() {
	api := identity.ServiceRef{Namespace: "default", Name: "api"}
	policies := []*config.AuthorizationPolicy{{
		Metadata: config.ObjectMeta{Namespace: "default", Name: "web-reads-api"},
		Spec: config.AuthorizationPolicySpec{
			Selector: config.PolicySelector{Service: "api"},
			Action:   config.ActionAllow,
			Rules: []config.Rule{{
				From: &config.Source{Services: []string{"default/web"}},
				To:   &config.Operation{Methods: []string{"GET"}, Paths: []string{"/v1/*"}},
			}},
		},
	}}
	ix, err := policy.Compile(policy.Workload{Service: api}, policies)
	if err != nil {
		fmt.Println(err)
		return
	}

	web := policy.Source{ID: "spiffe://bulwark.local/ns/default/sa/web", Services: []string{"default/web"}}
	for _, raw := range []string{"/v1/users", "/v1/../admin", "/v1%2f..%2fadmin"} {
		path, err := pathnorm.Normalize(raw)
		if err != nil {
			fmt.Printf("%s: 400\n", raw)
			continue
		}
		d := ix.Decide(&policy.Request{Source: web, Method: "GET", Path: path})
		fmt.Printf("%s: allow=%v (%s)", raw, d.Allow, d.Reason)
		if d.Policy != "" {
			fmt.Printf(" by %s", d.Policy)
		}
		fmt.Println()
	}

	// A service no ALLOW policy selects denies everything.
	db, err := policy.Compile(policy.Workload{Service: identity.ServiceRef{Namespace: "default", Name: "db"}}, policies)
	if err != nil {
		fmt.Println(err)
		return
	}
	d := db.Decide(&policy.Request{Source: web, Method: "GET", Path: "/"})
	fmt.Printf("db: allow=%v (%s)\n", d.Allow, d.Reason)
	// Output:
	// /v1/users: allow=true (allowed) by default/web-reads-api
	// /v1/../admin: allow=false (no ALLOW rule matched)
	// /v1%2f..%2fadmin: 400
	// db: allow=false (no ALLOW policy selects the service)
}

func ExampleForCaller() {
	api := identity.ServiceRef{Namespace: "default", Name: "api"}
	policies := []*config.AuthorizationPolicy{{
		Metadata: config.ObjectMeta{Namespace: "default", Name: "api-callers"},
		Spec: config.AuthorizationPolicySpec{
			Action: config.ActionAllow,
			Rules: []config.Rule{
				{From: &config.Source{Services: []string{"default/web"}}, To: &config.Operation{Methods: []string{"GET"}}},
				{From: &config.Source{Services: []string{"default/batch"}}, To: &config.Operation{Methods: []string{"POST"}}},
			},
		},
	}}
	web := policy.Source{ID: "spiffe://bulwark.local/ns/default/sa/web", Services: []string{"default/web"}}
	callable, view := policy.ForCaller(api, policies, web)
	fmt.Println("callable:", callable)
	for _, p := range view {
		for _, r := range p.Spec.Rules {
			fmt.Println(config.Ref(p), "from:", r.From, "methods:", r.To.Methods)
		}
	}
	// Output:
	// callable: true
	// default/api-callers from: <nil> methods: [GET]
}

func ExampleIndex_Explain() {
	api := identity.ServiceRef{Namespace: "default", Name: "api"}
	policies := []*config.AuthorizationPolicy{{
		Metadata: config.ObjectMeta{Namespace: "default", Name: "web-reads-api"},
		Spec: config.AuthorizationPolicySpec{
			Selector: config.PolicySelector{Service: "api"},
			Action:   config.ActionAllow,
			Rules: []config.Rule{{
				From: &config.Source{Services: []string{"default/web"}},
				To:   &config.Operation{Methods: []string{"GET", "POST"}, Paths: []string{"/v1/*"}},
			}},
		},
	}}
	ix, err := policy.Compile(policy.Workload{Service: api}, policies)
	if err != nil {
		fmt.Println(err)
		return
	}
	web := policy.Source{ID: "spiffe://bulwark.local/ns/default/sa/web", Services: []string{"default/web"}}
	fmt.Print(ix.Explain(&policy.Request{Source: web, Method: "DELETE", Path: "/v1/users/7"}))
	// Output:
	// decision: deny (no ALLOW rule matched)
	// ALLOW default/web-reads-api
	//   rule 0: no match
	//     - to.methods: "DELETE" not in [GET, POST]
	// nearest ALLOW rule: default/web-reads-api rule 0; to allow the request:
	//   - to.methods: "DELETE" not in [GET, POST]
}

func ExampleSet() {
	newPolicy := func(ns, name, service string) *config.AuthorizationPolicy {
		return &config.AuthorizationPolicy{
			Metadata: config.ObjectMeta{Namespace: ns, Name: name},
			Spec: config.AuthorizationPolicySpec{
				Selector: config.PolicySelector{Service: service},
				Rules:    []config.Rule{{}},
			},
		}
	}
	set := policy.NewSet([]*config.AuthorizationPolicy{
		newPolicy("default", "api-callers", "api"),
		newPolicy("default", "namespace-health", ""),
		newPolicy(config.RootNamespace, "mesh-baseline", ""),
		newPolicy("default", "web-callers", "web"),
		newPolicy("other", "other-callers", "api"),
	})
	for _, p := range set.Selecting(policy.Workload{Service: identity.ServiceRef{Namespace: "default", Name: "api"}}) {
		fmt.Println(config.Ref(p))
	}
	// Output:
	// default/api-callers
	// bulwark-system/mesh-baseline
	// default/namespace-health
}
