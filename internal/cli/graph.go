package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// edgeTable is the table of `bulwark get edges`.
func edgeTable() ([]string, func(config.Object) []string) {
	return []string{"SOURCE", "DESTINATION", "METHOD", "PATH", "REQUESTS", "ERRORS", "DENIED", "RPS", "P50", "P99", "MTLS", "LAST SEEN"},
		func(o config.Object) []string {
			e := o.(*config.Edge).Status
			path := e.Path
			if path == "" {
				path = "-"
			}
			return []string{sourceName(&e), e.Destination, e.Method, path, strconv.FormatInt(e.Requests, 10),
				strconv.FormatInt(e.Errors, 10), strconv.FormatInt(e.Denied, 10), formatRPS(e.RPS),
				formatMS(e.P50MS), formatMS(e.P99MS), strconv.FormatBool(e.MTLS), age(e.LastSeen)}
		}
}

// sourceName is how tables name an edge's caller: its service, else its
// SPIFFE ID.
func sourceName(e *config.EdgeStatus) string {
	if e.SourceService != "" {
		return e.SourceService
	}
	return e.Source
}

func formatRPS(r float64) string { return strconv.FormatFloat(r, 'f', 2, 64) }

func formatMS(ms float64) string {
	if ms == 0 {
		return "-"
	}
	return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
}

// fetchEdges reads the edges of ns ("" for all) with requests within since.
func fetchEdges(ctx context.Context, c *admin.Client, ns string, since time.Duration) ([]*config.Edge, error) {
	raw, err := c.Edges(ctx, ns, since)
	if err != nil {
		return nil, apiErr(err)
	}
	objs, err := config.UnmarshalList(raw)
	if err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	out := make([]*config.Edge, 0, len(objs))
	for _, o := range objs {
		if e, ok := o.(*config.Edge); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// graphRow is one service-to-service edge of `bulwark graph`: every edge
// of one caller to one destination, whatever the method and path.
type graphRow struct {
	Source      string  `json:"source"`
	Destination string  `json:"destination"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	Denied      int64   `json:"denied"`
	RPS         float64 `json:"rps"`
	// SuccessPercent is the share of requests neither denied nor answered
	// 5xx.
	SuccessPercent float64 `json:"successPercent"`
	// P50MS and P99MS are the largest of the merged edges' (the slowest
	// method and path).
	P50MS float64 `json:"p50ms"`
	P99MS float64 `json:"p99ms"`
	// MTLS is true when every merged edge was mTLS.
	MTLS bool `json:"mtls"`
}

// graphRows merges edges by caller and destination, sorted by source then
// destination.
func graphRows(edges []*config.Edge) []graphRow {
	type key struct{ src, dst string }
	byKey := map[key]*graphRow{}
	var keys []key
	for _, e := range edges {
		s := &e.Status
		k := key{sourceName(s), s.Destination}
		r := byKey[k]
		if r == nil {
			r = &graphRow{Source: k.src, Destination: k.dst, MTLS: true}
			byKey[k] = r
			keys = append(keys, k)
		}
		r.Requests += s.Requests
		r.Errors += s.Errors
		r.Denied += s.Denied
		r.RPS += s.RPS
		r.P50MS = max(r.P50MS, s.P50MS)
		r.P99MS = max(r.P99MS, s.P99MS)
		r.MTLS = r.MTLS && s.MTLS
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := strings.Compare(a.src, b.src); c != 0 {
			return c
		}
		return strings.Compare(a.dst, b.dst)
	})
	out := make([]graphRow, len(keys))
	for i, k := range keys {
		r := byKey[k]
		r.SuccessPercent = successPercent(r.Requests, r.Errors, r.Denied)
		out[i] = *r
	}
	return out
}

func successPercent(requests, errors, denied int64) float64 {
	if requests <= 0 {
		return 0
	}
	ok := max(requests-errors-denied, 0)
	return 100 * float64(ok) / float64(requests)
}

func formatPercent(p float64) string { return strconv.FormatFloat(p, 'f', 1, 64) + "%" }

// writeGraph prints rows as a table, Graphviz dot or JSON.
func writeGraph(w io.Writer, rows []graphRow, output string) error {
	switch output {
	case "json":
		b, err := json.MarshalIndent(struct {
			Edges []graphRow `json:"edges"`
		}{Edges: append([]graphRow{}, rows...)}, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case "dot":
		var b strings.Builder
		b.WriteString("digraph bulwark {\n  rankdir=LR;\n  node [shape=box];\n")
		for _, r := range rows {
			color := "black"
			switch {
			case r.Denied > 0:
				color = "red"
			case r.Errors > 0:
				color = "orange"
			}
			label := fmt.Sprintf("%s rps, %s ok", formatRPS(r.RPS), formatPercent(r.SuccessPercent))
			if r.Denied > 0 {
				label += fmt.Sprintf(", %d denied", r.Denied)
			}
			if !r.MTLS {
				label += ", no mTLS"
			}
			fmt.Fprintf(&b, "  %s -> %s [label=%s, color=%s];\n", dotQuote(r.Source), dotQuote(r.Destination), dotQuote(label), color)
		}
		b.WriteString("}\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No edges observed.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\tRPS\tSUCCESS\tDENIED\tP50\tP99\tMTLS")
	for _, r := range rows {
		cells := []string{r.Source, r.Destination, formatRPS(r.RPS), formatPercent(r.SuccessPercent),
			strconv.FormatInt(r.Denied, 10), formatMS(r.P50MS), formatMS(r.P99MS), strconv.FormatBool(r.MTLS)}
		for i, c := range cells {
			cells[i] = printable(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// dotQuote quotes s as a Graphviz ID: names come from workloads, so
// quotes, backslashes and control characters are escaped.
func dotQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// namespaceFlag resolves -n and -A: "" for every namespace.
func namespaceFlag(ns string, all bool) (string, error) {
	if all {
		return "", nil
	}
	if err := identity.ValidateName(ns); err != nil {
		return "", usagef("--namespace: %v", err)
	}
	return ns, nil
}

func newGraphCmd(g *globals) *cobra.Command {
	var (
		namespace, output string
		all               bool
		since             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "graph",
		Short: "Print the service graph: who calls whom, how often, how well",
		Long: `Print the service graph the proxies observed: one row per caller and
destination service (every method and path merged), with requests per second over
the window, the share of requests neither denied nor answered 5xx, denials, the
slowest method's p50 and p99 latency, and whether every request was mTLS. An edge's
namespace is its destination's. -o dot writes Graphviz (bulwark graph -o dot | dot -Tsvg).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch output {
			case "table", "dot", "json":
			default:
				return usagef("-o: want table, dot or json")
			}
			if since <= 0 || since > 24*time.Hour {
				return usagef("--since: a positive duration of at most 24h")
			}
			ns, err := namespaceFlag(namespace, all)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			edges, err := fetchEdges(cmd.Context(), c, ns, since)
			if err != nil {
				return err
			}
			return writeGraph(g.io.Out, graphRows(edges), output)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", identity.DefaultNamespace, "namespace of the destinations")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().DurationVar(&since, "since", 15*time.Minute, "window of the rates (at most 24h)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, dot or json")
	return cmd
}

// topSince is the window of `bulwark top`'s rates: proxies report every
// 10 seconds into one-minute buckets.
const topSince = time.Minute

// writeTop prints the edges sorted by rps (then requests), as `top` does.
func writeTop(w io.Writer, edges []*config.Edge, ns string, at time.Time) error {
	slices.SortStableFunc(edges, func(a, b *config.Edge) int {
		if a.Status.RPS != b.Status.RPS {
			if a.Status.RPS > b.Status.RPS {
				return -1
			}
			return 1
		}
		return int(b.Status.Requests - a.Status.Requests)
	})
	scope := "namespace " + ns
	if ns == "" {
		scope = "all namespaces"
	}
	fmt.Fprintf(w, "bulwark top: %s, last %s, at %s (q or Ctrl-C quits)\n\n", scope, topSince, at.UTC().Format(time.TimeOnly))
	if len(edges) == 0 {
		_, err := fmt.Fprintln(w, "No traffic observed.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\tMETHOD\tPATH\tRPS\tSUCCESS\tDENIED\tP50\tP99")
	for _, e := range edges {
		s := &e.Status
		path := s.Path
		if path == "" {
			path = "-"
		}
		cells := []string{sourceName(s), s.Destination, s.Method, path, formatRPS(s.RPS),
			formatPercent(successPercent(s.Requests, s.Errors, s.Denied)), strconv.FormatInt(s.Denied, 10),
			formatMS(s.P50MS), formatMS(s.P99MS)}
		for i, c := range cells {
			cells[i] = printable(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// terminal returns the file descriptor of w when it is a terminal.
func terminal(f any) (int, bool) {
	file, ok := f.(*os.File)
	if !ok {
		return 0, false
	}
	if _, err := unix.IoctlGetTermios(int(file.Fd()), unix.TCGETS); err != nil {
		return 0, false
	}
	return int(file.Fd()), true
}

// keystrokes puts the terminal fd in non-canonical mode without echo (so a
// single q is read at once; Ctrl-C still interrupts) and sends what is
// typed on the returned channel. restore puts the terminal back.
func keystrokes(in *os.File, fd int) (keys <-chan byte, restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, nil, err
	}
	raw := *old
	raw.Lflag &^= unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, nil, err
	}
	c := make(chan byte, 8)
	go func() {
		var b [1]byte
		for {
			if n, err := in.Read(b[:]); err != nil || n == 0 {
				close(c)
				return
			}
			select {
			case c <- b[0]:
			default:
			}
		}
	}()
	return c, func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func newTopCmd(g *globals) *cobra.Command {
	var (
		namespace string
		all, once bool
		interval  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show live per-edge traffic, refreshed (like top)",
		Long: `Show the edges of the service graph with traffic in the last minute, sorted by
requests per second, with success rate, denials and p50/p99 latency, and redraw the
table every --interval. q or Ctrl-C quits. With --once, or when the output is not a
terminal, print the table once and exit. Proxies report every 10 seconds (sooner
after a denial), so rates lag the traffic by up to that.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 500*time.Millisecond || interval > time.Hour {
				return usagef("--interval: between 500ms and 1h")
			}
			ns, err := namespaceFlag(namespace, all)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			_, tty := terminal(g.io.Out)
			if once || !tty {
				edges, err := fetchEdges(ctx, c, ns, topSince)
				if err != nil {
					return err
				}
				return writeTop(g.io.Out, edges, ns, time.Now())
			}
			var keys <-chan byte
			if in, ok := g.io.In.(*os.File); ok {
				if fd, ok := terminal(in); ok {
					k, restore, err := keystrokes(in, fd)
					if err == nil {
						defer restore()
						keys = k
					}
				}
			}
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ticker := time.NewTicker(interval)
			defer ticker.Stop()
			for {
				edges, err := fetchEdges(ctx, c, ns, topSince)
				if errors.Is(err, context.Canceled) || ctx.Err() != nil {
					return nil
				}
				var b strings.Builder
				b.WriteString("\x1b[H\x1b[2J") // home, clear
				if err != nil {
					fmt.Fprintf(&b, "bulwark top: %v\n", err)
				} else if err := writeTop(&b, edges, ns, time.Now()); err != nil {
					return err
				}
				if _, err := io.WriteString(g.io.Out, b.String()); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case k, ok := <-keys:
					if !ok || k == 'q' || k == 'Q' || k == 3 {
						return nil
					}
				case <-ticker.C:
				}
			}
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", identity.DefaultNamespace, "namespace of the destinations")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between refreshes")
	cmd.Flags().BoolVar(&once, "once", false, "print once and exit")
	return cmd
}
