package identity_test

import (
	"fmt"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

func ExampleServiceFromHost() {
	for _, host := range []string{"api", "api.default:8080", "api.shop.svc.cluster.local", "10.0.0.1"} {
		ref, err := identity.ServiceFromHost(host, "shop")
		fmt.Println(host, "->", ref, err)
	}
	// Output:
	// api -> shop/api <nil>
	// api.default:8080 -> default/api <nil>
	// api.shop.svc.cluster.local -> shop/api <nil>
	// 10.0.0.1 -> / host does not name a mesh service
}
