// Package cli owns the `bulwark` command tree: flag parsing, output formats
// (table, JSON, YAML) and exit codes. Each command is thin: daemons hand a
// Config to their composition root (control, sidecar, up); resource
// commands call the admin API through internal/admin. No command opens the
// control plane's data directory.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// env is the environment variable naming the operator credential file.
const envConfig = "BULWARK_CONFIG"

// IO is where a command reads and writes.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// usageError marks errors in how a command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs the command line args and returns the process exit code.
func Main(ctx context.Context, args []string, stdio IO) int {
	root := newRoot(stdio)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stdio.Err, "bulwark: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

// globals are the flags every command shares.
type globals struct {
	io       IO
	config   string
	logLevel string
}

func newRoot(stdio IO) *cobra.Command {
	g := &globals{io: stdio}
	root := &cobra.Command{
		Use:   "bulwark",
		Short: "Bulwark: a zero-trust service mesh",
		Long: `Bulwark is a zero-trust service mesh: every call between services is mutually
authenticated with short-lived SPIFFE identities, and nothing may talk to anything
unless a policy allows it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.config, "config", "", "operator credential file (default: $"+envConfig+", then ~/.bulwark/config)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level of daemons: debug, info, warn, error")

	// Bare `bulwark` prints help; an unknown command is a usage error.
	root.Args = cobra.NoArgs
	root.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	root.AddCommand(
		newVersionCmd(g),
		newControlCmd(g),
		withSubcommands(newProxyCmd(g), newProxyRevokeCmd(g), newProxyDrainCmd(g)),
		newGatewayCmd(g),
		newRouteCmd(g),
		newUpCmd(g),
		newApplyCmd(g),
		newCreateCmd(g),
		newGetCmd(g),
		newGraphCmd(g),
		newTopCmd(g),
		newDeleteCmd(g),
		newPolicyCmd(g),
		newTokenCmd(g),
		newCACmd(g),
		newOperatorCmd(g),
		newAuditCmd(g),
		newDashboardCmd(g),
		newExampleAppCmd(g),
	)
	markUsageErrors(root)
	return root
}

// withSubcommands adds subs to cmd and returns it.
func withSubcommands(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	return cmd
}

// markUsageErrors makes argument errors of every command usage errors (exit
// code 2), as flag errors already are.
func markUsageErrors(c *cobra.Command) {
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}

// level parses --log-level.
func (g *globals) level() (slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return 0, usagef("--log-level: %v", err)
	}
	return lvl, nil
}

// logger returns the JSON logger daemons write to stderr.
func (g *globals) logger() (*slog.Logger, error) {
	lvl, err := g.level()
	if err != nil {
		return nil, err
	}
	return telemetry.NewJSON(g.io.Err, lvl), nil
}

// credentialPath finds the operator credential: --config, then
// $BULWARK_CONFIG, then ~/.bulwark/config.
func (g *globals) credentialPath() (string, error) {
	if g.config != "" {
		return g.config, nil
	}
	if p := os.Getenv(envConfig); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err == nil {
		p := filepath.Join(home, ".bulwark", "config")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no operator credential: pass --config, set " + envConfig +
		", or copy one to ~/.bulwark/config (the control plane writes <data-dir>/operator/admin.yaml)")
}

// client returns an admin API client for the operator credential.
func (g *globals) client() (*admin.Client, error) {
	path, err := g.credentialPath()
	if err != nil {
		return nil, err
	}
	cred, err := admin.LoadCredential(path)
	if err != nil {
		return nil, err
	}
	return admin.NewClient(cred)
}

// apiErr makes admin API errors read well on a terminal.
func apiErr(err error) error {
	var ae *admin.APIError
	if errors.As(err, &ae) {
		return errors.New(strings.TrimSpace(ae.Error()))
	}
	if errors.Is(err, admin.ErrUnreachable) {
		return fmt.Errorf("%v (is `bulwark control` running, and is the credential's server address right?)", err)
	}
	return err
}
