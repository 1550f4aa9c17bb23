package control

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/alert"
	"github.com/bulwarkmesh/bulwark/internal/attest"
	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/balancer"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/push"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Reasons a Subscribe stream ends from the control plane's side.
var (
	errSVIDExpired = errors.New("svid expired")
	errRevoked     = errors.New("svid revoked")
	errLeaving     = errors.New("proxy leaving")
)

// maxNack bounds the NACK message a proxy can make the control plane log
// and store.
const maxNack = 1024

// controlService implements the Control gRPC service.
type controlService struct {
	apiv1.UnimplementedControlServer

	td       spiffeid.TrustDomain
	ca       *ca.CA
	jwt      *ca.JWTAuthority
	attestor attest.Attestor
	// acked is called after a proxy ACKed a snapshot (rotation waits on
	// ACKs). May be nil.
	acked    func()
	registry *registry.Registry
	hub      *push.Hub
	clock    clock.Clock
	logger   *slog.Logger
	// denials keeps what proxies report (Report); nil drops reports.
	denials *denialLog
	// graph keeps the edges proxies report (Report); nil drops them.
	graph *graph.Store
	// alerts evaluates AlertRules over what proxies report; nil drops
	// reports.
	alerts *alert.Engine
	// auditLog records attestations; nil records nothing. With it, an
	// attestation whose entry cannot be written is refused.
	auditLog *audit.Log
	// auditAgg counts signings and failed authentications; nil drops
	// them.
	auditAgg *audit.Aggregator
}

// Attest redeems a join token for a first SVID. The CSR is checked before
// the token is consumed, so a malformed request does not burn a token.
func (s *controlService) Attest(ctx context.Context, req *apiv1.AttestRequest) (*apiv1.AttestResponse, error) {
	svc, err := identity.ParseServiceRef(req.GetService(), "")
	if err != nil || req.GetService() != svc.String() {
		return nil, status.Error(codes.InvalidArgument, "service: want namespace/name")
	}
	pub, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	res, err := s.attestor.Attest(ctx, attest.Evidence{JoinToken: req.GetJoinToken(), Service: svc})
	if errors.Is(err, attest.ErrRejected) {
		s.logger.Warn("attestation rejected", telemetry.KeyService, svc.String(), telemetry.KeyRemote, remoteAddr(ctx))
		s.auditAgg.Failure(audit.FailureJoinToken, remoteAddr(ctx), svc.String(), "join token rejected")
		return nil, status.Error(codes.PermissionDenied, "join token rejected: invalid, expired, already used, or for another service")
	}
	if err != nil {
		return nil, s.internal("attest", err)
	}
	id, err := identity.WorkloadID(s.td, res.Service.Namespace, res.Account)
	if err != nil {
		return nil, s.internal("attest", err)
	}
	if err := s.registry.AddService(ctx, res.Account, res.Service); err != nil {
		return nil, s.internal("attest", err)
	}
	// A new join token is the operator's decision to admit the identity
	// again after a revocation.
	if err := s.registry.ClearIdentityRevocation(ctx, identity.Workload{Namespace: res.Service.Namespace, Account: res.Account}); err != nil {
		return nil, s.internal("attest", err)
	}
	instance := registry.NewInstanceName(res.Service)
	if s.auditLog != nil {
		// Recorded before the SVID exists: an identity is never issued
		// unrecorded.
		err := s.auditLog.Append(ctx, audit.Entry{Actor: id.String(), Action: audit.ActionAttest, Kind: "Proxy",
			Namespace: res.Service.Namespace, Name: instance, Source: audit.SourceIP(remoteAddr(ctx)), Outcome: audit.OutcomeOK,
			Detail: "join token for " + res.Service.String()})
		if err != nil {
			s.logger.Error("attestation refused: audit log unavailable", telemetry.KeyIdentity, id.String(), telemetry.KeyErr, err)
			return nil, status.Error(codes.Unavailable, "audit log unavailable: attest again later")
		}
	}
	chain, err := s.ca.SignSVID(pub, id, 0)
	if err != nil {
		return nil, s.internal("attest", err)
	}
	if len(res.Labels) > 0 {
		// The labels of the token are bound to the instance now: the proxy
		// subscribes under this name and cannot choose its labels.
		err := s.registry.UpdateProxy(ctx, res.Service.Namespace, instance, func(p *registry.Proxy) {
			p.Service = res.Service.Name
			p.Identity = id.String()
			p.Labels = maps.Clone(res.Labels)
			p.AttestedAt = s.clock.Now()
		})
		if err != nil {
			return nil, s.internal("attest", err)
		}
	}
	s.logger.Info("workload attested", telemetry.KeyIdentity, id.String(), telemetry.KeyService, res.Service.String(),
		telemetry.KeyInstance, instance, telemetry.KeyExpiry, chain[0].NotAfter, telemetry.KeySerial, chain[0].SerialNumber.Text(16))
	return &apiv1.AttestResponse{
		Svid:     svidMessage(id, chain),
		Bundle:   derCerts(s.ca.Roots()),
		Instance: instance,
	}, nil
}

// SignSVID renews the caller's SVID for the identity of its current,
// unexpired SVID. Nothing in the CSR but its public key is used.
func (s *controlService) SignSVID(ctx context.Context, req *apiv1.SignSVIDRequest) (*apiv1.SignSVIDResponse, error) {
	id, leaf, err := s.callerWorkload(ctx)
	if err != nil {
		return nil, err
	}
	pub, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	chain, err := s.ca.SignSVID(pub, id, 0)
	if err != nil {
		return nil, s.internal("sign svid", err)
	}
	s.auditAgg.Signed(id.String(), "x509-svid")
	s.logger.Info("svid renewed", telemetry.KeyIdentity, id.String(), telemetry.KeySerial, chain[0].SerialNumber.Text(16),
		telemetry.KeyExpiry, chain[0].NotAfter, telemetry.KeyDetail, "previous serial "+leaf.SerialNumber.Text(16))
	return &apiv1.SignSVIDResponse{Svid: svidMessage(id, chain), Bundle: derCerts(s.ca.Roots())}, nil
}

// SignJWTSVID mints a JWT-SVID for the caller's identity.
func (s *controlService) SignJWTSVID(ctx context.Context, req *apiv1.SignJWTSVIDRequest) (*apiv1.SignJWTSVIDResponse, error) {
	id, _, err := s.callerWorkload(ctx)
	if err != nil {
		return nil, err
	}
	token, err := s.jwt.SignJWTSVID(id, req.GetAudience())
	if errors.Is(err, ca.ErrBadAudience) {
		return nil, status.Errorf(codes.InvalidArgument, "audience: %v", err)
	}
	if err != nil {
		return nil, s.internal("sign jwt-svid", err)
	}
	s.auditAgg.Signed(id.String(), "jwt-svid")
	return &apiv1.SignJWTSVIDResponse{Token: token}, nil
}

// Report records the denials a proxy observed. The reporter is the
// caller's SVID, never anything in the message: an outbound denial must
// name the reporter as its source, an inbound one a service the reporter
// serves. A report that breaks a bound or names anyone else is refused
// whole (InvalidArgument).
func (s *controlService) Report(ctx context.Context, req *apiv1.ReportRequest) (*apiv1.ReportResponse, error) {
	id, _, err := s.callerWorkload(ctx)
	if err != nil {
		return nil, err
	}
	w, _ := identity.ParseWorkloadID(id) // checked by callerWorkload
	err = checkReport(ctx, req, id, s.clock.Now(), func(ctx context.Context, svc identity.ServiceRef) (bool, error) {
		return s.registry.Serves(ctx, w, svc)
	})
	var rerr errReportServes
	if errors.As(err, &rerr) {
		return nil, s.internal("report", err)
	}
	if err != nil {
		s.logger.Warn("denial report refused", telemetry.KeyIdentity, id.String(), telemetry.KeyErr, err)
		return nil, status.Errorf(codes.InvalidArgument, "report: %v", err)
	}
	if s.denials != nil {
		s.denials.add(id.String(), req.GetDenials())
	}
	if s.graph != nil {
		s.graph.Add(id.String(), req.GetEdges())
	}
	if s.alerts != nil {
		s.alerts.ObserveReport(id, req, s.clock.Now())
	}
	return &apiv1.ReportResponse{}, nil
}

// callerWorkload returns the caller's workload identity and SVID, and
// refuses a caller whose SVID or identity was revoked.
func (s *controlService) callerWorkload(ctx context.Context) (spiffeid.ID, *x509.Certificate, error) {
	id, leaf, err := s.peerSVID(ctx)
	if err != nil {
		return id, nil, err
	}
	w, err := identity.ParseWorkloadID(id)
	if err != nil {
		s.auditAgg.Failure(audit.FailureProxy, remoteAddr(ctx), id.String(), "not a workload identity")
		return id, nil, status.Error(codes.PermissionDenied, "not a workload identity")
	}
	return id, leaf, s.checkNotRevoked(ctx, leaf, w, "")
}

// checkNotRevoked refuses a caller whose SVID, identity or (when not
// empty) instance was revoked.
func (s *controlService) checkNotRevoked(ctx context.Context, leaf *x509.Certificate, w identity.Workload, instance string) error {
	revoked, err := s.registry.IsRevoked(ctx, leaf.SerialNumber.Text(16), w, instance)
	if err != nil {
		return s.internal("check revocation", err)
	}
	if !revoked {
		return nil
	}
	s.logger.Warn("revoked proxy refused", telemetry.KeyIdentity, w.Namespace+"/"+w.Account, telemetry.KeyInstance, instance,
		telemetry.KeySerial, leaf.SerialNumber.Text(16), telemetry.KeyRemote, remoteAddr(ctx))
	if id, err := x509svid.IDFromCert(leaf); err == nil {
		s.auditAgg.Failure(audit.FailureProxy, remoteAddr(ctx), id.String(), "revoked svid")
	}
	return status.Error(codes.PermissionDenied, "revoked: attest again with a new join token")
}

// Subscribe registers the calling proxy and streams its snapshots. The
// stream ends when the caller's SVID expires, so a proxy always reconnects
// with its renewed SVID.
func (s *controlService) Subscribe(stream apiv1.Control_SubscribeServer) error {
	ctx := stream.Context()
	id, leaf, err := s.peerSVID(ctx)
	if err != nil {
		return err
	}
	w, err := identity.ParseWorkloadID(id)
	if err != nil {
		return status.Error(codes.PermissionDenied, "not a workload identity")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	node := first.GetNode()
	if node == nil {
		return status.Error(codes.InvalidArgument, "first message must be a node")
	}
	svc, err := identity.ParseServiceRef(node.GetService(), "")
	if err != nil || node.GetService() != svc.String() {
		return status.Error(codes.InvalidArgument, "node.service: want namespace/name")
	}
	if err := identity.ValidateName(node.GetInstance()); err != nil {
		return status.Errorf(codes.InvalidArgument, "node.instance: %v", err)
	}
	if err := checkAdvertise(node.GetAddress()); err != nil {
		return status.Errorf(codes.InvalidArgument, "node.address: %v", err)
	}
	if _, err := balancer.ParseLocality(node.GetLocality()); err != nil {
		return status.Errorf(codes.InvalidArgument, "node.locality: %v", err)
	}
	if err := checkProtocol(node.GetProtocol()); err != nil {
		return status.Errorf(codes.InvalidArgument, "node.protocol: %v", err)
	}
	ok, err := s.registry.Serves(ctx, w, svc)
	if err != nil {
		return s.internal("subscribe", err)
	}
	if !ok {
		s.logger.Warn("subscribe refused: identity not attested for service", telemetry.KeyIdentity, id.String(), telemetry.KeyService, svc.String())
		s.auditAgg.Failure(audit.FailureProxy, remoteAddr(ctx), id.String(), "identity not attested for the service")
		return status.Errorf(codes.PermissionDenied, "identity %s was not attested for service %s", id, svc)
	}
	if err := s.checkNotRevoked(ctx, leaf, w, node.GetInstance()); err != nil {
		// A revoked proxy that renewed before its revocation comes back
		// with a serial peers do not know yet: deny it too.
		if rerr := s.registry.RevokeSerial(ctx, leaf.SerialNumber.Text(16), leaf.NotAfter, svc.Namespace+"/"+node.GetInstance()); rerr != nil {
			s.logger.Warn("revoke presented serial", telemetry.KeyErr, rerr)
		}
		return err
	}
	if addr := node.GetAddress(); addr != "" {
		if err := s.proveAddress(ctx, addr, id); err != nil {
			s.logger.Warn("subscribe refused: advertised address not served by the caller", telemetry.KeyIdentity, id.String(),
				telemetry.KeyAddress, addr, telemetry.KeyErr, err)
			return status.Errorf(codes.PermissionDenied, "node.address: no proxy with identity %s answers at %s", id, addr)
		}
	}

	now := s.clock.Now()
	session := rand.Text() // this stream's claim on the record
	var (
		taken  bool
		labels map[string]string
	)
	err = s.registry.UpdateProxy(ctx, svc.Namespace, node.GetInstance(), func(p *registry.Proxy) {
		if p.Identity != "" && p.Identity != id.String() {
			taken = true
			return
		}
		if p.Service != "" && p.Service != svc.Name {
			// An instance bound to another service of the same identity
			// (with that service's labels) is not this one.
			taken = true
			return
		}
		taken = false
		labels = maps.Clone(p.Labels)
		p.Service = svc.Name
		p.Identity = id.String()
		p.Address = node.GetAddress()
		p.Connected = true
		p.Live = node.GetAddress() != ""
		p.LastSeen = now
		p.SVIDExpiry = leaf.NotAfter
		p.SVIDSerial = leaf.SerialNumber.Text(16)
		p.SVIDAuthority = ca.KeyID(leaf.AuthorityKeyId)
		p.Version = node.GetVersion()
		p.Locality = node.GetLocality()
		p.Protocol = node.GetProtocol()
		// A new stream is a healthy proxy (a restarted one that was
		// draining is no longer), unless its first Status says otherwise.
		p.Draining = false
		p.Stream = session
	})
	if err != nil {
		return s.internal("subscribe", err)
	}
	if taken {
		return status.Error(codes.PermissionDenied, "node.instance belongs to another identity")
	}
	s.logger.Info("proxy connected", telemetry.KeyIdentity, id.String(), telemetry.KeyService, svc.String(),
		telemetry.KeyInstance, node.GetInstance(), telemetry.KeyAddress, node.GetAddress())

	defer func() {
		// The stream's context is done; record the disconnect with a fresh one.
		err := s.registry.UpdateProxy(context.WithoutCancel(ctx), svc.Namespace, node.GetInstance(), func(p *registry.Proxy) {
			if p.Stream != session {
				return // a newer stream of this instance holds the record
			}
			p.Connected = false
			p.LastSeen = s.clock.Now()
		})
		if err != nil {
			s.logger.Warn("record proxy disconnect", telemetry.KeyInstance, node.GetInstance(), telemetry.KeyErr, err)
		}
		s.logger.Info("proxy disconnected", telemetry.KeyService, svc.String(), telemetry.KeyInstance, node.GetInstance())
	}()

	// The stream ends when the caller's SVID expires (on the control
	// plane's clock), so a proxy always reconnects with its current one.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	expiry := s.clock.NewTimer(leaf.NotAfter.Sub(s.clock.Now()))
	defer expiry.Stop()
	go func() {
		select {
		case <-expiry.C():
			cancel(errSVIDExpired)
		case <-sctx.Done():
		}
	}()
	record := func(fn func(p *registry.Proxy)) {
		err := s.registry.UpdateProxy(sctx, svc.Namespace, node.GetInstance(), func(p *registry.Proxy) {
			if p.Stream == session {
				fn(p)
			}
		})
		if err != nil && sctx.Err() == nil {
			s.logger.Warn("record proxy state", telemetry.KeyInstance, node.GetInstance(), telemetry.KeyErr, err)
		}
	}
	// The hub passes on only the answer to the version last sent, once, so
	// a flood of ACKs is not a flood of store writes.
	serial := leaf.SerialNumber.Text(16)
	err = s.hub.Serve(sctx, stream, push.Node{ID: id.String(), Service: svc, Labels: labels}, push.Callbacks{
		Sent: func(snap *apiv1.Snapshot) {
			if slices.Contains(snap.GetRevokedSerials(), serial) {
				cancel(errRevoked)
				return
			}
			record(func(p *registry.Proxy) { p.SnapshotVersion = snap.GetVersion() })
		},
		Acked: func(snap *apiv1.Snapshot, nack string) {
			v := snap.GetVersion()
			if len(nack) > maxNack {
				n := maxNack
				for n > 0 && !utf8.RuneStart(nack[n]) {
					n-- // do not cut a rune in two
				}
				nack = nack[:n]
			}
			if nack != "" {
				s.logger.Warn("snapshot rejected by proxy", telemetry.KeyInstance, node.GetInstance(), telemetry.KeyVersion, v, telemetry.KeyErr, nack)
			}
			record(func(p *registry.Proxy) {
				if nack == "" {
					p.AckedVersion, p.LastNack = v, ""
					p.BundleVersion = snap.GetBundleVersion()
				} else {
					p.LastNack = nack
				}
			})
			if nack == "" && s.acked != nil {
				s.acked()
			}
		},
		Status: func(st *apiv1.Status) {
			if st.GetLeaving() {
				// Out of the endpoints now, not after the grace period:
				// the proxy has finished its in-flight requests.
				record(func(p *registry.Proxy) {
					p.Draining, p.Live, p.Connected = true, false, false
					p.LastSeen = s.clock.Now()
				})
				s.logger.Info("proxy leaving", telemetry.KeyService, svc.String(), telemetry.KeyInstance, node.GetInstance())
				cancel(errLeaving)
				return
			}
			// UpdateProxy writes nothing when the state does not change,
			// so a flood of Status messages is not a flood of writes.
			record(func(p *registry.Proxy) { p.Draining = st.GetDraining() })
		},
	})
	if errors.Is(context.Cause(sctx), errLeaving) {
		return nil
	}
	if errors.Is(context.Cause(sctx), errRevoked) {
		return status.Error(codes.PermissionDenied, "revoked: attest again with a new join token")
	}
	if errors.Is(context.Cause(sctx), errSVIDExpired) {
		return status.Error(codes.Unauthenticated, "svid expired: renew and reconnect")
	}
	if errors.Is(err, push.ErrUnexpectedMessage) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return err
}

// peerSVID returns the caller's verified SPIFFE ID and leaf certificate.
// The TLS layer already verified the chain; the expiry is checked again
// here because a connection may outlive its certificate.
func (s *controlService) peerSVID(ctx context.Context) (spiffeid.ID, *x509.Certificate, error) {
	id, leaf, err := s.verifiedPeer(ctx)
	if err != nil {
		s.auditAgg.Failure(audit.FailureProxy, remoteAddr(ctx), "", status.Convert(err).Message())
	}
	return id, leaf, err
}

// verifiedPeer is peerSVID without the failure accounting.
func (s *controlService) verifiedPeer(ctx context.Context) (spiffeid.ID, *x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated, "an X509-SVID is required")
	}
	leaf := info.State.PeerCertificates[0]
	if s.clock.Now().After(leaf.NotAfter) {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated, "svid expired")
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil || !id.MemberOf(s.td) {
		return spiffeid.ID{}, nil, status.Error(codes.Unauthenticated, "not an X509-SVID of this trust domain")
	}
	return id, leaf, nil
}

func (s *controlService) internal(op string, err error) error {
	s.logger.Error("rpc failed", telemetry.KeyDetail, op, telemetry.KeyErr, err)
	return status.Error(codes.Internal, op+": internal error")
}

// probeTimeout bounds the check of an advertised address.
const probeTimeout = 5 * time.Second

// proveAddress checks that the proxy listening at addr presents an SVID of
// id: a workload may only advertise an address it serves. Without this, a
// compromised workload could advertise another's address, and callers,
// seeing one address claimed by two identities, could not trust either.
func (s *controlService) proveAddress(ctx context.Context, addr string, id spiffeid.ID) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	d := tls.Dialer{Config: mtls.ProbeConfig(s.ca.Bundle(), id)}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// checkAdvertise validates an advertised inbound address: "" (no inbound),
// or host:port where host is an IP literal (not unspecified) or an RFC 1123
// host name of at most 253 bytes.
func checkAdvertise(addr string) error {
	if addr == "" {
		return nil
	}
	if len(addr) > 261 {
		return errors.New("too long")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %v", addr, err)
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return fmt.Errorf("%q: an unspecified address cannot be reached by peers", addr)
		}
	} else if !validHostname(host) {
		return fmt.Errorf("%q: host must be an IP address or a DNS name", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || port != strconv.Itoa(p) {
		return fmt.Errorf("%q: bad port", addr)
	}
	return nil
}

// checkProtocol validates the protocol of a proxy's app.
func checkProtocol(p string) error {
	switch p {
	case "", "http", "http2", "grpc", "tcp":
		return nil
	}
	return fmt.Errorf("%q: want http, http2, grpc or tcp", truncate(p))
}

// truncate cuts what a proxy sent to a length fit for an error message.
func truncate(s string) string {
	const n = 140
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// validHostname reports whether h is an RFC 1123 host name: dot-separated
// labels of letters, digits and '-', each 1 to 63 bytes, not starting or
// ending with '-', 253 bytes at most.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func svidMessage(id spiffeid.ID, chain []*x509.Certificate) *apiv1.X509SVID {
	return &apiv1.X509SVID{SpiffeId: id.String(), CertChain: derCerts(chain)}
}

func derCerts(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

func remoteAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
