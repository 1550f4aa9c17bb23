package proxy

import (
	"net/netip"
	"testing"
)

// TestAttack6EgressReachable: the addresses DNS may give a declared name
// that egress refuses to dial, in every spelling of them.
func TestAttack6EgressReachable(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"93.184.216.34", true},
		{"2606:2800:220:1:248:1893:25c8:1946", true},
		{"10.1.2.3", true}, // private networks are the operator's to declare
		{"127.0.0.1", false},
		{"127.9.9.9", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		{"169.254.169.254", false},
		{"::ffff:169.254.169.254", false},
		{"64:ff9b::a9fe:a9fe", false}, // NAT64 of 169.254.169.254
		{"64:ff9b::7f00:1", false},    // NAT64 of 127.0.0.1
		{"64:ff9b::5db8:d822", true},  // NAT64 of a public address
		{"fe80::1", false},
		{"fd00:ec2::254", false},
		{"100.100.100.200", false},
		{"0.0.0.0", false},
		{"::", false},
		{"224.0.0.1", false},
		{"ff02::1", false},
	} {
		if got := egressReachable(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("egressReachable(%s): got %v, want %v", tt.addr, got, tt.want)
		}
	}
}
