package condition

import (
	"net/http"
	"reflect"
	"slices"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// headerVal is request.headers: a map from lower-case field names to their
// values, joined with ", " ("; " for cookie, RFC 9113 §8.2.3). Looking up
// one name (request.headers['x-tenant'], 'x-tenant' in request.headers,
// has(), [?]) scans the Header without building anything; every other use
// (iteration, size, equality) builds the map, once.
type headerVal struct {
	h       http.Header
	adapter types.Adapter
	m       traits.Mapper // the built map; nil until needed
}

var _ traits.Mapper = (*headerVal)(nil)

// lookup returns the value of the field whose lower-case name is name.
func (hv *headerVal) lookup(name string) (string, bool) {
	var (
		value string
		found bool
	)
	for k, vs := range hv.h {
		if len(vs) == 0 || !lowerEquals(k, name) {
			continue
		}
		if found {
			// Two spellings of one name: the built map joins them.
			v, ok := hv.built().Find(types.String(name))
			if !ok {
				return "", false
			}
			s, _ := v.(types.String)
			return string(s), true
		}
		found = true
		if len(vs) == 1 {
			value = vs[0]
		} else {
			value = strings.Join(vs, headerSep(name))
		}
	}
	return value, found
}

// lowerEquals reports whether k in lower case is name (which must itself
// be in lower case to be found).
func lowerEquals(k, name string) bool {
	if len(k) != len(name) {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// built returns the map, building it on first use.
func (hv *headerVal) built() traits.Mapper {
	if hv.m == nil {
		hv.m = types.NewStringStringMap(hv.adapter, headerMap(hv.h))
	}
	return hv.m
}

// FindStringKey is the interpreter's fast path for a constant key.
func (hv *headerVal) FindStringKey(key string) (any, bool) {
	v, ok := hv.lookup(key)
	if !ok {
		return nil, false
	}
	return types.String(v), true
}

// Find implements traits.Mapper.
func (hv *headerVal) Find(key ref.Val) (ref.Val, bool) {
	if k, ok := key.(types.String); ok {
		v, found := hv.lookup(string(k))
		if !found {
			return nil, false
		}
		return types.String(v), true
	}
	return hv.built().Find(key)
}

// Get implements traits.Indexer.
func (hv *headerVal) Get(key ref.Val) ref.Val {
	if v, ok := hv.Find(key); ok {
		return v
	}
	return hv.built().Get(key) // the error the built map gives
}

// Contains implements traits.Container.
func (hv *headerVal) Contains(key ref.Val) ref.Val {
	if k, ok := key.(types.String); ok {
		_, found := hv.lookup(string(k))
		return types.Bool(found)
	}
	return hv.built().Contains(key)
}

// Iterator implements traits.Iterable.
func (hv *headerVal) Iterator() traits.Iterator { return hv.built().Iterator() }

// Size implements traits.Sizer.
func (hv *headerVal) Size() ref.Val { return hv.built().Size() }

// ConvertToNative implements ref.Val.
func (hv *headerVal) ConvertToNative(t reflect.Type) (any, error) {
	return hv.built().ConvertToNative(t)
}

// ConvertToType implements ref.Val.
func (hv *headerVal) ConvertToType(t ref.Type) ref.Val { return hv.built().ConvertToType(t) }

// Equal implements ref.Val.
func (hv *headerVal) Equal(other ref.Val) ref.Val { return hv.built().Equal(other) }

// Type implements ref.Val.
func (hv *headerVal) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (hv *headerVal) Value() any { return hv.built().Value() }

// headerMap returns h by lower-case name, the values of a repeated field
// joined with ", " ("; " for cookie). The values of several spellings of
// one name (a Header not built by net/http) are joined in the order of the
// spellings.
func headerMap(h http.Header) map[string]string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	m := make(map[string]string, len(h))
	for _, k := range keys {
		vs := h[k]
		if len(vs) == 0 {
			continue
		}
		name := strings.ToLower(k)
		sep := headerSep(name)
		joined := strings.Join(vs, sep)
		if prev, ok := m[name]; ok {
			joined = prev + sep + joined
		}
		m[name] = joined
	}
	return m
}

// headerSep is the separator of the values of a repeated field.
func headerSep(name string) string {
	if name == "cookie" {
		return "; "
	}
	return ", "
}
