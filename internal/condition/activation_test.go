package condition

import (
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"cel.dev/cel-go/common/types"
)

// TestActivationBuildsMapsOnce pins the laziness Eval relies on: the
// header and query maps are built on first use and then reused within one
// evaluation, and an unknown name is not resolved.
func TestActivationBuildsMapsOnce(t *testing.T) {
	env, err := loadEnvironment()
	if err != nil {
		t.Fatal(err)
	}
	a := &activation{v: &Vars{Headers: http.Header{"X-A": {"1"}}, Query: "a=1"}, env: env}
	if a.headers != nil || a.query != nil {
		t.Fatal("maps built before use")
	}
	h1, _ := a.ResolveName("request.headers")
	h2, _ := a.ResolveName("request.headers")
	if h1 != h2 {
		t.Error("ResolveName(request.headers) twice: got two values, want one")
	}
	hv := h1.(*headerVal)
	if hv.m != nil {
		t.Error("header map built before a use that needs it")
	}
	if got := hv.Get(types.String("x-a")); got != types.String("1") {
		t.Errorf("Get(x-a): got %v, want 1", got)
	}
	if hv.m != nil {
		t.Error("header map built for a lookup")
	}
	hv.Size()
	built := hv.m
	hv.Size()
	if built == nil || hv.m != built {
		t.Error("header map not built once for Size")
	}
	q1, _ := a.ResolveName("request.query")
	q2, _ := a.ResolveName("request.query")
	if reflect.ValueOf(q1).Pointer() != reflect.ValueOf(q2).Pointer() {
		t.Error("ResolveName(request.query) twice: got two maps, want one")
	}
	if _, ok := a.ResolveName("request.methd"); ok {
		t.Error("ResolveName(request.methd): found, want not found")
	}
	if a.Parent() != nil {
		t.Error("Parent: got an activation, want nil")
	}
}

func TestHeaderValLookup(t *testing.T) {
	hv := &headerVal{h: http.Header{
		"Accept":  {"a", "b"},
		"X-One":   {"1"},
		"x-two":   {"lower"},
		"X-Two":   {"upper"},
		"X-Empty": {},
	}, adapter: types.DefaultTypeAdapter}
	tests := []struct {
		key   string
		want  string
		found bool
	}{
		{"accept", "a, b", true},
		{"x-one", "1", true},
		{"x-two", "upper, lower", true}, // spellings joined in sorted order
		{"X-One", "", false},            // names are lower case
		{"x-empty", "", false},          // a name without values is absent
		{"x-absent", "", false},
	}
	for _, tt := range tests {
		got, found := hv.lookup(tt.key)
		if got != tt.want || found != tt.found {
			t.Errorf("lookup(%q): got %q, %v, want %q, %v", tt.key, got, found, tt.want, tt.found)
		}
		if c := hv.Contains(types.String(tt.key)); c != types.Bool(tt.found) {
			t.Errorf("Contains(%q): got %v, want %v", tt.key, c, tt.found)
		}
	}
	if got := hv.Get(types.String("x-absent")); !types.IsError(got) {
		t.Errorf("Get(x-absent): got %v, want an error", got)
	}
	if got := hv.Contains(types.Int(1)); !types.IsError(got) && got != types.False {
		t.Errorf("Contains(1): got %v, want false or an error", got)
	}
	if got, want := hv.Size(), types.Int(3); got != want {
		t.Errorf("Size: got %v, want %v", got, want)
	}
	if got := hv.Type(); got != types.MapType {
		t.Errorf("Type: got %v, want map", got)
	}
}

// TestActivationMalformedQueryOnce pins that a malformed query resolves to
// an error value, once.
func TestActivationMalformedQueryOnce(t *testing.T) {
	env, err := loadEnvironment()
	if err != nil {
		t.Fatal(err)
	}
	a := &activation{v: &Vars{Query: "a=%zz"}, env: env}
	got, _ := a.ResolveName("request.query")
	if !types.IsError(got.(types.Error)) {
		t.Fatalf("ResolveName(request.query): got %v, want an error value", got)
	}
	if again, _ := a.ResolveName("request.query"); again != got {
		t.Error("ResolveName(request.query) twice: got two values, want one")
	}
}

func TestHeaderMap(t *testing.T) {
	got := headerMap(http.Header{
		"Accept":  {"a", "b"},
		"Cookie":  {"x=1", "y=2"},
		"X-Empty": {},
	})
	want := map[string]string{"accept": "a, b", "cookie": "x=1; y=2"}
	if !maps.Equal(got, want) {
		t.Errorf("headerMap: got %v, want %v", got, want)
	}
}

// queryCorpus are raw queries, valid and not.
var queryCorpus = []string{
	"", "a=1", "a=1&b=2", "a=1&a=2&a=", "&&a=1&", "a", "a=", "=v", "a+b=c+d", "n%C3%A9=%E2%9C%93",
	"a=%zz", "a=1;b=2", "%=1", "a=%4", "a=b=c", "a=1&a=%41",
}

// TestQueryMapMatchesParseQuery pins queryMap to url.ParseQuery, repeated
// values joined with ",".
func TestQueryMapMatchesParseQuery(t *testing.T) {
	for _, raw := range queryCorpus {
		checkQueryMap(t, raw)
	}
}

// FuzzQueryMap is TestQueryMapMatchesParseQuery over arbitrary queries.
func FuzzQueryMap(f *testing.F) {
	for _, raw := range queryCorpus {
		f.Add(raw)
	}
	f.Fuzz(checkQueryMap)
}

// checkQueryMap compares queryMap(raw) with url.ParseQuery(raw).
func checkQueryMap(t *testing.T, raw string) {
	got, err := queryMap(raw)
	vals, wantErr := url.ParseQuery(raw)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("queryMap(%q): got error %v, want error %v", raw, err, wantErr)
	}
	if err != nil {
		return
	}
	want := map[string]string{}
	for k, vs := range vals {
		want[k] = strings.Join(vs, ",")
	}
	if !maps.Equal(got, want) {
		t.Fatalf("queryMap(%q): got %v, want %v", raw, got, want)
	}
}
