package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
)

func newRouteCmd(g *globals) *cobra.Command {
	route := &cobra.Command{Use: "route", Short: "Change Routes (traffic splits)"}
	var (
		rule  string
		force bool
	)
	setWeights := &cobra.Command{
		Use:   "set-weights [NAMESPACE/]ROUTE VERSION=WEIGHT...",
		Short: "Set the traffic split of a Route's rule (canary, blue/green)",
		Long: `Set the backends of one rule of a Route: the Route is read from the control
plane, the rule's backends replaced by the VERSION=WEIGHT pairs (in that order), and
the Route applied again with the same checks as bulwark apply: the weights must add
up to 100, and every version must be the "version" label of an instance of the
service (--force applies it anyway). The rule is --rule NAME (a rule without a name
is "rule<index>"), by default the first rule that has backends.

  bulwark route set-weights shop/api-canary v1=90 v2=10`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := identity.ParseServiceRef(args[0], identity.DefaultNamespace)
			if err != nil {
				return usagef("route %q: %v", args[0], err)
			}
			backends, err := parseWeights(args[1:])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			raw, err := c.Get(ctx, config.ResourcePlural(config.KindRoute), ref.Namespace, ref.Name)
			if err != nil {
				return apiErr(err)
			}
			o, err := config.DecodeObject(raw)
			if err != nil {
				return fmt.Errorf("decode route %s: %w", ref, err)
			}
			rt, ok := o.(*config.Route)
			if !ok {
				return fmt.Errorf("decode route %s: got a %s", ref, o.GetTypeMeta().Kind)
			}
			i, err := pickRule(rt, rule)
			if err != nil {
				return err
			}
			rt.Spec.Rules[i].Backends = backends
			rt.Metadata.ResourceVersion, rt.Metadata.CreationTimestamp = "", ""
			doc, err := config.Marshal(rt)
			if err != nil {
				return err
			}
			results, err := c.ApplyWithOptions(ctx, []json.RawMessage{doc}, admin.WriteOptions{Force: force})
			if err != nil {
				return apiErr(err)
			}
			printResults(g.io.Out, results)
			fmt.Fprintf(g.io.Out, "%s rule %s: %s\n", ref, ruleName(rt, i), splitString(backends))
			return nil
		},
	}
	setWeights.Flags().StringVar(&rule, "rule", "", "name of the rule to change (default: the first rule with backends)")
	setWeights.Flags().BoolVar(&force, "force", false, "apply even if an instance of some version is not registered yet (the weights must still add up to 100)")
	route.AddCommand(setWeights)
	return route
}

// parseWeights reads VERSION=WEIGHT arguments.
func parseWeights(args []string) ([]config.Backend, error) {
	var out []config.Backend
	for _, a := range args {
		v, w, ok := strings.Cut(a, "=")
		if !ok || v == "" {
			return nil, usagef("%q: want VERSION=WEIGHT", a)
		}
		n, err := strconv.Atoi(w)
		if err != nil || n < 0 || n > 100 {
			return nil, usagef("%q: the weight must be a whole number from 0 to 100", a)
		}
		if slices.ContainsFunc(out, func(b config.Backend) bool { return b.Version == v }) {
			return nil, usagef("%q: version %s given twice", a, v)
		}
		out = append(out, config.Backend{Version: v, Weight: n})
	}
	return out, nil
}

// ruleName is the name of rule i of rt: its own, or "rule<i>".
func ruleName(rt *config.Route, i int) string {
	if n := rt.Spec.Rules[i].Name; n != "" {
		return n
	}
	return "rule" + strconv.Itoa(i)
}

// pickRule returns the index of the rule named name, or of the first rule
// with backends when name is "".
func pickRule(rt *config.Route, name string) (int, error) {
	var names []string
	for i, r := range rt.Spec.Rules {
		n := ruleName(rt, i)
		names = append(names, n)
		if name == "" && len(r.Backends) > 0 || name != "" && n == name {
			return i, nil
		}
	}
	if name == "" {
		return 0, fmt.Errorf("route %s: no rule has backends: name one with --rule (rules: %s)", config.Ref(rt), strings.Join(names, ", "))
	}
	return 0, fmt.Errorf("route %s: no rule named %q (rules: %s)", config.Ref(rt), name, strings.Join(names, ", "))
}

// splitString prints backends as "v1=90% v2=10%".
func splitString(bs []config.Backend) string {
	parts := make([]string, len(bs))
	for i, b := range bs {
		parts[i] = fmt.Sprintf("%s=%d%%", printable(b.Version), b.Weight)
	}
	return strings.Join(parts, " ")
}

// drainTimeout bounds a call to a proxy's admin endpoint.
const drainTimeout = 10 * time.Second

func newProxyDrainCmd(g *globals) *cobra.Command {
	var (
		addr string
		undo bool
	)
	cmd := &cobra.Command{
		Use:   "drain --admin HOST:PORT",
		Short: "Make a running proxy drain (or resume with --undo)",
		Long: `Make the proxy whose loopback admin listener is --admin drain: the control plane
marks its endpoint draining, so callers send it no new requests (unless no other
endpoint is left), and its /ready answers 503, so load balancers take it out. The
proxy keeps serving what it is sent. --undo makes it take requests again. A proxy
that stops (SIGTERM) drains by itself first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr == "" {
				return usagef("--admin: required (the proxy's admin listener, host:port)")
			}
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return usagef("--admin: %v", err)
			}
			method := http.MethodPost
			if undo {
				method = http.MethodDelete
			}
			st, err := callDrain(cmd.Context(), method, "http://"+addr+"/drain")
			if err != nil {
				return fmt.Errorf("proxy admin %s: %w", addr, err)
			}
			state := "draining"
			if !st.Draining {
				state = "taking requests"
			}
			told := "the control plane was told"
			if !st.ControlPlaneTold {
				told = "the control plane is not reachable now: it is told when the proxy reconnects"
			}
			fmt.Fprintf(g.io.Out, "proxy %s: %s (%s)\n", addr, state, told)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "admin", "", "the proxy's admin listener, loopback host:port (its --admin)")
	cmd.Flags().BoolVar(&undo, "undo", false, "stop draining: take new requests again")
	return cmd
}

// callDrain sends method to a proxy's /drain and decodes its answer.
func callDrain(ctx context.Context, method, url string) (sidecar.DrainStatus, error) {
	var st sidecar.DrainStatus
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: %s", resp.Status, printable(strings.TrimSpace(string(body))))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, errors.New("answer is not a drain status: is --admin a bulwark proxy's admin listener?")
	}
	return st, nil
}
