package cli_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/admin"
	"github.com/bulwarkmesh/bulwark/internal/attest/jointoken"
	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/registry"
	"github.com/bulwarkmesh/bulwark/internal/resource"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// denialsFixture is what the admin API of TestGetDenials serves.
func denialsFixture(now time.Time) []*config.Denial {
	rule := 0
	mk := func(ns, name, direction, dest, method, path, policy string, rule *int, reason string, count int64, ago time.Duration) *config.Denial {
		return &config.Denial{
			TypeMeta: config.TypeMeta{APIVersion: config.APIVersion, Kind: config.KindDenial},
			Metadata: config.ObjectMeta{Name: name, Namespace: ns},
			Status: config.DenialStatus{Direction: direction, Source: "spiffe://bulwark.test/ns/shop/sa/web", Destination: dest,
				Method: method, Path: path, Policy: policy, Rule: rule, Reason: reason, HTTPStatus: 403, Count: count,
				FirstSeen: now.Add(-ago - time.Minute).Format(time.RFC3339Nano), LastSeen: now.Add(-ago).Format(time.RFC3339Nano)},
		}
	}
	return []*config.Denial{
		mk("default", "d-000000000001", "inbound", "default/api", "DELETE", "/admin/users", "default/deny-admin", &rule, "denied by policy", 12, 10*time.Minute+30*time.Second),
		mk("default", "d-000000000002", "outbound", "default/api", "GET", "/internal", "", nil, "no ALLOW rule matched", 3, 2*time.Hour+30*time.Minute),
		mk("team-b", "d-000000000003", "outbound", "team-b/db", "GET", "/\x1b[2Jforged", "", nil, "no ALLOW rule matched", 1, 72*time.Hour+30*time.Minute),
	}
}

// TestGetDenials: `bulwark get denials` prints the table of the denials of
// a namespace (or all), passes --since, and prints Denial objects with -o.
func TestGetDenials(t *testing.T) {
	now := time.Now()
	var gotWithin []time.Duration
	source := func(include func(string) bool, within time.Duration) []*config.Denial {
		gotWithin = append(gotWithin, within)
		var out []*config.Denial
		for _, d := range denialsFixture(now) {
			if include == nil || include(d.Metadata.Namespace) {
				out = append(out, d)
			}
		}
		return out
	}
	credPath := denialsAdmin(t, source)
	get := func(t *testing.T, args ...string) result {
		t.Helper()
		r := run(t, "", append([]string{"--config", credPath, "get"}, args...)...)
		if r.code != 0 {
			t.Fatalf("get %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.err)
		}
		return r
	}

	t.Run("table", func(t *testing.T) {
		// The ages are far from a unit's boundary: no timing.
		out := get(t, "denials").out
		want := "LAST SEEN  DIRECTION  SOURCE                                DESTINATION  METHOD  PATH          POLICY                    REASON                 COUNT\n" +
			"10m        inbound    spiffe://bulwark.test/ns/shop/sa/web  default/api  DELETE  /admin/users  default/deny-admin#rule0  denied by policy       12\n" +
			"2h         outbound   spiffe://bulwark.test/ns/shop/sa/web  default/api  GET     /internal     -                         no ALLOW rule matched  3\n"
		if out != want {
			t.Errorf("got\n%s\nwant\n%s", out, want)
		}
	})
	t.Run("all_namespaces_quotes_control_characters", func(t *testing.T) {
		out := get(t, "denials", "-A").out
		if !strings.HasPrefix(out, "NAMESPACE  LAST SEEN") || !strings.Contains(out, `"/\x1b[2Jforged"`) || strings.Contains(out, "\x1b") {
			t.Errorf("got\n%q\nwant a NAMESPACE column and the escape sequence quoted", out)
		}
	})
	t.Run("since", func(t *testing.T) {
		gotWithin = nil
		get(t, "denials", "--since", "15m")
		if len(gotWithin) != 1 || gotWithin[0] != 15*time.Minute {
			t.Errorf("the server got since %v, want [15m]", gotWithin)
		}
	})
	t.Run("json", func(t *testing.T) {
		objs, err := config.UnmarshalList([]byte(get(t, "denials", "-n", "team-b", "-o", "json").out))
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 1 || objs[0].(*config.Denial).Status.Destination != "team-b/db" {
			t.Errorf("got %v, want the one denial of team-b", objs)
		}
	})
	t.Run("yaml", func(t *testing.T) {
		out := get(t, "denials", "-o", "yaml").out
		for _, want := range []string{"kind: List", "kind: Denial", "httpStatus: 403", "rule: 0"} {
			if !strings.Contains(out, want) {
				t.Errorf("got\n%s\nwant it to contain %q", out, want)
			}
		}
	})
	t.Run("one_by_name", func(t *testing.T) {
		objs, err := config.UnmarshalList([]byte(`{"apiVersion":"bulwark.dev/v1alpha1","kind":"List","items":[` + get(t, "denial", "d-000000000002", "-o", "json").out + `]}`))
		if err != nil || len(objs) != 1 || objs[0].(*config.Denial).Status.Path != "/internal" {
			t.Errorf("got %v, %v, want the denial of /internal", objs, err)
		}
	})
	t.Run("since_only_for_denials", func(t *testing.T) {
		r := run(t, "", "--config", credPath, "get", "policies", "--since", "5m")
		if r.code == 0 || !strings.Contains(r.err, "--since") {
			t.Errorf("get policies --since: got exit %d, stderr %q, want a usage error naming --since", r.code, r.err)
		}
	})
}

// denialsAdmin serves a real admin API whose denials come from source, and
// returns the built-in admin's credential file for it.
func denialsAdmin(t *testing.T, source admin.DenialSource) string {
	return viewsAdmin(t, func(c *admin.Config) { c.Denials = source })
}

// viewsAdmin serves a real admin API whose views (denials, edges,
// alerts) set configures, and returns the built-in admin's credential file
// for it.
func viewsAdmin(t *testing.T, set func(*admin.Config)) string {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg, err := registry.New(registry.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := jointoken.New(jointoken.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	op, err := ca.NewOperatorCA(context.Background(), ca.Config{TrustDomain: td, Store: st, Keys: keymanager.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := admin.Config{Resources: resource.New(st, nil), Registry: reg, Tokens: tokens, TrustDomain: td.Name()}
	set(&cfg)
	handler, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serverKey := newKey(t)
	leaf, err := op.SignServer(&serverKey.PublicKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	serving := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: serverKey, Leaf: leaf}
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = mtls.AdminServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serving, nil }, admin.OperatorRoots(op.Root()))
	// Without SNI crypto/tls serves Certificates[0]; httptest puts its own
	// there.
	srv.TLS.Certificates = []tls.Certificate{serving}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	key := newKey(t)
	cert, err := op.SignClient(&key.PublicKey, "admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cred := &admin.Credential{
		APIVersion: config.APIVersion, Kind: admin.CredentialKind, Operator: "admin", Server: srv.URL,
		CA: pemCert(op.Root()), Certificate: pemCert(cert),
		Key: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	}
	p := filepath.Join(t.TempDir(), "admin.yaml")
	if err := cred.Write(p); err != nil {
		t.Fatal(err)
	}
	return p
}
