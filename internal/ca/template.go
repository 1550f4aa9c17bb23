package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Certificate profiles, modelled on SPIRE's credential templates
// (pkg/server/credtemplate): every certificate has a 128-bit random serial
// and a SubjectKeyId (RFC 7093 method 1); CAs are ECDSA P-256 and carry
// only CertSign|CRLSign; leaves carry DigitalSignature (and
// KeyEncipherment for RSA keys) and never a CA flag.

const (
	// organization is the subject organization of every certificate but
	// operator client certificates.
	organization = "Bulwark"

	// caBackdate is how far a CA certificate's NotBefore lies before its
	// issuance, for clock skew between control planes and proxies.
	caBackdate = time.Minute
	// leafBackdate is how far a leaf's NotBefore lies before its issuance,
	// for clock skew between peers.
	leafBackdate = 30 * time.Second
	// serialBits is the size of random serial numbers.
	serialBits = 128
)

// newSerial returns a random positive serial of serialBits bits at most.
func newSerial() (*big.Int, error) {
	var b [serialBits / 8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		s := new(big.Int).SetBytes(b[:])
		if s.Sign() > 0 {
			return s, nil
		}
	}
}

// subjectKeyID is the leftmost 160 bits of the SHA-256 of the
// subjectPublicKey bits (RFC 7093 section 2, method 1), what crypto/x509
// computes for CA certificates by default; leaves get it too.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	var bits []byte
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		// The uncompressed point is the subjectPublicKey; the fast path
		// for the common case.
		b, err := k.Bytes()
		if err != nil {
			return nil, fmt.Errorf("subject key id: %w", err)
		}
		bits = b
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("subject key id: %w", err)
		}
		var spki struct {
			Algorithm pkix.AlgorithmIdentifier
			PublicKey asn1.BitString
		}
		if _, err := asn1.Unmarshal(der, &spki); err != nil {
			return nil, fmt.Errorf("subject key id: %w", err)
		}
		bits = spki.PublicKey.Bytes
	}
	sum := sha256.Sum256(bits)
	return sum[:20], nil
}

// baseTemplate returns the fields every certificate shares.
func baseTemplate(pub crypto.PublicKey, subject pkix.Name, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		SubjectKeyId:          skid,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
	}, nil
}

// caTemplate is a CA certificate valid from now-caBackdate for ttl, capped
// at capAt unless it is zero. maxPathLen is 0 for a CA that signs only
// leaves.
func caTemplate(pub crypto.PublicKey, subject pkix.Name, now time.Time, ttl time.Duration, capAt time.Time, maxPathLen int) (*x509.Certificate, error) {
	tmpl, err := baseTemplate(pub, subject, now.Add(-caBackdate), capped(now.Add(ttl), capAt))
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	tmpl.MaxPathLen = maxPathLen
	tmpl.MaxPathLenZero = maxPathLen == 0
	return tmpl, nil
}

// leafTemplate is an end-entity certificate valid from now-leafBackdate for
// ttl, capped at the issuer's NotAfter.
func leafTemplate(pub crypto.PublicKey, subject pkix.Name, now time.Time, ttl time.Duration, issuer *x509.Certificate, eku ...x509.ExtKeyUsage) (*x509.Certificate, error) {
	tmpl, err := baseTemplate(pub, subject, now.Add(-leafBackdate), capped(now.Add(ttl), issuer.NotAfter))
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl.ExtKeyUsage = eku
	tmpl.AuthorityKeyId = issuer.SubjectKeyId
	return tmpl, nil
}

// workloadRootTemplate is the self-signed workload root.
func workloadRootTemplate(pub crypto.PublicKey, td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	subject := pkix.Name{Organization: []string{organization}, CommonName: fmt.Sprintf("Bulwark workload root (%s)", td.Name())}
	tmpl, err := caTemplate(pub, subject, now, ttl, time.Time{}, 1)
	if err != nil {
		return nil, err
	}
	tmpl.URIs = []*url.URL{td.ID().URL()}
	return tmpl, nil
}

// intermediateTemplate is the workload intermediate under root. Its name
// constraint limits every SVID under it to the trust domain, whatever the
// code above it does.
func intermediateTemplate(pub crypto.PublicKey, td spiffeid.TrustDomain, now time.Time, ttl time.Duration, root *x509.Certificate) (*x509.Certificate, error) {
	subject := pkix.Name{Organization: []string{organization}, CommonName: fmt.Sprintf("Bulwark workload intermediate (%s)", td.Name())}
	tmpl, err := caTemplate(pub, subject, now, ttl, root.NotAfter, 0)
	if err != nil {
		return nil, err
	}
	tmpl.URIs = []*url.URL{td.ID().URL()}
	tmpl.AuthorityKeyId = root.SubjectKeyId
	tmpl.PermittedURIDomains = []string{td.Name()}
	// RFC 5280 4.2.1.10: name constraints MUST be critical.
	tmpl.PermittedDNSDomainsCritical = true
	return tmpl, nil
}

// operatorRootTemplate is the self-signed operator CA. It signs leaves
// only and names no trust domain member.
func operatorRootTemplate(pub crypto.PublicKey, td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	subject := pkix.Name{Organization: []string{organization}, CommonName: fmt.Sprintf("Bulwark operator CA (%s)", td.Name())}
	return caTemplate(pub, subject, now, ttl, time.Time{}, 0)
}

// svidSubject is the subject of X509-SVIDs and serving certificates: the
// identity is in the URI SAN, never in the subject.
func svidSubject() pkix.Name { return pkix.Name{Organization: []string{organization}} }

// svidTemplate is an X509-SVID: exactly one URI SAN, no DNS SANs, usable
// as client and server.
func svidTemplate(pub crypto.PublicKey, id spiffeid.ID, now time.Time, ttl time.Duration, issuer *x509.Certificate) (*x509.Certificate, error) {
	tmpl, err := leafTemplate(pub, svidSubject(), now, ttl, issuer, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	tmpl.URIs = []*url.URL{id.URL()}
	return tmpl, nil
}

// servingTemplate is an X509-SVID that also has DNS and IP SANs and may only
// serve.
func servingTemplate(pub crypto.PublicKey, id spiffeid.ID, dnsNames []string, ips []net.IP, now time.Time, ttl time.Duration, issuer *x509.Certificate) (*x509.Certificate, error) {
	tmpl, err := leafTemplate(pub, svidSubject(), now, ttl, issuer, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	tmpl.URIs = []*url.URL{id.URL()}
	tmpl.DNSNames = dnsNames
	tmpl.IPAddresses = ips
	return tmpl, nil
}

// capped returns t, or capAt when it is earlier and not zero.
func capped(t, capAt time.Time) time.Time {
	if !capAt.IsZero() && t.After(capAt) {
		return capAt
	}
	return t
}

// sign creates the certificate of tmpl for pub, signed by signer as parent
// (tmpl itself for a self-signed certificate), and parses it back.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	return cert, nil
}
