package proxy_test

import (
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
)

// withRevoked returns snap with version v revoking serials.
func withRevoked(snap *apiv1.Snapshot, v int64, serials ...string) *apiv1.Snapshot {
	s := proto.Clone(snap).(*apiv1.Snapshot)
	s.Version = v
	s.RevokedSerials = serials
	return s
}

// tryGet sends a GET through c and returns its status, or -1 when it
// failed.
func tryGet(t testing.TB, c *http.Client, url string) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestRevokedPeerRefusedAtHandshake: a snapshot's revoked serials are
// refused at the handshake, inbound and outbound.
func TestRevokedPeerRefusedAtHandshake(t *testing.T) {
	tests := []struct {
		name string
		// revoke returns the api and web snapshots, version 2.
		revoke     func(m *mesh) (api, web *apiv1.Snapshot)
		wantStatus int
	}{
		{name: "nothing_revoked", revoke: func(m *mesh) (*apiv1.Snapshot, *apiv1.Snapshot) {
			return apiSnapshot(t, m.auth, 2), webSnapshot(t, m.auth, 2, m.apiAddr, m.api.id())
		}, wantStatus: http.StatusOK},
		{name: "other_serial_revoked", revoke: func(m *mesh) (*apiv1.Snapshot, *apiv1.Snapshot) {
			other := m.auth.svid(t, m.web.id()).serial()
			return withRevoked(apiSnapshot(t, m.auth, 1), 2, other), withRevoked(webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()), 2, other)
		}, wantStatus: http.StatusOK},
		{name: "revoked_client_refused_inbound", revoke: func(m *mesh) (*apiv1.Snapshot, *apiv1.Snapshot) {
			return withRevoked(apiSnapshot(t, m.auth, 1), 2, m.web.src.serial()), webSnapshot(t, m.auth, 2, m.apiAddr, m.api.id())
		}, wantStatus: http.StatusBadGateway},
		{name: "outbound_to_revoked_server", revoke: func(m *mesh) (*apiv1.Snapshot, *apiv1.Snapshot) {
			return apiSnapshot(t, m.auth, 2), withRevoked(webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()), 2, m.api.src.serial())
		}, wantStatus: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMesh(t)
			api, web := tt.revoke(m)
			m.api.apply(t, api)
			m.web.apply(t, web)
			got := get(t, m.outbound, "api.default", "/public/x")
			if got.status != tt.wantStatus {
				t.Errorf("through the caller's outbound: got %d %q, want %d", got.status, got.body, tt.wantStatus)
			}
			wantApp := 0
			if tt.wantStatus == http.StatusOK {
				wantApp = 1
			}
			if n := len(m.apiApp.requests()); n != wantApp {
				t.Errorf("app got %d requests, want %d", n, wantApp)
			}
		})
	}

	// Both proxies say what they revoked and what they refused.
	t.Run("logged", func(t *testing.T) {
		m := newMesh(t)
		m.api.apply(t, withRevoked(apiSnapshot(t, m.auth, 1), 2, m.web.src.serial()))
		m.web.apply(t, withRevoked(webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()), 2, m.api.src.serial()))
		for _, n := range []*node{m.api, m.web} {
			n.plog.waitFor(t, "the revocation", func(l map[string]any) bool { return l["msg"] == "peer svids revoked" && l["count"] == float64(1) })
		}
		get(t, m.outbound, "api.default", "/public/x")
		line := m.web.plog.waitFor(t, "the refused handshake", func(l map[string]any) bool { return l["msg"] == "handshake refused: peer svid revoked" })
		if line["serial"] != m.api.src.serial() || line["direction"] != "outbound" {
			t.Errorf("refusal line: got serial %v direction %v, want %s outbound", line["serial"], line["direction"], m.api.src.serial())
		}
		// Applying the same revocations again logs nothing new.
		before := strings.Count(m.web.plog.String(), "peer svids revoked")
		m.web.apply(t, withRevoked(webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()), 3, m.api.src.serial()))
		if after := strings.Count(m.web.plog.String(), "peer svids revoked"); after != before {
			t.Errorf("revocation lines after the same list again: got %d, want %d", after, before)
		}
	})

	// A SPIFFE-aware client that calls the inbound directly with a
	// revoked SVID is refused too.
	t.Run("direct_client_refused_inbound", func(t *testing.T) {
		m := newMesh(t)
		m.api.apply(t, withRevoked(apiSnapshot(t, m.auth, 1), 2, m.web.src.serial()))
		if got := tryGet(t, h2Client(t, m.web.src, m.api.id()), "https://"+m.apiAddr+"/public/x"); got != -1 {
			t.Errorf("revoked client: got status %d, want the handshake refused", got)
		}
		if n := len(m.apiApp.requests()); n != 0 {
			t.Errorf("app got %d requests, want 0", n)
		}
	})
}

// TestRevocationClosesEstablishedConnections: a snapshot that revokes a
// peer closes the connections to it (outbound) and from it (inbound), and
// only those.
func TestRevocationClosesEstablishedConnections(t *testing.T) {
	tests := []struct {
		name string
		// revoke applies the snapshot that revokes a peer of the pooled
		// connection, or not.
		revoke     func(m *mesh)
		wantClosed bool
		wantStatus int // of the next request
	}{
		{name: "server_revoked_by_caller", revoke: func(m *mesh) {
			m.web.apply(t, withRevoked(webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()), 2, m.api.src.serial()))
		}, wantClosed: true, wantStatus: http.StatusServiceUnavailable},
		{name: "client_revoked_by_callee", revoke: func(m *mesh) {
			m.api.apply(t, withRevoked(apiSnapshot(t, m.auth, 1), 2, m.web.src.serial()))
		}, wantClosed: true, wantStatus: http.StatusBadGateway},
		{name: "other_serial_revoked", revoke: func(m *mesh) {
			other := m.auth.svid(t, m.api.id()).serial()
			m.web.apply(t, withRevoked(webSnapshot(t, m.auth, 1, m.apiAddr, m.api.id()), 2, other))
			m.api.apply(t, withRevoked(apiSnapshot(t, m.auth, 1), 2, other))
		}, wantStatus: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMesh(t)
			if got := get(t, m.outbound, "api.default", "/public/1"); got.status != http.StatusOK {
				t.Fatalf("first request: got %d %q, want 200", got.status, got.body)
			}
			tt.revoke(m)
			if tt.wantClosed {
				m.api.inbound.waitClosed(t, 1)
			}
			if got := get(t, m.outbound, "api.default", "/public/2"); got.status != tt.wantStatus {
				t.Errorf("next request: got %d %q, want %d", got.status, got.body, tt.wantStatus)
			}
			if !tt.wantClosed {
				if got := m.api.inbound.accepted.Load(); got != 1 {
					t.Errorf("connections accepted by the callee: got %d, want 1 (the pooled one kept)", got)
				}
			}
		})
	}
}

// TestRevokedPeerRefusedPerRequest: on an inbound listener not prepared by
// InboundListener (so no connection is closed), a request from a peer
// revoked after its handshake is refused anyway.
func TestRevokedPeerRefusedPerRequest(t *testing.T) {
	a := newAuthority(t)
	app := newApp(t, "default/api")
	api := newNode(t, a, apiSvc, app.addr())
	api.apply(t, apiSnapshot(t, a, 1))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           api.engine.Inbound(),
		TLSConfig:         mtls.ServerConfig(api.src, api.src, td),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	web := a.svid(t, workloadID(t, "shop", "web"))
	c := h2Client(t, web, api.id())
	url := "https://" + ln.Addr().String() + "/public/x"
	if got := tryGet(t, c, url); got != http.StatusOK {
		t.Fatalf("before revocation: got %d, want 200", got)
	}
	api.apply(t, withRevoked(apiSnapshot(t, a, 1), 2, web.serial()))
	if got := tryGet(t, c, url); got != http.StatusForbidden {
		t.Errorf("after revocation, on the same connection: got %d, want 403", got)
	}
	if n := len(app.requests()); n != 1 {
		t.Errorf("app got %d requests, want 1", n)
	}
	line := api.log.waitFor(t, "the denial's access log line", func(l map[string]any) bool { return l["status"] == float64(403) })
	if line["reason"] != "peer certificate revoked" {
		t.Errorf("access log reason: got %v, want %q", line["reason"], "peer certificate revoked")
	}
}

func TestApplyRevokedSerials(t *testing.T) {
	a := newAuthority(t)
	tests := []struct {
		name    string
		serials []string
		wantErr string
		want    []string // in Dump
	}{
		{name: "none"},
		{name: "sorted_in_dump", serials: []string{"ff", "1a2b"}, want: []string{"1a2b", "ff"}},
		{name: "not_hex", serials: []string{"1a2b", "zz"}, wantErr: "revoked_serials: serial 1"},
		{name: "empty", serials: []string{""}, wantErr: "revoked_serials: serial 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, a, apiSvc, "")
			snap := withRevoked(apiSnapshot(t, a, 1), 1, tt.serials...)
			snap.BundleVersion = 3
			err := n.engine.Apply(snap)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Apply: got %v, want an error containing %q", err, tt.wantErr)
				}
				if got := n.engine.Version(); got != 0 {
					t.Errorf("Version after a rejected snapshot: got %d, want 0", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			d := n.engine.Dump()
			if !equalStrings(d.RevokedSerials, tt.want) {
				t.Errorf("Dump().RevokedSerials: got %v, want %v", d.RevokedSerials, tt.want)
			}
			if d.BundleVersion != 3 || n.engine.BundleVersion() != 3 {
				t.Errorf("bundle version: got Dump %d, BundleVersion() %d, want 3", d.BundleVersion, n.engine.BundleVersion())
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTrustBundleRotation: a proxy accepts peers that chain to any root of
// its current bundle, in both directions; a new bundle is used by the next
// connection at once; a removed root's peers fail new connections.
func TestTrustBundleRotation(t *testing.T) {
	oldCA, newCA := newAuthority(t), newAuthority(t)
	both := func() []*x509.Certificate {
		return append(append([]*x509.Certificate(nil), oldCA.ca.Roots()...), newCA.ca.Roots()...)
	}
	apiID, webID := workloadID(t, "default", "api"), workloadID(t, "shop", "web")

	// The callee holds an SVID under the new root, the caller one under
	// the old root; both trust both roots (the "prepared" phase).
	app := newApp(t, "default/api")
	apiSrc, webSrc := newCA.svid(t, apiID), oldCA.svid(t, webID)
	apiSrc.setRoots(both()...)
	webSrc.setRoots(both()...)
	api := newNodeWith(t, apiSrc, apiSvc, app.addr())
	apiAddr := api.serveInbound(t)
	api.apply(t, apiSnapshot(t, oldCA, 1))
	web := newNodeWith(t, webSrc, webSvc, "")
	web.apply(t, webSnapshot(t, oldCA, 1, apiAddr, apiID))
	outbound := servePlain(t, web.engine.Outbound())

	send := func(t *testing.T) int {
		t.Helper()
		web.engine.RetireConnections() // a new connection for every step
		return get(t, outbound, "api.default", "/public/x").status
	}
	steps := []struct {
		name       string
		apiTrusts  func() []*x509.Certificate
		webTrusts  func() []*x509.Certificate
		direct     *source // if set, a client that calls the callee directly
		wantStatus int
		wantDirect bool
	}{
		{name: "both_roots_trusted", apiTrusts: both, webTrusts: both, wantStatus: http.StatusOK},
		{name: "client_under_new_root_direct", apiTrusts: both, webTrusts: both, direct: newCA.svid(t, webID), wantStatus: http.StatusOK, wantDirect: true},
		{name: "client_under_old_root_direct", apiTrusts: both, webTrusts: both, direct: oldCA.svid(t, webID), wantStatus: http.StatusOK, wantDirect: true},
		{name: "old_root_removed_at_callee", apiTrusts: newCA.ca.Roots, webTrusts: both, direct: oldCA.svid(t, webID), wantStatus: http.StatusBadGateway},
		{name: "old_root_back_at_callee", apiTrusts: both, webTrusts: both, wantStatus: http.StatusOK},
		{name: "caller_trusts_only_old_root", apiTrusts: both, webTrusts: oldCA.ca.Roots, wantStatus: http.StatusServiceUnavailable},
		{name: "caller_trusts_new_root_again", apiTrusts: both, webTrusts: newCA.ca.Roots, wantStatus: http.StatusOK},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			apiSrc.setRoots(st.apiTrusts()...)
			webSrc.setRoots(st.webTrusts()...)
			if got := send(t); got != st.wantStatus {
				t.Errorf("caller under the old root to callee under the new root: got %d, want %d", got, st.wantStatus)
			}
			if st.direct == nil {
				return
			}
			st.direct.setRoots(both()...)
			got := tryGet(t, h2Client(t, st.direct, apiID), "https://"+apiAddr+"/public/x")
			if (got == http.StatusOK) != st.wantDirect {
				t.Errorf("direct client: got status %d, want success %v", got, st.wantDirect)
			}
		})
	}
}
