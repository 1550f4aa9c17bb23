package policycheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"sigs.k8s.io/yaml"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// maxCasesFile is the largest cases file ParseCases reads.
const maxCasesFile = 8 << 20

// Expectations of a Case.
const (
	// ExpectAllow: the request is allowed.
	ExpectAllow = "allow"
	// ExpectDeny: the request is denied (403).
	ExpectDeny = "deny"
	// ExpectReject: the request is refused before authorization (400): a
	// path that normalization rejects, a target that is not origin-form,
	// or a method that is not upper case.
	ExpectReject = "reject"
)

// CasesFile is the document `bulwark policy test --cases` reads:
//
//	cases:
//	- name: web reads users
//	  from: default/web
//	  to: default/api
//	  method: GET
//	  path: /v1/users?x=1
//	  expect: allow
type CasesFile struct {
	// Cases, at least one.
	Cases []Case `json:"cases"`
}

// Case is one request and the decision it must get. Decoding is strict:
// an unknown field is an error naming it.
type Case struct {
	// Name identifies the case in the output; required and unique.
	Name string `json:"name,omitempty"`
	// From is the calling service, "namespace/name" ("name" alone is in
	// namespace "default"). The caller serves this service (from.services
	// matches it). At least one of From and Identity is required.
	From string `json:"from,omitempty"`
	// Identity is the caller's SPIFFE ID. Default:
	// spiffe://<trust domain>/ns/<from's namespace>/sa/<from's name>.
	Identity string `json:"identity,omitempty"`
	// To is the destination service, "namespace/name"; required.
	To string `json:"to"`
	// Method is the HTTP method. Default: GET. A method that is not upper
	// case is rejected by the sidecar (expect: reject).
	Method string `json:"method,omitempty"`
	// Path is the request-target as the caller sends it, with an optional
	// "?query"; required. It is normalized with internal/pathnorm exactly as
	// the sidecar does; a target the sidecar answers with 400 expects
	// reject.
	Path string `json:"path"`
	// Host is the host the caller addressed, without the port. Default:
	// "<name>.<namespace>" of To.
	Host string `json:"host,omitempty"`
	// Port is the port the caller addressed. Default: 80.
	Port int `json:"port,omitempty"`
	// Headers of the request (names are case-insensitive).
	Headers map[string]string `json:"headers,omitempty"`
	// Principal is "<iss>/<sub>" of a validated JWT; "" for a request
	// without a token. Default: iss and sub of Claims, when both are
	// strings.
	Principal string `json:"principal,omitempty"`
	// Claims of the validated JWT (jwt.claims in when conditions).
	// Default, with a Principal: {iss, sub} split at its last '/'.
	Claims map[string]any `json:"claims,omitempty"`
	// IP is the caller's address. Default: unknown, which matches no
	// from.ipBlocks entry.
	IP string `json:"ip,omitempty"`
	// Labels of the destination workload instance (selector.labels match
	// them). Default: none.
	Labels map[string]string `json:"labels,omitempty"`
	// SNI is the server name of the caller's TLS handshake
	// (connection.sni).
	SNI string `json:"sni,omitempty"`
	// Time is when the request arrives (time.now), RFC 3339. Default: the
	// time of the run.
	Time string `json:"time,omitempty"`
	// Expect is allow, deny or reject; required.
	Expect string `json:"expect,omitempty"`
	// Policy, when set, is "namespace/name" of the policy that must decide
	// the case (the matching ALLOW rule's policy for allow, the DENY rule's
	// for a denial by a DENY rule; a denial that no rule decided has none).
	Policy string `json:"policy,omitempty"`
}

// ParseCases reads a cases file (YAML or JSON) strictly and validates every
// case; trustDomain (default "bulwark.local") names default identities,
// which are filled in. The error names every problem by its field path
// ("cases[2].expect: ...").
func ParseCases(data []byte, trustDomain string) ([]Case, error) {
	if len(data) > maxCasesFile {
		return nil, fmt.Errorf("cases file larger than %d bytes", maxCasesFile)
	}
	td, err := parseTrustDomain(trustDomain)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("cases file: %v", err)
	}
	var top struct {
		Cases []json.RawMessage `json:"cases"`
	}
	if err := strictJSON(js, &top); err != nil {
		return nil, fmt.Errorf("cases file: %s", jsonFieldError("", err))
	}
	if len(top.Cases) == 0 {
		return nil, errors.New("cases: at least one case is required")
	}
	var (
		errs  config.FieldErrors
		out   = make([]Case, 0, len(top.Cases))
		names = map[string]int{}
	)
	for i, raw := range top.Cases {
		path := fmt.Sprintf("cases[%d]", i)
		var c Case
		if err := strictJSON(raw, &c); err != nil {
			errs = append(errs, config.FieldError{Path: path, Msg: jsonFieldError(path, err)})
			continue
		}
		errs = append(errs, c.validate(path+".", td)...)
		if strings.TrimSpace(c.Name) == "" {
			errs = append(errs, config.FieldError{Path: path + ".name", Msg: "required"})
		}
		if c.Expect == "" {
			errs = append(errs, config.FieldError{Path: path + ".expect", Msg: "required: allow, deny or reject"})
		}
		if c.Name != "" {
			if j, dup := names[c.Name]; dup {
				errs = append(errs, config.FieldError{Path: path + ".name", Msg: fmt.Sprintf("%q is also the name of cases[%d]", c.Name, j)})
			}
			names[c.Name] = i
		}
		out = append(out, c)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// parseTrustDomain parses a trust domain, "" meaning bulwark.local.
func parseTrustDomain(s string) (spiffeid.TrustDomain, error) {
	if s == "" {
		s = "bulwark.local"
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: %v", s, err)
	}
	return td, nil
}

// strictJSON decodes one JSON value into v, refusing unknown fields and
// trailing data.
func strictJSON(js []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// jsonFieldError rewrites an encoding/json error as "field: problem"
// relative to path.
func jsonFieldError(path string, err error) string {
	join := func(f string) string {
		if path == "" {
			return f
		}
		return path + "." + f
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("%s: expected %s, got a JSON %s", join(te.Field), te.Type, te.Value)
	}
	if f, ok := strings.CutPrefix(err.Error(), `json: unknown field "`); ok {
		return join(strings.TrimSuffix(f, `"`)) + ": unknown field"
	}
	if path == "" {
		return err.Error()
	}
	return path + ": " + err.Error()
}

// Check validates a case built in code (such as the request of `bulwark
// policy explain`) as ParseCases does, except that Name and Expect may be
// empty, and fills in its defaults; trustDomain "" is bulwark.local. The
// error is a config.FieldErrors whose paths are the field names ("from",
// "ip").
func (c *Case) Check(trustDomain string) error {
	td, err := parseTrustDomain(trustDomain)
	if err != nil {
		return err
	}
	if errs := c.validate("", td); len(errs) > 0 {
		return errs
	}
	return nil
}

// validate checks c, fills in its defaults and returns its problems, each
// path prefixed with prefix.
func (c *Case) validate(prefix string, td spiffeid.TrustDomain) config.FieldErrors {
	var errs config.FieldErrors
	add := func(field, format string, args ...any) {
		errs = append(errs, config.FieldError{Path: prefix + field, Msg: fmt.Sprintf(format, args...)})
	}
	var from identity.ServiceRef
	if c.From != "" {
		ref, err := identity.ParseServiceRef(c.From, identity.DefaultNamespace)
		if err != nil {
			add("from", "%v", err)
		} else {
			from, c.From = ref, ref.String()
		}
	}
	switch {
	case c.Identity != "":
		id, err := spiffeid.FromString(c.Identity)
		if err != nil {
			add("identity", "%q is not a SPIFFE ID: %v", c.Identity, err)
		} else if w, err := identity.ParseWorkloadID(id); err == nil && !from.IsZero() && w.Namespace != from.Namespace {
			add("identity", "namespace %q differs from from's %q: an identity serves only services of its own namespace", w.Namespace, from.Namespace)
		}
	case c.From == "":
		add("from", "required unless identity is given")
	case !from.IsZero():
		id, err := identity.WorkloadID(td, from.Namespace, from.Name)
		if err != nil {
			add("from", "%v", err)
		} else {
			c.Identity = id.String()
		}
	}
	if c.To == "" {
		add("to", "required (namespace/name)")
	} else if ref, err := identity.ParseServiceRef(c.To, identity.DefaultNamespace); err != nil {
		add("to", "%v", err)
	} else {
		c.To = ref.String()
		if c.Host == "" {
			c.Host = ref.Host()
		}
	}
	if c.Method == "" {
		c.Method = http.MethodGet
	} else if !isToken(c.Method) {
		add("method", "%q is not an HTTP method token", c.Method)
	}
	if c.Path == "" {
		add("path", "required (the request-target, such as /v1/users?x=1)")
	}
	if c.Host != strings.ToLower(c.Host) || strings.Contains(c.Host, ":") {
		add("host", "%q must be lower case, without a port (use port)", c.Host)
	}
	if c.Port == 0 {
		c.Port = 80
	} else if c.Port < 1 || c.Port > 65535 {
		add("port", "%d is not a port (1 to 65535)", c.Port)
	}
	for k := range c.Headers {
		if !isToken(k) {
			add("headers", "%q is not a header name", k)
		}
	}
	if c.Principal == "" {
		iss, _ := c.Claims["iss"].(string)
		sub, _ := c.Claims["sub"].(string)
		if iss != "" && sub != "" {
			c.Principal = iss + "/" + sub
		}
	} else if i := strings.LastIndexByte(c.Principal, '/'); i <= 0 || i == len(c.Principal)-1 {
		add("principal", `%q must be "<iss>/<sub>"`, c.Principal)
	} else if c.Claims == nil {
		c.Claims = map[string]any{"iss": c.Principal[:i], "sub": c.Principal[i+1:]}
	}
	if c.IP != "" {
		if _, err := netip.ParseAddr(c.IP); err != nil {
			add("ip", "%q is not an IP address", c.IP)
		}
	}
	for k, v := range c.Labels {
		if err := config.ValidateLabel(k, v); err != nil {
			add("labels", "%v", err)
		}
	}
	if c.Time != "" {
		if _, err := time.Parse(time.RFC3339, c.Time); err != nil {
			add("time", "%q is not an RFC 3339 time such as 2026-03-01T12:00:00Z", c.Time)
		}
	}
	switch c.Expect {
	case ExpectAllow, ExpectDeny, ExpectReject, "":
	default:
		add("expect", "unsupported value %q: must be allow, deny or reject", c.Expect)
	}
	if c.Policy != "" {
		if ref, err := identity.ParseServiceRef(c.Policy, ""); err != nil || !strings.Contains(c.Policy, "/") {
			add("policy", `%q must be "namespace/name" of a policy`, c.Policy)
		} else {
			c.Policy = ref.String()
		}
	}
	return errs
}

// isToken reports whether s is a non-empty RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
