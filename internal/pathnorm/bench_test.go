package pathnorm_test

import (
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct {
		name string
		path string
	}{
		{name: "normalized", path: "/api/v1/users/42/orders"},
		{name: "normalized_escapes", path: "/files/caf%C3%A9/r%C3%A9sum%C3%A9.pdf"},
		{name: "dot_segments", path: "/api/v1/../v2/./users//42/"},
		{name: "encoded_unreserved", path: "/%61pi/v1/%75sers/%2e%2e/42"},
		{name: "rejected", path: "/api/v1/users%2f..%2fadmin"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pathnorm.Normalize(bc.path)
			}
		})
	}
}

func BenchmarkSplitTarget(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		pathnorm.SplitTarget("/api/v1/users/42?expand=orders&limit=10")
	}
}
