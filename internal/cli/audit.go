package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/audit"
	"github.com/bulwarkmesh/bulwark/internal/fileutil"
)

// maxExportFile bounds the export file `audit verify --file` reads.
const maxExportFile = 1 << 30

// errAuditBroken is returned (exit code 1) when verification fails; the
// report was printed.
var errAuditBroken = errors.New("audit log verification failed")

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read, verify and export the tamper-evident audit log",
		Long: `The control plane records every admin API write, every CA operation, every
attestation, and (counted per source every 10s) every failed authentication in an
append-only, hash-chained audit log, sealed by signed checkpoints. See docs/audit.md.
Reading it needs the right "get" on kind AuditLog mesh-wide.`,
	}
	return withSubcommands(cmd, newAuditTailCmd(g), newAuditVerifyCmd(g), newAuditExportCmd(g))
}

func newAuditTailCmd(g *globals) *cobra.Command {
	var (
		n        int
		follow   bool
		output   string
		interval time.Duration
	)
	c := &cobra.Command{
		Use:   "tail [-n 20] [--follow] [-o json]",
		Short: "Print the last audit entries (and, with --follow, new ones as they come)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 || n > admin.MaxAuditLimit {
				return usagef("-n: %d: want 1 to %d", n, admin.MaxAuditLimit)
			}
			if output != "table" && output != "json" {
				return usagef("--output: %q: want table or json", output)
			}
			if interval < 100*time.Millisecond {
				return usagef("--interval: %s: want at least 100ms", interval)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			list, err := c.AuditEntries(ctx, nil, n)
			if err != nil {
				return apiErr(err)
			}
			p := newAuditPrinter(g.io.Out, output)
			if err := p.print(list.Items); err != nil {
				return err
			}
			if !follow {
				return nil
			}
			last := list.Head
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
				list, err := c.AuditEntries(ctx, &last, admin.MaxAuditLimit)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return apiErr(err)
				}
				if err := p.print(list.Items); err != nil {
					return err
				}
				if k := len(list.Items); k > 0 {
					last = list.Items[k-1].Seq
				}
			}
		},
	}
	c.Flags().IntVarP(&n, "lines", "n", admin.DefaultAuditLimit, "number of entries")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new entries until interrupted")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table, or json (one entry per line)")
	c.Flags().DurationVar(&interval, "interval", time.Second, "with --follow, how often to ask for new entries")
	return c
}

// auditPrinter prints entries as a table (header once) or JSON lines.
type auditPrinter struct {
	w      io.Writer
	output string
	header bool
}

func newAuditPrinter(w io.Writer, output string) *auditPrinter {
	return &auditPrinter{w: w, output: output}
}

func (p *auditPrinter) print(entries []audit.Entry) error {
	if p.output == "json" {
		enc := json.NewEncoder(p.w)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	if !p.header {
		fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tOBJECT\tSOURCE\tOUTCOME\tCOUNT\tDETAIL")
		p.header = true
	}
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Seq, printable(shortTime(e.Time)), dash(e.Actor), printable(e.Action),
			dash(object(e)), dash(e.Source), dash(e.Outcome), e.Count, printable(e.Detail))
	}
	return tw.Flush()
}

// object names an entry's resource: "Kind ns/name", as far as it is set.
func object(e audit.Entry) string {
	s := e.Kind
	switch {
	case e.Namespace != "" && e.Name != "":
		s += " " + e.Namespace + "/" + e.Name
	case e.Name != "":
		s += " " + e.Name
	case e.Namespace != "":
		s += " " + e.Namespace + "/"
	}
	return s
}

func shortTime(t string) string {
	if p, err := time.Parse(time.RFC3339Nano, t); err == nil {
		return p.UTC().Format("2006-01-02T15:04:05Z")
	}
	return t
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return printable(s)
}

func newAuditVerifyCmd(g *globals) *cobra.Command {
	var file, key, output, previous string
	c := &cobra.Command{
		Use:   "verify [--file EXPORT [--key PUBLIC-KEY.pem]] [--previous OLD-EXPORT]",
		Short: "Verify the audit log's hash chain and signed checkpoints (exit code 1 when broken)",
		Long: `Verify the audit log: the control plane walks its chain from the first entry
and checks every entry's hash and link, the head, and every checkpoint's signature.
With --file it verifies an export (bulwark audit export) here, without the control
plane: --key pins the audit public key (PEM); without it the key in the file is
trusted, which proves the file is consistent but not who sealed it.

--previous OLD-EXPORT also checks that the log continues an earlier export, byte
for byte: this detects truncation after the last checkpoint, and a history
rewritten by someone who holds both the store and the audit key.

The exit code is 0 when the log is intact, 1 when it is not; the first bad entry's
sequence number and what is wrong with it are printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return usagef("--output: %q: want text or json", output)
			}
			if key != "" && file == "" {
				return usagef("--key goes with --file")
			}
			var (
				rep audit.Report
				cur []byte // the export, when --previous needs it
			)
			if file != "" {
				b, err := readBounded(file, maxExportFile)
				if err != nil {
					return fmt.Errorf("--file: %w", err)
				}
				cur = b
				var pinned []byte
				if key != "" {
					if pinned, err = readBounded(key, 64<<10); err != nil {
						return fmt.Errorf("--key: %w", err)
					}
				}
				r, trusted, err := audit.VerifyExport(b, pinned)
				if err != nil {
					return fmt.Errorf("verify %s: %w", file, err)
				}
				if trusted {
					fmt.Fprintln(g.io.Err, "warning: trusting the public key in the file; pin the audit key with --key")
				}
				rep = r
			} else {
				c, err := g.client()
				if err != nil {
					return err
				}
				if rep, err = c.AuditVerify(cmd.Context()); err != nil {
					return apiErr(err)
				}
				if previous != "" {
					if cur, err = c.AuditExport(cmd.Context()); err != nil {
						return apiErr(err)
					}
				}
			}
			if previous != "" {
				r, err := continues(previous, cur)
				if err != nil {
					return err
				}
				if !r.OK && (rep.OK || r.BadSeq < rep.BadSeq) {
					rep.OK, rep.BadSeq, rep.Problem = false, r.BadSeq, r.Problem
					rep.Problems = append([]string{r.Problem}, rep.Problems...)
				}
			}
			if output == "json" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(g.io.Out, string(b))
			} else {
				printReport(g.io.Out, rep)
			}
			if !rep.OK {
				return fmt.Errorf("%w: first bad entry %d", errAuditBroken, rep.BadSeq)
			}
			return nil
		},
	}
	c.Flags().StringVar(&file, "file", "", "verify this export file instead of the control plane's log")
	c.Flags().StringVar(&key, "key", "", "with --file: the audit public key (PEM) to pin")
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	c.Flags().StringVar(&previous, "previous", "", "an earlier export the log must continue, byte for byte")
	return c
}

// continues checks the export cur against the earlier export in the file
// previous.
func continues(previous string, cur []byte) (audit.Report, error) {
	b, err := readBounded(previous, maxExportFile)
	if err != nil {
		return audit.Report{}, fmt.Errorf("--previous: %w", err)
	}
	prev, err := audit.ParseExport(b)
	if err != nil {
		return audit.Report{}, fmt.Errorf("--previous: %w", err)
	}
	x, err := audit.ParseExport(cur)
	if err != nil {
		return audit.Report{}, fmt.Errorf("export: %w", err)
	}
	return audit.Continues(prev, x), nil
}

func printReport(w io.Writer, rep audit.Report) {
	last := "none"
	if rep.LastCheckpoint > 0 {
		last = "seq " + strconv.FormatUint(rep.LastCheckpoint, 10)
	}
	if rep.OK {
		fmt.Fprintf(w, "%d entries, %d checkpoints, last checkpoint %s, ok\n", rep.Entries, rep.Checkpoints, last)
		return
	}
	fmt.Fprintf(w, "BROKEN at entry %d: %s\n", rep.BadSeq, rep.Problem)
	for _, p := range rep.Problems[min(1, len(rep.Problems)):] {
		fmt.Fprintf(w, "  also: %s\n", p)
	}
	fmt.Fprintf(w, "%d entries, %d checkpoints, last valid checkpoint %s\n", rep.Entries, rep.Checkpoints, last)
}

// readBounded reads a file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}

func newAuditExportCmd(g *globals) *cobra.Command {
	var out, keyOut string
	c := &cobra.Command{
		Use:   "export -o FILE [--key-out PUBLIC-KEY.pem]",
		Short: "Write the audit chain, its checkpoints and the audit public key to a file",
		Long: `Write the whole audit log (every entry and checkpoint, as stored, and the
audit public key) to FILE ("-" for standard output), for offline verification with
bulwark audit verify --file FILE --key PUBLIC-KEY.pem. Keep exports, and the key,
away from the control plane: an attacker who holds both its store and its audit key
can rewrite its history, but not your copy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("-o FILE is required (\"-\" for standard output)")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			b, err := c.AuditExport(cmd.Context())
			if err != nil {
				return apiErr(err)
			}
			x, err := audit.ParseExport(b)
			if err != nil {
				return fmt.Errorf("control plane sent a bad export: %w", err)
			}
			if out == "-" {
				_, err = g.io.Out.Write(b)
			} else {
				err = fileutil.WriteAtomic(out, b, 0o600)
			}
			if err != nil {
				return fmt.Errorf("write export: %w", err)
			}
			if keyOut != "" {
				if err := fileutil.WriteAtomic(keyOut, []byte(x.PublicKey), 0o644); err != nil {
					return fmt.Errorf("write public key: %w", err)
				}
			}
			if out != "-" {
				fmt.Fprintf(g.io.Err, "wrote %d entries and %d checkpoints to %s\n", len(x.Entries), len(x.Checkpoints), out)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "file to write (\"-\" for standard output)")
	c.Flags().StringVar(&keyOut, "key-out", "", "also write the audit public key (PEM) to this file")
	return c
}
