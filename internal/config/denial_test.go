package config_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// TestDenialRoundTrip: a Denial served by the control plane decodes again
// from its List, with and without a deciding rule.
func TestDenialRoundTrip(t *testing.T) {
	rule := 2
	want := []config.Object{
		&config.Denial{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindDenial},
			Metadata: config.ObjectMeta{Name: "d-0123456789ab", Namespace: "default"},
			Status: config.DenialStatus{
				Direction: "inbound", Source: "spiffe://bulwark.local/ns/shop/sa/web", Destination: "default/api",
				Method: "DELETE", Path: "/admin/users", Policy: "default/deny-admin", Rule: &rule,
				Reason: "denied by policy", HTTPStatus: 403, Count: 7,
				FirstSeen: "2026-01-02T03:04:05.123Z", LastSeen: "2026-01-02T03:04:15.5Z",
				Reporters: []string{"spiffe://bulwark.local/ns/default/sa/api"},
			},
		},
		&config.Denial{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindDenial},
			Metadata: config.ObjectMeta{Name: "d-ba9876543210", Namespace: "default"},
			Status: config.DenialStatus{
				Direction: "outbound", Source: "spiffe://bulwark.local/ns/shop/sa/web", Destination: "default/api",
				Method: "GET", Path: "/", Reason: "no ALLOW rule matched", HTTPStatus: 403, Count: 1,
				FirstSeen: "2026-01-02T03:04:05Z", LastSeen: "2026-01-02T03:04:05Z",
			},
		},
	}
	for _, asYAML := range []bool{false, true} {
		b, err := config.MarshalList(want, asYAML)
		if err != nil {
			t.Fatalf("MarshalList(yaml=%v): %v", asYAML, err)
		}
		if asYAML {
			continue // UnmarshalList reads JSON answers; YAML is for people
		}
		if strings.Contains(string(b), `"rule":null`) {
			t.Errorf("got %s, want no rule field for a denial no rule decided", b)
		}
		got, err := config.UnmarshalList(b)
		if err != nil {
			t.Fatalf("UnmarshalList: %v", err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("round trip mismatch (-want +got):\n%s", diff)
		}
	}
}

// TestDenialIsReadOnly: denials are reported by proxies; nobody applies
// one.
func TestDenialIsReadOnly(t *testing.T) {
	if !config.IsReadOnly(config.KindDenial) {
		t.Errorf("IsReadOnly(%q): got false, want true", config.KindDenial)
	}
	doc := `
apiVersion: bulwark.dev/v1alpha1
kind: Denial
metadata: {name: d-1, namespace: default}
status: {direction: inbound}
`
	_, err := config.Decode([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "kind: Denial is read-only") {
		t.Errorf("Decode: got error %v, want it to say Denial is read-only", err)
	}
}

func TestDenialResourceNames(t *testing.T) {
	for _, name := range []string{"denials", "denial", "Denials", "DENIAL"} {
		t.Run(name, func(t *testing.T) {
			if kind, ok := config.ResourceKind(name); !ok || kind != config.KindDenial {
				t.Errorf("ResourceKind(%q): got %q, %v, want %q, true", name, kind, ok, config.KindDenial)
			}
		})
	}
	if got := config.ResourcePlural(config.KindDenial); got != "denials" {
		t.Errorf("ResourcePlural(Denial): got %q, want %q", got, "denials")
	}
}
