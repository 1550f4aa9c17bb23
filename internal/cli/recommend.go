package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/fileutil"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
	"github.com/bulwarkmesh/bulwark/internal/recommend"
)

// recommendMaxSince is the longest --since: the control plane keeps the
// service graph for 24 hours.
const recommendMaxSince = 24 * time.Hour

// recommendIsFormat reports whether an -o value looks like an output
// format, which `policy recommend` refuses: its -o names a file.
func recommendIsFormat(o string) bool {
	switch o {
	case "json", "yaml", "table", "text", "wide":
		return true
	}
	return false
}

func newPolicyRecommendCmd(g *globals) *cobra.Command {
	var (
		o      recommend.Options
		since  time.Duration
		output string
	)
	cmd := &cobra.Command{
		Use:   "recommend [--namespace NS] [--since 1h] [-o FILE]",
		Short: "Write least-privilege AuthorizationPolicies that allow exactly the observed traffic",
		Long: `Read the service graph the proxies reported (GET /v1/edges) for the services of
a namespace over the last --since, and write one ALLOW AuthorizationPolicy per
destination service, named recommended-<service>, that allows exactly the
observed, successful requests: each caller by its SPIFFE ID, with the methods
and path templates it used. Denied requests, requests from outside the mesh,
egress, and edges whose requests all failed (5xx) are never allowed: they are
listed in comments. Review the output, check it with 'bulwark policy lint' and
'bulwark policy diff', then apply it; with --dry-run the policies are only
evaluated and logged until you remove dryRun. Exit 1 when there is nothing to
recommend. See docs/policy-as-code.md.`,
		Example: `  bulwark policy recommend -n shop --since 1h -o shop-policies.yaml
  bulwark policy recommend -n shop --service api --dry-run --collapse 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := identity.ValidateName(o.Namespace); err != nil {
				return usagef("--namespace: %v", err)
			}
			if o.Service != "" {
				if err := identity.ValidateName(o.Service); err != nil {
					return usagef("--service: %v", err)
				}
			}
			if since <= 0 || since > recommendMaxSince {
				return usagef("--since: want a positive duration of at most %s, such as 1h", recommendMaxSince)
			}
			if o.MinRequests < 1 {
				return usagef("--min-requests: must be at least 1")
			}
			if o.Collapse < 0 {
				return usagef("--collapse: must not be negative (0 turns it off)")
			}
			if recommendIsFormat(output) {
				return usagef("-o: names the file to write (the output is always YAML); use -o ./%s for a file of that name", output)
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			raw, err := cl.Edges(cmd.Context(), o.Namespace, since)
			if err != nil {
				return apiErr(err)
			}
			objs, err := config.UnmarshalList(raw)
			if err != nil {
				return fmt.Errorf("decode edges: %w", err)
			}
			var edges []*config.Edge
			for _, obj := range objs {
				if e, ok := obj.(*config.Edge); ok {
					edges = append(edges, e)
				}
			}
			o.Live = recommendLive(cmd.Context(), g.io.Err, cl, o.Namespace)
			now := clock.Real().Now()
			o.From, o.To = now.Add(-since), now
			rec, err := recommend.Recommend(edges, o)
			if errors.Is(err, recommend.ErrNothingToRecommend) {
				for _, n := range rec.Notes() {
					fmt.Fprintln(g.io.Err, n)
				}
				if len(edges) == 0 {
					return fmt.Errorf("%w in the last %s (no edge at all: is traffic flowing, and do the proxies report to this control plane?)", err, since)
				}
				return fmt.Errorf("%w in the last %s", err, since)
			}
			if err != nil {
				return err
			}
			data := rec.YAML()
			if err := recommendSelfCheck(g.io.Err, data); err != nil {
				return err
			}
			if output == "" || output == "-" {
				_, err := g.io.Out.Write(data)
				return err
			}
			if err := fileutil.WriteAtomic(output, data, 0o644); err != nil {
				return fmt.Errorf("write %s: %w", output, err)
			}
			fmt.Fprintf(g.io.Err, "wrote %s allowing %s to %s: review it, then `bulwark policy diff -f %s` and `bulwark apply -f %s`\n",
				plural(len(rec.Policies), "policy", "policies"), plural(int(rec.Requests), "observed request", "observed requests"),
				printable(output), printable(output), printable(output))
			return nil
		},
	}
	cmd.Flags().StringVarP(&o.Namespace, "namespace", "n", identity.DefaultNamespace, "namespace of the destination services")
	cmd.Flags().DurationVar(&since, "since", time.Hour, "observation window: the traffic of the last DURATION (at most 24h)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write (default: standard output)")
	cmd.Flags().StringVar(&o.Service, "service", "", "only this destination service of the namespace")
	cmd.Flags().Int64Var(&o.MinRequests, "min-requests", 1, "leave out edges with fewer successful requests (listed in comments)")
	cmd.Flags().IntVar(&o.Collapse, "collapse", 0, "replace more than N distinct literal values of one path segment by '*' (0: never)")
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "write dryRun: true policies, evaluated and logged but not enforced")
	cmd.Flags().BoolVar(&o.IncludeErrors, "include-errors", false, "also allow edges every request of which failed with 5xx")
	return cmd
}

// recommendSelfCheck decodes and lints the generated YAML as `bulwark
// policy lint` does: an error is a bug of the generator, and nothing is
// written; warnings are printed to w.
func recommendSelfCheck(w io.Writer, data []byte) error {
	objs, err := config.Decode(data)
	if err != nil {
		return fmt.Errorf("recommend: the generated policies do not decode (a bug): %w", err)
	}
	var docs []policycheck.Document
	for i, obj := range objs {
		if p, ok := obj.(*config.AuthorizationPolicy); ok {
			docs = append(docs, policycheck.Document{Index: i + 1, Policy: p})
		}
	}
	for _, f := range policycheck.Lint(docs) {
		switch f.Severity {
		case policycheck.SeverityError:
			return fmt.Errorf("recommend: the generated policies do not pass lint (a bug): %s", f)
		case policycheck.SeverityWarning:
			fmt.Fprintf(w, "lint: %s\n", printable(f.String()))
		}
	}
	return nil
}

// recommendLive reads the policies in force in namespace and in the root
// namespace, for the notes on what the recommendation cannot reproduce.
// It is best effort: an operator who may not list them gets a note on w
// and a recommendation without those notes.
func recommendLive(ctx context.Context, w io.Writer, cl *admin.Client, namespace string) []*config.AuthorizationPolicy {
	var live []*config.AuthorizationPolicy
	for _, ns := range []string{namespace, config.RootNamespace} {
		raw, err := cl.List(ctx, "policies", ns)
		if err == nil {
			var objs []config.Object
			if objs, err = config.UnmarshalList(raw); err == nil {
				for _, obj := range objs {
					if p, ok := obj.(*config.AuthorizationPolicy); ok {
						live = append(live, p)
					}
				}
				continue
			}
		}
		fmt.Fprintf(w, "note: the policies of %s could not be read (%s); what they require beyond callers, methods and paths is not compared\n",
			ns, printable(apiErr(err).Error()))
	}
	return live
}
