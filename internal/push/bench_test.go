package push_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// The cost of a trust bundle change (a root rotation's prepare and retire
// steps) pushed to every proxy: the hub recompiles every proxy's snapshot
// and sends those whose content changed, which is all of them. DESIGN
// section 11 budgets a change enforced on 1000 proxies in under 1 s (p99).

// proxiesPerService is how many proxies front each service of the bench
// mesh; servicesPerNamespace groups services in namespaces.
const (
	proxiesPerService    = 10
	servicesPerNamespace = 10
)

// benchMeshState returns the sealed state of a mesh of n proxies:
// n/proxiesPerService services (at least one), each with one identity, its
// proxies as endpoints, and one ALLOW policy admitting the previous service
// of its namespace for GET and POST on /api/*. Every node's snapshot thus
// lists every service, one callable destination with its endpoints and one
// inbound policy. nodes are the n proxies.
func benchMeshState(b *testing.B, n int, bundle [][]byte) (st *push.State, nodes []push.Node) {
	b.Helper()
	services := max(n/proxiesPerService, 1)
	st = &push.State{
		Revision:      1,
		Bundle:        bundle,
		BundleVersion: 1,
		Identities:    make(map[string][]string, services),
		Endpoints:     make(map[string][]push.Endpoint, services),
	}
	var yaml strings.Builder
	for s := range services {
		ns, name := fmt.Sprintf("ns-%d", s/servicesPerNamespace), fmt.Sprintf("svc-%d", s)
		ref := ns + "/" + name
		id := fmt.Sprintf("spiffe://bulwark.local/ns/%s/sa/%s", ns, name)
		st.Services = append(st.Services, ref)
		st.Identities[id] = []string{ref}
		for p := range proxiesPerService {
			if len(nodes) == n {
				break
			}
			instance := fmt.Sprintf("%s-%08x", name, p)
			st.Endpoints[ref] = append(st.Endpoints[ref], push.Endpoint{
				Address: fmt.Sprintf("10.%d.%d.%d:15006", s/256, s%256, p), SPIFFEID: id, Instance: instance,
			})
			nodes = append(nodes, push.Node{ID: id, Service: identity.ServiceRef{Namespace: ns, Name: name}})
		}
		prev := fmt.Sprintf("%s/svc-%d", ns, max(s-1, s/servicesPerNamespace*servicesPerNamespace))
		fmt.Fprintf(&yaml, `---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s-from-prev, namespace: %s}
spec:
  selector: {service: %s}
  rules:
  - from: {services: [%q]}
    to: {methods: [GET, POST], paths: ["/api/*"]}
`, name, ns, name, prev)
	}
	st.Policies = policies(b, yaml.String())
	st.Seal()
	return st, nodes
}

// withBundle returns a copy of st at revision rev with another trust
// bundle: what the control plane builds when only the CA changed.
func withBundle(st *push.State, rev int64, bundle [][]byte, version int64) *push.State {
	next := *st
	next.Revision = rev
	next.Bundle = bundle
	next.BundleVersion = version
	next.Services = slices.Clone(st.Services) // Seal sorts it in place
	next.Seal()
	return &next
}

// bundles are the trust bundle before a root rotation and while it is
// prepared; a benchmark alternates them so every change is real.
func bundles() [2][][]byte {
	oldRoot, newRoot := selfSigned(), selfSigned()
	return [2][][]byte{{oldRoot}, {oldRoot, newRoot}}
}

var benchSizes = []int{100, 1000}

// BenchmarkBundlePush measures one bundle change reaching every proxy.
//
//   - compile: build and seal the new State and compile every proxy's
//     snapshot on one goroutine (the CPU work of the change).
//   - compile-marshal: the same plus the wire encoding of each snapshot
//     (the hub hashes a deterministic encoding; gRPC encodes it again).
//   - hub: Hub.SetState with n subscribed fake streams, until every stream
//     was sent its new snapshot; each subscriber compiles on its own
//     goroutine, so this uses every core.
//
// ns/op is the cost of one change for the whole mesh; ns/proxy divides it
// by the number of proxies.
func BenchmarkBundlePush(b *testing.B) {
	bs := bundles()
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("proxies=%d", n), func(b *testing.B) { benchBundlePush(b, n, bs) })
	}
}

// benchBundlePush runs BenchmarkBundlePush's cases for n proxies; bs are
// the bundles it alternates.
func benchBundlePush(b *testing.B, n int, bs [2][][]byte) {
	b.Run("compile", func(b *testing.B) {
		base, nodes := benchMeshState(b, n, bs[0])
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			st := withBundle(base, int64(i+1), bs[i%2], int64(i+1))
			for _, node := range nodes {
				if _, err := push.Compile(st, node); err != nil {
					b.Fatal(err)
				}
			}
		}
		reportPerProxy(b, i, n)
	})
	b.Run("compile-marshal", func(b *testing.B) {
		base, nodes := benchMeshState(b, n, bs[0])
		b.ReportAllocs()
		i := 0
		var size int
		for b.Loop() {
			i++
			st := withBundle(base, int64(i+1), bs[i%2], int64(i+1))
			for _, node := range nodes {
				snap, err := push.Compile(st, node)
				if err != nil {
					b.Fatal(err)
				}
				wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
				if err != nil {
					b.Fatal(err)
				}
				size += len(wire)
			}
		}
		reportPerProxy(b, i, n)
		if i > 0 {
			b.ReportMetric(float64(size)/float64(i*n), "B/snapshot")
		}
	})
	b.Run("hub", func(b *testing.B) {
		base, nodes := benchMeshState(b, n, bs[0])
		sent := make(chan struct{}, n)
		h := push.NewHub(nil)
		h.SetState(base)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		streams := make([]*discardStream, n)
		cb := push.Callbacks{Sent: func(*apiv1.Snapshot) { sent <- struct{}{} }}
		for j, node := range nodes {
			streams[j] = &discardStream{done: make(chan struct{})}
			wg.Go(func() { _ = h.Serve(ctx, streams[j], node, cb) })
		}
		drain := func() {
			for range n {
				<-sent
			}
		}
		drain() // every proxy's first snapshot
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			h.SetState(withBundle(base, int64(i+1), bs[i%2], int64(i+1)))
			drain()
		}
		b.StopTimer()
		reportPerProxy(b, i, n)
		cancel()
		for _, s := range streams {
			close(s.done)
		}
		wg.Wait()
	})
}

// reportPerProxy reports the time of one change divided among n proxies.
func reportPerProxy(b *testing.B, changes, n int) {
	if changes > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(changes*n), "ns/proxy")
	}
}

// discardStream is a subscriber that encodes what it is sent, as gRPC
// would, and never sends an ACK.
type discardStream struct {
	done chan struct{}
}

var _ push.Stream = (*discardStream)(nil)

func (s *discardStream) Send(snap *apiv1.Snapshot) error {
	_, err := proto.Marshal(snap)
	return err
}

func (s *discardStream) Recv() (*apiv1.SubscribeRequest, error) {
	<-s.done
	return nil, context.Canceled
}
