package sidecar

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestAttack6AdminWriteRefusesWebPages: the drain endpoint takes requests
// from local tools only: anything a browser adds (Origin, even "null" from
// a sandboxed frame; Sec-Fetch-Site) and any Host that is not a loopback
// address (DNS rebinding names, look-alikes) is refused.
func TestAttack6AdminWriteRefusesWebPages(t *testing.T) {
	for _, tt := range []struct {
		name   string
		host   string
		header map[string]string
		ok     bool
	}{
		{name: "cli", host: "127.0.0.1:15000", ok: true},
		{name: "localhost", host: "localhost:15000", ok: true},
		{name: "ipv6_loopback", host: "[::1]:15000", ok: true},
		{name: "origin_null", host: "127.0.0.1:15000", header: map[string]string{"Origin": "null"}},
		{name: "same_origin_fetch", host: "127.0.0.1:15000", header: map[string]string{"Sec-Fetch-Site": "same-origin"}},
		{name: "rebinding_name", host: "rebind.evil.example:15000"},
		{name: "localhost_lookalike", host: "localhost.evil.example:15000"},
		{name: "loopback_lookalike", host: "127.0.0.1.nip.io:15000"},
		{name: "short_loopback", host: "127.1:15000"},
		{name: "unspecified", host: "0.0.0.0:15000"},
		{name: "no_host", host: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/drain", nil)
			r.Host = tt.host
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			if err := checkAdminWrite(r); (err == nil) != tt.ok {
				t.Errorf("checkAdminWrite(Host %q, %v): got %v, want allowed %v", tt.host, tt.header, err, tt.ok)
			}
		})
	}
}

// TestAttack6AdminReadsRefuseRebinding: what the admin listener tells (the
// snapshot in /config_dump, /ready) is for local tools only; a page that
// reached the loopback port through DNS rebinding sends its own name as
// Host and gets nothing.
func TestAttack6AdminReadsRefuseRebinding(t *testing.T) {
	h := adminHandler(nil, nil, nil, nil, nil, nil, nil)
	for _, path := range []string{"/config_dump", "/ready", "/live"} {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Host = "rebind.evil.example:15000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusForbidden {
			t.Errorf("GET %s with a rebinding Host: got %d, want 403", path, w.Code)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/live", nil)
	r.Host = "127.0.0.1:15000"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("GET /live from a local tool: got %d, want 200", w.Code)
	}
}
