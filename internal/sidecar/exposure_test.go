package sidecar_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/sidecar"
)

func TestParseProcAddr(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantIP   string
		wantPort int
		wantErr  bool
	}{
		{name: "ipv4_loopback", in: "0100007F:1F90", wantIP: "127.0.0.1", wantPort: 8080},
		{name: "ipv4_any", in: "00000000:0050", wantIP: "0.0.0.0", wantPort: 80},
		{name: "ipv4_private", in: "0302010A:3A98", wantIP: "10.1.2.3", wantPort: 15000},
		{name: "ipv4_lowercase_hex", in: "0302010a:3a98", wantIP: "10.1.2.3", wantPort: 15000},
		{name: "ipv4_max_port", in: "0100007F:FFFF", wantIP: "127.0.0.1", wantPort: 65535},
		{name: "ipv6_any", in: "00000000000000000000000000000000:1F90", wantIP: "::", wantPort: 8080},
		{name: "ipv6_loopback", in: "00000000000000000000000001000000:1F90", wantIP: "::1", wantPort: 8080},
		{name: "ipv6_link_local", in: "000080FE000000000000000001000000:0016", wantIP: "fe80::1", wantPort: 22},
		{name: "ipv6_documentation", in: "B80D0120000000000000000001000000:01BB", wantIP: "2001:db8::1", wantPort: 443},
		{name: "ipv4_mapped", in: "0000000000000000FFFF00000302010A:1F90", wantIP: "10.1.2.3", wantPort: 8080},
		{name: "no_colon", in: "0100007F", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "bad_hex", in: "0100007G:1F90", wantErr: true},
		{name: "odd_length", in: "100007F:1F90", wantErr: true},
		{name: "wrong_length", in: "0100007F00:1F90", wantErr: true},
		{name: "bad_port", in: "0100007F:XYZ", wantErr: true},
		{name: "port_too_large", in: "0100007F:10000", wantErr: true},
		{name: "empty_port", in: "0100007F:", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip, port, err := sidecar.ParseProcAddr(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Errorf("ParseProcAddr(%q): got %v, %d; want an error", tt.in, ip, port)
				}
				return
			}
			if err != nil || ip.String() != tt.wantIP || port != tt.wantPort {
				t.Errorf("ParseProcAddr(%q): got %v, %d, %v; want %s, %d", tt.in, ip, port, err, tt.wantIP, tt.wantPort)
			}
		})
	}
}

func TestListenersFrom(t *testing.T) {
	tests := []struct {
		name string
		file string
		port int
		want []string
	}{
		// Loopback listeners (127.0.0.1, 127.0.0.2), an established
		// connection, another port and malformed lines are left out.
		{name: "ipv4", file: "proc_net_tcp", port: 8080, want: []string{"0.0.0.0:8080", "10.1.2.3:8080", "10.1.2.4:8080"}},
		{name: "ipv4_other_port", file: "proc_net_tcp", port: 8081, want: []string{"10.1.2.3:8081"}},
		{name: "ipv4_unused_port", file: "proc_net_tcp", port: 9999, want: nil},
		// ::1 and ::ffff:127.0.0.1 are loopback; an established
		// connection on the port is not a listener.
		{name: "ipv6", file: "proc_net_tcp6", port: 8080, want: []string{"[::]:8080", "10.1.2.3:8080", "[fe80::1]:8080"}},
		{name: "ipv6_other_port", file: "proc_net_tcp6", port: 80, want: []string{"[2001:db8::1]:80"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sidecar.ListenersFrom(filepath.Join("testdata", tt.file), tt.port)
			if err != nil {
				t.Fatalf("ListenersFrom: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ListenersFrom(%s, %d) (-want +got):\n%s", tt.file, tt.port, diff)
			}
		})
	}
	t.Run("missing_file", func(t *testing.T) {
		_, err := sidecar.ListenersFrom(filepath.Join(t.TempDir(), "none"), 80)
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("got %v, want an error wrapping os.ErrNotExist", err)
		}
	})
	t.Run("header_only", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "tcp")
		if err := os.WriteFile(p, []byte("  sl  local_address rem_address   st\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := sidecar.ListenersFrom(p, 80)
		if err != nil || len(got) != 0 {
			t.Errorf("got %v, %v; want none", got, err)
		}
	})
}

func TestExposedListenersReal(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skipf("no /proc/net/tcp on this system: %v", err)
	}
	exposed, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer exposed.Close()
	private, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer private.Close()
	exposedPort := exposed.Addr().(*net.TCPAddr).Port
	privatePort := private.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name string
		port int
		want []string
	}{
		{name: "wildcard", port: exposedPort, want: []string{"0.0.0.0:" + strconv.Itoa(exposedPort)}},
		{name: "loopback_only", port: privatePort, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sidecar.ExposedListeners(tt.port)
			if err != nil {
				t.Fatalf("ExposedListeners: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ExposedListeners(%d) (-want +got):\n%s", tt.port, diff)
			}
		})
	}
}
