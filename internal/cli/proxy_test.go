package cli_test

import (
	"strings"
	"testing"
)

// TestProxyFlagErrors: the proxy's metrics and Workload API flags are
// checked before anything starts.
func TestProxyFlagErrors(t *testing.T) {
	base := []string{"proxy", "--service", "default/api", "--token", "bwjt.x"}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "workload_uid_without_api", args: []string{"--workload-uid", "1000"}, wantCode: 2, wantErr: "--workload-uid and --workload-gid: only with --workload-api"},
		{name: "workload_gid_without_api", args: []string{"--workload-gid", "1000"}, wantCode: 2, wantErr: "only with --workload-api"},
		{name: "workload_uid_not_a_number", args: []string{"--workload-api", "unix:///tmp/w.sock", "--workload-uid", "me"}, wantCode: 2, wantErr: "--workload-uid"},
		{name: "workload_api_not_unix", args: []string{"--workload-api", "tcp://127.0.0.1:1"}, wantCode: 1, wantErr: "proxy config: workload-api:"},
		{name: "workload_api_relative", args: []string{"--workload-api", "unix://run/w.sock"}, wantCode: 1, wantErr: "proxy config: workload-api:"},
		{name: "workload_uid_below_minus_one", args: []string{"--workload-api", "unix:///tmp/w.sock", "--workload-uid", "-2"}, wantCode: 1, wantErr: "proxy config: workload-uid:"},
		{name: "metrics_without_port", args: []string{"--metrics", "127.0.0.1"}, wantCode: 1, wantErr: "proxy config: metrics:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", append(append([]string(nil), base...), tt.args...)...)
			if r.code != tt.wantCode {
				t.Errorf("exit code: got %d (stderr %q), want %d", r.code, r.err, tt.wantCode)
			}
			if !strings.HasPrefix(r.err, "bulwark: ") || !strings.Contains(r.err, tt.wantErr) {
				t.Errorf("stderr: got %q, want \"bulwark: ...\" containing %q", r.err, tt.wantErr)
			}
		})
	}
}
