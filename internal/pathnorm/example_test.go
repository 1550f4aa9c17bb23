package pathnorm_test

import (
	"errors"
	"fmt"

	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

func ExampleNormalize() {
	for _, p := range []string{"/public/../admin", "//admin", "/%61dmin", "/caf%c3%a9", "/admin%2f"} {
		out, err := pathnorm.Normalize(p)
		if errors.Is(err, pathnorm.ErrRejected) {
			fmt.Printf("%s -> 400 (%v)\n", p, err)
			continue
		}
		fmt.Printf("%s -> %s\n", p, out)
	}
	// Output:
	// /public/../admin -> /admin
	// //admin -> /admin
	// /%61dmin -> /admin
	// /caf%c3%a9 -> /caf%C3%A9
	// /admin%2f -> 400 (request path rejected: path contains an encoded '/')
}

func ExampleSplitTarget() {
	path, query, err := pathnorm.SplitTarget("/a/./b?x=1")
	if err != nil {
		fmt.Println("400:", err)
		return
	}
	norm, err := pathnorm.Normalize(path)
	if err != nil {
		fmt.Println("400:", err)
		return
	}
	fmt.Println(norm, query)
	// Output: /a/b x=1
}
