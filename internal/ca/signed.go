package ca

// Kinds of signature, told to Config.Signed: the value of the kind label
// of bulwark_ca_signatures_total.
const (
	// SignatureX509SVID: an X509-SVID (SignSVID), or the control plane's
	// serving certificate (SignServing).
	SignatureX509SVID = "x509_svid"
	// SignatureJWTSVID: a JWT-SVID.
	SignatureJWTSVID = "jwt_svid"
	// SignatureIntermediate: a workload intermediate, signed by a root.
	SignatureIntermediate = "intermediate"
	// SignatureRoot: a new self-signed workload root.
	SignatureRoot = "root"
)

// SignatureKinds returns every kind of signature.
func SignatureKinds() []string {
	return []string{SignatureX509SVID, SignatureJWTSVID, SignatureIntermediate, SignatureRoot}
}

// signed tells f, if set, of a signature of kind and its error.
func signed(f func(kind string, err error), kind string, err error) {
	if f != nil {
		f(kind, err)
	}
}
