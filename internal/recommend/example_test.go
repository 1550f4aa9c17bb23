package recommend_test

import (
	"fmt"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/recommend"
)

// Recommend turns observed edges into one policy per destination service:
// web's reads are allowed, rogue's denied scan is not.
func ExampleRecommend() {
	edges := []*config.Edge{
		{Status: config.EdgeStatus{Source: "spiffe://bulwark.local/ns/shop/sa/web", SourceService: "shop/web",
			Destination: "shop/api", Method: "GET", Path: "/items/*/reviews", Requests: 12}},
		{Status: config.EdgeStatus{Source: "spiffe://bulwark.local/ns/shop/sa/web", SourceService: "shop/web",
			Destination: "shop/api", Method: "GET", Path: "/health", Requests: 3}},
		{Status: config.EdgeStatus{Source: "spiffe://bulwark.local/ns/shop/sa/rogue", SourceService: "shop/rogue",
			Destination: "shop/api", Method: "GET", Path: "/admin", Requests: 50, Denied: 50}},
	}
	rec, err := recommend.Recommend(edges, recommend.Options{Namespace: "shop"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range rec.Policies {
		fmt.Println(config.Ref(p.Policy), p.Requests, "requests")
		for _, r := range p.Policy.Spec.Rules {
			fmt.Println(r.From.Identities, r.To.Methods, r.To.Paths)
		}
		for _, d := range p.Denied {
			fmt.Println("denied:", d.SourceService, d.Method, d.Path, d.Count)
		}
	}
	// Output:
	// shop/recommended-api 15 requests
	// [spiffe://bulwark.local/ns/shop/sa/web] [GET] [/health /items/*/reviews]
	// denied: shop/rogue GET /admin 50
}
