package cli_test

import (
	"strings"
	"testing"
)

// TestUpFlagErrors: bad --gateway-listen values are usage errors (exit 2)
// before anything starts.
func TestUpFlagErrors(t *testing.T) {
	isolateCredentials(t)
	file := writeFile(t, "mesh.yaml", "kind: Mesh\n")
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no_file", args: []string{"up"}, wantErr: "-f: the mesh file is required"},
		{name: "listen_without_equals", args: []string{"up", "-f", file, "--gateway-listen", "127.0.0.1:9443"}, wantErr: `--gateway-listen "127.0.0.1:9443": want LISTENER=HOST:PORT`},
		{name: "listen_without_name", args: []string{"up", "-f", file, "--gateway-listen", "=127.0.0.1:9443"}, wantErr: "want LISTENER=HOST:PORT"},
		{name: "listen_without_port", args: []string{"up", "-f", file, "--gateway-listen", "https=127.0.0.1"}, wantErr: `--gateway-listen "https=127.0.0.1": address 127.0.0.1: missing port in address`},
		{name: "listen_twice", args: []string{"up", "-f", file, "--gateway-listen", "https=127.0.0.1:1", "--gateway-listen", "https=127.0.0.1:2"}, wantErr: "--gateway-listen https: given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", tt.args...)
			if r.code != 2 {
				t.Errorf("exit code: got %d (stderr %q), want 2", r.code, r.err)
			}
			if !strings.Contains(r.err, tt.wantErr) {
				t.Errorf("stderr: got %q, want it to contain %q", r.err, tt.wantErr)
			}
		})
	}
}
