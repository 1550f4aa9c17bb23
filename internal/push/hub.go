package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Stream is the server side of a Subscribe stream.
type Stream interface {
	Send(*apiv1.Snapshot) error
	Recv() (*apiv1.SubscribeRequest, error)
}

// Callbacks tell the caller what happened on a stream. Each may be nil.
type Callbacks struct {
	// Sent is called after a snapshot was sent. The snapshot must not be
	// modified.
	Sent func(snap *apiv1.Snapshot)
	// Acked is called once for the ACK (nack == "") or NACK of the
	// snapshot last sent; answers to other versions and repeated answers
	// are dropped, so a proxy cannot turn a flood of ACKs into work.
	Acked func(snap *apiv1.Snapshot, nack string)
	// Status is called for each Status message, in the order the proxy
	// sent them (draining, or leaving on its way out). It runs on the
	// stream's receiving goroutine: the next message is read once it
	// returns.
	Status func(st *apiv1.Status)
}

// Hub streams snapshots to subscribed proxies. A new State wakes every
// subscriber; each compiles its own snapshot in its own goroutine (so the
// work spreads over cores) and sends it only if its content changed.
type Hub struct {
	logger *slog.Logger

	mu    sync.Mutex
	state *State
	ready chan struct{}
	subs  map[chan struct{}]struct{}
}

// NewHub returns a Hub with no state; subscribers wait for the first
// SetState.
func NewHub(logger *slog.Logger) *Hub {
	return &Hub{
		logger: telemetry.OrDiscard(logger),
		ready:  make(chan struct{}),
		subs:   make(map[chan struct{}]struct{}),
	}
}

// SetState installs a new sealed State and wakes every subscriber.
func (h *Hub) SetState(st *State) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state == nil {
		close(h.ready)
	}
	h.state = st
	for c := range h.subs {
		select {
		case c <- struct{}{}:
		default: // already woken; it will read the newest state
		}
	}
}

// Ready is closed once the first State is installed.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// State returns the current state, nil before the first SetState.
func (h *Hub) State() *State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

// Subscribers returns how many streams are being served.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// ErrUnexpectedMessage is returned when a proxy sends anything but an Ack
// or a Status after its Node.
var ErrUnexpectedMessage = errors.New("unexpected message on subscribe stream: want ack or status")

// Serve streams snapshots for node until ctx is done, the proxy closes the
// stream (nil), or sending or receiving fails. The first snapshot is sent at
// once, even when it is empty.
func (h *Hub) Serve(ctx context.Context, stream Stream, node Node, cb Callbacks) error {
	wake := make(chan struct{}, 1)
	wake <- struct{}{}
	h.mu.Lock()
	h.subs[wake] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.subs, wake)
		h.mu.Unlock()
	}()

	// sending is the snapshot being (or last) sent; it is set before the
	// send, so an ACK that comes back fast is not mistaken for a stray.
	var sending atomic.Pointer[apiv1.Snapshot]
	var answered atomic.Int64
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if st := req.GetStatus(); st != nil {
				if cb.Status != nil {
					cb.Status(st)
				}
				continue
			}
			ack := req.GetAck()
			if ack == nil {
				recvErr <- ErrUnexpectedMessage
				return
			}
			v := ack.GetVersion()
			snap := sending.Load()
			if snap == nil || v != snap.GetVersion() || answered.Swap(v) == v {
				continue
			}
			if cb.Acked != nil {
				cb.Acked(snap, ack.GetError())
			}
		}
	}()

	select {
	case <-h.ready:
	case <-ctx.Done():
		return ctx.Err()
	case err := <-recvErr:
		return recvEnd(err)
	}

	var last [32]byte
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return recvEnd(err)
		case <-wake:
			snap, err := Compile(h.State(), node)
			if err != nil {
				// A compile error is a bug; keep the proxy on its last
				// snapshot rather than sending a partial one.
				h.logger.Error("compile snapshot", telemetry.KeyService, node.Service.String(), telemetry.KeyErr, err)
				continue
			}
			sum, err := contentHash(snap)
			if err != nil {
				return fmt.Errorf("hash snapshot: %w", err)
			}
			if sum == last {
				continue
			}
			sending.Store(snap)
			if err := stream.Send(snap); err != nil {
				return err
			}
			last = sum
			if cb.Sent != nil {
				cb.Sent(snap)
			}
		}
	}
}

// recvEnd is Serve's result when the proxy's side of the stream ends: nil
// when the proxy closed it, the error otherwise.
func recvEnd(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
