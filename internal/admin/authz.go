package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Authorization of admin API requests (docs/rbac.md).
//
// Every route but /healthz and /readyz checks, before it reads or changes
// anything, that the request's operator may do the route's verb on its kind
// in its namespace (rbac.MeshWide for mesh-wide actions), with
// Server.authorize, authorizeRefs, authorizeApply or scope. The rights are
// those of the Roles and RoleBindings committed when the request arrives:
// the Authorizer is cached, but every request first checks the keys and
// revisions of the RBAC resources in the store (rbacCache), so a removed
// right stops working at the next request and no cache keeps it alive. As
// a guard against a route that forgets to ask, the operator wrapper refuses
// to send a successful answer (status below 400) for a request that was
// never authorized: it answers 500 instead and logs an error.

// authzState records, per request, whether the request was authorized.
type authzState struct {
	authorized bool
}

type authzKey struct{}

// withAuthzState returns ctx carrying a fresh authzState.
func withAuthzState(ctx context.Context) (context.Context, *authzState) {
	st := &authzState{}
	return context.WithValue(ctx, authzKey{}, st), st
}

// markAuthorized records that the request of ctx was authorized.
func markAuthorized(ctx context.Context) {
	if st, ok := ctx.Value(authzKey{}).(*authzState); ok {
		st.authorized = true
	}
}

// authorizer returns the Authorizer of the Roles and RoleBindings stored
// now. The built-in admin needs none: it gets a nil Authorizer, which
// allows it everything.
func (s *Server) authorizer(ctx context.Context, op string) (*rbac.Authorizer, error) {
	if op == rbac.BuiltinAdmin {
		return nil, nil
	}
	st, err := s.rbacState(ctx)
	if err != nil {
		return nil, err
	}
	return st.auth, nil
}

// rbacState returns the RBAC resources stored now: from the cache, or
// without a Config.Store decoded from the resource store.
func (s *Server) rbacState(ctx context.Context) (*rbacState, error) {
	if s.rbac != nil {
		return s.rbac.get(ctx)
	}
	roles, err := listAs[*config.Role](ctx, s.cfg.Resources, config.KindRole)
	if err != nil {
		return nil, err
	}
	bindings, err := listAs[*config.RoleBinding](ctx, s.cfg.Resources, config.KindRoleBinding)
	if err != nil {
		return nil, err
	}
	return &rbacState{auth: rbac.New(roles, bindings), roles: roles}, nil
}

// listAs lists every resource of kind as T.
func listAs[T config.Object](ctx context.Context, res *resource.Store, kind string) ([]T, error) {
	objs, _, err := res.List(ctx, kind, "")
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		t, ok := o.(T)
		if !ok {
			return nil, fmt.Errorf("authorize: stored %s %s is a %T", kind, config.Ref(o), o)
		}
		out = append(out, t)
	}
	return out, nil
}

// authorize checks that op may do verb on kind in namespace (rbac.MeshWide
// for a mesh-wide action). A denial is audited and returned as a 403
// apiError; nil means the request may go on.
func (s *Server) authorize(ctx context.Context, op, verb, kind, namespace string) error {
	a, err := s.authorizer(ctx, op)
	if err != nil {
		return err
	}
	return s.check(ctx, a, op, verb, kind, namespace)
}

// check is authorize with an Authorizer already built.
func (s *Server) check(ctx context.Context, a *rbac.Authorizer, op, verb, kind, namespace string) error {
	allowed := a.Allowed(op, verb, kind, namespace)
	s.audit(ctx, op, verb, kind, namespace, allowed)
	if !allowed {
		return forbidden(denial(op, verb, kind, namespace))
	}
	markAuthorized(ctx)
	return nil
}

// scope returns the namespaces in which op may do verb on kind, or
// everywhere=true, for a route that filters its answer by namespace. When
// there is none it audits the denial and returns a 403 apiError.
func (s *Server) scope(ctx context.Context, op, verb, kind string) (namespaces []string, everywhere bool, err error) {
	a, err := s.authorizer(ctx, op)
	if err != nil {
		return nil, false, err
	}
	namespaces, everywhere = a.Namespaces(op, verb, kind)
	if !everywhere && len(namespaces) == 0 {
		s.audit(ctx, op, verb, kind, rbac.MeshWide, false)
		return nil, false, forbidden(fmt.Sprintf("operator %s may not %s %s in any namespace", op, verb, kind))
	}
	s.audit(ctx, op, verb, kind, rbac.MeshWide, true)
	markAuthorized(ctx)
	return namespaces, everywhere, nil
}

// authorizeRefs checks that op may do verb on every resource of refs.
// Denials are all reported in the one 403: nothing is done.
func (s *Server) authorizeRefs(ctx context.Context, op, verb string, refs []resource.Result) error {
	a, err := s.authorizer(ctx, op)
	if err != nil {
		return err
	}
	var denied, details []string
	for i, ref := range refs {
		if err := s.check(ctx, a, op, verb, ref.Kind, ref.Namespace); err != nil {
			denied = append(denied, err.Error())
			details = append(details, fmt.Sprintf("items[%d] (%s %s/%s): %v", i, ref.Kind, ref.Namespace, ref.Name, err))
		}
	}
	if len(denied) == 0 {
		return nil
	}
	return deniedAll(denied, details, "nothing was "+verb+"d")
}

// deniedAll makes one 403 of the denials of a request on several
// resources: the first denial, and every one in the details when there
// were several resources.
func deniedAll(denied, details []string, consequence string) error {
	msg := denied[0]
	if len(denied) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(denied)-1)
	}
	if len(details) == 1 {
		details = nil
	}
	return &apiError{status: http.StatusForbidden, msg: msg + "; " + consequence, details: details}
}

// audit is the one place every authorization decision goes through: it
// logs denials at Warn (and allowed requests at Debug) with the operator,
// verb, kind and namespace. It is where the tamper-evident audit log will
// hook in.
func (s *Server) audit(ctx context.Context, op, verb, kind, namespace string, allowed bool) {
	ns := namespace
	if ns == rbac.MeshWide {
		ns = "*"
	}
	if !allowed {
		s.logger.WarnContext(ctx, "admin request denied", telemetry.KeyOperator, op, telemetry.KeyVerb, verb,
			telemetry.KeyKind, kind, telemetry.KeyNamespace, ns)
		where := "in namespace " + ns
		if namespace == rbac.MeshWide {
			where = "mesh-wide"
		}
		s.failure(ctx, audit.FailureForbidden, "", op, "may not "+verb+" "+kind+" "+where)
		return
	}
	s.logger.DebugContext(ctx, "admin request authorized", telemetry.KeyOperator, op, telemetry.KeyVerb, verb,
		telemetry.KeyKind, kind, telemetry.KeyNamespace, ns)
}

// denial is the message of a denied request.
func denial(op, verb, kind, namespace string) string {
	if namespace == rbac.MeshWide {
		return fmt.Sprintf("operator %s may not %s %s mesh-wide", op, verb, kind)
	}
	return fmt.Sprintf("operator %s may not %s %s in namespace %s", op, verb, kind, namespace)
}

func forbidden(msg string) error { return &apiError{status: http.StatusForbidden, msg: msg} }

// guardedWriter refuses to send a successful answer for a request that was
// never authorized (see the comment at the top of this file).
type guardedWriter struct {
	http.ResponseWriter
	s       *Server
	r       *http.Request
	state   *authzState
	wrote   bool
	blocked bool
}

// WriteHeader implements http.ResponseWriter.
func (g *guardedWriter) WriteHeader(code int) {
	if g.wrote {
		return
	}
	g.wrote = true
	if code < http.StatusBadRequest && !g.state.authorized {
		g.blocked = true
		g.s.logger.Error("admin route answered without authorization", telemetry.KeyPath, g.r.URL.Path)
		writeError(g.ResponseWriter, fmt.Errorf("route %s was not authorized", g.r.URL.Path))
		return
	}
	g.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (g *guardedWriter) Write(b []byte) (int, error) {
	if !g.wrote {
		g.WriteHeader(http.StatusOK)
	}
	if g.blocked {
		return 0, fmt.Errorf("admin: answer of %s blocked: not authorized", g.r.URL.Path)
	}
	return g.ResponseWriter.Write(b)
}

// authorizeApply checks that op may apply every object (verb apply on its
// kind in its namespace), and that no Role or RoleBinding among them would
// grant rights op does not hold itself (no escalation: see
// rbac.Authorizer.Missing). A RoleBinding to a Role that exists neither in
// objs nor in the store could later grant anything, so it needs every
// right in its namespace. Every denial is reported in the one 403, and
// nothing is applied.
func (s *Server) authorizeApply(ctx context.Context, op string, objs []config.Object) error {
	if op == rbac.BuiltinAdmin {
		for _, o := range objs {
			s.audit(ctx, op, config.VerbApply, o.GetTypeMeta().Kind, o.GetMetadata().Namespace, true)
		}
		markAuthorized(ctx)
		return nil
	}
	st, err := s.rbacState(ctx)
	if err != nil {
		return err
	}
	a := st.auth
	type ref struct{ ns, name string }
	// The Roles as they will be after the apply.
	after := map[ref][]config.RoleRule{}
	for _, r := range st.roles {
		after[ref{r.Metadata.Namespace, r.Metadata.Name}] = r.Spec.Rules
	}
	for _, o := range objs {
		if r, ok := o.(*config.Role); ok {
			after[ref{r.Metadata.Namespace, r.Metadata.Name}] = r.Spec.Rules
		}
	}
	var denied, details []string
	deny := func(i int, msg string) {
		o := objs[i]
		denied = append(denied, msg)
		details = append(details, fmt.Sprintf("document %d (%s %s): %s", i+1, o.GetTypeMeta().Kind, config.Ref(o), msg))
	}
	for i, o := range objs {
		kind, m := o.GetTypeMeta().Kind, o.GetMetadata()
		if err := s.check(ctx, a, op, config.VerbApply, kind, m.Namespace); err != nil {
			deny(i, err.Error())
			continue
		}
		var grants []config.RoleRule
		switch o := o.(type) {
		case *config.Role:
			grants = o.Spec.Rules
		case *config.RoleBinding:
			var ok bool
			if grants, ok = after[ref{m.Namespace, o.Spec.Role}]; !ok {
				grants = []config.RoleRule{{Verbs: []string{config.Wildcard}, Kinds: []string{config.Wildcard}}}
			}
		default:
			continue
		}
		if missing := a.Missing(op, grants, m.Namespace); len(missing) > 0 {
			s.audit(ctx, op, config.VerbApply, kind, m.Namespace, false)
			deny(i, fmt.Sprintf("operator %s may not grant rights it does not hold: %s", op, rightsText(missing, m.Namespace)))
		}
	}
	if len(denied) == 0 {
		return nil
	}
	return deniedAll(denied, details, "nothing was applied")
}

// rightsText lists rights as "revoke Proxy, get CA in namespace team-a".
func rightsText(rights []rbac.Right, namespace string) string {
	parts := make([]string, len(rights))
	for i, r := range rights {
		parts[i] = r.Verb + " " + r.Kind
	}
	where := "in namespace " + namespace
	if namespace == config.RootNamespace {
		where = "mesh-wide"
	}
	return strings.Join(parts, ", ") + " " + where
}
