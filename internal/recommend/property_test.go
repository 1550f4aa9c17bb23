package recommend_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policy"
	"github.com/bulwarkmesh/bulwark/internal/recommend"
)

// Pools of the random edge sets. Literal segments are never
// identifier-like, as the proxy's templating guarantees.
var (
	propSources  = []string{"default/web", "default/batch", "default/rogue", "other/job"}
	propDests    = []string{"default/api", "default/db"}
	propMethods  = []string{"GET", "HEAD", "POST", "DELETE"}
	propSegments = []string{"a", "b", "items", "c.css", "*", "*"}
)

// propPath returns a random path template, sometimes with a trailing
// slash.
func propPath(r *rand.Rand) string {
	n := 1 + r.IntN(3)
	segs := make([]string, n)
	for i := range segs {
		segs[i] = propSegments[r.IntN(len(propSegments))]
	}
	p := "/" + strings.Join(segs, "/")
	if r.IntN(10) == 0 {
		p += "/"
	}
	return p
}

// concrete fills the template's "*" segments with identifier-like values.
func concrete(r *rand.Rand, template string) string {
	segs := strings.Split(template, "/")
	for i, s := range segs {
		if s == "*" {
			segs[i] = strconv.Itoa(1000 + r.IntN(9000))
		}
	}
	return strings.Join(segs, "/")
}

// propRequest builds the request the callee decides.
func propRequest(src, method, path string) *policy.Request {
	return &policy.Request{
		Source: policy.Source{ID: td + strings.Replace(src, "/", "/sa/", 1), Services: []string{src}},
		Method: method, Path: path, Host: "api.default", Port: 80,
	}
}

// TestRecommendProperty: for random observed edge sets, every observed,
// allowed and successful request is allowed by the recommended policies
// (decided by internal/policy, as the callee's sidecar does), and a request
// not observed as allowed (a denied one, another source, method or path)
// is denied, except where the header says the policy allows more (a
// collapse, or a denied path it could not exclude).
func TestRecommendProperty(t *testing.T) {
	for seed := range uint64(300) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			var es []*config.Edge
			for range 1 + r.IntN(25) {
				src := propSources[r.IntN(len(propSources))]
				dest := propDests[r.IntN(len(propDests))]
				method := propMethods[r.IntN(len(propMethods))]
				path := propPath(r)
				if r.IntN(30) == 0 {
					method, path = "CONNECT", ""
				}
				n := int64(1 + r.IntN(9))
				var denied int64
				switch r.IntN(4) {
				case 0:
					denied = n
				case 1:
					denied = int64(r.IntN(int(n)))
				}
				es = append(es, edge(src, dest, method, path, n, 0, denied))
			}
			o := opts(nil)
			if r.IntN(3) == 0 {
				o.Collapse = 1 + r.IntN(2)
			}
			rec, err := recommend.Recommend(es, o)
			if err != nil {
				t.Skipf("nothing to recommend: %v", err)
			}
			roundTrip(t, rec)
			var pols []*config.AuthorizationPolicy
			stillAllowed := map[string]bool{}
			for _, p := range rec.Policies {
				pols = append(pols, p.Policy)
				for _, o := range p.StillAllowed {
					for _, m := range strings.Split(o.Method, ",") {
						stillAllowed[o.Destination+" "+o.Source+" "+m+" "+o.Path] = true
					}
				}
			}
			index := map[string]*policy.Index{}
			for _, d := range propDests {
				ref, _ := identity.ParseServiceRef(d, "")
				ix, err := policy.Compile(policy.Workload{Service: ref}, pols)
				if err != nil {
					t.Fatalf("compile %s: %v", d, err)
				}
				index[d] = ix
			}

			// Allowed, by source/dest/method/template, and tunnel sources.
			allowed := map[string]bool{}
			tunnel := map[string]bool{}
			for _, e := range es {
				s := e.Status
				if s.Requests-s.Denied == 0 {
					continue
				}
				if s.Path == "" {
					tunnel[s.Destination+" "+s.SourceService] = true
					continue
				}
				allowed[s.Destination+" "+s.SourceService+" "+s.Method+" "+s.Path] = true
				if s.Path == "/*" {
					continue // skipped: never allowed
				}
				req := propRequest(s.SourceService, s.Method, concrete(r, s.Path))
				if d := index[s.Destination].Decide(req); !d.Allow {
					t.Errorf("observed %s %s (%s) from %s to %s: got %s, want allow\n%s",
						s.Method, s.Path, req.Path, s.SourceService, s.Destination, d, rec.YAML())
				}
			}
			for _, e := range es {
				s := e.Status
				if s.Path == "" && s.Requests > s.Denied {
					req := propRequest(s.SourceService, "", "")
					if d := index[s.Destination].Decide(req); !d.Allow {
						t.Errorf("observed tunnel from %s to %s: got %s, want allow", s.SourceService, s.Destination, d)
					}
				}
			}
			if o.Collapse > 0 {
				return // a collapse allows more than observed, by design
			}

			// Denied templates: denied unless allowed by the same source
			// and method (GET allows HEAD), a tunnel rule, or flagged.
			for _, e := range es {
				s := e.Status
				if s.Denied == 0 || s.Path == "" || tunnel[s.Destination+" "+s.SourceService] {
					continue
				}
				k := s.Destination + " " + s.SourceService + " "
				if allowed[k+s.Method+" "+s.Path] || (s.Method == "HEAD" && allowed[k+"GET "+s.Path]) {
					continue
				}
				if stillAllowed[s.Destination+" "+s.Source+" "+s.Method+" "+s.Path] ||
					(s.Method == "HEAD" && stillAllowed[s.Destination+" "+s.Source+" GET "+s.Path]) {
					continue
				}
				req := propRequest(s.SourceService, s.Method, concrete(r, s.Path))
				if d := index[s.Destination].Decide(req); d.Allow {
					t.Errorf("denied %s %s (%s) from %s to %s: got %s, want deny\n%s",
						s.Method, s.Path, req.Path, s.SourceService, s.Destination, d, rec.YAML())
				}
			}

			// Never observed: an unknown source, an unused method, a path
			// no template reaches. (A template's "*" is a glob, which also
			// matches literal values: the policy language has no
			// "identifier-like" pattern.)
			for _, d := range propDests {
				for _, req := range []*policy.Request{
					propRequest("default/stranger", "GET", "/a"),
					propRequest("default/web", "PATCH", "/a"),
					// deeper than any template, under a literal no template has
					propRequest("default/web", "GET", "/zzz/y/x/w/"+fmt.Sprint(r.IntN(100))),
				} {
					if tunnel[d+" "+req.Source.Services[0]] {
						continue
					}
					if dec := index[d].Decide(req); dec.Allow {
						t.Errorf("never observed %s %s from %s to %s: got %s, want deny\n%s",
							req.Method, req.Path, req.Source.Services[0], d, dec, rec.YAML())
					}
				}
			}
		})
	}
}
