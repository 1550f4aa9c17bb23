package condition

import (
	"errors"
	"net/url"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// errMalformedQuery is what request.query resolves to when the query
// string does not decode. It names no part of the query, which may carry
// secrets.
var errMalformedQuery = errors.New("request.query: malformed query string")

// activation resolves the names of the request model from Vars, lazily:
// only the names an expression reads are computed, and the header and
// query maps at most once per evaluation (see headerVal).
type activation struct {
	v       *Vars
	env     *environment
	headers *headerVal
	query   any // map[string]string, or *types.Err
}

var _ interpreter.Activation = (*activation)(nil)

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	v := a.v
	switch name {
	case "source.identity":
		return types.String(v.SourceIdentity), true
	case "source.namespace":
		return types.String(v.SourceNamespace), true
	case "source.services":
		if len(v.SourceServices) == 0 {
			return a.env.emptyServices, true
		}
		return types.NewStringList(a.env.cel.CELTypeAdapter(), v.SourceServices), true
	case "source.principal":
		return types.String(v.SourcePrincipal), true
	case "source.ip":
		if !v.SourceIP.IsValid() {
			return types.String(""), true
		}
		return types.String(v.SourceIP.Unmap().String()), true
	case "request.method":
		return types.String(v.Method), true
	case "request.host":
		return types.String(v.Host), true
	case "request.port":
		return types.Int(v.Port), true
	case "request.path":
		return types.String(v.Path), true
	case "request.headers":
		if a.headers == nil {
			a.headers = &headerVal{h: v.Headers, adapter: a.env.cel.CELTypeAdapter()}
		}
		return a.headers, true
	case "request.query":
		if a.query == nil {
			if m, err := queryMap(v.Query); err != nil {
				a.query = types.WrapErr(err)
			} else {
				// A Go map: the interpreter looks a constant key up in it
				// directly.
				a.query = m
			}
		}
		return a.query, true
	case "jwt.claims":
		if v.Claims == nil {
			return a.env.emptyClaims, true
		}
		// A Go map: the interpreter looks a constant key up in it
		// directly, and adapts the values it reads.
		return v.Claims, true
	case "connection.sni":
		return types.String(v.SNI), true
	case "time.now":
		return types.Timestamp{Time: v.Now}, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

// queryMap decodes a raw query as url.ParseQuery does (names and values
// decoded as application/x-www-form-urlencoded, empty parts skipped), the
// values of a repeated parameter joined with ",". A query that does not
// decode (a bad escape, a ';', which ParseQuery also refuses) is an error.
// It allocates only for escaped or repeated parameters and the map.
func queryMap(raw string) (map[string]string, error) {
	m := make(map[string]string, strings.Count(raw, "&")+1)
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if part == "" {
			continue
		}
		if strings.IndexByte(part, ';') >= 0 {
			return nil, errMalformedQuery
		}
		k, v, _ := strings.Cut(part, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, errMalformedQuery
		}
		if prev, ok := m[k]; ok {
			v = prev + "," + v
		}
		m[k] = v
	}
	return m, nil
}
