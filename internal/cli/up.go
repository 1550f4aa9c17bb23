package cli

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/exampleapp"
	"github.com/bulwarkmesh/bulwark/internal/up"
)

func newUpCmd(g *globals) *cobra.Command {
	var cfg up.Config
	cmd := &cobra.Command{
		Use:   "up -f mesh.yaml",
		Short: "Run a whole mesh on this machine",
		Long: `Run a whole mesh on this machine: an embedded control plane, every service of the
file with its sidecar (apps bound to 127.0.0.1), and a local client sidecar whose
URL reaches the entry service. The file holds one Mesh document (which services to
run) and the mesh's resources, applied on start. Ctrl-C stops everything.`,
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
			cfg.Out, cfg.Log = g.io.Out, g.io.Err
			return up.Run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVarP(&cfg.File, "filename", "f", "", "mesh file (required)")
	cmd.Flags().StringVar(&cfg.DataDir, "data-dir", "", "control plane data dir (default: a temporary directory, removed on exit)")
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address of the URL that reaches the entry service")
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
