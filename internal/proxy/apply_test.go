package proxy_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

func TestNewRequires(t *testing.T) {
	a := newAuthority(t)
	src := a.svid(t, workloadID(t, "default", "api"))
	tests := []struct {
		name string
		cfg  proxy.Config
	}{
		{name: "no_service", cfg: proxy.Config{SVID: src, Bundle: src}},
		{name: "no_svid", cfg: proxy.Config{Service: apiSvc, Bundle: src}},
		{name: "no_bundle", cfg: proxy.Config{Service: apiSvc, SVID: src}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := proxy.New(tt.cfg)
			if err == nil {
				e.Close()
				t.Fatalf("got no error, want one")
			}
		})
	}
}

// invalidPolicy is a policy document validation refuses: methods are
// case-sensitive and must be written in upper case.
const invalidPolicy = `{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"bad","namespace":"default"},"spec":{"rules":[{"to":{"methods":["get"]}}]}}`

// unknownFieldPolicy has a field no version of the schema has.
const unknownFieldPolicy = `{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"bad","namespace":"default"},"spec":{"rules":[{}],"bogus":true}}`

// meshDoc is a valid document of a kind that is not a policy.
const meshDoc = `{"apiVersion":"bulwark.dev/v1alpha1","kind":"Mesh","metadata":{"name":"m"},"spec":{"entry":"api","services":[{"name":"api","example":"api"}]}}`

func TestApplyRejectsAndKeepsCurrent(t *testing.T) {
	a := newAuthority(t)
	apiID := workloadID(t, "default", "api")
	tests := []struct {
		name    string
		mutate  func(s *apiv1.Snapshot)
		wantErr string
	}{
		{
			name:    "invalid_inbound_policy",
			mutate:  func(s *apiv1.Snapshot) { s.Inbound.Policies = append(s.Inbound.Policies, []byte(invalidPolicy)) },
			wantErr: "inbound: policies[0]",
		},
		{
			name:    "unknown_field_in_inbound_policy",
			mutate:  func(s *apiv1.Snapshot) { s.Inbound.Policies = [][]byte{[]byte(unknownFieldPolicy)} },
			wantErr: "inbound: policies[0]",
		},
		{
			name:    "not_json_inbound_policy",
			mutate:  func(s *apiv1.Snapshot) { s.Inbound.Policies = [][]byte{[]byte("{")} },
			wantErr: "inbound: policies[0]",
		},
		{
			name:    "non_policy_kind",
			mutate:  func(s *apiv1.Snapshot) { s.Inbound.Policies = [][]byte{[]byte(meshDoc)} },
			wantErr: "is not an AuthorizationPolicy",
		},
		{
			name: "invalid_destination_policy",
			mutate: func(s *apiv1.Snapshot) {
				s.Destinations[0].Policies = append(s.Destinations[0].Policies, []byte(invalidPolicy))
			},
			wantErr: "destinations[0] (default/api): policies[1]",
		},
		{
			name:    "older_version",
			mutate:  func(s *apiv1.Snapshot) { s.Version = 4 },
			wantErr: "older than the current 5",
		},
		{
			name:    "bad_trust_bundle",
			mutate:  func(s *apiv1.Snapshot) { s.TrustBundle = [][]byte{[]byte("not der")} },
			wantErr: "trust_bundle[0]",
		},
		{
			name:    "bad_destination_name",
			mutate:  func(s *apiv1.Snapshot) { s.Destinations[1].Service = "Shop/API" },
			wantErr: "destinations[1]",
		},
		{
			name:    "bad_endpoint_id",
			mutate:  func(s *apiv1.Snapshot) { s.Destinations[0].Endpoints[0].SpiffeId = "https://not-spiffe" },
			wantErr: "destinations[0].endpoints[0]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, a, webSvc, "")
			cur := webSnapshot(t, a, 5, "127.0.0.1:7001", apiID)
			n.apply(t, cur)
			before := n.engine.Dump()

			next := proto.Clone(cur).(*apiv1.Snapshot)
			next.Version = 6
			tt.mutate(next)
			err := n.engine.Apply(next)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Apply: got error %v, want one containing %q", err, tt.wantErr)
			}
			if got := n.engine.Version(); got != 5 {
				t.Errorf("Version after rejected snapshot: got %d, want 5", got)
			}
			if diff := cmp.Diff(before, n.engine.Dump()); diff != "" {
				t.Errorf("table changed by a rejected snapshot (-before +after):\n%s", diff)
			}
		})
	}
}

func TestApplyVersions(t *testing.T) {
	a := newAuthority(t)
	snap := func(v int64) *apiv1.Snapshot { return webSnapshot(t, a, v, "", workloadID(t, "default", "api")) }
	type step struct {
		lkg     bool // ApplyLastKnownGood instead of Apply
		version int64
		wantErr bool
	}
	tests := []struct {
		name        string
		steps       []step
		wantVersion int64
		wantLKG     bool
	}{
		{name: "newer_accepted", steps: []step{{version: 3}, {version: 4}}, wantVersion: 4},
		{name: "same_version_accepted", steps: []step{{version: 3}, {version: 3}}, wantVersion: 3},
		{name: "older_rejected", steps: []step{{version: 3}, {version: 2, wantErr: true}}, wantVersion: 3},
		{name: "last_known_good_replaced_by_older", steps: []step{{lkg: true, version: 9}, {version: 2}}, wantVersion: 2},
		{name: "last_known_good_flagged", steps: []step{{lkg: true, version: 9}}, wantVersion: 9, wantLKG: true},
		{
			name:        "older_rejected_once_control_plane_answered",
			steps:       []step{{lkg: true, version: 9}, {version: 2}, {version: 1, wantErr: true}},
			wantVersion: 2,
		},
		{name: "last_known_good_older_than_current_rejected", steps: []step{{version: 5}, {lkg: true, version: 4, wantErr: true}}, wantVersion: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, a, webSvc, "")
			if got := n.engine.Version(); got != 0 {
				t.Fatalf("Version before any snapshot: got %d, want 0", got)
			}
			for i, s := range tt.steps {
				var err error
				if s.lkg {
					err = n.engine.ApplyLastKnownGood(snap(s.version))
				} else {
					err = n.engine.Apply(snap(s.version))
				}
				if (err != nil) != s.wantErr {
					t.Fatalf("step %d (version %d, lkg %v): got error %v, want error %v", i, s.version, s.lkg, err, s.wantErr)
				}
			}
			if got := n.engine.Version(); got != tt.wantVersion {
				t.Errorf("Version: got %d, want %d", got, tt.wantVersion)
			}
			if got := n.engine.Dump().LastKnownGood; got != tt.wantLKG {
				t.Errorf("Dump().LastKnownGood: got %v, want %v", got, tt.wantLKG)
			}
		})
	}
}

func TestDump(t *testing.T) {
	a := newAuthority(t)
	n := newNode(t, a, webSvc, "")
	if diff := cmp.Diff(proxy.Dump{Service: "shop/web", Services: []string{}, Destinations: []proxy.DumpDestination{}}, n.engine.Dump()); diff != "" {
		t.Errorf("Dump before any snapshot (-want +got):\n%s", diff)
	}
	apiID := workloadID(t, "default", "api")
	snap := webSnapshot(t, a, 7, "127.0.0.1:7001", apiID)
	snap.Inbound.Peers = []*apiv1.PeerIdentity{{SpiffeId: "spiffe://bulwark.test/ns/default/sa/api", Services: []string{"default/api"}}}
	n.apply(t, snap)
	want := proxy.Dump{
		Version:  7,
		Service:  "shop/web",
		Peers:    map[string][]string{"spiffe://bulwark.test/ns/default/sa/api": {"default/api"}},
		Services: []string{"default/api", "default/secret", "shop/api", "shop/web"},
		Destinations: []proxy.DumpDestination{
			{Service: "default/api", Endpoints: []string{"127.0.0.1:7001 (spiffe://bulwark.test/ns/default/sa/api)"}},
			{Service: "shop/api", Endpoints: []string{}},
		},
	}
	if diff := cmp.Diff(want, n.engine.Dump()); diff != "" {
		t.Errorf("Dump (-want +got):\n%s", diff)
	}
}

// TestApplyDropsAddressCollisions: an address claimed by two identities is
// left out of the table (both endpoints) and the rest of the snapshot is
// applied: NACKing the whole snapshot would freeze the proxy on its old one,
// which is what whoever made the collision wants.
func TestApplyDropsAddressCollisions(t *testing.T) {
	a := newAuthority(t)
	apiID := workloadID(t, "default", "api")
	tests := []struct {
		name   string
		mutate func(s *apiv1.Snapshot)
	}{
		{"claimed_by_two_identities", func(s *apiv1.Snapshot) {
			s.Destinations[1].Endpoints = []*apiv1.Endpoint{{Address: "127.0.0.1:7001", SpiffeId: workloadID(t, "shop", "api").String()}}
		}},
		{"claimed_twice_in_one_destination", func(s *apiv1.Snapshot) {
			s.Destinations[0].Endpoints = append(s.Destinations[0].Endpoints,
				&apiv1.Endpoint{Address: "127.0.0.1:7001", SpiffeId: workloadID(t, "default", "other").String()})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, a, webSvc, "")
			n.apply(t, webSnapshot(t, a, 5, "127.0.0.1:7001", apiID))
			next := webSnapshot(t, a, 6, "127.0.0.1:7001", apiID)
			tt.mutate(next)
			if err := n.engine.Apply(next); err != nil {
				t.Fatalf("Apply: got %v, want the snapshot applied without the colliding endpoints", err)
			}
			if got := n.engine.Version(); got != 6 {
				t.Errorf("Version: got %d, want 6", got)
			}
			for _, d := range n.engine.Dump().Destinations {
				for _, ep := range d.Endpoints {
					if strings.HasPrefix(ep, "127.0.0.1:7001 ") {
						t.Errorf("destination %s still has the colliding endpoint %s", d.Service, ep)
					}
				}
			}
		})
	}
}
