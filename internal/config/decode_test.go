package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// readFixture returns the content of testdata/name.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testName turns a fixture's file name into a subtest name that -run
// matches without quoting: "duplicate-key.json" -> "duplicate-key-json".
func testName(file string) string {
	return strings.NewReplacer(".yaml", "", ".json", "-json").Replace(file)
}

// docErr is the comparable form of a *config.DocumentError.
type docErr struct {
	Index     int
	Kind, Ref string
	Msg       string
}

// docErrs flattens an error of Decode.
func docErrs(t *testing.T, err error) []docErr {
	t.Helper()
	var des config.DocumentErrors
	if !errors.As(err, &des) {
		t.Fatalf("got error %T %q, want config.DocumentErrors", err, err)
	}
	var out []docErr
	for _, de := range des {
		out = append(out, docErr{Index: de.Index, Kind: de.Kind, Ref: de.Ref, Msg: de.Err.Error()})
	}
	return out
}

func policy(ns, name string, spec config.AuthorizationPolicySpec) *config.AuthorizationPolicy {
	return &config.AuthorizationPolicy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindAuthorizationPolicy},
		Metadata: config.ObjectMeta{Name: name, Namespace: ns},
		Spec:     spec,
	}
}

func TestDecodeAcceptsValidFixtures(t *testing.T) {
	webToAPI := policy("default", "web-to-api", config.AuthorizationPolicySpec{
		Selector: config.PolicySelector{Service: "api"},
		Action:   config.ActionAllow,
		Rules: []config.Rule{{
			From: &config.Source{Services: []string{"default/web"}},
			To:   &config.Operation{Methods: []string{"GET", "POST"}, Paths: []string{"/api/*"}},
		}},
	})
	webToAPI.Metadata.Labels = map[string]string{"app.kubernetes.io/part-of": "shop"}
	shop := &config.Mesh{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindMesh},
		Metadata: config.ObjectMeta{Name: "shop", Namespace: "default"},
		Spec: config.MeshSpec{
			TrustDomain: "bulwark.local",
			SVIDTTL:     "1h",
			Entry:       "default/web",
			Client:      "default/visitor",
			Services: []config.MeshService{
				{Name: "web", Namespace: "default", Account: "web", Example: "web", Env: map[string]string{"GREETING": "hello"}, Replicas: 1},
				{Name: "api", Namespace: "shop", Account: "api-sa", Command: []string{"./api", "--port", "$(PORT)"}, Port: 8081, Replicas: 1},
			},
		},
	}
	visitorToWeb := policy("default", "visitor-to-web", config.AuthorizationPolicySpec{
		Selector: config.PolicySelector{Service: "web"},
		Action:   config.ActionAllow,
		Rules: []config.Rule{{
			From: &config.Source{Services: []string{"default/visitor"}},
			To:   &config.Operation{Methods: []string{"GET"}},
		}},
	})
	listed := policy("default", "web-to-api", config.AuthorizationPolicySpec{
		Selector: config.PolicySelector{Service: "api"},
		Action:   config.ActionAllow,
		Rules:    []config.Rule{{From: &config.Source{Services: []string{"default/web"}}}},
	})
	listed.Metadata.ResourceVersion = "42"
	listed.Metadata.CreationTimestamp = "2026-01-02T03:04:05Z"
	denyAdmin := policy("default", "deny-admin", config.AuthorizationPolicySpec{
		Action: config.ActionDeny,
		Rules:  []config.Rule{{To: &config.Operation{Paths: []string{"/admin/*"}}}},
	})
	trailingComma := policy("default", "web-to-api", config.AuthorizationPolicySpec{
		Action: config.ActionAllow,
		Rules:  []config.Rule{{To: &config.Operation{Methods: []string{"GET"}}}},
	})

	tests := []struct {
		file string
		want []config.Object
	}{
		{"valid-multi-doc.yaml", []config.Object{webToAPI, shop}},
		{"valid-policy.json", []config.Object{visitorToWeb}},
		{"valid-list.yaml", []config.Object{listed, denyAdmin}},
		// JSON that is not valid JSON but valid YAML (its flow style) is
		// read as YAML, as kubectl does.
		{"trailing-comma-is-yaml.json", []config.Object{trailingComma}},
	}
	for _, tt := range tests {
		t.Run(testName(tt.file), func(t *testing.T) {
			got, err := config.Decode(readFixture(t, tt.file))
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("objects mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRejectsDefectiveFixtures(t *testing.T) {
	const ap = config.KindAuthorizationPolicy
	tests := []struct {
		file string
		want []docErr
	}{
		{"unknown-field.yaml", []docErr{{1, ap, "default/web-to-api", "spec.rules[0].to.methodz: unknown field"}}},
		{"unknown-fields-several.yaml", []docErr{{1, ap, "default/web-to-api",
			"metadata.labelz: unknown field; spec.rules[1].from.servicez: unknown field; status: unknown field"}}},
		{"case-mismatch-key.yaml", []docErr{{1, ap, "", "Metadata: unknown field"}}},
		{"duplicate-key.yaml", []docErr{{1, "", "", `yaml: line 5: duplicate key "name"`}}},
		{"duplicate-key.json", []docErr{{1, "", "", `json: line 5: duplicate key "methods" in spec.rules[0].to`}}},
		{"bad-api-version.yaml", []docErr{{1, ap, "", `apiVersion: unsupported version "bulwark.dev/v1" (supported: bulwark.dev/v1alpha1)`}}},
		{"missing-api-version.yaml", []docErr{{1, ap, "", "apiVersion: required (supported: bulwark.dev/v1alpha1)"}}},
		{"unknown-kind.yaml", []docErr{{1, "", "", `kind: unknown kind "Foo" (known: AuthorizationPolicy, JWTProvider, Mesh, Role, RoleBinding, TrafficPolicy, Route, ExternalService, AlertRule, Gateway, Secret)`}}},
		{"missing-kind.yaml", []docErr{{1, "", "", "kind: required"}}},
		{"kind-not-a-string.yaml", []docErr{{1, "", "", "kind: expected a string, got a list"}}},
		{"wrong-type.yaml", []docErr{{1, ap, "default/web-to-api", "spec.rules[0].to.methods: expected a list of strings, got a string"}}},
		{"wrong-type-port-string.yaml", []docErr{{1, config.KindMesh, "default/shop",
			"spec.services[0].port: expected an integer, got a string; spec.services[0].replicas: expected an integer, got 1.5"}}},
		// The line is the line of the stream, not of the document.
		{"syntax-error.yaml", []docErr{{2, "", "", "yaml: line 14: mapping values are not allowed in this context"}}},
		{"syntax-error.json", []docErr{{1, "", "", "json: line 4: invalid character '\"' after object value (expecting ',' or '}')"}}},
		{"second-doc-invalid.yaml", []docErr{{2, ap, "default/api-to-db", "spec.rules[0].from.service: unknown field"}}},
		{"not-a-mapping.yaml", []docErr{{1, "", "", "expected a mapping, got a list"}}},
		{"read-only-kind.yaml", []docErr{{1, config.KindProxy, "default/web-1", "kind: Proxy is read-only: proxies register themselves"}}},
		{"bad-separator.yaml", []docErr{{2, "", "", `line 9: content after the document separator "---" is not supported: put it on the next line`}}},
		{"list-item-unknown-field.yaml", []docErr{{1, ap, "default/api-to-db", "items[1].spec.rules[0].to.methodz: unknown field"}}},
		{"list-in-list.yaml", []docErr{{1, "", "", "items[0].kind: a List is not allowed here"}}},
		{"mesh-missing-entry.yaml", []docErr{{1, config.KindMesh, "default/shop", "spec.entry: required"}}},
		{"mesh-entry-not-a-service.yaml", []docErr{{1, config.KindMesh, "default/shop", "spec.entry: service shop/web is not in spec.services"}}},
		{"mesh-client-is-a-service.yaml", []docErr{{1, config.KindMesh, "default/shop",
			"spec.client: default/api is spec.services[1]: the client needs a name of its own"}}},
		{"mesh-duplicate-service.yaml", []docErr{{1, config.KindMesh, "default/shop",
			"spec.services[2].name: duplicate service default/web (also spec.services[0]; give each a different labels.version to run versions side by side)"}}},
		{"mesh-replicas-out-of-range.yaml", []docErr{{1, config.KindMesh, "default/shop",
			"spec.services[2].replicas: must be between 1 and 20, got 21"}}},
		{"mesh-example-and-command.yaml", []docErr{{1, config.KindMesh, "default/shop",
			"spec.services[0].command: cannot be used with example: set exactly one of example and command"}}},
		{"mesh-short-svid-ttl.yaml", []docErr{{1, config.KindMesh, "default/shop", `spec.svidTTL: must be at least 1m, got "30s"`}}},
		{"mesh-bad-env-key.yaml", []docErr{{1, config.KindMesh, "default/shop",
			"spec.services[0].env.1ST: invalid variable name: must match [A-Za-z_][A-Za-z0-9_]*; " +
				`spec.services[0].env["app.mode"]: invalid variable name: must match [A-Za-z_][A-Za-z0-9_]*`}}},
	}
	for _, tt := range tests {
		t.Run(testName(tt.file), func(t *testing.T) {
			got, err := config.Decode(readFixture(t, tt.file))
			if got != nil {
				t.Errorf("got %d objects, want none", len(got))
			}
			if err == nil {
				t.Fatal("got nil error, want an error")
			}
			if diff := cmp.Diff(tt.want, docErrs(t, err)); diff != "" {
				t.Errorf("errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeErrorText(t *testing.T) {
	_, err := config.Decode(readFixture(t, "second-doc-invalid.yaml"))
	const want = "document 2 (AuthorizationPolicy default/api-to-db): spec.rules[0].from.service: unknown field"
	if err == nil || err.Error() != want {
		t.Errorf("got error %v, want %q", err, want)
	}
}

func TestDecodeReportsEveryDocument(t *testing.T) {
	stream := string(readFixture(t, "unknown-field.yaml")) + "---\n" +
		string(readFixture(t, "valid-policy.json")) + "---\n" +
		string(readFixture(t, "unknown-kind.yaml"))
	_, err := config.Decode([]byte(stream))
	want := []docErr{
		{1, config.KindAuthorizationPolicy, "default/web-to-api", "spec.rules[0].to.methodz: unknown field"},
		{3, "", "", `kind: unknown kind "Foo" (known: AuthorizationPolicy, JWTProvider, Mesh, Role, RoleBinding, TrafficPolicy, Route, ExternalService, AlertRule, Gateway, Secret)`},
	}
	if diff := cmp.Diff(want, docErrs(t, err)); diff != "" {
		t.Errorf("errors mismatch (-want +got):\n%s", diff)
	}
}

func TestDecodeStopsAfterTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: bulwark.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n")
	for i := range 30 {
		b.WriteString("x" + strings.Repeat("y", i) + ": 1\n")
	}
	_, err := config.Decode([]byte(b.String()))
	got := docErrs(t, err)
	if len(got) != 1 {
		t.Fatalf("got %d document errors, want 1", len(got))
	}
	if n := strings.Count(got[0].Msg, "unknown field"); n != 20 {
		t.Errorf("got %d unknown fields reported, want 20", n)
	}
	if !strings.HasSuffix(got[0].Msg, "; too many errors") {
		t.Errorf("got %q, want it to end with %q", got[0].Msg, "; too many errors")
	}
}

func TestDecodeEmptyStream(t *testing.T) {
	tests := []struct {
		name, data string
	}{
		{"nothing", ""},
		{"blank-lines", "\n  \n\n"},
		{"separators", "---\n---\n"},
		{"comments", "# one\n---\n  # two\n---\n"},
		{"byte-order-mark", "\xef\xbb\xbf---\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Decode([]byte(tt.data))
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if got == nil || len(got) != 0 {
				t.Errorf("got %#v, want an empty slice", got)
			}
		})
	}
}

func TestDecodeSeparators(t *testing.T) {
	const doc = "apiVersion: bulwark.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: p%s\nspec:\n  rules:\n  - to:\n      methods: [GET]\n"
	one := strings.Replace(doc, "%s", "1", 1)
	two := strings.Replace(doc, "%s", "2", 1)
	tests := []struct {
		name, data string
	}{
		{"plain", one + "---\n" + two},
		{"trailing-blanks", one + "---  \t\n" + two},
		{"comment", one + "--- # next\n" + two},
		{"crlf", strings.ReplaceAll(one+"---\n"+two, "\n", "\r\n")},
		{"no-final-newline", one + "---\n" + strings.TrimSuffix(two, "\n")},
		{"leading-and-trailing", "---\n" + one + "---\n" + two + "---\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Decode([]byte(tt.data))
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			var names []string
			for _, o := range got {
				names = append(names, o.GetMetadata().Name)
			}
			if diff := cmp.Diff([]string{"p1", "p2"}, names); diff != "" {
				t.Errorf("names mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeObject(t *testing.T) {
	valid := readFixture(t, "valid-policy.json")
	tests := []struct {
		name    string
		data    []byte
		wantErr string // "" for success
		wantRef string
	}{
		{name: "json", data: valid, wantRef: "default/visitor-to-web"},
		{name: "yaml", data: []byte("# leading comment\n---\napiVersion: bulwark.dev/v1alpha1\nkind: AuthorizationPolicy\n" +
			"metadata:\n  name: p\nspec:\n  rules:\n  - to:\n      methods: [GET]\n"), wantRef: "default/p"},
		{name: "empty", data: []byte("---\n# nothing\n"), wantErr: "document 1: empty document"},
		{name: "two-documents", data: readFixture(t, "second-doc-invalid.yaml"), wantErr: "document 2: expected one document, got 2"},
		{name: "list", data: readFixture(t, "valid-list.yaml"), wantErr: "document 1: kind: a List is not allowed here"},
		{name: "unknown-field", data: readFixture(t, "unknown-field.yaml"),
			wantErr: "document 1 (AuthorizationPolicy default/web-to-api): spec.rules[0].to.methodz: unknown field"},
		{name: "read-only", data: readFixture(t, "read-only-kind.yaml"),
			wantErr: "document 1 (Proxy default/web-1): kind: Proxy is read-only: proxies register themselves"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.DecodeObject(tt.data)
			if tt.wantErr != "" {
				var de *config.DocumentError
				if !errors.As(err, &de) {
					t.Fatalf("got error %T %v, want a *config.DocumentError", err, err)
				}
				if err.Error() != tt.wantErr {
					t.Errorf("got error %q, want %q", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("got object %v, want nil", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if ref := config.Ref(got); ref != tt.wantRef {
				t.Errorf("got ref %q, want %q", ref, tt.wantRef)
			}
		})
	}
}

func TestIsReadOnly(t *testing.T) {
	tests := []struct {
		kind string
		want bool
	}{
		{config.KindAuthorizationPolicy, false},
		{config.KindMesh, false},
		{config.KindProxy, true},
		{config.KindService, true},
		{config.KindList, false},
		{"proxy", false},
		{"", false},
	}
	for _, tt := range tests {
		name := tt.kind
		if name == "" {
			name = "empty"
		}
		t.Run(name, func(t *testing.T) {
			if got := config.IsReadOnly(tt.kind); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// decodeAll decodes the valid fixtures into one slice.
func decodeAll(t *testing.T) []config.Object {
	t.Helper()
	var all []config.Object
	for _, f := range []string{"valid-multi-doc.yaml", "valid-policy.json", "valid-list.yaml"} {
		objs, err := config.Decode(readFixture(t, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		all = append(all, objs...)
	}
	return all
}

func TestRoundTrip(t *testing.T) {
	objs := decodeAll(t)
	// What the control plane adds, and `bulwark get` prints.
	objs[0].GetMetadata().ResourceVersion = "7"
	objs[0].GetMetadata().CreationTimestamp = "2026-03-04T05:06:07Z"

	for _, o := range objs {
		t.Run(o.GetTypeMeta().Kind+"-"+o.GetMetadata().Name, func(t *testing.T) {
			j, err := config.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			fromJSON, err := config.DecodeObject(j)
			if err != nil {
				t.Fatalf("decode JSON: %v\n%s", err, j)
			}
			if diff := cmp.Diff(o, fromJSON); diff != "" {
				t.Errorf("JSON round trip mismatch (-want +got):\n%s", diff)
			}
			y, err := config.MarshalYAML(o)
			if err != nil {
				t.Fatal(err)
			}
			fromYAML, err := config.Decode(y)
			if err != nil {
				t.Fatalf("decode YAML: %v\n%s", err, y)
			}
			if diff := cmp.Diff([]config.Object{o}, fromYAML); diff != "" {
				t.Errorf("YAML round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestListRoundTrip(t *testing.T) {
	objs := decodeAll(t)
	for _, asYAML := range []bool{false, true} {
		name := "json"
		if asYAML {
			name = "yaml"
		}
		t.Run(name, func(t *testing.T) {
			b, err := config.MarshalList(objs, asYAML)
			if err != nil {
				t.Fatal(err)
			}
			got, err := config.UnmarshalList(b)
			if err != nil {
				t.Fatalf("unmarshal: %v\n%s", err, b)
			}
			if diff := cmp.Diff(objs, got); diff != "" {
				t.Errorf("UnmarshalList mismatch (-want +got):\n%s", diff)
			}
			// `bulwark get -o yaml > f; bulwark apply -f f`.
			got, err = config.Decode(b)
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, b)
			}
			if diff := cmp.Diff(objs, got); diff != "" {
				t.Errorf("Decode mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarshalOutput(t *testing.T) {
	p := policy("default", "web-to-api", config.AuthorizationPolicySpec{
		Action: config.ActionAllow,
		Rules:  []config.Rule{{To: &config.Operation{Methods: []string{"GET"}}}},
	})
	p.Metadata.Labels = map[string]string{"b": "2", "a": "1", "c": "3"}

	tests := []struct {
		name string
		got  func() ([]byte, error)
		want string
	}{
		{"json", func() ([]byte, error) { return config.Marshal(p) },
			`{"apiVersion":"bulwark.dev/v1alpha1","kind":"AuthorizationPolicy","metadata":{"name":"web-to-api","namespace":"default","labels":{"a":"1","b":"2","c":"3"}},"spec":{"action":"ALLOW","rules":[{"to":{"methods":["GET"]}}]}}`},
		{"yaml", func() ([]byte, error) { return config.MarshalYAML(p) }, `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  labels:
    a: "1"
    b: "2"
    c: "3"
  name: web-to-api
  namespace: default
spec:
  action: ALLOW
  rules:
  - to:
      methods:
      - GET
`},
		{"empty-list", func() ([]byte, error) { return config.MarshalList(nil, false) },
			`{"apiVersion":"bulwark.dev/v1alpha1","kind":"List","items":[]}`},
		{"empty-list-yaml", func() ([]byte, error) { return config.MarshalList(nil, true) },
			"apiVersion: bulwark.dev/v1alpha1\nitems: []\nkind: List\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 { // map order must not leak into the output
				got, err := tt.got()
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, string(got)); diff != "" {
					t.Fatalf("output mismatch (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestMarshalRejectsWrongTypeMeta(t *testing.T) {
	tests := []struct {
		name string
		obj  config.Object
		want string
	}{
		{"missing", &config.AuthorizationPolicy{},
			`marshal: *config.AuthorizationPolicy has apiVersion "" and kind "", want "bulwark.dev/v1alpha1" and "AuthorizationPolicy"`},
		{"wrong-kind", &config.Mesh{TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindProxy}},
			`marshal: *config.Mesh has apiVersion "bulwark.dev/v1alpha1" and kind "Proxy", want "bulwark.dev/v1alpha1" and "Mesh"`},
		{"nil", nil, "marshal: nil object"},
		{"nil-pointer", (*config.Proxy)(nil), "marshal: nil object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Marshal(tt.obj)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Marshal: got error %v, want %q", err, tt.want)
			}
			_, err = config.MarshalList([]config.Object{tt.obj}, false)
			if want := "marshal list: items[0]: " + strings.TrimPrefix(tt.want, "marshal: "); err == nil || err.Error() != want {
				t.Errorf("MarshalList: got error %v, want %q", err, want)
			}
		})
	}
}

func TestUnmarshalListReadsReadOnlyKinds(t *testing.T) {
	const data = `{"apiVersion":"bulwark.dev/v1alpha1","kind":"List","items":[
{"apiVersion":"bulwark.dev/v1alpha1","kind":"Proxy","metadata":{"name":"web-1","namespace":"default"},"status":{"identity":"spiffe://bulwark.local/ns/default/sa/web","service":"default/web","address":"127.0.0.1:15006","connected":true,"snapshotVersion":3}},
{"apiVersion":"bulwark.dev/v1alpha1","kind":"Service","metadata":{"name":"web","namespace":"default"},"status":{"identities":["spiffe://bulwark.local/ns/default/sa/web"],"endpoints":["127.0.0.1:15006"],"ready":1}}]}`
	want := []config.Object{
		&config.Proxy{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindProxy},
			Metadata: config.ObjectMeta{Name: "web-1", Namespace: "default"},
			Status: config.ProxyStatus{Identity: "spiffe://bulwark.local/ns/default/sa/web", Service: "default/web",
				Address: "127.0.0.1:15006", Connected: true, SnapshotVersion: 3},
		},
		&config.Service{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindService},
			Metadata: config.ObjectMeta{Name: "web", Namespace: "default"},
			Status: config.ServiceStatus{Identities: []string{"spiffe://bulwark.local/ns/default/sa/web"},
				Endpoints: []string{"127.0.0.1:15006"}, Ready: 1},
		},
	}
	got, err := config.UnmarshalList([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestUnmarshalListRejects(t *testing.T) {
	const (
		head = `{"apiVersion":"bulwark.dev/v1alpha1","kind":"List","items":[`
		item = `{"apiVersion":"bulwark.dev/v1alpha1","kind":"Proxy","metadata":{"name":"p"},"status":{}}`
	)
	tests := []struct {
		name, data, want string
	}{
		{"not-a-list", item, `unmarshal list: kind: got "Proxy", want "List"`},
		{"bad-api-version", `{"apiVersion":"v1","kind":"List","items":[]}`,
			`unmarshal list: apiVersion: unsupported version "v1" (supported: bulwark.dev/v1alpha1)`},
		{"unknown-list-field", `{"apiVersion":"bulwark.dev/v1alpha1","kind":"List","items":[],"metadata":{}}`,
			"unmarshal list: metadata: unknown field"},
		{"items-not-a-list", `{"apiVersion":"bulwark.dev/v1alpha1","kind":"List","items":{}}`,
			"unmarshal list: items: expected a list of values, got a mapping"},
		{"unknown-item-kind", head + `{"apiVersion":"bulwark.dev/v1alpha1","kind":"Foo"}]}`,
			`unmarshal list: items[0].kind: unknown kind "Foo" (known: AuthorizationPolicy, JWTProvider, Mesh, Role, RoleBinding, TrafficPolicy, Route, ExternalService, AlertRule, Gateway, Secret, Proxy, Service, Denial, Edge, Alert)`},
		{"unknown-item-field", head + item + `,{"apiVersion":"bulwark.dev/v1alpha1","kind":"Proxy","metadata":{"name":"q"},"status":{"conected":true}}]}`,
			"unmarshal list: items[1].status.conected: unknown field"},
		{"item-not-a-mapping", head + `"x"]}`, "unmarshal list: items[0]: expected a mapping, got a string"},
		{"two-documents", head + "]}\n---\n" + head + "]}", "unmarshal list: expected one document, got 2"},
		{"empty", "", "unmarshal list: expected one document, got 0"},
		{"syntax-error", head + "]", "unmarshal list: json: line 1: unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.UnmarshalList([]byte(tt.data))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got error %v, want %q", err, tt.want)
			}
			if got != nil {
				t.Errorf("got %d objects, want none", len(got))
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		f.Add(readFixture(f, filepath.Base(file)))
	}
	f.Add([]byte("---\n--- # x\n{}\n---\n[]\n---\nnull\n---\n\"s\"\n---\n- a\n"))
	f.Add([]byte(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"Mesh","metadata":{"name":"m"},"spec":{"entry":"a","services":[{"name":"a","example":"a","env":{"K":"v"}}]}}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := config.Decode(data)
		if err != nil {
			if objs != nil {
				t.Fatalf("got %d objects with error %v, want none", len(objs), err)
			}
			var des config.DocumentErrors
			if !errors.As(err, &des) || len(des) == 0 {
				t.Fatalf("got error %T %v, want non-empty config.DocumentErrors", err, err)
			}
			for _, de := range des {
				if de.Index < 1 || de.Err == nil || de.Error() == "" {
					t.Fatalf("got malformed document error %#v", de)
				}
			}
			return
		}
		// What Decode accepts survives the trip through the store (JSON)
		// and through `bulwark get -o yaml` unchanged.
		for _, o := range objs {
			j, err := config.Marshal(o)
			if err != nil {
				t.Fatalf("marshal %v: %v", o, err)
			}
			back, err := config.DecodeObject(j)
			if err != nil {
				t.Fatalf("decode marshaled %s: %v", j, err)
			}
			if diff := cmp.Diff(o, back); diff != "" {
				t.Fatalf("JSON round trip mismatch (-want +got):\n%s", diff)
			}
			y, err := config.MarshalYAML(o)
			if err != nil {
				t.Fatalf("marshal YAML %v: %v", o, err)
			}
			backs, err := config.Decode(y)
			if err != nil {
				t.Fatalf("decode marshaled %s: %v", y, err)
			}
			if diff := cmp.Diff([]config.Object{o}, backs); diff != "" {
				t.Fatalf("YAML round trip mismatch (-want +got):\n%s", diff)
			}
		}
	})
}

func TestMarshalYAMLKeepsEveryString(t *testing.T) {
	tests := []struct {
		name     string
		value    string
		wantJSON bool // the YAML emitter cannot carry it: JSON is printed
	}{
		{"yaml-1-1-boolean", "yes", false},
		{"short-boolean", "y", false},
		{"null-word", "null", false},
		{"tilde", "~", false},
		{"hex-number", "0x10", false},
		{"float-word", ".inf", false},
		{"date", "2001-12-14", false},
		{"empty", "", false},
		{"document-marker", "---", false},
		{"mapping-like", "a: b", false},
		{"comment-like", "a #b", false},
		{"sequence-like", "- a", false},
		{"anchor-like", "&a", false},
		{"quotes", `'"`, false},
		{"newlines", "a\nb\r\n", false},
		{"surrounding-blanks", " a\t", false},
		{"line-separator", "a\u2028b", false},
		{"byte-order-mark", "\ufeffx", false},
		{"control-character", "\x01", false},
		{"emoji", "😀", false},
		{"delete-character", "a\x7fb", true},
		{"next-line-character", "a\u0085b", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy("default", "p", config.AuthorizationPolicySpec{
				Action: config.ActionAllow,
				Rules:  []config.Rule{{To: &config.Operation{Methods: []string{"GET"}}}},
			})
			p.Metadata.Labels = map[string]string{"k": tt.value}
			y, err := config.MarshalYAML(p)
			if err != nil {
				t.Fatal(err)
			}
			if gotJSON := y[0] == '{'; gotJSON != tt.wantJSON {
				t.Errorf("got JSON output %v, want %v:\n%s", gotJSON, tt.wantJSON, y)
			}
			got, err := config.Decode(y)
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, y)
			}
			if diff := cmp.Diff([]config.Object{p}, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s\n%s", diff, y)
			}
		})
	}
}

// TestDecodeNonFiniteNumber: a YAML number JSON cannot hold (.inf, .nan)
// is refused with the field's path and line, wherever it is and whatever
// the document's form.
func TestDecodeNonFiniteNumber(t *testing.T) {
	const rule = "apiVersion: bulwark.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: r, namespace: default}\nspec:\n  detector: DenialSpike\n"
	for _, c := range []struct {
		name, doc, want string
	}{
		{"factor_inf", rule + "  denialSpike: {factor: .inf}\n", "spec.denialSpike.factor: .inf (line 6) is not a finite number"},
		{"factor_minus_inf", rule + "  denialSpike:\n    factor: -.Inf\n", "spec.denialSpike.factor: -.Inf (line 7) is not a finite number"},
		{"factor_nan", rule + "  denialSpike: {factor: .nan}\n", "spec.denialSpike.factor: .nan (line 6) is not a finite number"},
		{"in_a_list", rule + "  webhooks: [{url: 'https://example.com/h', timeout: .NaN}]\n", "spec.webhooks[0].timeout: .NaN (line 6) is not a finite number"},
		{"second_document", "---\n" + rule + "  denialSpike: {factor: 2}\n---\n" + rule + "  denialSpike: {minDenials: .inf}\n",
			"document 2: spec.denialSpike.minDenials: .inf (line 14) is not a finite number"},
		{"flow_document", "{apiVersion: bulwark.dev/v1alpha1, kind: AlertRule, metadata: {name: r, namespace: default}, spec: {detector: DenialSpike, denialSpike: {factor: .inf}}}",
			"spec.denialSpike.factor: .inf (line 1) is not a finite number"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Decode([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error with %q", err, c.want)
			}
		})
	}
	// A quoted ".inf" is a string, not a number: the field's type decides.
	if _, err := config.Decode([]byte(rule + "  denialSpike: {factor: '.inf'}\n")); err == nil || strings.Contains(err.Error(), "finite") {
		t.Errorf("quoted .inf: got %v, want a type error", err)
	}
}
