package ca

import "errors"

// Errors of starting a CA (New, NewOperatorCA). Both fail closed: they never
// replace stored CA material they cannot use.
var (
	// ErrCorruptRecord: a CA record in the store cannot be decoded, or its
	// certificate is not a CA certificate of the expected kind. The error
	// names the store key.
	ErrCorruptRecord = errors.New("ca: corrupted ca record")
	// ErrKeyMismatch: the key manager holds a key under a record's key id,
	// but it is not the key of the record's certificate.
	ErrKeyMismatch = errors.New("ca: key does not match the ca certificate")
	// ErrTrustDomainMismatch: the stored workload CA belongs to another
	// trust domain than the configured one.
	ErrTrustDomainMismatch = errors.New("ca: stored ca is for another trust domain")
)

// Errors of signing (SignSVID, SignServing, SignClient, SignServer) and of
// ParseCSR.
var (
	// ErrNotMember: the SPIFFE ID to sign is not a member of the CA's
	// trust domain with a path (another trust domain, or the trust
	// domain's own ID).
	ErrNotMember = errors.New("ca: id is not a member of the trust domain")
	// ErrUnsupportedKey: the public key is not ECDSA P-256/P-384, Ed25519,
	// or RSA of 2048 to 8192 bits.
	ErrUnsupportedKey = errors.New("ca: unsupported public key")
	// ErrInvalidCSR: the CSR cannot be parsed or its signature does not
	// verify.
	ErrInvalidCSR = errors.New("ca: invalid csr")
	// ErrExpired: the signing CA certificate has expired; nothing can be
	// issued under it until it is renewed.
	ErrExpired = errors.New("ca: signing certificate expired")
)

// Errors of checking a presented certificate (OperatorName).
var (
	// ErrNotOperator: a certificate is not an operator client certificate.
	ErrNotOperator = errors.New("ca: not an operator certificate")
)
