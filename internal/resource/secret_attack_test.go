package resource_test

// Attacks on Secrets at rest and in errors, from a review of the ingress
// gateway. Tests whose name ends in "Holds" pin leaks that do not happen;
// the others reproduce defects and fail until the defect is fixed.

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// TestAttackSecretErrorsNeverEchoKeyHolds: a Secret refused (by decoding,
// validation or the store) has errors that name the field, never the key
// material, in any encoding: operators paste these errors into tickets.
func TestAttackSecretErrorsNeverEchoKeyHolds(t *testing.T) {
	certPEM, keyPEM := tlsPair(t, "shop.example.com")
	_, otherKey := tlsPair(t, "shop.example.com")
	b64 := base64.StdEncoding.EncodeToString
	keyLine := strings.Split(string(keyPEM), "\n")[1] // a line of the key's body
	docs := map[string]string{
		"key_of_another_cert": secretDoc("shop", "tls", certPEM, otherKey),
		"key_in_cert_field":   secretDoc("shop", "tls", keyPEM, keyPEM),
		"cert_in_key_field":   secretDoc("shop", "tls", certPEM, append(append([]byte{}, certPEM...), keyPEM...)),
		"truncated_key":       secretDoc("shop", "tls", certPEM, keyPEM[:len(keyPEM)/2]),
		"unknown_data_key": `apiVersion: bulwark.dev/v1alpha1
kind: Secret
metadata: {name: tls, namespace: shop}
type: kubernetes.io/tls
data: {tls.crt: ` + b64(certPEM) + `, tls.key: ` + b64(keyPEM) + `, password: ` + b64([]byte(keyLine)) + `}
`,
		"string_data_not_base64": `apiVersion: bulwark.dev/v1alpha1
kind: Secret
metadata: {name: tls, namespace: shop}
type: kubernetes.io/tls
data: {tls.crt: "` + b64(certPEM) + `", tls.key: "!` + keyLine + `"}
`,
		"bad_yaml_around_key": "apiVersion: bulwark.dev/v1alpha1\nkind: Secret\nmetadata: {name: tls, namespace: shop}\ntype: kubernetes.io/tls\nstringData:\n  tls.key: " + keyLine + "\n   tls.crt: : x\n",
		"wrong_type": `apiVersion: bulwark.dev/v1alpha1
kind: Secret
metadata: {name: tls, namespace: shop}
type: Opaque
stringData: {tls.key: "` + keyLine + `"}
`,
	}
	leaks := func(msg string) []string {
		var found []string
		for what, m := range map[string][]byte{"key": keyPEM, "other key": otherKey} {
			for form, b := range forms(m) {
				if len(b) >= 16 && strings.Contains(msg, string(b[:min(len(b), 40)])) {
					found = append(found, what+" ("+form+")")
				}
			}
		}
		if strings.Contains(msg, keyLine[:24]) {
			found = append(found, "a line of the key")
		}
		return found
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			objs, err := config.Decode([]byte(doc))
			if err != nil {
				if l := leaks(err.Error()); len(l) > 0 {
					t.Errorf("decode error %q holds %v", err, l)
				}
				t.Logf("refused: %v", err)
				return
			}
			// Decoded: the store refuses it, or it is valid after all.
			f := newSealedFixture(t)
			_, err = f.res.Apply(context.Background(), objs)
			if err != nil {
				if l := leaks(err.Error()); len(l) > 0 {
					t.Errorf("apply error %q holds %v", err, l)
				}
				return
			}
			t.Logf("%s: accepted", name)
		})
	}
	// Without key custody, the refusal names no data either.
	objs, err := config.Decode([]byte(secretDoc("shop", "tls", certPEM, keyPEM)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = newFixture(t).res.Apply(context.Background(), objs)
	if err == nil {
		t.Fatal("a store without a sealer accepted a Secret")
	}
	if l := leaks(err.Error()); len(l) > 0 {
		t.Errorf("apply error %q holds %v", err, l)
	}
}

// TestAttackSecretRedactedCopyHolds: the redacted form of a Secret (what
// reads show) shares no byte slice with the stored one (a later write into
// the read copy cannot reach the data) and holds no value.
func TestAttackSecretRedactedCopyHolds(t *testing.T) {
	f := newSealedFixture(t)
	certPEM, keyPEM := tlsPair(t, "shop.example.com")
	f.apply(t, secretDoc("shop", "tls", certPEM, keyPEM))
	objs, _, err := f.res.List(context.Background(), config.KindSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("List: got %d Secrets, want 1", len(objs))
	}
	red := config.Redact(objs[0])
	b, err := config.Marshal(red)
	if err != nil {
		t.Fatal(err)
	}
	for form, m := range forms(keyPEM) {
		if bytes.Contains(b, m) {
			t.Errorf("the redacted Secret holds the key (%s): %s", form, b)
		}
	}
	if s := red.(*config.Secret); len(s.StringData) != 0 {
		t.Errorf("the redacted Secret has stringData %v", s.StringData)
	}
	// The store still opens the original.
	s := secretOf(t, f.res, "shop", "tls")
	if !bytes.Equal(s.Data[config.SecretKeyTLSKey], keyPEM) {
		t.Error("redaction altered the stored Secret")
	}
}
