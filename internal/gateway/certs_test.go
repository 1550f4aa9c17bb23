package gateway_test

import (
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
)

func TestSNISelection(t *testing.T) {
	f := startServer(t, nil, "https")
	a := newPair(t, "a.example.com")
	b := newPair(t, "*.b.example.com", "b.example.com")
	addrs := f.apply(t, gw(httpsListener("https", 443, secretCert("a"), secretCert("b"))),
		map[string]*apiv1.TLSSecret{"a": secretOf("a", a), "b": secretOf("b", b)})
	for _, tc := range []struct {
		name, sni string
		want      *big.Int
	}{
		{"exact_first", "a.example.com", a.serial},
		{"exact_second", "b.example.com", b.serial},
		{"wildcard_one_label", "x.b.example.com", b.serial},
		{"wildcard_upper_case", "X.B.Example.COM", b.serial},
		{"wildcard_not_two_labels", "y.x.b.example.com", a.serial},
		{"unknown_name_gets_first", "other.example.com", a.serial},
		{"no_sni_gets_first", "", a.serial},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := handshake(t, addrs["https"], tc.sni); got.Cmp(tc.want) != 0 {
				t.Errorf("serial: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBadSecretSkipped(t *testing.T) {
	f := startServer(t, nil, "https")
	good := newPair(t, "good.example.com")
	other := newPair(t, "other.example.com")
	mismatched := &apiv1.TLSSecret{Name: "bad", CertPem: other.cert, KeyPem: good.key}
	addrs := f.apply(t, gw(httpsListener("https", 443, secretCert("bad"), secretCert("missing"), secretCert("good"))),
		map[string]*apiv1.TLSSecret{"bad": mismatched, "good": secretOf("good", good)})
	if got := handshake(t, addrs["https"], "other.example.com"); got.Cmp(good.serial) != 0 {
		t.Errorf("serial: got %v, want the good certificate's %v", got, good.serial)
	}
	if got := counterValue(f.reg, "bulwark_gateway_certificate_reloads_total", map[string]string{"result": "error"}); got != 2 {
		t.Errorf("reload errors: got %v, want 2", got)
	}
	if st := f.srv.Status(); len(st.Problems) != 0 {
		t.Errorf("problems: got %q, want none", st.Problems)
	}
}

func TestNoUsableCertificateNotReady(t *testing.T) {
	f := startServer(t, nil, "https")
	f.apply(t, gw(httpsListener("https", 443, secretCert("missing"))), nil)
	st := f.srv.Status()
	if len(st.Problems) != 1 || !contains(st.Problems[0], "no usable certificate") {
		t.Errorf("problems: got %q, want one saying no usable certificate", st.Problems)
	}
}

func TestCertificateExpiryMetric(t *testing.T) {
	f := startServer(t, nil, "https")
	p := newPair(t, "a.example.com")
	f.apply(t, gw(httpsListener("https", 443, secretCert("a"))), map[string]*apiv1.TLSSecret{"a": secretOf("a", p)})
	got := counterValue(f.reg, "bulwark_gateway_certificate_expiry_timestamp_seconds", map[string]string{"listener": "https", "certificate": "a"})
	if got < float64(time.Now().Unix()) {
		t.Errorf("expiry: got %v, want a time after now", got)
	}
}

// fileRig is a Server on a fake clock serving one HTTPS listener whose
// certificate is a pair of files.
type fileRig struct {
	f                 *fixture
	clk               *clock.Fake
	addr              string
	dir               string
	certFile, keyFile string
}

func newFileRig(t *testing.T, first pemPair) *fileRig {
	clk := clock.NewFake(time.Now())
	f := startServer(t, clk, "https")
	r := &fileRig{f: f, clk: clk, dir: t.TempDir()}
	r.certFile, r.keyFile = writePair(t, r.dir, "tls", first)
	addrs := f.apply(t, gw(httpsListener("https", 443, config.GatewayCertificate{CertFile: r.certFile, KeyFile: r.keyFile})), nil)
	r.addr = addrs["https"]
	return r
}

// pollUntil advances the clock by a poll interval at a time, each time
// waiting for the poll, until cond holds (bounded).
func (r *fileRig) pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		// The Run loop arms its next timer once it has polled.
		polled := r.clk.TimerCreated()
		r.clk.Advance(time.Second)
		select {
		case <-polled:
		case <-time.After(hangGuard):
			t.Fatalf("the Run loop did not poll")
		}
	}
}

func TestFileRotationKeepsConnections(t *testing.T) {
	old, next := newPair(t, "a.example.com"), newPair(t, "a.example.com")
	r := newFileRig(t, old)
	c := client(false)
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + r.addr + "/before")
	if err != nil {
		t.Fatal(err)
	}
	drain(resp)
	if got := resp.TLS.PeerCertificates[0].SerialNumber; got.Cmp(old.serial) != 0 {
		t.Fatalf("first serial: got %v, want %v", got, old.serial)
	}
	writePair(t, r.dir, "tls", next)
	r.pollUntil(t, "the new certificate", func() bool { return handshake(t, r.addr, "a.example.com").Cmp(next.serial) == 0 })
	// The connection opened before the rotation still serves, with its
	// session (the old certificate).
	resp, err = c.Get("https://" + r.addr + "/after")
	if err != nil {
		t.Fatalf("request on the old connection: %v", err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status: got %d, want 200", resp.StatusCode)
	}
	if got := resp.TLS.PeerCertificates[0].SerialNumber; got.Cmp(old.serial) != 0 {
		t.Errorf("serial on the kept connection: got %v, want the old %v (a new connection was made)", got, old.serial)
	}
}

func TestBadFileKeepsOldCertificate(t *testing.T) {
	other := newPair(t, "b.example.com")
	for _, tc := range []struct {
		name      string
		cert, key func(good pemPair) []byte
	}{
		{"half_written_certificate", func(g pemPair) []byte { return g.cert[:len(g.cert)/2] }, func(g pemPair) []byte { return g.key }},
		{"key_of_another_certificate", func(pemPair) []byte { return other.cert }, func(g pemPair) []byte { return g.key }},
		{"garbage_key", func(g pemPair) []byte { return g.cert }, func(pemPair) []byte { return []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") }},
		{"empty_files", func(pemPair) []byte { return nil }, func(pemPair) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, next := newPair(t, "a.example.com"), newPair(t, "a.example.com")
			r := newFileRig(t, old)
			writeFile(t, r.certFile, tc.cert(next))
			writeFile(t, r.keyFile, tc.key(next))
			errors := func() float64 {
				return counterValue(r.f.reg, "bulwark_gateway_certificate_reloads_total", map[string]string{"result": "error"})
			}
			r.pollUntil(t, "the reload error", func() bool { return errors() >= 1 })
			if got := handshake(t, r.addr, "a.example.com"); got.Cmp(old.serial) != 0 {
				t.Errorf("serial: got %v, want the old %v", got, old.serial)
			}
			// Once the pair is whole, it is taken.
			writePair(t, r.dir, "tls", next)
			r.pollUntil(t, "the repaired certificate", func() bool { return handshake(t, r.addr, "a.example.com").Cmp(next.serial) == 0 })
		})
	}
}

func TestRemovedFileKeepsOldCertificate(t *testing.T) {
	old := newPair(t, "a.example.com")
	r := newFileRig(t, old)
	if err := os.Remove(r.keyFile); err != nil {
		t.Fatal(err)
	}
	r.pollUntil(t, "the reload error", func() bool {
		return counterValue(r.f.reg, "bulwark_gateway_certificate_reloads_total", map[string]string{"result": "error"}) >= 1
	})
	if got := handshake(t, r.addr, "a.example.com"); got.Cmp(old.serial) != 0 {
		t.Errorf("serial: got %v, want the old %v", got, old.serial)
	}
}

func TestSecretRotation(t *testing.T) {
	f := startServer(t, nil, "https")
	old, next := newPair(t, "a.example.com"), newPair(t, "a.example.com")
	l := httpsListener("https", 443, secretCert("a"))
	addrs := f.apply(t, gw(l), map[string]*apiv1.TLSSecret{"a": secretOf("a", old)})
	c := client(true)
	defer c.CloseIdleConnections()
	if code, _, err := get(c, "https://"+addrs["https"]+"/"); err != nil || code != http.StatusOK {
		t.Fatalf("before: %d %v", code, err)
	}
	f.apply(t, gw(l), map[string]*apiv1.TLSSecret{"a": secretOf("a", next)})
	if got := handshake(t, addrs["https"], "a.example.com"); got.Cmp(next.serial) != 0 {
		t.Errorf("serial: got %v, want the new %v", got, next.serial)
	}
	if code, _, err := get(c, "https://"+addrs["https"]+"/"); err != nil || code != http.StatusOK {
		t.Errorf("on the old connection: got %d %v, want 200", code, err)
	}
}

// drain reads and closes resp's body, so the connection is reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Clean(path), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
