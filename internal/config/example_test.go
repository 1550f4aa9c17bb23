package config_test

import (
	"fmt"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

func ExampleDecode() {
	objs, err := config.Decode([]byte(`# web may read the API
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: web-to-api
spec:
  selector:
    service: api
  rules:
  - from:
      services: ["default/web"]
    to:
      methods: ["GET"]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, o := range objs {
		p := o.(*config.AuthorizationPolicy)
		// Validate filled in the defaults.
		fmt.Println(o.GetTypeMeta().Kind, config.Ref(o), p.Spec.Action)
	}
	// Output: AuthorizationPolicy default/web-to-api ALLOW
}

func ExampleDecode_errors() {
	_, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: web-to-api
spec:
  rules:
  - to:
      methodz: ["GET"]
---
apiVersion: bulwark.dev/v1alpha1
kind: Mesh
metadata:
  name: shop
spec:
  services:
  - name: web
    example: web
    replicas: 0.5
`))
	fmt.Println(err)
	// Output:
	// document 1 (AuthorizationPolicy default/web-to-api): spec.rules[0].to.methodz: unknown field
	// document 2 (Mesh default/shop): spec.services[0].replicas: expected an integer, got 0.5
}

func ExampleMarshalYAML() {
	objs, err := config.Decode([]byte(`{"apiVersion": "bulwark.dev/v1alpha1", "kind": "AuthorizationPolicy",
 "metadata": {"name": "deny-admin"},
 "spec": {"action": "DENY", "rules": [{"to": {"paths": ["/admin/*"]}}]}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	y, err := config.MarshalYAML(objs[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(string(y))
	// Output:
	// apiVersion: bulwark.dev/v1alpha1
	// kind: AuthorizationPolicy
	// metadata:
	//   name: deny-admin
	//   namespace: default
	// spec:
	//   action: DENY
	//   rules:
	//   - to:
	//       paths:
	//       - /admin/*
}
