package workloadapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// securityHeader is the metadata key every Workload API request must carry
// with the value "true", so that a browser or SSRF cannot reach the API
// through a proxy that forwards to the socket.
const securityHeader = "workload.spiffe.io"

// maxReasonLen bounds the reason of an invalid JWT-SVID sent back to the
// client.
const maxReasonLen = 200

func hasSecurityHeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	v := md.Get(securityHeader)
	return ok && len(v) == 1 && v[0] == "true"
}

func unaryHeaderCheck(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if !hasSecurityHeader(ctx) {
		return nil, rpcStatus(errSecurityHeaderMissing)
	}
	return next(ctx, req)
}

func streamHeaderCheck(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if !hasSecurityHeader(ss.Context()) {
		return rpcStatus(errSecurityHeaderMissing)
	}
	return next(srv, ss)
}

// handler implements the generated SpiffeWorkloadAPIServer. Each RPC method
// calls one function that returns plain errors and passes them through
// rpcStatus. The WIT-SVID RPCs are left Unimplemented, which go-spiffe's
// watchers take as "not offered".
type handler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	s *Server
}

var _ workload.SpiffeWorkloadAPIServer = (*handler)(nil)

// FetchX509SVID streams the proxy's X509-SVID with its key and bundle.
func (h *handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	return rpcStatus(watch(h.s, stream, h.s.x509SVIDResponse))
}

// FetchX509Bundles streams the X.509 roots of the proxy's trust domain.
func (h *handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return rpcStatus(watch(h.s, stream, h.s.x509BundlesResponse))
}

// FetchJWTBundles streams the JWKS of the proxy's trust domain.
func (h *handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return rpcStatus(watch(h.s, stream, h.s.jwtBundlesResponse))
}

// FetchJWTSVID returns a JWT-SVID of the proxy's identity for the audiences.
func (h *handler) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	resp, err := h.s.fetchJWTSVID(ctx, req)
	return resp, rpcStatus(err)
}

// ValidateJWTSVID validates a JWT-SVID against the trust domain's JWT bundle
// and the audience.
func (h *handler) ValidateJWTSVID(_ context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	resp, err := h.s.validateJWTSVID(req)
	return resp, rpcStatus(err)
}

// watch sends build's answer at once and again after each change of the
// Source, skipping answers equal to the last one sent. It returns nil when
// the client goes, errStopping when the server stops, and build's error
// when there is nothing to send (the client retries).
func watch[T proto.Message](s *Server, stream sender[T], build func(context.Context) (T, error)) error {
	ctx := stream.Context()
	var (
		last T
		sent bool
	)
	for {
		// Take the channel before reading, so no change is missed.
		changed := s.cfg.Source.Changed()
		resp, err := build(ctx)
		if err != nil {
			return err
		}
		if !sent || !proto.Equal(resp, last) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last, sent = resp, true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return errStopping
		}
	}
}

// sender is the server side of a streaming RPC.
type sender[T any] interface {
	Send(T) error
	Context() context.Context
}

// log returns the logger with the RPC peer's pid.
func (s *Server) log(ctx context.Context) *slog.Logger {
	if p, ok := peerOf(ctx); ok {
		return s.logger.With(telemetry.KeyPID, p.pid)
	}
	return s.logger
}

// currentSVID returns the Source's SVID, or errNotReady.
func (s *Server) currentSVID(ctx context.Context) (*x509svid.SVID, error) {
	svid, err := s.cfg.Source.GetX509SVID()
	if err == nil && (svid == nil || len(svid.Certificates) == 0) {
		err = errors.New("source returned an empty svid")
	}
	if err != nil {
		s.log(ctx).Debug(msgNotReady, telemetry.KeyErr, err)
		return nil, fmt.Errorf("%w: %w", errNotReady, err)
	}
	return svid, nil
}

// x509Roots returns the concatenated DER of td's X.509 roots.
func (s *Server) x509Roots(ctx context.Context, td spiffeid.TrustDomain) ([]byte, error) {
	b, err := s.cfg.Source.GetX509BundleForTrustDomain(td)
	if err == nil && b == nil {
		err = errors.New("source returned no bundle")
	}
	if err != nil {
		s.log(ctx).Debug(msgNotReady, telemetry.KeyTrustDomain, td.String(), telemetry.KeyErr, err)
		return nil, fmt.Errorf("%w: %w", errNotReady, err)
	}
	return concatDER(b.X509Authorities()), nil
}

func (s *Server) x509SVIDResponse(ctx context.Context) (*workload.X509SVIDResponse, error) {
	svid, err := s.currentSVID(ctx)
	if err != nil {
		return nil, err
	}
	roots, err := s.x509Roots(ctx, svid.ID.TrustDomain())
	if err != nil {
		return nil, err
	}
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		// The error names the key type, never its bytes.
		s.log(ctx).Error(msgMarshalFailed, telemetry.KeyErr, err)
		return nil, fmt.Errorf("marshal svid key: %w", err)
	}
	return &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{
			SpiffeId:    svid.ID.String(),
			X509Svid:    concatDER(svid.Certificates),
			X509SvidKey: key,
			Bundle:      roots,
		}},
	}, nil
}

func (s *Server) x509BundlesResponse(ctx context.Context) (*workload.X509BundlesResponse, error) {
	svid, err := s.currentSVID(ctx)
	if err != nil {
		return nil, err
	}
	td := svid.ID.TrustDomain()
	roots, err := s.x509Roots(ctx, td)
	if err != nil {
		return nil, err
	}
	return &workload.X509BundlesResponse{Bundles: map[string][]byte{td.IDString(): roots}}, nil
}

func (s *Server) jwtBundlesResponse(ctx context.Context) (*workload.JWTBundlesResponse, error) {
	svid, err := s.currentSVID(ctx)
	if err != nil {
		return nil, err
	}
	td := svid.ID.TrustDomain()
	b, err := s.cfg.Source.GetJWTBundleForTrustDomain(td)
	if err == nil && b == nil {
		err = errors.New("source returned no jwt bundle")
	}
	if err != nil {
		s.log(ctx).Debug(msgNotReady, telemetry.KeyTrustDomain, td.String(), telemetry.KeyErr, err)
		return nil, fmt.Errorf("%w: %w", errNotReady, err)
	}
	jwks, err := b.Marshal()
	if err != nil {
		s.log(ctx).Error(msgMarshalFailed, telemetry.KeyErr, err)
		return nil, fmt.Errorf("marshal jwt bundle: %w", err)
	}
	return &workload.JWTBundlesResponse{Bundles: map[string][]byte{td.IDString(): jwks}}, nil
}

func (s *Server) fetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	audience, err := normalizeAudience(req.GetAudience())
	if err != nil {
		return nil, err
	}
	svid, err := s.currentSVID(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetSpiffeId() != "" {
		want, err := spiffeid.FromString(req.GetSpiffeId())
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errBadSPIFFEID, err)
		}
		if want != svid.ID {
			return nil, errNoIdentity
		}
	}
	resp := func(token string) *workload.JWTSVIDResponse {
		return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: svid.ID.String(), Svid: token}}}
	}

	key := jwtCacheKey(svid.ID, audience)
	if token, ok := s.jwts.get(key); ok {
		return resp(token), nil
	}
	changed := s.cfg.Source.Changed()
	mintedAt := s.clock.Now()
	token, err := s.cfg.Source.MintJWTSVID(ctx, audience)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.log(ctx).Warn(msgMintFailed, telemetry.KeyErr, err)
		return nil, fmt.Errorf("%w: %w", errMint, err)
	}
	exp, err := tokenExpiry(token)
	if err != nil {
		s.log(ctx).Error(msgBadMintedJWT, telemetry.KeyErr, err)
		return nil, fmt.Errorf("%w: %w", errMint, err)
	}
	s.jwts.put(key, token, mintedAt, exp, changed)
	return resp(token), nil
}

func (s *Server) validateJWTSVID(req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if req.GetAudience() == "" {
		return nil, errAudienceRequired
	}
	if req.GetSvid() == "" {
		return nil, errSVIDRequired
	}
	svid, err := jwtsvid.ParseAndValidate(req.GetSvid(), s.cfg.Source, []string{req.GetAudience()})
	if err != nil {
		return nil, fmt.Errorf("%w: %s", errInvalidJWTSVID, invalidReason(err))
	}
	claims, err := claimsStruct(svid.Claims)
	if err != nil {
		return nil, fmt.Errorf("%w: claims cannot be represented", errInvalidJWTSVID)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// invalidReason shortens go-spiffe's validation error for the client. Its
// messages never contain the token.
func invalidReason(err error) string {
	r := strings.TrimPrefix(err.Error(), "jwtsvid: ")
	if len(r) > maxReasonLen {
		r = strings.ToValidUTF8(r[:maxReasonLen], "") + "..."
	}
	return r
}

// claimsStruct converts JWT claims to a protobuf Struct. A single audience
// is returned as a list, as SPIRE does.
func claimsStruct(claims map[string]any) (*structpb.Struct, error) {
	c := make(map[string]any, len(claims))
	for k, v := range claims {
		c[k] = v
	}
	if aud, ok := c["aud"].(string); ok {
		c["aud"] = []string{aud}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	st := new(structpb.Struct)
	if err := protojson.Unmarshal(b, st); err != nil {
		return nil, err
	}
	return st, nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var n int
	for _, c := range certs {
		n += len(c.Raw)
	}
	out := make([]byte, 0, n)
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
