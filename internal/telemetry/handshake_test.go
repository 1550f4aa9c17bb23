package telemetry_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

func TestHandshakeResult(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "nil", err: nil, want: "ok"},
		{name: "unknown_authority", err: fmt.Errorf("x509svid: could not verify leaf certificate: %w", x509.UnknownAuthorityError{}), want: "unknown_authority"},
		{name: "expired", err: x509.CertificateInvalidError{Reason: x509.Expired}, want: "expired"},
		{name: "not_authorized_to_sign", err: x509.CertificateInvalidError{Reason: x509.NotAuthorizedToSign}, want: "bad_certificate"},
		{name: "hostname", err: x509.HostnameError{Host: "x"}, want: "bad_certificate"},
		{name: "remote_bad_certificate", err: &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, want: "bad_certificate"},
		{name: "remote_unknown_ca", err: &net.OpError{Op: "remote error", Err: errors.New("tls: unknown certificate authority")}, want: "unknown_authority"},
		{name: "remote_expired", err: &net.OpError{Op: "remote error", Err: errors.New("tls: expired certificate")}, want: "expired"},
		{name: "remote_certificate_required", err: &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}, want: "no_certificate"},
		{name: "no_client_cert", err: errors.New("tls: client didn't provide a certificate"), want: "no_certificate"},
		{name: "revoked", err: errors.New("peer certificate 1a is revoked"), want: "bad_certificate"},
		{name: "wrong_id", err: errors.New(`unexpected ID "spiffe://x/y"`), want: "bad_certificate"},
		{name: "record_header", err: tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, want: "protocol"},
		{name: "protocol_version", err: errors.New("tls: client offered only unsupported versions: [303]"), want: "protocol"},
		{name: "alpn", err: errors.New("inbound speaks HTTP/2 only (ALPN h2)"), want: "protocol"},
		{name: "deadline", err: context.DeadlineExceeded, want: "timeout"},
		{name: "io_timeout", err: fmt.Errorf("read: %w", os.ErrDeadlineExceeded), want: "timeout"},
		{name: "eof", err: io.EOF, want: "eof"},
		{name: "unexpected_eof", err: io.ErrUnexpectedEOF, want: "eof"},
		{name: "reset", err: errors.New("read tcp: connection reset by peer"), want: "eof"},
		{name: "other", err: errors.New("something else"), want: "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := telemetry.HandshakeResult(tt.err); got != tt.want {
				t.Errorf("HandshakeResult(%v): got %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// TestHandshakeCounterVerifiedByTLS: a server that verifies client
// certificates with ClientCAs counts a refused certificate as
// bad_certificate, a good handshake as ok (on real sockets, through
// http.Server.ServeTLS).
func TestHandshakeCounterVerifiedByTLS(t *testing.T) {
	serverCert := httptest.NewUnstartedServer(nil)
	serverCert.StartTLS()
	certs := serverCert.TLS.Certificates
	serverCert.Close()
	results := make(chan string, 8)
	hc := telemetry.NewHandshakeCounter(func(remote net.Addr, r string) {
		// The peer's address comes with every result (the control plane
		// audits failed certificate checks by address).
		if host, _, err := net.SplitHostPort(remote.String()); err != nil || host != "127.0.0.1" {
			r = "bad remote " + remote.String()
		}
		results <- r
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		TLSConfig:         hc.Config(&tls.Config{Certificates: certs, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: x509.NewCertPool()}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.ServeTLS(hc.Listener(ln), "", "")
	t.Cleanup(func() { srv.Close() })
	tests := []struct {
		name  string
		certs []tls.Certificate
		want  string
	}{
		{name: "no_client_certificate", want: "ok"},
		{name: "certificate_of_another_ca", certs: certs, want: "bad_certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, Certificates: tt.certs})
			if err == nil {
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}
			select {
			case got := <-results:
				if got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no handshake result")
			}
		})
	}
}
