package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/tinymesh/tinymesh/identity"
	"github.com/tinymesh/tinymesh/identity/jointoken"
	identityv1 "github.com/tinymesh/tinymesh/proto/identity/v1"
)

// Authenticator errors. Service maps ErrPermissionDenied to PERMISSION_DENIED
// and every other failure to UNAUTHENTICATED.
var (
	// ErrNoCredential says the request carries no credential of the
	// authenticator's kind; the Service then asks the next one.
	ErrNoCredential = errors.New("no credential of this kind")
	// ErrPermissionDenied says the credential is valid but not for the
	// identity the CSR asks for.
	ErrPermissionDenied = errors.New("permission denied")
)

// Authenticator checks the credential of a Sign request. The Service calls it
// on the gRPC handler's goroutine, concurrently for concurrent requests, after
// it has checked the CSR (its signature and its one URI SAN, a SPIFFE ID of the
// trust domain). It may block (disk, network) within ctx. It returns the SPIFFE
// ID the credential proves, ErrNoCredential when the request carries another
// kind of credential, or an error (wrapping ErrPermissionDenied when the
// credential is valid for another identity).
type Authenticator interface {
	Authenticate(ctx context.Context, req *identityv1.SignRequest, csr *x509.CertificateRequest) (spiffeid.ID, error)
}

// csrID returns the SPIFFE ID of a CSR the Service has checked.
func csrID(csr *x509.CertificateRequest) (spiffeid.ID, error) {
	if len(csr.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("csr: want exactly one URI SAN, got %d", len(csr.URIs))
	}
	return spiffeid.FromURI(csr.URIs[0])
}

// JoinTokens authenticates join tokens against a jointoken.Store: the token
// must be genuine, unexpired, unused and minted for the CSR's SPIFFE ID; it is
// used up by a successful Authenticate.
type JoinTokens struct {
	Store *jointoken.Store
}

// Authenticate implements Authenticator.
func (j JoinTokens) Authenticate(_ context.Context, req *identityv1.SignRequest, csr *x509.CertificateRequest) (spiffeid.ID, error) {
	token, ok := req.GetCredential().(*identityv1.SignRequest_JoinToken)
	if !ok {
		return spiffeid.ID{}, ErrNoCredential
	}
	want, err := csrID(csr)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if _, err := j.Store.Redeem(token.JoinToken, want); err != nil {
		if errors.Is(err, jointoken.ErrWrongID) {
			return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrPermissionDenied, err)
		}
		return spiffeid.ID{}, err
	}
	return want, nil
}

// SVIDs authenticates renewals: the request's SVIDProof chain must verify
// against the current trust bundle and be unexpired, and its signature over
// identity.RenewalContext||csr (SHA-256) must verify with the leaf's key.
type SVIDs struct {
	// Bundle is the trust bundle in force, typically the *CA.
	Bundle x509bundle.Source
	// Now defaults to time.Now.
	Now func() time.Time
}

// Authenticate implements Authenticator.
func (s SVIDs) Authenticate(_ context.Context, req *identityv1.SignRequest, _ *x509.CertificateRequest) (spiffeid.ID, error) {
	proof, ok := req.GetCredential().(*identityv1.SignRequest_Svid)
	if !ok {
		return spiffeid.ID{}, ErrNoCredential
	}
	chain := proof.Svid.GetCertificateChain()
	if len(chain) == 0 {
		return spiffeid.ID{}, errors.New("svid.certificate_chain: empty")
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	id, verified, err := x509svid.ParseAndVerify(chain, s.Bundle, x509svid.WithTime(now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("svid.certificate_chain: %w", err)
	}
	leaf := verified[0][0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("svid.certificate_chain[0]: %T key, want ECDSA", leaf.PublicKey)
	}
	if !ecdsa.VerifyASN1(pub, identity.RenewalDigest(req.GetCsr()), proof.Svid.GetSignature()) {
		return spiffeid.ID{}, errors.New("svid.signature: does not verify with the SVID's key over the CSR")
	}
	return id, nil
}
