package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// CA is the workload CA as the admin API drives it.
type CA interface {
	Status(ctx context.Context) (CAStatus, error)
	// Rotate starts a root rotation (target "root", to a new root or to
	// the operator's own) or rotates the intermediate ("intermediate").
	// An error wrapping ErrConflict is answered 409 (e.g. a rotation
	// already in progress), ErrBadRequest 400.
	Rotate(ctx context.Context, req RotateRequest) error
	// JWKS is the JWT-SVID bundle.
	JWKS() []byte
}

// Errors of CA operations.
var (
	// ErrConflict marks an operation refused because of the CA's state.
	ErrConflict = errors.New("conflict")
	// ErrBadRequest marks an operation refused because of its input.
	ErrBadRequest = errors.New("bad request")
)

// CAStatus is the answer of GET /v1/ca.
type CAStatus struct {
	TrustDomain string `json:"trustDomain"`
	// Phase of a root rotation: "idle", "prepared" or "activated".
	Phase         string    `json:"phase"`
	BundleVersion int64     `json:"bundleVersion"`
	PhaseSince    time.Time `json:"phaseSince,omitzero"`
	RetireAfter   time.Time `json:"retireAfter,omitzero"`
	// WaitingFor says what the current phase waits for, in words.
	WaitingFor string `json:"waitingFor,omitempty"`
	// Waiting names the proxies the current phase waits for.
	Waiting      []string `json:"waiting,omitempty"`
	Roots        []CACert `json:"roots"`
	Intermediate CACert   `json:"intermediate"`
	Proxies      CAFleet  `json:"proxies"`
}

// CACert describes one CA certificate.
type CACert struct {
	Serial       string    `json:"serial"`
	SubjectKeyID string    `json:"subjectKeyID"`
	NotBefore    time.Time `json:"notBefore"`
	NotAfter     time.Time `json:"notAfter"`
	// Signing is true for the root the current intermediate chains to.
	Signing bool `json:"signing,omitempty"`
}

// CAFleet is what the connected proxies hold.
type CAFleet struct {
	Connected int `json:"connected"`
	// ByBundleVersion counts proxies by the bundle version they ACKed.
	ByBundleVersion map[string]int `json:"byBundleVersion"`
	// OnSigningAuthority counts proxies whose SVID the current
	// intermediate signed.
	OnSigningAuthority int `json:"onSigningAuthority"`
}

// RotateRequest is the body of POST /v1/ca/rotate.
type RotateRequest struct {
	Target string `json:"target"`
	// RootCert and RootKey (PEM), for target "root", rotate to the
	// operator's own root instead of a generated one.
	RootCert string `json:"rootCert,omitempty"`
	RootKey  string `json:"rootKey,omitempty"`
}

// RevokeRequest is the body of POST /v1/proxies/revoke.
type RevokeRequest struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	// Instance, if set, revokes only that proxy; otherwise every proxy of
	// the service and their identities.
	Instance string `json:"instance,omitempty"`
}

func (s *Server) caStatus(w http.ResponseWriter, r *http.Request, op string) error {
	if err := s.authorize(r.Context(), op, config.VerbGet, config.KindCA, rbac.MeshWide); err != nil {
		return err
	}
	if s.cfg.CA == nil {
		return &apiError{status: http.StatusNotImplemented, msg: "no ca on this server"}
	}
	return s.writeCAStatus(w, r)
}

// writeCAStatus answers with the CA's state.
func (s *Server) writeCAStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := s.cfg.CA.Status(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

func (s *Server) caRotate(w http.ResponseWriter, r *http.Request, op string) error {
	if err := s.authorize(r.Context(), op, config.VerbRotate, config.KindCA, rbac.MeshWide); err != nil {
		return err
	}
	if s.cfg.CA == nil {
		return &apiError{status: http.StatusNotImplemented, msg: "no ca on this server"}
	}
	var req RotateRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Target != "root" && req.Target != "intermediate" {
		return badRequest(fmt.Sprintf("target: %q: want root or intermediate", req.Target))
	}
	if (req.RootCert == "") != (req.RootKey == "") || (req.RootCert != "" && req.Target != "root") {
		return badRequest("rootCert and rootKey: give both, and only with target root")
	}
	entry := audit.Entry{Action: audit.ActionCARotate, Kind: config.KindCA, Name: req.Target, Detail: "rotate " + req.Target}
	if req.RootCert != "" {
		// The certificate is public; its digest names the imported root.
		entry.Action, entry.After, entry.Detail = audit.ActionCARootImport, audit.Digest([]byte(req.RootCert)), "rotate to the operator's own root"
	}
	if err := s.record(r.Context(), entry); err != nil {
		return err
	}
	err := s.cfg.CA.Rotate(r.Context(), req)
	s.recordOutcome(r.Context(), entry, err)
	if err != nil {
		switch {
		case errors.Is(err, ErrConflict):
			return &apiError{status: http.StatusConflict, msg: err.Error()}
		case errors.Is(err, ErrBadRequest):
			return badRequest(err.Error())
		}
		return err
	}
	s.logger.Info("ca rotation started", telemetry.KeyOperator, op, telemetry.KeyKind, req.Target)
	return s.writeCAStatus(w, r)
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request, op string) error {
	if err := s.authorize(r.Context(), op, config.VerbGet, config.KindCA, rbac.MeshWide); err != nil {
		return err
	}
	if s.cfg.CA == nil {
		return &apiError{status: http.StatusNotImplemented, msg: "no ca on this server"}
	}
	return writeRaw(w, http.StatusOK, s.cfg.CA.JWKS())
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request, op string) error {
	var req RevokeRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	svc, err := identity.ParseServiceRef(req.Namespace+"/"+req.Service, "")
	if err != nil || svc.Namespace != req.Namespace || svc.Name != req.Service {
		return badRequest(fmt.Sprintf("namespace/service: %q/%q: want valid names", req.Namespace, req.Service))
	}
	if err := s.authorize(r.Context(), op, config.VerbRevoke, config.KindProxy, svc.Namespace); err != nil {
		return err
	}
	if req.Instance != "" {
		if err := identity.ValidateName(req.Instance); err != nil {
			return badRequest(fmt.Sprintf("instance: %v", err))
		}
	}
	entry := audit.Entry{Action: audit.ActionProxyRevoke, Kind: config.KindProxy, Namespace: svc.Namespace,
		Name: svc.Name + instanceSuffix(req.Instance)}
	if err := s.record(r.Context(), entry); err != nil {
		return err
	}
	out, err := s.cfg.Registry.Revoke(r.Context(), svc, req.Instance, op)
	if err == nil {
		entry.Detail = fmt.Sprintf("%d proxies", len(out.Proxies))
	}
	s.recordOutcome(r.Context(), entry, err)
	if errors.Is(err, registry.ErrNoSuchProxy) {
		return notFound(fmt.Sprintf("no proxy of %s%s", svc, instanceSuffix(req.Instance)))
	}
	if err != nil {
		return err
	}
	s.logger.Warn("proxies revoked", telemetry.KeyOperator, op, telemetry.KeyService, svc.String(), telemetry.KeyInstance, req.Instance,
		telemetry.KeyCount, len(out.Proxies), telemetry.KeyDetail, fmt.Sprint(out.Serials))
	return writeJSON(w, http.StatusOK, out)
}

func instanceSuffix(instance string) string {
	if instance == "" {
		return ""
	}
	return "/" + instance
}
