package identity

import "crypto/sha256"

// RenewalContext prefixes the CSR in the message a renewal proof signs
// (docs/identity.md, "Issuance": SVIDProof), so that such a signature means
// nothing elsewhere.
const RenewalContext = "tinymesh-renew-v1"

// RenewalDigest is what a renewal proof signs with the current SVID's key:
// SHA-256(RenewalContext || csr), csr being the DER of the new CSR.
func RenewalDigest(csrDER []byte) []byte {
	h := sha256.New()
	h.Write([]byte(RenewalContext))
	h.Write(csrDER)
	return h.Sum(nil)
}
