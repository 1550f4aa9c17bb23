package control_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/registry"
)

func statusMsg(draining, leaving bool) *apiv1.SubscribeRequest {
	return &apiv1.SubscribeRequest{Kind: &apiv1.SubscribeRequest_Status{Status: &apiv1.Status{Draining: draining, Leaving: leaving}}}
}

// TestSubscribeNodeMessageNamesTheField checks that a bad locality or
// protocol is refused with the field in the message.
func TestSubscribeNodeMessageNamesTheField(t *testing.T) {
	t.Parallel()
	p := control.StartPlane(t, control.PlaneConfig{})
	m := planeMesh(p)
	w := m.attest(t, "shop/visitor", "")
	tests := []struct {
		name      string
		edit      func(n *apiv1.Node)
		wantField string
	}{
		{"locality", func(n *apiv1.Node) { n.Locality = "a/b/c" }, "node.locality"},
		{"protocol", func(n *apiv1.Node) { n.Protocol = "quic" }, "node.protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := w.node("")
			tt.edit(n)
			s := subscribe(t, w.client, nodeMsg(n))
			code, msg := s.recvErr(t)
			if code != codes.InvalidArgument || !strings.HasPrefix(msg, tt.wantField+":") {
				t.Errorf("got %s %q, want InvalidArgument naming %s", code, msg, tt.wantField)
			}
		})
	}
}

// TestSubscribeRecordsLocalityProtocolAndDraining follows a proxy's record
// through its Node, Status messages and a new stream.
func TestSubscribeRecordsLocalityProtocolAndDraining(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	addr := web.listen(t, p.mesh)
	n := web.node(addr)
	n.Locality, n.Protocol = "eu-west/a", "grpc"
	s := subscribe(t, web.client, nodeMsg(n))
	s.recv(t)
	got := p.waitView(t, "shop", web.instance, func(v config.ProxyStatus) bool { return v.Connected })
	if got.Locality != "eu-west/a" || got.Protocol != "grpc" || got.Draining {
		t.Errorf("record: got locality %q protocol %q draining %v, want eu-west/a grpc false", got.Locality, got.Protocol, got.Draining)
	}

	s.send(t, statusMsg(true, false))
	p.waitView(t, "shop", web.instance, func(v config.ProxyStatus) bool { return v.Draining })
	// A draining proxy stays an endpoint (callers see it draining).
	if got := p.endpoints(t, web.service); !slices.Equal(got, []string{addr}) {
		t.Errorf("endpoints while draining: got %v, want [%s]", got, addr)
	}
	s.send(t, statusMsg(false, false))
	p.waitView(t, "shop", web.instance, func(v config.ProxyStatus) bool { return !v.Draining })

	// Draining again, then a new stream (a restarted proxy): healthy.
	s.send(t, statusMsg(true, false))
	p.waitView(t, "shop", web.instance, func(v config.ProxyStatus) bool { return v.Draining })
	s.end(t)
	again := subscribe(t, web.client, nodeMsg(web.node(addr)))
	again.recv(t)
	got = p.waitView(t, "shop", web.instance, func(v config.ProxyStatus) bool { return v.Connected })
	if got.Draining || got.Locality != "" || got.Protocol != "" {
		t.Errorf("record after a new stream: got draining %v locality %q protocol %q, want not draining, as the new Node says",
			got.Draining, got.Locality, got.Protocol)
	}
	again.end(t)
}

// TestSubscribeLeavingRemovesEndpointAtOnce checks that Status{leaving}
// takes the proxy out of its service's endpoints without waiting for the
// grace period (the fake clock does not move), and ends the stream cleanly.
func TestSubscribeLeavingRemovesEndpointAtOnce(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	addr := web.listen(t, p.mesh)
	s := subscribe(t, web.client, nodeMsg(web.node(addr)))
	s.recv(t)
	if got := p.endpoints(t, web.service); !slices.Equal(got, []string{addr}) {
		t.Fatalf("endpoints: got %v, want [%s]", got, addr)
	}
	s.send(t, statusMsg(true, true))
	s.end(t) // the server ends the stream with OK
	got := p.proxyView(t, "shop", web.instance)
	if got.Connected || !got.Draining {
		t.Errorf("record after leaving: got connected %v draining %v, want disconnected and draining", got.Connected, got.Draining)
	}
	services := p.endpoints(t, web.service)
	if len(services) != 0 {
		t.Errorf("endpoints after leaving, within the grace period: got %v, want none", services)
	}
}

// TestSubscribeDisconnectLeavesEndpointsAfterGrace checks that a proxy
// that disconnects without leaving stays an endpoint for the grace
// period, and leaves the endpoints once it is over.
func TestSubscribeDisconnectLeavesEndpointsAfterGrace(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web := p.attest(t, "shop/web", "")
	addr := web.listen(t, p.mesh)
	s := subscribe(t, web.client, nodeMsg(web.node(addr)))
	s.recv(t)
	s.end(t)
	if got := p.endpoints(t, web.service); !slices.Equal(got, []string{addr}) {
		t.Errorf("endpoints within the grace period: got %v, want [%s]", got, addr)
	}
	// Past the grace period, the janitor (armed for 30s) sweeps.
	p.clock.Advance(31 * time.Second)
	deadline := time.Now().Add(hangGuard)
	for got := p.endpoints(t, web.service); len(got) != 0; got = p.endpoints(t, web.service) {
		if time.Now().After(deadline) {
			t.Fatalf("endpoints after the grace period: got %v, want none", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSubscribeStatusFloodWritesOnce checks that repeated Status messages
// cost one store write per change, not one per message.
func TestSubscribeStatusFloodWritesOnce(t *testing.T) {
	p := control.StartPlane(t, control.PlaneConfig{})
	m := planeMesh(p)
	w := m.attest(t, "shop/visitor", "")
	s := subscribe(t, w.client, nodeMsg(w.node("")))
	v := s.recv(t).GetVersion()
	waitRecord(t, p.Store, p.Registry, "shop", w.instance, func(r registry.Proxy) bool { return r.SnapshotVersion == v })

	before := revision(t, p.Store)
	for range 1000 {
		s.send(t, statusMsg(true, false))
	}
	s.send(t, nodeMsg(w.node(""))) // ends the stream after the statuses
	if code, msg := s.recvErr(t); code != codes.InvalidArgument {
		t.Fatalf("stream end after a second Node: got code %s (%s), want InvalidArgument", code, msg)
	}
	// One write for the first Status, none for the other 999, one for the
	// disconnect.
	if writes := revision(t, p.Store) - before; writes != 2 {
		t.Errorf("store writes for 1000 identical Status messages and a disconnect: got %d, want 2", writes)
	}
	if rec, _ := proxyRecord(t, p.Registry, "shop", w.instance); !rec.Draining {
		t.Error("record: got not draining, want draining")
	}
}
