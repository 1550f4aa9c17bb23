package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

func newCACmd(g *globals) *cobra.Command {
	caCmd := &cobra.Command{Use: "ca", Short: "Show and rotate the workload CA"}
	var output string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the roots, the intermediate, the rotation phase and what proxies hold",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.CAStatus(cmd.Context())
			if err != nil {
				return apiErr(err)
			}
			return printCAStatus(g.io.Out, st, output)
		},
	}
	status.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")

	var root, intermediate bool
	var rootCert, rootKey string
	rotate := &cobra.Command{
		Use:   "rotate (--root | --intermediate)",
		Short: "Rotate the root (in phases, without failed requests) or the intermediate",
		Long: `Rotate the workload CA.

--root starts a root rotation. It runs in phases on its own: the new root is added
to the trust bundle (prepared); once every connected proxy has ACKed that bundle, a
new intermediate under the new root signs and proxies renew early (activated); once
every proxy holds an SVID of the new chain and the longest SVID lifetime has passed,
the old root leaves the bundle. Follow it with 'bulwark ca status'.

--root --root-cert FILE --root-key FILE rotates to your own root instead of a
generated one, through the same phases.

--intermediate replaces the intermediate under the same root at once; SVIDs issued
by the old one stay valid until they expire.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if root == intermediate {
				return usagef("give exactly one of --root and --intermediate")
			}
			req := admin.RotateRequest{Target: "root"}
			if intermediate {
				req.Target = "intermediate"
			}
			if (rootCert == "") != (rootKey == "") || (rootCert != "" && !root) {
				return usagef("--root-cert and --root-key go together, with --root")
			}
			if rootCert != "" {
				c, err := os.ReadFile(rootCert)
				if err != nil {
					return err
				}
				k, err := os.ReadFile(rootKey)
				if err != nil {
					return err
				}
				req.RootCert, req.RootKey = string(c), string(k)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.RotateCA(cmd.Context(), req)
			if err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(g.io.Out, "%s rotation started.\n", req.Target)
			return printCAStatus(g.io.Out, st, "table")
		},
	}
	rotate.Flags().BoolVar(&root, "root", false, "rotate the root")
	rotate.Flags().BoolVar(&intermediate, "intermediate", false, "rotate the intermediate")
	rotate.Flags().StringVar(&rootCert, "root-cert", "", "with --root: PEM file of your own root (self-signed, URI SAN spiffe://<trust-domain>)")
	rotate.Flags().StringVar(&rootKey, "root-key", "", "with --root-cert: PEM file of its ECDSA P-256 key (sent to the control plane over the operator's mTLS connection, stored encrypted)")
	caCmd.AddCommand(status, rotate)
	return caCmd
}

func checkOutput(output string) error {
	switch output {
	case "table", "json", "yaml":
		return nil
	}
	return usagef("--output: %q: want table, json or yaml", output)
}

func printCAStatus(w io.Writer, st admin.CAStatus, output string) error {
	switch output {
	case "json", "yaml":
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		if output == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
		} else {
			b = append(b, '\n')
		}
		_, err = w.Write(b)
		return err
	}
	fmt.Fprintf(w, "Trust domain:   %s\n", st.TrustDomain)
	fmt.Fprintf(w, "Rotation phase: %s", st.Phase)
	if !st.PhaseSince.IsZero() {
		fmt.Fprintf(w, " (since %s)", st.PhaseSince.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if st.WaitingFor != "" {
		fmt.Fprintf(w, "Waiting for:    %s\n", st.WaitingFor)
	}
	if len(st.Waiting) > 0 {
		fmt.Fprintf(w, "Waiting on:     %s\n", printable(strings.Join(st.Waiting, ", ")))
	}
	fmt.Fprintf(w, "Bundle version: %d\n\n", st.BundleVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tSERIAL\tKEY-ID\tEXPIRES\tSIGNS")
	for _, r := range st.Roots {
		fmt.Fprintf(tw, "root\t%s\t%s\t%s\t%v\n", short(r.Serial), short(r.SubjectKeyID), r.NotAfter.Format(time.RFC3339), r.Signing)
	}
	in := st.Intermediate
	fmt.Fprintf(tw, "intermediate\t%s\t%s\t%s\t%v\n", short(in.Serial), short(in.SubjectKeyID), in.NotAfter.Format(time.RFC3339), true)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nProxies connected: %d, with an SVID of the current intermediate: %d\n", st.Proxies.Connected, st.Proxies.OnSigningAuthority)
	versions := make([]string, 0, len(st.Proxies.ByBundleVersion))
	for v, n := range st.Proxies.ByBundleVersion {
		versions = append(versions, fmt.Sprintf("v%s: %d", v, n))
	}
	slices.Sort(versions)
	if len(versions) > 0 {
		fmt.Fprintf(w, "Bundle versions ACKed: %s\n", strings.Join(versions, ", "))
	}
	return nil
}

// short cuts a hex serial or key ID for a table.
func short(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

func newProxyRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NS/NAME[/INSTANCE]",
		Short: "Revoke a service's proxies (or one instance): no renewal, and peers refuse their SVIDs",
		Long: `Revoke the proxies of service NS/NAME, or only instance INSTANCE of it. Their
current SVID serials are pushed to every peer as a deny-list until they expire, so
established and new connections with them are refused; they can no longer renew,
subscribe or mint JWT-SVIDs. Revoking a whole service also revokes its identities:
only a new join token ('bulwark token create') admits them again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			parts := strings.Split(args[0], "/")
			if len(parts) < 2 || len(parts) > 3 {
				return usagef("want NS/NAME or NS/NAME/INSTANCE, got %q", args[0])
			}
			svc, err := identity.ParseServiceRef(parts[0]+"/"+parts[1], "")
			if err != nil {
				return usagef("%q: %v", args[0], err)
			}
			req := admin.RevokeRequest{Namespace: svc.Namespace, Service: svc.Name}
			if len(parts) == 3 {
				if err := identity.ValidateName(parts[2]); err != nil {
					return usagef("instance %q: %v", parts[2], err)
				}
				req.Instance = parts[2]
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out, err := c.Revoke(cmd.Context(), req)
			if err != nil {
				return apiErr(err)
			}
			for _, p := range out.Proxies {
				fmt.Fprintf(g.io.Out, "proxy/%s revoked\n", printable(p))
			}
			for _, id := range out.Identities {
				fmt.Fprintf(g.io.Out, "identity %s revoked (a new join token admits it again)\n", printable(id))
			}
			fmt.Fprintf(g.io.Out, "%d SVID serials on the deny-list until they expire\n", len(out.Serials))
			return nil
		},
	}
}
