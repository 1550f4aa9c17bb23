package cli_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/sidecar"
)

const canaryRoute = `apiVersion: bulwark.dev/v1alpha1
kind: Route
metadata: {name: canary, namespace: shop}
spec:
  service: api
  rules:
  - name: testers
    matches: [{headers: [{name: x-canary, present: true}]}]
    backends: [{version: v2, weight: 100}]
  - name: main
    backends: [{version: v1, weight: 100}]
  - name: mirror-free
`

// versionedAPI registers shop/api instances of versions v1 and v2 and
// applies the canary Route.
func versionedAPI(t *testing.T) *controlPlane {
	t.Helper()
	cp := newControlPlane(t)
	for i, v := range []string{"v1", "v2"} {
		rec := registry.Proxy{Instance: "api-" + v, Namespace: "shop", Service: "api", Labels: map[string]string{"version": v},
			Address: "127.0.0.1:" + string(rune('1'+i)) + "000", Connected: true, Live: true}
		if err := cp.registry.UpdateProxy(context.Background(), "shop", rec.Instance, func(p *registry.Proxy) { *p = rec }); err != nil {
			t.Fatal(err)
		}
	}
	cp.runOK(t, "apply", "-f", writeFile(t, "route.yaml", canaryRoute))
	return cp
}

// backends returns the stored backends of each rule of shop/canary.
func (cp *controlPlane) backends(t *testing.T) [][]config.Backend {
	t.Helper()
	r := cp.runOK(t, "get", "routes", "-n", "shop", "canary", "-o", "json")
	o, err := config.DecodeObject([]byte(r.out))
	if err != nil {
		t.Fatalf("decode %s: %v", r.out, err)
	}
	var out [][]config.Backend
	for _, rule := range o.(*config.Route).Spec.Rules {
		out = append(out, rule.Backends)
	}
	return out
}

func TestRouteSetWeights(t *testing.T) {
	unchanged := [][]config.Backend{{{Version: "v2", Weight: 100}}, {{Version: "v1", Weight: 100}}, nil}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
		want     [][]config.Backend
	}{
		{
			name: "first_rule_with_backends", args: []string{"shop/canary", "v1=90", "v2=10"},
			wantOut: "route shop/canary configured\nshop/canary rule testers: v1=90% v2=10%\n",
			want:    [][]config.Backend{{{Version: "v1", Weight: 90}, {Version: "v2", Weight: 10}}, {{Version: "v1", Weight: 100}}, nil},
		},
		{
			name: "named_rule", args: []string{"shop/canary", "--rule", "main", "v2=100", "v1=0"},
			wantOut: "route shop/canary configured\nshop/canary rule main: v2=100% v1=0%\n",
			want:    [][]config.Backend{{{Version: "v2", Weight: 100}}, {{Version: "v2", Weight: 100}, {Version: "v1", Weight: 0}}, nil},
		},
		{
			name: "rule_without_backends_by_index_name", args: []string{"shop/canary", "--rule", "mirror-free", "v1=50", "v2=50"},
			wantOut: "route shop/canary configured\nshop/canary rule mirror-free: v1=50% v2=50%\n",
			want:    [][]config.Backend{{{Version: "v2", Weight: 100}}, {{Version: "v1", Weight: 100}}, {{Version: "v1", Weight: 50}, {Version: "v2", Weight: 50}}},
		},
		{
			name: "weights_not_adding_up", args: []string{"shop/canary", "v1=90", "v2=20"},
			wantCode: 1, wantErr: "spec.rules[0].backends", want: unchanged,
		},
		{
			name: "unknown_version", args: []string{"shop/canary", "v1=90", "v3=10"},
			wantCode: 1, wantErr: `spec.rules[0].backends[1].version: no instance of shop/api has version "v3" (known: v1, v2)`, want: unchanged,
		},
		{
			name: "unknown_rule", args: []string{"shop/canary", "--rule", "nope", "v1=100"},
			wantCode: 1, wantErr: `no rule named "nope" (rules: testers, main, mirror-free)`, want: unchanged,
		},
		{
			name: "unknown_route", args: []string{"shop/nope", "v1=100"},
			wantCode: 1, wantErr: "not found", want: unchanged,
		},
		{
			name: "not_a_pair", args: []string{"shop/canary", "v1"},
			wantCode: 2, wantErr: `"v1": want VERSION=WEIGHT`, want: unchanged,
		},
		{
			name: "weight_not_a_number", args: []string{"shop/canary", "v1=ninety"},
			wantCode: 2, wantErr: "whole number from 0 to 100", want: unchanged,
		},
		{
			name: "version_twice", args: []string{"shop/canary", "v1=50", "v1=50"},
			wantCode: 2, wantErr: "given twice", want: unchanged,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := versionedAPI(t)
			r := run(t, "", append([]string{"--config", cp.credPath, "route", "set-weights"}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit code: got %d (stderr %q), want %d", r.code, r.err, tt.wantCode)
			}
			if tt.wantOut != "" && r.out != tt.wantOut {
				t.Errorf("stdout: got %q, want %q", r.out, tt.wantOut)
			}
			if !strings.Contains(r.err, tt.wantErr) {
				t.Errorf("stderr: got %q, want it to contain %q", r.err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, cp.backends(t)); diff != "" {
				t.Errorf("stored backends (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProxyDrain(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path)
		if r.URL.Path != "/drain" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(sidecar.DrainStatus{Draining: r.Method == http.MethodPost, ControlPlaneTold: true})
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	r := run(t, "", "proxy", "drain", "--admin", addr)
	if r.code != 0 || r.out != "proxy "+addr+": draining (the control plane was told)\n" {
		t.Errorf("drain: got %d %q %q", r.code, r.out, r.err)
	}
	r = run(t, "", "proxy", "drain", "--admin", addr, "--undo")
	if r.code != 0 || r.out != "proxy "+addr+": taking requests (the control plane was told)\n" {
		t.Errorf("drain --undo: got %d %q %q", r.code, r.out, r.err)
	}
	if diff := cmp.Diff([]string{"POST /drain", "DELETE /drain"}, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no_admin", nil, 2, "--admin: required"},
		{"admin_without_port", []string{"--admin", "127.0.0.1"}, 2, "--admin:"},
		{"nothing_listening", []string{"--admin", closedAddr(t)}, 1, "proxy admin"},
		{"not_a_proxy", []string{"--admin", strings.TrimPrefix(notAProxy(t), "http://")}, 1, "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", append([]string{"proxy", "drain"}, tt.args...)...)
			if r.code != tt.wantCode || !strings.Contains(r.err, tt.wantErr) {
				t.Errorf("got %d %q, want %d with %q", r.code, r.err, tt.wantCode, tt.wantErr)
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	return addr
}

func notAProxy(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestProxyLocalityFlag(t *testing.T) {
	r := run(t, "", "proxy", "--service", "default/api", "--token", "bwjt.x", "--locality", "eu/west/a")
	if r.code != 1 || !strings.Contains(r.err, "proxy config: locality:") {
		t.Errorf("got %d %q, want exit 1 naming locality", r.code, r.err)
	}
}

func TestGetTrafficTables(t *testing.T) {
	cp := versionedAPI(t)
	cp.runOK(t, "apply", "-f", writeFile(t, "more.yaml", `apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api-tp, namespace: shop}
spec: {service: api, timeout: 2s, retries: {attempts: 2}}
---
apiVersion: bulwark.dev/v1alpha1
kind: ExternalService
metadata: {name: payments, namespace: shop}
spec:
  hosts: [pay.example.com]
  ports: [{port: 443, protocol: tls}]
`))
	tests := []struct {
		kind string
		want []string
	}{
		{"routes", []string{"NAME", "SPLIT", "canary", "api", "3", "v2=100%"}},
		{"trafficpolicies", []string{"TIMEOUT", "api-tp", "2s", "2"}},
		{"externalservices", []string{"HOSTS", "payments", "pay.example.com", "443/tls"}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			out := cp.runOK(t, "get", tt.kind, "-n", "shop").out
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("table lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
