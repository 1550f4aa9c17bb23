package proxy_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// BenchmarkPairMetrics is BenchmarkPair with both engines' metrics on (a
// registry each, as with --metrics): compare its allocs/op and ns/op with
// BenchmarkPair's, measured in the same run.
func BenchmarkPairMetrics(b *testing.B) {
	benchPair(b, false, func(c *proxy.Config) { c.Metrics = prometheus.NewRegistry() })
}
