package telemetry_test

import (
	"fmt"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

func ExampleRedactor() {
	r, err := telemetry.NewRedactor([]string{"X-Custom-Secret"}, []string{"magic"})
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Query("page=2&token=hunter2&magic=xyzzy"))
	fmt.Println(r.Path("/callback/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln/done"))
	fmt.Println(r.Header("X-Custom-Secret", "s3cr3t"))
	fmt.Println(r.Text("upstream said: Bearer abc123"))
	// Output:
	// page=2&token=[REDACTED]&magic=[REDACTED]
	// /callback/[REDACTED]/done
	// [REDACTED]
	// upstream said: Bearer [REDACTED]
}
