package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/buildinfo"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/fileutil"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
	"github.com/bulwarkmesh/bulwark/internal/svid"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// snapshotFile keeps the last snapshot the proxy accepted (0600).
const snapshotFile = "snapshot.pb"

// subscriber keeps the engine on the newest snapshot: it holds a Subscribe
// stream to the control plane, applies and ACKs (or NACKs) each snapshot,
// and reconnects with capped backoff when the stream ends. After every SVID
// renewal it reconnects at once, so the control plane always sees the
// current SVID. It also carries the proxy's word on its health: a
// Status{draining} now and after every Node while the proxy drains, and a
// last Status{leaving} on the way out, after which it never reconnects.
type subscriber struct {
	client    *controlClient
	mgr       *svid.Manager
	engine    *proxy.Engine
	service   identity.ServiceRef
	advertise string
	// locality and protocol are sent in the Node message.
	locality string
	protocol string
	dataDir  string
	clock    clock.Clock
	logger   *slog.Logger

	// sendMu serializes the messages sent on the stream (Node, Status and
	// ACKs), and the changes of draining with them, so the control plane
	// sees the proxy's last word last.
	sendMu sync.Mutex

	// applied is closed once a first snapshot (from the control plane or
	// from disk) is in force.
	applied     chan struct{}
	appliedOnce sync.Once

	mu     sync.Mutex
	cancel context.CancelFunc
	// conn is the connection of the current stream, nil between streams.
	conn      *grpc.ClientConn
	connected bool
	lastErr   string
	lkg       bool // serving a last-known-good snapshot from disk
	// stream is the current Subscribe stream once its Node was sent, nil
	// between streams.
	stream apiv1.Control_SubscribeClient
	// draining is sent as Status{draining} after every Node.
	draining bool
	// left is set once Status{leaving} was sent: no new stream is opened.
	left bool
	// sessionDone is closed when the current session ends.
	sessionDone chan struct{}

	// snapshots counts the snapshots applied and rejected; nil: not
	// counted.
	snapshots *snapshotMetrics
	// onSnapshot, if set, is called after each snapshot put in force
	// (Config.OnSnapshot).
	onSnapshot func()
}

// errPermanent marks a stream failure that reconnecting cannot fix.
var errPermanent = errors.New("control plane refused this proxy")

func (s *subscriber) run(ctx context.Context) error {
	s.mgr.OnRotate(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cancel != nil {
			s.cancel() // reconnect with the new SVID
		}
	})
	const minBackoff, maxBackoff = time.Second, 30 * time.Second
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		started := s.clock.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if s.hasLeft() {
			// The proxy is shutting down: it stays away.
			<-ctx.Done()
			return nil
		}
		if errors.Is(err, errPermanent) {
			return err
		}
		if errors.Is(err, errRotated) {
			backoff = minBackoff
			continue
		}
		if s.clock.Now().Sub(started) > maxBackoff {
			backoff, attempt = minBackoff, 1
		}
		s.logger.Warn("control plane unreachable, keeping the current snapshot and retrying",
			telemetry.KeyAttempt, attempt, telemetry.KeyBackoff, backoff.String(), telemetry.KeyErr, err)
		t := s.clock.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// errRotated ends a session after an SVID renewal.
var errRotated = errors.New("svid rotated")

// errLeft ends a session started after the proxy said it was leaving.
var errLeft = errors.New("proxy left the mesh")

func (s *subscriber) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	s.mu.Lock()
	if s.left {
		s.mu.Unlock()
		return nil
	}
	s.cancel = cancel
	s.sessionDone = done
	s.mu.Unlock()
	defer s.setConnected(false, "")

	conn, err := s.client.subscribeConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
	}()
	stream, err := apiv1.NewControlClient(conn).Subscribe(sctx)
	if err != nil {
		return s.streamErr(ctx, sctx, err)
	}
	if err := s.start(stream); err != nil {
		return s.streamErr(ctx, sctx, err)
	}
	defer func() {
		s.mu.Lock()
		s.stream = nil
		s.mu.Unlock()
	}()
	for {
		snap, err := stream.Recv()
		if err != nil {
			return s.streamErr(ctx, sctx, err)
		}
		s.setConnected(true, "")
		ack := &apiv1.Ack{Version: snap.GetVersion()}
		if err := s.apply(snap); err != nil {
			ack.Error = err.Error()
			s.logger.Error("snapshot rejected, keeping the previous one", telemetry.KeyVersion, snap.GetVersion(), telemetry.KeyErr, err)
		} else {
			s.logger.Info("snapshot applied", telemetry.KeyVersion, snap.GetVersion(),
				telemetry.KeyDestinations, len(snap.GetDestinations()))
		}
		if err := s.send(stream, &apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Ack{Ack: ack}}); err != nil {
			return s.streamErr(ctx, sctx, err)
		}
	}
}

// start sends the Node message and, while the proxy is draining, a
// Status{draining} right after it; from then on the stream is the one
// setDraining and leave send on.
func (s *subscriber) start(stream apiv1.Control_SubscribeClient) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.hasLeft() {
		return errLeft
	}
	err := stream.Send(&apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Node{Node: &apiv1.Node{
		Service:  s.service.String(),
		Instance: s.mgr.Instance(),
		Address:  s.advertise,
		Version:  buildinfo.Version,
		Locality: s.locality,
		Protocol: s.protocol,
	}}})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.stream = stream
	draining := s.draining
	s.mu.Unlock()
	if draining {
		return stream.Send(statusMsg(&apiv1.Status{Draining: true}))
	}
	return nil
}

// send sends one message on stream, after any other being sent.
func (s *subscriber) send(stream apiv1.Control_SubscribeClient, m *apiv1.SubscribeRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return stream.Send(m)
}

func statusMsg(st *apiv1.Status) *apiv1.SubscribeRequest {
	return &apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Status{Status: st}}
}

// setDraining records whether the proxy is draining and tells the control
// plane now if a stream is open (and after every reconnect in any case).
// It reports whether the control plane was told now.
func (s *subscriber) setDraining(d bool) (sent bool) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	s.draining = d
	stream := s.stream
	s.mu.Unlock()
	if stream == nil {
		return false
	}
	if err := stream.Send(statusMsg(&apiv1.Status{Draining: d})); err != nil {
		s.logger.Warn("tell the control plane the proxy is draining", telemetry.KeyErr, err)
		return false
	}
	return true
}

// isDraining reports whether the proxy is draining.
func (s *subscriber) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// hasLeft reports whether leave was called.
func (s *subscriber) hasLeft() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.left
}

// leave tells the control plane the proxy is going away (Status{leaving}:
// its endpoint is removed at once), closes the stream and waits, until ctx
// is done, for the control plane to end it. No stream is opened again. It
// reports whether the control plane was told.
func (s *subscriber) leave(ctx context.Context) bool {
	s.sendMu.Lock()
	s.mu.Lock()
	s.left, s.draining = true, true
	stream, done := s.stream, s.sessionDone
	s.mu.Unlock()
	if stream == nil {
		s.sendMu.Unlock()
		return false
	}
	err := stream.Send(statusMsg(&apiv1.Status{Draining: true, Leaving: true}))
	if err == nil {
		err = stream.CloseSend()
	}
	s.sendMu.Unlock()
	if err != nil {
		s.logger.Warn("tell the control plane the proxy is leaving", telemetry.KeyErr, err)
		return false
	}
	select {
	case <-done: // the control plane recorded it and ended the stream
	case <-ctx.Done():
	}
	return true
}

// streamErr turns the end of a stream into the reason the loop acts on.
func (s *subscriber) streamErr(ctx, sctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case sctx.Err() != nil:
		return errRotated
	case errors.Is(err, io.EOF):
		return errors.New("control plane closed the stream")
	}
	st := status.Convert(err)
	s.setConnected(false, st.Message())
	switch st.Code() {
	case codes.PermissionDenied, codes.InvalidArgument:
		return fmt.Errorf("%w: %s", errPermanent, st.Message())
	}
	return err
}

// apply installs a snapshot from the control plane (see install), then
// keeps it on disk.
func (s *subscriber) apply(snap *apiv1.Snapshot) error {
	err := s.install(snap, false)
	s.snapshots.record(err, s.clock.Now())
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.lkg = false
	s.mu.Unlock()
	s.appliedOnce.Do(func() { close(s.applied) })
	if s.dataDir != "" {
		b, err := proto.Marshal(snap)
		if err == nil {
			err = fileutil.WriteAtomic(filepath.Join(s.dataDir, snapshotFile), b, 0o600)
		}
		if err != nil {
			s.logger.Warn("persist snapshot", telemetry.KeyErr, err)
		}
	}
	return nil
}

// install checks every part of snap that can be malformed, then puts it in
// force: the engine's table (policies, endpoints, revoked serials, bundle
// version), the trust bundle, the JWT bundle, and an early renewal when the
// snapshot names another signing authority than the SVID's. A snapshot that
// does not check out changes nothing. lkg marks a last-known-good copy
// from disk.
func (s *subscriber) install(snap *apiv1.Snapshot, lkg bool) error {
	roots, err := parseDER(snap.GetTrustBundle())
	if err != nil {
		return fmt.Errorf("trust bundle: %w", err)
	}
	if jwks := snap.GetJwtBundle(); len(jwks) > 0 {
		if _, err := jwtbundle.Parse(s.mgr.ID().TrustDomain(), jwks); err != nil {
			return fmt.Errorf("jwt bundle: %w", err)
		}
	}
	apply := s.engine.Apply
	if lkg {
		apply = s.engine.ApplyLastKnownGood
	}
	if err := apply(snap); err != nil {
		return err
	}
	// The snapshot is in force: what fails from here on (writing the data
	// dir) is reported, not NACKed.
	if len(roots) > 0 {
		if err := s.mgr.SetBundle(roots); err != nil {
			s.logger.Warn("trust bundle not stored", telemetry.KeyVersion, snap.GetVersion(), telemetry.KeyErr, err)
		}
	}
	if err := s.mgr.SetJWTBundle(snap.GetJwtBundle()); err != nil {
		s.logger.Warn("jwt bundle not stored", telemetry.KeyVersion, snap.GetVersion(), telemetry.KeyErr, err)
	}
	s.mgr.RenewSoon(snap.GetSigningAuthority())
	if s.onSnapshot != nil {
		s.onSnapshot()
	}
	return nil
}

// loadLastKnownGood applies the snapshot kept in the data dir, so a proxy
// restarted while the control plane is unreachable serves its last config,
// trust bundle and revocations.
func (s *subscriber) loadLastKnownGood() {
	if s.dataDir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(s.dataDir, snapshotFile))
	if err != nil {
		return
	}
	snap := &apiv1.Snapshot{}
	if err := proto.Unmarshal(b, snap); err != nil {
		s.logger.Warn("stored snapshot unreadable, ignoring it", telemetry.KeyErr, err)
		return
	}
	if err := s.install(snap, true); err != nil {
		s.logger.Warn("stored snapshot rejected, ignoring it", telemetry.KeyErr, err)
		return
	}
	s.mu.Lock()
	s.lkg = true
	s.mu.Unlock()
	s.appliedOnce.Do(func() { close(s.applied) })
	s.logger.Warn("serving the last-known-good snapshot until the control plane answers", telemetry.KeyVersion, snap.GetVersion())
}

// report sends a Report on the connection of the current stream, so that
// reporting costs no connection of its own.
func (s *subscriber) report(ctx context.Context, req *apiv1.ReportRequest) error {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return errNotConnected
	}
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	_, err := apiv1.NewControlClient(conn).Report(ctx, req)
	return err
}

func (s *subscriber) setConnected(c bool, lastErr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = c
	if lastErr != "" {
		s.lastErr = lastErr
	}
}

// status reports the subscription for /ready.
func (s *subscriber) status() (connected, lkg bool, lastErr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected, s.lkg, s.lastErr
}
