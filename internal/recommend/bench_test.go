package recommend_test

import (
	"fmt"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/recommend"
)

// largeGraph is the control plane's bound of 10,000 edges, most of them
// from one caller: literal paths, templates, and denied scans.
func largeGraph() []*config.Edge {
	var es []*config.Edge
	for i := range 5000 {
		es = append(es, edge("default/web", "default/api", "GET", fmt.Sprintf("/static/f%d.css", i), 2, 0, 0))
	}
	for i := range 2000 {
		es = append(es, edge("default/web", "default/api", "GET", fmt.Sprintf("/v%d/items/*", i), 2, 0, 0))
	}
	for i := range 3000 {
		es = append(es, edge("default/web", "default/api", "GET", fmt.Sprintf("/v%d/items/x%d", i%2000, i), 1, 0, 1))
	}
	return es
}

// BenchmarkRecommendLarge: a recommendation of the largest graph the
// control plane holds stays well under a second.
func BenchmarkRecommendLarge(b *testing.B) {
	es := largeGraph()
	for b.Loop() {
		rec, err := recommend.Recommend(es, recommend.Options{Namespace: "default"})
		if err != nil {
			b.Fatal(err)
		}
		_ = rec.YAML()
	}
}
