package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// The audit log at the admin API (docs/audit.md).
//
// Resource writes (apply, delete) commit their audit entries in their own
// store transaction (resource.Store.WithAudit). The other writes (join
// tokens, CA rotation, root import, revocation, operators) are not one
// transaction: their entry is appended before anything is done, and when
// that fails the request is refused with 503 "audit log unavailable: ..."
// and nothing is changed; their outcome is appended after. Every failed
// authentication (no or bad operator certificate) and every RBAC denial
// goes to the failure aggregator, which writes counted entries.
//
//	GET /v1/audit[?after=SEQ][&limit=N]   -> AuditList (the last N when after is absent)
//	GET /v1/audit/verify                  -> audit.Report
//	GET /v1/audit/export                  -> audit.Export
//
// Reading the log needs `get` on AuditLog mesh-wide.

// AuditLog is the audit log as the admin API writes and reads it;
// *audit.Log is one.
type AuditLog interface {
	Append(ctx context.Context, entries ...audit.Entry) error
	Range(ctx context.Context, after uint64, limit int) ([]audit.Entry, audit.Head, error)
	Tail(ctx context.Context, n int) ([]audit.Entry, audit.Head, error)
	Verify(ctx context.Context) (audit.Report, error)
	Export(ctx context.Context) (audit.Export, error)
}

// FailureRecorder counts failed authentications and authorizations;
// *audit.Aggregator is one.
type FailureRecorder interface {
	Failure(kind, addr, identity, reason string)
}

var (
	_ AuditLog        = (*audit.Log)(nil)
	_ FailureRecorder = (*audit.Aggregator)(nil)
)

// Bounds of GET /v1/audit.
const (
	// DefaultAuditLimit is the number of entries when limit is absent.
	DefaultAuditLimit = 20
	// MaxAuditLimit is the largest limit accepted.
	MaxAuditLimit = 1000
)

// AuditList is the answer of GET /v1/audit.
type AuditList struct {
	Items []audit.Entry `json:"items"`
	// Head is the seq of the last entry of the log.
	Head uint64 `json:"head"`
}

// errAuditOff answers the audit routes of a server without a log.
var errAuditOff = &apiError{status: http.StatusNotImplemented, msg: "no audit log on this server"}

// failure sends a failed authentication or authorization to the
// aggregator.
func (s *Server) failure(ctx context.Context, kind, addr, identity, reason string) {
	if s.cfg.Failures == nil {
		return
	}
	if addr == "" {
		addr = audit.RequesterFrom(ctx).Source
	}
	s.cfg.Failures.Failure(kind, addr, identity, reason)
}

// record appends entry (actor and source from the request) before a write
// that is not one store transaction. A failure refuses the write: it
// returns an error answered 503, and the caller changes nothing.
func (s *Server) record(ctx context.Context, e audit.Entry) error {
	if s.cfg.Audit == nil {
		return nil
	}
	req := audit.RequesterFrom(ctx)
	e.Actor, e.Source = req.Actor, req.Source
	if e.Outcome == "" {
		e.Outcome = audit.OutcomeStarted
	}
	if err := s.cfg.Audit.Append(ctx, e); err != nil {
		if errors.Is(err, audit.ErrUnavailable) {
			return err
		}
		return fmt.Errorf("%w: %v", audit.ErrUnavailable, err)
	}
	return nil
}

// recordOutcome appends the outcome of a write recorded with record. The
// write is done: a failure here is logged, not answered.
func (s *Server) recordOutcome(ctx context.Context, e audit.Entry, err error) {
	if s.cfg.Audit == nil {
		return
	}
	e.Outcome = audit.OutcomeOK
	if err != nil {
		e.Outcome = audit.OutcomeFailed
		var ae *apiError
		if errors.As(err, &ae) {
			e.Detail = strings.TrimSpace(e.Detail + "; " + ae.msg)
		}
	}
	req := audit.RequesterFrom(ctx)
	e.Actor, e.Source = req.Actor, req.Source
	if aerr := s.cfg.Audit.Append(context.WithoutCancel(ctx), e); aerr != nil {
		s.logger.Error("audit outcome not recorded", telemetry.KeyOperator, req.Actor, telemetry.KeyDetail, e.Action, telemetry.KeyErr, aerr)
	}
}

// auditUnavailable is the answer to a write refused because its audit
// entry could not be written.
func auditUnavailable(err error) *apiError {
	msg := err.Error()
	if i := strings.Index(msg, audit.ErrUnavailable.Error()); i >= 0 {
		msg = msg[i:]
	}
	return &apiError{status: http.StatusServiceUnavailable, msg: msg + "; nothing was changed"}
}

func (s *Server) auditList(w http.ResponseWriter, r *http.Request, op string) error {
	if err := s.authorize(r.Context(), op, config.VerbGet, config.KindAuditLog, rbac.MeshWide); err != nil {
		return err
	}
	if s.cfg.Audit == nil {
		return errAuditOff
	}
	q := r.URL.Query()
	limit := DefaultAuditLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAuditLimit {
			return badRequest("limit: " + strconv.Quote(v) + ": want a number from 1 to " + strconv.Itoa(MaxAuditLimit))
		}
		limit = n
	}
	var (
		items []audit.Entry
		head  audit.Head
		err   error
	)
	if v := q.Get("after"); v != "" {
		after, perr := strconv.ParseUint(v, 10, 64)
		if perr != nil {
			return badRequest("after: " + strconv.Quote(v) + ": want a sequence number")
		}
		items, head, err = s.cfg.Audit.Range(r.Context(), after, limit)
	} else {
		items, head, err = s.cfg.Audit.Tail(r.Context(), limit)
	}
	if err != nil {
		return err
	}
	if items == nil {
		items = []audit.Entry{}
	}
	return writeJSON(w, http.StatusOK, AuditList{Items: items, Head: head.Seq})
}

func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request, op string) error {
	if err := s.authorize(r.Context(), op, config.VerbGet, config.KindAuditLog, rbac.MeshWide); err != nil {
		return err
	}
	if s.cfg.Audit == nil {
		return errAuditOff
	}
	rep, err := s.cfg.Audit.Verify(r.Context())
	if err != nil {
		return err
	}
	if !rep.OK {
		s.logger.Error("audit log verification failed", telemetry.KeyOperator, op, telemetry.KeyDetail, rep.Problem)
	}
	return writeJSON(w, http.StatusOK, rep)
}

func (s *Server) auditExport(w http.ResponseWriter, r *http.Request, op string) error {
	if err := s.authorize(r.Context(), op, config.VerbGet, config.KindAuditLog, rbac.MeshWide); err != nil {
		return err
	}
	if s.cfg.Audit == nil {
		return errAuditOff
	}
	x, err := s.cfg.Audit.Export(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, x)
}
