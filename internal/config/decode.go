package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	yaml3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// maxFieldErrors is the most unknown or mistyped fields reported for one
// object; decoding stops after that many.
const maxFieldErrors = 20

// kindSpec describes one kind of resource that this package decodes.
type kindSpec struct {
	name string
	// readOnly kinds are views served by the control plane; they are
	// listed and read back but never applied.
	readOnly bool
	new      func() Object
}

// knownKinds is the explicit list of every kind this package decodes, in the
// order error messages list them. A new kind is added here and nowhere else.
func knownKinds() []kindSpec {
	return []kindSpec{
		{name: KindAuthorizationPolicy, new: func() Object { return new(AuthorizationPolicy) }},
		{name: KindJWTProvider, new: func() Object { return new(JWTProvider) }},
		{name: KindMesh, new: func() Object { return new(Mesh) }},
		{name: KindRole, new: func() Object { return new(Role) }},
		{name: KindRoleBinding, new: func() Object { return new(RoleBinding) }},
		{name: KindTrafficPolicy, new: func() Object { return new(TrafficPolicy) }},
		{name: KindRoute, new: func() Object { return new(Route) }},
		{name: KindExternalService, new: func() Object { return new(ExternalService) }},
		{name: KindAlertRule, new: func() Object { return new(AlertRule) }},
		{name: KindGateway, new: func() Object { return new(Gateway) }},
		{name: KindSecret, new: func() Object { return new(Secret) }},
		{name: KindProxy, readOnly: true, new: func() Object { return new(Proxy) }},
		{name: KindService, readOnly: true, new: func() Object { return new(Service) }},
		{name: KindDenial, readOnly: true, new: func() Object { return new(Denial) }},
		{name: KindEdge, readOnly: true, new: func() Object { return new(Edge) }},
		{name: KindAlert, readOnly: true, new: func() Object { return new(Alert) }},
	}
}

// lookupKind returns the kindSpec of kind.
func lookupKind(kind string) (kindSpec, bool) {
	for _, k := range knownKinds() {
		if k.name == kind {
			return k, true
		}
	}
	return kindSpec{}, false
}

// kindNames lists the known kinds, the read-only ones only when readOnly is
// true, for error messages.
func kindNames(readOnly bool) string {
	var names []string
	for _, k := range knownKinds() {
		if readOnly || !k.readOnly {
			names = append(names, k.name)
		}
	}
	return strings.Join(names, ", ")
}

// IsReadOnly reports whether kind is a read-only view (Proxy, Service) that
// the control plane serves but no one can apply or delete.
func IsReadOnly(kind string) bool {
	k, ok := lookupKind(kind)
	return ok && k.readOnly
}

// Decode reads a stream of YAML or JSON documents separated by lines of
// "---" and returns one object per document, validated and with the
// defaults written on each field filled in. Documents that are empty or hold
// only comments are skipped and not counted. A document of kind List (the
// output of `bulwark get -o yaml`) stands for its items, in order.
//
// Decoding is strict: an unknown or duplicate key is an error, and so is a
// value of the wrong type or one that Validate rejects; keys are matched
// case-sensitively. The metadata fields set by the control plane
// (resourceVersion, creationTimestamp) are accepted and kept, so that the
// output of `bulwark get -o yaml` decodes again.
//
// Decode checks every document. It returns either all the objects and a nil
// error, or no objects and a DocumentErrors with one *DocumentError per
// failing document (per failing item of a List), each naming the field path
// of every problem. An empty stream gives an empty slice and a nil error:
// whether that is an error is the caller's call.
func Decode(data []byte) ([]Object, error) {
	objs := []Object{}
	var errs DocumentErrors
	for i, doc := range splitDocuments(data) {
		got, docErrs := decodeDocument(doc, i+1, true)
		objs = append(objs, got...)
		errs = append(errs, docErrs...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return objs, nil
}

// DecodeObject decodes exactly one YAML or JSON document with the same checks
// as Decode, including Validate; a List is not accepted. The control plane
// decodes every document it receives with it and so never relies on a
// client's validation. A non-nil error is a *DocumentError with Index 1 (2
// when the data holds more than one document).
func DecodeObject(data []byte) (Object, error) {
	docs := splitDocuments(data)
	switch len(docs) {
	case 0:
		return nil, &DocumentError{Index: 1, Err: errors.New("empty document")}
	case 1:
	default:
		return nil, &DocumentError{Index: 2, Err: fmt.Errorf("expected one document, got %d", len(docs))}
	}
	objs, errs := decodeDocument(docs[0], 1, false)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return objs[0], nil
}

// decodeDocument decodes one document of a stream; allowList says whether
// it may be a List. It returns the objects, or the errors of the document.
func decodeDocument(doc document, index int, allowList bool) ([]Object, DocumentErrors) {
	fail := func(kind, ref string, err error) DocumentErrors {
		return DocumentErrors{{Index: index, Kind: kind, Ref: ref, Err: err}}
	}
	if doc.err != nil {
		return nil, fail("", "", doc.err)
	}
	js, err := toJSON(doc.data, doc.line)
	if err != nil {
		return nil, fail("", "", err)
	}
	kind, errs := readHeader(js, "")
	if len(errs) > 0 {
		return nil, fail(knownKind(kind, allowList), "", errs)
	}
	if kind == KindList && allowList {
		return decodeList(js, index)
	}
	spec, errs := checkKind(kind, "", false)
	if len(errs) > 0 {
		return nil, fail("", "", errs)
	}
	o, errs := decodeObject(js, spec, "", true)
	if len(errs) > 0 {
		return nil, fail(kind, refOf(o), errs)
	}
	return []Object{o}, nil
}

// decodeList decodes and validates the items of a List document.
func decodeList(js []byte, index int) ([]Object, DocumentErrors) {
	items, errs := listItems(js)
	if len(errs) > 0 {
		return nil, DocumentErrors{{Index: index, Kind: KindList, Err: errs}}
	}
	var (
		objs    []Object
		docErrs DocumentErrors
	)
	for i, item := range items {
		prefix := "items[" + strconv.Itoa(i) + "]"
		kind, errs := readHeader(item, prefix)
		if len(errs) == 0 {
			var spec kindSpec
			if spec, errs = checkKind(kind, prefix, false); len(errs) == 0 {
				var o Object
				if o, errs = decodeObject(item, spec, prefix, true); len(errs) == 0 {
					objs = append(objs, o)
					continue
				}
				docErrs = append(docErrs, &DocumentError{Index: index, Kind: kind, Ref: refOf(o), Err: errs})
				continue
			}
		}
		docErrs = append(docErrs, &DocumentError{Index: index, Kind: knownKind(kind, false), Err: errs})
	}
	return objs, docErrs
}

// readHeader checks that js, a valid JSON value, is a mapping whose
// apiVersion is APIVersion and that has a kind, and returns the kind.
func readHeader(js []byte, prefix string) (kind string, errs FieldErrors) {
	if k := jsontext.Value(js).Kind(); k != '{' {
		errs.add(prefix, "expected a mapping, got %s", describeJSON(k, nil))
		return "", errs
	}
	var top map[string]jsontext.Value
	if err := json.Unmarshal(js, &top); err != nil {
		errs.add(prefix, "%v", err) // unreachable: js is a valid JSON object
		return "", errs
	}
	apiVersion, err := stringMember(top, "apiVersion")
	switch {
	case err != nil:
		errs.add(joinPath(prefix, "apiVersion"), "%v", err)
	case apiVersion == "":
		errs.add(joinPath(prefix, "apiVersion"), "required (supported: %s)", APIVersion)
	case apiVersion != APIVersion:
		errs.add(joinPath(prefix, "apiVersion"), "unsupported version %q (supported: %s)", apiVersion, APIVersion)
	}
	kind, err = stringMember(top, "kind")
	switch {
	case err != nil:
		errs.add(joinPath(prefix, "kind"), "%v", err)
	case kind == "":
		errs.add(joinPath(prefix, "kind"), "required")
	}
	return kind, errs
}

// stringMember returns the string member key of an object, "" when it is
// absent or null.
func stringMember(obj map[string]jsontext.Value, key string) (string, error) {
	v, ok := obj[key]
	if !ok || v.Kind() == 'n' {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("expected a string, got %s", describeJSON(v.Kind(), v))
	}
	return s, nil
}

// checkKind returns the kindSpec of kind. readOnly says whether the
// read-only kinds are listed in the error for an unknown kind.
func checkKind(kind, prefix string, readOnly bool) (kindSpec, FieldErrors) {
	var errs FieldErrors
	spec, ok := lookupKind(kind)
	switch {
	case ok:
	case kind == KindList:
		errs.add(joinPath(prefix, "kind"), "a List is not allowed here")
	default:
		errs.add(joinPath(prefix, "kind"), "unknown kind %q (known: %s)", kind, kindNames(readOnly))
	}
	return spec, errs
}

// knownKind returns kind when it names a kind (or a List, when allowList is
// true), and "" otherwise, for DocumentError.Kind.
func knownKind(kind string, allowList bool) string {
	if _, ok := lookupKind(kind); ok || (allowList && kind == KindList) {
		return kind
	}
	return ""
}

// decodeObject strictly decodes js into a new object of spec's kind and,
// when validate is true and decoding succeeded, validates it. The paths of
// the errors start with prefix. The object is returned even with errors, so
// that they can name it.
func decodeObject(js []byte, spec kindSpec, prefix string, validate bool) (Object, FieldErrors) {
	v, errs := decodeStrict(js, prefix, func() any { return spec.new() })
	o := v.(Object)
	if len(errs) > 0 || !validate {
		return o, errs
	}
	for _, e := range o.Validate() {
		errs = append(errs, FieldError{Path: joinPath(prefix, e.Path), Msg: e.Msg})
	}
	return o, errs
}

// decodeStrict decodes js, a valid JSON value, into a value made by newVal,
// rejecting unknown members. The json package stops at the first problem;
// to report every unknown or mistyped member at once, decodeStrict removes
// the unknown member, or replaces the mistyped value with null, and decodes
// again, up to maxFieldErrors times. It returns the last value decoded.
func decodeStrict(js []byte, prefix string, newVal func() any) (any, FieldErrors) {
	var errs FieldErrors
	for {
		v := newVal()
		err := json.Unmarshal(js, v, json.RejectUnknownMembers(true))
		if err == nil {
			return v, errs
		}
		var se *json.SemanticError
		if !errors.As(err, &se) {
			errs.add(prefix, "%v", err) // unreachable: js is valid JSON
			return v, errs
		}
		if len(errs) == maxFieldErrors {
			errs.add(prefix, "too many errors")
			return v, errs
		}
		unknown := errors.Is(se.Err, json.ErrUnknownName)
		errs = append(errs, FieldError{Path: pointerPath(prefix, se.JSONPointer), Msg: semanticMessage(se, unknown)})
		next, ok := rewriteAt(js, se.JSONPointer, unknown)
		if !ok {
			return v, errs
		}
		js = next
	}
}

// semanticMessage describes a decoding problem in the user's terms.
func semanticMessage(se *json.SemanticError, unknown bool) string {
	switch {
	case unknown:
		return "unknown field"
	case se.GoType == reflect.TypeFor[[]byte]() && se.JSONKind == '"':
		// The value is not echoed: it may be key material.
		return "not base64"
	case se.GoType != nil && se.JSONKind != 0:
		msg := "expected " + describeType(se.GoType) + ", got " + describeJSON(se.JSONKind, se.JSONValue)
		if errors.Is(se.Err, strconv.ErrRange) {
			msg += ", which is out of range"
		}
		return msg
	}
	return strings.TrimPrefix(se.Error(), "json: ")
}

// describeType names the JSON form of a Go type: "a string", "a list of
// strings".
func describeType(t reflect.Type) string {
	if t == reflect.TypeFor[jsontext.Value]() {
		return "a value"
	}
	if t == reflect.TypeFor[[]byte]() {
		return "base64 data"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return describeType(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list of " + describePlural(t.Elem())
	case reflect.Map:
		return "a mapping of " + describePlural(t.Elem())
	case reflect.Struct:
		return "a mapping"
	}
	return "a value"
}

// describePlural is the plural of describeType: "strings".
func describePlural(t reflect.Type) string {
	if t == reflect.TypeFor[jsontext.Value]() {
		return "values"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return describePlural(t.Elem())
	case reflect.String:
		return "strings"
	case reflect.Bool:
		return "booleans"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integers"
	case reflect.Float32, reflect.Float64:
		return "numbers"
	case reflect.Slice, reflect.Array:
		return "lists"
	case reflect.Map, reflect.Struct:
		return "mappings"
	}
	return "values"
}

// describeJSON names a JSON value of kind k: "a string", or a short
// number itself. Strings are never quoted back: they may hold secrets.
func describeJSON(k jsontext.Kind, v jsontext.Value) string {
	switch k {
	case '"':
		return "a string"
	case '0':
		if len(v) > 0 && len(v) <= 32 {
			return string(v)
		}
		return "a number"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '{':
		return "a mapping"
	case '[':
		return "a list"
	}
	return "an invalid value"
}

// rewriteAt copies js, a valid JSON value, without the object member at
// target (drop) or with the value at target replaced by null. It reports
// false when target is not found.
func rewriteAt(js []byte, target jsontext.Pointer, drop bool) ([]byte, bool) {
	var out bytes.Buffer
	r := rewriter{
		dec:    jsontext.NewDecoder(bytes.NewReader(js)),
		enc:    jsontext.NewEncoder(&out),
		target: target,
		drop:   drop,
	}
	if err := r.copyValue(""); err != nil || !r.found {
		return nil, false
	}
	return out.Bytes(), true
}

// rewriter is the state of rewriteAt.
type rewriter struct {
	dec    *jsontext.Decoder
	enc    *jsontext.Encoder
	target jsontext.Pointer
	drop   bool
	found  bool
}

// copyValue copies the next value, found at path.
func (r *rewriter) copyValue(path jsontext.Pointer) error {
	if path == r.target && !r.drop {
		r.found = true
		if err := r.dec.SkipValue(); err != nil {
			return err
		}
		return r.enc.WriteToken(jsontext.Null)
	}
	switch r.dec.PeekKind() {
	case '{':
		if err := r.copyToken(); err != nil {
			return err
		}
		for r.dec.PeekKind() != '}' {
			name, err := r.dec.ReadToken()
			if err != nil {
				return err
			}
			p := path.AppendToken(name.String())
			if p == r.target && r.drop {
				r.found = true
				if err := r.dec.SkipValue(); err != nil {
					return err
				}
				continue
			}
			if err := r.enc.WriteToken(name); err != nil {
				return err
			}
			if err := r.copyValue(p); err != nil {
				return err
			}
		}
		return r.copyToken()
	case '[':
		if err := r.copyToken(); err != nil {
			return err
		}
		for i := 0; r.dec.PeekKind() != ']'; i++ {
			if err := r.copyValue(path.AppendToken(strconv.Itoa(i))); err != nil {
				return err
			}
		}
		return r.copyToken()
	}
	v, err := r.dec.ReadValue()
	if err != nil {
		return err
	}
	return r.enc.WriteValue(v)
}

// copyToken copies the next token.
func (r *rewriter) copyToken() error {
	tok, err := r.dec.ReadToken()
	if err != nil {
		return err
	}
	return r.enc.WriteToken(tok)
}

// pointerPath turns a JSON pointer ("/spec/rules/0/to") into a field path
// below prefix ("spec.rules[0].to"). A token of digits is taken for a list
// index; a key that is not a plain word is quoted (`labels["a.b/c"]`).
func pointerPath(prefix string, ptr jsontext.Pointer) string {
	path := prefix
	for tok := range ptr.Tokens() {
		if isIndex(tok) {
			path += "[" + tok + "]"
		} else {
			path = keyPath(path, tok)
		}
	}
	return path
}

// keyPath appends the map or struct key to path: "a.b", or `a["b c"]` for a
// key that is not a plain word.
func keyPath(path, key string) string {
	switch {
	case !isPlainKey(key):
		return path + "[" + strconv.Quote(key) + "]"
	case path == "":
		return key
	}
	return path + "." + key
}

// joinPath joins a prefix ("items[2]") and a path from an object's root
// ("spec.rules[0]").
func joinPath(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	case path[0] == '[':
		return prefix + path
	}
	return prefix + "." + path
}

// isIndex reports whether tok is a list index: digits, without a leading
// zero.
func isIndex(tok string) bool {
	if tok == "" || len(tok) > 1 && tok[0] == '0' {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return false
		}
	}
	return true
}

// isPlainKey reports whether key can be written after a dot in a path.
func isPlainKey(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// refOf returns "namespace/name" of an object, with the default namespace
// when none is set, or "" when the object has no name yet.
func refOf(o Object) string {
	if o == nil {
		return ""
	}
	m := o.GetMetadata()
	if m.Name == "" {
		return ""
	}
	ns := m.Namespace
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	return ns + "/" + m.Name
}

// document is one document of a stream.
type document struct {
	// line is the line of the stream the document starts on, from 1.
	line int
	data []byte
	// err is a problem found while splitting, such as a bad separator.
	err error
}

// splitDocuments splits a stream into documents at lines that start with
// "---" followed only by blanks or a comment, as Kubernetes' YAMLReader
// does; a separator line with content after it is an error of the
// document that follows. Documents that are empty or hold only comments are
// left out. A JSON document never holds such a line, since a JSON string
// cannot span lines.
func splitDocuments(data []byte) []document {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
	var (
		docs  []document
		cur   = document{line: 1}
		start = 0
	)
	flush := func(end int) {
		cur.data = data[start:end]
		if cur.err != nil || !isBlankDocument(cur.data) {
			docs = append(docs, cur)
		}
	}
	for pos, line := 0, 1; pos < len(data); line++ {
		end := len(data)
		if i := bytes.IndexByte(data[pos:], '\n'); i >= 0 {
			end = pos + i + 1
		}
		if rest, ok := bytes.CutPrefix(data[pos:end], []byte("---")); ok {
			rest = bytes.TrimSpace(rest)
			var err error
			if len(rest) > 0 && rest[0] != '#' {
				err = fmt.Errorf("line %d: content after the document separator \"---\" is not supported: put it on the next line", line)
			}
			flush(pos)
			cur, start = document{line: line + 1, err: err}, end
		}
		pos = end
	}
	flush(len(data))
	return docs
}

// isBlankDocument reports whether a document holds only blank lines and
// comments.
func isBlankDocument(data []byte) bool {
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}

// toJSON converts one document to JSON. A document that starts like JSON is
// checked as JSON (duplicate names are errors), and falls back to YAML,
// which also has a '{' form; anything else is YAML, converted with
// duplicate keys rejected. Syntax errors give the line in the stream, from
// firstLine, the line the document starts on.
func toJSON(data []byte, firstLine int) ([]byte, error) {
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		err := checkJSON(data)
		if err == nil {
			return data, nil
		}
		js, yerr := yaml.YAMLToJSONStrict(data)
		if yerr == nil {
			return js, nil
		}
		if ferr := nonFiniteError(data, firstLine); ferr != nil {
			return nil, ferr
		}
		return nil, jsonSyntaxError(data, firstLine, err)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		if ferr := nonFiniteError(data, firstLine); ferr != nil {
			return nil, ferr
		}
		return nil, yamlSyntaxError(err, firstLine)
	}
	return js, nil
}

// maxYAMLDepth bounds how deep nonFiniteError looks.
const maxYAMLDepth = 100

// nonFiniteError names the first field of a YAML document whose value is
// a number JSON cannot hold (.inf, -.inf, .nan), which the conversion
// refuses without saying where; nil when there is none.
func nonFiniteError(data []byte, firstLine int) error {
	var root yaml3.Node
	if err := yaml3.Unmarshal(data, &root); err != nil {
		return nil
	}
	path, n := findNonFinite(&root, "", 0)
	if n == nil {
		return nil
	}
	v := n.Value
	if len(v) > 32 {
		v = v[:32] + "..."
	}
	return FieldErrors{{Path: path, Msg: fmt.Sprintf("%s (line %d) is not a finite number", v, firstLine+n.Line-1)}}
}

// findNonFinite returns the path and node of the first non-finite float
// under n, at path. Aliases are not followed.
func findNonFinite(n *yaml3.Node, path string, depth int) (string, *yaml3.Node) {
	if n == nil || depth > maxYAMLDepth {
		return "", nil
	}
	switch n.Kind {
	case yaml3.DocumentNode:
		for _, c := range n.Content {
			if p, found := findNonFinite(c, path, depth+1); found != nil {
				return p, found
			}
		}
	case yaml3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if p, found := findNonFinite(n.Content[i+1], keyPath(path, n.Content[i].Value), depth+1); found != nil {
				return p, found
			}
		}
	case yaml3.SequenceNode:
		for i, c := range n.Content {
			if p, found := findNonFinite(c, path+"["+strconv.Itoa(i)+"]", depth+1); found != nil {
				return p, found
			}
		}
	case yaml3.ScalarNode:
		var f float64
		if n.ShortTag() == "!!float" && n.Decode(&f) == nil && (math.IsInf(f, 0) || math.IsNaN(f)) {
			return path, n
		}
	}
	return "", nil
}

// checkJSON checks that data is exactly one JSON value without duplicate
// object member names.
func checkJSON(data []byte) error {
	dec := jsontext.NewDecoder(bytes.NewReader(data))
	if _, err := dec.ReadValue(); err != nil {
		return err
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return err
	}
	return nil
}

// jsonSyntaxError rewrites an error of checkJSON with the line in the
// stream.
func jsonSyntaxError(data []byte, firstLine int, err error) error {
	var se *jsontext.SyntacticError
	if !errors.As(err, &se) {
		return fmt.Errorf("json: %v", err)
	}
	off := int(min(max(se.ByteOffset, 0), int64(len(data))))
	line := firstLine + bytes.Count(data[:off], []byte("\n"))
	var msg string
	if errors.Is(se.Err, jsontext.ErrDuplicateName) {
		msg = fmt.Sprintf("duplicate key %q", se.JSONPointer.LastToken())
		if parent := pointerPath("", se.JSONPointer.Parent()); parent != "" {
			msg += " in " + parent
		}
	} else {
		msg = fmt.Sprint(se.Err)
	}
	return fmt.Errorf("json: line %d: %s", line, msg)
}

// yamlSyntaxError rewrites an error of YAMLToJSONStrict: line numbers are
// made lines of the stream, and duplicate keys are called so. The YAML
// parser leaves out the line of a problem on the document's first line.
func yamlSyntaxError(err error, firstLine int) error {
	msg := err.Error()
	rest, isYAML := strings.CutPrefix(msg, "yaml: ")
	switch {
	case !isYAML:
		// A conversion error without position, such as a NaN.
		return fmt.Errorf("yaml: %s", strings.TrimPrefix(msg, "json: "))
	case strings.HasPrefix(rest, "unmarshal errors:"):
		var probs []string
		for p := range strings.SplitSeq(strings.TrimPrefix(rest, "unmarshal errors:"), "\n") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			if strings.HasSuffix(p, " already set in map") {
				p = strings.Replace(strings.TrimSuffix(p, " already set in map"), ": key ", ": duplicate key ", 1)
			}
			probs = append(probs, p)
		}
		rest = strings.Join(probs, "; ")
	case !strings.HasPrefix(rest, "line "):
		rest = "line 1: " + rest
	}
	return fmt.Errorf("yaml: %s", shiftLines(rest, firstLine-1))
}

// shiftLines adds delta to every "line N" in msg.
func shiftLines(msg string, delta int) string {
	const word = "line "
	var b strings.Builder
	for {
		i := strings.Index(msg, word)
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		i += len(word)
		b.WriteString(msg[:i])
		msg = msg[i:]
		j := 0
		for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' {
			j++
		}
		if n, err := strconv.Atoi(msg[:j]); err == nil {
			b.WriteString(strconv.Itoa(n + delta))
			msg = msg[j:]
		}
	}
}

// checkTypeMeta checks that o says the apiVersion and the kind of its Go
// type, so that what is marshaled decodes again.
func checkTypeMeta(o Object) error {
	if o == nil || reflect.ValueOf(o).IsNil() {
		return errors.New("nil object")
	}
	tm := o.GetTypeMeta()
	for _, k := range knownKinds() {
		if reflect.TypeOf(k.new()) != reflect.TypeOf(o) {
			continue
		}
		if tm.APIVersion != APIVersion || tm.Kind != k.name {
			return fmt.Errorf("%T has apiVersion %q and kind %q, want %q and %q", o, tm.APIVersion, tm.Kind, APIVersion, k.name)
		}
		return nil
	}
	return fmt.Errorf("%T is not a known kind", o)
}

// Marshal returns o as JSON, the form the control plane stores and serves.
// The output is deterministic: fields in declaration order and map keys
// sorted. o's apiVersion and kind must be set.
func Marshal(o Object) ([]byte, error) {
	if err := checkTypeMeta(o); err != nil {
		return nil, fmt.Errorf("marshal: %w", err)
	}
	b, err := json.Marshal(o, json.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("marshal %s %s: %w", o.GetTypeMeta().Kind, Ref(o), err)
	}
	return b, nil
}

// MarshalYAML returns o as YAML, keys sorted, as `bulwark get -o yaml`
// prints it; Decode reads it back as the same object. In the rare case of a
// string that YAML cannot carry (U+007F, U+0085), it returns JSON, which is
// also YAML.
func MarshalYAML(o Object) ([]byte, error) {
	b, err := Marshal(o)
	if err != nil {
		return nil, err
	}
	return toYAML(b), nil
}

// toYAML converts JSON written by Marshal to YAML. The YAML emitter cannot
// carry every string: it rejects U+007F and turns U+0085 into a space. So
// the YAML is read back, and when it does not give the same JSON, toYAML
// returns the JSON itself, which is a YAML document too and which Decode
// reads back exactly.
func toYAML(js []byte) []byte {
	if y, err := yaml.JSONToYAML(js); err == nil && sameJSON(js, y) {
		return y
	}
	return append(bytes.Clone(js), '\n')
}

// sameJSON reports whether the YAML y, converted as Decode converts it, is
// the same JSON value as js.
func sameJSON(js, y []byte) bool {
	back, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return false
	}
	a, b := jsontext.Value(bytes.Clone(js)), jsontext.Value(back)
	if a.Canonicalize() != nil || b.Canonicalize() != nil {
		return false
	}
	return bytes.Equal(a, b)
}

// listDoc is a List document, kubectl style.
type listDoc struct {
	TypeMeta `json:",inline"`
	Items    []Object `json:"items"`
}

// MarshalList returns items as a List document,
// {"apiVersion":"bulwark.dev/v1alpha1","kind":"List","items":[...]}, in JSON
// or, when asYAML is true, in YAML as MarshalYAML writes it. A nil items
// gives an empty list. Every item's apiVersion and kind must be set.
func MarshalList(items []Object, asYAML bool) ([]byte, error) {
	for i, o := range items {
		if err := checkTypeMeta(o); err != nil {
			return nil, fmt.Errorf("marshal list: items[%d]: %w", i, err)
		}
	}
	if items == nil {
		items = []Object{}
	}
	b, err := json.Marshal(listDoc{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindList}, Items: items}, json.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("marshal list: %w", err)
	}
	if !asYAML {
		return b, nil
	}
	return toYAML(b), nil
}

// UnmarshalList reads a List document, JSON or YAML, as MarshalList writes
// it. Items are decoded strictly by their kind, which may be read-only, but
// are not validated: this reads what a control plane serves, not what an
// operator applies. An empty list gives an empty slice.
func UnmarshalList(data []byte) ([]Object, error) {
	docs := splitDocuments(data)
	if len(docs) != 1 {
		return nil, fmt.Errorf("unmarshal list: expected one document, got %d", len(docs))
	}
	if docs[0].err != nil {
		return nil, fmt.Errorf("unmarshal list: %w", docs[0].err)
	}
	js, err := toJSON(docs[0].data, docs[0].line)
	if err != nil {
		return nil, fmt.Errorf("unmarshal list: %w", err)
	}
	kind, errs := readHeader(js, "")
	if len(errs) == 0 && kind != KindList {
		errs.add("kind", "got %q, want %q", kind, KindList)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("unmarshal list: %w", errs)
	}
	items, errs := listItems(js)
	objs := make([]Object, 0, len(items))
	for i, item := range items {
		prefix := "items[" + strconv.Itoa(i) + "]"
		kind, itemErrs := readHeader(item, prefix)
		if len(itemErrs) == 0 {
			var spec kindSpec
			if spec, itemErrs = checkKind(kind, prefix, true); len(itemErrs) == 0 {
				var o Object
				if o, itemErrs = decodeObject(item, spec, prefix, false); len(itemErrs) == 0 {
					objs = append(objs, o)
				}
			}
		}
		errs = append(errs, itemErrs...)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("unmarshal list: %w", errs)
	}
	return objs, nil
}

// listItems strictly decodes a List document and returns its items.
func listItems(js []byte) ([]jsontext.Value, FieldErrors) {
	type rawList struct {
		TypeMeta `json:",inline"`
		Items    []jsontext.Value `json:"items"`
	}
	v, errs := decodeStrict(js, "", func() any { return new(rawList) })
	return v.(*rawList).Items, errs
}
