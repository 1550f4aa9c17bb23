package recommend_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
	"github.com/bulwarkmesh/bulwark/internal/recommend"
)

// FuzzRecommend: whatever a proxy reported (the control plane validates
// edges, but the generator does not rely on it), Recommend does not panic,
// and what it writes decodes into exactly its policies and lints without
// errors.
func FuzzRecommend(f *testing.F) {
	f.Add("spiffe://bulwark.local/ns/default/sa/web", "default/api", "GET", "/items/*", int64(3), int64(0), int64(0), "/a/b", 2)
	f.Add("spiffe://bulwark.local/ns/default/sa/x", "default/api", "POST", "/x\n# y", int64(5), int64(1), int64(2), "/*", 1)
	f.Add("", "api.example.com:443", "", "", int64(-1), int64(0), int64(0), "/**", 0)
	f.Fuzz(func(t *testing.T, src, dest, method, path string, requests, errs, denied int64, path2 string, collapse int) {
		es := []*config.Edge{
			{Status: config.EdgeStatus{Source: src, Destination: dest, Method: method, Path: path, Requests: requests, Errors: errs, Denied: denied}},
			{Status: config.EdgeStatus{Source: src, Destination: dest, Method: method, Path: path2, Requests: requests, Errors: errs, Denied: denied}},
			{Status: config.EdgeStatus{Source: "spiffe://bulwark.local/ns/default/sa/web", Destination: "default/api", Method: "GET", Path: path2, Requests: 1}},
		}
		o := recommend.Options{Namespace: "default", Collapse: collapse % 4}
		if o.Collapse < 0 {
			o.Collapse = -o.Collapse
		}
		rec, err := recommend.Recommend(es, o)
		if errors.Is(err, recommend.ErrNothingToRecommend) {
			return
		}
		if err != nil {
			t.Fatalf("Recommend: %v", err)
		}
		y := rec.YAML()
		objs, err := config.Decode(y)
		if err != nil {
			t.Fatalf("decode:\n%s\n%v", y, err)
		}
		if len(objs) != len(rec.Policies) {
			t.Fatalf("got %d documents, want %d:\n%s", len(objs), len(rec.Policies), y)
		}
		var docs []policycheck.Document
		for i, obj := range objs {
			p := obj.(*config.AuthorizationPolicy)
			if config.Ref(p) != config.Ref(rec.Policies[i].Policy) || len(p.Spec.Rules) != len(rec.Policies[i].Policy.Spec.Rules) {
				t.Fatalf("document %d differs from its policy:\n%s", i+1, y)
			}
			docs = append(docs, policycheck.Document{Index: i + 1, Policy: p})
		}
		for _, fd := range policycheck.Lint(docs) {
			if fd.Severity == policycheck.SeverityError {
				t.Fatalf("lint: %s\n%s", fd, y)
			}
		}
		for _, line := range strings.Split(string(y), "\n") {
			if strings.HasPrefix(line, "#") || line == "" {
				continue
			}
			for _, r := range line {
				if r < 0x20 && r != '\t' {
					t.Fatalf("a control character outside a comment: %q", line)
				}
			}
		}
	})
}
