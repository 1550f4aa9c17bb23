package config

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
)

// Bounds of a Secret's data.
const (
	// MaxSecretBytes bounds the data of a Secret, every value together.
	MaxSecretBytes = 256 << 10
	// MaxSecretCertificates bounds the certificates of tls.crt.
	MaxSecretCertificates = 10
	// MaxSecretCertificateBytes bounds one certificate (DER) of tls.crt.
	MaxSecretCertificateBytes = 64 << 10
	// MinRSAKeyBits and MaxRSAKeyBits bound the size of an RSA key.
	MinRSAKeyBits = 2048
	MaxRSAKeyBits = 8192
)

// Validate implements Object. It merges stringData into data (a key in
// both takes stringData's value) and clears stringData, so that what is
// stored holds data only, and refuses:
//
//   - type: required, "kubernetes.io/tls".
//   - data: only the keys tls.crt and tls.key, both required and not
//     empty (a data whose values are all empty is what a read shows: the
//     values were redacted), at most 256 KiB together.
//   - tls.crt: PEM CERTIFICATE blocks only, 1 to 10, each at most 64 KiB
//     and parsed as X.509, leaf first, each followed by its issuer.
//   - tls.key: one PEM private key (PKCS#8, SEC 1 EC or PKCS#1 RSA; an
//     "EC PARAMETERS" block is skipped), not encrypted: ECDSA P-256,
//     P-384 or P-521, Ed25519, or RSA of 2048 to 8192 bits; it must match
//     the leaf's public key.
//
// No error carries any byte of the key.
func (s *Secret) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&s.Metadata, &errs)
	switch s.Type {
	case SecretTypeTLS:
	case "":
		errs.add("type", "required: %q", SecretTypeTLS)
	default:
		errs.add("type", "unsupported value %q: must be %q", s.Type, SecretTypeTLS)
	}
	if len(s.StringData) > 0 {
		if s.Data == nil {
			s.Data = make(map[string][]byte, len(s.StringData))
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
	}
	s.StringData = nil
	if s.Type != SecretTypeTLS {
		return errs
	}
	total, unknown := 0, false
	for _, k := range slices.Sorted(maps.Keys(s.Data)) {
		switch k {
		case SecretKeyTLSCert, SecretKeyTLSKey:
		default:
			errs.add(keyPath("data", k), "unknown key: a %s Secret holds %s and %s only", SecretTypeTLS, SecretKeyTLSCert, SecretKeyTLSKey)
			unknown = true
		}
		total += len(s.Data[k])
	}
	if total > MaxSecretBytes {
		errs.add("data", "%d bytes: at most %d (256 KiB) together", total, MaxSecretBytes)
		return errs
	}
	if len(s.Data) == 0 {
		errs.add("data", "required: %s (the PEM certificate chain, leaf first) and %s (its PEM private key)", SecretKeyTLSCert, SecretKeyTLSKey)
		return errs
	}
	if total == 0 && !unknown {
		errs.add("data", "every value is empty: a read of a Secret shows its keys without their values (redacted), so it cannot be applied back; give the certificate and the key themselves (bulwark create secret tls)")
		return errs
	}
	crtPath, kPath := keyPath("data", SecretKeyTLSCert), keyPath("data", SecretKeyTLSKey)
	var leaf *x509.Certificate
	switch crt, ok := s.Data[SecretKeyTLSCert]; {
	case !ok:
		errs.add(crtPath, "required: the PEM certificate chain, leaf first")
	case len(crt) == 0:
		errs.add(crtPath, "empty (a read shows the value redacted): give the PEM certificate chain, leaf first")
	default:
		var msg string
		if leaf, msg = parseCertificateChain(crt); msg != "" {
			errs.add(crtPath, "%s", msg)
		}
	}
	var key crypto.Signer
	switch k, ok := s.Data[SecretKeyTLSKey]; {
	case !ok:
		errs.add(kPath, "required: the PEM private key of the leaf certificate")
	case len(k) == 0:
		errs.add(kPath, "empty (a read shows the value redacted): give the PEM private key of the leaf certificate")
	default:
		var msg string
		if key, msg = parsePrivateKey(k); msg != "" {
			errs.add(kPath, "%s", msg)
		}
	}
	if leaf != nil && key != nil {
		pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(leaf.PublicKey) {
			errs.add(kPath, "does not match the public key of the leaf certificate (the first of %s)", SecretKeyTLSCert)
		}
	}
	return errs
}

// parseCertificateChain parses a PEM certificate chain, leaf first, and
// returns the leaf, or what is wrong with the chain.
func parseCertificateChain(data []byte) (*x509.Certificate, string) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n := len(certs) + 1
		switch {
		case block.Type != "CERTIFICATE":
			return nil, fmt.Sprintf("PEM block %d is a %q, want CERTIFICATE (the key goes in %s)", n, block.Type, SecretKeyTLSKey)
		case n > MaxSecretCertificates:
			return nil, fmt.Sprintf("more than %d certificates", MaxSecretCertificates)
		case len(block.Bytes) > MaxSecretCertificateBytes:
			return nil, fmt.Sprintf("certificate %d is %d bytes: at most %d", n, len(block.Bytes), MaxSecretCertificateBytes)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Sprintf("certificate %d: %v", n, err)
		}
		certs = append(certs, c)
	}
	switch {
	case len(certs) == 0:
		return nil, "no PEM CERTIFICATE block"
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, "content after the last PEM block"
	}
	for i := 0; i+1 < len(certs); i++ {
		if !bytes.Equal(certs[i].RawIssuer, certs[i+1].RawSubject) {
			return nil, fmt.Sprintf("certificate %d (%s) was not issued by certificate %d (%s): list the chain leaf first, each certificate followed by its issuer",
				i+1, certs[i].Subject, i+2, certs[i+1].Subject)
		}
	}
	return certs[0], ""
}

// parsePrivateKey parses one PEM private key and returns it, or what is
// wrong with it. The messages never carry key material, nor the parser's
// errors (which describe the key's structure).
func parsePrivateKey(data []byte) (crypto.Signer, string) {
	const forms = "PKCS#8 (PRIVATE KEY), SEC 1 (EC PRIVATE KEY) or PKCS#1 (RSA PRIVATE KEY)"
	var (
		found *pem.Block
		rest  = data
	)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "EC PARAMETERS":
			continue
		case "ENCRYPTED PRIVATE KEY":
			return nil, "an encrypted private key is not supported: decrypt it (openssl pkey -in key.pem -out plain.pem); the control plane encrypts it at rest"
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			if _, ok := block.Headers["DEK-Info"]; ok || block.Headers["Proc-Type"] != "" {
				return nil, "an encrypted private key is not supported: decrypt it (openssl pkey -in key.pem -out plain.pem); the control plane encrypts it at rest"
			}
		case "CERTIFICATE":
			return nil, fmt.Sprintf("holds a CERTIFICATE: certificates go in %s, the private key alone in %s", SecretKeyTLSCert, SecretKeyTLSKey)
		default:
			return nil, fmt.Sprintf("PEM block of type %q: want one private key in %s form", block.Type, forms)
		}
		if found != nil {
			return nil, "more than one private key: give the key of the leaf certificate only"
		}
		found = block
	}
	if found == nil {
		return nil, "no PEM private key block: want one private key in " + forms + " form"
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, "content after the last PEM block"
	}
	var (
		key any
		err error
	)
	switch found.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(found.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(found.Bytes)
	default:
		key, err = x509.ParsePKCS1PrivateKey(found.Bytes)
	}
	if err != nil {
		return nil, fmt.Sprintf("the %s block is not a valid private key of that form", found.Type)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSAKeyBits || bits > MaxRSAKeyBits {
			return nil, fmt.Sprintf("an RSA key of %d bits: must be %d to %d bits", bits, MinRSAKeyBits, MaxRSAKeyBits)
		}
		return k, ""
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return k, ""
		}
		return nil, "an ECDSA key on an unsupported curve: use P-256, P-384 or P-521"
	case ed25519.PrivateKey:
		return k, ""
	}
	return nil, fmt.Sprintf("a %T key is not a signature key TLS can use: use ECDSA, Ed25519 or RSA", key)
}

// Redacted returns a copy of s whose data values are empty (the keys
// stay, so an operator sees what the Secret holds), for every read path
// (admin API, CLI, logs). Validate refuses such a Secret, so the output of
// `bulwark get -o yaml` cannot be applied back over the real one.
func (s *Secret) Redacted() *Secret {
	if s == nil {
		return nil
	}
	c := *s
	c.Metadata.Labels = maps.Clone(s.Metadata.Labels)
	c.StringData = nil
	c.Data = nil
	if s.Data != nil || s.StringData != nil {
		c.Data = make(map[string][]byte, len(s.Data)+len(s.StringData))
		for k := range s.Data {
			c.Data[k] = []byte{}
		}
		for k := range s.StringData {
			c.Data[k] = []byte{}
		}
	}
	return &c
}
