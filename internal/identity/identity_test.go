package identity_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

var td = spiffeid.RequireTrustDomainFromString("bulwark.test")

func TestValidateName(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		wantOK bool
	}{
		{name: "simple", in: "api", wantOK: true},
		{name: "single_letter", in: "a", wantOK: true},
		{name: "single_digit", in: "7", wantOK: true},
		{name: "digits_first", in: "1st-api", wantOK: true},
		{name: "inner_dashes", in: "a--b", wantOK: true},
		{name: "max_63", in: strings.Repeat("a", 63), wantOK: true},
		{name: "too_long_64", in: strings.Repeat("a", 64)},
		{name: "empty", in: ""},
		{name: "leading_dash", in: "-api"},
		{name: "trailing_dash", in: "api-"},
		{name: "dash_only", in: "-"},
		{name: "uppercase", in: "Api"},
		{name: "dot", in: "api.v2"},
		{name: "underscore", in: "api_v2"},
		{name: "slash", in: "default/api"},
		{name: "space", in: "my api"},
		{name: "non_ascii", in: "apí"},
		{name: "at_sign", in: "user@api"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := identity.ValidateName(tt.in)
			if (err == nil) != tt.wantOK {
				t.Errorf("ValidateName(%q): got error %v, want ok %v", tt.in, err, tt.wantOK)
			}
		})
	}
}

func TestParseServiceRef(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		defaultNS string
		want      identity.ServiceRef
		wantErr   string
	}{
		{name: "namespaced", in: "shop/api", defaultNS: "default", want: identity.ServiceRef{Namespace: "shop", Name: "api"}},
		{name: "bare_name_default_namespace", in: "api", defaultNS: "default", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "bare_name_other_default", in: "api", defaultNS: "shop", want: identity.ServiceRef{Namespace: "shop", Name: "api"}},
		{name: "bare_name_no_default", in: "api", defaultNS: "", wantErr: "namespace"},
		{name: "empty", in: "", defaultNS: "default", wantErr: "name"},
		{name: "empty_namespace", in: "/api", defaultNS: "default", wantErr: "namespace"},
		{name: "empty_name", in: "shop/", defaultNS: "default", wantErr: "name"},
		{name: "three_parts", in: "a/b/c", defaultNS: "default", wantErr: "name"},
		{name: "uppercase", in: "Shop/api", defaultNS: "default", wantErr: "namespace"},
		{name: "dotted_name", in: "shop/api.v2", defaultNS: "default", wantErr: "name"},
		{name: "bad_default_namespace", in: "api", defaultNS: "Bad", wantErr: "namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := identity.ParseServiceRef(tt.in, tt.defaultNS)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParseServiceRef(%q, %q): got %v, %v; want an error naming %q", tt.in, tt.defaultNS, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseServiceRef(%q, %q): got %v, %v; want %v", tt.in, tt.defaultNS, got, err, tt.want)
			}
		})
	}
}

func TestServiceRefMethods(t *testing.T) {
	r := identity.ServiceRef{Namespace: "shop", Name: "api"}
	if got, want := r.String(), "shop/api"; got != want {
		t.Errorf("String: got %q, want %q", got, want)
	}
	if got, want := r.Host(), "api.shop"; got != want {
		t.Errorf("Host: got %q, want %q", got, want)
	}
	tests := []struct {
		name string
		ref  identity.ServiceRef
		want bool
	}{
		{name: "zero", ref: identity.ServiceRef{}, want: true},
		{name: "full", ref: r},
		{name: "name_only", ref: identity.ServiceRef{Name: "api"}},
		{name: "namespace_only", ref: identity.ServiceRef{Namespace: "shop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.ref.IsZero(); got != tt.want {
				t.Errorf("IsZero(%#v): got %v, want %v", tt.ref, got, tt.want)
			}
		})
	}
}

func TestWorkloadID(t *testing.T) {
	tests := []struct {
		name    string
		ns, sa  string
		want    string
		wantErr string
	}{
		{name: "valid", ns: "shop", sa: "web", want: "spiffe://bulwark.test/ns/shop/sa/web"},
		{name: "empty_namespace", ns: "", sa: "web", wantErr: "namespace"},
		{name: "empty_account", ns: "shop", sa: "", wantErr: "account"},
		{name: "namespace_with_slash", ns: "a/b", sa: "web", wantErr: "namespace"},
		{name: "account_with_slash", ns: "shop", sa: "web/extra", wantErr: "account"},
		{name: "uppercase_account", ns: "shop", sa: "Web", wantErr: "account"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := identity.WorkloadID(td, tt.ns, tt.sa)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("WorkloadID(%q, %q): got %v, %v; want an error naming %q", tt.ns, tt.sa, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Errorf("WorkloadID(%q, %q): got %v, %v; want %s", tt.ns, tt.sa, got, err, tt.want)
			}
		})
	}
}

func TestParseWorkloadID(t *testing.T) {
	tests := []struct {
		name   string
		id     string
		wantNS string
		wantSA string
		wantOK bool
	}{
		{name: "valid", id: "spiffe://bulwark.test/ns/shop/sa/web", wantNS: "shop", wantSA: "web", wantOK: true},
		{name: "other_trust_domain_parses", id: "spiffe://other.test/ns/shop/sa/web", wantNS: "shop", wantSA: "web", wantOK: true},
		{name: "extra_segment", id: "spiffe://bulwark.test/ns/a/sa/b/extra"},
		// go-spiffe already refuses an ID with an empty segment, so
		// such an ID never reaches ParseWorkloadID.
		{name: "empty_namespace", id: "spiffe://bulwark.test/ns//sa/x"},
		{name: "control_plane", id: "spiffe://bulwark.test/bulwark/control"},
		{name: "trust_domain_only", id: "spiffe://bulwark.test"},
		{name: "namespace_only", id: "spiffe://bulwark.test/ns/shop"},
		{name: "no_sa_marker", id: "spiffe://bulwark.test/ns/shop/web"},
		{name: "wrong_marker", id: "spiffe://bulwark.test/ns/shop/svc/web"},
		{name: "leading_segment", id: "spiffe://bulwark.test/x/ns/shop/sa/web"},
		{name: "empty_account", id: "spiffe://bulwark.test/ns/shop/sa"},
		{name: "invalid_account", id: "spiffe://bulwark.test/ns/shop/sa/Web"},
		{name: "invalid_namespace", id: "spiffe://bulwark.test/ns/Shop/sa/web"},
		{name: "zero", id: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id spiffeid.ID
			if tt.id != "" {
				var err error
				if id, err = spiffeid.FromString(tt.id); err != nil {
					if tt.wantOK {
						t.Fatalf("FromString(%q): %v", tt.id, err)
					}
					return
				}
			}
			got, err := identity.ParseWorkloadID(id)
			if !tt.wantOK {
				if err == nil {
					t.Errorf("ParseWorkloadID(%s): got %+v, want an error", id, got)
				}
				return
			}
			want := identity.Workload{ID: id, Namespace: tt.wantNS, Account: tt.wantSA}
			if err != nil || got != want {
				t.Errorf("ParseWorkloadID(%s): got %+v, %v; want %+v", id, got, err, want)
			}
		})
	}
}

func TestWorkloadIDRoundTrip(t *testing.T) {
	id, err := identity.WorkloadID(td, "shop", "web")
	if err != nil {
		t.Fatal(err)
	}
	got, err := identity.ParseWorkloadID(id)
	if err != nil || got.Namespace != "shop" || got.Account != "web" || got.ID != id {
		t.Errorf("ParseWorkloadID(WorkloadID(shop, web)): got %+v, %v; want shop/web", got, err)
	}
}

func TestControlPlaneID(t *testing.T) {
	if got, want := identity.ControlPlaneID(td).String(), "spiffe://bulwark.test/bulwark/control"; got != want {
		t.Errorf("ControlPlaneID: got %q, want %q", got, want)
	}
	// No name can make a workload ID equal to it.
	if _, err := identity.ParseWorkloadID(identity.ControlPlaneID(td)); err == nil {
		t.Errorf("ParseWorkloadID(ControlPlaneID): got no error, want one")
	}
}

func TestServiceFromHost(t *testing.T) {
	tests := []struct {
		name     string
		host     string
		callerNS string
		want     identity.ServiceRef
		wantErr  bool
	}{
		{name: "bare_name_is_caller_namespace", host: "api", callerNS: "shop", want: identity.ServiceRef{Namespace: "shop", Name: "api"}},
		{name: "name_namespace", host: "api.default", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "svc", host: "api.default.svc", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "svc_cluster_local", host: "api.default.svc.cluster.local", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "with_port", host: "api.default:8080", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "bare_with_port", host: "api:80", callerNS: "shop", want: identity.ServiceRef{Namespace: "shop", Name: "api"}},
		{name: "cluster_local_with_port", host: "api.default.svc.cluster.local:443", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "empty_port", host: "api.default:", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "uppercase", host: "API.Default.SVC", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "trailing_dot", host: "api.default.svc.cluster.local.", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		{name: "trailing_dot_with_port", host: "api.default.:80", callerNS: "shop", want: identity.ServiceRef{Namespace: "default", Name: "api"}},
		// Found in the code: ".svc" is trimmed before the namespace is
		// looked for, so "api.svc" and "api.svc.cluster.local" name a
		// service of the caller's namespace.
		{name: "name_svc_is_caller_namespace", host: "api.svc", callerNS: "shop", want: identity.ServiceRef{Namespace: "shop", Name: "api"}},
		{name: "name_svc_cluster_local_is_caller_namespace", host: "api.svc.cluster.local", callerNS: "shop", want: identity.ServiceRef{Namespace: "shop", Name: "api"}},
		// Three labels that are not a known suffix: the namespace
		// would be "b.c", which is not a name.
		{name: "three_labels", host: "a.b.c", callerNS: "shop", wantErr: true},
		{name: "cluster_local_without_svc", host: "api.default.cluster.local", callerNS: "shop", wantErr: true},
		{name: "ipv4", host: "127.0.0.1", callerNS: "shop", wantErr: true},
		{name: "ipv4_with_port", host: "10.0.0.1:8080", callerNS: "shop", wantErr: true},
		{name: "ipv6", host: "::1", callerNS: "shop", wantErr: true},
		{name: "ipv6_bracketed_with_port", host: "[::1]:8080", callerNS: "shop", wantErr: true},
		{name: "ipv6_bracketed", host: "[fe80::1]", callerNS: "shop", wantErr: true},
		{name: "empty", host: "", callerNS: "shop", wantErr: true},
		{name: "port_only", host: ":8080", callerNS: "shop", wantErr: true},
		{name: "dot_only", host: ".", callerNS: "shop", wantErr: true},
		{name: "userinfo", host: "user@api.default", callerNS: "shop", wantErr: true},
		{name: "bare_name_without_caller_namespace", host: "api", callerNS: "", wantErr: true},
		{name: "underscore", host: "my_api.default", callerNS: "shop", wantErr: true},
		{name: "leading_dash", host: "-api.default", callerNS: "shop", wantErr: true},
		{name: "empty_label", host: "api..default", callerNS: "shop", wantErr: true},
		// A port must be a port: otherwise "user:pass@host" (userinfo)
		// is read as host "user", a different service than the one
		// every HTTP parser sees.
		{name: "userinfo_with_colon", host: "api.default:x@secret.default", callerNS: "shop", wantErr: true},
		{name: "non_numeric_port", host: "api.default:http", callerNS: "shop", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := identity.ServiceFromHost(tt.host, tt.callerNS)
			if tt.wantErr {
				if !errors.Is(err, identity.ErrNotAServiceHost) {
					t.Errorf("ServiceFromHost(%q, %q): got %v, %v; want ErrNotAServiceHost", tt.host, tt.callerNS, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ServiceFromHost(%q, %q): got %v, %v; want %v", tt.host, tt.callerNS, got, err, tt.want)
			}
		})
	}
}
