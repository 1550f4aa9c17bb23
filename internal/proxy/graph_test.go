package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/graph"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/proxy"
)

// authFailure is one OnAuthFailure call.
type authFailure struct{ addr, source, reason string }

// graphNode is newNode whose engine reports requests to a recorder and
// authentication failures to a channel.
func graphNode(t *testing.T, a *authority, svc identity.ServiceRef, appAddr string) (*node, *graph.Recorder, chan authFailure) {
	t.Helper()
	n := &node{svc: svc, src: a.svid(t, workloadID(t, svc.Namespace, svc.Name)), log: newLogBuffer(), plog: newLogBuffer()}
	rec := graph.NewRecorder(graph.RecorderConfig{})
	failures := make(chan authFailure, 16)
	e, err := proxy.New(proxy.Config{
		Service: svc, App: appAddr, SVID: n.src, Bundle: n.src, OnRequest: rec.Record,
		OnAuthFailure: func(addr, source, reason string) { failures <- authFailure{addr, source, reason} },
	})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	t.Cleanup(e.Close)
	n.engine = e
	return n, rec, failures
}

// TestOnRequest: both ends of a request observe it, with the path
// templated, the status, mTLS and no query.
func TestOnRequest(t *testing.T) {
	a := newAuthority(t)
	apiApp := newApp(t, "default/api")
	api, apiRec, _ := graphNode(t, a, apiSvc, apiApp.addr())
	apiAddr := api.serveInbound(t)
	api.apply(t, apiSnapshot(t, a, 1))
	web, webRec, _ := graphNode(t, a, webSvc, "")
	web.apply(t, webSnapshot(t, a, 1, apiAddr, api.id()))
	out := servePlain(t, web.engine.Outbound())

	for _, target := range []string{"/public/items/12345?token=secret", "/public/items/67890"} {
		if r := get(t, out, "api.default", target); r.status != http.StatusOK {
			t.Fatalf("GET %s: got %d, want 200", target, r.status)
		}
	}
	if r := get(t, out, "api.default", "/private"); r.status != http.StatusForbidden {
		t.Fatalf("GET /private: got %d, want 403", r.status)
	}
	edges, _ := webRec.Take()
	got := map[string]int64{}
	for _, e := range edges {
		if e.GetDirection() != "outbound" || e.GetSource() != web.id().String() || e.GetDestination() != "default/api" || !e.GetMtls() {
			t.Errorf("web edge: got %v, want outbound from web to default/api over mTLS", e)
		}
		got[e.GetPath()] = e.GetRequests()*10 + e.GetDenied()
	}
	// api denied /private: for web's proxy it is an answer, not a denial.
	if got["/public/items/*"] != 20 || got["/private"] != 10 {
		t.Errorf("web edges (requests*10+denied by path): got %v, want /public/items/* 2, /private 1, none denied by web's proxy", got)
	}
	edges, _ = apiRec.Take()
	got = map[string]int64{}
	for _, e := range edges {
		if e.GetDirection() != "inbound" || e.GetSource() != web.id().String() || e.GetDestination() != "default/api" || !e.GetMtls() {
			t.Errorf("api edge: got %v, want inbound from web over mTLS", e)
		}
		got[e.GetPath()] = e.GetRequests()*10 + e.GetDenied()
	}
	if got["/public/items/*"] != 20 || got["/private"] != 11 {
		t.Errorf("api edges (requests*10+denied by path): got %v, want /public/items/* 2 allowed, /private 1 denied", got)
	}
}

// TestOnAuthFailure: failed handshakes on the inbound listener are
// reported with the peer's address and a fixed reason; the handshake
// still fails.
func TestOnAuthFailure(t *testing.T) {
	a := newAuthority(t)
	api, _, failures := graphNode(t, a, apiSvc, newApp(t, "default/api").addr())
	addr := api.serveInbound(t)
	api.apply(t, apiSnapshot(t, a, 1))
	web := a.svid(t, workloadID(t, "shop", "web"))
	stranger := newAuthority(t).svid(t, workloadID(t, "shop", "web"))

	for _, c := range []struct {
		name       string
		cert       *source
		alpn       string
		wantReason string
		wantSource bool
	}{
		{"no_certificate", nil, "h2", graph.ReasonNoSVID, false},
		{"untrusted_certificate", stranger, "h2", graph.ReasonUntrustedSVID, false},
		{"no_h2", web, "http/1.1", graph.ReasonTLSHandshake, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{c.alpn}} //nolint:gosec // the test checks the server
			if c.cert != nil {
				s := c.cert.svid
				cfg.Certificates = []tls.Certificate{{Certificate: rawChain(s.Certificates), PrivateKey: s.PrivateKey}}
			}
			conn, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				// TLS 1.3: the client learns of the refusal on its first read.
				_ = conn.SetReadDeadline(time.Now().Add(hangGuard))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil {
				t.Fatal("handshake: got nil, want the server to refuse it")
			}
			select {
			case f := <-failures:
				if f.reason != c.wantReason || (f.source != "") != c.wantSource || f.addr == "" {
					t.Errorf("got %+v, want reason %s (a source: %v) and an address", f, c.wantReason, c.wantSource)
				}
			case <-time.After(hangGuard):
				t.Fatal("no failure was reported")
			}
		})
	}

	t.Run("valid_svid_is_no_failure", func(t *testing.T) {
		c := h2Client(t, web, api.id())
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		resp.Body.Close()
		select {
		case f := <-failures:
			t.Errorf("got failure %+v for a valid SVID, want none", f)
		default:
		}
	})
	t.Run("revoked", func(t *testing.T) {
		api.apply(t, withRevoked(apiSnapshot(t, a, 1), 2, web.serial()))
		c := h2Client(t, web, api.id())
		if resp, err := c.Get("https://" + addr + "/"); err == nil {
			resp.Body.Close()
			t.Fatal("GET with a revoked SVID: got nil, want an error")
		}
		select {
		case f := <-failures:
			if f.reason != graph.ReasonRevoked || f.source != web.svid.ID.String() {
				t.Errorf("got %+v, want revoked with the peer's SPIFFE ID", f)
			}
		case <-time.After(hangGuard):
			t.Fatal("no failure was reported")
		}
	})
}

// rawChain returns the DER of certs.
func rawChain(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}
