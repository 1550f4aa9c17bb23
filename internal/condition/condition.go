// Package condition compiles and evaluates the CEL conditions of policies
// (the `when` of a rule) over Bulwark's request model.
//
// A condition is a CEL expression (https://cel.dev) of type bool over these
// names, each declared with its type, so that a typo such as
// `request.methd` is a type-check error when the policy is applied, never a
// condition that is silently false at run time:
//
//	name               CEL type             value
//	source.identity    string               the caller's SPIFFE ID ("" when unknown)
//	source.namespace   string               the namespace of the caller's identity ("" when unknown)
//	source.services    list(string)         the services ("ns/name") the caller serves
//	source.principal   string               "<iss>/<sub>" of the validated JWT ("" without one)
//	source.ip          string               the address of the connection's peer ("" when unknown)
//	request.method     string               the HTTP method, as sent
//	request.host       string               the host, in lower case, without the port
//	request.port       int                  the destination port the caller addressed
//	request.path       string               the normalized path, without the query
//	request.headers    map(string, string)  header fields by lower-case name; the values of a
//	                                        repeated field are joined with ", " ("; " for cookie)
//	request.query      map(string, string)  query parameters, names and values decoded as
//	                                        application/x-www-form-urlencoded; the values of a
//	                                        repeated parameter are joined with ","
//	jwt.claims         map(string, dyn)     the validated JWT's claims (empty without a token);
//	                                        JSON numbers are doubles
//	connection.sni     string               the server name of the caller's TLS handshake
//	time.now           timestamp            when the request arrived
//
// The names are declared as dotted variables, so the checker reports a
// typo with a suggestion: "undeclared reference to 'request.methd' (did
// you mean 'request.method'?)".
//
// The language is CEL's standard library (with its macros has, all, exists,
// exists_one, map and filter, and heterogeneous numeric comparisons, so
// jwt.claims.level >= 2 works on a double), optional values (m[?'k'],
// m.?k, orValue, hasValue; version 4), the strings extension (version 5:
// lowerAscii, upperAscii, split, trim, indexOf, lastIndexOf, substring,
// charAt, reverse) and the network extension (ip, cidr, isIP, isCIDR).
// None of them does I/O: a time zone given to getHours and the other
// timestamp accessors must be a string literal (an IANA name such as
// 'Europe/Paris', or an offset such as '+01:00'), loaded once by Compile;
// "Local" is refused.
//
// # Limits
//
// An expression is at most MaxLength bytes. An evaluation may cost at most
// CostLimit (CEL's cost model: about one unit per operation, per element of
// a list or map built or traversed, and per few bytes of a string compared
// or matched); beyond that Eval stops with ErrCostLimit. CEL charges a call
// after it returns, so the functions whose result can grow as the product
// of their inputs (replace, join, format) are refused by Compile, as is
// matches with a pattern that is not a string literal (the caller would
// choose it, and it would be compiled at every evaluation). A condition
// whose result type is not bool, including dyn (jwt.claims.admin: write
// jwt.claims.admin == true), and a header looked up by a name that is not
// in lower case are refused too.
//
// # Evaluation
//
// Eval resolves only the names an expression uses: looking one header up
// scans the request's header without building a map, the full header map
// (for iteration, size) and the query map are built on first use, at most
// once per Eval. A missing map key (request.headers['x-absent']), a value
// of the wrong type in the claims, a malformed query string when
// request.query is used, or the cost limit make Eval return an error; the
// policy evaluator decides what an error means (fails closed: an ALLOW rule
// does not match, a DENY rule does). Write 'k' in m, has(m.k) or
// m[?'k'].hasValue(v) to test for a key. Eval never panics, and a Program
// is safe for concurrent use.
package condition

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// MaxLength is the longest expression Compile accepts, in bytes.
const MaxLength = 4096

// CostLimit is the most a single Eval may cost, in CEL cost units. It
// allows realistic conditions (a regular expression over a header of a few
// KiB, a membership test in a list of a thousand groups) and stops
// combinatorial blowups such as nested map comprehensions.
const CostLimit = 100_000

// Vars is the request a condition is evaluated against. The zero Vars is a
// request about which nothing is known: every string is "", every list and
// map is empty.
type Vars struct {
	// SourceIdentity is the caller's SPIFFE ID (source.identity).
	SourceIdentity string
	// SourceNamespace is the namespace of the caller's identity
	// (source.namespace).
	SourceNamespace string
	// SourcePrincipal is "<iss>/<sub>" of the validated JWT
	// (source.principal).
	SourcePrincipal string
	// SourceServices are the services, "ns/name", the caller serves
	// (source.services).
	SourceServices []string
	// SourceIP is the address of the connection's peer (source.ip); the
	// zero Addr is "".
	SourceIP netip.Addr
	// Method is the HTTP method (request.method).
	Method string
	// Host is the host in lower case without the port (request.host).
	Host string
	// Path is the normalized path without the query (request.path).
	Path string
	// Query is the raw query without '?' (request.query, decoded when an
	// expression uses it).
	Query string
	// Port is the destination port (request.port).
	Port int
	// Headers are the request's header fields (request.headers, built when
	// an expression uses it).
	Headers http.Header
	// Claims are the validated JWT's claims (jwt.claims); nil is no token.
	Claims map[string]any
	// SNI is the server name of the TLS handshake (connection.sni).
	SNI string
	// Now is when the request arrived (time.now).
	Now time.Time
}

// Program is a compiled condition. It is immutable and safe for concurrent
// use.
type Program struct {
	expr string
	prg  cel.Program
	env  *environment
}

// maxIssues is the most issues a CompileError lists; a syntax error can
// make the parser report many.
const maxIssues = 5

// Compile parses and type-checks expr and plans its evaluation. It fails
// with a *CompileError, whose Issues carry the line and column of each
// problem, when expr is empty or longer than MaxLength, does not parse,
// uses an undeclared name or a function with the wrong argument types, is
// not of type bool, looks up a header by a name that is not in lower case,
// calls replace, join or format, gives matches a pattern that is not a
// string literal, or gives a timestamp accessor a time zone that is not a
// known literal.
func Compile(expr string) (p *Program, err error) {
	if strings.TrimSpace(expr) == "" {
		return nil, &CompileError{Issues: []Issue{{Msg: "the expression is empty"}}}
	}
	if len(expr) > MaxLength {
		return nil, &CompileError{Issues: []Issue{{Msg: fmt.Sprintf("the expression is %d bytes long, more than the %d allowed", len(expr), MaxLength)}}}
	}
	env, err := loadEnvironment()
	if err != nil {
		return nil, fmt.Errorf("compile condition: %w", err)
	}
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("compile condition: internal error: %v", r)
		}
	}()
	ast, iss := env.cel.Compile(expr)
	if iss.Err() != nil {
		ce := &CompileError{}
		for _, e := range iss.Errors() {
			ce.Issues = append(ce.Issues, Issue{
				Line:   e.Location.Line(),
				Column: e.Location.Column() + 1,
				Msg:    trimExpecting(e.Message),
			})
		}
		return nil, ce.capped()
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		msg := fmt.Sprintf("the condition has type %s, want bool: compare the value, e.g. request.method == 'GET'", t)
		if t.IsExactType(cel.DynType) {
			msg = "the condition has type dyn (a value of jwt.claims?), want bool: compare it explicitly, e.g. jwt.claims.admin == true"
		}
		return nil, &CompileError{Issues: []Issue{{Line: 1, Column: 1, Msg: msg}}}
	}
	zones, issues := timeZones(ast)
	issues = append(issues, headerCase(ast)...)
	issues = append(issues, restricted(ast)...)
	if len(issues) > 0 {
		return nil, (&CompileError{Issues: issues}).capped()
	}
	prg, err := env.cel.Program(ast,
		cel.CostLimit(CostLimit),
		cel.EvalOptions(cel.OptOptimize),
		cel.Functions(zoneOverloads(zones)...),
	)
	if err != nil {
		return nil, &CompileError{Issues: []Issue{{Msg: err.Error()}}}
	}
	return &Program{expr: expr, prg: prg, env: env}, nil
}

// trimExpecting drops the long list of expected tokens from a syntax
// error ("mismatched input '<EOF>' expecting {'[', '{', '(', ...}"): the
// position says enough.
func trimExpecting(msg string) string {
	if i := strings.Index(msg, " expecting {"); i >= 0 && len(msg)-i > 40 {
		return msg[:i]
	}
	return msg
}

// String returns the expression the program was compiled from.
func (p *Program) String() string {
	if p == nil {
		return ""
	}
	return p.expr
}

// Eval evaluates the condition against v; a nil v is the zero Vars. It
// returns an error, and false, when the evaluation fails: a missing map
// key, a value of an unexpected type, a malformed query string used by the
// expression, or ErrCostLimit. Eval never panics.
func (p *Program) Eval(v *Vars) (ok bool, err error) {
	if p == nil || p.prg == nil {
		return false, errors.New("evaluate condition: no program")
	}
	if v == nil {
		v = &Vars{}
	}
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("evaluate condition: internal error: %v", r)
		}
	}()
	act := p.env.activations.Get().(*activation)
	*act = activation{v: v, env: p.env}
	defer func() {
		*act = activation{}
		p.env.activations.Put(act)
	}()
	out, _, err := p.prg.Eval(act)
	if err != nil {
		var cancelled interpreter.EvalCancelledError
		if errors.As(err, &cancelled) && cancelled.Cause == interpreter.CostLimitExceeded {
			return false, fmt.Errorf("evaluate condition: %w", ErrCostLimit)
		}
		return false, fmt.Errorf("evaluate condition: %w", err)
	}
	b, isBool := out.(types.Bool)
	if !isBool {
		return false, fmt.Errorf("evaluate condition: the result has type %s, want bool", out.Type().TypeName())
	}
	return bool(b), nil
}

// environment is the CEL environment every condition is compiled in, and
// the values shared by every evaluation.
type environment struct {
	cel *cel.Env
	// emptyClaims is jwt.claims of a request without a token.
	emptyClaims any
	// emptyServices is source.services of a caller with no service.
	emptyServices any
	// activations are reused across evaluations.
	activations sync.Pool
}

// loadEnvironment returns the environment, built once: it is immutable,
// and building it costs far more than compiling an expression.
var loadEnvironment = sync.OnceValues(newEnvironment)

// newEnvironment declares the request model and the libraries.
func newEnvironment() (*environment, error) {
	opts := []cel.EnvOption{
		cel.StdLib(cel.StdLibSubset(stdLibWithoutZones())),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		cel.ParserExpressionSizeLimit(MaxLength),
		cel.OptionalTypes(cel.OptionalTypesVersion(4)),
		stringsExtension(),
		networkExtension(),
		zoneFunctions(),
	}
	for _, d := range model {
		opts = append(opts, cel.Variable(d.name, d.typ))
	}
	e, err := cel.NewCustomEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("build cel environment: %w", err)
	}
	return &environment{
		cel:           e,
		emptyClaims:   map[string]any{},
		emptyServices: types.NewStringList(e.CELTypeAdapter(), nil),
		activations:   sync.Pool{New: func() any { return new(activation) }},
	}, nil
}

// decl is one name of the request model.
type decl struct {
	name string
	typ  *cel.Type
}

// model is the request model, as the package doc lists it.
var model = []decl{
	{"source.identity", cel.StringType},
	{"source.namespace", cel.StringType},
	{"source.services", cel.ListType(cel.StringType)},
	{"source.principal", cel.StringType},
	{"source.ip", cel.StringType},
	{"request.method", cel.StringType},
	{"request.host", cel.StringType},
	{"request.port", cel.IntType},
	{"request.path", cel.StringType},
	{"request.headers", cel.MapType(cel.StringType, cel.StringType)},
	{"request.query", cel.MapType(cel.StringType, cel.StringType)},
	{"jwt.claims", cel.MapType(cel.StringType, cel.DynType)},
	{"connection.sni", cel.StringType},
	{"time.now", cel.TimestampType},
}

// Name is one name of the request model.
type Name struct {
	// Name is the dotted name, such as "request.port".
	Name string
	// Type is its CEL type, such as "int", "map(string, string)" or
	// "timestamp".
	Type string
}

// Names returns the request model, in the order of the package
// documentation.
func Names() []Name {
	out := make([]Name, len(model))
	for i, d := range model {
		t := d.typ.String()
		if d.typ.IsExactType(cel.TimestampType) {
			t = "timestamp" // CEL's name for google.protobuf.Timestamp
		}
		out[i] = Name{Name: d.name, Type: t}
	}
	return out
}
