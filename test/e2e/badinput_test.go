package e2e_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInput: each bad input gets a clear error naming what is wrong, no
// crash, and changes nothing.
func TestBadInput(t *testing.T) {
	m := startControl(t)

	valid := `apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ok, namespace: default}
spec:
  selector: {service: api}
  rules:
  - to: {methods: ["GET"]}
`
	cases := []struct {
		name string
		file string
		want []string
	}{
		{
			name: "malformed_yaml",
			file: "apiVersion: bulwark.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x\n",
			want: []string{"document 1"},
		},
		{
			name: "unknown_kind",
			file: "apiVersion: bulwark.dev/v1alpha1\nkind: Frobnicator\nmetadata: {name: x}\n",
			want: []string{"kind", `"Frobnicator"`},
		},
		{
			name: "unknown_field_names_its_path",
			file: strings.Replace(valid, "methods:", "methodz:", 1),
			want: []string{"spec.rules[0].to.methodz", "unknown field"},
		},
		{
			name: "bad_value_names_its_path",
			file: strings.Replace(valid, `["GET"]`, `["GET", "get"]`, 1),
			want: []string{"spec.rules[0].to.methods[1]"},
		},
		{
			name: "wrong_api_version",
			file: strings.Replace(valid, "bulwark.dev/v1alpha1", "bulwark.dev/v9", 1),
			want: []string{"apiVersion"},
		},
		{
			// The first document is valid, the second is not: nothing
			// from the file may be applied.
			name: "second_document_invalid_applies_nothing",
			file: valid + "---\n" + strings.Replace(strings.Replace(valid, "name: ok", "name: ok2", 1), "action", "actoin", 1) +
				"---\n" + strings.Replace(valid, "selector: {service: api}", "selector: {service: API}", 1),
			want: []string{"document 3", "spec.selector.service"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := cli(t, m.env, "", "apply", "-f", writeFile(t, "bad.yaml", tc.file))
			if code == 0 {
				t.Fatalf("apply exited 0 (%s), want an error", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error %q does not mention %q", errOut, w)
				}
			}
			if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine") {
				t.Errorf("crash output: %s", errOut)
			}
		})
	}
	if out := mustCLI(t, m.env, "get", "policies", "-A", "-o", "json"); strings.Contains(out, `"name":"ok"`) {
		t.Errorf("a failed apply changed the mesh: %s", out)
	}

	t.Run("empty_input", func(t *testing.T) {
		out, errOut, code := cli(t, m.env, "", "apply", "-f", "-")
		if code == 0 {
			t.Fatalf("apply of empty stdin exited 0 (%s)", out)
		}
		if !strings.Contains(errOut, "no resources") {
			t.Errorf("got %q, want it to say there are no resources", errOut)
		}
	})

	t.Run("get_unknown_type", func(t *testing.T) {
		_, errOut, code := cli(t, m.env, "", "get", "gizmos")
		if code != 2 || !strings.Contains(errOut, `unknown resource type "gizmos"`) {
			t.Errorf("got exit %d %q, want usage error naming the type", code, errOut)
		}
	})

	t.Run("proxy_with_wrong_token", func(t *testing.T) {
		p := start(t, "proxy wrong token", nil, "proxy", "--control", m.grpc,
			"--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"),
			"--token", "bwjt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "--service", "default/api")
		if code := p.wait(t, 20*time.Second); code == 0 {
			t.Fatal("proxy with a wrong token exited 0")
		}
		if out := p.out.String(); !strings.Contains(out, "join token rejected") || strings.Contains(out, "panic") {
			t.Errorf("output %q: want a clear 'join token rejected', no crash", out)
		}
	})

	t.Run("proxy_with_malformed_token", func(t *testing.T) {
		p := start(t, "proxy malformed token", nil, "proxy", "--control", m.grpc,
			"--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"), "--token", "hello", "--service", "default/api")
		if code := p.wait(t, 20*time.Second); code == 0 {
			t.Fatal("proxy with a malformed token exited 0")
		}
		if out := p.out.String(); !strings.Contains(out, "malformed join token") {
			t.Errorf("output %q: want it to say the token is malformed", out)
		}
	})

	t.Run("token_for_another_service", func(t *testing.T) {
		tok := m.token("default/web")
		p := start(t, "proxy token for web", nil, "proxy", "--control", m.grpc,
			"--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"), "--token-file", tok, "--service", "default/payments")
		if code := p.wait(t, 20*time.Second); code == 0 {
			t.Fatal("a proxy for payments with web's token exited 0")
		}
		// The token was not consumed by the failed attempt.
		p2 := start(t, "proxy web", nil, "proxy", "--control", m.grpc,
			"--ca-bundle", filepath.Join(m.dir, "control", "bundle.pem"), "--token-file", tok, "--service", "default/web")
		eventually(t, 15*time.Second, "web attests with its own token", func() error {
			if !strings.Contains(p2.out.String(), `"msg":"attested"`) {
				return errors.New("not attested")
			}
			return nil
		})
	})

	t.Run("proxy_with_wrong_ca_bundle", func(t *testing.T) {
		other := startControl(t)
		tok := m.token("default/api")
		p := start(t, "proxy wrong bundle", nil, "proxy", "--control", m.grpc,
			"--ca-bundle", filepath.Join(other.dir, "control", "bundle.pem"), "--token-file", tok, "--service", "default/api")
		eventually(t, 15*time.Second, "proxy reports it cannot authenticate the control plane", func() error {
			if !strings.Contains(p.out.String(), "control plane unreachable, retrying attestation") {
				return errors.New("no retry log line yet")
			}
			return nil
		})
		if p.hasExited() {
			t.Fatalf("proxy exited: %v", p.err)
		}
	})
}

// TestControlPlaneNotRunning: a proxy retries with capped backoff and a
// clear log line, and the CLI says what is wrong.
func TestControlPlaneNotRunning(t *testing.T) {
	dead := freeAddr(t)
	p := start(t, "proxy no control plane", nil, "proxy", "--control", dead, "--token", "bwjt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"--service", "default/api")
	eventually(t, 15*time.Second, "two retries logged", func() error {
		if n := strings.Count(p.out.String(), "control plane unreachable, retrying attestation"); n < 2 {
			return errors.New("fewer than two retry lines")
		}
		return nil
	})
	if p.hasExited() {
		t.Fatalf("proxy exited while the control plane is down: %v", p.err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(p.out.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "control plane unreachable, retrying attestation" {
			lines = append(lines, m)
		}
	}
	if len(lines) >= 2 && lines[0]["backoff"] == lines[1]["backoff"] {
		t.Errorf("backoff did not grow: %v then %v", lines[0]["backoff"], lines[1]["backoff"])
	}

	// The CLI with a valid credential whose control plane is gone.
	m := startControl(t)
	m.control.stop()
	_, errOut, code := cli(t, m.env, "", "get", "proxies")
	if code == 0 || !strings.Contains(errOut, "cannot reach the control plane") {
		t.Errorf("got exit %d %q, want it to say the control plane cannot be reached", code, errOut)
	}
}
