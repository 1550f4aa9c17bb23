package sidecar_test

import (
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
)

// validConfig is a complete proxy config: the base every case changes.
func validConfig() sidecar.Config {
	return sidecar.Config{
		Control:  "127.0.0.1:8443",
		Token:    "bwjt.secret",
		Service:  identity.ServiceRef{Namespace: "default", Name: "api"},
		App:      "127.0.0.1:8080",
		Inbound:  "127.0.0.1:15006",
		Outbound: "127.0.0.1:15001",
		Admin:    "127.0.0.1:15000",
	}
}

func TestConfigValidate(t *testing.T) {
	web := identity.ServiceRef{Namespace: "default", Name: "web"}
	tests := []struct {
		name    string
		mutate  func(c *sidecar.Config)
		wantErr string // prefix; "" for valid
		// wantAdvertise is Advertise after a successful validate.
		wantAdvertise string
	}{
		{name: "valid", mutate: func(*sidecar.Config) {}, wantAdvertise: "127.0.0.1:15006"},
		{name: "missing_control", mutate: func(c *sidecar.Config) { c.Control = "" }, wantErr: "control: required"},
		{name: "missing_service", mutate: func(c *sidecar.Config) { c.Service = identity.ServiceRef{} }, wantErr: "service: required"},
		{name: "bad_trust_domain", mutate: func(c *sidecar.Config) { c.TrustDomain = "Bad Domain" }, wantErr: "trust-domain:"},
		{name: "trust_domain", mutate: func(c *sidecar.Config) { c.TrustDomain = "bulwark.test" }, wantAdvertise: "127.0.0.1:15006"},
		{name: "inbound_without_app", mutate: func(c *sidecar.Config) { c.App = "" }, wantErr: "app: required with inbound"},
		{name: "client_only", mutate: func(c *sidecar.Config) { c.App, c.Inbound = "", "" }},
		{name: "wildcard_inbound_ipv4", mutate: func(c *sidecar.Config) { c.Inbound = "0.0.0.0:15006" }, wantErr: "advertise: required"},
		{name: "wildcard_inbound_empty_host", mutate: func(c *sidecar.Config) { c.Inbound = ":15006" }, wantErr: "advertise: required"},
		{name: "wildcard_inbound_ipv6", mutate: func(c *sidecar.Config) { c.Inbound = "[::]:15006" }, wantErr: "advertise: required"},
		{name: "wildcard_inbound_with_advertise", mutate: func(c *sidecar.Config) { c.Inbound, c.Advertise = "0.0.0.0:15006", "10.0.0.7:15006" }, wantAdvertise: "10.0.0.7:15006"},
		{name: "routable_inbound", mutate: func(c *sidecar.Config) { c.Inbound = "10.0.0.7:15006" }, wantAdvertise: "10.0.0.7:15006"},
		{name: "inbound_without_port", mutate: func(c *sidecar.Config) { c.Inbound = "10.0.0.7" }, wantErr: "inbound:"},
		{name: "admin_wildcard", mutate: func(c *sidecar.Config) { c.Admin = "0.0.0.0:15000" }, wantErr: "admin:"},
		{name: "admin_empty_host", mutate: func(c *sidecar.Config) { c.Admin = ":15000" }, wantErr: "admin:"},
		{name: "admin_routable", mutate: func(c *sidecar.Config) { c.Admin = "10.0.0.7:15000" }, wantErr: "admin:"},
		{name: "admin_hostname", mutate: func(c *sidecar.Config) { c.Admin = "example.com:15000" }, wantErr: "admin:"},
		{name: "admin_localhost", mutate: func(c *sidecar.Config) { c.Admin = "localhost:15000" }, wantAdvertise: "127.0.0.1:15006"},
		{name: "admin_ipv6_loopback", mutate: func(c *sidecar.Config) { c.Admin = "[::1]:15000" }, wantAdvertise: "127.0.0.1:15006"},
		{name: "admin_other_loopback", mutate: func(c *sidecar.Config) { c.Admin = "127.0.0.2:15000" }, wantAdvertise: "127.0.0.1:15006"},
		{name: "outbound_wildcard", mutate: func(c *sidecar.Config) { c.Outbound = "0.0.0.0:15001" }, wantErr: "outbound:"},
		{name: "outbound_ipv6_wildcard", mutate: func(c *sidecar.Config) { c.Outbound = "[::]:15001" }, wantErr: "outbound:"},
		{name: "outbound_without_port", mutate: func(c *sidecar.Config) { c.Outbound = "127.0.0.1" }, wantErr: "outbound:"},
		{name: "upstream_routable", mutate: func(c *sidecar.Config) {
			c.Upstreams = map[identity.ServiceRef]string{web: "192.168.1.5:9000"}
		}, wantErr: "upstream default/web:"},
		{name: "upstream_loopback", mutate: func(c *sidecar.Config) {
			c.Upstreams = map[identity.ServiceRef]string{web: "127.0.0.1:9000"}
		}, wantAdvertise: "127.0.0.1:15006"},
		{name: "metrics_any_address", mutate: func(c *sidecar.Config) { c.Metrics = "0.0.0.0:9090" }, wantAdvertise: "127.0.0.1:15006"},
		{name: "metrics_without_port", mutate: func(c *sidecar.Config) { c.Metrics = "127.0.0.1" }, wantErr: "metrics:"},
		{name: "no_token_no_data_dir", mutate: func(c *sidecar.Config) { c.Token = "" }, wantErr: "token: required"},
		{name: "data_dir_without_token", mutate: func(c *sidecar.Config) { c.Token, c.DataDir = "", t.TempDir() }, wantAdvertise: "127.0.0.1:15006"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			td, err := c.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Errorf("got %v, want an error starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if c.Advertise != tt.wantAdvertise {
				t.Errorf("Advertise: got %q, want %q", c.Advertise, tt.wantAdvertise)
			}
			if c.Logger == nil || c.AccessLog == nil || c.Clock == nil {
				t.Errorf("defaults: got Logger %v AccessLog %v Clock %v, want all set", c.Logger, c.AccessLog, c.Clock)
			}
			if want := c.TrustDomain; td.Name() != want {
				t.Errorf("trust domain: got %q, want %q", td.Name(), want)
			}
		})
	}
}

func TestConfigWorkloadAPI(t *testing.T) {
	tests := []struct {
		name     string
		addr     string
		uid, gid int
		wantErr  string // prefix; "" for valid
		wantPath string
	}{
		{name: "absolute_path", addr: "unix:///run/bulwark/agent.sock", uid: -1, gid: -1, wantPath: "/run/bulwark/agent.sock"},
		{name: "with_uid_and_gid", addr: "unix:///tmp/w.sock", uid: 1000, gid: 1000, wantPath: "/tmp/w.sock"},
		{name: "root_uid", addr: "unix:///tmp/w.sock", uid: 0, gid: -1, wantPath: "/tmp/w.sock"},
		{name: "off", addr: "", uid: -5, gid: -5},
		{name: "bare_path", addr: "/run/agent.sock", uid: -1, gid: -1, wantErr: "workload-api:"},
		{name: "tcp", addr: "tcp://127.0.0.1:8081", uid: -1, gid: -1, wantErr: "workload-api:"},
		{name: "relative_path", addr: "unix://run/agent.sock", uid: -1, gid: -1, wantErr: "workload-api:"},
		{name: "opaque", addr: "unix:agent.sock", uid: -1, gid: -1, wantErr: "workload-api:"},
		{name: "not_clean", addr: "unix:///run/../tmp/agent.sock", uid: -1, gid: -1, wantErr: "workload-api:"},
		{name: "query", addr: "unix:///run/agent.sock?x=1", uid: -1, gid: -1, wantErr: "workload-api:"},
		{name: "fragment", addr: "unix:///run/agent.sock#x", uid: -1, gid: -1, wantErr: "workload-api:"},
		{name: "bad_uid", addr: "unix:///tmp/w.sock", uid: -2, gid: -1, wantErr: "workload-uid:"},
		{name: "bad_gid", addr: "unix:///tmp/w.sock", uid: -1, gid: -2, wantErr: "workload-gid:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			c.WorkloadAPI, c.WorkloadUID, c.WorkloadGID = tt.addr, tt.uid, tt.gid
			_, err := c.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Errorf("got %v, want an error starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			if got := c.WorkloadSocket(); got != tt.wantPath {
				t.Errorf("socket path: got %q, want %q", got, tt.wantPath)
			}
		})
	}
}
