package sidecar

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/svid"
)

// rpcTimeout bounds one Attest, SignSVID or SignJWTSVID call.
const rpcTimeout = 15 * time.Second

// controlClient reaches the control plane: Attest over a bootstrap TLS
// connection that authenticates the control plane with the CA bundle file
// or the token's CA pin; SignSVID, SignJWTSVID and Subscribe over mTLS with
// the proxy's SVID. It implements svid.Issuer.
type controlClient struct {
	addr string
	// anchors returns the roots to verify the control plane with on first
	// contact.
	anchors func(chain []*x509.Certificate) ([]*x509.Certificate, error)
	// wantTD is the configured trust domain (zero: learn it from the
	// control plane's certificate).
	wantTD spiffeid.TrustDomain
	// mgr is the proxy's SVID and bundle, once it has one.
	mgr *svid.Manager

	mu sync.Mutex
	td spiffeid.TrustDomain
}

var _ svid.Issuer = (*controlClient)(nil)

func (c *controlClient) dial(creds credentials.TransportCredentials, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+c.addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}, opts...)...)
}

// Attest implements svid.Issuer.
func (c *controlClient) Attest(ctx context.Context, token string, csr []byte, service identity.ServiceRef) (*svid.Issued, error) {
	cfg := mtls.BootstrapControlConfig(c.anchors, c.wantTD, func(td spiffeid.TrustDomain) {
		c.mu.Lock()
		c.td = td
		c.mu.Unlock()
	})
	conn, err := c.dial(credentials.NewTLS(cfg))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := apiv1.NewControlClient(conn).Attest(ctx, &apiv1.AttestRequest{JoinToken: token, Csr: csr, Service: service.String()})
	if err != nil {
		return nil, classify(err)
	}
	issued, err := issuedFrom(resp.GetSvid(), resp.GetBundle())
	if err != nil {
		return nil, err
	}
	issued.Instance = resp.GetInstance()
	return issued, nil
}

// Renew implements svid.Issuer.
func (c *controlClient) Renew(ctx context.Context, csr []byte) (*svid.Issued, error) {
	conn, err := c.dial(credentials.NewTLS(mtls.ControlClientConfig(c.mgr, c.mgr, c.trustDomain())))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := apiv1.NewControlClient(conn).SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: csr})
	if err != nil {
		return nil, classify(err)
	}
	return issuedFrom(resp.GetSvid(), resp.GetBundle())
}

// SignJWT implements svid.Issuer with the SignJWTSVID RPC, over mTLS with
// the proxy's SVID like Renew.
func (c *controlClient) SignJWT(ctx context.Context, audience []string) (string, error) {
	conn, err := c.dial(credentials.NewTLS(mtls.ControlClientConfig(c.mgr, c.mgr, c.trustDomain())))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := apiv1.NewControlClient(conn).SignJWTSVID(ctx, &apiv1.SignJWTSVIDRequest{Audience: audience})
	if err != nil {
		return "", classify(err)
	}
	return resp.GetToken(), nil
}

// trustDomain is the trust domain of the proxy's SVID (or the one learned
// at attestation).
func (c *controlClient) trustDomain() spiffeid.TrustDomain {
	if id := c.mgr.ID(); !id.IsZero() {
		return id.TrustDomain()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.td
}

// maxSnapshot is the largest snapshot a proxy accepts (gRPC's default is
// 4 MiB; a large mesh's snapshot of a proxy that may call everything can be
// bigger).
const maxSnapshot = 64 << 20

// subscribeConn opens an mTLS connection for a Subscribe stream.
func (c *controlClient) subscribeConn() (*grpc.ClientConn, error) {
	return c.dial(credentials.NewTLS(mtls.ControlClientConfig(c.mgr, c.mgr, c.trustDomain())),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxSnapshot)))
}

// report sends a Report on a connection of its own (the proxy reports on
// its Subscribe stream's connection; this is for the last report at
// shutdown, when that stream is gone).
func (c *controlClient) report(ctx context.Context, req *apiv1.ReportRequest) error {
	if c.mgr.ID().IsZero() {
		return errNotConnected // no SVID to authenticate with
	}
	conn, err := c.subscribeConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = apiv1.NewControlClient(conn).Report(ctx, req)
	return err
}

// classify marks answers that retrying cannot change as svid.ErrRejected.
func classify(err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated:
		return fmt.Errorf("%w: %s", svid.ErrRejected, status.Convert(err).Message())
	}
	return err
}

func issuedFrom(s *apiv1.X509SVID, bundle [][]byte) (*svid.Issued, error) {
	if s == nil {
		return nil, errors.New("control plane sent no svid")
	}
	chain, err := parseDER(s.GetCertChain())
	if err != nil {
		return nil, fmt.Errorf("svid: %w", err)
	}
	roots, err := parseDER(bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return &svid.Issued{Chain: chain, Bundle: roots}, nil
}

func parseDER(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
