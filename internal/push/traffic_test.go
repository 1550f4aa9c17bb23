package push_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// trafficYAML holds the traffic resources of the test mesh:
//   - api has two TrafficPolicies (api-a wins: the smallest name) and two
//     Routes (canary, then header, by name);
//   - db, which only api may call, has a TrafficPolicy and a Route;
//   - web, which nobody may call, has a TrafficPolicy and a Route of its
//     own (its inbound gets them);
//   - payments-gw is an external service that web may reach (by the
//     policy payments-from-web) and nobody else.
const trafficYAML = `apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api-b}
spec: {service: api, timeout: 9s}
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api-a}
spec: {service: api, timeout: 1s}
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: db-tp}
spec: {service: db, timeout: 2s}
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-tp}
spec: {service: web, timeout: 3s}
---
apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: header}
spec:
  service: api
  rules:
  - backends: [{version: v2, weight: 100}]
---
apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: canary}
spec:
  service: api
  rules:
  - backends: [{version: v1, weight: 90}, {version: v2, weight: 10}]
---
apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: db-route}
spec:
  service: db
  rules:
  - backends: [{version: v1, weight: 100}]
---
apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: web-route}
spec:
  service: web
  rules:
  - backends: [{version: v1, weight: 100}]
---
apiVersion: bulwark.dev/v1alpha1
kind: ExternalService
metadata: {name: payments-gw}
spec:
  hosts: [pay.example.com]
  ports: [{port: 443, protocol: tls}]
`

// externalPolicy lets web reach the external service payments-gw.
const externalPolicy = `
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: payments-from-web}
spec:
  selector: {service: payments-gw}
  rules:
  - from: {services: [default/web]}
    to: {ports: [443]}
`

// trafficState is the test mesh with its traffic resources, protocols and
// endpoint details.
func trafficState(t testing.TB) *push.State {
	t.Helper()
	st := meshState(t, 7, meshPolicies+externalPolicy)
	objs, err := config.Decode([]byte(trafficYAML))
	if err != nil {
		t.Fatalf("bad fixture: Decode: %v", err)
	}
	for _, o := range objs {
		js, err := config.Marshal(o)
		if err != nil {
			t.Fatalf("bad fixture: Marshal: %v", err)
		}
		switch o := o.(type) {
		case *config.TrafficPolicy:
			st.TrafficPolicies = append(st.TrafficPolicies, push.TrafficPolicy{Policy: o, JSON: js})
		case *config.Route:
			st.Routes = append(st.Routes, push.Route{Route: o, JSON: js})
		case *config.ExternalService:
			st.ExternalServices = append(st.ExternalServices, push.ExternalService{Service: o, JSON: js})
		}
	}
	st.Protocols = map[string]string{"default/db": "grpc"}
	st.Endpoints["default/api"] = []push.Endpoint{
		{Address: "10.0.0.2:15006", SPIFFEID: apiID, Instance: "api-aaaaaaaa", Labels: map[string]string{"version": "v1"}, Locality: "eu/a"},
		{Address: "10.0.0.3:15006", SPIFFEID: apiID, Instance: "api-bbbbbbbb", Labels: map[string]string{"version": "v2"}, Locality: "eu/b", Draining: true},
	}
	st.Seal()
	return st
}

// trafficView is what a destination carries beyond policies.
type trafficView struct {
	Service       string
	Protocol      string
	TrafficPolicy string   // name of the TrafficPolicy, "" none
	Routes        []string // names of the Routes
	External      string   // name of the ExternalService, "" none
	Policies      []string // refs
	Endpoints     int
}

// docName returns the metadata.name of a JSON resource, "" for none.
func docName(t testing.TB, js []byte) string {
	t.Helper()
	if len(js) == 0 {
		return ""
	}
	o, err := config.DecodeObject(js)
	if err != nil {
		t.Fatalf("snapshot document does not decode: %v\n%s", err, js)
	}
	return o.GetMetadata().Name
}

func docNames(t testing.TB, docs [][]byte) []string {
	var out []string
	for _, js := range docs {
		out = append(out, docName(t, js))
	}
	return out
}

func trafficViews(t testing.TB, snap *apiv1.Snapshot) []trafficView {
	var out []trafficView
	for _, d := range snap.GetDestinations() {
		v := trafficView{
			Service: d.GetService(), Protocol: d.GetProtocol(), TrafficPolicy: docName(t, d.GetTrafficPolicy()),
			Routes: docNames(t, d.GetRoutes()), External: docName(t, d.GetExternal()), Endpoints: len(d.GetEndpoints()),
		}
		for _, js := range d.GetPolicies() {
			v.Policies = append(v.Policies, decodePolicy(t, js).Ref)
		}
		out = append(out, v)
	}
	return out
}

func TestCompileTraffic(t *testing.T) {
	st := trafficState(t)
	tests := []struct {
		name         string
		node         push.Node
		want         []trafficView
		wantInboundT string
		wantInboundR []string
	}{
		{
			// web may call api, cart and the external payments-gw; it gets
			// api's winning traffic policy and routes, never db's; its
			// inbound has its own.
			name: "web",
			node: push.Node{ID: webID, Service: identity.ServiceRef{Namespace: "default", Name: "web"}},
			want: []trafficView{
				{Service: "default/api", Protocol: "http", TrafficPolicy: "api-a", Routes: []string{"canary", "header"},
					Policies: []string{"default/api-from-web", "default/api-no-delete"}, Endpoints: 2},
				{Service: "default/payments-gw", External: "payments-gw", Policies: []string{"default/payments-from-web"}},
				{Service: "shop/cart", Protocol: "http", Policies: []string{"shop/shop-from-web"}, Endpoints: 1},
			},
			wantInboundT: "web-tp",
			wantInboundR: []string{"web-route"},
		},
		{
			// api may call db only: db's protocol, traffic policy and
			// route; not the external service (no policy lets it).
			name: "api",
			node: push.Node{ID: apiID, Service: identity.ServiceRef{Namespace: "default", Name: "api"}},
			want: []trafficView{
				{Service: "default/db", Protocol: "grpc", TrafficPolicy: "db-tp", Routes: []string{"db-route"},
					Policies: []string{"default/db-from-api"}, Endpoints: 1},
			},
			wantInboundT: "api-a",
			wantInboundR: []string{"canary", "header"},
		},
		{
			// lonely may call nothing: no destination, and nobody's
			// traffic resources.
			name: "lonely",
			node: push.Node{ID: lonelyID, Service: identity.ServiceRef{Namespace: "default", Name: "lonely"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := push.Compile(st, tt.node)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if diff := cmp.Diff(tt.want, trafficViews(t, snap)); diff != "" {
				t.Errorf("destinations (-want +got):\n%s", diff)
			}
			if got := docName(t, snap.GetInbound().GetTrafficPolicy()); got != tt.wantInboundT {
				t.Errorf("inbound traffic policy: got %q, want %q", got, tt.wantInboundT)
			}
			if diff := cmp.Diff(tt.wantInboundR, docNames(t, snap.GetInbound().GetRoutes())); diff != "" {
				t.Errorf("inbound routes (-want +got):\n%s", diff)
			}
			// The external service is named for everyone, so a caller
			// without the right gets 403, not 503.
			if !slices.Contains(snap.GetServices(), "default/payments-gw") {
				t.Errorf("services: got %v, want default/payments-gw among them", snap.GetServices())
			}
		})
	}
}

// TestCompileExternalCarriesFullPolicies checks that a caller of an
// external service gets the policies that select it whole (from, to and
// all), since its sidecar is their only enforcement point.
func TestCompileExternalCarriesFullPolicies(t *testing.T) {
	st := trafficState(t)
	snap, err := push.Compile(st, push.Node{ID: webID, Service: identity.ServiceRef{Namespace: "default", Name: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range snap.GetDestinations() {
		if d.GetService() != "default/payments-gw" {
			continue
		}
		if len(d.GetPolicies()) != 1 {
			t.Fatalf("policies: got %d, want 1", len(d.GetPolicies()))
		}
		got := decodePolicy(t, d.GetPolicies()[0])
		if len(got.Rules) != 1 || got.Rules[0].From == nil || !slices.Contains(got.Rules[0].From.Services, "default/web") {
			t.Errorf("external policy: got rules %+v, want the full rule with from.services [default/web]", got.Rules)
		}
		if got := string(d.GetExternal()); !strings.Contains(got, "pay.example.com") {
			t.Errorf("external: got %s, want the ExternalService document", got)
		}
		return
	}
	t.Fatal("no destination default/payments-gw")
}

func TestCompileEndpointFields(t *testing.T) {
	st := trafficState(t)
	snap, err := push.Compile(st, push.Node{ID: webID, Service: identity.ServiceRef{Namespace: "default", Name: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	type epView struct {
		Instance string
		Labels   map[string]string
		Locality string
		Draining bool
	}
	var got []epView
	for _, d := range snap.GetDestinations() {
		if d.GetService() != "default/api" {
			continue
		}
		for _, ep := range d.GetEndpoints() {
			got = append(got, epView{ep.GetInstance(), ep.GetLabels(), ep.GetLocality(), ep.GetDraining()})
		}
	}
	want := []epView{
		{"api-aaaaaaaa", map[string]string{"version": "v1"}, "eu/a", false},
		{"api-bbbbbbbb", map[string]string{"version": "v2"}, "eu/b", true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoints of default/api (-want +got):\n%s", diff)
	}
}
