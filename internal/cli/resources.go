package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/resource"
)

// readResources reads and decodes every document of the files (a file, a
// directory's *.yaml/*.yml/*.json, or "-" for stdin). Mesh documents, which
// only `bulwark up` reads, are skipped with a note. Every error of every
// file is reported; nothing is returned unless all documents are valid.
func readResources(g *globals, files []string) ([]config.Object, error) {
	if len(files) == 0 {
		return nil, usagef("-f: at least one file is required")
	}
	var (
		objs []config.Object
		errs []string
	)
	for _, f := range files {
		paths, err := expandPath(f)
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			data, err := readInput(g, p)
			if err != nil {
				return nil, err
			}
			got, err := config.Decode(data)
			if err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					errs = append(errs, p+": "+line)
				}
				continue
			}
			if len(got) == 0 {
				errs = append(errs, p+": no resources")
				continue
			}
			for _, o := range got {
				if o.GetTypeMeta().Kind == config.KindMesh {
					fmt.Fprintf(g.io.Err, "%s: skipping Mesh %q (used only by bulwark up)\n", p, o.GetMetadata().Name)
					continue
				}
				objs = append(objs, o)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.New("invalid resources; nothing was sent:\n  " + strings.Join(errs, "\n  "))
	}
	return objs, nil
}

func expandPath(p string) ([]string, error) {
	if p == "-" {
		return []string{p}, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
			out = append(out, filepath.Join(p, e.Name()))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no .yaml, .yml or .json files", p)
	}
	return out, nil
}

func readInput(g *globals, p string) ([]byte, error) {
	if p == "-" {
		return io.ReadAll(io.LimitReader(g.io.In, 16<<20))
	}
	return os.ReadFile(p)
}

func newApplyCmd(g *globals) *cobra.Command {
	var (
		files []string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update resources from files, all or nothing",
		Long: `Create or update resources from YAML or JSON files (multi-document, "-" for
stdin, or a directory). Every document is validated first; the whole set is then
applied in one transaction, so nothing is applied when any document is invalid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := readResources(g, files)
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				return errors.New("nothing to apply")
			}
			docs := make([]json.RawMessage, len(objs))
			for i, o := range objs {
				if docs[i], err = config.Marshal(o); err != nil {
					return err
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			results, err := c.ApplyWithOptions(cmd.Context(), docs, admin.WriteOptions{Force: force})
			if err != nil {
				return apiErr(err)
			}
			printResults(g.io.Out, results)
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (repeatable)")
	cmd.Flags().BoolVar(&force, "force", false, forceUsage)
	return cmd
}

// forceUsage is the help of --force; there is deliberately no environment
// variable or config default for it.
const forceUsage = "go ahead even if a service would lose every caller it has now (the control plane's lock-out guard refuses that otherwise)"

func printResults(w io.Writer, results []resource.Result) {
	for _, r := range results {
		fmt.Fprintf(w, "%s %s/%s %s\n", strings.ToLower(r.Kind), r.Namespace, r.Name, r.Outcome)
	}
}

func newDeleteCmd(g *globals) *cobra.Command {
	var (
		files     []string
		namespace string
		ignoreNF  bool
		force     bool
	)
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME | -f FILE)",
		Short: "Delete resources by name or from files",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var refs []resource.Result
			switch {
			case len(files) > 0 && len(args) > 0:
				return usagef("give KIND NAME or -f FILE, not both")
			case len(files) > 0:
				objs, err := readResources(g, files)
				if err != nil {
					return err
				}
				for _, o := range objs {
					m := o.GetMetadata()
					refs = append(refs, resource.Result{Kind: o.GetTypeMeta().Kind, Namespace: m.Namespace, Name: m.Name})
				}
			case len(args) == 2:
				kind, ok := config.ResourceKind(args[0])
				if !ok {
					return usagef("unknown resource type %q (known: policies, jwtproviders, roles, rolebindings, trafficpolicies, routes, externalservices, alertrules, gateways, secrets)", args[0])
				}
				if err := identity.ValidateName(namespace); err != nil {
					return usagef("--namespace: %v", err)
				}
				refs = []resource.Result{{Kind: kind, Namespace: namespace, Name: args[1]}}
			default:
				return usagef("give KIND NAME or -f FILE")
			}
			if len(refs) == 0 {
				return errors.New("nothing to delete")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			results, err := c.DeleteWithOptions(cmd.Context(), refs, admin.WriteOptions{Force: force})
			if err != nil {
				return apiErr(err)
			}
			missing := 0
			for _, r := range results {
				if r.Outcome == resource.NotFound {
					missing++
					if ignoreNF {
						continue
					}
				}
				fmt.Fprintf(g.io.Out, "%s %s/%s %s\n", strings.ToLower(r.Kind), r.Namespace, r.Name, r.Outcome)
			}
			if missing > 0 && !ignoreNF {
				return fmt.Errorf("%d resource(s) not found", missing)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (repeatable)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", identity.DefaultNamespace, "namespace")
	cmd.Flags().BoolVar(&ignoreNF, "ignore-not-found", false, "do not fail for resources that do not exist")
	cmd.Flags().BoolVar(&force, "force", false, forceUsage)
	return cmd
}

func newGetCmd(g *globals) *cobra.Command {
	var (
		namespace string
		all       bool
		output    string
		since     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "get (policies|jwtproviders|roles|rolebindings|trafficpolicies|routes|externalservices|alertrules|gateways|secrets|proxies|services|denials|alerts|edges) [NAME]",
		Short: "List resources, or show one",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, ok := config.ResourceKind(args[0])
			if !ok {
				return usagef("unknown resource type %q (known: policies, jwtproviders, roles, rolebindings, trafficpolicies, routes, externalservices, alertrules, gateways, secrets, proxies, services, denials, alerts, edges)", args[0])
			}
			switch output {
			case "table", "json", "yaml":
			default:
				return usagef("-o: want table, json or yaml")
			}
			if all && len(args) == 2 {
				return usagef("-A cannot be used with a NAME")
			}
			if since != 0 && (kind != config.KindDenial && kind != config.KindAlert && kind != config.KindEdge || len(args) == 2 || since < 0) {
				return usagef("--since: a positive duration, for listing denials, alerts or edges only")
			}
			ns := namespace
			if all {
				ns = ""
			} else if err := identity.ValidateName(ns); err != nil {
				return usagef("--namespace: %v", err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			plural := config.ResourcePlural(kind)
			var raw []byte
			if len(args) == 2 {
				one, err := c.Get(cmd.Context(), plural, ns, args[1])
				if err != nil {
					return apiErr(err)
				}
				raw = []byte(`{"apiVersion":"` + config.APIVersion + `","kind":"List","items":[` + string(one) + `]}`)
			} else if kind == config.KindDenial {
				if raw, err = c.Denials(cmd.Context(), ns, since); err != nil {
					return apiErr(err)
				}
			} else if kind == config.KindAlert {
				if raw, err = c.Alerts(cmd.Context(), ns, since); err != nil {
					return apiErr(err)
				}
			} else if kind == config.KindEdge {
				if raw, err = c.Edges(cmd.Context(), ns, since); err != nil {
					return apiErr(err)
				}
			} else if raw, err = c.List(cmd.Context(), plural, ns); err != nil {
				return apiErr(err)
			}
			objs, err := config.UnmarshalList(raw)
			if err != nil {
				return fmt.Errorf("decode answer: %w", err)
			}
			return printObjects(g.io.Out, kind, objs, output, len(args) == 2, all)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", identity.DefaultNamespace, "namespace")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list across all namespaces")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	cmd.Flags().DurationVar(&since, "since", 0, "denials, alerts and edges: only those seen within this duration (such as 15m)")
	return cmd
}

func printObjects(w io.Writer, kind string, objs []config.Object, output string, single, allNS bool) error {
	switch output {
	case "json", "yaml":
		var (
			b   []byte
			err error
		)
		switch {
		case single && output == "json":
			b, err = config.Marshal(objs[0])
			b = append(b, '\n')
		case single:
			b, err = config.MarshalYAML(objs[0])
		default:
			b, err = config.MarshalList(objs, output == "yaml")
			if output == "json" {
				b = append(b, '\n')
			}
		}
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	if len(objs) == 0 {
		fmt.Fprintln(w, "No resources found.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header, row := tableFor(kind)
	if allNS {
		header = append([]string{"NAMESPACE"}, header...)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, o := range objs {
		cells := row(o)
		if allNS {
			cells = append([]string{o.GetMetadata().Namespace}, cells...)
		}
		for i, c := range cells {
			cells[i] = printable(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// printable quotes a table cell that holds anything but printable
// characters: some fields come from workloads, and a terminal must not be
// driven by them (escape sequences, carriage returns, forged rows).
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// tableFor returns the columns of kind's table.
func tableFor(kind string) ([]string, func(config.Object) []string) {
	switch kind {
	case config.KindAuthorizationPolicy:
		return []string{"NAME", "SERVICE", "ACTION", "RULES", "AGE"}, func(o config.Object) []string {
			p := o.(*config.AuthorizationPolicy)
			svc := p.Spec.Selector.Service
			if svc == "" {
				svc = "(all)"
			}
			if len(p.Spec.Selector.Labels) > 0 {
				svc += " " + labelString(p.Spec.Selector.Labels)
			}
			action := string(p.Spec.Action)
			if p.Spec.DryRun {
				action += " (dry run)"
			}
			return []string{p.Metadata.Name, svc, action, strconv.Itoa(len(p.Spec.Rules)), age(p.Metadata.CreationTimestamp)}
		}
	case config.KindProxy:
		return []string{"NAME", "SERVICE", "IDENTITY", "ADDRESS", "LOCALITY", "CONNECTED", "DRAINING", "SVID-SERIAL", "SVID-EXPIRES", "BUNDLE", "SNAPSHOT"}, func(o config.Object) []string {
			p := o.(*config.Proxy)
			addr := p.Status.Address
			if addr == "" {
				addr = "-"
			}
			snap := strconv.FormatInt(p.Status.AckedVersion, 10)
			if p.Status.LastNack != "" {
				snap += " (NACK)"
			}
			serial, bundle := p.Status.SVIDSerial, "-"
			if serial == "" {
				serial = "-"
			}
			if p.Status.BundleVersion > 0 {
				bundle = "v" + strconv.FormatInt(p.Status.BundleVersion, 10)
			}
			locality := p.Status.Locality
			if locality == "" {
				locality = "-"
			}
			return []string{p.Metadata.Name, p.Status.Service, p.Status.Identity, addr, locality, strconv.FormatBool(p.Status.Connected),
				strconv.FormatBool(p.Status.Draining), short(serial), until(p.Status.SVIDExpiry), bundle, snap}
		}
	case config.KindService:
		return []string{"NAME", "READY", "ENDPOINTS", "IDENTITIES"}, func(o config.Object) []string {
			s := o.(*config.Service)
			return []string{s.Metadata.Name, fmt.Sprintf("%d/%d", s.Status.Ready, len(s.Status.Endpoints)),
				join(s.Status.Endpoints), join(s.Status.Identities)}
		}
	case config.KindDenial:
		return []string{"LAST SEEN", "DIRECTION", "SOURCE", "DESTINATION", "METHOD", "PATH", "POLICY", "REASON", "COUNT"}, func(o config.Object) []string {
			d := o.(*config.Denial).Status
			pol := "-"
			if d.Policy != "" {
				pol = d.Policy
				if d.Rule != nil {
					pol += "#rule" + strconv.Itoa(*d.Rule)
				}
			}
			return []string{age(d.LastSeen), d.Direction, d.Source, d.Destination, d.Method, d.Path, pol, d.Reason,
				strconv.FormatInt(d.Count, 10)}
		}
	case config.KindEdge:
		return edgeTable()
	case config.KindAlert:
		return []string{"FIRED", "RULE", "DETECTOR", "SEVERITY", "SUBJECT", "COUNT", "SUMMARY"}, func(o config.Object) []string {
			a := o.(*config.Alert).Status
			return []string{age(a.FiredAt), a.Rule, a.Detector, a.Severity, a.Subject, strconv.FormatInt(a.Count, 10), a.Summary}
		}
	case config.KindAlertRule:
		return []string{"NAME", "DETECTOR", "SEVERITY", "COOLDOWN", "WEBHOOKS", "AGE"}, func(o config.Object) []string {
			r := o.(*config.AlertRule)
			return []string{r.Metadata.Name, r.Spec.Detector, r.Spec.Severity, r.Spec.Cooldown, strconv.Itoa(len(r.Spec.Webhooks)),
				age(r.Metadata.CreationTimestamp)}
		}
	case config.KindRole:
		return []string{"NAME", "RULES", "AGE"}, func(o config.Object) []string {
			r := o.(*config.Role)
			rules := make([]string, len(r.Spec.Rules))
			for i, rl := range r.Spec.Rules {
				rules[i] = strings.Join(rl.Verbs, ",") + " " + strings.Join(rl.Kinds, ",")
			}
			return []string{r.Metadata.Name, strings.Join(rules, "; "), age(r.Metadata.CreationTimestamp)}
		}
	case config.KindRoleBinding:
		return []string{"NAME", "ROLE", "OPERATORS", "AGE"}, func(o config.Object) []string {
			b := o.(*config.RoleBinding)
			return []string{b.Metadata.Name, b.Spec.Role, join(b.Spec.Operators), age(b.Metadata.CreationTimestamp)}
		}
	case config.KindTrafficPolicy:
		return []string{"NAME", "SERVICE", "LB", "TIMEOUT", "RETRIES", "AGE"}, func(o config.Object) []string {
			p := o.(*config.TrafficPolicy)
			lb, timeout, retries := "-", "-", "-"
			if p.Spec.LoadBalancer != nil && p.Spec.LoadBalancer.Policy != "" {
				lb = p.Spec.LoadBalancer.Policy
			}
			if p.Spec.Timeout != "" {
				timeout = p.Spec.Timeout
			}
			if p.Spec.Retries != nil {
				retries = strconv.Itoa(p.Spec.Retries.Attempts)
			}
			return []string{p.Metadata.Name, p.Spec.Service, lb, timeout, retries, age(p.Metadata.CreationTimestamp)}
		}
	case config.KindRoute:
		return []string{"NAME", "SERVICE", "RULES", "SPLIT", "AGE"}, func(o config.Object) []string {
			r := o.(*config.Route)
			split := "-"
			for _, rule := range r.Spec.Rules {
				if len(rule.Backends) > 0 {
					split = splitString(rule.Backends)
					break
				}
			}
			return []string{r.Metadata.Name, r.Spec.Service, strconv.Itoa(len(r.Spec.Rules)), split, age(r.Metadata.CreationTimestamp)}
		}
	case config.KindExternalService:
		return []string{"NAME", "HOSTS", "PORTS", "AGE"}, func(o config.Object) []string {
			e := o.(*config.ExternalService)
			ports := make([]string, len(e.Spec.Ports))
			for i, p := range e.Spec.Ports {
				ports[i] = strconv.Itoa(p.Port) + "/" + p.Protocol
			}
			return []string{e.Metadata.Name, join(e.Spec.Hosts), join(ports), age(e.Metadata.CreationTimestamp)}
		}
	case config.KindGateway:
		return []string{"NAME", "LISTENERS", "ROUTES", "AGE"}, func(o config.Object) []string {
			gw := o.(*config.Gateway)
			ls := make([]string, len(gw.Spec.Listeners))
			for i, l := range gw.Spec.Listeners {
				ls[i] = strings.ToLower(l.Protocol) + ":" + strconv.Itoa(l.Port)
			}
			routes := strconv.Itoa(len(gw.Spec.Routes))
			if n := len(gw.Spec.TLSRoutes); n > 0 {
				routes += "+" + strconv.Itoa(n) + " tls"
			}
			return []string{gw.Metadata.Name, join(ls), routes, age(gw.Metadata.CreationTimestamp)}
		}
	case config.KindSecret:
		// The keys only: a read never carries the values (config.Redact).
		return []string{"NAME", "TYPE", "KEYS", "AGE"}, func(o config.Object) []string {
			s := o.(*config.Secret)
			return []string{s.Metadata.Name, s.Type, join(slices.Sorted(maps.Keys(s.Data))), age(s.Metadata.CreationTimestamp)}
		}
	case config.KindJWTProvider:
		return []string{"NAME", "ISSUER", "JWKS", "REQUIRED", "AGE"}, func(o config.Object) []string {
			j := o.(*config.JWTProvider)
			jwks := j.Spec.JWKSURI
			if jwks == "" {
				jwks = "(inline)"
			}
			return []string{j.Metadata.Name, j.Spec.Issuer, jwks, strconv.FormatBool(j.Spec.Required), age(j.Metadata.CreationTimestamp)}
		}
	}
	return []string{"NAME"}, func(o config.Object) []string { return []string{o.GetMetadata().Name} }
}

// labelString prints labels as "{k=v,k2=v2}" in key order.
func labelString(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return "{" + strings.Join(keys, ",") + "}"
}

func join(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	s = slices.Clone(s)
	return strings.Join(s, ",")
}

func age(ts string) string {
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return "-"
	}
	return human(time.Since(t))
}

func until(ts string) string {
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return "-"
	}
	d := time.Until(t)
	if d < 0 {
		return "expired"
	}
	return "in " + human(d)
}

func human(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func newTokenCmd(g *globals) *cobra.Command {
	token := &cobra.Command{Use: "token", Short: "Manage join tokens"}
	var req admin.TokenRequest
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --service NS/NAME",
		Short: "Create a one-time join token; prints only the token",
		Long: `Create a one-time join token for a workload of the service. The token is bound
to one identity (spiffe://<td>/ns/<ns>/sa/<identity>, the identity defaulting to
the service name), expires after --ttl, and can be used once. Only the token is
printed, so it can be piped into a file for bulwark proxy --token-file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Service == "" {
				return usagef("--service: required (namespace/name)")
			}
			if _, err := identity.ParseServiceRef(req.Service, identity.DefaultNamespace); err != nil {
				return usagef("--service: %v", err)
			}
			if ttl != 0 {
				req.TTL = ttl.String()
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			resp, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return apiErr(err)
			}
			fmt.Fprintln(g.io.Out, resp.Token)
			return nil
		},
	}
	create.Flags().StringVar(&req.Service, "service", "", "service the token is for, namespace/name (required)")
	create.Flags().StringVar(&req.Identity, "identity", "", "identity (service account) name (default: the service name)")
	create.Flags().DurationVar(&ttl, "ttl", 10*time.Minute, "how long the token is valid")
	create.Flags().StringToStringVar(&req.Labels, "label", nil, "label bound to the workload instance, key=value (repeatable); policy selectors match it")
	token.AddCommand(create)
	return token
}
