package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/rbac"
)

func newOperatorCmd(g *globals) *cobra.Command {
	operator := &cobra.Command{Use: "operator", Short: "Manage the operators of the control plane"}
	var (
		ttl   time.Duration
		out   string
		force bool
	)
	create := &cobra.Command{
		Use:   "create NAME [-f FILE]",
		Short: "Create an operator and write its credential file",
		Long: `Create an operator: generate a P-256 key on this machine, have the control plane's
operator CA sign a client certificate for it (the key never leaves this machine),
and write a self-contained credential file (mode 0600), usable with --config or
$` + envConfig + `, like the control plane's operator/admin.yaml.

A new operator may do nothing until a RoleBinding names it (docs/rbac.md). The
name "admin" is reserved for the control plane's bootstrap credential. Creating
operators needs the mesh-wide right "create Operator".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := config.ValidateOperatorName(name); err != nil {
				return usagef("NAME: %v", err)
			}
			if name == rbac.BuiltinAdmin {
				return usagef("NAME: %q is reserved for the control plane's bootstrap credential", name)
			}
			if ttl < admin.MinOperatorTTL || ttl > admin.MaxOperatorTTL {
				return usagef("--ttl: must be between %s and %s", admin.MinOperatorTTL, admin.MaxOperatorTTL)
			}
			path := out
			if path == "" {
				path = name + ".yaml"
			}
			// Refuse before the control plane signs anything.
			if !force {
				if _, err := os.Lstat(path); err == nil {
					return fmt.Errorf("%s exists: give another -f, or --force to replace it", path)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return fmt.Errorf("generate operator key: %w", err)
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				return fmt.Errorf("create certificate request: %w", err)
			}
			resp, err := c.CreateOperator(cmd.Context(), admin.OperatorRequest{
				Name: name, TTL: ttl.String(),
				CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
			})
			if err != nil {
				return apiErr(err)
			}
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return fmt.Errorf("encode operator key: %w", err)
			}
			cred := &admin.Credential{
				APIVersion:  config.APIVersion,
				Kind:        admin.CredentialKind,
				Operator:    resp.Name,
				Server:      c.Server(),
				CA:          resp.CA,
				Certificate: resp.Certificate,
				Key:         string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
			}
			if err := cred.Write(path); err != nil {
				return err
			}
			fmt.Fprintf(g.io.Out, "operator %s created, valid until %s: credential written to %s\n",
				resp.Name, resp.ExpiresAt.UTC().Format(time.RFC3339), path)
			fmt.Fprintf(g.io.Out, "it has no rights until a RoleBinding names it; use it with --config %s\n", path)
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", admin.DefaultOperatorTTL, "how long the operator's certificate is valid")
	create.Flags().StringVarP(&out, "filename", "f", "", "credential file to write (default: NAME.yaml)")
	create.Flags().BoolVar(&force, "force", false, "replace an existing credential file")
	operator.AddCommand(create)
	return operator
}
