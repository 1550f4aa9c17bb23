package cli_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/bulwarkmesh/bulwark/internal/admin"
)

func TestDashboardLoginUsage(t *testing.T) {
	cp := newControlPlane(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ttl_too_long", []string{"dashboard", "login", "--ttl", "20m"}, "--ttl 20m0s: want a duration from 1s to 15m0s"},
		{"ttl_too_short", []string{"dashboard", "login", "--ttl", "100ms"}, "--ttl 100ms"},
		{"no_server_dashboard", []string{"dashboard", "login"}, "this server has no dashboard"},
		{"cert_without_output", []string{"dashboard", "cert"}, "-o: the output file is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "", append(tc.args, "--config", cp.credPath)...)
			if r.code == 0 || !strings.Contains(r.err, tc.want) {
				t.Errorf("got exit %d stderr %q, want an error with %q", r.code, r.err, tc.want)
			}
		})
	}
}

func TestDashboardCert(t *testing.T) {
	cp := newControlPlane(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "admin.p12")
	pw := writeFile(t, "pw", "s3cret pass\nignored\n")
	r := cp.runOK(t, "dashboard", "cert", "-o", out, "--password-file", pw)
	if !strings.Contains(r.out, "wrote "+out) {
		t.Errorf("stdout %q: want the file named", r.out)
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("p12 file: %v, mode %v; want 0600", err, st.Mode())
	}
	b, _ := os.ReadFile(out)
	key, cert, cas, err := pkcs12.DecodeChain(b, "s3cret pass")
	if err != nil || key == nil {
		t.Fatalf("decode the p12 with the password: %v", err)
	}
	cred, err := admin.LoadCredential(cp.credPath)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(cred.Certificate))
	want, _ := x509.ParseCertificate(blk.Bytes)
	if !cert.Equal(want) || len(cas) != 1 {
		t.Errorf("p12: got certificate %s and %d CA(s), want the credential's and its operator CA", cert.Subject, len(cas))
	}
	if _, _, _, err := pkcs12.DecodeChain(b, "wrong"); err == nil {
		t.Errorf("the p12 opens with a wrong password")
	}
	// An existing file is kept without --force; a generated password is
	// printed once.
	if r := run(t, "", "dashboard", "cert", "-o", out, "--config", cp.credPath); r.code == 0 || !strings.Contains(r.err, "pass --force") {
		t.Errorf("existing file: got exit %d %q", r.code, r.err)
	}
	r = cp.runOK(t, "dashboard", "cert", "-o", out, "--force")
	line := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(r.err, "   ", 2)[0], "password: "))
	b, _ = os.ReadFile(out)
	if _, _, _, err := pkcs12.DecodeChain(b, line); err != nil {
		t.Errorf("decode with the printed password %q: %v", line, err)
	}
}
