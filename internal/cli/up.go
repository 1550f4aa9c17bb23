package cli

import (
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/exampleapp"
	"github.com/bulwarkmesh/bulwark/internal/up"
)

func newUpCmd(g *globals) *cobra.Command {
	var (
		cfg           up.Config
		gatewayListen []string
	)
	cmd := &cobra.Command{
		Use:   "up -f mesh.yaml",
		Short: "Run a whole mesh on this machine",
		Long: `Run a whole mesh on this machine: an embedded control plane, every service of the
file with its sidecar (apps bound to 127.0.0.1), and a local client sidecar whose
URL reaches the entry service. The file holds one Mesh document (which services to
run) and the mesh's resources, applied on start. Ctrl-C stops everything.

Every Gateway of the file runs as a 'bulwark gateway' process with its own join
token, its listeners on 127.0.0.1 at their ports (--gateway-listen moves one). A
Secret that a Gateway names and the file does not define gets a self-signed
certificate for localhost, 127.0.0.1 and ::1 (ECDSA P-256, 30 days), made at start
and written under the data dir for curl --cacert: for local use only. A Mesh with
spec.demoIssuer also runs a demo token issuer on loopback (GET /token?sub=NAME&scope=S)
whose public key becomes the JWTProvider it names: anyone on this machine can get
a token from it, so it exists for examples only.`,
		Example: `  bulwark up -f examples/shop/mesh.yaml
  bulwark up -f examples/shop/mesh.yaml --gateway-listen https=127.0.0.1:10443 --gateway-listen http=127.0.0.1:10080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.File == "" {
				return usagef("-f: the mesh file is required")
			}
			lvl, err := g.level()
			if err != nil {
				return err
			}
			cfg.LogLevel = lvl
			for _, kv := range gatewayListen {
				name, addr, ok := strings.Cut(kv, "=")
				if !ok || name == "" || addr == "" {
					return usagef("--gateway-listen %q: want LISTENER=HOST:PORT (or NAMESPACE/GATEWAY/LISTENER=HOST:PORT)", kv)
				}
				if _, _, err := net.SplitHostPort(addr); err != nil {
					return usagef("--gateway-listen %q: %v", kv, err)
				}
				if cfg.GatewayListen == nil {
					cfg.GatewayListen = map[string]string{}
				}
				if _, dup := cfg.GatewayListen[name]; dup {
					return usagef("--gateway-listen %s: given twice", name)
				}
				cfg.GatewayListen[name] = addr
			}
			cfg.Out, cfg.Log = g.io.Out, g.io.Err
			return up.Run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVarP(&cfg.File, "filename", "f", "", "mesh file (required)")
	cmd.Flags().StringVar(&cfg.DataDir, "data-dir", "", "control plane data dir (default: a temporary directory, removed on exit)")
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address of the URL that reaches the entry service")
	cmd.Flags().StringArrayVar(&gatewayListen, "gateway-listen", nil, "LISTENER=HOST:PORT: where a Gateway's listener binds (default: 127.0.0.1 on its port; repeatable)")
	cmd.Flags().StringVar(&cfg.AdminListen, "admin-listen", "127.0.0.1:8444", "address of the control plane's admin API and dashboard (https://ADDR/ui/)")
	cmd.Flags().StringVar(&cfg.IssuerListen, "issuer-listen", "", "loopback address of the demo token issuer (default: spec.demoIssuer.listen of the file)")
	return cmd
}

func newExampleAppCmd(g *globals) *cobra.Command {
	var cfg exampleapp.Config
	cmd := &cobra.Command{
		Use:    "example-app NAME --listen HOST:PORT",
		Short:  "Run a built-in example app (used by bulwark up)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Name = args[0]
			if cfg.Listen == "" {
				if p := os.Getenv("PORT"); p != "" {
					cfg.Listen = "127.0.0.1:" + p
				} else {
					return usagef("--listen: required")
				}
			}
			cfg.Log = g.io.Out
			return exampleapp.Run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVar(&cfg.Listen, "listen", "", "address to serve on (default: 127.0.0.1:$PORT)")
	cmd.Flags().DurationVar(&cfg.Every, "every", 0, "interval of the rogue app's attempts (default 5s)")
	cmd.Flags().StringVar(&cfg.Version, "version", "", "version of the app (the catalog's v2 sells one more product)")
	return cmd
}
