package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
)

// RSA key sizes accepted in CSRs.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// ParseCSR parses a DER PKCS#10 certificate request, checks its signature
// (proof that the requester holds the private key) and returns its public
// key. Only ECDSA P-256 and P-384, Ed25519, and RSA keys of 2048 to 8192
// bits are accepted, signed with SHA-256 or stronger.
//
// Only the public key is used: the CSR's subject, SANs and extensions are
// ignored, because the identity of an SVID comes from attestation, never
// from what the requester asks for.
func ParseCSR(der []byte) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCSR, err)
	}
	switch csr.SignatureAlgorithm {
	case x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
		x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS,
		x509.PureEd25519:
	default:
		return nil, fmt.Errorf("%w: signature algorithm %v not accepted", ErrInvalidCSR, csr.SignatureAlgorithm)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", ErrInvalidCSR, err)
	}
	return csr.PublicKey, nil
}

// checkPublicKey accepts the key types certificates are issued for.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s, want P-256 or P-384", ErrUnsupportedKey, curveName(k.Curve))
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return nil
		}
		return fmt.Errorf("%w: Ed25519 key of %d bytes", ErrUnsupportedKey, len(k))
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return fmt.Errorf("%w: RSA key of %d bits, want %d to %d", ErrUnsupportedKey, bits, minRSABits, maxRSABits)
		}
		return nil
	default:
		return fmt.Errorf("%w: key type %T", ErrUnsupportedKey, pub)
	}
}

func curveName(c elliptic.Curve) string {
	if c == nil || c.Params() == nil {
		return "unknown"
	}
	return c.Params().Name
}
