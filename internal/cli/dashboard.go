package cli

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/fileutil"
)

func newDashboardCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Open the control plane's web dashboard: a one-time login link or a browser certificate",
		Long: `The dashboard is served by the control plane at https://<admin address>/ui/ with the
same operator authentication and RBAC as the admin API (docs/dashboard.md). A browser
authenticates with the operator's client certificate (import the file of
'dashboard cert'), or with a session that a one-time login link starts.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	cmd.AddCommand(newDashboardLoginCmd(g), newDashboardCertCmd(g))
	return cmd
}

func newDashboardLoginCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "login [--ttl 5m]",
		Short: "Print a one-time dashboard login link for this operator",
		Long: `Print a one-time login link to the dashboard. Opened in a browser on this machine, it
starts a session with this operator's rights (read-only: a session never writes) and
is then spent. It works only from a loopback address, once, for --ttl (at most 15m).
Anyone who can read the link before it is used gets the session: on a shared machine,
import the operator certificate instead ('bulwark dashboard cert').`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl != 0 && (ttl < time.Second || ttl > admin.MaxLoginTTL) {
				return usagef("--ttl %s: want a duration from 1s to %s", ttl, admin.MaxLoginTTL)
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			l, err := cl.DashboardLogin(cmd.Context(), ttl)
			if err != nil {
				return apiErr(err)
			}
			fmt.Fprintln(g.io.Out, cl.Server()+l.Path)
			fmt.Fprintf(g.io.Err, "single use, from this machine only (loopback), expires at %s\n", l.ExpiresAt.Local().Format(time.TimeOnly))
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime of the link, 1s to 15m (default: the control plane's, 5m)")
	return cmd
}

func newDashboardCertCmd(g *globals) *cobra.Command {
	var out, passwordFile string
	var force bool
	cmd := &cobra.Command{
		Use:   "cert -o FILE.p12 [--password-file F]",
		Short: "Write the operator's certificate and key as PKCS#12, to import into a browser",
		Long: `Write the operator credential's client certificate, key and operator CA as a
password-protected PKCS#12 file (mode 0600) that browsers import:
  Chromium/Chrome: Settings > Privacy and security > Security > Manage certificates > Import
  Firefox: Settings > Privacy & Security > Certificates > View Certificates > Your Certificates > Import
The password is the first line of --password-file, or one generated and printed on
stderr once. The browser then presents the certificate to https://<admin address>/ui/.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("-o: the output file is required")
			}
			path, err := g.credentialPath()
			if err != nil {
				return err
			}
			cred, err := admin.LoadCredential(path)
			if err != nil {
				return err
			}
			password, generated, err := p12Password(passwordFile)
			if err != nil {
				return err
			}
			b, err := encodeP12(cred, password)
			if err != nil {
				return err
			}
			write := fileutil.WriteNew
			if force {
				write = fileutil.WriteAtomic
			}
			if err := write(out, b, 0o600); err != nil {
				if errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("%s exists: pass --force to replace it", out)
				}
				return fmt.Errorf("write %s: %w", out, err)
			}
			if generated {
				fmt.Fprintf(g.io.Err, "password: %s   (shown once; the browser asks for it on import)\n", password)
			}
			fmt.Fprintf(g.io.Out, `wrote %s (operator %s). Import it into the browser:
  Chromium/Chrome: Settings > Privacy and security > Security > Manage certificates > Import
  Firefox: Settings > Privacy & Security > Certificates > View Certificates > Your Certificates > Import
then open %s/ui/ and choose the certificate when asked.
`, out, cred.Operator, cred.Server)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "PKCS#12 file to write (required)")
	cmd.Flags().StringVar(&passwordFile, "password-file", "", "file whose first line is the password (default: generate one)")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing file")
	return cmd
}

// p12Password reads the password file's first line, or generates one.
func p12Password(file string) (password string, generated bool, err error) {
	if file == "" {
		var b [10]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", false, err
		}
		return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])), true, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", false, fmt.Errorf("--password-file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", false, usagef("--password-file %s: the first line is empty", file)
	}
	return line, false, nil
}

// encodeP12 encodes a credential's certificate, key and CA as PKCS#12.
func encodeP12(cred *admin.Credential, password string) ([]byte, error) {
	certs, err := parseCerts(cred.Certificate)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("credential certificate: %v", err)
	}
	cas, err := parseCerts(cred.CA)
	if err != nil {
		return nil, fmt.Errorf("credential ca: %w", err)
	}
	kb, _ := pem.Decode([]byte(cred.Key))
	if kb == nil {
		return nil, errors.New("credential key: no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		if key, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
			return nil, fmt.Errorf("credential key: %w", err)
		}
	}
	return pkcs12.Modern.Encode(key, certs[0], append(certs[1:], cas...), password)
}

func parseCerts(p string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(p)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}
