// Package identityv1 is the Go code buf generates from ca.proto (package
// tinymesh.identity.v1): the CertificateService that the control plane's CA
// (identity/ca) serves on the xDS port and the proxy's SVID client
// (identity/svid) calls. Regenerate with `buf generate` from the repository
// root; do not edit the *.pb.go files. Generated clients and servers are safe
// for concurrent use; messages are not once shared.
package identityv1
