package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/policycheck"
)

// `bulwark policy`: policy as code (docs/policy-as-code.md). Exit codes:
// 0 when all is well; 1 for lint errors (and warnings with --strict),
// failed test cases and, with diff --exit-code, a change of edges; 2 for
// usage errors and files or cases that do not decode.

// defaultTrustDomain names default identities offline.
const defaultTrustDomain = "bulwark.local"

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Policy as code: lint, test, explain and diff AuthorizationPolicies",
		Long: `Policy as code: check policy files before they are applied (lint), decide a table
of requests offline (test), explain one decision (explain) and show which
caller-to-service edges a change would open or cut in the live mesh (diff).
See docs/policy-as-code.md.`,
	}
	cmd.AddCommand(newPolicyLintCmd(g), newPolicyTestCmd(g), newPolicyExplainCmd(g), newPolicyDiffCmd(g), newPolicyRecommendCmd(g))
	return cmd
}

// checkPolicyOutput validates -o.
func checkPolicyOutput(o string, allowed ...string) error {
	if !slices.Contains(allowed, o) {
		return usagef("-o: want %s", strings.Join(allowed, " or "))
	}
	return nil
}

// loadPolicies decodes every document of files (files, directories of
// .yaml/.yml/.json files, or "-"). It returns the policies as lint
// documents, numbered by their position in their file, and the decoding
// errors as findings; other kinds are checked by decoding and skipped.
func loadPolicies(g *globals, files []string) ([]policycheck.Document, []policycheck.Finding, error) {
	if len(files) == 0 {
		return nil, nil, usagef("-f: at least one file or directory is required")
	}
	var (
		docs     []policycheck.Document
		findings []policycheck.Finding
	)
	for _, f := range files {
		paths, err := expandPath(f)
		if err != nil {
			return nil, nil, usageError{err}
		}
		for _, p := range paths {
			data, err := readInput(g, p)
			if err != nil {
				return nil, nil, usageError{err}
			}
			objs, err := config.Decode(data)
			if err != nil {
				findings = append(findings, policycheck.DecodeFindings(p, err)...)
				continue
			}
			for i, o := range objs {
				if pol, ok := o.(*config.AuthorizationPolicy); ok {
					docs = append(docs, policycheck.Document{File: p, Index: i + 1, Policy: pol})
				}
			}
		}
	}
	return docs, findings, nil
}

// readPolicies is loadPolicies for the commands that need valid files: a
// decoding error is printed and becomes a usage error (exit 2).
func readPolicies(g *globals, files []string) ([]*config.AuthorizationPolicy, error) {
	docs, findings, err := loadPolicies(g, files)
	if err != nil {
		return nil, err
	}
	if len(findings) > 0 {
		for _, f := range findings {
			fmt.Fprintln(g.io.Err, f.String())
		}
		return nil, usagef("invalid policy files (%s)", plural(len(findings), "error", "errors"))
	}
	out := make([]*config.AuthorizationPolicy, len(docs))
	for i, d := range docs {
		out[i] = d.Policy
	}
	return out, nil
}

func newPolicyLintCmd(g *globals) *cobra.Command {
	var (
		files  []string
		output string
		strict bool
	)
	cmd := &cobra.Command{
		Use:   "lint -f DIR|FILE",
		Short: "Check policy files: schema, CEL, unreachable, shadowed and too wide rules",
		Long: `Decode every .yaml, .yml and .json file and check the policies together. Errors
(schema and CEL type errors, with the file, document and field path) make the
command exit 1; warnings (unreachable, shadowed and too wide rules, DENY
policies that can never match) do too with --strict; infos (dry-run policies)
never do. The checks are conservative: a rule is called dead or covered only
when that is provable from the patterns (docs/policy-as-code.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkPolicyOutput(output, "table", "json"); err != nil {
				return err
			}
			docs, findings, err := loadPolicies(g, files)
			if err != nil {
				return err
			}
			decodeErrs := len(findings) > 0
			findings = append(findings, policycheck.Lint(docs)...)
			policycheck.SortFindings(findings)
			errs, warnings, infos := policycheck.Count(findings)
			if output == "json" {
				if findings == nil {
					findings = []policycheck.Finding{}
				}
				if err := writeJSONOut(g.io.Out, struct {
					Policies int                   `json:"policies"`
					Errors   int                   `json:"errors"`
					Warnings int                   `json:"warnings"`
					Infos    int                   `json:"infos"`
					Findings []policycheck.Finding `json:"findings"`
				}{len(docs), errs, warnings, infos, findings}); err != nil {
					return err
				}
			} else {
				printFindings(g.io.Out, findings)
				if decodeErrs {
					fmt.Fprintln(g.io.Out, "note: a file with an error is not checked further; fix the errors to see its warnings")
				}
				fmt.Fprintf(g.io.Out, "%s: %s, %s, %s\n", plural(len(docs), "policy", "policies"),
					plural(errs, "error", "errors"), plural(warnings, "warning", "warnings"), plural(infos, "info", "infos"))
			}
			switch {
			case errs > 0:
				return fmt.Errorf("lint: %s", plural(errs, "error", "errors"))
			case strict && warnings > 0:
				return fmt.Errorf("lint: %s (--strict)", plural(warnings, "warning", "warnings"))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&strict, "strict", false, "exit 1 on warnings too")
	return cmd
}

// printFindings prints lint findings as a table.
func printFindings(w io.Writer, fs []policycheck.Finding) {
	if len(fs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tFILE\tPOLICY\tFIELD\tCHECK\tMESSAGE")
	for _, f := range fs {
		where := f.File
		if f.Document > 0 {
			where += "#" + strconv.Itoa(f.Document)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity, printable(orDash(where)), printable(orDash(f.Policy)),
			printable(orDash(f.Path)), f.Check, printable(f.Message))
	}
	tw.Flush()
}

// plural returns "1 policy" or "2 policies".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSONOut(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func newPolicyTestCmd(g *globals) *cobra.Command {
	var (
		files       []string
		casesPath   string
		output      string
		trustDomain string
	)
	cmd := &cobra.Command{
		Use:   "test -f DIR --cases FILE",
		Short: "Decide a table of requests offline and compare with the expected decisions",
		Long: `Decide every case of the cases file against the policies of the files, offline,
exactly as the destination's sidecar would (the path normalized first), and
print PASS or FAIL per case, with the explanation of each failure. Exit 1 when a
case fails, 2 when the files or the cases do not decode. The cases format is in
docs/policy-as-code.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkPolicyOutput(output, "table", "json"); err != nil {
				return err
			}
			if casesPath == "" {
				return usagef("--cases: required")
			}
			pols, err := readPolicies(g, files)
			if err != nil {
				return err
			}
			data, err := readInput(g, casesPath)
			if err != nil {
				return usageError{err}
			}
			cases, err := policycheck.ParseCases(data, trustDomain)
			if err != nil {
				return usageError{fmt.Errorf("%s: %v", casesPath, strings.ReplaceAll(err.Error(), "; ", "\n  "))}
			}
			results, err := policycheck.RunCases(pols, cases)
			if err != nil {
				return usageError{err}
			}
			failed := 0
			for _, r := range results {
				if !r.Pass {
					failed++
				}
			}
			if output == "json" {
				if err := writeJSONOut(g.io.Out, struct {
					Passed  int                  `json:"passed"`
					Failed  int                  `json:"failed"`
					Results []policycheck.Result `json:"results"`
				}{len(results) - failed, failed, results}); err != nil {
					return err
				}
			} else {
				printResultsTable(g.io.Out, results)
				fmt.Fprintf(g.io.Out, "%d passed, %d failed\n", len(results)-failed, failed)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d cases failed", failed, len(results))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "policy file, directory or - (repeatable)")
	cmd.Flags().StringVar(&casesPath, "cases", "", "cases file (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().StringVar(&trustDomain, "trust-domain", defaultTrustDomain, "trust domain of default identities")
	return cmd
}

// printResultsTable prints one line per case, then the details of each
// failure.
func printResultsTable(w io.Writer, results []policycheck.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tCASE\tEXPECT\tGOT\tPOLICY")
	for _, r := range results {
		verdict := "PASS"
		if !r.Pass {
			verdict = "FAIL"
		}
		decided := r.Policy
		if decided != "" {
			decided += " rule " + strconv.Itoa(r.Rule)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", verdict, printable(r.Name), r.Expect, r.Got, orDash(decided))
	}
	tw.Flush()
	for _, r := range results {
		if r.Pass {
			continue
		}
		fmt.Fprintf(w, "\nFAIL %s: %s\n", printable(r.Name), r.Failure)
		for _, line := range strings.Split(strings.TrimRight(r.Explanation, "\n"), "\n") {
			if line != "" {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
	}
}

func newPolicyExplainCmd(g *globals) *cobra.Command {
	var (
		c           policycheck.Case
		headers     []string
		files       []string
		output      string
		trustDomain string
	)
	cmd := &cobra.Command{
		Use:   "explain --from NS/SVC --to NS/SVC METHOD PATH",
		Short: "Explain the decision for one request: the deciding rule, or the nearest ALLOW rule",
		Long: `Decide one request and explain it: the decision, the policy and rule that made it,
each rule's mismatches and, for a denial, the nearest ALLOW rule and what would
have to change. With -f the policies come from files (offline); without, from
the live mesh through the admin API, which also gives the caller's registered
identity.`,
		Example: `  bulwark policy explain --from default/web --to default/api GET /v1/users
  bulwark policy explain -f policies/ --from shop/web --to shop/api -H 'x-env: prod' POST /v1/orders`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPolicyOutput(output, "text", "json"); err != nil {
				return err
			}
			c.Method, c.Path = args[0], args[1]
			if c.To == "" {
				return usagef("--to: required (namespace/name)")
			}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return usagef("-H %q: want 'name: value'", h)
				}
				if c.Headers == nil {
					c.Headers = map[string]string{}
				}
				c.Headers[textproto.TrimString(k)] = textproto.TrimString(v)
			}
			var (
				pols   []*config.AuthorizationPolicy
				source string
				notes  []string
				err    error
			)
			if len(files) > 0 {
				if pols, err = readPolicies(g, files); err != nil {
					return err
				}
				source = "files " + strings.Join(files, ", ")
			} else {
				cl, err := g.client()
				if err != nil {
					return err
				}
				live, err := readLive(cmd.Context(), cl)
				if err != nil {
					return err
				}
				pols, source = live.policies, "the live mesh at "+cl.Server()
				if trustDomain == "" {
					trustDomain = live.trustDomain
				}
				notes = live.fillCaller(&c)
			}
			if err := c.Check(trustDomain); err != nil {
				return usagef("%s", flagErrors(err))
			}
			ex, err := policycheck.Explain(pols, c)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(g.io.Out, policycheck.NewExplainResult(c, source, notes, ex))
			}
			printExplanation(g.io.Out, c, source, notes, ex)
			return nil
		},
	}
	cmd.Flags().StringVar(&c.From, "from", "", "calling service, namespace/name")
	cmd.Flags().StringVar(&c.Identity, "identity", "", "caller's SPIFFE ID (default: the live registered identity of --from, or spiffe://<td>/ns/<ns>/sa/<name>)")
	cmd.Flags().StringVar(&c.To, "to", "", "destination service, namespace/name (required)")
	cmd.Flags().StringArrayVarP(&headers, "header", "H", nil, "request header 'name: value' (repeatable)")
	cmd.Flags().StringVar(&c.Principal, "principal", "", "JWT principal <iss>/<sub> of a validated token")
	cmd.Flags().StringVar(&c.IP, "ip", "", "caller's IP address")
	cmd.Flags().StringVar(&c.Host, "host", "", "host the caller addressed (default: <name>.<namespace> of --to)")
	cmd.Flags().IntVar(&c.Port, "port", 0, "port the caller addressed (default: 80)")
	cmd.Flags().StringToStringVar(&c.Labels, "label", nil, "label of the destination instance, key=value (repeatable)")
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "policy file or directory (repeatable); default: the live mesh")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "", "trust domain of default identities (default: the live mesh's, or "+defaultTrustDomain+")")
	return cmd
}

// flagErrors renders the FieldErrors of Case.Check in terms of flags.
func flagErrors(err error) string {
	var fes config.FieldErrors
	if !errors.As(err, &fes) {
		return err.Error()
	}
	flag := map[string]string{"method": "METHOD", "path": "PATH", "headers": "--header"}
	msgs := make([]string, len(fes))
	for i, fe := range fes {
		name, ok := flag[fe.Path]
		if !ok {
			name = "--" + fe.Path
		}
		msgs[i] = name + ": " + fe.Msg
	}
	return strings.Join(msgs, "; ")
}

// printExplanation prints the outcome of `policy explain`.
func printExplanation(w io.Writer, c policycheck.Case, source string, notes []string, ex policycheck.Explained) {
	caller := c.From
	if caller == "" {
		caller = c.Identity
	} else if c.Identity != "" {
		caller += " (" + c.Identity + ")"
	}
	fmt.Fprintf(w, "request: %s %s from %s to %s\n", printable(c.Method), printable(c.Path), printable(caller), c.To)
	fmt.Fprintf(w, "policies: %s\n", printable(source))
	for _, n := range notes {
		fmt.Fprintf(w, "note: %s\n", printable(n))
	}
	if ex.Rejected != "" {
		fmt.Fprintf(w, "decision: reject (400, before authorization): %s\n", ex.Rejected)
		return
	}
	for _, line := range strings.Split(strings.TrimRight(ex.Explanation.String(), "\n"), "\n") {
		fmt.Fprintln(w, printable(line))
	}
}

// liveState is what `policy explain` and `policy diff` read from the admin
// API.
type liveState struct {
	policies []*config.AuthorizationPolicy
	mesh     policycheck.Mesh
	// identities maps a service ("ns/name") to its registered identities.
	identities map[string][]string
	// labels maps a service to the label sets of its live instances.
	labels      map[string][]map[string]string
	trustDomain string
}

// readLive reads the policies, proxies and services of every namespace
// (which needs the right to list them mesh-wide).
func readLive(ctx context.Context, cl *admin.Client) (*liveState, error) {
	list := func(plural string) ([]config.Object, error) {
		raw, err := cl.List(ctx, plural, "")
		if err != nil {
			return nil, apiErr(err)
		}
		objs, err := config.UnmarshalList(raw)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", plural, err)
		}
		return objs, nil
	}
	pols, err := list("policies")
	if err != nil {
		return nil, err
	}
	proxies, err := list("proxies")
	if err != nil {
		return nil, err
	}
	services, err := list("services")
	if err != nil {
		return nil, err
	}
	st := &liveState{identities: map[string][]string{}, labels: map[string][]map[string]string{}}
	for _, o := range pols {
		if p, ok := o.(*config.AuthorizationPolicy); ok {
			st.policies = append(st.policies, p)
		}
	}
	// Callers: every registered identity, with the services it serves.
	served := map[string][]string{}
	live := map[string]bool{}
	for _, o := range services {
		s, ok := o.(*config.Service)
		if !ok {
			continue
		}
		ref := config.Ref(s)
		for _, id := range s.Status.Identities {
			served[id] = append(served[id], ref)
			st.identities[ref] = append(st.identities[ref], id)
		}
		for _, ep := range s.Status.Endpoints {
			live[ref+" "+ep] = true
		}
		if len(s.Status.Endpoints) > 0 {
			svc, err := identity.ParseServiceRef(ref, "")
			if err == nil {
				st.mesh.Destinations = append(st.mesh.Destinations, policycheck.Destination{Service: svc})
			}
		}
	}
	for _, o := range proxies {
		p, ok := o.(*config.Proxy)
		if !ok || p.Status.Identity == "" {
			continue
		}
		if !slices.Contains(served[p.Status.Identity], p.Status.Service) {
			served[p.Status.Identity] = append(served[p.Status.Identity], p.Status.Service)
			st.identities[p.Status.Service] = append(st.identities[p.Status.Service], p.Status.Identity)
		}
		if live[p.Status.Service+" "+p.Status.Address] {
			st.labels[p.Status.Service] = append(st.labels[p.Status.Service], p.Metadata.Labels)
		}
		if st.trustDomain == "" {
			if id, err := spiffeid.FromString(p.Status.Identity); err == nil {
				st.trustDomain = id.TrustDomain().Name()
			}
		}
	}
	for i := range st.mesh.Destinations {
		d := &st.mesh.Destinations[i]
		d.Instances = st.labels[d.Service.String()]
	}
	for _, id := range slices.Sorted(maps.Keys(served)) {
		svcs := slices.Sorted(slices.Values(served[id]))
		st.mesh.Callers = append(st.mesh.Callers, policycheck.Caller{ID: id, Services: slices.Compact(svcs)})
	}
	return st, nil
}

// fillCaller sets c's identity from the live registry when it is not
// given, and returns notes about choices made.
func (st *liveState) fillCaller(c *policycheck.Case) []string {
	var notes []string
	from, err := identity.ParseServiceRef(c.From, identity.DefaultNamespace)
	if c.From != "" && err == nil && c.Identity == "" {
		ids := slices.Sorted(slices.Values(st.identities[from.String()]))
		ids = slices.Compact(ids)
		switch len(ids) {
		case 0:
			notes = append(notes, from.String()+" has no registered identity; using the default one")
		case 1:
			c.Identity = ids[0]
		default:
			c.Identity = ids[0]
			notes = append(notes, fmt.Sprintf("%s has %d identities (%s); explaining for the first (use --identity)",
				from, len(ids), strings.Join(ids, ", ")))
		}
	}
	if to, err := identity.ParseServiceRef(c.To, identity.DefaultNamespace); err == nil && len(c.Labels) == 0 {
		for _, l := range st.labels[to.String()] {
			if len(l) > 0 {
				notes = append(notes, to.String()+" has instances with labels; pass --label k=v to explain for one of them")
				break
			}
		}
	}
	return notes
}

func newPolicyDiffCmd(g *globals) *cobra.Command {
	var (
		files    []string
		output   string
		exitCode bool
		since    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "diff -f DIR",
		Short: "Show which caller-to-service edges applying the files would open or cut",
		Long: `Compare the live mesh with the mesh after applying the files (their policies
replace the live ones of the same namespace and name; the others stay): which
edges, from a registered caller's service to a running service, the policies
allow now and would allow after. Opened edges are printed with +, cut ones
with -. A second set of edges comes from the traffic proxies observed within
--since: the observed requests the live policies allow, and which of them the
changed policies would deny (observed edges are skipped, with a note, when the
operator may not list them). Services that would lose every caller (which apply
refuses without --force) are listed too. Exit 0, or 1 with --exit-code when an
edge changes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkPolicyOutput(output, "table", "json"); err != nil {
				return err
			}
			changes, err := readPolicies(g, files)
			if err != nil {
				return err
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			live, err := readLive(cmd.Context(), cl)
			if err != nil {
				return err
			}
			next := policycheck.Replace(live.policies, changes)
			sources := []policycheck.EdgeSource{policycheck.PolicySource()}
			if observed, err := observedRequests(cmd.Context(), cl, since); err != nil {
				fmt.Fprintf(g.io.Err, "note: observed edges left out: %v\n", err)
			} else {
				sources = append(sources, policycheck.ObservedSource(observed))
			}
			type sourceDiff struct {
				Source string             `json:"source"`
				Opened []policycheck.Edge `json:"opened"`
				Cut    []policycheck.Edge `json:"cut"`
			}
			var (
				diffs   []sourceDiff
				changed bool
			)
			for _, src := range sources {
				before, after := src.Edges(live.mesh, live.policies, next)
				opened, cut := policycheck.DiffEdges(before, after)
				diffs = append(diffs, sourceDiff{Source: src.Name, Opened: nonNil(opened), Cut: nonNil(cut)})
				changed = changed || len(opened) > 0 || len(cut) > 0
			}
			locks := policycheck.Lockouts(live.mesh, live.policies, next)
			if output == "json" {
				if locks == nil {
					locks = []policycheck.Lockout{}
				}
				if err := writeJSONOut(g.io.Out, struct {
					Diffs    []sourceDiff          `json:"diffs"`
					Lockouts []policycheck.Lockout `json:"lockouts"`
				}{diffs, locks}); err != nil {
					return err
				}
			} else {
				for _, d := range diffs {
					for _, e := range d.Opened {
						fmt.Fprintf(g.io.Out, "+ %s\n", printable(e.String()))
					}
					for _, e := range d.Cut {
						fmt.Fprintf(g.io.Out, "- %s\n", printable(e.String()))
					}
					fmt.Fprintf(g.io.Out, "%s edges: %d opened, %d cut\n", d.Source, len(d.Opened), len(d.Cut))
				}
				for _, l := range locks {
					fmt.Fprintf(g.io.Out, "lock-out: %s (apply refuses this without --force)\n", printable(l.String()))
				}
			}
			if exitCode && changed {
				return errors.New("edges would change (--exit-code)")
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "policy file, directory or - (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit 1 when an edge would be opened or cut")
	cmd.Flags().DurationVar(&since, "since", time.Hour, "observed traffic of this window (at most 24h, the graph's retention)")
	return cmd
}

// observedRequests reads the service graph's edges of the last since and
// returns the requests proxies let through.
func observedRequests(ctx context.Context, cl *admin.Client, since time.Duration) ([]policycheck.Observed, error) {
	raw, err := cl.Edges(ctx, "", since)
	if err != nil {
		return nil, apiErr(err)
	}
	objs, err := config.UnmarshalList(raw)
	if err != nil {
		return nil, fmt.Errorf("read edges: %w", err)
	}
	edges := make([]*config.Edge, 0, len(objs))
	for _, o := range objs {
		if e, ok := o.(*config.Edge); ok {
			edges = append(edges, e)
		}
	}
	return policycheck.ObservedFromEdges(edges), nil
}

// nonNil returns s, or an empty slice for nil, so that JSON shows [].
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
