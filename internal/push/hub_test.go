package push_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// fakeStream is the server side of a Subscribe stream, driven by the test
// through channels. Send never fails unless sendErr is set.
type fakeStream struct {
	sent    chan *apiv1.Snapshot
	reqs    chan *apiv1.SubscribeRequest
	recvErr chan error
	sendErr error
	done    chan struct{}
	once    sync.Once
}

var _ push.Stream = (*fakeStream)(nil)

func newFakeStream() *fakeStream {
	return &fakeStream{
		sent:    make(chan *apiv1.Snapshot, 16),
		reqs:    make(chan *apiv1.SubscribeRequest),
		recvErr: make(chan error),
		done:    make(chan struct{}),
	}
}

func (s *fakeStream) Send(snap *apiv1.Snapshot) error {
	if s.sendErr != nil {
		return s.sendErr
	}
	s.sent <- snap
	return nil
}

func (s *fakeStream) Recv() (*apiv1.SubscribeRequest, error) {
	select {
	case r := <-s.reqs:
		return r, nil
	case err := <-s.recvErr:
		return nil, err
	case <-s.done:
		return nil, io.EOF
	}
}

// close ends the stream as gRPC does when the handler returns: Recv fails.
func (s *fakeStream) close() { s.once.Do(func() { close(s.done) }) }

// sentNow returns the snapshots sent and not yet taken.
func (s *fakeStream) sentNow() []*apiv1.Snapshot {
	var out []*apiv1.Snapshot
	for {
		select {
		case snap := <-s.sent:
			out = append(out, snap)
		default:
			return out
		}
	}
}

func ack(version int64, nack string) *apiv1.SubscribeRequest {
	return &apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Ack{Ack: &apiv1.Ack{Version: version, Error: nack}}}
}

// recorder records the callbacks of one stream.
type recorder struct {
	mu    sync.Mutex
	sent  []int64
	acked []string
}

func (r *recorder) callbacks() push.Callbacks {
	return push.Callbacks{
		Sent: func(snap *apiv1.Snapshot) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.sent = append(r.sent, snap.GetVersion())
		},
		Acked: func(snap *apiv1.Snapshot, nack string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.acked = append(r.acked, ackString(snap.GetVersion(), nack))
		},
	}
}

func ackString(v int64, nack string) string {
	if nack == "" {
		return "ack " + itoa(v)
	}
	return "nack " + itoa(v) + ": " + nack
}

func itoa(v int64) string {
	return string(appendInt(nil, v))
}

func appendInt(b []byte, v int64) []byte {
	if v >= 10 {
		b = appendInt(b, v/10)
	}
	return append(b, byte('0'+v%10))
}

func (r *recorder) get() (sent []int64, acked []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.sent...), append([]string(nil), r.acked...)
}

var (
	webNode = push.Node{ID: webID, Service: identity.ServiceRef{Namespace: "default", Name: "web"}}
	apiNode = push.Node{ID: apiID, Service: identity.ServiceRef{Namespace: "default", Name: "api"}}
)

// serve runs hub.Serve in a goroutine and returns a channel with its
// result.
func serve(ctx context.Context, h *push.Hub, s *fakeStream, node push.Node, cb push.Callbacks) <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, s, node, cb) }()
	return done
}

// versions returns the versions of snaps.
func versions(snaps []*apiv1.Snapshot) []int64 {
	var out []int64
	for _, s := range snaps {
		out = append(out, s.GetVersion())
	}
	return out
}

func TestHubFirstSnapshot(t *testing.T) {
	tests := []struct {
		name       string
		stateFirst bool
	}{
		{name: "state_before_serve", stateFirst: true},
		{name: "state_after_serve", stateFirst: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				h := push.NewHub(nil)
				st := meshState(t, 5, meshPolicies)
				if tt.stateFirst {
					h.SetState(st)
				}
				s := newFakeStream()
				var rec recorder
				done := serve(ctx, h, s, webNode, rec.callbacks())
				synctest.Wait()
				if got := h.Subscribers(); got != 1 {
					t.Errorf("Subscribers while serving: got %d, want 1", got)
				}
				if !tt.stateFirst {
					if got := s.sentNow(); len(got) != 0 {
						t.Fatalf("before the first SetState: got %d snapshots sent, want 0", len(got))
					}
					h.SetState(st)
					synctest.Wait()
				}

				got := s.sentNow()
				if diff := cmp.Diff([]int64{5}, versions(got)); diff != "" {
					t.Fatalf("snapshots sent (-want +got):\n%s", diff)
				}
				want, err := push.Compile(st, webNode)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(view(t, want), view(t, got[0])); diff != "" {
					t.Errorf("first snapshot (-want +got):\n%s", diff)
				}
				if sent, _ := rec.get(); !cmp.Equal(sent, []int64{5}) {
					t.Errorf("Sent callbacks: got %v, want [5]", sent)
				}

				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Errorf("Serve after cancel: got %v, want context.Canceled", err)
				}
				s.close()
				if got := h.Subscribers(); got != 0 {
					t.Errorf("Subscribers after Serve returned: got %d, want 0", got)
				}
			})
		})
	}
}

func TestHubSendsOnlyChanges(t *testing.T) {
	const other = `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-from-web}
spec:
  selector: {service: api}
  rules:
  - from: {services: [default/web]}
    to: {methods: [GET, HEAD]}
`
	tests := []struct {
		name      string
		states    []*push.State
		wantSent  []int64
		wantFinal int64
	}{
		{
			name:     "same_content_new_revision",
			states:   []*push.State{meshState(t, 1, meshPolicies), meshState(t, 2, meshPolicies), meshState(t, 3, meshPolicies)},
			wantSent: []int64{1},
		},
		{
			name:     "changed_policy",
			states:   []*push.State{meshState(t, 1, meshPolicies), meshState(t, 2, other)},
			wantSent: []int64{1, 2},
		},
		{
			name:     "change_then_back",
			states:   []*push.State{meshState(t, 1, meshPolicies), meshState(t, 2, other), meshState(t, 3, meshPolicies)},
			wantSent: []int64{1, 2, 3},
		},
		{
			name:     "change_elsewhere_invisible_to_node",
			states:   []*push.State{meshState(t, 1, meshPolicies), withEndpoint(meshState(t, 2, meshPolicies), "default/db", "10.9.9.9:15006")},
			wantSent: []int64{1},
		},
		{
			name:     "change_to_a_destination",
			states:   []*push.State{meshState(t, 1, meshPolicies), withEndpoint(meshState(t, 2, meshPolicies), "default/api", "10.9.9.9:15006")},
			wantSent: []int64{1, 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				h := push.NewHub(nil)
				s := newFakeStream()
				var rec recorder
				done := serve(ctx, h, s, webNode, rec.callbacks())
				var got []int64
				for _, st := range tt.states {
					h.SetState(st)
					// Let Serve handle this state before the next one.
					synctest.Wait()
					got = append(got, versions(s.sentNow())...)
				}
				if diff := cmp.Diff(tt.wantSent, got); diff != "" {
					t.Errorf("versions sent (-want +got):\n%s", diff)
				}
				if sent, _ := rec.get(); !cmp.Equal(sent, tt.wantSent) {
					t.Errorf("Sent callbacks: got %v, want %v", sent, tt.wantSent)
				}
				cancel()
				<-done
				s.close()
			})
		})
	}
}

// withEndpoint returns st with one more endpoint for svc, sealed again.
func withEndpoint(st *push.State, svc, addr string) *push.State {
	st.Endpoints[svc] = append(st.Endpoints[svc], push.Endpoint{Address: addr, SPIFFEID: "spiffe://bulwark.local/ns/default/sa/x", Instance: "x-1"})
	st.Seal()
	return st
}

func TestHubAcks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		h := push.NewHub(nil)
		h.SetState(meshState(t, 9, meshPolicies))
		s := newFakeStream()
		var rec recorder
		done := serve(ctx, h, s, webNode, rec.callbacks())

		synctest.Wait() // version 9 is sent: a proxy answers what it received

		// Only the first answer to the version last sent is passed on: a
		// repeated answer and answers to other versions are dropped, so a
		// proxy cannot turn a flood of ACKs into store writes.
		s.reqs <- ack(8, "")
		s.reqs <- ack(9, "")
		s.reqs <- ack(9, "policy default/api-from-web: bad path")
		s.reqs <- ack(9, "")
		s.reqs <- ack(10, "")
		synctest.Wait()

		_, acked := rec.get()
		want := []string{"ack 9"}
		if diff := cmp.Diff(want, acked); diff != "" {
			t.Errorf("Acked callbacks (-want +got):\n%s", diff)
		}
		cancel()
		<-done
		s.close()
	})
}

func TestHubServeEnds(t *testing.T) {
	errBroken := errors.New("transport is closing")
	tests := []struct {
		name string
		// end makes Serve return, after the first snapshot was sent
		// unless noState is set.
		end     func(s *fakeStream, cancel context.CancelFunc)
		noState bool
		sendErr error
		want    error
	}{
		{
			name: "node_message_after_node",
			end: func(s *fakeStream, _ context.CancelFunc) {
				s.reqs <- &apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Node{Node: &apiv1.Node{Service: "default/web"}}}
			},
			want: push.ErrUnexpectedMessage,
		},
		{
			name: "empty_message",
			end:  func(s *fakeStream, _ context.CancelFunc) { s.reqs <- &apiv1.SubscribeRequest{} },
			want: push.ErrUnexpectedMessage,
		},
		{
			name: "unexpected_message_before_state",
			end: func(s *fakeStream, _ context.CancelFunc) {
				s.reqs <- &apiv1.SubscribeRequest{}
			},
			noState: true,
			want:    push.ErrUnexpectedMessage,
		},
		{
			name:    "proxy_closes_stream_before_state",
			end:     func(s *fakeStream, _ context.CancelFunc) { s.recvErr <- io.EOF },
			noState: true,
			want:    nil,
		},
		{
			name: "proxy_closes_stream",
			end:  func(s *fakeStream, _ context.CancelFunc) { s.recvErr <- io.EOF },
			want: nil,
		},
		{
			name: "receive_fails",
			end:  func(s *fakeStream, _ context.CancelFunc) { s.recvErr <- errBroken },
			want: errBroken,
		},
		{
			name:    "send_fails",
			end:     func(*fakeStream, context.CancelFunc) {},
			sendErr: errBroken,
			want:    errBroken,
		},
		{
			name: "context_cancelled",
			end:  func(_ *fakeStream, cancel context.CancelFunc) { cancel() },
			want: context.Canceled,
		},
		{
			name:    "context_cancelled_before_state",
			end:     func(_ *fakeStream, cancel context.CancelFunc) { cancel() },
			noState: true,
			want:    context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				h := push.NewHub(nil)
				if !tt.noState {
					h.SetState(meshState(t, 1, meshPolicies))
				}
				s := newFakeStream()
				s.sendErr = tt.sendErr
				done := serve(ctx, h, s, webNode, push.Callbacks{})
				synctest.Wait()
				if !tt.noState && tt.sendErr == nil {
					if got := versions(s.sentNow()); !cmp.Equal(got, []int64{1}) {
						t.Errorf("snapshots sent: got %v, want [1]", got)
					}
				}
				tt.end(s, cancel)
				synctest.Wait()
				var err error
				select {
				case err = <-done:
				default:
					t.Errorf("Serve: still running after the stream ended, want it to return %v", tt.want)
					cancel()
					<-done
					s.close()
					return
				}
				s.close()
				if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
					t.Errorf("Serve: got %v, want %v", err, tt.want)
				}
				if got := h.Subscribers(); got != 0 {
					t.Errorf("Subscribers after Serve returned: got %d, want 0", got)
				}
			})
		})
	}
}

func TestHubSubscribersGetOwnSnapshots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		h := push.NewHub(nil)
		web, api := newFakeStream(), newFakeStream()
		doneWeb := serve(ctx, h, web, webNode, push.Callbacks{})
		doneAPI := serve(ctx, h, api, apiNode, push.Callbacks{})
		synctest.Wait()
		if got := h.Subscribers(); got != 2 {
			t.Errorf("Subscribers: got %d, want 2", got)
		}

		st := meshState(t, 4, meshPolicies)
		h.SetState(st)
		synctest.Wait()
		for _, tc := range []struct {
			name   string
			stream *fakeStream
			node   push.Node
		}{{"web", web, webNode}, {"api", api, apiNode}} {
			got := tc.stream.sentNow()
			if len(got) != 1 {
				t.Fatalf("%s: got %d snapshots, want 1", tc.name, len(got))
			}
			want, err := push.Compile(st, tc.node)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(view(t, want), view(t, got[0])); diff != "" {
				t.Errorf("%s: snapshot (-want +got):\n%s", tc.name, diff)
			}
		}
		cancel()
		<-doneWeb
		<-doneAPI
		web.close()
		api.close()
	})
}

func TestHubReadyAndState(t *testing.T) {
	h := push.NewHub(nil)
	select {
	case <-h.Ready():
		t.Errorf("Ready before SetState: got closed, want open")
	default:
	}
	if got := h.State(); got != nil {
		t.Errorf("State before SetState: got %p, want nil", got)
	}
	st1, st2 := meshState(t, 1, meshPolicies), meshState(t, 2, meshPolicies)
	h.SetState(st1)
	h.SetState(st2) // a second SetState must not close Ready again
	select {
	case <-h.Ready():
	default:
		t.Errorf("Ready after SetState: got open, want closed")
	}
	if got := h.State(); got != st2 {
		t.Errorf("State: got revision %d, want the last one set (2)", got.Revision)
	}
}

// TestHubStatus checks that Status messages reach the Status callback in
// order, before and after the first snapshot, and that the stream goes on.
func TestHubStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		h := push.NewHub(nil)
		s := newFakeStream()
		var (
			mu  sync.Mutex
			got []string
		)
		done := serve(ctx, h, s, webNode, push.Callbacks{Status: func(st *apiv1.Status) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, st.String())
		}})
		status := func(draining, leaving bool) *apiv1.SubscribeRequest {
			return &apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Status{Status: &apiv1.Status{Draining: draining, Leaving: leaving}}}
		}
		// Before the first state: a proxy says it is draining right after
		// its Node.
		s.reqs <- status(true, false)
		h.SetState(meshState(t, 9, meshPolicies))
		synctest.Wait()
		s.reqs <- status(false, false)
		s.reqs <- status(true, true)
		synctest.Wait()

		mu.Lock()
		want := []string{
			(&apiv1.Status{Draining: true}).String(),
			(&apiv1.Status{}).String(),
			(&apiv1.Status{Draining: true, Leaving: true}).String(),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Status callbacks (-want +got):\n%s", diff)
		}
		mu.Unlock()
		if n := len(s.sentNow()); n != 1 {
			t.Errorf("snapshots sent: got %d, want 1 (Status messages do not end the stream)", n)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: got %v, want context.Canceled", err)
		}
		s.close()
	})
}
