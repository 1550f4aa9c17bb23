package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// BenchmarkPairMetrics is BenchmarkPair with both engines' metrics on (a
// registry each, as with --metrics): compare its allocs/op and ns/op with
// BenchmarkPair's, measured in the same run.
func BenchmarkPairMetrics(b *testing.B) {
	a := newAuthority(b)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	}))
	b.Cleanup(echo.Close)
	node := func(svc identity.ServiceRef, appAddr string) *node {
		n := &node{svc: svc, src: a.svid(b, workloadID(b, svc.Namespace, svc.Name)), log: newLogBuffer()}
		e, err := proxy.New(proxy.Config{Service: svc, App: appAddr, SVID: n.src, Bundle: n.src, Metrics: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(e.Close)
		n.engine = e
		return n
	}
	api := node(identity.ServiceRef{Namespace: "default", Name: "api"}, echo.Listener.Addr().String())
	webID := workloadID(b, "shop", "web")
	api.apply(b, &apiv1.Snapshot{
		Version: 1, TrustBundle: a.rootDER(), Services: []string{"default/api"},
		Inbound: &apiv1.Inbound{
			Policies: [][]byte{policyDoc(b, benchPolicy)},
			Peers:    []*apiv1.PeerIdentity{{SpiffeId: webID.String(), Services: []string{"shop/web"}}},
		},
	})
	apiAddr := api.serveInbound(b)
	web := node(identity.ServiceRef{Namespace: "shop", Name: "web"}, "")
	web.apply(b, &apiv1.Snapshot{
		Version: 1, TrustBundle: a.rootDER(), Services: []string{"default/api"}, Inbound: &apiv1.Inbound{},
		Destinations: []*apiv1.Destination{{
			Service:   "default/api",
			Policies:  [][]byte{policyDoc(b, benchCallerView)},
			Endpoints: []*apiv1.Endpoint{{Address: apiAddr, SpiffeId: api.id().String()}},
		}},
	})
	u, err := url.Parse("http://" + servePlain(b, web.engine.Outbound()))
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
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
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := send(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
