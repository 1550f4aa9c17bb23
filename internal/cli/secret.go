package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// newCreateCmd is `bulwark create`: resources built from flags rather
// than documents.
func newCreateCmd(g *globals) *cobra.Command {
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a resource from flags (create secret tls)",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	secret := &cobra.Command{
		Use:   "secret",
		Short: "Create a Secret (create secret tls)",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	secret.AddCommand(newCreateSecretTLSCmd(g))
	create.AddCommand(secret)
	return create
}

// newCreateSecretTLSCmd is `bulwark create secret tls NAME --cert F --key F`.
func newCreateSecretTLSCmd(g *globals) *cobra.Command {
	var namespace, certFile, keyFile string
	cmd := &cobra.Command{
		Use:   "tls NAME --cert FILE --key FILE [-n NAMESPACE]",
		Short: "Create or update a TLS Secret (a gateway certificate) from PEM files",
		Long: `Create or update a Secret of type kubernetes.io/tls from a PEM certificate chain
(leaf first) and its PEM private key, as kubectl create secret tls does. A Gateway
in the same namespace names it in a listener's tls.certificates[].secret.

The key file is read locally, checked (it must match the leaf certificate), and
sent only over the operator's mTLS connection to the control plane, which stores
it encrypted at rest and sends it only to the gateways whose Gateway names it.
It is never taken from the command line, and never shown again: reads of a
Secret show its keys without their values.`,
		Example: `  bulwark create secret tls shop-tls -n shop --cert shop.crt --key shop.key`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := identity.ValidateName(name); err != nil {
				return usagef("NAME %q: %v", name, err)
			}
			if err := identity.ValidateName(namespace); err != nil {
				return usagef("--namespace: %v", err)
			}
			if certFile == "" || keyFile == "" {
				return usagef("--cert and --key are required: the PEM certificate chain and its private key")
			}
			crt, err := readPEMFile("--cert", certFile)
			if err != nil {
				return err
			}
			key, err := readPEMFile("--key", keyFile)
			if err != nil {
				return err
			}
			s := &config.Secret{
				TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindSecret},
				Metadata: config.ObjectMeta{Name: name, Namespace: namespace},
				Type:     config.SecretTypeTLS,
				Data:     map[string][]byte{config.SecretKeyTLSCert: crt, config.SecretKeyTLSKey: key},
			}
			if errs := s.Validate(); len(errs) > 0 {
				msgs := make([]string, len(errs))
				for i, e := range errs {
					msgs[i] = strings.NewReplacer(`data["tls.crt"]`, "--cert "+certFile, `data["tls.key"]`, "--key "+keyFile).Replace(e.Error())
				}
				return errors.New("invalid TLS secret; nothing was sent:\n  " + strings.Join(msgs, "\n  "))
			}
			doc, err := config.Marshal(s)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			results, err := c.ApplyWithOptions(cmd.Context(), []json.RawMessage{doc}, admin.WriteOptions{})
			if err != nil {
				return apiErr(err)
			}
			printResults(g.io.Out, results)
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", identity.DefaultNamespace, "namespace of the Secret (the Gateway's)")
	cmd.Flags().StringVar(&certFile, "cert", "", "PEM file of the certificate chain, leaf first (required)")
	cmd.Flags().StringVar(&keyFile, "key", "", "PEM file of the private key of the leaf (required; read locally, never echoed)")
	return cmd
}

// readPEMFile reads a certificate or key file of at most
// config.MaxSecretBytes; flag names it in errors, which never carry its
// content.
func readPEMFile(flag, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, config.MaxSecretBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read %s: %w", flag, path, err)
	}
	if len(b) > config.MaxSecretBytes {
		return nil, fmt.Errorf("%s: %s is larger than %d bytes: not a PEM certificate chain or key", flag, path, config.MaxSecretBytes)
	}
	return b, nil
}
