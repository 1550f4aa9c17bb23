package config_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// validMesh returns a minimal valid Mesh, before defaults: web (an example
// app, the entry) and api (a command).
func validMesh() *config.Mesh {
	return &config.Mesh{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindMesh},
		Metadata: config.ObjectMeta{Name: "shop"},
		Spec: config.MeshSpec{
			Entry: "web",
			Services: []config.MeshService{
				{Name: "web", Example: "web"},
				{Name: "api", Command: []string{"./api", "$(PORT)"}},
			},
		},
	}
}

func TestMeshValidateFillsDefaults(t *testing.T) {
	m := validMesh()
	if errs := m.Validate(); errs != nil {
		t.Fatalf("got errors %v, want none", errs)
	}
	want := &config.Mesh{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindMesh},
		Metadata: config.ObjectMeta{Name: "shop", Namespace: "default"},
		Spec: config.MeshSpec{
			TrustDomain: "bulwark.local",
			SVIDTTL:     "1h",
			Entry:       "default/web",
			Client:      "default/visitor",
			Services: []config.MeshService{
				{Name: "web", Namespace: "default", Account: "web", Example: "web", Replicas: 1},
				{Name: "api", Namespace: "default", Account: "api", Command: []string{"./api", "$(PORT)"}, Replicas: 1},
			},
		},
	}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("mesh mismatch (-want +got):\n%s", diff)
	}
	// Validate is idempotent: the filled-in form validates to itself.
	if errs := m.Validate(); errs != nil {
		t.Fatalf("second Validate: got errors %v, want none", errs)
	}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("second Validate changed the mesh (-want +got):\n%s", diff)
	}
}

func TestMeshValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m *config.Mesh)
		want   config.FieldErrors // nil: valid
	}{
		{"valid", func(*config.Mesh) {}, nil},
		{"missing-name", func(m *config.Mesh) { m.Metadata.Name = "" },
			config.FieldErrors{{Path: "metadata.name", Msg: "required"}}},
		{"trust-domain-custom", func(m *config.Mesh) { m.Spec.TrustDomain = "example.org" }, nil},
		{"trust-domain-invalid", func(m *config.Mesh) { m.Spec.TrustDomain = "Example.org" },
			config.FieldErrors{{Path: "spec.trustDomain", Msg: "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"}}},
		{"trust-domain-is-a-spiffe-id", func(m *config.Mesh) { m.Spec.TrustDomain = "spiffe://example.org/ns/a" },
			config.FieldErrors{{Path: "spec.trustDomain", Msg: `must be a trust domain name such as "example.org", not a SPIFFE ID`}}},
		{"svid-ttl-minimum", func(m *config.Mesh) { m.Spec.SVIDTTL = "1m" }, nil},
		{"svid-ttl-not-a-duration", func(m *config.Mesh) { m.Spec.SVIDTTL = "1 hour" },
			config.FieldErrors{{Path: "spec.svidTTL", Msg: `"1 hour" is not a duration such as "1h" or "30m"`}}},
		{"svid-ttl-too-short", func(m *config.Mesh) { m.Spec.SVIDTTL = "59s" },
			config.FieldErrors{{Path: "spec.svidTTL", Msg: `must be at least 1m, got "59s"`}}},
		{"svid-ttl-negative", func(m *config.Mesh) { m.Spec.SVIDTTL = "-1h" },
			config.FieldErrors{{Path: "spec.svidTTL", Msg: `must be at least 1m, got "-1h"`}}},
		{"missing-entry", func(m *config.Mesh) { m.Spec.Entry = "" },
			config.FieldErrors{{Path: "spec.entry", Msg: "required"}}},
		{"entry-with-namespace", func(m *config.Mesh) { m.Spec.Entry = "default/web" }, nil},
		{"entry-invalid", func(m *config.Mesh) { m.Spec.Entry = "Web" },
			config.FieldErrors{{Path: "spec.entry", Msg: `service "Web": name "Web" must consist of lowercase letters, digits and '-', and start and end with a letter or digit`}}},
		{"entry-not-a-service", func(m *config.Mesh) { m.Spec.Entry = "db" },
			config.FieldErrors{{Path: "spec.entry", Msg: "service default/db is not in spec.services"}}},
		{"client-custom", func(m *config.Mesh) { m.Spec.Client = "ops/browser" }, nil},
		{"client-invalid", func(m *config.Mesh) { m.Spec.Client = "default/" },
			config.FieldErrors{{Path: "spec.client", Msg: `service "default/": name must not be empty`}}},
		{"client-is-a-service", func(m *config.Mesh) { m.Spec.Client = "api" },
			config.FieldErrors{{Path: "spec.client", Msg: "default/api is spec.services[1]: the client needs a name of its own"}}},
		{"client-is-an-account", func(m *config.Mesh) { m.Spec.Services[1].Account = "visitor" },
			config.FieldErrors{{Path: "spec.client", Msg: "default/visitor is the identity of spec.services[1] (its account): the client needs an identity of its own"}}},
		{"no-services", func(m *config.Mesh) { m.Spec.Services = nil },
			config.FieldErrors{{Path: "spec.services", Msg: "at least one service is required"}}},
		{"service-missing-name", func(m *config.Mesh) { m.Spec.Services[1].Name = "" },
			config.FieldErrors{{Path: "spec.services[1].name", Msg: "required"}}},
		{"service-invalid-name", func(m *config.Mesh) { m.Spec.Services[1].Name = "API" },
			config.FieldErrors{{Path: "spec.services[1].name", Msg: `"API" must consist of lowercase letters, digits and '-', and start and end with a letter or digit`}}},
		{"service-invalid-namespace", func(m *config.Mesh) { m.Spec.Services[1].Namespace = "-shop" },
			config.FieldErrors{{Path: "spec.services[1].namespace", Msg: `"-shop" must consist of lowercase letters, digits and '-', and start and end with a letter or digit`}}},
		{"service-invalid-account", func(m *config.Mesh) { m.Spec.Services[1].Account = "api_sa" },
			config.FieldErrors{{Path: "spec.services[1].account", Msg: `"api_sa" must consist of lowercase letters, digits and '-', and start and end with a letter or digit`}}},
		{"service-same-name-other-namespace", func(m *config.Mesh) { m.Spec.Services[1].Name, m.Spec.Services[1].Namespace = "web", "shop" }, nil},
		{"service-duplicate", func(m *config.Mesh) { m.Spec.Services[1].Name, m.Spec.Services[1].Namespace = "web", "default" },
			config.FieldErrors{{Path: "spec.services[1].name", Msg: "duplicate service default/web (also spec.services[0]; give each a different labels.version to run versions side by side)"}}},
		{"service-two-versions", func(m *config.Mesh) {
			m.Spec.Services[1].Name, m.Spec.Services[1].Namespace = "web", "default"
			m.Spec.Services[0].Labels = map[string]string{"version": "v1"}
			m.Spec.Services[1].Labels = map[string]string{"version": "v2"}
		}, nil},
		{"service-same-version-twice", func(m *config.Mesh) {
			m.Spec.Services[1].Name, m.Spec.Services[1].Namespace = "web", "default"
			m.Spec.Services[0].Labels = map[string]string{"version": "v2"}
			m.Spec.Services[1].Labels = map[string]string{"version": "v2"}
		}, config.FieldErrors{{Path: "spec.services[1].name", Msg: "duplicate service default/web version v2 (also spec.services[0])"}}},
		{"service-shared-account", func(m *config.Mesh) { m.Spec.Services[1].Account = "web" }, nil},
		{"example-and-command", func(m *config.Mesh) { m.Spec.Services[1].Example = "api" },
			config.FieldErrors{{Path: "spec.services[1].command", Msg: "cannot be used with example: set exactly one of example and command"}}},
		{"neither-example-nor-command", func(m *config.Mesh) { m.Spec.Services[1].Command = nil },
			config.FieldErrors{{Path: "spec.services[1]", Msg: "exactly one of example and command is required"}}},
		{"empty-command-list", func(m *config.Mesh) { m.Spec.Services[1].Command = []string{} },
			config.FieldErrors{{Path: "spec.services[1]", Msg: "exactly one of example and command is required"}}},
		{"empty-program", func(m *config.Mesh) { m.Spec.Services[1].Command = []string{" ", "x"} },
			config.FieldErrors{{Path: "spec.services[1].command[0]", Msg: "the program must not be empty"}}},
		{"nul-in-argument", func(m *config.Mesh) { m.Spec.Services[1].Command = []string{"./api", "a\x00b"} },
			config.FieldErrors{{Path: "spec.services[1].command[1]", Msg: "must not contain a NUL byte"}}},
		{"port-maximum", func(m *config.Mesh) { m.Spec.Services[1].Port = 65535 }, nil},
		{"port-negative", func(m *config.Mesh) { m.Spec.Services[1].Port = -1 },
			config.FieldErrors{{Path: "spec.services[1].port", Msg: "must be between 0 and 65535 (0 picks a free port), got -1"}}},
		{"port-too-large", func(m *config.Mesh) { m.Spec.Services[1].Port = 65536 },
			config.FieldErrors{{Path: "spec.services[1].port", Msg: "must be between 0 and 65535 (0 picks a free port), got 65536"}}},
		{"port-shared", func(m *config.Mesh) { m.Spec.Services[0].Port, m.Spec.Services[1].Port = 8080, 8080 },
			config.FieldErrors{{Path: "spec.services[1].port", Msg: "8080 is also the port of spec.services[0]"}}},
		{"port-fixed-with-replicas", func(m *config.Mesh) { m.Spec.Services[1].Port, m.Spec.Services[1].Replicas = 8080, 2 },
			config.FieldErrors{{Path: "spec.services[1].port", Msg: "a fixed port allows one replica only, got replicas 2: leave port out to pick free ports"}}},
		{"replicas-maximum", func(m *config.Mesh) { m.Spec.Services[1].Replicas = 20 }, nil},
		{"replicas-negative", func(m *config.Mesh) { m.Spec.Services[1].Replicas = -1 },
			config.FieldErrors{{Path: "spec.services[1].replicas", Msg: "must be between 1 and 20, got -1"}}},
		{"replicas-too-many", func(m *config.Mesh) { m.Spec.Services[1].Replicas = 21 },
			config.FieldErrors{{Path: "spec.services[1].replicas", Msg: "must be between 1 and 20, got 21"}}},
		{"env-valid", func(m *config.Mesh) {
			m.Spec.Services[1].Env = map[string]string{"_X": "", "log_level": "debug", "A1": "1"}
		}, nil},
		{"env-bad-keys", func(m *config.Mesh) { m.Spec.Services[1].Env = map[string]string{"9A": "x", "A-B": "y", "": "z"} },
			config.FieldErrors{
				{Path: `spec.services[1].env[""]`, Msg: "invalid variable name: must match [A-Za-z_][A-Za-z0-9_]*"},
				{Path: "spec.services[1].env.9A", Msg: "invalid variable name: must match [A-Za-z_][A-Za-z0-9_]*"},
				{Path: "spec.services[1].env.A-B", Msg: "invalid variable name: must match [A-Za-z_][A-Za-z0-9_]*"},
			}},
		{"env-reserved-keys", func(m *config.Mesh) {
			m.Spec.Services[1].Env = map[string]string{"PORT": "1", "HTTP_PROXY": "x", "BULWARK_SERVICE": "y"}
		}, config.FieldErrors{
			{Path: "spec.services[1].env.BULWARK_SERVICE", Msg: "is set by bulwark up and cannot be overridden"},
			{Path: "spec.services[1].env.HTTP_PROXY", Msg: "is set by bulwark up and cannot be overridden"},
			{Path: "spec.services[1].env.PORT", Msg: "is set by bulwark up and cannot be overridden"},
		}},
		{"env-nul-value", func(m *config.Mesh) { m.Spec.Services[1].Env = map[string]string{"A": "x\x00"} },
			config.FieldErrors{{Path: "spec.services[1].env.A", Msg: "must not contain a NUL byte"}}},
		{"every-error-at-once", func(m *config.Mesh) {
			m.Metadata.Name = ""
			m.Spec.SVIDTTL = "1s"
			m.Spec.Entry = "db"
			m.Spec.Services[1].Replicas = 99
		}, config.FieldErrors{
			{Path: "metadata.name", Msg: "required"},
			{Path: "spec.svidTTL", Msg: `must be at least 1m, got "1s"`},
			{Path: "spec.entry", Msg: "service default/db is not in spec.services"},
			{Path: "spec.services[1].replicas", Msg: "must be between 1 and 20, got 99"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validMesh()
			tt.mutate(m)
			got := m.Validate()
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
