package e2e_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestCAKeysEncryptedAtRest: the CA keys a control plane writes are never
// in clear on disk; a wrong passphrase or key file stops the control plane
// at start with an error that says what to check, and changes nothing in
// the data dir; the right one starts it with the same CA.
func TestCAKeysEncryptedAtRest(t *testing.T) {
	keyFile := func(t *testing.T) string {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return writeFile(t, "ca.key", base64.StdEncoding.EncodeToString(b)+"\n")
	}
	for _, tc := range []struct {
		name string
		// secrets returns the env and flags of a control plane with the
		// right secret, and a wrong one.
		secrets func(t *testing.T) (right, wrong secretArgs)
		wantErr string
	}{
		{
			name: "passphrase",
			secrets: func(*testing.T) (secretArgs, secretArgs) {
				return secretArgs{env: []string{"BULWARK_CA_KEY_PASSPHRASE=correct horse battery staple"}, secret: "correct horse battery staple"},
					secretArgs{env: []string{"BULWARK_CA_KEY_PASSPHRASE=correct horse battery stable"}, secret: "correct horse battery stable"}
			},
			wantErr: "passphrase",
		},
		{
			name: "key_file",
			secrets: func(t *testing.T) (secretArgs, secretArgs) {
				return secretArgs{flags: []string{"--ca-key-file", keyFile(t)}}, secretArgs{flags: []string{"--ca-key-file", keyFile(t)}}
			},
			wantErr: "key file",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			right, wrong := tc.secrets(t)
			env, flags := right.env, right.flags
			m := startControlEnv(t, env, flags...)
			dataDir := filepath.Join(m.dir, "control")
			// A proxy attests, so that every kind of key is in use.
			m.startProxy("default/api", startApp(t, "api").addr)
			st := m.mustCAStatus()
			m.stopControl()

			keys, err := os.ReadDir(filepath.Join(dataDir, "keys"))
			if err != nil || len(keys) == 0 {
				t.Fatalf("data dir keys/: %d files, %v; want the CA keys there", len(keys), err)
			}
			for _, f := range filesUnder(t, dataDir) {
				if strings.HasPrefix(f, "operator"+string(filepath.Separator)) {
					continue // the operator's own credential, not a CA key
				}
				if why := clearKey(readFile(t, filepath.Join(dataDir, f))); why != "" {
					t.Errorf("%s: %s", f, why)
				}
			}
			if _, err := os.Stat(filepath.Join(dataDir, "ca-key")); err == nil {
				t.Errorf("a ca-key file was created in the data dir although a %s was given", tc.name)
			}
			bundle := readFile(t, filepath.Join(dataDir, "bundle.pem"))
			snapshot := hashTree(t, dataDir)

			code, stderr := runToExit(t, 60*time.Second, wrong.env, m.controlArgs(wrong.flags...)...)
			if code == 0 {
				t.Errorf("control with a wrong %s: exit 0, want non-zero", tc.name)
			}
			if !strings.Contains(strings.ToLower(stderr), tc.wantErr) {
				t.Errorf("control with a wrong %s: stderr %q, want it to mention the %s", tc.name, stderr, tc.wantErr)
			}
			if wrong.secret != "" && strings.Contains(stderr, wrong.secret) {
				t.Errorf("control with a wrong %s: stderr %q shows the secret", tc.name, stderr)
			}
			if right.secret != "" && strings.Contains(m.control.out.String(), right.secret) {
				t.Errorf("the control plane's log shows the %s", tc.name)
			}
			if diff := cmp.Diff(snapshot, hashTree(t, dataDir)); diff != "" {
				t.Errorf("a start with a wrong %s changed the data dir (-before +after):\n%s", tc.name, diff)
			}

			m.control = start(t, "control with the right "+tc.name, env, m.controlArgs(flags...)...)
			m.waitControlReady()
			if got := readFile(t, filepath.Join(dataDir, "bundle.pem")); got != bundle {
				t.Errorf("bundle.pem changed across a restart:\n got %s\nwant %s", got, bundle)
			}
			after := m.mustCAStatus()
			if !slices.Equal(after.rootSerials(), st.rootSerials()) || after.Intermediate.Serial != st.Intermediate.Serial {
				t.Errorf("after a restart: roots %v, intermediate %s; want %v, %s", after.rootSerials(), after.Intermediate.Serial,
					st.rootSerials(), st.Intermediate.Serial)
			}
			// The restarted control plane can sign: a new proxy attests.
			m.startProxy("default/web", startApp(t, "web").addr)
		})
	}
}

// secretArgs are the env and flags that give a control plane its CA key
// secret.
type secretArgs struct {
	env, flags []string
	// secret is the passphrase, which must never be printed.
	secret string
}

// clearKey says why content holds a private key in clear: a PEM block of
// an unencrypted key type, or one whose bytes parse as a private key; ""
// when it holds none.
func clearKey(content string) string {
	for _, marker := range []string{"-----BEGIN PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----"} {
		if strings.Contains(content, marker) {
			return "contains " + marker
		}
	}
	rest := []byte(content)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return ""
		}
		if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			return "PEM block " + block.Type + " is a PKCS#8 private key in clear"
		}
		if _, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
			return "PEM block " + block.Type + " is an EC private key in clear"
		}
	}
}

// runToExit runs bulwark with args and env until it exits by itself and
// returns its exit code and stderr; a test failure (and the process
// killed by its PID) if it runs longer than timeout.
func runToExit(t *testing.T, timeout time.Duration, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("bulwark %s still running after %s\nstdout: %s\nstderr: %s", strings.Join(args, " "), timeout, &stdout, &stderr)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}

// filesUnder lists the regular files under dir, relative to it.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hashTree maps every entry under dir to its mode and, for files, the
// SHA-256 of its content.
func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			v += " " + hex.EncodeToString(sum[:])
		}
		out[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
