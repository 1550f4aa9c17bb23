package admin

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// OperatorSigner signs operator client certificates; *ca.OperatorCA is one.
type OperatorSigner interface {
	// SignClient issues the client certificate of operator for pub.
	SignClient(pub crypto.PublicKey, operator string, ttl time.Duration) (*x509.Certificate, error)
	// Root is the operator CA certificate.
	Root() *x509.Certificate
}

var _ OperatorSigner = (*ca.OperatorCA)(nil)

// Lifetimes of operator certificates created with POST /v1/operators.
const (
	// DefaultOperatorTTL is the lifetime when the request gives none: 90
	// days.
	DefaultOperatorTTL = 90 * 24 * time.Hour
	// MinOperatorTTL and MaxOperatorTTL bound the requested lifetime.
	MinOperatorTTL = time.Hour
	MaxOperatorTTL = 365 * 24 * time.Hour
)

// OperatorRequest is the body of POST /v1/operators.
type OperatorRequest struct {
	// Name of the new operator, as RoleBindings name it: 1 to 64 letters,
	// digits and ".-_@". "admin" is reserved.
	Name string `json:"name"`
	// CSR is the PEM certificate request of the operator's key, which
	// never leaves the operator's machine. Only its public key is used.
	CSR string `json:"csr"`
	// TTL is a Go duration between 1h and 8760h; default 2160h (90 days).
	TTL string `json:"ttl,omitempty"`
}

// OperatorResponse is the answer of POST /v1/operators.
type OperatorResponse struct {
	Name string `json:"name"`
	// Certificate is the PEM client certificate, signed by the operator
	// CA.
	Certificate string `json:"certificate"`
	// CA is the PEM operator CA certificate, which also signs the admin
	// API's serving certificate.
	CA        string    `json:"ca"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// createOperator signs a client certificate for a new operator. The
// operator has no rights until a RoleBinding names it.
func (s *Server) createOperator(w http.ResponseWriter, r *http.Request, op string) error {
	if err := s.authorize(r.Context(), op, config.VerbCreate, config.KindOperator, rbac.MeshWide); err != nil {
		return err
	}
	if s.cfg.Operators == nil {
		return &apiError{status: http.StatusNotImplemented, msg: "no operator ca on this server"}
	}
	var req OperatorRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := config.ValidateOperatorName(req.Name); err != nil {
		return badRequest("name: " + err.Error())
	}
	if req.Name == rbac.BuiltinAdmin {
		return badRequest(fmt.Sprintf("name: %q is reserved for the control plane's bootstrap credential", rbac.BuiltinAdmin))
	}
	ttl := DefaultOperatorTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < MinOperatorTTL || d > MaxOperatorTTL {
			return badRequest(fmt.Sprintf("ttl: must be a duration between %s and %s", MinOperatorTTL, MaxOperatorTTL))
		}
		ttl = d
	}
	block, rest := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return badRequest("csr: want one PEM \"CERTIFICATE REQUEST\" block")
	}
	if len(rest) > 0 {
		if b, _ := pem.Decode(rest); b != nil {
			return badRequest("csr: want one PEM \"CERTIFICATE REQUEST\" block, got several")
		}
	}
	pub, err := ca.ParseCSR(block.Bytes)
	if err != nil {
		return badRequest("csr: " + err.Error())
	}
	entry := audit.Entry{Action: audit.ActionOperator, Kind: config.KindOperator, Name: req.Name, Detail: "ttl " + ttl.String()}
	if err := s.record(r.Context(), entry); err != nil {
		return err
	}
	cert, err := s.cfg.Operators.SignClient(pub, req.Name, ttl)
	if err == nil {
		entry.Detail += ", serial " + cert.SerialNumber.Text(16)
	}
	s.recordOutcome(r.Context(), entry, err)
	if errors.Is(err, ca.ErrUnsupportedKey) {
		return badRequest("csr: " + err.Error())
	}
	if err != nil {
		return err
	}
	s.logger.Info("operator created", telemetry.KeyOperator, op, telemetry.KeyName, req.Name,
		telemetry.KeySerial, cert.SerialNumber.Text(16), telemetry.KeyExpiry, cert.NotAfter)
	return writeJSON(w, http.StatusCreated, OperatorResponse{
		Name:        req.Name,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		CA:          string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cfg.Operators.Root().Raw})),
		ExpiresAt:   cert.NotAfter,
	})
}
