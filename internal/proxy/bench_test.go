package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// BenchmarkPair sends 1 KiB POSTs through a real sidecar pair, as an app
// does: HTTP/1.1 keep-alive to the caller's outbound listener, HTTP/2 over
// mTLS between the engines, HTTP/1.1 to an echo app, with authorization on
// both ends and access logs off. Both engines, the client and the app share
// the process, so ns/op is the whole round trip's cost on this machine; run
// it with -cpuprofile to see where the data path spends it.
func BenchmarkPair(b *testing.B) { benchPair(b, false, nil) }

// BenchmarkPairDialPerRequest is BenchmarkPair with a new mTLS connection
// (TCP + TLS 1.3 handshake, HTTP/2 preface) between the engines for every
// request: what the pooled, multiplexed connections save.
func BenchmarkPairDialPerRequest(b *testing.B) { benchPair(b, true, nil) }

// benchPair measures a pair of engines; set, when not nil, changes both
// engines' configuration (metrics, tracing, access logs on).
func benchPair(b *testing.B, dialPerRequest bool, set func(*proxy.Config)) {
	a := newAuthority(b)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An HTTP/1.1 handler must read the whole body before it writes.
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	}))
	b.Cleanup(echo.Close)

	api := benchNode(b, a, identity.ServiceRef{Namespace: "default", Name: "api"}, echo.Listener.Addr().String(), set)
	webID := workloadID(b, "shop", "web")
	api.apply(b, &apiv1.Snapshot{
		Version: 1, TrustBundle: a.rootDER(), Services: []string{"default/api"},
		Inbound: &apiv1.Inbound{
			Policies: [][]byte{policyDoc(b, benchPolicy)},
			Peers:    []*apiv1.PeerIdentity{{SpiffeId: webID.String(), Services: []string{"shop/web"}}},
		},
	})
	apiAddr := api.serveInbound(b)
	web := benchNode(b, a, identity.ServiceRef{Namespace: "shop", Name: "web"}, "", set)
	web.apply(b, &apiv1.Snapshot{
		Version: 1, TrustBundle: a.rootDER(), Services: []string{"default/api"}, Inbound: &apiv1.Inbound{},
		Destinations: []*apiv1.Destination{{
			Service:   "default/api",
			Policies:  [][]byte{policyDoc(b, benchCallerView)},
			Endpoints: []*apiv1.Endpoint{{Address: apiAddr, SpiffeId: api.id().String()}},
		}},
	})
	if dialPerRequest {
		web.engine.DialPerRequest()
	}
	out := servePlain(b, web.engine.Outbound())
	u, err := url.Parse("http://" + out)
	if err != nil {
		b.Fatal(err)
	}

	client := &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyURL(u),
		MaxIdleConnsPerHost: 64,
	}, Timeout: 10 * time.Second}
	payload := bytes.Repeat([]byte("x"), 1024)
	send := func() error {
		resp, err := client.Post("http://api.default/public/echo", "application/octet-stream", bytes.NewReader(payload))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || n != int64(len(payload)) {
			b.Fatalf("got %d with %d bytes, want 200 with %d", resp.StatusCode, n, len(payload))
		}
		return nil
	}
	if err := send(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8) // 16 concurrent requests on 2 cores, like the peer benchmark
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := send(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

const benchPolicy = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow-web, namespace: default}
spec:
  selector: {service: api}
  rules:
  - from: {services: [shop/web]}
    to: {methods: [GET, POST], paths: ["/public/*"]}
`

const benchCallerView = `
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow-web, namespace: default}
spec:
  selector: {service: api}
  rules:
  - to: {methods: [GET, POST], paths: ["/public/*"]}
`

// benchNode is newNode without access logging, which a benchmark of the
// data path must not measure.
func benchNode(b *testing.B, a *authority, svc identity.ServiceRef, appAddr string, set func(*proxy.Config)) *node {
	b.Helper()
	n := &node{svc: svc, src: a.svid(b, workloadID(b, svc.Namespace, svc.Name)), log: newLogBuffer()}
	// Every request goes to the service graph, as in the sidecar.
	rec := graph.NewRecorder(graph.RecorderConfig{})
	cfg := proxy.Config{Service: svc, App: appAddr, SVID: n.src, Bundle: n.src, OnRequest: rec.Record}
	if set != nil {
		set(&cfg)
	}
	e, err := proxy.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	n.engine = e
	return n
}
