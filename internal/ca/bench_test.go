package ca_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"runtime"
	"testing"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/ca"
)

// The budget (DESIGN section 11) is 5000 SVIDs per second per control-plane
// core. Each benchmark reports the rate it implies: for the sequential ones
// 1s/(ns/op), for the parallel one the total rate divided by GOMAXPROCS.

func BenchmarkSignSVID(b *testing.B) {
	c := newFixture(b).newCA(b)
	pub := &newKey(b).PublicKey
	id := workloadID(b, "default", "api")
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := c.SignSVID(pub, id, 0); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportRate(b, n, 1)
}

func BenchmarkSignSVIDParallel(b *testing.B) {
	c := newFixture(b).newCA(b)
	pub := &newKey(b).PublicKey
	id := workloadID(b, "default", "api")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.SignSVID(pub, id, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b, b.N, runtime.GOMAXPROCS(0))
}

func BenchmarkParseCSR(b *testing.B) {
	der := newCSR(b, newKey(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.ParseCSR(der); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssueFromCSR is what one SignSVID RPC costs in the CA: parse
// and check the CSR, then sign.
func BenchmarkIssueFromCSR(b *testing.B) {
	c := newFixture(b).newCA(b)
	der := newCSR(b, newKey(b))
	id := workloadID(b, "default", "api")
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		pub, err := ca.ParseCSR(der)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.SignSVID(pub, id, 0); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportRate(b, n, 1)
}

// BenchmarkIssueFromCSRParallel is BenchmarkIssueFromCSR on every core:
// the issuance rate of one control plane under a renewal storm.
func BenchmarkIssueFromCSRParallel(b *testing.B) {
	c := newFixture(b).newCA(b)
	der := newCSR(b, newKey(b))
	id := workloadID(b, "default", "api")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			pub, err := ca.ParseCSR(der)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := c.SignSVID(pub, id, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b, b.N, runtime.GOMAXPROCS(0))
}

// BenchmarkSignSVIDDuringRotation signs while a root rotation is activated
// (two roots in the bundle), to show that rotation adds nothing to
// issuance.
func BenchmarkSignSVIDDuringRotation(b *testing.B) {
	c := newFixture(b).newCA(b)
	mustPrepare(b, c)
	mustActivate(b, c)
	pub := &newKey(b).PublicKey
	id := workloadID(b, "default", "api")
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := c.SignSVID(pub, id, 0); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportRate(b, n, 1)
}

// BenchmarkSignJWTSVID is the cost of one JWT-SVID (ES256).
func BenchmarkSignJWTSVID(b *testing.B) {
	a := newFixture(b).newJWT(b)
	id := workloadID(b, "default", "web")
	aud := []string{"spiffe://bulwark.test/ns/default/sa/api"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.SignJWTSVID(id, aud); err != nil {
			b.Fatal(err)
		}
	}
}

// reportRate reports n operations over the benchmark's elapsed time as
// SVIDs per second per core, with cores running them.
func reportRate(b *testing.B, n, cores int) {
	if s := b.Elapsed().Seconds(); s > 0 && n > 0 {
		b.ReportMetric(float64(n)/s/float64(cores), "svids/s/core")
	}
}

// BenchmarkBaselineCreateCertificate is the peer of BenchmarkSignSVID
// measured in the same run (DESIGN section 10): a bare crypto/x509
// CreateCertificate (which signs and then verifies its own signature) and
// ParseCertificate of a minimal leaf, the floor of any Go CA. Compare the
// ratio, not the absolute figures, on a noisy machine.
func BenchmarkBaselineCreateCertificate(b *testing.B) {
	issuerKey := newKey(b)
	issuer := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "baseline"},
		NotBefore: startTime(), NotAfter: startTime().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	pub := &newKey(b).PublicKey
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		NotBefore:    startTime(), NotAfter: startTime().Add(time.Hour),
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, issuerKey)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportRate(b, n, 1)
}
