package push_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// Workload identities of the test mesh.
const (
	webID    = "spiffe://bulwark.local/ns/default/sa/web"
	apiID    = "spiffe://bulwark.local/ns/default/sa/api"
	dbID     = "spiffe://bulwark.local/ns/default/sa/db"
	cartID   = "spiffe://bulwark.local/ns/shop/sa/cart"
	batchID  = "spiffe://bulwark.local/ns/default/sa/batch"
	lonelyID = "spiffe://bulwark.local/ns/default/sa/lonely"
)

// meshPolicies are the policies of the test mesh, in the order State
// holds them:
//   - api-from-web: web may GET api; any shop service may call /cart/* on
//     api; the batch identity (by SPIFFE ID) may POST to api.
//   - api-no-delete: web may not DELETE on api.
//   - db-from-api: only the api identity (by SPIFFE ID) may call db.
//   - admin-deny: a DENY-only policy: nobody may call admin.
//   - shop-from-web: web may call every service of namespace shop.
const meshPolicies = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-from-web}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET]}
  - from: {services: ["shop/*"]}
    to: {paths: ["/cart/*"]}
  - from: {identities: ["spiffe://bulwark.local/ns/default/sa/batch"]}
    to: {methods: [POST]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-no-delete}
spec:
  selector: {service: api}
  action: DENY
  rules:
  - from: {services: [default/web]}
    to: {methods: [DELETE]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-from-api}
spec:
  selector: {service: db}
  rules:
  - from: {identities: ["spiffe://bulwark.local/ns/default/sa/api"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: admin-deny}
spec:
  selector: {service: admin}
  action: DENY
  rules:
  - from: {services: ["*"]}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: shop-from-web, namespace: shop}
spec:
  rules:
  - from: {services: [default/web]}
`

// testBundle is the DER of a self-signed CA certificate made for the tests.
var testBundle = [][]byte{selfSigned()}

func selfSigned() []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "push test root"},
		NotBefore:             time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	return der
}

// policies decodes YAML policies as the control plane stores them.
func policies(t testing.TB, yaml string) []push.Policy {
	t.Helper()
	if strings.TrimSpace(yaml) == "" {
		return nil
	}
	objs, err := config.Decode([]byte(yaml))
	if err != nil {
		t.Fatalf("bad fixture: Decode: %v", err)
	}
	out := make([]push.Policy, 0, len(objs))
	for _, o := range objs {
		p := o.(*config.AuthorizationPolicy)
		js, err := config.Marshal(p)
		if err != nil {
			t.Fatalf("bad fixture: Marshal: %v", err)
		}
		out = append(out, push.Policy{Policy: p, JSON: js})
	}
	return out
}

// meshState returns the sealed state of the test mesh at revision rev.
func meshState(t testing.TB, rev int64, policyYAML string) *push.State {
	t.Helper()
	st := &push.State{
		Revision: rev,
		Bundle:   testBundle,
		Policies: policies(t, policyYAML),
		Identities: map[string][]string{
			webID:    {"default/web"},
			apiID:    {"default/api"},
			dbID:     {"default/db"},
			cartID:   {"shop/cart"},
			batchID:  {"default/export", "default/report"},
			lonelyID: {"default/lonely"},
		},
		Endpoints: map[string][]push.Endpoint{
			"default/web":    {{Address: "10.0.0.1:15006", SPIFFEID: webID, Instance: "web-aaaaaaaa"}},
			"default/api":    {{Address: "10.0.0.2:15006", SPIFFEID: apiID, Instance: "api-aaaaaaaa"}, {Address: "10.0.0.3:15006", SPIFFEID: apiID, Instance: "api-bbbbbbbb"}},
			"default/db":     {{Address: "10.0.0.4:15006", SPIFFEID: dbID, Instance: "db-aaaaaaaa"}},
			"default/admin":  {{Address: "10.0.0.5:15006", SPIFFEID: "spiffe://bulwark.local/ns/default/sa/admin", Instance: "admin-aaaaaaaa"}},
			"shop/cart":      {{Address: "10.0.1.1:15006", SPIFFEID: cartID, Instance: "cart-aaaaaaaa"}},
			"default/report": {{Address: "10.0.0.6:15006", SPIFFEID: batchID, Instance: "report-aaaaaaaa"}},
			"default/lonely": {{Address: "10.0.0.7:15006", SPIFFEID: lonelyID, Instance: "lonely-aaaaaaaa"}},
		},
		// Unsorted on purpose: Seal sorts.
		Services: []string{"shop/cart", "default/web", "default/api", "default/db", "default/admin", "default/report", "default/export", "default/lonely", "default/ghost"},
	}
	st.Seal()
	return st
}

var allServices = []string{"default/admin", "default/api", "default/db", "default/export", "default/ghost", "default/lonely", "default/report", "default/web", "shop/cart"}

// snapshotView is a snapshot in a form go-cmp can diff and a reader can
// follow: policies are named by ref with their rules decoded.
type snapshotView struct {
	Version         int64
	TrustBundle     [][]byte
	InboundPolicies []string
	InboundPeers    map[string][]string
	Destinations    []destinationView
	Services        []string
}

type destinationView struct {
	Service   string
	Policies  []policyView
	Endpoints []string // "address spiffeID instance"
}

type policyView struct {
	Ref    string
	Action config.Action
	Rules  []config.Rule
}

func view(t testing.TB, snap *apiv1.Snapshot) snapshotView {
	t.Helper()
	v := snapshotView{
		Version:     snap.GetVersion(),
		TrustBundle: snap.GetTrustBundle(),
		Services:    snap.GetServices(),
	}
	if snap.GetInbound() == nil {
		t.Errorf("snapshot: got no Inbound, want one (possibly empty)")
	}
	for _, js := range snap.GetInbound().GetPolicies() {
		v.InboundPolicies = append(v.InboundPolicies, decodePolicy(t, js).Ref)
	}
	for _, p := range snap.GetInbound().GetPeers() {
		if v.InboundPeers == nil {
			v.InboundPeers = map[string][]string{}
		}
		v.InboundPeers[p.GetSpiffeId()] = p.GetServices()
	}
	for _, d := range snap.GetDestinations() {
		dv := destinationView{Service: d.GetService()}
		for _, js := range d.GetPolicies() {
			dv.Policies = append(dv.Policies, decodePolicy(t, js))
		}
		for _, ep := range d.GetEndpoints() {
			dv.Endpoints = append(dv.Endpoints, ep.GetAddress()+" "+ep.GetSpiffeId()+" "+ep.GetInstance())
		}
		v.Destinations = append(v.Destinations, dv)
	}
	return v
}

// decodePolicy decodes a policy of a snapshot with the proxy's checks.
func decodePolicy(t testing.TB, js []byte) policyView {
	t.Helper()
	o, err := config.DecodeObject(js)
	if err != nil {
		t.Fatalf("snapshot policy does not decode: %v\n%s", err, js)
	}
	p, ok := o.(*config.AuthorizationPolicy)
	if !ok {
		t.Fatalf("snapshot policy: got %T, want *config.AuthorizationPolicy", o)
	}
	return policyView{Ref: config.Ref(p), Action: p.Spec.Action, Rules: p.Spec.Rules}
}

func ops(methods []string, paths []string) []config.Rule {
	return []config.Rule{{To: &config.Operation{Methods: methods, Paths: paths}}}
}

func TestCompile(t *testing.T) {
	const rev = 42
	st := meshState(t, rev, meshPolicies)
	apiEndpoints := []string{"10.0.0.2:15006 " + apiID + " api-aaaaaaaa", "10.0.0.3:15006 " + apiID + " api-bbbbbbbb"}
	tests := []struct {
		name string
		node push.Node
		want snapshotView
	}{
		{
			name: "no_policies",
			node: push.Node{ID: lonelyID, Service: identity.ServiceRef{Namespace: "default", Name: "lonely"}},
			want: snapshotView{Version: rev, TrustBundle: testBundle, Services: allServices},
		},
		{
			// web may call api (by from.services) and every shop service
			// (a namespace-wide policy), and sees only its own rules,
			// without from. db (identity-only), admin (DENY-only) and the
			// rest are names only.
			name: "caller_by_service",
			node: push.Node{ID: webID, Service: identity.ServiceRef{Namespace: "default", Name: "web"}},
			want: snapshotView{
				Version: rev, TrustBundle: testBundle, Services: allServices,
				Destinations: []destinationView{
					{
						Service: "default/api",
						Policies: []policyView{
							{Ref: "default/api-from-web", Action: config.ActionAllow, Rules: ops([]string{"GET"}, nil)},
							{Ref: "default/api-no-delete", Action: config.ActionDeny, Rules: ops([]string{"DELETE"}, nil)},
						},
						Endpoints: apiEndpoints,
					},
					{
						Service:   "shop/cart",
						Policies:  []policyView{{Ref: "shop/shop-from-web", Action: config.ActionAllow, Rules: []config.Rule{{}}}},
						Endpoints: []string{"10.0.1.1:15006 " + cartID + " cart-aaaaaaaa"},
					},
				},
			},
		},
		{
			name: "caller_by_service_glob",
			node: push.Node{ID: cartID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}},
			want: snapshotView{
				Version: rev, TrustBundle: testBundle, Services: allServices,
				// shop-from-web selects cart: its inbound, with the peers
				// its from.services name.
				InboundPolicies: []string{"shop/shop-from-web"},
				InboundPeers:    map[string][]string{webID: {"default/web"}},
				Destinations: []destinationView{{
					Service:   "default/api",
					Policies:  []policyView{{Ref: "default/api-from-web", Action: config.ActionAllow, Rules: ops(nil, []string{"/cart/*"})}},
					Endpoints: apiEndpoints,
				}},
			},
		},
		{
			// batch serves two services and is allowed by identity.
			name: "caller_by_identity",
			node: push.Node{ID: batchID, Service: identity.ServiceRef{Namespace: "default", Name: "report"}},
			want: snapshotView{
				Version: rev, TrustBundle: testBundle, Services: allServices,
				Destinations: []destinationView{{
					Service:   "default/api",
					Policies:  []policyView{{Ref: "default/api-from-web", Action: config.ActionAllow, Rules: ops([]string{"POST"}, nil)}},
					Endpoints: apiEndpoints,
				}},
			},
		},
		{
			// api's inbound carries its two policies and the peers whose
			// services its from.services patterns match (web, and cart by
			// "shop/*"), not db, lonely or batch (named by identity only).
			name: "inbound_and_identity_destination",
			node: push.Node{ID: apiID, Service: identity.ServiceRef{Namespace: "default", Name: "api"}},
			want: snapshotView{
				Version: rev, TrustBundle: testBundle, Services: allServices,
				InboundPolicies: []string{"default/api-from-web", "default/api-no-delete"},
				InboundPeers:    map[string][]string{webID: {"default/web"}, cartID: {"shop/cart"}},
				Destinations: []destinationView{{
					Service:   "default/db",
					Policies:  []policyView{{Ref: "default/db-from-api", Action: config.ActionAllow, Rules: []config.Rule{{}}}},
					Endpoints: []string{"10.0.0.4:15006 " + dbID + " db-aaaaaaaa"},
				}},
			},
		},
		{
			// db's only policy names its caller by identity: no peers.
			name: "inbound_identity_only",
			node: push.Node{ID: dbID, Service: identity.ServiceRef{Namespace: "default", Name: "db"}},
			want: snapshotView{
				Version: rev, TrustBundle: testBundle, Services: allServices,
				InboundPolicies: []string{"default/db-from-api"},
			},
		},
		{
			// A proxy whose identity the registry does not know matches no
			// service pattern, only identity patterns.
			name: "unknown_identity",
			node: push.Node{ID: "spiffe://bulwark.local/ns/default/sa/stranger", Service: identity.ServiceRef{Namespace: "default", Name: "web"}},
			want: snapshotView{Version: rev, TrustBundle: testBundle, Services: allServices},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := push.Compile(st, tt.node)
			if err != nil {
				t.Fatalf("Compile: got error %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, view(t, snap)); diff != "" {
				t.Errorf("Compile(%s) (-want +got):\n%s", tt.node.ID, diff)
			}
			checkLeastKnowledge(t, st, snap)
			// Inbound policies are the stored documents, byte for byte.
			for _, js := range snap.GetInbound().GetPolicies() {
				if !slices.ContainsFunc(st.Policies, func(p push.Policy) bool { return bytes.Equal(p.JSON, js) }) {
					t.Errorf("inbound policy %s: got bytes that are not a stored document", js)
				}
			}
		})
	}
}

// checkLeastKnowledge checks that the snapshot carries endpoints only in
// destinations: no address of a service that is not a destination appears.
func checkLeastKnowledge(t testing.TB, st *push.State, snap *apiv1.Snapshot) {
	t.Helper()
	dests := map[string]bool{}
	for _, d := range snap.GetDestinations() {
		dests[d.GetService()] = true
	}
	raw, err := proto.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	for svc, eps := range st.Endpoints {
		if dests[svc] {
			continue
		}
		for _, ep := range eps {
			if bytes.Contains(raw, []byte(ep.Address)) || bytes.Contains(raw, []byte(ep.Instance)) {
				t.Errorf("snapshot: got endpoint %s (%s) of %s, which the node may not call", ep.Address, ep.Instance, svc)
			}
		}
	}
}

// TestCompileDenyOnlyNeverCallable: DENY policies alone never make a
// service callable, whatever they match (it fails closed).
func TestCompileDenyOnlyNeverCallable(t *testing.T) {
	web := push.Node{ID: webID, Service: identity.ServiceRef{Namespace: "default", Name: "web"}}
	tests := []struct {
		name         string
		policies     string
		wantCallable bool
	}{
		{name: "no_policy", policies: "", wantCallable: false},
		{name: "deny_matching_caller", policies: policy("d", "DENY", "from: {services: [default/web]}"), wantCallable: false},
		{name: "deny_everyone", policies: policy("d", "DENY", "to: {methods: [GET]}"), wantCallable: false},
		{name: "deny_other_caller", policies: policy("d", "DENY", "from: {services: [default/db]}"), wantCallable: false},
		{name: "two_denies", policies: policy("d1", "DENY", "from: {services: [default/web]}") + "---\n" + policy("d2", "DENY", "from: {identities: [\"*\"]}"), wantCallable: false},
		{name: "allow_other_caller_and_deny", policies: policy("a", "ALLOW", "from: {services: [default/db]}") + "---\n" + policy("d", "DENY", "from: {services: [default/web]}"), wantCallable: false},
		{name: "allow_matching_caller", policies: policy("a", "ALLOW", "from: {services: [default/web]}"), wantCallable: true},
		{name: "allow_identity_glob", policies: policy("a", "ALLOW", "from: {identities: [\"spiffe://bulwark.local/ns/default/sa/*\"]}"), wantCallable: true},
		{name: "allow_any_caller", policies: policy("a", "ALLOW", "to: {paths: [\"/health\"]}"), wantCallable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := meshState(t, 1, tt.policies)
			snap, err := push.Compile(st, web)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			var callable bool
			for _, d := range snap.GetDestinations() {
				if d.GetService() == "default/db" {
					callable = true
				}
			}
			if callable != tt.wantCallable {
				t.Errorf("default/db in web's destinations: got %v, want %v", callable, tt.wantCallable)
			}
			if !slices.Contains(snap.GetServices(), "default/db") {
				t.Errorf("Services: got %v, want default/db listed by name", snap.GetServices())
			}
		})
	}
}

// policy returns a policy selecting default/db with action and one rule.
func policy(name, action, rule string) string {
	return fmt.Sprintf(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s}
spec:
  selector: {service: db}
  action: %s
  rules:
  - %s
`, name, action, rule)
}

// TestCompilePure: the same state and node give the same snapshot, and
// compiling does not change the state.
func TestCompilePure(t *testing.T) {
	st := meshState(t, 7, meshPolicies)
	before := make([][]byte, len(st.Policies))
	for i, p := range st.Policies {
		js, err := config.Marshal(p.Policy)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = js
	}
	for _, node := range []push.Node{
		{ID: webID, Service: identity.ServiceRef{Namespace: "default", Name: "web"}},
		{ID: apiID, Service: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{ID: cartID, Service: identity.ServiceRef{Namespace: "shop", Name: "cart"}},
	} {
		a, err := push.Compile(st, node)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		b, err := push.Compile(st, node)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		if !proto.Equal(a, b) {
			t.Errorf("Compile(%s) twice: got different snapshots, want equal:\n%v\n%v", node.ID, a, b)
		}
	}
	for i, p := range st.Policies {
		js, err := config.Marshal(p.Policy)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(js, before[i]) {
			t.Errorf("policy %d after Compile: got %s, want it unchanged: %s", i, js, before[i])
		}
	}
}

func ExampleCompile() {
	objs, err := config.Decode([]byte(`apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads-api}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET]}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	p := objs[0].(*config.AuthorizationPolicy)
	js, _ := config.Marshal(p)
	st := &push.State{
		Revision: 3,
		Policies: []push.Policy{{Policy: p, JSON: js}},
		Identities: map[string][]string{
			"spiffe://bulwark.local/ns/default/sa/web": {"default/web"},
		},
		Endpoints: map[string][]push.Endpoint{
			"default/api": {{Address: "10.0.0.2:15006", SPIFFEID: "spiffe://bulwark.local/ns/default/sa/api", Instance: "api-1"}},
			"default/db":  {{Address: "10.0.0.3:15006", SPIFFEID: "spiffe://bulwark.local/ns/default/sa/db", Instance: "db-1"}},
		},
		Services: []string{"default/db", "default/api", "default/web"},
	}
	st.Seal()

	snap, err := push.Compile(st, push.Node{
		ID:      "spiffe://bulwark.local/ns/default/sa/web",
		Service: identity.ServiceRef{Namespace: "default", Name: "web"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("version:", snap.GetVersion())
	fmt.Println("services:", snap.GetServices())
	for _, d := range snap.GetDestinations() {
		fmt.Println("may call:", d.GetService(), "at", d.GetEndpoints()[0].GetAddress())
	}
	// Output:
	// version: 3
	// services: [default/api default/db default/web]
	// may call: default/api at 10.0.0.2:15006
}
