package control_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
)

func TestPolicyReachesSubscribedProxy(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	p.attest(t, "shop/api", "")
	s := subscribe(t, web.client, nodeMsg(web.node(web.listen(t, p.mesh))))
	snap := s.recv(t)
	for !slices.Contains(snap.GetServices(), "shop/web") {
		snap = s.recv(t)
	}

	inboundNames := func(snap *apiv1.Snapshot) []string {
		var names []string
		for _, b := range snap.GetInbound().GetPolicies() {
			o, err := config.DecodeObject(b)
			if err != nil {
				t.Fatalf("snapshot policy: %v", err)
			}
			names = append(names, o.GetMetadata().Name)
		}
		return names
	}

	// A policy selecting web reaches it as a new version.
	if got := p.apply(t, policyJSON("shop", "api-to-web", "web", "shop/api")); !slices.Equal(got, []string{"created"}) {
		t.Fatalf("apply: got %v, want [created]", got)
	}
	next := s.recv(t)
	if next.GetVersion() <= snap.GetVersion() {
		t.Errorf("version after a policy change: got %d, want > %d", next.GetVersion(), snap.GetVersion())
	}
	if diff := cmp.Diff([]string{"api-to-web"}, inboundNames(next)); diff != "" {
		t.Errorf("inbound policies (-want +got):\n%s", diff)
	}
	s.send(t, ackMsg(next.GetVersion(), ""))

	// An identical apply changes nothing, and a policy of another service
	// changes the mesh but not this proxy's snapshot: neither sends one.
	if got := p.apply(t, policyJSON("shop", "api-to-web", "web", "shop/api")); !slices.Equal(got, []string{"unchanged"}) {
		t.Fatalf("re-apply: got %v, want [unchanged]", got)
	}
	p.apply(t, policyJSON("shop", "orders-to-payments", "payments", "shop/orders"))
	// A last change that concerns web: if either change above had sent a
	// snapshot, it would arrive first.
	p.apply(t, policyJSON("shop", "orders-to-web", "web", "shop/orders"))
	last := s.recv(t)
	if diff := cmp.Diff([]string{"api-to-web", "orders-to-web"}, inboundNames(last)); diff != "" {
		t.Errorf("next snapshot after an identical apply and an unrelated policy: inbound policies (-want +got):\n%s", diff)
	}
	if last.GetVersion() <= next.GetVersion() {
		t.Errorf("version: got %d, want > %d", last.GetVersion(), next.GetVersion())
	}
	s.end(t)
}

// TestSubscribeEndsWhenSVIDExpires checks that an open stream ends with
// Unauthenticated once the caller's SVID expires on the control plane's
// clock (Config.Clock), and that new calls with it are refused.
//
// Regression: Subscribe used to bound the stream with
// context.WithDeadline(NotAfter), which follows the wall clock; with an
// injected clock a stream outlived its SVID.
func TestSubscribeEndsWhenSVIDExpires(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{svidTTL: control.MinSVIDTTL})
	w := p.attest(t, "shop/visitor", "")
	// 10s is a hang guard: the end is immediate on the fake clock; a
	// wall-clock deadline would come only a minute later.
	s := subscribeWithin(t, w.client, nodeMsg(w.node("")), 10*time.Second)
	s.recv(t)

	p.clock.Advance(2 * control.MinSVIDTTL)

	if code, msg := s.recvErr(t); code != codes.Unauthenticated {
		t.Errorf("stream after the SVID expired: got code %s (%s), want Unauthenticated", code, msg)
	}
	if got := p.proxyView(t, "shop", w.instance); got.Connected {
		t.Error("record after expiry: got connected, want disconnected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	_, err := w.client.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)})
	wantCode(t, err, codes.Unauthenticated)
}

// TestSubscribeReconnectKeepsProxyConnected pins a bug: when a proxy
// reconnects (a new stream for the same instance, as after an SVID
// rotation or a dead connection) before the control plane has noticed the
// end of its old stream, the old stream's deferred "disconnected" update
// overwrites the new stream's record. The proxy is then connected but
// recorded as disconnected, and once the grace period passes the janitor
// removes it from its service's endpoints.
func TestSubscribeReconnectKeepsProxyConnected(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	addr := web.listen(t, p.mesh)

	old := subscribe(t, web.client, nodeMsg(web.node(addr)))
	old.recv(t)
	renewed := subscribe(t, p.dial(t, web.svid), nodeMsg(web.node(addr)))
	renewed.recv(t)
	old.end(t) // the control plane notices the old stream's end only now

	if got := p.proxyView(t, "shop", web.instance); !got.Connected {
		t.Errorf("record while the new stream is open: got disconnected, want connected")
	}
	// Past the grace period, the janitor sweeps.
	swept := p.clock.TimerCreated()
	p.clock.Advance(31 * time.Second)
	select {
	case <-swept:
	case <-time.After(hangGuard):
		t.Fatal("the janitor did not run")
	}
	if got := p.endpoints(t, web.service); !slices.Equal(got, []string{addr}) {
		t.Errorf("endpoints of shop/web with its proxy connected, after the grace period: got %v, want [%s]", got, addr)
	}
	renewed.end(t)
}

// ackFirst is a gRPC stream interceptor that holds back the return of each
// snapshot Send until the proxy's ACK of it has been handled (the next
// Recv has started), as a scheduler may do on a loaded control plane.
type ackFirst struct {
	grpc.ServerStream
	mu         sync.Mutex
	lastWasAck bool
	ackHandled chan struct{}
}

func (s *ackFirst) RecvMsg(m any) error {
	s.mu.Lock()
	if s.lastWasAck {
		s.lastWasAck = false
		select {
		case s.ackHandled <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	err := s.ServerStream.RecvMsg(m)
	if r, ok := m.(*apiv1.SubscribeRequest); ok && err == nil && r.GetAck() != nil {
		s.mu.Lock()
		s.lastWasAck = true
		s.mu.Unlock()
	}
	return err
}

func (s *ackFirst) SendMsg(m any) error {
	if err := s.ServerStream.SendMsg(m); err != nil {
		return err
	}
	if _, ok := m.(*apiv1.Snapshot); ok {
		select {
		case <-s.ackHandled:
		case <-s.Context().Done():
		case <-time.After(5 * time.Second): // hang guard
		}
	}
	return nil
}

// TestSubscribeAckBeforeSentCallback checks that an ACK that comes back
// before the send of its snapshot has returned is recorded.
//
// Regression: the version sent used to be stored in the Sent callback,
// which runs after stream.Send returns, while ACKs are handled on another
// goroutine; an ACK arriving first was dropped as one of a version never
// sent, and since the proxy never ACKs again AckedVersion stayed behind.
func TestSubscribeAckBeforeSentCallback(t *testing.T) {
	p := control.StartPlane(t, control.PlaneConfig{
		StreamInterceptor: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, &ackFirst{ServerStream: ss, ackHandled: make(chan struct{}, 1)})
		},
	})
	m := planeMesh(p)
	w := m.attest(t, "shop/visitor", "")
	s := subscribe(t, w.client, nodeMsg(w.node("")))
	v := s.recv(t).GetVersion()
	s.send(t, ackMsg(v, ""))
	s.end(t)
	rec, _ := proxyRecord(t, p.Registry, "shop", w.instance)
	if rec.AckedVersion != v {
		t.Errorf("AckedVersion after the proxy ACKed version %d: got %d, want %d", v, rec.AckedVersion, v)
	}
}
