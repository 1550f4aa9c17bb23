// Package admin owns the control plane's admin API, the HTTPS surface every
// CLI command and operator tool talks to: operator authentication by client
// certificate, resources (apply, get, delete), the read-only views of proxies
// and services, and join tokens. It also owns the operator credential file
// format and the Go client of the API.
//
// Every request needs an operator client certificate signed by the operator
// CA (checked in the TLS handshake; a workload SVID fails there), except
// /healthz and /readyz. A request without one gets 401. Every request is
// then authorized (internal/rbac, docs/rbac.md) before it reads or changes
// anything: a denial is audited and answered 403. Request bodies are
// limited in size; every write is logged with the operator's name.
//
// Routes (JSON):
//
//	POST   /v1/apply[?force=true]                 {"items":[doc...]} -> results (all or nothing)
//	POST   /v1/delete[?force=true]                {"items":[{kind,namespace,name}...]} -> results
//	GET    /v1/{plural}[?namespace=NS]             -> {"kind":"List","items":[...]}
//	GET    /v1/namespaces/{ns}/{plural}/{name}     -> one object
//	GET    /v1/denials[?namespace=NS][&since=15m]  -> {"kind":"List","items":[Denial...]}
//	GET    /v1/edges[?namespace=NS][&since=15m]    -> {"kind":"List","items":[Edge...]}
//	GET    /v1/alerts[?namespace=NS][&since=15m]   -> {"kind":"List","items":[Alert...]}
//	DELETE /v1/namespaces/{ns}/{plural}/{name}     -> result (also ?force=true)
//	POST   /v1/tokens                             {"service","identity","ttl"} -> {"token","expiresAt",...}
//	GET    /v1/ca                                  -> CAStatus
//	POST   /v1/ca/rotate                          {"target":"root"|"intermediate"} -> CAStatus
//	GET    /v1/ca/jwks                             -> the JWT-SVID bundle (JWKS)
//	POST   /v1/proxies/revoke                     {"namespace","service","instance"} -> registry.Revoked
//	POST   /v1/operators                          {"name","csr","ttl"} -> {"certificate","ca",...}
package admin

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// maxBody is the largest request body accepted.
const maxBody = 4 << 20

// Config configures the admin API handler.
type Config struct {
	// Resources, Registry and Tokens are required.
	Resources *resource.Store
	Registry  *registry.Registry
	Tokens    *jointoken.JoinTokens
	// Store is the store under Resources. With it, the Authorizer of the
	// Roles and RoleBindings is cached and checked against their store
	// revisions on every request; without it (nil), they are decoded
	// on every request. Either way a request never sees stale rights.
	Store store.Store
	// TrustDomain names identities in views.
	TrustDomain string
	// Pin is the root CA pin embedded in created join tokens; "" for none.
	Pin func() string
	// CA serves `bulwark ca status/rotate`; nil answers 501.
	CA CA
	// Operators signs the certificates of new operators (POST
	// /v1/operators); nil answers 501.
	Operators OperatorSigner
	// Denials lists the denials proxies reported (GET /v1/denials); nil
	// answers 501.
	Denials DenialSource
	// Edges lists the service graph's edges (GET /v1/edges); nil answers
	// 501.
	Edges EdgeSource
	// Alerts lists the alerts that fired (GET /v1/alerts); nil answers
	// 501.
	Alerts AlertSource
	// Audit is the audit log (docs/audit.md): the non-resource writes
	// append their entries to it before they change anything, and the
	// /v1/audit routes read it. Resources must then be the same log's
	// resource.Store.WithAudit. Nil: nothing is audited, and the audit
	// routes answer 501.
	Audit AuditLog
	// Logins issues the dashboard's one-time login links (POST
	// /v1/dashboard/login); nil answers 501.
	Logins LoginIssuer
	// Failures receives failed authentications and RBAC denials; nil
	// drops them.
	Failures FailureRecorder
	// Logger, default discard.
	Logger *slog.Logger
}

// Server is the admin API handler.
type Server struct {
	cfg    Config
	logger *slog.Logger
	mux    *http.ServeMux
	// rbac caches the RBAC resources when Config.Store is set.
	rbac *rbacCache
	// unauthenticated counts requests without an operator certificate:
	// only the 1st, 2nd, 4th, 8th... are logged, so that anonymous
	// clients cannot flood the log (the audit log counts them all).
	unauthenticated atomic.Int64
}

// New returns the admin API handler.
func New(cfg Config) (*Server, error) {
	if cfg.Resources == nil || cfg.Registry == nil || cfg.Tokens == nil {
		return nil, errors.New("admin: resources, registry and tokens are required")
	}
	s := &Server{cfg: cfg, logger: telemetry.OrDiscard(cfg.Logger), mux: http.NewServeMux()}
	if cfg.Store != nil {
		s.rbac = &rbacCache{st: cfg.Store}
	}
	s.mux.HandleFunc("GET /healthz", s.health)
	s.mux.HandleFunc("GET /readyz", s.health)
	s.mux.Handle("POST /v1/apply", s.operator(s.apply))
	s.mux.Handle("POST /v1/delete", s.operator(s.deleteMany))
	s.mux.Handle("GET /v1/{plural}", s.operator(s.list))
	s.mux.Handle("GET /v1/denials", s.operator(s.serveView(config.KindDenial)))
	s.mux.Handle("GET /v1/edges", s.operator(s.serveView(config.KindEdge)))
	s.mux.Handle("GET /v1/alerts", s.operator(s.serveView(config.KindAlert)))
	s.mux.Handle("GET /v1/namespaces/{ns}/{plural}/{name}", s.operator(s.get))
	s.mux.Handle("DELETE /v1/namespaces/{ns}/{plural}/{name}", s.operator(s.deleteOne))
	s.mux.Handle("POST /v1/tokens", s.operator(s.createToken))
	s.mux.Handle("GET /v1/ca", s.operator(s.caStatus))
	s.mux.Handle("POST /v1/ca/rotate", s.operator(s.caRotate))
	s.mux.Handle("GET /v1/ca/jwks", s.operator(s.jwks))
	s.mux.Handle("POST /v1/proxies/revoke", s.operator(s.revoke))
	s.mux.Handle("POST /v1/operators", s.operator(s.createOperator))
	s.mux.Handle("GET /v1/audit", s.operator(s.auditList))
	s.mux.Handle("GET /v1/audit/verify", s.operator(s.auditVerify))
	s.mux.Handle("GET /v1/audit/export", s.operator(s.auditExport))
	s.policyRoutes()
	s.dashboardRoutes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, err := operatorName(r); err != nil {
			s.failure(r.Context(), audit.FailureOperator, r.RemoteAddr, "", err.Error())
			writeError(w, errUnauthenticated)
			return
		}
		writeError(w, &apiError{status: http.StatusNotFound, msg: "no such route: " + r.Method + " " + r.URL.Path})
	})
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

type operatorKey struct{}

// operator wraps a handler that needs an authenticated operator. The
// handler must authorize the request (authorize, authorizeRefs,
// authorizeApply or scope) before it answers with success: see authz.go.
func (s *Server) operator(h func(w http.ResponseWriter, r *http.Request, op string) error) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		op, err := operatorName(r)
		if err != nil {
			if n := s.unauthenticated.Add(1); n&(n-1) == 0 {
				// The route's pattern, not the path: an unauthenticated
				// client chooses the path, and it may carry anything.
				s.logger.Warn("admin request without operator certificate", telemetry.KeyRemote, r.RemoteAddr, telemetry.KeyRoute, r.Pattern,
					telemetry.KeyCount, n)
			}
			s.failure(r.Context(), audit.FailureOperator, r.RemoteAddr, "", err.Error())
			writeError(rw, errUnauthenticated)
			return
		}
		r.Body = http.MaxBytesReader(rw, r.Body, maxBody)
		ctx := audit.WithRequester(r.Context(), audit.Requester{Actor: op, Source: audit.SourceIP(r.RemoteAddr)})
		ctx, st := withAuthzState(ctx)
		r = r.WithContext(ctx)
		w := &guardedWriter{ResponseWriter: rw, s: s, r: r, state: st}
		if err := h(w, r, op); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status >= 500 {
				s.logger.Error("admin request failed", telemetry.KeyOperator, op, telemetry.KeyPath, r.URL.Path, telemetry.KeyErr, err)
			}
			writeError(w, err)
		}
	})
}

// operatorName returns the operator of a request: the one ServeOperator
// was given, or the one of the client certificate the TLS layer verified
// against the operator CA.
func operatorName(r *http.Request) (string, error) {
	if op, ok := r.Context().Value(operatorKey{}).(string); ok && op != "" {
		return op, nil
	}
	return CertificateOperator(r)
}

// CertificateOperator returns the operator of a request whose client
// certificate the TLS layer verified against the operator CA, or an error
// when it has none.
func CertificateOperator(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return "", errUnauthenticated
	}
	return ca.OperatorName(r.TLS.PeerCertificates[0])
}

// ServeOperator serves r as a request of operator, for a trusted
// in-process caller that authenticated the operator itself (the
// dashboard's sessions). The request is then authorized, audited and
// answered exactly as one made with that operator's client certificate.
func (s *Server) ServeOperator(w http.ResponseWriter, r *http.Request, operator string) {
	if operator == "" {
		writeError(w, errUnauthenticated)
		return
	}
	s.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), operatorKey{}, operator)))
}

// ApplyRequest is the body of POST /v1/apply.
type ApplyRequest struct {
	Items []json.RawMessage `json:"items"`
}

// ResultList is the answer of apply and delete.
type ResultList struct {
	Results []resource.Result `json:"results"`
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request, op string) error {
	var req ApplyRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if len(req.Items) == 0 {
		return badRequest("items: at least one document is required")
	}
	objs := make([]config.Object, 0, len(req.Items))
	var docErrs config.DocumentErrors
	for i, raw := range req.Items {
		o, err := config.DecodeObject(raw)
		if err != nil {
			var de *config.DocumentError
			if errors.As(err, &de) {
				de.Index = i + 1
				docErrs = append(docErrs, de)
			} else {
				docErrs = append(docErrs, &config.DocumentError{Index: i + 1, Err: err})
			}
			continue
		}
		kind := o.GetTypeMeta().Kind
		if !config.IsApplicable(kind) {
			docErrs = append(docErrs, &config.DocumentError{Index: i + 1, Kind: kind, Ref: config.Ref(o),
				Err: fmt.Errorf("kind: %s cannot be applied to a control plane", kind)})
			continue
		}
		objs = append(objs, o)
	}
	if len(docErrs) > 0 {
		return &apiError{status: http.StatusUnprocessableEntity, msg: "invalid documents; nothing was applied", details: docErrDetails(docErrs)}
	}
	if err := s.authorizeApply(r.Context(), op, objs); err != nil {
		return err
	}
	if err := s.checkTraffic(r, op, objs); err != nil {
		return err
	}
	if err := s.guardLockout(r, op, objs, nil); err != nil {
		return err
	}
	results, err := s.cfg.Resources.Apply(r.Context(), objs)
	if errors.Is(err, resource.ErrDuplicate) {
		return badRequest(err.Error() + "; nothing was applied")
	}
	if err != nil {
		return err
	}
	for _, res := range results {
		s.logger.Info("resource applied", telemetry.KeyOperator, op, telemetry.KeyKind, res.Kind,
			telemetry.KeyNamespace, res.Namespace, telemetry.KeyName, res.Name, telemetry.KeyDetail, string(res.Outcome))
	}
	return writeJSON(w, http.StatusOK, ResultList{Results: results})
}

// DeleteRequest is the body of POST /v1/delete.
type DeleteRequest struct {
	Items []resource.Result `json:"items"`
}

func (s *Server) deleteMany(w http.ResponseWriter, r *http.Request, op string) error {
	var req DeleteRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if len(req.Items) == 0 {
		return badRequest("items: at least one resource is required")
	}
	for i := range req.Items {
		it := &req.Items[i]
		if it.Namespace == "" {
			it.Namespace = identity.DefaultNamespace
		}
		if err := checkDeletable(it.Kind, it.Namespace, it.Name); err != nil {
			return badRequest(fmt.Sprintf("items[%d]: %v", i, err))
		}
	}
	return s.doDelete(w, r, op, req.Items)
}

func (s *Server) deleteOne(w http.ResponseWriter, r *http.Request, op string) error {
	kind, ok := config.ResourceKind(r.PathValue("plural"))
	if !ok {
		return notFound("unknown resource type " + r.PathValue("plural"))
	}
	ref := resource.Result{Kind: kind, Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
	if err := checkDeletable(ref.Kind, ref.Namespace, ref.Name); err != nil {
		return badRequest(err.Error())
	}
	return s.doDelete(w, r, op, []resource.Result{ref})
}

func (s *Server) doDelete(w http.ResponseWriter, r *http.Request, op string, refs []resource.Result) error {
	ctx := r.Context()
	if err := s.authorizeRefs(ctx, op, config.VerbDelete, refs); err != nil {
		return err
	}
	if err := s.guardLockout(r, op, nil, refs); err != nil {
		return err
	}
	results, err := s.cfg.Resources.Delete(ctx, refs)
	if err != nil {
		return err
	}
	status := http.StatusOK
	for _, res := range results {
		if res.Outcome == resource.NotFound {
			status = http.StatusNotFound
			continue
		}
		s.logger.Info("resource deleted", telemetry.KeyOperator, op, telemetry.KeyKind, res.Kind,
			telemetry.KeyNamespace, res.Namespace, telemetry.KeyName, res.Name)
	}
	return writeJSON(w, status, ResultList{Results: results})
}

func checkDeletable(kind, ns, name string) error {
	switch {
	case config.IsApplicable(kind):
	case config.IsReadOnly(kind):
		return fmt.Errorf("kind: %s is read-only", kind)
	default:
		return fmt.Errorf("kind: unknown kind %q", kind)
	}
	if err := identity.ValidateName(ns); err != nil {
		return fmt.Errorf("namespace: %v", err)
	}
	if err := identity.ValidateName(name); err != nil {
		return fmt.Errorf("name: %v", err)
	}
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, op string) error {
	kind, ok := config.ResourceKind(r.PathValue("plural"))
	if !ok {
		return notFound("unknown resource type " + r.PathValue("plural"))
	}
	ns := r.URL.Query().Get("namespace")
	if ns != "" {
		if err := identity.ValidateName(ns); err != nil {
			return badRequest("namespace: " + err.Error())
		}
	}
	// Across namespaces (ns "") needs the right mesh-wide, as kubectl's
	// --all-namespaces needs it cluster-wide.
	if err := s.authorize(r.Context(), op, config.VerbList, kind, ns); err != nil {
		return err
	}
	objs, err := s.objects(r.Context(), kind, ns)
	if err != nil {
		return err
	}
	b, err := config.MarshalList(objs, false)
	if err != nil {
		return err
	}
	return writeRaw(w, http.StatusOK, b)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, op string) error {
	kind, ok := config.ResourceKind(r.PathValue("plural"))
	if !ok {
		return notFound("unknown resource type " + r.PathValue("plural"))
	}
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if identity.ValidateName(ns) != nil || identity.ValidateName(name) != nil {
		return badRequest("invalid namespace or name")
	}
	if err := s.authorize(r.Context(), op, config.VerbGet, kind, ns); err != nil {
		return err
	}
	objs, err := s.objects(r.Context(), kind, ns)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.GetMetadata().Name == name {
			b, err := config.Marshal(o)
			if err != nil {
				return err
			}
			return writeRaw(w, http.StatusOK, b)
		}
	}
	return notFound(fmt.Sprintf("%s %s/%s not found", kind, ns, name))
}

// objects lists the objects of kind in ns ("" = all namespaces).
func (s *Server) objects(ctx context.Context, kind, ns string) ([]config.Object, error) {
	switch {
	case config.IsApplicable(kind):
		objs, _, err := s.cfg.Resources.List(ctx, kind, ns)
		return redactAll(objs), err
	case kind == config.KindProxy:
		return s.proxies(ctx, ns)
	case kind == config.KindService:
		return s.services(ctx, ns)
	}
	if v, ok := s.viewOf(kind); ok {
		return s.viewObjects(v, ns)
	}
	return nil, notFound("unknown kind " + kind)
}

func (s *Server) proxies(ctx context.Context, ns string) ([]config.Object, error) {
	recs, _, err := s.cfg.Registry.Proxies(ctx)
	if err != nil {
		return nil, err
	}
	var out []config.Object
	for _, p := range recs {
		if ns != "" && p.Namespace != ns {
			continue
		}
		out = append(out, ProxyView(p))
	}
	return out, nil
}

// ProxyView is the read-only Proxy object of a registry record.
func ProxyView(p registry.Proxy) *config.Proxy {
	v := &config.Proxy{
		TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindProxy},
		Metadata: config.ObjectMeta{Name: p.Instance, Namespace: p.Namespace, Labels: maps.Clone(p.Labels)},
		Status: config.ProxyStatus{
			Identity:        p.Identity,
			Service:         p.Namespace + "/" + p.Service,
			Address:         p.Address,
			Connected:       p.Connected,
			SVIDSerial:      p.SVIDSerial,
			SVIDAuthority:   p.SVIDAuthority,
			BundleVersion:   p.BundleVersion,
			SnapshotVersion: p.SnapshotVersion,
			AckedVersion:    p.AckedVersion,
			LastNack:        p.LastNack,
			Version:         p.Version,
			Locality:        p.Locality,
			Protocol:        p.Protocol,
			Draining:        p.Draining,
		},
	}
	if !p.LastSeen.IsZero() {
		v.Status.LastSeen = p.LastSeen.UTC().Format(time.RFC3339)
	}
	if !p.SVIDExpiry.IsZero() {
		v.Status.SVIDExpiry = p.SVIDExpiry.UTC().Format(time.RFC3339)
	}
	return v
}

func (s *Server) services(ctx context.Context, ns string) ([]config.Object, error) {
	recs, _, err := s.cfg.Registry.Proxies(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]*config.Service{}
	var names []string
	for _, p := range recs {
		if p.Address == "" || (ns != "" && p.Namespace != ns) {
			continue
		}
		ref := p.ServiceRef().String()
		svc, ok := byName[ref]
		if !ok {
			svc = &config.Service{
				TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindService},
				Metadata: config.ObjectMeta{Name: p.Service, Namespace: p.Namespace},
				Status:   config.ServiceStatus{Identities: []string{}, Endpoints: []string{}},
			}
			byName[ref] = svc
			names = append(names, ref)
		}
		if !slices.Contains(svc.Status.Identities, p.Identity) {
			svc.Status.Identities = append(svc.Status.Identities, p.Identity)
		}
		if p.Live {
			svc.Status.Endpoints = append(svc.Status.Endpoints, p.Address)
			if p.Connected {
				svc.Status.Ready++
			}
		}
	}
	slices.Sort(names)
	out := make([]config.Object, len(names))
	for i, n := range names {
		slices.Sort(byName[n].Status.Identities)
		slices.Sort(byName[n].Status.Endpoints)
		out[i] = byName[n]
	}
	return out, nil
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	// Service is "namespace/name" or "name" (namespace default).
	Service string `json:"service"`
	// Identity is the account name; default: the service name.
	Identity string `json:"identity,omitempty"`
	// TTL is a Go duration; default 10m.
	TTL string `json:"ttl,omitempty"`
	// Labels bound to the workload instance that redeems the token; policy
	// and JWTProvider selectors match them.
	Labels map[string]string `json:"labels,omitempty"`
}

// TokenResponse is the answer of POST /v1/tokens.
type TokenResponse struct {
	Token     string    `json:"token"`
	Service   string    `json:"service"`
	Identity  string    `json:"identity"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, op string) error {
	var req TokenRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	svc, err := identity.ParseServiceRef(req.Service, identity.DefaultNamespace)
	if err != nil {
		return badRequest("service: " + err.Error())
	}
	if err := s.authorize(r.Context(), op, config.VerbCreate, config.KindJoinToken, svc.Namespace); err != nil {
		return err
	}
	account := req.Identity
	if account == "" {
		account = svc.Name
	}
	if err := identity.ValidateName(account); err != nil {
		return badRequest("identity: " + err.Error())
	}
	var ttl time.Duration
	if req.TTL != "" {
		ttl, err = time.ParseDuration(req.TTL)
		if err != nil || ttl < time.Second || ttl > jointoken.MaxTokenTTL {
			return badRequest(fmt.Sprintf("ttl: must be a duration between 1s and %s", jointoken.MaxTokenTTL))
		}
	}
	var lerrs config.FieldErrors
	config.ValidateLabels("labels", req.Labels, &lerrs)
	if len(lerrs) > 0 {
		return badRequest(lerrs.Error())
	}
	pin := ""
	if s.cfg.Pin != nil {
		pin = s.cfg.Pin()
	}
	entry := audit.Entry{Action: audit.ActionTokenCreate, Kind: config.KindJoinToken, Namespace: svc.Namespace, Name: svc.Name,
		Detail: "identity " + account + ", ttl " + cmp.Or(req.TTL, "default")}
	if err := s.record(r.Context(), entry); err != nil {
		return err
	}
	token, exp, err := s.cfg.Tokens.Create(r.Context(), jointoken.CreateRequest{
		Service: svc, Account: account, TTL: ttl, Pin: pin, CreatedBy: op, Labels: req.Labels,
	})
	s.recordOutcome(r.Context(), entry, err)
	if err != nil {
		return err
	}
	id := "spiffe://" + s.cfg.TrustDomain + "/ns/" + svc.Namespace + "/sa/" + account
	s.logger.Info("join token created", telemetry.KeyOperator, op, telemetry.KeyService, svc.String(),
		telemetry.KeyIdentity, id, telemetry.KeyExpiry, exp)
	return writeJSON(w, http.StatusCreated, TokenResponse{Token: token, Service: svc.String(), Identity: id, ExpiresAt: exp})
}

// apiError is an error with its HTTP status and a message for the client.
type apiError struct {
	status  int
	msg     string
	details []string
}

func (e *apiError) Error() string { return e.msg }

var errUnauthenticated = &apiError{status: http.StatusUnauthorized, msg: "an operator client certificate is required"}

func badRequest(msg string) error { return &apiError{status: http.StatusBadRequest, msg: msg} }
func notFound(msg string) error   { return &apiError{status: http.StatusNotFound, msg: msg} }

func docErrDetails(es config.DocumentErrors) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Error()
	}
	return out
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error   string   `json:"error"`
	Details []string `json:"details,omitempty"`
}

// writeError is the one place errors become HTTP statuses. Errors that are
// not apiErrors are internal: the client gets a generic message.
func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, audit.ErrUnavailable):
		ae = auditUnavailable(err)
	case errors.As(err, &mbe):
		ae = &apiError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body larger than %d bytes", mbe.Limit)}
	case errors.Is(err, store.ErrNotFound):
		ae = &apiError{status: http.StatusNotFound, msg: "not found"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		ae = &apiError{status: http.StatusServiceUnavailable, msg: "request cancelled"}
	default:
		ae = &apiError{status: http.StatusInternalServerError, msg: "internal error (see the control plane's log)"}
	}
	_ = writeJSON(w, ae.status, ErrorBody{Error: ae.msg, Details: ae.details})
}

func decodeBody(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &apiError{status: http.StatusUnsupportedMediaType, msg: "content type must be application/json"}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("malformed request body: " + err.Error())
	}
	if dec.More() {
		return badRequest("malformed request body: trailing data")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeRaw(w, status, append(b, '\n'))
}

func writeRaw(w http.ResponseWriter, status int, b []byte) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err := w.Write(b)
	return err
}

// OperatorRoots returns a pool of the operator CA root, for the TLS layer.
func OperatorRoots(root *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(root)
	return p
}
