package proxy_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/bulwarkmesh/bulwark/internal/framing"
)

// serveFramed serves h as the sidecar serves its plain listeners: behind
// strict framing (internal/framing).
func serveFramed(t testing.TB, h http.Handler) string {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: h, ReadHeaderTimeout: 10 * time.Second, DisableGeneralOptionsHandler: true,
		MaxHeaderBytes: 64 << 10, ConnState: framing.ConnState,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	go srv.Serve(framing.NewListener(raw, framing.Config{MaxHeaderBytes: srv.MaxHeaderBytes}))
	t.Cleanup(func() { srv.Close() })
	return raw.Addr().String()
}

// h2Fields sends one HEADERS frame with fields (unvalidated, in order) on
// conn, an HTTP/2 connection, and returns the response's :status, or
// "RST"/"GOAWAY"/"closed" when the server refused the stream.
func h2Fields(t *testing.T, conn net.Conn, fields [][2]string) string {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(hangGuard))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range fields {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		t.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "closed"
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			hs, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hs {
				if h.Name == ":status" {
					return h.Value
				}
			}
		case *http2.RSTStreamFrame:
			return "RST"
		case *http2.GoAwayFrame:
			return "GOAWAY"
		}
	}
}

// TestH2ServerKeepsHostField pins what net/http's HTTP/2 server does with a
// "host" field next to :authority, which checkAuthority relies on: r.Host is
// :authority, the field stays in r.Header as is, uncompared; without
// :authority, r.Host is the field.
func TestH2ServerKeepsHostField(t *testing.T) {
	type seen struct {
		host   string
		fields []string
	}
	var (
		mu  sync.Mutex
		got []seen
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{host: r.Host, fields: r.Header.Values("Host")})
		mu.Unlock()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	send := func(fields [][2]string) string {
		conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // a test server
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return h2Fields(t, conn, fields)
	}
	if s := send([][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "api.default"}, {":path", "/"}, {"host", "secret.default"}}); s != "200" {
		t.Fatalf("conflicting host field: got %s, want net/http to accept it (200)", s)
	}
	if s := send([][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {"host", "web.default"}}); s != "200" {
		t.Fatalf("host field without :authority: got %s, want 200", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].host != "api.default" || len(got[0].fields) != 1 || got[0].fields[0] != "secret.default" {
		t.Errorf("with :authority: got %+v, want r.Host api.default and the Host field secret.default kept", got)
	}
	if len(got) == 2 && got[1].host != "web.default" {
		t.Errorf("without :authority: got r.Host %q, want the host field web.default", got[1].host)
	}
}

// TestAuthorityInbound: over HTTP/2 between sidecars, a host field that
// differs from :authority, several host fields, or userinfo in either is
// 400 and never reaches the app.
func TestAuthorityInbound(t *testing.T) {
	a, api, apiAddr, app := attackCalleeMesh(t)
	web := a.svid(t, workloadID(t, "shop", "web"))
	base := func(extra ...[2]string) [][2]string {
		return append([][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "api.default"}, {":path", "/public/x"}}, extra...)
	}
	tests := []struct {
		name   string
		fields [][2]string
		want   string
	}{
		{name: "no_host_field", fields: base(), want: "200"},
		{name: "same_host_field", fields: base([2]string{"host", "api.default"}), want: "200"},
		{name: "same_host_field_other_case", fields: base([2]string{"host", "API.Default"}), want: "200"},
		{name: "host_field_only", fields: [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/public/x"}, {"host", "api.default"}}, want: "200"},
		{name: "conflicting_host_field", fields: base([2]string{"host", "secret.default"}), want: "400"},
		{name: "host_field_with_port", fields: base([2]string{"host", "api.default:443"}), want: "400"},
		{name: "two_host_fields", fields: base([2]string{"host", "api.default"}, [2]string{"host", "secret.default"}), want: "400"},
		{name: "userinfo_in_host_field", fields: base([2]string{"host", "web@api.default"}), want: "400"},
		// net/http's HTTP/2 server refuses these itself: userinfo in
		// :authority, or in the host field standing for it.
		{name: "userinfo_in_host_field_only", fields: [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/public/x"}, {"host", "web@api.default"}}, want: "RST"},
		{name: "userinfo_in_authority", fields: [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "web@api.default"}, {":path", "/public/x"}}, want: "RST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(app.requests())
			got := h2Raw(t, apiAddr, web, api.id(), tt.fields)
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if reached := len(app.requests()) != before; reached != (tt.want == "200") {
				t.Errorf("app reached: %v, want %v", reached, tt.want == "200")
			}
		})
	}
}

// TestAuthorityOutbound: on the app's side, a Host with userinfo is 400;
// several Host fields are refused by net/http itself; an absolute-form
// target naming another host than Host is refused by the framing layer in
// front of the listener (net/http drops the Host field before the handler).
func TestAuthorityOutbound(t *testing.T) {
	m := newMesh(t)
	framed := serveFramed(t, m.web.engine.Outbound())
	tests := []struct {
		name   string
		addr   string
		raw    string
		status int
	}{
		{name: "userinfo", addr: m.outbound, raw: "GET /public/x HTTP/1.1\r\nHost: web@api.default\r\nConnection: close\r\n\r\n", status: http.StatusBadRequest},
		{name: "userinfo_framed", addr: framed, raw: "GET /public/x HTTP/1.1\r\nHost: secret.default@api.default\r\nConnection: close\r\n\r\n", status: http.StatusBadRequest},
		{name: "two_host_fields_net_http", addr: m.outbound, raw: "GET /public/x HTTP/1.1\r\nHost: api.default\r\nHost: secret.default\r\nConnection: close\r\n\r\n", status: http.StatusBadRequest},
		{name: "two_host_fields_framed", addr: framed, raw: "GET /public/x HTTP/1.1\r\nHost: api.default\r\nHost: api.default\r\nConnection: close\r\n\r\n", status: http.StatusBadRequest},
		{name: "absolute_form_other_host_framed", addr: framed, raw: "GET http://secret.default/public/x HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n", status: http.StatusBadRequest},
		{name: "absolute_form_other_port_framed", addr: framed, raw: "GET http://api.default:8080/public/x HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n", status: http.StatusBadRequest},
		{name: "absolute_form_same_host_framed", addr: framed, raw: "GET http://api.default/public/x HTTP/1.1\r\nHost: API.default:80\r\nConnection: close\r\n\r\n", status: http.StatusOK},
		{name: "origin_form_framed", addr: framed, raw: "GET /public/x HTTP/1.1\r\nHost: api.default\r\nConnection: close\r\n\r\n", status: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(m.apiApp.requests())
			got := plainRaw(t, tt.addr, tt.raw)
			if got.status != tt.status {
				t.Errorf("got %d %q, want %d", got.status, got.body, tt.status)
			}
			if reached := len(m.apiApp.requests()) != before; reached != (tt.status == http.StatusOK) {
				t.Errorf("api's app reached: %v, want %v", reached, tt.status == http.StatusOK)
			}
		})
	}
}

// TestAuthorityUpstream: a per-upstream listener ignores Host, but not one
// with userinfo.
func TestAuthorityUpstream(t *testing.T) {
	m := newMesh(t)
	addr := servePlain(t, m.web.engine.Upstream(apiSvc))
	if got := get(t, addr, "localhost:9000", "/public/x"); got.status != http.StatusOK {
		t.Fatalf("plain Host: got %d %q, want 200", got.status, got.body)
	}
	before := len(m.apiApp.requests())
	if got := get(t, addr, "secret.default@localhost", "/public/x"); got.status != http.StatusBadRequest || len(m.apiApp.requests()) != before {
		t.Errorf("Host with userinfo: got %d, want 400 and the app not reached", got.status)
	}
}
