package control_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/bulwarkmesh/bulwark/internal/config"
	"github.com/bulwarkmesh/bulwark/internal/control"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/push"
)

// tlsPair returns a self-signed certificate for host and its key, PEM.
func tlsPair(t testing.TB, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// mustJSON marshals v.
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// secretJSON is a kubernetes.io/tls Secret (encoding/json writes []byte as
// base64, as the Secret's data is).
func secretJSON(ns, name string, certPEM, keyPEM []byte) string {
	return mustJSON(map[string]any{
		"apiVersion": config.APIVersion, "kind": config.KindSecret,
		"metadata": map[string]any{"name": name, "namespace": ns},
		"type":     config.SecretTypeTLS,
		"data":     map[string][]byte{config.SecretKeyTLSCert: certPEM, config.SecretKeyTLSKey: keyPEM},
	})
}

// gatewayJSON is a Gateway ns/name with one HTTPS listener whose
// certificates are the Secrets named, and one route to cart with the JWT
// providers named.
func gatewayJSON(ns, name string, secrets, providers []string) string {
	var certs []any
	for _, s := range secrets {
		certs = append(certs, map[string]any{"secret": s})
	}
	route := map[string]any{"name": "cart", "service": "cart"}
	if len(providers) > 0 {
		route["jwt"] = map[string]any{"providers": providers}
	}
	return mustJSON(map[string]any{
		"apiVersion": config.APIVersion, "kind": config.KindGateway,
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"listeners": []any{map[string]any{"name": "https", "port": 8443, "protocol": "HTTPS", "tls": map[string]any{"certificates": certs}}},
			"routes":    []any{route},
		},
	})
}

// providerJSON is a JWTProvider ns/name with inline keys.
func providerJSON(t testing.TB, ns, name string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	jwks := mustJSON(map[string]any{"keys": []any{map[string]any{
		"kty": "EC", "crv": "P-256", "kid": name, "alg": "ES256", "use": "sig", "x": enc(pt[1:33]), "y": enc(pt[33:]),
	}}})
	return mustJSON(map[string]any{
		"apiVersion": config.APIVersion, "kind": config.KindJWTProvider,
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"issuer": "https://" + name + ".example", "jwks": jwks},
	})
}

// applyJSON applies JSON documents to the fixture's store, validated.
func (f *stateFixture) applyJSON(t testing.TB, docs ...string) {
	t.Helper()
	var objs []config.Object
	for _, d := range docs {
		o, err := config.DecodeObject([]byte(d))
		if err != nil {
			t.Fatalf("bad fixture: %v", err)
		}
		objs = append(objs, o)
	}
	if _, err := f.resources.Apply(context.Background(), objs); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// TestRebuildGatewayState: the state carries the Gateways (without their
// resource version), the gateways' SPIFFE IDs, and the Secrets with their
// data; a rotation of a Secret installs a new state, an identical apply
// does not; a Gateway naming what does not exist is noted.
func TestRebuildGatewayState(t *testing.T) {
	f := newStateFixture(t, nil)
	certPEM, keyPEM := tlsPair(t, "shop.example.com")
	f.applyJSON(t,
		gatewayJSON("shop", "edge", []string{"web-tls", "gone"}, []string{"idp", "nope"}),
		gatewayJSON("default", "edge", []string{"web-tls"}, nil),
		secretJSON("shop", "web-tls", certPEM, keyPEM),
		secretJSON("shop", "unused", certPEM, keyPEM),
		providerJSON(t, "shop", "idp"),
	)
	f.rebuild(t)
	st := f.hub.State()
	if diff := cmp.Diff([]string{"spiffe://bulwark.test/ns/default/sa/edge", "spiffe://bulwark.test/ns/shop/sa/edge"}, st.GatewayIDs); diff != "" {
		t.Errorf("gateway ids (-want +got):\n%s", diff)
	}
	if len(st.Gateways) != 2 {
		t.Fatalf("got %d gateways, want 2", len(st.Gateways))
	}
	for _, g := range st.Gateways {
		if bytes.Contains(g.JSON, []byte("resourceVersion")) {
			t.Errorf("gateway document has a resource version: %s", g.JSON)
		}
	}
	// Only the Secrets a Gateway names (of its namespace) are in the state.
	if diff := cmp.Diff([]string{"shop/web-tls"}, slices.Sorted(maps.Keys(st.Secrets))); diff != "" {
		t.Errorf("state secrets (-want +got):\n%s", diff)
	}
	sec := st.Secrets["shop/web-tls"]
	if sec == nil || !bytes.Equal(sec.Data[config.SecretKeyTLSKey], keyPEM) {
		t.Fatalf("state secret shop/web-tls: got %v, want its data opened", sec)
	}
	notes := control.GatewayNotes(st)
	// default/edge names web-tls, which is shop's: not its own.
	want := []string{"default/edge: gateway names a missing secret: web-tls", "shop/edge: gateway names a missing jwt provider: nope", "shop/edge: gateway names a missing secret: gone"}
	slices.Sort(notes)
	if diff := cmp.Diff(want, notes); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}

	// The gateway's snapshot.
	snap, err := push.Compile(st, push.Node{ID: "spiffe://bulwark.test/ns/shop/sa/edge", Service: mustService(t, "shop/edge")})
	if err != nil {
		t.Fatal(err)
	}
	g := snap.GetGateway()
	if len(g.GetSecrets()) != 1 || g.GetSecrets()[0].GetName() != "web-tls" || !bytes.Equal(g.GetSecrets()[0].GetKeyPem(), keyPEM) || len(g.GetJwtProviders()) != 1 {
		t.Errorf("gateway section: got %d secrets and %d providers, want web-tls with its key and idp", len(g.GetSecrets()), len(g.GetJwtProviders()))
	}

	// An identical apply installs no new state; a rotation does.
	f.applyJSON(t, secretJSON("shop", "web-tls", certPEM, keyPEM))
	f.rebuild(t)
	if f.hub.State() != st {
		t.Errorf("an identical apply of a Secret installed a new state")
	}
	cert2, key2 := tlsPair(t, "shop.example.com")
	f.applyJSON(t, secretJSON("shop", "web-tls", cert2, key2))
	f.rebuild(t)
	after := f.hub.State()
	if after == st || !bytes.Equal(after.Secrets["shop/web-tls"].Data[config.SecretKeyTLSKey], key2) {
		t.Errorf("a rotated Secret did not install a new state with the new key")
	}
	// The inputs hash is no digest of the key: it does not change with
	// the data alone.
	clone := *after
	clone.Secrets = map[string]*config.Secret{}
	for k, v := range after.Secrets {
		c := *v
		c.Data = map[string][]byte{config.SecretKeyTLSKey: []byte("guess")}
		clone.Secrets[k] = &c
	}
	if control.InputsHash(&clone) != control.InputsHash(after) {
		t.Errorf("the inputs hash depends on the data of Secrets, want only their revision")
	}
}

func mustService(t testing.TB, s string) identity.ServiceRef {
	t.Helper()
	ref, err := identity.ParseServiceRef(s, "")
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestGatewayThroughAdminAPI applies a Gateway, a Secret and a
// JWTProvider through the admin API of a running control plane; the
// gateway's stream gets them, a sidecar's gets none of it (but the
// gateway's identity), the admin API shows the Secret redacted, and the
// store file holds no byte of the key.
func TestGatewayThroughAdminAPI(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	certPEM, keyPEM := tlsPair(t, "shop.example.com")
	got := p.apply(t,
		secretJSON("shop", "web-tls", certPEM, keyPEM),
		providerJSON(t, "shop", "idp"),
		gatewayJSON("shop", "edge", []string{"web-tls"}, []string{"idp"}),
	)
	if !slices.Equal(got, []string{"created", "created", "created"}) {
		t.Fatalf("apply: got %v, want three created", got)
	}
	if got := p.apply(t, secretJSON("shop", "web-tls", certPEM, keyPEM)); !slices.Equal(got, []string{"unchanged"}) {
		t.Errorf("re-apply of the Secret: got %v, want [unchanged]", got)
	}

	// The gateway: a client-only proxy of shop/edge.
	gw := p.attest(t, "shop/edge", "")
	gs := subscribe(t, gw.client, nodeMsg(gw.node("")))
	snap := gs.recv(t)
	for snap.GetGateway() == nil || len(snap.GetGateway().GetSecrets()) == 0 {
		gs.send(t, ackMsg(snap.GetVersion(), ""))
		snap = gs.recv(t)
	}
	g := snap.GetGateway()
	o, err := config.DecodeObject(g.GetResource())
	if err != nil || config.Ref(o) != "shop/edge" {
		t.Errorf("gateway resource: got %v (%v), want shop/edge", o, err)
	}
	if len(g.GetSecrets()) != 1 {
		t.Fatalf("got %d secrets, want 1", len(g.GetSecrets()))
	}
	if s := g.GetSecrets()[0]; s.GetName() != "web-tls" || !bytes.Equal(s.GetCertPem(), certPEM) || !bytes.Equal(s.GetKeyPem(), keyPEM) {
		t.Errorf("secret: got %q, want web-tls with the applied certificate and key", s.GetName())
	}
	if len(g.GetJwtProviders()) != 1 || len(g.GetJwtProviders()[0].GetJwks()) == 0 {
		t.Errorf("jwt providers: got %d, want idp with its keys", len(g.GetJwtProviders()))
	}
	gwID := "spiffe://bulwark.test/ns/shop/sa/edge"
	if diff := cmp.Diff([]string{gwID}, snap.GetInbound().GetGateways()); diff != "" {
		t.Errorf("gateway's inbound gateways (-want +got):\n%s", diff)
	}

	// A sidecar of the same namespace: the gateway's identity, no secret.
	cart := p.attest(t, "shop/cart", "")
	cs := subscribe(t, cart.client, nodeMsg(cart.node(cart.listen(t, p.mesh))))
	csnap := cs.recv(t)
	if csnap.GetGateway() != nil {
		t.Errorf("a sidecar's snapshot has a gateway section")
	}
	if diff := cmp.Diff([]string{gwID}, csnap.GetInbound().GetGateways()); diff != "" {
		t.Errorf("sidecar's inbound gateways (-want +got):\n%s", diff)
	}
	b, err := proto.Marshal(csnap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, keyPEM) || bytes.Contains(b, certPEM) {
		t.Errorf("a sidecar's snapshot holds the Secret's data")
	}

	// The admin API: get and list show the keys without their values.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	one, err := p.admin.Get(ctx, "secrets", "shop", "web-tls")
	if err != nil {
		t.Fatal(err)
	}
	all, err := p.admin.List(ctx, "secrets", "")
	if err != nil {
		t.Fatal(err)
	}
	for what, body := range map[string][]byte{"get": one, "list": all} {
		if bytes.Contains(body, []byte(base64.StdEncoding.EncodeToString(keyPEM))) || bytes.Contains(body, []byte("PRIVATE KEY")) ||
			bytes.Contains(body, []byte(base64.StdEncoding.EncodeToString(certPEM))) {
			t.Errorf("%s shows the Secret's data: %s", what, body)
		}
		if !bytes.Contains(body, []byte(`"tls.key":""`)) {
			t.Errorf("%s does not show the data's keys redacted: %s", what, body)
		}
	}
	// The audit log names the Secret's writes and carries none of it.
	entries, err := p.admin.AuditEntries(ctx, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	raw := mustJSON(entries)
	if !strings.Contains(raw, `"web-tls"`) {
		t.Errorf("the audit log does not name the Secret's write: %s", raw)
	}
	if strings.Contains(raw, base64.StdEncoding.EncodeToString(keyPEM)) || strings.Contains(raw, "PRIVATE KEY") {
		t.Errorf("the audit log holds the Secret's data")
	}

	gs.end(t)
	cs.end(t)
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(filepath.Join(p.dataDir, "bulwark.db"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	for form, b := range map[string][]byte{
		"PEM": keyPEM, "base64": []byte(base64.StdEncoding.EncodeToString(keyPEM)), "DER": block.Bytes,
		"base64 of DER": []byte(base64.StdEncoding.EncodeToString(block.Bytes)),
	} {
		if bytes.Contains(db, b) {
			t.Errorf("the store file holds the key (%s)", form)
		}
	}
	if strings.Contains(string(db), "PRIVATE KEY") {
		t.Errorf("the store file holds a PEM private key")
	}
}
