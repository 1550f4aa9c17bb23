package cli_test

import (
	"strings"
	"testing"
)

// TestGatewayFlagErrors: the gateway's flags are checked before anything
// starts.
func TestGatewayFlagErrors(t *testing.T) {
	base := []string{"gateway", "--token", "bwjt.x"}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "gateway_missing", args: nil, wantCode: 2, wantErr: "--gateway: required"},
		{name: "gateway_bad", args: []string{"--gateway", "a/b/c"}, wantCode: 2, wantErr: "--gateway:"},
		{name: "address_not_ip", args: []string{"--gateway", "default/edge", "--address", "example.com"}, wantCode: 2, wantErr: "--address"},
		{name: "listen_without_name", args: []string{"--gateway", "default/edge", "--listen", "127.0.0.1:0"}, wantCode: 2, wantErr: "want NAME=HOST:PORT"},
		{name: "listen_without_port", args: []string{"--gateway", "default/edge", "--listen", "https=127.0.0.1"}, wantCode: 2, wantErr: "--listen"},
		{name: "listen_twice", args: []string{"--gateway", "default/edge", "--listen", "https=:1", "--listen", "https=:2"}, wantCode: 2, wantErr: "given twice"},
		{name: "listen_bad_name", args: []string{"--gateway", "default/edge", "--listen", "HTTPS=:1"}, wantCode: 1, wantErr: "gateway config: listen HTTPS"},
		{name: "poll_zero", args: []string{"--gateway", "default/edge", "--cert-poll-interval", "0s"}, wantCode: 2, wantErr: "--cert-poll-interval"},
		{name: "token_and_file", args: []string{"--gateway", "default/edge", "--token-file", "/nonexistent"}, wantCode: 2, wantErr: "--token and --token-file"},
		{name: "access_log_empty", args: []string{"--gateway", "default/edge", "--access-log", ""}, wantCode: 2, wantErr: "--access-log"},
		{name: "log_header_bad", args: []string{"--gateway", "default/edge", "--log-header", "a b"}, wantCode: 2, wantErr: "--log-header"},
		{name: "metrics_without_port", args: []string{"--gateway", "default/edge", "--metrics", "127.0.0.1"}, wantCode: 1, wantErr: "config: metrics:"},
		{name: "admin_not_loopback", args: []string{"--gateway", "default/edge", "--admin", "0.0.0.0:0"}, wantCode: 1, wantErr: "config: admin:"},
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
