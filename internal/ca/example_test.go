package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/identity"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/mtls"
	"github.com/bulwarkmesh/bulwark/internal/store/bolt"
)

// The control plane starts the workload CA on its store and key manager,
// and signs the CSR a proxy sent after attestation.
func Example() {
	dir, err := os.MkdirTemp("", "bulwark-ca-")
	check(err)
	defer os.RemoveAll(dir)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Config{})
	check(err)
	defer st.Close()
	// CA keys are encrypted at rest with a key file (or a passphrase).
	check(keymanager.CreateKeyFile(filepath.Join(dir, "ca.key")))
	secret, err := keymanager.KeyFileSecret(filepath.Join(dir, "ca.key"))
	check(err)
	keys, err := keymanager.NewDisk(filepath.Join(dir, "keys"), secret, nil)
	check(err)

	td := spiffeid.RequireTrustDomainFromString("bulwark.local")
	workloadCA, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: st, Keys: keys})
	check(err)

	// The proxy's key never leaves the proxy: it sends a CSR.
	proxyKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, proxyKey)
	check(err)

	pub, err := ca.ParseCSR(csr)
	check(err)
	id, err := identity.WorkloadID(td, "default", "api")
	check(err)
	chain, err := workloadCA.SignSVID(pub, id, 0)
	check(err)

	verified, _, err := x509svid.Verify(chain, workloadCA.Bundle())
	check(err)
	fmt.Println(verified)
	fmt.Println(len(chain), chain[0].NotAfter.Sub(chain[0].NotBefore))
	// Output:
	// spiffe://bulwark.local/ns/default/sa/api
	// 2 1h0m30s
}

// The operator CA issues an operator's client certificate; the admin API
// names the operator from it after TLS verified it against Root.
func ExampleOperatorCA() {
	dir, err := os.MkdirTemp("", "bulwark-ca-")
	check(err)
	defer os.RemoveAll(dir)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Config{})
	check(err)
	defer st.Close()

	td := spiffeid.RequireTrustDomainFromString("bulwark.local")
	operatorCA, err := ca.NewOperatorCA(context.Background(), ca.Config{TrustDomain: td, Store: st, Keys: keymanager.NewMemory()})
	check(err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	cert, err := operatorCA.SignClient(&key.PublicKey, "alice", 0)
	check(err)

	roots := x509.NewCertPool()
	roots.AddCert(operatorCA.Root())
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	check(err)
	name, err := ca.OperatorName(cert)
	check(err)
	fmt.Println(name)
	// Output: alice
}

func ExampleCA_SignServing_pin() {
	dir, err := os.MkdirTemp("", "bulwark-ca-")
	check(err)
	defer os.RemoveAll(dir)
	st, err := bolt.Open(filepath.Join(dir, "store.db"), bolt.Config{})
	check(err)
	defer st.Close()
	td := spiffeid.RequireTrustDomainFromString("bulwark.local")
	workloadCA, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Store: st, Keys: keymanager.NewMemory()})
	check(err)

	// The control plane puts the root's pin in join tokens...
	pin := mtls.SPKIPin(workloadCA.Roots()[0])

	// ...and a proxy finds its anchor in the serving chain by the pin.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	chain, err := workloadCA.SignServing(&key.PublicKey, identity.ControlPlaneID(td), []string{"localhost"}, nil, 0)
	check(err)
	anchor, err := mtls.PinnedAnchor(chain, pin)
	check(err)
	fmt.Println(anchor.Subject.CommonName)
	// Output: Bulwark workload root (bulwark.local)
}

// check stops an example at an unexpected error.
func check(err error) {
	if err != nil {
		panic(err)
	}
}
