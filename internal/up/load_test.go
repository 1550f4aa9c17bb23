package up_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/up"
)

const meshHead = `apiVersion: bulwark.dev/v1alpha1
kind: Mesh
metadata: {name: shop}
spec:
  entry: default/web
  services:
  - name: web
    example: web
`

func TestLoadTrafficFields(t *testing.T) {
	tests := []struct {
		name    string
		svc     string
		wantErr string
	}{
		{name: "valid", svc: "    labels: {version: v2}\n    locality: eu-west/a\n    protocol: http2\n"},
		{name: "bad_label", svc: "    labels: {\"bad key!\": v2}\n", wantErr: "spec.services[1].labels"},
		{name: "bad_locality", svc: "    locality: eu/west/a\n", wantErr: "spec.services[1].locality:"},
		{name: "bad_protocol", svc: "    protocol: udp\n", wantErr: `spec.services[1].protocol: "udp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "mesh.yaml")
			doc := meshHead + "  - name: api\n    example: echo\n" + tt.svc
			if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			mesh, _, err := up.Load(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			api := mesh.Spec.Services[1]
			if diff := cmp.Diff(map[string]string{"version": "v2"}, api.Labels); diff != "" || api.Locality != "eu-west/a" || api.Protocol != "http2" {
				t.Errorf("service: got labels %v locality %q protocol %q", api.Labels, api.Locality, api.Protocol)
			}
		})
	}
}

// TestLoadRouteVersions: a Route of the mesh file may only name versions
// that the file's entries of its service carry (the file is applied before
// any proxy runs, so the control plane's check cannot see them yet).
func TestLoadRouteVersions(t *testing.T) {
	const versions = "  - name: api\n    example: echo\n    labels: {version: v1}\n" +
		"  - name: api\n    example: echo\n    labels: {version: v2}\n"
	route := func(backends string) string {
		return "---\napiVersion: bulwark.dev/v1alpha1\nkind: Route\nmetadata: {name: canary, namespace: default}\n" +
			"spec:\n  service: api\n  rules:\n  - backends: " + backends + "\n"
	}
	tests := []struct {
		name, doc, wantErr string
	}{
		{name: "known", doc: meshHead + versions + route("[{version: v1, weight: 90}, {version: v2, weight: 10}]")},
		{name: "unknown", doc: meshHead + versions + route("[{version: v1, weight: 90}, {version: v3, weight: 10}]"),
			wantErr: `route default/canary: spec.rules[0].backends[1].version: no service default/api of the mesh file has labels.version "v3" (known: v1, v2)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "mesh.yaml")
			if err := os.WriteFile(p, []byte(tt.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := up.Load(p)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
