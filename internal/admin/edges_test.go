package admin_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

// edgesServer serves a second admin API on a's stores and operator CA,
// whose edges come from source (nil: none kept), and returns its URL.
func edgesServer(t *testing.T, a *api, source admin.EdgeSource) string {
	return viewsServer(t, a, func(c *admin.Config) { c.Edges = source })
}

func edgeIn(ns, path string) *config.Edge {
	return &config.Edge{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindEdge},
		Metadata: config.ObjectMeta{Name: "e-" + strings.Repeat("0", 11) + path[1:2], Namespace: ns},
		Status: config.EdgeStatus{Source: "spiffe://bulwark.test/ns/shop/sa/web", Destination: ns + "/api",
			Method: "GET", Path: path, Requests: 1, MTLS: true,
			FirstSeen: start.Format(time.RFC3339Nano), LastSeen: start.Format(time.RFC3339Nano)},
	}
}

// TestEdgesRoute: GET /v1/edges lists what the source holds, filtered by
// the namespaces where the operator may list edges, and passes since on;
// the generic list and get routes serve edges too.
func TestEdgesRoute(t *testing.T) {
	a := newAPI(t)
	var within []time.Duration
	url := edgesServer(t, a, func(include func(string) bool, d time.Duration) []*config.Edge {
		within = append(within, d)
		var out []*config.Edge
		for _, e := range []*config.Edge{edgeIn("team-a", "/a"), edgeIn("team-b", "/b")} {
			if include == nil || include(e.Metadata.Namespace) {
				out = append(out, e)
			}
		}
		return out
	})
	a.namespaceAdmins(t)
	a.mustApply(t,
		roleJSON("team-a", "edge-reader", `[{"verbs":["list","get"],"kinds":["Edge"]}]`),
		bindingJSON("team-a", "alice-reads-edges", "edge-reader", "alice"),
	)
	paths := func(t *testing.T, body []byte) []string {
		return listed(t, body, func(o config.Object) string { return o.(*config.Edge).Status.Path })
	}
	root, alice, bob := a.operator, a.as(t, "alice"), a.as(t, "bob")
	tests := []struct {
		name       string
		client     *http.Client
		path       string
		wantStatus int
		wantPaths  []string
		wantErr    string
	}{
		{name: "admin_all", client: root, path: "/v1/edges", wantStatus: 200, wantPaths: []string{"/a", "/b"}},
		{name: "admin_namespace", client: root, path: "/v1/edges?namespace=team-b", wantStatus: 200, wantPaths: []string{"/b"}},
		{name: "reader_all_is_its_namespaces", client: alice, path: "/v1/edges", wantStatus: 200, wantPaths: []string{"/a"}},
		{name: "reader_other_namespace", client: alice, path: "/v1/edges?namespace=team-b", wantStatus: 403,
			wantErr: "operator alice may not list Edge in namespace team-b"},
		{name: "no_rights", client: bob, path: "/v1/edges", wantStatus: 403, wantErr: "operator bob may not list Edge in any namespace"},
		{name: "bad_namespace", client: root, path: "/v1/edges?namespace=Team_A", wantStatus: 400, wantErr: "namespace: "},
		{name: "bad_since", client: root, path: "/v1/edges?since=yesterday", wantStatus: 400, wantErr: `since: "yesterday": want a positive duration`},
		{name: "since_beyond_retention", client: root, path: "/v1/edges?since=25h", wantStatus: 400, wantErr: `since: "25h"`},
		{name: "since", client: root, path: "/v1/edges?since=15m", wantStatus: 200, wantPaths: []string{"/a", "/b"}},
		{name: "generic_list", client: alice, path: "/v1/edges?namespace=team-a", wantStatus: 200, wantPaths: []string{"/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			within = nil
			got := send(t, tt.client, "GET", url+tt.path, "", nil)
			if got.status != tt.wantStatus {
				t.Fatalf("status: got %d %s, want %d", got.status, got.body, tt.wantStatus)
			}
			if tt.wantErr != "" {
				if eb := got.errorBody(t); !strings.HasPrefix(eb.Error, tt.wantErr) {
					t.Errorf("error: got %q, want it to start with %q", eb.Error, tt.wantErr)
				}
				if len(within) != 0 {
					t.Error("the source was asked for a refused request")
				}
				return
			}
			if diff := cmp.Diff(tt.wantPaths, paths(t, got.body)); diff != "" {
				t.Errorf("edges (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("get_one", func(t *testing.T) {
		got := send(t, alice, "GET", url+"/v1/namespaces/team-a/edges/"+edgeIn("team-a", "/a").Metadata.Name, "", nil)
		if got.status != 200 || !strings.Contains(string(got.body), `"path":"/a"`) {
			t.Errorf("get one: got %d %s, want the edge of /a", got.status, got.body)
		}
	})
	t.Run("read_only", func(t *testing.T) {
		doc := `{"apiVersion":"bulwark.dev/v1alpha1","kind":"Edge","metadata":{"name":"e-1","namespace":"team-a"},"status":{}}`
		got := send(t, root, "POST", url+"/v1/apply", `{"items":[`+doc+`]}`, nil)
		if got.status < 400 || got.status >= 500 {
			t.Errorf("apply an Edge: got %d %s, want a 4xx", got.status, got.body)
		}
	})
	t.Run("client", func(t *testing.T) {
		cred := a.credential(t, "admin")
		cred.Server = url
		c, err := admin.NewClient(cred)
		if err != nil {
			t.Fatal(err)
		}
		within = nil
		b, err := c.Edges(context.Background(), "team-a", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"/a"}, paths(t, b)); diff != "" || len(within) != 1 || within[0] != time.Hour {
			t.Errorf("Edges(team-a, 1h): (-want +got):\n%s; since %v", diff, within)
		}
	})
	t.Run("no_graph", func(t *testing.T) {
		got := send(t, root, "GET", edgesServer(t, a, nil)+"/v1/edges", "", nil)
		if got.status != http.StatusNotImplemented {
			t.Errorf("without a graph: got %d, want 501", got.status)
		}
	})
}
