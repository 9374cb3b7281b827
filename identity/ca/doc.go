// Package ca is the control plane's certificate authority (docs/identity.md,
// "The control plane's CA" and "Issuance"). It owns three things:
//
//   - CA: the signing key and certificate, and the trust bundle. By default a
//     self-managed ECDSA P-256 root in <data-dir>/ca/ (root.key 0600, root.crt),
//     created on first start; or an operator's certificate (possibly an
//     intermediate) and key. Sign issues SPIFFE X.509-SVIDs. Rotate replaces the
//     self-managed root, keeping the old one trusted in ca/previous/ for an
//     overlap; Run re-reads the files every 5 s so a running control plane picks
//     a rotation up and reports bundle changes.
//   - Authenticator: the credential check of a Sign request, with JoinTokens
//     (identity/jointoken) and SVIDs (renewal with a proof of the current SVID).
//     A Kubernetes service-account-token authenticator slots in the same way.
//   - Service: tinymesh.identity.v1.CertificateService, served on the xDS port.
//     It checks the CSR, authenticates, signs and hands the chain to OnIssued,
//     which the control plane wires to the xDS server's SDS "default" secret.
//
// Concurrency: a CA is safe for concurrent use; its state is an immutable value
// swapped atomically by Reload, so a Sign sees one consistent root. Run is one
// loop owned by its caller's context. Service handlers run concurrently on
// gRPC's goroutines. The package links no Kubernetes and no go-control-plane;
// the proxy side lives in identity/svid.
package ca
