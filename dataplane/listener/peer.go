package listener

import "crypto/tls"

// PeerSPIFFEID returns the SPIFFE ID (the spiffe:// URI SAN) of the peer's leaf
// certificate when the handshake verified the peer's chain, and "" otherwise:
// for a plaintext connection (cs nil), a peer that sent no certificate, a
// certificate that was not verified against a trusted CA, or one without a
// spiffe URI SAN. An X.509-SVID has exactly one URI SAN; the first spiffe one
// is returned.
//
// It is what XFCC (httpproxy) and RBAC match callers on. It reads cs only and
// is safe for concurrent use; it allocates the returned string.
func PeerSPIFFEID(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 || !verified(cs) {
		return ""
	}
	for _, u := range cs.PeerCertificates[0].URIs {
		if u.Scheme == "spiffe" && u.Host != "" {
			return u.String()
		}
	}
	return ""
}

// verified reports whether crypto/tls verified the peer's chain against the
// listener's trusted CA (ServerConfig sets ClientCAs, so VerifiedChains is
// filled in). Upstream connections verify in VerifyConnection with
// InsecureSkipVerify set and so never count as verified here.
func verified(cs *tls.ConnectionState) bool {
	return len(cs.VerifiedChains) > 0
}
